//! How many streams of one client connection are open, and since when none is: what the
//! connection's idle timeout (`[http2] idle_timeout_ms`) reads. A stream may end on
//! another core ([`super::spread`]), so the count is atomic; each stream's [`Ticket`]
//! records its end where it ends.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The open streams of one connection.
pub struct OpenStreams {
    inner: Arc<Inner>,
}

struct Inner {
    /// When the connection opened; ends are kept as nanoseconds since.
    epoch: Instant,
    open: AtomicU32,
    last_end_nanos: AtomicU64,
}

/// Held by a stream until it ends.
pub struct Ticket {
    inner: Arc<Inner>,
}

impl OpenStreams {
    /// None open yet, idle since `now`.
    pub fn new(now: Instant) -> OpenStreams {
        OpenStreams {
            inner: Arc::new(Inner {
                epoch: now,
                open: AtomicU32::new(0),
                last_end_nanos: AtomicU64::new(0),
            }),
        }
    }

    /// A stream opens; it counts until the ticket drops.
    pub fn open(&self) -> Ticket {
        self.inner.open.fetch_add(1, Ordering::Relaxed);
        Ticket {
            inner: self.inner.clone(),
        }
    }

    /// How long the connection has had no stream open at `now`: `None` while one is.
    pub fn idle_for(&self, now: Instant) -> Option<Duration> {
        // Acquire pairs with the ticket's release: a zero count comes with its end time.
        if self.inner.open.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last_end = self.inner.epoch
            + Duration::from_nanos(self.inner.last_end_nanos.load(Ordering::Relaxed));
        Some(now.saturating_duration_since(last_end))
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let since = self.inner.epoch.elapsed().as_nanos();
        let since = u64::try_from(since).unwrap_or(u64::MAX);
        self.inner
            .last_end_nanos
            .fetch_max(since, Ordering::Relaxed);
        self.inner.open.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_only_with_no_stream_open_and_counted_from_the_last_end() {
        const LONG: Duration = Duration::from_secs(1000);
        let now = Instant::now();
        let Some(start) = now.checked_sub(LONG) else {
            return; // a clock this young cannot hold the test
        };
        let streams = OpenStreams::new(start);
        assert!(
            streams.idle_for(now).is_some_and(|d| d >= LONG),
            "idle since the start"
        );
        let a = streams.open();
        let b = streams.open();
        assert_eq!(streams.idle_for(now), None);
        drop(a);
        assert_eq!(streams.idle_for(now), None, "one still open");
        let moved = std::thread::spawn(move || drop(b));
        assert!(moved.join().is_ok());
        let idle = streams.idle_for(Instant::now());
        assert!(
            idle.is_some_and(|d| d < LONG),
            "counted from the end on the other thread, not from the start: {idle:?}"
        );
    }
}
