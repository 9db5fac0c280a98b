//! One HTTP/2 request stream from a client: planned, attempted, retried and recorded by
//! the request pipeline like any request, sent to an HTTP/2 endpoint as a stream of its
//! own ([`H2Attempt`]), and its response relayed back with its trailers while the request
//! body may still be flowing (gRPC streaming calls go both ways at once).

use super::body::{pump, pump_feed, BodySource, PumpError};
use super::grpc;
use crate::core::Core;
use crate::error::ProxyError;
use crate::pipeline::attempt::{self, Attempt, Policy};
use crate::pipeline::{plan, record, Origin, RequestState};
use bytes::Bytes;
use coremesh_discovery::{Settings, Snapshot, UpstreamProtocol};
use h2::server::SendResponse;
use h2::RecvStream;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Request, Response};
use std::future::{poll_fn, Future};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

/// The deadline of a gRPC call nobody set a time for.
const UNBOUNDED_CALL: Duration = Duration::from_secs(24 * 60 * 60);

/// The request body going out on an upstream stream while the response comes back.
type BodyPump = Pin<Box<dyn Future<Output = Result<(), PumpError>>>>;

/// Serve one request stream of a client connection and record it.
pub async fn handle(
    core: Rc<Core>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    peer: SocketAddr,
    origin: Origin,
) {
    let started = Instant::now();
    core.stats.requests.set(core.stats.requests.get() + 1);
    let snapshot = core.snapshot();
    let mut state = RequestState::default();
    let mut routed = record::Routed::NONE;
    let (parts, body) = request.into_parts();
    if origin.direction == crate::sidecar::Direction::Inbound {
        state.client_id = record::verified_client_id(&parts.headers);
    }
    let grpc = grpc::is_grpc(parts.headers.get(CONTENT_TYPE).map(|v| v.as_bytes()));
    let mut req = StreamRequest {
        core: &core,
        snapshot: &snapshot,
        parts: &parts,
        peer,
        origin,
        grpc,
        started,
    };
    let result = req
        .forward(body, &mut respond, &mut state, &mut routed)
        .await;
    if let Err(err) = result {
        let direction = crate::observe::metrics_direction(origin.direction);
        answer_error(&core, &mut respond, &mut state, &err, grpc, direction);
    }
    record::finish(&core, origin, &state, &snapshot, routed, started.elapsed());
}

/// What one stream's request is, for its whole life.
struct StreamRequest<'a> {
    core: &'a Rc<Core>,
    snapshot: &'a Snapshot,
    parts: &'a http::request::Parts,
    peer: SocketAddr,
    origin: Origin,
    grpc: bool,
    started: Instant,
}

