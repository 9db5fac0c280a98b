//! HTTP/1.1 heads: parsed in place with `httparse`, kept as offsets into the read buffer,
//! framing decided strictly per RFC 9112, and re-emitted with only the headers the proxy
//! must change (hop-by-hop removed, `Via` / `X-Forwarded-For` added when configured).
//!
//! Parsing reports three outcomes: a complete head, a need for more bytes, or an invalid
//! head with the status to answer (400 / 431 for requests, 502 for responses).

use std::ops::Range;

/// A header kept as offsets into the buffer it was parsed from.
#[derive(Debug, Clone)]
pub struct HeaderRef {
    pub name: Range<usize>,
    pub value: Range<usize>,
    /// The whole line without its CRLF, for raw forwarding.
    pub line: Range<usize>,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Response only: the body runs until the upstream closes.
    UntilClose,
}

/// A parsed request head. All ranges index the buffer it was parsed from.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// Bytes of the head including the final blank line.
    pub len: usize,
    pub method: Range<usize>,
    pub target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub headers: Vec<HeaderRef>,
    pub framing: Option<Framing>,
    /// The Content-Length the request declared (one value, however it was written).
    pub content_length: Option<u64>,
    pub host: Option<Range<usize>>,
    /// The client asked to close the connection after this exchange.
    pub close: bool,
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header.
    pub upgrade: bool,
    /// The method is CONNECT: a 2xx answer turns the connection into a tunnel (RFC 9110
    /// §9.3.6). Only a request passed through to its original destination may be sent on;
    /// the request path answers any other with 501.
    pub connect: bool,
    /// Header names listed in `Connection`, to drop when forwarding.
    pub connection_tokens: Vec<Range<usize>>,
}

/// A parsed response head.
#[derive(Debug, Default)]
pub struct ResponseHead {
    pub len: usize,
    pub status: u16,
    pub minor_version: u8,
    /// The status line without its line ending (CRLF or a bare LF).
    pub status_line: Range<usize>,
    pub headers: Vec<HeaderRef>,
    /// The Content-Length the response declared (one value, however it was written);
    /// `None` when Transfer-Encoding overrides it.
    pub content_length: Option<u64>,
    /// A Transfer-Encoding header is present: any Content-Length is not forwarded.
    pub transfer_encoding: bool,
    pub chunked: bool,
    pub close: bool,
    pub connection_tokens: Vec<Range<usize>>,
}

/// Why a head could not be accepted; `status` is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    pub status: u16,
    pub reason: &'static str,
}

impl HeadError {
    const fn new(status: u16, reason: &'static str) -> Self {
        HeadError { status, reason }
    }
}

/// Outcome of trying to parse a head from the bytes received so far.
#[derive(Debug)]
pub enum Parsed {
    Complete,
    Partial,
}

