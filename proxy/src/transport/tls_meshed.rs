//! Which endpoints this core reaches over mutual TLS: the services of a snapshot that carry
//! `tls = { identity = … }`, and the endpoints discovery found meshed (Kubernetes pods
//! whose sidecar terminates mutual TLS, each with its own identity), turned at each install
//! into this core's [`tls_upstream`] table (one [`UpstreamTls`] per endpoint, with the
//! client configuration for the identity the endpoint must prove), and the endpoints whose
//! TLS changed, whose pooled connections must not be used again.
//!
//! A service's own `tls` wins over a discovered identity; an endpoint listed by two
//! services with different identities takes the first service's. A discovered identity is
//! used only when this proxy has an identity to present: without one, meshed endpoints
//! stay plaintext (logged once), while a service's own `tls` fails closed.
//!
//! Every [`UpstreamTls`] carries the proxy's outbound handshake counters (one `Arc` clone
//! per table entry, made at install): each proxy counts its own handshakes, even with two
//! proxies in one process.
//!
//! [`tls_upstream`]: super::tls_upstream

use super::conn::Stream;
use super::tls_stats::TlsStats;
use super::tls_upstream::{for_endpoint, set_endpoint, UpstreamTls};
use crate::identity::TlsConfigs;
use coremesh_discovery::{Snapshot, SpiffeId};
use rustls::pki_types::ServerName;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The proxy's identity (when configured) and what this core's table holds.
pub struct MeshedEndpoints {
    configs: Option<Arc<TlsConfigs>>,
    handshake_timeout: Duration,
    /// The proxy's outbound handshake counters, shared by its cores.
    stats: Arc<TlsStats>,
    /// Endpoint → the identity it must prove, as set in the table.
    current: HashMap<SocketAddr, String>,
    /// Whether "meshed endpoints stay plaintext without an identity" was logged.
    told_plaintext: bool,
    /// Whether a discovered identity in another trust domain than ours was logged.
    told_trust_domain: bool,
}

impl MeshedEndpoints {
    /// `stats`: where this proxy counts its outbound handshakes (the same for every core).
    pub fn new(
        configs: Option<Arc<TlsConfigs>>,
        handshake_timeout: Duration,
        stats: Arc<TlsStats>,
    ) -> Self {
        MeshedEndpoints {
            configs,
            handshake_timeout,
            stats,
            current: HashMap::new(),
            told_plaintext: false,
            told_trust_domain: false,
        }
    }

    /// Set this core's table for `snapshot` (call on the core's thread); returns the
    /// endpoints whose TLS changed (now meshed, no longer, or another identity).
    pub fn apply(&mut self, snapshot: &Snapshot) -> HashSet<SocketAddr> {
        let wanted = self.wanted(snapshot);
        let mut changed = HashSet::new();
        for addr in self.current.keys() {
            if !wanted.contains_key(addr) {
                set_endpoint(*addr, None);
                changed.insert(*addr);
            }
        }
        for (addr, expected) in &wanted {
            if self.current.get(addr) == Some(expected) {
                continue;
            }
            changed.insert(*addr);
            set_endpoint(*addr, self.upstream(*addr, expected));
        }
        self.current = wanted;
        changed
    }

    /// Endpoint → the identity it must prove under `snapshot`: first the services' own
    /// `tls`, then the identities discovery found for endpoints no `tls` covers (only
    /// with an identity of this proxy's own).
    fn wanted(&mut self, snapshot: &Snapshot) -> HashMap<SocketAddr, String> {
        let mut wanted: HashMap<SocketAddr, String> = HashMap::new();
        for service in &snapshot.services {
            let Some(tls) = &service.tls else { continue };
            for &addr in &service.endpoints {
                wanted.entry(addr).or_insert_with(|| tls.identity.clone());
            }
        }
        let mut discovered = snapshot
            .services
            .iter()
            .filter(|service| service.tls.is_none())
            .flat_map(|service| &service.endpoint_identities)
            .peekable();
        if self.configs.is_none() {
            if discovered.peek().is_some() && !self.told_plaintext {
                self.told_plaintext = true;
                tracing::info!(
                    "endpoints of meshed pods are reached in plaintext: this proxy has no [identity]"
                );
            }
            return wanted;
        }
        for (addr, identity) in discovered {
            self.check_trust_domain(identity);
            wanted.entry(*addr).or_insert_with(|| identity.clone());
        }
        wanted
    }

