//! Per-core state: the snapshot of routes and endpoints in force, per-service balancing
//! state, upstream pools, recycled buffers, counters and the shutdown signals. Everything
//! here lives on one core (`Rc`, `Cell`, `RefCell`), is touched by no other thread, and
//! changes only at a loop boundary when a message from the control thread is applied.
//!
//! Lifecycle of a config change: the control thread builds an immutable `Snapshot` and
//! sends each core an `Arc` of it; the core's tick task calls [`Core::install`], which swaps
//! the snapshot (requests in flight keep the one they started with), carries per-service
//! balancer state over by service name (endpoints that stay keep their history), and drops
//! pooled connections to endpoints that left.

use crate::observe::MetricIds;
use crate::signal::Signal;
use crate::transport::pool::Pool;
use coremesh_balancer::{
    BalancerConfig, Choice, EjectionConfig, GossipPort, Kind, Outcome, RetryBudget,
    RetryBudgetConfig, ServiceBalancer,
};
use coremesh_discovery::{BalanceKind, Settings, Snapshot};
use coremesh_telemetry::{CoreMetrics, MetricsLayout};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// Initial capacity of a connection's read buffer; it grows up to the head limit when a
/// head needs it and shrinks back when recycled.
pub const BUFFER_SIZE: usize = 16 * 1024;
/// Largest buffer kept in the free list; bigger ones are dropped.
const MAX_RECYCLED_CAPACITY: usize = 128 * 1024;
/// Buffers kept in the free list per core.
const MAX_RECYCLED_BUFFERS: usize = 256;
/// Largest amount of body read per step while streaming.
pub const BODY_CHUNK: usize = 64 * 1024;

/// Per-core counters (single writer, read by the admin server through messages).
#[derive(Default)]
pub struct CoreStats {
    pub accepted: Cell<u64>,
    pub requests: Cell<u64>,
    pub rejected_connections: Cell<u64>,
    /// HTTP/2 streams accepted here and handed to another core.
    pub streams_handed_off: Cell<u64>,
    /// Client connections accepted here and handed to another core.
    pub connections_handed_off: Cell<u64>,
}

/// Per-service state kept on one core: the balancer (latency history, ejections) and the
/// retry budget. Carried over to a new snapshot by service name.
pub struct ServiceState {
    pub name: Arc<str>,
    pub balancer: ServiceBalancer,
    pub budget: RetryBudget,
    settings: Settings,
    /// Each endpoint's ejection count as last exported to metrics, so that only new
    /// ejections are counted; kept per service (two services may share an address) and
    /// pruned to the endpoints the balancer still has.
    ejections_counted: HashMap<SocketAddr, u32>,
}

impl ServiceState {
    /// How many ejections of `addr` happened since the last call, remembering `total`.
    fn new_ejections(&mut self, addr: SocketAddr, total: u32) -> u32 {
        let previous = self.ejections_counted.insert(addr, total).unwrap_or(0);
        total.saturating_sub(previous)
    }
}

/// The balancer configuration a service's settings ask for.
pub fn balancer_config(s: &Settings) -> BalancerConfig {
    let ranges = coremesh_discovery::status_ranges::parse_status_specs(&s.failure_statuses);
    BalancerConfig {
        kind: match s.balance {
            BalanceKind::LeastLatency => Kind::LeastLatency,
            BalanceKind::RoundRobin => Kind::RoundRobin,
            BalanceKind::Random => Kind::Random,
        },
        ejection: EjectionConfig {
            consecutive_failures: match s.eject_consecutive_failures {
                0 => u32::MAX,
                n => n,
            },
            base_backoff: Duration::from_millis(s.eject_base_ms),
            max_backoff: Duration::from_millis(s.eject_max_ms.max(s.eject_base_ms)),
            max_ejected_ratio: f64::from(s.eject_max_percent.min(100)) / 100.0,
            ..EjectionConfig::default()
        },
        failure_statuses: if ranges.is_empty() {
            BalancerConfig::default().failure_statuses
        } else {
            ranges
        },
        ..BalancerConfig::default()
    }
}

fn budget_config(s: &Settings) -> RetryBudgetConfig {
    RetryBudgetConfig {
        ratio: s.retry_budget_ratio,
        min_per_sec: s.retry_budget_min_per_sec,
        window: Duration::from_millis(s.retry_budget_window_ms),
    }
}

