//! coremesh: a thread-per-core service-mesh sidecar proxy.
//!
//! [`start`] runs the proxy in this process (what `coremesh run`, `coremesh proxy`, the demo
//! and the end-to-end tests use) and returns a [`ProxyHandle`] to stop it.

pub mod admin;
pub mod cli;
pub mod core;
pub mod error;
pub mod http1;
pub mod http2;
pub mod identity;
pub mod observe;
pub mod pipeline;
pub mod report;
pub mod runtime;
pub mod sidecar;
pub mod signal;
pub mod transport;

use admin::{AdminShared, LogLevel};
use coremesh_discovery::{Config, Driver, ShutdownMode, Snapshot};
use crossbeam_channel::{Receiver, Sender};
use runtime::{Control, CoreStart};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// A running proxy: its cores and their control channels.
pub struct ProxyHandle {
    listen_addr: Option<SocketAddr>,
    inbound_addrs: Vec<SocketAddr>,
    outbound_addrs: Vec<SocketAddr>,
    shutdown_mode: ShutdownMode,
    admin_addr: Option<SocketAddr>,
    driver: Driver,
    cores: usize,
    controls: Vec<Sender<Control>>,
    threads: Vec<JoinHandle<()>>,
    admin: Option<(Arc<AdminShared>, JoinHandle<()>)>,
    /// Exporter and access-log writer: they end when the cores' senders are gone, or
    /// when `side_stop` is dropped once the cores have stopped (a task a core left
    /// pending may still hold a sender).
    side_threads: Vec<JoinHandle<()>>,
    side_stop: Option<Sender<()>>,
    shutdown_requests: Receiver<()>,
    /// Kept so that `shutdown_requests` stays open when there is no admin server.
    _shutdown_sender: Sender<()>,
    layout_options: observe::LayoutOptions,
    /// Rotation of the workload identity (`[identity]`); dropping it stops the watching.
    _identity: Option<identity::Watcher>,
}

/// Sends new snapshots to every core; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Installer {
    controls: Vec<Sender<Control>>,
    layout_options: observe::LayoutOptions,
}

impl Installer {
    /// Build the snapshot's metrics layout once and send both to every core; each core
    /// switches at its next loop boundary.
    pub fn install(&self, snapshot: Arc<Snapshot>) {
        let layout = observe::build_layout_with(&snapshot, self.layout_options);
        for c in &self.controls {
            let _ = c.send(Control::Install(snapshot.clone(), layout.clone()));
        }
    }
}

/// Optional hooks for [`start_with`].
#[derive(Default)]
pub struct StartOptions {
    /// Lets the admin server read and change the log filter.
    pub log_level: Option<Arc<dyn LogLevel>>,
    /// Start with `/ready` false (set true later with [`ProxyHandle::set_ready`]).
    pub not_ready_yet: bool,
}

