//! One request's attempts, the proxy's one retry loop: choose an endpoint, send, classify
//! what came back, record it with the balancer, and try again while repeating is safe,
//! the retry budget grants it and the deadline allows. How an attempt goes out on the wire
//! is the codec's ([`Attempt`]).

use super::RequestState;
use crate::core::Core;
use crate::error::ProxyError;
use coremesh_balancer::{FailureKind, Outcome};
use coremesh_discovery::{Settings, Snapshot};
use coremesh_telemetry::{Direction, RetryReason};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What decides a request's attempts, whatever its protocol.
pub struct Policy<'a> {
    /// The destination service's index in `snapshot` (the one the request started on).
    pub service_index: usize,
    pub snapshot: &'a Snapshot,
    pub settings: &'a Settings,
    pub deadline: Instant,
    pub attempt_timeout: Option<Duration>,
    /// Statuses that are retried (the route's `retry_on`).
    pub retry_on: &'a [u16],
    /// gRPC statuses of a trailers-only answer that are retried (`grpc_retry_on`).
    pub grpc_retry_on: &'a [u32],
    /// Repeating the request after it was sent is safe (idempotent, or the route says so).
    pub may_repeat: bool,
    /// Send to this address instead of choosing among the service's endpoints (a sidecar
    /// passing a request through, or handing it to the application).
    pub fixed_endpoint: Option<SocketAddr>,
    pub direction: Direction,
}

impl<'a> Policy<'a> {
    /// The policy of a request planned as `plan`: its route's retry rules, `idempotent`
    /// saying whether the method may be repeated.
    pub fn of(
        plan: &super::plan::Plan<'a>,
        snapshot: &'a Snapshot,
        settings: &'a Settings,
        deadline: Instant,
        idempotent: bool,
        direction: Direction,
    ) -> Self {
        let route = plan.route;
        Policy {
            service_index: plan.service_index,
            snapshot,
            settings,
            deadline,
            attempt_timeout: route.and_then(|r| r.attempt_timeout),
            retry_on: route.map_or(&[], |r| &r.retry_on),
            grpc_retry_on: route.map_or(&[], |r| &r.grpc_retry_on),
            may_repeat: idempotent || route.is_some_and(|r| r.retry_non_idempotent),
            fixed_endpoint: plan.fixed_endpoint,
            direction,
        }
    }

    /// The service's index in the core's current per-service state: the same as in the
    /// request's snapshot unless a new snapshot was installed meanwhile, then found by
    /// name (`usize::MAX` if the service is gone, which every lookup treats as absent).
    pub fn service(&self, core: &Core) -> usize {
        core.resolve_service(self.snapshot, self.service_index)
    }
}

/// How one attempt goes out on a protocol: the codec's half of the loop.
pub(crate) trait Attempt {
    /// A response head ready to be relayed (and whatever the codec needs to relay it).
    type Answer;

    /// The request's state (span, attempt count, when the attempt's request went out).
    fn state(&mut self) -> &mut RequestState;

    /// Send the request to `addr` with `remaining_ms` of its deadline left, and wait for a
    /// final response head. Sets [`RequestState::sent_at`] once the connection is ready.
    async fn send(
        &mut self,
        addr: SocketAddr,
        remaining_ms: u64,
    ) -> Result<Self::Answer, ProxyError>;

    /// The answer's status.
    fn status(&self, answer: &Self::Answer) -> u16;

    /// The gRPC status of a trailers-only answer (a call that failed before any message).
    fn grpc_status(&self, _answer: &Self::Answer) -> Option<u32> {
        None
    }

    /// The body can go out again after it was sent (it was kept for replay, or there is none).
    fn replayable(&self) -> bool;

    /// After a failed attempt: whether the next attempt can send the body (a streamed body
    /// that never went out can still be read).
    fn recover(&mut self, error: &ProxyError) -> bool;

    /// Drop an answer that will not be relayed (the request is retried).
    fn discard(&mut self, answer: Self::Answer);
}

/// The attempt whose answer the client gets.
pub struct Answered<T> {
    pub addr: SocketAddr,
    pub answer: T,
    /// From the request going out to the response head (the connect left out).
    pub latency: Duration,
    /// How the endpoint did, as far as the head tells; [`record_answered`] records it
    /// once the body is through.
    pub outcome: Outcome,
}

