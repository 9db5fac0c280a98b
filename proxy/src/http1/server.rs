//! One client connection: read a request head, route it, forward it (with its body) to an
//! upstream endpoint, relay the response, and repeat for keep-alive and pipelined requests,
//! which are answered strictly in order because they are handled one after another.

use crate::core::Core;
use crate::error::ProxyError;
use crate::http1::codec::{parse_request, Framing, HeadError, Parsed, RequestHead, ResponseHead};
use crate::http1::forward::{forward, Exchange, ForwardResult};
use crate::http1::rewrite::{error_response, request_head, ClientIdHeader, RequestAdditions};
use crate::pipeline::attempt::Policy;
use crate::pipeline::{plan, record, Origin, RequestState};
use crate::transport::conn::{is_cancelled, Conn, Fill, Stream};
use crate::transport::idle_timer::IdleSlot;
use coremesh_discovery::Settings;
use monoio::io::Canceller;
use monoio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// After shutdown begins, an idle keep-alive connection is closed once it has been idle
/// this long; a client mid-conversation sends its next request well within it and gets an
/// answer with `Connection: close` instead of a connection closed under its request.
const DRAIN_IDLE: Duration = Duration::from_millis(500);

/// Most connections' scratch kept per core for reuse; more idle at once are dropped.
const MAX_POOLED_SCRATCH: usize = 256;
/// Scratch whose buffers grew beyond this (a huge head or error page) is not kept.
const MAX_POOLED_SCRATCH_BYTES: usize = 64 * 1024;

/// Request-handling scratch space: lent by the core to a connection while it serves
/// requests and given back when the connection goes idle, so that an idle connection holds
/// none of it and a busy one reuses the capacity earlier requests grew.
pub struct ConnScratch {
    /// The current request as the pipeline sees it (span, attempts, answer).
    pub req: RequestState,
    pub head: RequestHead,
    pub upstream_head: Vec<u8>,
    pub response_head: ResponseHead,
    pub out: Vec<u8>,
    /// The client's address (set each time the scratch is lent).
    pub peer: SocketAddr,
    /// The attempt whose interim (1xx) responses the client was sent, for this request.
    pub interim_from_attempt: Option<u32>,
    /// How the connection reached the proxy, and so where its requests go.
    pub origin: Origin,
    /// The connection's `x-coremesh-client-id` (see [`client_id_header`]).
    pub client_id: ClientId,
    /// Inbound: the verified identity the policy checks (read once per connection).
    pub peer_id: Option<coremesh_discovery::SpiffeId>,
}

/// What a connection's requests carry in `x-coremesh-client-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientId {
    /// As the client sent it (not an inbound connection).
    Keep,
    /// Nothing: an inbound connection without a verified identity.
    Strip,
    /// This verified identity.
    Set(std::rc::Rc<str>),
}

impl ClientId {
    /// The identity TLS verified, if any (for metrics, spans and the access log).
    pub fn verified(&self) -> Option<std::rc::Rc<str>> {
        match self {
            ClientId::Set(id) => Some(id.clone()),
            _ => None,
        }
    }
    /// For the head rewrite.
    pub fn header(&self) -> ClientIdHeader<'_> {
        match self {
            ClientId::Keep => ClientIdHeader::Keep,
            ClientId::Strip => ClientIdHeader::Strip,
            ClientId::Set(id) => ClientIdHeader::Set(id),
        }
    }
    /// The same for an HTTP/2 request's headers.
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        const NAME: http::HeaderName = http::HeaderName::from_static("x-coremesh-client-id");
        match self {
            ClientId::Keep => {}
            ClientId::Strip => {
                headers.remove(NAME);
            }
            ClientId::Set(id) => match http::HeaderValue::from_str(id) {
                Ok(v) => {
                    headers.insert(NAME, v);
                }
                Err(_) => {
                    headers.remove(NAME);
                }
            },
        }
    }
}

/// The one place a connection's client identity is decided: the identity TLS verified
/// ([`crate::transport::tls::client_identity`]); on an inbound connection without one, no
/// identity (a header the client sent is removed); elsewhere the header is left alone.
pub fn client_id_header(stream: &Stream, origin: Origin) -> ClientId {
    match stream.tls().and_then(|t| t.identity()) {
        Some(id) => ClientId::Set(id.into()),
        None if stream.tls().is_some() => ClientId::Strip,
        None if origin.direction == crate::sidecar::Direction::Inbound => ClientId::Strip,
        None => ClientId::Keep,
    }
}

