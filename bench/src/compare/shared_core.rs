//! The shared-core scenario: a sidecar shares CPUs with its application, so the proxy and
//! its one upstream are pinned to the same CPUs (`--proxy-cpus`, by default the last one)
//! while the load generator runs on the others. Saturated closed loop; per contender the
//! throughput and the proxy's CPU time per request (utime + stime of all its processes over
//! the responses), each also as a ratio to nginx's.

use super::contender::{Kind, Profile, Running};
use super::report::{Better, Column, Row, ScenarioResult};
use super::scenarios::{error_note, hz, median, progress, rotated, session, Ctx};
use super::upstreams::{UpstreamArgs, UpstreamProc};
use crate::load::{LoadReport, Mode, Stop};
use std::collections::BTreeMap;

/// One round of one contender.
struct Measured {
    report: LoadReport,
    proxy_cpu_s: f64,
    upstream_cpu_s: f64,
    /// CPU used meanwhile by processes outside the benchmark (percent of one CPU).
    others_pct: f64,
}

fn upstream_ticks(ups: &[UpstreamProc]) -> u64 {
    ups.iter()
        .filter_map(|u| u.pid())
        .map(crate::procfs::tree_cpu_ticks)
        .sum()
}

fn measure(ctx: &Ctx<'_>, ups: &[UpstreamProc], running: &Running) -> Result<Measured, String> {
    let plan = ctx.plan;
    let warm = ctx.spec(
        running.addr,
        plan.connections,
        Mode::Closed,
        Stop::Duration(plan.warmup),
    );
    ctx.load(&warm)?;
    let spec = ctx.spec(
        running.addr,
        plan.connections,
        Mode::Closed,
        Stop::Duration(plan.saturate),
    );
    let me = std::process::id();
    let ours =
        || running.cpu_ticks() + upstream_ticks(ups) + crate::procfs::cpu_ticks(me).unwrap_or(0);
    let (p0, u0) = (running.cpu_ticks(), upstream_ticks(ups));
    let (ours0, machine0) = (ours(), crate::procfs::machine_busy_ticks());
    let report = ctx.load(&spec)?;
    let others = crate::procfs::machine_busy_ticks().saturating_sub(machine0) as f64
        - ours().saturating_sub(ours0) as f64;
    Ok(Measured {
        proxy_cpu_s: running.cpu_ticks().saturating_sub(p0) as f64 / hz(),
        upstream_cpu_s: upstream_ticks(ups).saturating_sub(u0) as f64 / hz(),
        others_pct: (100.0 * others / hz() / report.elapsed_s.max(1e-9)).max(0.0),
        report,
    })
}

/// Each row's figures from its rounds (medians).
fn figures(row: &mut Row, rounds: &[Measured]) {
    let med = |f: &dyn Fn(&Measured) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let per_request = |cpu: f64, r: &LoadReport| cpu * 1e6 / r.responses.max(1) as f64;
    row.set("rps", med(&|m| m.report.throughput_rps));
    row.set("p50_us", med(&|m| m.report.latency.p50_us));
    row.set("p99_us", med(&|m| m.report.latency.p99_us));
    row.set(
        "errors",
        rounds.iter().map(|m| m.report.errors_total as f64).sum(),
    );
    if row.contender.is_proxy() {
        row.set(
            "cpu_us_per_req",
            med(&|m| per_request(m.proxy_cpu_s, &m.report)),
        );
        row.set(
            "busy_pct",
            med(&|m| 100.0 * m.proxy_cpu_s / m.report.elapsed_s.max(1e-9)),
        );
    }
    row.set(
        "upstream_cpu_us_per_req",
        med(&|m| per_request(m.upstream_cpu_s, &m.report)),
    );
    row.set("others_pct", med(&|m| m.others_pct));
}

/// Every row's throughput and CPU per request as a ratio to nginx's row.
pub fn set_ratios_to_nginx(rows: &mut [Row]) {
    let nginx = |key: &str| {
        rows.iter()
            .find(|r| r.contender == Kind::Nginx && r.skipped.is_none())
            .and_then(|r| r.get(key))
    };
    let (rps, cpu) = (nginx("rps"), nginx("cpu_us_per_req"));
    for row in rows.iter_mut() {
        if let (Some(n), Some(v)) = (rps, row.get("rps")) {
            row.set("rps_vs_nginx", v / n);
        }
        if let (Some(n), Some(v)) = (cpu, row.get("cpu_us_per_req")) {
            row.set("cpu_vs_nginx", v / n);
        }
    }
}