fn offset_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    // Both slices come from `buf`; the subtraction yields the offset of `part` within it.
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// The first line of a head (empty lines before it skipped, as httparse skips them),
/// without its CRLF or bare LF. The head is complete, so the line ends inside it.
fn first_line(buf: &[u8], head_len: usize) -> Range<usize> {
    let head = &buf[..head_len.min(buf.len())];
    let start = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    let end = head[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |i| start + i);
    let end = if end > start && head[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    start..end.max(start)
}

fn eq_ignore_case(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Comma-separated list elements, trimmed, empty ones skipped (RFC 9110 §5.6.1).
fn list_items(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim)
        .filter(|s| !s.is_empty())
}

/// Strict Content-Length: one or more identical runs of digits.
fn parse_content_length(value: &[u8]) -> Option<u64> {
    let mut found: Option<u64> = None;
    let mut any = false;
    for item in value.split(|&b| b == b',').map(trim) {
        any = true;
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let mut n: u64 = 0;
        for d in item {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        match found {
            Some(prev) if prev != n => return None,
            _ => found = Some(n),
        }
    }
    if any {
        found
    } else {
        None
    }
}

impl HeaderRef {
    /// The offsets of `h`, a header httparse found in `buf`.
    fn of(buf: &[u8], h: &httparse::Header<'_>) -> HeaderRef {
        let name = offset_in(buf, h.name.as_bytes());
        let value = offset_in(buf, h.value);
        HeaderRef {
            line: name.start..value.end,
            name,
            value,
        }
    }
}

/// The options a `Connection` header names (of both directions).
#[derive(Default)]
struct ConnectionOptions {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl ConnectionOptions {
    /// Read one `Connection` value; every token's offsets go to `tokens` (the headers it
    /// names are hop-by-hop).
    fn read(&mut self, buf: &[u8], value: &[u8], tokens: &mut Vec<Range<usize>>) {
        for token in list_items(value) {
            if names_end_to_end_essential(token) {
                // The message's framing and Host reach the next hop whatever Connection
                // says: dropping them would change where the body ends.
                continue;
            }
            if eq_ignore_case(token, b"close") {
                self.close = true;
            } else if eq_ignore_case(token, b"keep-alive") {
                self.keep_alive = true;
            } else if eq_ignore_case(token, b"upgrade") {
                self.upgrade = true;
            }
            tokens.push(offset_in(buf, token));
        }
    }
}

/// Headers that a `Connection` option never makes hop-by-hop: the body framing and `Host`.
fn names_end_to_end_essential(token: &[u8]) -> bool {
    [&b"content-length"[..], b"transfer-encoding", b"host"]
        .iter()
        .any(|h| eq_ignore_case(token, h))
}

/// Scratch space for httparse, sized by the `max_headers` limit and reused per connection.
pub struct HeaderScratch {
    slots: Vec<httparse::Header<'static>>,
}

impl HeaderScratch {
    pub fn new(max_headers: usize) -> Self {
        HeaderScratch {
            slots: vec![httparse::EMPTY_HEADER; max_headers.max(1)],
        }
    }

    /// Lend the slots for headers borrowing a buffer of lifetime `'b`; they are emptied
    /// and kept (same allocation) afterwards.
    fn with_slots<'b, T>(&mut self, f: impl FnOnce(&mut [httparse::Header<'b>]) -> T) -> T {
        let mut slots: Vec<httparse::Header<'b>> = std::mem::take(&mut self.slots);
        let result = f(&mut slots);
        self.slots = slots.into_iter().map(|_| httparse::EMPTY_HEADER).collect();
        result
    }
}

/// Parse a request head from `buf`. `max_head` bounds the head size (431 beyond).
pub fn parse_request(
    buf: &[u8],
    max_head: usize,
    scratch: &mut HeaderScratch,
    head: &mut RequestHead,
) -> Result<Parsed, HeadError> {
    scratch.with_slots(|slots| parse_request_inner(buf, max_head, slots, head))
}

