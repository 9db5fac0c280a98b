//! A fleet of upstreams sharing one ledger of every request id they received and what each
//! did with it (answered with a status, reset, closed without answering, or died holding
//! it), with faults the test schedules: a status or a broken connection on a request's
//! first arrival, a mode in which an upstream fails every request (503, reset, or a
//! response cut off mid-body: to get it ejected), and
//! kills (listener closed, every connection shut down) followed by a revival on the same
//! address.
//!
//! Exactness of the ledger: an upstream records a request once its head and body are read,
//! under a read lock of its life gate, and writes the whole response before releasing it;
//! a kill takes the write lock before shutting connections down. So a response is either
//! written in full before the kill (and recorded as answered) or not written at all (the
//! request is recorded as [`Fate::Killed`]); no request is answered in part.
//!
//! Requests carry their id twice: `x-request-id: {id}` and the path `/nl/{id}`. Responses
//! carry `x-upstream: L{index}`, `x-request-id: {id}` and the body [`receipt`]; per id
//! ([`Treatment`]) a response is chunked, announces `connection: close`, or is preceded by
//! `103 Early Hints` (also before a reset or close).
//!
//! Lifecycle: [`Fleet::start`] binds every upstream on 127.0.0.1:0; [`Fleet::kill`] and
//! [`Fleet::revive`] alternate per upstream; [`Fleet::stop`] (also run on drop) kills every
//! upstream and joins every thread.

use crate::restartable::{bind_placeholder, bind_reusable};
use crate::wire::{header_tokens, header_values, owned_headers, WireError, WireReader};
use socket2::SockRef;
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Header carrying the request id both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Path prefix of an id'd request: `/nl/{id}`.
pub const ID_PATH_PREFIX: &str = "/nl/";
/// Most header fields parsed in one request head.
const MAX_REQUEST_HEADERS: usize = 128;
/// How long a revival keeps trying to bind the old port (see `restartable`).
const REBIND_PATIENCE: Duration = Duration::from_secs(10);
const REBIND_PAUSE: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What an upstream does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (200: no fault).
    Status(u16),
    /// Close with SO_LINGER 0 after reading the request: the proxy sees a reset.
    Reset,
    /// Close after reading the request, without a byte of response.
    Close,
    /// Send the response head and half its (Content-Length) body, then close.
    Truncate,
}

/// How an upstream treats every request, whatever its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Each request's first arrival gets the fault the policy gives its id; later
    /// arrivals (retries) are answered 200.
    Normal,
    /// Every request is answered 503.
    Failing503,
    /// Every request is reset.
    Resetting,
    /// Every response is cut off in the middle of its body.
    Truncating,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Normal => 0,
            Mode::Failing503 => 1,
            Mode::Resetting => 2,
            Mode::Truncating => 3,
        }
    }
    fn of(code: u8) -> Mode {
        match code {
            1 => Mode::Failing503,
            2 => Mode::Resetting,
            3 => Mode::Truncating,
            _ => Mode::Normal,
        }
    }
}

/// What became of one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Recorded, response not yet written (only seen while the upstream is running).
    Pending,
    /// A whole response with this status was written.
    Answered(u16),
    Reset,
    Closed,
    /// The head and half the body of a 200 were written, then the connection closed.
    Truncated,
    /// Read in full, then the upstream was killed before answering.
    Killed,
}

impl Fate {
    pub fn is_success(self) -> bool {
        matches!(self, Fate::Answered(s) if (200..300).contains(&s))
    }
}

/// One request as an upstream received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arrival {
    pub upstream: usize,
    pub method: String,
    /// The body exactly as received.
    pub body: Vec<u8>,
    /// Position among all arrivals at all upstreams (0, 1, ...).
    pub order: u64,
    pub fate: Fate,
}

#[derive(Default)]
struct LedgerState {
    by_id: HashMap<u64, Vec<Arrival>>,
    arrivals: u64,
    /// Requests that could not be read or carried no valid id, with the upstream's account.
    anomalies: Vec<String>,
}

