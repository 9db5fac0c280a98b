//! After a `101 Switching Protocols`, bytes flow both ways unchanged until both sides have
//! closed; a side's end of stream is passed on as a half-close. A tunnel with no bytes
//! moving in either direction for `proxy.tunnel_idle_timeout_ms` is closed on both sides
//! (and logged at debug level).

use crate::conn::Conn;
use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};
use std::cell::Cell;
use std::time::{Duration, Instant};

const TUNNEL_BUFFER: usize = 16 * 1024;

/// What a tunnel carried and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelEnd {
    pub to_upstream: u64,
    pub to_client: u64,
    /// Closed by the idle timeout rather than by the peers.
    pub idle_closed: bool,
}

/// Copy both ways until both sides have closed, or until nothing has moved for `idle`.
pub async fn tunnel(mut client: Conn, mut upstream: Conn, idle: Duration) -> TunnelEnd {
    let mut end = TunnelEnd {
        to_upstream: 0,
        to_client: 0,
        idle_closed: false,
    };
    // Bytes each side sent after its head go first.
    let c_left = client.buffered();
    let u_left = upstream.buffered();
    if upstream.forward(u_left, &mut client).await.is_err()
        || client.forward(c_left, &mut upstream).await.is_err()
    {
        return end;
    }
    let (mut cr, mut cw) = client.stream.into_split();
    let (mut ur, mut uw) = upstream.stream.into_split();
    let last_activity = Cell::new(Instant::now());
    let up = Cell::new(c_left as u64);
    let down = Cell::new(u_left as u64);
    let both = async {
        monoio::join!(
            copy(&mut cr, &mut uw, &up, &last_activity),
            copy(&mut ur, &mut cw, &down, &last_activity)
        )
    };
    monoio::select! {
        _ = both => {}
        _ = idle_for(&last_activity, idle) => {
            end.idle_closed = true;
            tracing::debug!("tunnel idle both ways for {idle:?}: closing both sides");
        }
    }
    end.to_upstream = up.get();
    end.to_client = down.get();
    // Dropping the halves closes both connections.
    end
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

async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(
    from: &mut R,
    to: &mut W,
    total: &Cell<u64>,
    last_activity: &Cell<Instant>,
) {
    let mut buf = Vec::with_capacity(TUNNEL_BUFFER);
    loop {
        buf.clear();
        let (res, b) = from.read(buf).await;
        buf = b;
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
                total.set(total.get() + n as u64);
            }
        }
    }
    let _ = to.shutdown().await;
}
