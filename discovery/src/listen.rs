//! A sidecar side's `listen`: one address (`listen = "127.0.0.1:4140"`) or a list
//! (`listen = ["127.0.0.1:4140", "[::1]:4140"]`), and whether it was written or is the
//! side's default.
//!
//! Each address is bound on its own (IPv6 ones with `IPV6_V6ONLY`), so `0.0.0.0:P` and
//! `[::]:P` are two listeners that do not collide. A side's default is one IPv4 and one
//! IPv6 address; on a host without IPv6 the IPv6 one is skipped ([`Listen::may_skip`]).
//! An address written in the file must bind, whatever its family.

use serde::de::{self, SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::SocketAddr;

/// The addresses a side listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    addrs: Vec<SocketAddr>,
    /// Written in the configuration (every address must bind), not the side's default.
    explicit: bool,
}

impl Listen {
    /// A side's default addresses (an IPv6 one may be skipped on a host without IPv6).
    pub fn default_pair(v4: SocketAddr, v6: SocketAddr) -> Listen {
        Listen {
            addrs: vec![v4, v6],
            explicit: false,
        }
    }

    /// Addresses written in the configuration: each must bind.
    pub fn explicit(addrs: Vec<SocketAddr>) -> Listen {
        Listen {
            addrs,
            explicit: true,
        }
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The first address (the IPv4 one of a default pair); `None` for an empty list,
    /// which validation refuses.
    pub fn first(&self) -> Option<SocketAddr> {
        self.addrs.first().copied()
    }

    pub fn is_explicit(&self) -> bool {
        self.explicit
    }

    /// Whether `addr` may be left out when the host cannot bind its family: only the IPv6
    /// address of a default pair.
    pub fn may_skip(&self, addr: SocketAddr) -> bool {
        !self.explicit && addr.is_ipv6()
    }

    /// Serialized only when written (the default depends on the side).
    pub fn is_default(&self) -> bool {
        !self.explicit
    }
}

impl From<SocketAddr> for Listen {
    fn from(addr: SocketAddr) -> Listen {
        Listen::explicit(vec![addr])
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.addrs.as_slice() {
            [one] => serializer.collect_str(one),
            many => {
                let mut seq = serializer.serialize_seq(Some(many.len()))?;
                for addr in many {
                    seq.serialize_element(&addr.to_string())?;
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
        f.write_str("a socket address or an array of socket addresses")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Listen, E> {
        value
            .parse::<SocketAddr>()
            .map(Listen::from)
            .map_err(E::custom)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Listen, A::Error> {
        let mut addrs = Vec::new();
        while let Some(text) = seq.next_element::<String>()? {
            addrs.push(text.parse().map_err(de::Error::custom)?);
        }
        Ok(Listen::explicit(addrs))
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
    fn a_bad_address_is_named() {
        let error = toml::from_str::<Side>("listen = [\"0.0.0.0:4143\", \"nope\"]")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("invalid socket address syntax"), "{error}");
        assert!(toml::from_str::<Side>("listen = 4143").is_err());
    }
}
