//! A test OTLP/HTTP trace collector on 127.0.0.1: accepts `POST /v1/traces` (protobuf
//! `ExportTraceServiceRequest`, decoded with the `opentelemetry-proto` types), answers 200
//! (or, scripted, what a busy or picky collector answers: 429/503 with `Retry-After`, a
//! chunked partial success), and keeps every span it received in a flat, comparable form.
//!
//! It is a programmable [`Upstream`] underneath, so it stops (and joins its threads) on drop.

use crate::upstream::{Action, ReceivedRequest, Response, Upstream};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// An attribute value as exported.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Other(String),
}

/// One exported span, ids as lower-case hex.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedSpan {
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: SpanKind,
    pub attributes: BTreeMap<String, Attr>,
    /// OTLP status code (0 unset, 1 ok, 2 error) and message.
    pub status: Option<(i32, String)>,
    /// `service.name` of the resource the span came under.
    pub resource_service: Option<String>,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
}

impl ExportedSpan {
    /// A string attribute.
    pub fn str_attr(&self, key: &str) -> Option<&str> {
        match self.attributes.get(key) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// An integer attribute.
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attributes.get(key) {
            Some(Attr::Int(n)) => Some(*n),
            _ => None,
        }
    }
}

/// The running collector.
pub struct OtlpCollector {
    upstream: Upstream,
}

impl OtlpCollector {
    /// Start on 127.0.0.1:0, answering every post 200 with an empty
    /// `ExportTraceServiceResponse` (full success).
    pub fn start() -> OtlpCollector {
        let upstream = Upstream::start("otlp-collector", |req| {
            if req.method == "POST" && req.path == "/v1/traces" {
                Action::Respond(Response::new(200).header("content-type", "application/x-protobuf"))
            } else {
                Action::Respond(Response::new(404).body("only POST /v1/traces"))
            }
        });
        OtlpCollector { upstream }
    }

    /// Start on 127.0.0.1:0, answering the n-th post (from 0) with `script[n]`, and every
    /// post after the script with a plain 200.
    pub fn start_scripted(script: Vec<Response>) -> OtlpCollector {
        let posts = AtomicUsize::new(0);
        let upstream = Upstream::start("otlp-collector", move |req| {
            if req.method != "POST" || req.path != "/v1/traces" {
                return Action::Respond(Response::new(404).body("only POST /v1/traces"));
            }
            let n = posts.fetch_add(1, Ordering::SeqCst);
            let answer = script.get(n).cloned().unwrap_or_else(|| {
                Response::new(200).header("content-type", "application/x-protobuf")
            });
            Action::Respond(answer)
        });
        OtlpCollector { upstream }
    }

    pub fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    /// The value for `telemetry.otlp_endpoint`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Every post received, in arrival order.
    pub fn posts(&self) -> Vec<ReceivedRequest> {
        self.upstream.received()
    }

    /// Every span received so far, in arrival order; panics if a post is not a decodable
    /// `POST /v1/traces` with `Content-Type: application/x-protobuf`.
    pub fn spans(&self) -> Vec<ExportedSpan> {
        let mut out = Vec::new();
        for post in self.posts() {
            assert_eq!(
                (post.method.as_str(), post.path.as_str()),
                ("POST", "/v1/traces"),
                "the exporter posts to the OTLP traces path"
            );
            assert_eq!(
                post.header("content-type").as_deref(),
                Some("application/x-protobuf"),
                "OTLP/HTTP protobuf content type"
            );
            out.extend(decode(&post.body).unwrap_or_else(|e| panic!("{e}")));
        }
        out
    }

    /// Wait until at least `n` spans arrived; the spans seen, or `Err` with them after
    /// `timeout`.
    pub fn wait_for_spans(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<ExportedSpan>, Vec<ExportedSpan>> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return Ok(spans);
            }
            if Instant::now() >= deadline {
                return Err(spans);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Protocol errors the underlying upstream saw.
    pub fn errors(&self) -> Vec<String> {
        self.upstream.errors()
    }
}

/// A 200 whose chunked protobuf body reports `rejected` spans as rejected (OTLP partial
/// success).
pub fn partial_success_chunked(rejected: i64, message: &str) -> Response {
    let body = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: rejected,
            error_message: message.to_string(),
        }),
    }
    .encode_to_vec();
    Response::new(200)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .chunked(&[])
}

/// Decode one post's body into flat spans.
pub fn decode(body: &[u8]) -> Result<Vec<ExportedSpan>, String> {
    let request = ExportTraceServiceRequest::decode(body)
        .map_err(|e| format!("not an ExportTraceServiceRequest: {e}"))?;
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let resource_service = rs.resource.as_ref().and_then(|r| {
            r.attributes
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(
                    |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    },
                )
        });
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attributes = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => Attr::Str(s.clone()),
                            Some(Value::IntValue(n)) => Attr::Int(*n),
                            other => Attr::Other(format!("{other:?}")),
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                out.push(ExportedSpan {
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: (!s.parent_span_id.is_empty()).then(|| hex(&s.parent_span_id)),
                    name: s.name.clone(),
                    kind: SpanKind::try_from(s.kind).unwrap_or(SpanKind::Unspecified),
                    attributes,
                    status: s.status.as_ref().map(|st| (st.code, st.message.clone())),
                    resource_service: resource_service.clone(),
                    start_unix_nano: s.start_time_unix_nano,
                    end_unix_nano: s.end_time_unix_nano,
                });
            }
        }
    }
    Ok(out)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
