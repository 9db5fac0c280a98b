//! The proxy with its admin server, for the admin and telemetry suites: start it in-process
//! with `proxy.admin = 127.0.0.1:0`, ask its admin endpoints, read `/endpoints` as JSON, and
//! wait (bounded) until what it shows has caught up with the traffic a test sent.
//!
//! Cores answer the admin server at their next tick, and a core may record a request's
//! outcome just after the client has read the response; so a test that wants exact counts
//! waits until they reach what it sent ([`wait_for_admin`]), then asserts equality.

use crate::client::{self, RawResponse};
use crate::proxy::{driver_name, TEST_SHUTDOWN_GRACE_MS};
use coremesh::admin::LogLevel;
use coremesh::{ProxyHandle, StartOptions};
use coremesh_discovery::{Config, Driver};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a test waits for the admin server to show what it expects: a scrape waits up to
/// 2 s for the cores, and cores report every tick (100 ms), so this only bounds a broken run.
pub const ADMIN_WAIT: Duration = Duration::from_secs(15);
/// Pause between two polls of the admin server.
pub const ADMIN_POLL: Duration = Duration::from_millis(20);

/// A proxy started with its admin server on 127.0.0.1; shut down gracefully on drop.
pub struct AdminProxy {
    handle: Option<ProxyHandle>,
    admin: SocketAddr,
}

impl AdminProxy {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.handle()
            .listen_addr()
            .expect("the test proxy has an explicit listener")
    }
    /// The admin server's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }
    fn handle(&self) -> &ProxyHandle {
        self.handle
            .as_ref()
            .expect("AdminProxy holds its handle until dropped")
    }
    /// `GET path` on the admin server; panics on an I/O or framing error.
    pub fn get(&self, path: &str) -> RawResponse {
        admin_request(self.admin, "GET", path, None)
    }
    /// `method path` with `body` on the admin server; panics on an I/O or framing error.
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> RawResponse {
        admin_request(self.admin, method, path, body)
    }
    /// `GET /metrics` as text; panics unless it answers 200.
    pub fn metrics_text(&self) -> String {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.body_text());
        r.body_text()
    }
    /// `GET /endpoints` parsed; panics unless it answers 200 with JSON.
    pub fn endpoints(&self) -> Endpoints {
        let r = self.get("/endpoints");
        assert_eq!(r.status, 200, "GET /endpoints: {}", r.body_text());
        Endpoints::parse(&r.body_text())
            .unwrap_or_else(|e| panic!("GET /endpoints is not the JSON expected: {e}"))
    }
}

impl Deref for AdminProxy {
    type Target = ProxyHandle;
    fn deref(&self) -> &ProxyHandle {
        self.handle()
    }
}

