//! Opaque TCP: connecting to an endpoint of a service chosen by its balancer (another
//! endpoint after a connect failure), relaying bytes both ways unchanged, and counting
//! detections, connections and bytes.
//!
//! The relay is the tunnel of upgraded HTTP connections ([`crate::http1::tunnel::splice`]) with
//! the side's buffer size and idle timeout: bounded buffers, a FIN one way passed on as a
//! half-close while the other way keeps going, both closed once idle both ways. Either side
//! may be TLS: an endpoint of a service with `tls` is reached over mutual TLS (offering no
//! ALPN protocol), and the inbound side relays what a TLS caller sends when it is not HTTP.
//!
//! For the balancer an opaque connection is one request whose latency is the TCP connect:
//! it is recorded (a success, or a connect failure that counts towards ejection) as soon as
//! the connect ends, so it does not hold the endpoint's in-flight count for the life of
//! the connection.

use crate::core::Core;
use crate::error::ProxyError;
use crate::http1::tunnel::{splice, TunnelEnd};
use crate::transport::conn::{Conn, Stream};
use crate::transport::detect::Detection;
use crate::transport::tls_upstream::Alpn;
use coremesh_balancer::{FailureKind, Outcome};
use coremesh_discovery::{SideSettings, DEFAULT_TCP_IDLE_TIMEOUT_MS};
use coremesh_telemetry::{Peer, ServiceId, Side, Way};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Default idle timeout of an opaque connection (`tcp_idle_timeout_ms`,
/// [`DEFAULT_TCP_IDLE_TIMEOUT_MS`]).
pub const DEFAULT_TCP_IDLE_TIMEOUT: Duration = Duration::from_millis(DEFAULT_TCP_IDLE_TIMEOUT_MS);

/// How opaque connections are relayed on one side of the sidecar (from its
/// [`SideSettings`]).
///
/// Defaults: `buffer_bytes`
/// [`DEFAULT_TCP_BUFFER_BYTES`](coremesh_discovery::DEFAULT_TCP_BUFFER_BYTES) (16 KiB), `idle`
/// [`DEFAULT_TCP_IDLE_TIMEOUT`] (1 hour).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Most bytes read at once in each direction (the relay's memory per direction).
    pub buffer_bytes: usize,
    /// A connection with no byte moving either way for this long is closed on both sides.
    pub idle: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig::from(&SideSettings::default())
    }
}

impl From<&SideSettings> for RelayConfig {
    fn from(s: &SideSettings) -> Self {
        RelayConfig {
            buffer_bytes: s.tcp_buffer_bytes,
            idle: Duration::from_millis(s.tcp_idle_timeout_ms),
        }
    }
}

/// What a relayed connection carried each way, and whether the idle timeout ended it.
pub type RelayReport = TunnelEnd;

/// Copies both ways with bounded buffers and half-close until both sides are done or the
/// connection is idle for `cfg.idle`; bytes already buffered in `client` go first.
pub async fn relay(client: Conn, upstream: impl Into<Stream>, cfg: &RelayConfig) -> RelayReport {
    splice(
        client,
        Conn::new(upstream, Vec::new()),
        cfg.idle,
        cfg.buffer_bytes,
    )
    .await
}

/// An upstream connection to an endpoint of a service.
#[derive(Debug)]
pub struct Connected {
    pub stream: Stream,
    /// The endpoint connected to.
    pub addr: SocketAddr,
    /// Connects tried, this one included.
    pub attempts: u32,
}

