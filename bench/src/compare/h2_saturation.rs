//! Two h2c scenarios with h2load's own closed loop: `h2-saturation` (`h2load -n N -c 4 -m
//! 32` through each contender, req/s, p50/p99 and CPU per request with ratios to nginx and
//! HAProxy) and `poll-io` (what HTTP/2 costs each proxy per request against its own
//! HTTP/1.1 path: HTTP/1.1 at `-m 1`, h2c at `-m 1` and at `-m 32`, back to back, so that
//! coremesh's HTTP/2 bridge — h2 over monoio's poll-io — can be told apart from the
//! protocol's own cost, which nginx and HAProxy pay too). CPU per request is the proxy's
//! processes' utime + stime from /proc over the measured run; with `perf` on the machine,
//! also `perf stat`'s task-clock, system calls and context switches (and instructions
//! where the machine has hardware counters). Every proxy thread's allowed CPUs are read
//! from /proc and reported, so the layout the comparison ran on is in the report.

use super::contender::{Kind, Profile, Running};
use super::report::{Better, Column, Row, ScenarioResult};
use super::scenarios::{error_note, hz, median, progress, rotated, session, Ctx};
use super::upstreams::UpstreamArgs;
use crate::h2load::{self, Saturation};
use crate::load::{LoadReport, Mode, Stop};
use crate::perf::{self, PerfStat};
use crate::procfs;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The saturation scenario's name.
pub const SATURATION: &str = "h2-saturation";
/// The poll-io cost scenario's name.
pub const POLL_IO: &str = "poll-io";

/// One measured h2load run through one contender.
struct Measured {
    load: LoadReport,
    /// The proxy's CPU seconds over the run (procfs).
    cpu_s: f64,
    /// `perf stat`'s counts over the run, or why there are none.
    perf: Result<perf::Counts, String>,
}

impl Measured {
    fn responses(&self) -> f64 {
        self.load.responses.max(1) as f64
    }

    fn cpu_us(&self) -> f64 {
        self.cpu_s * 1e6 / self.responses()
    }

    /// A perf count per response (`task-clock` in µs: perf prints milliseconds).
    fn per_request(&self, event: &str) -> Option<f64> {
        let v = *self.perf.as_ref().ok()?.get(event)?;
        let scale = if event == "task-clock" { 1000.0 } else { 1.0 };
        Some(v * scale / self.responses())
    }
}

/// The perf figures per request: (event, key suffix, label).
const PERF_FIGURES: [(&str, &str, &str); 5] = [
    ("task-clock", "task_us", "task-clock µs/req"),
    ("raw_syscalls:sys_enter", "syscalls", "syscalls/req"),
    ("context-switches", "csw", "ctx switches/req"),
    ("instructions:u", "instr_u", "instructions:u/req"),
    ("instructions:k", "instr_k", "instructions:k/req"),
];

fn perf_binary() -> Option<std::path::PathBuf> {
    crate::wrk::on_path("perf")
}

/// The h2load loop `s` against `target`, pinned to the load CPUs.
fn load(ctx: &Ctx<'_>, target: SocketAddr, s: &Saturation) -> Result<LoadReport, String> {
    let h = ctx
        .h2load
        .as_ref()
        .ok_or("this scenario needs h2load (--protocol h2c)")?;
    let spec = ctx.spec(target, s.connections, Mode::Closed, Stop::Count(s.requests));
    let cpus: Vec<String> = ctx.load_cpus.iter().map(|c| c.to_string()).collect();
    let cpus = cpus.join(",");
    let taskset = ctx.setup.taskset.as_deref().map(|t| (t, cpus.as_str()));
    h2load::run_saturation(s, &spec, &h.binary, taskset, &ctx.work_dir)
        .map(|o| o.report)
        .map_err(|e| format!("h2load failed: {e:#}"))
}

