//! The bounded queue that carries finished spans from the cores to the exporter.
//!
//! Each core holds a [`SpanSender`]; [`SpanSender::try_send`] never blocks: when the queue
//! is full (the exporter is slow or the collector is down) the span is dropped and counted.
//! The exporter side is a [`SpanReceiver`]. [`SpanStats`] counts what was queued, exported
//! and dropped (and why), for the `coremesh_spans_*` metrics; a count is an atomic add
//! touched only when a span is dropped or a batch is exported, never per recorded metric.

use crate::span::Span;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Spans waiting for export, by default. At 512 spans per batch this is 8 batches: a
/// collector outage of a few seconds at a few thousand sampled requests per second is
/// absorbed; beyond that spans are dropped and counted instead of using more memory.
pub const DEFAULT_SPAN_QUEUE_CAPACITY: usize = 4096;

/// Counts shared by the senders and the exporter.
#[derive(Debug, Default)]
pub struct SpanStats {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_exporter_gone: AtomicU64,
    dropped_export_failed: AtomicU64,
    dropped_rejected: AtomicU64,
}

/// A reading of [`SpanStats`] (plain data).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped because the exporter had stopped.
    pub dropped_exporter_gone: u64,
    /// Spans of batches whose export failed (collector down, timeout, error status).
    pub dropped_export_failed: u64,
    /// Spans the collector reported as rejected (OTLP partial success).
    pub dropped_rejected: u64,
}

impl SpanCounts {
    /// Every span dropped, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_exporter_gone
            + self.dropped_export_failed
            + self.dropped_rejected
    }
}

