//! The scenarios at a fixed rate or count (overhead, cpu, slow, flaky, dead, memory) and
//! what every scenario shares ([`Ctx`], [`session`]). Each starts its upstreams once, then
//! each contender in turn (start, warm up, measure, stop), and returns one table per
//! measured figure set. The saturation sweeps are in `sweeps.rs`, the shared core in
//! `shared_core.rs`.

use super::contender::{self, Kind, Profile, Running, Setup, StopRecord};
use super::report::{Better, Column, Row, ScenarioResult};
use super::upstreams::{served_between, served_h2_between, UpstreamArgs, UpstreamProc};
use super::Plan;
use crate::load::{self, LoadOutcome, LoadReport, LoadSpec, Mode, Stop};
use crate::procfs;
use crate::sys;
use crate::wrk::{self, WrkResult};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Every scenario `compare --scenarios` accepts.
pub const ALL: [&str; 15] = [
    "overhead",
    "cpu",
    "slow",
    "flaky",
    "dead",
    "memory",
    "slow-sweep",
    "flaky-sweep",
    "capacity-sweep",
    "shared-core",
    "sweep",
    "grpc",
    "h2-saturation",
    "poll-io",
    "mtls",
];

/// The scenarios of an HTTP/1.1 run (all but `grpc`, `h2-saturation` and `poll-io`).
pub const HTTP1: [&str; 12] = [
    "overhead",
    "cpu",
    "slow",
    "flaky",
    "dead",
    "memory",
    "slow-sweep",
    "flaky-sweep",
    "capacity-sweep",
    "shared-core",
    "sweep",
    "mtls",
];

/// The scenarios of an h2c run: those whose load h2load can drive with the figures they
/// report (the saturation sweeps and the shared core read per-upstream latencies from the
/// built-in generator; dead and memory are left to HTTP/1.1), the unary gRPC call, h2load's
/// own saturation (`h2-saturation`) and each proxy's h2c path against its HTTP/1.1 path
/// (`poll-io`).
pub const H2C: [&str; 8] = [
    "overhead",
    "cpu",
    "slow",
    "flaky",
    "sweep",
    "grpc",
    "h2-saturation",
    "poll-io",
];

/// The load of an h2c run: h2load and the request it sends.
#[derive(Debug, Clone)]
pub struct H2Load {
    pub binary: PathBuf,
    pub shape: crate::h2load::Shape,
}

/// What every scenario shares.
pub struct Ctx<'a> {
    pub setup: &'a Setup,
    pub plan: &'a Plan,
    pub contenders: &'a [Kind],
    pub load_cpus: Vec<usize>,
    pub exe: PathBuf,
    pub work_dir: PathBuf,
    /// h2c runs: the load comes from h2load instead of the built-in HTTP/1.1 generator.
    pub h2load: Option<H2Load>,
}

impl Ctx<'_> {
    /// Start upstreams pinned to the load CPUs.
    pub(super) fn start_upstreams(
        &self,
        list: Vec<UpstreamArgs>,
    ) -> anyhow::Result<Vec<UpstreamProc>> {
        self.start_upstreams_on(list, &self.load_cpus)
    }

    /// Start upstreams pinned to `cpus`.
    pub(super) fn start_upstreams_on(
        &self,
        list: Vec<UpstreamArgs>,
        cpus: &[usize],
    ) -> anyhow::Result<Vec<UpstreamProc>> {
        let cpus: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
        let taskset = self.setup.taskset.clone().map(|t| (t, cpus.join(",")));
        list.into_iter()
            .map(|a| UpstreamProc::start(&self.exe, taskset.clone(), a, &self.work_dir))
            .collect()
    }

    pub(super) fn spec(
        &self,
        target: SocketAddr,
        connections: usize,
        mode: Mode,
        stop: Stop,
    ) -> LoadSpec {
        let mut spec = LoadSpec::new(target, connections, stop);
        spec.mode = mode;
        spec.cpus = self.load_cpus.clone();
        spec.threads = self.load_cpus.len().max(1);
        let span = match stop {
            Stop::Duration(d) => d,
            Stop::Count(_) => Duration::from_secs(120),
        };
        spec.max_duration = span + Duration::from_secs(30);
        spec
    }

    pub(super) fn load(&self, spec: &LoadSpec) -> Result<LoadReport, String> {
        self.load_outcome(spec).map(|o| o.report)
    }

    /// A load with its histograms: from the built-in generator, or in an h2c run from
    /// h2load pinned to the same CPUs (no per-upstream latencies then).
    pub(super) fn load_outcome(&self, spec: &LoadSpec) -> Result<LoadOutcome, String> {
        match &self.h2load {
            None => load::run(spec).map_err(|e| format!("load failed: {e:#}")),
            Some(h) => {
                let cpus: Vec<String> = self.load_cpus.iter().map(|c| c.to_string()).collect();
                let cpus = cpus.join(",");
                let taskset = self.setup.taskset.as_deref().map(|t| (t, cpus.as_str()));
                crate::h2load::run(spec, &h.shape, &h.binary, taskset, &self.work_dir)
                    .map_err(|e| format!("h2load failed: {e:#}"))
            }
        }
    }
}