/// How the upstreams treat one request id, whichever of them gets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Treatment {
    /// What its first arrival at any upstream gets (in [`Mode::Normal`]); later arrivals
    /// (retries) are answered 200.
    pub first_arrival: Fault,
    /// Send `103 Early Hints` before whatever is done with it (a response, a reset, a close).
    pub early_hints: bool,
    /// Answer with a chunked body.
    pub chunked: bool,
    /// Answer with `connection: close`, then close.
    pub close: bool,
}

impl Default for Treatment {
    fn default() -> Self {
        Treatment {
            first_arrival: Fault::Status(200),
            early_hints: false,
            chunked: false,
            close: false,
        }
    }
}

/// Decides the treatment of a request id.
pub type TreatmentOf = dyn Fn(u64) -> Treatment + Send + Sync;

/// The interim response sent before a request's answer when [`Treatment::early_hints`].
pub const EARLY_HINTS: &str = "HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";

struct Shared {
    ledger: Mutex<LedgerState>,
    treatment: Box<TreatmentOf>,
}

impl Shared {
    fn anomaly(&self, what: String) {
        lock(&self.ledger).anomalies.push(what);
    }

    /// Record an arrival and decide what to do with it; returns (id, slot, fault).
    fn arrive(
        &self,
        node: &Node,
        id: u64,
        method: &str,
        body: Vec<u8>,
        first_arrival: Fault,
    ) -> (usize, Fault) {
        let mut ledger = lock(&self.ledger);
        let order = ledger.arrivals;
        ledger.arrivals += 1;
        let arrivals = ledger.by_id.entry(id).or_default();
        let first = arrivals.is_empty();
        let fault = match Mode::of(node.mode.load(Ordering::SeqCst)) {
            Mode::Failing503 => Fault::Status(503),
            Mode::Resetting => Fault::Reset,
            Mode::Truncating => Fault::Truncate,
            Mode::Normal if first => first_arrival,
            Mode::Normal => Fault::Status(200),
        };
        arrivals.push(Arrival {
            upstream: node.index,
            method: method.to_string(),
            body,
            order,
            fate: Fate::Pending,
        });
        (arrivals.len() - 1, fault)
    }

    fn settle(&self, id: u64, slot: usize, fate: Fate) {
        if let Some(a) = lock(&self.ledger)
            .by_id
            .get_mut(&id)
            .and_then(|v| v.get_mut(slot))
        {
            a.fate = fate;
        }
    }

    fn record_killed(&self, node: &Node, id: u64, method: &str, body: Vec<u8>) {
        let mut ledger = lock(&self.ledger);
        let order = ledger.arrivals;
        ledger.arrivals += 1;
        ledger.by_id.entry(id).or_default().push(Arrival {
            upstream: node.index,
            method: method.to_string(),
            body,
            order,
            fate: Fate::Killed,
        });
    }
}

/// The body of a response to request `id`: what the upstream received, so the client can
/// check it got the answer to its own request, with its own body.
pub fn receipt(id: u64, method: &str, body: &[u8]) -> String {
    format!(
        "{id} {method} {} {}\n",
        body.len(),
        crate::data::sha1_hex(body)
    )
}

/// `L{i}`, as `x-upstream` names upstream `i`.
pub fn upstream_name(i: usize) -> String {
    format!("L{i}")
}

/// The index in `L{i}`.
pub fn upstream_index(name: &str) -> Option<usize> {
    name.strip_prefix('L')?.parse().ok()
}

/// One running period of an upstream (between a start or revival and a kill).
struct Run {
    stopping: Arc<AtomicBool>,
    accept_thread: JoinHandle<()>,
}

