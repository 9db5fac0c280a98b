//! gRPC on top of HTTP/2: the `grpc-timeout` header (read into a deadline, written with
//! what is left of it), the gRPC status the proxy answers its own errors with, and which
//! requests are gRPC at all.

use crate::error::ProxyError;
use std::time::Duration;

/// The gRPC status codes the proxy uses.
pub mod code {
    pub const CANCELLED: u32 = 1;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 7;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNIMPLEMENTED: u32 = 12;
    pub const INTERNAL: u32 = 13;
    pub const UNAVAILABLE: u32 = 14;
}

/// Whether a call that ended with `code` failed on the server's side, as OpenTelemetry's
/// conventions for a server span say: UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
/// UNAVAILABLE and DATA_LOSS. The others are the caller's doing.
pub fn is_server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// Whether a request with this `content-type` is a gRPC call.
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type.is_some_and(|ct| {
        ct.len() >= 16
            && ct[..16].eq_ignore_ascii_case(b"application/grpc")
            && matches!(ct.get(16), None | Some(b'+') | Some(b';'))
    })
}

/// A `grpc-timeout` value: at most 8 digits and a unit (`H M S m u n`). `None` when it
/// does not follow the rule (the header is then ignored, as gRPC servers do).
pub fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// `left` as a `grpc-timeout` value: the finest unit whose count fits in 8 digits.
pub fn format_timeout(left: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let nanos = left.as_nanos();
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
    ] {
        if nanos / per <= MAX {
            return format!("{}{unit}", (nanos / per).max(1));
        }
    }
    format!("{}H", (nanos / 3_600_000_000_000).clamp(1, MAX))
}

/// The gRPC status of an error the proxy answers a gRPC call with itself.
pub fn status_of(err: &ProxyError) -> u32 {
    match err {
        ProxyError::NoRoute => code::UNIMPLEMENTED,
        ProxyError::Timeout => code::DEADLINE_EXCEEDED,
        ProxyError::BadRequest { status: 413, .. } => code::RESOURCE_EXHAUSTED,
        ProxyError::Denied(_) => code::PERMISSION_DENIED,
        ProxyError::BadRequest { .. } => code::INTERNAL,
        ProxyError::ClientGone => code::CANCELLED,
        ProxyError::NoEndpoints
        | ProxyError::Connect(_)
        | ProxyError::ConnectTimeout
        | ProxyError::UpstreamClosed { .. }
        | ProxyError::UpstreamBrokeResponse
        | ProxyError::UpstreamBadResponse(_)
        | ProxyError::ShuttingDown => code::UNAVAILABLE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_follow_the_grpc_rule() {
        assert_eq!(parse_timeout(b"100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(
            parse_timeout(b"99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        assert_eq!(parse_timeout(b"123456789m"), None, "nine digits");
        assert_eq!(parse_timeout(b"m"), None);
        assert_eq!(parse_timeout(b"10x"), None);
        assert_eq!(parse_timeout(b"-1m"), None);
        assert_eq!(parse_timeout(b""), None);
    }

    #[test]
    fn a_formatted_timeout_reads_back_within_its_unit() {
        for ms in [1u64, 999, 1000, 150_000, 86_400_000] {
            let d = Duration::from_millis(ms);
            let text = format_timeout(d);
            let back = parse_timeout(text.as_bytes()).expect(&text);
            assert!(back <= d && d - back < Duration::from_secs(60), "{text}");
        }
    }

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(!is_grpc(Some(b"application/grpcx")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(None));
    }
}
