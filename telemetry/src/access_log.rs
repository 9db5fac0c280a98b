//! The access log: one JSON object per request, one per line, written into a caller's
//! reused buffer (no allocation per line once the buffer has grown):
//!
//! ```text
//! {"time":"2023-11-14T22:13:20.123Z","route":"api","service":"users","endpoint":"10.0.0.1:8080","status":200,"latency_ms":12.345,"attempts":1,"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}
//! ```
//!
//! `time` is when the response ended (RFC 3339, UTC, milliseconds); `latency_ms` has
//! microsecond precision; `route`, `service`, `endpoint` and `trace_id` are `null` when
//! unknown (no route matched, no endpoint was chosen, the request is not traced).
//! `grpc_status` (a gRPC call's) and `client_id` (the caller's identity that mutual TLS
//! verified, on the inbound side) follow, only on lines that have them.

use crate::trace::Hex;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request, as the access log shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessLogEntry<'a> {
    /// When the response ended.
    pub time: SystemTime,
    /// The route that matched.
    pub route: Option<&'a str>,
    /// The destination service.
    pub service: Option<&'a str>,
    /// The endpoint that answered (the last attempt's).
    pub endpoint: Option<&'a str>,
    /// The status sent to the client.
    pub status: u16,
    /// Time from the request head's arrival to the end of the response.
    pub latency: Duration,
    /// Attempts made (0 when none was: no route, no endpoint, bad request).
    pub attempts: u32,
    /// The trace the request belongs to, when traced.
    pub trace_id: Option<&'a [u8; 16]>,
    /// A gRPC call's status (the field is left out of the line for other requests).
    pub grpc_status: Option<u32>,
    /// The caller's identity that mutual TLS verified (the field is left out of the line
    /// for callers without one).
    pub client_id: Option<&'a str>,
}

/// Appends `entry` as one JSON line (ending in `\n`) to `out`.
pub fn write_access_log_line(entry: &AccessLogEntry<'_>, out: &mut Vec<u8>) {
    let start = out.len();
    if serde_json::to_writer(&mut *out, entry).is_err() {
        // Nothing in an entry can fail to serialize; never leave half a line.
        out.truncate(start);
        return;
    }
    out.push(b'\n');
}

/// The latest time RFC 3339 formatting handles (9999-12-31T23:59:59.999Z).
const LAST_FORMATTABLE: Duration = Duration::from_millis(253_402_300_799_999);

impl Serialize for AccessLogEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let since_epoch = self
            .time
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .min(LAST_FORMATTABLE);
        let time = humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch);
        let latency_ms = self.latency.as_micros() as f64 / 1000.0;
        let fields =
            8 + usize::from(self.grpc_status.is_some()) + usize::from(self.client_id.is_some());
        let mut s = serializer.serialize_struct("AccessLogEntry", fields)?;
        s.serialize_field("time", &Collected(time))?;
        s.serialize_field("route", &self.route)?;
        s.serialize_field("service", &self.service)?;
        s.serialize_field("endpoint", &self.endpoint)?;
        s.serialize_field("status", &self.status)?;
        s.serialize_field("latency_ms", &latency_ms)?;
        s.serialize_field("attempts", &self.attempts)?;
        s.serialize_field("trace_id", &self.trace_id.map(|id| Collected(Hex(id))))?;
        if let Some(code) = self.grpc_status {
            s.serialize_field("grpc_status", &code)?;
        }
        if let Some(id) = self.client_id {
            s.serialize_field("client_id", id)?;
        }
        s.end()
    }
}

/// Serializes a `Display` value as a string without building one.
struct Collected<T>(T);

impl<T: std::fmt::Display> Serialize for Collected<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> AccessLogEntry<'static> {
        AccessLogEntry {
            time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            route: Some("api"),
            service: Some("users"),
            endpoint: Some("10.0.0.1:8080"),
            status: 200,
            latency: Duration::from_micros(12_345),
            attempts: 1,
            trace_id: Some(&[
                0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
                0x47, 0x36,
            ]),
            grpc_status: None,
            client_id: None,
        }
    }

    #[test]
    fn a_verified_caller_has_its_identity_last() {
        let mut out = Vec::new();
        let call = AccessLogEntry {
            grpc_status: Some(0),
            client_id: Some("spiffe://td/ns/prod/sa/web"),
            ..entry()
        };
        write_access_log_line(&call, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(",\"grpc_status\":0,\"client_id\":\"spiffe://td/ns/prod/sa/web\"}\n"),
            "{text}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(parsed["client_id"], "spiffe://td/ns/prod/sa/web");
    }

    #[test]
    fn a_grpc_call_has_its_status_last() {
        let mut out = Vec::new();
        let call = AccessLogEntry {
            grpc_status: Some(14),
            trace_id: None,
            ..entry()
        };
        write_access_log_line(&call, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"route\":\"api\",\"service\":\"users\",\
             \"endpoint\":\"10.0.0.1:8080\",\"status\":200,\"latency_ms\":12.345,\"attempts\":1,\
             \"trace_id\":null,\"grpc_status\":14}\n"
        );
    }

    #[test]
    fn writes_one_exact_line() {
        let mut out = Vec::new();
        write_access_log_line(&entry(), &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"route\":\"api\",\"service\":\"users\",\
             \"endpoint\":\"10.0.0.1:8080\",\"status\":200,\"latency_ms\":12.345,\"attempts\":1,\
             \"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"}\n"
        );
    }

    #[test]
    fn unknowns_are_null_and_names_escaped() {
        let mut out = b"previous line\n".to_vec();
        let e = AccessLogEntry {
            route: Some("we\"ird\\\n"),
            service: None,
            endpoint: None,
            trace_id: None,
            status: 404,
            attempts: 0,
            latency: Duration::from_nanos(999),
            ..entry()
        };
        write_access_log_line(&e, &mut out);
        let text = String::from_utf8(out).unwrap();
        let line = text.strip_prefix("previous line\n").unwrap();
        assert_eq!(
            line,
            "{\"time\":\"2023-11-14T22:13:20.123Z\",\"route\":\"we\\\"ird\\\\\\n\",\"service\":null,\
             \"endpoint\":null,\"status\":404,\"latency_ms\":0.0,\"attempts\":0,\"trace_id\":null}\n"
        );
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(parsed["route"], "we\"ird\\\n");
    }

    #[test]
    fn clocks_out_of_range_are_clamped() {
        let mut out = Vec::new();
        let before_epoch = AccessLogEntry {
            time: UNIX_EPOCH - Duration::from_secs(10),
            ..entry()
        };
        write_access_log_line(&before_epoch, &mut out);
        let far = AccessLogEntry {
            time: UNIX_EPOCH + Duration::from_secs(400_000_000_000),
            ..entry()
        };
        write_access_log_line(&far, &mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("{\"time\":\"1970-01-01T00:00:00.000Z\""));
        assert!(lines[1].starts_with("{\"time\":\"9999-12-31T23:59:59.999Z\""));
    }

    #[test]
    fn the_buffer_is_reused() {
        let mut out = Vec::with_capacity(1024);
        write_access_log_line(&entry(), &mut out);
        let first = out.clone();
        out.clear();
        write_access_log_line(&entry(), &mut out);
        assert_eq!(out, first);
        assert_eq!(out.capacity(), 1024);
    }
}
