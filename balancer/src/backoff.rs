//! Retry back-off with full jitter: [`backoff`].

use std::time::Duration;

use rand::{Rng, RngCore};

/// How long to wait before retry number `attempt` (0 for the first retry): a uniformly
/// random duration in `[0, min(max, base × 2^attempt)]` ("full jitter"), which spreads the
/// retries of many clients evenly instead of bunching them at the same instants.
pub fn backoff(attempt: u32, base: Duration, max: Duration, rng: &mut impl RngCore) -> Duration {
    let ceiling = exponential(attempt, base, max);
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=nanos))
}

/// `min(max, base × 2^doublings)` without overflow.
pub(crate) fn exponential(doublings: u32, base: Duration, max: Duration) -> Duration {
    let factor = 1u32 << doublings.min(31);
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn exponential_doubles_and_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(2);
        assert_eq!(exponential(0, b, m), b);
        assert_eq!(exponential(1, b, m), Duration::from_millis(200));
        assert_eq!(exponential(4, b, m), Duration::from_millis(1600));
        assert_eq!(exponential(5, b, m), m);
        assert_eq!(exponential(u32::MAX, b, m), m);
    }

    #[test]
    fn full_jitter_stays_below_the_ceiling() {
        let mut rng = SmallRng::seed_from_u64(7);
        let b = Duration::from_millis(10);
        let m = Duration::from_secs(1);
        for attempt in 0..20 {
            let ceiling = exponential(attempt, b, m);
            for _ in 0..50 {
                assert!(backoff(attempt, b, m, &mut rng) <= ceiling);
            }
        }
        assert_eq!(backoff(3, Duration::ZERO, m, &mut rng), Duration::ZERO);
    }

    #[test]
    fn seeded_sequence_is_reproducible() {
        let b = Duration::from_millis(10);
        let m = Duration::from_secs(1);
        let run = || {
            let mut rng = SmallRng::seed_from_u64(42);
            (0..5)
                .map(|a| backoff(a, b, m, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
