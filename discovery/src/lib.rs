//! coremesh-discovery: the configuration model (listeners, services, endpoints, routes,
//! defaults and per-service overrides), its parsing and validation, and the immutable
//! snapshots the control thread hands to each core.
//!
//! How a configuration reaches a core: [`load_config`] / [`parse_config`] read and check
//! the file (every error with its line and field), [`Snapshot::build`] compiles it, and
//! each core matches requests against its snapshot with [`Snapshot::select_route`] and
//! [`CompiledRoute::pick_service`].
#![forbid(unsafe_code)]

pub mod error;
pub mod field_path;
pub mod host;
mod locate;
pub mod model;
pub mod parse;
pub mod quick;
pub mod route;
pub mod snapshot;
pub mod validate;

#[cfg(test)]
mod example_files;

pub use error::{ConfigError, ConfigErrors};
pub use field_path::{FieldPath, Segment};
pub use host::HostMatch;
pub use model::*;
pub use parse::{load_config, parse_config};
pub use quick::QUICK_SERVICE_NAME;
pub use route::{CompiledRoute, HeaderCondition, HeaderValueMatch, PathMatch};
pub use snapshot::{ServiceSnapshot, Snapshot};
pub use validate::{validate, Violation};
