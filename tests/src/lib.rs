//! End-to-end test support: programmable upstreams and raw HTTP clients on 127.0.0.1.
//!
//! - [`upstream`]: a programmable HTTP/1.1 upstream (responses, delays, resets, hangs,
//!   WebSocket echo) that records what it received;
//! - [`scripted`]: an upstream that answers with exact bytes (several responses at once, bytes
//!   on an idle connection);
//! - [`client`]: a raw HTTP/1.1 client (exact bytes out, every framing in);
//! - [`proxy`]: start the proxy in-process, run a test once per I/O driver, build configs;
//! - [`nginx`]: Debian's nginx as a reference reverse proxy (differential tests);
//! - [`load`]: keep-alive load that tells a clean stop from a failed request (shutdown tests);
//! - [`data`]: reproducible bodies and checksums;
//! - [`ledger`]: upstreams sharing a ledger of every request id and its fate, killable;
//! - [`gated_load`]: numbered requests whose fault schedule is gated by request counts;
//! - [`reconcile`]: what those clients saw against that ledger, id by id;
//! - [`wire`]: the HTTP/1.1 reading both sides share;
//! - [`sockets`]: the kernel's view of TCP sockets, to wait for a FIN instead of sleeping;
//! - [`netns`]: network namespaces and veth pairs for the root-only suites (iptables, sidecar);
//! - [`h2tools`], [`h2peers`] ([`h2upstreams`], [`h2clients`]), [`h2mesh`], [`h2attack`],
//!   [`grpc_peers`]: the HTTP/2 and gRPC suites' external programs (curl, nghttp, nghttpd,
//!   h2load, Python `h2` and `grpcio`), their peers and clients, and proxies configured
//!   from TOML text.
#![forbid(unsafe_code)]

pub mod admin;
pub mod client;
pub mod data;
pub mod gated_load;
pub mod grpc_peers;
pub mod h2attack;
pub mod h2clients;
pub mod h2mesh;
pub mod h2peers;
pub mod h2tools;
pub mod h2upstreams;
pub mod ledger;
pub mod live;
pub mod load;
pub mod netns;
pub mod nginx;
pub mod otlp;
pub mod prometheus;
pub mod proxy;
pub mod reconcile;
pub mod restartable;
pub mod scripted;
pub mod sockets;
pub mod traffic;
pub mod upstream;
pub mod wire;

pub use client::{Client, RawResponse};
pub use coremesh_discovery::Driver;
pub use proxy::{for_each_driver, start_proxy, TestProxy};
pub use upstream::{Action, Framing, ReceivedRequest, Response, Upstream};