impl StreamRequest<'_> {
    async fn forward(
        &mut self,
        body: RecvStream,
        respond: &mut SendResponse<Bytes>,
        state: &mut RequestState,
        routed: &mut record::Routed,
    ) -> Result<(), ProxyError> {
        let (core, snapshot, parts) = (self.core, self.snapshot, self.parts);
        if core.tracer.is_some() {
            state.trace = Some(record::start_trace(
                core,
                header_pairs(&parts.headers),
                None,
            ));
        }
        if self.origin.direction == crate::sidecar::Direction::Inbound {
            authorize(core, snapshot, parts)?;
        }
        let plan = plan::plan(core, snapshot, self.origin, || route_input(parts))?;
        *routed = record::Routed {
            route: plan.route_index,
            service: plan.service_index,
        };
        let settings = plan.settings(core, snapshot)?;
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > settings.max_body_bytes) {
            return Err(ProxyError::BadRequest {
                status: 413,
                reason: "request body larger than the limit",
            });
        }
        let deadline = if self.grpc {
            self.grpc_deadline(plan.route.and_then(|r| r.timeout))
        } else {
            plan.deadline(settings, self.started, self.caller_budget())
        };
        let body = BodySource::new(body, settings.replay_body_limit);
        let idempotent = coremesh_balancer::is_idempotent(parts.method.as_str().as_bytes());
        let direction = crate::observe::metrics_direction(self.origin.direction);
        let policy = Policy::of(&plan, snapshot, settings, deadline, idempotent, direction);
        let forwarded_for =
            (settings.add_forwarded_for || plan.forwarded_for).then(|| self.peer.ip());
        let mut attempt = H2Attempt {
            core,
            state,
            parts,
            body,
            settings,
            grpc: self.grpc,
            verbatim: plan.passthrough,
            forwarded_for,
        };
        let answered = {
            // A client that resets its stream (a cancelled call) gets nothing more: the
            // attempt is dropped, which resets the upstream stream too.
            let mut run = std::pin::pin!(attempt::run(core, &policy, &mut attempt));
            poll_fn(|cx| {
                if respond.poll_reset(cx).is_ready() {
                    return Poll::Ready(Err(ProxyError::ClientGone));
                }
                run.as_mut().poll(cx)
            })
            .await?
        };
        let state = attempt.state;
        state.status = answered.answer.status();
        state.endpoint = Some(answered.addr);
        // A gRPC call with a deadline ends at it, however far its response got.
        let cut = self
            .grpc
            .then_some(deadline)
            .filter(|_| self.caller_budget().is_some());
        let head_request = parts.method == http::Method::HEAD;
        let relayed = relay(core, respond, answered.answer, settings, head_request, cut).await;
        attempt::record_answered(
            core,
            &policy,
            answered.addr,
            answered.latency,
            answered.outcome,
            relayed.broke,
        );
        state.grpc_status = relayed.grpc_status.filter(|_| self.grpc);
        if let Some(code) = state.grpc_status {
            core.metrics
                .borrow()
                .record_grpc_response(policy.direction, code);
        }
        Ok(())
    }

    /// A gRPC call's deadline: the earliest of the route's timeout, `grpc-timeout` and
    /// `x-coremesh-timeout-ms`. The service's `request_timeout_ms` does not apply: a call
    /// nobody set a time for may be a stream that lives for hours, and a client's own
    /// deadline may be longer than the proxy's default.
    fn grpc_deadline(&self, route_timeout: Option<Duration>) -> Instant {
        let budget = match (route_timeout, self.caller_budget()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(UNBOUNDED_CALL),
        };
        self.started + budget
    }

    /// The budget the caller sent: `x-coremesh-timeout-ms` and, for gRPC, `grpc-timeout`
    /// (the earlier wins).
    fn caller_budget(&self) -> Option<Duration> {
        let headers = &self.parts.headers;
        let own = headers
            .get("x-coremesh-timeout-ms")
            .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
            .map(Duration::from_millis);
        let grpc = headers
            .get("grpc-timeout")
            .filter(|_| self.grpc)
            .and_then(|v| grpc::parse_timeout(v.as_bytes()));
        match (own, grpc) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The request's header lines by name, for routing and trace context.
fn header_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &[u8])> {
    headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
}

/// What routing reads of an HTTP/2 request: `:authority` (else `Host`), `:path`, headers.
fn route_input(
    parts: &http::request::Parts,
) -> plan::RouteInput<'_, impl Iterator<Item = (&str, &[u8])>> {
    let host = parts
        .uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| parts.headers.get(HOST).and_then(|h| h.to_str().ok()));
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    plan::RouteInput {
        host,
        path,
        headers: header_pairs(&parts.headers),
    }
}

/// An endpoint's answer, on the protocol the request went out in.
pub enum H2Answer {
    /// An HTTP/2 stream's response head, and the request body still going out.
    H2 {
        response: Response<RecvStream>,
        pump: Option<BodyPump>,
        /// The stream's place on its connection, until the stream ends.
        slot: super::upstream::StreamSlot,
    },
    /// An HTTP/1 connection with the response head buffered.
    Http1(super::to_http1::Http1Answer),
}

impl H2Answer {
    fn status(&self) -> u16 {
        match self {
            H2Answer::H2 { response, .. } => response.status().as_u16(),
            H2Answer::Http1(a) => a.head.status,
        }
    }
}

/// One request's attempts: a stream each on the core's HTTP/2 connection to the endpoint
/// chosen, or an HTTP/1.1 exchange when the service speaks HTTP/1 (`protocol = "http1"`).
struct H2Attempt<'a> {
    core: &'a Rc<Core>,
    state: &'a mut RequestState,
    parts: &'a http::request::Parts,
    body: BodySource,
    settings: &'a Settings,
    grpc: bool,
    /// Passed through as written: no deadline, trace or forwarding headers added.
    verbatim: bool,
    forwarded_for: Option<IpAddr>,
}

