//! h2load (nghttp2's HTTP/2 load generator) as the load of the `h2c` protocol: its command
//! line, its summary and its per-request log (`--log-file`), read into the bench's figures.

use crate::load::{LoadOutcome, LoadReport, LoadSpec, Mode, Stop};
use crate::procs::Proc;
use crate::stats::{self, LatencySummary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What an h2load run reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2loadResult {
    /// Requests h2load set out to send (`requests: N total`).
    pub total: u64,
    /// Requests h2load sent (`started`); more than `total` in a timed run, whose requests
    /// still open at the end are not counted as done.
    pub started: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// Responses by status class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    pub requests_per_sec: f64,
    /// The run's length (`finished in …`), in seconds.
    pub elapsed_s: f64,
    /// Latency from the per-request log, when one was read.
    pub latency: LatencySummary,
}

impl H2loadResult {
    /// Requests that did not end in a 2xx or 3xx response (`succeeded` counts those;
    /// `failed`, `errored` and `timeout` overlap, so they are not added up).
    pub fn errors(&self) -> u64 {
        self.total.saturating_sub(self.succeeded)
    }
}

/// The request h2load sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// `GET /`.
    Get,
    /// A unary gRPC call: `POST` of `body` (a gRPC-framed message, see [`crate::grpc`]) to
    /// [`crate::grpc::PATH`] with `content-type: application/grpc` and `te: trailers`.
    Grpc { body: PathBuf },
}

/// h2load's duration syntax, in milliseconds (at least 1).
fn duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

/// Streams each connection may have open at once in an open loop: enough that a late
/// response does not hold back the requests scheduled behind it on its connection.
pub const OPEN_LOOP_STREAMS: usize = 64;

/// The requests of an open loop at `rate`: `rate` × the duration (a count stays as it is),
/// at least one per connection.
fn open_count(spec: &LoadSpec, rate: f64) -> u64 {
    let n = match spec.stop {
        Stop::Count(n) => n,
        Stop::Duration(d) => (rate * d.as_secs_f64()).round() as u64,
    };
    n.max(spec.connections as u64)
}

/// How an open loop's connections are started: `per_period` every `period_ms` ms (h2load's
/// `-r` and `--rate-period`, whose unit is the millisecond), so that the connections start
/// about `1 / rate` apart and their `--rps` timers, all of the same period, are spread over
/// it instead of firing together (started at once, 64 connections would send 64 requests at
/// the same instant every `64 / rate` s).
fn stagger(rate: f64, connections: usize) -> (usize, u64) {
    let period_ms = (1000.0 / rate).round().max(1.0) as u64;
    let per_period =
        ((rate * period_ms as f64 / 1000.0).round() as usize).clamp(1, connections.max(1));
    (per_period, period_ms)
}

/// The h2load arguments for `spec` on prior-knowledge cleartext HTTP/2 (`http://`), with
/// each request's start and latency written to `log`.
///
/// - Closed loop: `spec.connections` connections, one stream at a time each (`-m 1`, as
///   the HTTP/1.1 generator keeps one request in flight per connection), for a count
///   (`-n`) or a duration (`-D`).
/// - Open loop at `rate`: each connection sends `rate / connections` requests per second
///   (`--rps`) with up to [`OPEN_LOOP_STREAMS`] streams in flight, the connections started
///   one after another ([`stagger`]), for `rate` × the duration requests in all (`-n`; the
///   run is as long as the schedule, plus what it falls behind). h2load measures from the
///   actual send; [`corrected`] charges the wait behind a late response back to it.
pub fn load_args(spec: &LoadSpec, shape: &Shape, log: &Path) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(spec.connections > 0, "connections must be at least 1");
    let threads = spec.threads.clamp(1, spec.connections);
    let mut a: Vec<String> = vec![
        "-c".into(),
        spec.connections.to_string(),
        "-t".into(),
        threads.to_string(),
    ];
    match spec.mode {
        Mode::Closed => {
            a.extend(["-m".into(), "1".into()]);
            match spec.stop {
                Stop::Count(n) => a.extend(["-n".into(), n.max(1).to_string()]),
                Stop::Duration(d) => a.extend(["-D".into(), duration(d)]),
            }
        }
        Mode::Open { rate } => {
            anyhow::ensure!(rate > 0.0 && rate.is_finite(), "rate must be above 0");
            let (per_period, period_ms) = stagger(rate, spec.connections);
            a.extend([
                "-m".into(),
                OPEN_LOOP_STREAMS.to_string(),
                format!("--rps={}", rate / spec.connections as f64),
                "-r".into(),
                per_period.to_string(),
                format!("--rate-period={period_ms}ms"),
                "-n".into(),
                open_count(spec, rate).to_string(),
            ]);
        }
    }
    if let Shape::Grpc { body } = shape {
        a.extend([
            "-d".into(),
            body.display().to_string(),
            "-H".into(),
            format!("content-type: {}", crate::grpc::CONTENT_TYPE),
            "-H".into(),
            "te: trailers".into(),
        ]);
    }
    a.push(format!("--log-file={}", log.display()));
    let path = match shape {
        Shape::Get => spec.path.as_str(),
        Shape::Grpc { .. } => crate::grpc::PATH,
    };
    a.push(format!("http://{}{path}", spec.target));
    Ok(a)
}

