//! The load generator: HTTP/1.1 keep-alive clients on `monoio`, one runtime per thread,
//! each thread pinned to a CPU it is given.
//!
//! - **Closed loop**: `connections` connections send back to back until a request count is
//!   spent (split exactly between threads and connections) or a duration has passed.
//! - **Open loop**: a fixed rate; request `i` is meant for `start + i / rate` and latency
//!   is corrected for coordinated omission (see [`crate::schedule`]).
//!
//! Every run is bounded: by its count or duration, and always by `max_duration`, after
//! which requests not yet sent are counted as `not_sent`. A transport error closes the
//! connection; the next request opens a new one. Responses of any status are recorded in
//! the latency histograms; a status of 400 or more also counts as an error of kind
//! `status_NNN`. Responses that name their upstream (`X-Upstream`, set by the built-in
//! upstream and relayed by proxies) are also recorded per upstream, so a run through a
//! balancer reports each endpoint's share and the latency of the requests it answered.

use crate::http::{self, BodyFraming, ChunkScanner, Parse};
use crate::schedule::{clock_start, OpenSchedule};
use crate::stats::{self, LatencySummary};
use bytes::Bytes;
use hdrhistogram::Histogram;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Read buffer per connection.
const READ_BUFFER: usize = 16 * 1024;
/// Pause after a failed connect before the connection tries again, so a refused
/// connection does not spin.
const CONNECT_RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Time given to threads to build their runtimes and connect before an open-loop schedule
/// starts.
const OPEN_LOOP_LEAD: Duration = Duration::from_millis(50);

/// Which I/O driver the generator's runtimes use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// io_uring where the kernel offers it, epoll otherwise.
    Auto,
    Uring,
    Legacy,
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Mode {
    Closed,
    Open { rate: f64 },
}

/// When a run ends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stop {
    Count(u64),
    Duration(Duration),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: SocketAddr,
    pub host: String,
    pub path: String,
    pub connections: usize,
    pub threads: usize,
    /// CPUs to pin thread `t` to (`cpus[t % len]`); empty: no pinning.
    pub cpus: Vec<usize>,
    pub mode: Mode,
    pub stop: Stop,
    pub request_timeout: Duration,
    pub max_duration: Duration,
    pub driver: Driver,
}

impl LoadSpec {
    /// A closed-loop spec with the usual defaults.
    pub fn new(target: SocketAddr, connections: usize, stop: Stop) -> LoadSpec {
        LoadSpec {
            target,
            host: target.to_string(),
            path: "/".to_string(),
            connections,
            threads: 1,
            cpus: Vec::new(),
            mode: Mode::Closed,
            stop,
            request_timeout: Duration::from_secs(10),
            max_duration: Duration::from_secs(300),
            driver: Driver::Auto,
        }
    }
}

/// What a run measured (serialized as the JSON output).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub target: String,
    pub mode: String,
    pub connections: usize,
    pub threads: usize,
    /// Open loop only: requests per second asked for.
    pub target_rate: Option<f64>,
    /// Open loop: requests scheduled; closed loop with a count: the count.
    pub scheduled: u64,
    /// Requests written (or attempted) to a connection.
    pub sent: u64,
    /// Responses read in full, of any status.
    pub responses: u64,
    /// Responses with a status below 400.
    pub ok: u64,
    /// Open loop: sends that waited for a late response on their connection.
    pub queued: u64,
    pub errors_total: u64,
    /// Errors by kind: connect, write, read, closed, timeout, invalid_response, not_sent,
    /// status_NNN.
    pub errors: BTreeMap<String, u64>,
    pub statuses: BTreeMap<u16, u64>,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    /// Latency from the intended send time (open loop, see `schedule`); equal to
    /// `service_latency` in a closed loop.
    pub latency: LatencySummary,
    /// Latency from the actual send.
    pub service_latency: LatencySummary,
    /// `(percentile, microseconds)` of `latency`, for plots.
    pub latency_curve: Vec<[f64; 2]>,
    /// The driver the runtimes used.
    pub driver: String,
    /// Latency (as `latency`) of the responses each upstream answered, by its
    /// `X-Upstream` name; `count` is how many it answered.
    #[serde(default)]
    pub by_upstream: BTreeMap<String, LatencySummary>,
}

