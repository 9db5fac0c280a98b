//! Balancer configuration: [`BalancerConfig`], [`EjectionConfig`], their `DEFAULT_*` values
//! and [`BalancerConfig::validate`].
//!
//! Every default is a named constant with the reason for its value; `impl Default` uses the
//! same constants, so a config file loader that falls back to them cannot disagree.

use std::fmt;
use std::ops::RangeInclusive;
use std::time::Duration;

/// Consecutive counted failures that eject an endpoint: five in a row is rarely bad luck
/// (at a 10 % error rate the chance is 1 in 100 000), and it is Envoy's default too.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
/// First back-off — of a first ejection, and before the re-try probe of an endpoint that
/// failed without being ejected: long enough for a restarting process to finish dying,
/// short enough that a transient blip costs about one second of capacity.
pub const DEFAULT_BASE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest ejection back-off: an endpoint that keeps failing its probe is still re-tried
/// every minute, so a recovered instance is never forgotten for long.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// At most half of a service's endpoints may be ejected at once: when more than half fail,
/// the fault is more likely in the caller or the network than in the instances, and
/// ejecting them all would turn a partial outage into a full one.
pub const DEFAULT_MAX_EJECTED_RATIO: f64 = 0.5;
/// Back-offs are shortened by a random factor of up to 20 %, so that endpoints ejected
/// together (and cores that ejected the same endpoint) do not probe in lock-step.
pub const DEFAULT_BACKOFF_JITTER: f64 = 0.2;
/// A probe (half-open or suspect) whose outcome never arrives (the proxy abandoned the
/// choice) frees the probe slot after this long; it is longer than any sane request timeout.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// How far back the gossiped latency histograms reach: ten seconds is a hundred gossip ticks
/// at the default 100 ms, enough samples for a stable p90, and short enough that a
/// recovered endpoint wins traffic back within seconds.
pub const DEFAULT_GOSSIP_WINDOW: Duration = Duration::from_secs(10);
/// The quantile of the merged window used in the score: p90 reacts to a slow tail without
/// being driven by single outliers the way p99 is.
pub const DEFAULT_WINDOW_QUANTILE: f64 = 0.9;
/// Time constant of the local peak-EWMA and of the failure-rate decay: the value
/// Finagle and linkerd use for peak-EWMA (10 s).
pub const DEFAULT_EWMA_DECAY: Duration = Duration::from_secs(10);
/// What one failure costs beyond the retry's own latency (which the predicted score adds
/// through `× (1 + failure_rate)`): the retry's back-off — the proxy's first retry waits up
/// to 2 ms. Larger values shun a partly failing endpoint even while the others queue, and
/// lose its capacity: in the simulation (20 % fast 503s, 16 connections) 2 ms serves 13 %
/// more than 5 ms, 10 ms or more. A failing endpoint still never looks fast: its score is at
/// least `(1 + failure_rate)` times its latency, and it is re-tried on the back-off schedule.
/// (The load-product score used 100 ms.)
pub const DEFAULT_FAILURE_PENALTY: Duration = Duration::from_millis(2);
/// Latency assumed while no endpoint of the service has any history: a typical in-cluster
/// RPC. Once any endpoint has history, new ones start at the median of the known ones.
pub const DEFAULT_NEUTRAL_LATENCY: Duration = Duration::from_millis(10);
/// Services with at most this many endpoints are chosen among all of them rather than by
/// power of two choices: with three endpoints a random pair leaves out the best one in a
/// third of the draws — and then one of the two worse ones must win — while scoring eight
/// endpoints costs well under a microsecond.
pub const DEFAULT_SCAN_ALL_UP_TO: usize = 8;
/// Response statuses that count as failures by default: the server errors, 5xx.
pub const DEFAULT_FAILURE_STATUSES: RangeInclusive<u16> = 500..=599;