/// Warm up with a tenth of the requests (at least 1000), then measure `s` with the
/// proxy's CPU time and `perf stat` around it.
fn measure(
    ctx: &Ctx<'_>,
    running: &Running,
    s: &Saturation,
    tag: &str,
) -> Result<Measured, String> {
    let warm = Saturation {
        requests: (s.requests / 10).max(1000),
        ..*s
    };
    load(ctx, running.addr, &warm)?;
    let pids = running.pid().map(procfs::process_tree).unwrap_or_default();
    let perf = match (pids.is_empty(), perf_binary()) {
        (true, _) => Err("no proxy process".to_string()),
        (false, None) => Err("perf is not installed".to_string()),
        (false, Some(p)) => PerfStat::attach(&p, &pids, &ctx.work_dir, tag),
    };
    let t0 = running.cpu_ticks();
    let result = load(ctx, running.addr, s);
    let cpu_s = running.cpu_ticks().saturating_sub(t0) as f64 / hz();
    let perf = perf.and_then(PerfStat::finish);
    Ok(Measured {
        load: result?,
        cpu_s,
        perf,
    })
}

/// Every proxy thread's allowed CPUs: each distinct list with its number of threads.
type Pinning = BTreeMap<String, usize>;

fn pinning(running: &Running) -> Option<Pinning> {
    let lists = procfs::tree_cpus_allowed(running.pid()?);
    (!lists.is_empty()).then_some(lists)
}

