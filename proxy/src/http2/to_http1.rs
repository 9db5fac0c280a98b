//! An HTTP/2 request sent to an HTTP/1.1 endpoint (`protocol = "http1"`): the head
//! written as HTTP/1.1 (`:authority` → `Host`, a whole body with `Content-Length`, a
//! streamed one or one with trailers chunked, its trailers as the chunked trailer
//! section), the response head read with the HTTP/1 codec, and the response body moved
//! into the client's stream under its flow control, de-chunked. The upstream connection
//! comes from and goes back to the core's HTTP/1 pool.

use super::body::{send_all, BodyFeed, PumpError};
use crate::core::{Core, BODY_CHUNK};
use crate::error::ProxyError;
use crate::http1::body::ChunkedScanner;
use crate::http1::codec::{is_hop_by_hop, parse_response, Framing, Parsed, ResponseHead};
use crate::transport::conn::{Conn, Fill};
use bytes::Bytes;
use coremesh_discovery::Settings;
use h2::SendStream;
use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// An HTTP/1 endpoint's answer: its connection, with the body after the parsed head.
pub struct Http1Answer {
    pub up: Conn,
    pub head: ResponseHead,
    pub addr: SocketAddr,
}

/// Write `head` (an HTTP/1 request head, ending with its empty line) and `body` to a
/// pooled or new connection to `addr`, and read the final response head.
pub async fn exchange(
    core: &Rc<Core>,
    addr: SocketAddr,
    settings: &Settings,
    mut head: Vec<u8>,
    body: BodyFeed,
    sent_at: &mut Instant,
) -> Result<Http1Answer, ProxyError> {
    let now = Instant::now();
    let idle = Duration::from_millis(settings.pool_idle_timeout_ms);
    let pooled = crate::transport::pool::checkout_stream(&core.pool, addr, now, idle).await;
    let reused = pooled.is_some();
    let stream = match pooled {
        Some(stream) => stream,
        None => {
            let stream = crate::http1::forward::connect(addr, settings).await?;
            core.pool.borrow_mut().opened += 1;
            stream
        }
    };
    *sent_at = Instant::now();
    let mut up = Conn::new(stream, core.buffer());
    let write_failed = ProxyError::UpstreamClosed {
        request_sent: !reused,
    };
    let chunked = body.whole_len().is_none();
    // A whole small body goes out with the head.
    if !chunked {
        for chunk in body.replay() {
            head.extend_from_slice(chunk);
        }
    }
    let (res, _) = up.write_vec(head).await;
    res.map_err(|_| write_failed)?;
    if chunked {
        send_chunked(&mut up, body).await?;
    }
    let head = read_head(core, &mut up).await?;
    Ok(Http1Answer { up, head, addr })
}

