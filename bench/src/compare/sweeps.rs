//! The saturation sweeps: three endpoints behind each proxy in its resilient profile, driven
//! in a closed loop at several concurrencies (`Plan::sweep_connections`), a fresh proxy per
//! point. Per point: requests, throughput, client p50/p99, the third endpoint's share
//! (counted at the upstreams), the p99 of the requests the two fast endpoints answered
//! (from their `X-Upstream` header, as the client saw it) and errors.
//!
//! - `slow-sweep`: the third endpoint answers 30 ms later; the others can absorb its work,
//!   so a good balancer sends it almost nothing and keeps the client p99 near the fast
//!   endpoints' own.
//! - `flaky-sweep`: the third endpoint answers 503 to 20% of requests.
//! - `capacity-sweep`: the fast endpoints are busy servers (a few ms per request, one
//!   worker each, requests queue); past some concurrency they cannot absorb the load and
//!   using the slow endpoint is right. The reference share is what sending every request
//!   where it is answered soonest would give ([`reference_slow_share`]).

use super::contender::{Kind, Profile};
use super::report::{Better, Column, Row, ScenarioResult};
use super::scenarios::{error_note, progress, rotated, session, settings_note, Ctx, OtherLoad};
use super::upstreams::{served_between, UpstreamArgs};
use crate::load::{Mode, Stop};
use crate::stats;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Scenario names of the sweeps.
pub const SWEEPS: [&str; 3] = ["slow-sweep", "flaky-sweep", "capacity-sweep"];

/// Added latency of the slow endpoint (ms).
pub const SLOW_EXTRA_MS: f64 = 30.0;
/// Share of the flaky endpoint's requests answered with 503.
pub const FLAKY_ERROR_RATE: f64 = 0.2;
/// Capacity sweep: each fast endpoint takes this long per request ...
pub const CAPACITY_FAST_MS: f64 = 3.0;
/// ... with this many workers (more requests wait their turn).
pub const CAPACITY_FAST_WORKERS: usize = 1;

/// Which sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Slow,
    Flaky,
    Capacity,
}

impl Sweep {
    pub fn parse(name: &str) -> Option<Sweep> {
        match name {
            "slow-sweep" => Some(Sweep::Slow),
            "flaky-sweep" => Some(Sweep::Flaky),
            "capacity-sweep" => Some(Sweep::Capacity),
            _ => None,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Sweep::Slow => "slow-sweep",
            Sweep::Flaky => "flaky-sweep",
            Sweep::Capacity => "capacity-sweep",
        }
    }

    /// The two fast endpoints, then the third.
    pub fn upstreams(self) -> Vec<UpstreamArgs> {
        match self {
            Sweep::Slow => {
                let mut slow = UpstreamArgs::fast("u2-slow");
                slow.latency = format!("fixed:{SLOW_EXTRA_MS}");
                vec![UpstreamArgs::fast("u0"), UpstreamArgs::fast("u1"), slow]
            }
            Sweep::Flaky => {
                let mut flaky = UpstreamArgs::fast("u2-flaky");
                flaky.error_rate = FLAKY_ERROR_RATE;
                vec![UpstreamArgs::fast("u0"), UpstreamArgs::fast("u1"), flaky]
            }
            Sweep::Capacity => {
                let busy = |name: &str| {
                    let mut u = UpstreamArgs::fast(name);
                    u.latency = format!("fixed:{CAPACITY_FAST_MS}");
                    u.concurrency = CAPACITY_FAST_WORKERS;
                    u
                };
                let mut slow = UpstreamArgs::fast("u2-slow");
                slow.latency = format!("fixed:{}", CAPACITY_FAST_MS + SLOW_EXTRA_MS);
                vec![busy("u0"), busy("u1"), slow]
            }
        }
    }

