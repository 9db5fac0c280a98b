//! Normalised text renderings of what an upstream and a client received, so that two
//! proxies can be compared line by line. The normalisation rules (each one a named function
//! below, and listed in `tests/data/differential/README.md`) remove only what legitimately
//! differs between two correct proxies; everything else is shown byte for byte (escaped).

use crate::client::ClientCapture;
use crate::message::{read_request, read_response, Framing, Message, Read};
use crate::scripted::Capture;
use std::fmt::Write as _;

/// U1. Fields a proxy adds to or rewrites in a forwarded request by design: client address
/// (`X-Forwarded-For`, `X-Real-IP`, `Forwarded`), `Via`, coremesh's deadline header and
/// trace context (it propagates its own).
const PROXY_REQUEST_FIELDS: &[&str] = &[
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "via",
    "x-coremesh-timeout-ms",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// C1. Fields a proxy writes itself on responses: nginx replaces `Server` and `Date` with
/// its own; `Via` is configurable.
const PROXY_RESPONSE_FIELDS: &[&str] = &["server", "date", "via"];

/// B1. Connection management is per hop: `Connection` and `Keep-Alive` are not compared;
/// a `close` option is kept (rendered `[close]`) because it says what the proxy will do.
/// B2. Framing fields are replaced by a `framing:` line (responses) or dropped (requests,
/// see U3); the decoded body and the trailer fields are compared, chunk sizes and chunk
/// extensions are not (RFC 9112 §7.1.1: a recipient may ignore extensions).
const HOP_FIELDS: &[&str] = &[
    "connection",
    "keep-alive",
    "content-length",
    "transfer-encoding",
];

/// Rules a case may turn off, to compare what they would hide.
#[derive(Debug, Clone, Copy, Default)]
pub struct Strictness {
    /// Keep `Content-Length` / `Transfer-Encoding` fields (turns off B2 and U3 for them).
    pub framing_fields: bool,
    /// Compare the request line's HTTP version (turns off U4).
    pub request_version: bool,
}

/// Render every request the upstream received, across its connections in accept order.
///
/// U2. `Host` is rendered first (nginx writes the Host field before the others).
/// U3. nginx buffers a request body and sends it with Content-Length; the framing of a
/// request body is not compared (its bytes and trailers are).
/// U4. The request line's version is shown as `HTTP/1.x`: nginx forwards every request as
/// its `proxy_http_version` (1.1), coremesh forwards an HTTP/1.0 request as 1.0. The case
/// `http10-forwarded-version` compares it (RFC 9110 §6.2).
/// U5. Whether the proxy asked the upstream to close (`Connection: close`) is its own pool
/// policy and is not compared (B1 keeps `[close]` on the client side only).
pub fn upstream(capture: &Capture, strict: Strictness) -> String {
    let mut out = String::new();
    for (index, bytes) in capture.connections.iter().enumerate() {
        let mut at = 0;
        while at < bytes.len() {
            match read_request(&bytes[at..]) {
                Read::Complete(m, used) => {
                    at += used;
                    render_request(&m, strict, &mut out);
                }
                Read::Incomplete => {
                    let _ = writeln!(out, "incomplete: {}", escape(&bytes[at..]));
                    break;
                }
                Read::Invalid(why) => {
                    let _ = writeln!(out, "not a request ({why}): {}", escape(&bytes[at..]));
                    break;
                }
            }
        }
        if bytes.is_empty() {
            let _ = writeln!(out, "(connection {index} carried no bytes)");
        }
    }
    for e in &capture.errors {
        let _ = writeln!(out, "upstream error: {e}");
    }
    if out.is_empty() {
        out.push_str("(nothing)\n");
    }
    out
}

fn render_request(m: &Message, strict: Strictness, out: &mut String) {
    let line = if strict.request_version {
        m.start_line.clone()
    } else {
        unversioned(&m.start_line)
    };
    let _ = writeln!(out, "> {}", escape(&line));
    for (name, value) in m
        .fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"host"))
    {
        let _ = writeln!(out, "  {}: {}", escape(name), escape(value));
    }
    for (name, value) in &m.fields {
        if name.eq_ignore_ascii_case(b"host")
            || is_one_of(name, PROXY_REQUEST_FIELDS)
            || is_hop_field(name, strict)
        {
            continue;
        }
        let _ = writeln!(out, "  {}: {}", escape(name), escape(value));
    }
    if !m.body.is_empty() {
        let _ = writeln!(out, "  body: {}", escape(&m.body));
    }
    for (name, value) in &m.trailers {
        let _ = writeln!(out, "  trailer {}: {}", escape(name), escape(value));
    }
}