impl Attempt for H2Attempt<'_> {
    type Answer = H2Answer;

    fn state(&mut self) -> &mut RequestState {
        self.state
    }

    async fn send(&mut self, addr: SocketAddr, remaining_ms: u64) -> Result<H2Answer, ProxyError> {
        if self.settings.protocol == UpstreamProtocol::Http1 {
            return self.send_http1(addr, remaining_ms).await;
        }
        let (mut sender, slot) = super::upstream::ready(self.core, addr, self.settings).await?;
        let (authority, headers) = self.upstream_headers(addr, remaining_ms);
        let head = self.h2_head(&authority, headers)?;
        let source = self.body.for_attempt().ok_or(ProxyError::ClientGone)?;
        let end = source.is_empty();
        self.state.sent_at = Instant::now();
        let (response, mut stream) = sender
            .send_request(head, end)
            .map_err(|e| super::upstream::stream_error(&e))?;
        let mut pump: Option<BodyPump> = (!end)
            .then(|| Box::pin(async move { pump_feed(source, &mut stream).await }) as BodyPump);
        let mut response = std::pin::pin!(response);
        let head = poll_fn(|cx| {
            if let Some(p) = pump.as_mut() {
                if let Poll::Ready(done) = p.as_mut().poll(cx) {
                    pump = None;
                    if let Err(PumpError::Source(_)) = done {
                        // The client reset its request: nobody is waiting for the answer.
                        return Poll::Ready(Err(ProxyError::ClientGone));
                    }
                }
            }
            response
                .as_mut()
                .poll(cx)
                .map(|r| r.map_err(|e| super::upstream::stream_error(&e)))
        })
        .await?;
        Ok(H2Answer::H2 {
            response: head,
            pump,
            slot,
        })
    }

    fn status(&self, answer: &H2Answer) -> u16 {
        answer.status()
    }

    fn grpc_status(&self, answer: &H2Answer) -> Option<u32> {
        match answer {
            H2Answer::H2 { response, .. } if response.body().is_end_stream() => response
                .headers()
                .get("grpc-status")?
                .to_str()
                .ok()?
                .parse()
                .ok(),
            _ => None,
        }
    }

    fn replayable(&self) -> bool {
        self.body.replayable()
    }

    fn recover(&mut self, _error: &ProxyError) -> bool {
        // A body that was not whole was handed to the failed attempt's stream.
        self.body.replayable()
    }

    fn discard(&mut self, answer: H2Answer) {
        // Dropping an HTTP/2 stream's handles resets it (CANCEL); an HTTP/1 connection
        // with an unread response is closed.
        if let H2Answer::Http1(a) = answer {
            self.core.recycle(a.up.buf);
        }
    }
}

impl H2Attempt<'_> {
    /// The authority and headers the endpoint gets: the client's, with the deadline left,
    /// the attempt's trace context and the forwarding headers.
    fn upstream_headers(&self, addr: SocketAddr, remaining_ms: u64) -> (String, HeaderMap) {
        let p = self.parts;
        let authority = p
            .uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                p.headers
                    .get(HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| addr.to_string());
        let mut out = HeaderMap::with_capacity(p.headers.len() + 4);
        let strip_trace = self.core.tracer.is_some() && !self.verbatim;
        for (name, value) in &p.headers {
            let n = name.as_str();
            let replaced = !self.verbatim
                && (n == "x-coremesh-timeout-ms"
                    || (self.grpc && n == "grpc-timeout")
                    || (self.forwarded_for.is_some() && n == "x-forwarded-for"));
            if replaced || (strip_trace && coremesh_telemetry::trace::is_trace_header(n)) {
                continue;
            }
            out.append(name.clone(), value.clone());
        }
        if self.verbatim {
            return (authority, out);
        }
        out.insert(
            HeaderName::from_static("x-coremesh-timeout-ms"),
            HeaderValue::from(remaining_ms),
        );
        if self.grpc {
            let left = grpc::format_timeout(Duration::from_millis(remaining_ms));
            if let Ok(v) = HeaderValue::from_str(&left) {
                out.insert(HeaderName::from_static("grpc-timeout"), v);
            }
        }
        if let Some(ip) = self.forwarded_for {
            let mut value = String::new();
            for v in p.headers.get_all("x-forwarded-for") {
                if let Ok(v) = v.to_str() {
                    if !v.is_empty() {
                        value.push_str(v);
                        value.push_str(", ");
                    }
                }
            }
            value.push_str(&ip.to_string());
            if let Ok(v) = HeaderValue::from_str(&value) {
                out.insert(HeaderName::from_static("x-forwarded-for"), v);
            }
        }
        if self.settings.add_via {
            out.append(http::header::VIA, HeaderValue::from_static("2 coremesh"));
        }
        append_header_lines(&mut out, &self.state.trace_lines);
        (authority, out)
    }

    /// The HTTP/2 request head for the endpoint.
    fn h2_head(&self, authority: &str, headers: HeaderMap) -> Result<Request<()>, ProxyError> {
        let p = self.parts;
        let path = p.uri.path_and_query().map_or("/", |x| x.as_str());
        let bad = |_| ProxyError::BadRequest {
            status: 400,
            reason: "request target is not a valid URI",
        };
        let uri = http::Uri::builder()
            .scheme(p.uri.scheme_str().unwrap_or("http"))
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(bad)?;
        let mut head = Request::new(());
        *head.method_mut() = p.method.clone();
        *head.uri_mut() = uri;
        *head.version_mut() = http::Version::HTTP_2;
        *head.headers_mut() = headers;
        Ok(head)
    }

    /// The request as HTTP/1.1 to an HTTP/1 endpoint: the whole body is sent before the
    /// response head is read, as HTTP/1 clients do.
    async fn send_http1(
        &mut self,
        addr: SocketAddr,
        remaining_ms: u64,
    ) -> Result<H2Answer, ProxyError> {
        let (authority, headers) = self.upstream_headers(addr, remaining_ms);
        self.body.fill().await.map_err(|_| ProxyError::ClientGone)?;
        let source = self.body.for_attempt().ok_or(ProxyError::ClientGone)?;
        let len = source.whole_len();
        let mut head = Vec::with_capacity(512);
        super::to_http1::request_head(self.parts, &authority, &headers, len, &mut head);
        let answer = super::to_http1::exchange(
            self.core,
            addr,
            self.settings,
            head,
            source,
            &mut self.state.sent_at,
        )
        .await?;
        Ok(H2Answer::Http1(answer))
    }
}