/// What a core starts with.
pub struct CoreParams {
    pub id: usize,
    pub tracer: Option<crate::observe::tracing_ctx::Tracer>,
    pub access_log: Option<crate::observe::access_log::AccessLog>,
    pub defaults: Settings,
    pub grace: Duration,
    /// An upgraded tunnel idle both ways for this long is closed.
    pub tunnel_idle: Duration,
    /// Each direction of an upgraded tunnel reads at most this much at a time.
    pub tunnel_buffer: usize,
    /// How long a closing client connection with bytes still coming is read and drained.
    pub lingering_close: Duration,
    /// Where an accepted client connection is served (`[proxy] spread_connections`).
    pub spread_connections: coremesh_discovery::SpreadConnections,
    pub snapshot: Arc<Snapshot>,
    pub seed: u64,
    pub gossip: Option<GossipPort>,
    pub layout: Arc<MetricsLayout>,
    /// The endpoints reached over mutual TLS (empty without `[identity]`).
    pub meshed: crate::transport::tls_meshed::MeshedEndpoints,
}

pub struct Core {
    pub id: usize,
    pub tracer: Option<crate::observe::tracing_ctx::Tracer>,
    pub access_log: Option<crate::observe::access_log::AccessLog>,
    /// Global defaults: limits that apply before a request is routed.
    pub defaults: Settings,
    pub grace: Duration,
    /// An upgraded tunnel idle both ways for this long is closed.
    pub tunnel_idle: Duration,
    /// Each direction of an upgraded tunnel reads at most this much at a time.
    pub tunnel_buffer: usize,
    /// How long a closing client connection with bytes still coming is read and drained.
    pub lingering_close: Duration,
    /// Where an accepted client connection is served (`[proxy] spread_connections`).
    pub spread_connections: coremesh_discovery::SpreadConnections,
    /// The snapshot in force, behind a per-core `Rc`: a request takes its reference with a
    /// plain increment instead of writing the `Arc`'s count, a cache line every core
    /// shares, twice per request. The extra allocation is made once per config change.
    #[allow(clippy::redundant_allocation)]
    snapshot: RefCell<Rc<Arc<Snapshot>>>,
    pub services: RefCell<Vec<ServiceState>>,
    gossip: Option<GossipPort>,
    /// This core's counters (single writer) and the handles to record them with.
    pub metrics: RefCell<CoreMetrics>,
    pub ids: RefCell<MetricIds>,
    /// httparse's header slots, used only inside one synchronous parse, so one per core.
    pub parse_scratch: RefCell<crate::http1::codec::HeaderScratch>,
    /// Header views for route matching, likewise used synchronously.
    pub route_scratch: RefCell<Vec<httparse::Header<'static>>>,
    pub pool: RefCell<Pool>,
    /// HTTP/2 connections to endpoints, one per endpoint, multiplexed.
    pub h2_upstreams: RefCell<crate::http2::upstream::H2Upstreams>,
    /// This core's table of endpoints reached over mutual TLS.
    meshed: RefCell<crate::transport::tls_meshed::MeshedEndpoints>,
    rng: RefCell<SmallRng>,
    buffers: RefCell<Vec<Vec<u8>>>,
    /// Request-handling scratch of connections that are idle, lent to busy ones.
    pub scratch_pool: RefCell<Vec<Box<crate::http1::server::ConnScratch>>>,
    connections: Cell<usize>,
    /// HTTP/2 streams other cores handed to this one, still being served: shutdown waits
    /// for them as for connections.
    handed_in: Cell<usize>,
    /// This core's place among the cores that hand HTTP/2 streams to each other (set once
    /// at start when there is more than one core).
    pub spread: std::cell::OnceCell<crate::http2::spread::Member>,
    /// Idle deadlines of this core's client connections (one runtime timer for all).
    pub idle: crate::transport::idle_timer::IdleTimers,
    pub stats: CoreStats,
    /// Fired when shutdown begins: stop accepting, close connections after their exchange.
    pub shutdown: Signal,
    /// Fired when shutdown has begun and no client connection is left.
    pub drained: Signal,
}

