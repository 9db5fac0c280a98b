//! `[outbound.passthrough]`: the limits of HTTP/1 requests the outbound side passes through
//! to an original destination that no service claims (a third party's server, or an HTTP
//! proxy the application talks to). They are not any service's settings: such a request is
//! sent as the application wrote it, once, its body streamed and never held whole.
//!
//! Defaults: `max_header_bytes` = [`DEFAULT_PASSTHROUGH_MAX_HEADER_BYTES`],
//! `header_read_timeout_ms` = [`DEFAULT_PASSTHROUGH_HEADER_READ_TIMEOUT_MS`],
//! `connect_timeout_ms` = [`DEFAULT_PASSTHROUGH_CONNECT_TIMEOUT_MS`],
//! `response_timeout_ms` = [`DEFAULT_PASSTHROUGH_RESPONSE_TIMEOUT_MS`],
//! `body_idle_timeout_ms` = [`DEFAULT_PASSTHROUGH_BODY_IDLE_TIMEOUT_MS`],
//! `continue_wait_ms` = [`DEFAULT_PASSTHROUGH_CONTINUE_WAIT_MS`]. A CONNECT tunnel
//! that the destination accepts is bounded by the side's opaque relay limits
//! (`tcp_idle_timeout_ms`, `tcp_buffer_bytes`).

use crate::Settings;
use serde::{Deserialize, Serialize};

/// Most bytes of a passed-through request head (431 beyond): as `[defaults]`.
pub const DEFAULT_PASSTHROUGH_MAX_HEADER_BYTES: usize = 64 * 1024;
/// A passed-through request head must arrive whole within this (408 beyond).
pub const DEFAULT_PASSTHROUGH_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Connecting to the destination: longer than a service's default, since a third party
/// may be far away.
pub const DEFAULT_PASSTHROUGH_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// From the request's start until the destination's response head (the request body's
/// upload included), and the most time between two reads of the response body: five
/// minutes, since the proxy cannot know what a third party's slowest answer is.
pub const DEFAULT_PASSTHROUGH_RESPONSE_TIMEOUT_MS: u64 = 300_000;
/// The most time between two reads of a request body being streamed to the destination.
pub const DEFAULT_PASSTHROUGH_BODY_IDLE_TIMEOUT_MS: u64 = 60_000;
/// How long a request with `Expect: 100-continue` holds its body for the destination's own
/// `100 Continue` (or an early final answer) before sending it anyway, as a client would
/// with a server that ignores `Expect` (curl waits the same second).
pub const DEFAULT_PASSTHROUGH_CONTINUE_WAIT_MS: u64 = 1_000;

/// `[outbound.passthrough]`. See the module documentation for the defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PassthroughSettings {
    #[serde(default = "d_max_header_bytes")]
    pub max_header_bytes: usize,
    #[serde(default = "d_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    #[serde(default = "d_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "d_response_timeout_ms")]
    pub response_timeout_ms: u64,
    #[serde(default = "d_body_idle_timeout_ms")]
    pub body_idle_timeout_ms: u64,
    #[serde(default = "d_continue_wait_ms")]
    pub continue_wait_ms: u64,
}

impl Default for PassthroughSettings {
    fn default() -> Self {
        PassthroughSettings {
            max_header_bytes: d_max_header_bytes(),
            header_read_timeout_ms: d_header_read_timeout_ms(),
            connect_timeout_ms: d_connect_timeout_ms(),
            response_timeout_ms: d_response_timeout_ms(),
            body_idle_timeout_ms: d_body_idle_timeout_ms(),
            continue_wait_ms: d_continue_wait_ms(),
        }
    }
}

impl PassthroughSettings {
    /// Whether these are the defaults (the table is then left out when written).
    pub fn is_default(&self) -> bool {
        *self == PassthroughSettings::default()
    }

    /// The request settings a passed-through request is forwarded with: these limits, one
    /// attempt, no body kept for replay and no body size limit (the body is streamed), and
    /// nothing added to the request; the rest (pooling) from `defaults`.
    pub fn request_settings(&self, defaults: &Settings) -> Settings {
        Settings {
            header_read_timeout_ms: self.header_read_timeout_ms,
            max_header_bytes: self.max_header_bytes,
            connect_timeout_ms: self.connect_timeout_ms,
            request_timeout_ms: self.response_timeout_ms,
            client_idle_timeout_ms: self.body_idle_timeout_ms,
            max_body_bytes: u64::MAX,
            replay_body_limit: 0,
            max_attempts: 1,
            add_via: false,
            add_forwarded_for: false,
            ..defaults.clone()
        }
    }
}