/// Render every response the client received. `own_response`: the responses are the
/// proxy's own (errors), so only their status codes are compared (C2).
pub fn client(capture: &ClientCapture, own_response: bool, strict: Strictness) -> String {
    let mut out = String::new();
    let bytes = &capture.bytes;
    let mut at = 0;
    let mut request = 0;
    while at < bytes.len() {
        let head = capture.head_requests.get(request).copied().unwrap_or(false);
        match read_response(&bytes[at..], head, true) {
            Read::Complete(m, used) => {
                at += used;
                if !m.is_interim() {
                    request += 1;
                }
                if own_response && !m.is_interim() {
                    let _ = writeln!(out, "< status {}", m.status);
                    render_connection_close(&m, &mut out);
                } else {
                    render_response(&m, strict, &mut out);
                }
            }
            Read::Incomplete => {
                let _ = writeln!(out, "incomplete: {}", escape(&bytes[at..]));
                break;
            }
            Read::Invalid(why) => {
                let _ = writeln!(out, "not a response ({why}): {}", escape(&bytes[at..]));
                break;
            }
        }
    }
    if let Some(e) = &capture.error {
        let _ = writeln!(out, "client error: {e}");
    }
    if out.is_empty() {
        out.push_str("(nothing)\n");
    }
    out
}

fn render_response(m: &Message, strict: Strictness, out: &mut String) {
    let _ = writeln!(out, "< {}", escape(&m.start_line));
    for (name, value) in &m.fields {
        if is_one_of(name, PROXY_RESPONSE_FIELDS) || is_hop_field(name, strict) {
            continue;
        }
        let _ = writeln!(out, "  {}: {}", escape(name), escape(value));
    }
    render_connection_close(m, out);
    if m.is_interim() {
        return;
    }
    let framing = match m.framing {
        Framing::None => "none".to_string(),
        Framing::Length(n) => format!("length {n}"),
        Framing::Chunked => "chunked".to_string(),
        Framing::Close => "until close".to_string(),
    };
    let _ = writeln!(out, "  framing: {framing}");
    if !m.body.is_empty() {
        let _ = writeln!(out, "  body: {}", escape(&m.body));
    }
    for (name, value) in &m.trailers {
        let _ = writeln!(out, "  trailer {}: {}", escape(name), escape(value));
    }
}

/// B1: a `close` connection option, whichever proxy wrote it.
fn render_connection_close(m: &Message, out: &mut String) {
    if m.tokens("connection").iter().any(|t| t == "close") {
        out.push_str("  [close]\n");
    }
}

fn is_hop_field(name: &[u8], strict: Strictness) -> bool {
    let framing = name.eq_ignore_ascii_case(b"content-length")
        || name.eq_ignore_ascii_case(b"transfer-encoding");
    is_one_of(name, HOP_FIELDS) && !(strict.framing_fields && framing)
}

/// U4: `HTTP/1.0` or `HTTP/1.1` at the end of a request line becomes `HTTP/1.x`.
fn unversioned(line: &[u8]) -> Vec<u8> {
    match line
        .strip_suffix(b"HTTP/1.0")
        .or_else(|| line.strip_suffix(b"HTTP/1.1"))
    {
        Some(rest) => [rest, b"HTTP/1.x"].concat(),
        None => line.to_vec(),
    }
}

fn is_one_of(name: &[u8], list: &[&str]) -> bool {
    list.iter().any(|l| name.eq_ignore_ascii_case(l.as_bytes()))
}

/// Bytes as text: printable ASCII as is, `\r`, `\n`, `\t`, `\\` and `\xHH` for the rest,
/// runs of one byte longer than 16 as `\*N:c` (the corpus's own escape), in quotes.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let run = bytes[i..].iter().take_while(|&&c| c == b).count();
        if run > 16 && (b.is_ascii_alphanumeric()) {
            let _ = write!(out, "\\*{run}:{}", b as char);
            i += run;
            continue;
        }
        match b {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\x22"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        i += 1;
    }
    out.push('"');
    out
}
