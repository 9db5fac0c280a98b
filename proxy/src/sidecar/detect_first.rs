//! Deciding a side's connection protocol from its first bytes: HTTP/1 (served through the
//! request path) or opaque TCP (relayed). A destination port listed in `opaque_ports` is
//! opaque at once; otherwise one read waits at most `detect_timeout_ms`, and a client that
//! sends nothing by then is opaque (a server-speaks-first protocol). An HTTP/2 preface or a
//! TLS ClientHello is relayed as opaque TCP for now.
//!
//! Nothing is consumed: the bytes read stay in the connection's buffer and go first to
//! whichever path takes the connection.

use super::Side;
use crate::conn::{Conn, Fill};
use crate::core::Core;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Opaque,
    /// The client closed (or failed) before sending anything.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Matched,
    OpaquePort,
    Timeout,
    Closed,
    Unrecognised,
}

/// Longest HTTP method accepted as the start of an HTTP/1 request line.
const MAX_METHOD_LEN: usize = 20;

/// Read the first bytes of `client` (bound for `dst_port`) and decide its protocol.
pub async fn detect(
    core: &Core,
    client: &mut Conn,
    dst_port: u16,
    side: &Side,
) -> (Protocol, Reason) {
    if side.opaque_ports.contains(&dst_port) {
        return (Protocol::Opaque, Reason::OpaquePort);
    }
    // Wait for readability first, holding no buffer and risking no bytes on a timeout.
    match monoio::time::timeout(side.detect_timeout, client.stream.readable(false)).await {
        Err(_) => return (Protocol::Opaque, Reason::Timeout),
        Ok(Err(_)) => return (Protocol::Closed, Reason::Closed),
        Ok(Ok(())) => {}
    }
    if client.buf.capacity() == 0 {
        client.buf = core.buffer();
    }
    match client.fill(core.defaults.max_header_bytes).await {
        Ok(Fill::Read(_)) | Ok(Fill::Full) => classify(client.data()),
        Ok(Fill::Eof) | Err(_) => (Protocol::Closed, Reason::Closed),
    }
}

/// The protocol the first bytes `data` (at least one) begin.
pub fn classify(data: &[u8]) -> (Protocol, Reason) {
    const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
    if data.starts_with(H2_PREFACE) || H2_PREFACE.starts_with(data) {
        return (Protocol::Opaque, Reason::Unrecognised);
    }
    let method_len = data
        .iter()
        .take(MAX_METHOD_LEN + 1)
        .take_while(|b| b.is_ascii_uppercase() || **b == b'-' || **b == b'_')
        .count();
    let http = method_len > 0
        && match data.get(method_len) {
            Some(b' ') => method_len <= MAX_METHOD_LEN,
            // All a method so far: the rest of the request line is on its way.
            None => method_len <= MAX_METHOD_LEN,
            Some(_) => false,
        };
    if http {
        (Protocol::Http1, Reason::Matched)
    } else {
        (Protocol::Opaque, Reason::Unrecognised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_first_bytes() {
        let http = (Protocol::Http1, Reason::Matched);
        let opaque = (Protocol::Opaque, Reason::Unrecognised);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), http);
        assert_eq!(classify(b"POST"), http);
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1\r\n"), http);
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), opaque);
        assert_eq!(classify(b"PRI *"), opaque);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), opaque);
        assert_eq!(classify(b"get / HTTP/1.1\r\n"), opaque);
        assert_eq!(classify(b"*3\r\n$3\r\nSET\r\n"), opaque);
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU / HTTP/1.1"), opaque);
        assert_eq!(classify(b" GET /"), opaque);
    }
}