    /// Logs once when discovery expects an identity outside this proxy's own trust domain:
    /// most likely `[discovery.kubernetes] trust_domain` is not the one the mesh's
    /// certificates are issued in, and every handshake with those endpoints will fail.
    fn check_trust_domain(&mut self, expected: &str) {
        let Some(configs) = &self.configs else { return };
        if self.told_trust_domain {
            return;
        }
        let own = configs.store().current();
        let theirs = SpiffeId::parse(expected);
        if let Ok(theirs) = theirs {
            if theirs.trust_domain() != own.id.trust_domain() {
                self.told_trust_domain = true;
                tracing::warn!(
                    expected,
                    own = own.id.as_str(),
                    "a meshed endpoint is expected in another trust domain than this proxy's: \
                     check [discovery.kubernetes] trust_domain"
                );
            }
        }
    }

    /// How connections to `addr` handshake. Without an identity (`[identity]` added by a
    /// reload: it is read at start only) or with an `expected` that is not a SPIFFE ID
    /// (validation refuses that), the endpoint still gets TLS, with a configuration that
    /// trusts no CA: every handshake fails and nothing goes out in plaintext (logged).
    fn upstream(&self, addr: SocketAddr, expected: &str) -> Option<UpstreamTls> {
        let config = match &self.configs {
            Some(configs) => configs.client_config(expected).map_err(|e| e.to_string()),
            None => Err("no [identity] is in force (it is read at start)".to_owned()),
        };
        let config = config.unwrap_or_else(|why| {
            tracing::error!(%addr, "mutual TLS to this endpoint cannot be set up, refusing it: {why}");
            trusts_nothing()
        });
        let name = ServerName::IpAddress(addr.ip().into());
        let mut tls = UpstreamTls::new(config, name, Some(expected.to_owned()), self.stats.clone());
        tls.handshake_timeout = self.handshake_timeout;
        Some(tls)
    }
}

/// Whether a connection to `addr` opened earlier still fits this core's table: plaintext
/// to an endpoint that is still plaintext, or TLS to one that still expects the identity
/// this connection's peer proved. The pool asks at check-in: a connection that was in use
/// while a snapshot changed its endpoint's TLS (so [`MeshedEndpoints::apply`] could not
/// drop it) comes back after the change, and must not carry another request.
pub fn fits_current(addr: SocketAddr, stream: &Stream) -> bool {
    match (stream.tls(), for_endpoint(addr)) {
        (None, None) => true,
        (Some(tls), Some(upstream)) => upstream
            .expected_identity()
            .is_none_or(|expected| tls.identity() == Some(expected)),
        _ => false,
    }
}

