//! coremesh-discovery: the configuration model (listeners, services, endpoints, routes,
//! defaults and per-service overrides), its parsing and validation, and the immutable
//! snapshots the control thread hands to each core.
#![forbid(unsafe_code)]

pub mod model;

pub use model::*;
