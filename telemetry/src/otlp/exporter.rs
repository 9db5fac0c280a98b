//! [`OtlpExporter`]: the control-thread side of span export. It takes finished spans from
//! the queue, groups them in batches of at most [`ExporterConfig::max_batch`], and posts a
//! batch when it is full or when [`ExporterConfig::interval`] has passed since the last
//! post. The cores never wait on any of this: when the exporter falls behind, the queue
//! fills and `try_send` drops.
//!
//! What happens to a batch the collector does not take:
//! - **Asked to retry** (429, 502, 503, 504, as OTLP/HTTP says): the batch is held and
//!   posted again once the answer's `Retry-After` has passed (seconds or an HTTP-date;
//!   without one, 1 s doubling per retry), never waiting longer than
//!   [`ExporterConfig::max_retry_delay`] and retrying at most
//!   [`ExporterConfig::max_retries`] times; then it is dropped (`export_failed`). While a
//!   batch is held nothing else is posted (the collector asked for quiet), new spans wait
//!   in the queue, and the exporter sleeps rather than polls.
//! - **Anything else** (connection refused, timeout, other statuses): the batch is dropped
//!   and counted (`export_failed`) and the exporter goes on with the next: spans are
//!   telemetry, and holding them would only grow memory while the collector is down.
//! - **Partial success** (2xx with `rejected_spans`, however the body is framed): the
//!   rejected spans are counted as `rejected`, the rest as exported.
//!
//! When the queue closes (shutdown), what is left is posted once each, without waiting or
//! retrying, so stopping never hangs on a collector's `Retry-After`.
//!
//! Time comes from an [`ExportClock`] (the system's by default), so tests can replay a
//! collector's back-off without sleeping.

use super::http::{post, ExportError};
use super::proto::export_request;
use super::url::CollectorUrl;
use crate::span::Span;
use crate::span_queue::{Received, SpanReceiver};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::time::{Duration, Instant, SystemTime};

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
/// Times a batch is posted again after a collector asked for a retry, by default: enough
/// to ride out a collector's short overload, few enough that one batch cannot hold export
/// up for long.
pub const DEFAULT_EXPORT_MAX_RETRIES: u32 = 3;
/// Longest wait before a retry, whatever `Retry-After` says, by default: a collector asking
/// for an hour of quiet would otherwise stop tracing for an hour.
pub const DEFAULT_EXPORT_MAX_RETRY_DELAY: Duration = Duration::from_secs(30);
/// First wait before a retry when the collector did not say how long (doubles per retry).
const RETRY_DELAY_WITHOUT_HINT: Duration = Duration::from_secs(1);

/// Content type of OTLP/HTTP protobuf bodies.
const CONTENT_TYPE: &str = "application/x-protobuf";

/// Where and how to export. Defaults: batches of 512, every 1 s, 5 s timeout, 3 retries
/// waiting at most 30 s each, resource `service.name` `coremesh`.
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
    /// Times a batch is posted again when the collector asks for a retry.
    pub max_retries: u32,
    /// Longest wait before such a retry.
    pub max_retry_delay: Duration,
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
            max_retries: DEFAULT_EXPORT_MAX_RETRIES,
            max_retry_delay: DEFAULT_EXPORT_MAX_RETRY_DELAY,
        }
    }
}

/// The exporter's time: a monotonic clock for waits, the wall clock for HTTP-dates, and a
/// way to sleep.
pub trait ExportClock: Send {
    /// Now, for waits.
    fn now(&self) -> Instant;
    /// Now, for `Retry-After` dates.
    fn wall(&self) -> SystemTime;
    /// Blocks the (control) thread for `duration`.
    fn sleep(&self, duration: Duration);
}

/// The system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl ExportClock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
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
    /// The collector asked for the batch again later: it is held, to be posted again after
    /// `retry_in` (retry number `retry`).
    Deferred {
        /// Spans held.
        spans: usize,
        /// Which retry comes next (1 for the first).
        retry: u32,
        /// The wait before it.
        retry_in: Duration,
        /// What the collector answered.
        error: ExportError,
    },
    /// A held batch is not due yet; nothing was posted.
    Waiting {
        /// Spans held.
        spans: usize,
        /// When it is due.
        until: Instant,
    },
    /// A batch of `spans` could not be delivered and was dropped.
    Failed {
        /// Spans dropped.
        spans: usize,
        /// Why.
        error: ExportError,
    },
}

/// A batch the collector asked to receive again later.
#[derive(Debug)]
struct Held {
    spans: Vec<Span>,
    /// Retries made so far.
    retries: u32,
    not_before: Instant,
}

