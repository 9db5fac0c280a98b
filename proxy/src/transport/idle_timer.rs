//! Per-core deadlines for idle client connections: one runtime timer per core instead of one
//! per connection. A connection takes a slot for its whole life (a few bytes); while it
//! waits for bytes it arms the slot with a deadline, and the core's timer task ([`drive`])
//! wakes it once the deadline has passed.
//!
//! Deadlines are kept in milliseconds in an ordered set. Moving a queued deadline later (the
//! usual case: a keep-alive connection waits again after each response) only updates the
//! slot; the task finds the newer deadline when the old one comes due and queues it again,
//! so a busy connection costs no set operation per request.

use crate::signal::Signal;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A slot that is not armed, or a deadline that is not queued.
const NONE: u64 = u64::MAX;
/// A slot whose deadline has passed (deadlines are at least 1 ms after the origin).
const FIRED: u64 = 0;

struct Slot {
    /// When the waiting connection times out (ms after the origin); `NONE` when it is not
    /// waiting, `FIRED` once it timed out.
    deadline: u64,
    /// The key this slot has in the queue, `NONE` when it has none.
    queued: u64,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Inner {
    slots: Vec<Slot>,
    free: Vec<u32>,
    queue: BTreeSet<(u64, u32)>,
    /// The deadline the task sleeps until (`NONE`: none); an earlier one wakes it.
    armed: u64,
    /// Set when a deadline earlier than `armed` was queued and the task has not seen it.
    rearm: bool,
    driver: Option<Waker>,
}

/// The idle deadlines of one core's connections (see the module doc).
pub struct IdleTimers {
    origin: Instant,
    inner: RefCell<Inner>,
}

impl Default for IdleTimers {
    fn default() -> Self {
        IdleTimers {
            origin: Instant::now(),
            inner: RefCell::new(Inner {
                armed: NONE,
                ..Inner::default()
            }),
        }
    }
}

impl IdleTimers {
    /// A slot for one connection, freed when the returned guard drops.
    pub fn slot(&self) -> IdleSlot<'_> {
        let mut inner = self.inner.borrow_mut();
        let fresh = Slot {
            deadline: NONE,
            queued: NONE,
            waker: None,
        };
        let index = match inner.free.pop() {
            Some(i) => {
                inner.slots[i as usize] = fresh;
                i
            }
            None => {
                inner.slots.push(fresh);
                (inner.slots.len() - 1) as u32
            }
        };
        IdleSlot {
            timers: self,
            index,
        }
    }

    /// Slots in use (connections holding one).
    pub fn slots_in_use(&self) -> usize {
        let inner = self.inner.borrow();
        inner.slots.len() - inner.free.len()
    }

    /// Milliseconds after the origin, rounded up (a deadline never fires early), at least 1.
    fn deadline_ms(&self, at: Instant) -> u64 {
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        let ms = nanos.div_ceil(1_000_000);
        u64::try_from(ms).unwrap_or(NONE - 1).clamp(1, NONE - 1)
    }

    /// Milliseconds after the origin, rounded down: deadlines up to this one have passed.
    fn now_ms(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.origin).as_millis();
        u64::try_from(ms).unwrap_or(NONE - 1)
    }

    fn arm(&self, index: u32, at: Instant) {
        let deadline = self.deadline_ms(at);
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let slot = &mut inner.slots[index as usize];
        slot.deadline = deadline;
        if slot.queued <= deadline {
            // Found again, at the newer deadline, when the queued one comes due.
            return;
        }
        if slot.queued != NONE {
            inner.queue.remove(&(slot.queued, index));
        }
        slot.queued = deadline;
        inner.queue.insert((deadline, index));
        if deadline < inner.armed {
            inner.armed = deadline;
            inner.rearm = true;
            if let Some(w) = inner.driver.take() {
                w.wake();
            }
        }
    }

    fn disarm(&self, index: u32) {
        let mut inner = self.inner.borrow_mut();
        let slot = &mut inner.slots[index as usize];
        slot.deadline = NONE;
        slot.waker = None;
    }

    fn poll_expired(&self, index: u32, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.inner.borrow_mut();
        let slot = &mut inner.slots[index as usize];
        if slot.deadline == FIRED {
            return Poll::Ready(());
        }
        match &mut slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            other => *other = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    fn release(&self, index: u32) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let slot = &mut inner.slots[index as usize];
        if slot.queued != NONE {
            inner.queue.remove(&(slot.queued, index));
        }
        *slot = Slot {
            deadline: NONE,
            queued: NONE,
            waker: None,
        };
        inner.free.push(index);
    }

    /// Wake the connections whose deadline has passed by `now`; the next queued deadline.
    pub fn fire_due(&self, now: Instant) -> Option<Instant> {
        let now_ms = self.now_ms(now);
        let mut wake = Vec::new();
        let mut inner = self.inner.borrow_mut();
        while let Some(&(key, index)) = inner.queue.first() {
            if key > now_ms {
                break;
            }
            inner.queue.pop_first();
            let slot = &mut inner.slots[index as usize];
            slot.queued = NONE;
            match slot.deadline {
                NONE | FIRED => {}
                d if d <= now_ms => {
                    slot.deadline = FIRED;
                    wake.extend(slot.waker.take());
                }
                d => {
                    slot.queued = d;
                    inner.queue.insert((d, index));
                }
            }
        }
        let next = inner.queue.first().map(|&(key, _)| key);
        inner.armed = next.unwrap_or(NONE);
        inner.rearm = false;
        drop(inner);
        for w in wake {
            w.wake();
        }
        next.map(|ms| self.origin + Duration::from_millis(ms))
    }

    /// Resolves when a deadline earlier than the one the task sleeps until was queued.
    fn rearmed(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            let mut inner = self.inner.borrow_mut();
            if std::mem::take(&mut inner.rearm) {
                return Poll::Ready(());
            }
            inner.driver = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// A connection's slot in its core's [`IdleTimers`].
pub struct IdleSlot<'a> {
    timers: &'a IdleTimers,
    index: u32,
}

