//! [`MetricsSnapshot`]: a copy of one core's counters (plain data, `Send`), and the sum of
//! several after [`merge`](MetricsSnapshot::merge). The admin scrape collects one snapshot
//! per core, merges them on the control thread and encodes the result; the getters here
//! read single series by label (for tests, `/endpoints` and `coremesh top`).

use super::callers::CallerCounts;
use super::labels::{
    DeniedReason, Direction, EndpointState, ErrorKind, Peer, RetryReason, StatusClass,
};
use super::latency::{HISTOGRAM_STRIDE, INF_SLOT, SUM_SLOT};
use super::layout::{
    service_direction, MetricsLayout, ACCEPTED, DENIED, EP_EJECTIONS, EP_STATE, ERRORS, OPEN,
    RECEIVED, SENT, SVC_BUDGET_EXHAUSTED, SVC_CONNECTIONS_OPENED, SVC_CONNECTIONS_REUSED,
    SVC_DEADLINE_EXCEEDED, SVC_RETRIES,
};
use super::remap::{fresh_values, remap, StateCells};
use std::sync::Arc;

/// Counters of one or more cores, laid out by `layout`.
#[derive(Debug, Clone)]
pub struct MetricsSnapshot {
    pub(crate) layout: Arc<MetricsLayout>,
    pub(crate) values: Vec<u64>,
    pub(crate) cores: u32,
    /// Inbound requests of callers with a verified identity.
    pub(crate) callers: CallerCounts,
}

/// One latency histogram, read from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Non-cumulative counts per bucket of
    /// [`LATENCY_BUCKETS`](crate::metrics::LATENCY_BUCKETS), then `+Inf`.
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Sum of the observed latencies, in nanoseconds.
    pub sum_nanos: u64,
}

impl MetricsSnapshot {
    pub(crate) fn from_core(layout: Arc<MetricsLayout>, values: Vec<u64>) -> MetricsSnapshot {
        MetricsSnapshot {
            layout,
            values,
            cores: 1,
            callers: CallerCounts::default(),
        }
    }

    /// A snapshot of no core at all, to merge cores into.
    pub fn empty() -> MetricsSnapshot {
        let layout = MetricsLayout::empty(true);
        MetricsSnapshot {
            values: fresh_values(&layout),
            layout,
            cores: 0,
            callers: CallerCounts::default(),
        }
    }

    /// Adds `other`'s counts to these. Snapshots taken under the same layout (the usual
    /// case: every core got the same `Arc`) add element by element; otherwise (a scrape
    /// during a configuration change) both move into a layout holding the label sets of
    /// both. Gauges add too: open connections sum over cores, and an endpoint-state value
    /// counts the cores that see the endpoint in that state.
    pub fn merge(&mut self, other: &MetricsSnapshot) {
        if other.cores == 0 {
            return;
        }
        if self.cores == 0 {
            *self = other.clone();
            return;
        }
        let same = Arc::ptr_eq(&self.layout, &other.layout) || *self.layout == *other.layout;
        if same && self.values.len() == other.values.len() {
            for (mine, theirs) in self.values.iter_mut().zip(&other.values) {
                *mine = mine.wrapping_add(*theirs);
            }
        } else {
            let union = Arc::new(MetricsLayout::union(&self.layout, &other.layout));
            let mut values = vec![0; union.len];
            remap(
                &self.layout,
                &self.values,
                &union,
                &mut values,
                StateCells::Add,
            );
            remap(
                &other.layout,
                &other.values,
                &union,
                &mut values,
                StateCells::Add,
            );
            self.layout = union;
            self.values = values;
        }
        self.callers.merge(&other.callers);
        self.cores += other.cores;
    }

    /// How many core snapshots were merged into this one.
    pub fn cores(&self) -> u32 {
        self.cores
    }

    /// The layout the counts are laid out by.
    pub fn layout(&self) -> &Arc<MetricsLayout> {
        &self.layout
    }

