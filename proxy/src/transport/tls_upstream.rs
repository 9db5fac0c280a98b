//! Outbound TLS: which endpoints a core's upstream connections handshake with (a client
//! config, the server name and the identity expected of the server), and that handshake.
//!
//! The table is per core (a thread-local: each core's thread sets its own copy when it
//! applies a configuration), keyed by endpoint address, so a service's meshed endpoints can
//! be told from the others. An empty table costs a plain connect one lookup of its length.
//!
//! ALPN: a connection opened for HTTP/1 offers `http/1.1`, one opened for HTTP/2 offers
//! `h2`, so the protocol a request came in with is the one it leaves with; the endpoint's
//! choice (or none) is accepted as it is. A connection opened for opaque TCP offers no
//! protocol, so that the inbound side reads its bytes as they are (detection on the
//! decrypted bytes) instead of serving them as HTTP.

use super::tls::{TlsStream, ALPN_H2, ALPN_HTTP1};
use super::tls_stats::{FailReason, TlsStats};
use monoio::net::TcpStream;
use rustls::pki_types::ServerName;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// Default time an outbound TLS handshake may take (`UpstreamTls::handshake_timeout`):
/// a handshake is two round trips and some signatures, far below this on any network a
/// mesh runs on, while a stalled endpoint is given up on well before a request deadline.
pub const DEFAULT_UPSTREAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which protocol a new upstream connection is for (what ALPN offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    Http1,
    H2,
    /// Opaque TCP: no ALPN offered.
    Opaque,
}

/// How connections to one endpoint handshake.
pub struct UpstreamTls {
    http1: Arc<rustls::ClientConfig>,
    h2: Arc<rustls::ClientConfig>,
    opaque: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
    /// The server must present this identity ([`client_identity`] of its chain).
    expected_identity: Option<String>,
    pub handshake_timeout: Duration,
    /// The proxy's outbound handshake counters (shared by every endpoint of every core).
    stats: Arc<TlsStats>,
}

impl UpstreamTls {
    /// `config` verifies the server (its ALPN list is replaced per connection);
    /// `server_name` goes in SNI; `expected_identity`, when set, must be the identity of the
    /// certificate the server presents; `stats` counts each handshake's outcome.
    pub fn new(
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
        expected_identity: Option<String>,
        stats: Arc<TlsStats>,
    ) -> UpstreamTls {
        let with_alpn = |alpn: &[&[u8]]| {
            let mut c = (*config).clone();
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Arc::new(c)
        };
        UpstreamTls {
            http1: with_alpn(&[ALPN_HTTP1]),
            h2: with_alpn(&[ALPN_H2]),
            opaque: with_alpn(&[]),
            server_name,
            expected_identity,
            handshake_timeout: DEFAULT_UPSTREAM_HANDSHAKE_TIMEOUT,
            stats,
        }
    }

    /// The identity the server must present, if one is set.
    pub fn expected_identity(&self) -> Option<&str> {
        self.expected_identity.as_deref()
    }

    /// Where this endpoint's handshakes are counted.
    pub fn stats(&self) -> &Arc<TlsStats> {
        &self.stats
    }
}

thread_local! {
    static ENDPOINTS: RefCell<HashMap<SocketAddr, Rc<UpstreamTls>>> = RefCell::default();
}

/// On this core, connections to `addr` handshake with `tls` (`None`: plaintext again).
/// Connections already pooled stay as they are.
pub fn set_endpoint(addr: SocketAddr, tls: Option<UpstreamTls>) {
    ENDPOINTS.with(|e| match tls {
        Some(tls) => e.borrow_mut().insert(addr, Rc::new(tls)),
        None => e.borrow_mut().remove(&addr),
    });
}

/// Forget every endpoint's TLS on this core.
pub fn clear_endpoints() {
    ENDPOINTS.with(|e| e.borrow_mut().clear());
}

/// The TLS connections to `addr` use on this core, if any.
pub fn for_endpoint(addr: SocketAddr) -> Option<Rc<UpstreamTls>> {
    ENDPOINTS.with(|e| {
        let e = e.borrow();
        if e.is_empty() {
            return None;
        }
        e.get(&addr).cloned()
    })
}

/// Handshake on a new connection under `tls.handshake_timeout`; counted in `tls`'s stats
/// (the proxy's `coremesh_tls_handshakes_total{direction="outbound"}`, or
/// `coremesh_tls_handshake_failures_total{direction="outbound",reason}` when refused).
pub async fn handshake(tcp: TcpStream, tls: &UpstreamTls, alpn: Alpn) -> io::Result<TlsStream> {
    let result = handshake_inner(tcp, tls, alpn).await;
    match &result {
        Ok(_) => tls.stats.succeeded(),
        Err(e) => tls.stats.failed(FailReason::of(e)),
    }
    result
}

async fn handshake_inner(tcp: TcpStream, tls: &UpstreamTls, alpn: Alpn) -> io::Result<TlsStream> {
    let config = match alpn {
        Alpn::Http1 => tls.http1.clone(),
        Alpn::H2 => tls.h2.clone(),
        Alpn::Opaque => tls.opaque.clone(),
    };
    let mut stream = TlsStream::client(tcp, config, tls.server_name.clone())?;
    match monoio::time::timeout(tls.handshake_timeout, stream.handshake()).await {
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        Ok(res) => res?,
    }
    if let Some(expected) = &tls.expected_identity {
        let found = stream.identity();
        if found != Some(expected.as_str()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("the server's identity is {found:?}, not {expected}"),
            ));
        }
    }
    Ok(stream)
}