/// How a service chooses among its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// Power of two choices over the latency score (the default).
    #[default]
    LeastLatency,
    /// Each available endpoint in turn.
    RoundRobin,
    /// A uniformly random available endpoint.
    Random,
}

/// What the least-latency score is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ScoreModel {
    /// The predicted latency of the next request (the default):
    /// `unit latency × (in_flight + 1) + failure_rate × penalty`, where the unit latency is
    /// learnt from samples divided by the load they finished under, so that the queue an
    /// endpoint builds is counted once. See `docs/balancing.md`.
    #[default]
    Predicted,
    /// The former score, kept for comparison (the simulation measures both):
    /// `(max(peak-EWMA, window p90) + failure_rate × penalty) × (in_flight + 1)`. Its
    /// latency already includes the queue that the multiplier counts again, so a busy fast
    /// endpoint looks as bad as an idle slow one.
    LoadProduct,
}

/// When an endpoint leaves the pool and how it comes back.
///
/// Defaults: `consecutive_failures` 5, `base_backoff` 1 s, `max_backoff` 60 s,
/// `max_ejected_ratio` 0.5, `backoff_jitter` 0.2, `probe_timeout` 30 s.
#[derive(Debug, Clone, PartialEq)]
pub struct EjectionConfig {
    /// Consecutive counted failures that eject an available endpoint.
    pub consecutive_failures: u32,
    /// First back-off before an endpoint that failed is probed again (ejected, or suspect
    /// after a failure that did not eject it); it doubles with each failed probe in a row.
    pub base_backoff: Duration,
    /// Upper bound of the back-off.
    pub max_backoff: Duration,
    /// Largest fraction of the service's endpoints out of the pool at once
    /// (`floor(ratio × endpoints)`); a failure that would exceed it does not eject.
    pub max_ejected_ratio: f64,
    /// Each back-off is multiplied by a random factor in `[1 - jitter, 1]`.
    pub backoff_jitter: f64,
    /// A probe (half-open or suspect) with no outcome after this long lets another through.
    pub probe_timeout: Duration,
}

impl Default for EjectionConfig {
    fn default() -> Self {
        EjectionConfig {
            consecutive_failures: DEFAULT_CONSECUTIVE_FAILURES,
            base_backoff: DEFAULT_BASE_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            max_ejected_ratio: DEFAULT_MAX_EJECTED_RATIO,
            backoff_jitter: DEFAULT_BACKOFF_JITTER,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
        }
    }
}

/// Everything a [`ServiceBalancer`](crate::ServiceBalancer) is tuned by.
///
/// Defaults: `kind` least-latency, `ejection` see [`EjectionConfig`], `gossip_window` 10 s,
/// `window_quantile` 0.9, `ewma_decay` 10 s, `failure_penalty` 2 ms,
/// `neutral_latency` 10 ms, `failure_statuses` 500–599, `score` predicted,
/// `scan_all_up_to` 8.
#[derive(Debug, Clone, PartialEq)]
pub struct BalancerConfig {
    /// The choice algorithm.
    pub kind: Kind,
    /// What the least-latency score is made of.
    pub score: ScoreModel,
    /// Least-latency scores every eligible endpoint of services up to this size and takes
    /// the best; larger ones use power of two choices (0: always two choices).
    pub scan_all_up_to: usize,
    /// Ejection and half-open probing.
    pub ejection: EjectionConfig,
    /// How long gossiped latency intervals stay in the merged window.
    pub gossip_window: Duration,
    /// Quantile of the merged window that enters the score (0 < q ≤ 1).
    pub window_quantile: f64,
    /// Time constant of the local latency estimates' decay while idle and of the
    /// failure-rate decay.
    pub ewma_decay: Duration,
    /// Least latency a failure is worth in the score.
    pub failure_penalty: Duration,
    /// Latency assumed while no endpoint of the service has any history.
    pub neutral_latency: Duration,
    /// Statuses that [`counts_as_failure`](crate::counts_as_failure) reports as failures.
    pub failure_statuses: Vec<RangeInclusive<u16>>,
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            kind: Kind::default(),
            score: ScoreModel::default(),
            scan_all_up_to: DEFAULT_SCAN_ALL_UP_TO,
            ejection: EjectionConfig::default(),
            gossip_window: DEFAULT_GOSSIP_WINDOW,
            window_quantile: DEFAULT_WINDOW_QUANTILE,
            ewma_decay: DEFAULT_EWMA_DECAY,
            failure_penalty: DEFAULT_FAILURE_PENALTY,
            neutral_latency: DEFAULT_NEUTRAL_LATENCY,
            failure_statuses: vec![DEFAULT_FAILURE_STATUSES],
        }
    }
}