/// A report with the histograms it was drawn from.
pub struct LoadOutcome {
    pub report: LoadReport,
    pub latency: Histogram<u64>,
    pub service: Histogram<u64>,
    /// `latency` split by the `X-Upstream` name of the responses.
    pub by_upstream: Vec<(String, Histogram<u64>)>,
}

impl LoadOutcome {
    /// The latency of the responses the named upstreams answered, as one histogram.
    pub fn upstreams_latency(&self, names: &[&str]) -> Histogram<u64> {
        let mut h = stats::new_histogram();
        for (name, part) in &self.by_upstream {
            if names.contains(&name.as_str()) {
                let _ = h.add(part);
            }
        }
        h
    }
}

/// Kinds of failure, as named in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Connect,
    Write,
    Read,
    /// The connection ended before a whole response.
    Closed,
    Timeout,
    InvalidResponse,
    NotSent,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Connect => "connect",
            ErrorKind::Write => "write",
            ErrorKind::Read => "read",
            ErrorKind::Closed => "closed",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidResponse => "invalid_response",
            ErrorKind::NotSent => "not_sent",
        }
    }
}

/// One thread's tallies, merged after the run.
struct Tally {
    latency: Histogram<u64>,
    service: Histogram<u64>,
    sent: u64,
    responses: u64,
    ok: u64,
    queued: u64,
    errors: BTreeMap<String, u64>,
    statuses: BTreeMap<u16, u64>,
    /// Latency by `X-Upstream` name (a handful of names: searched in order).
    by_upstream: Vec<(String, Histogram<u64>)>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: stats::new_histogram(),
            service: stats::new_histogram(),
            sent: 0,
            responses: 0,
            ok: 0,
            queued: 0,
            errors: BTreeMap::new(),
            statuses: BTreeMap::new(),
            by_upstream: Vec::new(),
        }
    }

    fn upstream_histogram(&mut self, name: &[u8]) -> &mut Histogram<u64> {
        let at = match self
            .by_upstream
            .iter()
            .position(|(n, _)| n.as_bytes() == name)
        {
            Some(i) => i,
            None => {
                let n = String::from_utf8_lossy(name).into_owned();
                self.by_upstream.push((n, stats::new_histogram()));
                self.by_upstream.len() - 1
            }
        };
        &mut self.by_upstream[at].1
    }

    fn error(&mut self, kind: &str, n: u64) {
        *self.errors.entry(kind.to_string()).or_insert(0) += n;
    }

    fn response(&mut self, status: u16, upstream: &[u8], latency: Duration, service: Duration) {
        self.responses += 1;
        *self.statuses.entry(status).or_insert(0) += 1;
        if status >= 400 {
            self.error(&format!("status_{status}"), 1);
        } else {
            self.ok += 1;
        }
        stats::record(&mut self.latency, latency);
        stats::record(&mut self.service, service);
        if !upstream.is_empty() {
            stats::record(self.upstream_histogram(upstream), latency);
        }
    }

    fn merge(&mut self, other: Tally) {
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.sent += other.sent;
        self.responses += other.responses;
        self.ok += other.ok;
        self.queued += other.queued;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_insert(0) += v;
        }
        for (k, v) in other.statuses {
            *self.statuses.entry(k).or_insert(0) += v;
        }
        for (name, h) in other.by_upstream {
            let _ = self.upstream_histogram(name.as_bytes()).add(&h);
        }
    }
}

/// One keep-alive client connection that reconnects after a failure.
struct Client {
    target: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// The `X-Upstream` value of the last response (empty when it had none).
    upstream: Vec<u8>,
}

impl Client {
    fn new(target: SocketAddr) -> Client {
        Client {
            target,
            stream: None,
            buf: Vec::with_capacity(READ_BUFFER),
            upstream: Vec::new(),
        }
    }

