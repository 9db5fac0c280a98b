//! [`Span`]: one finished operation of a trace — the proxy's span for a request (kind
//! [`SpanKind::Server`]) or one attempt to an endpoint (kind [`SpanKind::Client`], a child
//! of the request's span). Plain data: built on a core, sent to the exporter through the
//! span queue. Times are passed in (`SystemTime`), never read here.

use crate::metrics::RetryReason;
use crate::trace::TraceContext;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What the span stands for, as OTLP's `SpanKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The proxy handling a request from a client.
    Server,
    /// One attempt of the proxy to an upstream endpoint.
    Client,
}

/// How the operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpanStatus {
    /// Not said (the span's end was not reached normally).
    #[default]
    Unset,
    /// Ended well.
    Ok,
    /// Failed; the message is a short stable kind such as `connect-timeout`.
    Error(&'static str),
}

/// What the proxy knows about the request or attempt. Names are `Arc<str>` (from the
/// metrics layout or the routing snapshot), so setting one is a reference count, not a copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanAttributes {
    /// Destination service.
    pub service: Option<Arc<str>>,
    /// Route that matched.
    pub route: Option<Arc<str>>,
    /// Endpoint sent to (`ip:port`).
    pub endpoint: Option<Arc<str>>,
    /// Attempt number, from 1.
    pub attempt: Option<u32>,
    /// Why this attempt is a retry (set on attempts after the first).
    pub retry_reason: Option<RetryReason>,
    /// HTTP status of the response (sent to the client, or received from the endpoint).
    pub http_status: Option<u16>,
    /// Time the request had left when the span started (its deadline).
    pub deadline: Option<Duration>,
    /// A gRPC call's status (`grpc-status` of its trailers, or of the proxy's own answer).
    pub grpc_status: Option<u32>,
    /// The caller's identity that mutual TLS verified (an inbound request's span).
    pub client_id: Option<Arc<str>>,
    /// The endpoint's identity that mutual TLS verified (an attempt to a meshed endpoint).
    pub server_id: Option<Arc<str>>,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// The trace it belongs to.
    pub trace_id: [u8; 16],
    /// Its own id.
    pub span_id: [u8; 8],
    /// The span it is a child of (the caller's span, or the request span for an attempt).
    pub parent_span_id: Option<[u8; 8]>,
    /// Operation name.
    pub name: Cow<'static, str>,
    /// Server (request) or client (attempt).
    pub kind: SpanKind,
    /// When it began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// What the proxy knows about it.
    pub attributes: SpanAttributes,
    /// How it ended.
    pub status: SpanStatus,
}

impl Span {
    /// A span for `context` (its ids and parent), begun at `start`; `end` starts equal to
    /// `start` until [`finish`](Self::finish).
    pub fn start(
        context: &TraceContext,
        name: impl Into<Cow<'static, str>>,
        kind: SpanKind,
        start: SystemTime,
    ) -> Span {
        Span {
            trace_id: context.trace_id,
            span_id: context.span_id,
            parent_span_id: context.parent_span_id,
            name: name.into(),
            kind,
            start,
            end: start,
            attributes: SpanAttributes::default(),
            status: SpanStatus::Unset,
        }
    }

    /// Ends the span at `end` with `status`.
    pub fn finish(&mut self, end: SystemTime, status: SpanStatus) {
        self.end = end;
        self.status = status;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_takes_its_ids_from_the_context() {
        let context = TraceContext {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent_span_id: Some([3; 8]),
            sampled: true,
            debug: false,
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut span = Span::start(&context, "attempt", SpanKind::Client, t0);
        assert_eq!(span.end, t0);
        span.finish(t0 + Duration::from_millis(5), SpanStatus::Error("reset"));
        assert_eq!(span.trace_id, [1; 16]);
        assert_eq!(span.span_id, [2; 8]);
        assert_eq!(span.parent_span_id, Some([3; 8]));
        assert_eq!(span.end, t0 + Duration::from_millis(5));
        assert_eq!(span.status, SpanStatus::Error("reset"));
        assert_eq!(span.name, "attempt");
    }
}
