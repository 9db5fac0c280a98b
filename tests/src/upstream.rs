//! A programmable HTTP/1.1 upstream on 127.0.0.1 for end-to-end tests: one thread per
//! connection (bounded), a handler that decides each response (or a delay, reset, close, hang
//! or WebSocket echo), and counters and a log of every request it received.
//!
//! Lifecycle: [`Upstream::start`] binds 127.0.0.1:0 and spawns an accept thread;
//! [`Upstream::stop`] (also run on drop) stops accepting, wakes every delay and hang, shuts
//! every connection down and joins every thread it started.

use crate::wire::{header_tokens, header_values, owned_headers, Header, WireError, WireReader};
use base64::Engine as _;
use sha1::{Digest as _, Sha1};
use socket2::SockRef;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most connections served at once; more are accepted, counted in
/// [`Upstream::connections_rejected`] and closed at once.
pub const MAX_LIVE_CONNECTIONS: usize = 512;
/// Most header fields parsed in one request head.
const MAX_REQUEST_HEADERS: usize = 256;
/// Chunk size used when the upstream sends a chunked body.
const RESPONSE_CHUNK_BYTES: usize = 8 * 1024;
/// RFC 6455 §1.3: the GUID appended to `Sec-WebSocket-Key`.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// One request as the upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRequest {
    pub method: String,
    pub path: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub headers: Vec<Header>,
    /// The decoded body (chunked framing removed).
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<Header>,
    /// Head and body exactly as they arrived.
    pub raw: Vec<u8>,
    /// Which accepted connection (0, 1, ... in accept order) carried it.
    pub connection_id: u64,
    /// Its position among the requests of that connection (0 = first).
    pub index_in_connection: u64,
}

impl ReceivedRequest {
    /// The first value of header `name` (case-insensitive), lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.headers, name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// Whether a header named `name` (case-insensitive) was received.
    pub fn has_header(&self, name: &str) -> bool {
        header_values(&self.headers, name).next().is_some()
    }
    /// Lower-cased comma-separated tokens of every `name` header.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        header_tokens(&self.headers, name)
    }
    /// The first value of trailer `name` (case-insensitive).
    pub fn trailer(&self, name: &str) -> Option<String> {
        header_values(&self.trailers, name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// How a response body is delimited on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    ContentLength,
    Chunked {
        trailers: Vec<(String, String)>,
    },
    /// No length: the body ends when the upstream closes the connection.
    CloseDelimited,
}

/// A response the upstream sends. `x-upstream: <name>` and the framing headers are added;
/// a `connection: close` header set here makes the upstream close after sending it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub framing: Framing,
}

impl Response {
    /// `status` with an empty Content-Length body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            framing: Framing::ContentLength,
        }
    }
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Self {
        Response::new(200).body(body)
    }
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
    pub fn chunked(mut self, trailers: &[(&str, &str)]) -> Self {
        let trailers = trailers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        self.framing = Framing::Chunked { trailers };
        self
    }
    pub fn close_delimited(mut self) -> Self {
        self.framing = Framing::CloseDelimited;
        self
    }
}

/// What the upstream does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Respond(Response),
    /// Wait (woken early by stop), then do the inner action.
    Delay(Duration, Box<Action>),
    /// Close with SO_LINGER 0, so the peer sees a TCP reset.
    Reset,
    /// Close the connection without a byte of response.
    CloseWithoutResponse,
    /// Send nothing and hold the connection open until the upstream stops.
    Hang,
    /// Answer 101 with the right `Sec-WebSocket-Accept`, then echo every byte until the peer
    /// closes (400 if the request is not a WebSocket upgrade).
    WebSocketEcho,
    /// Write exactly these bytes (a hand-made response, well-formed or not), then keep the
    /// connection for the next request.
    Raw(Vec<u8>),
    /// Write exactly these bytes, then close with a TCP reset (SO_LINGER 0): an upstream
    /// that dies in the middle of its response.
    RawThenReset(Vec<u8>),
}

