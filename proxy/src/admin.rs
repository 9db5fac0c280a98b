//! The admin HTTP server, on its own control-plane thread (never on a core). Enabled by
//! `proxy.admin` / `--admin ADDR` (e.g. 127.0.0.1:4191). Endpoints:
//!
//! - `GET /live` — 200 while the process runs.
//! - `GET /ready` — 200 once every core runs and the first configuration is applied; 503
//!   before that and while shutting down.
//! - `GET /config` — the effective configuration as JSON.
//! - `GET /endpoints` — per service, each endpoint's state (available / ejected until /
//!   half-open), merged latency p50/p90/p99, in-flight, requests, success rate, as JSON.
//! - `GET /metrics` — Prometheus text format, every core's counters merged at scrape time.
//! - `GET /log-level`, and `PUT /log-level` (body: a filter such as `debug` or
//!   `info,coremesh=trace`) — the change only from loopback.
//! - `POST /shutdown` — graceful shutdown, only from loopback and only when
//!   `proxy.admin_shutdown = true`.
//!
//! The server asks each core for a report over the core's control channel; a core answers
//! at its next tick, so a scrape never touches a core's state from another thread.

use crate::report::{merge_endpoint_views, CoreReport};
use crate::runtime::Control;
use coremesh_discovery::Config;
use crossbeam_channel::Sender;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a scrape waits for the cores' reports.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest admin request accepted (head and body).
const MAX_ADMIN_REQUEST: usize = 64 * 1024;
/// A client must send its request within this time.
const ADMIN_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Changes the process's log filter; provided by the binary (tests run without one).
pub trait LogLevel: Send + Sync {
    fn get(&self) -> String;
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// Renders `/metrics` from the cores' reports.
pub type MetricsRenderer = Box<dyn Fn(&[CoreReport]) -> String + Send + Sync>;

/// Renders extra metric families (appended after the cores' metrics).
pub type ExtraMetrics = Box<dyn Fn() -> String + Send + Sync>;

/// What the admin thread shares with the rest of the control plane.
pub struct AdminShared {
    pub config: Mutex<Config>,
    pub controls: Vec<Sender<Control>>,
    pub ready: AtomicBool,
    pub stopping: AtomicBool,
    pub shutdown_requests: Sender<()>,
    pub log_level: Option<Arc<dyn LogLevel>>,
    pub metrics: MetricsRenderer,
    pub extra_metrics: Mutex<Option<ExtraMetrics>>,
}

impl AdminShared {
    /// Ask every core for its report and wait for all of them (bounded).
    pub fn reports(&self) -> Vec<CoreReport> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut asked = 0;
        for c in &self.controls {
            if c.send(Control::Report(tx.clone())).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = std::time::Instant::now() + REPORT_TIMEOUT;
        let mut reports = Vec::with_capacity(asked);
        while reports.len() < asked {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(r) => reports.push(r),
                Err(_) => break,
            }
        }
        reports.sort_by_key(|r| r.core);
        reports
    }
}

/// Bind the admin listener now (so start-up fails loudly on a busy port).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Serve until `shared.stopping` is set (then one connection wakes the accept).
pub fn serve(listener: TcpListener, shared: Arc<AdminShared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        handle(stream, &shared);
    }
}

