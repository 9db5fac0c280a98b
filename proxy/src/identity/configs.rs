//! [`TlsConfigs`]: the rustls configurations the sockets use, TLS 1.3 only, ALPN `h2` and
//! `http/1.1`, built once over the [`IdentityStore`] (certificates and anchors are read per
//! handshake, so a rotation needs no new configuration): one server configuration for the
//! inbound side, and one client configuration per identity an upstream service expects.
//! Session resumption is off on both: every connection is a full handshake against the
//! identity in force (upstream connections are pooled, so handshakes stay rare).

use super::reason::{IdentityError, Reason};
use super::resolver::CurrentCert;
use super::store::IdentityStore;
use super::verify_client::SpiffeClientVerifier;
use super::verify_server::SpiffeServerVerifier;
use coremesh_discovery::SpiffeId;
use rustls::{ClientConfig, ServerConfig};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// ALPN protocols, preferred first: HTTP/2, then HTTP/1.1.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The server configuration and a cache of client configurations over one store.
pub struct TlsConfigs {
    store: IdentityStore,
    server: Arc<ServerConfig>,
    /// Asked for when a connection to a meshed endpoint is made, not per request.
    clients: Mutex<HashMap<SpiffeId, Arc<ClientConfig>>>,
}

impl TlsConfigs {
    pub fn new(store: IdentityStore) -> TlsConfigs {
        TlsConfigs {
            server: build_server(&store),
            store,
            clients: Mutex::new(HashMap::new()),
        }
    }

    pub fn store(&self) -> &IdentityStore {
        &self.store
    }

    /// The inbound side's configuration: a client certificate is required and verified.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The configuration for connections to endpoints that must prove `expected`.
    pub fn client_config(&self, expected: &str) -> Result<Arc<ClientConfig>, IdentityError> {
        let expected = SpiffeId::parse(expected)
            .map_err(|e| IdentityError::new(Reason::BadSvid, format!("expected identity: {e}")))?;
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let config = clients
            .entry(expected)
            .or_insert_with_key(|expected| build_client(&self.store, expected.clone()));
        Ok(config.clone())
    }
}

fn alpn() -> Vec<Vec<u8>> {
    ALPN.iter().map(|p| p.to_vec()).collect()
}

fn build_server(store: &IdentityStore) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(super::load::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_client_cert_verifier(Arc::new(SpiffeClientVerifier::new(store.clone())))
        .with_cert_resolver(Arc::new(CurrentCert(store.clone())));
    config.alpn_protocols = alpn();
    // No resumption: every connection is a full handshake, so each one checks the
    // caller's certificate against the anchors in force and presents the certificate in
    // force (a resumed session would carry the identities of the one it came from).
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Arc::new(config)
}

fn build_client(store: &IdentityStore, expected: SpiffeId) -> Arc<ClientConfig> {
    let mut config = ClientConfig::builder_with_provider(super::load::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerVerifier::new(
            store.clone(),
            expected,
        )))
        .with_client_cert_resolver(Arc::new(CurrentCert(store.clone())));
    config.alpn_protocols = alpn();
    // No resumption, as for the server: see `build_server`.
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}
