//! Time-decaying estimates kept per endpoint on one core: [`UnitLatency`] (latency per
//! request in flight, the base of the predicted-latency score), [`PeakEwma`] (the fast local
//! latency estimate of the load-product score) and [`FailureRate`] (the recent share of
//! failed requests).
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

/// Weight of one sample in [`UnitLatency`]'s averages: the last eight or so requests, so a
/// slow-down shows within a few answers while single outliers move it by an eighth.
pub(crate) const UNIT_WEIGHT: f64 = 1.0 / 8.0;

/// Most a single latency sample counts in [`UnitLatency`]'s average in steady state, as a
/// multiple of the current average: one pause of a busy machine (an answer 40 times the
/// usual) then lifts the estimate by at most `(4 - 1) / 8`, three eighths, instead of
/// five times over, while a real slow-down still multiplies it by 1.375 per answer (30
/// times slower shows within a dozen answers). Without the cap, one pause made a fast
/// endpoint look slower than a failing one for as long as the lifted estimate kept it from
/// getting the answers that would bring it down (see docs/balancing.md, the flaky sweep).
pub(crate) const UNIT_OUTLIER_CAP: f64 = 4.0;

/// Latency per unit of load: the recent average latency divided by the recent average
/// load the requests were sent into (`in_flight + 1` on this core at dispatch), both
/// averaged with weight [`UNIT_WEIGHT`] per sample (or more after a pause: at least
/// `1 - exp(-Δt / tau)`), a sample counting at most [`UNIT_OUTLIER_CAP`] times the
/// average once the first samples are in. It decays toward zero while no latency sample arrives, so an
/// endpoint left alone is tried again.
///
/// Times `in_flight + 1` it predicts the latency of the next request. An endpoint that
/// queues (one worker) answers in `(load at dispatch) × service time`, so the ratio is its
/// service time; one that serves everything in parallel answers in its service time
/// whatever the load, the ratio is `service time / typical load`, and the prediction at its
/// typical load is again what it is observed to take. Either way the queue is counted once,
/// not in the latency and again in a multiplier. A ratio of averages rather than an average
/// of per-request ratios: the last requests of a draining queue took long and were sent
/// into a long queue, and only the pair of averages keeps the two together.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnitLatency {
    /// Average latency in µs and when it was last updated.
    latency: Option<(f64, Instant)>,
    /// Average `in_flight + 1` at dispatch.
    load: Option<f64>,
    /// Latency samples so far (saturating).
    samples: u32,
    /// Dispatches so far (saturating).
    dispatches: u32,
}

impl UnitLatency {
    /// A request is sent while `in_flight` others are out on this core.
    pub(crate) fn dispatched(&mut self, in_flight: u32) {
        let sample = f64::from(in_flight) + 1.0;
        self.dispatches = self.dispatches.saturating_add(1);
        self.load = Some(match self.load {
            None => sample,
            Some(v) => v + UNIT_WEIGHT * (sample - v),
        });
    }

    /// A request answered after `latency_us`.
    /// The first samples are averaged plainly (weight `1 / samples`), so that one odd first
    /// answer does not stand for eight.
    pub(crate) fn observe(&mut self, now: Instant, latency_us: f64, tau: Duration) {
        self.samples = self.samples.saturating_add(1);
        let next = match self.latency {
            None => latency_us,
            Some((value, at)) => {
                let kept = survival(now.saturating_duration_since(at), tau);
                let current = value * kept;
                let weight = UNIT_WEIGHT
                    .max(1.0 / f64::from(self.samples))
                    .max(1.0 - kept);
                // In steady state one sample counts at most UNIT_OUTLIER_CAP times the
                // estimate; the first samples and a sample after a pause count whole.
                let sample = if weight <= UNIT_WEIGHT {
                    latency_us.min(value * UNIT_OUTLIER_CAP)
                } else {
                    latency_us
                };
                current + weight * (sample - current)
            }
        };
        self.latency = Some((next, now));
    }

    /// Requests sent so far.
    pub(crate) fn dispatches(&self) -> u32 {
        self.dispatches
    }

    /// Latency per unit of load at `now`, decayed since the last sample; `None` before the
    /// first sample.
    pub(crate) fn get(&self, now: Instant, tau: Duration) -> Option<f64> {
        let (value, at) = self.latency?;
        let load = self.load.unwrap_or(1.0).max(1.0);
        Some(value * survival(now.saturating_duration_since(at), tau) / load)
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
    fn unit_latency_is_latency_over_the_load_sent_into() {
        let t0 = Instant::now();
        let mut u = UnitLatency::default();
        assert_eq!(u.get(t0, TAU), None);
        // Without a dispatch seen, the load counts as one.
        u.observe(t0, 8_000.0, TAU);
        assert_eq!(u.get(t0, TAU), Some(8_000.0));
        // Sent with three others out: load 4, 2 ms per unit.
        let mut u = UnitLatency::default();
        u.dispatched(3);
        u.observe(t0, 8_000.0, TAU);
        assert_eq!(u.get(t0, TAU), Some(2_000.0));
        // The second sample weighs a half (a plain average of the first ones), the load an
        // eighth: latency 12 ms, load 4 + 1/8 × 4.
        u.dispatched(7);
        u.observe(t0, 16_000.0, TAU);
        assert_eq!(u.get(t0, TAU), Some(12_000.0 / 4.5));
        assert_eq!(u.dispatches(), 2);
        // From the eighth sample on, one sample moves the average by an eighth.
        for _ in 0..6 {
            u.observe(t0, 12_000.0, TAU);
        }
        u.observe(t0, 20_000.0, TAU);
        assert_eq!(u.get(t0, TAU), Some(13_000.0 / 4.5));
        // Idle for one time constant: down to 1/e.
        let v = u.get(t0 + TAU, TAU).unwrap();
        let expected = 13_000.0 / 4.5 / std::f64::consts::E;
        assert!((v - expected).abs() < 1e-6, "{v}");
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

    #[test]
    fn one_pause_lifts_the_unit_latency_by_at_most_three_eighths() {
        let t0 = Instant::now();
        let step = Duration::from_micros(100);
        let mut u = UnitLatency::default();
        let mut t = t0;
        for _ in 0..20 {
            u.dispatched(0);
            u.observe(t, 100.0, TAU);
            t += step;
        }
        let before = u.get(t, TAU).unwrap();
        // A 4 ms pause among 100 µs answers: counted as 400 µs, it adds 3/8 of the
        // estimate (whole, it added 3.9 ms / 8, five times the estimate).
        u.dispatched(0);
        u.observe(t, 4_000.0, TAU);
        let lifted = u.get(t, TAU).unwrap();
        assert!(lifted <= 137.5 && lifted > 137.4, "{before} -> {lifted}");
        // A real slow-down to 3 ms still shows: past half of it within a dozen answers.
        let mut answers = 0;
        while u.get(t, TAU).unwrap() < 1_500.0 {
            t += step;
            u.dispatched(0);
            u.observe(t, 3_000.0, TAU);
            answers += 1;
        }
        assert_eq!(answers, 9);
        // After a long pause a sample counts whole again (weight 1 - e^(-Δt/τ)), capped by
        // nothing: the endpoint is what it now answers.
        let later = t + 10 * TAU;
        u.dispatched(0);
        u.observe(later, 50_000.0, TAU);
        assert!(u.get(later, TAU).unwrap() > 49_000.0);
    }
}
