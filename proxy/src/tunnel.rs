//! After a `101 Switching Protocols`, bytes flow both ways unchanged until both sides have
//! closed; a side's end of stream is passed on as a half-close.

use crate::conn::Conn;
use monoio::buf::IoBuf;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

const TUNNEL_BUFFER: usize = 16 * 1024;

pub async fn tunnel(mut client: Conn, mut upstream: Conn) {
    // Bytes each side sent after its head go first.
    let c_left = client.buffered();
    if upstream
        .forward(upstream.buffered(), &mut client.stream)
        .await
        .is_err()
    {
        return;
    }
    if client.forward(c_left, &mut upstream.stream).await.is_err() {
        return;
    }
    let (mut cr, mut cw) = client.stream.into_split();
    let (mut ur, mut uw) = upstream.stream.into_split();
    let up = copy(&mut cr, &mut uw);
    let down = copy(&mut ur, &mut cw);
    monoio::join!(up, down);
}

async fn copy<R: AsyncReadRent, W: AsyncWriteRent>(from: &mut R, to: &mut W) {
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
            }
        }
    }
    let _ = to.shutdown().await;
}
