//! TLS termination on the inbound side: a connection whose first bytes are a ClientHello
//! is handshaken (client certificates verified by the server config) under a timeout,
//! then served over TLS like any other; a listener that requires TLS closes a plaintext
//! connection. Refusals are counted by reason in
//! `coremesh_tls_handshake_failures_total{direction="inbound",reason}` (`tls_stats.rs`).

use crate::transport::conn::{Conn, Stream};
use crate::transport::detect::DetectReason;
use crate::transport::tls::TlsStream;
use crate::transport::tls_stats::{FailReason, TlsStats};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default time an inbound TLS handshake may take (`InboundTls::handshake_timeout`): a
/// client that has sent its ClientHello finishes in two round trips; one that stalls (or
/// sent a truncated hello) holds its socket no longer than this.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS on an inbound listener (see the module doc).
///
/// Defaults: `require` false, `handshake_timeout` [`DEFAULT_HANDSHAKE_TIMEOUT`] (5 s).
#[derive(Debug, Clone)]
pub struct InboundTls {
    /// Verifies client certificates and holds the proxy's own; its ALPN list is set by
    /// [`InboundTls::new`] (`h2`, then `http/1.1`).
    pub config: Arc<rustls::ServerConfig>,
    /// Close plaintext connections instead of serving them.
    pub require: bool,
    /// The handshake must end within this (counted as `timeout` otherwise).
    pub handshake_timeout: Duration,
}

impl InboundTls {
    /// Termination with `config` (its ALPN list replaced by `h2`, `http/1.1`).
    pub fn new(config: Arc<rustls::ServerConfig>, require: bool) -> InboundTls {
        let mut config = (*config).clone();
        config.alpn_protocols = vec![
            crate::transport::tls::ALPN_H2.to_vec(),
            crate::transport::tls::ALPN_HTTP1.to_vec(),
        ];
        InboundTls {
            config: Arc::new(config),
            require,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Handshake on `client`, whose buffer holds the ClientHello's first bytes (detection read
/// them); the connection over TLS, or why it was refused (counted in `stats`).
pub async fn accept(
    client: Conn,
    tls: &InboundTls,
    stats: &TlsStats,
    peer: SocketAddr,
) -> Result<Conn, FailReason> {
    match handshake(client, tls).await {
        Ok(conn) => {
            stats.succeeded();
            Ok(conn)
        }
        Err(e) => {
            let reason = FailReason::of(&e);
            refuse(stats, reason, peer, &e);
            Err(reason)
        }
    }
}

/// Why a connection that is not TLS is refused on a listener that requires TLS.
pub fn plaintext_refusal(detected: DetectReason) -> FailReason {
    match detected {
        // Silence, or a hello too short to tell, until the detection timeout.
        DetectReason::Timeout => FailReason::Timeout,
        DetectReason::Closed => FailReason::Closed,
        _ => FailReason::Plaintext,
    }
}

/// Count and log one refused connection.
pub fn refuse(stats: &TlsStats, reason: FailReason, peer: SocketAddr, why: &dyn std::fmt::Display) {
    stats.failed(reason);
    tracing::debug!(%peer, reason = reason.label(), "inbound TLS refused: {why}");
}

async fn handshake(client: Conn, tls: &InboundTls) -> io::Result<Conn> {
    let Conn {
        stream,
        mut buf,
        start,
        ..
    } = client;
    let Stream::Plain(tcp) = stream else {
        return Err(io::Error::other("already TLS"));
    };
    buf.drain(..start.min(buf.len()));
    let mut stream = TlsStream::server(tcp, tls.config.clone(), buf)?;
    match monoio::time::timeout(tls.handshake_timeout, stream.handshake()).await {
        Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        Ok(res) => res?,
    }
    // A TLS connection counts the bytes of its requests and responses (plaintext), as an
    // HTTP/2 or HTTP/1 one does; the handshake's are not counted.
    Ok(Conn::new(stream, Vec::new()))
}
