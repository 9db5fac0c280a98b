//! Forwarding one request: keep a small body for replay, choose an endpoint, connect or
//! reuse a pooled connection, send, await the response head under the request's deadline,
//! retry where that is safe, then relay the response and return the connection to the pool.

use crate::core::{Core, BODY_CHUNK};
use crate::error::ProxyError;
use crate::http1::body::ChunkedScanner;
use crate::http1::codec::{parse_response, Framing, Parsed};
use crate::http1::rewrite::{append_deadline, response_head};
use crate::http1::server::{ConnScratch, Next};
use crate::pipeline::attempt::{self, Policy};
use crate::pipeline::RequestState;
use crate::transport::conn::Stream;
use crate::transport::conn::{Conn, Fill};
use crate::transport::pool::{checkout_stream, return_canceller, Pooled, PostedRead};
use crate::transport::tls_upstream::{self, Alpn};
use coremesh_discovery::Settings;
use coremesh_telemetry::Peer;
use monoio::net::TcpStream;
use std::io::Write;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// A request and its response heads+body this small go out in one write.
const COALESCE_LIMIT: usize = 16 * 1024;

/// What the HTTP/1 connection handler decided about a request before forwarding it: the
/// pipeline's policy and what framing and relaying need.
pub struct Exchange<'a> {
    pub policy: Policy<'a>,
    pub framing: Framing,
    pub is_head_method: bool,
    pub upgrade: bool,
    pub http10: bool,
    pub client_close: bool,
    /// Send the request head as it is (a passthrough): no deadline or trace header added.
    pub verbatim: bool,
    /// The request is a CONNECT (passed through): a 2xx answer opens a tunnel.
    pub connect: bool,
    /// The client sent `Expect: 100-continue` and the destination's own answer decides
    /// (a passthrough): the body goes out after the destination's `100 Continue`, which
    /// the client hears, and not at all after an early final response.
    pub relay_continue: bool,
}

impl Exchange<'_> {
    fn settings(&self) -> &Settings {
        self.policy.settings
    }
}

/// Where the request body stands.
pub(crate) enum RequestBody {
    /// All of it is buffered at the start of the client buffer: this many bytes.
    Buffered(usize),
    /// Streamed from the client as it arrives; the state of its framing.
    Streaming(BodyState),
}

/// Progress through a body being streamed.
#[derive(Clone)]
pub enum BodyState {
    Length(u64),
    Chunked(ChunkedScanner),
    /// A chunked body passed on without its chunk framing (to an HTTP/1.0 client).
    Dechunk(ChunkedScanner),
    /// A chunked response whose chunk lines end with a bare LF, passed on re-chunked with
    /// CRLF (as nginx does), so that no client reads its framing differently.
    Rechunk(ChunkedScanner),
    UntilClose,
}

impl BodyState {
    /// How a response body with `framing` is relayed. Chunked framing passes on as
    /// received, so it is held to CRLF line ends (a client may read bare-LF lines
    /// differently); where the framing is decoded instead, a bare LF is taken.
    fn of_response(framing: Framing) -> Option<BodyState> {
        match framing {
            Framing::None => None,
            Framing::Length(n) => Some(BodyState::Length(n)),
            Framing::Chunked => Some(BodyState::Chunked(ChunkedScanner::new())),
            Framing::UntilClose => Some(BodyState::UntilClose),
        }
    }
}