impl Drop for AdminProxy {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// Start `config` on `driver` with the admin server on 127.0.0.1:0 (listen 127.0.0.1:0, no
/// pinning, one core unless the config asks for more, the test shutdown grace).
pub fn start_with_admin(driver: Driver, config: Config) -> AdminProxy {
    start_with_admin_and(driver, config, StartOptions::default())
}

/// [`start_with_admin`] with a log-level hook, as the binary gives one.
pub fn start_with_admin_and_log_level(
    driver: Driver,
    config: Config,
    log_level: Arc<dyn LogLevel>,
) -> AdminProxy {
    start_with_admin_and(
        driver,
        config,
        StartOptions {
            log_level: Some(log_level),
            ..StartOptions::default()
        },
    )
}

fn start_with_admin_and(driver: Driver, mut config: Config, options: StartOptions) -> AdminProxy {
    config.proxy.driver = driver;
    config.proxy.listen = Some("127.0.0.1:0".parse().expect("a literal socket address"));
    config.proxy.admin = Some("127.0.0.1:0".parse().expect("a literal socket address"));
    config.proxy.pin_cores = false;
    if config.proxy.cores == 0 {
        config.proxy.cores = 1;
    }
    if config.proxy.shutdown_grace_ms > TEST_SHUTDOWN_GRACE_MS {
        config.proxy.shutdown_grace_ms = TEST_SHUTDOWN_GRACE_MS;
    }
    let handle = coremesh::start_with(config, options).unwrap_or_else(|e| {
        panic!(
            "coremesh::start failed on driver {}: {e:#}",
            driver_name(driver)
        )
    });
    let admin = handle.admin_addr().unwrap_or_else(|| {
        panic!(
            "driver {}: admin_addr() is None although proxy.admin was set",
            driver_name(driver)
        )
    });
    assert!(
        admin.ip().is_loopback() && admin.port() != 0,
        "admin_addr() must report the bound loopback port, got {admin}"
    );
    let running = handle.driver();
    let proxy = AdminProxy {
        handle: Some(handle),
        admin,
    };
    crate::proxy::assert_running_driver(driver, running);
    proxy
}

/// One request on a new connection to the admin server; panics on an I/O or framing error.
pub fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> RawResponse {
    client::request(admin, method, path, &[], body)
        .unwrap_or_else(|e| panic!("admin {method} {path} on {admin}: {e}"))
}

/// Poll `probe` until it returns `Some` (then that value) or [`ADMIN_WAIT`] has passed
/// (then `Err` with the last value seen, for the failure message).
pub fn wait_for_admin<T>(mut probe: impl FnMut() -> (Option<T>, String)) -> Result<T, String> {
    let deadline = Instant::now() + ADMIN_WAIT;
    loop {
        let (done, last) = probe();
        if let Some(v) = done {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(ADMIN_POLL);
    }
}

/// One endpoint as `/endpoints` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointEntry {
    pub address: String,
    pub state: String,
    pub ejected_for_ms: Option<u64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: u64,
    pub requests: u64,
    pub failures: u64,
    pub success_rate: Option<f64>,
    pub ejections: u64,
}

/// `/endpoints`: service name to its endpoints, in the order the server listed them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Endpoints {
    pub services: Vec<(String, Vec<EndpointEntry>)>,
}

impl Endpoints {
    /// Parse the JSON body of `/endpoints`; every field documented in `proxy/src/admin.rs`
    /// must be present with its type.
    pub fn parse(text: &str) -> Result<Endpoints, String> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| format!("not an object: {text}"))?;
        let mut services = Vec::new();
        for (service, list) in object {
            let list = list
                .as_array()
                .ok_or_else(|| format!("{service}: not a list"))?;
            let mut entries = Vec::new();
            for e in list {
                entries.push(entry(service, e)?);
            }
            services.push((service.clone(), entries));
        }
        Ok(Endpoints { services })
    }

    /// The endpoints of `service`.
    pub fn service(&self, service: &str) -> Option<&[EndpointEntry]> {
        self.services
            .iter()
            .find(|(s, _)| s == service)
            .map(|(_, list)| list.as_slice())
    }

    /// Endpoint `address` of `service`.
    pub fn endpoint(&self, service: &str, address: SocketAddr) -> Option<&EndpointEntry> {
        let address = address.to_string();
        self.service(service)?.iter().find(|e| e.address == address)
    }
}

fn entry(service: &str, e: &serde_json::Value) -> Result<EndpointEntry, String> {
    let what = |field: &str| format!("{service}: field {field:?} missing or mistyped in {e}");
    let text = |field: &str| {
        e.get(field)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| what(field))
    };
    let count = |field: &str| {
        e.get(field)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| what(field))
    };
    // Present, and either null or of the type.
    let optional_f64 = |field: &str| match e.get(field) {
        Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| what(field)),
        None => Err(what(field)),
    };
    let optional_u64 = |field: &str| match e.get(field) {
        Some(serde_json::Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| what(field)),
        None => Err(what(field)),
    };
    Ok(EndpointEntry {
        address: text("address")?,
        state: text("state")?,
        ejected_for_ms: optional_u64("ejected_for_ms")?,
        p50_ms: optional_f64("p50_ms")?,
        p90_ms: optional_f64("p90_ms")?,
        p99_ms: optional_f64("p99_ms")?,
        in_flight: count("in_flight")?,
        requests: count("requests")?,
        failures: count("failures")?,
        success_rate: optional_f64("success_rate")?,
        ejections: count("ejections")?,
    })
}

/// The start of a `GET /live` head without its final blank line: what a slow admin client
/// has sent when it stalls. [`finish_stalled_head`] completes it.
pub const STALLED_HEAD: &[u8] = b"GET /live HTTP/1.1\r\nHost: admin\r\n";