impl ConnScratch {
    fn new(peer: SocketAddr, origin: Origin) -> Self {
        ConnScratch {
            req: RequestState::default(),
            head: RequestHead::default(),
            upstream_head: Vec::new(),
            response_head: ResponseHead::default(),
            out: Vec::new(),
            peer,
            interim_from_attempt: None,
            origin,
            client_id: ClientId::Keep,
            peer_id: None,
        }
    }

    /// Whether this scratch is small enough to keep for another connection.
    fn fits_pool(&self) -> bool {
        let tracestate = self
            .req
            .trace
            .as_ref()
            .map_or(0, |t| t.tracestate.capacity());
        self.req.trace_lines.capacity()
            + self.upstream_head.capacity()
            + self.out.capacity()
            + tracestate
            <= MAX_POOLED_SCRATCH_BYTES
    }
}

/// Scratch for a connection that has a request to serve: from the core's pool if it has one.
fn lend_scratch(
    core: &Core,
    peer: SocketAddr,
    origin: Origin,
    stream: &Stream,
) -> Box<ConnScratch> {
    let mut s = match core.scratch_pool.borrow_mut().pop() {
        Some(mut s) => {
            s.peer = peer;
            s.origin = origin;
            s
        }
        None => Box::new(ConnScratch::new(peer, origin)),
    };
    s.client_id = client_id_header(stream, origin);
    s.peer_id = peer_id(&s.client_id);
    s.req.client_id = s.client_id.verified();
    s
}

/// The identity the inbound policy checks for a connection with `client_id`.
pub fn peer_id(client_id: &ClientId) -> Option<coremesh_discovery::SpiffeId> {
    match client_id {
        ClientId::Set(id) => coremesh_discovery::SpiffeId::parse(id).ok(),
        _ => None,
    }
}

/// Give a connection's scratch back to the core when the connection goes idle.
fn return_scratch(core: &Core, s: Box<ConnScratch>) {
    // The trace stays too, for its buffers: every request starts its own before it is
    // routed (`route_and_forward`), so none is ever finished with another's.
    let mut pool = core.scratch_pool.borrow_mut();
    if pool.len() < MAX_POOLED_SCRATCH && s.fits_pool() {
        pool.push(s);
    }
}

enum HeadOutcome {
    Ready,
    Closed,
    Reject(HeadError),
}

/// What to do with the client connection after an exchange.
pub enum Next {
    KeepAlive,
    Close,
    /// The upstream switched protocols: tunnel bytes both ways on this connection.
    Upgrade(Conn),
    /// A passed-through CONNECT was accepted: tunnel bytes both ways under the
    /// passthrough's limits ([`crate::sidecar::passthrough`]).
    Tunnel(Conn),
    /// The connection opened with the HTTP/2 preface: serve it as HTTP/2.
    Http2,
}

/// Where an idle connection is in its life: what its idle timeout is measured from.
struct Idle {
    /// No request was read yet: the wait for the first bytes is the head-read timeout.
    first: bool,
    /// When the last response ended (the drain timeout counts from it).
    last_response: Instant,
    /// The wait for a request found the connection readable: its next read does not wait.
    readable: bool,
    /// The client sends its requests back to back: the last one came within the linger
    /// of the response before it, so the read lingers after each response.
    busy: bool,
    /// Cancels the read that lingers after a response ([`linger_for_request`]): made once
    /// per busy spell, dropped when the connection goes idle.
    linger: Option<Canceller>,
}

/// What reading the first bytes of a request found.
enum FirstBytes {
    /// Bytes are buffered.
    Read,
    /// Nothing came while the read lingered: wait for the next request without a buffer.
    Quiet,
    /// The peer closed or the time ran out: close the connection quietly.
    Closed,
}

