//! Two connections spliced together: after a `101 Switching Protocols`, and for opaque TCP
//! (`transport::opaque`), bytes flow both ways unchanged until both sides have closed; a
//! side's end of stream is passed on as a half-close. A tunnel with no bytes moving in
//! either direction for its idle timeout (`proxy.tunnel_idle_timeout_ms` for upgrades) is
//! closed on both sides (and logged at debug level).
//!
//! Two plain connections are split into halves copied by two loops on monoio's owned
//! buffers. A tunnel with a TLS side (a TLS-terminated client upgraded towards the
//! application, an upgrade to a meshed endpoint, opaque TCP over mutual TLS) cannot be split
//! that way — both directions go through the one rustls session — so it is copied in poll
//! style instead (the connections as HTTP/2 drives them, [`crate::http2::io::H2Io`], and
//! tokio's `copy_bidirectional`): the same half-close (a TLS side's end is its close_notify,
//! and its half-close sends one), the same buffer size, idle timeout and byte counts.

use crate::http2::io::{Counters, H2Io};
use crate::transport::conn::{Conn, Stream};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use std::cell::Cell;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a tunnel carried and how it ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TunnelEnd {
    pub to_upstream: u64,
    pub to_client: u64,
    /// Of `to_upstream` / `to_client`: bytes that were already buffered in the client /
    /// upstream connection when the tunnel began (read, and counted in that connection's
    /// `bytes_in`, before the tunnel), so not read by the tunnel itself.
    pub carried_to_upstream: u64,
    pub carried_to_client: u64,
    /// Closed by the idle timeout rather than by the peers.
    pub idle_closed: bool,
}

/// Tunnel a client connection whose HTTP exchange switched it over (an upgrade, a
/// CONNECT) to `upstream`, then count the bytes. The client's own `bytes_in` / `bytes_out`
/// were counted when its exchange ended, bytes it had sent beyond the request (buffered,
/// then carried into the tunnel) included, so only what the tunnel read from it is added;
/// the upstream connection's exchange (the request head out, the response head in) had not
/// been counted, so it is added here with the tunnel's bytes.
pub async fn run_and_record(
    core: &crate::core::Core,
    client: Conn,
    upstream: Conn,
    idle: Duration,
    buffer_bytes: usize,
) -> TunnelEnd {
    use coremesh_telemetry::Peer;
    let (upstream_in, upstream_out) = (upstream.bytes_in, upstream.bytes_out);
    let end = splice(client, upstream, idle, buffer_bytes).await;
    let m = core.metrics.borrow();
    m.record_bytes_received(Peer::Client, end.to_upstream - end.carried_to_upstream);
    m.record_bytes_sent(Peer::Client, end.to_client);
    m.record_bytes_received(
        Peer::Upstream,
        upstream_in + (end.to_client - end.carried_to_client),
    );
    m.record_bytes_sent(Peer::Upstream, upstream_out + end.to_upstream);
    end
}

/// Copy both ways, reading at most `buffer_bytes` at a time in each direction, until both
/// sides have closed or nothing has moved either way for `idle`. Bytes already buffered in
/// either connection go first (each towards the other side); an end of stream one way is
/// passed on as a half-close while the other way keeps going. Both connections are closed
/// on return.
pub async fn splice(
    client: Conn,
    upstream: Conn,
    idle: Duration,
    buffer_bytes: usize,
) -> TunnelEnd {
    let buffer_bytes = buffer_bytes.max(1);
    let plain = |c: &Conn| matches!(c.stream, Stream::Plain(_));
    if !plain(&client) || !plain(&upstream) {
        return Box::pin(splice_polled(client, upstream, idle, buffer_bytes)).await;
    }
    let (Some((mut cr, mut cw, c_pending)), Some((mut ur, mut uw, u_pending))) =
        (split(client), split(upstream))
    else {
        // Not reached: both are plain.
        return TunnelEnd::default();
    };
    let last_activity = Cell::new(Instant::now());
    let up = Moved::default();
    let down = Moved::default();
    let both = async {
        monoio::join!(
            copy(
                &mut cr,
                &mut uw,
                c_pending,
                buffer_bytes,
                &up,
                &last_activity
            ),
            copy(
                &mut ur,
                &mut cw,
                u_pending,
                buffer_bytes,
                &down,
                &last_activity
            )
        )
    };
    let mut idle_closed = false;
    monoio::select! {
        _ = both => {}
        _ = idle_for(&last_activity, idle) => {
            idle_closed = true;
            tracing::debug!("tunnel idle both ways for {idle:?}: closing both sides");
        }
    }
    // Dropping the halves closes both connections.
    TunnelEnd {
        to_upstream: up.total.get(),
        to_client: down.total.get(),
        carried_to_upstream: up.carried.get(),
        carried_to_client: down.carried.get(),
        idle_closed,
    }
}

/// Bytes written one way: all of them, and those carried over from the source's buffer.
#[derive(Default)]
struct Moved {
    total: Cell<u64>,
    carried: Cell<u64>,
}