/// Connects to an endpoint of service `service` (an index into the core's current
/// snapshot) chosen by the service's balancer, trying another endpoint on a connect
/// failure (refused, unreachable, timed out after `connect_timeout_ms`) while the service's
/// `max_attempts` allow, and recording each outcome with the balancer (a connect failure
/// counts towards ejection). Fails with the last connect error, or `NoEndpoints`.
pub async fn connect(core: &Core, service: usize) -> Result<Connected, ProxyError> {
    let snapshot = core.snapshot();
    let Some(settings) = snapshot.services.get(service).map(|s| &s.settings) else {
        return Err(ProxyError::NoEndpoints);
    };
    let max_attempts = settings.max_attempts.max(1);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = ProxyError::NoEndpoints;
    for attempts in 1..=max_attempts {
        // A snapshot installed during a connect moves the service's index (or drops it).
        let Some(choice) = core.choose(
            core.resolve_service(&snapshot, service),
            Instant::now(),
            &tried,
        ) else {
            break;
        };
        let started = Instant::now();
        // A meshed endpoint is reached over mutual TLS offering no ALPN protocol: its
        // inbound side then relays the bytes instead of serving them as HTTP.
        let result = crate::http1::forward::connect_for(choice.addr, settings, Alpn::Opaque).await;
        let now = Instant::now();
        let latency = now.duration_since(started);
        let outcome = match &result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure(FailureKind::Connect),
        };
        core.record(
            core.resolve_service(&snapshot, service),
            choice.addr,
            now,
            latency,
            outcome,
        );
        match result {
            Ok(stream) => {
                return Ok(Connected {
                    stream,
                    addr: choice.addr,
                    attempts,
                })
            }
            Err(e) => {
                tracing::debug!(endpoint = %choice.addr, attempt = attempts, "opaque connect failed: {e}");
                if !tried.contains(&choice.addr) {
                    tried.push(choice.addr);
                }
                last_error = e;
            }
        }
    }
    Err(last_error)
}

/// The metrics handle of service `service` (an index into the core's current snapshot).
/// Taken when a connection starts, it keeps counting under the service's name across
/// configuration changes.
pub fn service_metrics_id(core: &Core, service: usize) -> Option<ServiceId> {
    core.ids.borrow().service(service)
}

/// Counts a detection on `side`.
pub fn record_detection(core: &Core, side: Side, detection: Detection) {
    core.metrics
        .borrow()
        .record_detection(side, detection.protocol, detection.reason);
}

/// Counts an opaque connection on `side` to the service `id` stands for (`None`: to no
/// known service) once its upstream is connected, `connect_time` after the connect began.
pub fn record_connection(core: &Core, side: Side, id: Option<ServiceId>, connect_time: Duration) {
    let m = core.metrics.borrow();
    m.record_tcp_connection(side, id);
    m.record_tcp_connect_time(side, id, connect_time);
}

/// Counts what a finished relay carried, in the opaque TCP byte counters and in the
/// proxy's byte counters per peer. The client's bytes read during detection are part of
/// `report.to_upstream`: the client connection's own `bytes_in` must not be counted too.
pub fn record_relay(core: &Core, side: Side, id: Option<ServiceId>, report: &RelayReport) {
    let m = core.metrics.borrow();
    m.record_tcp_bytes(side, id, Way::ToUpstream, report.to_upstream);
    m.record_tcp_bytes(side, id, Way::ToClient, report.to_client);
    m.record_bytes_received(Peer::Client, report.to_upstream);
    m.record_bytes_sent(Peer::Upstream, report.to_upstream);
    m.record_bytes_received(Peer::Upstream, report.to_client);
    m.record_bytes_sent(Peer::Client, report.to_client);
}

/// Connects to service `service` and relays `client` to it, counting the connection and
/// its bytes on `side`. On a connect failure the client connection is dropped (closed).
pub async fn relay_to_service(
    core: &Core,
    client: Conn,
    side: Side,
    service: usize,
    cfg: &RelayConfig,
) -> Result<RelayReport, ProxyError> {
    let id = service_metrics_id(core, service);
    let started = Instant::now();
    let connected = connect(core, service).await?;
    record_connection(core, side, id, started.elapsed());
    let report = relay(client, connected.stream, cfg).await;
    record_relay(core, side, id, &report);
    Ok(report)
}
