//! `[http2]`: the limits of HTTP/2 connections clients open to the proxy (every listener
//! takes HTTP/2 with prior knowledge beside HTTP/1), and [`UpstreamProtocol`], the protocol
//! a service's endpoints are spoken to in (`protocol` in `[defaults]` or per service).
//!
//! Defaults: `max_concurrent_streams` = [`DEFAULT_MAX_CONCURRENT_STREAMS`],
//! `max_header_list_bytes` = [`DEFAULT_MAX_HEADER_LIST_BYTES`],
//! `initial_stream_window_bytes` = [`DEFAULT_INITIAL_STREAM_WINDOW_BYTES`],
//! `initial_connection_window_bytes` = [`DEFAULT_INITIAL_CONNECTION_WINDOW_BYTES`],
//! `max_frame_bytes` = [`DEFAULT_MAX_FRAME_BYTES`], `max_connection_age_ms` = 0 (never),
//! `max_pending_reset_streams` = [`DEFAULT_MAX_PENDING_RESET_STREAMS`],
//! `max_local_reset_streams` = [`DEFAULT_MAX_LOCAL_RESET_STREAMS`],
//! `max_control_frames` = [`DEFAULT_MAX_CONTROL_FRAMES`],
//! `idle_timeout_ms` = [`DEFAULT_IDLE_TIMEOUT_MS`], `spread_streams` = `"balanced"`
//! ([`SpreadStreams`]), `spread_threshold` = [`DEFAULT_SPREAD_THRESHOLD`],
//! `max_upstream_connections` = [`DEFAULT_MAX_UPSTREAM_CONNECTIONS`],
//! `stall_timeout_ms` = [`DEFAULT_STALL_TIMEOUT_MS`].

use serde::{Deserialize, Serialize};

/// How long a stream's sender may wait for the receiver to open its flow-control window
/// before the stream is reset (a client or endpoint that stops reading).
pub const DEFAULT_STALL_TIMEOUT_MS: u64 = 10_000;
/// HTTP/2 connections one core opens to one endpoint: another is opened when every open
/// one is at the endpoint's MAX_CONCURRENT_STREAMS; past this many, streams wait for one.
pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: u32 = 4;
/// Streams one client connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS).
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 100;
/// Largest header list (decoded, RFC 9113 §6.5.2 accounting) the proxy accepts.
pub const DEFAULT_MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;
/// The protocol's own initial stream window.
pub const DEFAULT_INITIAL_STREAM_WINDOW_BYTES: u32 = 65_535;
/// Connection-level window: 16 streams' worth of the default stream window.
pub const DEFAULT_INITIAL_CONNECTION_WINDOW_BYTES: u32 = 1024 * 1024;
/// The protocol's smallest maximum frame size.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16_384;
/// Streams a client may open and reset before the proxy accepted them (rapid reset,
/// CVE-2023-44487); beyond it the connection is closed with ENHANCE_YOUR_CALM.
pub const DEFAULT_MAX_PENDING_RESET_STREAMS: usize = 20;
/// Streams the proxy may reset because the client broke the rules, per connection, before
/// it closes the connection.
pub const DEFAULT_MAX_LOCAL_RESET_STREAMS: usize = 1024;

/// SETTINGS and PING frames a client may send per 10 s (a flood, CVE-2019-9512/9515,
/// beyond).
pub const DEFAULT_MAX_CONTROL_FRAMES: u32 = 1000;

/// A client connection with no stream open for this long gets GOAWAY (NO_ERROR) and is
/// closed: long enough that a gRPC channel between bursts keeps its connection, short
/// enough that idle connections do not pile up.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 300_000;
/// How many more requests in flight the accepting core must have than the least busy core
/// before it hands it a new stream: small enough that one busy connection spreads, large
/// enough that cores with nearly equal load do not trade streams back and forth (each
/// handoff costs a cross-core wakeup per event of the stream).
pub const DEFAULT_SPREAD_THRESHOLD: u32 = 8;

/// The largest window the protocol allows (2^31 - 1).
pub const MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;
/// The largest frame size the protocol allows (2^24 - 1).
pub const MAX_FRAME_BYTES: u32 = (1 << 24) - 1;

