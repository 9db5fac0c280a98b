//! Per-core, per-endpoint keep-alive pools of upstream connections. LIFO reuse (the most
//! recently used connection is the least likely to have been closed by the upstream), a cap
//! on idle connections per endpoint, an idle timeout, and a liveness peek before reuse so a
//! connection the upstream closed is never used.

use crate::conn::idle_conn_is_alive;
pub use coremesh_balancer::{AddrHasher, AddrMap};
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

struct Idle {
    stream: TcpStream,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: AddrMap<Vec<Idle>>,
    /// Connections opened and reused, for metrics and tests.
    pub opened: u64,
    pub reused: u64,
    pub discarded_dead: u64,
}

impl Pool {
    /// A live idle connection to `addr`, if one is pooled and younger than `idle_timeout`.
    pub fn checkout(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<TcpStream> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if now.duration_since(entry.since) < idle_timeout && idle_conn_is_alive(&entry.stream) {
                self.reused += 1;
                return Some(entry.stream);
            }
            self.discarded_dead += 1;
        }
        None
    }

    /// Return a connection after a complete exchange; dropped (closed) when the pool is full.
    pub fn checkin(&mut self, addr: SocketAddr, stream: TcpStream, now: Instant, max_idle: usize) {
        let list = self.idle.entry(addr).or_default();
        if list.len() < max_idle {
            list.push(Idle { stream, since: now });
        }
    }

    /// Close idle connections older than `idle_timeout`; called from the core's tick.
    pub fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        for list in self.idle.values_mut() {
            list.retain(|e| now.duration_since(e.since) < idle_timeout);
        }
        self.idle.retain(|_, list| !list.is_empty());
    }

    /// Drop every pooled connection to endpoints not in `keep` (after a config change).
    pub fn retain_endpoints(&mut self, keep: &dyn Fn(&SocketAddr) -> bool) {
        self.idle.retain(|addr, _| keep(addr));
    }
}