pub(super) fn hz() -> f64 {
    sys::clock_ticks_per_second() as f64
}

/// CPU used by processes outside the benchmark while a load runs: the machine's busy ticks
/// less the benchmark's own (the proxy, this process and the upstreams).
pub(super) struct OtherLoad {
    ours: u64,
    machine: u64,
    began: Instant,
}

impl OtherLoad {
    pub(super) fn start(running: &Running, ups: &[UpstreamProc]) -> OtherLoad {
        OtherLoad {
            ours: our_ticks(running, ups),
            machine: procfs::machine_busy_ticks(),
            began: Instant::now(),
        }
    }

    /// The others' CPU since [`start`](Self::start), in percent of one CPU.
    pub(super) fn percent(&self, running: &Running, ups: &[UpstreamProc]) -> f64 {
        let wall = self.began.elapsed().as_secs_f64().max(1e-9);
        let others = procfs::machine_busy_ticks().saturating_sub(self.machine) as f64
            - our_ticks(running, ups).saturating_sub(self.ours) as f64;
        (100.0 * others / hz() / wall).max(0.0)
    }
}

fn our_ticks(running: &Running, ups: &[UpstreamProc]) -> u64 {
    running.cpu_ticks()
        + procfs::cpu_ticks(std::process::id()).unwrap_or(0)
        + ups
            .iter()
            .filter_map(|u| u.pid())
            .map(procfs::tree_cpu_ticks)
            .sum::<u64>()
}

/// Rounds of one measurement into `row`: each figure the median of the rounds that have
/// it; as `tag` the load report of the round whose p99 is the median one (the plotted
/// curve); with more than one round, each round's report as `{tag}_roundK` (numbered among
/// all rounds, without its latency curve).
pub(super) fn set_round_medians(
    row: &mut Row,
    tag: &str,
    rounds: &[(&BTreeMap<String, f64>, Option<&LoadReport>)],
) {
    let keys: std::collections::BTreeSet<&String> =
        rounds.iter().flat_map(|(f, _)| f.keys()).collect();
    for key in keys {
        let values: Vec<f64> = rounds
            .iter()
            .filter_map(|(f, _)| f.get(key).copied())
            .collect();
        row.set(key, median(&values));
    }
    let mut by_p99: Vec<&LoadReport> = rounds.iter().filter_map(|(_, r)| *r).collect();
    by_p99.sort_by(|a, b| a.latency.p99_us.total_cmp(&b.latency.p99_us));
    if let Some(mid) = by_p99.get(by_p99.len() / 2) {
        row.loads.insert(tag.to_string(), (*mid).clone());
    }
    if rounds.len() > 1 {
        for (i, (_, r)) in rounds.iter().enumerate() {
            if let Some(r) = r {
                let mut r = (*r).clone();
                r.latency_curve.clear();
                row.loads.insert(format!("{tag}_round{}", i + 1), r);
            }
        }
    }
}

pub(super) fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(super) fn rotated(list: &[Kind], by: usize) -> Vec<Kind> {
    let mut v = list.to_vec();
    if !v.is_empty() {
        let n = v.len();
        v.rotate_left(by % n);
    }
    v
}

pub(super) fn progress(what: &str, kind: Kind) {
    println!("  {}{what}: {}", super::progress::stamp(), kind.name());
}

/// Start `kind`, run `f`, stop it; the row gets the command, notes and stop record.
pub(super) fn session<T>(
    ctx: &Ctx<'_>,
    kind: Kind,
    profile: Profile,
    endpoints: &[SocketAddr],
    tag: &str,
    row: &mut Row,
    f: impl FnOnce(&mut Running, &mut Row) -> T,
) -> Option<T> {
    let mut running = match contender::start(kind, ctx.setup, profile, endpoints, tag) {
        Ok(r) => r,
        Err(reason) => {
            println!("    skipped: {reason}");
            row.skipped = Some(reason);
            return None;
        }
    };
    row.command = running.command.clone();
    for n in running.notes.drain(..) {
        if !row.notes.contains(&n) {
            row.notes.push(n);
        }
    }
    let out = f(&mut running, row);
    if let Some(died) = running.died() {
        row.notes.push(format!(
            "{died}; log: {}",
            running.log_tail().replace('\n', " | ")
        ));
    }
    if let Some(stop) = running.stop() {
        note_stop(kind, &stop, row);
        row.stops.push(stop);
    }
    Some(out)
}

fn note_stop(kind: Kind, stop: &StopRecord, row: &mut Row) {
    if kind == Kind::Coremesh && (stop.exit_code != Some(0) || stop.killed_after_grace) {
        let n = format!(
            "coremesh did not exit 0 on SIGTERM (exit {:?}, signal {:?}, {:.0} ms, killed after grace: {})",
            stop.exit_code, stop.signal, stop.took_ms, stop.killed_after_grace
        );
        if !row.notes.contains(&n) {
            row.notes.push(n);
        }
    }
}

