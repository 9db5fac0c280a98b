//! The built-in upstreams of a scenario, each a separate `coremesh-bench upstream` process
//! pinned to the load CPUs; one can be killed and started again on the same port.

use crate::compare::contender::fetch;
use crate::procs::Proc;
use crate::upstream::StatsSnapshot;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// One upstream's behaviour, as command-line arguments of `coremesh-bench upstream`.
#[derive(Debug, Clone)]
pub struct UpstreamArgs {
    pub name: String,
    pub latency: String,
    pub error_rate: f64,
    pub body_bytes: usize,
    /// Requests answered at once (0: no limit); see `coremesh-bench upstream --concurrency`.
    pub concurrency: usize,
    /// Answer HTTP/2 requests as unary gRPC calls (`coremesh-bench upstream --grpc`).
    pub grpc: bool,
}

impl UpstreamArgs {
    pub fn fast(name: &str) -> UpstreamArgs {
        UpstreamArgs {
            name: name.to_string(),
            latency: "fixed:0".to_string(),
            error_rate: 0.0,
            body_bytes: 64,
            concurrency: 0,
            grpc: false,
        }
    }
}

/// A running upstream process.
pub struct UpstreamProc {
    pub args: UpstreamArgs,
    pub addr: SocketAddr,
    proc: Option<Proc>,
    exe: PathBuf,
    taskset: Option<(PathBuf, String)>,
    log: PathBuf,
}

fn command(
    exe: &Path,
    taskset: &Option<(PathBuf, String)>,
    args: &UpstreamArgs,
    listen: &str,
) -> Command {
    let mut cmd = match taskset {
        Some((t, cpus)) => {
            let mut c = Command::new(t);
            c.arg("-c").arg(cpus).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    cmd.arg("upstream")
        .args(["--listen", listen, "--name", &args.name])
        .args(["--latency", &args.latency])
        .args(["--error-rate", &args.error_rate.to_string()])
        .args(["--body-bytes", &args.body_bytes.to_string()]);
    if args.concurrency > 0 {
        cmd.args(["--concurrency", &args.concurrency.to_string()]);
    }
    if args.grpc {
        cmd.arg("--grpc");
    }
    cmd
}

impl UpstreamProc {
    /// Start one on a free port; waits for it to print its address.
    pub fn start(
        exe: &Path,
        taskset: Option<(PathBuf, String)>,
        args: UpstreamArgs,
        work_dir: &Path,
    ) -> anyhow::Result<UpstreamProc> {
        let log = work_dir.join(format!("upstream-{}.log", args.name));
        let cmd = command(exe, &taskset, &args, "127.0.0.1:0");
        let mut proc = Proc::spawn(&format!("upstream {}", args.name), cmd, &log, true)?;
        let line = proc.first_line(Duration::from_secs(5))?;
        let addr: SocketAddr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("upstream {} printed {line:?}", args.name))?;
        Ok(UpstreamProc {
            args,
            addr,
            proc: Some(proc),
            exe: exe.to_path_buf(),
            taskset,
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.pid())
    }

    /// SIGKILL it (connections to it are reset).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let cmd = command(&self.exe, &self.taskset, &self.args, &self.addr.to_string());
        let mut proc = Proc::spawn(
            &format!("upstream {}", self.args.name),
            cmd,
            &self.log,
            true,
        )?;
        proc.first_line(Duration::from_secs(5))?;
        self.proc = Some(proc);
        Ok(())
    }

    /// Its counters (requests served so far).
    pub fn stats(&self) -> Option<StatsSnapshot> {
        let text = fetch(self.addr, crate::upstream::STATS_PATH).ok()?;
        let body = text.split("\r\n\r\n").nth(1)?;
        serde_json::from_str(body).ok()
    }
}

/// Requests each upstream served over HTTP/2 between two snapshots.
pub fn served_h2_between(
    before: &[Option<StatsSnapshot>],
    after: &[Option<StatsSnapshot>],
) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => a.h2_requests.saturating_sub(b.h2_requests),
            (None, Some(a)) => a.h2_requests,
            _ => 0,
        })
        .collect()
}

/// Requests each upstream served between two snapshots.
pub fn served_between(
    before: &[Option<StatsSnapshot>],
    after: &[Option<StatsSnapshot>],
) -> Vec<u64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| match (b, a) {
            (Some(b), Some(a)) => a.requests.saturating_sub(b.requests),
            (None, Some(a)) => a.requests,
            _ => 0,
        })
        .collect()
}
