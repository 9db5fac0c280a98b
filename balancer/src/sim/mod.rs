//! A deterministic discrete-event simulation of a service's balancing: endpoints with
//! service-time distributions, worker limits (requests beyond them queue) and error rates;
//! closed-loop clients or open-loop Poisson arrivals; several cores, each with its own
//! balancer, gossiping as the proxy does. It compares choice policies on the same
//! scenario — the balancer's own scores and the usual peers (round-robin,
//! least-connections, Linkerd-style peak-EWMA with two choices).
//!
//! Like the rest of the crate it reads no clock: the caller passes a base `Instant` and the
//! simulation adds simulated offsets to it. The same scenario, policy and seed always give
//! the same report. `coremesh-bench simulate` sweeps it over concurrency and plots it;
//! `docs/balancing.md` shows the results.

mod engine;
mod peers;
pub mod presets;
mod report;
mod scenario;

pub use engine::run;
pub use report::{EndpointReport, Report};
pub use scenario::{Dist, EndpointSpec, Load, Policy, RetryBackoff, Scenario};

#[cfg(test)]
mod tests;