struct Node {
    index: usize,
    addr: SocketAddr,
    mode: AtomicU8,
    /// true while alive; held for reading from recording a request to the end of its
    /// response, for writing by a kill.
    alive: RwLock<bool>,
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next_conn: AtomicU64,
    run: Mutex<Option<Run>>,
    kills: AtomicU64,
    /// While dead: a socket holding the port without listening, so that nothing else (a
    /// listener or an outgoing connection of a test running in parallel) takes the port
    /// before the node comes back on it (connects are refused meanwhile).
    placeholder: Mutex<Option<socket2::Socket>>,
}

/// Upstreams `L0`, `L1`, ... sharing one ledger.
pub struct Fleet {
    nodes: Vec<Arc<Node>>,
    shared: Arc<Shared>,
}

impl Fleet {
    /// Start `n` upstreams on 127.0.0.1:0; `treatment` says how each id is treated.
    pub fn start(n: usize, treatment: impl Fn(u64) -> Treatment + Send + Sync + 'static) -> Fleet {
        let shared = Arc::new(Shared {
            ledger: Mutex::new(LedgerState::default()),
            treatment: Box::new(treatment),
        });
        let nodes = (0..n)
            .map(|index| {
                let listener = bind_reusable("127.0.0.1:0".parse().expect("a literal address"))
                    .expect("bind an upstream on 127.0.0.1:0");
                let addr = listener.local_addr().expect("local address of an upstream");
                let node = Arc::new(Node {
                    index,
                    addr,
                    mode: AtomicU8::new(Mode::Normal.code()),
                    alive: RwLock::new(true),
                    conns: Mutex::new(HashMap::new()),
                    threads: Mutex::new(Vec::new()),
                    next_conn: AtomicU64::new(0),
                    run: Mutex::new(None),
                    kills: AtomicU64::new(0),
                    placeholder: Mutex::new(None),
                });
                let run = spawn_accept(&node, &shared, listener);
                *lock(&node.run) = Some(run);
                node
            })
            .collect();
        Fleet { nodes, shared }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr
    }

    pub fn set_mode(&self, i: usize, mode: Mode) {
        self.nodes[i].mode.store(mode.code(), Ordering::SeqCst);
    }

