//! The `sweep` scenario: latency versus load. Per contender, its saturated throughput
//! (closed loop), then open-loop rates from 10% of it up in steps of 10% (to 110% with the
//! default eleven steps), latency from each request's intended send time (coordinated
//! omission corrected, see `schedule`); p50 / p99 / p99.9 per step, and the knee: the
//! highest offered rate up to which p99 stays under the plan's bound with no client errors.

use super::contender::{Kind, Profile};
use super::report::{Better, Column, Row, ScenarioResult};
use super::scenarios::{error_note, progress, session, Ctx, OtherLoad};
use super::upstreams::UpstreamArgs;
use crate::load::{Mode, Stop};
use std::net::SocketAddr;

/// The scenario's key (also its `--scenarios` name).
pub const KEY: &str = "sweep";
/// The key of its knee table.
pub const KNEE_KEY: &str = "sweep-knee";

/// The offered rate of step `step` (from 1): `step` × 10% of `saturated`.
pub fn step_rate(saturated: f64, step: usize) -> f64 {
    (saturated * step as f64 / 10.0).round().max(1.0)
}

/// The knee of one contender's steps `(offered rate, p99 µs, client errors)`, in
/// increasing rate: the highest offered rate reached before the first step whose p99 is at
/// or over `bound_us` or that had errors. `None` when even the first step fails.
pub fn knee(steps: &[(f64, f64, f64)], bound_us: f64) -> Option<(f64, f64)> {
    let mut best = None;
    for &(rate, p99, errors) in steps {
        let under = p99 < bound_us;
        if !under || errors > 0.0 {
            break;
        }
        best = Some((rate, p99));
    }
    best
}

fn columns() -> Vec<Column> {
    vec![
        Column::plain("offered_rps", "offered req/s"),
        Column::new("rps", "achieved req/s", Better::Higher),
        Column::new("p50_us", "p50 µs", Better::Lower),
        Column::new("p99_us", "p99 µs", Better::Lower),
        Column::new("p999_us", "p99.9 µs", Better::Lower),
        Column::new("errors", "errors", Better::Lower),
        Column::new("others_pct", "other load %", Better::Neither),
    ]
}

fn knee_columns() -> Vec<Column> {
    vec![
        Column::new("saturated_rps", "saturated req/s", Better::Higher),
        Column::new("knee_rps", "knee req/s", Better::Higher),
        Column::plain("knee_pct", "knee % of saturated"),
        Column::new("knee_p99_us", "p99 at knee µs", Better::Lower),
    ]
}

