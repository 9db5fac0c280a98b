//! The configuration model as read from TOML, with every default named in one place.
//!
//! Defaults (see `docs/configuration.md`):
//! - `proxy.listen` = none (127.0.0.1:4140 when neither `[inbound]` nor `[outbound]` is
//!   configured: see [`Config::explicit_listen`]), `proxy.admin` = none, `proxy.cores` = 0 (all CPUs),
//!   `proxy.driver` = "uring" (falls back to "legacy" where io_uring is missing),
//!   `proxy.shutdown_grace_ms` = 30000, `proxy.shutdown` = "grace"; the admin server's limits and the tunnel idle
//!   timeout: the `DEFAULT_ADMIN_*` and `DEFAULT_TUNNEL_*` constants below.
//! - `defaults.*`: see [`Settings`] and the `DEFAULT_*` constants below.

use crate::discovery_settings::DiscoverySettings;
use crate::listen::Listen;
use crate::one_or_many::one_or_many;
use crate::targets::EndpointEntry;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// How long a client may take to send a whole request head: slow-loris protection.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Largest request or response head accepted (431 / 502 beyond), as nginx's large buffers.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header fields in one head: httparse needs a caller-provided array of this size.
pub const DEFAULT_MAX_HEADERS: usize = 128;
/// Largest request body (413 beyond). Bodies are streamed, so this bounds abuse, not memory.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// TCP connect to an upstream endpoint; loopback / in-cluster connects take microseconds.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Whole request (all attempts) unless a route or the caller's deadline says less.
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 15_000;
/// An idle client keep-alive connection is closed after this long.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// After a response to a keep-alive client that sends its requests back to back, its
/// connection keeps its buffer and a read posted for this long before it waits for the next
/// request without a buffer: the next request (under load typically within a millisecond)
/// is then read with one submission instead of a wait for readability and a read, while a
/// connection that goes quiet holds its buffer only this long. Five milliseconds covers the
/// gaps of a loaded two-CPU machine (2 ms let 16% of the reads of a saturated benchmark
/// expire, 10 ms none).
pub const DEFAULT_CLIENT_KEEPALIVE_LINGER_MS: u64 = 5;
/// Longest `client_keepalive_linger_ms`: beyond a second a lingering connection is an
/// idle one holding a buffer.
pub const MAX_CLIENT_KEEPALIVE_LINGER_MS: u64 = 1_000;
/// Idle upstream connections kept per endpoint on each core.
pub const DEFAULT_POOL_MAX_IDLE: usize = 64;
/// How long an idle pooled upstream connection keeps the read for its next response posted
/// (io_uring), with that read's buffer, before it is watched without one: a second is far
/// longer than the gaps between requests of a connection in steady use, so they never pay
/// the cancel, and far shorter than the idle timeout, so a pool filled by a burst gives its
/// buffers back soon after.
pub const DEFAULT_POOL_READ_LINGER_MS: u64 = 1_000;
/// An idle pooled upstream connection is closed after this long (below typical server
/// keep-alive timeouts, nginx's 75 s and Node's 5 s being the usual ones).
pub const DEFAULT_POOL_IDLE_TIMEOUT_MS: u64 = 4_000;
/// Client connections open at once per core; more are accepted and closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 25_000;
/// In-flight requests may finish for this long after SIGTERM / SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Attempts per request, the first included, when a failure is safe to retry.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Retries may add at most this share of requests over the budget window (as Linkerd's 20%).
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// Retries always allowed per second, so a quiet service can still retry.
pub const DEFAULT_RETRY_BUDGET_MIN_PER_SEC: u32 = 10;
/// Window over which the retry budget counts requests and retries.
pub const DEFAULT_RETRY_BUDGET_WINDOW_MS: u64 = 10_000;
/// First retry back-off cap (full jitter); small, since a retry goes to another endpoint.
pub const DEFAULT_RETRY_BACKOFF_BASE_MS: u64 = 2;
/// Largest back-off between attempts.
pub const DEFAULT_RETRY_BACKOFF_MAX_MS: u64 = 50;
/// Request bodies up to this size are kept for replay; larger ones stream and are not retried.
pub const DEFAULT_REPLAY_BODY_LIMIT: usize = 64 * 1024;
/// Consecutive failures that eject an endpoint (0 turns ejection off).
pub const DEFAULT_EJECT_CONSECUTIVE_FAILURES: u32 = 5;
/// First ejection back-off; doubles with each ejection in a row.
pub const DEFAULT_EJECT_BASE_MS: u64 = 1_000;
/// Longest ejection back-off.
pub const DEFAULT_EJECT_MAX_MS: u64 = 60_000;
/// Never eject more than this share of a service's endpoints.
pub const DEFAULT_EJECT_MAX_PERCENT: u32 = 50;
/// Response statuses that count as endpoint failures for ejection: "5xx", "NNN" or "NNN-MMM".
pub const DEFAULT_FAILURE_STATUSES: &[&str] = &["5xx"];
/// An admin request (head and body) must arrive whole within this, however it trickles in;
/// a probe or a scrape sends its few hundred bytes at once.
pub const DEFAULT_ADMIN_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// An admin answer must be written within this; as Prometheus's default scrape timeout, so
/// a large `/metrics` reaches a slow scraper but a reader that stopped does not hold on.
pub const DEFAULT_ADMIN_WRITE_TIMEOUT_MS: u64 = 10_000;
/// Admin connections served at once; probes, a scraper and a few people need a handful,
/// and each may hold a thread while it waits for the cores' reports.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// An upgraded (WebSocket) tunnel with no bytes in either direction for this long is
/// closed on both sides (an hour, as common proxies do for tunnels).
pub const DEFAULT_TUNNEL_IDLE_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// Each direction of an upgraded (WebSocket) tunnel reads at most this much at a time: two
/// such buffers per tunnel.
pub const DEFAULT_TUNNEL_BUFFER_BYTES: usize = 16 * 1024;
/// How long the proxy keeps reading (and discarding) from a client it is closing on while
/// that client still had bytes coming, so that closing does not reset the connection over
/// the end of the last response (RFC 9112 §9.6). nginx's `lingering_timeout` is 5 s too.
pub const DEFAULT_LINGERING_CLOSE_MS: u64 = 5_000;
/// Default listener of `coremesh proxy` and of a config without `proxy.listen` and without
/// sides.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4140";
/// Default listener of the outbound side: where the interception rules send the
/// application's own connections (loopback only: nothing else should reach it).
pub const DEFAULT_OUTBOUND_LISTEN: &str = "127.0.0.1:4140";
/// The outbound side's IPv6 listener by default (skipped on a host without IPv6): the
/// ip6tables rules send the application's IPv6 connections here.
pub const DEFAULT_OUTBOUND_LISTEN_V6: &str = "[::1]:4140";
/// Default listener of the inbound side: where the interception rules send connections
/// arriving from other hosts, so it listens on every address.
pub const DEFAULT_INBOUND_LISTEN: &str = "0.0.0.0:4143";
/// The inbound side's IPv6 listener by default (skipped on a host without IPv6).
pub const DEFAULT_INBOUND_LISTEN_V6: &str = "[::]:4143";
/// Most bytes detection reads before it calls a connection opaque: a request line with a
/// long target still fits, and a client is never buffered without bound.
pub const DEFAULT_DETECT_MAX_BYTES: usize = 8 * 1024;
/// Where the inbound side finds the application: the same host, on loopback.
pub const DEFAULT_APP_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The one read of a connection's first bytes that decides its protocol waits at most
/// this long; a client that sends nothing first is then treated as opaque TCP. Short, so
/// a misdetected server-speaks-first protocol stalls for a second, not ten.
pub const DEFAULT_DETECT_TIMEOUT_MS: u64 = 1_000;
/// Ports whose server speaks first or whose client sends no recognisable preamble (SMTP,
/// submission, MySQL, 4444, PostgreSQL, Redis, Elasticsearch transport, memcached): opaque
/// TCP at once, without waiting for detection.
pub const DEFAULT_OPAQUE_PORTS: &[u16] = &[25, 587, 3306, 4444, 5432, 6379, 9300, 11211];
/// An opaque TCP connection with no bytes in either direction for this long is closed on
/// both sides (an hour, as for upgraded tunnels).
pub const DEFAULT_TCP_IDLE_TIMEOUT_MS: u64 = 60 * 60 * 1000;
/// Buffer per direction of an opaque TCP connection: one typical socket read.
pub const DEFAULT_TCP_BUFFER_BYTES: usize = 16 * 1024;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxySettings,
    /// Global defaults; each service may override any of them.
    #[serde(default)]
    pub defaults: Settings,
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// How the sources behind `dns` / `kubernetes` entries and the file watch run.
    #[serde(default, skip_serializing_if = "DiscoverySettings::is_default")]
    pub discovery: DiscoverySettings,
    /// Metrics labels, tracing (sampling, OTLP export) and the access log.
    #[serde(default)]
    pub telemetry: coremesh_telemetry::TelemetryConfig,
    /// The inbound side of a sidecar (present = it runs): connections redirected to the
    /// proxy on their way to the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundSettings>,
    /// The outbound side of a sidecar (present = it runs): the application's own
    /// connections, redirected to the proxy on their way out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<SideSettings>,
    /// Limits of HTTP/2 client connections (`[http2]`).
    #[serde(default, skip_serializing_if = "crate::Http2Settings::is_default")]
    pub http2: crate::Http2Settings,
    /// The proxy's workload identity for mutual TLS (`[identity]`, see `identity.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::IdentitySettings>,
}

