//! coremesh-telemetry: what the proxy shows of itself.
//!
//! - [`metrics`]: per-core counters ([`CoreMetrics`]), recorded without lock or allocation
//!   and merged across cores when scraped ([`MetricsSnapshot::merge`]).
//! - [`prometheus`]: the Prometheus text exposition of merged metrics, process metrics and
//!   build info.
//! - [`trace`]: trace context from and to W3C `traceparent`/`tracestate` and B3 headers,
//!   span ids and sampling.
//! - [`span`], [`span_queue`], [`otlp`]: finished spans, the bounded queue from the cores
//!   to the exporter, and the OTLP/HTTP protobuf exporter on the control thread.
//! - [`access_log`]: one JSON line per request.
//! - [`config`]: the telemetry settings and their defaults.
//!
//! Nothing here blocks a core: recording is an index and an add, a span is handed over with
//! a non-blocking `try_send`, and everything that does I/O runs on the control thread.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod config;
pub mod metrics;
pub mod otlp;
pub mod prometheus;
pub mod span;
pub mod span_queue;
pub mod trace;

pub use access_log::{write_access_log_line, AccessLogEntry};
pub use config::{TelemetryConfig, TelemetryConfigError};
pub use metrics::{
    CoreMetrics, DeniedReason, Direction, EndpointId, EndpointState, ErrorKind, LayoutBuilder,
    MetricsLayout, MetricsSnapshot, Peer, RetryReason, RouteId, ServiceId, StatusClass,
};
pub use metrics::{DetectReason, Protocol, Side, Way};
pub use span::{Span, SpanAttributes, SpanKind, SpanStatus};
pub use span_queue::{SpanCounts, SpanQueue, SpanReceiver, SpanSender, SpanStats};
pub use trace::{Sampler, TraceContext};
