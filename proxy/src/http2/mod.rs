//! HTTP/2 on both sides of the proxy, on the `h2` crate: a client connection that opens
//! with the HTTP/2 preface on any listener ([`server`]) has each of its streams served as
//! a request of the pipeline ([`stream`]) and sent to endpoints on the core's multiplexed
//! HTTP/2 connections ([`upstream`]); bodies stream under flow control ([`body`]); gRPC
//! is a thin layer on top ([`grpc`]). [`io`] adapts a core's sockets to `h2`. A
//! connection's streams may be served by other cores ([`spread`]).

pub mod body;
pub mod frames;
pub mod grpc;
pub mod io;
pub mod open_streams;
pub mod server;
pub mod spread;
pub mod stream;
pub mod to_http1;
pub mod upstream;

use crate::core::Core;

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the first bytes of a connection say about HTTP/2 with prior knowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preface {
    /// They begin the preface: an HTTP/2 connection (the `h2` handshake checks the rest).
    Yes,
    /// Too few bytes to tell ("P" might still be `POST`).
    Maybe,
    No,
}

/// Whether `data` opens an HTTP/2 connection. "PRI" is enough: no HTTP/1 request uses
/// that method (RFC 9113 reserves it for the preface).
pub fn preface(data: &[u8]) -> Preface {
    let n = data.len().min(PREFACE.len());
    if data[..n] != PREFACE[..n] {
        Preface::No
    } else if n >= 3 {
        Preface::Yes
    } else {
        Preface::Maybe
    }
}

/// Log an HTTP/2 error that ended a client connection. What the proxy answered it with is
/// counted as the frame goes out ([`io::Watch`]).
pub fn log_error(e: &h2::Error) {
    tracing::debug!(reason = ?e.reason(), "HTTP/2 connection error: {e}");
}

/// Count an RST_STREAM or GOAWAY the proxy sent a client (`coremesh_http2_errors_total`);
/// a GOAWAY without error (a graceful close) is not one.
pub fn record_sent_error(core: &Core, code: u32) {
    if code != u32::from(h2::Reason::NO_ERROR) {
        core.metrics.borrow().record_http2_error(code);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_told_from_http1() {
        assert_eq!(preface(PREFACE), Preface::Yes);
        assert_eq!(preface(b"PRI * HT"), Preface::Yes);
        assert_eq!(preface(b"PR"), Preface::Maybe);
        assert_eq!(preface(b""), Preface::Maybe);
        assert_eq!(preface(b"POST / HTTP/1.1\r\n"), Preface::No);
        assert_eq!(preface(b"PRX"), Preface::No);
        assert_eq!(preface(b"GET / HTTP/1.1\r\n"), Preface::No);
    }
}
