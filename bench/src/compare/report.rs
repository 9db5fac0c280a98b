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
}

impl Column {
    pub fn new(key: &str, label: &str, better: Better) -> Column {
        Column {
            key: key.to_string(),
            label: label.to_string(),
            better,
        }
    }
}

/// One contender in one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub contender: Kind,
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

fn best_peer(s: &ScenarioResult, key: &str) -> Option<(Kind, f64)> {
    [Kind::Nginx, Kind::Haproxy]
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
    out.push_str("| contender |");
    for c in &s.columns {
        let hint = match c.better {
            Better::Lower => " ↓",
            Better::Higher => " ↑",
            Better::Neither => "",
        };
        out.push_str(&format!(" {}{hint} |", c.label));
    }
    out.push('\n');
    out.push_str("|---|");
    for _ in &s.columns {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in &s.rows {
        let name = row.contender.name();
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
            let reference = s.figure(Kind::Coremesh, &c.key);
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
    for peer in [Kind::Nginx, Kind::Haproxy] {
        parts.extend(ratio("overhead-saturated", "rps", "throughput", peer));
        parts.extend(ratio("cpu", "cpu_us_per_req", "CPU/request", peer));
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
            "no ratios (a contender did not run)".to_string()
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
        "- Pinning: proxy under test on CPU {:?} (one worker / thread / core per CPU); load generator, wrk and upstreams on CPU {:?}\n",
        m.proxy_cpus, m.load_cpus
    ));
    out.push_str(&format!(
        "- coremesh: {} at {}\n- nginx: {}\n- HAProxy: {}\n- wrk: {}\n- {}; open-file limit {}\n\n",
        m.coremesh, m.coremesh_commit, m.nginx, m.haproxy, m.wrk, m.rustc, m.nofile_limit
    ));
    if !r.notes.is_empty() {
        for n in &r.notes {
            out.push_str(&format!("- Note: {n}\n"));
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
}
