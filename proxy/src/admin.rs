//! The admin HTTP server, on its own control-plane thread (never on a core). Enabled by
//! `proxy.admin` / `--admin ADDR` (e.g. 127.0.0.1:4191). Endpoints:
//!
//! `proxy.admin` is an address, a pair (`*:4191`: IPv4 and IPv6, see [`bind`]) or a list.
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
//! Connections are served concurrently, each within a whole-request and a write timeout,
//! at most `proxy.admin_max_connections` at once (see `admin/listener.rs`); requests are
//! read by `admin/request.rs`; [`answer`] and [`refusal`] decide what each gets.
//!
//! The server asks each core for a report over the core's control channel; a core answers
//! at its next tick, so a scrape never touches a core's state from another thread.

mod listener;
mod request;

pub use listener::{serve, AdminLimits};
pub use request::{parse as parse_request, AdminRequest, Parsed, MAX_ADMIN_REQUEST};

use crate::report::{merge_endpoint_views, CoreReport};
use crate::runtime::Control;
use coremesh_discovery::{Config, Listen};
use crossbeam_channel::Sender;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Connections waiting to be accepted by the admin server (probes and scrapes are few).
const ADMIN_BACKLOG: i32 = 128;
/// How long a scrape waits for the cores' reports.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Ends the accept loops (see [`AdminShared::stop_serving`]).
    pub stop_accepting: tokio::sync::Notify,
    pub shutdown_requests: Sender<()>,
    pub log_level: Option<Arc<dyn LogLevel>>,
    pub metrics: MetricsRenderer,
    pub extra_metrics: Mutex<Option<ExtraMetrics>>,
}

impl AdminShared {
    /// Stop accepting admin connections: the server's thread then ends (answers still
    /// being written get a moment, see `admin/listener.rs`).
    pub fn stop_serving(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        // A permit is kept if the server is not waiting yet, so the stop is never missed.
        self.stop_accepting.notify_one();
    }

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

/// Bind the admin listeners now (so start-up fails loudly on a busy port): one per
/// address of `listen`, IPv6 ones `IPV6_V6ONLY` (so `0.0.0.0:P` and `[::]:P` are two).
/// The IPv6 address of a pair (`*:P`) is skipped, with one info line, on a host without
/// IPv6; any other address that cannot be bound is an error naming it.
pub fn bind(listen: &Listen) -> anyhow::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(listen.addrs().len());
    for &addr in listen.addrs() {
        match bind_one(addr) {
            Ok(listener) => listeners.push(listener),
            Err(e) if listen.may_skip(addr) && crate::runtime::family_missing(&e) => {
                tracing::info!("admin server: no IPv6 on this host ({e}); not listening on {addr}");
            }
            Err(e) => anyhow::bail!("cannot listen for admin on {addr}: {e}"),
        }
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(ADMIN_BACKLOG)?;
    Ok(socket.into())
}

/// An answer: status, content type and body; every answer closes its connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// Ask for a graceful shutdown once this answer has been written.
    pub then_shutdown: bool,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

impl Answer {
    fn new(status: u16, content_type: &'static str, body: String) -> Answer {
        Answer {
            status,
            content_type,
            body,
            then_shutdown: false,
        }
    }

    pub fn text(status: u16, body: String) -> Answer {
        Answer::new(status, TEXT, body)
    }

