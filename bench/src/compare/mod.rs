//! `coremesh-bench compare`: direct, coremesh, nginx and HAProxy, one after another in one
//! run, on loopback, with the same CPU pinning, through the scenarios of [`scenarios::ALL`]
//! (overhead, cpu, slow / flaky / dead endpoint at a fixed rate, memory, the saturation
//! sweeps and the shared core). Writes `report.md`, `results.json`, the generated configs
//! and SVG plots to `bench/results/<date>[-quick]/`.
//!
//! Layout on the machine: the proxy under test gets `--proxy-cpus` (default: the last CPU)
//! and as many workers/threads/cores as CPUs there; the load generator, wrk and the
//! upstreams share `--load-cpus` (default: the other CPUs). A contender that cannot start
//! is reported as skipped with the reason. Every figure is also given as a ratio to
//! coremesh's figure from the same run.

pub mod contender;
pub mod report;
pub mod scenarios;
pub mod shared_core;
pub mod sweeps;
pub mod upstreams;

use crate::procs;
use crate::sys;
use crate::wrk::on_path;
use contender::{Kind, Setup};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// File descriptors the bench and its children may open (10,000 idle connections each side,
/// plus upstream pools and margin).
const WANTED_NOFILE: u64 = 65_536;

#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// Run every scenario briefly (about 5 minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// Output folder (default: bench/results/<date>, or <date>-quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The coremesh binary (default: target/release/coremesh, built first).
    #[arg(long)]
    pub coremesh: Option<PathBuf>,
    /// Do not run `cargo build --release -p coremesh` first.
    #[arg(long)]
    pub no_build: bool,
    /// Contenders, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,coremesh,nginx,haproxy"
    )]
    pub contenders: Vec<String>,
    /// Scenarios, comma-separated: overhead, cpu, slow, flaky, dead, memory, slow-sweep,
    /// flaky-sweep, capacity-sweep (closed loop at 1, 8, 32 and 64 connections), shared-core
    /// (the proxy and its upstream on the proxy CPUs).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "overhead,cpu,slow,flaky,dead,memory,slow-sweep,flaky-sweep,capacity-sweep,shared-core"
    )]
    pub scenarios: Vec<String>,
    /// CPUs for the proxy under test (default: the last CPU).
    #[arg(long, value_delimiter = ',')]
    pub proxy_cpus: Vec<usize>,
    /// CPUs for the load generator, wrk and the upstreams (default: the others). In the
    /// shared-core scenario the upstream runs on the proxy CPUs instead.
    #[arg(long, value_delimiter = ',')]
    pub load_cpus: Vec<usize>,
    /// Workers / threads / cores of each proxy (default: one per proxy CPU); e.g.
    /// `--proxy-cores 1` for one coremesh core, one nginx worker, one HAProxy thread.
    #[arg(long)]
    pub proxy_cores: Option<usize>,
    /// Idle client connections in the memory scenario.
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    /// coremesh's I/O driver.
    #[arg(long, default_value = "uring")]
    pub coremesh_driver: String,
}

/// Durations and sizes of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Rounds of every scenario but memory (medians are reported), contenders in a rotated
    /// order each round.
    pub rounds: usize,
    pub connections: usize,
    pub warmup: Duration,
    pub saturate: Duration,
    pub cpu_requests: u64,
    /// Fixed rate of the overhead scenario, as a share of the lowest saturated throughput
    /// among the proxies.
    pub fixed_rate_share: f64,
    pub fixed_rate_connections: usize,
    pub fixed: Duration,
    pub scenario_rate: f64,
    pub scenario_connections: usize,
    pub scenario: Duration,
    pub dead: Duration,
    pub idle_connections: usize,
    /// Connections of each point of the saturation sweeps (closed loop).
    #[serde(default = "default_sweep_connections")]
    pub sweep_connections: Vec<usize>,
    /// Warm-up and measurement of one sweep point (a fresh proxy per point, one round).
    #[serde(default = "default_sweep_warmup")]
    pub sweep_warmup: Duration,
    #[serde(default = "default_sweep")]
    pub sweep: Duration,
}

/// The concurrencies the sweeps visit: one connection, a few, and well past saturation.
pub const SWEEP_CONNECTIONS: [usize; 4] = [1, 8, 32, 64];

fn default_sweep_connections() -> Vec<usize> {
    SWEEP_CONNECTIONS.to_vec()
}

fn default_sweep_warmup() -> Duration {
    Duration::from_secs(1)
}