    /// Requests of `class` for `route` → `service` answered by `endpoint` (`None`: no
    /// endpoint, or all of them when per-endpoint metrics are off), in every direction.
    /// `route` `None` is the unrouted entry.
    pub fn requests(
        &self,
        route: Option<&str>,
        service: Option<&str>,
        endpoint: Option<&str>,
        class: StatusClass,
    ) -> u64 {
        Direction::ALL.iter().fold(0, |sum, d| {
            sum.wrapping_add(self.requests_in(*d, route, service, endpoint, class))
        })
    }

    /// [`requests`](Self::requests) that came in on `direction` only.
    pub fn requests_in(
        &self,
        direction: Direction,
        route: Option<&str>,
        service: Option<&str>,
        endpoint: Option<&str>,
        class: StatusClass,
    ) -> u64 {
        let Some(r) = self.layout.route_by_names(route, service) else {
            return 0;
        };
        let entry = &self.layout.routes[r];
        let slot = match (endpoint, entry.service) {
            (None, _) => 0,
            (Some(endpoint), Some(s)) if self.layout.per_endpoint => {
                match self.layout.services[s as usize]
                    .endpoint_by_name
                    .get(endpoint)
                {
                    Some(&local) => local as usize + 1,
                    None => return 0,
                }
            }
            _ => return 0,
        };
        self.get(entry.request_cell(direction.slot(), slot) + class.slot())
    }

    /// The latency histogram of `route` → `service`, every direction's added up.
    pub fn latency(&self, route: Option<&str>, service: Option<&str>) -> Option<LatencyHistogram> {
        let r = self.layout.route_by_names(route, service)?;
        let mut sum = self.histogram(r, Direction::Proxy);
        for d in [Direction::Inbound, Direction::Outbound] {
            let h = self.histogram(r, d);
            for (a, b) in sum.buckets.iter_mut().zip(&h.buckets) {
                *a = a.wrapping_add(*b);
            }
            sum.count = sum.count.wrapping_add(h.count);
            sum.sum_nanos = sum.sum_nanos.wrapping_add(h.sum_nanos);
        }
        Some(sum)
    }

    /// The latency histogram of `route` → `service` for requests on `direction`.
    pub fn latency_in(
        &self,
        direction: Direction,
        route: Option<&str>,
        service: Option<&str>,
    ) -> Option<LatencyHistogram> {
        let r = self.layout.route_by_names(route, service)?;
        Some(self.histogram(r, direction))
    }

    pub(crate) fn histogram(&self, r: usize, direction: Direction) -> LatencyHistogram {
        let base = self.layout.latency_block(r, direction.slot());
        let buckets: Vec<u64> = (0..=INF_SLOT).map(|b| self.get(base + b)).collect();
        LatencyHistogram {
            count: buckets.iter().fold(0, |a, b| a.wrapping_add(*b)),
            buckets,
            sum_nanos: self.get(base + SUM_SLOT),
        }
    }

    /// Retries of requests to `service` for `reason`, in every direction.
    pub fn retries(&self, service: &str, reason: RetryReason) -> u64 {
        self.all_directions(service, SVC_RETRIES + reason.slot())
    }

    /// Retries of requests to `service` on `direction` for `reason`.
    pub fn retries_in(&self, direction: Direction, service: &str, reason: RetryReason) -> u64 {
        let at = service_direction(direction.slot()) + SVC_RETRIES + reason.slot();
        self.service_counter(service, at)
    }

    /// Retries of requests to `service` refused by the retry budget, in every direction.
    pub fn retry_budget_exhausted(&self, service: &str) -> u64 {
        self.all_directions(service, SVC_BUDGET_EXHAUSTED)
    }

    /// Requests to `service` failed because their deadline passed, in every direction.
    pub fn deadline_exceeded(&self, service: &str) -> u64 {
        self.all_directions(service, SVC_DEADLINE_EXCEEDED)
    }