/// Serve one client connection; `_counted` keeps it in the core's connection count (taken
/// when it was accepted) until it ends.
///
/// The future stays small: while the connection is idle it holds its socket, a timer and
/// the wait for bytes, and no read buffer until bytes arrive on a new connection. Serving
/// requests (parsing, forwarding, retries), the tunnel after an upgrade and the lingering
/// close live in boxed futures that exist only while they run, and the request scratch is
/// lent by the core for that time (see docs/architecture.md, "Memory per connection").
pub fn serve(
    core: Rc<Core>,
    stream: TcpStream,
    peer: SocketAddr,
    counted: crate::core::ConnectionGuard,
) -> impl std::future::Future<Output = ()> {
    // Not an `async fn`: its future would hold `serve_conn`'s and its own arguments.
    let _ = stream.set_nodelay(true);
    let client = Conn::new(stream, Vec::new());
    serve_conn(core, client, peer, counted, Origin::EXPLICIT)
}

/// Serve an HTTP/1 client connection whose first bytes may already be buffered (a side
/// read them to detect the protocol), sending its requests where `origin` says.
///
/// Not an `async fn`: an `async fn` moves each argument into a local of its own, so its
/// future would hold every argument twice; an `async move` block keeps the one copy.
#[allow(clippy::manual_async_fn)] // on purpose: see above
pub fn serve_conn(
    core: Rc<Core>,
    mut client: Conn,
    peer: SocketAddr,
    counted: crate::core::ConnectionGuard,
    origin: Origin,
) -> impl std::future::Future<Output = ()> {
    async move {
        let _counted = counted;
        core.metrics.borrow().record_client_connection_opened();
        let slot = core.idle.slot();
        let mut idle = Idle {
            first: true,
            last_response: Instant::now(),
            readable: false,
            busy: false,
            linger: None,
        };
        loop {
            if !wait_for_request(&core, &mut client, &slot, &mut idle).await {
                break;
            }
            let mut scratch = lend_scratch(&core, peer, origin, &client.stream);
            let next = Box::pin(serve_requests(
                &core,
                &mut client,
                &mut scratch,
                &slot,
                &mut idle,
            ))
            .await;
            return_scratch(&core, scratch);
            match next {
                Next::KeepAlive => continue,
                Next::Close => break,
                Next::Upgrade(upstream) => {
                    record_connection_end(&core, &client);
                    Box::pin(run_tunnel(&core, client, upstream)).await;
                    return;
                }
                Next::Http2 => {
                    Box::pin(crate::http2::server::serve(
                        core.clone(),
                        client,
                        peer,
                        origin,
                    ))
                    .await;
                    return;
                }
                Next::Tunnel(upstream) => {
                    record_connection_end(&core, &client);
                    Box::pin(crate::sidecar::passthrough::run_tunnel(
                        &core, client, upstream,
                    ))
                    .await;
                    return;
                }
            }
        }
        record_connection_end(&core, &client);
        // Bytes the client sent beyond the last request it was answered: it is pipelining,
        // and more may still be on the way.
        let pipelining = client.buffered() > 0;
        core.recycle(std::mem::take(&mut client.buf));
        let limit = core.lingering_close;
        if needs_linger(&client.stream, pipelining, limit) {
            Box::pin(linger_close_stream(client.stream, limit)).await;
        }
    }
}

/// Serve requests while the client has bytes buffered (keep-alive and pipelined requests,
/// one after another). `KeepAlive` when the connection has gone idle.
async fn serve_requests(
    core: &Rc<Core>,
    client: &mut Conn,
    scratch: &mut ConnScratch,
    slot: &IdleSlot<'_>,
    idle: &mut Idle,
) -> Next {
    loop {
        if client.buffered() == 0 {
            match read_first_bytes(core, client, slot, idle).await {
                FirstBytes::Read => {}
                FirstBytes::Quiet => return Next::KeepAlive,
                FirstBytes::Closed => return Next::Close,
            }
        }
        if idle.first && starts_http2(core, client).await {
            return Next::Http2;
        }
        match read_head(core, client, scratch).await {
            HeadOutcome::Ready => {}
            HeadOutcome::Closed => return Next::Close,
            HeadOutcome::Reject(e) => {
                let err = ProxyError::BadRequest {
                    status: e.status,
                    reason: e.reason,
                };
                record_error(core, &err);
                send_error(client, &err, true, &mut scratch.out).await;
                return Next::Close;
            }
        }
        idle.first = false;
        core.stats.requests.set(core.stats.requests.get() + 1);
        let next = handle(core, client, scratch).await;
        idle.last_response = Instant::now();
        match next {
            Next::KeepAlive => continue,
            next => return next,
        }
    }
}