/// Run the attempts until one gets an answer the client should have, or it is time to
/// give up with an error.
pub(crate) async fn run<A: Attempt>(
    core: &Rc<Core>,
    p: &Policy<'_>,
    a: &mut A,
) -> Result<Answered<A::Answer>, ProxyError> {
    core.budget_deposit(p.service(core), Instant::now());
    let service_id = core.ids.borrow().service(p.service(core));
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut attempt: u32 = 0;
    let mut retry_reason: Option<RetryReason> = None;
    loop {
        attempt += 1;
        let now = Instant::now();
        let left = p.deadline.saturating_duration_since(now);
        if left.is_zero() {
            record_deadline_exceeded(core, p, service_id);
            return Err(ProxyError::Timeout);
        }
        let chosen = match p.fixed_endpoint {
            Some(addr) => Some(addr),
            None => core.choose(p.service(core), now, &tried).map(|c| c.addr),
        };
        let Some(addr) = chosen else {
            return Err(ProxyError::NoEndpoints);
        };
        let limit = p.attempt_timeout.map_or(left, |t| t.min(left));
        let remaining_ms = left.as_millis().max(1) as u64;
        a.state().attempts = attempt;
        begin_attempt_trace(core, a.state());
        let sent = {
            // Pinned in place: handing the attempt's (large) future to `timeout` by value
            // copied it twice per request.
            let attempt_io = std::pin::pin!(a.send(addr, remaining_ms));
            monoio::time::timeout(limit, attempt_io).await
        };
        let done = Instant::now();
        // The endpoint's latency leaves out the TCP connect: a new connection's handshake
        // says nothing about how fast the endpoint answers requests.
        let latency = done.duration_since(a.state().sent_at.max(now));
        let trace = AttemptTrace {
            addr,
            retry_reason,
            deadline: left,
        };
        let error = match sent {
            Err(_) => {
                let outcome = Outcome::Failure(FailureKind::Timeout);
                core.record(p.service(core), addr, done, latency, outcome);
                end_attempt_trace(core, p, a.state(), &trace, None, Some("timeout"));
                // The request's own deadline: answer 504 now. A per-attempt timeout may
                // be retried when repeating the request is safe.
                if limit == left || !p.may_repeat {
                    if limit == left {
                        record_deadline_exceeded(core, p, service_id);
                    }
                    return Err(ProxyError::Timeout);
                }
                ProxyError::Timeout
            }
            Ok(Ok(answer)) => {
                let status = a.status(&answer);
                let outcome = if core.is_failure_status(p.service(core), status) {
                    Outcome::Failure(FailureKind::Status(status))
                } else {
                    Outcome::Success
                };
                end_attempt_trace(core, p, a.state(), &trace, Some(status), None);
                // A route's `grpc_retry_on` names statuses that say the call was not carried
                // out, so it is retried whatever its method (gRPC calls are all POST).
                let grpc_failed = a
                    .grpc_status(&answer)
                    .is_some_and(|g| p.grpc_retry_on.contains(&g));
                let retried = ((p.retry_on.contains(&status) && p.may_repeat) || grpc_failed)
                    && may_retry(core, p, attempt, RetryReason::Status, a.replayable());
                if !retried {
                    return Ok(Answered {
                        addr,
                        answer,
                        latency,
                        outcome,
                    });
                }
                core.record(p.service(core), addr, done, latency, outcome);
                // Drop this response (and its connection) and try another endpoint.
                a.discard(answer);
                retry_reason = Some(RetryReason::Status);
                tried.push(addr);
                backoff_before_retry(core, p, attempt, &tried).await;
                continue;
            }
            Ok(Err(e)) => {
                let outcome = failure_kind(&e).map_or(Outcome::Success, Outcome::Failure);
                core.record(p.service(core), addr, done, latency, outcome);
                end_attempt_trace(core, p, a.state(), &trace, None, Some(e.kind()));
                let safe = e.nothing_processed()
                    || (p.may_repeat && matches!(e, ProxyError::UpstreamClosed { .. }));
                if !safe {
                    return Err(e);
                }
                e
            }
        };
        let reason = retry_reason_of(&error);
        let body_ready = a.recover(&error);
        if !may_retry(core, p, attempt, reason, body_ready) {
            return Err(error);
        }
        retry_reason = Some(reason);
        tried.push(addr);
        backoff_before_retry(core, p, attempt, &tried).await;
    }
}

/// Record the outcome of the answered attempt once its response is through: an upstream
/// that broke off its response failed, whatever its status said.
pub fn record_answered(
    core: &Core,
    p: &Policy<'_>,
    addr: SocketAddr,
    latency: Duration,
    outcome: Outcome,
    broke: bool,
) {
    let outcome = if broke {
        Outcome::Failure(FailureKind::Reset)
    } else {
        outcome
    };
    core.record(p.service(core), addr, Instant::now(), latency, outcome);
}