fn parse_request_inner<'b>(
    buf: &'b [u8],
    max_head: usize,
    slots: &mut [httparse::Header<'b>],
    head: &mut RequestHead,
) -> Result<Parsed, HeadError> {
    let mut req = httparse::Request::new(slots);
    let status = match req.parse(buf) {
        Ok(s) => s,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::new(431, "too many header fields"))
        }
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(e) => return Err(HeadError::new(400, error_reason(e))),
    };
    let len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= max_head {
                Err(HeadError::new(431, "request head larger than the limit"))
            } else {
                Ok(Parsed::Partial)
            };
        }
    };
    if len > max_head {
        return Err(HeadError::new(431, "request head larger than the limit"));
    }
    *head = RequestHead {
        headers: std::mem::take(&mut head.headers),
        connection_tokens: std::mem::take(&mut head.connection_tokens),
        ..RequestHead::default()
    };
    head.headers.clear();
    head.connection_tokens.clear();
    head.len = len;
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(HeadError::new(400, "incomplete request line"));
    };
    head.connect = method == "CONNECT";
    head.method = offset_in(buf, method.as_bytes());
    head.target = offset_in(buf, path.as_bytes());
    head.minor_version = version;
    let mut content_length: Option<u64> = None;
    let mut saw_cl = false;
    let mut te_chunked_last = false;
    let mut saw_te = false;
    let mut upgrade_header = false;
    let mut connection = ConnectionOptions::default();
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let header = HeaderRef::of(buf, h);
        let value_range = header.value.clone();
        head.headers.push(header);
        if eq_ignore_case(name, b"content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return Err(HeadError::new(400, "invalid Content-Length"));
            };
            if saw_cl && content_length != Some(n) {
                return Err(HeadError::new(400, "conflicting Content-Length values"));
            }
            saw_cl = true;
            content_length = Some(n);
        } else if eq_ignore_case(name, b"transfer-encoding") {
            saw_te = true;
            for coding in list_items(h.value) {
                if te_chunked_last {
                    return Err(HeadError::new(400, "transfer coding after chunked"));
                }
                if eq_ignore_case(coding, b"chunked") {
                    te_chunked_last = true;
                } else {
                    return Err(HeadError::new(400, "unsupported transfer coding"));
                }
            }
        } else if eq_ignore_case(name, b"host") {
            if head.host.is_some() {
                return Err(HeadError::new(400, "more than one Host header"));
            }
            head.host = Some(value_range);
        } else if eq_ignore_case(name, b"connection") {
            connection.read(buf, h.value, &mut head.connection_tokens);
        } else if eq_ignore_case(name, b"expect") {
            if eq_ignore_case(trim(h.value), b"100-continue") {
                // RFC 9110 §10.1.1: the expectation is ignored in an HTTP/1.0 request.
                head.expect_continue = version == 1;
            } else {
                return Err(HeadError::new(417, "unsupported expectation"));
            }
        } else if eq_ignore_case(name, b"upgrade") {
            upgrade_header = true;
        }
    }
    if saw_te && saw_cl {
        return Err(HeadError::new(
            400,
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if saw_te && !te_chunked_last {
        return Err(HeadError::new(400, "Transfer-Encoding without chunked"));
    }
    if saw_te && version == 0 {
        return Err(HeadError::new(
            400,
            "Transfer-Encoding in an HTTP/1.0 request",
        ));
    }
    if split_absolute_form(&buf[head.target.clone()]).is_some_and(|(host, _)| host.is_empty()) {
        return Err(HeadError::new(400, "absolute-form target without a host"));
    }
    if version == 1 && head.host.is_none() {
        return Err(HeadError::new(400, "missing Host header"));
    }
    // HTTP/1.0 keep-alive is not offered: the proxy closes after each 1.0 exchange.
    head.close = connection.close || version == 0;
    head.upgrade = upgrade_header && connection.upgrade && version == 1;
    head.content_length = content_length;
    head.framing = Some(if saw_te {
        Framing::Chunked
    } else {
        match content_length {
            Some(0) | None => Framing::None,
            Some(n) => Framing::Length(n),
        }
    });
    Ok(Parsed::Complete)
}

/// The answer to a request line whose version httparse refused: 505 when it is a
/// well-formed `HTTP/<digit>.<digit>` that coremesh does not speak (RFC 9112 §2.3), 400 for
/// anything malformed (a lower-case name, extra characters, a missing version).
fn version_error(buf: &[u8]) -> HeadError {
    let line = &buf[first_line(buf, buf.len())];
    let mut parts = line.split(|&b| b == b' ');
    let well_formed = matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(method), Some(target), Some(version), None)
            if !method.is_empty()
                && !target.is_empty()
                && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
                    if major.is_ascii_digit() && minor.is_ascii_digit())
    );
    if well_formed {
        HeadError::new(505, "HTTP version not supported")
    } else {
        HeadError::new(400, "invalid HTTP version")
    }
}

fn error_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name (whitespace before colon?)",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid token in request line",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// Parse a response head from `buf`.
pub fn parse_response(
    buf: &[u8],
    max_head: usize,
    scratch: &mut HeaderScratch,
    head: &mut ResponseHead,
) -> Result<Parsed, HeadError> {
    scratch.with_slots(|slots| parse_response_inner(buf, max_head, slots, head))
}