impl Config {
    /// The explicit listener (`direction="proxy"`): `proxy.listen` when set; otherwise
    /// [`DEFAULT_LISTEN`] when no side is configured (a plain reverse proxy), and none
    /// for a sidecar (its sides take the connections).
    pub fn explicit_listen(&self) -> Option<SocketAddr> {
        match self.proxy.listen {
            Some(addr) => Some(addr),
            None if self.inbound.is_none() && self.outbound.is_none() => Some(default_listen()),
            None => None,
        }
    }
}

/// Settings both sides share; as `[outbound]` they are the whole section.
///
/// Defaults: `listen` = [`DEFAULT_OUTBOUND_LISTEN`] (for `[inbound]`:
/// [`DEFAULT_INBOUND_LISTEN`]), `detect_timeout_ms` = [`DEFAULT_DETECT_TIMEOUT_MS`],
/// `opaque_ports` = [`DEFAULT_OPAQUE_PORTS`], `tcp_idle_timeout_ms` =
/// [`DEFAULT_TCP_IDLE_TIMEOUT_MS`], `tcp_buffer_bytes` = [`DEFAULT_TCP_BUFFER_BYTES`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SideSettings {
    /// One address or a list; by default an IPv4 and an IPv6 address (see [`Listen`]).
    #[serde(
        default = "d_outbound_listen",
        skip_serializing_if = "Listen::is_default"
    )]
    pub listen: Listen,
    /// The read of the first bytes that decides the protocol waits at most this long.
    #[serde(default = "d_detect_timeout_ms")]
    pub detect_timeout_ms: u64,
    /// Detection reads at most this many bytes; undecided by then, the connection is opaque.
    #[serde(default = "d_detect_max_bytes")]
    pub detect_max_bytes: usize,
    /// Destination ports treated as opaque TCP at once, with no detection.
    #[serde(default = "d_opaque_ports")]
    pub opaque_ports: Vec<u16>,
    /// An opaque connection idle both ways for this long is closed.
    #[serde(default = "d_tcp_idle_timeout_ms")]
    pub tcp_idle_timeout_ms: u64,
    /// Buffer per direction of each opaque connection.
    #[serde(default = "d_tcp_buffer_bytes")]
    pub tcp_buffer_bytes: usize,
    /// Outbound only (`[outbound.passthrough]`): limits of HTTP requests passed through to
    /// a destination no service claims.
    #[serde(
        default,
        skip_serializing_if = "crate::PassthroughSettings::is_default"
    )]
    pub passthrough: crate::PassthroughSettings,
}

