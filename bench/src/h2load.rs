//! h2load (nghttp2's HTTP/2 load generator) as the load of the `h2c` protocol: its command
//! line, its summary and its per-request log (`--log-file`), read into the bench's figures.

use crate::stats::{self, LatencySummary};
use std::net::SocketAddr;
use std::time::Duration;

/// What an h2load run reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct H2loadResult {
    /// Requests h2load set out to send (`requests: N total`).
    pub total: u64,
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub timeout: u64,
    /// Responses by status class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    pub requests_per_sec: f64,
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

/// The h2load arguments for a closed loop of `connections` connections, one stream at a
/// time each (`-m 1`, as the HTTP/1.1 generator keeps one request in flight per
/// connection), for `duration` after `warmup`, on prior-knowledge cleartext HTTP/2, with
/// each request's latency written to `log`.
pub fn args(
    addr: SocketAddr,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    log: &std::path::Path,
) -> Vec<String> {
    let secs = |d: Duration| format!("{}", d.as_secs().max(1));
    vec![
        "-c".into(),
        connections.to_string(),
        "-m".into(),
        "1".into(),
        "-t".into(),
        "1".into(),
        "--warm-up-time".into(),
        secs(warmup),
        "-D".into(),
        secs(duration),
        format!("--log-file={}", log.display()),
        format!("http://{addr}/"),
    ]
}

fn number(word: &str) -> anyhow::Result<u64> {
    word.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("h2load: {word:?} is not a count: {e}"))
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
            seen_rate = true;
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            r.total = count(rest, "total")?;
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
    }

    #[test]
    fn errors_are_the_requests_without_a_2xx_or_3xx() {
        let out = "finished in 1.00s, 10.00 req/s, 1KB/s\nrequests: 10 total, 10 started, 10 done, 7 succeeded, 3 failed, 1 errored, 0 timeout\nstatus codes: 7 2xx, 0 3xx, 1 4xx, 2 5xx\n";
        let r = parse(out).expect("summary");
        assert_eq!(r.errors(), 3);
    }

    #[test]
    fn arguments() {
        let a = args(
            "127.0.0.1:8080".parse().expect("addr"),
            64,
            Duration::from_secs(2),
            Duration::from_secs(10),
            std::path::Path::new("/tmp/l.tsv"),
        );
        assert_eq!(
            a.join(" "),
            "-c 64 -m 1 -t 1 --warm-up-time 2 -D 10 --log-file=/tmp/l.tsv http://127.0.0.1:8080/"
        );
    }
}