pub(super) fn error_note(r: &LoadReport) -> Option<String> {
    (r.errors_total > 0).then(|| {
        let kinds: Vec<String> = r.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
        format!("errors: {}", kinds.join(", "))
    })
}

#[derive(Default)]
struct OverheadAcc {
    saturated: Vec<LoadReport>,
    busy: Vec<f64>,
    others: Vec<f64>,
    wrk: Vec<WrkResult>,
    cpu: Vec<(LoadReport, f64)>,
    row_sat: Row,
    row_cpu: Row,
}

/// Overhead (saturated throughput, then latency at a fixed rate) and CPU per request, on
/// one fast upstream.
pub fn overhead_and_cpu(
    ctx: &Ctx<'_>,
    overhead: bool,
    cpu: bool,
) -> anyhow::Result<Vec<ScenarioResult>> {
    println!("overhead / cpu");
    overhead_and_cpu_on(ctx, overhead, cpu, UpstreamArgs::fast("u0"))
}

/// The unary gRPC call (h2c runs): the overhead and CPU scenarios with h2load posting a
/// gRPC-framed message (`ctx.h2load`'s shape) to an upstream answering as gRPC, reported
/// under their own keys (`grpc-saturated`, `grpc-fixed-rate`, `grpc-cpu`).
pub fn grpc(ctx: &Ctx<'_>) -> anyhow::Result<Vec<ScenarioResult>> {
    println!("grpc (unary calls)");
    let mut upstream = UpstreamArgs::fast("g0");
    upstream.grpc = true;
    let mut out = overhead_and_cpu_on(ctx, true, true, upstream)?;
    for s in &mut out {
        s.key = match s.key.as_str() {
            "cpu" => "grpc-cpu".to_string(),
            other => other.replacen("overhead", "grpc", 1),
        };
        s.title = match s.title.strip_prefix("Overhead: ") {
            Some(rest) => format!("Unary gRPC: {rest}"),
            None => format!("Unary gRPC: {}", s.title),
        };
        s.setup = format!(
            "h2load posts one gRPC-framed message ({} bytes of payload) to {} with `content-type: {}` and `te: trailers`; the upstream answers as a unary gRPC call (one length-prefixed message, `grpc-status: 0` trailers). {}",
            crate::grpc::DEFAULT_PAYLOAD_BYTES,
            crate::grpc::PATH,
            crate::grpc::CONTENT_TYPE,
            s.setup
        );
    }
    Ok(out)
}

