//! The Prometheus text exposition (format 0.0.4) of one scrape: the merged per-core
//! metrics, span export counts, build info and the process metrics. Every family has its
//! `# HELP` and `# TYPE`; counters end in `_total`, durations are in seconds; label values
//! are escaped. The output passes `promtool check metrics`.
//!
//! ```
//! use coremesh_telemetry::prometheus::{encode, BuildInfo, Scrape};
//! use coremesh_telemetry::{CoreMetrics, MetricsLayout, MetricsSnapshot};
//! let cores = [CoreMetrics::new(MetricsLayout::empty(true))];
//! let mut merged = MetricsSnapshot::empty();
//! for core in &cores {
//!     merged.merge(&core.snapshot());
//! }
//! let mut body = String::new();
//! encode(
//!     &Scrape {
//!         metrics: &merged,
//!         build: BuildInfo { version: "0.1.0", driver: "uring" },
//!         process: None,
//!         spans: None,
//!     },
//!     &mut body,
//! );
//! assert!(body.contains("coremesh_build_info{version=\"0.1.0\",driver=\"uring\"} 1\n"));
//! ```

mod families;
mod process;
mod text;
mod transport;

pub use process::ProcessMetrics;

use crate::metrics::MetricsSnapshot;
use crate::span_queue::SpanCounts;
use text::{family, sample, Label, Value};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the running binary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildInfo<'a> {
    /// The crate version (`env!("CARGO_PKG_VERSION")` of the proxy).
    pub version: &'a str,
    /// The I/O driver the cores run: `uring` or `legacy` (epoll).
    pub driver: &'a str,
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Copy)]
pub struct Scrape<'a> {
    /// The cores' metrics, merged.
    pub metrics: &'a MetricsSnapshot,
    /// Version and driver.
    pub build: BuildInfo<'a>,
    /// Process metrics ([`ProcessMetrics::read`]), if wanted.
    pub process: Option<&'a ProcessMetrics>,
    /// Span export counts, when tracing is on.
    pub spans: Option<&'a SpanCounts>,
}

/// Appends the exposition of `scrape` to `out`.
pub fn encode(scrape: &Scrape<'_>, out: &mut String) {
    families::encode_snapshot(out, scrape.metrics);
    if let Some(spans) = scrape.spans {
        encode_spans(out, spans);
    }
    family(
        out,
        "coremesh_build_info",
        "gauge",
        "Always 1; the labels say which version runs and which I/O driver its cores use.",
    );
    let labels: [Label<'_>; 2] = [
        ("version", Some(scrape.build.version)),
        ("driver", Some(scrape.build.driver)),
    ];
    sample(out, "coremesh_build_info", &labels, Value::Int(1));
    if let Some(process) = scrape.process {
        process.encode(out);
    }
}

fn encode_spans(out: &mut String, spans: &SpanCounts) {
    family(
        out,
        "coremesh_spans_exported_total",
        "counter",
        "Spans the trace collector accepted.",
    );
    sample(
        out,
        "coremesh_spans_exported_total",
        &[],
        Value::Int(spans.exported),
    );
    family(
        out,
        "coremesh_spans_dropped_total",
        "counter",
        "Spans not exported, by reason: queue_full (the exporter could not keep up), \
         exporter_gone, export_failed (collector down, timeout or error), rejected (by the \
         collector).",
    );
    for (reason, n) in [
        ("queue_full", spans.dropped_queue_full),
        ("exporter_gone", spans.dropped_exporter_gone),
        ("export_failed", spans.dropped_export_failed),
        ("rejected", spans.dropped_rejected),
    ] {
        let labels: [Label<'_>; 1] = [("reason", Some(reason))];
        sample(out, "coremesh_spans_dropped_total", &labels, Value::Int(n));
    }
}

#[cfg(test)]
mod tests;