impl IdleSlot<'_> {
    /// Time out at `at` (replacing any earlier deadline) until [`IdleSlot::disarm`].
    pub fn arm(&self, at: Instant) {
        self.timers.arm(self.index, at);
    }

    /// Stop waiting: the connection has bytes to serve.
    pub fn disarm(&self) {
        self.timers.disarm(self.index);
    }

    /// Ready once the armed deadline has passed.
    pub fn poll_expired(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.timers.poll_expired(self.index, cx)
    }
}

impl Drop for IdleSlot<'_> {
    fn drop(&mut self) {
        self.timers.release(self.index);
    }
}

/// The core's timer task: wake connections whose deadline passed, until `done` fires.
pub async fn drive(timers: &IdleTimers, done: &Signal) {
    let mut sleep = std::pin::pin!(monoio::time::sleep(Duration::from_secs(3600)));
    loop {
        let next = timers.fire_due(Instant::now());
        let rearmed = timers.rearmed();
        let mut rearmed = std::pin::pin!(rearmed);
        let mut stop = std::pin::pin!(done.wait());
        if let Some(at) = next {
            sleep.as_mut().reset(at.into());
        }
        let stopped = std::future::poll_fn(|cx| {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            if rearmed.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            match next {
                Some(_) => Pin::new(&mut sleep).poll(cx).map(|_| false),
                None => Poll::Pending,
            }
        })
        .await;
        if stopped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop_cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    #[test]
    fn a_deadline_fires_once_it_has_passed_and_not_before() {
        let timers = IdleTimers::default();
        let slot = timers.slot();
        let t0 = timers.origin;
        slot.arm(t0 + Duration::from_millis(100));
        let mut cx = noop_cx();
        assert_eq!(
            timers.fire_due(t0 + Duration::from_millis(99)),
            Some(t0 + Duration::from_millis(100))
        );
        assert!(slot.poll_expired(&mut cx).is_pending());
        assert_eq!(timers.fire_due(t0 + Duration::from_millis(100)), None);
        assert!(slot.poll_expired(&mut cx).is_ready());
    }

    #[test]
    fn a_later_deadline_is_found_again_when_the_queued_one_comes_due() {
        let timers = IdleTimers::default();
        let slot = timers.slot();
        let t0 = timers.origin;
        let mut cx = noop_cx();
        slot.arm(t0 + Duration::from_millis(10));
        slot.disarm();
        slot.arm(t0 + Duration::from_millis(50));
        assert_eq!(timers.inner.borrow().queue.len(), 1, "no second key");
        assert_eq!(
            timers.fire_due(t0 + Duration::from_millis(20)),
            Some(t0 + Duration::from_millis(50))
        );
        assert!(slot.poll_expired(&mut cx).is_pending());
        assert_eq!(timers.fire_due(t0 + Duration::from_millis(50)), None);
        assert!(slot.poll_expired(&mut cx).is_ready());
    }

    #[test]
    fn an_earlier_deadline_replaces_the_queued_one_and_wakes_the_task() {
        let timers = IdleTimers::default();
        let slot = timers.slot();
        let t0 = timers.origin;
        slot.arm(t0 + Duration::from_millis(500));
        assert_eq!(timers.fire_due(t0), Some(t0 + Duration::from_millis(500)));
        slot.arm(t0 + Duration::from_millis(5));
        assert!(timers.inner.borrow().rearm, "the task must wake for it");
        assert_eq!(timers.inner.borrow().queue.len(), 1);
        assert_eq!(timers.fire_due(t0 + Duration::from_millis(5)), None);
        assert!(slot.poll_expired(&mut noop_cx()).is_ready());
    }

    #[test]
    fn a_disarmed_or_released_slot_never_fires_and_slots_are_reused() {
        let timers = IdleTimers::default();
        let t0 = timers.origin;
        let a = timers.slot();
        a.arm(t0 + Duration::from_millis(5));
        a.disarm();
        assert_eq!(timers.fire_due(t0 + Duration::from_secs(1)), None);
        assert!(a.poll_expired(&mut noop_cx()).is_pending());
        let b = timers.slot();
        b.arm(t0 + Duration::from_millis(5));
        drop(b);
        assert_eq!(timers.slots_in_use(), 1);
        assert!(timers.inner.borrow().queue.is_empty(), "released: unqueued");
        let c = timers.slot();
        assert_eq!(c.index, 1, "the freed slot is reused");
        assert!(c.poll_expired(&mut noop_cx()).is_pending(), "a fresh slot");
        drop((a, c));
        assert_eq!(timers.slots_in_use(), 0);
    }
}