impl Default for SideSettings {
    fn default() -> Self {
        SideSettings {
            listen: d_outbound_listen(),
            detect_timeout_ms: d_detect_timeout_ms(),
            detect_max_bytes: d_detect_max_bytes(),
            opaque_ports: d_opaque_ports(),
            tcp_idle_timeout_ms: d_tcp_idle_timeout_ms(),
            tcp_buffer_bytes: d_tcp_buffer_bytes(),
            passthrough: crate::PassthroughSettings::default(),
        }
    }
}

/// `[inbound]`: the shared [`SideSettings`] (with `listen` defaulting to
/// [`DEFAULT_INBOUND_LISTEN`]) and where the application listens: `app_address` (default
/// [`DEFAULT_APP_ADDRESS`]) on the connection's original destination port, or on
/// `app_port` when set.
///
/// Read through [`InboundFile`], which spells every key out (as [`ServiceFile`] does), so
/// an unknown key is reported at its line; written with `side` flattened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(from = "InboundFile")]
pub struct InboundSettings {
    #[serde(flatten)]
    pub side: SideSettings,
    pub app_address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_port: Option<u16>,
    /// Who may call the application: `require_mtls`, `authorize`, `[[inbound.routes]]`.
    #[serde(flatten)]
    pub policy: crate::InboundPolicy,
}

impl Default for InboundSettings {
    fn default() -> Self {
        InboundSettings {
            side: SideSettings {
                listen: d_inbound_listen(),
                ..SideSettings::default()
            },
            app_address: DEFAULT_APP_ADDRESS,
            app_port: None,
            policy: crate::InboundPolicy::default(),
        }
    }
}

/// `[inbound]` as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundFile {
    #[serde(default = "d_inbound_listen")]
    listen: Listen,
    #[serde(default = "d_detect_timeout_ms")]
    detect_timeout_ms: u64,
    #[serde(default = "d_detect_max_bytes")]
    detect_max_bytes: usize,
    #[serde(default = "d_opaque_ports")]
    opaque_ports: Vec<u16>,
    #[serde(default = "d_tcp_idle_timeout_ms")]
    tcp_idle_timeout_ms: u64,
    #[serde(default = "d_tcp_buffer_bytes")]
    tcp_buffer_bytes: usize,
    #[serde(default = "d_app_address")]
    app_address: IpAddr,
    #[serde(default)]
    app_port: Option<u16>,
    #[serde(default)]
    require_mtls: bool,
    #[serde(default)]
    authorize: Vec<String>,
    #[serde(default)]
    routes: Vec<crate::InboundRoute>,
}

impl From<InboundFile> for InboundSettings {
    fn from(f: InboundFile) -> Self {
        InboundSettings {
            side: SideSettings {
                listen: f.listen,
                detect_timeout_ms: f.detect_timeout_ms,
                detect_max_bytes: f.detect_max_bytes,
                opaque_ports: f.opaque_ports,
                tcp_idle_timeout_ms: f.tcp_idle_timeout_ms,
                tcp_buffer_bytes: f.tcp_buffer_bytes,
                passthrough: crate::PassthroughSettings::default(),
            },
            app_address: f.app_address,
            app_port: f.app_port,
            policy: crate::InboundPolicy {
                require_mtls: f.require_mtls,
                authorize: f.authorize,
                routes: f.routes,
            },
        }
    }
}

