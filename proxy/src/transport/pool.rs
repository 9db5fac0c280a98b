//! Per-core, per-endpoint keep-alive pools of upstream connections. LIFO reuse (the most
//! recently used connection is the least likely to have been closed by the upstream), a cap
//! on idle connections per endpoint, an idle timeout, and a check on every idle connection
//! so a connection the upstream closed (or wrote to unasked) is never used.
//!
//! How an idle connection is checked depends on the driver and the stream:
//! - io_uring, plain TCP, checked in with a buffer: the read for the next response is
//!   posted at check-in ([`PostedRead`]). An idle connection has nothing to read, so a read
//!   that completes means the upstream closed it, reset it, or sent bytes nobody asked
//!   for. Checkout polls the read once: completed, the connection is retired; pending, the
//!   connection is handed out with its read in flight ([`Pooled::Posted`]), the request
//!   goes out through its write half and the response arrives by that read. Reuse then
//!   costs no submission of its own (a readiness watch costs a `POLL_ADD` at check-in and
//!   an `ASYNC_CANCEL` at checkout). A connection idle for `pool_read_linger_ms` gives
//!   its buffer back: the tick's sweep cancels its read and watches it instead.
//! - io_uring otherwise (TLS, or checked in without a buffer): a readiness watch, as
//!   nginx's keep-alive cache does it: the connection is handed to a small future that
//!   waits for it to become readable (a `POLL_ADD`), and the pool polls that future itself
//!   (no task, no wake-up). Checkout polls the watch once: finished means the connection is
//!   retired, pending means it is quiet and the future gives the stream back.
//! - The legacy (epoll) driver keeps a liveness peek at checkout: a watch there needs a
//!   `poll` at check-in to tell a readiness left over from reading the response from a new
//!   one, so it would trade one syscall for another.
//!
//! A close that the driver has not yet reported when a request is sent is what the
//! stale-connection retry in `forward.rs` is for, as before.

use crate::transport::conn::{idle_conn_is_alive, Stream};
pub use crate::transport::posted_read::PostedRead;
use monoio::io::Canceller;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

pub use coremesh_balancer::{AddrHasher, AddrMap};

/// Cancellers kept for reuse per pool (a canceller's set of operations keeps its
/// allocation between reads).
const SPARE_CANCELLERS: usize = 256;

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
    /// io_uring, plain TCP: the read for the next response, posted at check-in.
    Posted(PostedRead),
    /// io_uring otherwise: the readiness watch.
    Watch(Watch),
    /// Legacy driver: a liveness peek at checkout.
    Peek(Stream),
}

struct Idle {
    check: Check,
    since: Instant,
}

/// A connection the pool hands out.
pub enum Pooled {
    /// Use it as it is.
    Stream(Stream),
    /// Its next read is posted already: write the request through it
    /// ([`PostedRead::write_all`]), then take the response's first bytes from
    /// [`PostedRead::finish`] (or [`PostedRead::reclaim`] it whole).
    Posted(PostedRead),
}