fn overhead_and_cpu_on(
    ctx: &Ctx<'_>,
    overhead: bool,
    cpu: bool,
    upstream: UpstreamArgs,
) -> anyhow::Result<Vec<ScenarioResult>> {
    let plan = ctx.plan;
    let ups = ctx.start_upstreams(vec![upstream])?;
    let eps = vec![ups[0].addr];
    let mut acc: BTreeMap<Kind, OverheadAcc> = ctx
        .contenders
        .iter()
        .map(|k| (*k, OverheadAcc::default()))
        .collect();
    for round in 0..plan.rounds {
        for kind in rotated(ctx.contenders, round) {
            if !overhead && !kind.is_proxy() {
                continue;
            }
            let Some(a) = acc.get_mut(&kind) else {
                continue;
            };
            if a.row_sat.skipped.is_some() {
                continue;
            }
            progress(&format!("round {}/{}", round + 1, plan.rounds), kind);
            let mut row = std::mem::take(&mut a.row_sat);
            session(
                ctx,
                kind,
                Profile::Plain,
                &eps,
                &format!("plain-r{round}"),
                &mut row,
                |running, row| {
                    let warm = ctx.spec(
                        running.addr,
                        plan.connections,
                        Mode::Closed,
                        Stop::Duration(plan.warmup),
                    );
                    if let Err(e) = ctx.load(&warm) {
                        row.notes.push(e);
                    }
                    if overhead {
                        let spec = ctx.spec(
                            running.addr,
                            plan.connections,
                            Mode::Closed,
                            Stop::Duration(plan.saturate),
                        );
                        let ours = |running: &Running| {
                            running.cpu_ticks()
                                + procfs::cpu_ticks(std::process::id()).unwrap_or(0)
                                + ups
                                    .iter()
                                    .filter_map(|u| u.pid())
                                    .map(procfs::tree_cpu_ticks)
                                    .sum::<u64>()
                        };
                        let t0 = running.cpu_ticks();
                        let ours0 = ours(running);
                        let machine0 = procfs::machine_busy_ticks();
                        match ctx.load(&spec) {
                            Ok(r) => {
                                let cpu_s = (running.cpu_ticks() - t0) as f64 / hz();
                                let machine = procfs::machine_busy_ticks().saturating_sub(machine0);
                                let others =
                                    machine as f64 - ours(running).saturating_sub(ours0) as f64;
                                a.busy.push(100.0 * cpu_s / r.elapsed_s);
                                a.others
                                    .push((100.0 * others / hz() / r.elapsed_s).max(0.0));
                                a.saturated.push(r);
                            }
                            Err(e) => row.notes.push(e),
                        }
                        let log = ctx
                            .work_dir
                            .join(format!("wrk-{}-r{round}.log", kind.name()));
                        // wrk speaks HTTP/1.1 only.
                        let wrk = if ctx.h2load.is_none() {
                            Some(wrk::run(
                                running.addr,
                                plan.connections,
                                plan.saturate,
                                ctx.load_cpus.first().copied(),
                                &log,
                            ))
                        } else {
                            None
                        };
                        match wrk {
                            Some(Ok(w)) => a.wrk.push(w),
                            Some(Err(e)) => {
                                let n = format!("wrk: {e:#}");
                                if !row.notes.contains(&n) {
                                    row.notes.push(n);
                                }
                            }
                            None => {}
                        }
                    }
                    if cpu && kind.is_proxy() {
                        let spec = ctx.spec(
                            running.addr,
                            plan.connections,
                            Mode::Closed,
                            Stop::Count(plan.cpu_requests),
                        );
                        let t0 = running.cpu_ticks();
                        match ctx.load(&spec) {
                            Ok(r) => {
                                let cpu_s = (running.cpu_ticks() - t0) as f64 / hz();
                                a.cpu.push((r, cpu_s));
                            }
                            Err(e) => a.row_cpu.notes.push(e),
                        }
                    }
                },
            );
            if row.skipped.is_some() {
                a.row_cpu.skipped = row.skipped.clone();
            }
            a.row_cpu.command = row.command.clone();
            a.row_sat = row;
        }
    }
    let mut out = Vec::new();
    let proxies_min = acc
        .iter()
        .filter(|(k, a)| k.is_proxy() && !a.saturated.is_empty())
        .map(|(_, a)| {
            median(
                &a.saturated
                    .iter()
                    .map(|r| r.throughput_rps)
                    .collect::<Vec<_>>(),
            )
        })
        .fold(f64::INFINITY, f64::min);
    if overhead {
        let mut rows = Vec::new();
        for kind in ctx.contenders {
            let Some(a) = acc.get_mut(kind) else { continue };
            let mut row = std::mem::take(&mut a.row_sat);
            row.contender = *kind;
            if !a.saturated.is_empty() {
                let rps = median(
                    &a.saturated
                        .iter()
                        .map(|r| r.throughput_rps)
                        .collect::<Vec<_>>(),
                );
                row.set("rps", rps);
                if !a.wrk.is_empty() {
                    let w = median(&a.wrk.iter().map(|w| w.requests_per_sec).collect::<Vec<_>>());
                    row.set("wrk_rps", w);
                    row.set("gen_over_wrk", rps / w);
                }
                if kind.is_proxy() {
                    row.set("busy_pct", median(&a.busy));
                }
                row.set("others_pct", median(&a.others));
                row.set(
                    "p50_us",
                    median(
                        &a.saturated
                            .iter()
                            .map(|r| r.latency.p50_us)
                            .collect::<Vec<_>>(),
                    ),
                );
                row.set(
                    "p99_us",
                    median(
                        &a.saturated
                            .iter()
                            .map(|r| r.latency.p99_us)
                            .collect::<Vec<_>>(),
                    ),
                );
                row.set(
                    "errors",
                    a.saturated.iter().map(|r| r.errors_total as f64).sum(),
                );
                for (i, r) in a.saturated.iter().enumerate() {
                    if let Some(n) = error_note(r) {
                        row.notes.push(format!("round {}: {n}", i + 1));
                    }
                    row.loads
                        .insert(format!("saturated_round{}", i + 1), r.clone());
                }
                for (i, w) in a.wrk.iter().enumerate() {
                    row.wrk.insert(format!("round{}", i + 1), w.clone());
                }
            }
            rows.push(row);
        }
        out.push(ScenarioResult {
            key: "overhead-saturated".into(),
            title: "Overhead: saturated throughput".into(),
            setup: format!(
                "One upstream (64-byte body, no added latency). Closed loop, {} keep-alive connections, {:.0} s per contender after {:.1} s of warm-up; median of {} round(s) with the contenders in rotated order. {} `proxy busy` is the proxy's CPU time over the wall time of the run (100% = one CPU fully used; below that, something else set the pace). `other load` is the CPU time used meanwhile by processes outside the benchmark (100% = one CPU): this machine is shared, and a high figure makes throughput noisy — CPU per request (below) is the robust comparison.",
                plan.connections, plan.saturate.as_secs_f64(), plan.warmup.as_secs_f64(), plan.rounds,
                if ctx.h2load.is_some() {
                    "The load is h2load over h2c, one stream at a time per connection; no wrk second opinion (wrk speaks HTTP/1.1 only).".to_string()
                } else {
                    format!("wrk (`-t1 -c{}`) runs right after on the same CPU as a second opinion.", plan.connections)
                }
            ),
            columns: vec![
                Column::new("rps", "req/s (generator)", Better::Higher),
                Column::new("wrk_rps", "req/s (wrk)", Better::Higher),
                Column::new("gen_over_wrk", "generator / wrk", Better::Neither),
                Column::new("busy_pct", "proxy busy %", Better::Neither),
                Column::new("others_pct", "other load %", Better::Neither),
                Column::new("p50_us", "p50 µs", Better::Lower),
                Column::new("p99_us", "p99 µs", Better::Lower),
                Column::new("errors", "errors", Better::Lower),
            ],
            rows,
            notes: Vec::new(),
        });
        // Latency at a fixed rate, the same for everyone: a share of the slowest proxy.
        let base = if proxies_min.is_finite() {
            proxies_min
        } else {
            acc.values()
                .filter(|a| !a.saturated.is_empty())
                .map(|a| {
                    median(
                        &a.saturated
                            .iter()
                            .map(|r| r.throughput_rps)
                            .collect::<Vec<_>>(),
                    )
                })
                .fold(f64::INFINITY, f64::min)
        };
        let rate = if base.is_finite() {
            ((base * plan.fixed_rate_share / 100.0).floor() * 100.0).max(100.0)
        } else {
            1000.0
        };
        println!("overhead at a fixed rate of {rate:.0} req/s");
        let mut rows = Vec::new();
        for kind in ctx.contenders {
            progress("fixed rate", *kind);
            let mut row = Row::new(*kind);
            if let Some(reason) = acc.get(kind).and_then(|a| a.row_sat.skipped.clone()) {
                row.skipped = Some(reason);
                rows.push(row);
                continue;
            }
            session(
                ctx,
                *kind,
                Profile::Plain,
                &eps,
                "plain-rate",
                &mut row,
                |running, row| {
                    let warm = ctx.spec(
                        running.addr,
                        plan.fixed_rate_connections,
                        Mode::Open { rate },
                        Stop::Duration(plan.warmup),
                    );
                    let _ = ctx.load(&warm);
                    let spec = ctx.spec(
                        running.addr,
                        plan.fixed_rate_connections,
                        Mode::Open { rate },
                        Stop::Duration(plan.fixed),
                    );
                    match ctx.load(&spec) {
                        Ok(r) => {
                            row.set("rate", rate);
                            row.set("p50_us", r.latency.p50_us);
                            row.set("p99_us", r.latency.p99_us);
                            row.set("p999_us", r.latency.p999_us);
                            row.set("max_us", r.latency.max_us);
                            row.set("errors", r.errors_total as f64);
                            if let Some(n) = error_note(&r) {
                                row.notes.push(n);
                            }
                            row.loads.insert("fixed_rate".into(), r);
                        }
                        Err(e) => row.notes.push(e),
                    }
                },
            );
            rows.push(row);
        }
        let direct_p99 = rows
            .iter()
            .find(|r| r.contender == Kind::Direct)
            .and_then(|r| r.get("p99_us"));
        if let Some(d) = direct_p99 {
            for row in rows.iter_mut().filter(|r| r.contender.is_proxy()) {
                if let Some(p) = row.get("p99_us") {
                    row.set("added_p99_us", p - d);
                }
            }
        }
        out.push(ScenarioResult {
            key: "overhead-fixed-rate".into(),
            title: "Overhead: latency at a fixed rate".into(),
            setup: format!(
                "The same upstream; open loop at {rate:.0} req/s ({:.0}% of the slowest proxy's saturated throughput), {} connections, {:.0} s after {:.1} s of warm-up. Latency is measured from each request's intended send time (coordinated omission corrected). `added p99` is the contender's p99 minus direct's.",
                plan.fixed_rate_share * 100.0, plan.fixed_rate_connections, plan.fixed.as_secs_f64(), plan.warmup.as_secs_f64()
            ),
            columns: vec![
                Column::new("p50_us", "p50 µs", Better::Lower),
                Column::new("p99_us", "p99 µs", Better::Lower),
                Column::new("p999_us", "p99.9 µs", Better::Lower),
                Column::new("max_us", "max µs", Better::Lower),
                Column::new("added_p99_us", "added p99 µs", Better::Lower),
                Column::new("errors", "errors", Better::Lower),
            ],
            rows,
            notes: Vec::new(),
        });
    }
    if cpu {
        let mut rows = Vec::new();
        for kind in ctx.contenders.iter().filter(|k| k.is_proxy()) {
            let Some(a) = acc.get_mut(kind) else { continue };
            let mut row = std::mem::take(&mut a.row_cpu);
            row.contender = *kind;
            if a.cpu.iter().all(|(r, _)| r.responses > 0) && !a.cpu.is_empty() {
                let per = |(r, s): &(LoadReport, f64)| s * 1e6 / (r.responses.max(1) as f64);
                row.set(
                    "cpu_us_per_req",
                    median(&a.cpu.iter().map(per).collect::<Vec<_>>()),
                );
                row.set(
                    "cpu_s",
                    median(&a.cpu.iter().map(|(_, s)| *s).collect::<Vec<_>>()),
                );
                row.set(
                    "requests",
                    median(
                        &a.cpu
                            .iter()
                            .map(|(r, _)| r.responses as f64)
                            .collect::<Vec<_>>(),
                    ),
                );
                row.set(
                    "rps",
                    median(
                        &a.cpu
                            .iter()
                            .map(|(r, _)| r.throughput_rps)
                            .collect::<Vec<_>>(),
                    ),
                );
                row.set(
                    "errors",
                    a.cpu.iter().map(|(r, _)| r.errors_total as f64).sum(),
                );
                for (i, (r, s)) in a.cpu.iter().enumerate() {
                    let mut r = r.clone();
                    r.latency_curve.clear();
                    row.loads.insert(format!("cpu_round{}", i + 1), r);
                    row.extra
                        .insert(format!("cpu_s_round{}", i + 1), (*s).into());
                }
            }
            rows.push(row);
        }
        out.push(ScenarioResult {
            key: "cpu".into(),
            title: "CPU time per request".into(),
            setup: format!(
                "The same upstream; closed loop, exactly {} requests over {} connections per contender and round; the proxy's utime + stime from /proc/PID/stat (all its processes), divided by the responses. Clock tick: 1/{:.0} s. Median of {} round(s).",
                plan.cpu_requests, plan.connections, hz(), plan.rounds
            ),
            columns: vec![
                Column::new("cpu_us_per_req", "CPU µs / request", Better::Lower),
                Column::new("cpu_s", "CPU s", Better::Lower),
                Column::new("requests", "responses", Better::Neither),
                Column::new("rps", "req/s", Better::Higher),
                Column::new("errors", "errors", Better::Lower),
            ],
            rows,
            notes: Vec::new(),
        });
    }
    drop(ups);
    Ok(out)
}

