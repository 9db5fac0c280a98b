//! Distributed tracing on a core: read the caller's context (W3C `traceparent` /
//! `tracestate`, B3 single or multi), make a span for the proxied request and a child span
//! for each attempt, write the attempt's context into the upstream head, and hand finished
//! sampled spans to the exporter queue without ever waiting (a full queue drops and counts).
//!
//! Tracing is active only when `telemetry.otlp_endpoint` is set; otherwise trace headers
//! pass through untouched and no ids are drawn.
//!
//! Over mutual TLS the spans carry the identities TLS verified: an inbound request's span
//! the caller's (`coremesh.client_id`), an attempt that a meshed endpoint answered the
//! endpoint's (`coremesh.server_id`).

use coremesh_telemetry::span::{Span, SpanKind, SpanStatus};
use coremesh_telemetry::span_queue::SpanSender;
use coremesh_telemetry::trace::{write_trace_headers, Formats, Sampler, TraceContext, TraceState};
use coremesh_telemetry::RetryReason;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// A core's tracer.
pub struct Tracer {
    pub sender: SpanSender,
    pub sampler: Sampler,
}

/// The trace of the request being handled on a connection.
pub struct RequestTrace {
    /// The proxy's span for the request (child of the caller's, or a new root).
    pub ctx: TraceContext,
    pub formats: Formats,
    /// The caller's `tracestate` value, copied (passed on unchanged).
    pub tracestate: Vec<u8>,
    pub start: SystemTime,
    /// The current attempt's span and when it began.
    pub attempt: Option<(TraceContext, SystemTime)>,
}

impl RequestTrace {
    /// Header lines for the upstream carrying the current attempt's context.
    pub fn write_attempt_headers(&self, out: &mut Vec<u8>) {
        if let Some((ctx, _)) = &self.attempt {
            let parts: [&[u8]; 1] = [&self.tracestate];
            let state = if self.tracestate.is_empty() {
                TraceState::default()
            } else {
                TraceState::parse(&parts)
            };
            write_trace_headers(ctx, self.formats, &state, out);
        }
    }
}

/// What the request's span records.
pub struct RequestRecord<'a> {
    pub service: Option<Arc<str>>,
    pub route: Option<&'a str>,
    /// The status the client got (0: none).
    pub status: u16,
    pub grpc_status: Option<u32>,
    /// The caller's identity that mutual TLS verified (inbound).
    pub client_id: Option<&'a str>,
}

/// What one attempt's span records.
pub struct AttemptRecord<'a> {
    pub service: &'a Arc<str>,
    pub endpoint: SocketAddr,
    pub number: u32,
    pub retry_reason: Option<RetryReason>,
    pub status: Option<u16>,
    pub error: Option<&'static str>,
    pub deadline: Duration,
}

impl Tracer {
    /// Finish the current attempt's span and queue it (sampled traces only).
    pub fn finish_attempt(&self, trace: &mut RequestTrace, record: AttemptRecord<'_>) {
        let Some((ctx, start)) = trace.attempt.take() else {
            return;
        };
        if !ctx.sampled {
            return;
        }
        let mut span = Span::start(&ctx, "attempt", SpanKind::Client, start);
        span.attributes.service = Some(record.service.clone());
        span.attributes.endpoint = Some(Arc::from(record.endpoint.to_string()));
        span.attributes.attempt = Some(record.number);
        span.attributes.retry_reason = record.retry_reason;
        span.attributes.http_status = record.status;
        span.attributes.deadline = Some(record.deadline);
        if record.status.is_some() {
            // An endpoint reached over mutual TLS answered: it proved the identity this
            // core expects of it.
            span.attributes.server_id =
                crate::transport::tls_upstream::for_endpoint(record.endpoint)
                    .and_then(|tls| tls.expected_identity().map(Arc::from));
        }
        let status = match record.error {
            Some(kind) => SpanStatus::Error(kind),
            None if record.status.is_some_and(|s| s >= 500) => SpanStatus::Error("server-error"),
            None => SpanStatus::Ok,
        };
        span.finish(SystemTime::now(), status);
        self.sender.try_send(span);
    }

    /// Finish the request's span and queue it (sampled traces only).
    pub fn finish_request(&self, trace: &RequestTrace, record: RequestRecord<'_>) {
        if !trace.ctx.sampled {
            return;
        }
        let RequestRecord {
            service,
            route,
            status,
            grpc_status,
            client_id,
        } = record;
        let mut span = Span::start(&trace.ctx, "proxy", SpanKind::Server, trace.start);
        span.attributes.service = service;
        span.attributes.route = route.map(Arc::from);
        span.attributes.http_status = (status != 0).then_some(status);
        span.attributes.grpc_status = grpc_status;
        span.attributes.client_id = client_id.map(Arc::from);
        let outcome = if status >= 500 || status == 0 {
            SpanStatus::Error("server-error")
        } else if grpc_status.is_some_and(crate::http2::grpc::is_server_error) {
            SpanStatus::Error("grpc-error")
        } else {
            SpanStatus::Ok
        };
        span.finish(SystemTime::now(), outcome);
        self.sender.try_send(span);
    }
}
