//! [`OtlpExporter`]: the control-thread side of span export. It takes finished spans from
//! the queue, groups them in batches of at most [`ExporterConfig::max_batch`], and posts a
//! batch when it is full or when [`ExporterConfig::interval`] has passed since the last
//! post. A failed post drops its batch (counted as `export_failed`) and the exporter goes
//! on: spans are telemetry, and holding them for a retry would only grow memory while the
//! collector is down. The cores never wait on any of this: when the exporter falls behind,
//! the queue fills and `try_send` drops.

use super::http::{post, ExportError};
use super::proto::export_request;
use super::url::CollectorUrl;
use crate::span::Span;
use crate::span_queue::{Received, SpanReceiver};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::time::{Duration, Instant};

/// Spans per post, by default: the OpenTelemetry SDKs' default batch size; a batch of
/// proxy spans encodes to well under a megabyte.
pub const DEFAULT_EXPORT_BATCH: usize = 512;
/// Longest a finished span waits before its batch is posted, by default. Shorter than the
/// SDKs' 5 s: a sidecar's spans should reach the collector while someone is looking at the
/// request, and one small POST a second costs nothing.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest one post may take, by default (connect, send, answer). Spans arriving meanwhile
/// wait in the queue, so this and the queue's capacity bound what a stuck collector costs.
pub const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Content type of OTLP/HTTP protobuf bodies.
const CONTENT_TYPE: &str = "application/x-protobuf";

/// Where and how to export. Defaults: batches of 512, every 1 s, 5 s timeout, resource
/// `service.name` `coremesh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterConfig {
    /// The collector's traces endpoint.
    pub collector: CollectorUrl,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Spans per post (at least 1).
    pub max_batch: usize,
    /// Longest a span waits before its batch is posted.
    pub interval: Duration,
    /// Longest one post may take.
    pub timeout: Duration,
}

impl ExporterConfig {
    /// The defaults, sending to `collector`.
    pub fn new(collector: CollectorUrl) -> ExporterConfig {
        ExporterConfig {
            collector,
            service_name: "coremesh".to_string(),
            max_batch: DEFAULT_EXPORT_BATCH,
            interval: DEFAULT_EXPORT_INTERVAL,
            timeout: DEFAULT_EXPORT_TIMEOUT,
        }
    }
}

/// What one export step did.
#[derive(Debug)]
pub enum ExportOutcome {
    /// Nothing was waiting.
    Idle,
    /// A batch of `spans` was delivered; the collector rejected `rejected` of them.
    Exported {
        /// Spans posted.
        spans: usize,
        /// Spans the collector said it rejected (OTLP partial success).
        rejected: u64,
    },
    /// A batch of `spans` could not be delivered and was dropped.
    Failed {
        /// Spans dropped.
        spans: usize,
        /// Why.
        error: ExportError,
    },
}

/// Batches spans from the queue and posts them to the collector.
#[derive(Debug)]
pub struct OtlpExporter {
    config: ExporterConfig,
    receiver: SpanReceiver,
    batch: Vec<Span>,
    body: Vec<u8>,
    failing: bool,
}

impl OtlpExporter {
    /// An exporter for the spans of `receiver`.
    pub fn new(mut config: ExporterConfig, receiver: SpanReceiver) -> OtlpExporter {
        config.max_batch = config.max_batch.max(1);
        OtlpExporter {
            batch: Vec::with_capacity(config.max_batch),
            config,
            receiver,
            body: Vec::new(),
            failing: false,
        }
    }

    /// Posts up to one batch of the spans queued now (plus any already collected by
    /// [`run`](Self::run)), without waiting for more. Blocks for at most the timeout.
    pub fn export_pending(&mut self) -> ExportOutcome {
        let room = self.config.max_batch.saturating_sub(self.batch.len());
        self.receiver.drain_into(&mut self.batch, room);
        self.flush()
    }

    /// Exports until the queue is closed (every `SpanSender` dropped), then posts what is
    /// left and returns. Meant for a thread of its own (or `spawn_blocking`).
    pub fn run(mut self) {
        let mut next_post = Instant::now() + self.config.interval;
        loop {
            let wait = next_post.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(wait) {
                Received::Span(span) => {
                    self.batch.push(span);
                    let room = self.config.max_batch.saturating_sub(self.batch.len());
                    self.receiver.drain_into(&mut self.batch, room);
                    if self.batch.len() >= self.config.max_batch {
                        self.flush();
                        next_post = Instant::now() + self.config.interval;
                    }
                }
                Received::TimedOut => {
                    self.flush();
                    next_post = Instant::now() + self.config.interval;
                }
                Received::Closed => {
                    while !self.batch.is_empty() || !self.receiver.is_empty() {
                        self.export_pending();
                    }
                    return;
                }
            }
        }
    }

    /// Posts the collected batch, if any.
    fn flush(&mut self) -> ExportOutcome {
        if self.batch.is_empty() {
            return ExportOutcome::Idle;
        }
        let spans = self.batch.len();
        self.body.clear();
        let request = export_request(&self.batch, &self.config.service_name);
        self.batch.clear();
        // Encoding into a growable Vec cannot run out of room.
        let _ = request.encode(&mut self.body);
        let stats = self.receiver.stats().clone();
        let outcome = match post(
            &self.config.collector,
            CONTENT_TYPE,
            &self.body,
            self.config.timeout,
        ) {
            Ok(answer) => {
                let rejected = ExportTraceServiceResponse::decode(answer.body.as_slice())
                    .ok()
                    .and_then(|r| r.partial_success)
                    .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0))
                    .min(spans as u64);
                stats.add_exported(spans as u64 - rejected);
                stats.add_rejected(rejected);
                ExportOutcome::Exported { spans, rejected }
            }
            Err(error) => {
                stats.add_export_failed(spans as u64);
                ExportOutcome::Failed { spans, error }
            }
        };
        self.log(&outcome);
        outcome
    }

    /// Logs when export starts or stops failing, not at every batch.
    fn log(&mut self, outcome: &ExportOutcome) {
        match outcome {
            ExportOutcome::Failed { spans, error } if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    collector = %self.config.collector,
                    dropped = spans,
                    "span export failing: {error}"
                );
            }
            ExportOutcome::Exported { .. } if self.failing => {
                self.failing = false;
                tracing::info!(collector = %self.config.collector, "span export recovered");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
