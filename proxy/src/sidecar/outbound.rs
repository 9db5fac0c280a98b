//! The outbound side: the application's own connections. A destination a service claims
//! (its `addresses`) is balanced over that service's endpoints, HTTP/1 per request through
//! the request path, opaque TCP per connection with connect failures retried on another
//! endpoint ([`crate::transport::opaque::connect`]); any other destination is passed through to the original address; the proxy's
//! own listener is refused.

use super::Decision;
use crate::transport::original_dst::Destination;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::time::Duration;

/// Where an outbound connection goes.
pub fn decide(destination: Destination) -> Decision {
    match destination {
        Destination::Listener(to) => Decision::Refuse(to),
        Destination::Original(to) => Decision::Destination(to),
    }
}

/// Connect to `to` itself (passthrough, or the application on the inbound side) within
/// `connect_timeout_ms` (`[outbound.passthrough]`'s, or `[defaults]`' for the application).
pub async fn connect_direct(to: SocketAddr, connect_timeout_ms: u64) -> Option<TcpStream> {
    let limit = Duration::from_millis(connect_timeout_ms);
    let connected = connect(to, limit).await;
    if connected.is_none() {
        tracing::debug!(%to, "connect failed");
    }
    connected
}

async fn connect(to: SocketAddr, limit: Duration) -> Option<TcpStream> {
    match monoio::time::timeout(limit, TcpStream::connect(to)).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Some(stream)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxys_own_listener_is_refused_anything_else_goes_on() {
        let own: SocketAddr = ([127, 0, 0, 1], 4140).into();
        let other: SocketAddr = ([10, 96, 0, 10], 80).into();
        assert_eq!(decide(Destination::Listener(own)), Decision::Refuse(own));
        assert_eq!(
            decide(Destination::Original(other)),
            Decision::Destination(other)
        );
    }
}
