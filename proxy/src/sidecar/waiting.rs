//! The connections of this core still waiting in protocol detection (nothing decided yet,
//! usually nothing received): at most the core's `max_connections` of them. One more
//! sheds the one that has waited longest, which is closed at once, much as nginx closes
//! idle keep-alive connections when it runs out of connections. So a flood of connections
//! that send nothing cannot keep a client that speaks at once from being served: the
//! flood's connections leave the core's connection cap while they wait (see
//! `sidecar::serve_side`), and its oldest make room for each newcomer.
//!
//! Per core (a thread-local of the core's thread): no lock, no atomic.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// One waiting connection's place.
#[derive(Default)]
struct Slot {
    shed: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// The waiting connections of one core, oldest first.
#[derive(Default)]
pub struct Waiting {
    /// Oldest first; entries of connections that left are dropped lazily.
    queue: RefCell<VecDeque<Weak<Slot>>>,
    /// Connections waiting now (not shed, not left).
    live: Cell<usize>,
}

thread_local! {
    static CORE_WAITING: Rc<Waiting> = Rc::default();
}

/// This core's waiting connections.
pub fn on_this_core() -> Rc<Waiting> {
    CORE_WAITING.with(Rc::clone)
}

impl Waiting {
    /// A new connection starts waiting; when `limit` are waiting already, the oldest are
    /// shed first. Returns its ticket and how many were shed for it.
    pub fn enter(self: &Rc<Self>, limit: usize) -> (Ticket, u64) {
        let mut shed = 0;
        {
            let mut queue = self.queue.borrow_mut();
            while self.live.get() >= limit.max(1) {
                let Some(oldest) = queue.pop_front() else {
                    break;
                };
                if let Some(slot) = oldest.upgrade().filter(|s| !s.shed.get()) {
                    slot.shed.set(true);
                    self.live.set(self.live.get() - 1);
                    if let Some(waker) = slot.waker.borrow_mut().take() {
                        waker.wake();
                    }
                    shed += 1;
                }
            }
            // Entries of connections that left stay until here: keep the queue near the
            // number of waiting connections.
            if queue.len() > 2 * self.live.get() + 64 {
                queue.retain(|w| w.upgrade().is_some_and(|s| !s.shed.get()));
            }
        }
        let slot = Rc::new(Slot::default());
        self.queue.borrow_mut().push_back(Rc::downgrade(&slot));
        self.live.set(self.live.get() + 1);
        let ticket = Ticket {
            slot,
            waiting: self.clone(),
        };
        (ticket, shed)
    }

    /// Connections waiting now.
    pub fn live(&self) -> usize {
        self.live.get()
    }
}

/// A waiting connection's place; it leaves the wait when dropped.
pub struct Ticket {
    slot: Rc<Slot>,
    waiting: Rc<Waiting>,
}

impl Ticket {
    /// Completes when this connection is shed to make room for a newer one.
    pub fn shed(&self) -> Shed<'_> {
        Shed(&self.slot)
    }

    pub fn is_shed(&self) -> bool {
        self.slot.shed.get()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.slot.shed.get() {
            self.waiting
                .live
                .set(self.waiting.live.get().saturating_sub(1));
        }
    }
}

/// See [`Ticket::shed`].
pub struct Shed<'a>(&'a Slot);

impl Future for Shed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0.shed.get() {
            return Poll::Ready(());
        }
        *self.0.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_is_shed_when_the_limit_is_reached_and_leaving_frees_a_place() {
        let waiting = Rc::new(Waiting::default());
        let (first, shed) = waiting.enter(2);
        assert_eq!(shed, 0);
        let (second, _) = waiting.enter(2);
        let (third, shed) = waiting.enter(2);
        assert_eq!(shed, 1);
        assert!(first.is_shed());
        assert!(!second.is_shed() && !third.is_shed());
        assert_eq!(waiting.live(), 2);
        // One leaves: the next newcomer sheds nobody.
        drop(second);
        assert_eq!(waiting.live(), 1);
        let (fourth, shed) = waiting.enter(2);
        assert_eq!(shed, 0);
        drop(first);
        assert_eq!(waiting.live(), 2);
        drop((third, fourth));
        assert_eq!(waiting.live(), 0);
    }

    #[test]
    fn a_shed_ticket_completes_its_future_and_the_queue_stays_small() {
        let waiting = Rc::new(Waiting::default());
        let (old, _) = waiting.enter(1);
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut shed = std::pin::pin!(old.shed());
        assert!(shed.as_mut().poll(&mut cx).is_pending());
        let (new, n) = waiting.enter(1);
        assert_eq!(n, 1);
        assert!(shed.as_mut().poll(&mut cx).is_ready());
        drop(new);
        for _ in 0..1000 {
            let (t, _) = waiting.enter(10);
            drop(t);
        }
        assert!(
            waiting.queue.borrow().len() <= 64 + 1,
            "{}",
            waiting.queue.borrow().len()
        );
    }
}
