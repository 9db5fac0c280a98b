//! An HTTP/1 request sent to an HTTP/2 endpoint (`protocol = "h2"`): the rewritten head
//! becomes an HTTP/2 request (`Host` → `:authority`, hop-by-hop headers dropped), the body
//! goes out de-chunked under the stream's flow control, and the response comes back as
//! HTTP/1.1 — `Content-Length` when the endpoint sent one, else chunked with the HTTP/2
//! trailers as the trailer section (close-delimited for an HTTP/1.0 client, without them).

use crate::core::{Core, BODY_CHUNK};
use crate::error::ProxyError;
use crate::http1::body::ChunkedScanner;
use crate::http1::codec::{is_hop_by_hop, Framing};
use crate::http1::forward::{BodyState, Exchange, ForwardResult, RequestBody};
use crate::http1::server::{ConnScratch, Next};
use crate::http2::body::send_all;
use crate::http2::upstream::StreamSlot;
use crate::pipeline::attempt::{self, Attempt};
use crate::pipeline::RequestState;
use crate::transport::conn::{Conn, Fill};
use bytes::Bytes;
use h2::RecvStream;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response};
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Forward the request whose rewritten head is in `s.upstream_head` (its body, `body`, is
/// still in or behind the client's buffer) to HTTP/2 endpoints, and relay the answer.
pub(crate) async fn forward(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    ex: &Exchange<'_>,
    body: RequestBody,
) -> ForwardResult {
    let (whole, buffered_len) = match &body {
        RequestBody::Buffered(n) => (Some(plain_body(client, *n, ex.framing)?), *n),
        RequestBody::Streaming(_) => (None, 0),
    };
    let (whole, trailers) = match whole {
        Some((body, trailers)) => (Some(body), trailers),
        None => (None, HeaderMap::new()),
    };
    let replayable = whole.is_some();
    let streaming = match body {
        RequestBody::Streaming(state) => Some(state),
        RequestBody::Buffered(_) => None,
    };
    let Some(template) = h2_template(&s.upstream_head) else {
        client.consume(buffered_len);
        let err = ProxyError::BadRequest {
            status: 400,
            reason: "request head cannot be sent on as HTTP/2",
        };
        return Err((err, replayable));
    };
    let mut attempt = ToH2 {
        core,
        client,
        state: &mut s.req,
        ex,
        template,
        whole,
        trailers,
        streaming,
    };
    let result = attempt::run(core, &ex.policy, &mut attempt).await;
    client.consume(buffered_len);
    let answered = result.map_err(|e| (e, replayable))?;
    let (response, slot) = answered.answer;
    s.req.status = response.status().as_u16();
    s.req.endpoint = Some(answered.addr);
    let relayed = relay(client, response, ex, &mut s.out).await;
    drop(slot);
    let broke = matches!(relayed, Err((ProxyError::UpstreamBrokeResponse, _)));
    attempt::record_answered(
        core,
        &ex.policy,
        answered.addr,
        answered.latency,
        answered.outcome,
        broke,
    );
    relayed
}

/// A buffered body without its HTTP/1 framing, and its chunked trailers.
fn plain_body(
    client: &Conn,
    n: usize,
    framing: Framing,
) -> Result<(Bytes, HeaderMap), (ProxyError, bool)> {
    let raw = &client.data()[..n];
    if framing != Framing::Chunked {
        return Ok((Bytes::copy_from_slice(raw), HeaderMap::new()));
    }
    let mut plain = Vec::with_capacity(n);
    let mut lines = Vec::new();
    ChunkedScanner::new()
        .decode_with_trailers(raw, &mut plain, &mut lines)
        .map_err(|e| {
            let err = ProxyError::BadRequest {
                status: 400,
                reason: e.0,
            };
            (err, false)
        })?;
    let mut trailers = HeaderMap::new();
    crate::http2::stream::append_header_lines(&mut trailers, &lines);
    Ok((Bytes::from(plain), trailers))
}

/// The parts of the HTTP/2 request that every attempt shares, read from the rewritten
/// HTTP/1 head (so `X-Forwarded-For`, `Via` and trace stripping are decided once).
struct Template {
    method: http::Method,
    authority: Option<String>,
    path: String,
    headers: HeaderMap,
}

fn h2_template(head: &[u8]) -> Option<Template> {
    let mut slots = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(_) = req.parse(head).ok()? else {
        return None;
    };
    let method = http::Method::from_bytes(req.method?.as_bytes()).ok()?;
    let target = req.path?;
    // An absolute-form target carries its own authority.
    let (authority, path) = match crate::http1::codec::split_absolute_form(target.as_bytes()) {
        Some((host, rest)) => {
            let path = match &target[rest..] {
                p if p.starts_with('/') => p.to_owned(),
                _ => "/".to_owned(),
            };
            (Some(target[host].to_owned()), path)
        }
        None => (None, target.to_owned()),
    };
    let mut authority = authority;
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if name == "host" {
            if authority.is_none() {
                authority = std::str::from_utf8(h.value).ok().map(str::to_owned);
            }
            continue;
        }
        if is_hop_by_hop(name.as_bytes())
            || name == "transfer-encoding"
            || name == "x-coremesh-timeout-ms"
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) {
            headers.append(n, v);
        }
    }
    Some(Template {
        method,
        authority,
        path,
        headers,
    })
}