/// One round of one contender: its figures and the load they came from.
type RoundFigures = (BTreeMap<String, f64>, LoadReport);

/// Three endpoints behind each proxy in its resilient profile, open-loop runs (in rounds),
/// and which endpoint served what.
fn three_endpoint_scenario(
    ctx: &Ctx<'_>,
    tag: &str,
    third: UpstreamArgs,
    duration: Duration,
    mut during: impl FnMut(&mut [UpstreamProc], &mut Row, Duration),
) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let plan = ctx.plan;
    let mut ups = ctx.start_upstreams(vec![
        UpstreamArgs::fast("u0"),
        UpstreamArgs::fast("u1"),
        third,
    ])?;
    let eps: Vec<SocketAddr> = ups.iter().map(|u| u.addr).collect();
    let names: Vec<String> = ups.iter().map(|u| u.args.name.clone()).collect();
    let proxies: Vec<Kind> = ctx
        .contenders
        .iter()
        .copied()
        .filter(|k| k.is_proxy())
        .collect();
    let mut rows: BTreeMap<Kind, Row> = proxies.iter().map(|k| (*k, Row::new(*k))).collect();
    // Per contender, the figures and the load of each round.
    let mut rounds: BTreeMap<Kind, Vec<RoundFigures>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for kind in rotated(&proxies, round) {
            let Some(row) = rows.get_mut(&kind) else {
                continue;
            };
            if row.skipped.is_some() {
                continue;
            }
            progress(&format!("{tag} round {}/{}", round + 1, plan.rounds), kind);
            let session_tag = if plan.rounds > 1 {
                format!("{tag}-r{round}")
            } else {
                tag.to_string()
            };
            let measured = session(
                ctx,
                kind,
                Profile::Resilient,
                &eps,
                &session_tag,
                row,
                |running, row| {
                    let rate = plan.scenario_rate;
                    let warm = ctx.spec(
                        running.addr,
                        plan.scenario_connections,
                        Mode::Open { rate },
                        Stop::Duration(plan.warmup),
                    );
                    let _ = ctx.load(&warm);
                    let before: Vec<_> = ups.iter().map(|u| u.stats()).collect();
                    let spec = ctx.spec(
                        running.addr,
                        plan.scenario_connections,
                        Mode::Open { rate },
                        Stop::Duration(duration),
                    );
                    let other_load = OtherLoad::start(running, &ups);
                    let result = std::thread::scope(|s| {
                        let load = s.spawn(|| ctx.load(&spec));
                        during(&mut ups, row, duration);
                        load.join()
                            .unwrap_or_else(|_| Err("load thread panicked".into()))
                    });
                    let others_pct = other_load.percent(running, &ups);
                    let after: Vec<_> = ups.iter().map(|u| u.stats()).collect();
                    let served = served_between(&before, &after);
                    let served_h2: u64 = served_h2_between(&before, &after).iter().sum();
                    match result {
                        Ok(r) => {
                            let mut f = BTreeMap::new();
                            let total = r.scheduled.max(1) as f64;
                            if r.responses > 0 {
                                f.insert("p50_us".to_string(), r.latency.p50_us);
                                f.insert("p99_us".to_string(), r.latency.p99_us);
                                f.insert("p999_us".to_string(), r.latency.p999_us);
                            }
                            f.insert("errors".to_string(), r.errors_total as f64);
                            f.insert(
                                "error_pct".to_string(),
                                100.0 * r.errors_total as f64 / total,
                            );
                            f.insert("others_pct".to_string(), others_pct);
                            let upstream_total: u64 = served.iter().sum();
                            if upstream_total > 0 {
                                f.insert(
                                    "third_share_pct".to_string(),
                                    100.0 * served[2] as f64 / upstream_total as f64,
                                );
                                f.insert(
                                    "upstream_per_client".to_string(),
                                    upstream_total as f64 / r.responses.max(1) as f64,
                                );
                            }
                            for (n, s) in names.iter().zip(&served) {
                                row.extra
                                    .insert(format!("served_{n}_round{}", round + 1), (*s).into());
                            }
                            row.extra
                                .insert(format!("served_h2_round{}", round + 1), served_h2.into());
                            if let Some(n) = error_note(&r) {
                                row.notes.push(format!("round {}: {n}", round + 1));
                            }
                            Some((f, r))
                        }
                        Err(e) => {
                            row.notes.push(e);
                            None
                        }
                    }
                },
            );
            if let Some(Some(m)) = measured {
                rounds.entry(kind).or_default().push(m);
            }
        }
    }
    for (kind, list) in rounds {
        let Some(row) = rows.get_mut(&kind) else {
            continue;
        };
        let rounds: Vec<(&BTreeMap<String, f64>, Option<&LoadReport>)> =
            list.iter().map(|(f, r)| (f, Some(r))).collect();
        set_round_medians(row, tag, &rounds);
    }
    let notes = vec![format!(
        "Upstreams: {}. Open loop at {:.0} req/s over {} connections for {:.1} s after {:.1} s of warm-up; median of {} round(s), contenders in rotated order. `other load` is CPU used meanwhile by processes outside the benchmark (100% = one CPU).",
        ups.iter()
            .map(|u| format!("{} ({}, error rate {})", u.args.name, u.args.latency, u.args.error_rate))
            .collect::<Vec<_>>()
            .join(", "),
        plan.scenario_rate,
        plan.scenario_connections,
        duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.rounds
    )];
    Ok((rows.into_values().collect(), notes))
}

