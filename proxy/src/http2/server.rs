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

/// The window `[http2] max_control_frames` counts over.
const CONTROL_FRAME_WINDOW: Duration = Duration::from_secs(10);

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
    let client_id = crate::http1::server::client_id_header(&client.stream, origin);
    let bytes_in = client.bytes_in;
    let Conn { stream, buf, .. } = client;
    core.recycle(buf);
    // A second handle on the socket, to close it gently once `h2` is done with it.
    let lingering = linger_handle(&stream);
    let counters = super::io::Counters::default();
    let limits = core.snapshot().http2.clone();
    let counting = core.clone();
    let watch = super::io::Watch::new(
        limits.max_control_frames,
        CONTROL_FRAME_WINDOW,
        Box::new(move |code| super::record_sent_error(&counting, code)),
    );
    let flooded = watch.flooded.clone();
    let io = match H2Io::new(stream, read_ahead, counters.clone()) {
        Ok(io) => io.watched(watch),
        Err(e) => {
            tracing::debug!(%peer, "HTTP/2 connection unusable: {e}");
            end(&core, bytes_in, &counters);
            return;
        }
    };
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
            super::log_error(&e);
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
    let mut calmed = false;
    loop {
        let event = poll_fn(|cx| {
            if !closing {
                let aged = age.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready());
                if aged || Pin::new(&mut shutdown).poll(cx).is_ready() {
                    return Poll::Ready(Event::Stop);
                }
            }
            let accepted = conn.poll_accept(cx);
            if flooded.get() && !calmed {
                // A flood of SETTINGS or PING frames: GOAWAY ENHANCE_YOUR_CALM.
                calmed = true;
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            accepted.map(Event::Accept)
        })
        .await;
        match event {
            Event::Stop => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::Accept(Some(Ok((mut request, respond)))) => {
                client_id.apply(request.headers_mut());
                monoio::spawn(super::stream::handle(
                    core.clone(),
                    request,
                    respond,
                    peer,
                    origin,
                ));
            }
            Event::Accept(Some(Err(e))) => {
                super::log_error(&e);
                break;
            }
            Event::Accept(None) => break,
        }
    }
    drop(conn);
    end(&core, bytes_in, &counters);
    // The client may still be sending (a PING's answer, a window update) when the proxy
    // closes: closing a socket with unread bytes resets it, and the reset can destroy the
    // GOAWAY the client has not read yet. So read and discard until the client closes,
    // for at most the lingering-close limit.
    if let Some(stream) = lingering {
        crate::http1::server::linger_close(stream, core.lingering_close).await;
    }
}

/// A duplicate of `stream`'s socket as a stream of this core (`None` if the descriptor
/// cannot be duplicated: the socket is then closed abruptly, as before).
fn linger_handle(stream: &monoio::net::TcpStream) -> Option<monoio::net::TcpStream> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: `dup` makes a new descriptor this function owns from here on.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a fresh descriptor of a connected TCP socket, owned by nothing else.
    let std = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    monoio::net::TcpStream::from_std(std).ok()
}

fn end(core: &Core, read_before: u64, counters: &super::io::Counters) {
    use coremesh_telemetry::Peer;
    let m = core.metrics.borrow();
    m.record_client_connection_closed();
    m.record_bytes_received(Peer::Client, read_before + counters.read.get());
    m.record_bytes_sent(Peer::Client, counters.written.get());
}