/// One HTTP/1 request's attempts on HTTP/2 endpoints.
struct ToH2<'a, 'e> {
    core: &'a Rc<Core>,
    client: &'a mut Conn,
    state: &'a mut RequestState,
    ex: &'a Exchange<'e>,
    template: Template,
    /// The whole body, de-chunked, when it was small enough to keep, and its trailers.
    whole: Option<Bytes>,
    trailers: HeaderMap,
    /// The framing of a body streamed from the client (taken by the attempt that sends it).
    streaming: Option<BodyState>,
}

impl Attempt for ToH2<'_, '_> {
    type Answer = (Response<RecvStream>, StreamSlot);

    fn state(&mut self) -> &mut RequestState {
        self.state
    }

    async fn send(
        &mut self,
        addr: SocketAddr,
        remaining_ms: u64,
    ) -> Result<(Response<RecvStream>, StreamSlot), ProxyError> {
        let settings = self.ex.policy.settings;
        let (mut sender, slot) = crate::http2::upstream::ready(self.core, addr, settings).await?;
        let head = self.head(addr, remaining_ms)?;
        let empty = (self.whole.as_ref().is_some_and(|b| b.is_empty()) && self.trailers.is_empty())
            || (self.whole.is_none() && self.streaming.is_none());
        self.state.sent_at = Instant::now();
        let (response, mut stream) = sender
            .send_request(head, empty)
            .map_err(|e| crate::http2::upstream::stream_error(&e))?;
        if !empty {
            let sent = ProxyError::UpstreamClosed { request_sent: true };
            match (&self.whole, self.streaming.take()) {
                (Some(body), _) => {
                    send_all(&mut stream, body.clone())
                        .await
                        .map_err(|_| sent.clone())?;
                    end_stream(&mut stream, &self.trailers).map_err(|_| sent.clone())?;
                }
                (None, Some(state)) => {
                    let idle = Duration::from_millis(settings.client_idle_timeout_ms);
                    stream_body(
                        self.client,
                        &mut stream,
                        state,
                        idle,
                        settings.max_body_bytes,
                    )
                    .await?;
                }
                (None, None) => return Err(ProxyError::ClientGone),
            }
        }
        let response = response
            .await
            .map_err(|e| crate::http2::upstream::stream_error(&e))?;
        Ok((response, slot))
    }

    fn status(&self, answer: &Self::Answer) -> u16 {
        answer.0.status().as_u16()
    }

    fn replayable(&self) -> bool {
        self.whole.is_some()
    }

    fn recover(&mut self, _error: &ProxyError) -> bool {
        // A streamed body went to the failed attempt.
        self.whole.is_some()
    }