/// Whether the connection's first bytes are the HTTP/2 preface, reading a little more
/// when too few came to tell.
async fn starts_http2(core: &Core, client: &mut Conn) -> bool {
    use crate::http2::Preface;
    let limit = Duration::from_millis(core.defaults.header_read_timeout_ms);
    let deadline = Instant::now() + limit;
    loop {
        match crate::http2::preface(client.data()) {
            Preface::Yes => return true,
            Preface::No => return false,
            Preface::Maybe => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let max = core.defaults.max_header_bytes;
        match monoio::time::timeout(left, client.fill(max)).await {
            Ok(Ok(Fill::Read(_))) => {}
            // Let the HTTP/1 reader meet the end, the error or the timeout.
            _ => return false,
        }
    }
}

/// Tunnel bytes both ways after an upgrade, then record what went through.
async fn run_tunnel(core: &Core, client: Conn, upstream: Conn) {
    let idle = core.tunnel_idle;
    crate::http1::tunnel::run_and_record(core, client, upstream, idle, core.tunnel_buffer).await;
}

/// Most bytes a lingering close reads and throws away before it closes anyway.
const LINGER_MAX_BYTES: usize = 1024 * 1024;

/// Whether closing needs to linger: bytes are still coming (a pipelined request, an unread
/// body) and lingering is enabled.
fn needs_linger(stream: &TcpStream, pipelining: bool, limit: Duration) -> bool {
    !limit.is_zero() && (pipelining || crate::transport::conn::has_unread_bytes(stream))
}

/// [`linger_close`] for a plain or TLS stream (TLS sends its close_notify first).
async fn linger_close_stream(stream: Stream, limit: Duration) {
    let tcp = match stream {
        Stream::Plain(s) => s,
        Stream::Tls(t) => match t.close_notify().await {
            Some(s) => s,
            None => return,
        },
    };
    linger_close(tcp, limit).await;
}

/// Close a client connection without resetting it over the end of the last response.
/// Closing a socket with unread bytes makes the kernel send a reset, and the client's
/// kernel may then discard response bytes it had not yet handed to the client. So when
/// bytes are still coming (see [`needs_linger`]), send a FIN first, then read and discard
/// until the client closes, for at most `limit` (RFC 9112 §9.6).
pub(crate) async fn linger_close(mut stream: TcpStream, limit: Duration) {
    use monoio::io::{AsyncReadRent, AsyncWriteRent};
    if stream.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + limit;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, stream.read(buf)).await {
            Ok((Ok(n), b)) if n > 0 => {
                drained += n;
                buf = b;
            }
            _ => break,
        }
    }
}

fn record_error(core: &Core, err: &ProxyError) {
    core.metrics.borrow().record_error(err.metric_kind());
}

fn record_connection_end(core: &Core, client: &Conn) {
    use coremesh_telemetry::Peer;
    let m = core.metrics.borrow();
    m.record_client_connection_closed();
    m.record_bytes_received(Peer::Client, client.bytes_in);
    m.record_bytes_sent(Peer::Client, client.bytes_out);
}

/// How long a connection may wait for the next request's first bytes.
fn idle_limit(core: &Core, state: &Idle) -> Duration {
    let limits = &core.defaults;
    Duration::from_millis(if state.first {
        limits.header_read_timeout_ms
    } else {
        limits.client_idle_timeout_ms
    })
}

/// Wait until the client has bytes for a request (or has closed). False: close the
/// connection quietly (idle timeout, or idle while draining).
///
/// The wait holds no read buffer: the buffer goes back to the core and one is taken when
/// bytes are there ([`read_first_bytes`]), so an idle connection, new or kept alive,
/// costs its socket, a small task and a slot in the core's idle timers.
async fn wait_for_request(
    core: &Core,
    client: &mut Conn,
    slot: &IdleSlot<'_>,
    state: &mut Idle,
) -> bool {
    if client.buffered() > 0 {
        return true;
    }
    if client.buf.capacity() > 0 {
        core.recycle(std::mem::take(&mut client.buf));
        client.start = 0;
    }
    state.linger = None;
    let idle = idle_limit(core, state);
    if client.stream.tls().is_some_and(|t| t.has_buffered()) {
        // TLS holds bytes already: no wait (the plain path below is untouched by TLS).
        state.readable = true;
        return true;
    }
    let readable = std::pin::pin!(client.stream.tcp().readable(false));
    let result = wait_while_idle(core, slot, readable, idle, state.last_response).await;
    state.readable = matches!(result, Some(Ok(())));
    state.readable
}

