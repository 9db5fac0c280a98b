//! The messages the DNS and Kubernetes source tasks send the controller.

use crate::targets::{DnsTarget, KubernetesTarget};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// What one source task learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUpdate {
    /// The target's endpoints now (possibly none: the name or Service has no addresses).
    Endpoints(Vec<SocketAddr>),
    /// The source failed; the endpoints of its last good answer stay in use.
    Failed(String),
    /// Kubernetes only: the destinations the target's Service claims on the outbound side
    /// (its ClusterIPs on the entry's Service port; none for a headless Service). Sent
    /// before the endpoints, whenever they change.
    Addresses(Vec<SocketAddr>),
    /// Kubernetes only: the endpoints whose pods are meshed (their sidecar terminates
    /// mutual TLS), each with the SPIFFE ID its pod must prove; the others are plaintext.
    /// Sent whenever it changes: with what was gained or changed before the endpoints, and
    /// without what was lost after them.
    Identities(BTreeMap<SocketAddr, String>),
}

/// A [`SourceUpdate`] and the target it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    Dns(DnsTarget, SourceUpdate),
    Kubernetes(KubernetesTarget, SourceUpdate),
}
