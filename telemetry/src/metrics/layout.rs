//! [`MetricsLayout`]: the label sets of one configuration, registered before any request is
//! counted, and the small integer handles ([`ServiceId`], [`RouteId`], [`EndpointId`]) that
//! the hot path records with.
//!
//! The control thread builds a layout with a [`LayoutBuilder`] from the same snapshot it
//! sends to the cores (services with their endpoints, routes with the services they send
//! to) and hands every core the same `Arc`. A layout fixes where each counter lives in a
//! flat `[u64]`:
//!
//! ```text
//! globals │ requests: per (route, service) × endpoint slot × class │ latency histograms:
//! per (route, service) │ per service block │ per endpoint block
//! ```
//!
//! Handles carry the generation of the layout that issued them, so a request that started
//! before a configuration change and finishes after it is still counted under its labels
//! (see `CoreMetrics::install`).

use super::callers::DEFAULT_MAX_CLIENT_IDS;
use super::labels::{
    DeniedReason, Direction, EndpointState, ErrorKind, Peer, RetryReason, StatusClass,
};
use super::latency::HISTOGRAM_STRIDE;
use super::transport::{DETECT_CELLS, TCP_CELLS};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// Generations start at 1; every builder takes the next one.
static NEXT_GENERATION: AtomicU32 = AtomicU32::new(1);

// Global counters, at fixed offsets at the start of every layout.
pub(crate) const ACCEPTED: usize = 0;
pub(crate) const OPEN: usize = 1;
pub(crate) const RECEIVED: usize = 2;
pub(crate) const SENT: usize = RECEIVED + Peer::ALL.len();
pub(crate) const ERRORS: usize = SENT + Peer::ALL.len();
pub(crate) const DETECTIONS: usize = ERRORS + ErrorKind::ALL.len();
/// Opaque TCP to no known service (passed through to its original destination).
pub(crate) const TCP_UNKNOWN: usize = DETECTIONS + DETECT_CELLS;
/// HTTP/2 errors on client connections, by error code.
pub(crate) const HTTP2_ERRORS: usize = TCP_UNKNOWN + TCP_CELLS;
/// gRPC responses by direction and status.
pub(crate) const GRPC_RESPONSES: usize = HTTP2_ERRORS + super::http2::HTTP2_CELLS;
/// Inbound requests refused by the policy, by reason.
pub(crate) const DENIED: usize = GRPC_RESPONSES + super::grpc::GRPC_CELLS;
pub(crate) const GLOBALS: usize = DENIED + DeniedReason::ALL.len();

/// Request families count per `direction`: each request counter (and latency histogram,
/// and per-service request counter) exists once per direction, side by side.
pub(crate) const DIRECTIONS: usize = Direction::ALL.len();

// The block of counters of one service: first the request counters, once per direction
// (`SVC_PER_DIRECTION` cells each, at the offsets below within them), then the rest.
pub(crate) const SVC_RETRIES: usize = 0;
pub(crate) const SVC_BUDGET_EXHAUSTED: usize = RetryReason::ALL.len();
pub(crate) const SVC_DEADLINE_EXCEEDED: usize = SVC_BUDGET_EXHAUSTED + 1;
pub(crate) const SVC_PER_DIRECTION: usize = SVC_DEADLINE_EXCEEDED + 1;
pub(crate) const SVC_CONNECTIONS_OPENED: usize = DIRECTIONS * SVC_PER_DIRECTION;
pub(crate) const SVC_CONNECTIONS_REUSED: usize = SVC_CONNECTIONS_OPENED + 1;
pub(crate) const SVC_TCP: usize = SVC_CONNECTIONS_REUSED + 1;
pub(crate) const SERVICE_STRIDE: usize = SVC_TCP + TCP_CELLS;

// The block of one endpoint: ejections, then one 0/1 cell per state.
pub(crate) const EP_EJECTIONS: usize = 0;
pub(crate) const EP_STATE: usize = 1;
pub(crate) const ENDPOINT_STRIDE: usize = EP_STATE + EndpointState::ALL.len();