/// A client that sent [`STALLED_HEAD`] to the admin server and stalls; reads and writes
/// time out after `bound` (a generous bound that only turns a hang into a failure).
pub fn stalled_admin_client(admin: SocketAddr, bound: Duration) -> client::Client {
    let mut c = client::Client::connect(admin)
        .unwrap_or_else(|e| panic!("connect to the admin server {admin}: {e}"));
    c.set_read_timeout(bound)
        .unwrap_or_else(|e| panic!("set a read timeout: {e}"));
    c.send_raw(STALLED_HEAD)
        .unwrap_or_else(|e| panic!("send a partial head to {admin}: {e}"));
    c
}

/// Send the blank line that ends a [`stalled_admin_client`]'s head and read the answer.
pub fn finish_stalled_head(c: &mut client::Client) -> RawResponse {
    c.send_raw(b"\r\n")
        .unwrap_or_else(|e| panic!("finish a stalled head: {e}"));
    c.read_response(false)
        .unwrap_or_else(|e| panic!("the answer to a finished head: {e}"))
}

/// One `GET path` on a new admin connection that waits up to `bound` for the answer.
pub fn admin_get_within(admin: SocketAddr, path: &str, bound: Duration) -> RawResponse {
    let mut c = client::Client::connect(admin)
        .unwrap_or_else(|e| panic!("connect to the admin server {admin}: {e}"));
    c.set_read_timeout(bound)
        .unwrap_or_else(|e| panic!("set a read timeout: {e}"));
    c.send_request("GET", path, &[], None)
        .unwrap_or_else(|e| panic!("send GET {path}: {e}"));
    c.read_response(false)
        .unwrap_or_else(|e| panic!("GET {path} not answered within {bound:?}: {e}"))
}

/// How a trickling client's connection ended.
#[derive(Debug)]
pub struct TrickleEnd {
    /// Header bytes sent before the server closed.
    pub bytes_sent: usize,
    /// What the server sent before closing (may be lost when the close resets).
    pub received: Vec<u8>,
}

/// Send the start of a head, then one more header byte every `every`, never ending the
/// head, until the server closes the connection; `Err` if it is still open after `bound`.
/// A per-read timeout longer than `every` never closes such a client; a whole-request
/// timeout does.
pub fn trickle_until_closed(
    admin: SocketAddr,
    every: Duration,
    bound: Duration,
) -> Result<TrickleEnd, String> {
    use std::io::{ErrorKind, Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&admin, client::DEFAULT_IO_TIMEOUT)
        .map_err(|e| format!("connect to {admin}: {e}"))?;
    let start = b"GET /live HTTP/1.1\r\nHost: admin\r\nx-slow: ";
    stream
        .write_all(start)
        .map_err(|e| format!("send the start of a head: {e}"))?;
    stream
        .set_nonblocking(true)
        .map_err(|e| format!("set non-blocking: {e}"))?;
    let mut end = TrickleEnd {
        bytes_sent: start.len(),
        received: Vec::new(),
    };
    let deadline = Instant::now() + bound;
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(end),
            Ok(n) => end.received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return Ok(end), // reset: closed
        }
        if end.received.is_empty() {
            match stream.write(b"a") {
                Ok(n) => end.bytes_sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Ok(end), // broken pipe or reset: closed
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "still open after {bound:?} and {} bytes sent",
                end.bytes_sent
            ));
        }
        std::thread::sleep(every);
    }
}

/// A connection to the admin server with a small receive buffer that has sent `GET path`
/// and reads nothing yet: an answer larger than the socket buffers stalls the server's write.
pub fn non_reading_admin_client(admin: SocketAddr, path: &str) -> std::net::TcpStream {
    use std::io::Write;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(admin),
        socket2::Type::STREAM,
        None,
    )
    .unwrap_or_else(|e| panic!("a socket: {e}"));
    socket
        .set_recv_buffer_size(4096)
        .unwrap_or_else(|e| panic!("a small receive buffer: {e}"));
    socket
        .connect_timeout(&admin.into(), client::DEFAULT_IO_TIMEOUT)
        .unwrap_or_else(|e| panic!("connect to the admin server {admin}: {e}"));
    let mut stream: std::net::TcpStream = socket.into();
    stream
        .write_all(&client::build_request("GET", path, &[], None))
        .unwrap_or_else(|e| panic!("send GET {path}: {e}"));
    stream
}
