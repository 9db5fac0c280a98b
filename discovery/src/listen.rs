//! A listener's addresses (`[inbound]`/`[outbound]` `listen`, `[proxy] admin`): one entry
//! or a list, each an address (`"127.0.0.1:4140"`) or a pair of both families on one port
//! (`"*:4143"`: every address, `0.0.0.0` and `[::]`; `"localhost:4140"`: loopback,
//! `127.0.0.1` and `[::1]`), and whether it was written or is a side's default.
//!
//! Each address is bound on its own (IPv6 ones with `IPV6_V6ONLY`), so `0.0.0.0:P` and
//! `[::]:P` are two listeners that do not collide. A side's default is such a pair, and so
//! is what a pair form writes: on a host without IPv6 its IPv6 address is skipped
//! ([`Listen::may_skip`]). An address written as an address must bind, whatever its family.
//! A pair needs a port other than 0 (port 0 would give each family a port of its own).

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

/// Which addresses a pair form stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairHost {
    /// `*:P`: `0.0.0.0:P` and `[::]:P`.
    Every,
    /// `localhost:P`: `127.0.0.1:P` and `[::1]:P`.
    Loopback,
}

impl PairHost {
    /// The IPv4 and the IPv6 address on `port`.
    pub fn addrs(self, port: u16) -> [SocketAddr; 2] {
        match self {
            PairHost::Every => [
                SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
                SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)),
            ],
            PairHost::Loopback => [
                SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            ],
        }
    }

    fn word(self) -> &'static str {
        match self {
            PairHost::Every => "*",
            PairHost::Loopback => "localhost",
        }
    }
}

/// One entry as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Addr(SocketAddr),
    Pair(PairHost, u16),
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entry::Addr(addr) => write!(f, "{addr}"),
            Entry::Pair(host, port) => write!(f, "{}:{port}", host.word()),
        }
    }
}

/// An entry that is neither an address nor a pair form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ListenError(String);

impl std::str::FromStr for Entry {
    type Err = ListenError;

    fn from_str(text: &str) -> Result<Entry, ListenError> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Entry::Addr(addr));
        }
        let pair = text.rsplit_once(':').and_then(|(host, port)| {
            let host = match host {
                "*" => PairHost::Every,
                h if h.eq_ignore_ascii_case("localhost") => PairHost::Loopback,
                _ => return None,
            };
            Some((host, port.parse::<u16>().ok()))
        });
        match pair {
            Some((host, Some(port))) if port != 0 => Ok(Entry::Pair(host, port)),
            Some((host, _)) => Err(ListenError(format!(
                "`{text}`: `{}:PORT` needs a port from 1 to 65535",
                host.word()
            ))),
            None => Err(ListenError(format!(
                "`{text}` is not a listen address: write IP:PORT, `*:PORT` (every address, \
                 IPv4 and IPv6) or `localhost:PORT` (loopback, IPv4 and IPv6)"
            ))),
        }
    }
}

/// The addresses a listener is bound on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// As written; empty for a side's default.
    entries: Vec<Entry>,
    /// Every address, in order.
    addrs: Vec<SocketAddr>,
    /// The IPv6 addresses of pairs (the default's or a written one's), left out on a host
    /// without IPv6.
    skippable: Vec<SocketAddr>,
}

impl Listen {
    /// A side's default addresses (the IPv6 one is skipped on a host without IPv6).
    pub fn default_pair(v4: SocketAddr, v6: SocketAddr) -> Listen {
        Listen {
            entries: Vec::new(),
            addrs: vec![v4, v6],
            skippable: vec![v6].into_iter().filter(SocketAddr::is_ipv6).collect(),
        }
    }

    /// Addresses written in the configuration: each must bind.
    pub fn explicit(addrs: Vec<SocketAddr>) -> Listen {
        Listen::written(addrs.into_iter().map(Entry::Addr).collect())
    }

    /// `host`'s pair on `port`, as if written `*:P` or `localhost:P`.
    pub fn pair(host: PairHost, port: u16) -> Listen {
        Listen::written(vec![Entry::Pair(host, port)])
    }