/// Read the first bytes of a request. On a connection found readable, into a buffer from
/// the core: the read does not wait, but stays under the idle limits all the same. Right
/// after a response, into the buffer the connection still holds, lingering for the next
/// request ([`linger_for_request`]).
async fn read_first_bytes(
    core: &Core,
    client: &mut Conn,
    slot: &IdleSlot<'_>,
    state: &mut Idle,
) -> FirstBytes {
    if !std::mem::take(&mut state.readable) {
        return linger_for_request(core, client, state).await;
    }
    if client.buf.capacity() == 0 {
        client.buf = core.buffer();
    }
    let idle = idle_limit(core, state);
    let fill = std::pin::pin!(client.fill(core.defaults.max_header_bytes));
    let result = wait_while_idle(core, slot, fill, idle, state.last_response).await;
    match result {
        Some(Ok(Fill::Read(_))) => {
            let linger = Duration::from_millis(core.defaults.client_keepalive_linger_ms);
            state.busy = !state.first && state.last_response.elapsed() <= linger;
            FirstBytes::Read
        }
        _ => FirstBytes::Closed,
    }
}

/// After a response to a busy client (one whose request came within the linger of the
/// response before it), keep the connection's buffer with a read posted in it for
/// `client_keepalive_linger_ms`: its next request is then read at once, with no wait for
/// readability first (on io_uring one submission per request instead of two). When the
/// linger passes the read is cancelled — a read that completed meanwhile keeps its bytes —
/// and the connection goes back to the bufferless wait ([`wait_for_request`]) until it
/// shows it is busy again. A client that sends one request now and then never lingers, so
/// it holds no buffer between its requests and pays no cancel.
async fn linger_for_request(core: &Core, client: &mut Conn, state: &mut Idle) -> FirstBytes {
    let linger = Duration::from_millis(core.defaults.client_keepalive_linger_ms);
    if linger.is_zero() || !state.busy || client.buf.capacity() == 0 {
        return FirstBytes::Quiet;
    }
    let cancel = state.linger.get_or_insert_with(Canceller::new).handle();
    let max = core.defaults.max_header_bytes;
    let filled = {
        let mut read = std::pin::pin!(client.fill_cancelable(max, cancel));
        match monoio::time::timeout(linger, read.as_mut()).await {
            Ok(filled) => filled,
            Err(_) => {
                if let Some(canceller) = state.linger.take() {
                    drop(canceller.cancel());
                }
                read.await
            }
        }
    };
    match filled {
        Ok(Fill::Read(_) | Fill::Full) => FirstBytes::Read,
        Err(e) if is_cancelled(&e) => {
            state.busy = false;
            FirstBytes::Quiet
        }
        Ok(Fill::Eof) | Err(_) => FirstBytes::Closed,
    }
}

