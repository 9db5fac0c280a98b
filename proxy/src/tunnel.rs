//! After a `101 Switching Protocols`, bytes flow both ways unchanged until both sides have
//! closed; a side's end of stream is passed on as a half-close.

use crate::conn::Conn;
use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

const TUNNEL_BUFFER: usize = 16 * 1024;

/// Returns the bytes copied client-to-upstream and upstream-to-client.
pub async fn tunnel(mut client: Conn, mut upstream: Conn) -> (u64, u64) {
    // Bytes each side sent after its head go first.
    let c_left = client.buffered();
    let u_left = upstream.buffered();
    if upstream.forward(u_left, &mut client).await.is_err() {
        return (0, 0);
    }
    if client.forward(c_left, &mut upstream).await.is_err() {
        return (0, 0);
    }
    let early = (c_left as u64, u_left as u64);
    let (mut cr, mut cw) = client.stream.into_split();
    let (mut ur, mut uw) = upstream.stream.into_split();
    let up = copy(&mut cr, &mut uw);
    let down = copy(&mut ur, &mut cw);
    let (a, b) = monoio::join!(up, down);
    (early.0 + a, early.1 + b)
}

async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(from: &mut R, to: &mut W) -> u64 {
    let mut total = 0u64;
    let mut buf = Vec::with_capacity(TUNNEL_BUFFER);
    loop {
        buf.clear();
        let (res, b) = from.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let (res, b) = to.write_all(buf.slice(0..n)).await;
                buf = b.into_inner();
                if res.is_err() {
                    break;
                }
                total += n as u64;
            }
        }
    }
    let _ = to.shutdown().await;
    total
}