    fn written(entries: Vec<Entry>) -> Listen {
        let mut addrs = Vec::new();
        let mut skippable = Vec::new();
        for entry in &entries {
            match *entry {
                Entry::Addr(addr) => addrs.push(addr),
                Entry::Pair(host, port) => {
                    let [v4, v6] = host.addrs(port);
                    addrs.extend([v4, v6]);
                    skippable.push(v6);
                }
            }
        }
        // An IPv6 address also written on its own must bind.
        skippable.retain(|v6| !entries.contains(&Entry::Addr(*v6)));
        Listen {
            entries,
            addrs,
            skippable,
        }
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Each address with the index of the list entry that wrote it, to name the entry in a
    /// message: `None` for a single entry; a default's addresses by their own index.
    pub fn addrs_by_entry(&self) -> Vec<(Option<usize>, SocketAddr)> {
        let single = self.entries.len() == 1 || self.addrs.len() == 1;
        if single || self.entries.is_empty() {
            let index = |i| (!single).then_some(i);
            return self
                .addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (index(i), *a))
                .collect();
        }
        let mut out = Vec::with_capacity(self.addrs.len());
        for (i, entry) in self.entries.iter().enumerate() {
            match *entry {
                Entry::Addr(addr) => out.push((Some(i), addr)),
                Entry::Pair(host, port) => {
                    out.extend(host.addrs(port).into_iter().map(|addr| (Some(i), addr)))
                }
            }
        }
        out
    }

    /// The first address (the IPv4 one of a pair); `None` for an empty list, which
    /// validation refuses.
    pub fn first(&self) -> Option<SocketAddr> {
        self.addrs.first().copied()
    }

    /// Written in the configuration, not a side's default.
    pub fn is_explicit(&self) -> bool {
        !self.entries.is_empty() || self.addrs.is_empty()
    }

    /// Whether `addr` may be left out when the host cannot bind its family: only the IPv6
    /// address of a pair (a side's default, or written `*:P` / `localhost:P`).
    pub fn may_skip(&self, addr: SocketAddr) -> bool {
        self.skippable.contains(&addr)
    }

    /// Serialized only when written (the default depends on the side).
    pub fn is_default(&self) -> bool {
        !self.is_explicit()
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen::explicit(vec![addr])
    }
}

/// One entry, as written (`"127.0.0.1:4140".parse()`, `"*:4143".parse()`).
impl std::str::FromStr for Listen {
    type Err = ListenError;

    fn from_str(s: &str) -> Result<Listen, Self::Err> {
        s.parse::<Entry>().map(|entry| Listen::written(vec![entry]))
    }
}

