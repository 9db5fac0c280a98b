//! The scenarios the documentation and `coremesh-bench simulate` show, shared with the
//! tests so that what is plotted is what is asserted.
//!
//! - [`slow`]: two fast endpoints (four workers, 1 ms mean) and one 30 ms slower that
//!   serves everything in parallel (its latency is a wait, not work). Under closed loop up
//!   to 64 connections the fast pair absorbs everything: their queue stays below 30 ms.
//! - [`slow`] under open load above the fast pair's capacity (8 000 requests/s): the slow
//!   endpoint must take the excess.
//! - [`flaky`]: three endpoints of four workers, the third answers 503 at once to 20 %.
//! - [`flaky_loopback`]: the benchmark's flaky sweep — three single-worker endpoints
//!   answering in about 100 µs (a single-threaded upstream on loopback), the third
//!   answering 503 at once to 20 %.
//! - [`flaky_loopback_paused`]: the same on a busy machine — one answer in a hundred
//!   waits an exponential 4 ms more (scheduling pauses of a loaded two-CPU host).
//! - [`demo`]: `coremesh demo`'s backends — fast 1 ms, slow 31 ms, flaky 1 ms with 30 %
//!   503s, all serving in parallel, each plus an exponential 0.4 ms — with 16 connections
//!   on two cores.

use std::time::Duration;

use super::scenario::{Dist, EndpointSpec, Load, Scenario};

const MS: Duration = Duration::from_millis(1);
const US: Duration = Duration::from_micros(1);

/// Proxy cores in every preset: the benchmark machine's two.
pub const CORES: usize = 2;

/// The fast endpoint of [`slow`] and [`flaky`]: four workers, 0.5 ms + exponential 0.5 ms.
pub fn fast(name: &str) -> EndpointSpec {
    EndpointSpec::new(name, Dist::Shifted(MS / 2, MS / 2), Some(4))
}

/// Two fast endpoints and one that answers 30 ms later, in parallel.
pub fn slow(load: Load) -> Scenario {
    let slow = EndpointSpec::new("slow", Dist::Shifted(30 * MS + MS / 2, MS / 2), None);
    Scenario::new(vec![fast("fast-1"), fast("fast-2"), slow], CORES, load)
}

/// Three fast endpoints, the third failing 20 % of its requests with a fast 503.
pub fn flaky(load: Load) -> Scenario {
    let flaky = fast("flaky").failing(0.2, Dist::Fixed(100 * US));
    Scenario::new(vec![fast("fast-1"), fast("fast-2"), flaky], CORES, load)
}

/// Three endpoints of one worker each answering in 60 µs + exponential 40 µs, the third
/// failing 20 % of its requests with a 503 in 30 µs: `coremesh-bench compare`'s flaky
/// sweep, where a request's latency is mostly its wait behind the others.
pub fn flaky_loopback(load: Load) -> Scenario {
    let one = |name| EndpointSpec::new(name, Dist::Shifted(60 * US, 40 * US), Some(1));
    let flaky = one("flaky").failing(0.2, Dist::Fixed(30 * US));
    Scenario::new(vec![one("fast-1"), one("fast-2"), flaky], CORES, load)
}

/// [`flaky_loopback`] on a busy machine: one answer in a hundred also waits an exponential
/// pause of mean 4 ms, as the benchmark's loopback upstreams do while other processes
/// compete for the CPUs (its client p99 at one connection was then 10–13 ms against a p50
/// of 0.16 ms).
pub fn flaky_loopback_paused(load: Load) -> Scenario {
    let one = |name| {
        EndpointSpec::new(
            name,
            Dist::Paused {
                base: 60 * US,
                mean: 40 * US,
                pause: 4 * MS,
                one_in: 100,
            },
            Some(1),
        )
    };
    let flaky = one("flaky").failing(0.2, Dist::Fixed(30 * US));
    Scenario::new(vec![one("fast-1"), one("fast-2"), flaky], CORES, load)
}

/// The backends of `coremesh demo` with its 16 connections. Each answer takes its sleep
/// plus an exponential 0.4 ms (thread wake-ups and the proxy's own work: the demo measures
/// p50 1.4 ms on the fast backend).
pub fn demo() -> Scenario {
    let parallel = |name, d| EndpointSpec::new(name, Dist::Shifted(d, 2 * MS / 5), None);
    Scenario::new(
        vec![
            parallel("fast", MS),
            parallel("slow", 31 * MS),
            parallel("flaky", MS).failing(0.3, Dist::Shifted(MS, 2 * MS / 5)),
        ],
        CORES,
        Load::Closed { connections: 16 },
    )
}