/// Header lines rendered for HTTP/1 (`name: value\r\n`), added to an HTTP/2 head.
pub(crate) fn append_header_lines(out: &mut HeaderMap, lines: &[u8]) {
    for line in lines.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = HeaderName::from_bytes(&line[..colon].to_ascii_lowercase());
        let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            out.append(name, value);
        }
    }
}

/// How relaying an answer ended.
#[derive(Default)]
struct Relayed {
    /// The endpoint broke off its response.
    broke: bool,
    /// The `grpc-status` the client got (in the head of a trailers-only answer, in the
    /// trailers, or the proxy's own at the deadline).
    grpc_status: Option<u32>,
}

/// The `grpc-status` in `headers`, if any.
fn grpc_status_in(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Send the answer's head to the client, then move both bodies until both ends are done.
async fn relay(
    core: &Core,
    respond: &mut SendResponse<Bytes>,
    answer: H2Answer,
    settings: &Settings,
    head_request: bool,
    cut: Option<Instant>,
) -> Relayed {
    let via = settings.add_via;
    let (response, request_pump, _slot) = match answer {
        H2Answer::H2 {
            response,
            pump,
            slot,
        } => (response, pump, slot),
        H2Answer::Http1(a) => {
            let broke = relay_http1(core, respond, a, settings, head_request).await;
            return Relayed {
                broke,
                grpc_status: None,
            };
        }
    };
    let (mut head, body) = response.into_parts();
    if via {
        head.headers
            .append(http::header::VIA, HeaderValue::from_static("2 coremesh"));
    }
    let end = body.is_end_stream();
    let in_head = grpc_status_in(&head.headers);
    let Ok(mut to_client) = respond.send_response(Response::from_parts(head, ()), end) else {
        return Relayed::default();
    };
    if end {
        return Relayed {
            broke: false,
            grpc_status: in_head,
        };
    }
    let mut request_pump = request_pump;
    // `None`: the call's deadline passed first.
    let outcome = {
        let mut response_pump = std::pin::pin!(pump(body, &mut to_client));
        let both = poll_fn(|cx| {
            if let Some(p) = request_pump.as_mut() {
                if let Poll::Ready(done) = p.as_mut().poll(cx) {
                    request_pump = None;
                    if let Err(PumpError::Source(_)) = done {
                        // The client reset its stream: the answer has nowhere to go.
                        return Poll::Ready(Ok(None));
                    }
                }
            }
            response_pump.as_mut().poll(cx)
        });
        match cut {
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                monoio::time::timeout(left, both).await.ok()
            }
            None => Some(both.await),
        }
    };
    match outcome {
        None => {
            // The upstream stream is reset as it is dropped, and the client hears
            // DEADLINE_EXCEEDED.
            let mut trailers = HeaderMap::new();
            trailers.insert(
                "grpc-status",
                HeaderValue::from(grpc::code::DEADLINE_EXCEEDED),
            );
            trailers.insert(
                "grpc-message",
                HeaderValue::from_static("deadline exceeded"),
            );
            let _ = to_client.send_trailers(trailers);
            Relayed {
                broke: false,
                grpc_status: Some(grpc::code::DEADLINE_EXCEEDED),
            }
        }
        Some(Ok(trailers)) => Relayed {
            broke: false,
            grpc_status: trailers.as_ref().and_then(grpc_status_in).or(in_head),
        },
        Some(Err(PumpError::Source(_))) => {
            to_client.send_reset(h2::Reason::INTERNAL_ERROR);
            Relayed {
                broke: true,
                grpc_status: None,
            }
        }
        Some(Err(PumpError::Stalled)) => {
            // The client stopped reading: its stream ends, and the upstream's with it.
            to_client.send_reset(h2::Reason::CANCEL);
            Relayed::default()
        }
        Some(Err(_)) => Relayed::default(),
    }
}

