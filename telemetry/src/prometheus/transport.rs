//! The transport families: protocol detection and opaque TCP connections and bytes. Every
//! label set is written (zeros included) so that rates have a series from the start.

use super::text::{family, sample, Label, Value};
use crate::metrics::transport::{DetectReason, Protocol, Side, Way};
use crate::metrics::{MetricsSnapshot, LATENCY_BUCKETS};

/// Writes the transport families of `m`.
pub(crate) fn encode_transport(out: &mut String, m: &MetricsSnapshot) {
    detections(out, m);
    tcp(out, m);
    tcp_connect_time(out, m);
}

/// The connect-time histograms, written for label sets that saw a connection.
fn tcp_connect_time(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_tcp_connect_seconds";
    family(
        out,
        NAME,
        "histogram",
        "Time to connect an opaque TCP connection to its destination (the original \
         address, or the endpoint the balancer chose, retries included), by side and \
         destination service.",
    );
    let services: Vec<Option<&str>> = std::iter::once(None)
        .chain(m.layout().services.iter().map(|s| Some(&*s.name)))
        .collect();
    for side in Side::ALL {
        for &service in &services {
            let h = m.tcp_connect_time(side, service);
            if h.count == 0 {
                continue;
            }
            let direction = Some(side.as_str());
            let mut cumulative = 0u64;
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative = cumulative.wrapping_add(h.buckets[i]);
                let labels: [Label<'_>; 3] = [
                    ("direction", direction),
                    ("service", service),
                    ("le", Some(bound)),
                ];
                sample(
                    out,
                    "coremesh_tcp_connect_seconds_bucket",
                    &labels,
                    Value::Int(cumulative),
                );
            }
            let labels: [Label<'_>; 3] = [
                ("direction", direction),
                ("service", service),
                ("le", Some("+Inf")),
            ];
            sample(
                out,
                "coremesh_tcp_connect_seconds_bucket",
                &labels,
                Value::Int(h.count),
            );
            let labels: [Label<'_>; 2] = [("direction", direction), ("service", service)];
            sample(
                out,
                "coremesh_tcp_connect_seconds_sum",
                &labels,
                Value::Nanos(h.sum_nanos),
            );
            sample(
                out,
                "coremesh_tcp_connect_seconds_count",
                &labels,
                Value::Int(h.count),
            );
        }
    }
}

fn detections(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_detect_total";
    family(
        out,
        NAME,
        "counter",
        "Connections whose protocol was detected, by side, protocol decided and why.",
    );
    for side in Side::ALL {
        for protocol in Protocol::ALL {
            for reason in DetectReason::ALL {
                let labels: [Label<'_>; 3] = [
                    ("direction", Some(side.as_str())),
                    ("protocol", Some(protocol.as_str())),
                    ("reason", Some(reason.as_str())),
                ];
                let n = m.detections(side, protocol, reason);
                sample(out, NAME, &labels, Value::Int(n));
            }
        }
    }
}

fn tcp(out: &mut String, m: &MetricsSnapshot) {
    const CONNECTIONS: &str = "coremesh_tcp_connections_total";
    const BYTES: &str = "coremesh_tcp_bytes_total";
    // `None`: connections to no known service (passed through), without a `service` label.
    let services: Vec<Option<&str>> = std::iter::once(None)
        .chain(m.layout().services.iter().map(|s| Some(&*s.name)))
        .collect();
    family(
        out,
        CONNECTIONS,
        "counter",
        "Opaque TCP connections relayed, by side and destination service.",
    );
    for side in Side::ALL {
        for &service in &services {
            let labels: [Label<'_>; 2] = [("direction", Some(side.as_str())), ("service", service)];
            let n = m.tcp_connections(side, service);
            sample(out, CONNECTIONS, &labels, Value::Int(n));
        }
    }
    family(
        out,
        BYTES,
        "counter",
        "Bytes relayed on opaque TCP connections, by side, destination service and way.",
    );
    for side in Side::ALL {
        for &service in &services {
            for way in Way::ALL {
                let labels: [Label<'_>; 3] = [
                    ("direction", Some(side.as_str())),
                    ("service", service),
                    ("way", Some(way.as_str())),
                ];
                sample(
                    out,
                    BYTES,
                    &labels,
                    Value::Int(m.tcp_bytes(side, service, way)),
                );
            }
        }
    }
}
