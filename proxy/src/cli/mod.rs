//! Subcommands that prepare a host or a workload for the proxy rather than run it.

pub mod inject;
