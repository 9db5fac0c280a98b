//! `coremesh-bench compare`: direct and the contenders of the contender files (coremesh,
//! nginx, HAProxy, pingora built in; others by `--contender FILE`), one after another in
//! one run, on loopback, with the same CPU pinning, through the scenarios of
//! [`scenarios::ALL`] (overhead, cpu, slow / flaky / dead endpoint at a fixed rate, memory,
//! the saturation sweeps, the shared core and the latency-versus-load sweep). Writes
//! `report.md`, `results.json`, the rendered configs and SVG plots to a folder outside the
//! source tree ([`default_out`]) unless `--out` names one.
//!
//! Layout on the machine: the proxy under test gets `--proxy-cpus` (default: the last CPU)
//! and as many workers/threads/cores as CPUs there; the load generator, wrk and the
//! upstreams share `--load-cpus` (default: the other CPUs). A contender that cannot start
//! is reported as skipped with the reason. Every figure is also given as a ratio to
//! coremesh's figure from the same run.

pub mod contender;
pub mod contender_file;
pub mod h2_saturation;
pub mod load_sweep;
pub mod mtls;
pub mod mtls_certs;
pub mod mtls_file;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod shared_core;
pub mod sweeps;
pub mod template;
pub mod upstreams;

use crate::procs;
use crate::sys;
use crate::wrk::on_path;
use contender::{Kind, Setup};
use contender_file::ContenderFile;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// Output folder (default: `coremesh-bench/<date>T<time>[-quick]` under
    /// $XDG_CACHE_HOME, else under the system temp folder; printed at the start).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A contender file (TOML; see docs/benchmarks.md) to compare too; repeatable. Its
    /// contender joins `--contenders`; a file whose name is a built-in one replaces it.
    #[arg(long = "contender", value_name = "FILE")]
    pub contender_files: Vec<PathBuf>,
    /// The coremesh binary (default: target/release/coremesh, built first).
    #[arg(long)]
    pub coremesh: Option<PathBuf>,
    /// Do not run `cargo build --release -p coremesh` first.
    #[arg(long)]
    pub no_build: bool,
    /// Contenders, comma-separated: `direct` and the names of the contender files
    /// (built in: coremesh, nginx, haproxy, pingora; pingora needs its peer built by
    /// bench/setup.sh; nginx-h2c, haproxy-h2c and coremesh-h2c speak h2c, see `--protocol`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,coremesh,nginx,haproxy"
    )]
    pub contenders: Vec<String>,
    /// Scenarios, comma-separated: overhead, cpu, slow, flaky, dead, memory, slow-sweep,
    /// flaky-sweep, capacity-sweep (closed loop at 1, 8, 32 and 64 connections), shared-core
    /// (the proxy and its upstream on the proxy CPUs), sweep (latency versus load: open
    /// loop from 10% to 110% of each contender's saturated throughput, and its knee), mtls
    /// (two proxies of each contender in a row, the hop between them in plaintext and over
    /// mutual TLS: the added latency and CPU per request; contenders whose file has an
    /// `[mtls]` table), grpc (unary gRPC calls; h2c only), h2-saturation (`h2load -n 200000 -c 4 -m 32` through
    /// each contender; h2c only), poll-io (each proxy's h2c path against its HTTP/1.1 path,
    /// CPU per request; h2c only). Default: every scenario of the protocol (http1: all but
    /// grpc, h2-saturation and poll-io; h2c: overhead, cpu, slow, flaky, sweep, grpc,
    /// h2-saturation, poll-io).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Vec<String>,
    /// The protocol the clients speak: `http1`, or `h2c` (cleartext HTTP/2 with prior
    /// knowledge; the load comes from h2load, and the built-in upstreams answer h2c too).
    /// Only the contenders whose file lists it take part (`direct` in both).
    #[arg(long, default_value = "http1")]
    pub protocol: String,
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
    /// The p99 bound of the `sweep` scenario's knee, in milliseconds: the knee is the
    /// highest offered rate whose p99 stays under it.
    #[arg(long, default_value_t = DEFAULT_KNEE_P99_MS)]
    pub knee_p99_ms: f64,
    /// Requests of each measured h2load run of `h2-saturation` and `poll-io` (default
    /// 200000, `--quick` 20000).
    #[arg(long)]
    pub h2_requests: Option<u64>,
    /// h2load connections of `h2-saturation` and `poll-io`.
    #[arg(long, default_value_t = DEFAULT_H2_CONNECTIONS)]
    pub h2_connections: usize,
    /// Streams in flight per connection (`h2load -m`) of `h2-saturation` and of the many-
    /// streams leg of `poll-io`.
    #[arg(long, default_value_t = DEFAULT_H2_STREAMS)]
    pub h2_streams: usize,
    /// Rounds of each saturation sweep's points (`slow-sweep`, `flaky-sweep`,
    /// `capacity-sweep`): every point is measured this many times, a fresh proxy each
    /// time, contenders in rotated order, and the median of each figure is reported
    /// (single rounds of one point swing by 2× on a shared machine).
    #[arg(long, default_value_t = 1)]
    pub sweep_rounds: usize,
    /// The concurrencies (client connections) the saturation sweeps visit, comma-separated
    /// (default 1,8,32,64): e.g. `--sweep-connections 8,32` to spend the rounds where two
    /// contenders are close.
    #[arg(long, value_delimiter = ',')]
    pub sweep_connections: Vec<usize>,
}

