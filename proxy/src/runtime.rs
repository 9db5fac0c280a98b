//! Starting the data plane: one thread per core, each pinned to a CPU, each running its own
//! monoio runtime (io_uring, or the epoll "legacy" driver) with its own `SO_REUSEPORT`
//! listeners: the explicit `[proxy] listen` and, when configured, the sidecar's inbound and
//! outbound sides. A core's only link to the outside is its control channel, which its tick
//! task drains at a loop boundary.
//!
//! Each listener (the explicit one when configured, each address of each side) has its own
//! accept task on every core.
//!
//! Stopping, in order: on [`Control::Shutdown`] (SIGTERM) the explicit and inbound
//! listeners close and their connections drain, while the outbound listener keeps
//! accepting for the whole grace period (the application's own shutdown still makes
//! calls), unless [`Control::StopOutbound`] (admin `/shutdown`, or `proxy.shutdown =
//! "drain"`, which sends it with the shutdown) ends it sooner; then the core waits for
//! what is left within the grace period and exits as soon as nothing is left.

use crate::core::{Core, CoreParams};
use crate::http1::server::serve;
use crate::sidecar::{serve_side, Direction, Side};
use crate::signal::Signal;
use coremesh_discovery::{Driver, Snapshot};
use crossbeam_channel::{Receiver, TryRecvError};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a core looks at its control channel and sweeps its pools.
pub const TICK: Duration = Duration::from_millis(100);
/// io_uring submission queue size per core.
const URING_ENTRIES: u32 = 1024;
/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// Messages from the control thread to a core.
pub enum Control {
    Install(Arc<Snapshot>, Arc<coremesh_telemetry::MetricsLayout>),
    Shutdown,
    /// Stop the outbound side too (it otherwise keeps accepting for the grace period).
    StopOutbound,
    /// Send a report of this core's state to the admin server.
    Report(crossbeam_channel::Sender<crate::report::CoreReport>),
}

/// The driver to try first: io_uring only where the kernel offers it.
pub fn resolve_driver(wanted: Driver) -> Driver {
    match wanted {
        Driver::Uring if monoio::utils::detect_uring() => Driver::Uring,
        Driver::Uring => {
            tracing::warn!("io_uring is not available here; using the legacy (epoll) driver");
            Driver::Legacy
        }
        Driver::Legacy => Driver::Legacy,
    }
}

/// Bind `count` listeners to one address with `SO_REUSEPORT`; port 0 picks one port for all.
/// An IPv6 address is bound `IPV6_V6ONLY`: IPv4 has listeners of its own, so `[::]:P` and
/// `0.0.0.0:P` are two listeners and every IPv6 connection has a real IPv6 address (its
/// original destination is read with `IP6T_SO_ORIGINAL_DST`).
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Whether a bind failed because the host has no such address family or address: no
/// IPv6 at all (`EAFNOSUPPORT`), or IPv6 off for loopback (`EADDRNOTAVAIL`).
pub fn family_missing(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL) | Some(libc::EPROTONOSUPPORT)
    )
}

/// Run `make()`'s future to completion on a runtime of `driver`; falls back to the legacy
/// driver when an io_uring runtime cannot be built (locked-memory limits, seccomp).
pub fn run_on_driver<F, Fut>(
    driver: Driver,
    make: F,
    on_start: impl FnOnce(Driver),
) -> io::Result<Fut::Output>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    if driver == Driver::Uring {
        // First with the task-run flags (fewer interrupts per completion: measured
        // 14 µs instead of 20 µs of CPU per proxied request, see docs/architecture.md),
        // then plain io_uring for kernels older than 6.0, then the legacy driver.
        for tuned in [true, false] {
            let mut urb = io_uring::IoUring::builder();
            if tuned {
                urb.setup_coop_taskrun().setup_single_issuer();
            }
            match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(URING_ENTRIES)
                .uring_builder(urb)
                .enable_timer()
                .build()
            {
                Ok(mut rt) => {
                    on_start(Driver::Uring);
                    return Ok(rt.block_on(make()));
                }
                Err(e) if tuned => {
                    tracing::debug!("io_uring with COOP_TASKRUN/SINGLE_ISSUER unavailable ({e})")
                }
                Err(e) => {
                    tracing::warn!(
                        "io_uring runtime failed to start ({e}); using the legacy driver"
                    )
                }
            }
        }
    }
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    on_start(Driver::Legacy);
    Ok(rt.block_on(make()))
}

