//! The `mtls` scenario: what mutual TLS between two proxies costs, per contender, in one
//! run. Layout: load generator → proxy A (client side) → proxy B (server side) → the
//! bench's upstream, A and B both from the contender's `[mtls]` table
//! ([`super::mtls_file`]), both pinned to the proxy CPUs. Each contender runs the layout
//! twice back to back in every round — the hop A → B in plaintext, then as TLS 1.3 with
//! client certificates (the order alternates by round) — at the same open-loop rate, and
//! the report gives the added p50 / p99 (coordinated omission corrected) and the added CPU
//! per request of both proxies together (/proc), then each contender's added figures as
//! ratios to nginx's. The certificates are made here ([`super::mtls_certs`]).

use super::contender::{self, Kind, Launch, Running};
use super::contender_file::{ContenderFile, ReadyCheck, Template};
use super::mtls_certs::Certs;
use super::mtls_file::{Evidence, Hop, MtlsDef};
use super::report::{Better, Column, Row, ScenarioResult};
use super::scenarios::{error_note, hz, median, progress, rotated, Ctx};
use super::upstreams::{UpstreamArgs, UpstreamProc};
use crate::load::{LoadReport, Mode, Stop};
use crate::procfs;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The scenario's name and the key of its table.
pub const KEY: &str = "mtls";
/// Evidence lines kept per run (the distinct ones, in order of first appearance).
const EVIDENCE_LINES: usize = 20;

/// Both proxies of one layout.
struct Layout {
    a: Running,
    b: Running,
}

impl Layout {
    fn cpu_ticks(&self) -> (u64, u64) {
        (self.a.cpu_ticks(), self.b.cpu_ticks())
    }

    /// Stop A, then B; a proxy that died on its own is noted.
    fn stop(mut self, row: &mut Row) {
        for (which, r) in [("A", &mut self.a), ("B", &mut self.b)] {
            if let Some(died) = r.died() {
                row.notes.push(format!(
                    "proxy {which}: {died}; log: {}",
                    r.log_tail().replace('\n', " | ")
                ));
            }
        }
        let _ = self.a.stop();
        let _ = self.b.stop();
    }
}

/// What every start of a layout shares.
struct Env<'a, 'b> {
    ctx: &'a Ctx<'b>,
    /// The bench's upstream, behind B.
    upstream: SocketAddr,
    certs: &'a Certs,
}

/// One proxy of the layout, from the contender's `[mtls]` table: B (`server`) in front of
/// the upstream, ready when it accepts connections; A in front of B, ready as the file's
/// `ready` says (a GET through A reaches the upstream through B).
fn start_role(
    env: &Env<'_, '_>,
    kind: Kind,
    hop: Hop,
    server: bool,
    endpoint: SocketAddr,
    name: String,
) -> Result<Running, String> {
    let (file, def) = definition(env.ctx, kind)?;
    let role = def.role(server);
    let start: Vec<&Template> = if role.start.is_empty() {
        file.start.iter().collect()
    } else {
        role.start.iter().collect()
    };
    let mut vars = env.certs.vars();
    vars.insert("upstream_host".into(), endpoint.ip().to_string());
    vars.insert("upstream_port".into(), endpoint.port().to_string());
    let mut ready = file.ready.clone();
    if server {
        ready.check = ReadyCheck::Tcp;
    }
    contender::launch(
        kind,
        env.ctx.setup,
        &[endpoint],
        Launch {
            name,
            config: role.config.as_ref(),
            start,
            vars,
            templated_vars: def.hop(hop).iter().map(|(k, t)| (k.clone(), t)).collect(),
            admin_args: false,
            ready,
        },
    )
}

/// The contender's `[mtls]` table, or why it cannot take part.
fn definition<'a>(ctx: &Ctx<'a>, kind: Kind) -> Result<(&'a ContenderFile, &'a MtlsDef), String> {
    let file = ctx
        .setup
        .files
        .get(&kind)
        .ok_or_else(|| format!("no contender file defines {:?}", kind.name()))?;
    let def = file.mtls.as_ref().ok_or_else(|| {
        format!(
            "its contender file ({}) has no `[mtls]` table (proxy A and proxy B of the two-proxy layout; see docs/benchmarks.md)",
            file.origin
        )
    })?;
    Ok((file, def))
}