    /// The per-direction service counter at `offset`, summed over directions.
    fn all_directions(&self, service: &str, offset: usize) -> u64 {
        Direction::ALL.iter().fold(0, |sum, d| {
            let at = service_direction(d.slot()) + offset;
            sum.wrapping_add(self.service_counter(service, at))
        })
    }

    /// Upstream connections opened to `service`.
    pub fn upstream_connections_opened(&self, service: &str) -> u64 {
        self.service_counter(service, SVC_CONNECTIONS_OPENED)
    }

    /// Pooled upstream connections to `service` reused.
    pub fn upstream_connections_reused(&self, service: &str) -> u64 {
        self.service_counter(service, SVC_CONNECTIONS_REUSED)
    }

    /// Ejections of `endpoint` of `service`.
    pub fn ejections(&self, service: &str, endpoint: &str) -> u64 {
        self.endpoint_counter(service, endpoint, EP_EJECTIONS)
    }

    /// Cores that see `endpoint` of `service` in `state`.
    pub fn endpoint_state(&self, service: &str, endpoint: &str, state: EndpointState) -> u64 {
        self.endpoint_counter(service, endpoint, EP_STATE + state.slot())
    }

    /// Client TCP connections accepted.
    pub fn client_connections_accepted(&self) -> u64 {
        self.get(ACCEPTED)
    }

    /// Client TCP connections open now.
    pub fn client_connections_open(&self) -> u64 {
        self.get(OPEN)
    }

    /// Bytes read from `peer`.
    pub fn bytes_received(&self, peer: Peer) -> u64 {
        self.get(RECEIVED + peer.slot())
    }

    /// Bytes written to `peer`.
    pub fn bytes_sent(&self, peer: Peer) -> u64 {
        self.get(SENT + peer.slot())
    }

    /// Errors of `kind`.
    pub fn errors(&self, kind: ErrorKind) -> u64 {
        self.get(ERRORS + kind.slot())
    }

    /// Inbound requests the policy refused for `reason`.
    pub fn inbound_denied(&self, reason: DeniedReason) -> u64 {
        self.get(DENIED + reason.slot())
    }

    /// Inbound requests of `class` from the caller that proved `client_id` (or, with
    /// [`OVERFLOW_CLIENT_ID`](crate::metrics::OVERFLOW_CLIENT_ID), from the callers beyond
    /// the cap). Plaintext callers' are in [`requests_in`](Self::requests_in).
    pub fn requests_from(&self, client_id: &str, class: StatusClass) -> u64 {
        self.callers.requests(client_id, class)
    }

    /// The latency histogram of the inbound requests from `client_id`.
    pub fn latency_from(&self, client_id: &str) -> Option<LatencyHistogram> {
        self.callers.latency(client_id)
    }

    pub(crate) fn get(&self, index: usize) -> u64 {
        self.values.get(index).copied().unwrap_or(0)
    }

    pub(super) fn service_counter(&self, service: &str, offset: usize) -> u64 {
        match self.layout.service_by_name(service) {
            Some(s) => self.get(self.layout.service_block(s) + offset),
            None => 0,
        }
    }

    fn endpoint_counter(&self, service: &str, endpoint: &str, offset: usize) -> u64 {
        let block = self.layout.service_by_name(service).and_then(|s| {
            let local = *self.layout.services[s].endpoint_by_name.get(endpoint)?;
            self.layout.endpoint_block(s, local as usize)
        });
        block.map_or(0, |b| self.get(b + offset))
    }
}

