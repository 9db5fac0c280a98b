//! Driving sequential traffic through the proxy and counting where it went, for the
//! balancing, retry and deadline suites: one GET at a time on a keep-alive [`Client`], each
//! response attributed to the upstream that answered it (its `x-upstream` header) or to the
//! proxy (`x-coremesh-error`), and a bounded wait for conditions the proxy reaches on its
//! own clock (ejection back-offs, gossip ticks).

use crate::client::{Client, RawResponse};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Who produced a response: `x-upstream: <name>` of a test upstream, `proxy:<kind>` for the
/// proxy's own error (`x-coremesh-error`), `unknown` otherwise.
pub fn answered_by(response: &RawResponse) -> String {
    if let Some(name) = response.header("x-upstream") {
        return name;
    }
    match response.header("x-coremesh-error") {
        Some(kind) => format!("proxy:{kind}"),
        None => "unknown".to_string(),
    }
}

/// Send one GET on `client` and read its response; panics naming `what` on an I/O or
/// framing error (a client-visible failure as much as a bad status is).
pub fn get_on(
    client: &mut Client,
    path: &str,
    headers: &[(&str, &str)],
    what: &str,
) -> RawResponse {
    client
        .send_request("GET", path, headers, None)
        .unwrap_or_else(|e| panic!("{what}: sending GET {path}: {e}"));
    client
        .read_response(false)
        .unwrap_or_else(|e| panic!("{what}: reading the response to GET {path}: {e}"))
}

/// Responses counted by status and by who answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub by_status: BTreeMap<u16, u64>,
    pub by_answerer: BTreeMap<String, u64>,
    pub total: u64,
}

impl Tally {
    pub fn add(&mut self, response: &RawResponse) {
        *self.by_status.entry(response.status).or_default() += 1;
        *self.by_answerer.entry(answered_by(response)).or_default() += 1;
        self.total += 1;
    }
    /// Responses with `status`.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }
    /// Responses answered by the upstream named `name`.
    pub fn from(&self, name: &str) -> u64 {
        self.by_answerer.get(name).copied().unwrap_or(0)
    }
}

/// `n` sequential GETs of `path` on one keep-alive connection to `proxy`, tallied. Panics
/// if the proxy closes the connection or a response cannot be read.
pub fn sequential_gets(proxy: SocketAddr, n: usize, path: &str) -> Tally {
    let mut client = Client::connect(proxy).expect("connect to the proxy");
    sequential_gets_on(&mut client, n, path)
}

/// `n` sequential GETs of `path` on `client`, tallied.
pub fn sequential_gets_on(client: &mut Client, n: usize, path: &str) -> Tally {
    let mut tally = Tally::default();
    for i in 0..n {
        let response = get_on(client, path, &[], &format!("request {i} of {n}"));
        tally.add(&response);
    }
    tally
}

/// Poll `done` every `every` until it holds (true) or `limit` has passed (false).
pub fn wait_until(limit: Duration, every: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}
