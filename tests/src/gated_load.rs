//! Keep-alive clients sending numbered requests through the proxy, each id exactly once, with
//! a count gate: the test lets ids through up to a mark, waits until every id below it was
//! issued, applies a fault or a change, and opens the gate to the next mark. So a fault
//! schedule is a function of request counts, never of time.
//!
//! Each client records, for every id it sent, the one response it read or why it got none,
//! and flags bytes the proxy sent that no request asked for. Some clients pipeline: they
//! write two requests back to back, then read both responses.

use crate::client::{build_request, chunked_body, Client, RawResponse};
use crate::ledger::{upstream_index, ID_PATH_PREFIX, REQUEST_ID_HEADER};
use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Read time-out of a load client: above the proxy's default whole-request timeout (15 s),
/// so a request the proxy gives up on gets its 504 before the client gives up on it.
pub const LOAD_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunk size of chunked request bodies: small, so a body has several chunks.
const CHUNK_BYTES: usize = 700;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One request to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub method: &'static str,
    /// Sent with Content-Length (or chunked) when present.
    pub body: Option<Vec<u8>>,
    /// The body is sent with chunked framing.
    pub chunked: bool,
    /// Sent with `Expect: 100-continue` (the body follows at once, without waiting).
    pub expect_continue: bool,
    /// Sent with `Connection: close` (the client opens a new connection after it).
    pub close: bool,
}

impl Planned {
    pub fn body_bytes(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default()
    }
}

/// What the client saw of one request.
#[derive(Debug, Clone)]
pub enum Outcome {
    Response(Answer),
    /// A response head arrived, then the body broke off (the connection closed or was
    /// reset): why.
    Cut(String),
    /// No response: why.
    Lost(String),
    /// A pipelined request written behind one whose response ended the connection, and
    /// never answered: why. Fine only if no upstream processed it.
    Unanswered(String),
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// `x-upstream: L{i}`.
    pub upstream: Option<usize>,
    /// `x-coremesh-error`: the proxy's own error.
    pub proxy_error: Option<String>,
    /// `x-request-id` of the response.
    pub echoed_id: Option<String>,
    pub body: Vec<u8>,
    /// Statuses of the interim (1xx) responses before it, in order.
    pub interim: Vec<u16>,
}

impl Answer {
    fn of(r: &RawResponse) -> Answer {
        Answer {
            status: r.status,
            upstream: r.header("x-upstream").and_then(|n| upstream_index(&n)),
            proxy_error: r.header("x-coremesh-error"),
            echoed_id: r.header(REQUEST_ID_HEADER),
            body: r.body.clone(),
            interim: r.interim.iter().map(|i| i.status).collect(),
        }
    }
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

struct GateState {
    next: u64,
    open_below: u64,
    total: u64,
}

/// Hands out ids 0, 1, ... below the current mark.
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn new(total: u64, open_below: u64) -> Gate {
        Gate {
            state: Mutex::new(GateState {
                next: 0,
                open_below: open_below.min(total),
                total,
            }),
            changed: Condvar::new(),
        }
    }

