//! The comparison's results: the data model (written as `results.json`), the targets
//! coremesh is held to with met / missed, and `report.md` with one table per scenario in
//! which every figure is also a ratio to coremesh's.

use super::contender::{Kind, StopRecord};
use super::{Machine, Plan};
use crate::load::LoadReport;
use crate::plot::short;
use crate::wrk::WrkResult;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
    Neither,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Column {
    pub key: String,
    pub label: String,
    pub better: Better,
    /// Print the figure alone, without its ratio to coremesh's (for figures that are
    /// ratios or references themselves).
    #[serde(default)]
    pub no_ratio: bool,
}

impl Column {
    pub fn new(key: &str, label: &str, better: Better) -> Column {
        Column {
            key: key.to_string(),
            label: label.to_string(),
            better,
            no_ratio: false,
        }
    }

    /// A column printed without ratios to coremesh.
    pub fn plain(key: &str, label: &str) -> Column {
        Column {
            no_ratio: true,
            ..Column::new(key, label, Better::Neither)
        }
    }
}

/// One contender in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub contender: Kind,
    /// In a sweep: the point (client connections) this row was measured at.
    #[serde(default)]
    pub point: Option<usize>,
    /// Why it did not run, when it did not.
    pub skipped: Option<String>,
    pub figures: BTreeMap<String, f64>,
    pub command: String,
    pub notes: Vec<String>,
    pub stops: Vec<StopRecord>,
    pub loads: BTreeMap<String, LoadReport>,
    pub wrk: BTreeMap<String, WrkResult>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Default for Row {
    fn default() -> Row {
        Row::new(Kind::Direct)
    }
}