/// Everything a core needs to start.
pub struct CoreStart {
    /// This core's explicit listener, when there is one.
    pub listener: Option<std::net::TcpListener>,
    /// This core's listener of each sidecar side.
    pub sides: Vec<(std::net::TcpListener, Arc<Side>)>,
    pub control: Receiver<Control>,
    pub params: CoreParams,
    /// This core's place among the cores that hand HTTP/2 streams to each other (none with
    /// one core).
    pub spread: Option<crate::http2::spread::Member>,
}

/// A core's event loop: accept until shutdown, then wait for connections to finish or the
/// grace period to end (see the module doc for the order).
pub async fn core_main(start: CoreStart) {
    let CoreStart {
        listener,
        sides,
        control,
        params,
        spread,
    } = start;
    let id = params.id;
    let grace = params.grace;
    let core = Core::new(params);
    let inbox = spread.and_then(|member| {
        let inbox = member.take_inbox();
        let _ = core.spread.set(member);
        inbox
    });
    let listener = match listener.map(monoio::net::TcpListener::from_std).transpose() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(core = id, "cannot use listener: {e}");
            return;
        }
    };
    let outbound_stop = Rc::new(Signal::default());
    let mut has_outbound = false;
    // Every task holding the core is awaited before returning: a task left pending when
    // the runtime ends would keep the core (and the exporter's sender) alive.
    let mut side_tasks = Vec::new();
    for (listener, side) in sides {
        let listener = match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    core = id,
                    "cannot use {} listener: {e}",
                    side.direction.label()
                );
                return;
            }
        };
        let stop = match side.direction {
            Direction::Outbound => {
                has_outbound = true;
                StopOn::Outbound(outbound_stop.clone())
            }
            _ => StopOn::Shutdown,
        };
        let core = core.clone();
        side_tasks.push(monoio::spawn(async move {
            let stop_signal = match &stop {
                StopOn::Outbound(signal) => signal.as_ref(),
                StopOn::Shutdown => &core.shutdown,
            };
            accept_loop(&core, &listener, stop_signal, Some(&side)).await;
        }));
    }
    if let Some(listener) = listener {
        let core = core.clone();
        side_tasks.push(monoio::spawn(async move {
            accept_loop(&core, &listener, &core.shutdown, None).await;
        }));
    }
    if let Some(inbox) = inbox {
        side_tasks.push(monoio::spawn(crate::http2::server::serve_inbox(
            core.clone(),
            inbox,
        )));
    }
    let done = Rc::new(Signal::default());
    let idle_task = monoio::spawn({
        let (core, done) = (core.clone(), done.clone());
        async move { crate::transport::idle_timer::drive(&core.idle, &done).await }
    });
    let tick_task = monoio::spawn(tick(
        core.clone(),
        control,
        outbound_stop.clone(),
        done.clone(),
    ));
    core.shutdown.wait().await;
    let waited = Instant::now();
    let deadline = waited + grace;
    if has_outbound {
        monoio::select! {
            _ = outbound_stop.wait() => {},
            _ = monoio::time::sleep(grace) => outbound_stop.fire(),
        }
        // `drained` may have fired while outbound still took connections: poll the count.
        while core.busy() > 0 && Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            monoio::time::sleep(left.min(TICK)).await;
        }
    } else {
        monoio::select! {
            _ = core.drained.wait() => {},
            _ = monoio::time::sleep(grace) => {},
        }
    }
    if core.busy() > 0 {
        tracing::warn!(
            core = id,
            open = core.connections(),
            handed_in_streams = core.busy() - core.connections(),
            "grace period over; closing the rest"
        );
    }
    outbound_stop.fire();
    done.fire();
    for task in side_tasks {
        task.await;
    }
    tick_task.await;
    idle_task.await;
    crate::http2::upstream::close_all(&core).await;
    tracing::debug!(
        core = id,
        "core stopped after {:?} of draining",
        waited.elapsed()
    );
}

/// Which signal ends a listener's accept loop.
enum StopOn {
    /// The core's shutdown (SIGTERM): the explicit and inbound listeners.
    Shutdown,
    /// The outbound side's own stop.
    Outbound(Rc<Signal>),
}

/// Accept on `listener` until `stop` fires, admitting connections up to the core's limit
/// and serving each here or on a less busy core (`[proxy] spread_connections`). `side` is
/// the sidecar side the listener belongs to (`None`: the explicit listener).
async fn accept_loop(
    core: &Rc<Core>,
    listener: &monoio::net::TcpListener,
    stop: &Signal,
    side: Option<&Arc<Side>>,
) {
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    core.stats.accepted.set(core.stats.accepted.get() + 1);
                    // A less busy core takes it (and admits it against its own limit).
                    if let Some(stream) = move_connection(core, stream, peer, side) {
                        admit_and_serve(core, stream, peer, side.cloned());
                    }
                }
                Err(e) => {
                    tracing::warn!(core = core.id, "accept failed: {e}");
                    monoio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            _ = stop.wait() => break,
        }
    }
}