/// Process-wide settings: listeners, cores, driver, shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// The explicit listener; unset, it is bound on [`DEFAULT_LISTEN`] only when no side is
    /// configured (see [`Config::explicit_listen`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// The admin server: an address, `*:P` (IPv4 and IPv6, the IPv6 one skipped on a
    /// host without it) or a list (see [`Listen`]).
    #[serde(default)]
    pub admin: Option<Listen>,
    /// Worker cores; 0 = one per available CPU.
    #[serde(default)]
    pub cores: usize,
    #[serde(default)]
    pub driver: Driver,
    /// Pin each core's thread to a CPU (on by default).
    #[serde(default = "default_true")]
    pub pin_cores: bool,
    #[serde(default = "default_shutdown_grace_ms")]
    pub shutdown_grace_ms: u64,
    /// What SIGTERM does with the outbound side: see [`ShutdownMode`].
    #[serde(default)]
    pub shutdown: ShutdownMode,
    /// Accept `POST /shutdown` on the admin server (from loopback only). Off by default.
    #[serde(default)]
    pub admin_shutdown: bool,
    /// An admin request must arrive whole within this (408 and close beyond).
    #[serde(default = "d_admin_request_timeout_ms")]
    pub admin_request_timeout_ms: u64,
    /// An admin answer must be written within this (the connection is closed beyond).
    #[serde(default = "d_admin_write_timeout_ms")]
    pub admin_write_timeout_ms: u64,
    /// Admin connections served at once; one more gets `503` and is closed.
    #[serde(default = "d_admin_max_connections")]
    pub admin_max_connections: usize,
    /// An upgraded tunnel idle both ways for this long is closed on both sides.
    #[serde(default = "d_tunnel_idle_timeout_ms")]
    pub tunnel_idle_timeout_ms: u64,
    /// Each direction of an upgraded tunnel reads at most this much at a time.
    #[serde(default = "d_tunnel_buffer_bytes")]
    pub tunnel_buffer_bytes: usize,
    /// Closing a client connection with its bytes still arriving: read and discard them
    /// for at most this long after the last response, so the close does not reset it.
    #[serde(default = "d_lingering_close_ms")]
    pub lingering_close_ms: u64,
    /// How log lines are written to standard error: `text` (coloured only on a terminal)
    /// or `json` (one object per line, for collectors). Read at start-up only.
    #[serde(default)]
    pub log_format: LogFormat,
    /// Where an accepted client connection is served: `balanced` (a core busier than the
    /// least busy one hands it there), `off` (where the kernel's `SO_REUSEPORT` hash put
    /// it) or `always` (to another core, for tests). With one core: `off`.
    #[serde(default)]
    pub spread_connections: SpreadConnections,
}

/// `[proxy] spread_connections`: which core serves an accepted client connection.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SpreadConnections {
    /// The core whose listener accepted it (the kernel hashes each connection's addresses
    /// to one of the cores' `SO_REUSEPORT` listeners, whatever their load).
    Off,
    /// The core that accepted it unless another core is less busy (fewer client
    /// connections plus HTTP/2 streams); then the least busy one.
    #[default]
    Balanced,
    /// Always another core (the least busy): for tests and for measuring a move's cost.
    Always,
}

impl SpreadConnections {
    /// The same choice as a stream's (see [`crate::SpreadStreams`]) with no threshold.
    pub fn as_streams(self) -> crate::SpreadStreams {
        match self {
            SpreadConnections::Off => crate::SpreadStreams::Off,
            SpreadConnections::Balanced => crate::SpreadStreams::Balanced,
            SpreadConnections::Always => crate::SpreadStreams::Always,
        }
    }
}

/// What the proxy does on SIGTERM.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ShutdownMode {
    /// The explicit and inbound listeners stop accepting and drain; the outbound side keeps
    /// accepting for the whole grace period (the application's own shutdown still makes
    /// calls) unless `/shutdown` or a second signal ends it. For a proxy signalled together
    /// with its application.
    #[default]
    Grace,
    /// Every listener stops accepting at once; the process exits as soon as the
    /// connections in flight are done (within the grace period). For a proxy signalled
    /// after its application has exited, as a Kubernetes native sidecar is.
    Drain,
}

/// The format of the log on standard error.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event; ANSI colours only when stderr is a terminal.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`, ...).
    Json,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: None,
            admin: None,
            cores: 0,
            driver: Driver::default(),
            pin_cores: true,
            shutdown_grace_ms: default_shutdown_grace_ms(),
            shutdown: ShutdownMode::default(),
            admin_shutdown: false,
            admin_request_timeout_ms: d_admin_request_timeout_ms(),
            admin_write_timeout_ms: d_admin_write_timeout_ms(),
            admin_max_connections: d_admin_max_connections(),
            tunnel_idle_timeout_ms: d_tunnel_idle_timeout_ms(),
            tunnel_buffer_bytes: d_tunnel_buffer_bytes(),
            lingering_close_ms: d_lingering_close_ms(),
            log_format: LogFormat::default(),
            spread_connections: SpreadConnections::default(),
        }
    }
}

/// monoio driver: io_uring, or the epoll ("legacy") driver.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Uring,
    Legacy,
}