    /// Whether upstream `i` is listening.
    pub fn is_alive(&self, i: usize) -> bool {
        *self.nodes[i]
            .alive
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Kills of upstream `i` so far.
    pub fn kills(&self, i: usize) -> u64 {
        self.nodes[i].kills.load(Ordering::SeqCst)
    }

    /// Die: stop answering (a request read from now on is recorded [`Fate::Killed`]), close
    /// the listener (connects are refused), shut every connection down both ways, join every
    /// thread. Idempotent.
    pub fn kill(&self, i: usize) {
        kill_node(&self.nodes[i]);
    }

    /// Come back on the same address. Panics if the port cannot be bound again in time.
    pub fn revive(&self, i: usize) {
        let node = &self.nodes[i];
        let mut alive = node.alive.write().unwrap_or_else(|p| p.into_inner());
        assert!(!*alive, "revive() of upstream L{i}, which is alive");
        let started = Instant::now();
        let listener = loop {
            match bind_reusable(node.addr) {
                Ok(l) => break l,
                Err(_) if started.elapsed() < REBIND_PATIENCE => std::thread::sleep(REBIND_PAUSE),
                Err(e) => panic!(
                    "could not bind upstream L{i} again on {} within {REBIND_PATIENCE:?}: {e}",
                    node.addr
                ),
            }
        };
        *alive = true;
        // Listening again: the port no longer needs holding.
        lock(&node.placeholder).take();
        let run = spawn_accept(node, &self.shared, listener);
        *lock(&node.run) = Some(run);
    }

    /// Kill every upstream (so every arrival has its final fate) and join every thread.
    pub fn stop(&self) {
        for node in &self.nodes {
            kill_node(node);
        }
    }

    /// Every arrival of every id, in arrival order per id.
    pub fn arrivals(&self) -> HashMap<u64, Vec<Arrival>> {
        lock(&self.shared.ledger).by_id.clone()
    }

    /// Arrivals at all upstreams so far.
    pub fn arrival_count(&self) -> u64 {
        lock(&self.shared.ledger).arrivals
    }

    /// Requests the upstreams could not read, or that carried no valid id.
    pub fn anomalies(&self) -> Vec<String> {
        lock(&self.shared.ledger).anomalies.clone()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill_node(node: &Node) {
    {
        let mut alive = node.alive.write().unwrap_or_else(|p| p.into_inner());
        let Some(run) = lock(&node.run).take() else {
            return;
        };
        *alive = false;
        node.kills.fetch_add(1, Ordering::SeqCst);
        // Hold the port before the listener closes (both share it by SO_REUSEPORT).
        if let Ok(placeholder) = bind_placeholder(node.addr) {
            *lock(&node.placeholder) = Some(placeholder);
        }
        run.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); it sees `stopping` and returns, dropping the listener.
        let _ = TcpStream::connect_timeout(&node.addr, Duration::from_secs(5));
        let _ = run.accept_thread.join();
        for stream in lock(&node.conns).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
    let threads: Vec<_> = lock(&node.threads).drain(..).collect();
    for t in threads {
        let _ = t.join();
    }
}

fn spawn_accept(node: &Arc<Node>, shared: &Arc<Shared>, listener: TcpListener) -> Run {
    let stopping = Arc::new(AtomicBool::new(false));
    let (n, s, stop) = (node.clone(), shared.clone(), stopping.clone());
    let accept_thread = std::thread::Builder::new()
        .name(format!("ledger-L{}-accept", node.index))
        .spawn(move || accept_loop(&n, &s, listener, &stop))
        .expect("spawn an upstream accept thread");
    Run {
        stopping,
        accept_thread,
    }
}

fn accept_loop(node: &Arc<Node>, shared: &Arc<Shared>, listener: TcpListener, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let Ok(tracked) = stream.try_clone() else {
            continue;
        };
        let id = node.next_conn.fetch_add(1, Ordering::SeqCst);
        lock(&node.conns).insert(id, tracked);
        let (n, s) = (node.clone(), shared.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("ledger-L{}-conn", node.index))
            .spawn(move || {
                serve(&n, &s, stream, id);
                lock(&n.conns).remove(&id);
            });
        match spawned {
            Ok(handle) => {
                let mut threads = lock(&node.threads);
                threads.retain(|t| !t.is_finished());
                threads.push(handle);
            }
            Err(e) => {
                lock(&node.conns).remove(&id);
                shared.anomaly(format!(
                    "L{}: cannot spawn a connection thread: {e}",
                    node.index
                ));
            }
        }
    }
}

/// A request as read: its id (from the header and path, which must agree), method, body.
struct Request {
    id: u64,
    method: String,
    body: Vec<u8>,
    close: bool,
}

fn serve(node: &Node, shared: &Shared, stream: TcpStream, conn: u64) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = WireReader::new(stream);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                // A kill shuts the socket down under a request being read: not an anomaly.
                if *node.alive.read().unwrap_or_else(|p| p.into_inner()) {
                    shared.anomaly(format!("L{} connection {conn}: {e}", node.index));
                }
                break;
            }
        };
        let alive = node.alive.read().unwrap_or_else(|p| p.into_inner());
        if !*alive {
            shared.record_killed(node, req.id, &req.method, req.body);
            break;
        }
        let treatment = (shared.treatment)(req.id);
        let answer = receipt(req.id, &req.method, &req.body);
        let (slot, fault) =
            shared.arrive(node, req.id, &req.method, req.body, treatment.first_arrival);
        let close = req.close || treatment.close;
        let hints = if treatment.early_hints {
            EARLY_HINTS
        } else {
            ""
        };
        let (fate, keep_going) = match fault {
            Fault::Status(status) => {
                let bytes = response(
                    node.index,
                    req.id,
                    status,
                    &answer,
                    treatment.chunked,
                    close,
                );
                let mut out = hints.as_bytes().to_vec();
                out.extend_from_slice(&bytes);
                match writer.write_all(&out).and_then(|()| writer.flush()) {
                    Ok(()) => (Fate::Answered(status), !close),
                    Err(e) => {
                        shared.anomaly(format!(
                            "L{} connection {conn}: writing the response to {}: {e}",
                            node.index, req.id
                        ));
                        (Fate::Closed, false)
                    }
                }
            }
            Fault::Reset => {
                let _ = writer.write_all(hints.as_bytes());
                // The tracked clone must go too, or the socket outlives this thread.
                lock(&node.conns).remove(&conn);
                let _ = SockRef::from(&writer).set_linger(Some(Duration::ZERO));
                (Fate::Reset, false)
            }
            Fault::Close => {
                let _ = writer.write_all(hints.as_bytes());
                let _ = writer.shutdown(Shutdown::Both);
                (Fate::Closed, false)
            }
            Fault::Truncate => {
                let whole = response(node.index, req.id, 200, &answer, false, false);
                let cut = whole.len() - answer.len() / 2;
                let mut out = hints.as_bytes().to_vec();
                out.extend_from_slice(&whole[..cut]);
                let _ = writer.write_all(&out);
                let _ = writer.shutdown(Shutdown::Both);
                (Fate::Truncated, false)
            }
        };
        shared.settle(req.id, slot, fate);
        drop(alive);
        if !keep_going {
            if fate == Fate::Reset {
                // Close without shutdown(): the last close with linger 0 sends the reset.
                return;
            }
            break;
        }
    }
    let _ = writer.shutdown(Shutdown::Both);
}

