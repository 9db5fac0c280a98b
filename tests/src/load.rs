//! Keep-alive load for graceful-shutdown tests: client threads that send requests back to back
//! and tell a clean stop from a failed request.
//!
//! The rules, so a correct proxy can never make the test flake:
//! - each client opens one connection before shutdown begins and sends requests on it back to
//!   back (GET `{path}/{client}/{n}`, answered by an echo upstream);
//! - a full 200 whose echoed request line names that very request is a success;
//! - after shutdown began, a response with `Connection: close`, or a connection the proxy had
//!   already closed cleanly before the next request was written, or a refused connect, stops
//!   the client: that request was never sent;
//! - anything else is a failure: a request written and then no full response (end of stream,
//!   reset, time-out), a wrong status or body, a write that failed, or the proxy closing a
//!   connection before shutdown began.

use crate::client::Client;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A client gives up (and reports a failure) after this long without being stopped.
const MAX_CLIENT_RUN: Duration = Duration::from_secs(60);

/// How a client ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEnd {
    /// Got a response with `Connection: close` after shutdown began.
    ConnectionClose,
    /// Found its connection closed cleanly before writing the next request.
    ClosedBeforeWrite,
    /// A (re)connect was refused after shutdown began.
    ConnectRefused,
    /// Stopped by a failure (listed in [`LoadReport::failures`]).
    Failed,
}

/// What the load saw.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests that got a full, correct 200.
    pub succeeded: u64,
    /// Every failed request, with its client and why.
    pub failures: Vec<String>,
    /// How each client ended.
    pub ends: Vec<ClientEnd>,
}

/// Running load clients.
pub struct Load {
    shutdown_began: Arc<AtomicBool>,
    successes: Arc<Vec<AtomicU64>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<ClientEnd>>,
}

impl Load {
    /// Start `clients` threads sending GETs under `path` to `addr`.
    pub fn start(addr: SocketAddr, clients: usize, path: &str) -> Load {
        let shutdown_began = Arc::new(AtomicBool::new(false));
        let successes = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|id| {
                let shutdown_began = shutdown_began.clone();
                let successes = successes.clone();
                let failures = failures.clone();
                let path = path.to_string();
                std::thread::Builder::new()
                    .name(format!("load-client-{id}"))
                    .spawn(move || {
                        let mut fail = |why: String| {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(format!("client {id}: {why}"))
                        };
                        run_client(addr, id, &path, &shutdown_began, &successes[id], &mut fail)
                    })
                    .expect("spawn a load client thread")
            })
            .collect();
        Load {
            shutdown_began,
            successes,
            failures,
            threads,
        }
    }

    /// Wait until every client has had at least `n` successes; false after `timeout` (or as
    /// soon as a failure is recorded).
    pub fn wait_for_successes_per_client(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.successes.iter().all(|s| s.load(Ordering::SeqCst) >= n) {
                return true;
            }
            if Instant::now() >= deadline
                || !self
                    .failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
            {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Successes so far, all clients.
    pub fn succeeded(&self) -> u64 {
        self.successes
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .sum()
    }

    /// Failures so far.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Call right before shutting the proxy down: from now on a clean close stops a client.
    pub fn mark_shutdown_began(&self) {
        self.shutdown_began.store(true, Ordering::SeqCst);
    }

    /// Wait for every client to end (each is bounded by its read time-outs and
    /// [`MAX_CLIENT_RUN`]).
    pub fn join(self) -> LoadReport {
        let ends = self
            .threads
            .into_iter()
            .map(|t| t.join().unwrap_or(ClientEnd::Failed))
            .collect();
        let succeeded = self
            .successes
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .sum();
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        LoadReport {
            succeeded,
            failures,
            ends,
        }
    }
}

fn run_client(
    addr: SocketAddr,
    id: usize,
    path: &str,
    shutdown_began: &AtomicBool,
    successes: &AtomicU64,
    fail: &mut dyn FnMut(String),
) -> ClientEnd {
    let started = Instant::now();
    let mut n = 0u64;
    'connections: loop {
        let mut client = match Client::connect(addr) {
            Ok(c) => c,
            Err(e)
                if shutdown_began.load(Ordering::SeqCst)
                    && e.kind() == std::io::ErrorKind::ConnectionRefused =>
            {
                return ClientEnd::ConnectRefused
            }
            Err(e) => {
                fail(format!("connect failed: {e}"));
                return ClientEnd::Failed;
            }
        };
        if shutdown_began.load(Ordering::SeqCst) {
            // Only reached after a `Connection: close` that came before shutdown began: do not
            // start a new connection the closing listener might reset.
            return ClientEnd::ConnectionClose;
        }
        loop {
            if started.elapsed() > MAX_CLIENT_RUN {
                fail(format!(
                    "still running after {MAX_CLIENT_RUN:?}: shutdown never stopped it"
                ));
                return ClientEnd::Failed;
            }
            if client.peer_closed_now() {
                if shutdown_began.load(Ordering::SeqCst) {
                    return ClientEnd::ClosedBeforeWrite;
                }
                fail(format!(
                    "the proxy closed the connection before request {n} and before shutdown began"
                ));
                return ClientEnd::Failed;
            }
            let target = format!("{path}/{id}/{n}");
            if let Err(e) = client.send_request("GET", &target, &[], None) {
                fail(format!("writing request {target} failed: {e}"));
                return ClientEnd::Failed;
            }
            let response = match client.read_response(false) {
                Ok(r) => r,
                Err(e) => {
                    fail(format!(
                        "request {target} was written and got no full response: {e}"
                    ));
                    return ClientEnd::Failed;
                }
            };
            let expected_line = format!("GET {target} HTTP/1.1\n");
            if response.status != 200 || !response.body.starts_with(expected_line.as_bytes()) {
                fail(format!(
                    "request {target}: status {} body starting {:?}",
                    response.status,
                    String::from_utf8_lossy(&response.body[..response.body.len().min(80)])
                ));
                return ClientEnd::Failed;
            }
            successes.fetch_add(1, Ordering::SeqCst);
            n += 1;
            if response.has_connection_close() {
                if shutdown_began.load(Ordering::SeqCst) {
                    return ClientEnd::ConnectionClose;
                }
                continue 'connections;
            }
        }
    }
}
