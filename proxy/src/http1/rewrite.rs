//! Building the heads the proxy sends: the request head to the upstream and the response
//! head to the client, each from the original bytes minus hop-by-hop headers, plus what the
//! proxy must add. Also the proxy's own error responses.

use crate::error::reason_phrase;
use crate::http1::codec::{
    is_hop_by_hop, listed_in_connection, split_absolute_form, HeaderRef, RequestHead, ResponseHead,
};
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
    /// What becomes of `x-coremesh-client-id`.
    pub client_id: ClientIdHeader<'a>,
}

/// The header carrying the verified identity of an inbound TLS client to the application.
pub const CLIENT_ID_HEADER: &[u8] = b"x-coremesh-client-id";

/// What a request head's `x-coremesh-client-id` lines become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIdHeader<'a> {
    /// Passed on as received (not an inbound connection).
    Keep,
    /// Removed: an inbound connection without a verified identity.
    Strip,
    /// Replaced by this verified identity.
    Set(&'a str),
}

/// Header used to carry a request's remaining time budget between hops.
pub const DEADLINE_HEADER: &[u8] = b"x-coremesh-timeout-ms";

/// Write the upstream request head for `head` (parsed from `buf`) into `out`.
pub fn request_head(buf: &[u8], head: &RequestHead, add: &RequestAdditions<'_>, out: &mut Vec<u8>) {
    out.clear();
    let target = &buf[head.target.clone()];
    let absolute = split_absolute_form(target);
    // RFC 9110 §6.2: the proxy sends its own version. An HTTP/1.0 request without a Host
    // stays 1.0: an HTTP/1.1 request would need a Host nobody gave.
    let version: &[u8] = if head.minor_version == 1 || head.host.is_some() || absolute.is_some() {
        b"HTTP/1.1"
    } else {
        b"HTTP/1.0"
    };
    out.extend_from_slice(&buf[head.method.clone()]);
    out.push(b' ');
    match &absolute {
        // Toward the upstream the target goes in origin-form, with a Host generated from
        // the target in place of any received one (RFC 9112 §3.2.2).
        Some((_, rest)) => {
            let rest = &target[*rest..];
            if !rest.starts_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(rest);
        }
        None => out.extend_from_slice(target),
    }
    out.push(b' ');
    out.extend_from_slice(version);
    out.extend_from_slice(b"\r\n");
    if let Some((host, _)) = &absolute {
        out.extend_from_slice(b"Host: ");
        out.extend_from_slice(&target[host.clone()]);
        out.extend_from_slice(b"\r\n");
    }
    let mut content_length = ContentLengthLine::new(head.content_length);
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        if absolute.is_some() && name.eq_ignore_ascii_case(b"host") {
            continue;
        }
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
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length.push(buf, h, out);
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
        if add.client_id != ClientIdHeader::Keep && name.eq_ignore_ascii_case(CLIENT_ID_HEADER) {
            // Only the proxy says who the client is.
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
    if let ClientIdHeader::Set(id) = add.client_id {
        out.extend_from_slice(CLIENT_ID_HEADER);
        out.extend_from_slice(b": ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n");
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
    // RFC 9110 §6.2: the proxy's own version; the status code and reason as received.
    let status_line = &buf[head.status_line.clone()];
    match status_line.get(b"HTTP/1.x".len()..) {
        Some(code_and_reason) => {
            out.extend_from_slice(b"HTTP/1.1");
            out.extend_from_slice(code_and_reason);
        }
        None => out.extend_from_slice(status_line),
    }
    out.extend_from_slice(b"\r\n");
    // With Transfer-Encoding present no Content-Length goes on (RFC 9112 §6.3).
    let mut content_length =
        ContentLengthLine::new(head.content_length.filter(|_| !head.transfer_encoding));
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
        {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            content_length.push(buf, h, out);
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

/// Content-Length goes on as one field with one value (RFC 9110 §8.6): the first line as
/// received when it is that already, else the first name with the value the parser
/// settled on; repeated lines are dropped. `None`: no Content-Length goes on at all.
struct ContentLengthLine {
    value: Option<u64>,
    written: bool,
}

impl ContentLengthLine {
    fn new(value: Option<u64>) -> Self {
        ContentLengthLine {
            value,
            written: false,
        }
    }

    fn push(&mut self, buf: &[u8], h: &HeaderRef, out: &mut Vec<u8>) {
        let Some(n) = self.value.filter(|_| !self.written) else {
            return;
        };
        self.written = true;
        let value = &buf[h.value.clone()];
        if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
            push_line(out, &buf[h.line.clone()]);
        } else {
            out.extend_from_slice(&buf[h.name.clone()]);
            let _ = write!(out, ": {n}\r\n");
        }
    }
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
    out.extend_from_slice(b": ");
    push_decimal(out, remaining_ms);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// Append `n` in decimal. Every request goes through this: `write!` took several hundred
/// instructions for it (measured with callgrind).
fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_decimal_writes_what_display_writes() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            30_000,
            1_234_567_890,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
    use crate::http1::codec::{parse_request, parse_response, HeaderScratch};

    /// The upstream head for `raw` with `add`.
    fn rewrite_request_with(raw: &[u8], add: &RequestAdditions<'_>) -> String {
        let mut head = RequestHead::default();
        parse_request(raw, 4096, &mut HeaderScratch::new(32), &mut head).unwrap();
        let mut out = Vec::new();
        request_head(raw, &head, add, &mut out);
        String::from_utf8(out).unwrap()
    }

    /// The upstream head for `raw`, with nothing added.
    fn rewrite_request(raw: &[u8]) -> String {
        let add = RequestAdditions {
            forwarded_for: None,
            strip_trace: false,
            via: false,
            extra: b"",
            client_id: ClientIdHeader::Keep,
        };
        rewrite_request_with(raw, &add)
    }

    /// The client head for the upstream response `raw`.
    fn rewrite_response(raw: &[u8]) -> String {
        let mut head = ResponseHead::default();
        parse_response(raw, 4096, &mut HeaderScratch::new(16), &mut head).unwrap();
        let mut out = Vec::new();
        response_head(raw, &head, false, false, false, false, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_removed_and_additions_made() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nx-coremesh-timeout-ms: 9\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Private: s\r\nX-Forwarded-For: 10.0.0.1\r\nExpect: 100-continue\r\nAccept: */*\r\n\r\n";
        let add = RequestAdditions {
            forwarded_for: Some("127.0.0.9".parse().unwrap()),
            strip_trace: false,
            via: true,
            extra: b"",
            client_id: ClientIdHeader::Keep,
        };
        assert_eq!(
            rewrite_request_with(raw, &add),
            "GET /x HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1, 127.0.0.9\r\nVia: 1.1 coremesh\r\n\r\n"
        );
    }

    #[test]
    fn the_client_id_header_is_only_the_proxys() {
        let raw = b"GET /x HTTP/1.1\r\nHost: a\r\nX-Coremesh-Client-Id: forged\r\nA: 1\r\nx-coremesh-client-id: again\r\n\r\n";
        let with = |client_id| RequestAdditions {
            forwarded_for: None,
            strip_trace: false,
            via: false,
            extra: b"",
            client_id,
        };
        let id = "spiffe://td/ns/prod/sa/web";
        assert_eq!(
            rewrite_request_with(raw, &with(ClientIdHeader::Set(id))),
            "GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\nx-coremesh-client-id: spiffe://td/ns/prod/sa/web\r\n\r\n"
        );
        assert_eq!(
            rewrite_request_with(raw, &with(ClientIdHeader::Strip)),
            "GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n"
        );
        assert_eq!(
            rewrite_request_with(raw, &with(ClientIdHeader::Keep)),
            std::str::from_utf8(raw).unwrap()
        );
    }

    #[test]
    fn header_less_http_1_0_request_keeps_its_additions_inside_the_head() {
        let add = RequestAdditions {
            forwarded_for: Some("127.0.0.9".parse().unwrap()),
            strip_trace: false,
            via: false,
            extra: b"",
            client_id: ClientIdHeader::Keep,
        };
        let head = rewrite_request_with(b"GET /a HTTP/1.0\r\n\r\n", &add);
        let mut with_deadline = Vec::new();
        append_deadline(head.as_bytes(), 250, b"", &mut with_deadline);
        assert_eq!(
            std::str::from_utf8(&with_deadline).unwrap(),
            "GET /a HTTP/1.0\r\nConnection: close\r\nX-Forwarded-For: 127.0.0.9\r\nx-coremesh-timeout-ms: 250\r\n\r\n"
        );
    }

    #[test]
    fn bare_lf_heads_are_sent_on_with_crlf() {
        assert_eq!(
            rewrite_request(b"GET /b HTTP/1.1\nHost: a\nX-A: 1\n\n"),
            "GET /b HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\r\n"
        );
        assert_eq!(
            rewrite_response(b"HTTP/1.1 200 OK\nContent-Length: 2\nX-B: 2\n\nhi"),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-B: 2\r\n\r\n"
        );
    }

    #[test]
    fn absolute_form_goes_out_in_origin_form_with_the_target_s_host() {
        assert_eq!(
            rewrite_request(
                b"GET http://u@b.example:81?x HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\n\r\n"
            ),
            "GET /?x HTTP/1.1\r\nHost: b.example:81\r\nX-A: 1\r\n\r\n"
        );
    }

    #[test]
    fn the_proxy_sends_its_own_version() {
        assert_eq!(
            rewrite_request(b"GET /v HTTP/1.0\r\nHost: a\r\n\r\n"),
            "GET /v HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            rewrite_request(b"\r\nGET /v HTTP/1.0\r\n\r\n"),
            "GET /v HTTP/1.0\r\nConnection: close\r\n\r\n",
            "without a Host an HTTP/1.0 request stays 1.0"
        );
        assert_eq!(
            rewrite_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        );
        assert_eq!(
            rewrite_response(b"HTTP/1.1 599 \r\n\r\n"),
            "HTTP/1.1 599 \r\n\r\n"
        );
    }

    #[test]
    fn content_length_goes_on_as_one_value() {
        assert_eq!(
            rewrite_request(
                b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5, 5\r\nX: 1\r\nContent-Length: 5\r\n\r\n"
            ),
            "POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 5\r\nX: 1\r\n\r\n"
        );
        assert_eq!(
            rewrite_request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
        );
        assert_eq!(
            rewrite_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\n"
            ),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        );
        assert_eq!(
            rewrite_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "Transfer-Encoding overrides Content-Length, which is not forwarded"
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
