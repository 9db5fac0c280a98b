//! TLS termination on the inbound side: a connection whose first bytes are a ClientHello
//! is handshaken (client certificates verified by the server config) under a timeout,
//! then served over TLS like any other; a listener that requires TLS closes a plaintext
//! connection. Refusals are counted by reason in
//! `coremesh_tls_handshake_failures_total{direction="inbound",reason}` (`tls_stats.rs`).
//!
//! What a TLS connection carries ([`serve`]): ALPN `h2` or `http/1.1` is HTTP, served by the
//! request path. Without ALPN (a peer proxy relaying opaque TCP offers none) the decrypted
//! first bytes decide, as detection does for plaintext ([`detect_decrypted`]): HTTP goes to
//! the request path, anything else is opaque TCP, relayed to the application when the
//! inbound policy admits the caller's identity ([`super::inbound::admit_opaque`]) and closed
//! otherwise, before a byte reaches the application.

use super::{inbound, Side};
use crate::core::{ConnectionGuard, Core};
use crate::pipeline::{Origin, Target};
use crate::transport::conn::{is_cancelled, Conn, Fill, Stream};
use crate::transport::detect::{decided, DetectConfig, DetectReason, Detection, Protocol};
use crate::transport::tls::{TlsStream, ALPN_H2, ALPN_HTTP1};
use crate::transport::tls_stats::{FailReason, TlsStats};
use monoio::io::Canceller;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Serve `client`, a connection whose TLS handshake is done, sent where `origin` says (the
/// application); `dst_port` is its original destination port (see the module doc).
pub async fn serve(
    core: Rc<Core>,
    side: &Side,
    mut client: Conn,
    peer: SocketAddr,
    counted: ConnectionGuard,
    origin: Origin,
    dst_port: u16,
) {
    let alpn = client.stream.tls().and_then(|t| t.alpn_protocol());
    let http_by_alpn = matches!(alpn, Some(p) if p == ALPN_H2 || p == ALPN_HTTP1);
    let detected = if http_by_alpn {
        None
    } else {
        Some(detect_decrypted(&mut client, dst_port, &side.detect).await)
    };
    let opaque = detected.filter(|d| !matches!(d.protocol, Protocol::Http1 | Protocol::Http2));
    let Some(detected) = opaque else {
        crate::http1::server::serve_conn(core, client, peer, counted, origin).await;
        return;
    };
    if detected.reason == DetectReason::Closed && client.buffered() == 0 {
        return;
    }
    let Target::Application(to) = origin.target else {
        return;
    };
    let certs = client.stream.tls().and_then(|t| t.peer_certificates());
    let peer_id = crate::identity::peer_id(certs).ok();
    if !inbound::admit_opaque(&core, peer_id.as_ref(), peer) {
        return;
    }
    let limit_ms = core.defaults.connect_timeout_ms;
    let telemetry_side = coremesh_telemetry::Side::Inbound;
    let relayed =
        super::relay_direct(&core, client, telemetry_side, to, limit_ms, &side.relay).await;
    if relayed.is_none() {
        super::stats::count(&side.stats.connect_failures);
    }
    drop(counted);
}

/// Detection on a TLS connection's decrypted first bytes: as
/// [`crate::transport::detect::detect`] decides on plaintext (opaque ports at once, HTTP/1,
/// the HTTP/2 preface, anything else or silence until `cfg.timeout` opaque), never
/// consuming. A TLS read may wait for the rest of a record after the socket was readable,
/// so the read itself runs under the timeout: cancelled then, and awaited, so that the
/// bytes it got are kept ([`Conn::fill_cancelable`]).
pub async fn detect_decrypted(conn: &mut Conn, dst_port: u16, cfg: &DetectConfig) -> Detection {
    let opaque = Detection::opaque;
    if cfg.opaque_ports.contains(&dst_port) {
        return opaque(DetectReason::OpaquePort);
    }
    let deadline = Instant::now() + cfg.timeout;
    loop {
        match decided(conn.data(), cfg.max_bytes) {
            // TLS inside TLS is not a protocol served here: opaque.
            Some(d) if d.protocol == Protocol::Tls => return opaque(DetectReason::Unrecognised),
            Some(d) => return d,
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return opaque(DetectReason::Timeout);
        }
        let canceller = Canceller::new();
        let filled = {
            let mut read = std::pin::pin!(conn.fill_cancelable(cfg.max_bytes, canceller.handle()));
            match monoio::time::timeout(left, read.as_mut()).await {
                Ok(filled) => filled,
                Err(_) => {
                    drop(canceller.cancel());
                    read.await
                }
            }
        };
        match filled {
            Ok(Fill::Read(_)) => {}
            Ok(Fill::Full) => return opaque(DetectReason::Unrecognised),
            Err(e) if is_cancelled(&e) => return opaque(DetectReason::Timeout),
            Ok(Fill::Eof) | Err(_) => return opaque(DetectReason::Closed),
        }
    }
}
