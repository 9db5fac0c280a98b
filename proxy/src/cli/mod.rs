//! Subcommands of the `coremesh` program that are not the proxy itself.

pub mod iptables;