/// Batches spans from the queue and posts them to the collector.
pub struct OtlpExporter {
    config: ExporterConfig,
    receiver: SpanReceiver,
    clock: Box<dyn ExportClock>,
    batch: Vec<Span>,
    held: Option<Held>,
    body: Vec<u8>,
    failing: bool,
    /// The queue closed: post what is left once, hold nothing.
    closing: bool,
}

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("config", &self.config)
            .field("batch", &self.batch.len())
            .field("held", &self.held.as_ref().map(|held| held.spans.len()))
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    /// An exporter for the spans of `receiver`, on the system's clocks.
    pub fn new(config: ExporterConfig, receiver: SpanReceiver) -> OtlpExporter {
        OtlpExporter::with_clock(config, receiver, Box::new(SystemClock))
    }

    /// An exporter whose waits follow `clock`.
    pub fn with_clock(
        mut config: ExporterConfig,
        receiver: SpanReceiver,
        clock: Box<dyn ExportClock>,
    ) -> OtlpExporter {
        config.max_batch = config.max_batch.max(1);
        OtlpExporter {
            batch: Vec::with_capacity(config.max_batch),
            config,
            receiver,
            clock,
            held: None,
            body: Vec::new(),
            failing: false,
            closing: false,
        }
    }

    /// Makes one export step without waiting: posts the held batch if it is due (or says
    /// it is [`Waiting`](ExportOutcome::Waiting)), else up to one batch of the spans
    /// queued now (plus any already collected by [`run`](Self::run)). Blocks for at most
    /// the post timeout.
    pub fn export_pending(&mut self) -> ExportOutcome {
        if let Some(held) = self.held.take() {
            if self.clock.now() < held.not_before && !self.closing {
                let outcome = ExportOutcome::Waiting {
                    spans: held.spans.len(),
                    until: held.not_before,
                };
                self.held = Some(held);
                return outcome;
            }
            return self.post_batch(held.spans, held.retries);
        }
        let room = self.config.max_batch.saturating_sub(self.batch.len());
        self.receiver.drain_into(&mut self.batch, room);
        if self.batch.is_empty() {
            return ExportOutcome::Idle;
        }
        let spans = std::mem::replace(&mut self.batch, Vec::with_capacity(self.config.max_batch));
        self.post_batch(spans, 0)
    }

    /// Exports until the queue is closed (every `SpanSender` dropped), then posts what is
    /// left and returns. Meant for a thread of its own (or `spawn_blocking`).
    pub fn run(mut self) {
        let interval = self.config.interval;
        let max_batch = self.config.max_batch;
        let mut next_post = self.clock.now() + interval;
        loop {
            let now = self.clock.now();
            match self.held.as_ref().map(|held| held.not_before) {
                Some(until) if now >= until => {
                    self.export_pending();
                    continue;
                }
                Some(_) => {}
                None if self.batch.len() >= max_batch || now >= next_post => {
                    if !self.batch.is_empty() || !self.receiver.is_empty() {
                        self.export_pending();
                    }
                    next_post = self.clock.now() + interval;
                    continue;
                }
                None => {}
            }
            let wake = self.held.as_ref().map_or(next_post, |held| held.not_before);
            let wait = wake.saturating_duration_since(now);
            if self.batch.len() >= max_batch {
                // Full while a batch is held: take nothing more until the retry.
                self.clock.sleep(wait);
                continue;
            }
            match self.receiver.recv_timeout(wait) {
                Received::Span(span) => {
                    self.batch.push(span);
                    let room = max_batch.saturating_sub(self.batch.len());
                    self.receiver.drain_into(&mut self.batch, room);
                }
                Received::TimedOut => {}
                Received::Closed => {
                    self.closing = true;
                    while !matches!(self.export_pending(), ExportOutcome::Idle) {}
                    return;
                }
            }
        }
    }

    /// Posts `spans` (already retried `retries` times) and counts the outcome.
    fn post_batch(&mut self, spans: Vec<Span>, retries: u32) -> ExportOutcome {
        let count = spans.len();
        self.body.clear();
        let request = export_request(&spans, &self.config.service_name);
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
                    .min(count as u64);
                stats.add_exported(count as u64 - rejected);
                stats.add_rejected(rejected);
                ExportOutcome::Exported {
                    spans: count,
                    rejected,
                }
            }
            Err(error)
                if error.is_retryable() && retries < self.config.max_retries && !self.closing =>
            {
                let retry_in = self.retry_delay(&error, retries);
                self.held = Some(Held {
                    spans,
                    retries: retries + 1,
                    not_before: self.clock.now() + retry_in,
                });
                ExportOutcome::Deferred {
                    spans: count,
                    retry: retries + 1,
                    retry_in,
                    error,
                }
            }
            Err(error) => {
                stats.add_export_failed(count as u64);
                ExportOutcome::Failed {
                    spans: count,
                    error,
                }
            }
        };
        self.log(&outcome);
        outcome
    }

    /// The wait before retry `retries + 1`: the collector's `Retry-After`, else 1 s
    /// doubling; at most `max_retry_delay`.
    fn retry_delay(&self, error: &ExportError, retries: u32) -> Duration {
        let asked = match error.retry_after() {
            Some(retry_after) => retry_after.delay_from(self.clock.wall()),
            None => RETRY_DELAY_WITHOUT_HINT.saturating_mul(1 << retries.min(20)),
        };
        asked.min(self.config.max_retry_delay)
    }

    /// Logs when export starts or stops failing (or being deferred), not at every batch.
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
            ExportOutcome::Deferred {
                error, retry_in, ..
            } if !self.failing => {
                self.failing = true;
                tracing::warn!(
                    collector = %self.config.collector,
                    retry_in_ms = retry_in.as_millis() as u64,
                    "span export deferred: {error}"
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