pub fn run(ctx: &Ctx<'_>) -> anyhow::Result<ScenarioResult> {
    let plan = ctx.plan;
    println!("shared core");
    let cpus = &ctx.setup.proxy_cpus;
    let ups = ctx.start_upstreams_on(vec![UpstreamArgs::fast("u0")], cpus)?;
    let eps = vec![ups[0].addr];
    let mut rows: BTreeMap<Kind, Row> = ctx.contenders.iter().map(|k| (*k, Row::new(*k))).collect();
    let mut rounds: BTreeMap<Kind, Vec<Measured>> = BTreeMap::new();
    for round in 0..plan.rounds {
        for kind in rotated(ctx.contenders, round) {
            let Some(row) = rows.get_mut(&kind) else {
                continue;
            };
            if row.skipped.is_some() {
                continue;
            }
            progress(
                &format!("shared core round {}/{}", round + 1, plan.rounds),
                kind,
            );
            let tag = format!("shared-r{round}");
            let measured = session(
                ctx,
                kind,
                Profile::Plain,
                &eps,
                &tag,
                row,
                |running, row| match measure(ctx, &ups, running) {
                    Ok(m) => {
                        if let Some(n) = error_note(&m.report) {
                            row.notes.push(format!("round {}: {n}", round + 1));
                        }
                        row.extra.insert(
                            format!("proxy_cpu_s_round{}", round + 1),
                            m.proxy_cpu_s.into(),
                        );
                        let mut kept = m.report.clone();
                        kept.latency_curve.clear();
                        row.loads.insert(format!("shared_round{}", round + 1), kept);
                        Some(m)
                    }
                    Err(e) => {
                        row.notes.push(e);
                        None
                    }
                },
            );
            if let Some(Some(m)) = measured {
                rounds.entry(kind).or_default().push(m);
            }
        }
    }
    drop(ups);
    for (kind, list) in &rounds {
        if let Some(row) = rows.get_mut(kind) {
            figures(row, list);
        }
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    set_ratios_to_nginx(&mut rows);
    let cpu_list: Vec<String> = cpus.iter().map(|c| c.to_string()).collect();
    Ok(ScenarioResult {
        key: "shared-core".into(),
        title: "Shared core: the proxy and its upstream on one CPU".into(),
        setup: format!(
            "One upstream (64-byte body, no added latency) and the proxy both pinned to CPU {} ({} worker / thread / core per proxy); the load generator on CPU {:?}. Closed loop, {} keep-alive connections, {:.1} s after {:.1} s of warm-up; median of {} round(s), contenders in rotated order. `CPU µs / request` is the proxy's utime + stime (all its processes, /proc/PID/stat, ticks of 1/{:.0} s) over the responses; `upstream CPU` the same for the upstream it shares the CPU with; `other load` the CPU used meanwhile by processes outside the benchmark (100% = one CPU). `× nginx` columns are ratios to nginx's figure (targets: CPU at most 0.6×, throughput at least 1.3×).",
            cpu_list.join(","),
            ctx.setup.cores(),
            ctx.load_cpus,
            plan.connections,
            plan.saturate.as_secs_f64(),
            plan.warmup.as_secs_f64(),
            plan.rounds,
            hz()
        ),
        columns: vec![
            Column::new("rps", "req/s", Better::Higher),
            Column::plain("rps_vs_nginx", "req/s × nginx"),
            Column::new("cpu_us_per_req", "CPU µs / request", Better::Lower),
            Column::plain("cpu_vs_nginx", "CPU × nginx"),
            Column::new(
                "upstream_cpu_us_per_req",
                "upstream CPU µs / request",
                Better::Neither,
            ),
            Column::new("busy_pct", "proxy busy %", Better::Neither),
            Column::new("p50_us", "p50 µs", Better::Lower),
            Column::new("p99_us", "p99 µs", Better::Lower),
            Column::new("errors", "errors", Better::Lower),
            Column::new("others_pct", "other load %", Better::Neither),
        ],
        rows,
        notes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_to_nginx_and_absent_without_it() {
        let row = |k, rps, cpu| {
            let mut r = Row::new(k);
            r.set("rps", rps);
            r.set("cpu_us_per_req", cpu);
            r
        };
        let mut rows = vec![
            row(Kind::Coremesh, 30_000.0, 12.0),
            row(Kind::Nginx, 20_000.0, 20.0),
        ];
        set_ratios_to_nginx(&mut rows);
        assert_eq!(rows[0].get("rps_vs_nginx"), Some(1.5));
        assert_eq!(rows[0].get("cpu_vs_nginx"), Some(0.6));
        assert_eq!(rows[1].get("rps_vs_nginx"), Some(1.0));
        let mut alone = vec![row(Kind::Coremesh, 30_000.0, 12.0)];
        set_ratios_to_nginx(&mut alone);
        assert_eq!(alone[0].get("rps_vs_nginx"), None);
    }
}
