//! Per-core state: the snapshot of routes and endpoints in force, per-service balancing
//! state, upstream pools, recycled buffers, counters and the shutdown signals. Everything
//! here lives on one core (`Rc`, `Cell`, `RefCell`), is touched by no other thread, and
//! changes only at a loop boundary when a message from the control thread is applied.
//!
//! Lifecycle of a config change: the control thread builds an immutable `Snapshot` and
//! sends each core an `Arc` of it; the core's tick task calls [`Core::install`], which swaps
//! the snapshot (requests in flight keep the `Arc` they started with), carries per-service
//! balancer state over by service name (endpoints that stay keep their history), and drops
//! pooled connections to endpoints that left.

use crate::pool::Pool;
use crate::signal::Signal;
use coremesh_discovery::{Driver, Settings, Snapshot};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

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
}

/// Per-service state kept on one core.
pub struct ServiceState {
    pub name: Arc<str>,
    pub endpoints: Vec<SocketAddr>,
    next: Cell<usize>,
}

pub struct Core {
    pub id: usize,
    pub driver: Driver,
    /// Global defaults: limits that apply before a request is routed.
    pub defaults: Settings,
    pub grace: Duration,
    snapshot: RefCell<Arc<Snapshot>>,
    services: RefCell<Vec<ServiceState>>,
    pub pool: RefCell<Pool>,
    rng: RefCell<SmallRng>,
    buffers: RefCell<Vec<Vec<u8>>>,
    connections: Cell<usize>,
    pub stats: CoreStats,
    /// Fired when shutdown begins: stop accepting, close connections after their exchange.
    pub shutdown: Signal,
    /// Fired when shutdown has begun and no client connection is left.
    pub drained: Signal,
}

impl Core {
    pub fn new(
        id: usize,
        driver: Driver,
        defaults: Settings,
        grace: Duration,
        snapshot: Arc<Snapshot>,
        seed: u64,
    ) -> Rc<Core> {
        let services = build_services(&snapshot, &[]);
        Rc::new(Core {
            id,
            driver,
            defaults,
            grace,
            snapshot: RefCell::new(snapshot),
            services: RefCell::new(services),
            pool: RefCell::new(Pool::default()),
            rng: RefCell::new(SmallRng::seed_from_u64(seed)),
            buffers: RefCell::new(Vec::new()),
            connections: Cell::new(0),
            stats: CoreStats::default(),
            shutdown: Signal::default(),
            drained: Signal::default(),
        })
    }

    /// The snapshot in force; a request keeps this `Arc` until it finishes.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// Switch to a new snapshot (see the module doc).
    pub fn install(&self, snapshot: Arc<Snapshot>) {
        let old = std::mem::take(&mut *self.services.borrow_mut());
        let services = build_services(&snapshot, &old);
        let keep: std::collections::HashSet<SocketAddr> = services
            .iter()
            .flat_map(|s| s.endpoints.iter().copied())
            .collect();
        self.pool
            .borrow_mut()
            .retain_endpoints(&|a| keep.contains(a));
        *self.services.borrow_mut() = services;
        *self.snapshot.borrow_mut() = snapshot;
    }

    pub fn random_u32(&self) -> u32 {
        self.rng.borrow_mut().next_u32()
    }

    /// Choose an endpoint of service `index`, avoiding those in `tried` when possible.
    pub fn choose(&self, service: usize, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let services = self.services.borrow();
        let state = services.get(service)?;
        let n = state.endpoints.len();
        if n == 0 {
            return None;
        }
        for _ in 0..n {
            let i = state.next.get() % n;
            state.next.set(i.wrapping_add(1));
            let addr = state.endpoints[i];
            if !tried.contains(&addr) {
                return Some(addr);
            }
        }
        let i = state.next.get() % n;
        state.next.set(i.wrapping_add(1));
        Some(state.endpoints[i])
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
        if buf.capacity() <= MAX_RECYCLED_CAPACITY && list.len() < MAX_RECYCLED_BUFFERS {
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

    /// Count a client connection until the guard drops.
    pub fn connection_guard(self: &Rc<Self>) -> ConnectionGuard {
        self.connections.set(self.connections.get() + 1);
        ConnectionGuard { core: self.clone() }
    }

    pub fn begin_shutdown(&self) {
        self.shutdown.fire();
        if self.connections.get() == 0 {
            self.drained.fire();
        }
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
        if left == 0 && self.core.shutdown.is_fired() {
            self.core.drained.fire();
        }
    }
}

fn build_services(snapshot: &Snapshot, old: &[ServiceState]) -> Vec<ServiceState> {
    snapshot
        .services
        .iter()
        .map(|s| {
            let next = old
                .iter()
                .find(|o| &*o.name == s.name.as_str())
                .map(|o| o.next.get())
                .unwrap_or(0);
            ServiceState {
                name: Arc::from(s.name.as_str()),
                endpoints: s.endpoints.clone(),
                next: Cell::new(next),
            }
        })
        .collect()
}
