//! The configuration model as read from TOML, with every default named in one place.
//!
//! Defaults (see `docs/configuration.md`):
//! - `proxy.listen` = 127.0.0.1:4140, `proxy.admin` = none, `proxy.cores` = 0 (all CPUs),
//!   `proxy.driver` = "uring" (falls back to "legacy" where io_uring is missing),
//!   `proxy.shutdown_grace_ms` = 30000.
//! - `defaults.*`: see [`Settings`] and the `DEFAULT_*` constants below.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

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
/// Idle upstream connections kept per endpoint on each core.
pub const DEFAULT_POOL_MAX_IDLE: usize = 64;
/// An idle pooled upstream connection is closed after this long (below typical server
/// keep-alive timeouts, nginx's 75 s and Node's 5 s being the usual ones).
pub const DEFAULT_POOL_IDLE_TIMEOUT_MS: u64 = 4_000;
/// Client connections open at once per core; more are accepted and closed at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 25_000;
/// In-flight requests may finish for this long after SIGTERM / SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;
/// Default listener of `coremesh proxy` and of a config without `proxy.listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4140";

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
}

/// Process-wide settings: listeners, cores, driver, shutdown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub admin: Option<SocketAddr>,
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
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen: default_listen(),
            admin: None,
            cores: 0,
            driver: Driver::default(),
            pin_cores: true,
            shutdown_grace_ms: default_shutdown_grace_ms(),
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
    #[serde(default = "d_pool_max_idle")]
    pub pool_max_idle: usize,
    #[serde(default = "d_pool_idle_timeout_ms")]
    pub pool_idle_timeout_ms: u64,
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
            pool_max_idle: d_pool_max_idle(),
            pool_idle_timeout_ms: d_pool_idle_timeout_ms(),
            max_connections: d_max_connections(),
            add_via: false,
            add_forwarded_for: false,
            balance: BalanceKind::default(),
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
            pool_max_idle: o.pool_max_idle.unwrap_or(self.pool_max_idle),
            pool_idle_timeout_ms: o.pool_idle_timeout_ms.unwrap_or(self.pool_idle_timeout_ms),
            max_connections: o.max_connections.unwrap_or(self.max_connections),
            add_via: o.add_via.unwrap_or(self.add_via),
            add_forwarded_for: o.add_forwarded_for.unwrap_or(self.add_forwarded_for),
            balance: o.balance.unwrap_or(self.balance),
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
    /// Static endpoints, `ip:port`.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Overrides of `[defaults]` for this service.
    #[serde(flatten)]
    pub overrides: SettingsOverride,
}

/// A `[[services]]` entry as written in the file: [`ServiceConfig`] with the
/// [`SettingsOverride`] keys inline. Adding a field to `SettingsOverride` without adding it
/// here fails to compile (the `From` below names every field).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    #[serde(default)]
    endpoints: Vec<SocketAddr>,
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
}

impl From<ServiceFile> for ServiceConfig {
    fn from(f: ServiceFile) -> Self {
        ServiceConfig {
            name: f.name,
            endpoints: f.endpoints,
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
fn default_shutdown_grace_ms() -> u64 {
    DEFAULT_SHUTDOWN_GRACE_MS
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
fn d_pool_max_idle() -> usize {
    DEFAULT_POOL_MAX_IDLE
}
fn d_pool_idle_timeout_ms() -> u64 {
    DEFAULT_POOL_IDLE_TIMEOUT_MS
}
fn d_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}
