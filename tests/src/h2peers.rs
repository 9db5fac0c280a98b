//! HTTP/2 peers of the HTTP/2 suites: the upstreams ([`crate::h2upstreams`]: nghttpd, a
//! recording Python `h2` server, an out-of-process HTTP/1 file server) and the clients
//! ([`crate::h2clients`]: curl, nghttp, the Python `h2` client, h2load), and the bodies
//! they exchange.
//!
//! Every helper takes a plain address, so each works against a direct target (nghttpd, the
//! harness's HTTP/1 [`Upstream`](crate::Upstream)) as well as through the proxy: the
//! suites' self-checks run the same helpers without the proxy.

use crate::data::pseudo_random_bytes;

pub use crate::h2clients::*;
pub use crate::h2upstreams::*;

/// The authority the suites' clients ask for; upstreams must see it (Host or `:authority`).
pub const AUTHORITY: &str = "svc.example";
/// Size of nghttpd's `/small` file.
pub const SMALL_BYTES: usize = 100;
/// Size of nghttpd's `/big` file and of the large request bodies: 16 times the default
/// stream window (65,535 bytes), so it cannot pass without WINDOW_UPDATEs.
pub const BIG_BYTES: usize = 1 << 20;

/// The bytes of nghttpd's `/small`.
pub fn small_body() -> Vec<u8> {
    pseudo_random_bytes(SMALL_BYTES, 11)
}
/// The bytes of nghttpd's `/big`, and the large request body of the POST tests.
pub fn big_body() -> Vec<u8> {
    pseudo_random_bytes(BIG_BYTES, 12)
}