const _: () = assert!(HISTOGRAM_STRIDE == INF_SLOT + 2);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::layout::LayoutBuilder;
    use crate::metrics::CoreMetrics;
    use std::time::Duration;

    fn layout(endpoints: &[&str]) -> Arc<MetricsLayout> {
        let mut b = LayoutBuilder::new(true);
        let users = b.add_service("users", endpoints.iter());
        b.add_route("api", Some(users));
        b.build()
    }

    fn core(layout: &Arc<MetricsLayout>, endpoint: usize, requests: usize) -> CoreMetrics {
        let m = CoreMetrics::new(layout.clone());
        let users = layout.service_id("users").unwrap();
        let api = layout.route_id("api", Some(users)).unwrap();
        let e = layout.endpoint_at(users, endpoint).unwrap();
        for _ in 0..requests {
            m.record_response(
                Direction::Proxy,
                api,
                Some(e),
                200,
                Duration::from_millis(1),
            );
        }
        m.record_client_connection_opened();
        m
    }

    #[test]
    fn merge_sums_cores_with_the_same_layout() {
        let l = layout(&["a:1", "b:1"]);
        let one = core(&l, 0, 3);
        let two = core(&l, 1, 4);
        let users = l.service_id("users").unwrap();
        two.set_endpoint_state(l.endpoint_at(users, 1).unwrap(), EndpointState::Ejected);
        let mut merged = MetricsSnapshot::empty();
        merged.merge(&one.snapshot());
        merged.merge(&two.snapshot());
        let ok = |ep| merged.requests(Some("api"), Some("users"), Some(ep), StatusClass::Success);
        assert_eq!(ok("a:1"), 3);
        assert_eq!(ok("b:1"), 4);
        assert_eq!(merged.latency(Some("api"), Some("users")).unwrap().count, 7);
        assert_eq!(merged.client_connections_open(), 2);
        assert_eq!(
            merged.endpoint_state("users", "a:1", EndpointState::Available),
            2
        );
        assert_eq!(
            merged.endpoint_state("users", "b:1", EndpointState::Available),
            1
        );
        assert_eq!(
            merged.endpoint_state("users", "b:1", EndpointState::Ejected),
            1
        );
        assert_eq!(merged.cores(), 2);
    }

    #[test]
    fn merge_across_layouts_keeps_every_label_set() {
        let old = layout(&["a:1", "b:1"]);
        let new = layout(&["b:1", "c:1"]);
        let mut merged = core(&old, 0, 2).snapshot();
        merged.merge(&core(&new, 0, 5).snapshot());
        merged.merge(&core(&new, 1, 1).snapshot());
        let ok = |ep| merged.requests(Some("api"), Some("users"), Some(ep), StatusClass::Success);
        assert_eq!(ok("a:1"), 2);
        assert_eq!(ok("b:1"), 5);
        assert_eq!(ok("c:1"), 1);
        assert_eq!(merged.cores(), 3);
        assert_eq!(
            merged.endpoint_state("users", "a:1", EndpointState::Available),
            1
        );
        assert_eq!(
            merged.endpoint_state("users", "b:1", EndpointState::Available),
            3
        );
    }

    #[test]
    fn merging_an_empty_snapshot_changes_nothing() {
        let l = layout(&["a:1"]);
        let mut s = core(&l, 0, 1).snapshot();
        s.merge(&MetricsSnapshot::empty());
        assert_eq!(s.cores(), 1);
        assert!(Arc::ptr_eq(s.layout(), &l));
        assert_eq!(
            s.requests(
                Some("api"),
                Some("users"),
                Some("a:1"),
                StatusClass::Success
            ),
            1
        );
    }

    #[test]
    fn getters_of_unknown_labels_read_zero() {
        let s = core(&layout(&["a:1"]), 0, 1).snapshot();
        assert_eq!(
            s.requests(Some("nope"), Some("users"), None, StatusClass::Success),
            0
        );
        assert_eq!(
            s.requests(
                Some("api"),
                Some("users"),
                Some("z:1"),
                StatusClass::Success
            ),
            0
        );
        assert_eq!(s.retries("nope", RetryReason::Reset), 0);
        assert_eq!(s.ejections("users", "z:1"), 0);
        assert!(s.latency(Some("nope"), None).is_none());
    }
}