    /// The next id, waiting while the gate is closed; `None` once every id was handed out.
    fn take(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        loop {
            if s.next >= s.total {
                return None;
            }
            if s.next < s.open_below {
                let id = s.next;
                s.next += 1;
                self.changed.notify_all();
                return Some(id);
            }
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wait until every id below `mark` was handed out; false after `limit`.
    pub fn wait_issued(&self, mark: u64, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut s = lock(&self.state);
        while s.next < mark.min(s.total) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Let ids below `mark` through.
    pub fn open_to(&self, mark: u64) {
        let mut s = lock(&self.state);
        s.open_below = mark.min(s.total);
        self.changed.notify_all();
    }

    /// The next id if the gate lets it through now; never waits.
    fn try_take(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        if s.next < s.total && s.next < s.open_below {
            let id = s.next;
            s.next += 1;
            self.changed.notify_all();
            return Some(id);
        }
        None
    }

    /// Ids handed out so far.
    pub fn issued(&self) -> u64 {
        lock(&self.state).next
    }
}

/// What one client saw.
#[derive(Debug, Default)]
pub struct ClientReport {
    pub outcomes: Vec<(u64, Outcome)>,
    /// Bytes no request asked for, and keep-alive connections the proxy closed unannounced.
    pub violations: Vec<String>,
    pub connections: u64,
    /// Requests written behind another before its response was read.
    pub pipelined: u64,
}

/// Clients sending `plans[id]` for every id, through the gate.
pub struct GatedLoad {
    gate: Arc<Gate>,
    threads: Vec<JoinHandle<ClientReport>>,
}

impl GatedLoad {
    /// Start `clients` threads against `addr`, the gate open below `first_mark`; one client
    /// in every `pipelining_every` (0: none) writes requests two at a time.
    pub fn start(
        addr: SocketAddr,
        clients: usize,
        pipelining_every: usize,
        plans: Arc<Vec<Planned>>,
        first_mark: u64,
    ) -> GatedLoad {
        let gate = Arc::new(Gate::new(plans.len() as u64, first_mark));
        let threads = (0..clients)
            .map(|c| {
                let (gate, plans) = (gate.clone(), plans.clone());
                std::thread::Builder::new()
                    .name(format!("gated-load-{c}"))
                    .spawn(move || {
                        let pipelining = pipelining_every > 0 && c % pipelining_every == 0;
                        run_client(c, addr, &gate, &plans, pipelining)
                    })
                    .expect("spawn a load client")
            })
            .collect();
        GatedLoad { gate, threads }
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    /// Open the gate fully and collect every client's report.
    pub fn finish(mut self) -> Vec<ClientReport> {
        self.gate.open_to(u64::MAX);
        std::mem::take(&mut self.threads)
            .into_iter()
            .enumerate()
            .map(|(c, t)| {
                t.join().unwrap_or_else(|_| ClientReport {
                    violations: vec![format!("client {c}: its thread panicked")],
                    ..ClientReport::default()
                })
            })
            .collect()
    }
}

impl Drop for GatedLoad {
    /// A test that gives up (panics) hands out no more ids, and its clients end after their
    /// current request.
    fn drop(&mut self) {
        {
            let mut s = lock(&self.gate.state);
            s.total = s.next;
            self.gate.changed.notify_all();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The bytes of request `id` as `plan` says.
fn request_bytes(id: u64, plan: &Planned) -> Vec<u8> {
    let id_text = id.to_string();
    let mut headers = vec![(REQUEST_ID_HEADER, id_text.as_str())];
    if plan.close {
        headers.push(("connection", "close"));
    }
    if plan.expect_continue {
        headers.push(("expect", "100-continue"));
    }
    let framed;
    let mut body = plan.body.as_deref();
    if let (true, Some(b)) = (plan.chunked, body) {
        headers.push(("transfer-encoding", "chunked"));
        framed = chunked_body(b, CHUNK_BYTES, &[]);
        body = Some(&framed);
    }
    build_request(
        plan.method,
        &format!("{ID_PATH_PREFIX}{id}"),
        &headers,
        body,
    )
}

/// Read the response to one request (interim responses, then the final one); and whether
/// the connection may carry another. A failure once the final head is in is a response
/// cut short, whatever ended it (a close, or a reset because a pipelined request was left
/// unread); before that, a response that never came.
fn read_one(client: &mut Client, c: usize, plan: &Planned) -> (Outcome, bool) {
    let mut interim = Vec::new();
    let mut response = loop {
        match client.read_head_only() {
            Ok(r) if (100..200).contains(&r.status) && r.status != 101 => interim.push(r),
            Ok(r) => break r,
            Err(e) => {
                let why = format!("client {c}: request written, no response: {e}");
                return (Outcome::Lost(why), false);
            }
        }
    };
    response.interim = interim;
    match client.read_body(&mut response, false) {
        Ok(()) => {
            let reusable = !(response.has_connection_close() || plan.close);
            (Outcome::Response(Answer::of(&response)), reusable)
        }
        Err(e) => {
            let why = format!(
                "client {c}: {} from {:?}, then the body broke off: {e}",
                response.status,
                response.header("x-upstream")
            );
            (Outcome::Cut(why), false)
        }
    }
}

fn run_client(
    c: usize,
    addr: SocketAddr,
    gate: &Gate,
    plans: &[Planned],
    pipelining: bool,
) -> ClientReport {
    let mut report = ClientReport::default();
    let mut connection: Option<Client> = None;
    while let Some(id) = gate.take() {
        let plan = &plans[id as usize];
        if let Some(client) = &mut connection {
            if client.buffered_len() > 0 || client.peer_closed_now() {
                let why = if client.buffered_len() > 0 {
                    format!(
                        "{} bytes arrived that no request asked for",
                        client.buffered_len()
                    )
                } else {
                    "the proxy closed the keep-alive connection unannounced".to_string()
                };
                report
                    .violations
                    .push(format!("client {c}, before id {id}: {why}"));
                connection = None;
            }
        }
        let client = match &mut connection {
            Some(client) => client,
            None => match Client::connect(addr) {
                Ok(client) => {
                    let _ = client.set_read_timeout(LOAD_READ_TIMEOUT);
                    report.connections += 1;
                    connection.insert(client)
                }
                Err(e) => {
                    report
                        .outcomes
                        .push((id, Outcome::Lost(format!("connect failed: {e}"))));
                    continue;
                }
            },
        };
        // A pipelining client writes a second request behind the first (unless the first
        // closes the connection, or the gate holds the next id back).
        let second = if pipelining && !plan.close {
            gate.try_take()
        } else {
            None
        };
        let mut bytes = request_bytes(id, plan);
        if let Some(id2) = second {
            bytes.extend(request_bytes(id2, &plans[id2 as usize]));
            report.pipelined += 1;
        }
        if let Err(e) = client.send_raw(&bytes) {
            let why = format!("client {c}: writing the request failed: {e}");
            report.outcomes.push((id, Outcome::Lost(why.clone())));
            if let Some(id2) = second {
                report.outcomes.push((id2, Outcome::Lost(why)));
            }
            connection = None;
            continue;
        }
        let (outcome, reusable) = read_one(client, c, plan);
        report.outcomes.push((id, outcome));
        if let Some(id2) = second {
            let plan2 = &plans[id2 as usize];
            let (outcome2, reusable2) = match read_one(client, c, plan2) {
                // The connection ended with the first response: the second request may
                // go unanswered, as long as nothing processed it.
                (Outcome::Lost(why), _) if !reusable => (Outcome::Unanswered(why), false),
                other => other,
            };
            report.outcomes.push((id2, outcome2));
            if !reusable2 {
                connection = None;
            }
        } else if !reusable {
            connection = None;
        }
    }
    report
}