/// How a service chooses among its endpoints.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BalanceKind {
    /// Power of two choices over the least-latency score (the default).
    #[default]
    LeastLatency,
    RoundRobin,
    Random,
}

/// Per-request settings: global in `[defaults]`, overridable per service.
/// Every field has a `DEFAULT_*` constant above.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "d_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    #[serde(default = "d_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "d_max_headers")]
    pub max_headers: usize,
    #[serde(default = "d_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "d_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "d_request_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "d_client_idle_timeout_ms")]
    pub client_idle_timeout_ms: u64,
    /// After a response to a client sending back to back, its connection keeps its buffer
    /// and a read posted this long before waiting without a buffer (0: never). `[defaults]`
    /// only.
    #[serde(default = "d_client_keepalive_linger_ms")]
    pub client_keepalive_linger_ms: u64,
    #[serde(default = "d_pool_max_idle")]
    pub pool_max_idle: usize,
    #[serde(default = "d_pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
    /// An idle pooled upstream connection keeps the read for its next response posted
    /// (io_uring, plain TCP) this long, then is watched without a buffer. `[defaults]` only.
    #[serde(default = "d_pool_read_linger_ms")]
    pub pool_read_linger_ms: u64,
    #[serde(default = "d_max_connections")]
    pub max_connections: usize,
    /// Add `Via: 1.1 coremesh` to requests and responses.
    #[serde(default)]
    pub add_via: bool,
    /// Append the client address to `X-Forwarded-For`.
    #[serde(default)]
    pub add_forwarded_for: bool,
    #[serde(default)]
    pub balance: BalanceKind,
    /// Attempts per request, the first included, when a failure is safe to retry.
    #[serde(default = "d_max_attempts")]
    pub max_attempts: u32,
    /// Retries may add at most this share of requests over the budget window (as Linkerd's 20%).
    #[serde(default = "d_retry_budget_ratio")]
    pub retry_budget_ratio: f64,
    /// Retries always allowed per second, so a quiet service can still retry.
    #[serde(default = "d_retry_budget_min_per_sec")]
    pub retry_budget_min_per_sec: u32,
    /// Window over which the retry budget counts requests and retries.
    #[serde(default = "d_retry_budget_window_ms")]
    pub retry_budget_window_ms: u64,
    /// First retry back-off cap (full jitter); small, since a retry goes to another endpoint.
    #[serde(default = "d_retry_backoff_base_ms")]
    pub retry_backoff_base_ms: u64,
    /// Largest back-off between attempts.
    #[serde(default = "d_retry_backoff_max_ms")]
    pub retry_backoff_max_ms: u64,
    /// Request bodies up to this size are kept for replay; larger ones stream and are not retried.
    #[serde(default = "d_replay_body_limit")]
    pub replay_body_limit: usize,
    /// Consecutive failures that eject an endpoint (0 turns ejection off).
    #[serde(default = "d_eject_consecutive_failures")]
    pub eject_consecutive_failures: u32,
    /// First ejection back-off; doubles with each ejection in a row.
    #[serde(default = "d_eject_base_ms")]
    pub eject_base_ms: u64,
    /// Longest ejection back-off.
    #[serde(default = "d_eject_max_ms")]
    pub eject_max_ms: u64,
    /// Never eject more than this share of a service's endpoints.
    #[serde(default = "d_eject_max_percent")]
    pub eject_max_percent: u32,
    /// Statuses that count as endpoint failures: "5xx", "503", "500-504".
    #[serde(default = "d_failure_statuses")]
    pub failure_statuses: Vec<String>,
    /// The protocol requests go to the endpoints in.
    #[serde(default)]
    pub protocol: crate::UpstreamProtocol,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            header_read_timeout_ms: d_header_read_timeout_ms(),
            max_header_bytes: d_max_header_bytes(),
            max_headers: d_max_headers(),
            max_body_bytes: d_max_body_bytes(),
            connect_timeout_ms: d_connect_timeout_ms(),
            request_timeout_ms: d_request_timeout_ms(),
            client_idle_timeout_ms: d_client_idle_timeout_ms(),
            client_keepalive_linger_ms: d_client_keepalive_linger_ms(),
            pool_max_idle: d_pool_max_idle(),
            pool_idle_timeout_ms: d_pool_idle_timeout_ms(),
            pool_read_linger_ms: d_pool_read_linger_ms(),
            max_connections: d_max_connections(),
            add_via: false,
            add_forwarded_for: false,
            balance: BalanceKind::default(),
            max_attempts: d_max_attempts(),
            retry_budget_ratio: d_retry_budget_ratio(),
            retry_budget_min_per_sec: d_retry_budget_min_per_sec(),
            retry_budget_window_ms: d_retry_budget_window_ms(),
            retry_backoff_base_ms: d_retry_backoff_base_ms(),
            retry_backoff_max_ms: d_retry_backoff_max_ms(),
            replay_body_limit: d_replay_body_limit(),
            eject_consecutive_failures: d_eject_consecutive_failures(),
            eject_base_ms: d_eject_base_ms(),
            eject_max_ms: d_eject_max_ms(),
            eject_max_percent: d_eject_max_percent(),
            failure_statuses: d_failure_statuses(),
            protocol: crate::UpstreamProtocol::default(),
        }
    }
}

