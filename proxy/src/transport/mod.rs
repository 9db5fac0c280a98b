//! Connections below HTTP: where an intercepted connection was going ([`original_dst`]),
//! what protocol a connection speaks ([`detect`]), and relaying the ones the proxy does
//! not parse as opaque bytes ([`opaque`]); TLS on the sockets ([`tls`], [`tls_poll`],
//! [`tls_upstream`], and per core the endpoints meshed [`tls_meshed`]).

pub mod conn;
pub mod detect;
pub mod idle_timer;
pub mod opaque;
pub mod original_dst;
pub mod pool;
pub mod posted_read;
pub mod tls;
pub mod tls_meshed;
pub mod tls_poll;
pub mod tls_stats;
pub mod tls_upstream;