/// `[http2]`. See the module documentation for the defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Http2Settings {
    #[serde(default = "d_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    #[serde(default = "d_max_header_list_bytes")]
    pub max_header_list_bytes: u32,
    #[serde(default = "d_initial_stream_window_bytes")]
    pub initial_stream_window_bytes: u32,
    #[serde(default = "d_initial_connection_window_bytes")]
    pub initial_connection_window_bytes: u32,
    #[serde(default = "d_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// After this long the proxy sends GOAWAY and finishes the streams in flight, so that
    /// clients reconnect and the kernel spreads their connections over the cores. 0: never.
    #[serde(default)]
    pub max_connection_age_ms: u64,
    #[serde(default = "d_max_pending_reset_streams")]
    pub max_pending_reset_streams: usize,
    #[serde(default = "d_max_local_reset_streams")]
    pub max_local_reset_streams: usize,
    /// SETTINGS and PING frames (not acknowledgements) a client may send in 10 s; beyond
    /// it the connection is closed with ENHANCE_YOUR_CALM.
    #[serde(default = "d_max_control_frames")]
    pub max_control_frames: u32,
    /// A connection with no stream open for this long gets GOAWAY (NO_ERROR) and is
    /// closed. 0: never.
    #[serde(default = "d_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Whether the streams of one client connection are handed to other cores.
    #[serde(default)]
    pub spread_streams: SpreadStreams,
    /// With `spread_streams = "balanced"`: a new stream goes to the least busy core when the
    /// accepting core has more than this many requests in flight beyond it.
    #[serde(default = "d_spread_threshold")]
    pub spread_threshold: u32,
    /// HTTP/2 connections a core opens to one endpoint (at least 1).
    #[serde(default = "d_max_upstream_connections")]
    pub max_upstream_connections: u32,
    /// A stream whose receiver gives no window for this long is reset (CANCEL), with its
    /// other side.
    #[serde(default = "d_stall_timeout_ms")]
    pub stall_timeout_ms: u64,
}

/// `spread_streams`: where the streams of one client connection are served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpreadStreams {
    /// Every stream on the core that accepted the connection.
    Off,
    /// A new stream goes to the least busy core when the accepting core is busier than it
    /// by more than `spread_threshold` requests in flight (with one core: `off`).
    #[default]
    Balanced,
    /// Every stream to another core (the least busy one), whatever the load: for tests
    /// and for measuring what a handoff costs.
    Always,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Http2Settings {
            max_concurrent_streams: d_max_concurrent_streams(),
            max_header_list_bytes: d_max_header_list_bytes(),
            initial_stream_window_bytes: d_initial_stream_window_bytes(),
            initial_connection_window_bytes: d_initial_connection_window_bytes(),
            max_frame_bytes: d_max_frame_bytes(),
            max_connection_age_ms: 0,
            max_pending_reset_streams: d_max_pending_reset_streams(),
            max_local_reset_streams: d_max_local_reset_streams(),
            max_control_frames: d_max_control_frames(),
            idle_timeout_ms: d_idle_timeout_ms(),
            spread_streams: SpreadStreams::default(),
            spread_threshold: d_spread_threshold(),
            max_upstream_connections: d_max_upstream_connections(),
            stall_timeout_ms: d_stall_timeout_ms(),
        }
    }
}

impl Http2Settings {
    pub fn is_default(&self) -> bool {
        *self == Http2Settings::default()
    }

    /// What is out of the protocol's bounds, as (field, reason).
    pub fn violations(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.max_concurrent_streams == 0 {
            out.push(("max_concurrent_streams", "must be at least 1".to_string()));
        }
        if self.max_header_list_bytes == 0 {
            out.push(("max_header_list_bytes", "must be at least 1".to_string()));
        }
        if self.max_upstream_connections == 0 {
            out.push(("max_upstream_connections", "must be at least 1".to_string()));
        }
        if self.stall_timeout_ms == 0 {
            out.push(("stall_timeout_ms", "must be at least 1".to_string()));
        }
        for (field, value) in [
            (
                "initial_stream_window_bytes",
                self.initial_stream_window_bytes,
            ),
            (
                "initial_connection_window_bytes",
                self.initial_connection_window_bytes,
            ),
        ] {
            if value == 0 || value > MAX_WINDOW_BYTES {
                out.push((field, format!("must be 1 to {MAX_WINDOW_BYTES}")));
            }
        }
        if !(DEFAULT_MAX_FRAME_BYTES..=MAX_FRAME_BYTES).contains(&self.max_frame_bytes) {
            out.push((
                "max_frame_bytes",
                format!("must be {DEFAULT_MAX_FRAME_BYTES} to {MAX_FRAME_BYTES}"),
            ));
        }
        out
    }
}

/// The protocol requests go to a service's endpoints in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// As the client spoke: HTTP/2 out for an HTTP/2 request, HTTP/1.1 for HTTP/1.
    #[default]
    Preserve,
    Http1,
    H2,
}

impl UpstreamProtocol {
    pub fn label(self) -> &'static str {
        match self {
            UpstreamProtocol::Preserve => "preserve",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2 => "h2",
        }
    }
}

/// A gRPC status a route retries on (`grpc_retry_on`), when it arrives in the response
/// headers (a trailers-only response: the call failed before any message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GrpcRetryOn {
    Cancelled,
    DeadlineExceeded,
    ResourceExhausted,
    Internal,
    Unavailable,
}