fn parse_response_inner<'b>(
    buf: &'b [u8],
    max_head: usize,
    slots: &mut [httparse::Header<'b>],
    head: &mut ResponseHead,
) -> Result<Parsed, HeadError> {
    let mut res = httparse::Response::new(slots);
    let status = match res.parse(buf) {
        Ok(s) => s,
        Err(_) => {
            return Err(HeadError::new(
                502,
                "upstream sent an invalid response head",
            ))
        }
    };
    let len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return if buf.len() >= max_head {
                Err(HeadError::new(
                    502,
                    "upstream response head larger than the limit",
                ))
            } else {
                Ok(Parsed::Partial)
            };
        }
    };
    if len > max_head {
        return Err(HeadError::new(
            502,
            "upstream response head larger than the limit",
        ));
    }
    *head = ResponseHead {
        headers: std::mem::take(&mut head.headers),
        connection_tokens: std::mem::take(&mut head.connection_tokens),
        ..ResponseHead::default()
    };
    head.headers.clear();
    head.connection_tokens.clear();
    head.len = len;
    let (Some(code), Some(version)) = (res.code, res.version) else {
        return Err(HeadError::new(
            502,
            "upstream sent an incomplete status line",
        ));
    };
    if code < 100 {
        return Err(HeadError::new(502, "upstream sent an invalid status code"));
    }
    head.status = code;
    head.minor_version = version;
    head.status_line = first_line(buf, len);
    let mut saw_te = false;
    let mut connection = ConnectionOptions::default();
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        head.headers.push(HeaderRef::of(buf, h));
        if eq_ignore_case(name, b"content-length") {
            let Some(n) = parse_content_length(h.value) else {
                return Err(HeadError::new(
                    502,
                    "upstream sent an invalid Content-Length",
                ));
            };
            if head.content_length.is_some_and(|prev| prev != n) {
                return Err(HeadError::new(
                    502,
                    "upstream sent conflicting Content-Length",
                ));
            }
            head.content_length = Some(n);
        } else if eq_ignore_case(name, b"transfer-encoding") {
            saw_te = true;
            head.chunked = list_items(h.value)
                .last()
                .is_some_and(|c| eq_ignore_case(c, b"chunked"));
        } else if eq_ignore_case(name, b"connection") {
            connection.read(buf, h.value, &mut head.connection_tokens);
        }
    }
    head.transfer_encoding = saw_te;
    if saw_te && version == 0 {
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing;
        // it is read as it says and the connection closed after it.
        head.close = true;
    }
    if saw_te {
        // Transfer-Encoding overrides Content-Length (RFC 9112 §6.3); such a connection
        // must not be reused.
        if head.content_length.is_some() {
            head.close = true;
        }
        head.content_length = None;
        if !head.chunked {
            head.close = true;
        }
    }
    if connection.close || (version == 0 && !connection.keep_alive) {
        head.close = true;
    }
    Ok(Parsed::Complete)
}

impl ResponseHead {
    /// The body framing of this response to a request with `method`.
    pub fn framing(&self, head_request: bool) -> Framing {
        if head_request || self.status == 204 || self.status == 304 || self.status < 200 {
            Framing::None
        } else if self.chunked {
            Framing::Chunked
        } else if let Some(n) = self.content_length {
            if n == 0 {
                Framing::None
            } else {
                Framing::Length(n)
            }
        } else {
            Framing::UntilClose
        }
    }
}

/// An absolute-form request target (`http://host:port/path?query`, RFC 9112 §3.2.2): the
/// offsets in `target` of its authority (any user info dropped) and where what follows the
/// authority starts (the path and query; at `target.len()` when the URI has neither).
/// `None` for any other form or scheme.
pub fn split_absolute_form(target: &[u8]) -> Option<(Range<usize>, usize)> {
    let colon = target.iter().position(|&b| b == b':')?;
    let scheme = &target[..colon];
    if !(eq_ignore_case(scheme, b"http") || eq_ignore_case(scheme, b"https")) {
        return None;
    }
    target[colon..].strip_prefix(b"://")?;
    let start = colon + 3;
    let end = target[start..]
        .iter()
        .position(|&b| matches!(b, b'/' | b'?' | b'#'))
        .map_or(target.len(), |i| start + i);
    let host_start = target[start..end]
        .iter()
        .rposition(|&b| b == b'@')
        .map_or(start, |at| start + at + 1);
    Some((host_start..end, end))
}

/// Headers that apply to one connection only (RFC 9110 §7.6.1) and are never forwarded.
/// `Transfer-Encoding` is kept: bodies are forwarded with their framing unchanged.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 5] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
    ];
    HOP.iter().any(|h| eq_ignore_case(name, h))
}

/// Whether `name` is listed in the message's `Connection` header.
pub fn listed_in_connection(buf: &[u8], tokens: &[Range<usize>], name: &[u8]) -> bool {
    tokens.iter().any(|t| eq_ignore_case(&buf[t.clone()], name))
}

#[cfg(test)]
mod tests;
