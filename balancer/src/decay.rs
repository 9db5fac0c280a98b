//! Time-decaying estimates kept per endpoint on one core: [`PeakEwma`] (the fast local
//! latency estimate) and [`FailureRate`] (the recent share of failed requests).
//!
//! Both decay toward zero while no sample arrives, with time constant `tau`: after `tau`
//! without samples a value is down to 1/e (37 %) of what it was. Reading never mutates.

use std::time::{Duration, Instant};

/// Weight of one outcome in [`FailureRate`] (a memory of about ten outcomes): one failure
/// after a run of successes moves the rate to 0.1, i.e. adds a tenth of the failure penalty
/// (10 ms by default) — enough to lose against a healthy peer until the endpoint's re-try
/// probe clears it (see `eject.rs`) — while an endpoint failing every request approaches the
/// whole penalty within a few.
pub(crate) const FAILURE_RATE_WEIGHT: f64 = 0.1;

/// `exp(-elapsed / tau)`: how much of a value survives `elapsed`.
fn survival(elapsed: Duration, tau: Duration) -> f64 {
    if tau.is_zero() {
        return 0.0;
    }
    (-elapsed.as_secs_f64() / tau.as_secs_f64()).exp()
}

/// Peak-EWMA latency estimate, as in Finagle and linkerd: a sample above the current
/// estimate replaces it at once (a slow-down is visible on the very next choice); a sample
/// below it is blended in with weight `1 - exp(-Δt / tau)`, and without samples the estimate
/// decays toward zero, so an endpoint idle for long gets tried again.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PeakEwma {
    /// Estimate in microseconds and when it was last updated; `None` before the first sample.
    last: Option<(f64, Instant)>,
}

impl PeakEwma {
    pub(crate) fn observe(&mut self, now: Instant, sample_us: f64, tau: Duration) {
        let next = match self.last {
            None => sample_us,
            Some((value, at)) if sample_us <= value => {
                let keep = survival(now.saturating_duration_since(at), tau);
                value * keep + sample_us * (1.0 - keep)
            }
            Some(_) => sample_us,
        };
        self.last = Some((next, now));
    }

    /// The estimate at `now`, decayed since the last sample; `None` before the first sample.
    pub(crate) fn get(&self, now: Instant, tau: Duration) -> Option<f64> {
        self.last
            .map(|(value, at)| value * survival(now.saturating_duration_since(at), tau))
    }
}

/// Exponentially weighted share of recent outcomes that failed, decaying toward zero while
/// idle, so that an old failure is forgiven even if the endpoint gets no traffic.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailureRate {
    last: Option<(f64, Instant)>,
}

impl FailureRate {
    pub(crate) fn observe(&mut self, now: Instant, failed: bool, tau: Duration) {
        let current = self.get(now, tau);
        let sample = if failed { 1.0 } else { 0.0 };
        let next = current + FAILURE_RATE_WEIGHT * (sample - current);
        self.last = Some((next, now));
    }

    /// The rate in `[0, 1]` at `now`.
    pub(crate) fn get(&self, now: Instant, tau: Duration) -> f64 {
        self.last.map_or(0.0, |(value, at)| {
            value * survival(now.saturating_duration_since(at), tau)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAU: Duration = Duration::from_secs(10);

    #[test]
    fn peak_jumps_up_at_once_and_decays_down() {
        let t0 = Instant::now();
        let mut e = PeakEwma::default();
        assert_eq!(e.get(t0, TAU), None);
        e.observe(t0, 1_000.0, TAU);
        assert_eq!(e.get(t0, TAU), Some(1_000.0));
        e.observe(t0 + Duration::from_millis(1), 30_000.0, TAU);
        assert_eq!(e.get(t0 + Duration::from_millis(1), TAU), Some(30_000.0));
        // A fast sample right after barely moves it: the peak is sticky.
        let t = t0 + Duration::from_millis(2);
        e.observe(t, 1_000.0, TAU);
        let v = e.get(t, TAU).unwrap();
        assert!(v > 29_000.0 && v < 30_000.0, "{v}");
        // One time constant later, with no samples, it is at 1/e.
        let later = e.get(t + TAU, TAU).unwrap();
        assert!((later - v / std::f64::consts::E).abs() < 1e-6);
    }

    #[test]
    fn failure_rate_rises_per_failure_and_forgives_over_time() {
        let t0 = Instant::now();
        let mut r = FailureRate::default();
        assert_eq!(r.get(t0, TAU), 0.0);
        r.observe(t0, true, TAU);
        assert!((r.get(t0, TAU) - 0.1).abs() < 1e-12);
        r.observe(t0, true, TAU);
        assert!((r.get(t0, TAU) - 0.19).abs() < 1e-12);
        r.observe(t0, false, TAU);
        assert!((r.get(t0, TAU) - 0.171).abs() < 1e-12);
        assert!(r.get(t0 + TAU * 5, TAU) < 0.002);
    }
}