/// A connection's bytes read but not yet consumed, to be written on before copying.
struct Pending {
    buf: Vec<u8>,
    start: usize,
}

/// The halves of a plain connection (`None` for TLS, which [`splice_polled`] takes).
fn split(conn: Conn) -> Option<(OwnedReadHalf<TcpStream>, OwnedWriteHalf<TcpStream>, Pending)> {
    let Conn {
        stream, buf, start, ..
    } = conn;
    let Stream::Plain(stream) = stream else {
        return None;
    };
    let (r, w) = stream.into_split();
    Some((r, w, Pending { buf, start }))
}

/// [`splice`] when either side is TLS: one poll-style copy both ways (see the module doc).
async fn splice_polled(
    client: Conn,
    upstream: Conn,
    idle: Duration,
    buffer_bytes: usize,
) -> TunnelEnd {
    let (c_pending, u_pending) = (client.buffered() as u64, upstream.buffered() as u64);
    let (c_counters, u_counters) = (Counters::default(), Counters::default());
    let last_activity = Cell::new(Instant::now());
    let (mut c, mut u) = match (
        Watched::new(client, &c_counters, &last_activity),
        Watched::new(upstream, &u_counters, &last_activity),
    ) {
        (Ok(c), Ok(u)) => (c, u),
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!("tunnel: a connection cannot be polled ({e}): closing both sides");
            return TunnelEnd::default();
        }
    };
    let mut idle_closed = false;
    {
        let both =
            tokio::io::copy_bidirectional_with_sizes(&mut c, &mut u, buffer_bytes, buffer_bytes);
        monoio::select! {
            ended = both => {
                if let Err(e) = ended {
                    tracing::debug!("tunnel ended: {e}");
                }
            }
            _ = idle_for(&last_activity, idle) => {
                idle_closed = true;
                tracing::debug!("tunnel idle both ways for {idle:?}: closing both sides");
            }
        }
    }
    // Dropping the connections closes them (each TLS side sent its close_notify when the
    // other side's end was passed on).
    drop((c, u));
    let to_upstream = u_counters.written.get();
    let to_client = c_counters.written.get();
    TunnelEnd {
        to_upstream,
        to_client,
        carried_to_upstream: c_pending.min(to_upstream),
        carried_to_client: u_pending.min(to_client),
        idle_closed,
    }
}

/// A connection in poll style (its buffered bytes read first) that notes when bytes last
/// moved through it, for the idle timeout.
struct Watched<'a> {
    io: H2Io,
    last_activity: &'a Cell<Instant>,
}

impl<'a> Watched<'a> {
    fn new(
        conn: Conn,
        counters: &Counters,
        last_activity: &'a Cell<Instant>,
    ) -> std::io::Result<Watched<'a>> {
        let Conn {
            stream,
            mut buf,
            start,
            ..
        } = conn;
        buf.drain(..start.min(buf.len()));
        Ok(Watched {
            io: H2Io::new(stream, buf, counters.clone())?,
            last_activity,
        })
    }

    fn moved(&self) {
        self.last_activity.set(Instant::now());
    }
}

impl AsyncRead for Watched<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl AsyncWrite for Watched<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Ends once `last_activity` is `idle` old.
async fn idle_for(last_activity: &Cell<Instant>, idle: Duration) {
    loop {
        let since = last_activity.get().elapsed();
        match idle.checked_sub(since) {
            Some(left) if !left.is_zero() => monoio::time::sleep(left).await,
            _ => return,
        }
    }
}

/// Write `pending`'s bytes, then copy `from` to `to` until `from` ends or `to` fails, then
/// half-close `to`. The buffer `pending` came in is reused for reading.
async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(
    from: &mut R,
    to: &mut W,
    pending: Pending,
    buffer_bytes: usize,
    moved: &Moved,
    last_activity: &Cell<Instant>,
) {
    let Pending { mut buf, start } = pending;
    if let Some(n) = buf.len().checked_sub(start).filter(|&n| n > 0) {
        let (res, b) = to.write_all(buf.slice(start..start + n)).await;
        buf = b.into_inner();
        if res.is_err() {
            let _ = to.shutdown().await;
            return;
        }
        last_activity.set(Instant::now());
        moved.total.set(moved.total.get() + n as u64);
        moved.carried.set(moved.carried.get() + n as u64);
    }
    loop {
        buf.clear();
        if buf.capacity() < buffer_bytes {
            buf.reserve_exact(buffer_bytes);
        }
        let room = buf.capacity().min(buffer_bytes);
        let (res, b) = from.read(buf.slice_mut(0..room)).await;
        buf = b.into_inner();
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                last_activity.set(Instant::now());
                let (res, b) = to.write_all(buf.slice(0..n)).await;
                buf = b.into_inner();
                if res.is_err() {
                    break;
                }
                last_activity.set(Instant::now());
                moved.total.set(moved.total.get() + n as u64);
            }
        }
    }
    let _ = to.shutdown().await;
}