    async fn connect(&mut self) -> Result<(), ErrorKind> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_addr(self.target)
                .await
                .map_err(|_| ErrorKind::Connect)?;
            let _ = stream.set_nodelay(true);
            self.buf.clear();
            self.stream = Some(stream);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// Read more bytes into the buffer; `Ok(false)` at end of stream.
    async fn fill(&mut self) -> Result<bool, ErrorKind> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(ErrorKind::Closed);
        };
        let mut buf = std::mem::take(&mut self.buf);
        if buf.capacity() - buf.len() < READ_BUFFER / 4 {
            buf.reserve(READ_BUFFER);
        }
        let len = buf.len();
        let (result, slice) = stream.read(buf.slice_mut(len..)).await;
        self.buf = slice.into_inner();
        match result {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(_) => Err(ErrorKind::Read),
        }
    }

    /// Send one request and read its whole response; returns the status.
    async fn exchange(&mut self, request: &Bytes) -> Result<u16, ErrorKind> {
        self.connect().await?;
        let stream = self.stream.as_mut().ok_or(ErrorKind::Closed)?;
        let (result, _) = stream.write_all(request.clone()).await;
        result.map_err(|_| ErrorKind::Write)?;
        let head = loop {
            match http::parse_response(&self.buf, false) {
                Parse::Complete(h) if h.status / 100 == 1 && h.status != 101 => {
                    self.buf.drain(..h.head_len);
                }
                Parse::Complete(h) => break h,
                Parse::Invalid(_) => return Err(ErrorKind::InvalidResponse),
                Parse::Partial => {
                    if !self.fill().await? {
                        return Err(ErrorKind::Closed);
                    }
                }
            }
        };
        self.upstream.clear();
        if let Some((start, end)) = head.upstream {
            self.upstream.extend_from_slice(&self.buf[start..end]);
        }
        self.buf.drain(..head.head_len);
        match head.framing {
            BodyFraming::None => {}
            BodyFraming::Length(mut left) => loop {
                let take = (self.buf.len() as u64).min(left) as usize;
                self.buf.drain(..take);
                left -= take as u64;
                if left == 0 {
                    break;
                }
                if !self.fill().await? {
                    return Err(ErrorKind::Closed);
                }
            },
            BodyFraming::Chunked => {
                let mut scanner = ChunkScanner::new();
                loop {
                    let scanned = scanner
                        .scan(&self.buf)
                        .map_err(|_| ErrorKind::InvalidResponse)?;
                    self.buf.drain(..scanned.consumed);
                    if scanned.done {
                        break;
                    }
                    if !self.fill().await? {
                        return Err(ErrorKind::Closed);
                    }
                }
            }
            BodyFraming::UntilClose => {
                self.buf.clear();
                while self.fill().await? {
                    self.buf.clear();
                }
            }
        }
        if head.close {
            self.reset();
        }
        Ok(head.status)
    }
}

/// What every connection task on a thread shares.
struct ThreadCtx {
    spec: LoadSpec,
    request: Bytes,
    tally: RefCell<Tally>,
    /// Closed loop with a count: requests this thread may still send.
    budget: Cell<Option<u64>>,
    /// Closed loop with a duration: no request starts after this.
    stop_at: Option<Instant>,
    /// Nothing at all starts after this.
    hard_stop: Instant,
    schedule: Option<(OpenSchedule, Instant)>,
}

impl ThreadCtx {
    fn take_budget(&self) -> bool {
        match self.budget.get() {
            None => true,
            Some(0) => false,
            Some(n) => {
                self.budget.set(Some(n - 1));
                true
            }
        }
    }
}

/// One timed exchange; a failure closes the connection and is tallied.
async fn timed_exchange(ctx: &ThreadCtx, client: &mut Client) -> Option<(u16, Instant)> {
    let outcome =
        monoio::time::timeout(ctx.spec.request_timeout, client.exchange(&ctx.request)).await;
    let done = Instant::now();
    match outcome {
        Ok(Ok(status)) => Some((status, done)),
        Ok(Err(kind)) => {
            client.reset();
            ctx.tally.borrow_mut().error(kind.as_str(), 1);
            if kind == ErrorKind::Connect {
                monoio::time::sleep(CONNECT_RETRY_PAUSE).await;
            }
            None
        }
        Err(_) => {
            client.reset();
            ctx.tally.borrow_mut().error(ErrorKind::Timeout.as_str(), 1);
            None
        }
    }
}