fn default_sweep() -> Duration {
    Duration::from_secs(5)
}

impl Plan {
    pub fn quick(idle: usize) -> Plan {
        Plan {
            rounds: 1,
            connections: 64,
            warmup: Duration::from_millis(500),
            saturate: Duration::from_secs(2),
            cpu_requests: 30_000,
            fixed_rate_share: 0.5,
            fixed_rate_connections: 32,
            fixed: Duration::from_secs(2),
            scenario_rate: 1000.0,
            scenario_connections: 64,
            scenario: Duration::from_secs(3),
            dead: Duration::from_millis(4500),
            idle_connections: idle,
            sweep_connections: default_sweep_connections(),
            sweep_warmup: Duration::from_millis(500),
            sweep: Duration::from_millis(1500),
        }
    }

    pub fn full(idle: usize) -> Plan {
        Plan {
            rounds: 3,
            connections: 64,
            warmup: Duration::from_secs(2),
            saturate: Duration::from_secs(10),
            cpu_requests: 300_000,
            fixed_rate_share: 0.5,
            fixed_rate_connections: 32,
            fixed: Duration::from_secs(10),
            scenario_rate: 2000.0,
            scenario_connections: 64,
            scenario: Duration::from_secs(10),
            dead: Duration::from_secs(12),
            idle_connections: idle,
            sweep_connections: default_sweep_connections(),
            sweep_warmup: default_sweep_warmup(),
            sweep: default_sweep(),
        }
    }
}

/// The machine and the software measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub io_uring: bool,
    pub nofile_limit: u64,
    pub proxy_cpus: Vec<usize>,
    /// Workers / threads / cores each proxy ran (0 in results from before it was recorded).
    #[serde(default)]
    pub proxy_cores: usize,
    pub load_cpus: Vec<usize>,
    pub coremesh: String,
    pub coremesh_commit: String,
    pub nginx: String,
    pub haproxy: String,
    pub wrk: String,
    pub rustc: String,
}

fn first_line_of(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn describe_machine(setup: &Setup, nofile: u64, load_cpus: &[usize], root: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let commit = first_line_of(Command::new("git").arg("-C").arg(root).args([
        "log",
        "-1",
        "--format=%h %cs %s",
    ]));
    let dirty = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "status",
            "--porcelain",
            "--",
            "proxy",
            "balancer",
            "discovery",
            "telemetry",
        ])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    Machine {
        cpu_model: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap_or("unknown")
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_gib: crate::procfs::kib_field(&meminfo, "MemTotal").unwrap_or(0) as f64
            / 1024.0
            / 1024.0,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        io_uring: monoio::utils::detect_uring(),
        nofile_limit: nofile,
        proxy_cpus: setup.proxy_cpus.clone(),
        proxy_cores: setup.cores(),
        load_cpus: load_cpus.to_vec(),
        coremesh: match &setup.coremesh {
            Ok(p) => first_line_of(Command::new(p).arg("--version")),
            Err(e) => format!("unavailable: {e}"),
        },
        coremesh_commit: if dirty {
            format!("{commit} (with uncommitted changes in the proxy crates)")
        } else {
            commit
        },
        nginx: match &setup.nginx {
            Ok(p) => first_line_of(Command::new(p).arg("-v")),
            Err(e) => e.clone(),
        },
        haproxy: match &setup.haproxy {
            Ok(p) => first_line_of(Command::new(p).arg("-v")),
            Err(e) => e.clone(),
        },
        wrk: on_path("wrk")
            .map(|p| first_line_of(Command::new(p).arg("-v")))
            .unwrap_or_else(|| "not installed".to_string()),
        rustc: first_line_of(Command::new("rustc").arg("-V")),
    }
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn utc_date(now: SystemTime) -> String {
    let days = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64
        / 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Find (and unless told not to, build) the coremesh binary.
fn coremesh_binary(
    args: &CompareArgs,
    work_dir: &Path,
    notes: &mut Vec<String>,
) -> Result<PathBuf, String> {
    if let Some(p) = &args.coremesh {
        return if p.is_file() {
            Ok(p.clone())
        } else {
            Err(format!("{} does not exist", p.display()))
        };
    }
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("coremesh")))
        .unwrap_or_else(|| workspace_root().join("target/release/coremesh"));
    if !args.no_build {
        if let Some(cargo) = on_path("cargo") {
            let began = Instant::now();
            println!("building coremesh (cargo build --release -p coremesh)...");
            let log = work_dir.join("build.log");
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace_root())
                .args(["build", "--release", "-p", "coremesh"]);
            match procs::Proc::spawn("cargo build", cmd, &log, false) {
                Ok(mut p) => {
                    let limit = Duration::from_secs(900);
                    let status = loop {
                        if let Some(s) = p.exited() {
                            break Some(s);
                        }
                        if began.elapsed() > limit {
                            p.kill();
                            break None;
                        }
                        std::thread::sleep(Duration::from_millis(100));
                    };
                    match status {
                        Some(s) if s.success() => notes.push(format!(
                            "coremesh built with `cargo build --release -p coremesh` in {:.0} s before the run (not counted in the run time)",
                            began.elapsed().as_secs_f64()
                        )),
                        other => notes.push(format!(
                            "`cargo build --release -p coremesh` failed ({}); the existing binary was used and may be stale: {}",
                            other.map(|s| s.to_string()).unwrap_or_else(|| "timed out".into()),
                            procs::log_tail(&log, 400).replace('\n', " | ")
                        )),
                    }
                }
                Err(e) => notes.push(format!("could not run cargo build: {e:#}")),
            }
        }
    }
    if sibling.is_file() {
        Ok(sibling)
    } else {
        Err(format!(
            "{} not found: run `cargo build --release -p coremesh`",
            sibling.display()
        ))
    }
}

