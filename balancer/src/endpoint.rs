//! [`Endpoint`]: everything one core knows about one endpoint of a service — in-flight
//! count, local latency estimates (unit latency, peak-EWMA), recent failure rate, ejection state, the interval
//! histogram being filled for the next gossip tick, and the merged window of all cores.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{BalancerConfig, ScoreModel};
use crate::decay::{FailureRate, PeakEwma, UnitLatency};
use crate::eject::Ejection;
use crate::histogram::{latency_us, HistogramPool, LatencyHistogram};
use crate::window::LatencyWindow;

#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) in_flight: u32,
    /// Latency per request in flight (the predicted-latency score).
    pub(crate) unit: UnitLatency,
    /// Peak-EWMA latency (the load-product score).
    pub(crate) ewma: PeakEwma,
    pub(crate) failure_rate: FailureRate,
    pub(crate) ejection: Ejection,
    /// This core's samples since the last gossip tick; `None` until the first one.
    pub(crate) interval: Option<LatencyHistogram>,
    pub(crate) window: LatencyWindow,
    /// Outcomes recorded on this core since the endpoint joined.
    pub(crate) requests: u64,
    /// Failures among `requests`.
    pub(crate) failures: u64,
}

impl Endpoint {
    pub(crate) fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            in_flight: 0,
            unit: UnitLatency::default(),
            ewma: PeakEwma::default(),
            failure_rate: FailureRate::default(),
            ejection: Ejection::default(),
            interval: None,
            window: LatencyWindow::default(),
            requests: 0,
            failures: 0,
        }
    }

    /// Records a latency sample locally — the unit latency and the peak-EWMA at once, the
    /// interval histogram for the next gossip tick.
    pub(crate) fn record_latency(
        &mut self,
        now: Instant,
        latency: Duration,
        cfg: &BalancerConfig,
        pool: &mut HistogramPool,
    ) {
        let us = latency_us(latency);
        self.unit.observe(now, us as f64, cfg.ewma_decay);
        self.ewma.observe(now, us as f64, cfg.ewma_decay);
        self.interval
            .get_or_insert_with(|| pool.get())
            .saturating_record(us);
    }

    /// Latency estimate in µs without failures, for a request sent while this core has
    /// nothing in flight on the endpoint; `None` with no history.
    ///
    /// [`ScoreModel::Predicted`]: the local unit latency; while this core has no sample of
    /// its own, the all-cores window quantile (another core's observation is all it knows).
    ///
    /// [`ScoreModel::LoadProduct`]: the larger of the local peak-EWMA
    /// and the all-cores window quantile (a slow-down shows at once through the EWMA; a
    /// slow tail seen by any core shows through the window). `None` with no history.
    ///
    /// A *thin* window — fewer than [`min_window_samples`] samples, too few for its quantile
    /// to be more than its largest sample — counts only while this core has no estimate of
    /// its own (then it is all this core knows, e.g. one slow response another core saw).
    /// Otherwise one slow sample, typically the first request that paid for a new
    /// connection, would hold the endpoint at that value for the whole window while the
    /// peak-EWMA that saw the same sample has long decayed.
    pub(crate) fn latency_estimate(&mut self, now: Instant, cfg: &BalancerConfig) -> Option<f64> {
        let quantile = cfg.window_quantile;
        if cfg.score == ScoreModel::Predicted {
            return match self.unit.get(now, cfg.ewma_decay) {
                Some(v) => Some(v),
                None => self.window.quantile_us(quantile).map(|v| v as f64),
            };
        }
        let local = self.ewma.get(now, cfg.ewma_decay);
        let shared = if local.is_none() || self.window.samples() >= min_window_samples(quantile) {
            self.window.quantile_us(quantile).map(|v| v as f64)
        } else {
            None
        };
        max_known(local, shared)
    }

    /// Same as [`latency_estimate`](Self::latency_estimate) without touching caches, for views.
    pub(crate) fn latency_estimate_at(&self, now: Instant, cfg: &BalancerConfig) -> Option<f64> {
        let quantile = cfg.window_quantile;
        if cfg.score == ScoreModel::Predicted {
            return match self.unit.get(now, cfg.ewma_decay) {
                Some(v) => Some(v),
                None => self
                    .window
                    .merged_at(now, cfg.gossip_window)
                    .map(|h| h.value_at_quantile(quantile) as f64),
            };
        }
        let local = self.ewma.get(now, cfg.ewma_decay);
        let shared = self
            .window
            .merged_at(now, cfg.gossip_window)
            .filter(|h| local.is_none() || h.len() >= min_window_samples(quantile))
            .map(|h| h.value_at_quantile(quantile) as f64);
        max_known(local, shared)
    }

    /// Returns every histogram to the pool (the endpoint is leaving the service).
    pub(crate) fn release(&mut self, pool: &mut HistogramPool) {
        if let Some(h) = self.interval.take() {
            pool.put(h);
        }
        self.window.release(pool);
    }
}