async fn closed_connection(ctx: Rc<ThreadCtx>) {
    let mut client = Client::new(ctx.spec.target);
    loop {
        let now = Instant::now();
        if now >= ctx.hard_stop || ctx.stop_at.is_some_and(|s| now >= s) || !ctx.take_budget() {
            break;
        }
        ctx.tally.borrow_mut().sent += 1;
        let sent = Instant::now();
        if let Some((status, done)) = timed_exchange(&ctx, &mut client).await {
            ctx.tally
                .borrow_mut()
                .response(status, &client.upstream, done - sent, done - sent);
        }
    }
    let left = ctx.budget.get().unwrap_or(0);
    if left > 0 && Instant::now() >= ctx.hard_stop {
        ctx.budget.set(Some(0));
        ctx.tally
            .borrow_mut()
            .error(ErrorKind::NotSent.as_str(), left);
    }
}

async fn open_connection(ctx: Rc<ThreadCtx>, connection: usize) {
    let Some((schedule, start)) = ctx.schedule else {
        return;
    };
    let mut client = Client::new(ctx.spec.target);
    // Connect ahead of the schedule, so the first request does not pay for it.
    let _ = monoio::time::timeout(ctx.spec.request_timeout, client.connect()).await;
    let mut free_at = Instant::now();
    let mut requests = schedule.requests_of(connection, ctx.spec.connections);
    while let Some(i) = requests.next() {
        let intended = start + schedule.intended_offset(i);
        if Instant::now() >= ctx.hard_stop {
            let left = 1 + requests.count() as u64;
            ctx.tally
                .borrow_mut()
                .error(ErrorKind::NotSent.as_str(), left);
            break;
        }
        if intended > Instant::now() {
            monoio::time::sleep_until(monoio::time::Instant::from_std(intended)).await;
        }
        let sent = Instant::now();
        let (clock, queued) = clock_start(intended, free_at, sent);
        {
            let mut tally = ctx.tally.borrow_mut();
            tally.sent += 1;
            tally.queued += queued as u64;
        }
        if let Some((status, done)) = timed_exchange(&ctx, &mut client).await {
            ctx.tally
                .borrow_mut()
                .response(status, &client.upstream, done - clock, done - sent);
        }
        free_at = Instant::now();
    }
}

