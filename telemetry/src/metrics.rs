//! Metric families recorded per core and merged when scraped.
//!
//! - [`LayoutBuilder`] / [`MetricsLayout`]: the label sets of one configuration, registered
//!   when a snapshot is installed, and the integer handles the hot path records with.
//! - [`CoreMetrics`]: one core's counters (single writer, no lock, no allocation on record).
//! - [`MetricsSnapshot`]: a core's counters as plain data; merged across cores on scrape.
//! - `callers`: inbound requests by the caller's verified identity (`client_id`), capped
//!   per core.
//! - [`labels`]: the fixed label values (status class, retry reason, endpoint state, error
//!   kind, denial reason, peer); [`LATENCY_BUCKETS`]: the latency histogram's bounds.

pub(crate) mod callers;
mod core;
pub mod grpc;
pub mod http2;
pub mod labels;
mod latency;
pub(crate) mod layout;
mod remap;
mod snapshot;
pub mod transport;

pub use self::core::{CoreMetrics, MAX_TRANSLATIONS};
pub use callers::{DEFAULT_MAX_CLIENT_IDS, OVERFLOW_CLIENT_ID};
pub use labels::{
    DeniedReason, Direction, EndpointState, ErrorKind, Peer, RetryReason, StatusClass,
};
pub use latency::LATENCY_BUCKETS;
pub use layout::{EndpointId, LayoutBuilder, MetricsLayout, RouteId, ServiceId};
pub use snapshot::{LatencyHistogram, MetricsSnapshot};
pub use transport::{DetectReason, Protocol, Side, Way};