#[derive(Default)]
pub struct Pool {
    idle: AddrMap<Vec<Idle>>,
    /// Set while the pool asks one watch for its stream back.
    give_back: Rc<Cell<bool>>,
    /// Cancellers of finished posted reads, for the next ones.
    spare: Vec<Canceller>,
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
    ) -> Option<Pooled> {
        let list = self.idle.get_mut(&addr)?;
        while let Some(entry) = list.pop() {
            if now.duration_since(entry.since) >= idle_timeout {
                continue;
            }
            let live = match entry.check {
                Check::Posted(posted) => match posted.try_finish() {
                    Err(posted) => Some(Pooled::Posted(posted)),
                    Ok(done) => {
                        let quiet = done.cancelled();
                        if self.spare.len() < SPARE_CANCELLERS {
                            self.spare.push(done.canceller);
                        }
                        quiet.then(|| Pooled::Stream(Stream::Plain(done.stream)))
                    }
                },
                Check::Watch(mut w) => {
                    self.give_back.set(true);
                    let polled = poll_watch(&mut w);
                    self.give_back.set(false);
                    match polled {
                        Poll::Ready(Some(stream)) => Some(Pooled::Stream(stream)),
                        _ => None,
                    }
                }
                Check::Peek(stream) => {
                    idle_conn_is_alive(&stream).then_some(Pooled::Stream(stream))
                }
            };
            if let Some(pooled) = live {
                self.reused += 1;
                return Some(pooled);
            }
            self.discarded_dead += 1;
        }
        None
    }

    /// Return a connection after a complete exchange; dropped (closed) when the pool is
    /// full. Its check starts here (see the module doc).
    pub fn checkin(
        &mut self,
        addr: SocketAddr,
        stream: impl Into<Stream>,
        now: Instant,
        max_idle: usize,
    ) {
        let _unused = self.checkin_reading(addr, stream, Vec::new(), now, max_idle);
    }

    /// [`checkin`](Self::checkin) with a read buffer (empty, with capacity): on io_uring a
    /// plain connection keeps it with the read for its next response posted in it. The
    /// buffer comes back when the connection does not need it.
    pub fn checkin_reading(
        &mut self,
        addr: SocketAddr,
        stream: impl Into<Stream>,
        buf: Vec<u8>,
        now: Instant,
        max_idle: usize,
    ) -> Option<Vec<u8>> {
        let stream = stream.into();
        if !crate::transport::tls_meshed::fits_current(addr, &stream) {
            // Its endpoint turned to (or from) mutual TLS while it was in use.
            return Some(buf);
        }
        if stream.tls().is_some_and(|t| t.has_buffered()) {
            // Bytes nobody asked for are waiting inside TLS: out of sync.
            self.discarded_dead += 1;
            return Some(buf);
        }
        let list = self.idle.entry(addr).or_default();
        if list.len() >= max_idle {
            return Some(buf);
        }
        if monoio::utils::is_legacy() {
            list.push(Idle {
                check: Check::Peek(stream),
                since: now,
            });
            return Some(buf);
        }
        let (check, unused) = match stream {
            Stream::Plain(tcp) if buf.capacity() > 0 && buf.is_empty() => {
                let canceller = self.spare.pop().unwrap_or_default();
                match PostedRead::new(tcp, buf, canceller).try_finish() {
                    Err(posted) => (Some(Check::Posted(posted)), None),
                    // Completed at once: only a read cancelled before its start does.
                    Ok(done) => {
                        if self.spare.len() < SPARE_CANCELLERS {
                            self.spare.push(done.canceller);
                        }
                        (None, Some(done.buf))
                    }
                }
            }
            stream => {
                let mut w = watch(stream, self.give_back.clone());
                // Readable already: bytes or a close came with the response.
                let ready = poll_watch(&mut w).is_ready();
                ((!ready).then_some(Check::Watch(w)), Some(buf))
            }
        };
        match check {
            Some(check) => list.push(Idle { check, since: now }),
            None => self.discarded_dead += 1,
        }
        unused
    }

    /// Close idle connections older than `idle_timeout`, and (io_uring) those the upstream
    /// closed while they sat here; a posted read idle for `read_linger` is cancelled, and
    /// once it has stopped its connection is watched instead. Called from the core's tick.
    pub fn sweep(&mut self, now: Instant, idle_timeout: Duration, read_linger: Duration) {
        let mut dead = 0;
        for list in self.idle.values_mut() {
            let entries = std::mem::take(list);
            for mut e in entries {
                let idle = now.duration_since(e.since);
                if idle >= idle_timeout {
                    continue;
                }
                let check = match e.check {
                    Check::Posted(posted) => match posted.try_finish() {
                        Err(mut posted) => {
                            if idle >= read_linger {
                                posted.cancel();
                            }
                            Some(Check::Posted(posted))
                        }
                        Ok(done) => {
                            let quiet = done.cancelled();
                            if self.spare.len() < SPARE_CANCELLERS {
                                self.spare.push(done.canceller);
                            }
                            quiet
                                .then(|| {
                                    let mut w =
                                        watch(Stream::Plain(done.stream), self.give_back.clone());
                                    poll_watch(&mut w).is_pending().then_some(Check::Watch(w))
                                })
                                .flatten()
                        }
                    },
                    Check::Watch(ref mut w) => poll_watch(w).is_pending().then_some(e.check),
                    // A syscall per idle connection and tick would cost more than it saves.
                    Check::Peek(_) => Some(e.check),
                };
                match check {
                    Some(check) => list.push(Idle {
                        check,
                        since: e.since,
                    }),
                    None => dead += 1,
                }
            }
        }
        self.discarded_dead += dead;
        self.idle.retain(|_, list| !list.is_empty());
    }

    /// Idle connections pooled for `addr`.
    pub fn idle_count(&self, addr: SocketAddr) -> usize {
        self.idle.get(&addr).map_or(0, Vec::len)
    }

    /// Idle connections pooled for `addr` with their read posted.
    pub fn posted_count(&self, addr: SocketAddr) -> usize {
        self.idle.get(&addr).map_or(0, |list| {
            list.iter()
                .filter(|e| matches!(e.check, Check::Posted(_)))
                .count()
        })
    }

    /// Drop every pooled connection to endpoints not in `keep` (after a config change).
    pub fn retain_endpoints(&mut self, keep: &dyn Fn(&SocketAddr) -> bool) {
        self.idle.retain(|addr, _| keep(addr));
    }

    fn spare_canceller(&mut self, c: Canceller) {
        if self.spare.len() < SPARE_CANCELLERS {
            self.spare.push(c);
        }
    }
}