/// Per-service overrides of [`Settings`]: every field optional, `None` = the global default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettingsOverride {
    pub header_read_timeout_ms: Option<u64>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub request_timeout_ms: Option<u64>,
    pub client_idle_timeout_ms: Option<u64>,
    pub pool_max_idle: Option<usize>,
    pub pool_idle_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub add_via: Option<bool>,
    pub add_forwarded_for: Option<bool>,
    pub balance: Option<BalanceKind>,
    pub max_attempts: Option<u32>,
    pub retry_budget_ratio: Option<f64>,
    pub retry_budget_min_per_sec: Option<u32>,
    pub retry_budget_window_ms: Option<u64>,
    pub retry_backoff_base_ms: Option<u64>,
    pub retry_backoff_max_ms: Option<u64>,
    pub replay_body_limit: Option<usize>,
    pub eject_consecutive_failures: Option<u32>,
    pub eject_base_ms: Option<u64>,
    pub eject_max_ms: Option<u64>,
    pub eject_max_percent: Option<u32>,
    pub failure_statuses: Option<Vec<String>>,
    pub protocol: Option<crate::UpstreamProtocol>,
}

impl Settings {
    /// These settings with `o`'s present fields taking precedence.
    pub fn merged(&self, o: &SettingsOverride) -> Settings {
        Settings {
            header_read_timeout_ms: o
                .header_read_timeout_ms
                .unwrap_or(self.header_read_timeout_ms),
            max_header_bytes: o.max_header_bytes.unwrap_or(self.max_header_bytes),
            max_headers: o.max_headers.unwrap_or(self.max_headers),
            max_body_bytes: o.max_body_bytes.unwrap_or(self.max_body_bytes),
            connect_timeout_ms: o.connect_timeout_ms.unwrap_or(self.connect_timeout_ms),
            request_timeout_ms: o.request_timeout_ms.unwrap_or(self.request_timeout_ms),
            client_idle_timeout_ms: o
                .client_idle_timeout_ms
                .unwrap_or(self.client_idle_timeout_ms),
            // A connection's setting, before any service is known: not overridden.
            client_keepalive_linger_ms: self.client_keepalive_linger_ms,
            pool_max_idle: o.pool_max_idle.unwrap_or(self.pool_max_idle),
            pool_idle_timeout_ms: o.pool_idle_timeout_ms.unwrap_or(self.pool_idle_timeout_ms),
            // The core's pools are swept with the `[defaults]` value: not overridden.
            pool_read_linger_ms: self.pool_read_linger_ms,
            max_connections: o.max_connections.unwrap_or(self.max_connections),
            add_via: o.add_via.unwrap_or(self.add_via),
            add_forwarded_for: o.add_forwarded_for.unwrap_or(self.add_forwarded_for),
            balance: o.balance.unwrap_or(self.balance),
            max_attempts: o.max_attempts.unwrap_or(self.max_attempts),
            retry_budget_ratio: o.retry_budget_ratio.unwrap_or(self.retry_budget_ratio),
            retry_budget_min_per_sec: o
                .retry_budget_min_per_sec
                .unwrap_or(self.retry_budget_min_per_sec),
            retry_budget_window_ms: o
                .retry_budget_window_ms
                .unwrap_or(self.retry_budget_window_ms),
            retry_backoff_base_ms: o
                .retry_backoff_base_ms
                .unwrap_or(self.retry_backoff_base_ms),
            retry_backoff_max_ms: o.retry_backoff_max_ms.unwrap_or(self.retry_backoff_max_ms),
            replay_body_limit: o.replay_body_limit.unwrap_or(self.replay_body_limit),
            eject_consecutive_failures: o
                .eject_consecutive_failures
                .unwrap_or(self.eject_consecutive_failures),
            eject_base_ms: o.eject_base_ms.unwrap_or(self.eject_base_ms),
            eject_max_ms: o.eject_max_ms.unwrap_or(self.eject_max_ms),
            eject_max_percent: o.eject_max_percent.unwrap_or(self.eject_max_percent),
            failure_statuses: o
                .failure_statuses
                .clone()
                .unwrap_or_else(|| self.failure_statuses.clone()),
            protocol: o.protocol.unwrap_or(self.protocol),
        }
    }
}

/// A destination service and its endpoints.
///
/// Read through [`ServiceFile`], which spells every key out, so that an unknown or mistyped
/// key in a `[[services]]` entry is reported at its own line (serde's `flatten` would lose
/// the position); written with `overrides` flattened, so both directions use the same keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, from = "ServiceFile")]
pub struct ServiceConfig {
    pub name: String,
    /// Static endpoints, `ip:port`. In the file, a `host:port` entry is a name and is
    /// moved to `dns` when read.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// DNS names resolved periodically (A and AAAA), `host:port`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Kubernetes Services watched through their EndpointSlices,
    /// `name.namespace[.svc.cluster.local]:port` (the port by number or by name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kubernetes: Vec<String>,
    /// Destinations (`ip:port`) this service claims on the outbound side: a connection
    /// the application makes to one of them is balanced over this service's endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<SocketAddr>,
    /// Mutual TLS to the endpoints, and the identity they must prove.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::ServiceTls>,
    /// Overrides of `[defaults]` for this service.
    #[serde(flatten)]
    pub overrides: SettingsOverride,
}

