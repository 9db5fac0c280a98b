//! [`Sampler`]: the sampling decision for a trace that starts here (no parent decision).
//! A trace that arrives with a decision keeps it; see `Extracted::server_context`.

use rand::RngCore;

/// Ratio of new root traces that are sampled, by default: one in a hundred keeps export
/// traffic and collector load small at sidecar scale while still showing every route;
/// callers that pass `sampled=1` (or B3 debug) are always traced.
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

/// Samples a fixed ratio of new traces, deterministically given the RNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    ratio: f64,
    /// A draw `x` of `next_u64` samples when `x < threshold` (for 0 < ratio < 1).
    threshold: u64,
}

impl Sampler {
    /// Samples `ratio` of new traces: `0` (or NaN) none, `1` or more all.
    pub fn new(ratio: f64) -> Sampler {
        let ratio = if ratio.is_nan() {
            0.0
        } else {
            ratio.clamp(0.0, 1.0)
        };
        // ratio < 1 here, so the product is below 2^64 (the cast saturates anyway).
        let threshold = (ratio * 18_446_744_073_709_551_616.0) as u64;
        Sampler { ratio, threshold }
    }

    /// The ratio in force (clamped to 0..=1).
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Whether a new trace is sampled. Ratios 0 and 1 decide without drawing; any other
    /// draws one `u64` from `rng`.
    pub fn sample<R: RngCore + ?Sized>(&self, rng: &mut R) -> bool {
        if self.ratio <= 0.0 {
            false
        } else if self.ratio >= 1.0 {
            true
        } else {
            rng.next_u64() < self.threshold
        }
    }
}

impl Default for Sampler {
    fn default() -> Sampler {
        Sampler::new(DEFAULT_SAMPLE_RATIO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn edges_do_not_draw() {
        let mut rng = StepRng::new(0, 1);
        assert!(!Sampler::new(0.0).sample(&mut rng));
        assert!(!Sampler::new(-3.0).sample(&mut rng));
        assert!(!Sampler::new(f64::NAN).sample(&mut rng));
        assert!(Sampler::new(1.0).sample(&mut rng));
        assert!(Sampler::new(7.0).sample(&mut rng));
        assert_eq!(rng.next_u64(), 0, "nothing was drawn");
    }

    #[test]
    fn threshold_splits_the_draws() {
        let half = Sampler::new(0.5);
        assert!(half.sample(&mut StepRng::new(u64::MAX / 2, 0)));
        assert!(!half.sample(&mut StepRng::new(u64::MAX / 2 + 1, 0)));
        assert_eq!(Sampler::default().ratio(), 0.01);
    }

    #[test]
    fn a_seeded_run_samples_an_exact_count() {
        let sampler = Sampler::new(0.25);
        let count = |seed| {
            let mut rng = SmallRng::seed_from_u64(seed);
            (0..10_000).filter(|_| sampler.sample(&mut rng)).count()
        };
        // Same seed, same decisions.
        assert_eq!(count(42), count(42));
        let n = count(42);
        // SmallRng (xoshiro256++ on 64-bit targets) seeded with 42: 2483 of 10000.
        assert_eq!(n, 2483, "of 10000 at ratio 0.25");
    }
}