impl Core {
    pub fn new(params: CoreParams) -> Rc<Core> {
        let CoreParams {
            id,
            tracer,
            access_log,
            defaults,
            grace,
            tunnel_idle,
            tunnel_buffer,
            lingering_close,
            spread_connections,
            snapshot,
            seed,
            gossip,
            layout,
            mut meshed,
        } = params;
        meshed.apply(&snapshot);
        let services = build_services(&snapshot, Vec::new());
        let ids = MetricIds::new(&snapshot, &layout);
        crate::http2::body::set_stall_limit(std::time::Duration::from_millis(
            snapshot.http2.stall_timeout_ms.max(1),
        ));
        let max_headers = defaults.max_headers;
        Rc::new(Core {
            id,
            tracer,
            access_log,
            defaults,
            grace,
            tunnel_idle,
            tunnel_buffer,
            lingering_close,
            spread_connections,
            snapshot: RefCell::new(Rc::new(snapshot)),
            services: RefCell::new(services),
            gossip,
            metrics: RefCell::new(CoreMetrics::new(layout)),
            ids: RefCell::new(ids),
            parse_scratch: RefCell::new(crate::http1::codec::HeaderScratch::new(max_headers)),
            route_scratch: RefCell::new(Vec::with_capacity(max_headers)),
            pool: RefCell::new(Pool::default()),
            h2_upstreams: RefCell::default(),
            meshed: RefCell::new(meshed),
            rng: RefCell::new(SmallRng::seed_from_u64(seed)),
            buffers: RefCell::new(Vec::new()),
            scratch_pool: RefCell::new(Vec::new()),
            connections: Cell::new(0),
            handed_in: Cell::new(0),
            spread: std::cell::OnceCell::new(),
            idle: crate::transport::idle_timer::IdleTimers::default(),
            stats: CoreStats::default(),
            shutdown: Signal::default(),
            drained: Signal::default(),
        })
    }