/// Relay an HTTP/1 endpoint's response. True when the endpoint broke off its body.
async fn relay_http1(
    core: &Core,
    respond: &mut SendResponse<Bytes>,
    answer: super::to_http1::Http1Answer,
    settings: &Settings,
    head_request: bool,
) -> bool {
    let mut head = super::to_http1::response_head(&answer);
    if settings.add_via {
        head.headers_mut()
            .append(http::header::VIA, HeaderValue::from_static("1.1 coremesh"));
    }
    let empty = matches!(
        answer.head.framing(head_request),
        crate::http1::codec::Framing::None | crate::http1::codec::Framing::Length(0)
    );
    let Ok(mut to_client) = respond.send_response(head, empty) else {
        core.recycle(answer.up.buf);
        return false;
    };
    if empty {
        let _ =
            super::to_http1::relay_body(core, answer, head_request, &mut to_client, settings).await;
        return false;
    }
    match super::to_http1::relay_body(core, answer, head_request, &mut to_client, settings).await {
        Err(PumpError::SourceBroke) => {
            to_client.send_reset(h2::Reason::INTERNAL_ERROR);
            true
        }
        _ => false,
    }
}

/// The inbound policy's decision for a request whose `x-coremesh-client-id` is the
/// connection's verified identity (the server set or removed it).
fn authorize(
    core: &Core,
    snapshot: &coremesh_discovery::Snapshot,
    parts: &http::request::Parts,
) -> Result<(), ProxyError> {
    let peer = parts
        .headers
        .get("x-coremesh-client-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| coremesh_discovery::SpiffeId::parse(v).ok());
    let path = parts.uri.path();
    match crate::identity::authorize_inbound(core, &snapshot.inbound_policy, path, peer.as_ref()) {
        crate::identity::Decision::Allow => Ok(()),
        crate::identity::Decision::Deny(reason) => Err(crate::identity::denied_error(reason)),
    }
}

/// The proxy's own answer to a request it could not forward: a trailers-only response
/// with a gRPC status for a gRPC call, else the HTTP status and a one-line reason.
fn answer_error(
    core: &Core,
    respond: &mut SendResponse<Bytes>,
    state: &mut RequestState,
    err: &ProxyError,
    grpc: bool,
    direction: coremesh_telemetry::Direction,
) {
    core.metrics.borrow().record_error(err.metric_kind());
    if matches!(err, ProxyError::ClientGone) {
        return;
    }
    state.status = err.status();
    if grpc {
        state.grpc_status = Some(grpc::status_of(err));
        core.metrics
            .borrow()
            .record_grpc_response(direction, grpc::status_of(err));
        let mut head = Response::new(());
        let headers = head.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert("grpc-status", HeaderValue::from(grpc::status_of(err)));
        if let Ok(message) = HeaderValue::from_str(&err.to_string()) {
            headers.insert("grpc-message", message);
        }
        let _ = respond.send_response(head, true);
        return;
    }
    let mut head = Response::new(());
    *head.status_mut() =
        http::StatusCode::from_u16(err.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = head.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert("x-coremesh-error", HeaderValue::from_static(err.kind()));
    let text = format!("{err}\n");
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    if let Ok(mut stream) = respond.send_response(head, false) {
        let _ = stream.send_data(Bytes::from(text), true);
    }
}