    fn title(self) -> &'static str {
        match self {
            Sweep::Slow => "Slow endpoint under saturation (closed loop, 1 to 64 connections)",
            Sweep::Flaky => "Flaky endpoint under saturation (closed loop, 1 to 64 connections)",
            Sweep::Capacity => {
                "Fast endpoints that cannot absorb the load (closed loop, 1 to 64 connections)"
            }
        }
    }

    fn setup(self) -> String {
        let common = "Each point: a fresh proxy in its resilient profile, warm-up, then a closed loop over that many keep-alive connections; one round, contenders in rotated order. `fast p99` is the p99 of the requests the two fast endpoints answered (by their `X-Upstream` header), as the client saw them; `p99 / fast p99` is the client's p99 over it (the target is at most 2). The third endpoint's share is counted by the upstreams themselves. `other load` is CPU used meanwhile by processes outside the benchmark (100% = one CPU): where it is high, latencies say more about the machine than about the proxies.";
        match self {
            Sweep::Slow => format!(
                "Three endpoints, the third answers {SLOW_EXTRA_MS:.0} ms later; the two fast ones can absorb all the work. {common}"
            ),
            Sweep::Flaky => format!(
                "Three endpoints, the third answers 503 to {:.0}% of requests (seeded). `errors` are client-visible; `upstream/client` is upstream requests per client response (retries show as > 1). {common}",
                FLAKY_ERROR_RATE * 100.0
            ),
            Sweep::Capacity => format!(
                "Three endpoints: the two fast ones take {CAPACITY_FAST_MS:.0} ms per request with {CAPACITY_FAST_WORKERS} worker each (a request that finds it busy waits its turn, so their latency grows with load: together they serve at most {:.0} req/s); the third takes {:.0} ms with no limit. Past some concurrency the fast endpoints cannot absorb the load and using the slow one is right. `reference share` is the slow share when every request goes where it is answered soonest (connections spread until the latencies are equal). {common}",
                2.0 * CAPACITY_FAST_WORKERS as f64 * 1000.0 / CAPACITY_FAST_MS,
                CAPACITY_FAST_MS + SLOW_EXTRA_MS
            ),
        }
    }

    fn columns(self) -> Vec<Column> {
        let third = match self {
            Sweep::Flaky => "flaky share %",
            _ => "slow share %",
        };
        let mut c = vec![
            Column::new("requests", "requests", Better::Higher),
            Column::new("rps", "req/s", Better::Higher),
            Column::new("p50_us", "p50 µs", Better::Lower),
            Column::new("p99_us", "p99 µs", Better::Lower),
            Column::new("fast_p99_us", "fast p99 µs", Better::Lower),
            Column::plain("p99_over_fast", "p99 / fast p99"),
            Column::new("third_share_pct", third, Better::Lower),
        ];
        match self {
            Sweep::Slow => {}
            Sweep::Flaky => {
                c.push(Column::new(
                    "upstream_per_client",
                    "upstream/client",
                    Better::Lower,
                ));
            }
            Sweep::Capacity => {
                c.push(Column::plain("ref_share_pct", "reference share %"));
                c.push(Column::new("third_p99_us", "slow p99 µs", Better::Lower));
            }
        }
        c.push(Column::new("errors", "errors", Better::Lower));
        c.push(Column::new("others_pct", "other load %", Better::Neither));
        c
    }
}

/// The share (percent) of requests an endpoint that always takes `slow_ms` gets when every
/// connection of a closed loop goes where it is answered soonest, next to `fast_count`
/// endpoints that take `fast_ms` per request with `fast_workers` workers each (requests
/// queue for a worker). Connections fill the fast endpoints until their queueing latency
/// reaches `slow_ms`; the rest go to the slow one.
pub fn reference_slow_share(
    connections: usize,
    fast_count: usize,
    fast_ms: f64,
    fast_workers: usize,
    slow_ms: f64,
) -> f64 {
    let (f, k, c) = (
        fast_count.max(1) as f64,
        fast_workers.max(1) as f64,
        connections as f64,
    );
    // With n connections on one fast endpoint, each request takes max(1, n / k) × fast_ms.
    let per_fast = slow_ms * k / fast_ms;
    if c <= f * per_fast {
        return 0.0;
    }
    let fast_rate = f * k / fast_ms;
    let slow_rate = (c - f * per_fast) / slow_ms;
    100.0 * slow_rate / (fast_rate + slow_rate)
}