/// One line of h2load's per-request log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logged {
    /// When the request was sent, in microseconds since the epoch.
    pub start_us: u64,
    pub status: u16,
    /// Microseconds until the end of its response.
    pub duration_us: u64,
}

/// Read h2load's per-request log (`start µs <TAB> status <TAB> duration µs`, maybe more
/// columns later); a line of another shape is an error.
pub fn read_log(log: &str) -> anyhow::Result<Vec<Logged>> {
    let mut out = Vec::new();
    for (i, line) in log
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let mut cols = line.split('\t');
        let mut next = || {
            cols.next()
                .ok_or_else(|| anyhow::anyhow!("h2load log line {}: {line:?}", i + 1))
        };
        let start_us = number(next()?)?;
        let status = number(next()?)?;
        let duration_us = number(next()?)?;
        out.push(Logged {
            start_us,
            status: u16::try_from(status).unwrap_or(u16::MAX),
            duration_us,
        });
    }
    Ok(out)
}

/// Latencies (µs) of an open loop at `rate` corrected for coordinated omission.
///
/// h2load keeps each connection's schedule (`--rps`) but starts a request late when its
/// connection has no free stream, and measures from that late start. The whole run's
/// schedule sends request `i` at `first + i / rate`; requests are matched to it in the
/// order they were sent (the earliest-sent to the earliest slot, which charges the least
/// possible wait), and a request sent after its slot is measured from the slot. A request
/// sent before its slot (connections start together, so their first requests bunch up)
/// keeps its own latency.
pub fn corrected(rows: &[Logged], rate: f64) -> Vec<u64> {
    let mut sorted: Vec<&Logged> = rows.iter().collect();
    sorted.sort_by_key(|r| r.start_us);
    let Some(first) = sorted.first().map(|r| r.start_us) else {
        return Vec::new();
    };
    let step_us = 1e6 / rate.max(1e-9);
    sorted
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let slot = first as f64 + i as f64 * step_us;
            let end = (r.start_us + r.duration_us) as f64;
            (end - slot).max(r.duration_us as f64).round() as u64
        })
        .collect()
}

/// Run h2load (`binary`, pinned with `taskset -c CPUS` when given) for `spec` and read its
/// summary and log into the generator's report. Bounded by `spec.max_duration`.
///
/// - `scheduled`: the count, or in an open loop `rate × duration`; requests of the
///   schedule h2load never started are `not_sent` errors.
/// - Statuses come from the log (responses of any status, in the latency histograms as the
///   generator does); a status of 400 or more is an error `status_NNN`.
/// - Requests that ended without a response: `timeout` (h2load's own count) and `closed`
///   (the rest of its `errored`).
pub fn run(
    spec: &LoadSpec,
    shape: &Shape,
    binary: &Path,
    taskset: Option<(&Path, &str)>,
    work: &Path,
) -> anyhow::Result<LoadOutcome> {
    let (log, out) = files(work);
    let args = load_args(spec, shape, &log)?;
    let (summary, rows) = execute(&args, binary, taskset, &log, &out, spec.max_duration)?;
    Ok(outcome(spec, &summary, &rows))
}

/// A closed loop at full speed in h2load's own terms: `connections` connections with up
/// to `streams` streams in flight on each (`-m`), `requests` in all (`-n`), `GET /`. With
/// `h1`, HTTP/1.1 instead (`--h1`; `streams` must then be 1: h2load would pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturation {
    pub connections: usize,
    pub streams: usize,
    pub requests: u64,
    pub h1: bool,
}

