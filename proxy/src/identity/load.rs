//! [`Identity`]: the proxy's certificate chain, key and trust anchors, read from PEM and
//! checked whole before anything uses them (the SVID rules, the key against the
//! certificate, the chain against the anchors for both client and server use).

use super::reason::{IdentityError, Reason};
use super::svid::{check_leaf, SvidInfo};
use coremesh_discovery::{IdentitySettings, SpiffeId};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// The crypto provider of every configuration built here: ring (see `docs/identity.md`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A checked workload identity, immutable: a rotation builds a new one.
pub struct Identity {
    pub id: SpiffeId,
    /// The chain (leaf first) and its signing key, as handshakes present them.
    pub certified: Arc<CertifiedKey>,
    /// The trust anchors peers' chains must lead to.
    pub roots: Arc<RootCertStore>,
    /// rustls' webpki client verifier over `roots` (the inbound side's chain check).
    pub client_verifier: Arc<dyn ClientCertVerifier>,
    /// The leaf's validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("chain", &self.certified.cert.len())
            .field("anchors", &self.roots.len())
            .field("not_after", &self.not_after)
            .finish()
    }
}

/// The three PEM files' contents.
pub struct PemFiles {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub trust_anchors: Vec<u8>,
}

impl PemFiles {
    /// Reads the files `settings` names.
    pub fn read(settings: &IdentitySettings) -> Result<PemFiles, IdentityError> {
        Ok(PemFiles {
            cert: read(&settings.cert, "identity.cert")?,
            key: read(&settings.key, "identity.key")?,
            trust_anchors: read(&settings.trust_anchors, "identity.trust_anchors")?,
        })
    }
}

fn read(path: &Path, field: &str) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|e| {
        IdentityError::new(
            Reason::Unreadable,
            format!("{field} {}: {e}", path.display()),
        )
    })
}

impl Identity {
    /// Whether `other` is this identity again (the same chain and the same trust anchors,
    /// as a second read of unchanged files gives): nothing to install.
    pub fn same_as(&self, other: &Identity) -> bool {
        self.certified.cert == other.certified.cert && self.roots.roots == other.roots.roots
    }

    /// Reads and checks the files `settings` names, at `now`.
    pub fn load(settings: &IdentitySettings, now: UnixTime) -> Result<Identity, IdentityError> {
        Identity::from_pem(&PemFiles::read(settings)?, now)
    }

    /// Checks an identity given as PEM, at `now`.
    pub fn from_pem(files: &PemFiles, now: UnixTime) -> Result<Identity, IdentityError> {
        let provider = provider();
        let chain = certificates(&files.cert, "identity.cert")?;
        let certified = CertifiedKey::new(chain, signing_key(&files.key, &provider)?);
        certified.keys_match().map_err(|e| {
            IdentityError::new(
                Reason::KeyMismatch,
                format!("identity.key does not belong to identity.cert: {e}"),
            )
        })?;
        let roots = trust_anchors(&files.trust_anchors)?;
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| {
                    IdentityError::new(Reason::BadPem, format!("identity.trust_anchors: {e}"))
                })?;
        let Some((leaf, intermediates)) = certified.cert.split_first() else {
            return Err(IdentityError::new(Reason::BadPem, "identity.cert: empty"));
        };
        let SvidInfo {
            id,
            not_before,
            not_after,
        } = check_leaf(leaf, unix_seconds(now))?;
        check_chain(
            leaf,
            intermediates,
            &roots,
            &*client_verifier,
            now,
            &provider,
        )?;
        Ok(Identity {
            id,
            certified: Arc::new(certified),
            roots,
            client_verifier,
            not_before,
            not_after,
        })
    }
}

fn signing_key(
    pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Arc<dyn rustls::sign::SigningKey>, IdentityError> {
    let key = PrivateKeyDer::from_pem_slice(pem).map_err(|e| {
        IdentityError::new(Reason::BadPem, format!("identity.key: no private key: {e}"))
    })?;
    provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| IdentityError::new(Reason::BadPem, format!("identity.key: unusable key: {e}")))
}

fn trust_anchors(pem: &[u8]) -> Result<Arc<RootCertStore>, IdentityError> {
    let mut roots = RootCertStore::empty();
    for (index, anchor) in certificates(pem, "identity.trust_anchors")?
        .into_iter()
        .enumerate()
    {
        roots.add(anchor).map_err(|e| {
            IdentityError::new(
                Reason::BadPem,
                format!("identity.trust_anchors: certificate {index} is not a usable anchor: {e}"),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// The proxy's own chain must lead to the anchors for both of its uses: as the inbound
/// side's server certificate and as the outbound side's client certificate.
fn check_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &RootCertStore,
    client_verifier: &dyn ClientCertVerifier,
    now: UnixTime,
    provider: &CryptoProvider,
) -> Result<(), IdentityError> {
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| IdentityError::from_tls_error("identity.cert", &e))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        roots,
        intermediates,
        now,
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| {
        IdentityError::from_tls_error(
            "identity.cert does not chain to identity.trust_anchors as a server",
            &e,
        )
    })?;
    client_verifier
        .verify_client_cert(leaf, intermediates, now)
        .map_err(|e| {
            IdentityError::from_tls_error(
                "identity.cert does not chain to identity.trust_anchors as a client",
                &e,
            )
        })?;
    Ok(())
}

fn certificates(pem: &[u8], field: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| IdentityError::new(Reason::BadPem, format!("{field}: {e}")))?;
    if certs.is_empty() {
        return Err(IdentityError::new(
            Reason::BadPem,
            format!("{field}: no CERTIFICATE in the file"),
        ));
    }
    Ok(certs)
}

/// `now` in seconds since the Unix epoch.
pub fn unix_seconds(now: UnixTime) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}
