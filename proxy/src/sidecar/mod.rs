//! The transparent sidecar's two sides: connections the interception rules redirect to
//! the proxy, outbound (the application's own calls) and inbound (calls to the
//! application). For each accepted connection a side reads its original destination,
//! decides where it goes ([`outbound::decide`], [`inbound::decide`]), detects its protocol
//! ([`crate::transport::detect`]), and then serves HTTP/1 through the request path
//! ([`crate::http1::server::serve_conn`]) or relays opaque TCP both ways
//! ([`crate::transport::opaque`]). HTTP/2 (prior knowledge) is told from HTTP/1 by its
//! preface when served. TLS is relayed as opaque TCP, except on a side with
//! [`Side::tls`] (inbound), which terminates it ([`tls`]) and serves what ALPN picked, or
//! what the decrypted bytes are (HTTP, or opaque TCP decided by the inbound policy).
//!
//! A connection whose original destination is one of the proxy's own listeners was not
//! redirected (or was redirected to the proxy itself): outbound refuses it (it would
//! loop), inbound sends it to `app_port` when one is configured and refuses it otherwise.
//! Refusals are counted in `coremesh_sidecar_refused_total{direction}` and logged at
//! debug level (and the first one per core at warn level).

pub mod inbound;
pub mod outbound;
pub mod passthrough;
pub mod stats;
pub mod tls;
pub mod waiting;

use crate::core::{ConnectionGuard, Core};
use crate::http1::server::serve_conn;
use crate::pipeline::{Origin, Target};
use crate::transport::conn::Conn;
use crate::transport::detect::{detect, DetectConfig, DetectReason, Protocol};
use crate::transport::opaque::{self, RelayConfig};
use crate::transport::original_dst::{classify, original_destination, Destination};
use monoio::net::TcpStream;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;

/// Which listener a connection came in on: the metrics label `direction`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The explicit `[proxy] listen`.
    Proxy,
    Inbound,
    Outbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Proxy => "proxy",
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    /// The transport metrics' side (the explicit listener has none: it does no detection).
    fn telemetry_side(self) -> coremesh_telemetry::Side {
        match self {
            Direction::Inbound => coremesh_telemetry::Side::Inbound,
            _ => coremesh_telemetry::Side::Outbound,
        }
    }
}

/// One side's settings as the cores use them (the same on every core).
#[derive(Debug, Clone)]
pub struct Side {
    pub direction: Direction,
    pub detect: DetectConfig,
    pub relay: RelayConfig,
    /// Every address this proxy listens on (as bound), to recognise loops.
    pub own_listeners: Vec<SocketAddr>,
    /// Inbound only: the application's address, and its fixed port when configured.
    pub app_address: IpAddr,
    pub app_port: Option<u16>,
    /// This side's counters, shared by every core (one atomic add per connection event).
    pub stats: Arc<stats::SideStats>,
    /// Inbound: TLS termination (none: TLS is relayed as opaque TCP, as any side does).
    pub tls: Option<tls::InboundTls>,
}

impl Side {
    /// The outbound side of `settings`.
    pub fn outbound(settings: &coremesh_discovery::SideSettings) -> Side {
        Side {
            direction: Direction::Outbound,
            detect: DetectConfig::from(settings),
            relay: RelayConfig::from(settings),
            own_listeners: Vec::new(),
            app_address: coremesh_discovery::DEFAULT_APP_ADDRESS,
            app_port: None,
            stats: Arc::default(),
            tls: None,
        }
    }

    /// The inbound side of `settings`.
    pub fn inbound(settings: &coremesh_discovery::InboundSettings) -> Side {
        Side {
            direction: Direction::Inbound,
            app_address: settings.app_address,
            app_port: settings.app_port,
            ..Side::outbound(&settings.side)
        }
    }
}

/// Where a side sends one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Outbound: balanced over the service claiming this destination, else passed
    /// through to it (decided again per request / at connect, from the snapshot).
    Destination(SocketAddr),
    /// Inbound: to the application at this address.
    Application(SocketAddr),
    /// Refused: the destination is the proxy itself.
    Refuse(SocketAddr),
}