pub(super) fn settings_note(ctx: &Ctx<'_>) -> Vec<String> {
    ctx.contenders
        .iter()
        .filter(|k| k.is_proxy())
        .map(|k| format!("{}: {}", k.name(), contender::best_settings(*k, ctx.setup)))
        .collect()
}

pub fn slow(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    println!("slow endpoint");
    let mut third = UpstreamArgs::fast("u2-slow");
    third.latency = "fixed:30".into();
    let (rows, mut notes) =
        three_endpoint_scenario(ctx, "slow", third, ctx.plan.scenario, |_, _, _| {})?;
    notes.extend(settings_note(ctx));
    Ok(ScenarioResult {
        key: "slow".into(),
        title: "Slow endpoint (one of three answers 30 ms later)".into(),
        setup: "Three endpoints, the third with +30 ms; each proxy with its own best balancing. Client latency from the intended send time; `slow share` is the part of the upstream requests the slow endpoint served.".into(),
        columns: vec![
            Column::new("p50_us", "p50 µs", Better::Lower),
            Column::new("p99_us", "p99 µs", Better::Lower),
            Column::new("p999_us", "p99.9 µs", Better::Lower),
            Column::new("third_share_pct", "slow share %", Better::Lower),
            Column::new("errors", "errors", Better::Lower),
            Column::new("others_pct", "other load %", Better::Neither),
        ],
        rows,
        notes,
    })
}

