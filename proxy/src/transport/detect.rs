//! Protocol detection: a look at a connection's first bytes, under a timeout, decides
//! whether it speaks HTTP/1, HTTP/2 (prior knowledge), TLS or something else (opaque).
//!
//! The bytes read stay in the connection's buffer ([`Conn::data`]) for whichever codec or
//! relay takes the connection next: detection never consumes. The decision is made as
//! soon as the bytes suffice; while they are a prefix of something recognisable, it waits
//! for more (within the timeout). Waiting is for readiness only, and the read that follows
//! is never cancelled, so no byte is lost to a timeout on either driver (a read cancelled
//! mid-flight takes its buffer with it, see `conn.rs`).
//!
//! What counts as each protocol ([`sniff`]):
//! - HTTP/1: a request line — a method token, one space, a target (visible bytes), one
//!   space, `HTTP/1.`;
//! - HTTP/2: the prior-knowledge preface `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`;
//! - TLS: a handshake record (type 0x16, version 0x03 0x00..=0x04, a length a plaintext
//!   record may have) holding a ClientHello (handshake type 1);
//! - anything else, or more than `detect_max_bytes` (default [`MAX_DETECT_BYTES`]) without
//!   a decision: opaque.
//!
//! A destination port in `opaque_ports` is opaque at once, with no read (protocols where
//! the server speaks first, such as SMTP or MySQL, would otherwise wait out the timeout).

use crate::transport::conn::{Conn, Fill};
use coremesh_discovery::{SideSettings, DEFAULT_DETECT_MAX_BYTES, DEFAULT_DETECT_TIMEOUT_MS};
use std::time::{Duration, Instant};

pub use coremesh_telemetry::{DetectReason, Protocol};

/// Default detection timeout (`detect_timeout_ms`, [`DEFAULT_DETECT_TIMEOUT_MS`]).
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(DEFAULT_DETECT_TIMEOUT_MS);

/// Detection gives up (opaque) when this many bytes still leave it undecided: an HTTP/1
/// request line with a target longer than this is relayed as opaque bytes. The default of
/// `detect_max_bytes` ([`DEFAULT_DETECT_MAX_BYTES`]).
pub const MAX_DETECT_BYTES: usize = DEFAULT_DETECT_MAX_BYTES;

/// Longest method token an HTTP/1 request line may start with (the longest registered
/// methods are around 20 bytes).
const MAX_METHOD_BYTES: usize = 32;

/// The HTTP/2 prior-knowledge connection preface (RFC 9113, section 3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Largest TLS record body a plaintext record (a ClientHello) may have: 2^14 bytes.
const MAX_TLS_PLAINTEXT: u16 = 1 << 14;

/// How detection is done on one side of the sidecar (from its [`SideSettings`]).
///
/// Defaults: `timeout` [`DEFAULT_DETECT_TIMEOUT`] (1 s), `opaque_ports`
/// [`DEFAULT_OPAQUE_PORTS`](coremesh_discovery::DEFAULT_OPAQUE_PORTS), `max_bytes`
/// [`MAX_DETECT_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectConfig {
    /// Waiting for the first bytes stops after this long (the connection is then opaque).
    pub timeout: Duration,
    /// Destination ports that are opaque without reading anything.
    pub opaque_ports: Vec<u16>,
    /// Still undecided after this many bytes: opaque.
    pub max_bytes: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig::from(&SideSettings::default())
    }
}

impl From<&SideSettings> for DetectConfig {
    fn from(s: &SideSettings) -> Self {
        DetectConfig {
            timeout: Duration::from_millis(s.detect_timeout_ms),
            opaque_ports: s.opaque_ports.clone(),
            max_bytes: s.detect_max_bytes,
        }
    }
}

/// What detection decided, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub protocol: Protocol,
    pub reason: DetectReason,
}

impl Detection {
    pub fn opaque(reason: DetectReason) -> Detection {
        Detection {
            protocol: Protocol::Opaque,
            reason,
        }
    }
}

/// What some first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// The bytes are (the start of) this protocol.
    Is(Protocol),
    /// The bytes are a prefix of something recognisable: more are needed to decide.
    NeedMore,
    /// The bytes are none of the known protocols.
    Unrecognised,
}

/// Whether bytes are, so far, one pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Yes,
    Maybe,
    No,
}

/// Decides what `bytes` (a connection's first bytes) are, giving up at
/// [`MAX_DETECT_BYTES`]; pure, for any input.
pub fn sniff(bytes: &[u8]) -> Sniff {
    sniff_within(bytes, MAX_DETECT_BYTES)
}

/// [`sniff`], giving up (unrecognised) once `max_bytes` leave it undecided.
pub fn sniff_within(bytes: &[u8], max_bytes: usize) -> Sniff {
    let steps = [
        (Protocol::Http2, h2_preface(bytes)),
        (Protocol::Tls, tls_client_hello(bytes)),
        (Protocol::Http1, http1_request_line(bytes)),
    ];
    // At most one pattern can match: a preface is not a request line (`HTTP/2.0` is not
    // `HTTP/1.`) and a TLS record starts with a byte no method token has.
    if let Some((protocol, _)) = steps.iter().find(|(_, s)| *s == Step::Yes) {
        return Sniff::Is(*protocol);
    }
    if steps.iter().any(|(_, s)| *s == Step::Maybe) && bytes.len() < max_bytes {
        return Sniff::NeedMore;
    }
    Sniff::Unrecognised
}