    fn discard(&mut self, _answer: Self::Answer) {}
}

impl ToH2<'_, '_> {
    fn head(&self, addr: SocketAddr, remaining_ms: u64) -> Result<Request<()>, ProxyError> {
        let t = &self.template;
        let authority = t.authority.clone().unwrap_or_else(|| addr.to_string());
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(authority.as_str())
            .path_and_query(t.path.as_str())
            .build()
            .map_err(|_| ProxyError::BadRequest {
                status: 400,
                reason: "request target is not a valid URI",
            })?;
        let mut head = Request::new(());
        *head.method_mut() = t.method.clone();
        *head.uri_mut() = uri;
        *head.version_mut() = http::Version::HTTP_2;
        let headers = head.headers_mut();
        *headers = t.headers.clone();
        headers.insert(
            HeaderName::from_static("x-coremesh-timeout-ms"),
            HeaderValue::from(remaining_ms),
        );
        crate::http2::stream::append_header_lines(headers, &self.state.trace_lines);
        Ok(head)
    }
}

/// Send a body streamed from the HTTP/1 client, de-chunked.
async fn stream_body(
    client: &mut Conn,
    dst: &mut h2::SendStream<Bytes>,
    mut state: BodyState,
    idle: Duration,
    limit: u64,
) -> Result<(), ProxyError> {
    let sent = ProxyError::UpstreamClosed { request_sent: true };
    let mut total = 0u64;
    let mut plain = Vec::new();
    let mut lines = Vec::new();
    loop {
        if client.buffered() > 0 {
            let (chunk, done) = match &mut state {
                BodyState::Length(left) => {
                    let take = (*left).min(client.buffered() as u64) as usize;
                    *left -= take as u64;
                    let chunk = Bytes::copy_from_slice(&client.data()[..take]);
                    client.consume(take);
                    (chunk, *left == 0)
                }
                BodyState::Chunked(scanner)
                | BodyState::Dechunk(scanner)
                | BodyState::Rechunk(scanner) => {
                    plain.clear();
                    let scan = scanner
                        .decode_with_trailers(client.data(), &mut plain, &mut lines)
                        .map_err(|e| ProxyError::BadRequest {
                            status: 400,
                            reason: e.0,
                        })?;
                    client.consume(scan.consumed);
                    (Bytes::copy_from_slice(&plain), scan.done)
                }
                BodyState::UntilClose => {
                    let chunk = Bytes::copy_from_slice(client.data());
                    client.consume(chunk.len());
                    (chunk, false)
                }
            };
            total += chunk.len() as u64;
            if total > limit {
                return Err(ProxyError::BadRequest {
                    status: 413,
                    reason: "request body larger than the limit",
                });
            }
            send_all(dst, chunk).await.map_err(|_| sent.clone())?;
            if done {
                let mut trailers = HeaderMap::new();
                crate::http2::stream::append_header_lines(&mut trailers, &lines);
                return end_stream(dst, &trailers).map_err(|_| sent);
            }
        }
        match monoio::time::timeout(idle, client.fill(BODY_CHUNK)).await {
            Ok(Ok(Fill::Read(_))) | Ok(Ok(Fill::Full)) => {}
            Ok(Ok(Fill::Eof)) if matches!(state, BodyState::UntilClose) => {
                return dst.send_data(Bytes::new(), true).map_err(|_| sent);
            }
            Err(_) => {
                return Err(ProxyError::BadRequest {
                    status: 408,
                    reason: "request body not received in time",
                })
            }
            _ => return Err(ProxyError::ClientGone),
        }
    }
}

/// End a request stream: with the trailers when the client sent some.
fn end_stream(dst: &mut h2::SendStream<Bytes>, trailers: &HeaderMap) -> Result<(), h2::Error> {
    if trailers.is_empty() {
        dst.send_data(Bytes::new(), true)
    } else {
        dst.send_trailers(trailers.clone())
    }
}

