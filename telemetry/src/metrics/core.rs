//! [`CoreMetrics`]: one core's counters. Single writer (the core), no lock, no atomics, no
//! allocation when recording: every `record_*` is a bounds-checked index into a flat array
//! of `Cell<u64>` plus an add. The admin scrape asks each core for a
//! [`snapshot`](CoreMetrics::snapshot) (a copy of the array, sent to the control thread) and
//! merges them there.
//!
//! Lifecycle of a configuration change: the control thread builds a new
//! [`MetricsLayout`] beside the new routing snapshot and sends both; the core calls
//! [`install`](CoreMetrics::install) at a loop boundary, which carries every count whose
//! labels survive over to the new layout. Requests still in flight hold handles of the old
//! layout; recording with them goes through a [`Translation`] to the same labels in the new
//! one. The last [`MAX_TRANSLATIONS`] layouts are remembered; a handle of an older one, or
//! of a service or route that left, counts nowhere; a request whose endpoint left still
//! counts for its (service, route) without the endpoint label.

use super::callers::CallerTable;
use super::labels::{
    DeniedReason, Direction, EndpointState, ErrorKind, Peer, RetryReason, StatusClass,
};
use super::latency::{bucket, nanos, SUM_SLOT};
use super::layout::{
    service_direction, EndpointId, MetricsLayout, RouteId, ServiceId, ACCEPTED, DENIED,
    EP_EJECTIONS, EP_STATE, ERRORS, OPEN, RECEIVED, SENT, SVC_BUDGET_EXHAUSTED,
    SVC_CONNECTIONS_OPENED, SVC_CONNECTIONS_REUSED, SVC_DEADLINE_EXCEEDED, SVC_RETRIES,
};
use super::remap::{fresh_values, remap, StateCells, Translation};
use super::snapshot::MetricsSnapshot;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

/// Older layouts whose handles are still translated after a configuration change. A
/// request would have to outlive this many configuration changes to lose its count.
pub const MAX_TRANSLATIONS: usize = 4;

/// One core's metrics. `Send` (built on the control thread, moved to its core) but not
/// `Sync`: only its core writes it. Recording takes `&self`, so the core can share it
/// through an `Rc`.
#[derive(Debug)]
pub struct CoreMetrics {
    layout: Arc<MetricsLayout>,
    values: Box<[Cell<u64>]>,
    /// Newest first.
    translations: Vec<Translation>,
    /// Inbound requests of callers with a verified identity (kept across layouts).
    callers: RefCell<CallerTable>,
}

impl CoreMetrics {
    /// Counters for `layout`, all zero, every endpoint available.
    pub fn new(layout: Arc<MetricsLayout>) -> CoreMetrics {
        let values = fresh_values(&layout).into_iter().map(Cell::new).collect();
        CoreMetrics {
            layout,
            values,
            translations: Vec::new(),
            callers: RefCell::new(CallerTable::default()),
        }
    }

    /// The layout in force.
    pub fn layout(&self) -> &Arc<MetricsLayout> {
        &self.layout
    }

    /// Switches to `layout` (at a loop boundary, not per request: this allocates). Counts
    /// and endpoint states whose labels are in `layout` carry over.
    pub fn install(&mut self, layout: Arc<MetricsLayout>) {
        if Arc::ptr_eq(&layout, &self.layout) {
            return;
        }
        let old: Vec<u64> = self.values.iter().map(Cell::get).collect();
        let mut new = fresh_values(&layout);
        remap(&self.layout, &old, &layout, &mut new, StateCells::Replace);
        let step = Translation::new(&self.layout, &layout);
        let mut translations = Vec::with_capacity(MAX_TRANSLATIONS);
        translations.extend(
            self.translations
                .iter()
                .take(MAX_TRANSLATIONS - 1)
                .map(|t| t.then(&step)),
        );
        translations.insert(0, step);
        self.translations = translations;
        self.values = new.into_iter().map(Cell::new).collect();
        self.layout = layout;
    }

