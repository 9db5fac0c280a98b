//! The inbound side: connections on their way to the application, handed to
//! `app_address` on the original destination's port (or on `app_port` when set). HTTP/1
//! goes through the request path with the client's address in `X-Forwarded-For`; opaque
//! TCP is relayed. A connection made straight to the inbound listener (not redirected)
//! goes to `app_port` when one is set, and is refused otherwise (there is no port to use).
//!
//! The application's address is never one of the proxy's own listeners: with `app_port`
//! set, validation refuses such a configuration; without it, a connection whose original
//! destination port would make it one (say, to the outbound port from outside) is refused
//! here, as a loop.
//!
//! Opaque TCP carries no request to decide, so a connection is decided once, by
//! `[inbound]`'s own `require_mtls` and `authorize` ([`admit_opaque`]): refused, it is
//! closed before a byte reaches the application.

use super::{Decision, Side};
use crate::identity::{authorize, denied_reason, Decision as Authorization};
use crate::transport::original_dst::Destination;
use coremesh_discovery::validate::serves;
use coremesh_discovery::{CompiledInboundPolicy, SpiffeId};
use std::net::SocketAddr;

/// Where an inbound connection goes.
pub fn decide(side: &Side, destination: Destination) -> Decision {
    let app = match (destination, side.app_port) {
        (Destination::Original(to), port) => {
            SocketAddr::new(side.app_address, port.unwrap_or(to.port()))
        }
        (Destination::Listener(_), Some(port)) => SocketAddr::new(side.app_address, port),
        (Destination::Listener(to), None) => return Decision::Refuse(to),
    };
    if side.own_listeners.iter().any(|l| serves(*l, app)) {
        return Decision::Refuse(app);
    }
    Decision::Application(app)
}

/// The decision for an opaque TCP connection with the verified identity `peer_id` (none:
/// plaintext) under `policy`'s connection policy.
pub fn opaque_decision(
    policy: &CompiledInboundPolicy,
    peer_id: Option<&SpiffeId>,
) -> Authorization {
    authorize(policy.connection(), peer_id)
}

/// Whether an opaque TCP connection from `peer` with the verified identity `peer_id` may
/// reach the application under the inbound policy in force on `core`. A refusal is counted
/// in the core's `coremesh_inbound_denied_total{reason}` and logged at debug level; the
/// caller then closes the connection.
pub fn admit_opaque(
    core: &crate::core::Core,
    peer_id: Option<&SpiffeId>,
    peer: SocketAddr,
) -> bool {
    match opaque_decision(&core.snapshot().inbound_policy, peer_id) {
        Authorization::Allow => true,
        Authorization::Deny(reason) => {
            core.metrics
                .borrow()
                .record_inbound_denied(denied_reason(reason));
            let id = peer_id.map(SpiffeId::as_str);
            tracing::debug!(%peer, ?id, reason = reason.label(), "opaque TCP refused by the inbound policy: closing");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_goes_to_the_application_port() {
        let mut side = Side::inbound(&coremesh_discovery::InboundSettings::default());
        let original: SocketAddr = ([10, 0, 0, 7], 8080).into();
        let listener: SocketAddr = ([10, 0, 0, 7], 4143).into();
        let app = |port| Decision::Application(([127, 0, 0, 1], port).into());
        assert_eq!(decide(&side, Destination::Original(original)), app(8080));
        assert_eq!(
            decide(&side, Destination::Listener(listener)),
            Decision::Refuse(listener)
        );
        side.app_port = Some(9000);
        assert_eq!(decide(&side, Destination::Original(original)), app(9000));
        assert_eq!(decide(&side, Destination::Listener(listener)), app(9000));
    }

    #[test]
    fn an_application_port_that_is_the_proxys_own_listener_is_refused() {
        let mut side = Side::inbound(&coremesh_discovery::InboundSettings::default());
        side.own_listeners = vec![
            ([127, 0, 0, 1], 4140).into(),
            ([0, 0, 0, 0], 4143).into(),
            "[::]:4143".parse().unwrap_or_else(|e| panic!("{e}")),
        ];
        let to = |port| Destination::Original(([10, 0, 0, 7], port).into());
        let local = |port: u16| -> SocketAddr { ([127, 0, 0, 1], port).into() };
        assert_eq!(decide(&side, to(4140)), Decision::Refuse(local(4140)));
        assert_eq!(decide(&side, to(4143)), Decision::Refuse(local(4143)));
        assert_eq!(decide(&side, to(8080)), Decision::Application(local(8080)));
        side.app_address = "::1".parse().unwrap_or_else(|e| panic!("{e}"));
        let v6 = SocketAddr::new(side.app_address, 4143);
        assert_eq!(decide(&side, to(4143)), Decision::Refuse(v6));
        assert_eq!(
            decide(&side, to(4140)),
            Decision::Application(SocketAddr::new(side.app_address, 4140))
        );
    }

    #[test]
    fn opaque_tcp_is_decided_by_the_inbounds_own_policy() {
        use coremesh_discovery::{InboundPolicy, InboundRoute};
        let id = |text: &str| SpiffeId::parse(text).unwrap_or_else(|e| panic!("{e}"));
        let web = id("spiffe://td/ns/prod/sa/web");
        let batch = id("spiffe://td/ns/batch/sa/job");
        // A route that lets plaintext in on a path does not open opaque TCP.
        let policy = InboundPolicy {
            require_mtls: true,
            authorize: vec!["spiffe://td/ns/prod/*".to_owned()],
            routes: vec![InboundRoute {
                path_prefix: Some("/healthz".to_owned()),
                require_mtls: Some(false),
                authorize: Some(Vec::new()),
                ..InboundRoute::default()
            }],
        }
        .compile();
        let admitted = |policy: &CompiledInboundPolicy, id| {
            matches!(opaque_decision(policy, id), Authorization::Allow)
        };
        assert!(admitted(&policy, Some(&web)));
        assert!(matches!(
            opaque_decision(&policy, Some(&batch)),
            Authorization::Deny(crate::identity::Reason::NotAuthorized)
        ));
        assert!(matches!(
            opaque_decision(&policy, None),
            Authorization::Deny(crate::identity::Reason::NoClientCert)
        ));
        let open = InboundPolicy::default().compile();
        assert!(admitted(&open, None));
        assert!(admitted(&open, Some(&batch)));
    }
}
