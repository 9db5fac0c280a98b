//! The built-in upstream: an HTTP/1.1 keep-alive server on `monoio` whose answers take a
//! configurable time (fixed, uniform or exponential) and fail at a configurable rate with a
//! configurable status. Decisions come from a seeded generator in arrival order, so the
//! same seed gives the same sequence of latencies and errors.
//!
//! `GET /__bench/stats` answers with the counters as JSON and is not counted itself. A
//! *stall* (request number `K` answered after `S` ms) lets tests build a deterministic
//! hiccup. A *concurrency limit* makes it a server with that many workers: a request that
//! arrives while all are busy waits for the first to come free (first come, first served),
//! so its latency grows with the load, as a busy application's does ([`Workers`]).
//! A connection that opens with the HTTP/2 client preface is served as cleartext HTTP/2
//! (h2c with prior knowledge, [`crate::upstream_h2`]) with the same decisions; with `grpc`
//! its answers are unary gRPC answers.
//! Used in-process by tests ([`spawn`]) and as a separate process by the comparison
//! (`coremesh-bench upstream`).

use crate::http::{self, BodyFraming, ChunkScanner, Parse};
use crate::load::{block_on, Driver};
use bytes::Bytes;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Path answered with the counters.
pub const STATS_PATH: &str = "/__bench/stats";
/// How often an accept loop looks at its stop flag (the default of
/// [`UpstreamSpec::stop_poll`]).
pub const STOP_POLL: Duration = Duration::from_millis(50);
const READ_BUFFER: usize = 8 * 1024;

/// How long an answer takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyDist {
    Fixed(Duration),
    Uniform(Duration, Duration),
    Exponential { mean: Duration },
}

impl LatencyDist {
    pub fn sample(&self, rng: &mut impl Rng) -> Duration {
        match *self {
            LatencyDist::Fixed(d) => d,
            LatencyDist::Uniform(lo, hi) if hi > lo => {
                lo + Duration::from_secs_f64(rng.gen::<f64>() * (hi - lo).as_secs_f64())
            }
            LatencyDist::Uniform(lo, _) => lo,
            LatencyDist::Exponential { mean } => {
                let u: f64 = rng.gen::<f64>();
                // 1 - u is in (0, 1], so the logarithm is finite.
                Duration::from_secs_f64(-(1.0 - u).ln() * mean.as_secs_f64())
                    .min(crate::stats::MAX_RECORDED)
            }
        }
    }
}

fn millis(text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of milliseconds"))?;
    if !(0.0..=3_600_000.0).contains(&v) {
        return Err(format!("{v} ms is outside 0 to 3600000"));
    }
    Ok(Duration::from_secs_f64(v / 1000.0))
}

impl FromStr for LatencyDist {
    type Err = String;

    /// `fixed:MS`, `uniform:MIN-MAX` or `exp:MEAN`, in milliseconds (a bare number is fixed).
    fn from_str(s: &str) -> Result<LatencyDist, String> {
        let (kind, arg) = s.split_once(':').unwrap_or(("fixed", s));
        match kind {
            "fixed" => Ok(LatencyDist::Fixed(millis(arg)?)),
            "uniform" => {
                let (lo, hi) = arg
                    .split_once('-')
                    .ok_or_else(|| format!("uniform needs MIN-MAX, got {arg:?}"))?;
                let (lo, hi) = (millis(lo)?, millis(hi)?);
                if hi < lo {
                    return Err(format!("uniform:{arg}: MAX is below MIN"));
                }
                Ok(LatencyDist::Uniform(lo, hi))
            }
            "exp" => Ok(LatencyDist::Exponential { mean: millis(arg)? }),
            other => Err(format!(
                "unknown latency distribution {other:?}: use fixed:MS, uniform:MIN-MAX or exp:MEAN"
            )),
        }
    }
}

/// An upstream's behaviour.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub listen: SocketAddr,
    pub name: String,
    pub latency: LatencyDist,
    /// Share of requests (0 to 1) answered with `error_status`.
    pub error_rate: f64,
    pub error_status: u16,
    pub body_bytes: usize,
    pub threads: usize,
    pub seed: u64,
    /// Request number `K` (counted from 1 over the whole server) is answered after this.
    pub stall: Option<(u64, Duration)>,
    /// Requests answered at once per thread; 0: no limit (every request starts at once).
    pub concurrency: usize,
    pub driver: Driver,
    /// Answer HTTP/2 requests as unary gRPC calls (`application/grpc`, a length-prefixed
    /// message of `body_bytes` bytes of payload, `grpc-status: 0` trailers).
    pub grpc: bool,
    /// How often each accept loop looks at the stop flag ([`STOP_POLL`]).
    pub stop_poll: Duration,
}

