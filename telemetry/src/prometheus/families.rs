//! The metric families of a merged [`MetricsSnapshot`] in the text format. Request counts
//! and latency histograms are written for label sets that saw traffic (so a large mesh does
//! not expose millions of zeros); per-service families are written for every service, and
//! the endpoint-state gauge for every endpoint and state.

use super::text::{family, sample, Label, Value};
use crate::metrics::callers::CALLER_STRIDE;
use crate::metrics::labels::{
    DeniedReason, Direction, EndpointState, ErrorKind, Peer, RetryReason, StatusClass,
};
use crate::metrics::layout::{
    service_direction, ACCEPTED, DENIED, EP_EJECTIONS, EP_STATE, ERRORS, OPEN, RECEIVED, SENT,
    SVC_BUDGET_EXHAUSTED, SVC_CONNECTIONS_OPENED, SVC_CONNECTIONS_REUSED, SVC_DEADLINE_EXCEEDED,
    SVC_RETRIES,
};
use crate::metrics::{LatencyHistogram, MetricsSnapshot, LATENCY_BUCKETS};

/// Writes every family of `m`.
pub(crate) fn encode_snapshot(out: &mut String, m: &MetricsSnapshot) {
    requests(out, m);
    latency(out, m);
    service_families(out, m);
    ejections(out, m);
    endpoint_state(out, m);
    connections(out, m);
    bytes(out, m);
    errors(out, m);
    inbound_denied(out, m);
    http2_errors(out, m);
    grpc_responses(out, m);
    super::transport::encode_transport(out, m);
    family(
        out,
        "coremesh_cores",
        "gauge",
        "Data-plane cores whose metrics this scrape merged.",
    );
    sample(out, "coremesh_cores", &[], Value::Int(u64::from(m.cores())));
}

/// The (service, route) labels of route entry `r` (both absent for the unrouted entry).
fn route_labels(m: &MetricsSnapshot, r: usize) -> (Option<&str>, Option<&str>) {
    let layout = m.layout();
    let route = &layout.routes[r];
    let service = route.service.map(|s| &*layout.services[s as usize].name);
    (service, route.name.as_deref())
}

fn requests(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_requests_total";
    family(
        out,
        NAME,
        "counter",
        "Requests answered to clients, by the listener they came in on (direction), the \
         caller's verified identity (client_id, inbound over mutual TLS), route, destination \
         service, endpoint that answered and response status class.",
    );
    let layout = m.layout();
    for direction in Direction::ALL {
        for (r, route) in layout.routes.iter().enumerate() {
            requests_of_route(out, m, direction, r, route);
        }
        if direction == Direction::Inbound {
            requests_of_callers(out, m);
        }
    }
}

/// The inbound requests of callers with a verified identity, by `client_id`.
fn requests_of_callers(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_requests_total";
    let callers = &m.callers;
    for i in callers.in_order() {
        for class in StatusClass::ALL {
            let n = callers.get(i * CALLER_STRIDE + class.slot());
            if n == 0 {
                continue;
            }
            let labels: [Label<'_>; 3] = [
                ("direction", Some(Direction::Inbound.as_str())),
                ("client_id", Some(&*callers.names[i])),
                ("class", Some(class.as_str())),
            ];
            sample(out, NAME, &labels, Value::Int(n));
        }
    }
}

fn requests_of_route(
    out: &mut String,
    m: &MetricsSnapshot,
    direction: Direction,
    r: usize,
    route: &crate::metrics::layout::RouteEntry,
) {
    const NAME: &str = "coremesh_requests_total";
    let layout = m.layout();
    let (service, route_name) = route_labels(m, r);
    {
        for slot in 0..route.slots {
            let endpoint = match (slot, route.service) {
                (0, _) | (_, None) => None,
                (slot, Some(s)) => layout.services[s as usize]
                    .endpoints
                    .get(slot - 1)
                    .map(|e| &**e),
            };
            for class in StatusClass::ALL {
                let n = m.get(route.request_cell(direction.slot(), slot) + class.slot());
                if n == 0 {
                    continue;
                }
                let labels: [Label<'_>; 5] = [
                    ("direction", Some(direction.as_str())),
                    ("service", service),
                    ("route", route_name),
                    ("endpoint", endpoint),
                    ("class", Some(class.as_str())),
                ];
                sample(out, NAME, &labels, Value::Int(n));
            }
        }
    }
}