/// A service with no name and no endpoints: the base of `ServiceConfig { name, ..Default::default() }`.
impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            name: String::new(),
            endpoints: Vec::new(),
            dns: Vec::new(),
            kubernetes: Vec::new(),
            addresses: Vec::new(),
            tls: None,
            overrides: SettingsOverride::default(),
        }
    }
}

/// A `[[services]]` entry as written in the file: [`ServiceConfig`] with the
/// [`SettingsOverride`] keys inline. Adding a field to `SettingsOverride` without adding it
/// here fails to compile (the `From` below names every field).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    /// Addresses, and names that become `dns` entries (see [`EndpointEntry`]).
    #[serde(default)]
    endpoints: Vec<EndpointEntry>,
    #[serde(default)]
    dns: Vec<String>,
    /// One entry may be written as a plain string.
    #[serde(default, deserialize_with = "one_or_many")]
    kubernetes: Vec<String>,
    #[serde(default)]
    addresses: Vec<SocketAddr>,
    #[serde(default)]
    tls: Option<crate::ServiceTls>,
    header_read_timeout_ms: Option<u64>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<u64>,
    connect_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    client_idle_timeout_ms: Option<u64>,
    pool_max_idle: Option<usize>,
    pool_idle_timeout_ms: Option<u64>,
    max_connections: Option<usize>,
    add_via: Option<bool>,
    add_forwarded_for: Option<bool>,
    balance: Option<BalanceKind>,
    max_attempts: Option<u32>,
    retry_budget_ratio: Option<f64>,
    retry_budget_min_per_sec: Option<u32>,
    retry_budget_window_ms: Option<u64>,
    retry_backoff_base_ms: Option<u64>,
    retry_backoff_max_ms: Option<u64>,
    replay_body_limit: Option<usize>,
    eject_consecutive_failures: Option<u32>,
    eject_base_ms: Option<u64>,
    eject_max_ms: Option<u64>,
    eject_max_percent: Option<u32>,
    failure_statuses: Option<Vec<String>>,
    protocol: Option<crate::UpstreamProtocol>,
}

impl From<ServiceFile> for ServiceConfig {
    fn from(f: ServiceFile) -> Self {
        let mut endpoints = Vec::new();
        let mut dns = f.dns;
        for entry in f.endpoints {
            match entry {
                EndpointEntry::Address(address) => endpoints.push(address),
                EndpointEntry::Name(target) => {
                    let name = target.to_string();
                    if !dns.contains(&name) {
                        dns.push(name);
                    }
                }
            }
        }
        ServiceConfig {
            name: f.name,
            endpoints,
            dns,
            kubernetes: f.kubernetes,
            addresses: f.addresses,
            tls: f.tls,
            overrides: SettingsOverride {
                header_read_timeout_ms: f.header_read_timeout_ms,
                max_header_bytes: f.max_header_bytes,
                max_headers: f.max_headers,
                max_body_bytes: f.max_body_bytes,
                connect_timeout_ms: f.connect_timeout_ms,
                request_timeout_ms: f.request_timeout_ms,
                client_idle_timeout_ms: f.client_idle_timeout_ms,
                pool_max_idle: f.pool_max_idle,
                pool_idle_timeout_ms: f.pool_idle_timeout_ms,
                max_connections: f.max_connections,
                add_via: f.add_via,
                add_forwarded_for: f.add_forwarded_for,
                balance: f.balance,
                max_attempts: f.max_attempts,
                retry_budget_ratio: f.retry_budget_ratio,
                retry_budget_min_per_sec: f.retry_budget_min_per_sec,
                retry_budget_window_ms: f.retry_budget_window_ms,
                retry_backoff_base_ms: f.retry_backoff_base_ms,
                retry_backoff_max_ms: f.retry_backoff_max_ms,
                replay_body_limit: f.replay_body_limit,
                eject_consecutive_failures: f.eject_consecutive_failures,
                eject_base_ms: f.eject_base_ms,
                eject_max_ms: f.eject_max_ms,
                eject_max_percent: f.eject_max_percent,
                failure_statuses: f.failure_statuses,
                protocol: f.protocol,
            },
        }
    }
}

/// A route: a match on host / path / headers, and where matching requests go.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Exact host (port ignored, case-insensitive), or `*.suffix` for any subdomain.
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub path_exact: Option<String>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    /// Send to one service ...
    #[serde(default)]
    pub service: Option<String>,
    /// ... or split by weight across several.
    #[serde(default)]
    pub split: Vec<WeightedService>,
    /// Whole-request timeout for this route; overrides the service's `request_timeout_ms`.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Timeout of each attempt (default: none beyond the request's deadline).
    #[serde(default)]
    pub attempt_timeout_ms: Option<u64>,
    /// Response statuses on which an idempotent request is retried on another endpoint
    /// (default: none; e.g. [502, 503, 504]).
    #[serde(default)]
    pub retry_on: Vec<u16>,
    /// Also retry non-idempotent requests that may have been processed (default false).
    #[serde(default)]
    pub retry_non_idempotent: bool,
    /// gRPC statuses in a trailers-only response on which the call is retried on another
    /// endpoint, within the budget (default: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_retry_on: Vec<crate::GrpcRetryOn>,
}