impl UpstreamSpec {
    /// A fast, error-free upstream on a free loopback port.
    pub fn new() -> UpstreamSpec {
        UpstreamSpec {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: "upstream".to_string(),
            latency: LatencyDist::Fixed(Duration::ZERO),
            error_rate: 0.0,
            error_status: 503,
            body_bytes: 64,
            threads: 1,
            seed: 1,
            stall: None,
            concurrency: 0,
            driver: Driver::Auto,
            grpc: false,
            stop_poll: STOP_POLL,
        }
    }
}

impl Default for UpstreamSpec {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters shared by the server's threads.
#[derive(Debug, Default)]
pub struct UpstreamStats {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub connections: AtomicU64,
    /// Of `requests`, those that came over HTTP/2.
    pub h2_requests: AtomicU64,
}

/// The counters as JSON (the answer to [`STATS_PATH`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub requests: u64,
    pub errors: u64,
    pub connections: u64,
    /// Of `requests`, those that came over HTTP/2.
    #[serde(default)]
    pub h2_requests: u64,
}

impl UpstreamStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            h2_requests: self.h2_requests.load(Ordering::Relaxed),
        }
    }
}

/// A running upstream.
pub struct UpstreamHandle {
    pub addr: SocketAddr,
    pub stats: Arc<UpstreamStats>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UpstreamHandle {
    /// Stop accepting, end every connection, and wait for the threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Wait for the threads (they only end when stopped).
    pub fn join(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for UpstreamHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers prepared once.
struct Answers {
    ok: Bytes,
    ok_close: Bytes,
    error: Bytes,
    error_close: Bytes,
}

fn answer(status: u16, reason: &str, name: &str, body: &[u8], close: bool) -> Bytes {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nX-Upstream: {name}\r\n{}\r\n",
        body.len(),
        if close { "Connection: close\r\n" } else { "" }
    )
    .into_bytes();
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

impl Answers {
    fn new(spec: &UpstreamSpec) -> Answers {
        let body = vec![b'x'; spec.body_bytes];
        let ok = answer(200, "OK", &spec.name, &body, false);
        let err_body = format!("{} from {}\n", spec.error_status, spec.name).into_bytes();
        let status = spec.error_status;
        Answers {
            ok,
            ok_close: answer(200, "OK", &spec.name, &body, true),
            error: answer(status, reason(status), &spec.name, &err_body, false),
            error_close: answer(status, reason(status), &spec.name, &err_body, true),
        }
    }
}

/// `n` workers answering in arrival order: each request takes the worker that comes free
/// first, starts when it is free (or at once) and holds it for its latency. Plain
/// arithmetic on the times passed in, so a test can replay an exact sequence.
#[derive(Debug, Clone)]
pub struct Workers {
    free_at: Vec<Instant>,
}

impl Workers {
    /// `n` workers, all free at `now` (at least one).
    pub fn new(n: usize, now: Instant) -> Workers {
        Workers {
            free_at: vec![now; n.max(1)],
        }
    }

    /// A request arriving at `now` that takes `work`: when it is done.
    pub fn admit(&mut self, now: Instant, work: Duration) -> Instant {
        let mut first = 0;
        for (i, t) in self.free_at.iter().enumerate() {
            if *t < self.free_at[first] {
                first = i;
            }
        }
        let done = self.free_at[first].max(now) + work;
        self.free_at[first] = done;
        done
    }
}

pub(crate) struct ThreadState {
    pub(crate) spec: UpstreamSpec,
    /// With a concurrency limit, the workers of this thread.
    workers: Option<RefCell<Workers>>,
    answers: Answers,
    pub(crate) stats: Arc<UpstreamStats>,
    rng: RefCell<SmallRng>,
    stop: Arc<AtomicBool>,
}

fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Start an upstream on its own threads.
pub fn spawn(spec: UpstreamSpec) -> anyhow::Result<UpstreamHandle> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&spec.error_rate),
        "error rate {} is outside 0 to 1",
        spec.error_rate
    );
    let threads = spec.threads.max(1);
    let first = bind(spec.listen, threads > 1)
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", spec.listen))?;
    let addr = first.local_addr()?;
    let mut listeners = vec![first];
    for _ in 1..threads {
        listeners.push(bind(addr, true)?);
    }
    let stats = Arc::new(UpstreamStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::with_capacity(threads);
    for (t, listener) in listeners.into_iter().enumerate() {
        let state_parts = (spec.clone(), stats.clone(), stop.clone());
        let handle = std::thread::Builder::new()
            .name(format!("upstream-{t}"))
            .spawn(move || {
                let (spec, stats, stop) = state_parts;
                let driver = spec.driver;
                let state = Rc::new(ThreadState {
                    answers: Answers::new(&spec),
                    workers: (spec.concurrency > 0)
                        .then(|| RefCell::new(Workers::new(spec.concurrency, Instant::now()))),
                    rng: RefCell::new(SmallRng::seed_from_u64(spec.seed.wrapping_add(t as u64))),
                    spec,
                    stats,
                    stop,
                });
                let result = block_on(driver, move || accept_loop(listener, state));
                if let Err(e) = result {
                    eprintln!("upstream thread {t}: cannot start a runtime: {e}");
                }
            })?;
        handles.push(handle);
    }
    Ok(UpstreamHandle {
        addr,
        stats,
        stop,
        threads: handles,
    })
}

async fn accept_loop(listener: std::net::TcpListener, state: Rc<ThreadState>) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upstream: cannot register listener: {e}");
            return;
        }
    };
    let mut tasks = Vec::new();
    // One accept stays armed across the stop checks: it is dropped only when the loop
    // ends. Dropping an accept that io_uring is running cancels it, but a connection that
    // arrives before the cancel lands is accepted all the same and its descriptor is
    // thrown away with the ignored result: the client's handshake completed, its request
    // is never read, and a proxy in front waits for its own timeout (nginx answered 504
    // after 10 s once in a loaded run).
    let mut accept = Box::pin(listener.accept());
    while !state.stop.load(Ordering::Relaxed) {
        let accepted = match monoio::time::timeout(state.spec.stop_poll, accept.as_mut()).await {
            Ok(accepted) => accepted,
            Err(_) => continue,
        };
        accept = Box::pin(listener.accept());
        match accepted {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                state.stats.connections.fetch_add(1, Ordering::Relaxed);
                tasks.push(monoio::spawn(serve_connection(stream, state.clone())));
                if tasks.len() > 1024 {
                    tasks.retain(|t: &monoio::task::JoinHandle<()>| !t.is_finished());
                }
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
    // Dropping the runtime after this returns ends the connection tasks.
}

/// Read more into `buf`; `false` at end of stream or on error. Connection tasks need no
/// stop check: they end when their runtime is dropped after the accept loop returns.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut owned = std::mem::take(buf);
    if owned.capacity() - owned.len() < READ_BUFFER / 4 {
        owned.reserve(READ_BUFFER);
    }
    let len = owned.len();
    let (result, slice) = stream.read(owned.slice_mut(len..)).await;
    *buf = slice.into_inner();
    matches!(result, Ok(n) if n > 0)
}

