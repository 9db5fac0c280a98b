//! [`Endpoint`]: everything one core knows about one endpoint of a service — in-flight
//! count, local peak-EWMA latency, recent failure rate, ejection state, the interval
//! histogram being filled for the next gossip tick, and the merged window of all cores.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::BalancerConfig;
use crate::decay::{FailureRate, PeakEwma};
use crate::eject::Ejection;
use crate::histogram::{latency_us, HistogramPool, LatencyHistogram};
use crate::window::LatencyWindow;

#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    pub(crate) in_flight: u32,
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
            ewma: PeakEwma::default(),
            failure_rate: FailureRate::default(),
            ejection: Ejection::default(),
            interval: None,
            window: LatencyWindow::default(),
            requests: 0,
            failures: 0,
        }
    }

    /// Records a latency sample locally: the peak-EWMA at once, the interval histogram for
    /// the next gossip tick.
    pub(crate) fn record_latency(
        &mut self,
        now: Instant,
        latency: Duration,
        cfg: &BalancerConfig,
        pool: &mut HistogramPool,
    ) {
        let us = latency_us(latency);
        self.ewma.observe(now, us as f64, cfg.ewma_decay);
        self.interval
            .get_or_insert_with(|| pool.get())
            .saturating_record(us);
    }

    /// Latency estimate in µs without failures or load: the larger of the local peak-EWMA
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
        let local = self.ewma.get(now, cfg.ewma_decay);
        let quantile = cfg.window_quantile;
        let shared = if local.is_none() || self.window.samples() >= min_window_samples(quantile) {
            self.window.quantile_us(quantile).map(|v| v as f64)
        } else {
            None
        };
        max_known(local, shared)
    }

    /// Same as [`latency_estimate`](Self::latency_estimate) without touching caches, for views.
    pub(crate) fn latency_estimate_at(&self, now: Instant, cfg: &BalancerConfig) -> Option<f64> {
        let local = self.ewma.get(now, cfg.ewma_decay);
        let quantile = cfg.window_quantile;
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

/// The least-latency score (lower is better), in µs-equivalents:
/// `(latency + failure_rate × penalty) × (in_flight + 1)`.
pub(crate) fn score(latency_us: f64, failure_rate: f64, penalty_us: f64, in_flight: u32) -> f64 {
    (latency_us + failure_rate * penalty_us) * (f64::from(in_flight) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_grows_with_load_and_failures() {
        assert_eq!(score(1_000.0, 0.0, 100_000.0, 0), 1_000.0);
        assert_eq!(score(1_000.0, 0.0, 100_000.0, 2), 3_000.0);
        assert_eq!(score(1_000.0, 0.2, 100_000.0, 0), 21_000.0);
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