fn tool(name: &str) -> Result<PathBuf, String> {
    on_path(name).ok_or_else(|| format!("{name} not found on PATH: run bench/setup.sh"))
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let mut contenders = Vec::new();
    for c in &args.contenders {
        let kind = Kind::parse(c).ok_or_else(|| anyhow::anyhow!("unknown contender {c:?}"))?;
        if !contenders.contains(&kind) {
            contenders.push(kind);
        }
    }
    for s in &args.scenarios {
        anyhow::ensure!(
            scenarios::ALL.contains(&s.as_str()),
            "unknown scenario {s:?}; known: {}",
            scenarios::ALL.join(", ")
        );
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let proxy_cpus = if args.proxy_cpus.is_empty() {
        vec![cpus - 1]
    } else {
        args.proxy_cpus.clone()
    };
    let load_cpus = if !args.load_cpus.is_empty() {
        args.load_cpus.clone()
    } else {
        let others: Vec<usize> = (0..cpus).filter(|c| !proxy_cpus.contains(c)).collect();
        if others.is_empty() {
            vec![0]
        } else {
            others
        }
    };
    let nofile = sys::raise_nofile(WANTED_NOFILE)?;
    procs::install_cleanup_on_signal()?;
    let began = Instant::now();
    let now = SystemTime::now();
    let out = args.out.clone().unwrap_or_else(|| {
        let suffix = if args.quick { "-quick" } else { "" };
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("results")
            .join(format!("{}{suffix}", utc_date(now)))
    });
    let config_dir = out.join("configs");
    std::fs::create_dir_all(&config_dir)?;
    let work_dir = std::env::temp_dir().join(format!("coremesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let mut notes = Vec::new();
    let coremesh = coremesh_binary(&args, &work_dir, &mut notes);
    let build_time = began.elapsed();
    let run_began = Instant::now();
    let coremesh_flags = coremesh
        .as_ref()
        .map(|p| contender::coremesh_proxy_flags(p))
        .unwrap_or_default();
    let mut coremesh = coremesh;
    let mut coremesh_admin = false;
    if let Ok(binary) = &coremesh {
        match contender::coremesh_preflight(binary, &work_dir) {
            Ok(None) => {}
            Ok(Some(note)) => {
                coremesh_admin = true;
                notes.push(note);
            }
            Err(e) => coremesh = Err(e),
        }
    }
    let setup = Setup {
        coremesh,
        coremesh_flags,
        coremesh_driver: args.coremesh_driver.clone(),
        nginx: tool("nginx"),
        haproxy: tool("haproxy"),
        taskset: on_path("taskset"),
        proxy_cpus,
        proxy_cores: args.proxy_cores,
        work_dir: work_dir.clone(),
        config_dir,
        nofile,
        coremesh_admin,
    };
    if setup.taskset.is_none() {
        notes.push("taskset not found: nothing was pinned".to_string());
    }
    if nofile < WANTED_NOFILE {
        notes.push(format!(
            "open-file limit raised only to {nofile} (wanted {WANTED_NOFILE})"
        ));
    }
    let root = workspace_root();
    let machine = describe_machine(&setup, nofile, &load_cpus, &root);
    let plan = if args.quick {
        Plan::quick(args.idle_connections)
    } else {
        Plan::full(args.idle_connections)
    };
    let command = format!(
        "cargo run --release -p coremesh-bench -- compare{}",
        if args.quick { " --quick" } else { "" }
    );
    println!(
        "compare: {} contenders, scenarios {}, results in {}",
        contenders.len(),
        args.scenarios.join(","),
        out.display()
    );
    let ctx = scenarios::Ctx {
        setup: &setup,
        plan: &plan,
        contenders: &contenders,
        load_cpus: load_cpus.clone(),
        exe: std::env::current_exe()?,
        work_dir: work_dir.clone(),
    };
    let mut results = report::Results {
        date: utc_date(now),
        quick: args.quick,
        command,
        machine,
        plan: plan.clone(),
        settings: Kind::ALL
            .iter()
            .map(|k| (k.name().to_string(), contender::best_settings(*k, &setup)))
            .collect(),
        notes,
        scenarios: Vec::new(),
        targets: Vec::new(),
        build_s: build_time.as_secs_f64(),
        elapsed_s: 0.0,
    };
    let wanted = |s: &str| args.scenarios.iter().any(|x| x == s);
    let run_scenario = |results: &mut report::Results,
                        produce: &dyn Fn() -> anyhow::Result<Vec<report::ScenarioResult>>|
     -> anyhow::Result<()> {
        let produced = produce()?;
        results.scenarios.extend(produced);
        results.elapsed_s = run_began.elapsed().as_secs_f64();
        report::write_json(&out, results)?;
        Ok(())
    };
    if wanted("overhead") || wanted("cpu") {
        run_scenario(&mut results, &|| {
            scenarios::overhead_and_cpu(&ctx, wanted("overhead"), wanted("cpu"))
        })?;
    }
    if wanted("slow") {
        run_scenario(&mut results, &|| scenarios::slow(&ctx).map(|s| vec![s]))?;
    }
    if wanted("flaky") {
        run_scenario(&mut results, &|| scenarios::flaky(&ctx).map(|s| vec![s]))?;
    }
    if wanted("dead") {
        run_scenario(&mut results, &|| scenarios::dead(&ctx).map(|s| vec![s]))?;
    }
    if wanted("memory") {
        run_scenario(&mut results, &|| scenarios::memory(&ctx).map(|s| vec![s]))?;
    }
    for name in sweeps::SWEEPS {
        if let (true, Some(sweep)) = (wanted(name), sweeps::Sweep::parse(name)) {
            run_scenario(&mut results, &|| sweeps::run(&ctx, sweep).map(|s| vec![s]))?;
        }
    }
    if wanted("shared-core") {
        run_scenario(&mut results, &|| shared_core::run(&ctx).map(|s| vec![s]))?;
    }
    results.elapsed_s = run_began.elapsed().as_secs_f64();
    render(&out, &mut results)?;
    println!("{}", report::headline(&results));
    println!("contender logs: {}", work_dir.display());
    println!(
        "report: {} ({:.0} s, plus {:.0} s of build)",
        out.join("report.md").display(),
        results.elapsed_s,
        results.build_s
    );
    Ok(())
}

/// Check the targets, draw the plots and write `results.json` and `report.md` into `out`.
pub fn render(out: &Path, results: &mut report::Results) -> anyhow::Result<()> {
    results.targets = report::check_targets(results);
    let plots = crate::plot::draw_all(out, results);
    let mut drawn = Vec::new();
    for p in plots {
        match p {
            Ok(file) => drawn.push(file),
            Err(e) => {
                let note = format!("a plot could not be drawn: {e}");
                if !results.notes.contains(&note) {
                    results.notes.push(note);
                }
            }
        }
    }
    report::write_json(out, results)?;
    std::fs::write(out.join("report.md"), report::markdown(results, &drawn))?;
    Ok(())
}

/// `coremesh-bench report DIR`: render a run's report and plots again from its
/// `results.json` (after a change to the report's wording or the targets).
pub fn rerender(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("results.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut results: report::Results = serde_json::from_str(&text)?;
    render(dir, &mut results)?;
    println!("{}", report::headline(&results));
    println!("report: {}", dir.join("report.md").display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01");
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29"
        );
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(1_767_225_599)),
            "2025-12-31"
        );
    }
}