impl Row {
    pub fn new(contender: Kind) -> Row {
        Row {
            contender,
            point: None,
            skipped: None,
            figures: BTreeMap::new(),
            command: String::new(),
            notes: Vec::new(),
            stops: Vec::new(),
            loads: BTreeMap::new(),
            wrk: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Set a figure (not-a-number values are left out).
    pub fn set(&mut self, key: &str, value: f64) {
        if value.is_finite() {
            self.figures.insert(key.to_string(), value);
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.figures.get(key).copied()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    pub key: String,
    pub title: String,
    pub setup: String,
    pub columns: Vec<Column>,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl ScenarioResult {
    pub fn row(&self, kind: Kind) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.contender == kind && r.skipped.is_none())
    }

    pub fn figure(&self, kind: Kind, key: &str) -> Option<f64> {
        self.row(kind).and_then(|r| r.get(key))
    }

    /// In a sweep: `kind`'s figure at `point`.
    pub fn figure_at(&self, kind: Kind, point: Option<usize>, key: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.contender == kind && r.point == point && r.skipped.is_none())
            .and_then(|r| r.get(key))
    }

    /// In a sweep: its points in order (empty otherwise).
    pub fn points(&self) -> Vec<usize> {
        let set: std::collections::BTreeSet<usize> =
            self.rows.iter().filter_map(|r| r.point).collect();
        set.into_iter().collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    NotMeasured,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Met => "**met**",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub verdict: Verdict,
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub date: String,
    pub quick: bool,
    pub command: String,
    pub machine: Machine,
    pub plan: Plan,
    /// Each contender's settings in the resilient profile.
    pub settings: BTreeMap<String, String>,
    pub notes: Vec<String>,
    pub scenarios: Vec<ScenarioResult>,
    pub targets: Vec<TargetCheck>,
    pub build_s: f64,
    pub elapsed_s: f64,
}

impl Results {
    pub fn scenario(&self, key: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.key == key)
    }
}

pub fn write_json(out: &Path, results: &Results) -> anyhow::Result<()> {
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(results)?,
    )?;
    Ok(())
}

/// A target that must hold at every point of a sweep: `judge` gives, per point, the text
/// of what was measured and whether it held (`None`: not measured there).
fn at_every_point(
    target: &str,
    key: &str,
    s: Option<&ScenarioResult>,
    judge: impl Fn(&ScenarioResult, usize) -> Option<(String, bool)>,
) -> TargetCheck {
    let Some(s) = s.filter(|s| !s.points().is_empty()) else {
        return TargetCheck {
            target: target.to_string(),
            measured: format!("the {key} scenario did not run"),
            verdict: Verdict::NotMeasured,
        };
    };
    let mut parts = Vec::new();
    let (mut held, mut failed, mut missing) = (0, 0, 0);
    for p in s.points() {
        match judge(s, p) {
            Some((text, ok)) => {
                parts.push(format!("{p} conns: {text}"));
                if ok {
                    held += 1;
                } else {
                    failed += 1;
                }
            }
            None => {
                parts.push(format!("{p} conns: not measured"));
                missing += 1;
            }
        }
    }
    TargetCheck {
        target: target.to_string(),
        measured: parts.join("; "),
        verdict: if failed > 0 {
            Verdict::Missed
        } else if missing > 0 || held == 0 {
            Verdict::NotMeasured
        } else {
            Verdict::Met
        },
    }
}

/// The targets of the saturation sweeps and the shared core.
fn saturation_targets(r: &Results) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let slow = r.scenario("slow-sweep");
    out.push(at_every_point(
        "Slow endpoint under saturation: under 0.1% of requests to it at every concurrency",
        "slow-sweep",
        slow,
        |s, p| {
            let v = s.figure_at(Kind::Coremesh, Some(p), "third_share_pct")?;
            Some((format!("{v:.2}%"), v < 0.1))
        },
    ));
    out.push(at_every_point(
        "Slow endpoint under saturation: client p99 within 2× of the fast endpoints' own at every concurrency",
        "slow-sweep",
        slow,
        |s, p| {
            let v = s.figure_at(Kind::Coremesh, Some(p), "p99_over_fast")?;
            Some((format!("{v:.2}×"), v <= 2.0))
        },
    ));
    out.push(at_every_point(
        "Flaky endpoint under saturation: p99 and throughput at least as good as the best of nginx and HAProxy at every concurrency",
        "flaky-sweep",
        r.scenario("flaky-sweep"),
        |s, p| {
            let c_p99 = s.figure_at(Kind::Coremesh, Some(p), "p99_us")?;
            let c_rps = s.figure_at(Kind::Coremesh, Some(p), "rps")?;
            let peers = peers_of(s.rows.iter());
            let best_p99 = peers
                .iter()
                .filter_map(|k| s.figure_at(*k, Some(p), "p99_us"))
                .fold(f64::INFINITY, f64::min);
            let best_rps = peers
                .iter()
                .filter_map(|k| s.figure_at(*k, Some(p), "rps"))
                .fold(f64::NEG_INFINITY, f64::max);
            if !best_p99.is_finite() || !best_rps.is_finite() || best_p99 <= 0.0 || best_rps <= 0.0 {
                return None;
            }
            Some((
                format!(
                    "p99 {:.2}×, req/s {:.2}× the best peer's",
                    c_p99 / best_p99,
                    c_rps / best_rps
                ),
                c_p99 <= best_p99 && c_rps >= best_rps,
            ))
        },
    ));
    let shared = r.scenario("shared-core");
    let pair = |key: &str| {
        shared.and_then(|s| Some((s.figure(Kind::Coremesh, key)?, s.figure(Kind::Nginx, key)?)))
    };
    let t = "Shared core: CPU per request at most 0.6× nginx's";
    out.push(match pair("cpu_us_per_req") {
        Some((c, n)) if n > 0.0 => TargetCheck {
            target: t.into(),
            measured: format!("coremesh {c:.2} µs, nginx {n:.2} µs: {:.2}×", c / n),
            verdict: if c / n <= 0.6 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        },
        _ => TargetCheck {
            target: t.into(),
            measured: "coremesh or nginx did not run in the shared-core scenario".into(),
            verdict: Verdict::NotMeasured,
        },
    });
    let t = "Shared core: throughput at least 1.3× nginx's";
    out.push(match pair("rps") {
        Some((c, n)) if n > 0.0 => TargetCheck {
            target: t.into(),
            measured: format!("coremesh {c:.0} req/s, nginx {n:.0} req/s: {:.2}×", c / n),
            verdict: if c / n >= 1.3 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
        },
        _ => TargetCheck {
            target: t.into(),
            measured: "coremesh or nginx did not run in the shared-core scenario".into(),
            verdict: Verdict::NotMeasured,
        },
    });
    out
}

/// coremesh's peers in `rows`: every other proxy that has a row, in contender order
/// (nginx and HAProxy first).
fn peers_of<'a>(rows: impl Iterator<Item = &'a Row>) -> Vec<Kind> {
    let mut peers: Vec<Kind> = rows
        .map(|r| r.contender)
        .filter(|k| k.is_proxy() && *k != Kind::Coremesh)
        .collect();
    peers.sort();
    peers.dedup();
    peers
}