impl ProxyHandle {
    /// The explicit listener's address (the real port when the config asked for port 0),
    /// when there is one (see [`Config::explicit_listen`]).
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen_addr
    }
    /// The inbound side's first listener, when configured (the real port for port 0).
    pub fn inbound_addr(&self) -> Option<SocketAddr> {
        self.inbound_addrs.first().copied()
    }
    /// The outbound side's first listener, when configured (the real port for port 0).
    pub fn outbound_addr(&self) -> Option<SocketAddr> {
        self.outbound_addrs.first().copied()
    }
    /// Every address the inbound side listens on (IPv4 first, then IPv6 when bound).
    pub fn inbound_addrs(&self) -> &[SocketAddr] {
        &self.inbound_addrs
    }
    /// Every address the outbound side listens on (IPv4 first, then IPv6 when bound).
    pub fn outbound_addrs(&self) -> &[SocketAddr] {
        &self.outbound_addrs
    }
    /// A handle that ends the outbound side's grace period at once (admin `/shutdown`).
    pub fn outbound_stopper(&self) -> OutboundStopper {
        OutboundStopper {
            controls: self.controls.clone(),
        }
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
    /// Receives one message per shutdown asked for through the admin server.
    pub fn shutdown_requests(&self) -> &Receiver<()> {
        &self.shutdown_requests
    }
    /// The configuration the admin server shows as effective.
    pub fn set_effective_config(&self, config: &Config) {
        if let Some((shared, _)) = &self.admin {
            if let Ok(mut c) = shared.config.lock() {
                *c = config.clone();
            }
        }
    }
    /// Send every core a new snapshot of routes and endpoints (with its metrics layout).
    pub fn install(&self, snapshot: Arc<Snapshot>) {
        self.installer().install(snapshot);
    }
    /// A handle that installs snapshots from another thread (the discovery controller).
    pub fn installer(&self) -> Installer {
        Installer {
            controls: self.controls.clone(),
            layout_options: self.layout_options,
        }
    }
    /// Mark the proxy ready (admin `/ready`) once the first discovery round is done.
    pub fn set_ready(&self, ready: bool) {
        if let Some((shared, _)) = &self.admin {
            shared.ready.store(ready, Ordering::SeqCst);
        }
    }
    /// Extra metric families appended to every `/metrics` scrape (e.g. discovery's).
    pub fn set_extra_metrics(&self, render: admin::ExtraMetrics) {
        if let Some((shared, _)) = &self.admin {
            if let Ok(mut extra) = shared.extra_metrics.lock() {
                *extra = Some(render);
            }
        }
    }
    /// Graceful stop, as on SIGTERM: stop accepting, let in-flight requests finish within the
    /// grace period, then return once every core has exited. With `proxy.shutdown =
    /// "grace"` the outbound side, when configured, keeps accepting for the whole grace
    /// period unless [`OutboundStopper::stop`] is called; with `"drain"` it stops at once
    /// too, and this returns as soon as the connections in flight are done.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // The admin server keeps answering (`/shutdown`, `/metrics`) while the cores drain;
        // it only says not ready.
        if let Some((shared, _)) = &self.admin {
            shared.ready.store(false, Ordering::SeqCst);
        }
        if self.shutdown_mode == ShutdownMode::Drain {
            self.outbound_stopper().stop();
        }
        for c in &self.controls {
            let _ = c.send(Control::Shutdown);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some((shared, _)) = &self.admin {
            // Not by a connection to itself: the address may be unreachable from here
            // (an IPv6 wildcard on a host with IPv6 turned off).
            shared.stop_serving();
        }
        self.side_stop = None;
        for t in self.side_threads.drain(..) {
            let _ = t.join();
        }
        if let Some((_, thread)) = self.admin.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for ProxyHandle {
    /// Dropped without [`shutdown`](Self::shutdown): the outbound side stops at once too.
    fn drop(&mut self) {
        self.outbound_stopper().stop();
        self.stop();
    }
}

/// Ends the outbound side's grace period on every core; usable from any thread.
#[derive(Clone)]
pub struct OutboundStopper {
    controls: Vec<Sender<Control>>,
}

impl OutboundStopper {
    pub fn stop(&self) {
        for c in &self.controls {
            let _ = c.send(Control::StopOutbound);
        }
    }
}

/// One side's listeners: for each of its addresses that could be bound, `cores`
/// listeners (`SO_REUSEPORT`) and the address they share.
type BoundSide = (Vec<(Vec<std::net::TcpListener>, SocketAddr)>, sidecar::Side);

/// Bind each configured side's listeners, `cores` per address. An IPv6 address the side
/// has by default is skipped, with one info line, on a host without IPv6; any other
/// address that cannot be bound stops the start.
fn bind_sides(config: &Config, cores: usize) -> anyhow::Result<Vec<BoundSide>> {
    let mut sides = Vec::new();
    let wanted = [
        config
            .inbound
            .as_ref()
            .map(|i| (&i.side.listen, sidecar::Side::inbound(i))),
        config
            .outbound
            .as_ref()
            .map(|o| (&o.listen, sidecar::Side::outbound(o))),
    ];
    for (listen, side) in wanted.into_iter().flatten() {
        let name = side.direction.label();
        let mut bound = Vec::new();
        for &addr in listen.addrs() {
            let listeners = match runtime::bind_listeners(addr, cores) {
                Ok(listeners) => listeners,
                Err(e) if listen.may_skip(addr) && runtime::family_missing(&e) => {
                    tracing::info!(
                        "{name} side: no IPv6 on this host ({e}); not listening on {addr}"
                    );
                    continue;
                }
                Err(e) => anyhow::bail!("cannot listen for {name} on {addr}: {e}"),
            };
            let at = listeners
                .first()
                .map(|l| l.local_addr())
                .transpose()?
                .unwrap_or(addr);
            bound.push((listeners, at));
        }
        sides.push((bound, side));
    }
    Ok(sides)
}

/// Start the proxy described by `config` (already validated) in this process.
pub fn start(config: Config) -> anyhow::Result<ProxyHandle> {
    start_with(config, StartOptions::default())
}

/// [`start`] with hooks from the binary.
pub fn start_with(config: Config, options: StartOptions) -> anyhow::Result<ProxyHandle> {
    let snapshot = Arc::new(Snapshot::build(&config));
    let layout_options = observe::LayoutOptions::of(&config.telemetry);
    let layout = observe::build_layout_with(&snapshot, layout_options);
    let cores = match config.proxy.cores {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    let wanted = runtime::resolve_driver(config.proxy.driver);
    let (listeners, listen_addr): (Vec<Option<std::net::TcpListener>>, _) =
        match config.explicit_listen() {
            Some(addr) => {
                let listeners = runtime::bind_listeners(addr, cores)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
                let at = listeners
                    .first()
                    .map(|l| l.local_addr())
                    .transpose()?
                    .unwrap_or(addr);
                (listeners.into_iter().map(Some).collect(), Some(at))
            }
            None => ((0..cores).map(|_| None).collect(), None),
        };
    let bound_sides = bind_sides(&config, cores)?;
    // The workload identity, loaded once: the inbound side terminates TLS with it and
    // each core's meshed endpoints handshake with it.
    let (identity_configs, identity_watcher) = match &config.identity {
        Some(settings) => {
            let (configs, watcher) = identity::start(settings)
                .map_err(|e| anyhow::anyhow!("cannot load the [identity]: {e}"))?;
            (Some(Arc::new(configs)), Some(watcher))
        }
        None => (None, None),
    };
    let identity_metrics = identity_watcher.as_ref().map(|w| w.metrics().clone());
    let handshake_timeout = Duration::from_millis(config.identity.as_ref().map_or(
        coremesh_discovery::identity::DEFAULT_HANDSHAKE_TIMEOUT_MS,
        |i| i.handshake_timeout_ms,
    ));
    let side_addrs = |direction| -> Vec<SocketAddr> {
        bound_sides
            .iter()
            .filter(|(_, side)| side.direction == direction)
            .flat_map(|(bound, _)| bound.iter().map(|(_, addr)| *addr))
            .collect()
    };
    let inbound_addrs = side_addrs(sidecar::Direction::Inbound);
    let outbound_addrs = side_addrs(sidecar::Direction::Outbound);
    let cpu_ids = if config.proxy.pin_cores {
        core_affinity::get_core_ids().unwrap_or_default()
    } else {
        Vec::new()
    };
    let grace = Duration::from_millis(config.proxy.shutdown_grace_ms);
    let admin_listeners = match &config.proxy.admin {
        Some(listen) => admin::bind(listen)?,
        None => Vec::new(),
    };
    let admin_addrs: Vec<SocketAddr> = admin_listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    // Span export (when a collector is configured) and the access log run on their own
    // threads; cores only ever try_send to them.
    let span_queue = config.telemetry.exporter_config().map(|cfg| {
        (
            cfg,
            coremesh_telemetry::span_queue::SpanQueue::new(config.telemetry.span_queue_capacity),
        )
    });
    let span_stats = span_queue.as_ref().map(|(_, q)| q.stats());
    let (access_log, access_writer) = if config.telemetry.access_log {
        let (log, writer) = observe::access_log::AccessLog::new();
        (Some(log), Some(writer))
    } else {
        (None, None)
    };
    // Every address this proxy listens on: a side refuses connections bound for them.
    let mut own_listeners: Vec<SocketAddr> = inbound_addrs
        .iter()
        .chain(&outbound_addrs)
        .copied()
        .collect();
    own_listeners.extend(listen_addr);
    own_listeners.extend(&admin_addrs);
    // One entry per side and address: each core takes the next listener of every entry.
    let mut side_listeners: Vec<(
        std::vec::IntoIter<std::net::TcpListener>,
        Arc<sidecar::Side>,
    )> = Vec::new();
    let mut side_stats: Vec<(sidecar::Direction, Arc<sidecar::stats::SideStats>)> = Vec::new();
    // This proxy's outbound handshakes, counted by every core's meshed endpoints.
    let outbound_tls = Arc::new(transport::tls_stats::TlsStats::default());
    for (bound, mut side) in bound_sides {
        side.own_listeners = own_listeners.clone();
        if let (sidecar::Direction::Inbound, Some(configs)) = (side.direction, &identity_configs) {
            // Plaintext is refused at the connection only when no path lets it in (a
            // `[[inbound.routes]]` entry with `require_mtls = false`); otherwise each
            // request is decided by the policy for its path.
            let require = config.inbound.as_ref().is_some_and(|i| {
                i.policy.require_mtls
                    && !i
                        .policy
                        .routes
                        .iter()
                        .any(|r| r.require_mtls == Some(false))
            });
            let mut tls = sidecar::tls::InboundTls::new(configs.server_config(), require);
            tls.handshake_timeout = handshake_timeout;
            side.tls = Some(tls);
        }
        let side = Arc::new(side);
        side_stats.push((side.direction, side.stats.clone()));
        for (listeners, _) in bound {
            side_listeners.push((listeners.into_iter(), side.clone()));
        }
    }
    let (ready_tx, ready_rx) = crossbeam_channel::unbounded::<Result<Driver, String>>();
    let mut gossip_ports = coremesh_balancer::GossipMesh::new(cores).into_iter();
    // With more than one core, the streams of one HTTP/2 client connection may be served
    // by every core (`[http2] spread_streams`).
    let mut spread = if cores > 1 {
        http2::spread::mesh(cores)
    } else {
        Vec::new()
    }
    .into_iter();
    let mut controls = Vec::with_capacity(cores);
    let mut threads = Vec::with_capacity(cores);
    for (id, listener) in listeners.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::unbounded();
        controls.push(tx);
        let cpu = (!cpu_ids.is_empty()).then(|| cpu_ids[id % cpu_ids.len()]);
        let sides = side_listeners
            .iter_mut()
            .filter_map(|(listeners, side)| listeners.next().map(|l| (l, side.clone())))
            .collect();
        let start = CoreStart {
            listener,
            sides,
            control: rx,
            spread: spread.next(),
            params: core::CoreParams {
                id,
                tracer: span_queue
                    .as_ref()
                    .map(|(_, q)| observe::tracing_ctx::Tracer {
                        sender: q.sender(),
                        sampler: config.telemetry.sampler(),
                    }),
                access_log: access_log.clone(),
                defaults: config.defaults.clone(),
                grace,
                tunnel_idle: Duration::from_millis(config.proxy.tunnel_idle_timeout_ms),
                tunnel_buffer: config.proxy.tunnel_buffer_bytes,
                lingering_close: Duration::from_millis(config.proxy.lingering_close_ms),
                spread_connections: config.proxy.spread_connections,
                snapshot: snapshot.clone(),
                seed: rand::random::<u64>() ^ id as u64,
                gossip: gossip_ports.next(),
                layout: layout.clone(),
                meshed: transport::tls_meshed::MeshedEndpoints::new(
                    identity_configs.clone(),
                    handshake_timeout,
                    outbound_tls.clone(),
                ),
            },
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
                    || runtime::core_main(start),
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
    drop(access_log);
    let mut side_threads = Vec::new();
    let (side_stop, side_stopped) = crossbeam_channel::bounded::<()>(0);
    if let Some((cfg, queue)) = span_queue {
        let receiver = queue.into_receiver().stop_on(side_stopped.clone());
        let exporter = coremesh_telemetry::otlp::OtlpExporter::new(cfg, receiver);
        side_threads.push(
            std::thread::Builder::new()
                .name("coremesh-otlp".into())
                .spawn(move || exporter.run())?,
        );
    }
    if let Some(writer) = access_writer {
        side_threads.push(
            std::thread::Builder::new()
                .name("coremesh-access-log".into())
                .spawn(move || writer.run(std::io::stdout(), side_stopped))?,
        );
    }
    let mut driver = wanted;
    let (shutdown_tx, shutdown_rx) = crossbeam_channel::unbounded();
    let admin_addr = admin_addrs.first().copied();
    let mut handle = ProxyHandle {
        listen_addr,
        inbound_addrs: inbound_addrs.clone(),
        outbound_addrs: outbound_addrs.clone(),
        shutdown_mode: config.proxy.shutdown,
        admin_addr,
        driver,
        cores,
        controls,
        threads,
        admin: None,
        side_threads,
        side_stop: Some(side_stop),
        shutdown_requests: shutdown_rx,
        _shutdown_sender: shutdown_tx.clone(),
        layout_options,
        _identity: identity_watcher,
    };
    for _ in 0..cores {
        match ready_rx.recv() {
            // Any core that fell back to epoll makes the whole proxy report `legacy`.
            Ok(Ok(d)) if d == Driver::Legacy => driver = d,
            Ok(Ok(_)) => {}
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
    if !admin_listeners.is_empty() {
        let shared = Arc::new(AdminShared {
            config: std::sync::Mutex::new(config.clone()),
            controls: handle.controls.clone(),
            ready: std::sync::atomic::AtomicBool::new(!options.not_ready_yet),
            extra_metrics: std::sync::Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            stop_accepting: tokio::sync::Notify::new(),
            shutdown_requests: shutdown_tx,
            log_level: options.log_level,
            metrics: Box::new(move |reports| {
                let spans = span_stats.as_ref().map(|s| s.counts());
                let mut text = observe::metrics::render(
                    reports,
                    driver_label(driver),
                    spans.as_ref(),
                    identity_metrics.as_deref(),
                );
                let sides: Vec<_> = side_stats.iter().map(|(d, s)| (*d, s.as_ref())).collect();
                sidecar::stats::render(&sides, &outbound_tls, &mut text);
                if sides.is_empty() && identity_metrics.is_some() {
                    // A plain proxy with an identity reaches its `tls` services over mutual
                    // TLS: its outbound handshakes are shown without a sidecar side.
                    transport::tls_stats::render(&[("outbound", &outbound_tls)], &mut text);
                }
                text
            }),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("coremesh-admin".into())
            .spawn(move || admin::serve(admin_listeners, thread_shared))?;
        handle.admin = Some((shared, thread));
        // The first address first (tools read it), then any others.
        let urls: Vec<String> = admin_addrs.iter().map(|a| format!("http://{a}")).collect();
        tracing::info!("admin server on {}", urls.join(" and "));
    }
    // The explicit listener first (tools read the first address of this line), then
    // each side's addresses.
    let named = |addrs: &[SocketAddr], side: &str| {
        addrs
            .iter()
            .map(move |a| format!("{a} ({side})"))
            .collect::<Vec<_>>()
    };
    let all: Vec<String> = listen_addr
        .iter()
        .map(|a| a.to_string())
        .chain(named(&inbound_addrs, "inbound"))
        .chain(named(&outbound_addrs, "outbound"))
        .collect();
    tracing::info!(
        "coremesh listening on {} with {cores} core(s), driver {}",
        all.join(", "),
        driver_name(driver)
    );
    for addr in &inbound_addrs {
        tracing::info!("inbound side listening on {addr}");
    }
    for addr in &outbound_addrs {
        tracing::info!("outbound side listening on {addr}");
    }
    Ok(handle)
}

/// The driver as metrics label it: `uring` or `legacy`.
pub fn driver_label(driver: Driver) -> &'static str {
    match driver {
        Driver::Uring => "uring",
        Driver::Legacy => "legacy",
    }
}

pub fn driver_name(driver: Driver) -> &'static str {
    match driver {
        Driver::Uring => "io_uring",
        Driver::Legacy => "legacy (epoll)",
    }
}