/// Count a request and draw its fate, in arrival order: when its answer is due (`None`:
/// at once) and whether it fails.
pub(crate) fn admit(state: &ThreadState) -> (Option<Instant>, bool) {
    let seq = state.stats.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let (delay, fail) = {
        let mut rng = state.rng.borrow_mut();
        let delay = state.spec.latency.sample(&mut *rng);
        let fail = state.spec.error_rate > 0.0 && rng.gen::<f64>() < state.spec.error_rate;
        (delay, fail)
    };
    let delay = match state.spec.stall {
        Some((k, stall)) if k == seq => delay + stall,
        _ => delay,
    };
    let done = match &state.workers {
        Some(workers) => {
            let now = Instant::now();
            let done = workers.borrow_mut().admit(now, delay);
            (done > now).then_some(done)
        }
        None if !delay.is_zero() => Some(Instant::now() + delay),
        None => None,
    };
    (done, fail)
}

/// Wait until `at` (at once for `None`).
pub(crate) async fn wait_until(at: Option<Instant>) {
    if let Some(at) = at {
        monoio::time::sleep_until(monoio::time::Instant::from_std(at)).await;
    }
}

async fn serve_connection(mut stream: TcpStream, state: Rc<ThreadState>) {
    let mut buf = Vec::with_capacity(READ_BUFFER);
    // HTTP/2 with prior knowledge starts with its preface; HTTP/1.1 differs at the first
    // byte.
    let preface = crate::upstream_h2::PREFACE;
    while buf.len() < preface.len() && preface.starts_with(&buf) {
        if !fill(&mut stream, &mut buf).await {
            return;
        }
    }
    if buf.starts_with(preface) {
        return crate::upstream_h2::serve(stream, buf, state).await;
    }
    loop {
        let head = loop {
            match http::parse_request(&buf) {
                Parse::Complete(h) => break h,
                Parse::Invalid(_) => {
                    let bad = Bytes::from_static(
                        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    let _ = stream.write_all(bad).await;
                    return;
                }
                Parse::Partial => {
                    if !fill(&mut stream, &mut buf).await {
                        return;
                    }
                }
            }
        };
        buf.drain(..head.head_len);
        if !skip_body(&mut stream, &mut buf, head.framing).await {
            return;
        }
        let response = if head.path == STATS_PATH {
            let body = serde_json::to_vec(&state.stats.snapshot()).unwrap_or_default();
            answer(200, "OK", &state.spec.name, &body, head.close)
        } else {
            let (done, fail) = admit(&state);
            wait_until(done).await;
            let a = &state.answers;
            if fail {
                state.stats.errors.fetch_add(1, Ordering::Relaxed);
                if head.close {
                    a.error_close.clone()
                } else {
                    a.error.clone()
                }
            } else if head.close {
                a.ok_close.clone()
            } else {
                a.ok.clone()
            }
        };
        let response = if head.is_head {
            // The same head, without the body.
            let end = response
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map_or(response.len(), |p| p + 4);
            response.slice(..end)
        } else {
            response
        };
        let (result, _) = stream.write_all(response).await;
        if result.is_err() || head.close {
            return;
        }
    }
}

async fn skip_body(stream: &mut TcpStream, buf: &mut Vec<u8>, framing: BodyFraming) -> bool {
    match framing {
        BodyFraming::None | BodyFraming::UntilClose => true,
        BodyFraming::Length(mut left) => loop {
            let take = (buf.len() as u64).min(left) as usize;
            buf.drain(..take);
            left -= take as u64;
            if left == 0 {
                return true;
            }
            if !fill(stream, buf).await {
                return false;
            }
        },
        BodyFraming::Chunked => {
            let mut scanner = ChunkScanner::new();
            loop {
                let Ok(scanned) = scanner.scan(buf) else {
                    return false;
                };
                buf.drain(..scanned.consumed);
                if scanned.done {
                    return true;
                }
                if !fill(stream, buf).await {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_specs_parse() {
        assert_eq!(
            "fixed:30".parse::<LatencyDist>(),
            Ok(LatencyDist::Fixed(Duration::from_millis(30)))
        );
        assert_eq!(
            "2.5".parse::<LatencyDist>(),
            Ok(LatencyDist::Fixed(Duration::from_micros(2500)))
        );
        assert_eq!(
            "uniform:1-3".parse::<LatencyDist>(),
            Ok(LatencyDist::Uniform(
                Duration::from_millis(1),
                Duration::from_millis(3)
            ))
        );
        assert!("uniform:3-1".parse::<LatencyDist>().is_err());
        assert!("exp:-1".parse::<LatencyDist>().is_err());
        assert!("gauss:1".parse::<LatencyDist>().is_err());
    }

    #[test]
    fn busy_workers_queue_requests_in_arrival_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = Workers::new(2, t0);
        // Two start at once; the third waits for the first free worker, the fourth for
        // the next one.
        assert_eq!(w.admit(t0, ms(10)), t0 + ms(10));
        assert_eq!(w.admit(t0, ms(4)), t0 + ms(4));
        assert_eq!(w.admit(t0 + ms(1), ms(10)), t0 + ms(14));
        assert_eq!(w.admit(t0 + ms(2), ms(1)), t0 + ms(11));
        // Once idle, a request starts when it arrives.
        assert_eq!(w.admit(t0 + ms(50), ms(3)), t0 + ms(53));
        // Zero workers asked for still means one.
        let mut one = Workers::new(0, t0);
        assert_eq!(one.admit(t0, ms(5)), t0 + ms(5));
        assert_eq!(one.admit(t0, ms(5)), t0 + ms(10));
    }

    #[test]
    fn samples_stay_in_range() {
        let mut rng = SmallRng::seed_from_u64(7);
        let u = LatencyDist::Uniform(Duration::from_millis(1), Duration::from_millis(2));
        for _ in 0..1000 {
            let d = u.sample(&mut rng);
            assert!(d >= Duration::from_millis(1) && d <= Duration::from_millis(2));
        }
        let e = LatencyDist::Exponential {
            mean: Duration::from_millis(1),
        };
        let total: Duration = (0..10_000).map(|_| e.sample(&mut rng)).sum();
        // Seeded: the same 10,000 draws every time.
        let again: Duration = {
            let mut rng = SmallRng::seed_from_u64(7);
            for _ in 0..1000 {
                u.sample(&mut rng);
            }
            (0..10_000).map(|_| e.sample(&mut rng)).sum()
        };
        assert_eq!(total, again);
    }
}
