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

/// Requests each core served (HTTP/1 requests and HTTP/2 streams): shows how the cores
/// share the load, one client connection's streams included.
fn per_core(reports: &[CoreReport], out: &mut String) {
    use std::fmt::Write;
    const NAME: &str = "coremesh_core_requests_total";
    out.push_str("# HELP coremesh_core_requests_total Requests each core served (HTTP/1 requests and HTTP/2 streams).\n");
    out.push_str("# TYPE coremesh_core_requests_total counter\n");
    for r in reports {
        let _ = writeln!(out, "{NAME}{{core=\"{}\"}} {}", r.core, r.requests);
    }
    const OPEN: &str = "coremesh_core_connections_open";
    out.push_str(
        "# HELP coremesh_core_connections_open Client connections each core is serving.\n",
    );
    out.push_str("# TYPE coremesh_core_connections_open gauge\n");
    for r in reports {
        let _ = writeln!(out, "{OPEN}{{core=\"{}\"}} {}", r.core, r.connections_open);
    }
    const MOVED: &str = "coremesh_connections_handed_off_total";
    out.push_str("# HELP coremesh_connections_handed_off_total Client connections accepted on a core and served by another (core: the accepting one; `[proxy] spread_connections`).\n");
    out.push_str("# TYPE coremesh_connections_handed_off_total counter\n");
    for r in reports {
        let _ = writeln!(
            out,
            "{MOVED}{{core=\"{}\"}} {}",
            r.core, r.connections_handed_off
        );
    }
    const HANDED: &str = "coremesh_http2_streams_handed_off_total";
    out.push_str("# HELP coremesh_http2_streams_handed_off_total HTTP/2 streams accepted on a core and served by another (core: the accepting one).\n");
    out.push_str("# TYPE coremesh_http2_streams_handed_off_total counter\n");
    for r in reports {
        let _ = writeln!(
            out,
            "{HANDED}{{core=\"{}\"}} {}",
            r.core, r.streams_handed_off
        );
    }
}
