//! The request pipeline every protocol drives: where a request goes ([`plan`]: route,
//! service or fixed address, settings, deadline), its attempts ([`attempt`]: choose an
//! endpoint, send, classify, retry within the budget and the deadline) and what is
//! recorded of it ([`record`]: the balancer's outcome, metrics, spans, the access log).
//!
//! A codec (HTTP/1 in [`crate::http1`]) turns wire bytes into a request and the answer
//! back into bytes; it never decides to retry and never records an outcome itself.

pub mod attempt;
pub mod plan;
pub mod record;

use std::net::SocketAddr;
use std::time::Instant;

/// How a connection reached the proxy and where its requests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub direction: crate::sidecar::Direction,
    pub target: Target,
}

impl Origin {
    /// A connection to the explicit `[proxy] listen`: requests are routed.
    pub const EXPLICIT: Origin = Origin {
        direction: crate::sidecar::Direction::Proxy,
        target: Target::Route,
    };
}

/// Where the requests of one connection go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Routed on host, path and headers (the explicit listener).
    Route,
    /// Outbound: to the service claiming this original destination (looked up in each
    /// request's snapshot), else passed through to the destination itself.
    Destination(SocketAddr),
    /// Straight to this address (inbound: the application), with the client's address in
    /// `X-Forwarded-For`.
    Application(SocketAddr),
}

/// What the pipeline keeps of one request while it runs, whatever its protocol: its span,
/// its attempts, and the answer the client got.
pub struct RequestState {
    /// The request's trace, when tracing is active.
    pub trace: Option<crate::observe::tracing_ctx::RequestTrace>,
    /// Header lines carrying the current attempt's trace context.
    pub trace_lines: Vec<u8>,
    /// Attempts made for the current request.
    pub attempts: u32,
    /// When the current attempt's connection was ready and its request began to go out.
    pub sent_at: Instant,
    /// The status the client got and the endpoint that answered (0 and `None` before).
    pub status: u16,
    pub endpoint: Option<SocketAddr>,
    /// A gRPC call's status, once known.
    pub grpc_status: Option<u32>,
    /// The caller's identity that mutual TLS verified (inbound; set once per connection
    /// for HTTP/1, per stream for HTTP/2): the `client_id` of metrics, span and access log.
    pub client_id: Option<std::rc::Rc<str>>,
}

impl Default for RequestState {
    fn default() -> Self {
        RequestState {
            trace: None,
            trace_lines: Vec::new(),
            attempts: 0,
            sent_at: Instant::now(),
            status: 0,
            endpoint: None,
            grpc_status: None,
            client_id: None,
        }
    }
}

impl RequestState {
    /// Ready for the next request (buffers and the trace's storage are kept).
    pub fn reset(&mut self) {
        self.status = 0;
        self.endpoint = None;
        self.grpc_status = None;
        self.attempts = 0;
        if let Some(t) = &mut self.trace {
            t.attempt = None;
        }
    }
}