/// The bytes of a response to request `id` from upstream `index`.
fn response(index: usize, id: u64, status: u16, body: &str, chunked: bool, close: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} Status\r\nx-upstream: {}\r\n{REQUEST_ID_HEADER}: {id}\r\n",
        upstream_name(index)
    );
    if close {
        out.push_str("connection: close\r\n");
    }
    if chunked {
        out.push_str("transfer-encoding: chunked\r\n\r\n");
        // Two chunks, so that a chunk boundary falls inside the body.
        let (a, b) = body.split_at(body.len() / 2);
        for part in [a, b].into_iter().filter(|p| !p.is_empty()) {
            out.push_str(&format!("{:x}\r\n{part}\r\n", part.len()));
        }
        out.push_str("0\r\n\r\n");
    } else {
        out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    }
    out.into_bytes()
}

fn read_request(reader: &mut WireReader<TcpStream>) -> Result<Option<Request>, WireError> {
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
        Err(e) => return Err(WireError::Malformed(format!("request head: {e}"))),
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let path = parsed.path.unwrap_or_default().to_string();
    let headers = owned_headers(parsed.headers);
    let header_id: Vec<String> = header_values(&headers, REQUEST_ID_HEADER)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    let path_id = path.strip_prefix(ID_PATH_PREFIX).map(str::to_string);
    let id = match (header_id.as_slice(), path_id) {
        ([h], Some(p)) if *h == p => p
            .parse::<u64>()
            .map_err(|_| WireError::Malformed(format!("request id {p:?} is not a number")))?,
        (h, p) => {
            return Err(WireError::Malformed(format!(
                "request ids disagree or are missing: header {h:?}, path {p:?}"
            )))
        }
    };
    let te = header_tokens(&headers, "transfer-encoding");
    let body = if te.last().map(String::as_str) == Some("chunked") {
        reader.read_chunked()?.body
    } else {
        let length: Vec<String> = header_values(&headers, "content-length")
            .map(|v| String::from_utf8_lossy(v).trim().to_string())
            .collect();
        match length.as_slice() {
            [] => Vec::new(),
            [n] => {
                let n: usize = n
                    .parse()
                    .map_err(|_| WireError::Malformed(format!("content-length {n:?}")))?;
                reader.read_exact_vec(n, "a request body")?
            }
            many => {
                return Err(WireError::Malformed(format!(
                    "several content-lengths {many:?}"
                )))
            }
        }
    };
    let close = header_tokens(&headers, "connection")
        .iter()
        .any(|t| t == "close");
    Ok(Some(Request {
        id,
        method,
        body,
        close,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;

    fn exchange(client: &mut Client, id: u64, method: &str, body: Option<&[u8]>) -> u16 {
        let id_text = id.to_string();
        client
            .send_request(
                method,
                &format!("{ID_PATH_PREFIX}{id}"),
                &[(REQUEST_ID_HEADER, &id_text)],
                body,
            )
            .expect("send");
        let r = client.read_response(false).expect("a response");
        assert_eq!(
            r.header(REQUEST_ID_HEADER).as_deref(),
            Some(id_text.as_str())
        );
        r.status
    }

    #[test]
    fn ledger_records_fates_kills_and_revivals() {
        let fleet = Fleet::start(2, |id| Treatment {
            first_arrival: match id {
                1 => Fault::Status(503),
                2 => Fault::Reset,
                _ => Fault::Status(200),
            },
            early_hints: id == 4,
            chunked: id == 4,
            ..Treatment::default()
        });
        let mut c = Client::connect(fleet.addr(0)).expect("connect");
        assert_eq!(exchange(&mut c, 0, "GET", None), 200);
        assert_eq!(exchange(&mut c, 1, "POST", Some(b"abc")), 503);
        // Second arrival of id 1: no fault.
        let mut d = Client::connect(fleet.addr(1)).expect("connect");
        assert_eq!(exchange(&mut d, 1, "POST", Some(b"abc")), 200);
        c.send_request("GET", "/nl/2", &[(REQUEST_ID_HEADER, "2")], None)
            .expect("send");
        assert!(c.read_response(false).is_err(), "id 2 is reset");
        fleet.set_mode(1, Mode::Failing503);
        assert_eq!(exchange(&mut d, 3, "GET", None), 503);
        fleet.kill(1);
        assert!(!fleet.is_alive(1));
        // No connect probe of the dead node's port here: once freed, the port may be bound
        // by another test running in parallel (or a loopback connect may reach itself), so a
        // successful connect proves nothing. What a dead node does to requests is shown end
        // to end where requests meet it (`nothing_lost`).
        fleet.revive(1);
        fleet.set_mode(1, Mode::Normal);
        let mut e = Client::connect(fleet.addr(1)).expect("connect after revival");
        e.send_request("GET", "/nl/4", &[(REQUEST_ID_HEADER, "4")], None)
            .expect("send");
        let r = e.read_response(false).expect("a response");
        assert_eq!(
            r.interim.iter().map(|i| i.status).collect::<Vec<_>>(),
            [103]
        );
        assert_eq!(r.framing, crate::client::BodyFraming::Chunked);
        assert_eq!(r.body, receipt(4, "GET", b"").as_bytes());
        fleet.stop();
        let a = fleet.arrivals();
        let fates = |id: u64| -> Vec<(usize, Fate)> {
            a[&id].iter().map(|x| (x.upstream, x.fate)).collect()
        };
        assert_eq!(fates(0), [(0, Fate::Answered(200))]);
        assert_eq!(
            fates(1),
            [(0, Fate::Answered(503)), (1, Fate::Answered(200))]
        );
        assert_eq!(a[&1][1].body, b"abc");
        assert_eq!(fates(2), [(0, Fate::Reset)]);
        assert_eq!(fates(3), [(1, Fate::Answered(503))]);
        assert_eq!(fates(4), [(1, Fate::Answered(200))]);
        assert_eq!(fleet.kills(1), 2, "the kill above and the one by stop()");
        assert!(fleet.anomalies().is_empty(), "{:?}", fleet.anomalies());
    }
}