/// What a failed attempt says about its endpoint (`None`: nothing against it).
fn failure_kind(e: &ProxyError) -> Option<FailureKind> {
    match e {
        ProxyError::Connect(_) | ProxyError::ConnectTimeout => Some(FailureKind::Connect),
        ProxyError::UpstreamClosed { .. } | ProxyError::UpstreamBadResponse(_) => {
            Some(FailureKind::Reset)
        }
        _ => None,
    }
}

fn retry_reason_of(e: &ProxyError) -> RetryReason {
    match e {
        ProxyError::Connect(_) => RetryReason::ConnectFailed,
        ProxyError::ConnectTimeout => RetryReason::ConnectTimeout,
        ProxyError::Timeout => RetryReason::Timeout,
        _ => RetryReason::Reset,
    }
}

/// Whether another attempt may go: the body can go out again, attempts and time are
/// left, and the budget grants a retry (counted either way).
fn may_retry(
    core: &Core,
    p: &Policy<'_>,
    attempt: u32,
    reason: RetryReason,
    repeatable: bool,
) -> bool {
    let max_attempts = p.settings.max_attempts.max(1);
    if !(repeatable && attempt < max_attempts && Instant::now() < p.deadline) {
        return false;
    }
    let granted = core.budget_withdraw(p.service(core), Instant::now());
    if let Some(id) = core.ids.borrow().service(p.service(core)) {
        let m = core.metrics.borrow();
        if granted {
            m.record_retry(p.direction, id, reason);
        } else {
            m.record_retry_budget_exhausted(p.direction, id);
        }
    }
    granted
}

fn record_deadline_exceeded(
    core: &Core,
    p: &Policy<'_>,
    service_id: Option<coremesh_telemetry::ServiceId>,
) {
    if let Some(id) = service_id {
        core.metrics
            .borrow()
            .record_deadline_exceeded(p.direction, id);
    }
}

/// Wait the jittered back-off before the next attempt, never past the deadline — but only
/// when the retry cannot go to an endpoint in the pool that this request has not tried. A
/// back-off spares the endpoints that just failed; a retry on a fresh one does not load
/// them again, and waiting would only add the pause to the request (with 2 ms of jitter,
/// the retried requests were a closed-loop client's p99, and each waiting connection sent
/// nothing meanwhile). nginx's `proxy_next_upstream` and HAProxy's redispatch do not wait
/// either.
async fn backoff_before_retry(core: &Core, p: &Policy<'_>, attempt: u32, tried: &[SocketAddr]) {
    if p.fixed_endpoint.is_none() {
        let service = p.service(core);
        let fresh = core
            .services
            .borrow()
            .get(service)
            .is_some_and(|s| s.balancer.has_untried_available(tried));
        if fresh {
            return;
        }
    }
    let pause = core.retry_backoff(attempt.saturating_sub(1), p.settings);
    let left = p.deadline.saturating_duration_since(Instant::now());
    let pause = pause.min(left);
    if !pause.is_zero() {
        monoio::time::sleep(pause).await;
    }
}

/// Open the span of the attempt about to start and render its trace headers.
fn begin_attempt_trace(core: &Core, s: &mut RequestState) {
    s.trace_lines.clear();
    if core.tracer.is_none() {
        return;
    }
    if let Some(trace) = &mut s.trace {
        let child = core.with_rng(|rng| trace.ctx.child(rng));
        trace.attempt = Some((child, std::time::SystemTime::now()));
        trace.write_attempt_headers(&mut s.trace_lines);
    }
}

/// What an attempt's span says besides its result.
struct AttemptTrace {
    addr: SocketAddr,
    retry_reason: Option<RetryReason>,
    deadline: Duration,
}

/// Close the current attempt's span.
fn end_attempt_trace(
    core: &Core,
    p: &Policy<'_>,
    s: &mut RequestState,
    t: &AttemptTrace,
    status: Option<u16>,
    error: Option<&'static str>,
) {
    let (Some(tracer), Some(trace)) = (&core.tracer, &mut s.trace) else {
        return;
    };
    let services = core.services.borrow();
    let Some(service) = services.get(p.service(core)) else {
        return;
    };
    tracer.finish_attempt(
        trace,
        crate::observe::tracing_ctx::AttemptRecord {
            service: &service.name,
            endpoint: t.addr,
            number: s.attempts,
            retry_reason: t.retry_reason,
            status,
            error,
            deadline: t.deadline,
        },
    );
}