/// A configuration value out of its range, naming the field.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The offending field, e.g. `ejection.max_ejected_ratio`.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "balancer config: {}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl BalancerConfig {
    /// Checks every field's range. A balancer built from an invalid config still works (it
    /// clamps), but a config loader should report this error instead.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason| Err(ConfigError { field, reason });
        let e = &self.ejection;
        if e.consecutive_failures == 0 {
            return err("ejection.consecutive_failures", "must be at least 1");
        }
        if e.base_backoff.is_zero() {
            return err("ejection.base_backoff", "must be positive");
        }
        if e.max_backoff < e.base_backoff {
            return err("ejection.max_backoff", "must be at least base_backoff");
        }
        if !(0.0..=1.0).contains(&e.max_ejected_ratio) {
            return err("ejection.max_ejected_ratio", "must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&e.backoff_jitter) {
            return err("ejection.backoff_jitter", "must be within 0..=1");
        }
        if e.probe_timeout.is_zero() {
            return err("ejection.probe_timeout", "must be positive");
        }
        if self.gossip_window < Duration::from_millis(1) {
            return err("gossip_window", "must be at least 1 ms");
        }
        if !(self.window_quantile > 0.0 && self.window_quantile <= 1.0) {
            return err("window_quantile", "must be within (0, 1]");
        }
        if self.ewma_decay.is_zero() {
            return err("ewma_decay", "must be positive");
        }
        if self.failure_statuses.iter().any(|r| r.is_empty()) {
            return err("failure_statuses", "ranges must not be empty");
        }
        Ok(())
    }

    /// `floor(max_ejected_ratio × endpoints)`, the most endpoints out of the pool at once.
    pub(crate) fn max_ejected(&self, endpoints: usize) -> usize {
        let ratio = self.ejection.max_ejected_ratio.clamp(0.0, 1.0);
        // The small epsilon keeps e.g. 0.3 × 10 = 2.9999… from flooring to 2.
        ((ratio * endpoints as f64) + 1e-9).floor() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_named() {
        let cfg = BalancerConfig::default();
        assert_eq!(cfg.validate(), Ok(()));
        assert_eq!(cfg.kind, Kind::LeastLatency);
        assert_eq!(cfg.ejection.consecutive_failures, 5);
        assert_eq!(cfg.ejection.base_backoff, Duration::from_secs(1));
        assert_eq!(cfg.ejection.max_backoff, Duration::from_secs(60));
        assert_eq!(cfg.gossip_window, Duration::from_secs(10));
    }

    #[test]
    fn validate_names_the_field() {
        let mut cfg = BalancerConfig::default();
        cfg.ejection.max_ejected_ratio = 1.5;
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.field, "ejection.max_ejected_ratio");
        assert!(e.to_string().contains("max_ejected_ratio"));
    }

    #[test]
    fn max_ejected_floors() {
        let cfg = BalancerConfig::default();
        assert_eq!(cfg.max_ejected(1), 0);
        assert_eq!(cfg.max_ejected(3), 1);
        assert_eq!(cfg.max_ejected(4), 2);
        let mut c = cfg.clone();
        c.ejection.max_ejected_ratio = 0.3;
        assert_eq!(c.max_ejected(10), 3);
    }
}