fn h2_preface(bytes: &[u8]) -> Step {
    if bytes.starts_with(H2_PREFACE) {
        Step::Yes
    } else if H2_PREFACE.starts_with(bytes) {
        Step::Maybe
    } else {
        Step::No
    }
}

fn tls_client_hello(bytes: &[u8]) -> Step {
    // Record: type (1), version (2), length (2); then the handshake type (1).
    let checks: [fn(&[u8]) -> bool; 4] = [
        |b| b[0] == 0x16,
        |b| b[1] == 0x03,
        |b| b[2] <= 0x04,
        |b| b[3] <= 0x40,
    ];
    for (i, check) in checks.iter().enumerate() {
        if bytes.len() <= i {
            return Step::Maybe;
        }
        if !check(bytes) {
            return Step::No;
        }
    }
    let (Some(&hi), Some(&lo)) = (bytes.get(3), bytes.get(4)) else {
        return Step::Maybe;
    };
    let length = u16::from_be_bytes([hi, lo]);
    // A handshake message has at least its 4-byte header.
    if !(4..=MAX_TLS_PLAINTEXT).contains(&length) {
        return Step::No;
    }
    match bytes.get(5) {
        None => Step::Maybe,
        Some(1) => Step::Yes,
        Some(_) => Step::No,
    }
}

/// `tchar` of RFC 9110: the bytes a method token is made of.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request-target byte: anything visible (obs-text included), no space or control.
fn is_target_byte(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

fn http1_request_line(bytes: &[u8]) -> Step {
    const VERSION: &[u8] = b"HTTP/1.";
    let method = bytes.iter().take_while(|&&b| is_tchar(b)).count();
    if method > MAX_METHOD_BYTES {
        return Step::No;
    }
    let Some(&after_method) = bytes.get(method) else {
        return Step::Maybe;
    };
    if method == 0 || after_method != b' ' {
        return Step::No;
    }
    let rest = &bytes[method + 1..];
    let target = rest.iter().take_while(|&&b| is_target_byte(b)).count();
    let Some(&after_target) = rest.get(target) else {
        return Step::Maybe;
    };
    if target == 0 || after_target != b' ' {
        return Step::No;
    }
    let version = &rest[target + 1..];
    let n = version.len().min(VERSION.len());
    if version[..n] != VERSION[..n] {
        Step::No
    } else if n == VERSION.len() {
        Step::Yes
    } else {
        Step::Maybe
    }
}

/// What the first bytes `data` decide, looking at `max_bytes` of them at most (a read may
/// bring more than the limit); none while more bytes are needed.
pub fn decided(data: &[u8], max_bytes: usize) -> Option<Detection> {
    match sniff_within(&data[..data.len().min(max_bytes)], max_bytes) {
        Sniff::Is(protocol) => Some(Detection {
            protocol,
            reason: DetectReason::Matched,
        }),
        Sniff::Unrecognised => Some(Detection::opaque(DetectReason::Unrecognised)),
        Sniff::NeedMore => None,
    }
}

/// Reads the first bytes into `conn`'s buffer (never consumes them) and decides. A port in
/// `cfg.opaque_ports` is opaque at once with nothing read; silence for `cfg.timeout` is
/// opaque ([`DetectReason::Timeout`]); the client closing (or failing) first is opaque
/// ([`DetectReason::Closed`]), with whatever it sent still buffered.
pub async fn detect(conn: &mut Conn, dst_port: u16, cfg: &DetectConfig) -> Detection {
    if cfg.opaque_ports.contains(&dst_port) {
        return Detection::opaque(DetectReason::OpaquePort);
    }
    let deadline = Instant::now() + cfg.timeout;
    loop {
        if let Some(detection) = decided(conn.data(), cfg.max_bytes) {
            return detection;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Detection::opaque(DetectReason::Timeout);
        }
        // Wait for readiness under the timeout (cancelling a readiness wait loses
        // nothing), then read what is there without a timeout: that read returns at once.
        match monoio::time::timeout(left, conn.stream.readable(false)).await {
            Err(_) => return Detection::opaque(DetectReason::Timeout),
            Ok(Err(_)) => return Detection::opaque(DetectReason::Closed),
            Ok(Ok(())) => {}
        }
        match conn.fill(cfg.max_bytes).await {
            Ok(Fill::Read(_)) => {}
            // `sniff` gives up below the limit, so this is not reached; opaque if it were.
            Ok(Fill::Full) => return Detection::opaque(DetectReason::Unrecognised),
            Ok(Fill::Eof) | Err(_) => return Detection::opaque(DetectReason::Closed),
        }
    }
}

#[cfg(test)]
mod tests;
