//! Finished [`Span`]s as an OTLP `ExportTraceServiceRequest`: one resource (the proxy,
//! `service.name`), one instrumentation scope (`coremesh`), and per span its ids, parent,
//! kind, times, attributes and status.

use crate::span::{Span, SpanKind, SpanStatus};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Status};
use std::time::SystemTime;

/// The attribute keys spans carry.
pub mod attribute_keys {
    /// Destination service (string).
    pub const SERVICE: &str = "coremesh.service";
    /// Route that matched (string).
    pub const ROUTE: &str = "coremesh.route";
    /// Endpoint sent to, `ip:port` (string).
    pub const ENDPOINT: &str = "coremesh.endpoint";
    /// Attempt number from 1 (int).
    pub const ATTEMPT: &str = "coremesh.attempt";
    /// Why this attempt is a retry (string).
    pub const RETRY_REASON: &str = "coremesh.retry_reason";
    /// Time the request had left when the span started, in ms (int).
    pub const DEADLINE_MS: &str = "coremesh.deadline_ms";
    /// HTTP status code (int), OpenTelemetry's semantic-convention name.
    pub const HTTP_STATUS: &str = "http.response.status_code";
    /// A gRPC call's status code (int), OpenTelemetry's semantic-convention name.
    pub const GRPC_STATUS: &str = "rpc.grpc.status_code";
    /// The caller's SPIFFE ID that mutual TLS verified (string, inbound request spans).
    pub const CLIENT_ID: &str = "coremesh.client_id";
    /// The endpoint's SPIFFE ID that mutual TLS verified (string, attempts to meshed
    /// endpoints).
    pub const SERVER_ID: &str = "coremesh.server_id";
}

/// W3C trace flag "sampled" (every exported span is).
const FLAG_SAMPLED: u32 = 0x01;
/// OTLP span flags: whether the parent is remote is known …
const FLAG_HAS_IS_REMOTE: u32 = 0x100;
/// … and it is.
const FLAG_IS_REMOTE: u32 = 0x200;

/// The request posting `spans` on behalf of service `service_name` (the proxy).
pub fn export_request(spans: &[Span], service_name: &str) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    string_attribute("service.name", service_name),
                    string_attribute("service.version", env!("CARGO_PKG_VERSION")),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "coremesh".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..InstrumentationScope::default()
                }),
                spans: spans.iter().map(proto_span).collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn proto_span(s: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
    use attribute_keys::*;
    let a = &s.attributes;
    let mut attributes = Vec::with_capacity(7);
    if let Some(v) = &a.service {
        attributes.push(string_attribute(SERVICE, v));
    }
    if let Some(v) = &a.route {
        attributes.push(string_attribute(ROUTE, v));
    }
    if let Some(v) = &a.endpoint {
        attributes.push(string_attribute(ENDPOINT, v));
    }
    if let Some(v) = a.attempt {
        attributes.push(int_attribute(ATTEMPT, i64::from(v)));
    }
    if let Some(v) = a.retry_reason {
        attributes.push(string_attribute(RETRY_REASON, v.as_str()));
    }
    if let Some(v) = a.http_status {
        attributes.push(int_attribute(HTTP_STATUS, i64::from(v)));
    }
    if let Some(v) = a.grpc_status {
        attributes.push(int_attribute(GRPC_STATUS, i64::from(v)));
    }
    if let Some(v) = a.deadline {
        let ms = i64::try_from(v.as_millis()).unwrap_or(i64::MAX);
        attributes.push(int_attribute(DEADLINE_MS, ms));
    }
    if let Some(v) = &a.client_id {
        attributes.push(string_attribute(CLIENT_ID, v));
    }
    if let Some(v) = &a.server_id {
        attributes.push(string_attribute(SERVER_ID, v));
    }
    let (kind, remote_parent) = match s.kind {
        SpanKind::Server => (span::SpanKind::Server, s.parent_span_id.is_some()),
        SpanKind::Client => (span::SpanKind::Client, false),
    };
    let flags = FLAG_SAMPLED | FLAG_HAS_IS_REMOTE | if remote_parent { FLAG_IS_REMOTE } else { 0 };
    let start = unix_nanos(s.start);
    let status = match s.status {
        SpanStatus::Unset => None,
        SpanStatus::Ok => Some(Status {
            code: status::StatusCode::Ok as i32,
            message: String::new(),
        }),
        SpanStatus::Error(message) => Some(Status {
            code: status::StatusCode::Error as i32,
            message: message.to_string(),
        }),
    };
    opentelemetry_proto::tonic::trace::v1::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        parent_span_id: s.parent_span_id.map_or_else(Vec::new, |p| p.to_vec()),
        flags,
        name: s.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: unix_nanos(s.end).max(start),
        attributes,
        status,
        ..Default::default()
    }
}

