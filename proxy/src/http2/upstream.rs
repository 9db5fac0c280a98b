//! A core's HTTP/2 connections to endpoints: one per endpoint, opened when a request
//! first needs it, multiplexed by every request of the core that goes there, and
//! forgotten when it closes or fails (the next request opens a new one). The endpoint is
//! still chosen per request by the balancer; a connection only carries streams.

use super::io::H2Io;
use crate::core::Core;
use crate::error::ProxyError;
use crate::transport::tls_upstream::Alpn;
use bytes::Bytes;
use coremesh_discovery::Settings;
use h2::client::SendRequest;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

/// The core's open HTTP/2 connections, by endpoint, each with a number that tells a
/// replaced connection from its successor.
#[derive(Default)]
pub struct H2Upstreams {
    conns: HashMap<SocketAddr, (u64, SendRequest<Bytes>)>,
    /// Endpoints a connection is being opened to, fired when it is open (or failed): a
    /// burst of requests to a new endpoint shares one connection instead of opening one
    /// each.
    opening: HashMap<SocketAddr, Rc<crate::signal::Signal>>,
    next_id: u64,
}

/// A stream-ready handle on `addr`'s connection, opened first if there is none.
pub async fn ready(
    core: &Rc<Core>,
    addr: SocketAddr,
    settings: &Settings,
) -> Result<SendRequest<Bytes>, ProxyError> {
    let (id, sender) = loop {
        let existing = core.h2_upstreams.borrow().conns.get(&addr).cloned();
        if let Some(found) = existing {
            break found;
        }
        let opening = core.h2_upstreams.borrow().opening.get(&addr).cloned();
        match opening {
            Some(signal) => signal.wait().await,
            None => break open_once(core, addr, settings).await?,
        }
    };
    match sender.ready().await {
        Ok(sender) => Ok(sender),
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
) -> Result<(u64, SendRequest<Bytes>), ProxyError> {
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
) -> Result<(u64, SendRequest<Bytes>), ProxyError> {
    let stream = crate::http1::forward::connect_for(addr, settings, Alpn::H2).await?;
    core.pool.borrow_mut().opened += 1;
    let io = H2Io::new(stream, Vec::new(), Default::default())
        .map_err(|e| ProxyError::Connect(e.to_string()))?;
    let limits = &core.snapshot().http2;
    let handshake = h2::client::Builder::new()
        .initial_window_size(limits.initial_stream_window_bytes)
        .initial_connection_window_size(limits.initial_connection_window_bytes)
        .max_header_list_size(limits.max_header_list_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .handshake::<_, Bytes>(io)
        .await;
    let (sender, connection) = handshake.map_err(|e| ProxyError::Connect(e.to_string()))?;
    let id = {
        let mut ups = core.h2_upstreams.borrow_mut();
        ups.next_id += 1;
        let id = ups.next_id;
        ups.conns.insert(addr, (id, sender.clone()));
        id
    };
    let owner = core.clone();
    monoio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, "upstream HTTP/2 connection ended: {e}");
        }
        forget(&owner, addr, id);
    });
    Ok((id, sender))
}

/// Forget `addr`'s connection `id` (a newer one stays).
fn forget(core: &Core, addr: SocketAddr, id: u64) {
    let mut ups = core.h2_upstreams.borrow_mut();
    if ups.conns.get(&addr).is_some_and(|(found, _)| *found == id) {
        ups.conns.remove(&addr);
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
