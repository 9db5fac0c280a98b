//! What is recorded of a request, whatever its protocol: its span opened from the caller's
//! trace context, and once it is answered the response metrics, the span's end and the
//! access-log line. (The balancer's outcome of each attempt is recorded in
//! [`super::attempt`].) An inbound request whose caller proved an identity over mutual
//! TLS carries it in all three (`client_id`).

use super::{Origin, RequestState};
use crate::core::Core;
use crate::observe::tracing_ctx::RequestTrace;
use coremesh_discovery::Snapshot;
use std::time::Duration;

/// Read the caller's trace context from the request's headers and open the proxy's span
/// for this request, reusing `reuse`'s storage.
pub fn start_trace<'h>(
    core: &Core,
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    reuse: Option<RequestTrace>,
) -> RequestTrace {
    let extracted = coremesh_telemetry::trace::extract(headers);
    let sampler = match &core.tracer {
        Some(t) => t.sampler,
        None => coremesh_telemetry::trace::Sampler::new(0.0),
    };
    let ctx = core.with_rng(|rng| extracted.server_context(&sampler, rng));
    let mut tracestate = reuse.map(|t| t.tracestate).unwrap_or_default();
    tracestate.clear();
    extracted.tracestate.write_value(&mut tracestate);
    RequestTrace {
        ctx,
        formats: extracted.formats,
        tracestate,
        start: std::time::SystemTime::now(),
        attempt: None,
    }
}

/// Where a finished request went, as indices into the snapshot it started on
/// (`usize::MAX` where there is none).
#[derive(Clone, Copy)]
pub struct Routed {
    pub route: usize,
    pub service: usize,
}

impl Routed {
    pub const NONE: Routed = Routed {
        route: usize::MAX,
        service: usize::MAX,
    };
}

/// Record a request the client was answered: its response in the metrics, then its span
/// and access-log line when those are on.
pub fn finish(
    core: &Core,
    origin: Origin,
    s: &RequestState,
    snapshot: &Snapshot,
    target: Routed,
    latency: Duration,
) {
    let Routed {
        mut route,
        mut service,
    } = target;
    if !core.is_current(snapshot) {
        // A new snapshot came in meanwhile: its indices mean other things.
        service = core.resolve_service(snapshot, service);
        route = usize::MAX;
    }
    if s.status == 0 {
        return;
    }
    match inbound_client_id(origin, s) {
        Some(client_id) => {
            core.metrics
                .borrow()
                .record_inbound_response_from(client_id, s.status, latency);
        }
        None => {
            let ids = core.ids.borrow();
            let route_id = crate::observe::request_route(&ids, origin, route, service);
            let endpoint = s.endpoint.and_then(|a| ids.endpoint(service, a));
            let direction = crate::observe::metrics_direction(origin.direction);
            core.metrics
                .borrow()
                .record_response(direction, route_id, endpoint, s.status, latency);
        }
    }
    if core.tracer.is_some() || core.access_log.is_some() {
        let client_id = inbound_client_id(origin, s);
        finish_observation(core, s, snapshot, (route, service), client_id, latency);
    }
}

/// The identity a request's caller proved over mutual TLS, on the inbound side only.
fn inbound_client_id(origin: Origin, s: &RequestState) -> Option<&str> {
    match origin.direction {
        crate::sidecar::Direction::Inbound => s.client_id.as_deref(),
        _ => None,
    }
}

/// The caller's verified identity of an inbound HTTP/2 request: its
/// `x-coremesh-client-id`, which the connection set from the identity TLS verified (or
/// removed: a caller cannot send its own).
pub fn verified_client_id(headers: &http::HeaderMap) -> Option<std::rc::Rc<str>> {
    let value = headers.get("x-coremesh-client-id")?.to_str().ok()?;
    Some(std::rc::Rc::from(value))
}

/// The request's span and its access-log line.
fn finish_observation(
    core: &Core,
    s: &RequestState,
    snapshot: &Snapshot,
    (route, service): (usize, usize),
    client_id: Option<&str>,
    latency: Duration,
) {
    let route_name = snapshot.routes.get(route).map(|r| r.name.as_str());
    let service_name: Option<std::sync::Arc<str>> = core
        .services
        .borrow()
        .get(service)
        .map(|st| st.name.clone());
    if let (Some(tracer), Some(trace)) = (&core.tracer, &s.trace) {
        tracer.finish_request(
            trace,
            crate::observe::tracing_ctx::RequestRecord {
                service: service_name.clone(),
                route: route_name,
                status: s.status,
                grpc_status: s.grpc_status,
                client_id,
            },
        );
    }
    if let Some(log) = &core.access_log {
        let endpoint = s.endpoint.map(|e| e.to_string());
        let entry = coremesh_telemetry::access_log::AccessLogEntry {
            time: std::time::SystemTime::now(),
            route: route_name,
            service: service_name.as_deref(),
            endpoint: endpoint.as_deref(),
            status: s.status,
            latency,
            attempts: s.attempts,
            trace_id: s.trace.as_ref().map(|t| &t.ctx.trace_id),
            grpc_status: s.grpc_status,
            client_id,
        };
        log.write(&entry);
    }
}
