//! What a finished request tells the balancer: [`Outcome`], [`FailureKind`], and
//! [`counts_as_failure`] for deciding whether a response status counts.

use crate::config::BalancerConfig;

/// How a request to an endpoint ended. The proxy passes `Failure` only for failures it
/// counts against the endpoint (see [`counts_as_failure`]); anything else is a `Success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered.
    Success,
    /// The endpoint failed in a way that counts against it.
    Failure(FailureKind),
}

/// Why a request to an endpoint failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The connection could not be established (refused, unreachable, connect timeout).
    Connect,
    /// No (complete) response within the deadline. Its latency is a real observation of
    /// slowness and enters the latency history; other failures' latencies do not.
    Timeout,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// A response whose status counts as a failure.
    Status(u16),
}

/// Whether a response with `status` counts as a failure of the endpoint: by default the
/// 5xx statuses (`cfg.failure_statuses`).
pub fn counts_as_failure(status: u16, cfg: &BalancerConfig) -> bool {
    cfg.failure_statuses.iter().any(|r| r.contains(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_counts_5xx_only() {
        let cfg = BalancerConfig::default();
        assert!(counts_as_failure(500, &cfg));
        assert!(counts_as_failure(503, &cfg));
        assert!(counts_as_failure(599, &cfg));
        assert!(!counts_as_failure(200, &cfg));
        assert!(!counts_as_failure(404, &cfg));
        assert!(!counts_as_failure(429, &cfg));
    }

    #[test]
    fn configured_statuses_count() {
        let cfg = BalancerConfig {
            failure_statuses: vec![429..=429, 502..=504],
            ..BalancerConfig::default()
        };
        assert!(counts_as_failure(429, &cfg));
        assert!(counts_as_failure(503, &cfg));
        assert!(!counts_as_failure(500, &cfg));
    }
}
