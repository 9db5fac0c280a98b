//! Why an identity, a certificate or a caller was refused: a small set of reasons with
//! stable labels (for metrics and logs), and the error that carries one with its detail.

use std::fmt;

/// A refusal's reason. The label of each is part of the metrics' interface: never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A file could not be read.
    Unreadable,
    /// A file is not the PEM it should be (no certificate, no key, garbage).
    BadPem,
    /// The private key is not the certificate's.
    KeyMismatch,
    /// A certificate's validity ended.
    Expired,
    /// A certificate's validity has not begun.
    NotYetValid,
    /// The chain does not lead to a trust anchor.
    UnknownCa,
    /// The leaf breaks the X.509-SVID rules (URI SANs, SPIFFE ID, CA flag).
    BadSvid,
    /// The peer proved another identity than the one expected.
    IdentityMismatch,
    /// The caller presented no client certificate where one is required.
    NoClientCert,
    /// The caller's identity is not in the `authorize` list.
    NotAuthorized,
}

impl Reason {
    /// Every reason, in label order of the documentation.
    pub const ALL: [Reason; 10] = [
        Reason::Unreadable,
        Reason::BadPem,
        Reason::KeyMismatch,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::UnknownCa,
        Reason::BadSvid,
        Reason::IdentityMismatch,
        Reason::NoClientCert,
        Reason::NotAuthorized,
    ];

    /// The stable label (`reason="…"` in metrics).
    pub fn label(self) -> &'static str {
        match self {
            Reason::Unreadable => "unreadable",
            Reason::BadPem => "bad_pem",
            Reason::KeyMismatch => "key_mismatch",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::UnknownCa => "unknown_ca",
            Reason::BadSvid => "bad_svid",
            Reason::IdentityMismatch => "identity_mismatch",
            Reason::NoClientCert => "no_client_cert",
            Reason::NotAuthorized => "not_authorized",
        }
    }

    /// Position in [`Reason::ALL`] (an index into per-reason counters).
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// The reason behind a failed handshake: an [`IdentityError`] raised by this module's
    /// verifiers, rustls' own certificate errors, or the alert of a peer that refused this
    /// side's certificate.
    pub fn of_tls_error(error: &rustls::Error) -> Reason {
        use rustls::CertificateError as C;
        match error {
            rustls::Error::InvalidCertificate(cert) => match cert {
                C::Expired | C::ExpiredContext { .. } => Reason::Expired,
                C::NotValidYet | C::NotValidYetContext { .. } => Reason::NotYetValid,
                C::UnknownIssuer
                | C::BadSignature
                | C::UnsupportedSignatureAlgorithmContext { .. } => Reason::UnknownCa,
                C::Other(other) => match other.0.downcast_ref::<IdentityError>() {
                    Some(e) => e.reason,
                    None => Reason::BadSvid,
                },
                _ => Reason::BadSvid,
            },
            rustls::Error::NoCertificatesPresented => Reason::NoClientCert,
            // The peer refused this side's certificate and said why in its alert.
            rustls::Error::AlertReceived(alert) => {
                use rustls::AlertDescription as A;
                match alert {
                    A::CertificateExpired => Reason::Expired,
                    A::UnknownCA => Reason::UnknownCa,
                    A::CertificateRequired => Reason::NoClientCert,
                    A::AccessDenied => Reason::NotAuthorized,
                    _ => Reason::BadSvid,
                }
            }
            rustls::Error::InconsistentKeys(_) => Reason::KeyMismatch,
            _ => Reason::BadSvid,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A refusal: its [`Reason`] and what exactly was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityError {
    pub reason: Reason,
    pub detail: String,
}

impl IdentityError {
    pub fn new(reason: Reason, detail: impl Into<String>) -> IdentityError {
        IdentityError {
            reason,
            detail: detail.into(),
        }
    }

    /// As a rustls certificate error, so that a verifier's refusal keeps its reason
    /// through the handshake (see [`Reason::of_tls_error`]).
    pub fn into_tls_error(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
            std::sync::Arc::new(self),
        )))
    }

    /// A rustls error met while checking `what`, with the reason it stands for.
    pub fn from_tls_error(what: &str, error: &rustls::Error) -> IdentityError {
        IdentityError::new(Reason::of_tls_error(error), format!("{what}: {error}"))
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.detail)
    }
}

impl std::error::Error for IdentityError {}

#[cfg(test)]
mod tests {
    use super::{IdentityError, Reason};
    use std::collections::HashSet;

    #[test]
    fn labels_are_unique_and_indexes_follow_all() {
        let labels: HashSet<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), Reason::ALL.len());
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn a_verifier_refusal_keeps_its_reason_through_rustls() {
        let error = IdentityError::new(Reason::IdentityMismatch, "x").into_tls_error();
        assert_eq!(Reason::of_tls_error(&error), Reason::IdentityMismatch);
        let expired = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(Reason::of_tls_error(&expired), Reason::Expired);
    }
}