/// `h2-saturation` and `poll-io`: requests of each measured run (the issue's
/// `h2load -n 200000 -c 4 -m 32`), connections and streams per connection.
pub const DEFAULT_H2_REQUESTS: u64 = 200_000;
pub const QUICK_H2_REQUESTS: u64 = 20_000;
pub const DEFAULT_H2_CONNECTIONS: usize = 4;
pub const DEFAULT_H2_STREAMS: usize = 32;

fn default_h2_requests() -> u64 {
    DEFAULT_H2_REQUESTS
}

fn default_h2_connections() -> usize {
    DEFAULT_H2_CONNECTIONS
}

fn default_h2_streams() -> usize {
    DEFAULT_H2_STREAMS
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
    /// Rounds of every saturation sweep point (medians are reported).
    #[serde(default = "default_sweep_rounds")]
    pub sweep_rounds: usize,
    /// Steps of the latency-versus-load sweep (`sweep`): open-loop rates from 10% of a
    /// contender's saturated throughput up in steps of 10%.
    #[serde(default = "default_sweep_steps")]
    pub sweep_steps: usize,
    /// Connections of the latency-versus-load sweep's open loop.
    #[serde(default = "default_sweep_rate_connections")]
    pub sweep_rate_connections: usize,
    /// The p99 bound (µs) that defines the knee: the highest offered rate whose p99 stays
    /// under it.
    #[serde(default = "default_knee_p99_us")]
    pub knee_p99_us: f64,
    /// Requests of each measured h2load run of `h2-saturation` and `poll-io`.
    #[serde(default = "default_h2_requests")]
    pub h2_requests: u64,
    #[serde(default = "default_h2_connections")]
    pub h2_connections: usize,
    #[serde(default = "default_h2_streams")]
    pub h2_streams: usize,
}

/// Steps of the `sweep` scenario: 10%, 20%, … 110% of the saturated throughput.
pub const DEFAULT_SWEEP_STEPS: usize = 11;
/// The knee's p99 bound, in milliseconds (`--knee-p99-ms`).
pub const DEFAULT_KNEE_P99_MS: f64 = 5.0;

fn default_sweep_steps() -> usize {
    DEFAULT_SWEEP_STEPS
}

fn default_sweep_rate_connections() -> usize {
    64
}