/// `LIST (N threads), …`.
fn show_pinning(p: &Pinning) -> String {
    p.iter()
        .map(|(l, n)| format!("{l} ({n} thread{})", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The figure of the peer named `base-h2c` (or `base`) in `rows`.
fn peer_figure(rows: &[Row], base: &str, key: &str) -> Option<f64> {
    let h2c = format!("{base}-h2c");
    rows.iter()
        .filter(|r| r.skipped.is_none())
        .find(|r| r.contender.name() == h2c)
        .or_else(|| {
            rows.iter()
                .find(|r| r.skipped.is_none() && r.contender.name() == base)
        })
        .and_then(|r| r.get(key))
}

/// `key / the same figure of nginx and of HAProxy` as `key_x_nginx`, `key_x_haproxy`.
fn set_peer_ratios(rows: &mut [Row], key: &str) {
    for base in ["nginx", "haproxy"] {
        let Some(peer) = peer_figure(rows, base, key) else {
            continue;
        };
        for row in rows.iter_mut() {
            if let Some(v) = row.get(key) {
                row.set(&format!("{key}_x_{base}"), v / peer);
            }
        }
    }
}

fn med(list: &[Measured], f: impl Fn(&Measured) -> Option<f64>) -> f64 {
    median(&list.iter().filter_map(f).collect::<Vec<_>>())
}

/// Put the medians of `list` into `row` under `prefix` (`""` or `h1_`, `m1_`, …).
fn set_figures(row: &mut Row, prefix: &str, list: &[Measured]) {
    if list.is_empty() {
        return;
    }
    let k = |name: &str| format!("{prefix}{name}");
    row.set(&k("rps"), med(list, |m| Some(m.load.throughput_rps)));
    row.set(&k("p50_us"), med(list, |m| Some(m.load.latency.p50_us)));
    row.set(&k("p99_us"), med(list, |m| Some(m.load.latency.p99_us)));
    row.set(
        &k("responses"),
        med(list, |m| Some(m.load.responses as f64)),
    );
    row.set(
        &k("errors"),
        list.iter().map(|m| m.load.errors_total as f64).sum(),
    );
    if row.contender.is_proxy() {
        row.set(&k("cpu_us"), med(list, |m| Some(m.cpu_us())));
        for (event, key, _) in PERF_FIGURES {
            row.set(&k(key), med(list, |m| m.per_request(event)));
        }
    }
    for (i, m) in list.iter().enumerate() {
        let mut r = m.load.clone();
        r.latency_curve.clear();
        if let Some(n) = error_note(&r) {
            row.notes.push(format!("{prefix}round {}: {n}", i + 1));
        }
        if let Err(e) = &m.perf {
            let n = format!("perf stat: {e}");
            if row.contender.is_proxy() && !row.notes.contains(&n) {
                row.notes.push(n);
            }
        }
        row.extra
            .insert(format!("{prefix}cpu_s_round{}", i + 1), m.cpu_s.into());
        row.loads.insert(format!("{prefix}round{}", i + 1), r);
    }
}

fn layout_note(ctx: &Ctx<'_>, pins: &BTreeMap<Kind, Pinning>) -> String {
    let listed: Vec<String> = pins
        .iter()
        .map(|(k, p)| format!("{}: {}", k.name(), show_pinning(p)))
        .collect();
    // The CPU lists alone (threads may differ in number, not in where they run).
    let sets: std::collections::BTreeSet<Vec<&String>> =
        pins.values().map(|p| p.keys().collect()).collect();
    format!(
        "Layout: every proxy started under `taskset -c {}` with {} core(s) / worker(s) / thread(s); h2load and the upstream on CPUs {}. The CPUs each proxy thread was allowed, read from /proc after the run: {}{}.",
        ctx.setup
            .proxy_cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
        ctx.setup.cores(),
        ctx.load_cpus
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(","),
        if listed.is_empty() {
            "none read".to_string()
        } else {
            listed.join("; ")
        },
        match sets.len() {
            0 => String::new(),
            1 => " — the same for every proxy".to_string(),
            _ => " — NOT the same for every proxy: the comparison is not fair".to_string(),
        }
    )
}

/// `h2load -n N -c C -m M` through each contender (direct included), after a warm-up of
/// a tenth of N, in rounds with the contenders in rotated order.
pub fn saturation(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    let plan = ctx.plan;
    let s = Saturation {
        connections: plan.h2_connections,
        streams: plan.h2_streams,
        requests: plan.h2_requests,
        h1: false,
    };
    println!(
        "{SATURATION}: h2load -n {} -c {} -m {}",
        s.requests, s.connections, s.streams
    );
    let ups = ctx.start_upstreams(vec![UpstreamArgs::fast("u0")])?;
    let eps = vec![ups[0].addr];
    let mut rows: BTreeMap<Kind, Row> = ctx.contenders.iter().map(|k| (*k, Row::new(*k))).collect();
    let mut measured: BTreeMap<Kind, Vec<Measured>> = BTreeMap::new();
    let mut pins: BTreeMap<Kind, Pinning> = BTreeMap::new();
    for round in 0..plan.rounds {
        for kind in rotated(ctx.contenders, round) {
            let Some(row) = rows.get_mut(&kind) else {
                continue;
            };
            if row.skipped.is_some() {
                continue;
            }
            progress(
                &format!("{SATURATION} round {}/{}", round + 1, plan.rounds),
                kind,
            );
            let tag = format!("h2sat-r{round}");
            let out = session(ctx, kind, Profile::Plain, &eps, &tag, row, |running, _| {
                let m = measure(ctx, running, &s, &format!("{}-{tag}", kind.name()));
                (m, pinning(running))
            });
            if let Some((m, pin)) = out {
                match m {
                    Ok(m) => measured.entry(kind).or_default().push(m),
                    Err(e) => row.notes.push(e),
                }
                if let (true, Some(p)) = (kind.is_proxy(), pin) {
                    pins.insert(kind, p);
                }
            }
        }
    }
    let mut rows: Vec<Row> = ctx
        .contenders
        .iter()
        .filter_map(|k| rows.remove(k))
        .collect();
    for row in rows.iter_mut() {
        if let Some(list) = measured.get(&row.contender) {
            set_figures(row, "", list);
        }
    }
    for key in ["rps", "cpu_us"] {
        set_peer_ratios(&mut rows, key);
    }
    drop(ups);
    Ok(ScenarioResult {
        key: SATURATION.into(),
        title: format!(
            "HTTP/2 saturation: h2load -n {} -c {} -m {}",
            s.requests, s.connections, s.streams
        ),
        setup: format!(
            "One upstream (the bench's own h2c server, 64-byte body, no added latency). h2load's closed loop: {} connections with up to {} streams in flight each, exactly {} requests per contender and round, after a warm-up of {} requests on the same proxy; median of {} round(s), contenders in rotated order. CPU is the proxy's processes' utime + stime from /proc/PID/stat over the measured run (clock tick 1/{:.0} s), per response; `task-clock`, system calls and context switches come from `perf stat -p` on the same processes. `× nginx` and `× HAProxy` are ratios to nginx-h2c's and haproxy-h2c's figure in this run.",
            s.connections,
            s.streams,
            s.requests,
            (s.requests / 10).max(1000),
            plan.rounds,
            hz()
        ),
        columns: vec![
            Column::new("rps", "req/s", Better::Higher),
            Column::plain("rps_x_nginx", "req/s × nginx"),
            Column::plain("rps_x_haproxy", "req/s × HAProxy"),
            Column::new("p50_us", "p50 µs", Better::Lower),
            Column::new("p99_us", "p99 µs", Better::Lower),
            Column::new("cpu_us", "CPU µs/req", Better::Lower),
            Column::plain("cpu_us_x_nginx", "CPU × nginx"),
            Column::plain("cpu_us_x_haproxy", "CPU × HAProxy"),
            Column::new("task_us", "task-clock µs/req", Better::Lower),
            Column::new("syscalls", "syscalls/req", Better::Lower),
            Column::new("csw", "ctx switches/req", Better::Lower),
            Column::new("errors", "errors", Better::Lower),
        ],
        rows,
        notes: vec![layout_note(ctx, &pins)],
    })
}

/// The HTTP/1.1 sibling of an h2c contender (`coremesh-h2c` → `coremesh`), when the run
/// knows its file.
fn http1_sibling(ctx: &Ctx<'_>, kind: Kind) -> Option<Kind> {
    let base = kind.name().strip_suffix("-h2c")?;
    let sibling = Kind::named(base);
    let file = ctx.setup.files.get(&sibling)?;
    file.protocols
        .iter()
        .any(|p| p == "http1")
        .then_some(sibling)
}

/// The three loads of `poll-io`: (key prefix, label, h2load loop).
fn legs(plan: &super::Plan) -> [(&'static str, String, Saturation); 3] {
    let base = Saturation {
        connections: plan.h2_connections,
        streams: 1,
        requests: plan.h2_requests,
        h1: true,
    };
    [
        (
            "h1_",
            format!("HTTP/1.1 -c {} -m 1", base.connections),
            base,
        ),
        (
            "m1_",
            format!("h2c -c {} -m 1", base.connections),
            Saturation { h1: false, ..base },
        ),
        (
            "m32_",
            format!("h2c -c {} -m {}", base.connections, plan.h2_streams),
            Saturation {
                h1: false,
                streams: plan.h2_streams,
                ..base
            },
        ),
    ]
}

/// Each proxy's HTTP/1.1 path (its HTTP/1.1 contender file, `h2load --h1 -m 1`) and its
/// h2c path (its h2c file, `-m 1` then `-m 32`), back to back in each round.
pub fn poll_io(ctx: &Ctx<'_>) -> anyhow::Result<Vec<ScenarioResult>> {
    let plan = ctx.plan;
    let legs = legs(plan);
    println!(
        "{POLL_IO}: {} requests each over {}",
        plan.h2_requests,
        legs.iter()
            .map(|l| l.1.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ups = ctx.start_upstreams(vec![UpstreamArgs::fast("u0")])?;
    let eps = vec![ups[0].addr];
    let proxies: Vec<Kind> = ctx
        .contenders
        .iter()
        .copied()
        .filter(|k| k.is_proxy())
        .collect();
    let mut rows: BTreeMap<Kind, Row> = proxies.iter().map(|k| (*k, Row::new(*k))).collect();
    let mut measured: BTreeMap<(Kind, &str), Vec<Measured>> = BTreeMap::new();
    let mut pins: BTreeMap<Kind, Pinning> = BTreeMap::new();
    for round in 0..plan.rounds {
        for kind in rotated(&proxies, round) {
            let Some(row) = rows.get_mut(&kind) else {
                continue;
            };
            if row.skipped.is_some() {
                continue;
            }
            let Some(h1) = http1_sibling(ctx, kind) else {
                row.skipped = Some(format!(
                    "no HTTP/1.1 contender file named `{}` without `-h2c` to compare with",
                    kind.name()
                ));
                continue;
            };
            progress(
                &format!("{POLL_IO} round {}/{}", round + 1, plan.rounds),
                kind,
            );
            let tag = format!("pollio-r{round}");
            // The HTTP/1.1 path, from its own file; its notes go to this row.
            let mut h1_row = Row::new(h1);
            let (prefix, _, s) = &legs[0];
            let out = session(
                ctx,
                h1,
                Profile::Plain,
                &eps,
                &tag,
                &mut h1_row,
                |running, _| {
                    let m = measure(ctx, running, s, &format!("{}-{tag}-h1", h1.name()));
                    (m, pinning(running))
                },
            );
            if let Some(reason) = h1_row.skipped {
                row.skipped = Some(format!("{} (HTTP/1.1): {reason}", h1.name()));
                continue;
            }
            row.notes.extend(h1_row.notes);
            match out {
                Some((Ok(m), pin)) => {
                    measured.entry((kind, prefix)).or_default().push(m);
                    if let Some(p) = pin {
                        pins.insert(h1, p);
                    }
                }
                Some((Err(e), _)) => row.notes.push(format!("{}: {e}", h1.name())),
                None => {}
            }
            let out = session(ctx, kind, Profile::Plain, &eps, &tag, row, |running, _| {
                let ms: Vec<(&str, Result<Measured, String>)> = legs[1..]
                    .iter()
                    .map(|(prefix, _, s)| {
                        let t = format!("{}-{tag}-{}", kind.name(), prefix.trim_end_matches('_'));
                        (*prefix, measure(ctx, running, s, &t))
                    })
                    .collect();
                (ms, pinning(running))
            });
            if let Some((ms, pin)) = out {
                for (prefix, m) in ms {
                    match m {
                        Ok(m) => measured.entry((kind, prefix)).or_default().push(m),
                        Err(e) => row.notes.push(format!("{prefix}: {e}")),
                    }
                }
                if let Some(p) = pin {
                    pins.insert(kind, p);
                }
            }
        }
    }
    let mut rows: Vec<Row> = proxies.iter().filter_map(|k| rows.remove(k)).collect();
    for row in rows.iter_mut() {
        for (prefix, _, _) in &legs {
            if let Some(list) = measured.get(&(row.contender, *prefix)) {
                set_figures(row, prefix, list);
            }
        }
        for key in ["cpu_us", "task_us", "syscalls"] {
            let h1 = row.get(&format!("h1_{key}"));
            for leg in ["m1", "m32"] {
                if let (Some(a), Some(b)) = (row.get(&format!("{leg}_{key}")), h1) {
                    row.set(&format!("{leg}_{key}_over_h1"), a / b);
                }
            }
        }
    }
    drop(ups);
    let setup = format!(
        "One upstream (the bench's own, answering HTTP/1.1 and h2c on one port). Per proxy and round, back to back: its HTTP/1.1 contender file (`coremesh`, `nginx`, `haproxy`: HTTP/1.1 on both sides) under `h2load --h1 -n {n} -c {c} -m 1`, then its h2c file (h2c on both sides) under `h2load -n {n} -c {c} -m 1` and `-m {m}`; each after a warm-up of {w} requests. CPU is the proxy's utime + stime from /proc over each measured run, per response; task-clock and system calls from `perf stat -p`. `h2c / h1` is the h2c figure over the same proxy's HTTP/1.1 figure: the cost of HTTP/2 itself shows in every proxy's ratio, and what coremesh's ratio has beyond nginx's and HAProxy's is its HTTP/2 path's own (h2 over monoio's poll-io). Median of {r} round(s).",
        n = plan.h2_requests,
        c = plan.h2_connections,
        m = plan.h2_streams,
        w = (plan.h2_requests / 10).max(1000),
        r = plan.rounds
    );
    // The many-streams leg keeps its `m32_` keys whatever `--h2-streams` says; its labels
    // say the real count.
    let many = format!("-m {}", plan.h2_streams);
    let cpu_cols = vec![
        Column::plain("h1_rps", "HTTP/1.1 req/s"),
        Column::plain("m1_rps", "h2c -m 1 req/s"),
        Column::plain("m32_rps", &format!("h2c {many} req/s")),
        Column::plain("h1_cpu_us", "HTTP/1.1 CPU µs/req"),
        Column::plain("m1_cpu_us", "h2c -m 1 CPU µs/req"),
        Column::plain("m32_cpu_us", &format!("h2c {many} CPU µs/req")),
        Column::plain("m1_cpu_us_over_h1", "-m 1 / h1"),
        Column::plain("m32_cpu_us_over_h1", &format!("{many} / h1")),
        Column::plain("h1_errors", "h1 errors"),
        Column::plain("m1_errors", "-m 1 errors"),
        Column::plain("m32_errors", &format!("{many} errors")),
    ];
    let mut perf_cols = Vec::new();
    for (_, key, label) in PERF_FIGURES {
        let any = rows.iter().any(|r| r.get(&format!("h1_{key}")).is_some());
        if !any {
            continue;
        }
        let many_label = format!("h2c {many}");
        for (leg, leg_label) in [
            ("h1", "HTTP/1.1"),
            ("m1", "h2c -m 1"),
            ("m32", many_label.as_str()),
        ] {
            perf_cols.push(Column::plain(
                &format!("{leg}_{key}"),
                &format!("{leg_label} {label}"),
            ));
        }
        if key == "task_us" || key == "syscalls" {
            perf_cols.push(Column::plain(&format!("m1_{key}_over_h1"), "-m 1 / h1"));
            perf_cols.push(Column::plain(
                &format!("m32_{key}_over_h1"),
                &format!("{many} / h1"),
            ));
        }
    }
    let note = layout_note(ctx, &pins);
    let mut out = vec![ScenarioResult {
        key: POLL_IO.into(),
        title: "The cost of HTTP/2 against each proxy's HTTP/1.1 path: CPU per request".into(),
        setup: setup.clone(),
        columns: cpu_cols,
        rows: rows.clone(),
        notes: vec![note.clone()],
    }];
    if !perf_cols.is_empty() {
        for r in rows.iter_mut() {
            r.loads.clear();
            r.notes.clear();
        }
        out.push(ScenarioResult {
            key: format!("{POLL_IO}-perf"),
            title: "The cost of HTTP/2 against each proxy's HTTP/1.1 path: perf stat per request"
                .into(),
            setup: "The same runs as the table above, counted by `perf stat -p` on the proxy's processes (from 200 ms before the measured run to its end: idle time adds no requests and little CPU).".into(),
            columns: perf_cols,
            rows,
            notes: vec![note],
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_to_the_h2c_peers() {
        let mut rows: Vec<Row> = ["direct", "coremesh-h2c", "nginx-h2c", "haproxy-h2c"]
            .iter()
            .zip([40_000.0, 20_000.0, 10_000.0, 16_000.0])
            .map(|(n, rps)| {
                let mut r = Row::new(Kind::named(n));
                r.set("rps", rps);
                r
            })
            .collect();
        set_peer_ratios(&mut rows, "rps");
        assert_eq!(rows[1].get("rps_x_nginx"), Some(2.0));
        assert_eq!(rows[1].get("rps_x_haproxy"), Some(1.25));
        assert_eq!(rows[2].get("rps_x_nginx"), Some(1.0));
        // No peer, no ratio.
        set_peer_ratios(&mut rows, "cpu_us");
        assert_eq!(rows[1].get("cpu_us_x_nginx"), None);
    }

    #[test]
    fn the_layout_compares_cpu_lists_not_thread_counts() {
        let plan = super::super::Plan::quick(10);
        let setup = super::super::contender::Setup {
            coremesh: Err("none".into()),
            coremesh_driver: "uring".into(),
            files: BTreeMap::new(),
            taskset: None,
            proxy_cpus: vec![1],
            proxy_cores: None,
            work_dir: std::env::temp_dir(),
            config_dir: std::env::temp_dir(),
            nofile: 1024,
            coremesh_admin: false,
        };
        let ctx = Ctx {
            setup: &setup,
            plan: &plan,
            contenders: &[],
            load_cpus: vec![0],
            exe: std::env::temp_dir(),
            work_dir: std::env::temp_dir(),
            h2load: None,
        };
        let pin = |list: &str, n: usize| Pinning::from([(list.to_string(), n)]);
        let mut pins = BTreeMap::new();
        pins.insert(Kind::named("coremesh-h2c"), pin("1", 3));
        pins.insert(Kind::named("nginx-h2c"), pin("1", 2));
        let note = layout_note(&ctx, &pins);
        assert!(note.contains("coremesh-h2c: 1 (3 threads)"), "{note}");
        assert!(note.ends_with("the same for every proxy."), "{note}");
        pins.insert(Kind::named("haproxy-h2c"), pin("0-1", 1));
        assert!(layout_note(&ctx, &pins).contains("NOT the same"));
    }

    #[test]
    fn the_legs_are_http1_then_h2c_at_one_and_many_streams() {
        let plan = super::super::Plan::quick(10);
        let l = legs(&plan);
        assert!(l[0].2.h1 && l[0].2.streams == 1);
        assert!(!l[1].2.h1 && l[1].2.streams == 1);
        assert!(!l[2].2.h1 && l[2].2.streams == plan.h2_streams);
        assert!(l.iter().all(|x| x.2.connections == plan.h2_connections));
    }
}
