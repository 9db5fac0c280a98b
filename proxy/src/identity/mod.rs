//! Workload identity for mutual TLS: the proxy's X.509-SVID (SPIFFE) and trust anchors,
//! checked and kept current, the rustls configurations built on them, and the policy that
//! decides who may call. The sockets use these through [`TlsConfigs`]; see
//! `docs/identity.md`.
//!
//! - `svid.rs`: the X.509-SVID rules for a leaf; `load.rs`: an [`Identity`] from PEM;
//! - `store.rs`: the identity in force; `watch.rs`: rotation; `metrics.rs`: its metrics
//!   (one set per proxy);
//! - `resolver.rs`, `verify_client.rs`, `verify_server.rs`, `configs.rs`: rustls;
//! - `peer.rs`: the peer's ID after a handshake; `policy.rs`: [`authorize`];
//! - `reason.rs`: why something was refused, with labels for metrics.

mod configs;
mod load;
pub mod metrics;
mod peer;
mod policy;
mod reason;
mod resolver;
mod store;
mod svid;
mod verify_client;
mod verify_server;
mod watch;

#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;

pub use configs::{TlsConfigs, ALPN};
pub use load::{provider, unix_seconds, Identity, PemFiles};
pub use metrics::IdentityMetrics;
pub use peer::peer_id;
pub use policy::{authorize, authorize_inbound, denied_error, denied_reason, Decision};
pub use reason::{IdentityError, Reason};
pub use store::IdentityStore;
pub use svid::{check_leaf, SvidInfo};
pub use watch::{ReloadOutcome, Reloader, Watcher};

use coremesh_discovery::IdentitySettings;
use rustls::pki_types::UnixTime;

/// Loads the identity `settings` names and starts watching its files: the TLS
/// configurations over it and the watcher (dropping the watcher stops rotation), which
/// holds this proxy's identity metrics ([`Watcher::metrics`]).
pub fn start(settings: &IdentitySettings) -> Result<(TlsConfigs, Watcher), IdentityError> {
    let identity = Identity::load(settings, UnixTime::now())?;
    let metrics = std::sync::Arc::new(IdentityMetrics::new());
    metrics.installed(identity.not_after);
    tracing::info!(identity = %identity.id, not_after = identity.not_after, "identity loaded");
    let store = IdentityStore::new(identity);
    let reloader = Reloader::new(settings.clone(), store.clone(), metrics);
    let watcher = Watcher::spawn(reloader).map_err(|e| {
        IdentityError::new(
            Reason::Unreadable,
            format!("cannot start the identity watcher: {e}"),
        )
    })?;
    Ok((TlsConfigs::new(store), watcher))
}