fn latency(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_response_latency_seconds";
    family(
        out,
        NAME,
        "histogram",
        "Time from the request head's arrival to the end of the response, as the client saw \
         it, by the listener the request came in on (direction), the caller's verified \
         identity (client_id, inbound over mutual TLS), route and destination service.",
    );
    for direction in Direction::ALL {
        for r in 0..m.layout().routes.len() {
            histogram_of_route(out, m, direction, r);
        }
        if direction == Direction::Inbound {
            for i in m.callers.in_order() {
                let h = m.callers.histogram(i);
                let labels: [Label<'_>; 2] = [
                    ("direction", Some(Direction::Inbound.as_str())),
                    ("client_id", Some(&*m.callers.names[i])),
                ];
                write_histogram(out, &labels, &h);
            }
        }
    }
}

/// The samples of histogram `h` with `labels` (nothing when it counted nothing).
fn write_histogram(out: &mut String, labels: &[Label<'_>; 2], h: &LatencyHistogram) {
    if h.count == 0 {
        return;
    }
    let mut cumulative = 0u64;
    let bucket_name = "coremesh_response_latency_seconds_bucket";
    for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative = cumulative.wrapping_add(h.buckets[i]);
        let with_le: [Label<'_>; 3] = [labels[0], labels[1], ("le", Some(bound))];
        sample(out, bucket_name, &with_le, Value::Int(cumulative));
    }
    let with_le: [Label<'_>; 3] = [labels[0], labels[1], ("le", Some("+Inf"))];
    sample(out, bucket_name, &with_le, Value::Int(h.count));
    sample(
        out,
        "coremesh_response_latency_seconds_sum",
        labels,
        Value::Nanos(h.sum_nanos),
    );
    sample(
        out,
        "coremesh_response_latency_seconds_count",
        labels,
        Value::Int(h.count),
    );
}

fn histogram_of_route(out: &mut String, m: &MetricsSnapshot, direction: Direction, r: usize) {
    {
        let h = m.histogram(r, direction);
        if h.count == 0 {
            return;
        }
        let (service, route) = route_labels(m, r);
        let direction = Some(direction.as_str());
        let mut cumulative = 0u64;
        let bucket_name = "coremesh_response_latency_seconds_bucket";
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative = cumulative.wrapping_add(h.buckets[i]);
            let labels: [Label<'_>; 4] = [
                ("direction", direction),
                ("service", service),
                ("route", route),
                ("le", Some(bound)),
            ];
            sample(out, bucket_name, &labels, Value::Int(cumulative));
        }
        let labels: [Label<'_>; 4] = [
            ("direction", direction),
            ("service", service),
            ("route", route),
            ("le", Some("+Inf")),
        ];
        sample(out, bucket_name, &labels, Value::Int(h.count));
        let labels: [Label<'_>; 3] = [
            ("direction", direction),
            ("service", service),
            ("route", route),
        ];
        sample(
            out,
            "coremesh_response_latency_seconds_sum",
            &labels,
            Value::Nanos(h.sum_nanos),
        );
        sample(
            out,
            "coremesh_response_latency_seconds_count",
            &labels,
            Value::Int(h.count),
        );
    }
}

fn service_families(out: &mut String, m: &MetricsSnapshot) {
    let layout = m.layout();
    let service_value = |s: usize, offset: usize| m.get(layout.service_block(s) + offset);

    const RETRIES: &str = "coremesh_retries_total";
    family(
        out,
        RETRIES,
        "counter",
        "Attempts retried on another endpoint, by the listener the request came in on \
         (direction), destination service and reason.",
    );
    for direction in Direction::ALL {
        let at = service_direction(direction.slot());
        for (s, service) in layout.services.iter().enumerate() {
            for reason in RetryReason::ALL {
                let labels: [Label<'_>; 3] = [
                    ("direction", Some(direction.as_str())),
                    ("service", Some(&*service.name)),
                    ("reason", Some(reason.as_str())),
                ];
                let n = service_value(s, at + SVC_RETRIES + reason.slot());
                if n == 0 && direction.skips_zero() {
                    continue;
                }
                sample(out, RETRIES, &labels, Value::Int(n));
            }
        }
    }

    let per_direction: [(&str, &str, usize); 2] = [
        (
            "coremesh_retry_budget_exhausted_total",
            "Retries not made because the service's retry budget was spent, by direction.",
            SVC_BUDGET_EXHAUSTED,
        ),
        (
            "coremesh_deadline_exceeded_total",
            "Requests failed (504) because their deadline passed, by direction.",
            SVC_DEADLINE_EXCEEDED,
        ),
    ];
    for (name, help, offset) in per_direction {
        family(out, name, "counter", help);
        for direction in Direction::ALL {
            let at = service_direction(direction.slot()) + offset;
            for (s, service) in layout.services.iter().enumerate() {
                let labels: [Label<'_>; 2] = [
                    ("direction", Some(direction.as_str())),
                    ("service", Some(&*service.name)),
                ];
                let n = service_value(s, at);
                if n == 0 && direction.skips_zero() {
                    continue;
                }
                sample(out, name, &labels, Value::Int(n));
            }
        }
    }

    let per_service: [(&str, &str, usize); 2] = [
        (
            "coremesh_upstream_connections_opened_total",
            "New TCP connections opened to the service's endpoints.",
            SVC_CONNECTIONS_OPENED,
        ),
        (
            "coremesh_upstream_connections_reused_total",
            "Requests sent on a pooled (kept-alive) connection to the service's endpoints.",
            SVC_CONNECTIONS_REUSED,
        ),
    ];
    for (name, help, offset) in per_service {
        family(out, name, "counter", help);
        for (s, service) in layout.services.iter().enumerate() {
            let labels: [Label<'_>; 1] = [("service", Some(&*service.name))];
            sample(out, name, &labels, Value::Int(service_value(s, offset)));
        }
    }
}

fn ejections(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_ejections_total";
    family(
        out,
        NAME,
        "counter",
        "Times an endpoint was taken out of a core's pool for failing (failed half-open \
         probes included), summed over cores.",
    );
    let layout = m.layout();
    for (s, service) in layout.services.iter().enumerate() {
        let mut total = 0u64;
        for (local, endpoint) in service.endpoints.iter().enumerate() {
            let Some(block) = layout.endpoint_block(s, local) else {
                continue;
            };
            let n = m.get(block + EP_EJECTIONS);
            if layout.per_endpoint {
                let labels: [Label<'_>; 2] = [
                    ("service", Some(&*service.name)),
                    ("endpoint", Some(&**endpoint)),
                ];
                sample(out, NAME, &labels, Value::Int(n));
            }
            total = total.wrapping_add(n);
        }
        if !layout.per_endpoint {
            let labels: [Label<'_>; 1] = [("service", Some(&*service.name))];
            sample(out, NAME, &labels, Value::Int(total));
        }
    }
}

fn endpoint_state(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_endpoint_state";
    family(
        out,
        NAME,
        "gauge",
        "Cores that see the endpoint in this state (available, ejected, half-open); without \
         the endpoint label, endpoints summed over cores.",
    );
    let layout = m.layout();
    for (s, service) in layout.services.iter().enumerate() {
        let mut totals = [0u64; EndpointState::ALL.len()];
        for (local, endpoint) in service.endpoints.iter().enumerate() {
            let Some(block) = layout.endpoint_block(s, local) else {
                continue;
            };
            for state in EndpointState::ALL {
                let n = m.get(block + EP_STATE + state.slot());
                totals[state.slot()] = totals[state.slot()].wrapping_add(n);
                if layout.per_endpoint {
                    let labels: [Label<'_>; 3] = [
                        ("service", Some(&*service.name)),
                        ("endpoint", Some(&**endpoint)),
                        ("state", Some(state.as_str())),
                    ];
                    sample(out, NAME, &labels, Value::Int(n));
                }
            }
        }
        if !layout.per_endpoint {
            for state in EndpointState::ALL {
                let labels: [Label<'_>; 2] = [
                    ("service", Some(&*service.name)),
                    ("state", Some(state.as_str())),
                ];
                sample(out, NAME, &labels, Value::Int(totals[state.slot()]));
            }
        }
    }
}

fn connections(out: &mut String, m: &MetricsSnapshot) {
    family(
        out,
        "coremesh_tcp_connections_accepted_total",
        "counter",
        "Client TCP connections accepted.",
    );
    sample(
        out,
        "coremesh_tcp_connections_accepted_total",
        &[],
        Value::Int(m.get(ACCEPTED)),
    );
    family(
        out,
        "coremesh_tcp_connections_open",
        "gauge",
        "Client TCP connections open now.",
    );
    sample(
        out,
        "coremesh_tcp_connections_open",
        &[],
        Value::Int(m.get(OPEN)),
    );
}

fn bytes(out: &mut String, m: &MetricsSnapshot) {
    let directions = [
        (
            "coremesh_received_bytes_total",
            "Bytes read from clients and from upstream endpoints.",
            RECEIVED,
        ),
        (
            "coremesh_sent_bytes_total",
            "Bytes written to clients and to upstream endpoints.",
            SENT,
        ),
    ];
    for (name, help, base) in directions {
        family(out, name, "counter", help);
        for peer in Peer::ALL {
            let labels: [Label<'_>; 1] = [("peer", Some(peer.as_str()))];
            sample(out, name, &labels, Value::Int(m.get(base + peer.slot())));
        }
    }
}

fn grpc_responses(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_grpc_responses_total";
    family(
        out,
        NAME,
        "counter",
        "gRPC calls answered to clients, by the listener they came in on (direction) and \
         grpc-status (the endpoint's, or the proxy's own for calls it could not forward).",
    );
    for direction in Direction::ALL {
        for code in 0..18u32 {
            let n = m.grpc_responses(direction, code);
            if n == 0 {
                continue;
            }
            let label = crate::metrics::grpc::code_label(code as usize);
            let labels: [Label<'_>; 2] = [
                ("direction", Some(direction.as_str())),
                ("grpc_status", Some(&label)),
            ];
            sample(out, NAME, &labels, Value::Int(n));
        }
    }
}

fn http2_errors(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_http2_errors_total";
    family(
        out,
        NAME,
        "counter",
        "HTTP/2 client connections and streams ended by an error, by RFC 9113 error code.",
    );
    for (code, reason) in crate::metrics::http2::REASONS.iter().enumerate() {
        let labels: [Label<'_>; 1] = [("reason", Some(reason))];
        sample(out, NAME, &labels, Value::Int(m.http2_errors(code as u32)));
    }
}

fn errors(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_errors_total";
    family(
        out,
        NAME,
        "counter",
        "Requests or connections ended by an error, by kind.",
    );
    for kind in ErrorKind::ALL {
        let labels: [Label<'_>; 1] = [("kind", Some(kind.as_str()))];
        sample(out, NAME, &labels, Value::Int(m.get(ERRORS + kind.slot())));
    }
}

/// Inbound requests refused by the policy, by reason: written once one was.
fn inbound_denied(out: &mut String, m: &MetricsSnapshot) {
    const NAME: &str = "coremesh_inbound_denied_total";
    if DeniedReason::ALL
        .iter()
        .all(|r| m.get(DENIED + r.slot()) == 0)
    {
        return;
    }
    family(
        out,
        NAME,
        "counter",
        "Inbound requests refused by the policy (403, PERMISSION_DENIED), by reason.",
    );
    for reason in DeniedReason::ALL {
        let n = m.get(DENIED + reason.slot());
        if n > 0 {
            let labels: [Label<'_>; 1] = [("reason", Some(reason.as_str()))];
            sample(out, NAME, &labels, Value::Int(n));
        }
    }
}
