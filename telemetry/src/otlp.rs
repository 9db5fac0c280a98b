//! Span export over OTLP/HTTP with protobuf bodies (`POST /v1/traces`,
//! `Content-Type: application/x-protobuf`), built from the `opentelemetry-proto` message
//! types and sent with a plain blocking HTTP/1.1 client on the control thread.
//!
//! - [`CollectorUrl`]: where to send (`http://host:port/path`; no TLS).
//! - [`export_request`]: finished spans as an `ExportTraceServiceRequest`.
//! - [`OtlpExporter`]: takes spans from the queue, batches them, posts each batch within a
//!   timeout; a batch the collector asks to retry (429/502/503/504) is posted again after
//!   its `Retry-After` (bounded), one that fails otherwise is dropped and counted, and the
//!   exporter goes on with the next.

mod exporter;
mod http;
mod proto;
mod url;

pub use exporter::{
    ExportClock, ExportOutcome, ExporterConfig, OtlpExporter, SystemClock, DEFAULT_EXPORT_BATCH,
    DEFAULT_EXPORT_INTERVAL, DEFAULT_EXPORT_MAX_RETRIES, DEFAULT_EXPORT_MAX_RETRY_DELAY,
    DEFAULT_EXPORT_TIMEOUT,
};
pub use http::{ExportError, RetryAfter};
pub use proto::{attribute_keys, export_request};
pub use url::{CollectorUrl, UrlError, DEFAULT_OTLP_HTTP_PORT, DEFAULT_TRACES_PATH};

/// The protobuf types, re-exported for receivers and tests.
pub use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
