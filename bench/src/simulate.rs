//! `coremesh-bench simulate`: runs the balancer's deterministic simulation
//! (`coremesh_balancer::sim`) for every policy over closed-loop concurrency 1..64 and over
//! open-loop rates past the fast endpoints' capacity, and writes `simulation.md` (the
//! tables) and SVG plots of p99 and slow-endpoint share against concurrency.
//!
//! Everything is simulated time: the numbers depend on the seed alone, not on the machine.

use coremesh_balancer::sim::{presets, run, Load, Policy, Report, Scenario};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `coremesh-bench simulate`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Folder for simulation.md and the plots (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Simulated seconds measured per run (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Seed of every run.
    #[arg(long, default_value_t = 12)]
    pub seed: u64,
    /// Closed-loop connections to sweep.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    pub connections: Vec<usize>,
    /// Open-loop rates (requests/s) to sweep on the slow scenario; the fast pair serves
    /// 8000/s at most.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2000,4000,6000,7000,8000,9000,10000"
    )]
    pub rates: Vec<f64>,
}

/// One sweep: per policy, one report per point.
struct Sweep {
    points: Vec<f64>,
    rows: Vec<(&'static str, Vec<Report>)>,
}

fn sweep(points: &[f64], scenario: impl Fn(f64) -> Scenario, args: &SimulateArgs) -> Sweep {
    let base = Instant::now();
    let rows = Policy::all()
        .into_iter()
        .map(|(name, policy)| {
            let reports = points
                .iter()
                .map(|&x| {
                    let mut s = scenario(x);
                    s.duration = Duration::from_secs_f64(args.seconds.max(0.1));
                    run(&s, &policy, args.seed, base)
                })
                .collect();
            (name, reports)
        })
        .collect();
    Sweep {
        points: points.to_vec(),
        rows,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Runs the simulation and writes the report; prints where it went.
pub fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let conns: Vec<f64> = args.connections.iter().map(|&c| c as f64).collect();
    let closed = |c: f64| Load::Closed {
        connections: c as usize,
    };
    println!("simulating: slow endpoint, closed loop ...");
    let slow = sweep(&conns, |c| presets::slow(closed(c)), &args);
    println!("simulating: flaky endpoint, closed loop ...");
    let flaky = sweep(&conns, |c| presets::flaky(closed(c)), &args);
    println!("simulating: slow endpoint, open loop ...");
    let spill = sweep(
        &args.rates,
        |r| presets::slow(Load::Open { rate_per_sec: r }),
        &args,
    );
    println!("simulating: the demo's backends ...");
    let demo = sweep(&[16.0], |_| presets::demo(), &args);

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Balancer simulation\n\nSeed {}, {} simulated seconds per run after 1 s of warm-up, \
         {} proxy cores gossiping every 100 ms, three attempts per request (failures retried \
         on another endpoint after a 2–50 ms full-jitter back-off). Latencies are client \
         latencies in ms.\n",
        args.seed,
        args.seconds,
        presets::CORES
    );
    table(
        &mut md,
        "Slow endpoint, closed loop (two fast: four workers, 1 ms; slow: +30 ms, parallel)",
        "connections",
        &slow,
        "slow",
    );
    table(
        &mut md,
        "Flaky endpoint, closed loop (three of four workers, 1 ms; the third answers 503 to 20 % at once)",
        "connections",
        &flaky,
        "flaky",
    );
    table(
        &mut md,
        "Slow endpoint, open loop (the fast pair serves 8000/s at most: beyond, the slow one must help)",
        "requests/s",
        &spill,
        "slow",
    );
    table(
        &mut md,
        "`coremesh demo`'s backends (fast 1 ms, slow 31 ms, flaky 1 ms with 30 % 503; 16 connections)",
        "connections",
        &demo,
        "slow",
    );
    let mut plots = Vec::new();
    for (file, title, data, name, x_desc) in [
        (
            "sim-slow.svg",
            "Slow endpoint, closed loop",
            &slow,
            "slow",
            "connections",
        ),
        (
            "sim-flaky.svg",
            "Flaky endpoint (20 % 503), closed loop",
            &flaky,
            "flaky",
            "connections",
        ),
        (
            "sim-spill.svg",
            "Slow endpoint, open loop past the fast pair's capacity",
            &spill,
            "slow",
            "requests / s",
        ),
    ] {
        match plot(&args.out.join(file), title, data, name, x_desc) {
            Ok(()) => plots.push(file),
            Err(e) => eprintln!("{file}: {e}"),
        }
    }
    for file in &plots {
        let _ = writeln!(md, "![{file}]({file})\n");
    }
    let path = args.out.join("simulation.md");
    std::fs::write(&path, &md)?;
    print!("{md}");
    println!("wrote {} and {} plots", path.display(), plots.len());
    Ok(())
}

fn table(md: &mut String, title: &str, x_name: &str, sweep: &Sweep, watched: &str) {
    let _ = writeln!(md, "## {title}\n");
    let _ = writeln!(
        md,
        "| policy | {x_name} | req/s | p50 | p99 | p99.9 | {watched} share % | client errors | retries |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (name, reports) in &sweep.rows {
        for (x, r) in sweep.points.iter().zip(reports) {
            let _ = writeln!(
                md,
                "| {name} | {x} | {:.0} | {:.2} | {:.2} | {:.2} | {:.3} | {} | {} |",
                r.throughput,
                ms(r.p50),
                ms(r.p99),
                ms(r.p999),
                100.0 * r.share_of(watched),
                r.errors,
                r.retries
            );
        }
    }
    let _ = writeln!(md);
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
];

/// Shares below this are drawn at it (a log axis has no zero).
const SHARE_FLOOR_PCT: f64 = 0.001;

fn plot(
    path: &Path,
    title: &str,
    sweep: &Sweep,
    watched: &str,
    x_desc: &str,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (860, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(440);
    let p99: Vec<(String, Vec<(f64, f64)>)> = series(sweep, |r| ms(r.p99));
    let share: Vec<(String, Vec<(f64, f64)>)> = series(sweep, |r| {
        (100.0 * r.share_of(watched)).max(SHARE_FLOOR_PCT)
    });
    panel(&top, "client p99 (ms)", x_desc, &p99)?;
    panel(
        &bottom,
        &format!("{watched} share % (0 drawn at {SHARE_FLOOR_PCT})"),
        x_desc,
        &share,
    )?;
    root.present().map_err(|e| e.to_string())
}

fn series(sweep: &Sweep, y: impl Fn(&Report) -> f64) -> Vec<(String, Vec<(f64, f64)>)> {
    sweep
        .rows
        .iter()
        .map(|(name, reports)| {
            let pts = sweep
                .points
                .iter()
                .zip(reports)
                .map(|(&x, r)| (x, y(r)))
                .collect();
            (name.to_string(), pts)
        })
        .collect()
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    y_desc: &str,
    x_desc: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, 0.0f64, f64::INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if !(x0.is_finite() && y0.is_finite() && x0 > 0.0 && y0 > 0.0) {
        return Err("nothing to plot".into());
    }
    let mut chart = ChartBuilder::on(area)
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(
            (x0..x1.max(x0 * 1.01)).log_scale(),
            (y0 * 0.8..y1 * 1.25).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| crate::plot::short(*v))
        .y_label_formatter(&|v| crate::plot::short(*v))
        .draw()
        .map_err(err)?;
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(err)?;
    Ok(())
}
