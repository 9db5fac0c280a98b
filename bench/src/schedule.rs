//! The open-loop schedule and the coordinated-omission rule, as pure functions of time so
//! that tests can replay them exactly.
//!
//! Request `i` of an open-loop run is *intended* to be sent at `start + i / rate`; request
//! `i` goes to connection `i % connections`, so each connection carries `rate /
//! connections`. A connection sends a request at its intended time, or as soon as it is
//! free when the previous response came back late. Latency is then measured:
//! - from the intended time when the connection was still busy at that time: the wait is
//!   the system's fault, and leaving it out is the coordinated omission wrk2 corrects;
//! - from the actual send when the connection was free at the intended time: the send was
//!   only as late as the generator's timer (monoio's timer wheel ticks every millisecond),
//!   which says nothing about the system under test.

use std::time::{Duration, Instant};

/// A fixed-rate schedule of `total` requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenSchedule {
    pub rate: f64,
    pub total: u64,
}

impl OpenSchedule {
    /// The schedule of `rate` requests per second held for `duration`.
    pub fn for_duration(rate: f64, duration: Duration) -> OpenSchedule {
        OpenSchedule {
            rate,
            total: (rate * duration.as_secs_f64()).floor() as u64,
        }
    }

    /// When request `i` is meant to be sent, after the start.
    pub fn intended_offset(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// The requests connection `connection` of `connections` sends, in order.
    pub fn requests_of(&self, connection: usize, connections: usize) -> impl Iterator<Item = u64> {
        (connection as u64..self.total).step_by(connections.max(1))
    }

    /// How long the whole schedule lasts (the intended time of the last request).
    pub fn span(&self) -> Duration {
        if self.total == 0 {
            Duration::ZERO
        } else {
            self.intended_offset(self.total - 1)
        }
    }
}

/// Where a request's latency clock starts (see the module doc), and whether the request
/// was queued behind a late response.
pub fn clock_start(
    intended: Instant,
    connection_free_at: Instant,
    sent: Instant,
) -> (Instant, bool) {
    if connection_free_at > intended {
        (intended, true)
    } else {
        (sent, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_and_split() {
        let s = OpenSchedule::for_duration(2000.0, Duration::from_millis(500));
        assert_eq!(s.total, 1000);
        assert_eq!(s.intended_offset(1000), Duration::from_millis(500));
        let per: Vec<usize> = (0..3).map(|c| s.requests_of(c, 3).count()).collect();
        assert_eq!(per, vec![334, 333, 333]);
        let mut all: Vec<u64> = (0..3).flat_map(|c| s.requests_of(c, 3)).collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
    }

    /// A replay of one connection at 1000/s whose 10th response takes 100 ms: the nine
    /// requests meant for the stall are measured from their intended times.
    #[test]
    fn stall_is_charged_to_the_requests_that_waited() {
        let s = OpenSchedule {
            rate: 1000.0,
            total: 20,
        };
        let t0 = Instant::now();
        let service = |i: u64| {
            if i == 10 {
                Duration::from_millis(100)
            } else {
                Duration::from_micros(100)
            }
        };
        let mut free_at = t0;
        let mut corrected = Vec::new();
        let mut uncorrected = Vec::new();
        for i in s.requests_of(0, 1) {
            let intended = t0 + s.intended_offset(i);
            // Sent at the intended time, or when the connection frees up (timer slop of
            // 300 µs on a free connection).
            let sent = if free_at > intended {
                free_at
            } else {
                intended + Duration::from_micros(300)
            };
            let done = sent + service(i);
            let (start, _) = clock_start(intended, free_at, sent);
            corrected.push(done - start);
            uncorrected.push(done - sent);
            free_at = done;
        }
        let over = |v: &[Duration]| {
            v.iter()
                .filter(|d| **d >= Duration::from_millis(50))
                .count()
        };
        assert_eq!(over(&uncorrected), 1);
        // Request 10 itself, then 11..=19 waited for it: 100.3 ms - (i - 10) ms each.
        assert_eq!(over(&corrected), 10);
        assert_eq!(corrected[11], Duration::from_micros(100_300 + 100 - 1000));
        // Timer slop on a free connection is not charged.
        assert_eq!(corrected[0], Duration::from_micros(100));
    }
}