/// Read until a whole request head is buffered; some of it already is.
async fn read_head(core: &Core, client: &mut Conn, s: &mut ConnScratch) -> HeadOutcome {
    let (max, read_timeout) = crate::sidecar::passthrough::head_limits(core, s.origin);
    let deadline = Instant::now() + read_timeout;
    loop {
        let parsed = parse_request(
            client.data(),
            max,
            &mut core.parse_scratch.borrow_mut(),
            &mut s.head,
        );
        match parsed {
            Ok(Parsed::Complete) => return HeadOutcome::Ready,
            Ok(Parsed::Partial) => {}
            Err(e) => return HeadOutcome::Reject(e),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match monoio::time::timeout(left, client.fill(max)).await {
            Err(_) => {
                return HeadOutcome::Reject(HeadError {
                    status: 408,
                    reason: "request head not received in time",
                })
            }
            Ok(Ok(Fill::Read(_))) => {}
            Ok(Ok(Fill::Full)) => {
                return HeadOutcome::Reject(HeadError {
                    status: 431,
                    reason: "request head larger than the limit",
                })
            }
            Ok(Ok(Fill::Eof)) | Ok(Err(_)) => return HeadOutcome::Closed,
        }
    }
}

/// Run `wait` until it is done or the connection's idle deadline passes: `idle` from now,
/// or once shutdown begins, what is left of `DRAIN_IDLE` since the last response. `None`
/// when the time ran out.
///
/// The deadline is a slot in the core's idle timers, not a runtime timer of its own: a
/// runtime timer would be the largest part of an idle connection's state. `wait` is
/// borrowed pinned, not moved in, so that it is stored once.
fn wait_while_idle<'a, F: std::future::Future>(
    core: &'a Core,
    slot: &'a IdleSlot<'_>,
    mut wait: std::pin::Pin<&'a mut F>,
    idle: Duration,
    last: Instant,
) -> impl std::future::Future<Output = Option<F::Output>> + 'a {
    use std::future::Future;
    use std::task::Poll;
    let drain_deadline = move || std::cmp::max(Instant::now(), last + DRAIN_IDLE);
    let mut draining = core.is_draining();
    slot.arm(if draining {
        drain_deadline()
    } else {
        Instant::now() + idle
    });
    // Not pinned in place: `Wait` is `Unpin`, and the future stays one closure.
    let mut shutdown = core.shutdown.wait();
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(out) = wait.as_mut().poll(cx) {
            slot.disarm();
            return Poll::Ready(Some(out));
        }
        if !draining && std::pin::Pin::new(&mut shutdown).poll(cx).is_ready() {
            draining = true;
            slot.arm(drain_deadline());
        }
        slot.poll_expired(cx).map(|()| {
            slot.disarm();
            None
        })
    })
}

/// Handle the request whose head is at the start of the client's buffer, and record it.
async fn handle(core: &Rc<Core>, client: &mut Conn, s: &mut ConnScratch) -> Next {
    let started = Instant::now();
    s.req.reset();
    s.interim_from_attempt = None;
    let mut target = record::Routed::NONE;
    let request_snapshot = core.snapshot();
    let next = route_and_forward(core, client, s, &mut target, started, &request_snapshot).await;
    let latency = started.elapsed();
    record::finish(core, s.origin, &s.req, &request_snapshot, target, latency);
    next
}

/// What forwarding needs to know of a request head, read once.
struct Facts {
    framing: Framing,
    connect: bool,
    /// The connection closes after this request.
    client_close: bool,
    is_head_method: bool,
    idempotent: bool,
    expect_continue: bool,
    upgrade: bool,
    http10: bool,
}

impl Facts {
    fn of(core: &Core, data: &[u8], head: &RequestHead) -> Facts {
        let framing = head.framing.unwrap_or(Framing::None);
        let method = &data[head.method.clone()];
        Facts {
            framing,
            connect: head.connect,
            // A CONNECT that is not answered 2xx closes the connection: what the client
            // sent behind it was meant for a tunnel.
            client_close: head.close || core.is_draining() || head.connect,
            is_head_method: method == b"HEAD",
            idempotent: coremesh_balancer::is_idempotent(method),
            expect_continue: head.expect_continue && framing != Framing::None,
            upgrade: head.upgrade,
            http10: head.minor_version == 0,
        }
    }
}

/// The request's header lines by name, for routing and trace context.
fn header_pairs<'d>(
    data: &'d [u8],
    head: &'d RequestHead,
) -> impl Iterator<Item = (&'d str, &'d [u8])> + 'd {
    head.headers.iter().filter_map(move |h| {
        std::str::from_utf8(&data[h.name.clone()])
            .ok()
            .map(|n| (n, &data[h.value.clone()]))
    })
}

