//! `coremesh demo`: the whole proxy on a built-in setup. Three demo backends start on
//! loopback inside this process — one fast, one slow (+30 ms), one that fails 30% of its
//! requests with 503 — the proxy goes in front of them with a built-in config, client
//! threads drive keep-alive traffic for a while with a progress line, and the result is
//! printed: a per-backend table (what each backend received and returned, its share, and
//! the latency clients saw for the responses it served), the client-side totals, and the
//! client's p99 next to the fast backend's own — within 2× when the balancer keeps the slow
//! and flaky backends out of the tail. `--keep` leaves the proxy and the backends running
//! for `curl` until Ctrl-C.

use coremesh_discovery::{BalanceKind, Config, ServiceConfig, SettingsOverride};
use hdrhistogram::Histogram;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Keep the proxy and backends running after the traffic, for curl, until Ctrl-C.
    #[arg(long)]
    pub keep: bool,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 15)]
    pub seconds: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Proxy listener; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:4140")]
    pub listen: SocketAddr,
    /// Worker cores for the proxy (default: all).
    #[arg(long)]
    pub cores: Option<usize>,
}

/// How a demo backend behaves.
#[derive(Clone, Copy)]
struct Behaviour {
    name: &'static str,
    delay: Duration,
    /// Out of every 10 requests, this many get a 503.
    failures_per_10: u64,
}

const BACKENDS: [Behaviour; 3] = [
    Behaviour {
        name: "fast",
        delay: Duration::from_millis(1),
        failures_per_10: 0,
    },
    Behaviour {
        name: "slow",
        delay: Duration::from_millis(31),
        failures_per_10: 0,
    },
    Behaviour {
        name: "flaky",
        delay: Duration::from_millis(1),
        failures_per_10: 3,
    },
];

/// What a backend saw.
#[derive(Default)]
struct BackendCounters {
    requests: AtomicU64,
    errors: AtomicU64,
}

struct Backend {
    behaviour: Behaviour,
    addr: SocketAddr,
    counters: Arc<BackendCounters>,
}

/// The demo's client-side record.
struct ClientRecord {
    all: Histogram<u64>,
    by_backend: Vec<Histogram<u64>>,
    statuses: std::collections::BTreeMap<u16, u64>,
    transport_errors: u64,
}

impl ClientRecord {
    fn new() -> anyhow::Result<Self> {
        let h = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3);
        Ok(ClientRecord {
            all: h()?,
            by_backend: vec![h()?, h()?, h()?],
            statuses: Default::default(),
            transport_errors: 0,
        })
    }

    fn merge(&mut self, other: &ClientRecord) {
        let _ = self.all.add(&other.all);
        for (a, b) in self.by_backend.iter_mut().zip(&other.by_backend) {
            let _ = a.add(b);
        }
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
    }
}

/// The built-in configuration: one service over the three backends, least-latency choice.
pub fn demo_config(listen: SocketAddr, endpoints: Vec<SocketAddr>, cores: Option<usize>) -> Config {
    let mut config = Config::quick(listen, endpoints.clone());
    config.proxy.cores = cores.unwrap_or(0);
    config.services = vec![ServiceConfig {
        name: "demo".into(),
        endpoints,
        overrides: SettingsOverride {
            balance: Some(BalanceKind::LeastLatency),
            ..SettingsOverride::default()
        },
        ..config.services[0].clone()
    }];
    for route in &mut config.routes {
        route.service = Some("demo".into());
        // Idempotent requests that get a 5xx gateway status are retried on another endpoint.
        route.retry_on = vec![502, 503, 504];
    }
    config
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut backends = Vec::new();
    for behaviour in BACKENDS {
        backends.push(start_backend(behaviour, stop.clone())?);
    }
    let endpoints: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let mut config = demo_config(args.listen, endpoints.clone(), args.cores);
    let proxy = match crate::start(config.clone()) {
        Ok(p) => p,
        Err(e) if args.listen.port() != 0 => {
            eprintln!("{} is busy ({e:#}); using a free port instead", args.listen);
            config.proxy.listen = Some(SocketAddr::new(args.listen.ip(), 0));
            crate::start(config)?
        }
        Err(e) => return Err(e),
    };
    let addr = proxy
        .listen_addr()
        .ok_or_else(|| anyhow::anyhow!("the demo proxy has no listener"))?;
    println!(
        "coremesh demo: proxy on http://{addr} ({} cores, {} driver)",
        proxy.cores(),
        crate::driver_name(proxy.driver())
    );
    for b in &backends {
        println!(
            "  backend {:<5} {}  ({} ms{})",
            b.behaviour.name,
            b.addr,
            b.behaviour.delay.as_millis(),
            if b.behaviour.failures_per_10 > 0 {
                format!(", 503 for {}0% of requests", b.behaviour.failures_per_10)
            } else {
                String::new()
            }
        );
    }
    println!(
        "driving {} connections for {} s ...",
        args.connections, args.seconds
    );

    let record = drive(addr, args.connections, Duration::from_secs(args.seconds))?;
    print_report(&backends, &record);

    if args.keep {
        println!("\nstill running: try `curl -i http://{addr}/`; Ctrl-C to stop");
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        let _ = signals.forever().next();
    }
    proxy.shutdown();
    stop.store(true, Ordering::SeqCst);
    for b in &backends {
        // Wake the accept loop so it sees the stop flag.
        let _ = TcpStream::connect(b.addr);
    }
    Ok(())
}

