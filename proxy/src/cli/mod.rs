//! Subcommands of the `coremesh` program that are not the proxy itself: the rules that make
//! it a transparent sidecar, and the sidecar in Kubernetes manifests.

pub mod demo;
pub mod identity;
pub mod inject;
pub mod iptables;
pub mod top;