impl Action {
    pub fn delay(delay: Duration, then: Action) -> Action {
        Action::Delay(delay, Box::new(then))
    }
}

type Handler = dyn Fn(&ReceivedRequest) -> Action + Send + Sync;

struct Shared {
    name: String,
    handler: Box<Handler>,
    stopping: AtomicBool,
    stop_lock: Mutex<()>,
    stop_signal: Condvar,
    connections: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    bytes_received: AtomicU64,
    received: Mutex<Vec<ReceivedRequest>>,
    received_signal: Condvar,
    errors: Mutex<Vec<String>>,
    live: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Lock, ignoring poisoning: a panicking handler must not hide the counters from the test.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
    /// Wait up to `timeout` (forever when `None`); true if the upstream is stopping.
    fn wait_for_stop(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = lock(&self.stop_lock);
        loop {
            if self.is_stopping() {
                return true;
            }
            match deadline {
                None => {
                    guard = self
                        .stop_signal
                        .wait(guard)
                        .unwrap_or_else(|p| p.into_inner())
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    guard = self
                        .stop_signal
                        .wait_timeout(guard, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
    fn record_error(&self, conn: u64, what: String) {
        if !self.is_stopping() {
            lock(&self.errors).push(format!("connection {conn}: {what}"));
        }
    }
}

/// A running programmable upstream.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept_thread: Option<JoinHandle<()>>,
}

impl Upstream {
    /// Start an upstream named `name` (sent back as `x-upstream`) on 127.0.0.1:0.
    pub fn start(
        name: &str,
        handler: impl Fn(&ReceivedRequest) -> Action + Send + Sync + 'static,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an upstream on 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("local address of the upstream listener");
        let shared = Arc::new(Shared {
            name: name.to_string(),
            handler: Box::new(handler),
            stopping: AtomicBool::new(false),
            stop_lock: Mutex::new(()),
            stop_signal: Condvar::new(),
            connections: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            received: Mutex::new(Vec::new()),
            received_signal: Condvar::new(),
            errors: Mutex::new(Vec::new()),
            live: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("upstream-{name}-accept"))
            .spawn(move || accept_loop(listener, accept_shared))
            .expect("spawn the upstream accept thread");
        Upstream {
            addr,
            shared,
            accept_thread: Some(accept_thread),
        }
    }

    /// 200 with [`echo_body`] of each request, named "echo".
    pub fn echo() -> Upstream {
        Upstream::echo_named("echo")
    }

    /// 200 with [`echo_body`] of each request.
    pub fn echo_named(name: &str) -> Upstream {
        Upstream::start(name, |req| Action::Respond(Response::ok(echo_body(req))))
    }

    /// Always `status` with `body`, named "fixed".
    pub fn fixed(status: u16, body: &[u8]) -> Upstream {
        Upstream::fixed_named("fixed", status, body)
    }

    /// Always `status` with `body`.
    pub fn fixed_named(name: &str, status: u16, body: &[u8]) -> Upstream {
        let body = body.to_vec();
        Upstream::start(name, move |_| {
            Action::Respond(Response::new(status).body(body.clone()))
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn name(&self) -> &str {
        &self.shared.name
    }
    /// Connections accepted and served (rejected ones not included).
    pub fn connections_accepted(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
    /// Connections closed at once because [`MAX_LIVE_CONNECTIONS`] were open.
    pub fn connections_rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::SeqCst)
    }
    /// Request heads received (counted as soon as a head parses, before its body).
    pub fn requests_received(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
    /// Bytes read from all connections, whether or not they formed a request.
    pub fn bytes_received(&self) -> u64 {
        self.shared.bytes_received.load(Ordering::SeqCst)
    }
    /// Connections open now: accepted and not yet closed by either side.
    pub fn connections_open(&self) -> usize {
        lock(&self.shared.live).len()
    }
    /// The far-end (proxy-side) addresses of the connections open now.
    pub fn open_connection_peers(&self) -> Vec<SocketAddr> {
        lock(&self.shared.live)
            .values()
            .filter_map(|s| s.peer_addr().ok())
            .collect()
    }
    /// Close every open connection from this side, as a server closing its idle keep-alive
    /// connections does (a FIN to the peer); returns how many it closed.
    pub fn close_open_connections(&self) -> usize {
        let live = lock(&self.shared.live);
        for stream in live.values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        live.len()
    }
    /// Every complete request received, in arrival order.
    pub fn received(&self) -> Vec<ReceivedRequest> {
        lock(&self.shared.received).clone()
    }
    /// Protocol errors seen on connections (unparsable heads or bodies, failed writes).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.shared.errors).clone()
    }
    /// Wait until at least `n` complete requests arrived; false after `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut got = lock(&self.shared.received);
        while got.len() < n {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            got = self
                .shared
                .received_signal
                .wait_timeout(got, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Stop accepting, wake delays and hangs, close every connection, join every thread.
    /// Idempotent.
    pub fn stop(&mut self) {
        let Some(accept_thread) = self.accept_thread.take() else {
            return;
        };
        {
            let _guard = lock(&self.shared.stop_lock);
            self.shared.stopping.store(true, Ordering::SeqCst);
            self.shared.stop_signal.notify_all();
        }
        // Wake the blocking accept(); it sees `stopping` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        let _ = accept_thread.join();
        for stream in lock(&self.shared.live).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&self.shared.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The body the echo upstream sends: the request line, connection id, index, body length and
/// SHA-1, a blank line, then every received header as `name: value`, one a line.
pub fn echo_body(req: &ReceivedRequest) -> Vec<u8> {
    let mut out = format!(
        "{} {} {}\nconnection-id: {}\nrequest-index: {}\nbody-length: {}\nbody-sha1: {}\n\n",
        req.method,
        req.path,
        req.version,
        req.connection_id,
        req.index_in_connection,
        req.body.len(),
        crate::data::sha1_hex(&req.body)
    )
    .into_bytes();
    for (name, value) in &req.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn websocket_accept(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.trim().as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    for stream in listener.incoming() {
        if shared.is_stopping() {
            break;
        }
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                shared.record_error(u64::MAX, format!("accept failed: {e}"));
                continue;
            }
        };
        let mut live = lock(&shared.live);
        if live.len() >= MAX_LIVE_CONNECTIONS {
            shared.rejected.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let Ok(tracked) = stream.try_clone() else {
            shared.record_error(next_id, "could not clone the accepted socket".into());
            continue;
        };
        let id = next_id;
        next_id += 1;
        live.insert(id, tracked);
        drop(live);
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let conn_shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("upstream-{}-conn-{id}", shared.name))
            .spawn(move || {
                serve_connection(&conn_shared, stream, id);
                lock(&conn_shared.live).remove(&id);
            });
        match spawned {
            Ok(handle) => {
                let mut threads = lock(&shared.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(e) => {
                lock(&shared.live).remove(&id);
                shared.record_error(id, format!("could not spawn a connection thread: {e}"));
            }
        }
    }
}

/// Reads a connection's socket and counts every byte into the upstream's total.
struct CountingStream {
    stream: TcpStream,
    shared: Arc<Shared>,
}

impl Read for CountingStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        self.shared
            .bytes_received
            .fetch_add(n as u64, Ordering::SeqCst);
        Ok(n)
    }
}

/// What to do with the connection after an action.
enum After {
    KeepAlive,
    Close,
    /// Close with SO_LINGER 0 already set: no shutdown(), so the last close sends a reset.
    Reset,
}

fn serve_connection(shared: &Arc<Shared>, stream: TcpStream, conn: u64) {
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => return shared.record_error(conn, format!("clone for writing: {e}")),
    };
    let mut reader = WireReader::new(CountingStream {
        stream,
        shared: shared.clone(),
    });
    let mut index = 0u64;
    loop {
        let req = match read_request(shared, &mut reader, &mut writer, conn, index) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                shared.record_error(conn, format!("request {index}: {e}"));
                break;
            }
        };
        {
            let mut received = lock(&shared.received);
            received.push(req.clone());
            shared.received_signal.notify_all();
        }
        let action = (shared.handler)(&req);
        let client_wants_close = wants_close(&req);
        match perform(
            shared,
            action,
            &req,
            &mut reader,
            &mut writer,
            client_wants_close,
        ) {
            Ok(After::KeepAlive) if !client_wants_close => {}
            Ok(After::Reset) => return,
            Ok(_) => break,
            Err(e) => {
                shared.record_error(conn, format!("request {index}: {e}"));
                break;
            }
        }
        index += 1;
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// Whether the request asks for the connection to close after its response.
fn wants_close(req: &ReceivedRequest) -> bool {
    let tokens = req.header_tokens("connection");
    if req.version == "HTTP/1.0" {
        !tokens.iter().any(|t| t == "keep-alive")
    } else {
        tokens.iter().any(|t| t == "close")
    }
}

fn read_request(
    shared: &Shared,
    reader: &mut WireReader<CountingStream>,
    writer: &mut TcpStream,
    conn: u64,
    index: u64,
) -> Result<Option<ReceivedRequest>, WireError> {
    let Some(head) = reader.read_head("a request head")? else {
        return Ok(None);
    };
    let mut header_buf = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut parsed = httparse::Request::new(&mut header_buf);
    match parsed.parse(&head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(WireError::Malformed("incomplete request head".into()))
        }
        Err(e) => {
            return Err(WireError::Malformed(format!(
                "request head: {e}: {:?}",
                String::from_utf8_lossy(&head)
            )))
        }
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let method = parsed.method.unwrap_or_default().to_string();
    let path = parsed.path.unwrap_or_default().to_string();
    let version = format!("HTTP/1.{}", parsed.version.unwrap_or(1));
    let headers = owned_headers(parsed.headers);
    let mut req = ReceivedRequest {
        method,
        path,
        version,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
        raw: head,
        connection_id: conn,
        index_in_connection: index,
    };
    let te = req.header_tokens("transfer-encoding");
    let lengths: Vec<String> = header_values(&req.headers, "content-length")
        .map(|v| String::from_utf8_lossy(v).trim().to_string())
        .collect();
    enum BodyKind {
        None,
        Length(usize),
        Chunked,
    }
    let kind = if !te.is_empty() {
        if te.last().map(String::as_str) != Some("chunked") {
            return Err(WireError::Malformed(format!(
                "transfer-encoding {te:?} does not end in chunked"
            )));
        }
        BodyKind::Chunked
    } else if let Some(first) = lengths.first() {
        if lengths.iter().any(|l| l != first) {
            return Err(WireError::Malformed(format!(
                "differing content-lengths {lengths:?}"
            )));
        }
        let n: usize = first
            .parse()
            .map_err(|_| WireError::Malformed(format!("invalid content-length {first:?}")))?;
        if n == 0 {
            BodyKind::None
        } else {
            BodyKind::Length(n)
        }
    } else {
        BodyKind::None
    };
    let expects_continue = req
        .header_tokens("expect")
        .iter()
        .any(|t| t == "100-continue");
    if expects_continue && !matches!(kind, BodyKind::None) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    match kind {
        BodyKind::None => {}
        BodyKind::Length(n) => {
            req.body = reader.read_exact_vec(n, "a request body")?;
            req.raw.extend_from_slice(&req.body);
        }
        BodyKind::Chunked => {
            let chunked = reader.read_chunked()?;
            req.body = chunked.body;
            req.trailers = chunked.trailers;
            req.raw.extend_from_slice(&chunked.raw);
        }
    }
    Ok(Some(req))
}

fn perform(
    shared: &Shared,
    action: Action,
    req: &ReceivedRequest,
    reader: &mut WireReader<CountingStream>,
    writer: &mut TcpStream,
    client_wants_close: bool,
) -> io::Result<After> {
    match action {
        Action::Respond(response) => {
            write_response(&shared.name, writer, req, &response, client_wants_close)?;
            let says_close = response.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("connection") && v.to_ascii_lowercase().contains("close")
            });
            Ok(
                if says_close || response.framing == Framing::CloseDelimited {
                    After::Close
                } else {
                    After::KeepAlive
                },
            )
        }
        Action::Delay(delay, then) => {
            if shared.wait_for_stop(Some(delay)) {
                return Ok(After::Close);
            }
            perform(shared, *then, req, reader, writer, client_wants_close)
        }
        Action::Reset => {
            SockRef::from(&*writer).set_linger(Some(Duration::ZERO))?;
            Ok(After::Reset)
        }
        Action::CloseWithoutResponse => Ok(After::Close),
        Action::Hang => {
            shared.wait_for_stop(None);
            Ok(After::Close)
        }
        Action::WebSocketEcho => {
            websocket_echo(&shared.name, req, reader, writer)?;
            Ok(After::Close)
        }
        Action::Raw(bytes) => {
            writer.write_all(&bytes)?;
            Ok(After::KeepAlive)
        }
        Action::RawThenReset(bytes) => {
            writer.write_all(&bytes)?;
            SockRef::from(&*writer).set_linger(Some(Duration::ZERO))?;
            Ok(After::Reset)
        }
    }
}

fn websocket_echo(
    name: &str,
    req: &ReceivedRequest,
    reader: &mut WireReader<CountingStream>,
    writer: &mut TcpStream,
) -> io::Result<()> {
    let upgrade = req
        .header_tokens("upgrade")
        .iter()
        .any(|t| t == "websocket");
    let connection_upgrade = req
        .header_tokens("connection")
        .iter()
        .any(|t| t == "upgrade");
    let key = req.header("sec-websocket-key");
    let Some(key) = key.filter(|_| upgrade && connection_upgrade) else {
        let why = format!(
            "not a websocket upgrade: upgrade={upgrade} connection-upgrade={connection_upgrade} key={}",
            req.has_header("sec-websocket-key")
        );
        let response = Response::new(400).body(why);
        return write_response(name, writer, req, &response, true);
    };
    let head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {}\r\nx-upstream: {name}\r\n\r\n",
        websocket_accept(&key)
    );
    writer.write_all(head.as_bytes())?;
    let early = reader.take_buffered();
    writer.write_all(&early)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.get_mut().read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        };
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n])?;
    }
    writer.shutdown(Shutdown::Write)
}

fn write_response(
    name: &str,
    writer: &mut TcpStream,
    req: &ReceivedRequest,
    response: &Response,
    client_wants_close: bool,
) -> io::Result<()> {
    let status = response.status;
    let no_body_status = (100..200).contains(&status) || status == 204 || status == 304;
    let is_head = req.method.eq_ignore_ascii_case("HEAD");
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (n, v) in &response.headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!("x-upstream: {name}\r\n"));
    if !no_body_status {
        match &response.framing {
            Framing::ContentLength => {
                head.push_str(&format!("content-length: {}\r\n", response.body.len()))
            }
            Framing::Chunked { .. } => head.push_str("transfer-encoding: chunked\r\n"),
            Framing::CloseDelimited => {}
        }
    }
    let handler_set_connection = response
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"));
    if (client_wants_close || response.framing == Framing::CloseDelimited)
        && !handler_set_connection
    {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    if no_body_status || is_head {
        return Ok(());
    }
    match &response.framing {
        Framing::ContentLength | Framing::CloseDelimited => writer.write_all(&response.body)?,
        Framing::Chunked { trailers } => {
            let mut out = Vec::with_capacity(response.body.len() + 64);
            for chunk in response.body.chunks(RESPONSE_CHUNK_BYTES) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n");
            for (n, v) in trailers {
                out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            writer.write_all(&out)?;
        }
    }
    writer.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        400 => "Bad Request",
        404 => "Not Found",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