    /// The snapshot in force; a request keeps this reference until it finishes.
    #[allow(clippy::redundant_allocation)]
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        self.snapshot.borrow().clone()
    }

    /// Whether `snapshot` is the one in force.
    pub fn is_current(&self, snapshot: &Snapshot) -> bool {
        let current = self.snapshot.borrow();
        std::ptr::eq::<Snapshot>(&***current, snapshot)
    }

    /// Map a service index of `snapshot` to the current one (`usize::MAX` if gone).
    pub fn resolve_service(&self, snapshot: &Snapshot, index: usize) -> usize {
        if self.is_current(snapshot) {
            return index;
        }
        let Some(name) = snapshot.services.get(index).map(|s| s.name.as_str()) else {
            return usize::MAX;
        };
        self.snapshot
            .borrow()
            .service_index(name)
            .unwrap_or(usize::MAX)
    }

    /// Switch to a new snapshot (see the module doc).
    pub fn install(&self, snapshot: Arc<Snapshot>, layout: Arc<MetricsLayout>) {
        crate::http2::body::set_stall_limit(std::time::Duration::from_millis(
            snapshot.http2.stall_timeout_ms.max(1),
        ));
        *self.ids.borrow_mut() = MetricIds::new(&snapshot, &layout);
        self.metrics.borrow_mut().install(layout);
        let old = std::mem::take(&mut *self.services.borrow_mut());
        let services = build_services(&snapshot, old);
        let keep: std::collections::HashSet<SocketAddr> = services
            .iter()
            .flat_map(|s| s.balancer.endpoints())
            .collect();
        // An endpoint that turned to (or from) mutual TLS is not reached over the
        // connections opened before.
        let changed = self.meshed.borrow_mut().apply(&snapshot);
        self.pool
            .borrow_mut()
            .retain_endpoints(&|a| keep.contains(a) && !changed.contains(a));
        let mut h2 = self.h2_upstreams.borrow_mut();
        for addr in &changed {
            h2.forget(*addr);
        }
        drop(h2);
        *self.services.borrow_mut() = services;
        *self.snapshot.borrow_mut() = Rc::new(snapshot);
    }

    /// Run `f` with this core's RNG.
    pub fn with_rng<T>(&self, f: impl FnOnce(&mut SmallRng) -> T) -> T {
        f(&mut self.rng.borrow_mut())
    }

    pub fn random_u32(&self) -> u32 {
        self.rng.borrow_mut().next_u32()
    }

    /// Choose an endpoint of service `index`, avoiding those in `tried` when possible.
    pub fn choose(&self, service: usize, now: Instant, tried: &[SocketAddr]) -> Option<Choice> {
        let mut services = self.services.borrow_mut();
        let state = services.get_mut(service)?;
        let mut rng = self.rng.borrow_mut();
        let choice = state.balancer.choose(now, &mut *rng, tried)?;
        state.balancer.on_dispatch(choice.addr);
        Some(choice)
    }

    /// Record how an attempt to `addr` ended (exactly once per `choose`).
    pub fn record(
        &self,
        service: usize,
        addr: SocketAddr,
        now: Instant,
        latency: Duration,
        outcome: Outcome,
    ) {
        let mut services = self.services.borrow_mut();
        if let Some(state) = services.get_mut(service) {
            let mut rng = self.rng.borrow_mut();
            state
                .balancer
                .on_outcome(addr, now, latency, outcome, &mut *rng);
        }
    }

    /// Whether `status` counts as a failure of the endpoint for service `service`.
    pub fn is_failure_status(&self, service: usize, status: u16) -> bool {
        let services = self.services.borrow();
        services
            .get(service)
            .is_some_and(|s| coremesh_balancer::counts_as_failure(status, s.balancer.config()))
    }

    /// Count a request against the service's retry budget.
    pub fn budget_deposit(&self, service: usize, now: Instant) {
        if let Some(s) = self.services.borrow_mut().get_mut(service) {
            s.budget.record_request(now);
        }
    }

    /// Take one retry from the service's budget, if any is left.
    pub fn budget_withdraw(&self, service: usize, now: Instant) -> bool {
        self.services
            .borrow_mut()
            .get_mut(service)
            .is_some_and(|s| s.budget.try_withdraw(now))
    }

    /// A jittered pause before retry number `retry` (0 = first retry).
    pub fn retry_backoff(&self, retry: u32, settings: &Settings) -> Duration {
        let mut rng = self.rng.borrow_mut();
        coremesh_balancer::backoff(
            retry,
            Duration::from_millis(settings.retry_backoff_base_ms),
            Duration::from_millis(settings.retry_backoff_max_ms),
            &mut *rng,
        )
    }

    /// Gossip: send this interval's latencies and ejections to the other cores, and merge
    /// what they sent. Called from the tick, never on the request path.
    pub fn gossip_tick(&self, now: Instant) {
        let mut services = self.services.borrow_mut();
        self.track_endpoint_states(&mut services, now);
        for state in services.iter_mut() {
            if let Some(batch) = state.balancer.take_gossip(now) {
                if let Some(port) = &self.gossip {
                    port.broadcast(&batch);
                }
            }
        }
        if let Some(port) = &self.gossip {
            while let Some(batch) = port.try_recv() {
                if let Some(state) = services.iter_mut().find(|s| s.name == *batch.service()) {
                    state.balancer.merge_gossip(&batch, now);
                }
            }
        }
    }

    /// Export endpoint states and count ejections (a transition into "ejected").
    fn track_endpoint_states(&self, services: &mut [ServiceState], now: Instant) {
        use coremesh_balancer::Health;
        use coremesh_telemetry::EndpointState;
        let ids = self.ids.borrow();
        let metrics = self.metrics.borrow();
        let snapshot = self.snapshot.borrow();
        for state in services {
            let Some(index) = snapshot.service_index(&state.name) else {
                continue;
            };
            let views = state.balancer.views(now);
            if state.ejections_counted.len() > views.len() {
                // An endpoint left the service: forget what was counted for it.
                let current: HashSet<SocketAddr> = views.iter().map(|v| v.addr).collect();
                state
                    .ejections_counted
                    .retain(|addr, _| current.contains(addr));
            }
            for view in views {
                let new_ejections = state.new_ejections(view.addr, view.ejections);
                let Some(endpoint) = ids.endpoint(index, view.addr) else {
                    continue;
                };
                let new = match view.state {
                    Health::Available => EndpointState::Available,
                    Health::Ejected { .. } => EndpointState::Ejected,
                    Health::HalfOpen { .. } => EndpointState::HalfOpen,
                };
                for _ in 0..new_ejections {
                    metrics.record_ejection(endpoint);
                }
                metrics.set_endpoint_state(endpoint, new);
            }
        }
    }

    /// A read buffer from the free list.
    pub fn buffer(&self) -> Vec<u8> {
        self.buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BUFFER_SIZE))
    }

    /// Give a buffer back for reuse.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        let mut list = self.buffers.borrow_mut();
        // An empty one (a connection that never read) is not worth a place.
        if buf.capacity() > 0
            && buf.capacity() <= MAX_RECYCLED_CAPACITY
            && list.len() < MAX_RECYCLED_BUFFERS
        {
            buf.clear();
            if buf.capacity() > BUFFER_SIZE * 2 {
                buf.shrink_to(BUFFER_SIZE);
            }
            list.push(buf);
        }
    }

    pub fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Client connections open plus HTTP/2 streams handed in: what shutdown waits for.
    pub fn busy(&self) -> usize {
        self.connections.get() + self.handed_in.get()
    }

    /// Count a client connection until the guard drops.
    pub fn connection_guard(self: &Rc<Self>) -> ConnectionGuard {
        self.connections.set(self.connections.get() + 1);
        self.add_load(1);
        ConnectionGuard { core: self.clone() }
    }

    /// Count an HTTP/2 stream served here in this core's load until the guard drops.
    pub fn stream_load(self: &Rc<Self>) -> LoadGuard {
        self.add_load(1);
        LoadGuard { core: self.clone() }
    }

    /// Count an HTTP/2 stream another core handed in until the guard drops: it is load,
    /// and shutdown waits for it.
    pub fn handed_in_guard(self: &Rc<Self>) -> HandedInGuard {
        self.handed_in.set(self.handed_in.get() + 1);
        HandedInGuard {
            _load: self.stream_load(),
        }
    }

    /// This core's load as other cores see it (see [`crate::http2::spread`]).
    fn add_load(&self, delta: i32) {
        if let Some(member) = self.spread.get() {
            member.add_load(delta);
        }
    }

    /// Fire `drained` when shutdown has begun and nothing is left.
    fn check_drained(&self) {
        if self.busy() == 0 && self.shutdown.is_fired() {
            self.drained.fire();
        }
    }

    /// This core's state for the admin server.
    pub fn report(&self, now: Instant) -> crate::report::CoreReport {
        // Bring endpoint-state metrics up to the balancer's view before snapshotting them.
        self.track_endpoint_states(&mut self.services.borrow_mut(), now);
        let services = self
            .services
            .borrow()
            .iter()
            .map(|s| (s.name.to_string(), s.balancer.views(now)))
            .collect();
        let pool = self.pool.borrow();
        crate::report::CoreReport {
            core: self.id,
            at: now,
            services,
            connections_open: self.connections.get() as u64,
            streams_handed_off: self.stats.streams_handed_off.get(),
            connections_handed_off: self.stats.connections_handed_off.get(),
            connections_accepted: self.stats.accepted.get(),
            requests: self.stats.requests.get(),
            upstream_opened: pool.opened,
            upstream_reused: pool.reused,
            metrics: Some(self.metrics.borrow().snapshot()),
        }
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.fire();
        self.check_drained();
    }

    pub fn is_draining(&self) -> bool {
        self.shutdown.is_fired()
    }
}

