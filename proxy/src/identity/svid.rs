//! The X.509-SVID rules for a leaf certificate, read with `x509-parser`: exactly one URI
//! SAN holding a SPIFFE ID with a path, not a CA (no `cA` basic constraint, no
//! `keyCertSign` or `cRLSign` key usage), and within its validity.

use super::reason::{IdentityError, Reason};
use coremesh_discovery::SpiffeId;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// What a leaf that follows the rules says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidInfo {
    pub id: SpiffeId,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// Checks `der` as an X.509-SVID leaf at `now` (seconds since the Unix epoch).
pub fn check_leaf(der: &[u8], now: i64) -> Result<SvidInfo, IdentityError> {
    let cert = parse(der)?;
    let id = spiffe_id_of(&cert)?;
    not_a_ca(&cert)?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    if now > not_after {
        return Err(IdentityError::new(
            Reason::Expired,
            format!("the certificate of {id} expired at {not_after} (unix seconds)"),
        ));
    }
    if now < not_before {
        return Err(IdentityError::new(
            Reason::NotYetValid,
            format!("the certificate of {id} is valid from {not_before} (unix seconds)"),
        ));
    }
    Ok(SvidInfo {
        id,
        not_before,
        not_after,
    })
}

/// The SPIFFE ID of a leaf (its one URI SAN), without the validity and CA checks: for a
/// certificate a handshake has already verified.
pub fn leaf_id(der: &[u8]) -> Result<SpiffeId, IdentityError> {
    spiffe_id_of(&parse(der)?)
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, IdentityError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => Ok(cert),
        Err(e) => Err(IdentityError::new(
            Reason::BadSvid,
            format!("not an X.509 certificate: {e}"),
        )),
    }
}

fn bad(detail: String) -> IdentityError {
    IdentityError::new(Reason::BadSvid, detail)
}

fn spiffe_id_of(cert: &X509Certificate<'_>) -> Result<SpiffeId, IdentityError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("unreadable subjectAltName: {e}")))?;
    let uris: Vec<&str> = san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some(*uri),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let [uri] = uris.as_slice() else {
        return Err(bad(format!(
            "{} URI SANs (an X.509-SVID has exactly one): {uris:?}",
            uris.len()
        )));
    };
    let id = SpiffeId::parse(uri).map_err(|e| bad(format!("URI SAN is not a SPIFFE ID: {e}")))?;
    if id.path().is_empty() {
        return Err(bad(format!(
            "{id} has no path (a leaf SVID names a workload)"
        )));
    }
    Ok(id)
}

fn not_a_ca(cert: &X509Certificate<'_>) -> Result<(), IdentityError> {
    let constraints = cert
        .basic_constraints()
        .map_err(|e| bad(format!("unreadable basicConstraints: {e}")))?;
    if constraints.is_some_and(|c| c.value.ca) {
        return Err(bad(
            "the leaf is a CA certificate (basicConstraints cA)".into()
        ));
    }
    let usage = cert
        .key_usage()
        .map_err(|e| bad(format!("unreadable keyUsage: {e}")))?;
    if let Some(usage) = usage {
        if usage.value.key_cert_sign() || usage.value.crl_sign() {
            return Err(bad(
                "the leaf may sign certificates or CRLs (keyCertSign / cRLSign)".into(),
            ));
        }
    }
    Ok(())
}
