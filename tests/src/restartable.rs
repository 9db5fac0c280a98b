//! An endpoint that can die and come back on the same address: a TCP relay on 127.0.0.1 in
//! front of a real upstream (usually an [`Upstream`](crate::Upstream)), which a test stops
//! (listener closed, every relayed connection shut down — what the proxy sees when an
//! instance is killed) and starts again on the same port (`SO_REUSEADDR`, so the
//! `TIME_WAIT` connections the stop left behind do not block the new listener).
//!
//! The port stays the relay's while it is stopped: before the listener closes, a socket that
//! is bound to the same address but never listens takes over the port (both carry
//! `SO_REUSEPORT`, which lets them share it; the placeholder has no `SO_REUSEADDR`), and it is closed only after the next listener
//! is up. Connects meanwhile are refused, as by a dead instance, and no other socket can
//! take the port in between (an unrelated socket would need `SO_REUSEPORT` too and ask for
//! this very port; the kernel never hands out a bound port as an ephemeral one).
//!
//! The relay only copies bytes both ways, one connection to the target per accepted
//! connection, so every request that passes it reaches the target upstream, which keeps
//! counting and logging across restarts. Lifecycle: [`Restartable::start`] binds
//! 127.0.0.1:0; [`Restartable::stop`] and [`Restartable::restart`] alternate; drop stops it.

use socket2::{Domain, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long [`Restartable::restart`] keeps trying to bind the old port. The placeholder
/// holds the port while the relay is stopped, so the first bind succeeds; this only turns
/// an unexpected refusal into a clear failure rather than a hang.
const REBIND_PATIENCE: Duration = Duration::from_secs(10);
/// Pause between bind attempts.
const REBIND_PAUSE: Duration = Duration::from_millis(20);
/// Connect time-out towards the target (loopback: it answers at once or not at all).
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Lock, ignoring poisoning (a panicking relay thread must not hide state from the test).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State of one run of the relay (between a start and a stop).
struct Run {
    stopping: Arc<AtomicBool>,
    accept_thread: JoinHandle<()>,
    /// Both sockets of every relayed connection, to shut down on stop.
    live: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// A relay to `target` on a fixed 127.0.0.1 address that can be stopped and restarted.
pub struct Restartable {
    addr: SocketAddr,
    target: SocketAddr,
    run: Option<Run>,
    /// While stopped: the bound, never-listening socket that keeps the port.
    placeholder: Option<Socket>,
    /// Connections accepted over all runs.
    accepted: Arc<AtomicU64>,
}

impl Restartable {
    /// Start relaying to `target` on a new 127.0.0.1 port.
    pub fn start(target: SocketAddr) -> Restartable {
        let listener = bind_reusable("127.0.0.1:0".parse().expect("a literal address"))
            .expect("bind the restartable relay on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address of the relay");
        let mut relay = Restartable {
            addr,
            target,
            run: None,
            placeholder: None,
            accepted: Arc::new(AtomicU64::new(0)),
        };
        relay.run = Some(relay.spawn(listener));
        relay
    }

    /// The address the relay listens on, the same across restarts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is listening now.
    pub fn is_running(&self) -> bool {
        self.run.is_some()
    }

    /// Connections accepted over all runs.
    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Die: close the listener (new connects are refused; the port stays held by a socket
    /// that does not listen), then shut every relayed connection down both ways, and join
    /// every thread. Idempotent.
    pub fn stop(&mut self) {
        let Some(run) = self.run.take() else {
            return;
        };
        self.placeholder = Some(bind_placeholder(self.addr).unwrap_or_else(|e| {
            panic!(
                "could not hold the relay's port {} while it is stopped: {e}",
                self.addr
            )
        }));
        run.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept(); it sees `stopping` and returns, dropping the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5));
        let _ = run.accept_thread.join();
        for stream in lock(&run.live).iter() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = lock(&run.threads).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }

    /// Come back on the same address. Panics if the port cannot be bound again within
    /// [`REBIND_PATIENCE`].
    pub fn restart(&mut self) {
        assert!(self.run.is_none(), "restart() of a relay that is running");
        let started = Instant::now();
        let listener = loop {
            match bind_reusable(self.addr) {
                Ok(l) => break l,
                Err(_) if started.elapsed() < REBIND_PATIENCE => std::thread::sleep(REBIND_PAUSE),
                Err(e) => panic!(
                    "could not bind the relay again on {} within {REBIND_PATIENCE:?}: {e}",
                    self.addr
                ),
            }
        };
        self.run = Some(self.spawn(listener));
        // The new listener holds the port now.
        self.placeholder = None;
    }

    fn spawn(&self, listener: TcpListener) -> Run {
        let stopping = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let threads = Arc::new(Mutex::new(Vec::new()));
        let ctx = AcceptContext {
            target: self.target,
            stopping: stopping.clone(),
            live: live.clone(),
            threads: threads.clone(),
            accepted: self.accepted.clone(),
        };
        let accept_thread = std::thread::Builder::new()
            .name(format!("relay-{}-accept", self.addr.port()))
            .spawn(move || accept_loop(listener, ctx))
            .expect("spawn the relay accept thread");
        Run {
            stopping,
            accept_thread,
            live,
            threads,
        }
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A listener on `addr` with `SO_REUSEADDR` and `SO_REUSEPORT` set before bind.
pub fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    Ok(socket.into())
}

/// A socket bound to `addr` that never listens: it holds the port (connects are refused).
/// `SO_REUSEPORT` lets it share the port with the relay's listeners; no `SO_REUSEADDR`, for
/// with it any `SO_REUSEADDR` socket could bind the port beside it while nothing listens.
pub fn bind_placeholder(addr: SocketAddr) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

struct AcceptContext {
    target: SocketAddr,
    stopping: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<TcpStream>>>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<AtomicU64>,
}

fn accept_loop(listener: TcpListener, ctx: AcceptContext) {
    for stream in listener.incoming() {
        if ctx.stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(client) = stream else { continue };
        ctx.accepted.fetch_add(1, Ordering::SeqCst);
        let Ok(upstream) = TcpStream::connect_timeout(&ctx.target, TARGET_CONNECT_TIMEOUT) else {
            // The target is gone: the client sees its connection closed.
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(client_w), Ok(upstream_w), Ok(client_t), Ok(upstream_t)) = clones else {
            continue;
        };
        {
            let mut live = lock(&ctx.live);
            live.push(client_t);
            live.push(upstream_t);
        }
        let mut threads = lock(&ctx.threads);
        threads.retain(|t| !t.is_finished());
        for (from, to) in [(client, upstream_w), (upstream, client_w)] {
            if let Ok(t) = std::thread::Builder::new()
                .name("relay-copy".into())
                .spawn(move || copy_until_closed(from, to))
            {
                threads.push(t);
            }
        }
    }
}

/// Copy `from` to `to` until `from` ends (then half-close `to`) or either side fails (then
/// shut both down, so the opposite copy ends too).
fn copy_until_closed(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