impl Listen {
    /// Each entry as written (a default: each address).
    fn texts(&self) -> Vec<String> {
        match self.entries.as_slice() {
            [] => self.addrs.iter().map(ToString::to_string).collect(),
            entries => entries.iter().map(ToString::to_string).collect(),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.texts().join(", "))
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.texts().as_slice() {
            [one] => serializer.serialize_str(one),
            many => {
                let mut seq = serializer.serialize_seq(Some(many.len()))?;
                for text in many {
                    seq.serialize_element(text)?;
                }
                seq.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Listen {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Listen, D::Error> {
        deserializer.deserialize_any(ListenVisitor)
    }
}

struct ListenVisitor;

impl<'de> Visitor<'de> for ListenVisitor {
    type Value = Listen;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a listen address (IP:PORT, `*:PORT`, `localhost:PORT`) or an array of them")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Listen, E> {
        value.parse::<Listen>().map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
        let mut entries = Vec::new();
        while let Some(text) = seq.next_element::<String>()? {
            entries.push(text.parse::<Entry>().map_err(de::Error::custom)?);
        }
        Ok(Listen::written(entries))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Side {
        listen: Listen,
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn one_address_or_a_list_is_explicit_and_written_back_the_same_way() {
        let one: Side = toml::from_str("listen = \"0.0.0.0:4143\"").expect("one");
        assert_eq!(one.listen, Listen::explicit(vec![addr("0.0.0.0:4143")]));
        assert!(one.listen.is_explicit());
        assert_eq!(
            toml::to_string(&one).expect("write"),
            "listen = \"0.0.0.0:4143\"\n"
        );
        let many: Side =
            toml::from_str("listen = [\"0.0.0.0:4143\", \"[::]:4143\"]").expect("many");
        assert_eq!(
            many.listen.addrs(),
            &[addr("0.0.0.0:4143"), addr("[::]:4143")]
        );
        assert!(!many.listen.may_skip(addr("[::]:4143")));
        assert_eq!(
            toml::to_string(&many).expect("write"),
            "listen = [\"0.0.0.0:4143\", \"[::]:4143\"]\n"
        );
    }

    #[test]
    fn only_the_ipv6_address_of_a_default_pair_may_be_skipped() {
        let pair = Listen::default_pair(addr("127.0.0.1:4140"), addr("[::1]:4140"));
        assert!(!pair.is_explicit());
        assert!(pair.may_skip(addr("[::1]:4140")));
        assert!(!pair.may_skip(addr("127.0.0.1:4140")));
        assert_eq!(pair.first(), Some(addr("127.0.0.1:4140")));
    }

    #[test]
    fn a_pair_form_is_both_families_on_one_port_and_its_ipv6_address_may_be_skipped() {
        let every: Side = toml::from_str("listen = \"*:5143\"").expect("every");
        assert_eq!(
            every.listen.addrs(),
            &[addr("0.0.0.0:5143"), addr("[::]:5143")]
        );
        assert!(every.listen.is_explicit());
        assert!(every.listen.may_skip(addr("[::]:5143")));
        assert!(!every.listen.may_skip(addr("0.0.0.0:5143")));
        assert_eq!(every.listen, Listen::pair(PairHost::Every, 5143));
        assert_eq!(
            toml::to_string(&every).expect("write"),
            "listen = \"*:5143\"\n"
        );
        let mixed: Side =
            toml::from_str("listen = [\"localhost:5140\", \"[::1]:5140\", \"10.0.0.1:80\"]")
                .expect("mixed");
        assert_eq!(
            mixed.listen.addrs(),
            &[
                addr("127.0.0.1:5140"),
                addr("[::1]:5140"),
                addr("[::1]:5140"),
                addr("10.0.0.1:80")
            ]
        );
        // Written on its own as well, the IPv6 loopback must bind.
        assert!(!mixed.listen.may_skip(addr("[::1]:5140")));
        assert_eq!(
            toml::to_string(&mixed).expect("write"),
            "listen = [\"localhost:5140\", \"[::1]:5140\", \"10.0.0.1:80\"]\n"
        );
        assert_eq!(
            "LocalHost:1".parse::<Listen>().map(|l| l.addrs().to_vec()),
            Ok(vec![addr("127.0.0.1:1"), addr("[::1]:1")])
        );
    }

    #[test]
    fn a_bad_address_is_named() {
        let error = toml::from_str::<Side>("listen = [\"0.0.0.0:4143\", \"nope\"]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("`nope` is not a listen address"), "{error}");
        assert!(toml::from_str::<Side>("listen = 4143").is_err());
        let error = |text: &str| text.parse::<Listen>().err().map(|e| e.to_string());
        assert_eq!(
            error("*:0").as_deref(),
            Some("`*:0`: `*:PORT` needs a port from 1 to 65535")
        );
        assert_eq!(
            error("localhost:http").as_deref(),
            Some("`localhost:http`: `localhost:PORT` needs a port from 1 to 65535")
        );
        assert_eq!(
            error("example.com:80").as_deref(),
            Some(
                "`example.com:80` is not a listen address: write IP:PORT, `*:PORT` (every \
                 address, IPv4 and IPv6) or `localhost:PORT` (loopback, IPv4 and IPv6)"
            )
        );
    }
}
