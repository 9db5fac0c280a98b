//! HTTP/1 passthrough on the outbound side: a request whose original destination no
//! service claims goes to that destination as the application wrote it. Its head is sent
//! byte for byte (no `X-Forwarded-For`, no deadline or trace header, hop-by-hop headers and
//! the version as received: the proxy parses the head only to find the request's framing,
//! which it reads the same way as the destination), its body is streamed, and it is sent
//! once, under the limits of `[outbound.passthrough]` rather than any service's
//! ([`coremesh_discovery::PassthroughSettings`]).
//!
//! A CONNECT (the application talking to an HTTP proxy) is passed on the same way; when
//! the destination answers 2xx, the connection becomes a tunnel both ways, bounded by the
//! side's opaque relay limits (`tcp_idle_timeout_ms`, `tcp_buffer_bytes`). Everywhere else
//! CONNECT is answered 501.

use crate::core::Core;
use crate::http1::codec::{RequestHead, ResponseHead};
use crate::http1::rewrite::response_head;
use crate::http1::server::Next;
use crate::pipeline::{Origin, Target};
use crate::transport::conn::Conn;
use std::time::Duration;

/// The destination of a connection whose requests are passed through: an outbound
/// connection whose original destination no service in `snapshot` claims.
pub fn unclaimed(
    snapshot: &coremesh_discovery::Snapshot,
    origin: Origin,
) -> Option<std::net::SocketAddr> {
    match origin.target {
        Target::Destination(to) if snapshot.service_for_destination(to).is_none() => Some(to),
        _ => None,
    }
}

/// The request head's limits on a connection from `origin`: (most bytes, read timeout),
/// passthrough's on a passed-through connection, else `[defaults]`'s.
pub fn head_limits(core: &Core, origin: Origin) -> (usize, Duration) {
    let (max, ms) = match origin.target {
        Target::Destination(_) => {
            let snapshot = core.snapshot();
            if unclaimed(&snapshot, origin).is_some() {
                let s = &snapshot.passthrough.settings;
                (s.max_header_bytes, s.header_read_timeout_ms)
            } else {
                let d = &core.defaults;
                (d.max_header_bytes, d.header_read_timeout_ms)
            }
        }
        _ => (
            core.defaults.max_header_bytes,
            core.defaults.header_read_timeout_ms,
        ),
    };
    (max, Duration::from_millis(ms))
}

/// The head passed on: the request head exactly as received.
pub fn request_head(buf: &[u8], head: &RequestHead, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&buf[..head.len]);
}

/// Whether `response` to a CONNECT opens a tunnel (RFC 9110 §9.3.6: any 2xx).
pub fn opens_tunnel(response: &ResponseHead) -> bool {
    (200..300).contains(&response.status)
}

/// Send the destination's 2xx answer to a CONNECT to the client: from here on the
/// connection is a tunnel ([`Next::Tunnel`]).
pub async fn accept_tunnel(
    client: &mut Conn,
    response: &ResponseHead,
    mut up: Conn,
    out: &mut Vec<u8>,
) -> Next {
    response_head(up.data(), response, false, false, false, false, out);
    up.consume(response.len);
    let bytes = std::mem::take(out);
    let (res, bytes) = client.write_vec(bytes).await;
    *out = bytes;
    match res {
        Ok(()) => Next::Tunnel(up),
        Err(_) => Next::Close,
    }
}

/// Relay a CONNECT tunnel both ways under the passthrough's tunnel limits, then count it.
pub async fn run_tunnel(core: &Core, client: Conn, upstream: Conn) {
    let (idle, buffer) = {
        let snapshot = core.snapshot();
        let p = &snapshot.passthrough;
        (
            Duration::from_millis(p.tunnel_idle_ms),
            p.tunnel_buffer_bytes,
        )
    };
    crate::http1::tunnel::run_and_record(core, client, upstream, idle, buffer).await;
}
