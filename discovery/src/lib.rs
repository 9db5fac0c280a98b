//! coremesh-discovery: the configuration model (listeners, services, endpoints, routes,
//! defaults and per-service overrides), its parsing and validation, and the immutable
//! snapshots the control thread hands to each core.
//!
//! How a configuration reaches a core: [`load_config`] / [`parse_config`] read and check
//! the file (every error with its line and field), [`Snapshot::build`] compiles it, and
//! each core matches requests against its snapshot with [`Snapshot::select_route`] and
//! [`CompiledRoute::pick_service`].
//!
//! How a configuration stays live: [`Discovery::start`] runs the controller on its own
//! control thread: it watches the file, resolves services' `dns` entries and watches their
//! `kubernetes` Services, merges the endpoints into the configuration and hands each new
//! snapshot to the proxy (see [`controller`]). The Kubernetes source needs the cargo
//! feature `kubernetes` (on by default).
#![forbid(unsafe_code)]

pub mod controller;
pub mod diff;
pub mod discovery_settings;
pub mod dns_source;
#[cfg(feature = "kubernetes")]
pub mod endpoint_slices;
pub mod error;
pub mod field_path;
pub mod file_watch;
pub mod host;
pub mod http2;
pub mod identity;
#[cfg(feature = "kubernetes")]
pub mod kubernetes_source;
pub mod listen;
mod locate;
pub mod merge;
#[cfg(feature = "kubernetes")]
pub mod meshed_pods;
pub mod model;
mod one_or_many;
pub mod parse;
pub mod passthrough;
pub mod quick;
pub mod route;
pub mod snapshot;
pub mod source_event;
pub mod spiffe_id;
pub mod status;
pub mod status_ranges;
pub mod targets;
pub mod validate;
mod validate_sources;

#[cfg(test)]
mod example_files;

pub use controller::{Discovery, DiscoveryError, DiscoveryHandle};
pub use diff::{snapshot_diff, SnapshotDiff};
pub use discovery_settings::{DiscoverySettings, DnsSettings, FileSettings, KubernetesSettings};
pub use error::{ConfigError, ConfigErrors};
pub use field_path::{FieldPath, Segment};
pub use host::HostMatch;
pub use http2::{GrpcRetryOn, Http2Settings, SpreadStreams, UpstreamProtocol};
pub use identity::{
    CompiledInboundPolicy, EffectivePolicy, IdentitySettings, InboundPolicy, InboundRoute,
    ServiceTls,
};
pub use listen::{Listen, ListenError, PairHost};
pub use model::*;
pub use parse::{load_config, parse_config};
pub use passthrough::{Passthrough, PassthroughSettings};
pub use quick::QUICK_SERVICE_NAME;
pub use route::{CompiledRoute, HeaderCondition, HeaderValueMatch, PathMatch};
pub use snapshot::{ServiceSnapshot, Snapshot};
pub use spiffe_id::{IdPattern, SpiffeId};
pub use status::{DiscoveryStats, ReloadOutcome, SourceKind, SourceState, SourceStatus};
pub use targets::{DnsTarget, EndpointEntry, KubernetesTarget, ServicePort};
pub use validate::{validate, Violation};