/// Run one sweep.
pub fn run(ctx: &Ctx<'_>, sweep: Sweep) -> anyhow::Result<ScenarioResult> {
    let plan = ctx.plan;
    println!("{}", sweep.key());
    let ups = ctx.start_upstreams(sweep.upstreams())?;
    let eps: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let names: Vec<String> = ups.iter().map(|u| u.args.name.clone()).collect();
    let fast_names: Vec<&str> = names[..2].iter().map(String::as_str).collect();
    let proxies: Vec<Kind> = ctx
        .contenders
        .iter()
        .copied()
        .filter(|k| k.is_proxy())
        .collect();
    let mut rows: BTreeMap<(usize, Kind), Row> = BTreeMap::new();
    let mut skipped: BTreeMap<Kind, String> = BTreeMap::new();
    for (i, &connections) in plan.sweep_connections.iter().enumerate() {
        for kind in rotated(&proxies, i) {
            let mut row = Row::new(kind);
            row.point = Some(connections);
            if let Some(reason) = skipped.get(&kind) {
                row.skipped = Some(reason.clone());
                rows.insert((connections, kind), row);
                continue;
            }
            progress(
                &format!("{} at {connections} connections", sweep.key()),
                kind,
            );
            let tag = format!("{}-c{connections}", sweep.key());
            session(
                ctx,
                kind,
                Profile::Resilient,
                &eps,
                &tag,
                &mut row,
                |running, row| {
                    let warm = ctx.spec(
                        running.addr,
                        connections,
                        Mode::Closed,
                        Stop::Duration(plan.sweep_warmup),
                    );
                    if let Err(e) = ctx.load(&warm) {
                        row.notes
                            .push(format!("{connections} connections, warm-up: {e}"));
                    }
                    let before: Vec<_> = ups.iter().map(|u| u.stats()).collect();
                    let spec = ctx.spec(
                        running.addr,
                        connections,
                        Mode::Closed,
                        Stop::Duration(plan.sweep),
                    );
                    // CPU of the benchmark itself (proxy, generator, upstreams), to tell what
                    // else ran on the machine meanwhile.
                    let other_load = OtherLoad::start(running, &ups);
                    let outcome = ctx.load_outcome(&spec);
                    row.set("others_pct", other_load.percent(running, &ups));
                    let after: Vec<_> = ups.iter().map(|u| u.stats()).collect();
                    let served = served_between(&before, &after);
                    match outcome {
                        Ok(o) => {
                            let r = &o.report;
                            row.set("requests", r.responses as f64);
                            row.set("rps", r.throughput_rps);
                            row.set("errors", r.errors_total as f64);
                            if r.responses > 0 {
                                row.set("p50_us", r.latency.p50_us);
                                row.set("p99_us", r.latency.p99_us);
                            }
                            let fast = stats::summarize(&o.upstreams_latency(&fast_names));
                            if fast.count > 0 {
                                row.set("fast_p99_us", fast.p99_us);
                                if fast.p99_us > 0.0 && r.responses > 0 {
                                    row.set("p99_over_fast", r.latency.p99_us / fast.p99_us);
                                }
                            }
                            if let Some(third) = r.by_upstream.get(&names[2]) {
                                row.set("third_p99_us", third.p99_us);
                            }
                            let total: u64 = served.iter().sum();
                            if total > 0 {
                                row.set("third_share_pct", 100.0 * served[2] as f64 / total as f64);
                                row.set(
                                    "upstream_per_client",
                                    total as f64 / r.responses.max(1) as f64,
                                );
                            }
                            if sweep == Sweep::Capacity {
                                row.set(
                                    "ref_share_pct",
                                    reference_slow_share(
                                        connections,
                                        2,
                                        CAPACITY_FAST_MS,
                                        CAPACITY_FAST_WORKERS,
                                        CAPACITY_FAST_MS + SLOW_EXTRA_MS,
                                    ),
                                );
                            }
                            for (n, s) in names.iter().zip(&served) {
                                row.extra.insert(format!("served_{n}"), (*s).into());
                            }
                            if let Some(n) = error_note(r) {
                                row.notes.push(format!("{connections} connections: {n}"));
                            }
                            let mut kept = r.clone();
                            kept.latency_curve.clear();
                            row.loads.insert("sweep".into(), kept);
                        }
                        Err(e) => row.notes.push(format!("{connections} connections: {e}")),
                    }
                },
            );
            if let Some(reason) = &row.skipped {
                skipped.insert(kind, reason.clone());
            }
            rows.insert((connections, kind), row);
        }
    }
    drop(ups);
    let mut notes = vec![format!(
        "Upstreams: {}. Warm-up {:.1} s, then {:.1} s per point.",
        sweep
            .upstreams()
            .iter()
            .map(|u| format!(
                "{} ({}{}{})",
                u.name,
                u.latency,
                if u.error_rate > 0.0 {
                    format!(", error rate {}", u.error_rate)
                } else {
                    String::new()
                },
                if u.concurrency > 0 {
                    format!(", {} worker(s)", u.concurrency)
                } else {
                    String::new()
                }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        plan.sweep_warmup.as_secs_f64(),
        plan.sweep.as_secs_f64()
    )];
    notes.extend(settings_note(ctx));
    Ok(ScenarioResult {
        key: sweep.key().into(),
        title: sweep.title().into(),
        setup: sweep.setup(),
        columns: sweep.columns(),
        rows: rows.into_values().collect(),
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_share_is_zero_until_the_fast_endpoints_queue_past_the_slow_one() {
        // Two fast endpoints of 3 ms and one worker each; the slow one takes 33 ms: each
        // fast endpoint holds 11 connections before its queue costs 33 ms.
        let share = |c| reference_slow_share(c, 2, 3.0, 1, 33.0);
        assert_eq!(share(1), 0.0);
        assert_eq!(share(8), 0.0);
        assert_eq!(share(22), 0.0);
        // 32 connections: 22 on the fast ones (2 × 333 req/s), 10 on the slow (303 req/s).
        assert!((share(32) - 31.25).abs() < 1e-9, "{}", share(32));
        // 64: 42 on the slow one (1273 req/s).
        assert!((share(64) - 65.625).abs() < 1e-9, "{}", share(64));
        // No fast endpoint limit worth the name: never the slow one.
        assert_eq!(reference_slow_share(64, 2, 0.001, 1, 30.0), 0.0);
    }

    #[test]
    fn every_sweep_has_two_fast_endpoints_and_a_named_third() {
        for name in SWEEPS {
            let sweep = Sweep::parse(name).expect("known");
            assert_eq!(sweep.key(), name);
            let ups = sweep.upstreams();
            assert_eq!(ups.len(), 3);
            assert_eq!((ups[0].name.as_str(), ups[1].name.as_str()), ("u0", "u1"));
            assert!(ups[2].name.starts_with("u2-"));
        }
        assert_eq!(Sweep::parse("slow"), None);
    }
}
