//! A client's HTTP/2 connection: the handshake under the head-read timeout and the
//! `[http2]` limits, then every request stream served as its own task ([`super::stream`])
//! on this core or, when another core is less busy, on that one ([`super::spread`]; this
//! core keeps driving the connection), until the client closes, the connection reaches its
//! maximum age or the proxy shuts down (both end with GOAWAY and let the streams in flight
//! finish), or it has had no stream open for `idle_timeout_ms` (GOAWAY NO_ERROR, then
//! closed). Also the task that serves the streams other cores hand to this one
//! ([`serve_inbox`]).

use super::io::H2Io;
use super::open_streams::{OpenStreams, Ticket};
use super::spread::{Handoff, Inbox, Moved};
use crate::core::Core;
use crate::pipeline::Origin;
use crate::transport::conn::Conn;
use bytes::Bytes;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The window `[http2] max_control_frames` counts over.
const CONTROL_FRAME_WINDOW: Duration = Duration::from_secs(10);

enum Event<T> {
    /// Time to stop taking streams: shutdown began, or the connection is old enough.
    Stop,
    /// The idle timer ran out: close if no stream was open for the whole idle time.
    IdleCheck,
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
    let idle_limit = Duration::from_millis(limits.idle_timeout_ms);
    let mut idle: Option<Pin<Box<monoio::time::Sleep>>> =
        (limits.idle_timeout_ms > 0).then(|| Box::pin(monoio::time::sleep(idle_limit)));
    let open_streams = OpenStreams::new(Instant::now());
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
            let idle_due = !closing
                && idle
                    .as_mut()
                    .is_some_and(|t| t.as_mut().poll(cx).is_ready());
            let accepted = conn.poll_accept(cx);
            if flooded.get() && !calmed {
                // A flood of SETTINGS or PING frames: GOAWAY ENHANCE_YOUR_CALM.
                calmed = true;
                conn.abrupt_shutdown(h2::Reason::ENHANCE_YOUR_CALM);
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Only once every frame read so far was taken in (no stream waits to be
            // accepted): a GOAWAY then names the last stream the client may count on.
            if accepted.is_pending() && idle_due {
                idle = None;
                return Poll::Ready(Event::IdleCheck);
            }
            accepted.map(Event::Accept)
        })
        .await;
        match event {
            Event::Stop => {
                conn.graceful_shutdown();
                closing = true;
            }
            Event::IdleCheck => match open_streams.idle_for(Instant::now()) {
                Some(quiet) if quiet >= idle_limit => {
                    // No stream is open and none can be lost: GOAWAY now, then close.
                    conn.abrupt_shutdown(h2::Reason::NO_ERROR);
                    closing = true;
                }
                // Still in use, or idle for less: look again when the limit can be reached.
                quiet => {
                    let left = idle_limit.saturating_sub(quiet.unwrap_or_default());
                    idle = Some(Box::pin(monoio::time::sleep(left.max(IDLE_RECHECK_MIN))));
                }
            },
            Event::Accept(Some(Ok((mut request, respond)))) => {
                client_id.apply(request.headers_mut());
                let handoff = Handoff {
                    request,
                    respond,
                    peer,
                    origin,
                    ticket: open_streams.open(),
                };
                dispatch(&core, &limits, handoff);
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

/// The shortest pause before the idle timer looks again: a connection in steady use is
/// looked at no more often than this.
const IDLE_RECHECK_MIN: Duration = Duration::from_millis(10);

/// Serve a stream accepted here: on the least busy core when `[http2] spread_streams`
/// says so, else (or when that core takes no more streams) here.
fn dispatch(core: &Rc<Core>, limits: &coremesh_discovery::Http2Settings, handoff: Handoff) {
    let handoff = match core.spread.get() {
        Some(member) => match member.target(limits.spread_streams, limits.spread_threshold) {
            Some(to) => match member.send(to, handoff) {
                Ok(()) => {
                    let stats = &core.stats;
                    stats
                        .streams_handed_off
                        .set(stats.streams_handed_off.get() + 1);
                    return;
                }
                Err(back) => back,
            },
            None => handoff,
        },
        None => handoff,
    };
    // Counted in the load now, not when the task first runs: the next stream's choice,
    // maybe in the same burst, must see it.
    let load = core.stream_load();
    monoio::spawn(serve_stream(core.clone(), handoff, load));
}

/// Serve one stream on this core, holding `guard` (its share of the core's load) and the
/// stream's ticket until it ends.
async fn serve_stream<G>(core: Rc<Core>, handoff: Handoff, guard: G) {
    let _guard = guard;
    let Handoff {
        request,
        respond,
        peer,
        origin,
        ticket,
    } = handoff;
    let _ticket: Ticket = ticket;
    super::stream::handle(core, request, respond, peer, origin).await;
}

/// Serve the streams and connections other cores hand to this one until shutdown; then
/// take no more (one sent after that is served where it was accepted) and serve those
/// already sent.
pub async fn serve_inbox(core: Rc<Core>, mut inbox: Inbox) {
    let Some(member) = core.spread.get() else {
        return;
    };
    loop {
        monoio::select! {
            next = inbox.recv() => match next {
                Ok(message) => take_in_moved(&core, member.took(message)),
                Err(_) => return,
            },
            _ = core.shutdown.wait() => break,
        }
    }
    member.close(&mut inbox);
    while let Ok(message) = inbox.recv().await {
        take_in_moved(&core, member.took(message));
    }
}

fn take_in_moved(core: &Rc<Core>, moved: Moved) {
    match moved {
        Moved::Stream(handoff) => take_in(core, handoff),
        Moved::Connection(connection) => crate::runtime::take_in_connection(core, connection),
    }
}

fn take_in(core: &Rc<Core>, handoff: Handoff) {
    let guard = core.handed_in_guard();
    monoio::spawn(serve_stream(core.clone(), handoff, guard));
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