/// A failed body pipe: which side failed.
#[derive(Debug)]
pub enum PipeError {
    SourceClosed,
    Source,
    Destination,
    Invalid(&'static str),
    Timeout,
    TooLarge,
}

/// Result of `forward`: on error, whether the client's request body was fully consumed (so
/// the client connection could stay open after an error response).
pub type ForwardResult = Result<Next, (ProxyError, bool)>;

/// Forward the request whose head was consumed from `client` (its body may follow): the
/// pipeline runs the attempts ([`Http1Attempt`]), then the answer is relayed.
pub async fn forward(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    ex: &Exchange<'_>,
) -> ForwardResult {
    let body = match (ex.relay_continue, ex.framing) {
        // The client sends nothing until it hears the destination's `100 Continue`.
        (true, Framing::Length(n)) => RequestBody::Streaming(BodyState::Length(n)),
        (true, Framing::Chunked) => {
            RequestBody::Streaming(BodyState::Chunked(ChunkedScanner::new()))
        }
        _ => match prefetch_body(client, ex).await {
            Ok(b) => b,
            Err(e) => return Err((e, false)),
        },
    };
    if speaks_h2(ex) {
        return crate::http1::to_h2::forward(core, client, s, ex, body).await;
    }
    let replayable = matches!(body, RequestBody::Buffered(_));
    let buffered_len = match body {
        RequestBody::Buffered(n) => n,
        RequestBody::Streaming(_) => 0,
    };
    let mut attempt = Http1Attempt {
        core,
        client,
        s,
        ex,
        body: Some(body),
        in_flight: None,
        replayable,
    };
    let result = attempt::run(core, &ex.policy, &mut attempt).await;
    let Http1Attempt {
        client,
        s,
        in_flight,
        ..
    } = attempt;
    client.consume(buffered_len);
    let answered = result.map_err(|e| (e, replayable))?;
    // A final answer before the held body went out: the client's connection cannot carry
    // another request (its body may still follow).
    let unsent = ex.relay_continue && matches!(in_flight, Some(RequestBody::Streaming(_)));
    let relayed = relay(core, client, s, ex, answered.addr, answered.answer).await;
    let relayed = match relayed {
        Ok(Next::KeepAlive) if unsent => Ok(Next::Close),
        other => other,
    };
    let broke = matches!(&relayed, Err((ProxyError::UpstreamBrokeResponse, _)));
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

/// The service's endpoints speak HTTP/2 (`protocol = "h2"`): the request is translated.
/// Upgrades, CONNECT and passthrough stay HTTP/1.
fn speaks_h2(ex: &Exchange<'_>) -> bool {
    ex.policy.settings.protocol == coremesh_discovery::UpstreamProtocol::H2
        && !ex.upgrade
        && !ex.connect
        && !ex.verbatim
}

/// One request's attempts on HTTP/1 upstreams: pooled or new connections, the body kept
/// for replay when it is small, streamed when it is not.
struct Http1Attempt<'a, 'e> {
    core: &'a Rc<Core>,
    client: &'a mut Conn,
    s: &'a mut ConnScratch,
    ex: &'a Exchange<'e>,
    /// The body for the next attempt (`None` once a streamed body went out).
    body: Option<RequestBody>,
    /// The body as the last attempt left it.
    in_flight: Option<RequestBody>,
    /// All of the body was buffered, so it can be sent again.
    replayable: bool,
}

impl attempt::Attempt for Http1Attempt<'_, '_> {
    /// The upstream connection, with the response head at the start of its buffer.
    type Answer = Conn;

    fn state(&mut self) -> &mut RequestState {
        &mut self.s.req
    }

    async fn send(&mut self, addr: SocketAddr, remaining_ms: u64) -> Result<Conn, ProxyError> {
        let request_body = match &self.body {
            Some(RequestBody::Buffered(n)) => RequestBody::Buffered(*n),
            _ => self.body.take().ok_or(ProxyError::Timeout)?,
        };
        let body = self.in_flight.insert(request_body);
        send_and_await_head(
            self.core,
            self.client,
            self.s,
            self.ex,
            addr,
            body,
            remaining_ms,
        )
        .await
    }

    fn status(&self, _: &Conn) -> u16 {
        self.s.response_head.status
    }

    fn replayable(&self) -> bool {
        self.replayable
    }

    fn recover(&mut self, error: &ProxyError) -> bool {
        if error.nothing_processed() && self.body.is_none() {
            // Nothing went out, so a streamed body was not read yet: the next attempt can
            // stream it instead.
            self.body = self.in_flight.take();
        }
        self.body.is_some()
    }

    fn discard(&mut self, answer: Conn) {
        self.core.recycle(answer.buf);
    }
}

/// Read a small body whole so that it can be replayed; a large one starts streaming.
async fn prefetch_body(client: &mut Conn, ex: &Exchange<'_>) -> Result<RequestBody, ProxyError> {
    match ex.framing {
        Framing::None | Framing::UntilClose => Ok(RequestBody::Buffered(0)),
        Framing::Length(n) if n <= ex.settings().replay_body_limit as u64 => {
            let n = n as usize;
            while client.buffered() < n {
                fill_before(client, n, ex.policy.deadline).await?;
            }
            Ok(RequestBody::Buffered(n))
        }
        Framing::Length(n) => Ok(RequestBody::Streaming(BodyState::Length(n))),
        Framing::Chunked => {
            let mut scanner = ChunkedScanner::new();
            let mut scanned = 0;
            loop {
                let scan = scanner.scan(&client.data()[scanned..]).map_err(|e| {
                    ProxyError::BadRequest {
                        status: 400,
                        reason: e.0,
                    }
                })?;
                scanned += scan.consumed;
                if scanner.data_bytes() > ex.settings().max_body_bytes {
                    return Err(ProxyError::BadRequest {
                        status: 413,
                        reason: "request body larger than the limit",
                    });
                }
                if scan.done {
                    return Ok(RequestBody::Buffered(scanned));
                }
                if scanned >= ex.settings().replay_body_limit {
                    // Too large to keep: stream it, resuming the framing from the start.
                    return Ok(RequestBody::Streaming(BodyState::Chunked(
                        ChunkedScanner::new(),
                    )));
                }
                fill_before(
                    client,
                    ex.settings().replay_body_limit + 1,
                    ex.policy.deadline,
                )
                .await?;
            }
        }
    }
}

async fn fill_before(client: &mut Conn, max: usize, deadline: Instant) -> Result<(), ProxyError> {
    let left = deadline.saturating_duration_since(Instant::now());
    match monoio::time::timeout(left, client.fill(max)).await {
        Err(_) => Err(ProxyError::BadRequest {
            status: 408,
            reason: "request body not received in time",
        }),
        Ok(Ok(Fill::Read(_))) | Ok(Ok(Fill::Full)) => Ok(()),
        Ok(Ok(Fill::Eof)) | Ok(Err(_)) => Err(ProxyError::ClientGone),
    }
}

/// Open an HTTP/1 connection to `addr` (see [`connect_for`]).
pub(crate) async fn connect(addr: SocketAddr, settings: &Settings) -> Result<Stream, ProxyError> {
    connect_for(addr, settings, Alpn::Http1).await
}

/// Open a connection to `addr` within the service's connect timeout, with `TCP_NODELAY`;
/// when this core has TLS for `addr` ([`tls_upstream`]), the TLS handshake follows, its ALPN
/// offering `alpn`'s protocol.
pub(crate) async fn connect_for(
    addr: SocketAddr,
    settings: &Settings,
    alpn: Alpn,
) -> Result<Stream, ProxyError> {
    let limit = Duration::from_millis(settings.connect_timeout_ms);
    let stream = match monoio::time::timeout(limit, TcpStream::connect(addr)).await {
        Err(_) => return Err(ProxyError::ConnectTimeout),
        Ok(Err(e)) => return Err(ProxyError::Connect(e.to_string())),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    match tls_upstream::for_endpoint(addr) {
        None => Ok(Stream::Plain(stream)),
        Some(tls) => match Box::pin(tls_upstream::handshake(stream, &tls, alpn)).await {
            Ok(tls) => Ok(tls.into()),
            Err(e) => Err(ProxyError::Connect(format!("TLS handshake: {e}"))),
        },
    }
}

/// Send the request to `addr` and read until a final response head (or a 101) is buffered.
async fn send_and_await_head(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    ex: &Exchange<'_>,
    addr: SocketAddr,
    body: &mut RequestBody,
    remaining_ms: u64,
) -> Result<Conn, ProxyError> {
    // The head with the remaining deadline, and a small buffered body, in one write.
    let mut out = std::mem::take(&mut s.out);
    out.clear();
    if ex.verbatim {
        out.extend_from_slice(&s.upstream_head);
    } else {
        append_deadline(&s.upstream_head, remaining_ms, &s.req.trace_lines, &mut out);
    }
    // A body held for the destination's `100 Continue` waits; the head goes alone.
    let held = ex.relay_continue && matches!(body, RequestBody::Streaming(_));
    let inline_body = match body {
        RequestBody::Buffered(n) if out.len() + *n <= COALESCE_LIMIT => {
            out.extend_from_slice(&client.data()[..*n]);
            true
        }
        _ => false,
    };
    // A request that goes out in one write can take a pooled connection with its response
    // read posted already; any other needs the connection whole.
    let one_write = inline_body && !held;
    let now = Instant::now();
    let idle_timeout = Duration::from_millis(ex.settings().pool_idle_timeout_ms);
    let pooled = if one_write {
        core.pool.borrow_mut().checkout(addr, now, idle_timeout)
    } else {
        checkout_stream(&core.pool, addr, now, idle_timeout)
            .await
            .map(Pooled::Stream)
    };
    let reused = pooled.is_some();
    if let Some(id) = core.ids.borrow().service(ex.policy.service(core)) {
        let m = core.metrics.borrow();
        if reused {
            m.record_upstream_connection_reused(id);
        }
    }
    let stream = match pooled {
        // The whole request goes out in this one write: the response comes by the read the
        // pool posted.
        Some(Pooled::Posted(posted)) if one_write => {
            s.req.sent_at = Instant::now();
            let mut up = send_on_posted(core, s, posted, out).await?;
            let result = await_head(core, client, s, ex, &mut up, body, false).await;
            return match result {
                Ok(()) => Ok(up),
                Err(e) => {
                    core.recycle(std::mem::take(&mut up.buf));
                    Err(e)
                }
            };
        }
        // Only a one-write request is handed a posted read.
        Some(Pooled::Posted(posted)) => {
            let (stream, canceller) = posted.reclaim().await;
            return_canceller(&core.pool, canceller);
            match stream {
                Some(stream) => Stream::Plain(stream),
                None => {
                    s.out = out;
                    return Err(ProxyError::UpstreamClosed {
                        request_sent: false,
                    });
                }
            }
        }
        Some(Pooled::Stream(stream)) => stream,
        None => match connect(addr, ex.settings()).await {
            Ok(stream) => {
                core.pool.borrow_mut().opened += 1;
                if let Some(id) = core.ids.borrow().service(ex.policy.service(core)) {
                    core.metrics.borrow().record_upstream_connection_opened(id);
                }
                stream
            }
            Err(e) => {
                s.out = out;
                return Err(e);
            }
        },
    };
    s.req.sent_at = Instant::now();
    let mut up = Conn::new(stream, core.buffer());
    let result = exchange_head(
        core,
        client,
        s,
        ex,
        &mut up,
        body,
        Request {
            out,
            inline_body,
            held,
            reused,
        },
    )
    .await;
    match result {
        Ok(()) => Ok(up),
        Err(e) => {
            core.recycle(std::mem::take(&mut up.buf));
            Err(e)
        }
    }
}

/// Write the whole request (`out`) on a pooled connection whose read is posted, then wait
/// for that read: the upstream connection, whole again, with the response's first bytes
/// buffered. A failed write, or a close before any byte, is what it is on any reused
/// connection.
async fn send_on_posted(
    core: &Rc<Core>,
    s: &mut ConnScratch,
    mut posted: PostedRead,
    out: Vec<u8>,
) -> Result<Conn, ProxyError> {
    let (res, out) = posted.write_all(out).await;
    let sent = out.len() as u64;
    s.out = out;
    if res.is_err() {
        let (_, canceller) = posted.reclaim().await;
        return_canceller(&core.pool, canceller);
        return Err(ProxyError::UpstreamClosed {
            request_sent: false,
        });
    }
    let done = posted.finish().await;
    let cancelled = done.cancelled();
    return_canceller(&core.pool, done.canceller);
    let mut up = Conn::new(done.stream, done.buf);
    up.bytes_out = sent;
    match done.res {
        Ok(n) if n > 0 => {
            up.bytes_in = n as u64;
            Ok(up)
        }
        // The pool's sweep stopped the read as the request went out: read afresh.
        Err(_) if cancelled => Ok(up),
        // Closed (or failed) before any byte of the response.
        Ok(_) | Err(_) => {
            core.recycle(up.buf);
            Err(ProxyError::UpstreamClosed { request_sent: true })
        }
    }
}

/// The request's bytes as `send_and_await_head` prepared them.
struct Request {
    /// The head (and a small body when `inline_body`).
    out: Vec<u8>,
    inline_body: bool,
    /// The body waits for the destination's `100 Continue`.
    held: bool,
    /// On a pooled connection (a failed write then means the upstream had closed it).
    reused: bool,
}

async fn exchange_head(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    ex: &Exchange<'_>,
    up: &mut Conn,
    body: &mut RequestBody,
    request: Request,
) -> Result<(), ProxyError> {
    // A write that fails on a reused connection means the upstream had closed it while it
    // sat idle: nothing was processed.
    let Request {
        out,
        inline_body,
        held,
        reused,
    } = request;
    let write_failed = ProxyError::UpstreamClosed {
        request_sent: !reused,
    };
    let (res, out) = up.write_vec(out).await;
    s.out = out;
    res.map_err(|_| write_failed.clone())?;
    if !held {
        send_body(client, up, body, ex, inline_body).await?;
    }
    await_head(core, client, s, ex, up, body, held).await
}

/// Await the response head, passing interim 1xx responses on (and sending a `held` body
/// after the destination's `100 Continue`).
async fn await_head(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    ex: &Exchange<'_>,
    up: &mut Conn,
    body: &mut RequestBody,
    mut held: bool,
) -> Result<(), ProxyError> {
    let max = core.defaults.max_header_bytes;
    loop {
        if up.buffered() > 0 {
            let parsed = parse_response(
                up.data(),
                max,
                &mut core.parse_scratch.borrow_mut(),
                &mut s.response_head,
            );
            match parsed {
                Ok(Parsed::Complete) => {
                    let status = s.response_head.status;
                    if status == 101 || status >= 200 {
                        return Ok(());
                    }
                    let len = s.response_head.len;
                    if held && status == 100 {
                        // The destination's own `100 Continue`: the client hears it, then
                        // its body goes through.
                        let mut out = std::mem::take(&mut s.out);
                        out.clear();
                        out.extend_from_slice(&up.data()[..len]);
                        up.consume(len);
                        let (res, out) = client.write_vec(out).await;
                        s.out = out;
                        res.map_err(|_| ProxyError::ClientGone)?;
                        held = false;
                        send_body(client, up, body, ex, false).await?;
                        *body = RequestBody::Buffered(0);
                        continue;
                    }
                    // The client hears interim responses from one attempt only: a retry's
                    // would repeat them. `100 Continue` was the proxy's own to send, and an
                    // HTTP/1.0 client gets none (RFC 9110 §15.2).
                    let to_client = status != 100
                        && !ex.http10
                        && s.interim_from_attempt.is_none_or(|a| a == s.req.attempts);
                    if to_client {
                        s.interim_from_attempt = Some(s.req.attempts);
                        let mut out = std::mem::take(&mut s.out);
                        response_head(
                            up.data(),
                            &s.response_head,
                            false,
                            false,
                            ex.settings().add_via,
                            false,
                            &mut out,
                        );
                        up.consume(len);
                        let (res, out) = client.write_vec(out).await;
                        s.out = out;
                        res.map_err(|_| ProxyError::ClientGone)?;
                    } else {
                        up.consume(len);
                    }
                    continue;
                }
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(ProxyError::UpstreamBadResponse(e.reason)),
            }
        }
        let filled = if held {
            // How long a held body waits for the destination's `100 Continue` before it is
            // sent anyway (a server that ignores `Expect` reads it without answering first).
            let wait = Duration::from_millis(core.snapshot().passthrough.continue_wait_ms);
            match monoio::time::timeout(wait, up.fill(max)).await {
                Ok(filled) => filled,
                Err(_) => {
                    // No answer to the `Expect`: send the body as a client would.
                    held = false;
                    send_body(client, up, body, ex, false).await?;
                    *body = RequestBody::Buffered(0);
                    continue;
                }
            }
        } else {
            up.fill(max).await
        };
        match filled {
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

/// Send the request body (what `exchange_head` did not write with the head).
async fn send_body(
    client: &mut Conn,
    up: &mut Conn,
    body: &mut RequestBody,
    ex: &Exchange<'_>,
    inline_body: bool,
) -> Result<(), ProxyError> {
    match body {
        RequestBody::Buffered(_) if inline_body => {}
        RequestBody::Buffered(n) => {
            let start = client.start;
            client
                .write_buffered(start..start + *n, up)
                .await
                .map_err(|_| ProxyError::UpstreamClosed { request_sent: true })?;
        }
        RequestBody::Streaming(state) => {
            let idle = Duration::from_millis(ex.settings().client_idle_timeout_ms);
            pipe(client, up, state, idle, Some(ex.settings().max_body_bytes))
                .await
                .map_err(|e| match e {
                    PipeError::Destination => ProxyError::UpstreamClosed { request_sent: true },
                    PipeError::Invalid(reason) => ProxyError::BadRequest {
                        status: 400,
                        reason,
                    },
                    PipeError::TooLarge => ProxyError::BadRequest {
                        status: 413,
                        reason: "request body larger than the limit",
                    },
                    PipeError::Timeout => ProxyError::BadRequest {
                        status: 408,
                        reason: "request body not received in time",
                    },
                    PipeError::SourceClosed | PipeError::Source => ProxyError::ClientGone,
                })?;
        }
    }
    Ok(())
}

/// Relay the response whose head is buffered in `up` to the client.
async fn relay(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    ex: &Exchange<'_>,
    addr: SocketAddr,
    mut up: Conn,
) -> ForwardResult {
    s.req.status = s.response_head.status;
    s.req.endpoint = Some(addr);
    let resp = &s.response_head;
    if resp.status == 101 && ex.upgrade {
        response_head(
            up.data(),
            resp,
            false,
            true,
            ex.settings().add_via,
            false,
            &mut s.out,
        );
        let len = resp.len;
        up.consume(len);
        let out = std::mem::take(&mut s.out);
        let (res, out) = client.write_vec(out).await;
        s.out = out;
        if res.is_err() {
            return Ok(Next::Close);
        }
        return Ok(Next::Upgrade(up));
    }
    if ex.connect && crate::sidecar::passthrough::opens_tunnel(resp) {
        return Ok(crate::sidecar::passthrough::accept_tunnel(client, resp, up, &mut s.out).await);
    }
    if resp.status == 101 {
        // A switch the client did not ask for cannot be relayed.
        return Err((
            ProxyError::UpstreamBadResponse("unrequested protocol switch"),
            true,
        ));
    }
    let framing = resp.framing(ex.is_head_method);
    let close_client = ex.client_close || framing == Framing::UntilClose || core.is_draining();
    let reuse_upstream = !resp.close && framing != Framing::UntilClose;
    // An HTTP/1.0 client cannot read chunked framing: strip it and close after the body.
    let dechunk = ex.http10 && framing == Framing::Chunked;
    response_head(
        up.data(),
        resp,
        close_client,
        false,
        ex.settings().add_via,
        dechunk,
        &mut s.out,
    );
    let head_len = resp.len;
    up.consume(head_len);

    let mut state = if dechunk {
        Some(BodyState::Dechunk(ChunkedScanner::response()))
    } else {
        BodyState::of_response(framing)
    };
    let mut out = std::mem::take(&mut s.out);
    // Small complete bodies ride along with the head in one write.
    if let Some(BodyState::Length(n)) = &state {
        let n = *n as usize;
        if up.buffered() >= n && out.len() + n <= COALESCE_LIMIT {
            out.extend_from_slice(&up.data()[..n]);
            up.consume(n);
            state = None;
        }
    }
    let (res, out) = client.write_vec(out).await;
    s.out = out;
    if res.is_err() {
        core.recycle(up.buf);
        return Ok(Next::Close);
    }
    let mut piped = Ok(());
    if let Some(state) = state.as_mut() {
        let idle = Duration::from_millis(ex.settings().request_timeout_ms);
        if matches!(state, BodyState::Chunked(_)) && bare_lf_framing(&mut up, idle).await {
            *state = BodyState::Rechunk(ChunkedScanner::response());
        }
        piped = match state {
            BodyState::Dechunk(scanner) => {
                dechunk_pipe(&mut up, client, scanner, idle, &mut s.out, false).await
            }
            BodyState::Rechunk(scanner) => {
                dechunk_pipe(&mut up, client, scanner, idle, &mut s.out, true).await
            }
            _ => pipe(&mut up, client, state, idle, None).await,
        };
    }
    let completed = piped.is_ok();
    let now = Instant::now();
    record_upstream_bytes(core, &up);
    let Conn { stream, buf, .. } = up;
    let leftover = buf.len();
    core.recycle(buf);
    if completed && reuse_upstream && leftover == 0 {
        // The buffer just recycled (the free list is last in, first out) carries the read
        // for the next response while the connection is pooled.
        let unused = core.pool.borrow_mut().checkin_reading(
            addr,
            stream,
            core.buffer(),
            now,
            ex.settings().pool_max_idle,
        );
        if let Some(buf) = unused {
            core.recycle(buf);
        }
    }
    match piped {
        Ok(()) if !close_client => Ok(Next::KeepAlive),
        Ok(()) | Err(PipeError::Destination) => Ok(Next::Close),
        // The head is out: the client learns of the break by the connection closing
        // before the body's end.
        Err(_) => Err((ProxyError::UpstreamBrokeResponse, true)),
    }
}

/// Copy a body from `src` to `dst` per its framing, in bounded steps.
pub async fn pipe(
    src: &mut Conn,
    dst: &mut Conn,
    state: &mut BodyState,
    idle: Duration,
    limit: Option<u64>,
) -> Result<(), PipeError> {
    let mut total: u64 = 0;
    loop {
        if src.buffered() > 0 {
            let (take, done) = match state {
                BodyState::Length(rem) => {
                    let take = (*rem).min(src.buffered() as u64);
                    *rem -= take;
                    (take as usize, *rem == 0)
                }
                BodyState::Chunked(scanner) => {
                    let scan = scanner
                        .scan(src.data())
                        .map_err(|e| PipeError::Invalid(e.0))?;
                    (scan.consumed, scan.done)
                }
                BodyState::UntilClose | BodyState::Dechunk(_) | BodyState::Rechunk(_) => {
                    (src.buffered(), false)
                }
            };
            // The limit counts body bytes: a chunked body's framing is not part of it.
            total = match state {
                BodyState::Chunked(scanner) => scanner.data_bytes(),
                _ => total + take as u64,
            };
            if limit.is_some_and(|l| total > l) {
                return Err(PipeError::TooLarge);
            }
            src.forward(take, dst)
                .await
                .map_err(|_| PipeError::Destination)?;
            if done {
                return Ok(());
            }
        }
        if !fill_body(src, idle, matches!(state, BodyState::UntilClose)).await? {
            return Ok(());
        }
    }
}

/// Read the next bytes of a body being streamed, at most `idle` apart. `Ok(false)`: the
/// source closed where that ends the body (`until_close`); a close anywhere else is an error.
async fn fill_body(src: &mut Conn, idle: Duration, until_close: bool) -> Result<bool, PipeError> {
    match monoio::time::timeout(idle, src.fill(BODY_CHUNK)).await {
        Err(_) => Err(PipeError::Timeout),
        Ok(Ok(Fill::Read(_))) | Ok(Ok(Fill::Full)) => Ok(true),
        Ok(Ok(Fill::Eof)) if until_close => Ok(false),
        Ok(Ok(Fill::Eof)) => Err(PipeError::SourceClosed),
        Ok(Err(_)) => Err(PipeError::Source),
    }
}

/// Whether a chunked response's first chunk line ends with a bare LF (its server frames
/// the whole body that way). Waits for the line when none of the body has come yet.
async fn bare_lf_framing(up: &mut Conn, idle: Duration) -> bool {
    loop {
        if let Some(i) = up.data().iter().position(|&b| b == b'\n') {
            return i == 0 || up.data()[i - 1] != b'\r';
        }
        // A first line longer than a chunk size with an extension can be: leave it to the
        // strict scanner to judge.
        if up.buffered() > 1024 || !matches!(fill_body(up, idle, false).await, Ok(true)) {
            return false;
        }
    }
}

/// Pass a chunked body on as plain bytes (the client connection closes after it), or,
/// `rechunk`, framed again with CRLF (its trailers kept).
async fn dechunk_pipe(
    src: &mut Conn,
    dst: &mut Conn,
    scanner: &mut ChunkedScanner,
    idle: Duration,
    scratch: &mut Vec<u8>,
    rechunk: bool,
) -> Result<(), PipeError> {
    let mut plain = Vec::new();
    let mut trailers = Vec::new();
    loop {
        if src.buffered() > 0 {
            let mut out = std::mem::take(scratch);
            out.clear();
            let sink = if rechunk { &mut plain } else { &mut out };
            sink.clear();
            let scan = scanner
                .decode_with_trailers(src.data(), sink, &mut trailers)
                .map_err(|e| PipeError::Invalid(e.0))?;
            src.consume(scan.consumed);
            if rechunk {
                if !plain.is_empty() {
                    let _ = write!(out, "{:x}\r\n", plain.len());
                    out.extend_from_slice(&plain);
                    out.extend_from_slice(b"\r\n");
                }
                if scan.done {
                    out.extend_from_slice(b"0\r\n");
                    out.extend_from_slice(&trailers);
                    out.extend_from_slice(b"\r\n");
                }
            }
            let (res, out) = dst.write_vec(out).await;
            *scratch = out;
            res.map_err(|_| PipeError::Destination)?;
            if scan.done {
                return Ok(());
            }
        }
        fill_body(src, idle, false).await?;
    }
}

fn record_upstream_bytes(core: &Core, up: &Conn) {
    let m = core.metrics.borrow();
    m.record_bytes_received(Peer::Upstream, up.bytes_in);
    m.record_bytes_sent(Peer::Upstream, up.bytes_out);
}