/// A live idle connection to `addr` as a whole stream (a posted read is cancelled first),
/// for a caller that cannot take one with its read in flight.
pub async fn checkout_stream(
    pool: &RefCell<Pool>,
    addr: SocketAddr,
    now: Instant,
    idle_timeout: Duration,
) -> Option<Stream> {
    loop {
        let pooled = pool.borrow_mut().checkout(addr, now, idle_timeout)?;
        match pooled {
            Pooled::Stream(stream) => return Some(stream),
            Pooled::Posted(posted) => {
                let (stream, canceller) = posted.reclaim().await;
                let mut pool = pool.borrow_mut();
                pool.spare_canceller(canceller);
                match stream {
                    Some(stream) => return Some(Stream::Plain(stream)),
                    None => {
                        // It closed (or spoke) meanwhile: not reused after all.
                        pool.reused -= 1;
                        pool.discarded_dead += 1;
                    }
                }
            }
        }
    }
}

/// Give a finished posted read's canceller back to `pool` for the next one.
pub fn return_canceller(pool: &RefCell<Pool>, c: Canceller) {
    pool.borrow_mut().spare_canceller(c);
}

#[cfg(test)]
mod tests {
    use super::{checkout_stream, Pool, Pooled};
    use crate::transport::conn::Stream;
    use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
    use monoio::net::TcpStream;
    use std::cell::RefCell;
    use std::future::Future;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};
    use std::os::fd::{AsRawFd, RawFd};
    use std::time::{Duration, Instant};

    const LONG: Duration = Duration::from_secs(600);
    /// The posted reads' linger in these tests.
    const LINGER: Duration = Duration::from_secs(1);

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

    /// Check `stream` in as `forward.rs` does (`reading`: with a buffer for a posted read)
    /// or as a caller without one does.
    fn check_in(pool: &mut Pool, addr: SocketAddr, stream: TcpStream, reading: bool) {
        check_in_at(pool, addr, stream, reading, Instant::now());
    }

    fn check_in_at(
        pool: &mut Pool,
        addr: SocketAddr,
        stream: TcpStream,
        reading: bool,
        now: Instant,
    ) {
        if reading {
            let unused = pool.checkin_reading(addr, stream, Vec::with_capacity(4096), now, 8);
            // Only io_uring keeps the buffer, with a read posted in it.
            assert_eq!(unused.is_some(), monoio::utils::is_legacy());
        } else {
            pool.checkin(addr, stream, now, 8);
        }
    }

    /// Sweeps at `now` until `done` holds (bounded: only turns a hang into a failure),
    /// giving the driver turns in between.
    async fn sweep_until(pool: &mut Pool, now: Instant, done: impl Fn(&Pool) -> bool) {
        let bound = Instant::now() + Duration::from_secs(30);
        loop {
            pool.sweep(now, LONG, LINGER);
            if done(pool) {
                return;
            }
            assert!(Instant::now() < bound, "the sweep never got there");
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
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
        turns().await;
    }

    /// Two turns of the runtime's driver: what was submitted has gone in and come back.
    async fn turns() {
        for _ in 0..2 {
            monoio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// One byte each way on a connection the pool handed out, however it came.
    async fn exchange(pooled: Pooled, theirs: &mut std::net::TcpStream, byte: u8) -> TcpStream {
        match pooled {
            Pooled::Stream(Stream::Plain(mut ours)) => {
                let (w, _) = ours.write_all(vec![byte]).await;
                w.expect("write");
                answer(theirs, byte);
                let (r, buf) = ours.read(Vec::with_capacity(8)).await;
                assert_eq!(r.expect("read back"), 1);
                assert_eq!(buf, [byte.to_ascii_uppercase()]);
                ours
            }
            Pooled::Stream(Stream::Tls(_)) => panic!("a plain connection went in"),
            Pooled::Posted(mut posted) => {
                let (w, _) = posted.write_all(vec![byte]).await;
                w.expect("write");
                answer(theirs, byte);
                let done = posted.finish().await;
                assert_eq!(done.res.expect("the posted read"), 1);
                assert_eq!(done.buf, [byte.to_ascii_uppercase()]);
                done.stream
            }
        }
    }

    /// The upstream's side of [`exchange`].
    fn answer(theirs: &mut std::net::TcpStream, byte: u8) {
        let mut got = [0u8; 1];
        theirs.read_exact(&mut got).expect("read");
        assert_eq!(got[0], byte);
        theirs
            .write_all(&[byte.to_ascii_uppercase()])
            .expect("write back");
    }

    #[test]
    fn an_idle_connection_the_upstream_closed_is_never_handed_out() {
        on_each_driver(|| async {
            for reading in [false, true] {
                let (addr, ours, theirs) = pair().await;
                let fd = ours.as_raw_fd();
                let mut pool = Pool::default();
                check_in(&mut pool, addr, ours, reading);
                assert_eq!(pool.idle_count(addr), 1);
                drop(theirs);
                until_readable(fd).await;
                assert!(pool.checkout(addr, Instant::now(), LONG).is_none());
                assert_eq!((pool.reused, pool.discarded_dead), (0, 1));
                assert_eq!(pool.idle_count(addr), 0);
            }
        });
    }

    #[test]
    fn bytes_nobody_asked_for_retire_an_idle_connection() {
        on_each_driver(|| async {
            for reading in [false, true] {
                let (addr, ours, mut theirs) = pair().await;
                let fd = ours.as_raw_fd();
                let mut pool = Pool::default();
                check_in(&mut pool, addr, ours, reading);
                theirs.write_all(b"HTTP/1.1 200 OK\r\n").expect("write");
                if reading && !monoio::utils::is_legacy() {
                    // The posted read takes the bytes off the socket: the sweep sees it end.
                    sweep_until(&mut pool, Instant::now(), |p| p.discarded_dead == 1).await;
                } else {
                    until_readable(fd).await;
                }
                assert!(pool.checkout(addr, Instant::now(), LONG).is_none());
                assert_eq!((pool.reused, pool.discarded_dead), (0, 1));
                assert_eq!(pool.idle_count(addr), 0);
            }
        });
    }

    #[test]
    fn the_sweep_drops_closed_idle_connections_and_keeps_quiet_ones() {
        on_each_driver(|| async {
            for reading in [false, true] {
                let (addr, closed, theirs_closed) = pair().await;
                let (addr2, quiet, _theirs_quiet) = pair().await;
                let fd = closed.as_raw_fd();
                let mut pool = Pool::default();
                check_in(&mut pool, addr, closed, reading);
                check_in(&mut pool, addr2, quiet, reading);
                drop(theirs_closed);
                until_readable(fd).await;
                pool.sweep(Instant::now(), LONG, LINGER);
                if monoio::utils::is_legacy() {
                    // The legacy driver peeks at checkout instead of watching.
                    assert_eq!((pool.idle_count(addr), pool.idle_count(addr2)), (1, 1));
                    assert!(pool.checkout(addr, Instant::now(), LONG).is_none());
                } else {
                    assert_eq!((pool.idle_count(addr), pool.idle_count(addr2)), (0, 1));
                }
                assert_eq!(pool.discarded_dead, 1);
            }
        });
    }

    #[test]
    fn a_quiet_idle_connection_comes_back_whole_and_carries_the_next_exchange() {
        on_each_driver(|| async {
            for reading in [false, true] {
                let (addr, mut ours, mut theirs) = pair().await;
                let mut pool = Pool::default();
                for round in 0..3u8 {
                    check_in(&mut pool, addr, ours, reading);
                    // Let the driver submit the check and come back with nothing.
                    turns().await;
                    pool.sweep(Instant::now(), LONG, LINGER);
                    let posted = pool.posted_count(addr);
                    let pooled = pool
                        .checkout(addr, Instant::now(), LONG)
                        .expect("the quiet connection");
                    // Handed out with its read posted exactly where one was posted.
                    assert_eq!(usize::from(matches!(pooled, Pooled::Posted(_))), posted);
                    assert_eq!(posted, usize::from(reading && !monoio::utils::is_legacy()));
                    ours = exchange(pooled, &mut theirs, b'a' + round).await;
                }
                assert_eq!((pool.reused, pool.discarded_dead), (3, 0));
            }
        });
    }

    #[test]
    fn a_posted_read_idle_past_its_linger_gives_way_to_a_watch_and_the_connection_stays() {
        on_each_driver(|| async {
            let (addr, ours, mut theirs) = pair().await;
            let mut pool = Pool::default();
            check_in(&mut pool, addr, ours, true);
            turns().await;
            let later = Instant::now() + LINGER;
            // The first sweep past the linger asks the read to stop; a later one finds it
            // stopped and watches the connection instead.
            sweep_until(&mut pool, later, |p| p.posted_count(addr) == 0).await;
            assert_eq!((pool.idle_count(addr), pool.discarded_dead), (1, 0));
            let pooled = pool.checkout(addr, later, LONG).expect("still pooled");
            assert!(matches!(pooled, Pooled::Stream(_)));
            drop(exchange(pooled, &mut theirs, b'q').await);
            assert_eq!((pool.reused, pool.discarded_dead), (1, 0));
        });
    }

    #[test]
    fn a_posted_read_is_given_back_whole_to_a_caller_that_needs_the_stream() {
        on_each_driver(|| async {
            let (addr, ours, mut theirs) = pair().await;
            let pool = RefCell::new(Pool::default());
            check_in(&mut pool.borrow_mut(), addr, ours, true);
            turns().await;
            let stream = checkout_stream(&pool, addr, Instant::now(), LONG)
                .await
                .expect("the quiet connection");
            drop(exchange(Pooled::Stream(stream), &mut theirs, b'w').await);
            let pool = pool.borrow();
            assert_eq!((pool.reused, pool.discarded_dead), (1, 0));
        });
    }

    #[test]
    fn an_expired_idle_connection_is_not_handed_out() {
        on_each_driver(|| async {
            for reading in [false, true] {
                let (addr, ours, _theirs) = pair().await;
                let mut pool = Pool::default();
                let then = Instant::now();
                check_in_at(&mut pool, addr, ours, reading, then);
                let later = then + Duration::from_secs(5);
                assert!(pool.checkout(addr, later, Duration::from_secs(5)).is_none());
                assert_eq!(pool.idle_count(addr), 0);
            }
        });
    }
}
