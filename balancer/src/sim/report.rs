//! What a simulation run measured: [`Report`] and [`EndpointReport`].

use std::time::Duration;

/// One endpoint's part of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReport {
    /// The endpoint's name from the scenario.
    pub name: String,
    /// Attempts sent to it (first tries and retries) during the measured time.
    pub attempts: u64,
    /// Its share of all attempts, 0 to 1.
    pub share: f64,
    /// Attempts it answered with a failure.
    pub failures: u64,
}

/// Client-side results of one run over the measured time.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Requests answered to clients.
    pub completed: u64,
    /// Of those, answered with a failure after all attempts.
    pub errors: u64,
    /// Retries sent.
    pub retries: u64,
    /// `completed` per simulated second.
    pub throughput: f64,
    /// Client latency percentiles (all answers, failures included).
    pub p50: Duration,
    /// 90th percentile.
    pub p90: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// Per endpoint, in scenario order.
    pub endpoints: Vec<EndpointReport>,
}

impl Report {
    /// The share of attempts endpoint `name` got (0 if unknown).
    pub fn share_of(&self, name: &str) -> f64 {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map_or(0.0, |e| e.share)
    }

    /// Attempts endpoint `name` got (0 if unknown).
    pub fn attempts_of(&self, name: &str) -> u64 {
        self.endpoints
            .iter()
            .find(|e| e.name == name)
            .map_or(0, |e| e.attempts)
    }
}