/// A client configuration under which no server's certificate is accepted.
fn trusts_nothing() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let builder = rustls::ClientConfig::builder_with_provider(crate::identity::provider())
                .with_protocol_versions(&[&rustls::version::TLS13])
                .expect("the ring provider supports TLS 1.3");
            Arc::new(
                builder
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_pki::Ca;
    use crate::identity::{Identity, IdentityStore, PemFiles};
    use crate::transport::tls_upstream::for_endpoint;
    use coremesh_discovery::{Config, ServiceTls};

    const API: &str = "spiffe://td/ns/prod/sa/api";
    const DB: &str = "spiffe://td/ns/prod/sa/db";

    fn configs() -> Arc<TlsConfigs> {
        let ca = Ca::new("mesh");
        let svid = ca.svid("spiffe://td/ns/prod/sa/web");
        let files = PemFiles {
            cert: svid.cert.into_bytes(),
            key: svid.key.into_bytes(),
            trust_anchors: ca.pem.into_bytes(),
        };
        let identity = Identity::from_pem(&files, rustls::pki_types::UnixTime::now())
            .unwrap_or_else(|e| panic!("{e}"));
        Arc::new(TlsConfigs::new(IdentityStore::new(identity)))
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Service "meshed" on ports 1 and 2 (over TLS expecting `identity`, when given) and
    /// service "plain" on port 3.
    fn snapshot(identity: Option<&str>) -> Snapshot {
        let mut config = Config::quick(addr(0), vec![addr(1), addr(2)]);
        config.services[0].name = "meshed".to_owned();
        config.services[0].tls = identity.map(|id| ServiceTls {
            identity: id.to_owned(),
        });
        let mut plain = config.services[0].clone();
        plain.name = "plain".to_owned();
        plain.endpoints = vec![addr(3)];
        plain.tls = None;
        config.services.push(plain);
        Snapshot::build(&config)
    }

    /// Service "meshed" on ports 4 and 5 as discovery found them: port 4 a meshed pod
    /// proving `identity` (when given), port 5 a plain one; with `tls`, the service's own.
    fn discovered(identity: Option<&str>, tls: Option<&str>) -> Snapshot {
        let mut config = Config::quick(addr(0), vec![addr(4), addr(5)]);
        config.services[0].name = "meshed".to_owned();
        config.services[0].tls = tls.map(|id| ServiceTls {
            identity: id.to_owned(),
        });
        let mut snapshot = Snapshot::build(&config);
        if let Some(identity) = identity {
            snapshot.services[0]
                .endpoint_identities
                .insert(addr(4), identity.to_owned());
        }
        snapshot
    }

    fn expected(port: u16) -> Option<String> {
        for_endpoint(addr(port)).and_then(|t| t.expected_identity().map(str::to_owned))
    }

    #[test]
    fn the_table_follows_each_snapshot_and_names_the_endpoints_that_changed() {
        let stats = Arc::new(TlsStats::default());
        let mut meshed =
            MeshedEndpoints::new(Some(configs()), Duration::from_millis(1234), stats.clone());
        let both: HashSet<SocketAddr> = [addr(1), addr(2)].into();
        assert_eq!(meshed.apply(&snapshot(Some(API))), both);
        assert_eq!(
            (expected(1), expected(2)),
            (Some(API.into()), Some(API.into()))
        );
        assert!(for_endpoint(addr(3)).is_none());
        assert_eq!(
            for_endpoint(addr(1)).map(|t| t.handshake_timeout),
            Some(Duration::from_millis(1234))
        );
        // Both entries count into the proxy's own counters, not a copy of them.
        for port in [1, 2] {
            let entry = for_endpoint(addr(port)).map(|t| t.stats().clone());
            assert!(
                entry.is_some_and(|s| Arc::ptr_eq(&s, &stats)),
                "port {port}"
            );
        }
        // The same snapshot again: nothing changed, the pools stay.
        assert_eq!(meshed.apply(&snapshot(Some(API))), HashSet::new());
        // Another identity expected, then plaintext again: both endpoints each time.
        assert_eq!(meshed.apply(&snapshot(Some(DB))), both);
        assert_eq!(expected(1), Some(DB.into()));
        assert_eq!(meshed.apply(&snapshot(None)), both);
        assert!(for_endpoint(addr(1)).is_none() && for_endpoint(addr(2)).is_none());
    }

    #[test]
    fn without_an_identity_the_endpoint_is_refused_not_reached_in_plaintext() {
        let mut meshed = MeshedEndpoints::new(None, Duration::from_secs(5), Arc::default());
        meshed.apply(&snapshot(Some(API)));
        assert_eq!(expected(1), Some(API.into()));
    }

    #[test]
    fn discovered_endpoints_prove_their_own_identity_and_a_services_tls_wins() {
        let mut meshed =
            MeshedEndpoints::new(Some(configs()), Duration::from_secs(5), Arc::default());
        let four: HashSet<SocketAddr> = [addr(4)].into();
        assert_eq!(meshed.apply(&discovered(Some(API), None)), four);
        assert_eq!(expected(4), Some(API.into()));
        assert!(
            for_endpoint(addr(5)).is_none(),
            "a plain pod stays plaintext"
        );
        // Its pod now runs under another service account: only that endpoint changes.
        assert_eq!(meshed.apply(&discovered(Some(DB), None)), four);
        assert_eq!(expected(4), Some(DB.into()));
        assert_eq!(meshed.apply(&discovered(Some(DB), None)), HashSet::new());
        // The service's own `tls` covers both endpoints and wins over discovery.
        let both: HashSet<SocketAddr> = [addr(4), addr(5)].into();
        assert_eq!(meshed.apply(&discovered(Some(DB), Some(API))), both);
        assert_eq!(
            (expected(4), expected(5)),
            (Some(API.into()), Some(API.into()))
        );
        // The pod is no longer meshed, and the service has no `tls`: plaintext again.
        assert_eq!(meshed.apply(&discovered(None, None)), both);
        assert!(for_endpoint(addr(4)).is_none() && for_endpoint(addr(5)).is_none());
        // All of it in our own trust domain; another one is noticed (and still expected).
        assert!(!meshed.told_trust_domain);
        meshed.apply(&discovered(Some("spiffe://elsewhere/ns/prod/sa/api"), None));
        assert!(meshed.told_trust_domain);
        assert_eq!(
            expected(4).as_deref(),
            Some("spiffe://elsewhere/ns/prod/sa/api")
        );
    }

    #[test]
    fn without_an_identity_discovered_endpoints_stay_plaintext() {
        let mut meshed = MeshedEndpoints::new(None, Duration::from_secs(5), Arc::default());
        assert_eq!(meshed.apply(&discovered(Some(API), None)), HashSet::new());
        assert!(for_endpoint(addr(4)).is_none());
        // A service's own `tls` still fails closed.
        meshed.apply(&discovered(Some(API), Some(DB)));
        assert_eq!(expected(4), Some(DB.into()));
    }
}
