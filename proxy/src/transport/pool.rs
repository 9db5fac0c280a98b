//! Per-core, per-endpoint keep-alive pools of upstream connections. LIFO reuse (the most
//! recently used connection is the least likely to have been closed by the upstream), a cap
//! on idle connections per endpoint, an idle timeout, and a readiness watch on every idle
//! connection so a connection the upstream closed (or wrote to unasked) is never used.
//!
//! The watch, as nginx's keep-alive cache does it: on io_uring, at check-in the connection
//! is handed to a small future that waits for it to become readable (a `POLL_ADD`), and the
//! pool polls that future itself (no task, no wake-up). An idle connection has nothing to read, so readability means the
//! upstream closed it, reset it, or sent bytes nobody asked for. Checkout polls the watch
//! once: finished means the connection is retired, pending means it is quiet and the
//! future gives the stream back. So a checkout costs no syscall (the former liveness peek
//! did one per request); a close that the driver has not yet reported when a request is
//! sent is what the stale-connection retry in `forward.rs` is for, as before.
//!
//! On the legacy (epoll) driver the pool keeps the liveness peek at checkout: a watch there
//! needs a `poll` at check-in to tell a readiness left over from reading the response from
//! a new one, so it would trade one syscall for another.

use crate::transport::conn::{idle_conn_is_alive, Stream};
use std::cell::Cell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use coremesh_balancer::{AddrHasher, AddrMap};

/// An idle connection's watch: resolves to `None` once the connection became readable
/// (closed, reset or out of sync; the stream is dropped), or to `Some(stream)` when the
/// pool asks for it back while it is quiet.
type Watch = Pin<Box<dyn Future<Output = Option<Stream>>>>;

/// Watches `stream` for readability until `give_back` is set when it is polled.
fn watch(stream: Stream, give_back: Rc<Cell<bool>>) -> Watch {
    Box::pin(async move {
        let quiet = {
            // `relaxed = false`: on the legacy driver a readiness left over from the last
            // read of the response is checked with a `poll` before it counts.
            let mut readable = std::pin::pin!(stream.readable(false));
            std::future::poll_fn(|cx| match readable.as_mut().poll(cx) {
                Poll::Ready(_) => Poll::Ready(false),
                Poll::Pending if give_back.get() => Poll::Ready(true),
                Poll::Pending => Poll::Pending,
            })
            .await
        };
        quiet.then_some(stream)
    })
}

