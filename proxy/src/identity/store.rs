//! [`IdentityStore`]: the identity in force, shared by the reloader (which replaces it
//! whole) and every TLS configuration (which reads it once per handshake). A handshake
//! that began keeps the identity it read; connections already up are not touched.

use super::load::Identity;
use arc_swap::ArcSwap;
use std::sync::Arc;

/// The identity in force. Cloning shares it.
#[derive(Clone)]
pub struct IdentityStore(Arc<ArcSwap<Identity>>);

impl IdentityStore {
    pub fn new(identity: Identity) -> IdentityStore {
        IdentityStore(Arc::new(ArcSwap::from_pointee(identity)))
    }

    /// The identity in force now.
    pub fn current(&self) -> Arc<Identity> {
        self.0.load_full()
    }

    /// Puts `identity` in force for every handshake from now on.
    pub fn install(&self, identity: Identity) {
        self.0.store(Arc::new(identity));
    }
}

impl std::fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("IdentityStore")
            .field(&self.current().id)
            .finish()
    }
}