/// The HTTP/1.1 head for an HTTP/2 request; `body_len` is `None` when the body goes
/// chunked. `headers` are already what the endpoint should see (the caller removed and
/// added the proxy's own).
pub fn request_head(
    parts: &http::request::Parts,
    authority: &str,
    headers: &HeaderMap,
    body_len: Option<u64>,
    out: &mut Vec<u8>,
) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let _ = write!(
        out,
        "{} {path} HTTP/1.1\r\nhost: {authority}\r\n",
        parts.method
    );
    for (name, value) in headers {
        let n = name.as_str();
        if n == "host" || n == "content-length" || n == "transfer-encoding" {
            continue;
        }
        if is_hop_by_hop(n.as_bytes()) {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match body_len {
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Some(0) if !method_has_body(&parts.method) => {}
        Some(n) => {
            let _ = write!(out, "content-length: {n}\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn method_has_body(m: &http::Method) -> bool {
    !matches!(
        *m,
        http::Method::GET | http::Method::HEAD | http::Method::DELETE | http::Method::OPTIONS
    )
}

/// Send `body` chunk-encoded, then its trailers as the trailer section.
async fn send_chunked(up: &mut Conn, mut body: BodyFeed) -> Result<(), ProxyError> {
    let sent = ProxyError::UpstreamClosed { request_sent: true };
    while let Some((chunk, owed)) = body.next().await.map_err(|_| ProxyError::ClientGone)? {
        write_chunk(up, &chunk).await.map_err(|_| sent.clone())?;
        if owed {
            body.sent(chunk.len());
        }
    }
    let mut end = Vec::new();
    last_chunk(body.trailers().as_ref(), &mut end);
    let (res, _) = up.write_vec(end).await;
    res.map_err(|_| sent)
}

/// The end of a chunked body: the last chunk, `trailers` as the trailer section, the empty
/// line.
pub(crate) fn last_chunk(trailers: Option<&HeaderMap>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n");
    for (name, value) in trailers.into_iter().flatten() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

async fn write_chunk(up: &mut Conn, data: &[u8]) -> std::io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(data.len() + 12);
    let _ = write!(out, "{:x}\r\n", data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    up.write_vec(out).await.0
}

/// Read until a final response head is buffered (interim 1xx responses are dropped: an
/// HTTP/2 client did not ask for them on this hop).
async fn read_head(core: &Core, up: &mut Conn) -> Result<ResponseHead, ProxyError> {
    let max = core.defaults.max_header_bytes;
    let mut head = ResponseHead::default();
    loop {
        if up.buffered() > 0 {
            let parsed = parse_response(
                up.data(),
                max,
                &mut core.parse_scratch.borrow_mut(),
                &mut head,
            );
            match parsed {
                Ok(Parsed::Complete) if head.status >= 200 => return Ok(head),
                Ok(Parsed::Complete) => {
                    let len = head.len;
                    up.consume(len);
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(ProxyError::UpstreamBadResponse(e.reason)),
            }
        }
        match up.fill(max).await {
            Ok(Fill::Read(_)) => {}
            Ok(Fill::Full) => {
                return Err(ProxyError::UpstreamBadResponse(
                    "response head larger than the limit",
                ))
            }
            Ok(Fill::Eof) | Err(_) => {
                return Err(if up.buffered() == 0 {
                    ProxyError::UpstreamClosed { request_sent: true }
                } else {
                    ProxyError::UpstreamBadResponse("connection closed inside the response head")
                })
            }
        }
    }
}

/// The HTTP/2 response head for an HTTP/1 one: its status and end-to-end headers.
pub fn response_head(answer: &Http1Answer) -> http::Response<()> {
    let data = answer.up.data();
    let head = &answer.head;
    let mut response = http::Response::new(());
    *response.status_mut() =
        http::StatusCode::from_u16(head.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    for h in &head.headers {
        let name = &data[h.name.clone()];
        let skip = is_hop_by_hop(name)
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"host")
            || (head.transfer_encoding && name.eq_ignore_ascii_case(b"content-length"))
            || crate::http1::codec::listed_in_connection(data, &head.connection_tokens, name);
        if skip {
            continue;
        }
        let name = HeaderName::from_bytes(&name.to_ascii_lowercase());
        let value = HeaderValue::from_bytes(&data[h.value.clone()]);
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    response
}

/// Move the response body into the client's stream; the connection goes back to the
/// pool when the body ended where its framing said.
pub async fn relay_body(
    core: &Core,
    mut answer: Http1Answer,
    head_request: bool,
    dst: &mut SendStream<Bytes>,
    settings: &Settings,
) -> Result<(), PumpError> {
    let framing = answer.head.framing(head_request);
    let reusable = !answer.head.close && framing != Framing::UntilClose;
    let len = answer.head.len;
    answer.up.consume(len);
    let idle = Duration::from_millis(settings.request_timeout_ms);
    let up = &mut answer.up;
    let mut trailers = HeaderMap::new();
    let done = match framing {
        Framing::None => Ok(()),
        Framing::Length(n) => copy_length(up, n, dst, idle).await,
        Framing::Chunked => copy_chunked(up, dst, idle, &mut trailers).await,
        Framing::UntilClose => copy_until_close(up, dst, idle).await,
    };
    if done.is_ok() {
        // The chunked trailer section becomes the stream's trailers.
        let _ = if trailers.is_empty() {
            dst.send_data(Bytes::new(), true)
        } else {
            dst.send_trailers(trailers)
        };
    }
    let leftover = answer.up.buffered();
    let Http1Answer { up, addr, .. } = answer;
    let Conn { stream, buf, .. } = up;
    core.recycle(buf);
    if done.is_ok() && reusable && leftover == 0 {
        core.pool
            .borrow_mut()
            .checkin(addr, stream, Instant::now(), settings.pool_max_idle);
    }
    done
}

async fn more(up: &mut Conn, idle: Duration) -> Result<bool, PumpError> {
    match monoio::time::timeout(idle, up.fill(BODY_CHUNK)).await {
        Ok(Ok(Fill::Read(_))) | Ok(Ok(Fill::Full)) => Ok(true),
        Ok(Ok(Fill::Eof)) => Ok(false),
        _ => Err(PumpError::SourceBroke),
    }
}

async fn copy_length(
    up: &mut Conn,
    mut left: u64,
    dst: &mut SendStream<Bytes>,
    idle: Duration,
) -> Result<(), PumpError> {
    while left > 0 {
        if up.buffered() == 0 && !more(up, idle).await? {
            return Err(PumpError::SourceBroke);
        }
        let take = (up.buffered() as u64).min(left) as usize;
        let chunk = Bytes::copy_from_slice(&up.data()[..take]);
        up.consume(take);
        left -= take as u64;
        send_all(dst, chunk).await?;
    }
    Ok(())
}

async fn copy_chunked(
    up: &mut Conn,
    dst: &mut SendStream<Bytes>,
    idle: Duration,
    trailers: &mut HeaderMap,
) -> Result<(), PumpError> {
    let mut scanner = ChunkedScanner::response();
    let mut plain = Vec::new();
    let mut trailer_lines = Vec::new();
    loop {
        if up.buffered() == 0 && !more(up, idle).await? {
            return Err(PumpError::SourceBroke);
        }
        plain.clear();
        let scan = scanner
            .decode_with_trailers(up.data(), &mut plain, &mut trailer_lines)
            .map_err(|_| PumpError::SourceBroke)?;
        up.consume(scan.consumed);
        if !plain.is_empty() {
            send_all(dst, Bytes::copy_from_slice(&plain)).await?;
        }
        if scan.done {
            crate::http2::stream::append_header_lines(trailers, &trailer_lines);
            return Ok(());
        }
    }
}

async fn copy_until_close(
    up: &mut Conn,
    dst: &mut SendStream<Bytes>,
    idle: Duration,
) -> Result<(), PumpError> {
    loop {
        if up.buffered() > 0 {
            let chunk = Bytes::copy_from_slice(up.data());
            let n = chunk.len();
            up.consume(n);
            send_all(dst, chunk).await?;
        }
        if !more(up, idle).await? {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> (http::request::Parts, HeaderMap) {
        let mut req = http::Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let (parts, ()) = req.body(()).expect("a valid request").into_parts();
        let headers = parts.headers.clone();
        (parts, headers)
    }

    #[test]
    fn an_h2_head_becomes_http1_with_host_and_framing() {
        let (p, h) = parts(
            "POST",
            "http://api.local/v1/items?x=1",
            &[
                ("content-type", "application/json"),
                ("te", "trailers"),
                ("x-a", "1"),
            ],
        );
        let mut out = Vec::new();
        request_head(&p, "api.local", &h, Some(12), &mut out);
        let text = String::from_utf8(out).expect("ASCII");
        assert_eq!(
            text,
            "POST /v1/items?x=1 HTTP/1.1\r\nhost: api.local\r\ncontent-type: application/json\r\nx-a: 1\r\ncontent-length: 12\r\n\r\n",
            "te is hop-by-hop on HTTP/1"
        );
        let mut out = Vec::new();
        request_head(&p, "api.local", &h, None, &mut out);
        assert!(String::from_utf8(out)
            .expect("ASCII")
            .ends_with("x-a: 1\r\ntransfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn a_get_without_a_body_has_no_length() {
        let (p, h) = parts("GET", "http://a/", &[]);
        let mut out = Vec::new();
        request_head(&p, "a", &h, Some(0), &mut out);
        assert_eq!(out, b"GET / HTTP/1.1\r\nhost: a\r\n\r\n");
        let (p, h) = parts("POST", "http://a/", &[]);
        let mut out = Vec::new();
        request_head(&p, "a", &h, Some(0), &mut out);
        assert_eq!(
            out,
            b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
