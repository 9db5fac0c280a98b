//! The run's progress line (elapsed time against the estimate made up front) and that
//! estimate, from the plan, the scenarios and how many contenders take part in each.

use super::Plan;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Start-up, readiness and stop of one contender, and the upstreams around it (a rough
/// figure from runs on 2 cores).
const PER_SESSION: Duration = Duration::from_millis(700);
/// Requests per second assumed for the count-bounded CPU scenario.
const ASSUMED_RPS: f64 = 40_000.0;

static STATE: Mutex<Option<(Instant, Duration)>> = Mutex::new(None);

/// Requests per second assumed for h2load's count-bounded runs with many streams per
/// connection (`h2-saturation`, `poll-io`'s `-m 32`), and with one request in flight per
/// connection (`poll-io`'s HTTP/1.1 and `-m 1` legs, over 4 connections).
const ASSUMED_H2_RPS: f64 = 20_000.0;
const ASSUMED_ONE_IN_FLIGHT_RPS: f64 = 7_000.0;
/// Time for `perf stat` to attach before a measured run.
const PERF_ATTACH: Duration = Duration::from_millis(200);

/// The time `scenario` should take with `contenders` contenders (`proxies` of them
/// proxies) under `plan`; `wrk`: the overhead scenario runs wrk after the generator (an
/// HTTP/1.1 run; wrk speaks no HTTP/2).
pub fn scenario_estimate(
    plan: &Plan,
    scenario: &str,
    contenders: usize,
    proxies: usize,
    wrk: bool,
) -> Duration {
    let rounds = plan.rounds as u32;
    let session = |measure: Duration| measure + PER_SESSION;
    match scenario {
        "overhead" => {
            // Saturation with the generator (then wrk), each round; then the fixed rate once.
            let loads = if wrk { 2 } else { 1 };
            session(plan.warmup + plan.saturate * loads) * rounds * contenders as u32
                + session(plan.warmup + plan.fixed) * contenders as u32
        }
        // One h2load run (and a tenth as warm-up) per contender and round.
        "h2-saturation" => session(h2_run(plan, ASSUMED_H2_RPS)) * rounds * contenders as u32,
        // Per proxy and round: its HTTP/1.1 file (one run), its h2c file (two runs).
        "poll-io" => {
            let one = h2_run(plan, ASSUMED_ONE_IN_FLIGHT_RPS);
            (session(one) + session(one + h2_run(plan, ASSUMED_H2_RPS))) * rounds * proxies as u32
        }
        "cpu" => {
            session(Duration::from_secs_f64(
                plan.cpu_requests as f64 / ASSUMED_RPS,
            )) * rounds
                * proxies as u32
        }
        "slow" | "flaky" => session(plan.warmup + plan.scenario) * rounds * proxies as u32,
        "dead" => session(plan.warmup + plan.dead) * rounds * proxies as u32,
        "memory" => Duration::from_secs(8) * proxies as u32,
        "slow-sweep" | "flaky-sweep" | "capacity-sweep" => {
            session(plan.sweep_warmup + plan.sweep)
                * plan.sweep_connections.len() as u32
                * plan.sweep_rounds.max(1) as u32
                * proxies as u32
        }
        // Overhead (without wrk) and CPU with the gRPC request.
        "grpc" => {
            session(plan.warmup + plan.saturate) * rounds * contenders as u32
                + session(plan.warmup + plan.fixed) * contenders as u32
                + session(Duration::from_secs_f64(
                    plan.cpu_requests as f64 / ASSUMED_RPS,
                )) * rounds
                    * proxies as u32
        }
        "shared-core" => session(plan.warmup + plan.saturate) * rounds * contenders as u32,
        // Every contender, `direct` included, is saturated and then swept.
        "sweep" => {
            (session(plan.warmup + plan.saturate)
                + session(plan.sweep_warmup + plan.sweep) * plan.sweep_steps as u32)
                * contenders as u32
        }
        // Per proxy: the mTLS layout saturated once, then both layouts each round (two
        // proxies started per layout).
        "mtls" => {
            (session(plan.warmup + plan.saturate)
                + PER_SESSION
                + (session(plan.warmup + plan.fixed) + PER_SESSION) * 2 * rounds)
                * proxies as u32
        }
        _ => Duration::ZERO,
    }
}

/// One measured h2load run of `plan.h2_requests` at `rps` with its warm-up and perf's
/// attach.
fn h2_run(plan: &Plan, rps: f64) -> Duration {
    let requests = plan.h2_requests + (plan.h2_requests / 10).max(1000);
    Duration::from_secs_f64(requests as f64 / rps) + PERF_ATTACH
}

/// Start the clock with the whole run's estimate.
pub fn start(total: Duration) {
    if let Ok(mut s) = STATE.lock() {
        *s = Some((Instant::now(), total));
    }
}

fn mmss(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

/// `[elapsed / ~estimate]` for the progress line (empty before [`start`]).
pub fn stamp() -> String {
    match STATE.lock().ok().and_then(|s| *s) {
        Some((began, total)) => format!("[{} / ~{}] ", mmss(began.elapsed()), mmss(total)),
        None => String::new(),
    }
}

/// The estimate as minutes and seconds, for the line printed up front.
pub fn show(total: Duration) -> String {
    mmss(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_estimate_counts_direct_too() {
        let plan = Plan::quick(100);
        let one = scenario_estimate(&plan, "sweep", 1, 1, true);
        // direct, coremesh, nginx, HAProxy: four contenders, three of them proxies.
        let four = scenario_estimate(&plan, "sweep", 4, 3, true);
        assert_eq!(four, one * 4);
        let per_contender = plan.warmup
            + plan.saturate
            + PER_SESSION
            + (plan.sweep_warmup + plan.sweep + PER_SESSION) * plan.sweep_steps as u32;
        assert_eq!(one, per_contender);
        // The proxies-only scenarios still leave direct out.
        assert_eq!(
            scenario_estimate(&plan, "slow", 4, 3, true),
            scenario_estimate(&plan, "slow", 3, 3, true)
        );
    }

    #[test]
    fn an_h2c_overhead_estimate_counts_no_wrk() {
        let plan = Plan::quick(100);
        let http1 = scenario_estimate(&plan, "overhead", 4, 3, true);
        let h2c = scenario_estimate(&plan, "overhead", 4, 3, false);
        // wrk's saturation time, once per contender and round.
        assert_eq!(http1 - h2c, plan.saturate * plan.rounds as u32 * 4);
        assert!(scenario_estimate(&plan, "h2-saturation", 4, 3, false) > Duration::ZERO);
        assert!(scenario_estimate(&plan, "poll-io", 4, 3, false) > Duration::ZERO);
    }
}
