//! Building the heads the proxy sends: the request head to the upstream and the response
//! head to the client, each from the original bytes minus hop-by-hop headers, plus what the
//! proxy must add. Also the proxy's own error responses.

use crate::codec::{is_hop_by_hop, listed_in_connection, RequestHead, ResponseHead};
use crate::error::reason_phrase;
use std::io::Write;
use std::net::IpAddr;

/// What the proxy adds to a forwarded request.
pub struct RequestAdditions<'a> {
    pub forwarded_for: Option<IpAddr>,
    /// Drop the caller's trace headers (the proxy writes its own per attempt).
    pub strip_trace: bool,
    pub via: bool,
    /// Extra header lines (already formatted, CRLF-terminated), e.g. trace context.
    pub extra: &'a [u8],
}

/// Header used to carry a request's remaining time budget between hops.
pub const DEADLINE_HEADER: &[u8] = b"x-coremesh-timeout-ms";

/// Write the upstream request head for `head` (parsed from `buf`) into `out`.
pub fn request_head(buf: &[u8], head: &RequestHead, add: &RequestAdditions<'_>, out: &mut Vec<u8>) {
    out.clear();
    let line_end = head
        .headers
        .first()
        .map(|h| h.line.start)
        .unwrap_or(head.len)
        .min(buf.len());
    // The request line as received (with its CRLF).
    let request_line = &buf[..line_end];
    let trimmed = request_line
        .strip_suffix(b"\r\n")
        .or_else(|| request_line.strip_suffix(b"\n"))
        .unwrap_or(request_line);
    out.extend_from_slice(trimmed);
    out.extend_from_slice(b"\r\n");
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        if is_hop_by_hop(name) {
            if head.upgrade && name.eq_ignore_ascii_case(b"upgrade") {
                push_line(out, &buf[h.line.clone()]);
            }
            continue;
        }
        if listed_in_connection(buf, &head.connection_tokens, name)
            || name.eq_ignore_ascii_case(b"expect")
        {
            continue;
        }
        if add.strip_trace
            && std::str::from_utf8(name).is_ok_and(coremesh_telemetry::trace::is_trace_header)
        {
            continue;
        }
        if name.eq_ignore_ascii_case(DEADLINE_HEADER) {
            // Replaced by the remaining budget when each attempt is sent.
            continue;
        }
        if add.forwarded_for.is_some() && name.eq_ignore_ascii_case(b"x-forwarded-for") {
            // Every X-Forwarded-For line is combined into one below, in order.
            continue;
        }
        push_line(out, &buf[h.line.clone()]);
    }
    if head.upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if head.minor_version == 0 {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if let Some(ip) = add.forwarded_for {
        out.extend_from_slice(b"X-Forwarded-For: ");
        for h in &head.headers {
            let name = &buf[h.name.clone()];
            let value = &buf[h.value.clone()];
            if name.eq_ignore_ascii_case(b"x-forwarded-for")
                && !value.is_empty()
                && !listed_in_connection(buf, &head.connection_tokens, name)
            {
                out.extend_from_slice(value);
                out.extend_from_slice(b", ");
            }
        }
        let _ = write!(out, "{ip}");
        out.extend_from_slice(b"\r\n");
    }
    if add.via {
        out.extend_from_slice(b"Via: 1.1 coremesh\r\n");
    }
    out.extend_from_slice(add.extra);
    out.extend_from_slice(b"\r\n");
}

/// Write the client response head for `head` (parsed from `buf`) into `out`.
pub fn response_head(
    buf: &[u8],
    head: &ResponseHead,
    close: bool,
    upgrade: bool,
    via: bool,
    drop_transfer_encoding: bool,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&buf[head.status_line.clone()]);
    out.extend_from_slice(b"\r\n");
    // Transfer-Encoding overrides Content-Length, which must then not be forwarded
    // (RFC 9112 §6.3): the next hop would see two framings.
    let transfer_encoding = head
        .headers
        .iter()
        .any(|h| buf[h.name.clone()].eq_ignore_ascii_case(b"transfer-encoding"));
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        if is_hop_by_hop(name) {
            if upgrade && name.eq_ignore_ascii_case(b"upgrade") {
                push_line(out, &buf[h.line.clone()]);
            }
            continue;
        }
        if listed_in_connection(buf, &head.connection_tokens, name)
            || (drop_transfer_encoding && name.eq_ignore_ascii_case(b"transfer-encoding"))
            || (transfer_encoding && name.eq_ignore_ascii_case(b"content-length"))
        {
            continue;
        }
        push_line(out, &buf[h.line.clone()]);
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    if via {
        out.extend_from_slice(b"Via: 1.1 coremesh\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn push_line(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
}

/// A complete response generated by the proxy itself, with a plain-text body saying why.
pub fn error_response(status: u16, kind: &str, message: &str, close: bool, out: &mut Vec<u8>) {
    out.clear();
    let body_len = message.len() + 1;
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {body_len}\r\nx-coremesh-error: {kind}\r\n",
        reason_phrase(status)
    );
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
}

/// Append the deadline header line to a finished head (which ends with an empty line).
/// `extra` holds further header lines (each CRLF-terminated), e.g. the attempt's trace context.
pub fn append_deadline(head: &[u8], remaining_ms: u64, extra: &[u8], out: &mut Vec<u8>) {
    let without_end = head.strip_suffix(b"\r\n").unwrap_or(head);
    out.extend_from_slice(without_end);
    out.extend_from_slice(DEADLINE_HEADER);
    let _ = write!(out, ": {remaining_ms}\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{parse_request, HeaderScratch};

    #[test]
    fn hop_by_hop_removed_and_additions_made() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nx-coremesh-timeout-ms: 9\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Private: s\r\nX-Forwarded-For: 10.0.0.1\r\nExpect: 100-continue\r\nAccept: */*\r\n\r\n";
        let mut head = RequestHead::default();
        parse_request(raw, 4096, &mut HeaderScratch::new(32), &mut head).unwrap();
        let mut out = Vec::new();
        let add = RequestAdditions {
            forwarded_for: Some("127.0.0.9".parse().unwrap()),
            strip_trace: false,
            via: true,
            extra: b"",
        };
        request_head(raw, &head, &add, &mut out);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nVia: 1.1 coremesh\r\n\r\n"
        );
    }

    #[test]
    fn error_response_is_well_formed() {
        let mut out = Vec::new();
        error_response(404, "no-route", "no route matched", false, &mut out);
        let s = std::str::from_utf8(&out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("content-length: 17\r\n"));
        assert!(s.ends_with("\r\n\r\nno route matched\n"));
    }
}