/// Write the endpoint's response to the HTTP/1 client.
async fn relay(
    client: &mut Conn,
    response: Response<RecvStream>,
    ex: &Exchange<'_>,
    out: &mut Vec<u8>,
) -> ForwardResult {
    let (head, mut body) = response.into_parts();
    let status = head.status.as_u16();
    let no_body = ex.is_head_method || status == 204 || status == 304 || status < 200;
    let length = head
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    // Without a length an HTTP/1.1 client gets it chunked (trailers too); an HTTP/1.0
    // client reads to the close.
    let chunked = !no_body && length.is_none() && !ex.http10;
    let close = ex.client_close || (!no_body && length.is_none() && ex.http10);
    let mut bytes = std::mem::take(out);
    bytes.clear();
    let reason = head.status.canonical_reason().unwrap_or("");
    let _ = write!(bytes, "HTTP/1.1 {status} {reason}\r\n");
    for (name, value) in &head.headers {
        if name == http::header::TRANSFER_ENCODING || is_hop_by_hop(name.as_str().as_bytes()) {
            continue;
        }
        bytes.extend_from_slice(name.as_str().as_bytes());
        bytes.extend_from_slice(b": ");
        bytes.extend_from_slice(value.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    if ex.policy.settings.add_via {
        bytes.extend_from_slice(b"via: 2 coremesh\r\n");
    }
    if chunked {
        bytes.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        bytes.extend_from_slice(b"connection: close\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    let (res, bytes) = client.write_vec(bytes).await;
    *out = bytes;
    if res.is_err() {
        return Ok(Next::Close);
    }
    if no_body {
        return Ok(if close { Next::Close } else { Next::KeepAlive });
    }
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else {
            return Err((ProxyError::UpstreamBrokeResponse, true));
        };
        let n = chunk.len();
        let _ = body.flow_control().release_capacity(n);
        if n == 0 {
            continue;
        }
        let mut piece = std::mem::take(out);
        piece.clear();
        if chunked {
            let _ = write!(piece, "{n:x}\r\n");
        }
        piece.extend_from_slice(&chunk);
        if chunked {
            piece.extend_from_slice(b"\r\n");
        }
        let (res, piece) = client.write_vec(piece).await;
        *out = piece;
        if res.is_err() {
            return Ok(Next::Close);
        }
    }
    let trailers = match body.trailers().await {
        Ok(t) => t,
        Err(_) => return Err((ProxyError::UpstreamBrokeResponse, true)),
    };
    if chunked {
        let mut end = std::mem::take(out);
        end.clear();
        crate::http2::to_http1::last_chunk(trailers.as_ref(), &mut end);
        let (res, end) = client.write_vec(end).await;
        *out = end;
        if res.is_err() {
            return Ok(Next::Close);
        }
    }
    Ok(if close { Next::Close } else { Next::KeepAlive })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http1_head_becomes_an_h2_template_without_hop_by_hop_headers() {
        let head = b"POST /x?y=1 HTTP/1.1\r\nHost: svc:8080\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\nx-coremesh-timeout-ms: 5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\n\r\n";
        let t = h2_template(head).expect("a complete head");
        assert_eq!(t.method, http::Method::POST);
        assert_eq!(t.authority.as_deref(), Some("svc:8080"));
        assert_eq!(t.path, "/x?y=1");
        let names: Vec<&str> = t.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-forwarded-for", "accept"]);
    }

    #[test]
    fn an_absolute_form_target_carries_the_authority() {
        let head = b"GET http://other.example/p HTTP/1.1\r\nHost: ignored\r\n\r\n";
        let t = h2_template(head).expect("a complete head");
        assert_eq!(t.authority.as_deref(), Some("other.example"));
        assert_eq!(t.path, "/p");
        assert!(t.headers.is_empty());
    }

    #[test]
    fn a_partial_head_is_refused() {
        assert!(h2_template(b"GET / HTTP/1.1\r\nHost: a\r\n").is_none());
    }
}
