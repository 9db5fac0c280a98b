//! `/metrics`: the cores' reports rendered in the Prometheus text format.

use crate::report::{merge_endpoint_views, CoreReport};
use std::fmt::Write;

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render the merged reports.
pub fn render(reports: &[CoreReport]) -> String {
    let mut out = String::with_capacity(4096);
    let sum = |f: fn(&CoreReport) -> u64| reports.iter().map(f).sum::<u64>();
    family(
        &mut out,
        "coremesh_cores",
        "gauge",
        "Data-plane cores that answered this scrape.",
    );
    let _ = writeln!(out, "coremesh_cores {}", reports.len());
    family(
        &mut out,
        "coremesh_tcp_connections_accepted_total",
        "counter",
        "Client TCP connections accepted.",
    );
    let _ = writeln!(
        out,
        "coremesh_tcp_connections_accepted_total {}",
        sum(|r| r.connections_accepted)
    );
    family(
        &mut out,
        "coremesh_tcp_connections_open",
        "gauge",
        "Client TCP connections open.",
    );
    let _ = writeln!(
        out,
        "coremesh_tcp_connections_open {}",
        sum(|r| r.connections_open)
    );
    family(
        &mut out,
        "coremesh_requests_total",
        "counter",
        "Requests read from clients.",
    );
    let _ = writeln!(out, "coremesh_requests_total {}", sum(|r| r.requests));
    family(
        &mut out,
        "coremesh_upstream_connections_opened_total",
        "counter",
        "Upstream connections opened.",
    );
    let _ = writeln!(
        out,
        "coremesh_upstream_connections_opened_total {}",
        sum(|r| r.upstream_opened)
    );
    family(
        &mut out,
        "coremesh_upstream_connections_reused_total",
        "counter",
        "Requests sent on a pooled upstream connection.",
    );
    let _ = writeln!(
        out,
        "coremesh_upstream_connections_reused_total {}",
        sum(|r| r.upstream_reused)
    );
    let merged = merge_endpoint_views(reports);
    family(
        &mut out,
        "coremesh_endpoint_state",
        "gauge",
        "1 for the state each endpoint is in.",
    );
    for (service, endpoints) in &merged {
        for e in endpoints {
            for state in ["available", "ejected", "half-open"] {
                let _ = writeln!(
                    out,
                    "coremesh_endpoint_state{{service=\"{}\",endpoint=\"{}\",state=\"{state}\"}} {}",
                    escape(service),
                    escape(&e.address),
                    u8::from(e.state == state)
                );
            }
        }
    }
    out
}