/// What a snapshot carries for passed-through requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Passthrough {
    /// The settings of [`PassthroughSettings::request_settings`].
    pub settings: Settings,
    /// A CONNECT tunnel idle both ways for this long is closed (`tcp_idle_timeout_ms`).
    pub tunnel_idle_ms: u64,
    /// Read at most this much at a time each way through a tunnel (`tcp_buffer_bytes`).
    pub tunnel_buffer_bytes: usize,
    /// A held `Expect: 100-continue` body waits this long for the destination's answer.
    pub continue_wait_ms: u64,
}

impl Passthrough {
    /// From `[outbound]` (its defaults when there is none) and `[defaults]`.
    pub fn of(outbound: Option<&crate::SideSettings>, defaults: &Settings) -> Passthrough {
        let side = outbound.cloned().unwrap_or_default();
        Passthrough {
            settings: side.passthrough.request_settings(defaults),
            tunnel_idle_ms: side.tcp_idle_timeout_ms,
            tunnel_buffer_bytes: side.tcp_buffer_bytes,
            continue_wait_ms: side.passthrough.continue_wait_ms,
        }
    }
}

fn d_max_header_bytes() -> usize {
    DEFAULT_PASSTHROUGH_MAX_HEADER_BYTES
}
fn d_header_read_timeout_ms() -> u64 {
    DEFAULT_PASSTHROUGH_HEADER_READ_TIMEOUT_MS
}
fn d_connect_timeout_ms() -> u64 {
    DEFAULT_PASSTHROUGH_CONNECT_TIMEOUT_MS
}
fn d_response_timeout_ms() -> u64 {
    DEFAULT_PASSTHROUGH_RESPONSE_TIMEOUT_MS
}
fn d_body_idle_timeout_ms() -> u64 {
    DEFAULT_PASSTHROUGH_BODY_IDLE_TIMEOUT_MS
}
fn d_continue_wait_ms() -> u64 {
    DEFAULT_PASSTHROUGH_CONTINUE_WAIT_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_table_takes_every_default_and_unknown_keys_are_refused() {
        let parsed: PassthroughSettings = toml::from_str("").unwrap();
        assert_eq!(parsed, PassthroughSettings::default());
        let parsed: PassthroughSettings = toml::from_str("response_timeout_ms = 7").unwrap();
        assert_eq!(parsed.response_timeout_ms, 7);
        assert_eq!(
            parsed.connect_timeout_ms,
            DEFAULT_PASSTHROUGH_CONNECT_TIMEOUT_MS
        );
        assert_eq!(
            parsed.continue_wait_ms,
            DEFAULT_PASSTHROUGH_CONTINUE_WAIT_MS
        );
        let parsed: PassthroughSettings = toml::from_str("continue_wait_ms = 250").unwrap();
        assert_eq!(parsed.continue_wait_ms, 250);
        assert!(toml::from_str::<PassthroughSettings>("max_body_bytes = 1").is_err());
    }

    #[test]
    fn the_limits_are_validated_by_name() {
        let outbound = "[outbound]\nlisten = \"127.0.0.1:4150\"\n";
        let text = format!(
            "{outbound}[outbound.passthrough]\nmax_header_bytes = 10\nresponse_timeout_ms = 0\n"
        );
        let config: crate::Config = toml::from_str(&text).unwrap();
        let paths: Vec<String> = crate::validate(&config)
            .iter()
            .map(|v| v.path.to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "outbound.passthrough.max_header_bytes",
                "outbound.passthrough.response_timeout_ms"
            ]
        );
        let config: crate::Config = toml::from_str(outbound).unwrap();
        assert!(crate::validate(&config).is_empty());
    }

    #[test]
    fn request_settings_stream_the_body_send_once_and_add_nothing() {
        let defaults = Settings {
            add_forwarded_for: true,
            add_via: true,
            ..Settings::default()
        };
        let s = PassthroughSettings::default().request_settings(&defaults);
        assert_eq!(s.max_attempts, 1);
        assert_eq!(s.replay_body_limit, 0);
        assert_eq!(s.max_body_bytes, u64::MAX);
        assert!(!s.add_forwarded_for && !s.add_via);
        assert_eq!(
            s.request_timeout_ms,
            DEFAULT_PASSTHROUGH_RESPONSE_TIMEOUT_MS
        );
        assert_eq!(s.pool_max_idle, defaults.pool_max_idle);
    }
}