/// Run the sweep: one table row per contender and step, and the knee table.
pub fn run(ctx: &Ctx<'_>) -> anyhow::Result<Vec<ScenarioResult>> {
    let plan = ctx.plan;
    println!("{KEY} (latency versus load)");
    let ups = ctx.start_upstreams(vec![UpstreamArgs::fast("u0")])?;
    let eps: Vec<SocketAddr> = vec![ups[0].addr];
    let mut rows = Vec::new();
    let mut knees = Vec::new();
    for &kind in ctx.contenders {
        progress(&format!("{KEY}: saturation"), kind);
        let mut knee_row = Row::new(kind);
        let mut steps_rows: Vec<Row> = Vec::new();
        session(
            ctx,
            kind,
            Profile::Plain,
            &eps,
            KEY,
            &mut knee_row,
            |running, knee_row| {
                let warm = ctx.spec(
                    running.addr,
                    plan.connections,
                    Mode::Closed,
                    Stop::Duration(plan.warmup),
                );
                if let Err(e) = ctx.load(&warm) {
                    knee_row.notes.push(format!("warm-up: {e}"));
                }
                let sat = ctx.spec(
                    running.addr,
                    plan.connections,
                    Mode::Closed,
                    Stop::Duration(plan.saturate),
                );
                let saturated = match ctx.load(&sat) {
                    Ok(r) if r.throughput_rps > 0.0 => r.throughput_rps,
                    Ok(_) => {
                        knee_row.notes.push("saturation: no responses".into());
                        return;
                    }
                    Err(e) => {
                        knee_row.notes.push(format!("saturation: {e}"));
                        return;
                    }
                };
                knee_row.set("saturated_rps", saturated);
                let mut measured = Vec::new();
                for step in 1..=plan.sweep_steps {
                    let rate = step_rate(saturated, step);
                    progress(&format!("{KEY}: {}% = {rate:.0} req/s", step * 10), kind);
                    let mut row = Row::new(kind);
                    row.point = Some(step * 10);
                    row.command = running.command.clone();
                    row.set("offered_rps", rate);
                    let warm = ctx.spec(
                        running.addr,
                        plan.sweep_rate_connections,
                        Mode::Open { rate },
                        Stop::Duration(plan.sweep_warmup),
                    );
                    let _ = ctx.load(&warm);
                    let spec = ctx.spec(
                        running.addr,
                        plan.sweep_rate_connections,
                        Mode::Open { rate },
                        Stop::Duration(plan.sweep),
                    );
                    // CPU of the benchmark itself, to tell what else ran meanwhile.
                    let other_load = OtherLoad::start(running, &ups);
                    let result = ctx.load(&spec);
                    row.set("others_pct", other_load.percent(running, &ups));
                    match result {
                        Ok(r) => {
                            row.set("rps", r.throughput_rps);
                            row.set("errors", r.errors_total as f64);
                            if r.responses > 0 {
                                row.set("p50_us", r.latency.p50_us);
                                row.set("p99_us", r.latency.p99_us);
                                row.set("p999_us", r.latency.p999_us);
                            }
                            if let Some(n) = error_note(&r) {
                                row.notes.push(n);
                            }
                            measured.push((
                                rate,
                                row.get("p99_us").unwrap_or(f64::INFINITY),
                                r.errors_total as f64,
                            ));
                            let mut kept = r.clone();
                            kept.latency_curve.clear();
                            row.loads.insert(KEY.into(), kept);
                        }
                        Err(e) => {
                            measured.push((rate, f64::INFINITY, 1.0));
                            row.notes.push(e);
                        }
                    }
                    steps_rows.push(row);
                }
                if let Some((rate, p99)) = knee(&measured, plan.knee_p99_us) {
                    knee_row.set("knee_rps", rate);
                    knee_row.set("knee_pct", 100.0 * rate / saturated);
                    knee_row.set("knee_p99_us", p99);
                } else {
                    knee_row.notes.push(format!(
                        "p99 was at or over {:.0} µs (or errors) from the first step",
                        plan.knee_p99_us
                    ));
                }
            },
        );
        if let Some(reason) = &knee_row.skipped {
            let mut r = Row::new(kind);
            r.point = Some(10);
            r.skipped = Some(reason.clone());
            steps_rows.push(r);
        }
        rows.extend(steps_rows);
        knees.push(knee_row);
    }
    drop(ups);
    // Rows by step, then contender, as the other sweeps' tables are.
    rows.sort_by_key(|r| (r.point, r.contender));
    let setup = format!(
        "One upstream (64-byte body, no added latency), one proxy per contender (plain profile). Its saturated throughput first (closed loop, {} connections, {:.1} s after {:.1} s of warm-up), then an open loop over {} connections at 10%, 20%, … {}% of it, {:.1} s per step after {:.1} s of warm-up at that rate. Latency is measured from each request's intended send time, so a stall is charged to every request that waited behind it (coordinated omission corrected). The first column is the offered rate in % of that contender's own saturated throughput; one round, so treat single steps as noisy. `other load` is CPU used meanwhile by processes outside the benchmark (100% = one CPU): where it is high, the latencies say more about the machine than about the proxies.",
        plan.connections,
        plan.saturate.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        plan.sweep_rate_connections,
        plan.sweep_steps * 10,
        plan.sweep.as_secs_f64(),
        plan.sweep_warmup.as_secs_f64(),
    );
    let knee_setup = format!(
        "The knee is the highest offered rate up to which p99 stays under {:.1} ms (`--knee-p99-ms`) with no client errors, walking the steps of the sweep upwards.",
        plan.knee_p99_us / 1000.0
    );
    Ok(vec![
        ScenarioResult {
            key: KEY.into(),
            title: "Latency versus load (open loop, coordinated omission corrected)".into(),
            setup,
            columns: columns(),
            rows,
            notes: ctx
                .contenders
                .iter()
                .filter(|k| k.is_proxy())
                .map(|k| {
                    format!(
                        "{} (plain profile): {}",
                        k.name(),
                        super::contender::settings(*k, ctx.setup, Profile::Plain)
                    )
                })
                .collect(),
        },
        ScenarioResult {
            key: KNEE_KEY.into(),
            title: format!(
                "Knee: highest rate with p99 under {:.1} ms",
                plan.knee_p99_us / 1000.0
            ),
            setup: knee_setup,
            columns: knee_columns(),
            rows: knees,
            notes: Vec::new(),
        },
    ])
}

/// The p99-against-offered-rate series of a sweep result, per contender (for the plot).
pub fn p99_series(s: &ScenarioResult) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut by: std::collections::BTreeMap<Kind, Vec<(f64, f64)>> = Default::default();
    for r in s.rows.iter().filter(|r| r.skipped.is_none()) {
        if let (Some(x), Some(y)) = (r.get("offered_rps"), r.get("p99_us")) {
            by.entry(r.contender).or_default().push((x, y));
        }
    }
    by.into_iter()
        .map(|(k, mut v)| {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k.name().to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_knee() {
        assert_eq!(step_rate(40_000.0, 1), 4000.0);
        assert_eq!(step_rate(40_000.0, 11), 44_000.0);
        let steps = [
            (1000.0, 300.0, 0.0),
            (2000.0, 400.0, 0.0),
            (3000.0, 6000.0, 0.0),
            (4000.0, 900.0, 0.0),
        ];
        assert_eq!(knee(&steps, 5000.0), Some((2000.0, 400.0)));
        assert_eq!(knee(&steps, 10_000.0), Some((4000.0, 900.0)));
        assert_eq!(knee(&steps, 200.0), None);
        let errors = [(1000.0, 300.0, 0.0), (2000.0, 400.0, 3.0)];
        assert_eq!(knee(&errors, 5000.0), Some((1000.0, 300.0)));
        assert_eq!(knee(&[(1000.0, f64::NAN, 0.0)], 5000.0), None);
    }
}
