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
        let common = "Each point: a fresh proxy in its resilient profile, warm-up, then a closed loop over that many keep-alive connections; contenders in rotated order, in as many rounds as `--sweep-rounds` says (one by default; with more, each figure is the median of the rounds). `fast p99` is the p99 of the requests the two fast endpoints answered (by their `X-Upstream` header), as the client saw them; `p99 / fast p99` is the client's p99 over it (the target is at most 2). The third endpoint's share is counted by the upstreams themselves. `other load` is CPU used meanwhile by processes outside the benchmark (100% = one CPU): where it is high, latencies say more about the machine than about the proxies.";
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

/// One row out of a point's rounds: each figure (and each numeric extra) is the median of
/// the rounds that ran; notes and stops are kept from every round (a note once); the load
/// report kept as `sweep` is the round with the median p99, and with more than one round
/// each round's report is kept as `sweep_round1`, `sweep_round2`, …
pub(super) fn median_row(list: Vec<Row>) -> Row {
    let mut list = list.into_iter();
    let Some(mut row) = list.next() else {
        return Row::default();
    };
    let rest: Vec<Row> = list.collect();
    if rest.is_empty() {
        return row;
    }
    let mut all = vec![std::mem::take(&mut row.figures)];
    let mut extras = vec![std::mem::take(&mut row.extra)];
    let mut loads: Vec<Option<crate::load::LoadReport>> = vec![row.loads.remove("sweep")];
    for (i, other) in rest.into_iter().enumerate() {
        // A contender that fails to start is skipped in every round after: a row skipped
        // from the first round on stays skipped, a later round's reason becomes a note.
        if row.skipped.is_none() {
            if let Some(reason) = other.skipped {
                row.notes.push(format!("round {}: {reason}", i + 2));
            }
        }
        for note in other.notes {
            if !row.notes.contains(&note) {
                row.notes.push(note);
            }
        }
        row.stops.extend(other.stops);
        if row.command.is_empty() {
            row.command = other.command;
        }
        all.push(other.figures);
        extras.push(other.extra);
        let mut other_loads = other.loads;
        loads.push(other_loads.remove("sweep"));
    }
    let rounds: Vec<_> = all.iter().zip(loads.iter().map(Option::as_ref)).collect();
    super::scenarios::set_round_medians(&mut row, "sweep", &rounds);
    let extra_keys: std::collections::BTreeSet<String> =
        extras.iter().flat_map(|e| e.keys().cloned()).collect();
    for key in extra_keys {
        let values: Vec<f64> = extras
            .iter()
            .filter_map(|e| e.get(&key).and_then(|v| v.as_f64()))
            .collect();
        if !values.is_empty() {
            row.extra
                .insert(key, super::scenarios::median(&values).into());
        }
    }
    row
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
    let rounds = plan.sweep_rounds.max(1);
    let mut measured: BTreeMap<(usize, Kind), Vec<Row>> = BTreeMap::new();
    let mut skipped: BTreeMap<Kind, String> = BTreeMap::new();
    for round in 0..rounds {
        for (i, &connections) in plan.sweep_connections.iter().enumerate() {
            for kind in rotated(&proxies, i + round) {
                let mut row = Row::new(kind);
                row.point = Some(connections);
                if let Some(reason) = skipped.get(&kind) {
                    row.skipped = Some(reason.clone());
                    measured.entry((connections, kind)).or_default().push(row);
                    continue;
                }
                let of_rounds = if rounds > 1 {
                    format!(", round {}/{rounds}", round + 1)
                } else {
                    String::new()
                };
                progress(
                    &format!("{} at {connections} connections{of_rounds}", sweep.key()),
                    kind,
                );
                let tag = if rounds > 1 {
                    format!("{}-c{connections}-r{}", sweep.key(), round + 1)
                } else {
                    format!("{}-c{connections}", sweep.key())
                };
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
                                    row.set(
                                        "third_share_pct",
                                        100.0 * served[2] as f64 / total as f64,
                                    );
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
                measured.entry((connections, kind)).or_default().push(row);
            }
        }
    }
    drop(ups);
    let rows: BTreeMap<(usize, Kind), Row> = measured
        .into_iter()
        .map(|(key, list)| (key, median_row(list)))
        .collect();
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
    if rounds > 1 {
        notes.push(format!(
            "Each point was measured in {rounds} rounds (a fresh proxy each time, contenders in an order rotated per round); every figure is the median of its rounds, each round's load report is kept in results.json (`sweep_round1`, …)."
        ));
    }
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
    fn rounds_of_a_point_report_each_figure_s_median() {
        let round = |p99: f64, rps: f64, note: &str| {
            let mut row = Row::new(Kind::Coremesh);
            row.point = Some(8);
            row.set("p99_us", p99);
            row.set("rps", rps);
            row.extra.insert("served_u0".into(), (rps * 2.0).into());
            row.notes.push(note.into());
            row
        };
        let one = median_row(vec![round(700.0, 10.0, "a")]);
        assert_eq!(one.figures["p99_us"], 700.0);
        assert!(one.loads.is_empty());
        let row = median_row(vec![
            round(700.0, 12.0, "a"),
            round(1900.0, 9.0, "b"),
            round(650.0, 11.0, "a"),
        ]);
        assert_eq!(row.point, Some(8));
        assert_eq!(row.figures["p99_us"], 700.0);
        assert_eq!(row.figures["rps"], 11.0);
        assert_eq!(row.extra["served_u0"].as_f64(), Some(22.0));
        assert_eq!(row.notes, vec!["a".to_string(), "b".to_string()]);
        assert!(row.skipped.is_none());
        // A contender skipped from the first round on stays skipped; a later round's
        // reason is a note.
        let mut gone = Row::new(Kind::Nginx);
        gone.skipped = Some("did not start".into());
        assert!(median_row(vec![gone.clone(), gone.clone()])
            .skipped
            .is_some());
        let later = median_row(vec![round(700.0, 12.0, "a"), gone]);
        assert!(later.skipped.is_none());
        assert!(later.notes.contains(&"round 2: did not start".to_string()));
    }

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