pub struct ConnectionGuard {
    core: Rc<Core>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let left = self.core.connections.get().saturating_sub(1);
        self.core.connections.set(left);
        self.core.add_load(-1);
        self.core.check_drained();
    }
}

/// One unit of a core's load (see [`Core::stream_load`]).
pub struct LoadGuard {
    core: Rc<Core>,
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.core.add_load(-1);
    }
}

/// A stream handed in from another core (see [`Core::handed_in_guard`]).
pub struct HandedInGuard {
    _load: LoadGuard,
}

impl Drop for HandedInGuard {
    fn drop(&mut self) {
        let core = &self._load.core;
        core.handed_in.set(core.handed_in.get().saturating_sub(1));
        core.check_drained();
    }
}

fn build_services(snapshot: &Snapshot, old: Vec<ServiceState>) -> Vec<ServiceState> {
    let mut old: Vec<Option<ServiceState>> = old.into_iter().map(Some).collect();
    snapshot
        .services
        .iter()
        .map(|s| {
            let previous = old
                .iter_mut()
                .find(|o| o.as_ref().is_some_and(|o| &*o.name == s.name.as_str()))
                .and_then(Option::take);
            match previous {
                // Same balancing settings: keep latency history and ejection state.
                Some(mut p) if balancer_config(&p.settings) == balancer_config(&s.settings) => {
                    p.balancer.set_endpoints(&s.endpoints);
                    if budget_config(&p.settings) != budget_config(&s.settings) {
                        p.budget = RetryBudget::new(budget_config(&s.settings));
                    }
                    p.settings = s.settings.clone();
                    p
                }
                _ => {
                    let name: Arc<str> = Arc::from(s.name.as_str());
                    ServiceState {
                        balancer: ServiceBalancer::new(
                            name.clone(),
                            &s.endpoints,
                            balancer_config(&s.settings),
                        ),
                        budget: RetryBudget::new(budget_config(&s.settings)),
                        settings: s.settings.clone(),
                        name,
                        ejections_counted: HashMap::new(),
                    }
                }
            }
        })
        .collect()
}