/// The peer with the lowest `key` in `s`, among every proxy other than coremesh that ran.
fn best_peer(s: &ScenarioResult, key: &str) -> Option<(Kind, f64)> {
    peers_of(s.rows.iter())
        .into_iter()
        .filter_map(|k| s.figure(k, key).map(|v| (k, v)))
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The targets of the issue, each met, missed or not measured.
pub fn check_targets(r: &Results) -> Vec<TargetCheck> {
    let mut out = Vec::new();
    let not = |target: &str, why: &str| TargetCheck {
        target: target.to_string(),
        measured: why.to_string(),
        verdict: Verdict::NotMeasured,
    };
    let verdict = |ok: bool| if ok { Verdict::Met } else { Verdict::Missed };

    let t = "CPU per request at most 0.8× nginx's";
    match r.scenario("cpu").map(|s| {
        (
            s.figure(Kind::Coremesh, "cpu_us_per_req"),
            s.figure(Kind::Nginx, "cpu_us_per_req"),
        )
    }) {
        Some((Some(c), Some(n))) if n > 0.0 => out.push(TargetCheck {
            target: t.into(),
            measured: format!("coremesh {c:.2} µs, nginx {n:.2} µs: {:.2}×", c / n),
            verdict: verdict(c / n <= 0.8),
        }),
        _ => out.push(not(t, "coremesh or nginx did not run in the cpu scenario")),
    }

    let t = "Saturated throughput at least 1.2× nginx's";
    match r.scenario("overhead-saturated").map(|s| {
        (
            s.figure(Kind::Coremesh, "rps"),
            s.figure(Kind::Nginx, "rps"),
            s.figure(Kind::Coremesh, "busy_pct"),
        )
    }) {
        Some((Some(c), Some(n), busy)) if n > 0.0 => {
            let mut measured = format!("coremesh {c:.0} req/s, nginx {n:.0} req/s: {:.2}×", c / n);
            if let Some(b) = busy.filter(|b| *b < 90.0) {
                measured.push_str(&format!(
                    " (coremesh's CPU was only {b:.0}% busy: it was not the bottleneck, so the ratio says little about its capacity)"
                ));
            }
            out.push(TargetCheck {
                target: t.into(),
                measured,
                verdict: verdict(c / n >= 1.2),
            })
        }
        _ => out.push(not(
            t,
            "coremesh or nginx did not run in the overhead scenario",
        )),
    }

    let t = "Added p99 latency at a fixed rate no worse than nginx's";
    match r.scenario("overhead-fixed-rate").map(|s| {
        (
            s.figure(Kind::Coremesh, "added_p99_us"),
            s.figure(Kind::Nginx, "added_p99_us"),
        )
    }) {
        Some((Some(c), Some(n))) if c < 0.0 || n < 0.0 => out.push(TargetCheck {
            target: t.into(),
            measured: format!(
                "no reading: direct's own p99 was above a proxy's (coremesh {c:+.0} µs, nginx {n:+.0} µs), so noise from other processes outweighed the proxies; run again on a quiet machine"
            ),
            verdict: Verdict::NotMeasured,
        }),
        Some((Some(c), Some(n))) => out.push(TargetCheck {
            target: t.into(),
            measured: format!("coremesh +{c:.0} µs, nginx +{n:.0} µs over direct"),
            verdict: verdict(c <= n),
        }),
        _ => out.push(not(
            t,
            "coremesh, nginx or direct did not run at the fixed rate",
        )),
    }

    let t = "Slow endpoint: client p99 at most a tenth of the best peer's";
    let floor = r
        .scenario("overhead-fixed-rate")
        .and_then(|s| s.figure(Kind::Direct, "p99_us"));
    match r
        .scenario("slow")
        .map(|s| (s.figure(Kind::Coremesh, "p99_us"), best_peer(s, "p99_us")))
    {
        Some((Some(c), Some((k, p)))) => {
            let mut measured = format!(
                "coremesh {c:.0} µs, best peer {} {p:.0} µs: {:.3}×",
                k.name(),
                c / p
            );
            if let Some(f) = floor.filter(|f| *f > p / 10.0) {
                measured.push_str(&format!(
                    " (a tenth of the peer's p99 is below direct's own p99 at a fixed rate, {f:.0} µs: on this machine no proxy could meet it)"
                ));
            }
            out.push(TargetCheck {
                target: t.into(),
                measured,
                verdict: verdict(c <= p / 10.0),
            })
        }
        _ => out.push(not(
            t,
            "coremesh or both peers did not run in the slow-endpoint scenario",
        )),
    }

    let t = "Flaky endpoint: no client-visible errors and a p99 no worse than the best peer's";
    match r.scenario("flaky").map(|s| {
        (
            s.figure(Kind::Coremesh, "errors"),
            s.figure(Kind::Coremesh, "p99_us"),
            best_peer(s, "p99_us"),
        )
    }) {
        Some((Some(e), Some(c), Some((k, p)))) => out.push(TargetCheck {
            target: t.into(),
            measured: format!(
                "coremesh {e:.0} errors, p99 {c:.0} µs; best peer {} p99 {p:.0} µs",
                k.name()
            ),
            verdict: verdict(e == 0.0 && c <= p),
        }),
        _ => out.push(not(
            t,
            "coremesh or both peers did not run in the flaky-endpoint scenario",
        )),
    }

    let idle = r.plan.idle_connections;
    let t = "RSS under 8 MiB idle";
    match r
        .scenario("memory")
        .and_then(|s| s.figure(Kind::Coremesh, "rss_idle_mib"))
    {
        Some(m) => out.push(TargetCheck {
            target: t.into(),
            measured: format!("{m:.1} MiB"),
            verdict: verdict(m < 8.0),
        }),
        None => out.push(not(t, "coremesh did not run in the memory scenario")),
    }
    let t = format!("RSS under 64 MiB with {idle} idle connections");
    match r.scenario("memory").and_then(|s| {
        Some((
            s.figure(Kind::Coremesh, "rss_conns_mib")?,
            s.figure(Kind::Coremesh, "accepted")?,
        ))
    }) {
        Some((m, held)) => {
            let held_all = held as usize >= idle;
            out.push(TargetCheck {
                target: t,
                measured: format!(
                    "{m:.1} MiB holding {held:.0} connections{}",
                    if held_all {
                        ""
                    } else {
                        " (not all of them: see the memory notes)"
                    }
                ),
                verdict: if held_all {
                    verdict(m < 64.0)
                } else {
                    Verdict::Missed
                },
            })
        }
        None => out.push(not(&t, "coremesh did not run in the memory scenario")),
    }
    out.extend(saturation_targets(r));
    out
}

fn cell(value: Option<f64>, reference: Option<f64>, is_coremesh: bool) -> String {
    match value {
        None => "–".to_string(),
        Some(v) => {
            let text = short(v);
            match reference {
                Some(r) if !is_coremesh && r != 0.0 && (v / r).is_finite() => {
                    format!("{text} ({:.2}×)", v / r)
                }
                _ => text,
            }
        }
    }
}

fn table(s: &ScenarioResult) -> String {
    let mut out = String::new();
    let sweep = s.rows.iter().any(|r| r.point.is_some());
    // The latency-versus-load sweep's points are % of saturation; the others' connections.
    out.push_str(match (sweep, s.key == super::load_sweep::KEY) {
        (true, true) => "| % of saturated | contender |",
        (true, false) => "| conns | contender |",
        _ => "| contender |",
    });
    for c in &s.columns {
        let hint = match c.better {
            Better::Lower => " ↓",
            Better::Higher => " ↑",
            Better::Neither => "",
        };
        out.push_str(&format!(" {}{hint} |", c.label));
    }
    out.push('\n');
    out.push_str(if sweep { "|---:|---|" } else { "|---|" });
    for _ in &s.columns {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in &s.rows {
        let name = row.contender.name();
        if sweep {
            let point = row.point.map(|p| p.to_string()).unwrap_or_default();
            out.push_str(&format!("| {point} "));
        }
        if let Some(reason) = &row.skipped {
            out.push_str(&format!(
                "| {name} | skipped: {} |{}\n",
                reason.replace('|', "/").replace('\n', " "),
                " |".repeat(s.columns.len().saturating_sub(1))
            ));
            continue;
        }
        out.push_str(&format!("| {name} |"));
        for c in &s.columns {
            let reference = if c.no_ratio {
                None
            } else if sweep {
                s.figure_at(Kind::Coremesh, row.point, &c.key)
            } else {
                s.figure(Kind::Coremesh, &c.key)
            };
            out.push_str(&format!(
                " {} |",
                cell(row.get(&c.key), reference, row.contender == Kind::Coremesh)
            ));
        }
        out.push('\n');
    }
    out
}

/// The short summary printed at the end of a run.
pub fn headline(r: &Results) -> String {
    let mut parts = Vec::new();
    let ratio = |key: &str, fig: &str, label: &str, peer: Kind| -> Option<String> {
        let s = r.scenario(key)?;
        let c = s.figure(Kind::Coremesh, fig)?;
        let p = s.figure(peer, fig)?;
        (p != 0.0).then(|| format!("{label} {:.2}× {}", c / p, peer.name()))
    };
    let peers = peers_of(r.scenarios.iter().flat_map(|s| s.rows.iter()));
    for peer in peers {
        parts.extend(ratio("overhead-saturated", "rps", "throughput", peer));
        parts.extend(ratio("cpu", "cpu_us_per_req", "CPU/request", peer));
    }
    parts.extend(ratio(
        "shared-core",
        "rps",
        "shared-core throughput",
        Kind::Nginx,
    ));
    parts.extend(ratio(
        "shared-core",
        "cpu_us_per_req",
        "shared-core CPU/request",
        Kind::Nginx,
    ));
    // The mutual TLS cost: the scenario's own ratios (set only where nginx's added
    // figure is above zero).
    for (fig, label) in [
        ("added_cpu_vs_nginx", "mTLS added CPU/request"),
        ("added_p50_vs_nginx", "mTLS added p50"),
        ("added_p99_vs_nginx", "mTLS added p99"),
    ] {
        if let Some(v) = r
            .scenario(super::mtls::KEY)
            .and_then(|s| s.figure(Kind::Coremesh, fig))
        {
            parts.push(format!("{label} {v:.2}× nginx"));
        }
    }
    let met = r
        .targets
        .iter()
        .filter(|t| t.verdict == Verdict::Met)
        .count();
    let missed = r
        .targets
        .iter()
        .filter(|t| t.verdict == Verdict::Missed)
        .count();
    format!(
        "coremesh: {}; targets met {met}, missed {missed}, not measured {}",
        if parts.is_empty() {
            "no throughput or CPU ratios (coremesh or its peers did not run in the overhead, cpu or shared-core scenario)".to_string()
        } else {
            parts.join(", ")
        },
        r.targets.len() - met - missed
    )
}

/// `report.md`.
pub fn markdown(r: &Results, plots: &[String]) -> String {
    let m = &r.machine;
    let mut out = String::new();
    out.push_str(&format!(
        "# coremesh comparison, {}{}\n\n",
        r.date,
        if r.quick { " (quick run)" } else { "" }
    ));
    out.push_str(&format!("Command: `{}` — {:.0} s", r.command, r.elapsed_s));
    if r.build_s >= 1.0 {
        out.push_str(&format!(
            " (plus {:.0} s building coremesh first)",
            r.build_s
        ));
    }
    out.push_str(".\n\n");
    out.push_str("Every figure of a contender is followed by its ratio to coremesh's figure in the same run (`value (contender / coremesh)`); ↓ marks columns where lower is better, ↑ higher. A ratio above 1 in a ↓ column means the contender did worse than coremesh.\n\n");
    out.push_str("## Machine and software\n\n");
    out.push_str(&format!(
        "- CPU: {} × {} ({:.0} GiB memory), kernel {}, io_uring {}\n",
        m.cpus,
        m.cpu_model,
        m.memory_gib,
        m.kernel,
        if m.io_uring {
            "available"
        } else {
            "unavailable"
        }
    ));
    out.push_str(&format!(
        "- Pinning: proxy under test on CPU {:?} ({} worker / thread / core); load generator, wrk and upstreams on CPU {:?} (in the shared-core scenario the upstream runs on the proxy's CPU)\n",
        m.proxy_cpus,
        if m.proxy_cores > 0 { m.proxy_cores.to_string() } else { "one".to_string() },
        m.load_cpus
    ));
    // Every contender that ran, with its version: coremesh, nginx and HAProxy (named as
    // before contender files, and said "not compared" in the default set's absence), then
    // the others.
    out.push_str(&format!(
        "- coremesh: {} at {}\n- nginx: {}\n- HAProxy: {}\n",
        m.coremesh, m.coremesh_commit, m.nginx, m.haproxy
    ));
    for (k, v) in &m.versions {
        if !["coremesh", "nginx", "haproxy"].contains(&k.as_str()) {
            out.push_str(&format!("- {k} (contender file): {v}\n"));
        }
    }
    out.push_str(&format!(
        "- wrk: {}\n- {}; open-file limit {}\n\n",
        m.wrk, m.rustc, m.nofile_limit
    ));
    if !r.notes.is_empty() {
        for n in &r.notes {
            out.push_str(&format!("- Note: {n}\n"));
        }
        out.push('\n');
    }
    if !r.settings.is_empty() {
        out.push_str("Each contender's balancing, retries and health checks in the resilient profile (slow, flaky, dead and the saturation sweeps), from its contender file:\n\n");
        for (name, settings) in &r.settings {
            out.push_str(&format!("- {name}: {settings}\n"));
        }
        out.push('\n');
    }
    out.push_str("## Targets\n\n| target | measured | verdict |\n|---|---|---|\n");
    for t in &r.targets {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            t.target,
            t.measured,
            t.verdict.text()
        ));
    }
    out.push('\n');
    for s in &r.scenarios {
        out.push_str(&format!("## {}\n\n{}\n\n", s.title, s.setup));
        out.push_str(&table(s));
        out.push('\n');
        let mut notes: Vec<String> = s.notes.clone();
        for row in &s.rows {
            for n in &row.notes {
                notes.push(format!("{}: {n}", row.contender.name()));
            }
        }
        if !notes.is_empty() {
            for n in notes {
                out.push_str(&format!("- {n}\n"));
            }
            out.push('\n');
        }
    }
    if !plots.is_empty() {
        out.push_str("## Plots\n\n");
        for p in plots {
            out.push_str(&format!("![{p}]({p})\n\n"));
        }
    }
    out.push_str("## Commands\n\n");
    let mut seen = std::collections::BTreeSet::new();
    for s in &r.scenarios {
        for row in &s.rows {
            if !row.command.is_empty() && seen.insert(row.command.clone()) {
                out.push_str(&format!("- `{}`\n", row.command));
            }
        }
    }
    out.push_str("\nGenerated configs are in `configs/`; every load report (throughput, percentiles, errors by kind) is in `results.json`.\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(rows: Vec<Row>) -> ScenarioResult {
        ScenarioResult {
            key: "cpu".into(),
            title: "t".into(),
            setup: "s".into(),
            columns: vec![Column::new("cpu_us_per_req", "CPU", Better::Lower)],
            rows,
            notes: vec![],
        }
    }

    #[test]
    fn ratios_are_to_coremesh_and_skips_say_why() {
        let mut c = Row::new(Kind::Coremesh);
        c.set("cpu_us_per_req", 10.0);
        let mut n = Row::new(Kind::Nginx);
        n.set("cpu_us_per_req", 15.0);
        let mut h = Row::new(Kind::Haproxy);
        h.skipped = Some("haproxy not found on PATH".into());
        let text = table(&scenario(vec![c, n, h]));
        assert!(text.contains("| coremesh | 10.0 |"), "{text}");
        assert!(text.contains("| nginx | 15.0 (1.50×) |"), "{text}");
        assert!(
            text.contains("| haproxy | skipped: haproxy not found on PATH |"),
            "{text}"
        );
    }

    fn sweep_row(kind: Kind, point: usize, figures: &[(&str, f64)]) -> Row {
        let mut r = Row::new(kind);
        r.point = Some(point);
        for (k, v) in figures {
            r.set(k, *v);
        }
        r
    }

    /// A run with the two sweeps that have targets and the shared core, every figure fixed.
    fn saturation_results() -> Results {
        let sweep = |key: &str, rows: Vec<Row>| ScenarioResult {
            key: key.into(),
            title: format!("{key} title"),
            setup: "s".into(),
            columns: vec![
                Column::new("rps", "req/s", Better::Higher),
                Column::new("p99_us", "p99 µs", Better::Lower),
                Column::plain("p99_over_fast", "p99 / fast p99"),
                Column::new("third_share_pct", "slow share %", Better::Lower),
            ],
            rows,
            notes: vec![],
        };
        let slow = sweep(
            "slow-sweep",
            vec![
                sweep_row(
                    Kind::Coremesh,
                    1,
                    &[
                        ("rps", 5000.0),
                        ("p99_us", 300.0),
                        ("p99_over_fast", 1.2),
                        ("third_share_pct", 0.0),
                    ],
                ),
                sweep_row(
                    Kind::Nginx,
                    1,
                    &[
                        ("rps", 4000.0),
                        ("p99_us", 30_500.0),
                        ("p99_over_fast", 100.0),
                        ("third_share_pct", 33.0),
                    ],
                ),
                sweep_row(
                    Kind::Coremesh,
                    64,
                    &[
                        ("rps", 40_000.0),
                        ("p99_us", 3000.0),
                        ("p99_over_fast", 2.5),
                        ("third_share_pct", 0.05),
                    ],
                ),
                sweep_row(
                    Kind::Nginx,
                    64,
                    &[
                        ("rps", 30_000.0),
                        ("p99_us", 31_000.0),
                        ("p99_over_fast", 15.0),
                        ("third_share_pct", 2.0),
                    ],
                ),
            ],
        );
        let flaky = sweep(
            "flaky-sweep",
            vec![
                sweep_row(Kind::Coremesh, 8, &[("rps", 20_000.0), ("p99_us", 800.0)]),
                sweep_row(Kind::Nginx, 8, &[("rps", 18_000.0), ("p99_us", 900.0)]),
                sweep_row(Kind::Haproxy, 8, &[("rps", 21_000.0), ("p99_us", 1000.0)]),
            ],
        );
        let mut c = Row::new(Kind::Coremesh);
        c.set("rps", 39_000.0);
        c.set("cpu_us_per_req", 12.0);
        let mut n = Row::new(Kind::Nginx);
        n.set("rps", 30_000.0);
        n.set("cpu_us_per_req", 20.0);
        let mut rows = vec![c, n];
        crate::compare::shared_core::set_ratios_to_nginx(&mut rows);
        let shared = ScenarioResult {
            key: "shared-core".into(),
            title: "Shared core".into(),
            setup: "s".into(),
            columns: vec![
                Column::new("rps", "req/s", Better::Higher),
                Column::plain("rps_vs_nginx", "req/s × nginx"),
                Column::new("cpu_us_per_req", "CPU µs / request", Better::Lower),
                Column::plain("cpu_vs_nginx", "CPU × nginx"),
            ],
            rows,
            notes: vec![],
        };
        Results {
            date: "2026-12-01".into(),
            quick: true,
            command: "compare --quick".into(),
            machine: Machine::default(),
            plan: Plan::quick(100),
            settings: BTreeMap::new(),
            notes: vec![],
            scenarios: vec![slow, flaky, shared],
            targets: vec![],
            build_s: 0.0,
            elapsed_s: 1.0,
        }
    }

    fn target<'a>(targets: &'a [TargetCheck], starts: &str) -> &'a TargetCheck {
        targets
            .iter()
            .find(|t| t.target.starts_with(starts))
            .unwrap_or_else(|| panic!("no target {starts:?} in {targets:?}"))
    }

    #[test]
    fn sweep_tables_compare_each_point_with_coremesh_at_that_point() {
        let r = saturation_results();
        let text = table(&r.scenarios[0]);
        assert!(text.starts_with("| conns | contender | req/s ↑ | p99 µs ↓ | p99 / fast p99 | slow share % ↓ |\n|---:|---|---:|---:|---:|---:|\n"), "{text}");
        assert!(
            text.contains("| 1 | coremesh | 5000 | 300 | 1.20 | 0.00 |\n"),
            "{text}"
        );
        // nginx at 1 connection against coremesh at 1; the p99 / fast column has no ratio.
        assert!(
            text.contains("| 1 | nginx | 4000 (0.80×) | 30.5k (101.67×) | 100 | 33.0 |\n"),
            "{text}"
        );
        // At 64 connections against coremesh at 64 (40k req/s), not at 1.
        assert!(
            text.contains(
                "| 64 | nginx | 30.0k (0.75×) | 31.0k (10.33×) | 15.0 | 2.00 (40.00×) |\n"
            ),
            "{text}"
        );
        let shared = table(&r.scenarios[2]);
        assert!(
            shared.contains("| coremesh | 39.0k | 1.30 | 12.0 | 0.60 |\n"),
            "{shared}"
        );
        assert!(
            shared.contains("| nginx | 30.0k (0.77×) | 1.00 | 20.0 (1.67×) | 1.00 |\n"),
            "{shared}"
        );
    }

    #[test]
    fn saturation_targets_are_judged_at_every_point_and_against_nginx() {
        let mut r = saturation_results();
        let targets = check_targets(&r);
        let share = target(&targets, "Slow endpoint under saturation: under 0.1%");
        assert_eq!(share.measured, "1 conns: 0.00%; 64 conns: 0.05%");
        assert_eq!(share.verdict, Verdict::Met);
        let tail = target(
            &targets,
            "Slow endpoint under saturation: client p99 within 2×",
        );
        assert_eq!(tail.measured, "1 conns: 1.20×; 64 conns: 2.50×");
        assert_eq!(tail.verdict, Verdict::Missed);
        // p99 better than both peers, throughput below HAProxy's: missed.
        let flaky = target(&targets, "Flaky endpoint under saturation");
        assert_eq!(
            flaky.measured,
            "8 conns: p99 0.89×, req/s 0.95× the best peer's"
        );
        assert_eq!(flaky.verdict, Verdict::Missed);
        let cpu = target(&targets, "Shared core: CPU per request");
        assert_eq!(cpu.measured, "coremesh 12.00 µs, nginx 20.00 µs: 0.60×");
        assert_eq!(cpu.verdict, Verdict::Met);
        let rps = target(&targets, "Shared core: throughput");
        assert_eq!(
            rps.measured,
            "coremesh 39000 req/s, nginx 30000 req/s: 1.30×"
        );
        assert_eq!(rps.verdict, Verdict::Met);
        // Without the scenarios: not measured, never met.
        r.scenarios.clear();
        for t in check_targets(&r) {
            assert_eq!(t.verdict, Verdict::NotMeasured, "{t:?}");
        }
        // The whole report carries the tables and the verdicts.
        let mut r = saturation_results();
        r.targets = check_targets(&r);
        let md = markdown(&r, &[]);
        assert!(md.contains("## slow-sweep title"), "{md}");
        assert!(md.contains("| Shared core: CPU per request at most 0.6× nginx's | coremesh 12.00 µs, nginx 20.00 µs: 0.60× | **met** |"), "{md}");
        assert!(
            headline(&r).contains("shared-core CPU/request 0.60× nginx"),
            "{}",
            headline(&r)
        );
    }

    #[test]
    fn best_peer_and_headline_take_every_proxy_that_ran() {
        let mut r = saturation_results();
        let pingora = Kind::named("pingora");
        let one = |key: &str, figures: &[(Kind, &[(&str, f64)])]| ScenarioResult {
            key: key.into(),
            title: key.into(),
            setup: "s".into(),
            columns: vec![
                Column::new("rps", "req/s", Better::Higher),
                Column::new("p99_us", "p99 µs", Better::Lower),
            ],
            rows: figures
                .iter()
                .map(|(k, f)| {
                    let mut row = sweep_row(*k, 0, f);
                    row.point = None;
                    row
                })
                .collect(),
            notes: vec![],
        };
        r.scenarios.push(one(
            "flaky",
            &[
                (Kind::Coremesh, &[("errors", 0.0), ("p99_us", 500.0)]),
                (pingora, &[("errors", 3.0), ("p99_us", 400.0)]),
                (Kind::Nginx, &[("errors", 0.0), ("p99_us", 800.0)]),
                (Kind::Haproxy, &[("errors", 0.0), ("p99_us", 700.0)]),
            ],
        ));
        r.scenarios.push(one(
            "overhead-saturated",
            &[
                (Kind::Direct, &[("rps", 90_000.0)]),
                (Kind::Coremesh, &[("rps", 40_000.0)]),
                (pingora, &[("rps", 50_000.0)]),
                (Kind::Nginx, &[("rps", 20_000.0)]),
                (Kind::Haproxy, &[("rps", 80_000.0)]),
            ],
        ));
        let targets = check_targets(&r);
        let flaky = target(&targets, "Flaky endpoint: no client-visible errors");
        assert_eq!(
            flaky.measured,
            "coremesh 0 errors, p99 500 µs; best peer pingora p99 400 µs"
        );
        assert_eq!(flaky.verdict, Verdict::Missed);
        let h = headline(&r);
        // nginx and HAProxy first, as before; then the others; never direct.
        let at = |needle: &str| h.find(needle).unwrap_or_else(|| panic!("{needle}: {h}"));
        assert!(
            at("throughput 2.00× nginx") < at("throughput 0.50× haproxy"),
            "{h}"
        );
        assert!(
            at("throughput 0.50× haproxy") < at("throughput 0.80× pingora"),
            "{h}"
        );
        assert!(!h.contains("× direct"), "{h}");
    }
}
