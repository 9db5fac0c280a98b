//! A core's HTTP/2 connections to endpoints: opened when a request first needs one,
//! multiplexed by every request of the core that goes there, another opened when every
//! open one is at the endpoint's MAX_CONCURRENT_STREAMS (up to `[http2]
//! max_upstream_connections`), and forgotten when it closes or fails. The endpoint is
//! still chosen per request by the balancer; a connection only carries streams. When the
//! core stops, after its grace period, [`close_all`] ends them: their tasks hold the core
//! only weakly and are awaited, so none outlives it.

use super::io::H2Io;
use crate::core::Core;
use crate::error::ProxyError;
use crate::signal::Signal;
use crate::transport::tls_upstream::Alpn;
use bytes::Bytes;
use coremesh_discovery::Settings;
use h2::client::SendRequest;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// The core's open HTTP/2 connections, by endpoint, each with a number that tells a
/// replaced connection from its successor.
#[derive(Default)]
pub struct H2Upstreams {
    conns: HashMap<SocketAddr, Vec<Upstream>>,
    /// Endpoints a connection is being opened to, fired when it is open (or failed): a
    /// burst of requests to a new endpoint shares one connection instead of opening one
    /// each.
    opening: HashMap<SocketAddr, Rc<crate::signal::Signal>>,
    next_id: u64,
    /// Fired by [`close_all`]: every connection's task ends.
    closing: Rc<Signal>,
    /// Connection tasks still running, and the signal fired when the last one ended.
    live: Rc<Cell<usize>>,
    all_ended: Rc<Signal>,
}

impl H2Upstreams {
    /// New streams to `addr` open a new connection (its TLS changed); the streams on the
    /// connections it had finish there, and those connections close when their last one
    /// ends and the sender is gone.
    pub fn forget(&mut self, addr: SocketAddr) {
        self.conns.remove(&addr);
    }
}

/// One open connection to an endpoint and the streams this core has open on it.
#[derive(Clone)]
struct Upstream {
    id: u64,
    sender: SendRequest<Bytes>,
    streams: Rc<Cell<usize>>,
}

impl Upstream {
    /// Another stream fits under the endpoint's MAX_CONCURRENT_STREAMS (past it, `h2`
    /// would queue the stream until one ends).
    fn has_room(&self) -> bool {
        self.streams.get() < self.sender.current_max_send_streams()
    }
}

/// A stream's place on its connection, held for as long as the stream lives (request and
/// response): dropping it makes room for another.
pub struct StreamSlot(Rc<Cell<usize>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// How long [`close_all`] waits for the connections' tasks to end.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// End every HTTP/2 connection of the core to its endpoints (the core is stopping and its
/// grace period is over) and wait, briefly, for their tasks to finish.
pub async fn close_all(core: &Core) {
    let (closing, live, ended) = {
        let mut ups = core.h2_upstreams.borrow_mut();
        ups.conns.clear();
        (ups.closing.clone(), ups.live.clone(), ups.all_ended.clone())
    };
    closing.fire();
    if live.get() > 0 {
        let _ = monoio::time::timeout(CLOSE_WAIT, ended.wait()).await;
    }
}

/// A stream-ready handle on a connection to `addr` with room for one more stream, and
/// the stream's slot on it: an open connection with room, else a new one (at most
/// `[http2] max_upstream_connections` per endpoint), else the least busy one (the stream
/// then waits in `h2` for one to end).
pub async fn ready(
    core: &Rc<Core>,
    addr: SocketAddr,
    settings: &Settings,
) -> Result<(SendRequest<Bytes>, StreamSlot), ProxyError> {
    let limit = core.snapshot().http2.max_upstream_connections.max(1) as usize;
    let chosen = loop {
        let (roomy, least_busy, open) = {
            let ups = core.h2_upstreams.borrow();
            let list = ups.conns.get(&addr).map_or(&[][..], Vec::as_slice);
            (
                list.iter().find(|u| u.has_room()).cloned(),
                list.iter().min_by_key(|u| u.streams.get()).cloned(),
                list.len(),
            )
        };
        if let Some(found) = roomy {
            break found;
        }
        let opening = core.h2_upstreams.borrow().opening.get(&addr).cloned();
        if let Some(signal) = opening {
            signal.wait().await;
            continue;
        }
        if open < limit || least_busy.is_none() {
            match (open_once(core, addr, settings).await, least_busy) {
                (Ok(new), _) => break new,
                // Failing to open one more: queue on an open one.
                (Err(_), Some(busy)) => break busy,
                (Err(e), None) => return Err(e),
            }
        }
        if let Some(busy) = least_busy {
            break busy;
        }
    };
    let Upstream {
        id,
        sender,
        streams,
    } = chosen;
    match sender.ready().await {
        Ok(sender) => {
            streams.set(streams.get() + 1);
            Ok((sender, StreamSlot(streams)))
        }
        Err(e) => {
            forget(core, addr, id);
            tracing::debug!(%addr, "upstream HTTP/2 connection unusable: {e}");
            // No stream was opened: nothing reached the endpoint.
            Err(ProxyError::UpstreamClosed {
                request_sent: false,
            })
        }
    }
}

/// Open a connection to `addr` while others wait for it.
async fn open_once(
    core: &Rc<Core>,
    addr: SocketAddr,
    settings: &Settings,
) -> Result<Upstream, ProxyError> {
    let signal = Rc::new(crate::signal::Signal::default());
    core.h2_upstreams
        .borrow_mut()
        .opening
        .insert(addr, signal.clone());
    // Also when this attempt is dropped half-way (its timeout): the waiters try again.
    let _done = Opened { core, addr, signal };
    open(core, addr, settings).await
}

/// Clears an endpoint's opening mark and wakes those waiting on it.
struct Opened<'a> {
    core: &'a Core,
    addr: SocketAddr,
    signal: Rc<crate::signal::Signal>,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        let mut ups = self.core.h2_upstreams.borrow_mut();
        if ups
            .opening
            .get(&self.addr)
            .is_some_and(|s| Rc::ptr_eq(s, &self.signal))
        {
            ups.opening.remove(&self.addr);
        }
        drop(ups);
        self.signal.fire();
    }
}