fn start_layout(env: &Env<'_, '_>, kind: Kind, hop: Hop, tag: &str) -> Result<Layout, String> {
    let name = |role: &str| format!("{}-mtls-{}-{tag}-{role}", kind.name(), hop.name());
    let b = start_role(env, kind, hop, true, env.upstream, name("b"))
        .map_err(|e| format!("proxy B ({}): {e}", hop.name()))?;
    match start_role(env, kind, hop, false, b.addr, name("a")) {
        Ok(a) => Ok(Layout { a, b }),
        Err(e) => {
            let _ = b.stop();
            Err(format!("proxy A ({}): {e}", hop.name()))
        }
    }
}

/// One measured run through one layout.
struct Measured {
    report: LoadReport,
    a_cpu_s: f64,
    b_cpu_s: f64,
    others_pct: f64,
    /// What B's (and A's) evidence showed after the run.
    evidence: Vec<String>,
    /// A plaintext GET straight to B: its status, or why there was none.
    b_plaintext: Result<u16, String>,
    /// `perf stat` on both proxies' processes over the run, or why there are no counts.
    perf: Result<crate::perf::Counts, String>,
}

impl Measured {
    fn per_request(&self, cpu_s: f64) -> f64 {
        cpu_s * 1e6 / self.report.responses.max(1) as f64
    }

    fn cpu_us(&self) -> f64 {
        self.per_request(self.a_cpu_s + self.b_cpu_s)
    }

    /// A `perf stat` count per response (NaN without it: left out of the figures).
    fn perf_per_request(&self, event: &str) -> f64 {
        match self.perf.as_ref().ok().and_then(|c| c.get(event)) {
            Some(v) => v / self.report.responses.max(1) as f64,
            None => f64::NAN,
        }
    }
}

/// The system calls event of `perf stat` (every syscall entry of the proxies' threads).
const SYSCALLS: &str = "raw_syscalls:sys_enter";

fn upstream_ticks(ups: &[UpstreamProc]) -> u64 {
    ups.iter()
        .filter_map(|u| u.pid())
        .map(procfs::tree_cpu_ticks)
        .sum()
}

/// The distinct lines of `text` containing `filter`, each with how often it came
/// (`line ×N` past one), at most [`EVIDENCE_LINES`].
pub fn distinct_lines(text: &str, filter: &str) -> Vec<String> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || !line.contains(filter) || line.starts_with('#') {
            continue;
        }
        if let Some((_, n)) = seen.iter_mut().find(|(l, _)| l == line) {
            *n += 1;
        } else if seen.len() < EVIDENCE_LINES {
            seen.push((line.to_string(), 1));
        }
    }
    seen.into_iter()
        .map(|(l, n)| if n > 1 { format!("{l} ×{n}") } else { l })
        .collect()
}