/// Route the request and forward it; `target` gets the (route, service) indices chosen.
async fn route_and_forward(
    core: &Rc<Core>,
    client: &mut Conn,
    s: &mut ConnScratch,
    target_out: &mut record::Routed,
    started: Instant,
    snapshot: &coremesh_discovery::Snapshot,
) -> Next {
    let f = Facts::of(core, client.data(), &s.head);
    // Every request has its own span, a request rejected before routing too: a span is
    // never finished twice, nor with another request's (the scratch is reused).
    if core.tracer.is_some() {
        let headers = header_pairs(client.data(), &s.head);
        s.req.trace = Some(record::start_trace(core, headers, s.req.trace.take()));
    }
    if s.origin.direction == crate::sidecar::Direction::Inbound {
        let path = route_input(client.data(), &s.head).path;
        let decision = crate::identity::authorize_inbound(
            core,
            &snapshot.inbound_policy,
            path,
            s.peer_id.as_ref(),
        );
        if let crate::identity::Decision::Deny(reason) = decision {
            let err = crate::identity::denied_error(reason);
            return reject(core, client, s, f.framing, f.client_close, err).await;
        }
    }
    let plan = plan::plan(core, snapshot, s.origin, || {
        route_input(client.data(), &s.head)
    });
    let plan = match plan {
        Ok(plan) => plan,
        Err(e) => return reject(core, client, s, f.framing, f.client_close, e).await,
    };
    *target_out = record::Routed {
        route: plan.route_index,
        service: plan.service_index,
    };
    let settings = match admit(core, snapshot, &plan, &f) {
        Ok(settings) => settings,
        Err((e, close)) => return reject(core, client, s, f.framing, close, e).await,
    };
    let caller = caller_deadline_ms(client.data(), &s.head).map(Duration::from_millis);
    let deadline = plan.deadline(settings, started, caller);
    write_upstream_head(core, client.data(), s, &plan, settings);
    let head_len = s.head.len;
    client.consume(head_len);

    // A passthrough's destination answers the `Expect` itself (it may refuse the body).
    let relay_continue = f.expect_continue && plan.passthrough && !f.http10;
    if f.expect_continue && !relay_continue && !send_continue(client, s).await {
        return Next::Close;
    }
    let direction = crate::observe::metrics_direction(s.origin.direction);
    let exchange = Exchange {
        policy: Policy::of(&plan, snapshot, settings, deadline, f.idempotent, direction),
        framing: f.framing,
        is_head_method: f.is_head_method,
        upgrade: f.upgrade,
        http10: f.http10,
        client_close: f.client_close,
        verbatim: plan.passthrough,
        connect: f.connect,
        relay_continue,
    };
    let result = forward(core, client, s, &exchange).await;
    answer_error(core, client, s, result, f.client_close).await
}

/// What routing reads of an HTTP/1 head: `absolute-form` targets carry their own
/// authority, else `Host`.
fn route_input<'d>(
    data: &'d [u8],
    head: &'d RequestHead,
) -> plan::RouteInput<'d, impl Iterator<Item = (&'d str, &'d [u8])> + 'd> {
    let target = std::str::from_utf8(&data[head.target.clone()]).unwrap_or("/");
    let (authority, path) = split_target(target);
    let host = authority.or_else(|| {
        head.host
            .clone()
            .and_then(|r| std::str::from_utf8(&data[r]).ok())
    });
    plan::RouteInput {
        host,
        path,
        headers: header_pairs(data, head),
    }
}

/// The settings the planned request runs under, or why it is refused before its body is
/// read (and whether the connection must close).
fn admit<'c>(
    core: &'c Core,
    snapshot: &'c coremesh_discovery::Snapshot,
    plan: &plan::Plan<'c>,
    f: &Facts,
) -> Result<&'c Settings, (ProxyError, bool)> {
    if f.connect && !plan.passthrough {
        let err = ProxyError::BadRequest {
            status: 501,
            reason: "CONNECT is passed on only to an original destination no service claims",
        };
        return Err((err, true));
    }
    let settings = plan
        .settings(core, snapshot)
        .map_err(|e| (e, f.client_close))?;
    if let Framing::Length(n) = f.framing {
        if n > settings.max_body_bytes {
            let err = ProxyError::BadRequest {
                status: 413,
                reason: "request body larger than the limit",
            };
            return Err((err, true));
        }
    }
    Ok(settings)
}

/// The head the upstream gets: as written for a passthrough, else rewritten (hop-by-hop
/// headers, `X-Forwarded-For`, `Via`, trace headers).
fn write_upstream_head(
    core: &Core,
    data: &[u8],
    s: &mut ConnScratch,
    plan: &plan::Plan<'_>,
    settings: &Settings,
) {
    if plan.passthrough {
        crate::sidecar::passthrough::request_head(data, &s.head, &mut s.upstream_head);
    } else {
        let add = RequestAdditions {
            forwarded_for: (settings.add_forwarded_for || plan.forwarded_for).then(|| s.peer.ip()),
            strip_trace: core.tracer.is_some(),
            via: settings.add_via,
            extra: b"",
            client_id: s.client_id.header(),
        };
        request_head(data, &s.head, &add, &mut s.upstream_head);
    }
}

