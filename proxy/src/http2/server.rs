//! A client's HTTP/2 connection: the handshake under the head-read timeout and the
//! `[http2]` limits, then every request stream served as its own task on this core
//! ([`super::stream`]), until the client closes, the connection reaches its maximum age or
//! the proxy shuts down (both end with GOAWAY and let the streams in flight finish).

use super::io::H2Io;
use crate::core::Core;
use crate::pipeline::Origin;
use crate::transport::conn::Conn;
use bytes::Bytes;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

enum Event<T> {
    /// Time to stop taking streams: shutdown began, or the connection is old enough.
    Stop,
    Accept(Option<Result<T, h2::Error>>),
}

/// Serve an HTTP/2 connection whose first bytes (at least the start of the preface) may
/// already be buffered in `client`. The connection was counted as opened by the caller;
/// this counts it closed.
pub async fn serve(core: Rc<Core>, client: Conn, peer: SocketAddr, origin: Origin) {
    let read_ahead = client.data().to_vec();
    let bytes_in = client.bytes_in;
    let Conn { stream, buf, .. } = client;
    core.recycle(buf);
    let counters = super::io::Counters::default();
    let io = match H2Io::new(stream, read_ahead, counters.clone()) {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(%peer, "HTTP/2 connection unusable: {e}");
            end(&core, bytes_in, &counters);
            return;
        }
    };
    let limits = core.snapshot().http2.clone();
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .initial_window_size(limits.initial_stream_window_bytes)
        .initial_connection_window_size(limits.initial_connection_window_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .max_pending_accept_reset_streams(limits.max_pending_reset_streams)
        .max_local_error_reset_streams(Some(limits.max_local_reset_streams));
    let handshake_limit = Duration::from_millis(core.defaults.header_read_timeout_ms);
    let handshake = monoio::time::timeout(handshake_limit, builder.handshake::<_, Bytes>(io)).await;
    let mut conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            super::record_error(&core, &e);
            tracing::debug!(%peer, "HTTP/2 handshake failed: {e}");
            end(&core, bytes_in, &counters);
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 preface not received in time");
            end(&core, bytes_in, &counters);
            return;
        }
    };
    let mut shutdown = core.shutdown.wait();
    let mut age: Option<Pin<Box<monoio::time::Sleep>>> =
        (limits.max_connection_age_ms > 0).then(|| {
            Box::pin(monoio::time::sleep(Duration::from_millis(
                limits.max_connection_age_ms,
            )))
        });
    let mut closing = false;
    loop {
        let event = poll_fn(|cx| {
            if !closing {
                let aged = age.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if aged || Pin::new(&mut shutdown).poll(cx).is_ready() {
                    return Poll::Ready(Event::Stop);
                }
            }
            conn.poll_accept(cx).map(Event::Accept)
        })
        .await;
        match event {
            Event::Stop => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Accept(Some(Ok((request, respond)))) => {
                monoio::spawn(super::stream::handle(
                    core.clone(),
                    request,
                    respond,
                    peer,
                    origin,
                ));
            }
            Event::Accept(Some(Err(e))) => {
                super::record_error(&core, &e);
                tracing::debug!(%peer, "HTTP/2 connection ended: {e}");
                break;
            }
            Event::Accept(None) => break,
        }
    }
    end(&core, bytes_in, &counters);
}

fn end(core: &Core, read_before: u64, counters: &super::io::Counters) {
    use coremesh_telemetry::Peer;
    let m = core.metrics.borrow();
    m.record_client_connection_closed();
    m.record_bytes_received(Peer::Client, read_before + counters.read.get());
    m.record_bytes_sent(Peer::Client, counters.written.get());
}