pub fn flaky(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    println!("flaky endpoint");
    let mut third = UpstreamArgs::fast("u2-flaky");
    third.error_rate = 0.2;
    let (rows, mut notes) =
        three_endpoint_scenario(ctx, "flaky", third, ctx.plan.scenario, |_, _, _| {})?;
    notes.extend(settings_note(ctx));
    Ok(ScenarioResult {
        key: "flaky".into(),
        title: "Flaky endpoint (one of three answers 503 to 20% of requests)".into(),
        setup: "Three endpoints, the third returns 503 for 20% of requests (seeded); each proxy with its own best retries and passive health checks. `errors` are client-visible (any status >= 400 or transport error); `flaky share` is the part of upstream requests the flaky endpoint got; `upstream/client` is upstream requests per client response (retries show as > 1).".into(),
        columns: vec![
            Column::new("error_pct", "client errors %", Better::Lower),
            Column::new("errors", "client errors", Better::Lower),
            Column::new("p50_us", "p50 µs", Better::Lower),
            Column::new("p99_us", "p99 µs", Better::Lower),
            Column::new("third_share_pct", "flaky share %", Better::Lower),
            Column::new("upstream_per_client", "upstream/client", Better::Lower),
            Column::new("others_pct", "other load %", Better::Neither),
        ],
        rows,
        notes,
    })
}

