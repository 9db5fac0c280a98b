//! Per-core, per-endpoint keep-alive pools of upstream connections. LIFO reuse (the most
//! recently used connection is the least likely to have been closed by the upstream), a cap
//! on idle connections per endpoint, an idle timeout, and a liveness peek before reuse so a
//! connection the upstream closed is never used.

use crate::conn::idle_conn_is_alive;
use monoio::net::TcpStream;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A map keyed by endpoint address, for lookups on every request. Its keys come from the
/// configuration, never from a peer, so a fast multiply-rotate hash serves instead of
/// SipHash (which cost about 290 instructions per lookup, measured with callgrind).
pub type AddrMap<V> = HashMap<SocketAddr, V, BuildHasherDefault<AddrHasher>>;

/// The hash of [`AddrMap`]: each integer written is rotated in and multiplied (as in
/// rustc's FxHash).
#[derive(Default, Clone, Copy)]
pub struct AddrHasher(u64);

impl AddrHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(Self::SEED);
    }
}

impl Hasher for AddrHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.add(u64::from(b));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

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

#[cfg(test)]
mod tests {
    use super::AddrMap;
    use std::net::SocketAddr;

    #[test]
    fn addr_map_tells_apart_addresses_that_differ_in_ip_port_or_family() {
        let addrs: Vec<SocketAddr> = [
            "127.0.0.1:80",
            "127.0.0.1:81",
            "127.0.0.2:80",
            "10.0.0.1:80",
            "[::1]:80",
            "[::1]:81",
            "[fe80::1]:80",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let mut map = AddrMap::default();
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(map.insert(*a, i), None);
        }
        assert_eq!(map.len(), addrs.len());
        for (i, a) in addrs.iter().enumerate() {
            assert_eq!(map.get(a), Some(&i));
        }
        assert_eq!(map.get(&"127.0.0.3:80".parse().unwrap()), None);
    }
}