fn start_backend(behaviour: Behaviour, stop: Arc<AtomicBool>) -> anyhow::Result<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let counters = Arc::new(BackendCounters::default());
    let c = counters.clone();
    std::thread::Builder::new()
        .name(format!("demo-{}", behaviour.name))
        .spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let c = c.clone();
                let stop = stop.clone();
                let _ = std::thread::Builder::new()
                    .name(format!("demo-{}-conn", behaviour.name))
                    .spawn(move || serve_backend(stream, behaviour, &c, &stop));
            }
        })?;
    Ok(Backend {
        behaviour,
        addr,
        counters,
    })
}

fn serve_backend(
    mut stream: TcpStream,
    b: Behaviour,
    counters: &BackendCounters,
    stop: &AtomicBool,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = vec![0u8; 8192];
    let mut have = 0;
    while !stop.load(Ordering::SeqCst) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        let head_len = match req.parse(&buf[..have]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                if have == buf.len() {
                    return;
                }
                match stream.read(&mut buf[have..]) {
                    Ok(0) => return,
                    Ok(n) => {
                        have += n;
                        continue;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(_) => return,
                }
            }
            Err(_) => return,
        };
        let n = counters.requests.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(b.delay);
        let fail = n % 10 < b.failures_per_10;
        let (status, body) = if fail {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            (
                "503 Service Unavailable",
                format!("{} failed this one\n", b.name),
            )
        } else {
            ("200 OK", format!("hello from the {} backend\n", b.name))
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-demo-backend: {}\r\n\r\n{body}",
            body.len(),
            b.name
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
        buf.copy_within(head_len..have, 0);
        have -= head_len;
    }
}