struct AdminRequest {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(stream: &mut TcpStream) -> Option<AdminRequest> {
    let _ = stream.set_read_timeout(Some(ADMIN_READ_TIMEOUT));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > MAX_ADMIN_REQUEST {
            return None;
        }
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = req.parse(&buf) else {
            continue;
        };
        let length = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if head_len + length > MAX_ADMIN_REQUEST {
            return None;
        }
        let method = req.method?.to_string();
        let path = req.path?.split('?').next()?.to_string();
        while buf.len() < head_len + length {
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = buf[head_len..head_len + length].to_vec();
        return Some(AdminRequest { method, path, body });
    }
}

fn respond(stream: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let reason = match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
}

/// Whether a request that changes state must be refused: `PUT /log-level` and
/// `POST /shutdown` only from loopback, and `/shutdown` only when enabled.
pub fn refusal(
    method: &str,
    path: &str,
    peer: Option<IpAddr>,
    shutdown_enabled: bool,
) -> Option<(u16, &'static str)> {
    let loopback = peer.is_some_and(|ip| ip.to_canonical().is_loopback());
    match (method, path) {
        ("PUT", "/log-level") if !loopback => Some((403, "only from loopback\n")),
        ("POST", "/shutdown") if !loopback => {
            Some((403, "shutdown is accepted only from loopback\n"))
        }
        ("POST", "/shutdown") if !shutdown_enabled => {
            Some((404, "shutdown is disabled (proxy.admin_shutdown = false)\n"))
        }
        _ => None,
    }
}

fn handle(mut stream: TcpStream, shared: &AdminShared) {
    let peer = stream.peer_addr().ok().map(|a| a.ip());
    let Some(req) = read_request(&mut stream) else {
        respond(&mut stream, 400, "text/plain", "bad request\n");
        return;
    };
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    if let Some((status, why)) = refusal(&req.method, &req.path, peer, shared.shutdown_enabled()) {
        return respond(&mut stream, status, TEXT, why);
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/live") => respond(&mut stream, 200, TEXT, "live\n"),
        ("GET", "/ready") => {
            if shared.ready.load(Ordering::SeqCst) && !shared.stopping.load(Ordering::SeqCst) {
                respond(&mut stream, 200, TEXT, "ready\n")
            } else {
                respond(&mut stream, 503, TEXT, "not ready\n")
            }
        }
        ("GET", "/config") => {
            let body = match shared.config.lock() {
                Ok(c) => serde_json::to_string_pretty(&*c)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
                Err(_) => "{}".into(),
            };
            respond(&mut stream, 200, JSON, &body)
        }
        ("GET", "/endpoints") => {
            let reports = shared.reports();
            let body = serde_json::to_string_pretty(&merge_endpoint_views(&reports))
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            respond(&mut stream, 200, JSON, &body)
        }
        ("GET", "/metrics") => {
            let reports = shared.reports();
            let mut body = (shared.metrics)(&reports);
            if let Ok(extra) = shared.extra_metrics.lock() {
                if let Some(render) = extra.as_ref() {
                    body.push_str(&render());
                }
            }
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &body,
            )
        }
        ("GET", "/log-level") => match &shared.log_level {
            Some(l) => respond(&mut stream, 200, TEXT, &format!("{}\n", l.get())),
            None => respond(
                &mut stream,
                404,
                TEXT,
                "log level control is not available\n",
            ),
        },
        ("PUT", "/log-level") => {
            let filter = String::from_utf8_lossy(&req.body).trim().to_string();
            match &shared.log_level {
                Some(l) => match l.set(&filter) {
                    Ok(()) => respond(&mut stream, 200, TEXT, &format!("{filter}\n")),
                    Err(e) => respond(&mut stream, 400, TEXT, &format!("{e}\n")),
                },
                None => respond(
                    &mut stream,
                    404,
                    TEXT,
                    "log level control is not available\n",
                ),
            }
        }
        ("POST", "/shutdown") => {
            respond(&mut stream, 202, TEXT, "shutting down\n");
            let _ = shared.shutdown_requests.send(());
        }
        (
            _,
            "/live" | "/ready" | "/config" | "/endpoints" | "/metrics" | "/log-level" | "/shutdown",
        ) => respond(&mut stream, 405, TEXT, "method not allowed\n"),
        _ => respond(
            &mut stream,
            404,
            TEXT,
            "not found: try /live /ready /config /endpoints /metrics /log-level\n",
        ),
    }
}

impl AdminShared {
    fn shutdown_enabled(&self) -> bool {
        self.config
            .lock()
            .map(|c| c.proxy.admin_shutdown)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::refusal;
    use std::net::IpAddr;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn state_changes_only_from_loopback() {
        let remote = ip("10.1.2.3");
        for enabled in [true, false] {
            assert_eq!(
                refusal("POST", "/shutdown", remote, enabled).unwrap().0,
                403
            );
            assert_eq!(refusal("POST", "/shutdown", None, enabled).unwrap().0, 403);
        }
        assert_eq!(
            refusal("POST", "/shutdown", ip("127.0.0.1"), false)
                .unwrap()
                .0,
            404
        );
        for lo in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(refusal("POST", "/shutdown", ip(lo), true), None, "{lo}");
            assert_eq!(refusal("PUT", "/log-level", ip(lo), false), None, "{lo}");
        }
        assert_eq!(refusal("PUT", "/log-level", remote, true).unwrap().0, 403);
        assert_eq!(refusal("GET", "/metrics", remote, false), None);
        assert_eq!(refusal("GET", "/log-level", remote, false), None);
    }
}