/// Nanoseconds since the Unix epoch (0 before it, saturating far after it).
fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..KeyValue::default()
    }
}

fn int_attribute(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::RetryReason;
    use crate::trace::TraceContext;
    use prost::Message;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn spans_become_otlp_messages() {
        let ctx = TraceContext {
            trace_id: [7; 16],
            span_id: [8; 8],
            parent_span_id: Some([9; 8]),
            sampled: true,
            debug: false,
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut server = Span::start(&ctx, "proxy", SpanKind::Server, t0);
        server.attributes.service = Some(Arc::from("users"));
        server.attributes.http_status = Some(200);
        server.finish(t0 + Duration::from_millis(12), SpanStatus::Ok);
        let mut attempt = Span::start(&ctx, "attempt", SpanKind::Client, t0);
        attempt.attributes.attempt = Some(2);
        attempt.attributes.retry_reason = Some(RetryReason::Reset);
        attempt.attributes.deadline = Some(Duration::from_millis(1500));
        attempt.finish(t0, SpanStatus::Error("connect-failed"));

        let request = export_request(&[server, attempt], "mesh-sidecar");
        // Encodes and decodes to the same message.
        let bytes = request.encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(back, request);

        let resource = request.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(
            resource.attributes[0],
            string_attribute("service.name", "mesh-sidecar")
        );
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![8; 8]);
        assert_eq!(s.parent_span_id, vec![9; 8]);
        assert_eq!(s.kind, span::SpanKind::Server as i32);
        assert_eq!(s.flags, 0x301);
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_700_000_000_012_000_000);
        assert_eq!(
            s.attributes,
            vec![
                string_attribute("coremesh.service", "users"),
                int_attribute("http.response.status_code", 200),
            ]
        );
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Ok as i32
        );
        let a = &spans[1];
        assert_eq!(a.kind, span::SpanKind::Client as i32);
        assert_eq!(a.flags, 0x101);
        assert_eq!(
            a.attributes,
            vec![
                int_attribute("coremesh.attempt", 2),
                string_attribute("coremesh.retry_reason", "reset"),
                int_attribute("coremesh.deadline_ms", 1500),
            ]
        );
        assert_eq!(
            a.status,
            Some(Status {
                code: status::StatusCode::Error as i32,
                message: "connect-failed".into()
            })
        );
    }

    #[test]
    fn times_before_the_epoch_or_backwards_are_clamped() {
        let ctx = TraceContext {
            trace_id: [1; 16],
            span_id: [1; 8],
            parent_span_id: None,
            sampled: true,
            debug: false,
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let mut span = Span::start(&ctx, "x", SpanKind::Server, t0);
        span.finish(
            SystemTime::UNIX_EPOCH - Duration::from_secs(5),
            SpanStatus::Unset,
        );
        let request = export_request(&[span], "s");
        let s = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.end_time_unix_nano, s.start_time_unix_nano);
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.flags, 0x101);
        assert_eq!(s.status, None);
    }
}
