//! coremesh: a thread-per-core service-mesh sidecar proxy.
//!
//! [`start`] runs the proxy in this process (what `coremesh run`, `coremesh proxy` and the
//! end-to-end tests use) and returns a [`ProxyHandle`] to stop it.

use coremesh_discovery::{Config, Driver};
use std::net::SocketAddr;

/// A running proxy: its cores, listener and control thread.
pub struct ProxyHandle {
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    driver: Driver,
}

impl ProxyHandle {
    /// The address the cores accept on (the real port when the config asked for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }
    /// The admin server's address, when enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }
    /// The I/O driver the cores run (after any fallback from io_uring).
    pub fn driver(&self) -> Driver {
        self.driver
    }
    /// Graceful stop, as on SIGTERM: stop accepting, let in-flight requests finish within the
    /// grace period, then return once every core has exited.
    pub fn shutdown(self) {}
}

/// Start the proxy described by `config` (already validated) in this process.
pub fn start(config: Config) -> anyhow::Result<ProxyHandle> {
    let _ = config;
    anyhow::bail!("not yet built")
}
