//! The fixed buckets of the response latency histogram and how a latency finds its bucket.
//!
//! The bounds run from 1 ms to 10 s, roughly ×2.5 apart: a sidecar's own overhead lives in
//! the first buckets, ordinary service calls in the middle, and timeouts at the end. They
//! are fixed (not configured) so that every core and every scrape agree without a handshake.

use std::time::Duration;

/// The upper bounds (`le`), in seconds, exactly as written in the exposition.
pub const LATENCY_BUCKETS: [&str; 13] = [
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10",
];

/// The same bounds in nanoseconds, for the hot path.
const BOUNDS_NANOS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Counters per histogram: one per finite bucket, one for `+Inf`, one for the sum (ns).
pub(crate) const HISTOGRAM_STRIDE: usize = LATENCY_BUCKETS.len() + 2;
/// Position of the `+Inf` bucket inside a histogram's block.
pub(crate) const INF_SLOT: usize = LATENCY_BUCKETS.len();
/// Position of the sum (nanoseconds) inside a histogram's block.
pub(crate) const SUM_SLOT: usize = LATENCY_BUCKETS.len() + 1;

/// Nanoseconds of `latency`, saturating at `u64::MAX` (584 years).
pub(crate) fn nanos(latency: Duration) -> u64 {
    u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX)
}

/// The (non-cumulative) bucket `latency` falls in: the first bound it does not exceed
/// (`le` is inclusive), or [`INF_SLOT`].
pub(crate) fn bucket(latency_nanos: u64) -> usize {
    BOUNDS_NANOS.partition_point(|&bound| bound < latency_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_bounds_match_the_nanosecond_bounds() {
        for (text, nanos) in LATENCY_BUCKETS.iter().zip(BOUNDS_NANOS) {
            let seconds: f64 = text.parse().unwrap();
            assert_eq!((seconds * 1e9).round() as u64, nanos, "{text}");
        }
        assert!(BOUNDS_NANOS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn bounds_are_inclusive() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1_000_000), 0);
        assert_eq!(bucket(1_000_001), 1);
        assert_eq!(bucket(nanos(Duration::from_millis(100))), 6);
        assert_eq!(bucket(nanos(Duration::from_millis(101))), 7);
        assert_eq!(bucket(10_000_000_000), 12);
        assert_eq!(bucket(10_000_000_001), INF_SLOT);
        assert_eq!(bucket(nanos(Duration::MAX)), INF_SLOT);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
