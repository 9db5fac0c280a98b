//! coremesh: a thread-per-core service-mesh sidecar proxy.
//!
//! [`start`] runs the proxy in this process (what `coremesh run`, `coremesh proxy`, the demo
//! and the end-to-end tests use) and returns a [`ProxyHandle`] to stop it.

pub mod body;
pub mod codec;
pub mod conn;
pub mod core;
pub mod demo;
pub mod error;
pub mod forward;
pub mod pool;
pub mod rewrite;
pub mod runtime;
pub mod server;
pub mod signal;
pub mod tunnel;

use coremesh_discovery::{Config, Driver, Snapshot};
use crossbeam_channel::Sender;
use runtime::{Control, CoreStart};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy: its cores and their control channels.
pub struct ProxyHandle {
    listen_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    driver: Driver,
    cores: usize,
    controls: Vec<Sender<Control>>,
    threads: Vec<JoinHandle<()>>,
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
    /// Number of data-plane cores.
    pub fn cores(&self) -> usize {
        self.cores
    }
    /// Send every core a new snapshot of routes and endpoints.
    pub fn install(&self, snapshot: Arc<Snapshot>) {
        for c in &self.controls {
            let _ = c.send(Control::Install(snapshot.clone()));
        }
    }
    /// Graceful stop, as on SIGTERM: stop accepting, let in-flight requests finish within the
    /// grace period, then return once every core has exited.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for c in &self.controls {
            let _ = c.send(Control::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Start the proxy described by `config` (already validated) in this process.
pub fn start(config: Config) -> anyhow::Result<ProxyHandle> {
    let snapshot = Arc::new(Snapshot::build(&config));
    let cores = match config.proxy.cores {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let wanted = runtime::resolve_driver(config.proxy.driver);
    let listeners = runtime::bind_listeners(config.proxy.listen, cores)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.proxy.listen))?;
    let listen_addr = listeners
        .first()
        .map(|l| l.local_addr())
        .transpose()?
        .unwrap_or(config.proxy.listen);
    let cpu_ids = if config.proxy.pin_cores {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let grace = Duration::from_millis(config.proxy.shutdown_grace_ms);
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded::<Result<Driver, String>>();
    let mut gossip_ports = coremesh_balancer::GossipMesh::new(cores).into_iter();
    let mut controls = Vec::with_capacity(cores);
    let mut threads = Vec::with_capacity(cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        controls.push(tx);
        let cpu = (!cpu_ids.is_empty()).then(|| cpu_ids[id % cpu_ids.len()]);
        let start = CoreStart {
            id,
            listener,
            control: rx,
            defaults: config.defaults.clone(),
            grace,
            snapshot: snapshot.clone(),
            seed: rand::random::<u64>() ^ id as u64,
            gossip: gossip_ports.next(),
        };
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("coremesh-core-{id}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    if !core_affinity::set_for_current(cpu) {
                        tracing::warn!(core = id, "could not pin to CPU {}", cpu.id);
                    }
                }
                let ready_ok = ready.clone();
                let result = runtime::run_on_driver(
                    wanted,
                    |driver| runtime::core_main(start, driver),
                    move |driver| {
                        let _ = ready_ok.send(Ok(driver));
                    },
                );
                if let Err(e) = result {
                    let _ = ready.send(Err(format!("core {id}: cannot start a runtime: {e}")));
                }
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut driver = wanted;
    let mut handle = ProxyHandle {
        listen_addr,
        admin_addr: None,
        driver,
        cores,
        controls,
        threads,
    };
    for _ in 0..cores {
        match ready_rx.recv() {
            Ok(Ok(d)) => driver = d,
            Ok(Err(e)) => {
                handle.stop();
                anyhow::bail!(e);
            }
            Err(_) => {
                handle.stop();
                anyhow::bail!("a core exited during start-up");
            }
        }
    }
    handle.driver = driver;
    tracing::info!(
        "coremesh listening on {listen_addr} with {cores} core(s), driver {}",
        driver_name(driver)
    );
    Ok(handle)
}

pub fn driver_name(driver: Driver) -> &'static str {
    match driver {
        Driver::Uring => "io_uring",
        Driver::Legacy => "legacy (epoll)",
    }
}