/// Run `make()`'s future on a runtime of `driver` (with timers); returns the driver used.
pub fn block_on<F, Fut>(driver: Driver, make: F) -> std::io::Result<(Fut::Output, &'static str)>
where
    F: FnOnce() -> Fut,
    Fut: Future,
{
    let uring = match driver {
        Driver::Auto => monoio::utils::detect_uring(),
        Driver::Uring => true,
        Driver::Legacy => false,
    };
    if uring {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(1024)
            .enable_timer()
            .build()?;
        Ok((rt.block_on(make()), "uring"))
    } else {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?;
        Ok((rt.block_on(make()), "legacy"))
    }
}

/// Run a load and wait for it to finish.
pub fn run(spec: &LoadSpec) -> anyhow::Result<LoadOutcome> {
    anyhow::ensure!(spec.connections > 0, "connections must be at least 1");
    let threads = spec.threads.clamp(1, spec.connections);
    let request = Bytes::from(http::get_request(&spec.host, &spec.path));
    let began = Instant::now();
    let hard_stop = began + spec.max_duration;
    let (schedule, count) = match (spec.mode, spec.stop) {
        (Mode::Open { rate }, stop) => {
            anyhow::ensure!(rate > 0.0, "rate must be above 0");
            let s = match stop {
                Stop::Count(n) => OpenSchedule { rate, total: n },
                Stop::Duration(d) => OpenSchedule::for_duration(rate, d),
            };
            (Some((s, began + OPEN_LOOP_LEAD)), Some(s.total))
        }
        (Mode::Closed, Stop::Count(n)) => (None, Some(n)),
        (Mode::Closed, Stop::Duration(_)) => (None, None),
    };
    let stop_at = match (spec.mode, spec.stop) {
        (Mode::Closed, Stop::Duration(d)) => Some(began + d),
        _ => None,
    };
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let spec_t = spec.clone();
        let request = request.clone();
        let cpu = (!spec.cpus.is_empty()).then(|| spec.cpus[t % spec.cpus.len()]);
        let budget = match (spec.mode, count) {
            (Mode::Closed, Some(n)) => {
                let base = n / threads as u64;
                Some(base + u64::from((t as u64) < n % threads as u64))
            }
            _ => None,
        };
        let handle = std::thread::Builder::new()
            .name(format!("load-{t}"))
            .spawn(move || -> anyhow::Result<(Tally, &'static str)> {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                }
                let driver = spec_t.driver;
                let connections: Vec<usize> = (t..spec_t.connections).step_by(threads).collect();
                let ctx = Rc::new(ThreadCtx {
                    spec: spec_t,
                    request,
                    tally: RefCell::new(Tally::new()),
                    budget: Cell::new(budget),
                    stop_at,
                    hard_stop,
                    schedule,
                });
                let run_ctx = ctx.clone();
                let ((), used) = block_on(driver, move || async move {
                    let mut tasks = Vec::with_capacity(connections.len());
                    for c in connections {
                        let ctx = run_ctx.clone();
                        if ctx.schedule.is_some() {
                            tasks.push(monoio::spawn(open_connection(ctx, c)));
                        } else {
                            tasks.push(monoio::spawn(closed_connection(ctx)));
                        }
                    }
                    for task in tasks {
                        task.await;
                    }
                })?;
                let ctx = Rc::try_unwrap(ctx)
                    .map_err(|_| anyhow::anyhow!("a connection task outlived its runtime"))?;
                Ok((ctx.tally.into_inner(), used))
            })?;
        handles.push(handle);
    }
    let mut total = Tally::new();
    let mut driver = "";
    for handle in handles {
        let (tally, used) = handle
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.merge(tally);
        driver = used;
    }
    let started = schedule.map(|(_, s)| s).unwrap_or(began);
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    let errors_total = total.errors.values().sum();
    let report = LoadReport {
        target: spec.target.to_string(),
        mode: match spec.mode {
            Mode::Closed => "closed".to_string(),
            Mode::Open { .. } => "open".to_string(),
        },
        connections: spec.connections,
        threads,
        target_rate: match spec.mode {
            Mode::Open { rate } => Some(rate),
            Mode::Closed => None,
        },
        scheduled: count.unwrap_or(total.sent),
        sent: total.sent,
        responses: total.responses,
        ok: total.ok,
        queued: total.queued,
        errors_total,
        errors: total.errors,
        statuses: total.statuses,
        elapsed_s: elapsed,
        throughput_rps: total.responses as f64 / elapsed,
        latency: stats::summarize(&total.latency),
        service_latency: stats::summarize(&total.service),
        latency_curve: stats::percentile_curve(&total.latency),
        driver: driver.to_string(),
        by_upstream: total
            .by_upstream
            .iter()
            .map(|(n, h)| (n.clone(), stats::summarize(h)))
            .collect(),
    };
    Ok(LoadOutcome {
        report,
        latency: total.latency,
        service: total.service,
        by_upstream: total.by_upstream,
    })
}

impl LoadReport {
    /// A few human-readable lines.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let rate = self
            .target_rate
            .map(|r| format!(" at {r:.0} req/s"))
            .unwrap_or_default();
        out.push_str(&format!(
            "{} loop{rate}, {} connections on {} thread(s) ({} driver) -> {}\n",
            self.mode, self.connections, self.threads, self.driver, self.target
        ));
        out.push_str(&format!(
            "  {} sent, {} responses ({} ok) in {:.2} s: {:.0} req/s\n",
            self.sent, self.responses, self.ok, self.elapsed_s, self.throughput_rps
        ));
        let l = &self.latency;
        out.push_str(&format!(
            "  latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}\n",
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us
        ));
        if self.mode == "open" {
            let s = &self.service_latency;
            out.push_str(&format!(
                "  uncorrected: p50 {:.1}  p99 {:.1}  max {:.1}; {} sends queued behind a late response\n",
                s.p50_us, s.p99_us, s.max_us, self.queued
            ));
        }
        if self.errors_total > 0 {
            let kinds: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out.push_str(&format!(
                "  errors: {} ({})\n",
                self.errors_total,
                kinds.join(", ")
            ));
        } else {
            out.push_str("  errors: 0\n");
        }
        out
    }
}
