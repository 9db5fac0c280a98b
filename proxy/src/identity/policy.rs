//! [`authorize`]: whether a caller with a given verified identity (or none) may reach the
//! application, under the policy in force for its request; [`authorize_inbound`] decides
//! an inbound request and counts a refusal on its core (`coremesh_inbound_denied_total`),
//! which [`denied_error`] answers (`ProxyError::Denied`: 403, PERMISSION_DENIED).

use super::reason::Reason;
use coremesh_discovery::{CompiledInboundPolicy, EffectivePolicy, SpiffeId};
use coremesh_telemetry::DeniedReason;

/// The outcome of [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Refused: 403, PERMISSION_DENIED or a closed connection, counted by reason.
    Deny(Reason),
}

/// Without a verified identity a caller passes only a policy that asks for none; with one,
/// an empty `authorize` list lets any identity through, otherwise one pattern must match.
pub fn authorize(policy: &EffectivePolicy, peer: Option<&SpiffeId>) -> Decision {
    match peer {
        None if policy.require_mtls || !policy.authorize.is_empty() => {
            Decision::Deny(Reason::NoClientCert)
        }
        None => Decision::Allow,
        Some(_) if policy.authorize.is_empty() => Decision::Allow,
        Some(id) if policy.authorize.iter().any(|p| p.matches(id)) => Decision::Allow,
        Some(_) => Decision::Deny(Reason::NotAuthorized),
    }
}

/// The decision for an inbound request on `path` (its query left out) from `peer`; a
/// refusal is counted in `core`'s `coremesh_inbound_denied_total{reason}`.
pub fn authorize_inbound(
    core: &crate::core::Core,
    policy: &CompiledInboundPolicy,
    path: &str,
    peer: Option<&SpiffeId>,
) -> Decision {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let decision = authorize(policy.for_path(path), peer);
    if let Decision::Deny(reason) = decision {
        core.metrics
            .borrow()
            .record_inbound_denied(denied_reason(reason));
    }
    decision
}

/// The `reason` label of a refusal by the policy.
pub fn denied_reason(reason: Reason) -> DeniedReason {
    match reason {
        Reason::NoClientCert => DeniedReason::NoClientCert,
        _ => DeniedReason::NotAuthorized,
    }
}

/// The error a request refused by the policy is answered with (HTTP: 403, gRPC:
/// PERMISSION_DENIED), counted under its own error kind, `denied`.
pub fn denied_error(reason: Reason) -> crate::error::ProxyError {
    crate::error::ProxyError::Denied(denied_reason(reason))
}

#[cfg(test)]
mod tests {
    use super::{authorize, denied_error, Decision};
    use crate::identity::Reason;
    use coremesh_discovery::{EffectivePolicy, IdPattern, SpiffeId};

    fn id(text: &str) -> SpiffeId {
        SpiffeId::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn policy(require_mtls: bool, patterns: &[&str]) -> EffectivePolicy {
        EffectivePolicy {
            require_mtls,
            authorize: patterns
                .iter()
                .map(|p| IdPattern::parse(p).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
        }
    }

    #[test]
    fn decisions_follow_the_policy() {
        let web = id("spiffe://td/ns/prod/sa/web");
        let batch = id("spiffe://td/ns/batch/sa/job");
        let open = policy(false, &[]);
        assert_eq!(authorize(&open, None), Decision::Allow);
        assert_eq!(authorize(&open, Some(&web)), Decision::Allow);
        let mtls = policy(true, &[]);
        assert_eq!(authorize(&mtls, None), Decision::Deny(Reason::NoClientCert));
        assert_eq!(authorize(&mtls, Some(&batch)), Decision::Allow);
        let prod = policy(
            true,
            &["spiffe://td/ns/prod/*", "spiffe://td/ns/ops/sa/admin"],
        );
        assert_eq!(authorize(&prod, Some(&web)), Decision::Allow);
        assert_eq!(
            authorize(&prod, Some(&id("spiffe://td/ns/ops/sa/admin"))),
            Decision::Allow
        );
        assert_eq!(
            authorize(&prod, Some(&batch)),
            Decision::Deny(Reason::NotAuthorized)
        );
        assert_eq!(authorize(&prod, None), Decision::Deny(Reason::NoClientCert));
        let listed_only = policy(false, &["spiffe://td/ns/prod/sa/web"]);
        for (reason, label) in [
            (Reason::NoClientCert, "no_client_cert"),
            (Reason::NotAuthorized, "not_authorized"),
        ] {
            let err = denied_error(reason);
            assert_eq!((err.status(), err.kind()), (403, "denied"));
            assert_eq!(
                err.metric_kind(),
                coremesh_telemetry::ErrorKind::Denied,
                "not bad-request"
            );
            assert_eq!(super::denied_reason(reason).as_str(), label);
            assert_eq!(
                crate::http2::grpc::status_of(&err),
                crate::http2::grpc::code::PERMISSION_DENIED
            );
        }
        assert_eq!(
            authorize(&listed_only, None),
            Decision::Deny(Reason::NoClientCert)
        );
    }
}