/// The proxy's own `100 Continue`; false when the client is gone.
async fn send_continue(client: &mut Conn, s: &mut ConnScratch) -> bool {
    let mut out = std::mem::take(&mut s.out);
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    let (res, out) = client.write_vec(out).await;
    s.out = out;
    res.is_ok()
}

/// After forwarding: the client hears the proxy's error when nothing of the answer went
/// out yet, and the connection is kept only when the request's body was consumed.
async fn answer_error(
    core: &Core,
    client: &mut Conn,
    s: &mut ConnScratch,
    result: ForwardResult,
    client_close: bool,
) -> Next {
    let (err, body_consumed) = match result {
        Ok(next) => return next,
        Err(e) => e,
    };
    if matches!(err, ProxyError::ClientGone) {
        return Next::Close;
    }
    if matches!(err, ProxyError::UpstreamBrokeResponse) {
        // The response head already went out with the upstream's status; the connection
        // closes short of the body's end.
        record_error(core, &err);
        return Next::Close;
    }
    let close = client_close || !body_consumed;
    s.req.status = err.status();
    record_error(core, &err);
    send_error(client, &err, close, &mut s.out).await;
    if close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

/// Answer with the proxy's own error before any of the body was read: the connection is
/// kept only when the request had no body.
async fn reject(
    core: &Core,
    client: &mut Conn,
    s: &mut ConnScratch,
    framing: Framing,
    close: bool,
    err: ProxyError,
) -> Next {
    let head_len = s.head.len;
    client.consume(head_len);
    let close = close || framing != Framing::None;
    s.req.status = err.status();
    record_error(core, &err);
    send_error(client, &err, close, &mut s.out).await;
    if close {
        Next::Close
    } else {
        Next::KeepAlive
    }
}

pub async fn send_error(client: &mut Conn, err: &ProxyError, close: bool, out: &mut Vec<u8>) {
    let mut bytes = std::mem::take(out);
    error_response(
        err.status(),
        err.kind(),
        &err.to_string(),
        close,
        &mut bytes,
    );
    let (_, bytes) = client.write_vec(bytes).await;
    *out = bytes;
}

/// `absolute-form` targets (`http://host/path`) carry their own authority.
fn split_target(target: &str) -> (Option<&str>, &str) {
    match crate::http1::codec::split_absolute_form(target.as_bytes()) {
        // The offsets fall on ASCII delimiters (':', '/', '?', '#', '@'): valid str bounds.
        Some((host, rest)) => {
            let path = match &target[rest..] {
                p if p.starts_with('/') => p,
                _ => "/",
            };
            (Some(&target[host]), path)
        }
        None => (None, target),
    }
}

/// The `x-coremesh-timeout-ms` value the caller sent, if it is a valid number.
fn caller_deadline_ms(buf: &[u8], head: &RequestHead) -> Option<u64> {
    head.headers
        .iter()
        .find(|h| buf[h.name.clone()].eq_ignore_ascii_case(crate::http1::rewrite::DEADLINE_HEADER))
        .and_then(|h| std::str::from_utf8(&buf[h.value.clone()]).ok())
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn with these arguments returns.
    fn future_size<A, B, C, D, F: std::future::Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Most bytes a connection's future may take: it is what every idle connection costs
    /// (plus the runtime's task header), so request handling must stay boxed out of it.
    /// It was 2432 bytes with request handling inline and 2048 with a runtime timer per
    /// connection; with the core's idle timers and arguments stored once it is 616 (debug
    /// build); the socket and the wait for readability are most of what is left.
    const MAX_SERVE_FUTURE_BYTES: usize = 640;

    #[test]
    fn an_idle_connection_future_stays_small() {
        let size = future_size(serve);
        println!("serve future: {size} bytes");
        println!(
            "Conn: {} bytes, Stream: {} bytes, TcpStream: {} bytes",
            std::mem::size_of::<Conn>(),
            std::mem::size_of::<Stream>(),
            std::mem::size_of::<TcpStream>()
        );
        assert!(
            size <= MAX_SERVE_FUTURE_BYTES,
            "the serve future takes {size} bytes, more than {MAX_SERVE_FUTURE_BYTES}"
        );
    }
}