/// Drive keep-alive GETs from `connections` threads for `duration`, with a progress line.
fn drive(addr: SocketAddr, connections: usize, duration: Duration) -> anyhow::Result<ClientRecord> {
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let total = Arc::new(Mutex::new(ClientRecord::new()?));
    let mut threads = Vec::new();
    for _ in 0..connections {
        let (done, sent, failed, total) =
            (done.clone(), sent.clone(), failed.clone(), total.clone());
        threads.push(std::thread::spawn(move || {
            let Ok(mut record) = ClientRecord::new() else {
                return;
            };
            let mut conn: Option<TcpStream> = None;
            let mut buf = vec![0u8; 8192];
            while !done.load(Ordering::Relaxed) {
                let start = Instant::now();
                let result = one_request(addr, &mut conn, &mut buf);
                let micros = start.elapsed().as_micros().max(1) as u64;
                sent.fetch_add(1, Ordering::Relaxed);
                match result {
                    Ok((status, backend)) => {
                        let _ = record.all.record(micros);
                        if let Some(i) = backend {
                            let _ = record.by_backend[i].record(micros);
                        }
                        *record.statuses.entry(status).or_default() += 1;
                        if status >= 500 {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(_) => {
                        record.transport_errors += 1;
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
            if let Ok(mut t) = total.lock() {
                t.merge(&record);
            }
        }));
    }
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1).min(duration.saturating_sub(started.elapsed())));
        let now = sent.load(Ordering::Relaxed);
        eprint!(
            "\r  [{:>3}s] {:>9} requests  {:>7} req/s  {:>5} failed",
            started.elapsed().as_secs(),
            now,
            now - last,
            failed.load(Ordering::Relaxed)
        );
        last = now;
    }
    eprintln!();
    done.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    let record = match Arc::try_unwrap(total) {
        Ok(m) => m
            .into_inner()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?,
        Err(_) => anyhow::bail!("client threads still running"),
    };
    Ok(record)
}

/// One GET over a kept-alive connection; returns the status and which backend answered.
fn one_request(
    addr: SocketAddr,
    conn: &mut Option<TcpStream>,
    buf: &mut [u8],
) -> std::io::Result<(u16, Option<usize>)> {
    if conn.is_none() {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        *conn = Some(s);
    }
    let Some(stream) = conn.as_mut() else {
        return Err(std::io::ErrorKind::NotConnected.into());
    };
    stream.write_all(b"GET /demo HTTP/1.1\r\nHost: demo\r\n\r\n")?;
    let mut have = 0;
    loop {
        if have == buf.len() {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let n = stream.read(&mut buf[have..])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut res = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head_len)) = res.parse(&buf[..have]) else {
            continue;
        };
        let mut length = 0usize;
        let mut backend = None;
        let mut close = false;
        for h in res.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
            } else if h.name.eq_ignore_ascii_case("x-demo-backend") {
                backend = BACKENDS.iter().position(|b| b.name.as_bytes() == h.value);
            } else if h.name.eq_ignore_ascii_case("connection")
                && h.value.eq_ignore_ascii_case(b"close")
            {
                close = true;
            }
        }
        let status = res.code.unwrap_or(0);
        while have < head_len + length {
            if have == buf.len() {
                return Err(std::io::ErrorKind::InvalidData.into());
            }
            let n = stream.read(&mut buf[have..])?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            have += n;
        }
        if close {
            *conn = None;
        }
        return Ok((status, backend));
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> String {
    if h.is_empty() {
        "-".into()
    } else {
        format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// The demo's promise for the client's tail: its p99 at most this many times the fast
/// backend's own (the latency clients saw for the responses the fast backend served).
const TAIL_WITHIN: f64 = 2.0;

/// What one backend saw, for the table.
struct BackendLine {
    name: &'static str,
    addr: SocketAddr,
    requests: u64,
    errors: u64,
}

fn print_report(backends: &[Backend], r: &ClientRecord) {
    let lines: Vec<BackendLine> = backends
        .iter()
        .map(|b| BackendLine {
            name: b.behaviour.name,
            addr: b.addr,
            requests: b.counters.requests.load(Ordering::Relaxed),
            errors: b.counters.errors.load(Ordering::Relaxed),
        })
        .collect();
    print!("{}", report(&lines, r));
}

/// The per-backend table, the client-side totals and whether the balancer kept the slow
/// and flaky backends out of the client's tail.
fn report(lines: &[BackendLine], r: &ClientRecord) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let received: u64 = lines.iter().map(|l| l.requests).sum();
    let _ = writeln!(
        out,
        "\nper backend (requests and errors as the backend saw them; latency as clients saw it):"
    );
    let _ = writeln!(
        out,
        "  {:<6} {:<21} {:>9} {:>7} {:>9} {:>9} {:>8}",
        "name", "endpoint", "requests", "share", "p50 ms", "p99 ms", "errors"
    );
    for (i, l) in lines.iter().enumerate() {
        let share = if received > 0 {
            l.requests as f64 * 100.0 / received as f64
        } else {
            0.0
        };
        let h = &r.by_backend[i.min(r.by_backend.len() - 1)];
        let _ = writeln!(
            out,
            "  {:<6} {:<21} {:>9} {:>6.2}% {:>9} {:>9} {:>8}",
            l.name,
            l.addr.to_string(),
            l.requests,
            share,
            ms(h, 0.5),
            ms(h, 0.99),
            l.errors
        );
    }
    let total = r.all.len() + r.transport_errors;
    let ok: u64 = r
        .statuses
        .iter()
        .filter(|(s, _)| **s < 500)
        .map(|(_, n)| n)
        .sum();
    let _ = writeln!(out, "\nclient side:");
    let _ = writeln!(
        out,
        "  {} requests, {:.2}% succeeded; latency p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
        total,
        if total > 0 {
            ok as f64 * 100.0 / total as f64
        } else {
            0.0
        },
        ms(&r.all, 0.5),
        ms(&r.all, 0.9),
        ms(&r.all, 0.99),
        ms(&r.all, 1.0)
    );
    let statuses: Vec<String> = r
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    let _ = writeln!(
        out,
        "  statuses: {}; transport errors: {}",
        statuses.join(", "),
        r.transport_errors
    );
    let _ = writeln!(out, "{}", tail_line(&r.all, &r.by_backend[0]));
    out
}

/// The client's p99 next to the fast backend's own, and what that says.
fn tail_line(client: &Histogram<u64>, fast: &Histogram<u64>) -> String {
    if client.is_empty() || fast.is_empty() {
        return "  tail: not enough responses to compare the client's p99 with the fast backend's"
            .to_string();
    }
    let c = client.value_at_quantile(0.99) as f64;
    let f = (fast.value_at_quantile(0.99) as f64).max(1.0);
    let ratio = c / f;
    let verdict = if ratio <= TAIL_WITHIN {
        "the balancer kept the slow and flaky backends out of the tail"
    } else {
        "the slow or flaky backend reached the client's tail"
    };
    format!(
        "  tail: client p99 {:.1} ms, fast backend's own p99 {:.1} ms ({ratio:.1}×; at most {TAIL_WITHIN:.0}× means protected): {verdict}",
        c / 1000.0,
        f / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(fast_ms: &[u64], slow_ms: &[u64]) -> ClientRecord {
        let mut r = ClientRecord::new().expect("histograms");
        for &v in fast_ms {
            let _ = r.all.record(v * 1000);
            let _ = r.by_backend[0].record(v * 1000);
            *r.statuses.entry(200).or_default() += 1;
        }
        for &v in slow_ms {
            let _ = r.all.record(v * 1000);
            let _ = r.by_backend[1].record(v * 1000);
            *r.statuses.entry(200).or_default() += 1;
        }
        r
    }

    fn lines(requests: [u64; 3]) -> Vec<BackendLine> {
        BACKENDS
            .iter()
            .zip(requests)
            .enumerate()
            .map(|(i, (b, n))| BackendLine {
                name: b.name,
                addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16)),
                requests: n,
                errors: 0,
            })
            .collect()
    }

    #[test]
    fn the_tail_is_protected_when_the_slow_backend_stays_below_the_client_p99() {
        // 1000 fast answers of 1 ms, 5 slow ones of 31 ms: 0.5% < 1%, the p99 is fast.
        let r = record(&[1; 1000], &[31; 5]);
        let text = report(&lines([1000, 5, 0]), &r);
        assert!(
            text.contains("  slow   127.0.0.1:9001                5   0.50%"),
            "{text}"
        );
        assert!(
            text.contains("tail: client p99 1.0 ms, fast backend's own p99 1.0 ms (1.0×"),
            "{text}"
        );
        assert!(
            text.contains("the balancer kept the slow and flaky backends out of the tail"),
            "{text}"
        );
    }

    #[test]
    fn the_tail_is_lost_when_the_slow_backend_gets_more_than_a_percent() {
        // 2.2% to the slow backend, as measured before the balancer was fixed.
        let r = record(&[1; 978], &[31; 22]);
        let text = report(&lines([978, 22, 0]), &r);
        assert!(
            text.contains("tail: client p99 31.0 ms, fast backend's own p99 1.0 ms (31.0×"),
            "{text}"
        );
        assert!(
            text.contains("the slow or flaky backend reached the client's tail"),
            "{text}"
        );
        let empty = ClientRecord::new().expect("histograms");
        assert!(tail_line(&empty.all, &empty.by_backend[0]).contains("not enough responses"));
    }
}