    /// The whole response, head and body.
    pub fn encode(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            202 => "Accepted",
            400 => "Bad Request",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            self.status,
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        out.extend_from_slice(self.body.as_bytes());
        out
    }
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

/// The answer to `req` from `peer`. May block for up to [`REPORT_TIMEOUT`] (a scrape waits
/// for the cores); only `GET /live` and `GET /ready` never block.
pub fn answer(req: &AdminRequest, peer: Option<IpAddr>, shared: &AdminShared) -> Answer {
    let text = |status, body: &str| Answer::text(status, body.to_string());
    if let Some((status, why)) = refusal(&req.method, &req.path, peer, shared.shutdown_enabled()) {
        return text(status, why);
    }
    let no_log_control = || text(404, "log level control is not available\n");
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/live") => text(200, "live\n"),
        ("GET", "/ready") => {
            if shared.ready.load(Ordering::SeqCst) && !shared.stopping.load(Ordering::SeqCst) {
                text(200, "ready\n")
            } else {
                text(503, "not ready\n")
            }
        }
        ("GET", "/config") => {
            let body = match shared.config.lock() {
                Ok(c) => serde_json::to_string_pretty(&*c)
                    .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
                Err(_) => "{}".into(),
            };
            Answer::new(200, JSON, body)
        }
        ("GET", "/endpoints") => {
            let reports = shared.reports();
            let body = serde_json::to_string_pretty(&merge_endpoint_views(&reports))
                .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
            Answer::new(200, JSON, body)
        }
        ("GET", "/metrics") => {
            let reports = shared.reports();
            let mut body = (shared.metrics)(&reports);
            if let Ok(extra) = shared.extra_metrics.lock() {
                if let Some(render) = extra.as_ref() {
                    body.push_str(&render());
                }
            }
            Answer::new(200, "text/plain; version=0.0.4; charset=utf-8", body)
        }
        ("GET", "/log-level") => match &shared.log_level {
            Some(l) => text(200, &format!("{}\n", l.get())),
            None => no_log_control(),
        },
        ("PUT", "/log-level") => {
            let filter = String::from_utf8_lossy(&req.body).trim().to_string();
            match &shared.log_level {
                Some(l) => match l.set(&filter) {
                    Ok(()) => text(200, &format!("{filter}\n")),
                    Err(e) => text(400, &format!("{e}\n")),
                },
                None => no_log_control(),
            }
        }
        ("POST", "/shutdown") => Answer {
            then_shutdown: true,
            ..text(202, "shutting down\n")
        },
        (
            _,
            "/live" | "/ready" | "/config" | "/endpoints" | "/metrics" | "/log-level" | "/shutdown",
        ) => text(405, "method not allowed\n"),
        _ => text(
            404,
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
    use super::{answer, refusal, AdminRequest, AdminShared, LogLevel};
    use coremesh_discovery::Config;
    use std::net::IpAddr;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

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

    /// A log filter that remembers what it was set to.
    struct FakeLog(Mutex<String>);

    impl LogLevel for FakeLog {
        fn get(&self) -> String {
            self.0.lock().map(|f| f.clone()).unwrap_or_default()
        }
        fn set(&self, filter: &str) -> Result<(), String> {
            *self.0.lock().map_err(|e| e.to_string())? = filter.to_string();
            Ok(())
        }
    }

    fn request(method: &str, path: &str, body: &[u8]) -> AdminRequest {
        AdminRequest {
            method: method.into(),
            path: path.into(),
            body: body.into(),
        }
    }

    #[test]
    fn answers_change_state_only_for_loopback_peers() {
        let log = Arc::new(FakeLog(Mutex::new("info".into())));
        let mut config = Config::default();
        config.proxy.admin_shutdown = true;
        let (shutdown_requests, _rx) = crossbeam_channel::unbounded();
        let shared = AdminShared {
            config: Mutex::new(config),
            controls: Vec::new(),
            ready: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            stop_accepting: tokio::sync::Notify::new(),
            shutdown_requests,
            log_level: Some(log.clone()),
            metrics: Box::new(|_| String::new()),
            extra_metrics: Mutex::new(None),
        };
        let remote = ip("10.1.2.3");
        let put = request("PUT", "/log-level", b"debug\n");
        let shutdown = request("POST", "/shutdown", b"");

        let refused = answer(&put, remote, &shared);
        assert_eq!((refused.status, log.get().as_str()), (403, "info"));
        let refused = answer(&shutdown, remote, &shared);
        assert_eq!((refused.status, refused.then_shutdown), (403, false));
        // Reading is open to every peer.
        let read = answer(&request("GET", "/log-level", b""), remote, &shared);
        assert_eq!((read.status, read.body.as_str()), (200, "info\n"));

        let changed = answer(&put, ip("::1"), &shared);
        assert_eq!((changed.status, log.get().as_str()), (200, "debug"));
        let accepted = answer(&shutdown, ip("127.0.0.1"), &shared);
        assert_eq!((accepted.status, accepted.then_shutdown), (202, true));
    }
}
