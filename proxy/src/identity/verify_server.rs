//! [`SpiffeServerVerifier`]: the outbound side's check of an endpoint's certificate. The
//! chain must lead to the trust anchors in force (webpki, for server use; DNS names are
//! not looked at), the leaf must follow the X.509-SVID rules, and its SPIFFE ID must be the
//! one the service expects.

use super::load::unix_seconds;
use super::reason::{IdentityError, Reason};
use super::store::IdentityStore;
use super::svid::check_leaf;
use coremesh_discovery::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{DigitallySignedStruct, SignatureScheme};

#[derive(Debug)]
pub struct SpiffeServerVerifier {
    store: IdentityStore,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(store: IdentityStore, expected: SpiffeId) -> SpiffeServerVerifier {
        SpiffeServerVerifier {
            store,
            expected,
            algorithms: super::load::provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = self.store.current();
        let parsed = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &identity.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let leaf = check_leaf(end_entity, unix_seconds(now)).map_err(|e| e.into_tls_error())?;
        if leaf.id != self.expected {
            let detail = format!("the endpoint is {}, expected {}", leaf.id, self.expected);
            return Err(IdentityError::new(Reason::IdentityMismatch, detail).into_tls_error());
        }
        Ok(ServerCertVerified::assertion())
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
