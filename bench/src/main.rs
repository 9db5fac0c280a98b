//! The `coremesh-bench` command line: `load` (the generator), `upstream` (the built-in
//! upstream server) and `compare` (coremesh against nginx and HAProxy, with a report).

use clap::{Parser, Subcommand};
use coremesh_bench::compare::{self, CompareArgs};
use coremesh_bench::load::{self, Driver, LoadSpec, Mode, Stop};
use coremesh_bench::upstream::{self, LatencyDist, UpstreamSpec};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "coremesh-bench",
    version,
    about = "Load generator and proxy comparison for coremesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive HTTP/1.1 keep-alive load at a target and report throughput and latency.
    Load(LoadArgs),
    /// Serve HTTP/1.1 with a configurable latency distribution and error rate.
    Upstream(UpstreamArgs),
    /// Start direct, coremesh, nginx and HAProxy one after another and compare them.
    Compare(CompareArgs),
    /// Simulate the balancer's policies (deterministic, simulated time) and plot them.
    Simulate(coremesh_bench::simulate::SimulateArgs),
    /// Render a comparison's report.md and plots again from its results.json.
    Report {
        /// The run's folder (holding results.json).
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
struct LoadArgs {
    /// Target address (loopback only).
    #[arg(long)]
    target: SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Host header (default: the target address).
    #[arg(long)]
    host: Option<String>,
    /// Connections.
    #[arg(long, short, default_value_t = 64)]
    connections: usize,
    /// Threads, one monoio runtime each.
    #[arg(long, short, default_value_t = 1)]
    threads: usize,
    /// CPUs to pin the threads to, comma-separated (default: not pinned).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    /// Open loop at this many requests per second (default: closed loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Stop after this many requests.
    #[arg(long, short = 'n')]
    requests: Option<u64>,
    /// Stop after this many seconds (default 10 unless --requests is given).
    #[arg(long, short)]
    duration: Option<f64>,
    /// Per-request timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// I/O driver.
    #[arg(long, value_enum, default_value = "auto")]
    driver: Driver,
    /// Write the report as JSON to this file (`-` for stdout).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also run wrk (closed loop, same connections and duration) and compare throughput.
    #[arg(long)]
    wrk: bool,
}

#[derive(clap::Args)]
struct UpstreamArgs {
    /// Address to listen on (loopback; port 0 picks one). The address is printed first.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Name sent in the X-Upstream header.
    #[arg(long, default_value = "upstream")]
    name: String,
    /// Latency: fixed:MS, uniform:MIN-MAX or exp:MEAN (milliseconds).
    #[arg(long, default_value = "fixed:0")]
    latency: LatencyDist,
    /// Share of requests (0 to 1) answered with --error-status.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    #[arg(long, default_value_t = 503)]
    error_status: u16,
    /// Response body size in bytes.
    #[arg(long, default_value_t = 64)]
    body_bytes: usize,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Seed of the latency and error draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Answer request number K (from 1) only after --stall-ms.
    #[arg(long)]
    stall_request: Option<u64>,
    #[arg(long, default_value_t = 0)]
    stall_ms: u64,
    /// Requests answered at once per thread; more wait their turn in arrival order, so
    /// latency grows with load (0: no limit).
    #[arg(long, default_value_t = 0)]
    concurrency: usize,
    #[arg(long, value_enum, default_value = "auto")]
    driver: Driver,
    /// Answer HTTP/2 (h2c) requests as unary gRPC calls: `application/grpc`, one
    /// length-prefixed message with --body-bytes of payload, `grpc-status: 0` trailers.
    #[arg(long)]
    grpc: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load(args) => run_load(args),
        Command::Upstream(args) => run_upstream(args),
        Command::Compare(args) => compare::run(args),
        Command::Report { dir } => compare::rerender(&dir),
        Command::Simulate(args) => coremesh_bench::simulate::run_simulate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coremesh-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ensure_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "{addr}: only loopback addresses are allowed"
    );
    Ok(())
}

fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    ensure_loopback(args.target)?;
    let stop = match (args.requests, args.duration) {
        (Some(n), _) => Stop::Count(n),
        (None, Some(d)) => Stop::Duration(Duration::from_secs_f64(d.max(0.0))),
        (None, None) => Stop::Duration(Duration::from_secs(10)),
    };
    let mut spec = LoadSpec::new(args.target, args.connections, stop);
    spec.path = args.path;
    if let Some(h) = args.host {
        spec.host = h;
    }
    spec.threads = args.threads;
    spec.cpus = args.cpus;
    spec.mode = match args.rate {
        Some(rate) => Mode::Open { rate },
        None => Mode::Closed,
    };
    spec.request_timeout = Duration::from_millis(args.timeout_ms);
    spec.max_duration = Duration::from_secs(args.max_seconds);
    spec.driver = args.driver;
    let outcome = load::run(&spec)?;
    print!("{}", outcome.report.text());
    let mut json = serde_json::to_value(&outcome.report)?;
    if args.wrk {
        let secs = outcome.report.elapsed_s.round().max(1.0);
        let log =
            std::env::temp_dir().join(format!("coremesh-bench-wrk-{}.log", std::process::id()));
        let cpu = spec.cpus.first().copied();
        match coremesh_bench::wrk::run(
            args.target,
            args.connections,
            Duration::from_secs_f64(secs),
            cpu,
            &log,
        ) {
            Ok(w) => {
                let ratio = outcome.report.throughput_rps / w.requests_per_sec.max(1e-9);
                println!(
                    "  wrk: {:.0} req/s; generator / wrk = {ratio:.2} ({})",
                    w.requests_per_sec,
                    if (0.9..=1.1).contains(&ratio) {
                        "within 10%"
                    } else {
                        "NOT within 10%"
                    }
                );
                json["wrk"] = serde_json::to_value(&w)?;
                json["generator_over_wrk"] = ratio.into();
            }
            Err(e) => println!("  wrk: not run: {e:#}"),
        }
        let _ = std::fs::remove_file(&log);
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&json)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(&path, text)?;
        }
    }
    Ok(())
}

fn run_upstream(args: UpstreamArgs) -> anyhow::Result<()> {
    ensure_loopback(args.listen)?;
    let spec = UpstreamSpec {
        listen: args.listen,
        name: args.name,
        latency: args.latency,
        error_rate: args.error_rate,
        error_status: args.error_status,
        body_bytes: args.body_bytes,
        threads: args.threads,
        seed: args.seed,
        stall: args
            .stall_request
            .map(|k| (k, Duration::from_millis(args.stall_ms))),
        concurrency: args.concurrency,
        driver: args.driver,
        grpc: args.grpc,
        stop_poll: upstream::STOP_POLL,
    };
    let handle = upstream::spawn(spec)?;
    let mut out = std::io::stdout();
    writeln!(out, "listening on {}", handle.addr)?;
    out.flush()?;
    handle.join();
    Ok(())
}
