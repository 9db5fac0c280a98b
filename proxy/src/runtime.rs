//! Starting the data plane: one thread per core, each pinned to a CPU, each running its own
//! monoio runtime (io_uring, or the epoll "legacy" driver) with its own `SO_REUSEPORT`
//! listener. A core's only link to the outside is its control channel, which its tick task
//! drains at a loop boundary.

use crate::core::{Core, CoreParams};
use crate::server::serve;
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
pub fn bind_listeners(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
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
    pub listener: std::net::TcpListener,
    pub control: Receiver<Control>,
    pub params: CoreParams,
}

/// A core's event loop: accept until shutdown, then wait for connections to finish or the
/// grace period to end.
pub async fn core_main(start: CoreStart) {
    let CoreStart {
        listener,
        control,
        params,
    } = start;
    let id = params.id;
    let grace = params.grace;
    let max_connections = params.defaults.max_connections;
    let core = Core::new(params);
    let listener = match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(core = id, "cannot use listener: {e}");
            return;
        }
    };
    monoio::spawn(tick(core.clone(), control));
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    core.stats.accepted.set(core.stats.accepted.get() + 1);
                    if core.connections() >= max_connections {
                        core.stats.rejected_connections.set(core.stats.rejected_connections.get() + 1);
                        drop(stream);
                        continue;
                    }
                    // Counted now, not when the task first runs: a burst of accepts
                    // must see the connections admitted before it.
                    let counted = core.connection_guard();
                    monoio::spawn(serve(core.clone(), stream, peer, counted));
                }
                Err(e) => {
                    tracing::warn!(core = id, "accept failed: {e}");
                    monoio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            _ = core.shutdown.wait() => break,
        }
    }
    drop(listener);
    let waited = Instant::now();
    monoio::select! {
        _ = core.drained.wait() => {},
        _ = monoio::time::sleep(grace) => {
            tracing::warn!(core = id, open = core.connections(), "grace period over; closing the rest");
        },
    }
    tracing::debug!(
        core = id,
        "core stopped after {:?} of draining",
        waited.elapsed()
    );
}

/// The core's periodic work: apply control messages, sweep idle upstream connections.
async fn tick(core: Rc<Core>, control: Receiver<Control>) {
    loop {
        loop {
            match control.try_recv() {
                Ok(Control::Install(snapshot, layout)) => core.install(snapshot, layout),
                Ok(Control::Report(reply)) => {
                    let _ = reply.send(core.report(Instant::now()));
                }
                Ok(Control::Shutdown) | Err(TryRecvError::Disconnected) => {
                    core.begin_shutdown();
                    return;
                }
                Err(TryRecvError::Empty) => break,
            }
        }
        let now = Instant::now();
        core.gossip_tick(now);
        let idle = Duration::from_millis(core.defaults.pool_idle_timeout_ms);
        core.pool.borrow_mut().sweep(now, idle);
        monoio::time::sleep(TICK).await;
    }
}