/// Counters per request slot: one per status class.
pub(crate) const CLASSES: usize = StatusClass::ALL.len();

/// A destination service, as registered in one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId {
    pub(crate) generation: u32,
    pub(crate) index: u32,
}

/// An endpoint of a service, as registered in one layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointId {
    pub(crate) generation: u32,
    pub(crate) service: u32,
    pub(crate) local: u32,
}

/// A (route, destination service) pair, as registered in one layout. A route split across
/// services has one `RouteId` per service; requests that matched no route count under
/// [`MetricsLayout::unrouted`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteId {
    pub(crate) generation: u32,
    pub(crate) index: u32,
}

impl EndpointId {
    /// The service this endpoint belongs to.
    pub fn service(self) -> ServiceId {
        ServiceId {
            generation: self.generation,
            index: self.service,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceEntry {
    pub(crate) name: Arc<str>,
    pub(crate) endpoints: Vec<Arc<str>>,
    pub(crate) endpoint_by_name: HashMap<Arc<str>, u32>,
    /// Index of its first endpoint among all endpoints of the layout.
    pub(crate) first_endpoint: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RouteEntry {
    /// `None` only for the unrouted entry (index 0).
    pub(crate) name: Option<Arc<str>>,
    pub(crate) service: Option<u32>,
    /// Offset of its first request counter.
    pub(crate) request_base: usize,
    /// Endpoint slots: slot 0 is "no endpoint", slot `i + 1` is the service's endpoint `i`
    /// (only when per-endpoint metrics are on). Each direction has its own `slots`.
    pub(crate) slots: usize,
}

impl RouteEntry {
    /// Offset of the class counters of endpoint slot `slot` in direction slot `direction`.
    pub(crate) fn request_cell(&self, direction: usize, slot: usize) -> usize {
        self.request_base + (direction * self.slots + slot) * CLASSES
    }
}

/// The offset of `direction`'s counters among those of one service (see [`SVC_RETRIES`]).
pub(crate) const fn service_direction(direction: usize) -> usize {
    direction * SVC_PER_DIRECTION
}

/// The label sets of one configuration and where each counter lives. Immutable once built;
/// shared by every core as an `Arc`.
#[derive(Debug, PartialEq)]
pub struct MetricsLayout {
    pub(crate) generation: u32,
    pub(crate) per_endpoint: bool,
    /// Distinct `client_id` values a core counts inbound requests under (see
    /// [`LayoutBuilder::max_client_ids`]).
    pub(crate) max_client_ids: usize,
    pub(crate) services: Vec<ServiceEntry>,
    pub(crate) routes: Vec<RouteEntry>,
    service_by_name: HashMap<Arc<str>, u32>,
    route_by_name: HashMap<Arc<str>, Vec<(Option<u32>, u32)>>,
    pub(crate) latency_base: usize,
    pub(crate) services_base: usize,
    pub(crate) endpoints_base: usize,
    pub(crate) endpoint_count: usize,
    pub(crate) len: usize,
}

/// Registers services, endpoints and routes, then [`build`](Self::build)s the layout.
/// Registering a name twice returns the first handle.
///
/// ```
/// use coremesh_telemetry::LayoutBuilder;
/// let mut builder = LayoutBuilder::new(true);
/// let users = builder.add_service("users", ["10.0.0.1:8080", "10.0.0.2:8080"]);
/// let api = builder.add_route("api", Some(users));
/// let layout = builder.build();
/// assert_eq!(layout.route_id("api", Some(users)), Some(api));
/// assert!(layout.endpoint_at(users, 1).is_some());
/// ```
#[derive(Debug)]
pub struct LayoutBuilder {
    generation: u32,
    per_endpoint: bool,
    max_client_ids: usize,
    services: Vec<ServiceEntry>,
    service_by_name: HashMap<Arc<str>, u32>,
    routes: Vec<(Option<Arc<str>>, Option<u32>)>,
    route_by_name: HashMap<Arc<str>, Vec<(Option<u32>, u32)>>,
}

impl LayoutBuilder {
    /// A builder with nothing registered but the unrouted entry. `per_endpoint_metrics`
    /// (config `per_endpoint_metrics`, default on) decides whether request counts carry an
    /// `endpoint` label; off, they are counted per (service, route) only.
    pub fn new(per_endpoint_metrics: bool) -> LayoutBuilder {
        LayoutBuilder {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            per_endpoint: per_endpoint_metrics,
            max_client_ids: DEFAULT_MAX_CLIENT_IDS,
            services: Vec::new(),
            service_by_name: HashMap::new(),
            routes: vec![(None, None)],
            route_by_name: HashMap::new(),
        }
    }

    /// How many distinct callers' identities (`client_id`) each core counts inbound
    /// requests under (config `max_client_ids`); the callers beyond count under
    /// [`OVERFLOW_CLIENT_ID`](crate::metrics::OVERFLOW_CLIENT_ID). Default
    /// [`DEFAULT_MAX_CLIENT_IDS`].
    pub fn max_client_ids(&mut self, max: usize) -> &mut LayoutBuilder {
        self.max_client_ids = max;
        self
    }

    /// Registers service `name` with `endpoints` (in order: the `i`-th is
    /// [`MetricsLayout::endpoint_at`]`(service, i)`).
    pub fn add_service<I, S>(&mut self, name: &str, endpoints: I) -> ServiceId
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let index = match self.service_by_name.get(name) {
            Some(&index) => index,
            None => {
                let name: Arc<str> = Arc::from(name);
                let index = index_u32(self.services.len());
                self.services.push(ServiceEntry {
                    name: name.clone(),
                    endpoints: Vec::new(),
                    endpoint_by_name: HashMap::new(),
                    first_endpoint: 0,
                });
                self.service_by_name.insert(name, index);
                index
            }
        };
        let service = ServiceId {
            generation: self.generation,
            index,
        };
        for endpoint in endpoints {
            self.add_endpoint(service, endpoint.as_ref());
        }
        service
    }

    /// Registers endpoint `name` of `service` (a handle from this builder).
    pub fn add_endpoint(&mut self, service: ServiceId, name: &str) -> EndpointId {
        debug_assert_eq!(service.generation, self.generation, "foreign ServiceId");
        let entry = match self.services.get_mut(service.index as usize) {
            Some(entry) if service.generation == self.generation => entry,
            // A handle from another builder: an id that resolves to nothing.
            _ => {
                return EndpointId {
                    generation: self.generation,
                    service: service.index,
                    local: u32::MAX,
                }
            }
        };
        let local = match entry.endpoint_by_name.get(name) {
            Some(&local) => local,
            None => {
                let name: Arc<str> = Arc::from(name);
                let local = index_u32(entry.endpoints.len());
                entry.endpoints.push(name.clone());
                entry.endpoint_by_name.insert(name, local);
                local
            }
        };
        EndpointId {
            generation: self.generation,
            service: service.index,
            local,
        }
    }

    /// Registers route `route` sending to `service` (a handle from this builder), or to no
    /// service (a route whose targets are all gone).
    pub fn add_route(&mut self, route: &str, service: Option<ServiceId>) -> RouteId {
        debug_assert!(
            service.is_none_or(|s| s.generation == self.generation),
            "foreign ServiceId"
        );
        let services = self.services.len();
        let service = service
            .filter(|s| s.generation == self.generation && (s.index as usize) < services)
            .map(|s| s.index);
        let existing = self
            .route_by_name
            .get(route)
            .and_then(|pairs| pairs.iter().find(|(s, _)| *s == service));
        let index = match existing {
            Some(&(_, index)) => index,
            None => {
                let name: Arc<str> = Arc::from(route);
                let index = index_u32(self.routes.len());
                self.routes.push((Some(name.clone()), service));
                self.route_by_name
                    .entry(name)
                    .or_default()
                    .push((service, index));
                index
            }
        };
        RouteId {
            generation: self.generation,
            index,
        }
    }

    /// Fixes every counter's place.
    pub fn build(self) -> Arc<MetricsLayout> {
        Arc::new(self.build_layout())
    }

    pub(crate) fn build_layout(mut self) -> MetricsLayout {
        let mut endpoint_count = 0;
        for service in &mut self.services {
            service.first_endpoint = endpoint_count;
            endpoint_count += service.endpoints.len();
        }
        let mut offset = GLOBALS;
        let mut routes = Vec::with_capacity(self.routes.len());
        for (name, service) in self.routes {
            let slots = match service {
                Some(s) if self.per_endpoint => 1 + self.services[s as usize].endpoints.len(),
                _ => 1,
            };
            routes.push(RouteEntry {
                name,
                service,
                request_base: offset,
                slots,
            });
            offset += DIRECTIONS * slots * CLASSES;
        }
        let latency_base = offset;
        offset += routes.len() * DIRECTIONS * HISTOGRAM_STRIDE;
        let services_base = offset;
        offset += self.services.len() * SERVICE_STRIDE;
        let endpoints_base = offset;
        offset += endpoint_count * ENDPOINT_STRIDE;
        MetricsLayout {
            generation: self.generation,
            per_endpoint: self.per_endpoint,
            max_client_ids: self.max_client_ids,
            services: self.services,
            routes,
            service_by_name: self.service_by_name,
            route_by_name: self.route_by_name,
            latency_base,
            services_base,
            endpoints_base,
            endpoint_count,
            len: offset,
        }
    }
}

/// Label sets beyond `u32::MAX` are not a configuration anyone can run; saturate rather
/// than wrap so an absurd one cannot alias another's counters.
fn index_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl MetricsLayout {
    /// A layout with no services or routes (what a core starts with before its first
    /// snapshot).
    pub fn empty(per_endpoint_metrics: bool) -> Arc<MetricsLayout> {
        LayoutBuilder::new(per_endpoint_metrics).build()
    }

    /// Whether request counts carry the `endpoint` label.
    pub fn per_endpoint_metrics(&self) -> bool {
        self.per_endpoint
    }

    /// Distinct callers' identities each core counts inbound requests under.
    pub fn max_client_ids(&self) -> usize {
        self.max_client_ids
    }

    /// The entry for requests that matched no route.
    pub fn unrouted(&self) -> RouteId {
        RouteId {
            generation: self.generation,
            index: 0,
        }
    }

    /// The service called `name`.
    pub fn service_id(&self, name: &str) -> Option<ServiceId> {
        self.service_by_name.get(name).map(|&index| ServiceId {
            generation: self.generation,
            index,
        })
    }

    /// The endpoint called `name` of `service`.
    pub fn endpoint_id(&self, service: ServiceId, name: &str) -> Option<EndpointId> {
        let s = self.service_index(service)?;
        let local = *self.services[s].endpoint_by_name.get(name)?;
        Some(EndpointId {
            generation: self.generation,
            service: service.index,
            local,
        })
    }

    /// The `position`-th endpoint registered for `service`.
    pub fn endpoint_at(&self, service: ServiceId, position: usize) -> Option<EndpointId> {
        let s = self.service_index(service)?;
        if position >= self.services[s].endpoints.len() {
            return None;
        }
        Some(EndpointId {
            generation: self.generation,
            service: service.index,
            local: index_u32(position),
        })
    }

    /// The entry for route `route` sending to `service`.
    pub fn route_id(&self, route: &str, service: Option<ServiceId>) -> Option<RouteId> {
        let service = match service {
            Some(s) => Some(index_u32(self.service_index(s)?)),
            None => None,
        };
        let pairs = self.route_by_name.get(route)?;
        let &(_, index) = pairs.iter().find(|(s, _)| *s == service)?;
        Some(RouteId {
            generation: self.generation,
            index,
        })
    }

    /// The name of `service` (for span attributes and access logs: cloning is a reference
    /// count, not a copy).
    pub fn service_name(&self, service: ServiceId) -> Option<&Arc<str>> {
        Some(&self.services[self.service_index(service)?].name)
    }

    /// The name of `endpoint`.
    pub fn endpoint_name(&self, endpoint: EndpointId) -> Option<&Arc<str>> {
        let s = self.service_index(endpoint.service())?;
        self.services[s].endpoints.get(endpoint.local as usize)
    }

    /// The route name of `route` (`None` for the unrouted entry).
    pub fn route_name(&self, route: RouteId) -> Option<&Arc<str>> {
        self.route_index(route)
            .and_then(|r| self.routes[r].name.as_ref())
    }

    /// The service `route` sends to.
    pub fn route_service(&self, route: RouteId) -> Option<ServiceId> {
        let r = self.route_index(route)?;
        self.routes[r].service.map(|index| ServiceId {
            generation: self.generation,
            index,
        })
    }

    /// Counters per core (the length of a snapshot's values).
    pub fn counter_count(&self) -> usize {
        self.len
    }

    pub(crate) fn service_index(&self, id: ServiceId) -> Option<usize> {
        let index = id.index as usize;
        (id.generation == self.generation && index < self.services.len()).then_some(index)
    }

    pub(crate) fn route_index(&self, id: RouteId) -> Option<usize> {
        let index = id.index as usize;
        (id.generation == self.generation && index < self.routes.len()).then_some(index)
    }

    /// Offset of the block of endpoint `local` of service index `s`.
    pub(crate) fn endpoint_block(&self, s: usize, local: usize) -> Option<usize> {
        let service = self.services.get(s)?;
        (local < service.endpoints.len())
            .then(|| self.endpoints_base + (service.first_endpoint + local) * ENDPOINT_STRIDE)
    }

    pub(crate) fn service_block(&self, s: usize) -> usize {
        self.services_base + s * SERVICE_STRIDE
    }

    /// The latency histogram of route entry `r` in direction slot `direction`.
    pub(crate) fn latency_block(&self, r: usize, direction: usize) -> usize {
        self.latency_base + (r * DIRECTIONS + direction) * HISTOGRAM_STRIDE
    }

    /// Index of a service by name (crate-internal, for merging and migration).
    pub(crate) fn service_by_name(&self, name: &str) -> Option<usize> {
        self.service_by_name.get(name).map(|&i| i as usize)
    }

    /// Index of a route entry by route name and service name.
    pub(crate) fn route_by_names(
        &self,
        route: Option<&str>,
        service: Option<&str>,
    ) -> Option<usize> {
        let Some(route) = route else {
            return Some(0);
        };
        let service = match service {
            Some(name) => Some(index_u32(self.service_by_name(name)?)),
            None => None,
        };
        let pairs = self.route_by_name.get(route)?;
        pairs
            .iter()
            .find(|(s, _)| *s == service)
            .map(|&(_, index)| index as usize)
    }

    /// A layout holding every label set of `a` and of `b` (for merging snapshots taken
    /// under different configurations).
    pub(crate) fn union(a: &MetricsLayout, b: &MetricsLayout) -> MetricsLayout {
        let mut builder = LayoutBuilder::new(a.per_endpoint || b.per_endpoint);
        builder.max_client_ids(a.max_client_ids.max(b.max_client_ids));
        for layout in [a, b] {
            let ids: Vec<ServiceId> = layout
                .services
                .iter()
                .map(|s| builder.add_service(&s.name, s.endpoints.iter()))
                .collect();
            for route in &layout.routes {
                if let Some(name) = &route.name {
                    builder.add_route(name, route.service.map(|s| ids[s as usize]));
                }
            }
        }
        builder.build_layout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_placed_back_to_back() {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", ["a:1", "b:1"]);
        let orders = b.add_service("orders", ["c:1"]);
        b.add_route("api", Some(users));
        b.add_route("api", Some(orders));
        b.add_route("dead", None);
        let layout = b.build();
        // unrouted: 1 slot; api/users: 3; api/orders: 2; dead: 1 → 7 slots × 5 classes,
        // once per direction; 4 histograms per direction.
        assert_eq!(layout.latency_base, GLOBALS + DIRECTIONS * 7 * CLASSES);
        assert_eq!(
            layout.services_base,
            layout.latency_base + DIRECTIONS * 4 * HISTOGRAM_STRIDE
        );
        let api_users = &layout.routes[1];
        // After the unrouted entry's slot in each direction.
        assert_eq!(api_users.request_cell(0, 0), GLOBALS + 3 * CLASSES);
        assert_eq!(api_users.request_cell(1, 0), GLOBALS + 6 * CLASSES);
        assert_eq!(api_users.request_cell(2, 2), GLOBALS + 11 * CLASSES);
        assert_eq!(layout.routes[2].request_base, GLOBALS + 12 * CLASSES);
        assert_eq!(
            layout.endpoints_base,
            layout.services_base + 2 * SERVICE_STRIDE
        );
        assert_eq!(layout.len, layout.endpoints_base + 3 * ENDPOINT_STRIDE);
        assert_eq!(layout.counter_count(), layout.len);
        assert_eq!(
            layout.endpoint_block(1, 0),
            Some(layout.endpoints_base + 2 * ENDPOINT_STRIDE)
        );
        assert_eq!(layout.endpoint_block(1, 1), None);
    }

    #[test]
    fn per_endpoint_off_keeps_one_slot_per_route() {
        let mut b = LayoutBuilder::new(false);
        let users = b.add_service("users", ["a:1", "b:1"]);
        b.add_route("api", Some(users));
        let layout = b.build();
        assert_eq!(layout.routes[1].slots, 1);
        assert!(!layout.per_endpoint_metrics());
    }

    #[test]
    fn duplicates_return_the_first_handle() {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", ["a:1"]);
        assert_eq!(b.add_service("users", ["a:1", "b:1"]), users);
        let a = b.add_endpoint(users, "a:1");
        let r = b.add_route("api", Some(users));
        assert_eq!(b.add_route("api", Some(users)), r);
        let layout = b.build();
        assert_eq!(layout.services[0].endpoints.len(), 2);
        assert_eq!(layout.endpoint_id(users, "a:1"), Some(a));
        assert_eq!(
            layout.endpoint_at(users, 1),
            layout.endpoint_id(users, "b:1")
        );
        assert_eq!(layout.endpoint_at(users, 2), None);
    }

    #[test]
    fn lookups_and_names() {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", ["a:1"]);
        let api = b.add_route("api", Some(users));
        let dead = b.add_route("dead", None);
        let layout = b.build();
        assert_eq!(layout.service_id("users"), Some(users));
        assert_eq!(layout.service_id("nope"), None);
        assert_eq!(layout.route_id("api", Some(users)), Some(api));
        assert_eq!(layout.route_id("api", None), None);
        assert_eq!(layout.route_id("dead", None), Some(dead));
        assert_eq!(layout.route_name(api).map(|n| &**n), Some("api"));
        assert_eq!(layout.route_name(layout.unrouted()), None);
        assert_eq!(layout.route_service(api), Some(users));
        assert_eq!(layout.service_name(users).map(|n| &**n), Some("users"));
        let a = layout.endpoint_at(users, 0).unwrap();
        assert_eq!(layout.endpoint_name(a).map(|n| &**n), Some("a:1"));
        assert_eq!(a.service(), users);
    }

    #[test]
    fn handles_from_another_layout_resolve_to_nothing() {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", ["a:1"]);
        let _ = b.build();
        let other = LayoutBuilder::new(true).build();
        assert_eq!(other.service_index(users), None);
        assert_eq!(other.service_name(users), None);
    }

    #[test]
    fn union_holds_both() {
        let mut b = LayoutBuilder::new(false);
        let users = b.add_service("users", ["a:1"]);
        b.add_route("api", Some(users));
        let one = b.build();
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", ["b:1"]);
        let orders = b.add_service("orders", ["c:1"]);
        b.add_route("api", Some(users));
        b.add_route("shop", Some(orders));
        let two = b.build();
        let union = MetricsLayout::union(&one, &two);
        assert!(union.per_endpoint);
        assert_eq!(union.services.len(), 2);
        assert_eq!(union.services[0].endpoints.len(), 2);
        assert_eq!(union.routes.len(), 3);
        assert_eq!(union.route_by_names(Some("shop"), Some("orders")), Some(2));
        assert_eq!(union.route_by_names(None, None), Some(0));
    }
}