/// Read a role's evidence from its running proxy.
fn evidence(origin: &str, e: &Evidence, running: &Running) -> Result<Vec<String>, String> {
    let source = e.source.render(origin, &running.vars, &[])?;
    let text = match source.strip_prefix("http://") {
        Some(rest) => {
            let (addr, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let addr: SocketAddr = addr
                .parse()
                .map_err(|err| format!("evidence {source}: {err}"))?;
            let path = if path.is_empty() { "/" } else { path };
            let response = contender::fetch(addr, path)?;
            match response.split_once("\r\n\r\n") {
                Some((_, body)) => body.to_string(),
                None => response,
            }
        }
        None => std::fs::read_to_string(&source).map_err(|err| format!("{source}: {err}"))?,
    };
    Ok(distinct_lines(&text, &e.lines))
}

fn layout_evidence(ctx: &Ctx<'_>, kind: Kind, layout: &Layout) -> Vec<String> {
    let Ok((file, def)) = definition(ctx, kind) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (which, role, running) in [("A", &def.client, &layout.a), ("B", &def.server, &layout.b)] {
        if let Some(e) = &role.evidence {
            match evidence(&file.origin, e, running) {
                Ok(lines) if lines.is_empty() => out.push(format!("{which}: (no such line)")),
                Ok(lines) => out.extend(lines.into_iter().map(|l| format!("{which}: {l}"))),
                Err(err) => out.push(format!("{which}: evidence not read: {err}")),
            }
        }
    }
    out
}

/// Warm up, then the open loop at `rate` with both proxies' CPU time around it.
fn measure(
    ctx: &Ctx<'_>,
    kind: Kind,
    ups: &[UpstreamProc],
    layout: &Layout,
    hop: Hop,
    rate: f64,
) -> Result<Measured, String> {
    let plan = ctx.plan;
    let conns = plan.fixed_rate_connections;
    let warm = ctx.spec(
        layout.a.addr,
        conns,
        Mode::Open { rate },
        Stop::Duration(plan.warmup),
    );
    ctx.load(&warm)?;
    let spec = ctx.spec(
        layout.a.addr,
        conns,
        Mode::Open { rate },
        Stop::Duration(plan.fixed),
    );
    let me = std::process::id();
    let ours = || {
        let (a, b) = layout.cpu_ticks();
        a + b + upstream_ticks(ups) + procfs::cpu_ticks(me).unwrap_or(0)
    };
    let pids: Vec<u32> = [&layout.a, &layout.b]
        .iter()
        .filter_map(|r| r.pid())
        .flat_map(procfs::process_tree)
        .collect();
    let perf = match crate::wrk::on_path("perf") {
        None => Err("perf is not installed".to_string()),
        Some(p) => crate::perf::PerfStat::attach(
            &p,
            &pids,
            &ctx.work_dir,
            &format!("mtls-{}-{}", kind.name(), hop.name()),
        ),
    };
    let (a0, b0) = layout.cpu_ticks();
    let (ours0, machine0) = (ours(), procfs::machine_busy_ticks());
    let report = ctx.load(&spec);
    let (a1, b1) = layout.cpu_ticks();
    let perf = perf.and_then(crate::perf::PerfStat::finish);
    let report = report?;
    let others = procfs::machine_busy_ticks().saturating_sub(machine0) as f64
        - ours().saturating_sub(ours0) as f64;
    // The evidence first: the plaintext GET below may show in B's log too.
    let evidence = layout_evidence(ctx, kind, layout);
    let b_plaintext = match hop {
        Hop::Tls => contender::probe(layout.b.addr),
        Hop::Plain => Err("not tried on the plaintext layout".to_string()),
    };
    Ok(Measured {
        a_cpu_s: a1.saturating_sub(a0) as f64 / hz(),
        b_cpu_s: b1.saturating_sub(b0) as f64 / hz(),
        others_pct: (100.0 * others / hz() / report.elapsed_s.max(1e-9)).max(0.0),
        evidence,
        b_plaintext,
        perf,
        report,
    })
}

/// The mTLS layout's saturated throughput (closed loop), to choose the fixed rate.
fn saturate(ctx: &Ctx<'_>, layout: &Layout) -> Result<LoadReport, String> {
    let plan = ctx.plan;
    let warm = ctx.spec(
        layout.a.addr,
        plan.connections,
        Mode::Closed,
        Stop::Duration(plan.warmup),
    );
    ctx.load(&warm)?;
    let spec = ctx.spec(
        layout.a.addr,
        plan.connections,
        Mode::Closed,
        Stop::Duration(plan.saturate),
    );
    ctx.load(&spec)
}

/// The open-loop rate everyone runs at: `share` of the lowest saturated throughput,
/// rounded down to 100 req/s (at least 100); `fallback` when none was measured.
pub fn fixed_rate(saturated: &[f64], share: f64, fallback: f64) -> f64 {
    let lowest = saturated
        .iter()
        .copied()
        .filter(|r| r.is_finite() && *r > 0.0)
        .fold(f64::INFINITY, f64::min);
    if lowest.is_finite() {
        ((lowest * share / 100.0).floor() * 100.0).max(100.0)
    } else {
        fallback
    }
}

fn side(pair: &(Measured, Measured), hop: Hop) -> &Measured {
    match hop {
        Hop::Plain => &pair.0,
        Hop::Tls => &pair.1,
    }
}

/// A row's figures from its rounds: each hop's medians, the added figures (TLS less
/// plaintext within each round, then the median over the rounds).
fn figures(row: &mut Row, rounds: &[(Measured, Measured)]) {
    if rounds.is_empty() {
        return;
    }
    let med = |f: &dyn Fn(&(Measured, Measured)) -> f64| {
        median(&rounds.iter().map(f).collect::<Vec<_>>())
    };
    for hop in Hop::BOTH {
        let h = hop.name();
        row.set(
            &format!("{h}_p50_us"),
            med(&|p| side(p, hop).report.latency.p50_us),
        );
        row.set(
            &format!("{h}_p99_us"),
            med(&|p| side(p, hop).report.latency.p99_us),
        );
        row.set(
            &format!("{h}_p999_us"),
            med(&|p| side(p, hop).report.latency.p999_us),
        );
        row.set(&format!("{h}_cpu_us"), med(&|p| side(p, hop).cpu_us()));
        row.set(
            &format!("{h}_a_cpu_us"),
            med(&|p| side(p, hop).per_request(side(p, hop).a_cpu_s)),
        );
        row.set(
            &format!("{h}_b_cpu_us"),
            med(&|p| side(p, hop).per_request(side(p, hop).b_cpu_s)),
        );
    }
    row.set(
        "added_p50_us",
        med(&|(p, t)| t.report.latency.p50_us - p.report.latency.p50_us),
    );
    row.set(
        "added_p99_us",
        med(&|(p, t)| t.report.latency.p99_us - p.report.latency.p99_us),
    );
    row.set("added_cpu_us", med(&|(p, t)| t.cpu_us() - p.cpu_us()));
    for hop in Hop::BOTH {
        let h = hop.name();
        row.set(
            &format!("{h}_syscalls"),
            med(&|p| side(p, hop).perf_per_request(SYSCALLS)),
        );
        row.set(
            &format!("{h}_csw"),
            med(&|p| side(p, hop).perf_per_request("context-switches")),
        );
        // perf prints task-clock in milliseconds.
        row.set(
            &format!("{h}_task_us"),
            med(&|p| side(p, hop).perf_per_request("task-clock") * 1000.0),
        );
    }
    row.set(
        "added_syscalls",
        med(&|(p, t)| t.perf_per_request(SYSCALLS) - p.perf_per_request(SYSCALLS)),
    );
    row.set(
        "errors",
        rounds
            .iter()
            .map(|(p, t)| (p.report.errors_total + t.report.errors_total) as f64)
            .sum(),
    );
    let others: Vec<f64> = rounds
        .iter()
        .flat_map(|(p, t)| [p.others_pct, t.others_pct])
        .collect();
    row.set("others_pct", median(&others));
}

/// The added figures as ratios to nginx's (only where nginx's is above zero).
pub fn set_ratios_to_nginx(rows: &mut [Row]) {
    let nginx: BTreeMap<&str, f64> = ["added_p50_us", "added_p99_us", "added_cpu_us"]
        .into_iter()
        .filter_map(|k| {
            let v = rows
                .iter()
                .find(|r| r.contender == Kind::Nginx && r.skipped.is_none())?
                .get(k)?;
            (v > 0.0).then_some((k, v))
        })
        .collect();
    for row in rows.iter_mut() {
        for (key, ratio) in [
            ("added_p50_us", "added_p50_vs_nginx"),
            ("added_p99_us", "added_p99_vs_nginx"),
            ("added_cpu_us", "added_cpu_vs_nginx"),
        ] {
            if let (Some(n), Some(v)) = (nginx.get(key), row.get(key)) {
                row.set(ratio, v / n);
            }
        }
    }
}

/// A column whose figure is better lower, printed without the ratio to coremesh (this
/// table's ratios are the `× nginx` columns).
fn lower(key: &str, label: &str) -> Column {
    Column {
        no_ratio: true,
        ..Column::new(key, label, Better::Lower)
    }
}

/// The table's columns.
pub fn columns() -> Vec<Column> {
    vec![
        Column::plain("tls_saturated_rps", "mTLS layout req/s (saturated)"),
        Column::plain("plain_p50_us", "plain p50 µs"),
        Column::plain("tls_p50_us", "mTLS p50 µs"),
        lower("added_p50_us", "added p50 µs"),
        Column::plain("added_p50_vs_nginx", "added p50 × nginx"),
        Column::plain("plain_p99_us", "plain p99 µs"),
        Column::plain("tls_p99_us", "mTLS p99 µs"),
        lower("added_p99_us", "added p99 µs"),
        Column::plain("added_p99_vs_nginx", "added p99 × nginx"),
        Column::plain("plain_cpu_us", "plain CPU µs/req"),
        Column::plain("tls_cpu_us", "mTLS CPU µs/req"),
        lower("added_cpu_us", "added CPU µs/req"),
        Column::plain("added_cpu_vs_nginx", "added CPU × nginx"),
        Column::plain("plain_syscalls", "plain syscalls/req"),
        Column::plain("tls_syscalls", "mTLS syscalls/req"),
        lower("added_syscalls", "added syscalls/req"),
        lower("errors", "errors"),
        Column::plain("others_pct", "other load %"),
    ]
}

/// Keep one run's load report and evidence with the row.
fn keep(row: &mut Row, hop: Hop, round: usize, m: &Measured) {
    let mut kept = m.report.clone();
    kept.latency_curve.clear();
    let h = hop.name();
    row.loads.insert(format!("{h}_round{round}"), kept);
    row.extra.insert(
        format!("evidence_{h}_round{round}"),
        m.evidence.clone().into(),
    );
    row.extra
        .insert(format!("a_cpu_s_{h}_round{round}"), m.a_cpu_s.into());
    row.extra
        .insert(format!("b_cpu_s_{h}_round{round}"), m.b_cpu_s.into());
    if hop == Hop::Tls {
        let text = match &m.b_plaintext {
            Ok(status) => format!("answered {status}"),
            Err(e) => format!("no answer: {e}"),
        };
        row.extra
            .insert(format!("b_plaintext_round{round}"), text.into());
    }
    if let Some(n) = error_note(&m.report) {
        row.notes.push(format!("round {round}, {h}: {n}"));
    }
    if let Err(e) = &m.perf {
        let n = format!("perf stat: {e}");
        if !row.notes.contains(&n) {
            row.notes.push(n);
        }
    }
}

/// Start the layout for `hop`, run `f` on it, stop it; a failed start skips the row.
fn with_layout<T>(
    env: &Env<'_, '_>,
    kind: Kind,
    hop: Hop,
    tag: &str,
    row: &mut Row,
    f: impl FnOnce(&Layout, &mut Row) -> T,
) -> Option<T> {
    let layout = match start_layout(env, kind, hop, tag) {
        Ok(l) => l,
        Err(reason) => {
            println!("    skipped: {reason}");
            row.skipped = Some(reason);
            return None;
        }
    };
    if hop == Hop::Tls {
        row.command = format!("A: {} — B: {}", layout.a.command, layout.b.command);
    }
    // Where each proxy's threads may run, as the kernel says (the layout in the report).
    for (which, r) in [("a", &layout.a), ("b", &layout.b)] {
        if let Some(pid) = r.pid() {
            let cpus = procfs::tree_cpus_allowed(pid);
            if let Ok(v) = serde_json::to_value(cpus) {
                row.extra.insert(format!("cpus_allowed_{which}"), v);
            }
        }
    }
    let out = f(&layout, row);
    layout.stop(row);
    Some(out)
}

pub fn run(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    let plan = ctx.plan;
    println!("mtls (two proxies, plaintext and mutual TLS between them)");
    let certs = Certs::write(&ctx.work_dir.join("mtls-certs"))?;
    let ups = ctx.start_upstreams(vec![UpstreamArgs::fast("u0")])?;
    let env = Env {
        ctx,
        upstream: ups[0].addr,
        certs: &certs,
    };
    let proxies: Vec<Kind> = ctx
        .contenders
        .iter()
        .copied()
        .filter(|k| k.is_proxy())
        .collect();
    let mut rows: BTreeMap<Kind, Row> = proxies.iter().map(|k| (*k, Row::new(*k))).collect();
    let mut settings = Vec::new();
    for kind in &proxies {
        let Some(row) = rows.get_mut(kind) else {
            continue;
        };
        match definition(ctx, *kind) {
            Ok((_, def)) => settings.push(format!("{}: {}", kind.name(), def.settings)),
            Err(reason) => {
                println!("  {}: skipped: {reason}", kind.name());
                row.skipped = Some(reason);
            }
        }
    }
    // The rate: a share of the slowest mTLS layout's saturated throughput.
    let mut saturated = Vec::new();
    for kind in &proxies {
        let Some(row) = rows.get_mut(kind) else {
            continue;
        };
        if row.skipped.is_some() {
            continue;
        }
        progress("mtls saturated (mutual TLS layout)", *kind);
        let measured = with_layout(&env, *kind, Hop::Tls, "sat", row, |l, row| {
            match saturate(ctx, l) {
                Ok(r) => Some(r),
                Err(e) => {
                    row.notes.push(e);
                    None
                }
            }
        });
        if let Some(Some(mut r)) = measured {
            row.set("tls_saturated_rps", r.throughput_rps);
            saturated.push(r.throughput_rps);
            r.latency_curve.clear();
            row.loads.insert("tls_saturated".into(), r);
        }
    }
    let rate = fixed_rate(&saturated, plan.fixed_rate_share, plan.scenario_rate);
    println!("mtls at a fixed rate of {rate:.0} req/s");
    let mut rounds: BTreeMap<Kind, Vec<(Measured, Measured)>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for kind in rotated(&proxies, round) {
            let Some(row) = rows.get_mut(&kind) else {
                continue;
            };
            if row.skipped.is_some() {
                continue;
            }
            progress(&format!("mtls round {}/{}", round + 1, plan.rounds), kind);
            let order = if round % 2 == 0 {
                [Hop::Plain, Hop::Tls]
            } else {
                [Hop::Tls, Hop::Plain]
            };
            let mut pair: BTreeMap<Hop, Measured> = BTreeMap::new();
            for hop in order {
                let tag = format!("r{round}");
                let m = with_layout(&env, kind, hop, &tag, row, |l, row| {
                    match measure(ctx, kind, &ups, l, hop, rate) {
                        Ok(m) => Some(m),
                        Err(e) => {
                            row.notes
                                .push(format!("round {}, {}: {e}", round + 1, hop.name()));
                            None
                        }
                    }
                });
                match m {
                    Some(Some(m)) => {
                        keep(row, hop, round + 1, &m);
                        pair.insert(hop, m);
                    }
                    Some(None) => {}
                    None => break,
                }
            }
            if let (Some(p), Some(t)) = (pair.remove(&Hop::Plain), pair.remove(&Hop::Tls)) {
                if round + 1 == plan.rounds {
                    let shown = if t.evidence.is_empty() {
                        "none defined".to_string()
                    } else {
                        t.evidence.join("; ")
                    };
                    let plaintext = match &t.b_plaintext {
                        Ok(s) => format!("answered {s}"),
                        Err(e) => format!("no answer ({e})"),
                    };
                    let note = format!(
                        "round {}, mutual TLS: evidence {shown}; a plaintext GET straight to B: {plaintext}",
                        round + 1
                    );
                    row.notes.push(note);
                }
                rounds.entry(kind).or_default().push((p, t));
            }
        }
    }
    drop(ups);
    for (kind, list) in &rounds {
        if let Some(row) = rows.get_mut(kind) {
            figures(row, list);
            row.set("rate", rate);
        }
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    set_ratios_to_nginx(&mut rows);
    let cpus: Vec<String> = ctx.setup.proxy_cpus.iter().map(|c| c.to_string()).collect();
    let mut notes = vec![format!(
        "Certificates (rcgen, in {}): one CA (ECDSA P-256); proxy A's leaf has the SPIFFE ID {}, proxy B's {} and the DNS name {} (for proxies that check a host name); both leaves are usable as client and server certificates. Each side trusts the CA alone.",
        certs.dir.display(),
        super::mtls_certs::CLIENT_ID,
        super::mtls_certs::SERVER_ID,
        super::mtls_certs::SERVER_NAME
    )];
    notes.extend(settings);
    if ctx.contenders.contains(&Kind::Direct) {
        notes.push("direct has no proxy to put in the layout and is not in this table".into());
    }
    Ok(ScenarioResult {
        key: KEY.into(),
        title: "Mutual TLS cost: two proxies, plaintext against TLS 1.3 with client certificates".into(),
        setup: format!(
            "Layout: load generator (CPU {:?}) → proxy A (client side: originates TLS 1.3 with a client certificate, verifies B's certificate) → proxy B (server side: terminates TLS, requires and verifies A's certificate) → one upstream (64-byte body, no added latency, CPU {:?}). A and B each run {} worker / thread / core, both pinned to CPU {}. Each contender runs this layout twice per round, back to back: with the hop A → B in plaintext and over mutual TLS (order alternating by round); A keeps its connections to B alive (pooled), as B does to the upstream. Open loop at {rate:.0} req/s — {:.0}% of the slowest contender's mTLS layout saturated throughput (closed loop, {} connections, {:.1} s after {:.1} s of warm-up) — over {} connections for {:.1} s after {:.1} s of warm-up. Latency from each request's intended send time (coordinated omission corrected). CPU µs/req is both proxies' utime + stime (all their processes, /proc/PID/stat, ticks of 1/{:.0} s) over the responses of the measured run; syscalls/req counts both proxies' system calls over the same run with `perf stat -e raw_syscalls:sys_enter -p` (a count that does not depend on what else the machine runs; `perf` attaches 0.2 s before the run, idle time that adds no requests). `added` is mTLS less plaintext within a round, median of {} round(s); `× nginx` is a contender's added figure over nginx's in this run. Evidence that the hop was TLS (B's handshake counter, B's access log), and what a plaintext GET straight to B got, are in the notes.",
            ctx.load_cpus,
            ctx.load_cpus,
            ctx.setup.cores(),
            cpus.join(","),
            plan.fixed_rate_share * 100.0,
            plan.connections,
            plan.saturate.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            plan.fixed_rate_connections,
            plan.fixed.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            hz(),
            plan.rounds
        ),
        columns: columns(),
        rows,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_a_share_of_the_slowest() {
        assert_eq!(fixed_rate(&[23_456.0, 9_870.0], 0.5, 1000.0), 4900.0);
        assert_eq!(fixed_rate(&[], 0.5, 1000.0), 1000.0);
        assert_eq!(fixed_rate(&[150.0], 0.5, 1000.0), 100.0);
    }

    #[test]
    fn evidence_keeps_distinct_matching_lines_with_counts() {
        let log = "TLSv1.3 SUCCESS\nTLSv1.3 SUCCESS\n- -\n\nTLSv1.3 SUCCESS\n";
        assert_eq!(distinct_lines(log, ""), ["TLSv1.3 SUCCESS ×3", "- -"]);
        let metrics = "# HELP coremesh_tls_handshakes_total x\ncoremesh_tls_handshakes_total{direction=\"inbound\"} 4\nother 1\n";
        assert_eq!(
            distinct_lines(metrics, "coremesh_tls_handshakes_total"),
            ["coremesh_tls_handshakes_total{direction=\"inbound\"} 4"]
        );
    }

    #[test]
    fn added_ratios_are_to_nginx_and_need_a_positive_base() {
        let row = |k, cpu| {
            let mut r = Row::new(k);
            r.set("added_cpu_us", cpu);
            r.set("added_p99_us", -3.0);
            r
        };
        let mut rows = vec![row(Kind::Coremesh, 6.0), row(Kind::Nginx, 8.0)];
        set_ratios_to_nginx(&mut rows);
        assert_eq!(rows[0].get("added_cpu_vs_nginx"), Some(0.75));
        assert_eq!(rows[1].get("added_cpu_vs_nginx"), Some(1.0));
        // nginx's added p99 is negative (noise): no ratio.
        assert_eq!(rows[0].get("added_p99_vs_nginx"), None);
    }
}
