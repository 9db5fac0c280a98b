//! coremesh-balancer: choosing an endpoint for each request — latency scores, power of two
//! choices, re-try probes of failing endpoints (suspect, or ejected and half-open), latency
//! gossip between cores, retry budget.
//!
//! Pure logic: no I/O, no locks, and it never reads the clock or a global RNG. Time comes
//! in as `now: Instant`, randomness as `&mut impl RngCore`, so tests replay exact
//! sequences (a test in `purity_tests.rs` checks the sources for clock and RNG reads).
//! All state is per core; the only thing crossing threads is a [`GossipBatch`] through a
//! [`GossipPort`]. The design and defaults are written up in `docs/balancing.md`.
//!
//! # API
//!
//! One [`ServiceBalancer`] per (core, service); endpoints are identified by `SocketAddr`.
//!
//! ```text
//! ServiceBalancer::new(service: Arc<str>, endpoints: &[SocketAddr], cfg: BalancerConfig) -> Self
//! ServiceBalancer::set_endpoints(&mut self, endpoints: &[SocketAddr])
//! ServiceBalancer::choose(&mut self, now: Instant, rng: &mut impl RngCore, exclude: &[SocketAddr])
//!     -> Option<Choice { addr: SocketAddr, index: usize, probe: bool }>
//! ServiceBalancer::on_dispatch(&mut self, addr: SocketAddr)
//! ServiceBalancer::on_outcome(&mut self, addr: SocketAddr, now: Instant, latency: Duration,
//!     outcome: Outcome, rng: &mut impl RngCore)
//! ServiceBalancer::views(&self, now: Instant) -> Vec<EndpointView>
//! ServiceBalancer::take_gossip(&mut self, now: Instant) -> Option<Arc<GossipBatch>>
//! ServiceBalancer::merge_gossip(&mut self, batch: &GossipBatch, now: Instant) -> bool
//! ServiceBalancer::{service, config, len, is_empty, endpoints, histograms_allocated}
//!
//! GossipMesh::new(cores: usize) -> Vec<GossipPort>      (or ::with_capacity(cores, inbox))
//! GossipPort::{core() -> usize, broadcast(&self, &Arc<GossipBatch>) -> usize,
//!     try_recv(&self) -> Option<Arc<GossipBatch>>, sent() -> u64, dropped() -> u64}
//! GossipBatch::{service() -> &Arc<str>, latencies() -> &[LatencyInterval], ejections() -> &[EjectionNotice]}
//!
//! RetryBudget::new(RetryBudgetConfig { ratio, min_per_sec, window }) -> Self
//! RetryBudget::{record_request(&mut self, now), try_withdraw(&mut self, now) -> bool,
//!     remaining(&self, now) -> u64, withdrawn_total() -> u64, refused_total() -> u64}
//! backoff(attempt: u32, base: Duration, max: Duration, rng: &mut impl RngCore) -> Duration
//! counts_as_failure(status: u16, cfg: &BalancerConfig) -> bool
//! is_idempotent(method: &[u8]) -> bool
//!
//! sim::run(&Scenario, &Policy, seed: u64, base: Instant) -> Report   (deterministic
//!     simulation of the choice on simulated endpoints; sim::presets holds the documented
//!     scenarios)
//! ```
//!
//! # Calling sequence on a core
//!
//! Per request: `choose(now, rng, &tried)` → `on_dispatch(addr)` → send → exactly one
//! `on_outcome(addr, now, latency, outcome, rng)`. Pass `Outcome::Failure` only for failures
//! that count ([`counts_as_failure`] for statuses). Before a retry: [`is_idempotent`],
//! `RetryBudget::try_withdraw`, wait [`backoff`], then `choose` again with the tried
//! endpoints in `exclude`. If a choice is abandoned before dispatch, call nothing; a probe
//! slot (`Choice.probe`) abandoned that way frees itself after `probe_timeout`.
//!
//! Per tick (default 100 ms): for each service, `take_gossip(now)` and broadcast the batch
//! through the core's `GossipPort`; drain `try_recv()` and hand each batch to
//! `merge_gossip` of the balancer named by `batch.service()`, then drop it.
//!
//! On a new endpoint set: `set_endpoints`; endpoints that stay keep their state.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod addr_map;
mod backoff;
mod choose;
mod config;
mod decay;
mod eject;
mod endpoint;
mod gossip;
mod histogram;
mod idempotency;
mod mesh;
mod outcome;
mod retry_budget;
mod service;
pub mod sim;
mod window;

#[cfg(test)]
mod purity_tests;

pub use addr_map::{AddrHasher, AddrMap};
pub use backoff::backoff;
pub use config::{
    BalancerConfig, ConfigError, EjectionConfig, Kind, ScoreModel, DEFAULT_BACKOFF_JITTER,
    DEFAULT_BASE_BACKOFF, DEFAULT_CONSECUTIVE_FAILURES, DEFAULT_EWMA_DECAY,
    DEFAULT_FAILURE_PENALTY, DEFAULT_FAILURE_STATUSES, DEFAULT_GOSSIP_WINDOW, DEFAULT_MAX_BACKOFF,
    DEFAULT_MAX_EJECTED_RATIO, DEFAULT_NEUTRAL_LATENCY, DEFAULT_PROBE_TIMEOUT,
    DEFAULT_SCAN_ALL_UP_TO, DEFAULT_WINDOW_QUANTILE,
};
pub use eject::Health;
pub use gossip::{EjectionNotice, GossipBatch, LatencyInterval, MAX_UNRECLAIMED};
pub use histogram::{
    latency_us, new_latency_histogram, LatencyHistogram, HIGHEST_US, LOWEST_US, SIGNIFICANT_DIGITS,
};
pub use idempotency::is_idempotent;
pub use mesh::{GossipMesh, GossipPort, DEFAULT_GOSSIP_INBOX};
pub use outcome::{counts_as_failure, FailureKind, Outcome};
pub use retry_budget::{
    RetryBudget, RetryBudgetConfig, BUDGET_SLOTS, DEFAULT_RETRY_MIN_PER_SEC, DEFAULT_RETRY_RATIO,
    DEFAULT_RETRY_WINDOW,
};
pub use service::{Choice, EndpointView, ServiceBalancer};
pub use window::WINDOW_SLOTS;