/// A header condition: `exact` value (case-sensitive), or merely `present`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderMatch {
    pub name: String,
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub present: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WeightedService {
    pub service: String,
    pub weight: u32,
}

fn default_true() -> bool {
    true
}
fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .expect("DEFAULT_LISTEN is a valid address")
}
fn literal(text: &str) -> SocketAddr {
    text.parse().expect("a default listener is a valid address")
}
fn d_outbound_listen() -> Listen {
    Listen::default_pair(
        literal(DEFAULT_OUTBOUND_LISTEN),
        literal(DEFAULT_OUTBOUND_LISTEN_V6),
    )
}
fn d_inbound_listen() -> Listen {
    Listen::default_pair(
        literal(DEFAULT_INBOUND_LISTEN),
        literal(DEFAULT_INBOUND_LISTEN_V6),
    )
}
fn d_detect_max_bytes() -> usize {
    DEFAULT_DETECT_MAX_BYTES
}
fn d_app_address() -> IpAddr {
    DEFAULT_APP_ADDRESS
}
fn d_detect_timeout_ms() -> u64 {
    DEFAULT_DETECT_TIMEOUT_MS
}
fn d_opaque_ports() -> Vec<u16> {
    DEFAULT_OPAQUE_PORTS.to_vec()
}
fn d_tcp_idle_timeout_ms() -> u64 {
    DEFAULT_TCP_IDLE_TIMEOUT_MS
}
fn d_tcp_buffer_bytes() -> usize {
    DEFAULT_TCP_BUFFER_BYTES
}
fn default_shutdown_grace_ms() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_MS
}
fn d_admin_request_timeout_ms() -> u64 {
    DEFAULT_ADMIN_REQUEST_TIMEOUT_MS
}
fn d_admin_write_timeout_ms() -> u64 {
    DEFAULT_ADMIN_WRITE_TIMEOUT_MS
}
fn d_admin_max_connections() -> usize {
    DEFAULT_ADMIN_MAX_CONNECTIONS
}
fn d_tunnel_idle_timeout_ms() -> u64 {
    DEFAULT_TUNNEL_IDLE_TIMEOUT_MS
}
fn d_tunnel_buffer_bytes() -> usize {
    DEFAULT_TUNNEL_BUFFER_BYTES
}
fn d_lingering_close_ms() -> u64 {
    DEFAULT_LINGERING_CLOSE_MS
}
fn d_header_read_timeout_ms() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_MS
}
fn d_max_header_bytes() -> usize {
    DEFAULT_MAX_HEADER_BYTES
}
fn d_max_headers() -> usize {
    DEFAULT_MAX_HEADERS
}
fn d_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}
fn d_connect_timeout_ms() -> u64 {
    DEFAULT_CONNECT_TIMEOUT_MS
}
fn d_request_timeout_ms() -> u64 {
    DEFAULT_REQUEST_TIMEOUT_MS
}
fn d_client_idle_timeout_ms() -> u64 {
    DEFAULT_CLIENT_IDLE_TIMEOUT_MS
}
fn d_client_keepalive_linger_ms() -> u64 {
    DEFAULT_CLIENT_KEEPALIVE_LINGER_MS
}
fn d_pool_read_linger_ms() -> u64 {
    DEFAULT_POOL_READ_LINGER_MS
}
fn d_pool_max_idle() -> usize {
    DEFAULT_POOL_MAX_IDLE
}
fn d_pool_idle_timeout_ms() -> u64 {
    DEFAULT_POOL_IDLE_TIMEOUT_MS
}
fn d_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn d_max_attempts() -> u32 {
    DEFAULT_MAX_ATTEMPTS
}
fn d_retry_budget_ratio() -> f64 {
    DEFAULT_RETRY_BUDGET_RATIO
}
fn d_retry_budget_min_per_sec() -> u32 {
    DEFAULT_RETRY_BUDGET_MIN_PER_SEC
}
fn d_retry_budget_window_ms() -> u64 {
    DEFAULT_RETRY_BUDGET_WINDOW_MS
}
fn d_retry_backoff_base_ms() -> u64 {
    DEFAULT_RETRY_BACKOFF_BASE_MS
}
fn d_retry_backoff_max_ms() -> u64 {
    DEFAULT_RETRY_BACKOFF_MAX_MS
}
fn d_replay_body_limit() -> usize {
    DEFAULT_REPLAY_BODY_LIMIT
}
fn d_eject_consecutive_failures() -> u32 {
    DEFAULT_EJECT_CONSECUTIVE_FAILURES
}
fn d_eject_base_ms() -> u64 {
    DEFAULT_EJECT_BASE_MS
}
fn d_eject_max_ms() -> u64 {
    DEFAULT_EJECT_MAX_MS
}
fn d_eject_max_percent() -> u32 {
    DEFAULT_EJECT_MAX_PERCENT
}
fn d_failure_statuses() -> Vec<String> {
    DEFAULT_FAILURE_STATUSES
        .iter()
        .map(|s| s.to_string())
        .collect()
}
