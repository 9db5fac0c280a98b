//! `/metrics`: every core's counters merged at scrape time and encoded in the Prometheus
//! text format, with process metrics and build info, and the proxy's identity metrics.

use crate::report::CoreReport;
use coremesh_telemetry::prometheus::{encode, BuildInfo, ProcessMetrics, Scrape};
use coremesh_telemetry::MetricsSnapshot;

/// Render the merged reports.
pub fn render(
    reports: &[CoreReport],
    driver: &str,
    spans: Option<&coremesh_telemetry::span_queue::SpanCounts>,
    identity: Option<&crate::identity::IdentityMetrics>,
) -> String {
    let mut merged = MetricsSnapshot::empty();
    for r in reports {
        if let Some(m) = &r.metrics {
            merged.merge(m);
        }
    }
    let process = ProcessMetrics::read();
    let mut out = String::with_capacity(16 * 1024);
    encode(
        &Scrape {
            metrics: &merged,
            build: BuildInfo {
                version: env!("CARGO_PKG_VERSION"),
                driver,
            },
            process: Some(&process),
            spans,
        },
        &mut out,
    );
    per_core(reports, &mut out);
    if let Some(identity) = identity {
        identity.render(&mut out);
    }
    out
}

/// The per-core families: how the cores share the load (requests, one client connection's
/// streams included; open connections) and what they hand each other.
fn per_core(reports: &[CoreReport], out: &mut String) {
    /// Name, type, help and each core's value.
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&CoreReport) -> u64,
    );
    let families: [Family; 4] = [
        (
            "coremesh_core_requests_total",
            "counter",
            "Requests each core served (HTTP/1 requests and HTTP/2 streams).",
            |r| r.requests,
        ),
        (
            "coremesh_core_connections_open",
            "gauge",
            "Client connections each core is serving.",
            |r| r.connections_open,
        ),
        (
            "coremesh_connections_handed_off_total",
            "counter",
            "Client connections accepted on a core and served by another (core: the accepting one; `[proxy] spread_connections`).",
            |r| r.connections_handed_off,
        ),
        (
            "coremesh_http2_streams_handed_off_total",
            "counter",
            "HTTP/2 streams accepted on a core and served by another (core: the accepting one).",
            |r| r.streams_handed_off,
        ),
    ];
    for (name, kind, help, value) in families {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for r in reports {
            let _ = writeln!(out, "{name}{{core=\"{}\"}} {}", r.core, value(r));
        }
    }
}