    /// A copy of the counters, to send to the control thread for merging and encoding.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut snapshot = MetricsSnapshot::from_core(
            self.layout.clone(),
            self.values.iter().map(Cell::get).collect(),
        );
        snapshot.callers = self.callers.borrow().counts.clone();
        snapshot
    }

    /// A finished request that came in on `direction`: the status the client got (its
    /// class), the endpoint that answered (or none: no route, no endpoint, failed before
    /// one was chosen) and the whole latency as the client saw it.
    pub fn record_response(
        &self,
        direction: Direction,
        route: RouteId,
        endpoint: Option<EndpointId>,
        status: u16,
        latency: Duration,
    ) {
        let Some(r) = self.route(route) else {
            return;
        };
        let entry = &self.layout.routes[r];
        let slot = match endpoint.and_then(|e| self.endpoint(e)) {
            Some((s, local)) if entry.slots > 1 && entry.service == Some(s as u32) => local + 1,
            _ => 0,
        };
        let class = StatusClass::from_status(status).slot();
        self.add(entry.request_cell(direction.slot(), slot) + class, 1);
        let latency = nanos(latency);
        let histogram = self.layout.latency_block(r, direction.slot());
        self.add(histogram + bucket(latency), 1);
        self.add(histogram + SUM_SLOT, latency);
    }

    /// A finished inbound request whose caller proved `client_id` over mutual TLS: counted
    /// as [`record_response`](Self::record_response) counts an inbound one, under the
    /// `client_id` label instead of the layout's (inbound requests carry no route, service
    /// or endpoint label). Past the layout's `max_client_ids` identities on this core, under
    /// [`OVERFLOW_CLIENT_ID`](crate::metrics::OVERFLOW_CLIENT_ID). No allocation but the
    /// first time an identity is seen.
    pub fn record_inbound_response_from(&self, client_id: &str, status: u16, latency: Duration) {
        let max = self.layout.max_client_ids;
        if let Ok(mut callers) = self.callers.try_borrow_mut() {
            callers.record(client_id, max, status, latency);
        }
    }

    /// The inbound policy refused a request, for `reason`.
    pub fn record_inbound_denied(&self, reason: DeniedReason) {
        self.add(DENIED + reason.slot(), 1);
    }

    /// An attempt of a request to `service` (from `direction`) is retried, for `reason`.
    pub fn record_retry(&self, direction: Direction, service: ServiceId, reason: RetryReason) {
        let at = service_direction(direction.slot()) + SVC_RETRIES + reason.slot();
        self.add_service(service, at, 1);
    }

    /// A retry was wanted but the retry budget of `service` had none left.
    pub fn record_retry_budget_exhausted(&self, direction: Direction, service: ServiceId) {
        let at = service_direction(direction.slot()) + SVC_BUDGET_EXHAUSTED;
        self.add_service(service, at, 1);
    }

    /// A request to `service` was failed because its deadline had passed.
    pub fn record_deadline_exceeded(&self, direction: Direction, service: ServiceId) {
        let at = service_direction(direction.slot()) + SVC_DEADLINE_EXCEEDED;
        self.add_service(service, at, 1);
    }

    /// A new upstream connection to `service` was opened.
    pub fn record_upstream_connection_opened(&self, service: ServiceId) {
        self.add_service(service, SVC_CONNECTIONS_OPENED, 1);
    }

    /// A pooled upstream connection to `service` was reused.
    pub fn record_upstream_connection_reused(&self, service: ServiceId) {
        self.add_service(service, SVC_CONNECTIONS_REUSED, 1);
    }

    /// This core ejected `endpoint` from its pool (an ejection or a failed half-open probe).
    pub fn record_ejection(&self, endpoint: EndpointId) {
        if let Some(block) = self.endpoint_block(endpoint) {
            self.add(block + EP_EJECTIONS, 1);
        }
    }

    /// `endpoint` is now in `state` on this core.
    pub fn set_endpoint_state(&self, endpoint: EndpointId, state: EndpointState) {
        if let Some(block) = self.endpoint_block(endpoint) {
            for s in EndpointState::ALL {
                self.set(block + EP_STATE + s.slot(), u64::from(s == state));
            }
        }
    }

    /// A client TCP connection was accepted (and is now open).
    pub fn record_client_connection_opened(&self) {
        self.add(ACCEPTED, 1);
        self.add(OPEN, 1);
    }

    /// A client TCP connection was closed.
    pub fn record_client_connection_closed(&self) {
        if let Some(cell) = self.values.get(OPEN) {
            cell.set(cell.get().saturating_sub(1));
        }
    }

    /// `bytes` were read from `peer`.
    pub fn record_bytes_received(&self, peer: Peer, bytes: u64) {
        self.add(RECEIVED + peer.slot(), bytes);
    }

    /// `bytes` were written to `peer`.
    pub fn record_bytes_sent(&self, peer: Peer, bytes: u64) {
        self.add(SENT + peer.slot(), bytes);
    }

    /// An error of `kind` ended a request or connection.
    pub fn record_error(&self, kind: ErrorKind) {
        self.add(ERRORS + kind.slot(), 1);
    }

    pub(super) fn add(&self, index: usize, n: u64) {
        if let Some(cell) = self.values.get(index) {
            cell.set(cell.get().wrapping_add(n));
        }
    }

    fn set(&self, index: usize, n: u64) {
        if let Some(cell) = self.values.get(index) {
            cell.set(n);
        }
    }

    pub(super) fn add_service(&self, service: ServiceId, offset: usize, n: u64) {
        if let Some(s) = self.service(service) {
            self.add(self.layout.service_block(s) + offset, n);
        }
    }

    fn endpoint_block(&self, endpoint: EndpointId) -> Option<usize> {
        let (s, local) = self.endpoint(endpoint)?;
        self.layout.endpoint_block(s, local)
    }

    /// The current layout's index of `id`, translating an older layout's handle.
    fn service(&self, id: ServiceId) -> Option<usize> {
        if id.generation == self.layout.generation {
            return self.layout.service_index(id);
        }
        let id = self.translation(id.generation)?.service(id)?;
        self.layout.service_index(id)
    }

    fn route(&self, id: RouteId) -> Option<usize> {
        if id.generation == self.layout.generation {
            return self.layout.route_index(id);
        }
        let id = self.translation(id.generation)?.route(id)?;
        self.layout.route_index(id)
    }

    /// (service index, endpoint index within it) in the current layout.
    fn endpoint(&self, id: EndpointId) -> Option<(usize, usize)> {
        let id = if id.generation == self.layout.generation {
            id
        } else {
            self.translation(id.generation)?.endpoint(id)?
        };
        let s = self.layout.service_index(id.service())?;
        let local = id.local as usize;
        (local < self.layout.services[s].endpoints.len()).then_some((s, local))
    }

    fn translation(&self, generation: u32) -> Option<&Translation> {
        self.translations
            .iter()
            .find(|t| t.generation() == generation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::layout::LayoutBuilder;

    fn users_layout(endpoints: &[&str]) -> Arc<MetricsLayout> {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", endpoints.iter());
        b.add_route("api", Some(users));
        b.build()
    }

    fn handles(layout: &MetricsLayout) -> (ServiceId, RouteId) {
        let users = layout.service_id("users").unwrap();
        (users, layout.route_id("api", Some(users)).unwrap())
    }

    #[test]
    fn records_exact_counts() {
        let layout = users_layout(&["a:1", "b:1"]);
        let (users, api) = handles(&layout);
        let a = layout.endpoint_at(users, 0).unwrap();
        let b = layout.endpoint_at(users, 1).unwrap();
        let m = CoreMetrics::new(layout);
        for _ in 0..3 {
            m.record_response(
                Direction::Proxy,
                api,
                Some(a),
                200,
                Duration::from_millis(3),
            );
        }
        m.record_response(
            Direction::Proxy,
            api,
            Some(b),
            503,
            Duration::from_millis(300),
        );
        m.record_response(Direction::Proxy, api, None, 504, Duration::from_secs(20));
        m.record_response(
            Direction::Outbound,
            api,
            Some(a),
            200,
            Duration::from_millis(3),
        );
        m.record_retry(Direction::Inbound, users, RetryReason::Reset);
        m.record_retry(Direction::Proxy, users, RetryReason::Reset);
        m.record_retry(Direction::Proxy, users, RetryReason::Reset);
        m.record_retry_budget_exhausted(Direction::Proxy, users);
        m.record_deadline_exceeded(Direction::Proxy, users);
        m.record_upstream_connection_opened(users);
        m.record_upstream_connection_reused(users);
        m.record_upstream_connection_reused(users);
        m.record_ejection(b);
        m.set_endpoint_state(b, EndpointState::Ejected);
        m.record_client_connection_opened();
        m.record_client_connection_opened();
        m.record_client_connection_closed();
        m.record_bytes_received(Peer::Client, 100);
        m.record_bytes_sent(Peer::Upstream, 40);
        m.record_error(ErrorKind::Timeout);

        let s = m.snapshot();
        let q = |ep: Option<&str>, class| s.requests(Some("api"), Some("users"), ep, class);
        assert_eq!(q(Some("a:1"), StatusClass::Success), 4, "every direction");
        let q_in = |d, ep: Option<&str>| {
            s.requests_in(d, Some("api"), Some("users"), ep, StatusClass::Success)
        };
        assert_eq!(q_in(Direction::Proxy, Some("a:1")), 3);
        assert_eq!(q_in(Direction::Outbound, Some("a:1")), 1);
        assert_eq!(q_in(Direction::Inbound, Some("a:1")), 0);
        let outbound = s.latency_in(Direction::Outbound, Some("api"), Some("users"));
        assert_eq!(outbound.map(|h| h.count), Some(1));
        assert_eq!(
            s.retries_in(Direction::Inbound, "users", RetryReason::Reset),
            1
        );
        assert_eq!(
            s.retries_in(Direction::Proxy, "users", RetryReason::Reset),
            2
        );
        assert_eq!(q(Some("b:1"), StatusClass::ServerError), 1);
        assert_eq!(q(None, StatusClass::ServerError), 1);
        assert_eq!(q(Some("a:1"), StatusClass::ServerError), 0);
        let h = s.latency(Some("api"), Some("users")).unwrap();
        assert_eq!(h.count, 6);
        assert_eq!(h.sum_nanos, 12_000_000 + 300_000_000 + 20_000_000_000);
        // 3 ms → le=0.005 (bucket 2); 300 ms → le=0.5 (bucket 8); 20 s → +Inf.
        assert_eq!(h.buckets[2], 4);
        assert_eq!(h.buckets[8], 1);
        assert_eq!(h.buckets[13], 1);
        assert_eq!(s.retries("users", RetryReason::Reset), 3);
        assert_eq!(s.retries("users", RetryReason::Timeout), 0);
        assert_eq!(s.retry_budget_exhausted("users"), 1);
        assert_eq!(s.deadline_exceeded("users"), 1);
        assert_eq!(s.upstream_connections_opened("users"), 1);
        assert_eq!(s.upstream_connections_reused("users"), 2);
        assert_eq!(s.ejections("users", "b:1"), 1);
        assert_eq!(s.ejections("users", "a:1"), 0);
        assert_eq!(s.endpoint_state("users", "b:1", EndpointState::Ejected), 1);
        assert_eq!(
            s.endpoint_state("users", "b:1", EndpointState::Available),
            0
        );
        assert_eq!(
            s.endpoint_state("users", "a:1", EndpointState::Available),
            1
        );
        assert_eq!(s.client_connections_accepted(), 2);
        assert_eq!(s.client_connections_open(), 1);
        assert_eq!(s.bytes_received(Peer::Client), 100);
        assert_eq!(s.bytes_sent(Peer::Upstream), 40);
        assert_eq!(s.bytes_sent(Peer::Client), 0);
        assert_eq!(s.errors(ErrorKind::Timeout), 1);
    }

    #[test]
    fn unrouted_and_foreign_handles() {
        let layout = users_layout(&["a:1"]);
        let m = CoreMetrics::new(layout.clone());
        m.record_response(
            Direction::Proxy,
            layout.unrouted(),
            None,
            404,
            Duration::ZERO,
        );
        // A handle from an unrelated layout counts nowhere (and does not panic).
        let other = users_layout(&["a:1"]);
        let (users, api) = handles(&other);
        m.record_response(Direction::Proxy, api, None, 200, Duration::ZERO);
        m.record_retry(Direction::Proxy, users, RetryReason::Status);
        let s = m.snapshot();
        assert_eq!(s.requests(None, None, None, StatusClass::ClientError), 1);
        assert_eq!(
            s.requests(Some("api"), Some("users"), None, StatusClass::Success),
            0
        );
        assert_eq!(s.retries("users", RetryReason::Status), 0);
    }

    #[test]
    fn endpoint_of_another_service_counts_without_endpoint() {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", ["a:1"]);
        let orders = b.add_service("orders", ["o:1"]);
        let api = b.add_route("api", Some(users));
        let layout = b.build();
        let o = layout.endpoint_at(orders, 0).unwrap();
        let m = CoreMetrics::new(layout);
        m.record_response(Direction::Proxy, api, Some(o), 200, Duration::ZERO);
        let s = m.snapshot();
        assert_eq!(
            s.requests(Some("api"), Some("users"), None, StatusClass::Success),
            1
        );
    }

    #[test]
    fn per_endpoint_off_counts_per_route() {
        let mut b = LayoutBuilder::new(false);
        let users = b.add_service("users", ["a:1"]);
        let api = b.add_route("api", Some(users));
        let layout = b.build();
        let a = layout.endpoint_at(users, 0).unwrap();
        let m = CoreMetrics::new(layout);
        m.record_response(Direction::Proxy, api, Some(a), 200, Duration::ZERO);
        let s = m.snapshot();
        assert_eq!(
            s.requests(Some("api"), Some("users"), None, StatusClass::Success),
            1
        );
        assert_eq!(
            s.requests(
                Some("api"),
                Some("users"),
                Some("a:1"),
                StatusClass::Success
            ),
            0
        );
    }

    #[test]
    fn install_carries_counts_and_translates_in_flight_handles() {
        let one = users_layout(&["a:1", "b:1"]);
        let (users1, api1) = handles(&one);
        let b1 = one.endpoint_at(users1, 1).unwrap();
        let a1 = one.endpoint_at(users1, 0).unwrap();
        let mut m = CoreMetrics::new(one.clone());
        m.record_response(Direction::Proxy, api1, Some(b1), 200, Duration::ZERO);
        m.set_endpoint_state(b1, EndpointState::HalfOpen);
        m.record_client_connection_opened();

        // b stays (now first), a leaves, c arrives.
        let two = users_layout(&["b:1", "c:1"]);
        m.install(two.clone());
        let three = users_layout(&["c:1", "b:1"]);
        m.install(three.clone());
        // In-flight requests from layout one finish now.
        m.record_response(Direction::Proxy, api1, Some(b1), 200, Duration::ZERO);
        m.record_response(Direction::Proxy, api1, Some(a1), 200, Duration::ZERO);
        m.record_retry(Direction::Proxy, users1, RetryReason::Timeout);
        m.record_ejection(b1);

        let s = m.snapshot();
        let ok = |ep| s.requests(Some("api"), Some("users"), ep, StatusClass::Success);
        assert_eq!(ok(Some("b:1")), 2);
        assert_eq!(ok(Some("a:1")), 0, "a left");
        assert_eq!(
            ok(None),
            1,
            "a's late request counts for the route, without endpoint"
        );
        assert_eq!(s.retries("users", RetryReason::Timeout), 1);
        assert_eq!(s.ejections("users", "b:1"), 1);
        assert_eq!(s.endpoint_state("users", "b:1", EndpointState::HalfOpen), 1);
        assert_eq!(
            s.endpoint_state("users", "b:1", EndpointState::Available),
            0
        );
        assert_eq!(
            s.endpoint_state("users", "c:1", EndpointState::Available),
            1
        );
        assert_eq!(s.client_connections_open(), 1);
        assert_eq!(s.client_connections_accepted(), 1);
        assert!(Arc::ptr_eq(m.layout(), &three));
    }

    #[test]
    fn very_old_handles_are_forgotten() {
        let first = users_layout(&["a:1"]);
        let (_, api) = handles(&first);
        let mut m = CoreMetrics::new(first);
        for _ in 0..=MAX_TRANSLATIONS {
            m.install(users_layout(&["a:1"]));
        }
        m.record_response(Direction::Proxy, api, None, 200, Duration::ZERO);
        let s = m.snapshot();
        assert_eq!(
            s.requests(Some("api"), Some("users"), None, StatusClass::Success),
            0
        );
        assert_eq!(m.translations.len(), MAX_TRANSLATIONS);
    }

    #[test]
    fn closing_more_than_opened_stays_at_zero() {
        let m = CoreMetrics::new(MetricsLayout::empty(true));
        m.record_client_connection_closed();
        assert_eq!(m.snapshot().client_connections_open(), 0);
    }

    #[test]
    fn core_metrics_is_send_and_its_snapshot_too() {
        fn send<T: Send>() {}
        send::<CoreMetrics>();
        send::<MetricsSnapshot>();
    }
}