/// The h2load arguments of `s` against `target` with `threads` threads.
pub fn saturation_args(
    s: &Saturation,
    threads: usize,
    target: std::net::SocketAddr,
    log: &Path,
) -> anyhow::Result<Vec<String>> {
    anyhow::ensure!(
        s.connections > 0 && s.streams > 0 && s.requests > 0,
        "connections, streams and requests must be at least 1"
    );
    anyhow::ensure!(
        !s.h1 || s.streams == 1,
        "HTTP/1.1 takes one request at a time per connection (h2load would pipeline)"
    );
    let mut a: Vec<String> = vec![
        "-n".into(),
        s.requests.to_string(),
        "-c".into(),
        s.connections.to_string(),
        "-m".into(),
        s.streams.to_string(),
        "-t".into(),
        threads.clamp(1, s.connections).to_string(),
    ];
    if s.h1 {
        a.push("--h1".into());
    }
    a.push(format!("--log-file={}", log.display()));
    a.push(format!("http://{target}/"));
    Ok(a)
}

/// Run [`Saturation`] `s` against `spec.target` (`spec` gives the threads and the bound;
/// its mode and stop are those of a closed loop of `s.requests`).
pub fn run_saturation(
    s: &Saturation,
    spec: &LoadSpec,
    binary: &Path,
    taskset: Option<(&Path, &str)>,
    work: &Path,
) -> anyhow::Result<LoadOutcome> {
    let (log, out) = files(work);
    let args = saturation_args(s, spec.threads, spec.target, &log)?;
    let (summary, rows) = execute(&args, binary, taskset, &log, &out, spec.max_duration)?;
    let spec = LoadSpec {
        mode: Mode::Closed,
        stop: Stop::Count(s.requests),
        connections: s.connections,
        ..spec.clone()
    };
    Ok(outcome(&spec, &summary, &rows))
}

/// A fresh log and output file in `work`.
fn files(work: &Path) -> (PathBuf, PathBuf) {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    (
        work.join(format!("h2load-{}-{n}.tsv", std::process::id())),
        work.join(format!("h2load-{}-{n}.out", std::process::id())),
    )
}