pub fn dead(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    println!("dead endpoint");
    let third = UpstreamArgs::fast("u2-dies");
    let duration = ctx.plan.dead;
    let (rows, mut notes) =
        three_endpoint_scenario(ctx, "dead", third, duration, |ups, row, duration| {
            std::thread::sleep(duration / 3);
            ups[2].kill();
            let killed = Instant::now();
            std::thread::sleep(duration / 3);
            if let Err(e) = ups[2].restart() {
                row.notes
                    .push(format!("restarting the killed upstream failed: {e:#}"));
            }
            row.extra.insert(
                "down_ms".into(),
                (killed.elapsed().as_secs_f64() * 1000.0).into(),
            );
        })?;
    notes.extend(settings_note(ctx));
    Ok(ScenarioResult {
        key: "dead".into(),
        title: "Dead endpoint (one of three killed mid-run, then restarted)".into(),
        setup: format!(
            "Three endpoints; the third is killed with SIGKILL a third into the {:.1} s run (its connections reset, its port refuses) and started again on the same port a third later. Client-visible errors by kind are in the notes.",
            duration.as_secs_f64()
        ),
        columns: vec![
            Column::new("errors", "client errors", Better::Lower),
            Column::new("error_pct", "client errors %", Better::Lower),
            Column::new("p50_us", "p50 µs", Better::Lower),
            Column::new("p99_us", "p99 µs", Better::Lower),
            Column::new("p999_us", "p99.9 µs", Better::Lower),
            Column::new("others_pct", "other load %", Better::Neither),
        ],
        rows,
        notes,
    })
}

/// Open `n` idle connections; those that failed are counted.
fn open_idle(addr: SocketAddr, n: usize) -> (Vec<TcpStream>, usize) {
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    for _ in 0..n {
        if Instant::now() > deadline {
            failed += 1;
            continue;
        }
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => open.push(s),
            Err(_) => failed += 1,
        }
    }
    (open, failed)
}

/// Close without TIME_WAIT (linger 0 sends a reset), so ports are free for what follows.
fn close_abortively(conns: Vec<TcpStream>) {
    for c in conns {
        let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
    }
}

pub fn memory(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    println!("memory");
    let plan = ctx.plan;
    let ups = ctx.start_upstreams(vec![UpstreamArgs::fast("u0")])?;
    let eps = vec![ups[0].addr];
    let mut rows = Vec::new();
    for kind in ctx.contenders.iter().filter(|k| k.is_proxy()) {
        progress("memory", *kind);
        let mut row = Row::new(*kind);
        session(
            ctx,
            *kind,
            Profile::Plain,
            &eps,
            "memory",
            &mut row,
            |running, row| {
                std::thread::sleep(Duration::from_millis(500));
                let (rss0, pss0) = running.memory_kib();
                let fds0 = running.fd_count();
                let (conns, failed) = open_idle(running.addr, plan.idle_connections);
                let opened = conns.len();
                let began = Instant::now();
                let mut accepted = 0;
                while began.elapsed() < Duration::from_secs(10) {
                    accepted = running.fd_count().saturating_sub(fds0);
                    if accepted >= opened {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                std::thread::sleep(Duration::from_millis(300));
                let (rss1, pss1) = running.memory_kib();
                // Still answering with all of them open?
                let answers = contender::probe(running.addr).is_ok();
                close_abortively(conns);
                row.set("rss_idle_mib", rss0 as f64 / 1024.0);
                row.set("rss_conns_mib", rss1 as f64 / 1024.0);
                row.set("pss_idle_mib", pss0 as f64 / 1024.0);
                row.set("pss_conns_mib", pss1 as f64 / 1024.0);
                row.set(
                    "kib_per_conn",
                    (rss1 as f64 - rss0 as f64) / opened.max(1) as f64,
                );
                row.set("accepted", accepted as f64);
                if failed > 0 {
                    row.notes.push(format!(
                        "{failed} of {} connections could not be opened",
                        plan.idle_connections
                    ));
                }
                if accepted < opened {
                    row.notes.push(format!("only {accepted} of {opened} connections were accepted (open descriptors) within 10 s"));
                }
                if !answers {
                    row.notes
                        .push("did not answer a request while holding the idle connections".into());
                }
            },
        );
        rows.push(row);
    }
    drop(ups);
    let mut notes = Vec::new();
    let cap = contender::haproxy_maxconn(ctx.setup.nofile);
    if (cap as usize) < plan.idle_connections && ctx.contenders.contains(&Kind::Haproxy) {
        notes.push(format!(
            "HAProxy's maxconn is {cap} here: it needs two descriptors per connection and refuses to start when the open-file limit ({}) cannot cover maxconn, so it cannot hold all {} connections on this machine.",
            ctx.setup.nofile, plan.idle_connections
        ));
    }
    Ok(ScenarioResult {
        key: "memory".into(),
        title: format!("Memory: idle, and with {} idle client connections", plan.idle_connections),
        setup: format!(
            "One upstream. Resident memory (VmRSS, summed over the contender's processes) 0.5 s after start with no traffic, then with {} client connections open and idle (no request sent), once the proxy holds their descriptors. PSS splits pages shared between processes (nginx's master and worker).",
            plan.idle_connections
        ),
        columns: vec![
            Column::new("rss_idle_mib", "RSS idle MiB", Better::Lower),
            Column::new("rss_conns_mib", "RSS with conns MiB", Better::Lower),
            Column::new("kib_per_conn", "KiB / conn", Better::Lower),
            Column::new("pss_idle_mib", "PSS idle MiB", Better::Lower),
            Column::new("pss_conns_mib", "PSS with conns MiB", Better::Lower),
            Column::new("accepted", "held conns", Better::Neither),
        ],
        rows,
        notes,
    })
}