/// Fewest samples whose `quantile` is more than their maximum: `1 / (1 - quantile)`, 10 for
/// p90 (capped at 1000 for quantiles very close to 1).
pub(crate) fn min_window_samples(quantile: f64) -> u64 {
    let tail = 1.0 - quantile.clamp(0.0, 1.0);
    if tail <= 1e-3 {
        return 1_000;
    }
    // The small margin keeps 1 / (1 - 0.9) = 10.000000000000002 at 10.
    ((1.0 / tail) - 1e-9).ceil().max(1.0) as u64
}

fn max_known(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The least-latency score (lower is better), in µs-equivalents, of an endpoint whose
/// [`latency_estimate`](Endpoint::latency_estimate) is `latency_us`:
/// - [`ScoreModel::Predicted`]: `latency × (in_flight + 1) × (1 + failure_rate) +
///   failure_rate × penalty`, the expected latency of the next request: its wait in the
///   queue this core keeps there, and with the chance of a failure, what the failure costs —
///   a retry that takes about as long again, plus `penalty` (the retry's back-off and the
///   risk that the request cannot be retried);
/// - [`ScoreModel::LoadProduct`]: `(latency + failure_rate × penalty) × (in_flight + 1)`.
pub(crate) fn score(
    model: ScoreModel,
    latency_us: f64,
    failure_rate: f64,
    penalty_us: f64,
    in_flight: u32,
) -> f64 {
    let load = f64::from(in_flight) + 1.0;
    match model {
        ScoreModel::Predicted => {
            latency_us * load * (1.0 + failure_rate) + failure_rate * penalty_us
        }
        ScoreModel::LoadProduct => (latency_us + failure_rate * penalty_us) * load,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_grows_with_load_and_failures() {
        let p = ScoreModel::Predicted;
        assert_eq!(score(p, 1_000.0, 0.0, 100_000.0, 0), 1_000.0);
        assert_eq!(score(p, 1_000.0, 0.0, 100_000.0, 2), 3_000.0);
        assert_eq!(score(p, 1_000.0, 0.5, 4_000.0, 0), 3_500.0);
        // The penalty is added once, not once per request in flight.
        assert_eq!(score(p, 1_000.0, 0.5, 4_000.0, 2), 6_500.0);
        let l = ScoreModel::LoadProduct;
        assert_eq!(score(l, 1_000.0, 0.2, 100_000.0, 2), 63_000.0);
    }

    #[test]
    fn predicted_score_counts_the_queue_once() {
        let cfg = BalancerConfig::default();
        let t0 = Instant::now();
        let mut pool = HistogramPool::with_limit(4);
        let ms = Duration::from_millis(1);
        // A parallel endpoint: 2 ms whatever the load; this core keeps 8 requests there.
        let mut parallel = Endpoint::new("127.0.0.1:1".parse().unwrap());
        parallel.in_flight = 7;
        for _ in 0..50 {
            parallel.unit.dispatched(7);
            parallel.record_latency(t0, 2 * ms, &cfg, &mut pool);
        }
        let unit = parallel.latency_estimate(t0, &cfg).unwrap();
        assert_eq!(unit, 250.0);
        // The next request, the eighth, is predicted at the 2 ms the others see...
        let predicted = score(cfg.score, unit, 0.0, 0.0, parallel.in_flight);
        assert_eq!(predicted, 2_000.0);
        // ...where the load product said 8 × 2 ms, worse than an idle 15 ms endpoint.
        let mut legacy = cfg.clone();
        legacy.score = ScoreModel::LoadProduct;
        let latency = parallel.latency_estimate(t0, &legacy).unwrap();
        assert_eq!(score(legacy.score, latency, 0.0, 0.0, 7), 16_000.0);
        // A queueing endpoint: 1 ms of service, sent into a load of 3, answers after 3 ms;
        // with 4 in flight the next one is predicted at 5 ms.
        let mut serial = Endpoint::new("127.0.0.1:2".parse().unwrap());
        for _ in 0..20 {
            serial.unit.dispatched(2);
            serial.record_latency(t0, 3 * ms, &cfg, &mut pool);
        }
        let unit = serial.latency_estimate(t0, &cfg).unwrap();
        assert_eq!(unit, 1_000.0);
        assert_eq!(score(cfg.score, unit, 0.0, 0.0, 4), 5_000.0);
    }

    #[test]
    fn a_quantile_needs_enough_samples_to_differ_from_the_max() {
        assert_eq!(min_window_samples(0.9), 10);
        assert_eq!(min_window_samples(0.5), 2);
        assert_eq!(min_window_samples(0.99), 100);
        assert_eq!(min_window_samples(0.0), 1);
        assert_eq!(min_window_samples(1.0), 1_000);
    }

    #[test]
    fn estimate_takes_the_worse_of_local_and_shared() {
        assert_eq!(max_known(None, None), None);
        assert_eq!(max_known(Some(1.0), None), Some(1.0));
        assert_eq!(max_known(None, Some(2.0)), Some(2.0));
        assert_eq!(max_known(Some(3.0), Some(2.0)), Some(3.0));
    }
}