/// Run h2load with `args` (writing its log to `log`), within `limit`; its summary and log.
fn execute(
    args: &[String],
    binary: &Path,
    taskset: Option<(&Path, &str)>,
    log: &Path,
    out: &Path,
    limit: Duration,
) -> anyhow::Result<(H2loadResult, Vec<Logged>)> {
    let mut cmd = match taskset {
        Some((t, cpus)) => {
            let mut c = Command::new(t);
            c.arg("-c").arg(cpus).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    cmd.args(args);
    let began = Instant::now();
    let mut proc = Proc::spawn("h2load", cmd, out, false)?;
    let status = loop {
        if let Some(s) = proc.exited() {
            break s;
        }
        if began.elapsed() > limit {
            proc.kill();
            let _ = std::fs::remove_file(log);
            anyhow::bail!(
                "h2load did not finish within {limit:?}: {}",
                crate::procs::log_tail(out, 300).replace('\n', " | ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(out).unwrap_or_default();
    let logged = std::fs::read_to_string(log).unwrap_or_default();
    let _ = std::fs::remove_file(log);
    let _ = std::fs::remove_file(out);
    anyhow::ensure!(
        status.success(),
        "h2load {} failed ({status}): {}",
        args.join(" "),
        output.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
    let summary = parse(&output)?;
    let rows = read_log(&logged)?;
    answered(&summary, &rows)?;
    Ok((summary, rows))
}

/// An error when a run got no response at all: h2load then reports no failure in a timed
/// run (the requests it started were merely still open at the end), so a listener that
/// does not speak h2c would otherwise read as zero requests and zero errors.
pub fn answered(summary: &H2loadResult, rows: &[Logged]) -> anyhow::Result<()> {
    anyhow::ensure!(
        !rows.is_empty() || summary.done > 0,
        "no response to any of the {} requests h2load started ({} errored, {} timed out): does the target take cleartext HTTP/2 with prior knowledge?",
        summary.started,
        summary.errored,
        summary.timeout
    );
    Ok(())
}

/// The generator's report from h2load's summary and log rows.
pub fn outcome(spec: &LoadSpec, summary: &H2loadResult, rows: &[Logged]) -> LoadOutcome {
    let mut latency = stats::new_histogram();
    let mut service = stats::new_histogram();
    let mut statuses: BTreeMap<u16, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for r in rows {
        stats::record(&mut service, Duration::from_micros(r.duration_us));
        *statuses.entry(r.status).or_insert(0) += 1;
        if r.status >= 400 {
            *errors.entry(format!("status_{}", r.status)).or_insert(0) += 1;
        }
    }
    let (target_rate, scheduled) = match (spec.mode, spec.stop) {
        (Mode::Open { rate }, _) => {
            for us in corrected(rows, rate) {
                stats::record(&mut latency, Duration::from_micros(us));
            }
            (Some(rate), open_count(spec, rate))
        }
        (Mode::Closed, stop) => {
            let _ = latency.add(&service);
            let n = match stop {
                Stop::Count(n) => n,
                Stop::Duration(_) => summary.started,
            };
            (None, n)
        }
    };
    let ended_without = summary.errored;
    if summary.timeout > 0 {
        errors.insert("timeout".into(), summary.timeout);
    }
    if ended_without > summary.timeout {
        errors.insert("closed".into(), ended_without - summary.timeout);
    }
    let not_sent = scheduled.saturating_sub(summary.started);
    if target_rate.is_some() && not_sent > 0 {
        errors.insert("not_sent".into(), not_sent);
    }
    let responses = rows.len() as u64;
    let ok = rows.iter().filter(|r| r.status < 400).count() as u64;
    let report = LoadReport {
        target: spec.target.to_string(),
        mode: match spec.mode {
            Mode::Closed => "closed".to_string(),
            Mode::Open { .. } => "open".to_string(),
        },
        connections: spec.connections,
        threads: spec.threads.clamp(1, spec.connections.max(1)),
        target_rate,
        scheduled,
        sent: summary.started,
        responses,
        ok,
        queued: 0,
        errors_total: errors.values().sum(),
        errors,
        statuses,
        elapsed_s: summary.elapsed_s,
        throughput_rps: summary.requests_per_sec,
        latency: stats::summarize(&latency),
        service_latency: stats::summarize(&service),
        latency_curve: stats::percentile_curve(&latency),
        driver: "h2load".to_string(),
        by_upstream: BTreeMap::new(),
    };
    LoadOutcome {
        report,
        latency,
        service,
        by_upstream: Vec::new(),
    }
}

fn number(word: &str) -> anyhow::Result<u64> {
    word.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("h2load: {word:?} is not a count: {e}"))
}

/// h2load's printed time (`2.00s`, `163.65ms`, `870us`) in seconds.
fn seconds(text: &str) -> anyhow::Result<f64> {
    let text = text.trim();
    let (value, scale) = if let Some(v) = text.strip_suffix("ms") {
        (v, 1e-3)
    } else if let Some(v) = text.strip_suffix("us") {
        (v, 1e-6)
    } else if let Some(v) = text.strip_suffix('s') {
        (v, 1.0)
    } else {
        anyhow::bail!("h2load: {text:?} is not a time")
    };
    let v: f64 = value
        .parse()
        .map_err(|e| anyhow::anyhow!("h2load: time {text:?}: {e}"))?;
    Ok(v * scale)
}

/// The count before `label` in a `N label, M label2, …` list.
fn count(line: &str, label: &str) -> anyhow::Result<u64> {
    line.split(',')
        .map(str::trim)
        .find_map(|part| {
            let (n, rest) = part.split_once(' ')?;
            (rest.trim() == label).then_some(n)
        })
        .ok_or_else(|| anyhow::anyhow!("h2load: no `{label}` in {line:?}"))
        .and_then(number)
}

/// Read h2load's summary (its standard output).
pub fn parse(output: &str) -> anyhow::Result<H2loadResult> {
    let mut r = H2loadResult::default();
    let (mut seen_rate, mut seen_requests) = (false, false);
    for line in output.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            let rate = rest
                .split(',')
                .map(str::trim)
                .find_map(|p| p.strip_suffix(" req/s"))
                .ok_or_else(|| anyhow::anyhow!("h2load: no req/s in {line:?}"))?;
            r.requests_per_sec = rate
                .parse()
                .map_err(|e| anyhow::anyhow!("h2load: req/s {rate:?}: {e}"))?;
            r.elapsed_s = seconds(rest.split(',').next().unwrap_or(""))?;
            seen_rate = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            r.total = count(rest, "total")?;
            r.started = count(rest, "started")?;
            r.done = count(rest, "done")?;
            r.succeeded = count(rest, "succeeded")?;
            r.failed = count(rest, "failed")?;
            r.errored = count(rest, "errored")?;
            r.timeout = count(rest, "timeout")?;
            seen_requests = true;
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for (i, class) in ["2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                r.status[i] = count(rest, class)?;
            }
        }
    }
    anyhow::ensure!(
        seen_rate && seen_requests,
        "h2load printed no summary: {}",
        output.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    );
    Ok(r)
}

/// The latency summary of h2load's per-request log (`start µs <TAB> status <TAB> duration
/// µs` per line); lines of another shape are an error.
pub fn log_latency(log: &str) -> anyhow::Result<LatencySummary> {
    let mut h = stats::new_histogram();
    for (i, line) in log
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let duration = line
            .split('\t')
            .nth(2)
            .ok_or_else(|| anyhow::anyhow!("h2load log line {}: {line:?}", i + 1))?;
        let us = number(duration)?;
        stats::record(&mut h, Duration::from_micros(us));
    }
    Ok(stats::summarize(&h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_captured_summary_and_log() {
        // h2load 1.52 against nginx 1.22 (`listen … http2;`, prior-knowledge h2c).
        let out = include_str!("../tests/data/h2load/nginx-h2c.txt");
        let r = parse(out).expect("summary");
        assert_eq!(r.total, 2000);
        assert_eq!(r.done, 2000);
        assert_eq!(r.succeeded, 2000);
        assert_eq!((r.failed, r.errored, r.timeout), (0, 0, 0));
        assert_eq!(r.status, [2000, 0, 0, 0]);
        assert_eq!(r.requests_per_sec, 12221.20);
        assert_eq!(r.errors(), 0);
        let log = include_str!("../tests/data/h2load/nginx-h2c-log.tsv");
        let l = log_latency(log).expect("log");
        assert_eq!(l.count, 8);
        assert!((l.max_us - 753.0).abs() <= 1.0, "{l:?}");
        assert!(parse("starting benchmark...\n").is_err());
        assert!(log_latency("1\t200\n").is_err());
        let rows = read_log(log).expect("rows");
        assert_eq!(rows.len(), 8);
        assert_eq!(rows[0].start_us, 1796164923196402);
        assert_eq!((rows[0].status, rows[0].duration_us), (200, 470));
        assert!(read_log("1\t200\n").is_err());
        assert!((r.elapsed_s - 0.16365).abs() < 1e-9, "{}", r.elapsed_s);
    }

    #[test]
    fn a_run_without_any_response_is_an_error() {
        // h2load 1.52, `-D 1s` against nginx listening for HTTP/1.1 only.
        let out = "finished in 1.00s, 0.00 req/s, 618B/s\nrequests: 0 total, 2 started, 0 done, 0 succeeded, 0 failed, 0 errored, 0 timeout\nstatus codes: 0 2xx, 0 3xx, 0 4xx, 0 5xx\n";
        let r = parse(out).expect("summary");
        let e = answered(&r, &[]).expect_err("no response");
        assert!(
            e.to_string()
                .contains("no response to any of the 2 requests"),
            "{e}"
        );
        let one = Logged {
            start_us: 1,
            status: 503,
            duration_us: 1,
        };
        assert!(answered(&r, &[one]).is_ok());
    }

    #[test]
    fn errors_are_the_requests_without_a_2xx_or_3xx() {
        let out = "finished in 1.00s, 10.00 req/s, 1KB/s\nrequests: 10 total, 10 started, 10 done, 7 succeeded, 3 failed, 1 errored, 0 timeout\nstatus codes: 7 2xx, 0 3xx, 1 4xx, 2 5xx\n";
        let r = parse(out).expect("summary");
        assert_eq!(r.errors(), 3);
    }

    #[test]
    fn arguments() {
        let target = "127.0.0.1:8080".parse().expect("addr");
        let log = Path::new("/tmp/l.tsv");
        let mut spec = LoadSpec::new(target, 64, Stop::Duration(Duration::from_millis(1500)));
        spec.threads = 2;
        let a = load_args(&spec, &Shape::Get, log).expect("args");
        assert_eq!(
            a.join(" "),
            "-c 64 -t 2 -m 1 -D 1500ms --log-file=/tmp/l.tsv http://127.0.0.1:8080/"
        );
        spec.stop = Stop::Count(30_000);
        spec.mode = Mode::Open { rate: 6400.0 };
        let grpc = Shape::Grpc {
            body: PathBuf::from("/tmp/b.bin"),
        };
        let a = load_args(&spec, &grpc, log).expect("args");
        assert_eq!(
            a.join(" "),
            "-c 64 -t 2 -m 64 --rps=100 -r 6 --rate-period=1ms -n 30000 -d /tmp/b.bin -H content-type: application/grpc -H te: trailers --log-file=/tmp/l.tsv http://127.0.0.1:8080/coremesh.bench.Echo/Unary"
        );
        spec.mode = Mode::Open { rate: 0.0 };
        assert!(load_args(&spec, &Shape::Get, log).is_err());
        // 64 connections started 1/rate apart: 6 per ms at 6400 req/s, one every 2 ms at
        // 500 req/s, never more at once than there are connections.
        assert_eq!(stagger(6400.0, 64), (6, 1));
        assert_eq!(stagger(500.0, 64), (1, 2));
        assert_eq!(stagger(1e6, 64), (64, 1));
        spec.mode = Mode::Open { rate: 500.0 };
        spec.stop = Stop::Duration(Duration::from_millis(1500));
        let a = load_args(&spec, &Shape::Get, log).expect("args").join(" ");
        assert!(a.contains("-r 1 --rate-period=2ms -n 750 "), "{a}");
    }

    #[test]
    fn saturation_arguments() {
        let target = "127.0.0.1:8080".parse().expect("addr");
        let log = Path::new("/tmp/l.tsv");
        let mut s = Saturation {
            connections: 4,
            streams: 32,
            requests: 200_000,
            h1: false,
        };
        assert_eq!(
            saturation_args(&s, 1, target, log).expect("args").join(" "),
            "-n 200000 -c 4 -m 32 -t 1 --log-file=/tmp/l.tsv http://127.0.0.1:8080/"
        );
        s.h1 = true;
        assert!(saturation_args(&s, 1, target, log).is_err());
        s.streams = 1;
        assert_eq!(
            saturation_args(&s, 8, target, log).expect("args").join(" "),
            "-n 200000 -c 4 -m 1 -t 4 --h1 --log-file=/tmp/l.tsv http://127.0.0.1:8080/"
        );
        s.requests = 0;
        assert!(saturation_args(&s, 1, target, log).is_err());
    }

    #[test]
    fn an_open_loop_charges_the_wait_behind_a_late_response() {
        // 1000 req/s: slots every 1000 µs from the first send.
        let row = |start_us, duration_us| Logged {
            start_us,
            status: 200,
            duration_us,
        };
        let rows = [
            row(1_000_000, 100),
            // Sent with the first (connections start together), before its slot at
            // 1_001_000: its own latency.
            row(1_000_000, 300),
            // On time.
            row(1_002_000, 100),
            // 4 ms after its slot (1_003_000): the wait counts.
            row(1_007_000, 100),
        ];
        assert_eq!(corrected(&rows, 1000.0), [100, 300, 100, 4100]);
        assert!(corrected(&[], 1000.0).is_empty());
    }

    #[test]
    fn a_report_from_a_summary_and_log() {
        let target = "127.0.0.1:8080".parse().expect("addr");
        let mut spec = LoadSpec::new(target, 2, Stop::Duration(Duration::from_secs(1)));
        spec.mode = Mode::Open { rate: 10.0 };
        let summary = parse("finished in 1.00s, 8.00 req/s, 1KB/s\nrequests: 8 total, 9 started, 8 done, 7 succeeded, 1 failed, 1 errored, 1 timeout\nstatus codes: 7 2xx, 0 3xx, 0 4xx, 0 5xx\n").expect("summary");
        assert_eq!(summary.elapsed_s, 1.0);
        let rows: Vec<Logged> = (0..8)
            .map(|i| Logged {
                start_us: 1_000_000 + i * 100_000,
                status: if i == 7 { 503 } else { 200 },
                duration_us: 50,
            })
            .collect();
        let r = outcome(&spec, &summary, &rows).report;
        assert_eq!((r.scheduled, r.sent, r.responses, r.ok), (10, 9, 8, 7));
        assert_eq!(r.errors.get("status_503"), Some(&1));
        assert_eq!(r.errors.get("timeout"), Some(&1));
        assert_eq!(r.errors.get("not_sent"), Some(&1));
        assert_eq!(r.errors_total, 3);
        assert_eq!(r.latency.count, 8);
        assert_eq!(r.driver, "h2load");
    }
}