/// Poll a watch once, from the pool's own calls (nothing needs waking: the pool polls it
/// again when it next looks).
fn poll_watch(w: &mut Watch) -> Poll<Option<Stream>> {
    w.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// How an idle connection is checked before reuse.
enum Check {
    /// io_uring: the readiness watch.
    Watch(Watch),
    /// Legacy driver: a liveness peek at checkout.
    Peek(Stream),
}

struct Idle {
    check: Check,
    since: Instant,
}

#[derive(Default)]
pub struct Pool {
    idle: AddrMap<Vec<Idle>>,
    /// Set while the pool asks one watch for its stream back.
    give_back: Rc<Cell<bool>>,
    /// Connections opened and reused, for metrics and tests.
    pub opened: u64,
    pub reused: u64,
    pub discarded_dead: u64,
}

impl Pool {
    /// A live idle connection to `addr`, if one is pooled and younger than `idle_timeout`.
    pub fn checkout(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        idle_timeout: Duration,
    ) -> Option<Stream> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(mut entry) = list.pop() {
            if now.duration_since(entry.since) >= idle_timeout {
                continue;
            }
            let live = match entry.check {
                Check::Watch(ref mut w) => {
                    self.give_back.set(true);
                    let polled = poll_watch(w);
                    self.give_back.set(false);
                    match polled {
                        Poll::Ready(Some(stream)) => Some(stream),
                        _ => None,
                    }
                }
                Check::Peek(stream) => idle_conn_is_alive(&stream).then_some(stream),
            };
            if let Some(stream) = live {
                self.reused += 1;
                return Some(stream);
            }
            self.discarded_dead += 1;
        }
        None
    }

    /// Return a connection after a complete exchange; dropped (closed) when the pool is
    /// full. The watch starts here: its first poll arms the readiness wait.
    pub fn checkin(
        &mut self,
        addr: SocketAddr,
        stream: impl Into<Stream>,
        now: Instant,
        max_idle: usize,
    ) {
        let stream = stream.into();
        if !crate::transport::tls_meshed::fits_current(addr, &stream) {
            // Its endpoint turned to (or from) mutual TLS while it was in use.
            return;
        }
        if stream.tls().is_some_and(|t| t.has_buffered()) {
            // Bytes nobody asked for are waiting inside TLS: out of sync.
            self.discarded_dead += 1;
            return;
        }
        let list = self.idle.entry(addr).or_default();
        if list.len() >= max_idle {
            return;
        }
        if monoio::utils::is_legacy() {
            list.push(Idle {
                check: Check::Peek(stream),
                since: now,
            });
            return;
        }
        let mut w = watch(stream, self.give_back.clone());
        if poll_watch(&mut w).is_ready() {
            // Readable already: bytes or a close came with the response.
            self.discarded_dead += 1;
            return;
        }
        list.push(Idle {
            check: Check::Watch(w),
            since: now,
        });
    }

    /// Close idle connections older than `idle_timeout`, and (io_uring) those the upstream
    /// closed while they sat here; called from the core's tick.
    pub fn sweep(&mut self, now: Instant, idle_timeout: Duration) {
        let mut dead = 0;
        for list in self.idle.values_mut() {
            list.retain_mut(|e| {
                if now.duration_since(e.since) >= idle_timeout {
                    return false;
                }
                let alive = match e.check {
                    Check::Watch(ref mut w) => poll_watch(w).is_pending(),
                    // A syscall per idle connection and tick would cost more than it saves.
                    Check::Peek(_) => true,
                };
                dead += u64::from(!alive);
                alive
            });
        }
        self.discarded_dead += dead;
        self.idle.retain(|_, list| !list.is_empty());
    }

    /// Idle connections pooled for `addr`.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.get(&addr).map_or(0, Vec::len)
    }

    /// Drop every pooled connection to endpoints not in `keep` (after a config change).
    pub fn retain_endpoints(&mut self, keep: &dyn Fn(&SocketAddr) -> bool) {
        self.idle.retain(|addr, _| keep(addr));
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::TcpStream;
    use std::future::Future;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::{Duration, Instant};

    const LONG: Duration = Duration::from_secs(600);

    /// Runs the test body on the io_uring driver (where the kernel offers it) and on the
    /// legacy one.
    fn on_each_driver<F: Future<Output = ()>>(body: impl Fn() -> F) {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(body());
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("legacy runtime")
            .block_on(body());
    }

    /// A proxy-side connection and the upstream's end of it.
    async fn pair() -> (SocketAddr, TcpStream, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let ours = TcpStream::connect(addr).await.expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        (addr, ours, theirs)
    }

    /// Waits (bounded) until the kernel has something to read on `fd` — a FIN or bytes —
    /// then lets the runtime's driver take two turns, so it has reaped the readiness.
    async fn until_readable(fd: RawFd) {
        let bound = Instant::now() + Duration::from_secs(30);
        loop {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd for an open socket, no timeout.
            if unsafe { libc::poll(&mut p, 1, 0) } == 1 {
                break;
            }
            assert!(Instant::now() < bound, "nothing arrived on the socket");
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
        for _ in 0..2 {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[test]
    fn an_idle_connection_the_upstream_closed_is_never_handed_out() {
        on_each_driver(|| async {
            let (addr, ours, theirs) = pair().await;
            let fd = ours.as_raw_fd();
            let mut pool = Pool::default();
            pool.checkin(addr, ours, Instant::now(), 8);
            assert_eq!(pool.idle_count(addr), 1);
            drop(theirs);
            until_readable(fd).await;
            assert!(pool.checkout(addr, Instant::now(), LONG).is_none());
            assert_eq!((pool.reused, pool.discarded_dead), (0, 1));
            assert_eq!(pool.idle_count(addr), 0);
        });
    }

    #[test]
    fn bytes_nobody_asked_for_retire_an_idle_connection() {
        on_each_driver(|| async {
            let (addr, ours, mut theirs) = pair().await;
            let fd = ours.as_raw_fd();
            let mut pool = Pool::default();
            pool.checkin(addr, ours, Instant::now(), 8);
            theirs.write_all(b"HTTP/1.1 200 OK\r\n").expect("write");
            until_readable(fd).await;
            assert!(pool.checkout(addr, Instant::now(), LONG).is_none());
            assert_eq!((pool.reused, pool.discarded_dead), (0, 1));
        });
    }

    #[test]
    fn the_sweep_drops_closed_idle_connections_and_keeps_quiet_ones() {
        on_each_driver(|| async {
            let (addr, closed, theirs_closed) = pair().await;
            let (addr2, quiet, _theirs_quiet) = pair().await;
            let fd = closed.as_raw_fd();
            let mut pool = Pool::default();
            pool.checkin(addr, closed, Instant::now(), 8);
            pool.checkin(addr2, quiet, Instant::now(), 8);
            drop(theirs_closed);
            until_readable(fd).await;
            pool.sweep(Instant::now(), LONG);
            if monoio::utils::is_legacy() {
                // The legacy driver peeks at checkout instead of watching.
                assert_eq!((pool.idle_count(addr), pool.idle_count(addr2)), (1, 1));
                assert!(pool.checkout(addr, Instant::now(), LONG).is_none());
            } else {
                assert_eq!((pool.idle_count(addr), pool.idle_count(addr2)), (0, 1));
            }
            assert_eq!(pool.discarded_dead, 1);
        });
    }

    #[test]
    fn a_quiet_idle_connection_comes_back_whole_and_carries_the_next_exchange() {
        on_each_driver(|| async {
            let (addr, mut ours, mut theirs) = pair().await;
            let mut pool = Pool::default();
            for round in 0..3u8 {
                pool.checkin(addr, ours, Instant::now(), 8);
                // Let the driver submit the watch and come back with nothing.
                monoio::time::sleep(Duration::from_millis(1)).await;
                pool.sweep(Instant::now(), LONG);
                let crate::transport::conn::Stream::Plain(back) = pool
                    .checkout(addr, Instant::now(), LONG)
                    .expect("the quiet connection")
                else {
                    panic!("a plain connection went in");
                };
                ours = back;
                let (w, _) = ours.write_all(vec![b'a' + round]).await;
                w.expect("write");
                let mut got = [0u8; 1];
                theirs.read_exact(&mut got).expect("read");
                assert_eq!(got[0], b'a' + round);
                theirs.write_all(&[b'A' + round]).expect("write back");
                let (r, buf) = ours.read(Vec::with_capacity(8)).await;
                assert_eq!(r.expect("read back"), 1);
                assert_eq!(buf, [b'A' + round]);
            }
            assert_eq!((pool.reused, pool.discarded_dead), (3, 0));
        });
    }

    #[test]
    fn an_expired_idle_connection_is_not_handed_out() {
        on_each_driver(|| async {
            let (addr, ours, _theirs) = pair().await;
            let mut pool = Pool::default();
            let then = Instant::now();
            pool.checkin(addr, ours, then, 8);
            let later = then + Duration::from_secs(5);
            assert!(pool.checkout(addr, later, Duration::from_secs(5)).is_none());
            assert_eq!(pool.idle_count(addr), 0);
        });
    }
}
