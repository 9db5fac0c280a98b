//! [`SpiffeClientVerifier`]: the inbound side's check of a caller's certificate. A client
//! certificate is required; its chain must lead to the trust anchors in force (rustls'
//! webpki client verifier) and its leaf must follow the X.509-SVID rules. Which identities
//! may call is decided after the handshake, per request (see `policy.rs`).

use super::load::unix_seconds;
use super::store::IdentityStore;
use super::svid::check_leaf;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

#[derive(Debug)]
pub struct SpiffeClientVerifier {
    store: IdentityStore,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeClientVerifier {
    pub fn new(store: IdentityStore) -> SpiffeClientVerifier {
        SpiffeClientVerifier {
            store,
            algorithms: super::load::provider().signature_verification_algorithms,
        }
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    /// No CA names are sent: the anchors change with rotation, and a mesh's clients hold
    /// one certificate each.
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let identity = self.store.current();
        identity
            .client_verifier
            .verify_client_cert(end_entity, intermediates, now)?;
        check_leaf(end_entity, unix_seconds(now)).map_err(|e| e.into_tls_error())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
