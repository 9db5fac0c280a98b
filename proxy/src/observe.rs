//! Metrics wiring: the label layout built beside each snapshot (on the control side, one
//! `Arc` shared by every core) and the per-core lookup tables that turn a service index, a
//! route and an endpoint address into the small integer handles the hot path records with.

pub mod access_log;
pub mod metrics;
pub mod tracing_ctx;

use coremesh_discovery::Snapshot;
use coremesh_telemetry::{EndpointId, LayoutBuilder, MetricsLayout, RouteId, ServiceId};
use std::net::SocketAddr;
use std::sync::Arc;

/// The `route` label of requests sent to a service because the outbound side saw one of
/// its `addresses` as their original destination (no route chose it).
pub const DESTINATION_ROUTE: &str = "original-destination";

/// The `route` label (with no `service` label) of requests the outbound side passed
/// through to an original destination no service claims.
pub const PASSTHROUGH_ROUTE: &str = "passthrough";

/// The `direction` label of a request's families: the listener its connection came in on
/// (chosen once per connection; this is a plain match, no string work per request).
pub fn metrics_direction(direction: crate::sidecar::Direction) -> coremesh_telemetry::Direction {
    match direction {
        crate::sidecar::Direction::Proxy => coremesh_telemetry::Direction::Proxy,
        crate::sidecar::Direction::Inbound => coremesh_telemetry::Direction::Inbound,
        crate::sidecar::Direction::Outbound => coremesh_telemetry::Direction::Outbound,
    }
}

/// The handle a finished request counts under: a passed-through request (outbound, no
/// service) under [`PASSTHROUGH_ROUTE`], else see [`MetricIds::request_route`].
pub fn request_route(
    ids: &MetricIds,
    origin: crate::pipeline::Origin,
    route: usize,
    service: usize,
) -> RouteId {
    match origin.target {
        crate::pipeline::Target::Destination(_) if service == usize::MAX => ids.passthrough,
        _ => ids.request_route(route, service),
    }
}

/// What the `[telemetry]` settings say about the metrics layout (read at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayoutOptions {
    /// Request counts carry an `endpoint` label.
    pub per_endpoint: bool,
    /// Callers' identities each core labels inbound requests with (`client_id`).
    pub max_client_ids: usize,
}

impl LayoutOptions {
    pub fn of(telemetry: &coremesh_telemetry::TelemetryConfig) -> LayoutOptions {
        LayoutOptions {
            per_endpoint: telemetry.per_endpoint_metrics,
            max_client_ids: telemetry.max_client_ids,
        }
    }
}

/// [`build_layout_with`] the default cap on `client_id` values.
pub fn build_layout(snapshot: &Snapshot, per_endpoint: bool) -> Arc<MetricsLayout> {
    let options = LayoutOptions {
        per_endpoint,
        max_client_ids: coremesh_telemetry::metrics::DEFAULT_MAX_CLIENT_IDS,
    };
    build_layout_with(snapshot, options)
}

/// The metrics layout for `snapshot`: every service with its endpoints, every route with
/// each service it may send to, and the passthrough entry.
pub fn build_layout_with(snapshot: &Snapshot, options: LayoutOptions) -> Arc<MetricsLayout> {
    let mut b = LayoutBuilder::new(options.per_endpoint);
    b.max_client_ids(options.max_client_ids);
    let ids: Vec<ServiceId> = snapshot
        .services
        .iter()
        .map(|s| b.add_service(&s.name, s.endpoints.iter().map(|a| a.to_string())))
        .collect();
    for route in &snapshot.routes {
        for (service, _) in &route.targets {
            if let Some(id) = ids.get(*service) {
                b.add_route(&route.name, Some(*id));
            }
        }
    }
    let claimed: std::collections::BTreeSet<usize> =
        snapshot.destinations.values().copied().collect();
    for service in claimed {
        if let Some(id) = ids.get(service) {
            b.add_route(DESTINATION_ROUTE, Some(*id));
        }
    }
    b.add_route(PASSTHROUGH_ROUTE, None);
    b.build()
}

/// Handles for one snapshot and layout, kept on a core.
pub struct MetricIds {
    /// By snapshot service index.
    pub services: Vec<Option<ServiceId>>,
    /// By snapshot service index: endpoint address to handle.
    pub endpoints: Vec<crate::transport::pool::AddrMap<EndpointId>>,
    /// By snapshot route index: (service index, handle) for each target.
    pub routes: Vec<Vec<(usize, RouteId)>>,
    /// By snapshot service index: its [`DESTINATION_ROUTE`] handle, when it claims
    /// addresses.
    pub by_destination: Vec<Option<RouteId>>,
    pub unrouted: RouteId,
    /// Requests passed through ([`PASSTHROUGH_ROUTE`]).
    pub passthrough: RouteId,
}

impl MetricIds {
    pub fn new(snapshot: &Snapshot, layout: &MetricsLayout) -> MetricIds {
        let services: Vec<Option<ServiceId>> = snapshot
            .services
            .iter()
            .map(|s| layout.service_id(&s.name))
            .collect();
        let endpoints = snapshot
            .services
            .iter()
            .zip(&services)
            .map(|(s, id)| {
                let mut map = crate::transport::pool::AddrMap::default();
                if let Some(id) = id {
                    for (i, addr) in s.endpoints.iter().enumerate() {
                        if let Some(e) = layout.endpoint_at(*id, i) {
                            map.insert(*addr, e);
                        }
                    }
                }
                map
            })
            .collect();
        let routes = snapshot
            .routes
            .iter()
            .map(|r| {
                r.targets
                    .iter()
                    .filter_map(|(svc, _)| {
                        let sid = services.get(*svc).copied().flatten()?;
                        Some((*svc, layout.route_id(&r.name, Some(sid))?))
                    })
                    .collect()
            })
            .collect();
        let by_destination = services
            .iter()
            .map(|id| layout.route_id(DESTINATION_ROUTE, Some((*id)?)))
            .collect();
        MetricIds {
            services,
            endpoints,
            routes,
            by_destination,
            unrouted: layout.unrouted(),
            passthrough: layout
                .route_id(PASSTHROUGH_ROUTE, None)
                .unwrap_or(layout.unrouted()),
        }
    }

    pub fn service(&self, service: usize) -> Option<ServiceId> {
        self.services.get(service).copied().flatten()
    }

    pub fn endpoint(&self, service: usize, addr: SocketAddr) -> Option<EndpointId> {
        self.endpoints.get(service)?.get(&addr).copied()
    }

    /// The handle a request counts under: its route's and service's, or, sent to a
    /// service by original destination (no route, `route == usize::MAX`), the service's
    /// [`DESTINATION_ROUTE`] handle; else unrouted.
    pub fn request_route(&self, route: usize, service: usize) -> RouteId {
        if route == usize::MAX {
            return self
                .by_destination
                .get(service)
                .copied()
                .flatten()
                .unwrap_or(self.unrouted);
        }
        self.route(route, service)
    }

    pub fn route(&self, route: usize, service: usize) -> RouteId {
        self.routes
            .get(route)
            .and_then(|targets| targets.iter().find(|(s, _)| *s == service))
            .map(|(_, id)| *id)
            .unwrap_or(self.unrouted)
    }
}
