//! Integration tests of the discovery sources against real servers on 127.0.0.1: the
//! configuration file rewritten under the controller, a DNS server whose records change,
//! and (feature `kubernetes`) an API server stand-in speaking the list/watch protocol; also
//! the Kubernetes manifests in `deploy/kubernetes/`.

#[path = "../support/mod.rs"]
mod support;

mod dns;
mod file_reload;
mod first_snapshot;
#[cfg(feature = "kubernetes")]
mod kubernetes;
#[cfg(feature = "kubernetes")]
mod kubernetes_api;
#[cfg(feature = "kubernetes")]
mod kubernetes_mesh;
#[cfg(feature = "kubernetes")]
mod manifests;
#[cfg(not(feature = "kubernetes"))]
mod without_kubernetes;