/// Send a connection just accepted here to a less busy core when `[proxy]
/// spread_connections` says so (see [`crate::http2::spread`]); give it back when it stays
/// here. `None`: it was sent (or, should its socket not survive the way back from a core
/// that is shutting down, closed).
fn move_connection(
    core: &Rc<Core>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    side: Option<&Arc<Side>>,
) -> Option<monoio::net::TcpStream> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let Some(member) = core.spread.get() else {
        return Some(stream);
    };
    let Some(to) = member.target(core.spread_connections.as_streams(), 0) else {
        return Some(stream);
    };
    // A socket just accepted has no other handle: this takes it off this core's driver
    // (the epoll driver deregisters it) and keeps the descriptor open.
    let fd = stream.into_raw_fd();
    // SAFETY: `fd` was just released by the stream that owned it; nothing else holds it.
    let socket = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let moved = crate::http2::spread::MovedConnection {
        stream: socket,
        peer,
        side: side.cloned(),
    };
    match member.send_connection(to, moved) {
        Ok(()) => {
            let stats = &core.stats;
            stats
                .connections_handed_off
                .set(stats.connections_handed_off.get() + 1);
            None
        }
        Err(back) => match monoio::net::TcpStream::from_std(back.stream) {
            Ok(stream) => Some(stream),
            Err(e) => {
                tracing::warn!(core = core.id, "cannot serve a connection kept back: {e}");
                None
            }
        },
    }
}

/// Serve a connection another core accepted and sent here, as if this core's listener had
/// taken it.
pub fn take_in_connection(core: &Rc<Core>, moved: crate::http2::spread::MovedConnection) {
    let crate::http2::spread::MovedConnection { stream, peer, side } = moved;
    match monoio::net::TcpStream::from_std(stream) {
        Ok(stream) => admit_and_serve(core, stream, peer, side),
        Err(e) => tracing::warn!(core = core.id, "cannot serve a connection handed in: {e}"),
    }
}

/// Admit a connection up to the core's limit (closed and counted as rejected beyond it) and
/// serve it: on its sidecar side, or as the explicit listener's.
fn admit_and_serve(
    core: &Rc<Core>,
    stream: monoio::net::TcpStream,
    peer: SocketAddr,
    side: Option<Arc<Side>>,
) {
    if core.connections() >= core.defaults.max_connections {
        let stats = &core.stats;
        stats
            .rejected_connections
            .set(stats.rejected_connections.get() + 1);
        return;
    }
    // Counted now, not when the task first runs: a burst of accepts must see the
    // connections admitted before it.
    let counted = core.connection_guard();
    match side {
        Some(side) => {
            monoio::spawn(serve_side(core.clone(), side, stream, peer, counted));
        }
        None => {
            monoio::spawn(serve(core.clone(), stream, peer, counted));
        }
    }
}

/// The core's periodic work: apply control messages, sweep idle upstream connections.
async fn tick(
    core: Rc<Core>,
    control: Receiver<Control>,
    outbound_stop: Rc<Signal>,
    done: Rc<Signal>,
) {
    loop {
        if done.is_fired() {
            return;
        }
        loop {
            match control.try_recv() {
                Ok(Control::Install(snapshot, layout)) => core.install(snapshot, layout),
                Ok(Control::Report(reply)) => {
                    let _ = reply.send(core.report(Instant::now()));
                }
                // Still listening afterwards: `StopOutbound` may follow.
                Ok(Control::Shutdown) => core.begin_shutdown(),
                Ok(Control::StopOutbound) => outbound_stop.fire(),
                Err(TryRecvError::Disconnected) => {
                    core.begin_shutdown();
                    outbound_stop.fire();
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        core.gossip_tick(now);
        let idle = Duration::from_millis(core.defaults.pool_idle_timeout_ms);
        let linger = Duration::from_millis(core.defaults.pool_read_linger_ms);
        core.pool.borrow_mut().sweep(now, idle, linger);
        monoio::select! {
            _ = monoio::time::sleep(TICK) => {},
            _ = done.wait() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_family_is_told_apart_from_a_busy_address() {
        let errno = io::Error::from_raw_os_error;
        assert!(family_missing(&errno(libc::EAFNOSUPPORT)));
        assert!(family_missing(&errno(libc::EADDRNOTAVAIL)));
        assert!(!family_missing(&errno(libc::EADDRINUSE)));
        assert!(!family_missing(&errno(libc::EACCES)));
    }
}
