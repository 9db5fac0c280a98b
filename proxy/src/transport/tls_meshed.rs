//! Which endpoints this core reaches over mutual TLS: the services of a snapshot that carry
//! `tls = { identity = … }`, turned at each install into this core's [`tls_upstream`]
//! table (one [`UpstreamTls`] per endpoint, with the client configuration for the identity
//! the endpoint must prove), and the endpoints whose TLS changed, whose pooled connections
//! must not be used again.
//!
//! An endpoint listed by two services with different identities takes the first service's.
//!
//! [`tls_upstream`]: super::tls_upstream

use super::tls_upstream::{set_endpoint, UpstreamTls};
use crate::identity::TlsConfigs;
use coremesh_discovery::Snapshot;
use rustls::pki_types::ServerName;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The proxy's identity (when configured) and what this core's table holds.
pub struct MeshedEndpoints {
    configs: Option<Arc<TlsConfigs>>,
    handshake_timeout: Duration,
    /// Endpoint → the identity it must prove, as set in the table.
    current: HashMap<SocketAddr, String>,
}

impl MeshedEndpoints {
    pub fn new(configs: Option<Arc<TlsConfigs>>, handshake_timeout: Duration) -> Self {
        MeshedEndpoints {
            configs,
            handshake_timeout,
            current: HashMap::new(),
        }
    }

    /// Set this core's table for `snapshot` (call on the core's thread); returns the
    /// endpoints whose TLS changed (now meshed, no longer, or another identity).
    pub fn apply(&mut self, snapshot: &Snapshot) -> HashSet<SocketAddr> {
        let mut wanted: HashMap<SocketAddr, String> = HashMap::new();
        for service in &snapshot.services {
            let Some(tls) = &service.tls else { continue };
            for &addr in &service.endpoints {
                wanted.entry(addr).or_insert_with(|| tls.identity.clone());
            }
        }
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

    /// How connections to `addr` handshake; none (logged) when there is no identity or
    /// `expected` is not a SPIFFE ID, which validation refuses before a snapshot is built.
    fn upstream(&self, addr: SocketAddr, expected: &str) -> Option<UpstreamTls> {
        let Some(configs) = &self.configs else {
            tracing::error!(%addr, "mutual TLS wanted but no [identity] is configured");
            return None;
        };
        match configs.client_config(expected) {
            Ok(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let mut tls = UpstreamTls::new(config, name, Some(expected.to_owned()));
                tls.handshake_timeout = self.handshake_timeout;
                Some(tls)
            }
            Err(e) => {
                tracing::error!(%addr, "no mutual TLS configuration: {e}");
                None
            }
        }
    }
}