impl GrpcRetryOn {
    /// The gRPC status code.
    pub fn code(self) -> u32 {
        match self {
            GrpcRetryOn::Cancelled => 1,
            GrpcRetryOn::DeadlineExceeded => 4,
            GrpcRetryOn::ResourceExhausted => 8,
            GrpcRetryOn::Internal => 13,
            GrpcRetryOn::Unavailable => 14,
        }
    }
}

fn d_max_concurrent_streams() -> u32 {
    DEFAULT_MAX_CONCURRENT_STREAMS
}
fn d_max_header_list_bytes() -> u32 {
    DEFAULT_MAX_HEADER_LIST_BYTES
}
fn d_initial_stream_window_bytes() -> u32 {
    DEFAULT_INITIAL_STREAM_WINDOW_BYTES
}
fn d_initial_connection_window_bytes() -> u32 {
    DEFAULT_INITIAL_CONNECTION_WINDOW_BYTES
}
fn d_max_frame_bytes() -> u32 {
    DEFAULT_MAX_FRAME_BYTES
}
fn d_max_pending_reset_streams() -> usize {
    DEFAULT_MAX_PENDING_RESET_STREAMS
}
fn d_max_control_frames() -> u32 {
    DEFAULT_MAX_CONTROL_FRAMES
}
fn d_max_upstream_connections() -> u32 {
    DEFAULT_MAX_UPSTREAM_CONNECTIONS
}
fn d_stall_timeout_ms() -> u64 {
    DEFAULT_STALL_TIMEOUT_MS
}
fn d_max_local_reset_streams() -> usize {
    DEFAULT_MAX_LOCAL_RESET_STREAMS
}
fn d_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}
fn d_spread_threshold() -> u32 {
    DEFAULT_SPREAD_THRESHOLD
}

#[cfg(test)]
mod tests {
    use crate::{parse_config, Snapshot, UpstreamProtocol};

    #[test]
    fn http2_limits_protocol_and_grpc_retries_are_read() {
        let text = r#"
[http2]
max_concurrent_streams = 7
max_connection_age_ms = 1000
idle_timeout_ms = 2000
spread_streams = "always"
max_upstream_connections = 2
stall_timeout_ms = 3000

[defaults]
protocol = "http1"

[[services]]
name = "grpc"
endpoints = ["127.0.0.1:1"]
protocol = "h2"

[[services]]
name = "rest"
endpoints = ["127.0.0.1:2"]

[[routes]]
service = "grpc"
grpc_retry_on = ["unavailable", "resource-exhausted"]
"#;
        let config = match parse_config(text, "h2.toml") {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(config.http2.max_concurrent_streams, 7);
        assert_eq!(
            config.http2.max_header_list_bytes,
            super::DEFAULT_MAX_HEADER_LIST_BYTES
        );
        assert_eq!(
            config.http2.spread_threshold,
            super::DEFAULT_SPREAD_THRESHOLD
        );
        let s = Snapshot::build(&config);
        assert_eq!(s.http2.max_connection_age_ms, 1000);
        assert_eq!(s.http2.idle_timeout_ms, 2000);
        assert_eq!(s.http2.spread_streams, super::SpreadStreams::Always);
        assert_eq!(
            (s.http2.max_upstream_connections, s.http2.stall_timeout_ms),
            (2, 3000)
        );
        assert_eq!(s.services[0].settings.protocol, UpstreamProtocol::H2);
        assert_eq!(
            s.services[1].settings.protocol,
            UpstreamProtocol::Http1,
            "from [defaults]"
        );
        assert_eq!(s.routes[0].grpc_retry_on, vec![14, 8]);
    }

    #[test]
    fn out_of_range_limits_and_unknown_values_are_refused() {
        let bad = [
            ("[http2]\nmax_frame_bytes = 100\n", "max_frame_bytes"),
            ("[http2]\ninitial_stream_window_bytes = 0\n", "initial_stream_window_bytes"),
            ("[http2]\nmax_concurrent_streams = 0\n", "max_concurrent_streams"),
            ("[defaults]\nprotocol = \"h3\"\n", "protocol"),
            ("[http2]\nspread_streams = true\n", "spread_streams"),
            ("[http2]\nmax_upstream_connections = 0\n", "max_upstream_connections"),
            ("[http2]\nstall_timeout_ms = 0\n", "stall_timeout_ms"),
            (
                "[[services]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nservice = \"a\"\ngrpc_retry_on = [\"unknown\"]\n",
                "grpc_retry_on",
            ),
        ];
        for (text, field) in bad {
            match parse_config(text, "bad.toml") {
                Ok(_) => panic!("accepted: {text}"),
                Err(e) => assert!(e.to_string().contains(field), "{text}: {e}"),
            }
        }
    }
}
