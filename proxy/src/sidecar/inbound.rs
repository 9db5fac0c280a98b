//! The inbound side: connections on their way to the application, handed to
//! `app_address` on the original destination's port (or on `app_port` when set). HTTP/1
//! goes through the request path with the client's address in `X-Forwarded-For`; opaque
//! TCP is relayed. A connection made straight to the inbound listener (not redirected)
//! goes to `app_port` when one is set, and is refused otherwise (there is no port to use).

use super::{Decision, Side};
use crate::transport::original_dst::Destination;
use std::net::SocketAddr;

/// Where an inbound connection goes.
pub fn decide(side: &Side, destination: Destination) -> Decision {
    match (destination, side.app_port) {
        (Destination::Original(to), port) => {
            Decision::Application(SocketAddr::new(side.app_address, port.unwrap_or(to.port())))
        }
        (Destination::Listener(_), Some(port)) => {
            Decision::Application(SocketAddr::new(side.app_address, port))
        }
        (Destination::Listener(to), None) => Decision::Refuse(to),
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
}