async fn open(
    core: &Rc<Core>,
    addr: SocketAddr,
    settings: &Settings,
) -> Result<Upstream, ProxyError> {
    let stream = crate::http1::forward::connect_for(addr, settings, Alpn::H2).await?;
    core.pool.borrow_mut().opened += 1;
    let counters = super::io::Counters::default();
    let io = H2Io::new(stream, Vec::new(), counters.clone())
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    let limits = &core.snapshot().http2;
    let handshake = h2::client::Builder::new()
        .initial_window_size(limits.initial_stream_window_bytes)
        .initial_connection_window_size(limits.initial_connection_window_bytes)
        .max_header_list_size(limits.max_header_list_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .handshake::<_, Bytes>(io)
        .await;
    let (sender, mut connection) = handshake.map_err(|e| ProxyError::Connect(e.to_string()))?;
    // The endpoint's preface (its SETTINGS) comes first: read it before the first stream
    // goes out, so that a new connection is not sent more streams than the endpoint's
    // MAX_CONCURRENT_STREAMS (they would be refused).
    let settled = poll_fn(|cx| match Pin::new(&mut connection).poll(cx) {
        Poll::Ready(ended) => Poll::Ready(Err(ended.err())),
        Poll::Pending if counters.read.get() > 0 => Poll::Ready(Ok(())),
        Poll::Pending => Poll::Pending,
    });
    let limit = Duration::from_millis(settings.connect_timeout_ms);
    match monoio::time::timeout(limit, settled).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let why = e.map_or_else(|| "closed".to_string(), |e| e.to_string());
            return Err(ProxyError::Connect(format!(
                "HTTP/2 connection ended before the endpoint's SETTINGS: {why}"
            )));
        }
        Err(_) => return Err(ProxyError::ConnectTimeout),
    }
    let upstream = {
        let mut ups = core.h2_upstreams.borrow_mut();
        ups.next_id += 1;
        let upstream = Upstream {
            id: ups.next_id,
            sender,
            streams: Rc::new(Cell::new(0)),
        };
        ups.conns.entry(addr).or_default().push(upstream.clone());
        upstream
    };
    let id = upstream.id;
    // Weakly: a task left behind must not keep the core (and its exporters) alive.
    let owner = Rc::downgrade(core);
    let (closing, live, all_ended) = {
        let ups = core.h2_upstreams.borrow();
        (ups.closing.clone(), ups.live.clone(), ups.all_ended.clone())
    };
    live.set(live.get() + 1);
    monoio::spawn(async move {
        monoio::select! {
            ended = connection => if let Err(e) = ended {
                tracing::debug!(%addr, "upstream HTTP/2 connection ended: {e}");
            },
            _ = closing.wait() => {},
        }
        if let Some(core) = owner.upgrade() {
            forget(&core, addr, id);
        }
        live.set(live.get() - 1);
        if live.get() == 0 && closing.is_fired() {
            all_ended.fire();
        }
    });
    Ok(upstream)
}

/// Forget `addr`'s connection `id` (the others stay).
fn forget(core: &Core, addr: SocketAddr, id: u64) {
    let mut ups = core.h2_upstreams.borrow_mut();
    if let Some(list) = ups.conns.get_mut(&addr) {
        list.retain(|u| u.id != id);
        if list.is_empty() {
            ups.conns.remove(&addr);
        }
    }
}

/// What an HTTP/2 error on a request stream means for retrying it: a stream the endpoint
/// refused, or one above the last stream id of its GOAWAY, was never processed.
pub fn stream_error(e: &h2::Error) -> ProxyError {
    let refused = e.reason() == Some(h2::Reason::REFUSED_STREAM);
    let above_goaway = e.is_go_away() && e.is_remote() && e.reason() == Some(h2::Reason::NO_ERROR);
    ProxyError::UpstreamClosed {
        request_sent: !(refused || above_goaway),
    }
}
