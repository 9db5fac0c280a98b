//! The optional access log: one JSON line per request (`telemetry.access_log = true`),
//! written to standard output by a writer thread. A core formats the line and hands it
//! over with a non-blocking send; when the writer falls behind, lines are dropped and
//! counted rather than making a core wait.

use coremesh_telemetry::access_log::{write_access_log_line, AccessLogEntry};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Lines buffered between the cores and the writer.
pub const ACCESS_LOG_QUEUE: usize = 8192;

/// A core's handle on the access log.
#[derive(Clone)]
pub struct AccessLog {
    sender: Sender<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    /// The log and the writer thread's end of it.
    pub fn new() -> (AccessLog, AccessLogWriter) {
        let (sender, receiver) = crossbeam_channel::bounded(ACCESS_LOG_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        (
            AccessLog {
                sender,
                dropped: dropped.clone(),
            },
            AccessLogWriter { receiver, dropped },
        )
    }

    pub fn write(&self, entry: &AccessLogEntry<'_>) {
        let mut line = Vec::with_capacity(256);
        write_access_log_line(entry, &mut line);
        match self.sender.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The writer thread's end.
pub struct AccessLogWriter {
    receiver: Receiver<Vec<u8>>,
    dropped: Arc<AtomicU64>,
}

impl AccessLogWriter {
    /// Write lines to `out` until every `AccessLog` handle is dropped, or every sender of
    /// `stop` is (the proxy stopped, whatever still holds a handle): the lines queued by
    /// then are written too.
    pub fn run(self, mut out: impl Write, stop: Receiver<()>) {
        loop {
            let line = crossbeam_channel::select! {
                recv(self.receiver) -> line => line.ok(),
                recv(stop) -> _ => self.receiver.try_recv().ok(),
            };
            let Some(line) = line else { break };
            if out.write_all(&line).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        let _ = out.flush();
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(dropped, "access log lines were dropped");
        }
    }
}
