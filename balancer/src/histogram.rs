//! Latency histograms: their shape ([`new_latency_histogram`], microseconds, 1 µs..60 s, two
//! significant digits) and the per-service free list ([`HistogramPool`]) that recycles them
//! so that gossip ticks do not allocate.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Smallest recordable latency, in microseconds.
pub const LOWEST_US: u64 = 1;
/// Largest recordable latency, in microseconds (60 s); longer samples are clamped to it.
pub const HIGHEST_US: u64 = 60_000_000;
/// Two significant digits (1 % resolution) is plenty for a score and keeps a histogram at
/// about 10 KiB, so gossip stays cheap at thousands of endpoints.
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// A latency histogram, in microseconds.
pub type LatencyHistogram = Histogram<u32>;

/// An empty histogram of the one shape every core uses, so any two can be added.
pub fn new_latency_histogram() -> LatencyHistogram {
    // The bounds are constants checked by `constant_bounds_are_valid` below; they are not
    // influenced by any peer or configuration, so this cannot fail at run time.
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// A latency in whole microseconds, clamped to the recordable range.
pub fn latency_us(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(LOWEST_US, HIGHEST_US)
}

/// Free list of empty latency histograms. `get` hands out a reset one (allocating only when
/// the list is empty); `put` resets and keeps one unless the list is at its limit.
#[derive(Debug, Default)]
pub(crate) struct HistogramPool {
    free: Vec<LatencyHistogram>,
    limit: usize,
    allocated: u64,
}

impl HistogramPool {
    pub(crate) fn with_limit(limit: usize) -> Self {
        HistogramPool {
            free: Vec::new(),
            limit,
            allocated: 0,
        }
    }

    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
        self.free.truncate(limit);
    }

    pub(crate) fn get(&mut self) -> LatencyHistogram {
        self.free.pop().unwrap_or_else(|| {
            self.allocated += 1;
            new_latency_histogram()
        })
    }

    pub(crate) fn put(&mut self, mut histogram: LatencyHistogram) {
        if self.free.len() < self.limit {
            histogram.reset();
            self.free.push(histogram);
        }
    }

    /// Histograms allocated since creation (for tests and the admin API).
    pub(crate) fn allocated(&self) -> u64 {
        self.allocated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_bounds_are_valid() {
        let mut h = new_latency_histogram();
        h.saturating_record(latency_us(Duration::from_secs(3600)));
        assert_eq!(h.max(), h.highest_equivalent(HIGHEST_US));
        assert_eq!(latency_us(Duration::ZERO), 1);
        assert_eq!(latency_us(Duration::from_millis(5)), 5_000);
    }

    #[test]
    fn pool_recycles_and_resets() {
        let mut pool = HistogramPool::with_limit(2);
        let mut a = pool.get();
        a.saturating_record(42);
        pool.put(a);
        let b = pool.get();
        assert!(b.is_empty());
        assert_eq!(pool.allocated(), 1);
        pool.put(b);
        pool.put(new_latency_histogram());
        pool.put(new_latency_histogram());
        assert_eq!(pool.free.len(), 2);
    }
}