impl SpanStats {
    /// The counts now.
    pub fn counts(&self) -> SpanCounts {
        SpanCounts {
            exported: self.exported.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_exporter_gone: self.dropped_exporter_gone.load(Ordering::Relaxed),
            dropped_export_failed: self.dropped_export_failed.load(Ordering::Relaxed),
            dropped_rejected: self.dropped_rejected.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn add_exported(&self, n: u64) {
        self.exported.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_export_failed(&self, n: u64) {
        self.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_rejected(&self, n: u64) {
        self.dropped_rejected.fetch_add(n, Ordering::Relaxed);
    }
}

/// The queue, before it is split between the cores and the exporter.
#[derive(Debug)]
pub struct SpanQueue {
    sender: Sender<Span>,
    receiver: Receiver<Span>,
    stats: Arc<SpanStats>,
}

impl SpanQueue {
    /// A queue holding at most `capacity` spans (at least 1).
    pub fn new(capacity: usize) -> SpanQueue {
        let (sender, receiver) = crossbeam_channel::bounded(capacity.max(1));
        SpanQueue {
            sender,
            receiver,
            stats: Arc::new(SpanStats::default()),
        }
    }

    /// A sender for one core.
    pub fn sender(&self) -> SpanSender {
        SpanSender {
            sender: self.sender.clone(),
            stats: self.stats.clone(),
        }
    }

    /// The counts, for the admin scrape.
    pub fn stats(&self) -> Arc<SpanStats> {
        self.stats.clone()
    }

    /// The exporter's side. Once every [`SpanSender`] is dropped too, the receiver sees
    /// the queue closed (so the exporter can flush and stop).
    pub fn into_receiver(self) -> SpanReceiver {
        SpanReceiver {
            receiver: self.receiver,
            stats: self.stats,
            stop: None,
        }
    }
}

/// A core's end of the queue.
#[derive(Debug, Clone)]
pub struct SpanSender {
    sender: Sender<Span>,
    stats: Arc<SpanStats>,
}

impl SpanSender {
    /// Queues `span` if there is room; otherwise drops and counts it. Never blocks.
    /// Returns whether the span was queued.
    pub fn try_send(&self, span: Span) -> bool {
        match self.sender.try_send(span) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.stats
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                self.stats
                    .dropped_exporter_gone
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// The exporter's end of the queue.
#[derive(Debug)]
pub struct SpanReceiver {
    receiver: Receiver<Span>,
    stats: Arc<SpanStats>,
    /// Seen closed also once every sender of this channel is gone: the proxy stopped,
    /// whatever still holds a [`SpanSender`].
    stop: Option<Receiver<()>>,
}

/// What waiting for a span gave.
#[derive(Debug)]
// Each value is moved once, out of the channel, and never stored: boxing the span would
// add an allocation per span for nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Received {
    Span(Span),
    TimedOut,
    Closed,
}

impl SpanReceiver {
    /// Also end (as if every sender were gone) once every sender of `stop` is dropped.
    pub fn stop_on(mut self, stop: Receiver<()>) -> SpanReceiver {
        self.stop = Some(stop);
        self
    }

    /// The shared counts.
    pub fn stats(&self) -> &Arc<SpanStats> {
        &self.stats
    }

    /// Moves up to `max` queued spans into `batch` without waiting; returns how many.
    pub fn drain_into(&self, batch: &mut Vec<Span>, max: usize) -> usize {
        let before = batch.len();
        while batch.len() - before < max {
            match self.receiver.try_recv() {
                Ok(span) => batch.push(span),
                Err(_) => break,
            }
        }
        batch.len() - before
    }

    /// Spans waiting now.
    pub fn len(&self) -> usize {
        self.receiver.len()
    }

    /// Whether no span is waiting.
    pub fn is_empty(&self) -> bool {
        self.receiver.is_empty()
    }

    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Received {
        if let Some(stop) = &self.stop {
            return crossbeam_channel::select! {
                recv(self.receiver) -> span => match span {
                    Ok(span) => Received::Span(span),
                    Err(_) => Received::Closed,
                },
                recv(stop) -> _ => Received::Closed,
                default(timeout) => Received::TimedOut,
            };
        }
        match self.receiver.recv_timeout(timeout) {
            Ok(span) => Received::Span(span),
            Err(RecvTimeoutError::Timeout) => Received::TimedOut,
            Err(RecvTimeoutError::Disconnected) => Received::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::SpanKind;
    use crate::trace::TraceContext;
    use std::time::SystemTime;

    fn span(n: u8) -> Span {
        let context = TraceContext {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: None,
            sampled: true,
            debug: false,
        };
        Span::start(
            &context,
            "request",
            SpanKind::Server,
            SystemTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn a_stopped_receiver_is_closed_while_a_sender_lives() {
        let queue = SpanQueue::new(4);
        let sender = queue.sender();
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let receiver = queue.into_receiver().stop_on(stopped);
        assert!(sender.try_send(span(1)));
        assert!(matches!(
            receiver.recv_timeout(Duration::from_secs(5)),
            Received::Span(_)
        ));
        drop(stop);
        assert!(matches!(
            receiver.recv_timeout(Duration::from_secs(5)),
            Received::Closed
        ));
        drop(sender);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let queue = SpanQueue::new(2);
        let sender = queue.sender();
        assert!(sender.try_send(span(1)));
        assert!(sender.try_send(span(2)));
        for n in 3..10 {
            assert!(!sender.try_send(span(n)));
        }
        let stats = queue.stats();
        assert_eq!(stats.counts().dropped_queue_full, 7);
        let receiver = queue.into_receiver();
        let mut batch = Vec::new();
        assert_eq!(receiver.drain_into(&mut batch, 10), 2);
        assert_eq!(batch[0].trace_id, [1; 16]);
        assert_eq!(batch[1].trace_id, [2; 16]);
        assert!(receiver.is_empty());
    }

    #[test]
    fn drain_takes_at_most_max() {
        let queue = SpanQueue::new(8);
        let sender = queue.sender();
        for n in 0..5 {
            assert!(sender.try_send(span(n)));
        }
        let receiver = queue.into_receiver();
        let mut batch = Vec::new();
        assert_eq!(receiver.drain_into(&mut batch, 3), 3);
        assert_eq!(receiver.len(), 2);
    }

    #[test]
    fn a_gone_exporter_is_counted_and_a_closed_queue_seen() {
        let queue = SpanQueue::new(4);
        let sender = queue.sender();
        let stats = queue.stats();
        drop(queue.into_receiver());
        assert!(!sender.try_send(span(1)));
        assert_eq!(stats.counts().dropped_exporter_gone, 1);
        assert_eq!(stats.counts().dropped(), 1);

        let queue = SpanQueue::new(4);
        let receiver = queue.into_receiver();
        assert!(matches!(
            receiver.recv_timeout(Duration::from_millis(1)),
            Received::Closed
        ));
    }

    #[test]
    fn capacity_zero_still_holds_one() {
        let queue = SpanQueue::new(0);
        assert!(queue.sender().try_send(span(1)));
        assert!(!queue.sender().try_send(span(2)));
    }
}
