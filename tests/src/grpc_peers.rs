//! gRPC peers of the gRPC suite, on Python `grpcio` with generic handlers (no generated code):
//! a server that records each call (and the deadline it was given) and can answer
//! UNAVAILABLE or restart gracefully mid-load, a one-call client for each call kind, a load
//! client counting outcomes, and gRPC's message framing for raw HTTP/2 requests. See
//! `tests/py/grpc_peer.py`.

use crate::h2tools::{py_script, require_python_modules, run_bounded, Proc, RUN_BOUND};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// The full method path of `method` on the test service (`/test.Echo/Unary`, ...).
pub fn method_path(method: &str) -> String {
    format!("/test.Echo/{method}")
}

/// One gRPC message as it travels in a DATA frame: not compressed, 4-byte length, bytes.
pub fn grpc_frame(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

fn grpc_python() -> std::path::PathBuf {
    require_python_modules(&["grpc"])
}

/// A `grpc_peer.py serve` process. Killed on drop.
pub struct GrpcServer {
    proc: Proc,
    addr: SocketAddr,
    name: String,
}

impl GrpcServer {
    /// A server named `name` (its answers start with it) with extra `serve` arguments
    /// (`--unavailable`, `--restart-after K`).
    pub fn start(name: &str, extra: &[&str]) -> GrpcServer {
        let mut cmd = Command::new(grpc_python());
        cmd.arg(py_script("grpc_peer.py"))
            .args(["serve", "--name", name])
            .args(extra);
        let proc = Proc::spawn(cmd, &format!("gRPC server {name}"));
        let addr = SocketAddr::from(([127, 0, 0, 1], proc.port()));
        GrpcServer {
            proc,
            addr,
            name: name.to_string(),
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Every event so far (`call`, `cancelled`, `restarted`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.proc.json_lines()
    }
    /// The calls received so far: (method, seconds remaining of its deadline, if it had one).
    pub fn calls(&self) -> Vec<(String, Option<f64>)> {
        self.events()
            .iter()
            .filter(|e| e["event"] == "call")
            .map(|e| {
                (
                    e["method"].as_str().unwrap_or("").to_string(),
                    e["time_remaining"].as_f64(),
                )
            })
            .collect()
    }
    /// Wait up to `bound` until an event named `event` has been seen `n` times; whether it was.
    pub fn wait_events(&self, event: &str, n: usize, bound: Duration) -> bool {
        self.proc.wait_json(bound, |all| {
            all.iter().filter(|e| e["event"] == event).count() >= n
        })
    }
}

/// What one call returned: its status code name (`OK`, `DEADLINE_EXCEEDED`, ...), details,
/// and the messages received (as text).
#[derive(Debug, Clone, PartialEq)]
pub struct CallResult {
    pub code: String,
    pub details: String,
    pub messages: Vec<String>,
}

/// One call of `kind` (`unary`, `server`, `client`, `bidi`, `slow`) to `target` with `n`
/// messages (streams) and a client deadline of `timeout`.
pub fn grpc_call(target: SocketAddr, kind: &str, n: usize, timeout: Duration) -> CallResult {
    grpc_call_paced(target, kind, n, timeout, Duration::ZERO)
}

/// [`grpc_call`] with `interval` between two messages of a bidi call.
pub fn grpc_call_paced(
    target: SocketAddr,
    kind: &str,
    n: usize,
    timeout: Duration,
    interval: Duration,
) -> CallResult {
    let mut cmd = Command::new(grpc_python());
    cmd.arg(py_script("grpc_peer.py"))
        .args(["call", &target.to_string(), "--kind", kind])
        .args(["--n", &n.to_string()])
        .args(["--timeout", &format!("{}", timeout.as_secs_f64())])
        .args(["--interval", &format!("{}", interval.as_secs_f64())]);
    let done = run_bounded(cmd, timeout + RUN_BOUND, "gRPC call").expect_success("gRPC call");
    let v = done.json("gRPC call");
    CallResult {
        code: v["code"].as_str().unwrap_or("").to_string(),
        details: v["details"].as_str().unwrap_or("").to_string(),
        messages: v["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| m.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Outcome of [`grpc_load`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadResult {
    pub ok: u64,
    /// Failed calls by status code name.
    pub errors: BTreeMap<String, u64>,
    /// Successful calls by the server that answered.
    pub by_server: BTreeMap<String, u64>,
    /// The details of the first few errors.
    pub error_details: Vec<String>,
}

impl LoadResult {
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

fn counts(v: &serde_json::Value) -> BTreeMap<String, u64> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

/// `calls` unary calls to `target` from `concurrency` threads over one channel.
pub fn grpc_load(target: SocketAddr, calls: u64, concurrency: u32) -> LoadResult {
    let proc = spawn_load(target, calls, concurrency);
    finish_load(proc)
}

/// [`grpc_load`] started, to be finished with [`finish_load`] (a test acts meanwhile).
pub fn spawn_load(target: SocketAddr, calls: u64, concurrency: u32) -> Proc {
    let mut cmd = Command::new(grpc_python());
    cmd.arg(py_script("grpc_peer.py"))
        .args(["load", &target.to_string()])
        .args(["--calls", &calls.to_string()])
        .args(["--concurrency", &concurrency.to_string()]);
    Proc::spawn(cmd, "gRPC load")
}

/// Wait for a [`spawn_load`] to end; what it counted.
pub fn finish_load(mut proc: Proc) -> LoadResult {
    let status = proc.wait_exit(RUN_BOUND * 2);
    let v = proc.json_lines().pop().unwrap_or_else(|| {
        panic!(
            "gRPC load printed no result (exit {status}); stderr: {:?}",
            proc.stderr_lines()
        )
    });
    LoadResult {
        ok: v["ok"].as_u64().unwrap_or(0),
        errors: counts(&v["errors"]),
        by_server: counts(&v["by_server"]),
        error_details: v["error_details"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| d.as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A `grpc-timeout` value (at most 8 digits and a unit H, M, S, m, u or n) as a duration.
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}
