//! `wrk` as a second opinion on throughput: run it with the same connections, duration and
//! CPU as the generator, and read its summary.

use crate::procs::Proc;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// What wrk reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WrkResult {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub non_2xx_3xx: u64,
    pub socket_errors: u64,
    pub command: String,
}

/// Read wrk's summary.
pub fn parse(output: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut seen_rate = false;
    for line in output.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            r.requests_per_sec = v.trim().parse()?;
            seen_rate = true;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = v.trim().parse()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            r.socket_errors = v
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if line.contains(" requests in ") {
            r.requests = line
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
    }
    anyhow::ensure!(seen_rate, "no Requests/sec line in wrk's output");
    Ok(r)
}

/// Whether `name` is an executable on PATH.
pub fn on_path(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Run `wrk -t1` for `duration` against `target`, pinned to `cpu` with taskset when given.
pub fn run(
    target: SocketAddr,
    connections: usize,
    duration: Duration,
    cpu: Option<usize>,
    log: &Path,
) -> anyhow::Result<WrkResult> {
    let wrk = on_path("wrk").ok_or_else(|| anyhow::anyhow!("wrk not found on PATH"))?;
    let secs = duration.as_secs().max(1);
    let args = vec![
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{secs}s"),
        "--timeout".to_string(),
        "10s".to_string(),
        format!("http://{target}/"),
    ];
    let (mut cmd, shown) = match (cpu, on_path("taskset")) {
        (Some(cpu), Some(taskset)) => {
            let mut c = Command::new(taskset);
            c.arg("-c").arg(cpu.to_string()).arg(&wrk).args(&args);
            (c, format!("taskset -c {cpu} wrk {}", args.join(" ")))
        }
        _ => {
            let mut c = Command::new(&wrk);
            c.args(&args);
            (c, format!("wrk {}", args.join(" ")))
        }
    };
    cmd.env_remove("LD_PRELOAD");
    let mut proc = Proc::spawn("wrk", cmd, log, false)?;
    let limit = Duration::from_secs(secs) + Duration::from_secs(15);
    let began = Instant::now();
    let status = loop {
        if let Some(s) = proc.exited() {
            break s;
        }
        if began.elapsed() > limit {
            proc.kill();
            anyhow::bail!("wrk did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(log)?;
    anyhow::ensure!(status.success(), "wrk failed ({status}): {output}");
    let mut result = parse(&output)?;
    result.command = shown;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_summary() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 64 connections\n  \
                   123456 requests in 2.00s, 12.34MB read\n  Socket errors: connect 1, read 2, write 0, timeout 3\n  \
                   Non-2xx or 3xx responses: 12\nRequests/sec:  61728.00\nTransfer/sec:      6.17MB\n";
        let r = parse(out).expect("parses");
        assert_eq!(r.requests, 123456);
        assert_eq!(r.requests_per_sec, 61728.0);
        assert_eq!(r.non_2xx_3xx, 12);
        assert_eq!(r.socket_errors, 6);
        assert!(parse("nothing").is_err());
    }
}