/// Serve one connection accepted on `side`'s listener.
pub async fn serve_side(
    core: Rc<Core>,
    side: Arc<Side>,
    stream: TcpStream,
    peer: SocketAddr,
    counted: ConnectionGuard,
) {
    let _ = stream.set_nodelay(true);
    let direction = side.direction;
    let destination = original_destination(&stream).and_then(|destination| {
        let local = stream.local_addr()?;
        Ok(classify(destination, local, &side.own_listeners))
    });
    let destination: Destination = match destination {
        Ok(destination) => destination,
        Err(e) => {
            tracing::debug!(direction = direction.label(), %peer, "no original destination: {e}");
            stats::count(&side.stats.refused);
            return;
        }
    };
    let decision = match direction {
        Direction::Inbound => inbound::decide(&side, destination),
        _ => outbound::decide(destination),
    };
    let (target, dst_port) = match decision {
        Decision::Refuse(to) => {
            side.stats.refused(&core, direction, peer, to);
            return;
        }
        Decision::Destination(to) => (Target::Destination(to), to.port()),
        Decision::Application(to) => (Target::Application(to), to.port()),
    };
    stats::count(&side.stats.connections);
    let mut client = Conn::new(stream, Vec::new());
    // While it waits for its first bytes the connection holds no place under the core's
    // `max_connections`: the waiting ones are bounded on their own, the oldest shed first
    // (`waiting.rs`), so connections that send nothing cannot lock out one that speaks.
    drop(counted);
    let max_connections = core.defaults.max_connections;
    let (ticket, shed) = waiting::on_this_core().enter(max_connections);
    if shed > 0 {
        side.stats
            .shed
            .fetch_add(shed, std::sync::atomic::Ordering::Relaxed);
    }
    let detection = monoio::select! {
        detection = detect(&mut client, dst_port, &side.detect) => Some(detection),
        () = ticket.shed() => None,
    };
    drop(ticket);
    let Some(detection) = detection else {
        tracing::debug!(direction = direction.label(), %peer, "shed while waiting in detection");
        return;
    };
    let counted = core.connection_guard();
    if core.connections() > max_connections {
        // Decided, but the core already serves as many connections as it may.
        let rejected = &core.stats.rejected_connections;
        rejected.set(rejected.get() + 1);
        return;
    }
    let telemetry_side = direction.telemetry_side();
    opaque::record_detection(&core, telemetry_side, detection);
    if let Some(tls) = &side.tls {
        let tls_stats = &side.stats.tls;
        if detection.protocol == Protocol::Tls {
            let Ok(client) = tls::accept(client, tls, tls_stats, peer).await else {
                return;
            };
            let origin = Origin { direction, target };
            tls::serve(core, &side, client, peer, counted, origin, dst_port).await;
            return;
        }
        if tls.require {
            let reason = tls::plaintext_refusal(detection.reason);
            tls::refuse(tls_stats, reason, peer, &"TLS is required");
            return;
        }
    }
    // An HTTP/2 connection is told from HTTP/1 again by its preface when served.
    if matches!(detection.protocol, Protocol::Http1 | Protocol::Http2) {
        let origin = Origin { direction, target };
        serve_conn(core, client, peer, counted, origin).await;
        return;
    }
    if detection.reason == DetectReason::Closed && client.buffered() == 0 {
        return;
    }
    // Opaque TCP in plaintext is decided once by `[inbound]`'s own policy.
    if direction == Direction::Inbound && !inbound::admit_opaque(&core, None, peer) {
        return;
    }
    let relayed = match target {
        Target::Destination(to) => match core.snapshot().service_for_destination(to) {
            Some(service) => {
                opaque::relay_to_service(&core, client, telemetry_side, service, &side.relay)
                    .await
                    .ok()
            }
            None => {
                let limit_ms = core.snapshot().passthrough.settings.connect_timeout_ms;
                relay_direct(&core, client, telemetry_side, to, limit_ms, &side.relay).await
            }
        },
        Target::Application(to) => {
            let limit_ms = core.defaults.connect_timeout_ms;
            relay_direct(&core, client, telemetry_side, to, limit_ms, &side.relay).await
        }
        Target::Route => None,
    };
    if relayed.is_none() {
        stats::count(&side.stats.connect_failures);
    }
    drop(counted);
}

/// Relay `client` to `to` itself (passthrough, or the application), counted under no
/// service, connecting within `connect_timeout_ms`. `None` when `to` cannot be reached.
pub(crate) async fn relay_direct(
    core: &Core,
    client: Conn,
    side: coremesh_telemetry::Side,
    to: SocketAddr,
    connect_timeout_ms: u64,
    cfg: &RelayConfig,
) -> Option<opaque::RelayReport> {
    let started = std::time::Instant::now();
    let upstream = outbound::connect_direct(to, connect_timeout_ms).await?;
    opaque::record_connection(core, side, None, started.elapsed());
    let report = opaque::relay(client, upstream, cfg).await;
    opaque::record_relay(core, side, None, &report);
    Some(report)
}