fn default_knee_p99_us() -> f64 {
    DEFAULT_KNEE_P99_MS * 1000.0
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

fn default_sweep_rounds() -> usize {
    1
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
            sweep_rounds: default_sweep_rounds(),
            sweep_steps: default_sweep_steps(),
            sweep_rate_connections: default_sweep_rate_connections(),
            knee_p99_us: default_knee_p99_us(),
            h2_requests: QUICK_H2_REQUESTS,
            h2_connections: DEFAULT_H2_CONNECTIONS,
            h2_streams: DEFAULT_H2_STREAMS,
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
            sweep_rounds: default_sweep_rounds(),
            sweep_steps: default_sweep_steps(),
            sweep_rate_connections: default_sweep_rate_connections(),
            knee_p99_us: default_knee_p99_us(),
            h2_requests: DEFAULT_H2_REQUESTS,
            h2_connections: DEFAULT_H2_CONNECTIONS,
            h2_streams: DEFAULT_H2_STREAMS,
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
    /// Every file-defined contender's version line, by name.
    #[serde(default)]
    pub versions: BTreeMap<String, String>,
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

fn describe_machine(
    setup: &Setup,
    contenders: &[Kind],
    nofile: u64,
    load_cpus: &[usize],
    root: &Path,
) -> Machine {
    let versions: BTreeMap<String, String> = contenders
        .iter()
        .filter_map(|k| {
            setup
                .files
                .get(k)
                .map(|f| (k.name().to_string(), contender::version(f, setup)))
        })
        .collect();
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
        versions: versions.clone(),
        coremesh_commit: if dirty {
            format!("{commit} (with uncommitted changes in the proxy crates)")
        } else {
            commit
        },
        nginx: versions
            .get("nginx")
            .cloned()
            .unwrap_or_else(|| "not compared".into()),
        haproxy: versions
            .get("haproxy")
            .cloned()
            .unwrap_or_else(|| "not compared".into()),
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

pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The variables `cargo run` sets for the program it runs (the package's `CARGO_PKG_*`,
/// `CARGO_MANIFEST_*`, `CARGO_CRATE_NAME`, …), which a nested `cargo build` must not see:
/// build scripts that watch them (ring's watches `CARGO_PKG_NAME` and
/// `CARGO_MANIFEST_DIR`) would count as changed, and ring and everything above it —
/// rustls, kube, coremesh — would be rebuilt, then rebuilt again by the next plain
/// `cargo build --release`. The user's own cargo settings (`CARGO_HOME`,
/// `CARGO_TARGET_DIR`, `CARGO_BUILD_*`, `CARGO_PROFILE_*`, …) are kept.
pub fn cargo_run_vars(names: impl Iterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    names
        .filter(|n| {
            let n = n.to_string_lossy();
            n.starts_with("CARGO_PKG_")
                || n.starts_with("CARGO_MANIFEST_")
                || n.starts_with("CARGO_BIN_")
                || matches!(
                    n.as_ref(),
                    "CARGO_CRATE_NAME"
                        | "CARGO_PRIMARY_PACKAGE"
                        | "CARGO_TARGET_TMPDIR"
                        | "OUT_DIR"
                )
        })
        .collect()
}

/// `cargo build --release -p coremesh` in the workspace, without the variables `cargo run`
/// set among `env_names` (the names of this process's environment).
fn build_command(cargo: &Path, env_names: impl Iterator<Item = std::ffi::OsString>) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--release", "-p", "coremesh"]);
    for var in cargo_run_vars(env_names) {
        cmd.env_remove(var);
    }
    cmd
}

/// The contenders that speak `protocol` (`direct` in both: the built-in upstreams answer
/// HTTP/1.1 and h2c on the same port), and a note for each one left out.
fn for_protocol(
    contenders: &[Kind],
    files: &BTreeMap<Kind, ContenderFile>,
    protocol: &str,
) -> (Vec<Kind>, Vec<String>) {
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for &k in contenders {
        let speaks = match files.get(&k) {
            Some(f) => f.protocols.iter().any(|p| p == protocol),
            None => true,
        };
        if speaks {
            kept.push(k);
        } else {
            notes.push(format!(
                "{} left out: it does not speak {protocol} (its file's `protocols`)",
                k.name()
            ));
        }
    }
    (kept, notes)
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
            let cmd = build_command(&cargo, std::env::vars_os().map(|(k, _)| k));
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

/// Where a run writes when `--out` is not given: outside the source tree, under
/// $XDG_CACHE_HOME (else the system temp folder), one folder per run.
pub fn default_out(now: SystemTime, quick: bool) -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        % 86_400;
    let suffix = if quick { "-quick" } else { "" };
    base.join("coremesh-bench").join(format!(
        "{}T{:02}{:02}{:02}{suffix}",
        utc_date(now),
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    ))
}

pub fn run(args: CompareArgs) -> anyhow::Result<()> {
    let mut files: BTreeMap<Kind, ContenderFile> = BTreeMap::new();
    for f in ContenderFile::built_in().map_err(|e| anyhow::anyhow!(e))? {
        files.insert(Kind::named(&f.name), f);
    }
    let mut names = args.contenders.clone();
    for path in &args.contender_files {
        let f = ContenderFile::load(path).map_err(|e| anyhow::anyhow!(e))?;
        names.push(f.name.clone());
        files.insert(Kind::named(&f.name), f);
    }
    let mut contenders = Vec::new();
    for c in &names {
        let kind = Kind::named(c);
        anyhow::ensure!(
            kind == Kind::Direct || files.contains_key(&kind),
            "unknown contender {c:?}; known: direct, {} (add others with --contender FILE)",
            files
                .keys()
                .map(|k| k.name())
                .collect::<Vec<_>>()
                .join(", ")
        );
        if !contenders.contains(&kind) {
            contenders.push(kind);
        }
    }
    anyhow::ensure!(
        contender_file::PROTOCOLS.contains(&args.protocol.as_str()),
        "unknown protocol {:?}; known: {}",
        args.protocol,
        contender_file::PROTOCOLS.join(", ")
    );
    let (contenders, left_out) = for_protocol(&contenders, &files, &args.protocol);
    let h2c = args.protocol == "h2c";
    let protocol_scenarios: &[&str] = if h2c {
        &scenarios::H2C
    } else {
        &scenarios::HTTP1
    };
    let mut args = args;
    // The command as the report shows it: the choices that shape the run.
    let mut chosen = String::new();
    if args.contenders != ["direct", "coremesh", "nginx", "haproxy"] {
        chosen.push_str(&format!(" --contenders {}", args.contenders.join(",")));
    }
    for f in &args.contender_files {
        chosen.push_str(&format!(" --contender {}", f.display()));
    }
    if !args.scenarios.is_empty() {
        chosen.push_str(&format!(" --scenarios {}", args.scenarios.join(",")));
    }
    if args.scenarios.is_empty() {
        args.scenarios = protocol_scenarios.iter().map(|s| s.to_string()).collect();
    }
    for s in &args.scenarios {
        anyhow::ensure!(
            scenarios::ALL.contains(&s.as_str()),
            "unknown scenario {s:?}; known: {}",
            scenarios::ALL.join(", ")
        );
        anyhow::ensure!(
            protocol_scenarios.contains(&s.as_str()),
            "scenario {s:?} does not run over {}; its scenarios are {}",
            args.protocol,
            protocol_scenarios.join(", ")
        );
    }
    let h2load_binary = if h2c {
        Some(on_path("h2load").ok_or_else(|| {
            anyhow::anyhow!("--protocol h2c needs h2load on PATH (Debian package nghttp2-client)")
        })?)
    } else {
        None
    };
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
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(now, args.quick));
    println!("results: {}", out.display());
    let config_dir = out.join("configs");
    std::fs::create_dir_all(&config_dir)?;
    let work_dir = std::env::temp_dir().join(format!("coremesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work_dir)?;
    let mut plan = if args.quick {
        Plan::quick(args.idle_connections)
    } else {
        Plan::full(args.idle_connections)
    };
    anyhow::ensure!(
        args.knee_p99_ms > 0.0 && args.knee_p99_ms.is_finite(),
        "--knee-p99-ms must be a positive number of milliseconds"
    );
    plan.knee_p99_us = args.knee_p99_ms * 1000.0;
    if let Some(n) = args.h2_requests {
        plan.h2_requests = n;
    }
    plan.h2_connections = args.h2_connections;
    anyhow::ensure!(args.sweep_rounds > 0, "--sweep-rounds must be at least 1");
    plan.sweep_rounds = args.sweep_rounds;
    if !args.sweep_connections.is_empty() {
        anyhow::ensure!(
            args.sweep_connections.iter().all(|&c| c > 0),
            "--sweep-connections takes positive numbers of connections"
        );
        plan.sweep_connections = args.sweep_connections.clone();
    }
    plan.h2_streams = args.h2_streams;
    anyhow::ensure!(
        plan.h2_requests > 0 && plan.h2_connections > 0 && plan.h2_streams > 0,
        "--h2-requests, --h2-connections and --h2-streams must be at least 1"
    );
    // Each scenario runs the contenders whose file lists it (all, when a file lists none).
    let takes_part = |scenario: &str| -> Vec<Kind> {
        contenders
            .iter()
            .copied()
            .filter(|k| files.get(k).map(|f| f.supports(scenario)).unwrap_or(true))
            .collect()
    };
    let per_scenario: BTreeMap<String, Vec<Kind>> = scenarios::ALL
        .iter()
        .map(|s| (s.to_string(), takes_part(s)))
        .collect();
    // Printed before a build of coremesh, which can take minutes of its own.
    let estimate: Duration = args
        .scenarios
        .iter()
        .map(|s| {
            let list = per_scenario.get(s).map(Vec::as_slice).unwrap_or(&[]);
            let proxies = list.iter().filter(|k| k.is_proxy()).count();
            progress::scenario_estimate(&plan, s, list.len(), proxies, !h2c)
        })
        .sum();
    println!(
        "estimated run time: about {} (min:s), not counting a build",
        progress::show(estimate)
    );
    let mut notes = left_out;
    if let Some(h) = &h2load_binary {
        notes.push(format!(
            "protocol h2c: the load is {} ({}), pinned to the load CPUs, cleartext HTTP/2 with prior knowledge; closed loops keep one stream per connection (`-m 1`), open loops ask each connection for rate/connections req/s (`--rps`, up to {} streams in flight) and the latency of a request sent after its slot in the run's schedule is counted from that slot (coordinated omission corrected from h2load's per-request log). The built-in upstreams answer h2c and HTTP/1.1 on the same port; what each proxy speaks to them is in its file. No wrk second opinion (wrk speaks HTTP/1.1 only).",
            h.display(),
            first_line_of(Command::new(h).arg("--version")),
            crate::h2load::OPEN_LOOP_STREAMS
        ));
    }
    // coremesh is found (and built) only when a contender runs it.
    let needs_coremesh = contenders.iter().any(|k| {
        *k == Kind::Coremesh
            || files
                .get(k)
                .is_some_and(|f| f.binary.text.contains("{coremesh}"))
    });
    let coremesh = if needs_coremesh {
        coremesh_binary(&args, &work_dir, &mut notes)
    } else {
        Err("not compared in this run".to_string())
    };
    let build_time = began.elapsed();
    let run_began = Instant::now();
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
        coremesh_driver: args.coremesh_driver.clone(),
        files,
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
    let machine = describe_machine(&setup, &contenders, nofile, &load_cpus, &root);
    let command = format!(
        "cargo run --release -p coremesh-bench -- compare{}{}{chosen}",
        if args.quick { " --quick" } else { "" },
        if h2c { " --protocol h2c" } else { "" }
    );
    println!(
        "compare: {} contenders, scenarios {}, results in {}",
        contenders.len(),
        args.scenarios.join(","),
        out.display()
    );
    let exe = std::env::current_exe()?;
    macro_rules! ctx_for {
        ($list:expr) => {
            scenarios::Ctx {
                setup: &setup,
                plan: &plan,
                contenders: $list,
                load_cpus: load_cpus.clone(),
                exe: exe.clone(),
                work_dir: work_dir.clone(),
                h2load: h2load_binary.clone().map(|binary| scenarios::H2Load {
                    binary,
                    shape: crate::h2load::Shape::Get,
                }),
            }
        };
    }
    progress::start(estimate);
    let mut results = report::Results {
        date: utc_date(now),
        quick: args.quick,
        command,
        machine,
        plan: plan.clone(),
        settings: contenders
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
    let list = |s: &str| per_scenario.get(s).cloned().unwrap_or_default();
    if wanted("overhead") || wanted("cpu") {
        let mut both = list("overhead");
        for k in list("cpu") {
            if !both.contains(&k) {
                both.push(k);
            }
        }
        both.sort_by_key(|k| contenders.iter().position(|c| c == k));
        let ctx = ctx_for!(&both);
        run_scenario(&mut results, &|| {
            scenarios::overhead_and_cpu(&ctx, wanted("overhead"), wanted("cpu"))
        })?;
    }
    if wanted("slow") {
        let l = list("slow");
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| scenarios::slow(&ctx).map(|s| vec![s]))?;
    }
    if wanted("flaky") {
        let l = list("flaky");
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| scenarios::flaky(&ctx).map(|s| vec![s]))?;
    }
    if wanted("dead") {
        let l = list("dead");
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| scenarios::dead(&ctx).map(|s| vec![s]))?;
    }
    if wanted("memory") {
        let l = list("memory");
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| scenarios::memory(&ctx).map(|s| vec![s]))?;
    }
    for name in sweeps::SWEEPS {
        if let (true, Some(sweep)) = (wanted(name), sweeps::Sweep::parse(name)) {
            let l = list(name);
            let ctx = ctx_for!(&l);
            run_scenario(&mut results, &|| sweeps::run(&ctx, sweep).map(|s| vec![s]))?;
        }
    }
    if wanted("shared-core") {
        let l = list("shared-core");
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| shared_core::run(&ctx).map(|s| vec![s]))?;
    }
    if wanted("sweep") {
        let l = list("sweep");
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| load_sweep::run(&ctx))?;
    }
    if wanted(mtls::KEY) {
        let l = list(mtls::KEY);
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| mtls::run(&ctx).map(|s| vec![s]))?;
    }
    if wanted(h2_saturation::SATURATION) {
        let l = list(h2_saturation::SATURATION);
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| {
            h2_saturation::saturation(&ctx).map(|s| vec![s])
        })?;
    }
    if wanted(h2_saturation::POLL_IO) {
        let l = list(h2_saturation::POLL_IO);
        let ctx = ctx_for!(&l);
        run_scenario(&mut results, &|| h2_saturation::poll_io(&ctx))?;
    }
    if wanted("grpc") {
        let l = list("grpc");
        let mut ctx = ctx_for!(&l);
        // Kept with the results: the exact body every call posted.
        let body = out.join("grpc-request.bin");
        crate::grpc::write_body(&body, crate::grpc::DEFAULT_PAYLOAD_BYTES)?;
        if let Some(h) = ctx.h2load.as_mut() {
            h.shape = crate::h2load::Shape::Grpc { body };
        }
        run_scenario(&mut results, &|| scenarios::grpc(&ctx))?;
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
    fn a_nested_build_does_not_see_what_cargo_run_set() {
        let names = [
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_INCREMENTAL",
            "PATH",
        ];
        let removed = cargo_run_vars(names.iter().map(std::ffi::OsString::from));
        assert_eq!(
            removed,
            [
                "CARGO_PKG_NAME",
                "CARGO_PKG_VERSION_MAJOR",
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME"
            ]
        );
    }

    #[test]
    fn the_nested_build_command_removes_what_cargo_run_set() {
        let names = ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_HOME", "PATH"];
        let cmd = build_command(
            Path::new("cargo"),
            names.iter().map(std::ffi::OsString::from),
        );
        let envs: Vec<(String, Option<String>)> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        // Removed (a `None` value), and nothing else touched.
        assert_eq!(
            envs,
            [
                ("CARGO_MANIFEST_DIR".to_string(), None),
                ("CARGO_PKG_NAME".to_string(), None)
            ]
        );
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["build", "--release", "-p", "coremesh"]);
        assert_eq!(cmd.get_current_dir(), Some(workspace_root().as_path()));
    }

    #[test]
    fn the_default_output_folder_is_outside_the_source_tree() {
        let out = default_out(UNIX_EPOCH, true);
        assert!(
            !out.starts_with(workspace_root()),
            "{} is under {}",
            out.display(),
            workspace_root().display()
        );
        assert!(
            out.ends_with("coremesh-bench/1970-01-01T000000-quick"),
            "{}",
            out.display()
        );
    }

    #[test]
    fn help_lists_every_scenario_and_built_in_contender() {
        use clap::Args;
        let mut cmd = CompareArgs::augment_args(clap::Command::new("compare"));
        let help = cmd.render_long_help().to_string();
        let section = |flag: &str| {
            let at = help.find(flag).unwrap_or_else(|| panic!("{flag}: {help}"));
            let rest = &help[at + flag.len()..];
            rest[..rest.find("\n      --").unwrap_or(rest.len())].to_string()
        };
        let contenders = section("--contenders <");
        for f in ContenderFile::built_in().expect("built-in files") {
            assert!(contenders.contains(&f.name), "{}: {contenders}", f.name);
        }
        let listed = section("--scenarios <");
        // The text up to the default list (which holds every name anyway).
        let prose = &listed[..listed.find("[default").unwrap_or(listed.len())];
        // As whole words: `sweep` inside `slow-sweep` does not count.
        let words: Vec<&str> = prose
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .collect();
        for s in scenarios::ALL {
            assert!(words.contains(&s), "{s}: {prose}");
        }
    }

    #[test]
    fn only_the_contenders_that_speak_the_protocol_take_part() {
        let files: BTreeMap<Kind, ContenderFile> = ContenderFile::built_in()
            .expect("built-in files")
            .into_iter()
            .map(|f| (Kind::named(&f.name), f))
            .collect();
        let all: Vec<Kind> = [
            "direct",
            "coremesh",
            "nginx",
            "nginx-h2c",
            "haproxy-h2c",
            "coremesh-h2c",
        ]
        .iter()
        .map(|n| Kind::named(n))
        .collect();
        let names = |l: &[Kind]| l.iter().map(|k| k.name()).collect::<Vec<_>>();
        let (h1, notes) = for_protocol(&all, &files, "http1");
        assert_eq!(names(&h1), ["direct", "coremesh", "nginx"]);
        assert_eq!(notes.len(), 3);
        assert!(notes[0].starts_with("nginx-h2c left out"), "{notes:?}");
        let (h2, notes) = for_protocol(&all, &files, "h2c");
        assert_eq!(
            names(&h2),
            ["direct", "nginx-h2c", "haproxy-h2c", "coremesh-h2c"]
        );
        assert_eq!(notes.len(), 2);
    }

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
