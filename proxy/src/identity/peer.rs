//! [`peer_id`]: the verified peer's SPIFFE ID, read after a handshake from the
//! certificates rustls reports (`peer_certificates()`).

use super::reason::Reason;
use super::svid::leaf_id;
use coremesh_discovery::SpiffeId;
use rustls::pki_types::CertificateDer;

/// The SPIFFE ID of the peer whose chain is `certs` (leaf first); none presented is
/// [`Reason::NoClientCert`].
pub fn peer_id(certs: Option<&[CertificateDer<'_>]>) -> Result<SpiffeId, Reason> {
    match certs.and_then(|c| c.first()) {
        Some(leaf) => leaf_id(leaf).map_err(|e| e.reason),
        None => Err(Reason::NoClientCert),
    }
}
