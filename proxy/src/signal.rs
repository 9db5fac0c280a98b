//! A one-shot, single-core signal (shutdown begun, all connections closed) that any number
//! of tasks on the same core can await. Not `Send`: it never leaves its core.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

#[derive(Default)]
pub struct Signal {
    fired: Cell<bool>,
    waiters: RefCell<Vec<Waker>>,
}

impl Signal {
    pub fn fire(&self) {
        if !self.fired.replace(true) {
            for w in self.waiters.borrow_mut().drain(..) {
                w.wake();
            }
        }
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    /// Resolves once the signal has fired.
    pub fn wait(&self) -> Wait<'_> {
        Wait { signal: self }
    }
}

pub struct Wait<'a> {
    signal: &'a Signal,
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.fired.get() {
            return Poll::Ready(());
        }
        let mut waiters = self.signal.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
