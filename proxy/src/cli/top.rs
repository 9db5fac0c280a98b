//! `coremesh top`: a live terminal view of a running proxy, like `linkerd viz stat`. Every
//! interval it reads the admin server's `/endpoints` (plain HTTP/1.1 over `std::net`) and
//! shows, per service and per endpoint: request rate (requests between two reads divided
//! by the time between them), success rate, latency p50/p99 (the merged window the
//! balancer scores with), requests in flight and state (available / ejected / half-open).
//!
//! The pieces are separate so they can be tested: [`fetch`] reads one [`Sample`], [`rows`]
//! turns two samples into numbers, [`render`] into the text table, and [`run`] loops (or,
//! with `--once`, takes two samples one interval apart, prints one table and exits).

use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The admin address `coremesh top` reads when none is given.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:4191";
/// Connecting to the admin server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One read of `/endpoints`: the admin server waits up to 2 s for the cores' reports.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest admin answer read (thousands of endpoints take a few MiB of JSON).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// ANSI: cursor home, clear the screen.
const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J";

/// `coremesh top [--admin ADDR] [--interval-ms N] [--once]`.
#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// The proxy's admin server, `host:port`.
    #[arg(long, default_value = DEFAULT_ADMIN)]
    pub admin: String,
    /// Time between two reads, in milliseconds (rates are computed over it).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub interval_ms: u64,
    /// Take two reads one interval apart, print one table and exit.
    #[arg(long)]
    pub once: bool,
}

/// One endpoint as `/endpoints` reports it (fields `top` does not show are ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EndpointStat {
    pub address: String,
    /// "available", "ejected" or "half-open".
    pub state: String,
    #[serde(default)]
    pub ejected_for_ms: Option<u64>,
    #[serde(default)]
    pub p50_ms: Option<f64>,
    #[serde(default)]
    pub p99_ms: Option<f64>,
    pub in_flight: u64,
    /// Outcomes recorded since the endpoint joined (a counter).
    pub requests: u64,
    /// Failures among `requests` (a counter).
    pub failures: u64,
}

/// One read of `/endpoints`: each service's endpoints, services by name.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    pub services: BTreeMap<String, Vec<EndpointStat>>,
}

impl Sample {
    /// Parse the JSON body of `/endpoints`.
    pub fn parse(json: &str) -> anyhow::Result<Sample> {
        let services: BTreeMap<String, Vec<EndpointStat>> =
            serde_json::from_str(json).context("/endpoints is not the JSON expected")?;
        Ok(Sample { services })
    }
}

/// Read `/endpoints` from the admin server at `admin` (`host:port`).
pub fn fetch(admin: &str) -> anyhow::Result<Sample> {
    let body = http_get(admin, "/endpoints")?;
    Sample::parse(&body)
}

/// `GET path` on `addr` with `Connection: close`; the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve admin address {addr:?}"))?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(format!("{a}: {e}")),
        }
    }
    let Some(mut stream) = stream else {
        bail!(
            "cannot connect to the admin server at {addr}: {}",
            last_error.unwrap_or_else(|| "no address".into())
        );
    };
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\n\
         User-Agent: coremesh-top/{}\r\nConnection: close\r\n\r\n",
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("sending GET {path} to {addr}"))?;
    let mut raw = Vec::with_capacity(16 * 1024);
    (&mut stream)
        .take(MAX_RESPONSE_BYTES + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("reading the answer to GET {path} from {addr}"))?;
    if raw.len() as u64 > MAX_RESPONSE_BYTES {
        bail!("GET {path} on {addr}: answer larger than {MAX_RESPONSE_BYTES} bytes");
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            bail!("GET {path} on {addr}: the connection closed before a whole answer")
        }
        Err(e) => bail!("GET {path} on {addr}: not an HTTP answer: {e}"),
    };
    let status = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let mut body = &raw[head_len..];
    if let Some(n) = length {
        if body.len() < n {
            bail!(
                "GET {path} on {addr}: body cut short ({} of {n} bytes)",
                body.len()
            );
        }
        body = &body[..n];
    }
    let body = String::from_utf8_lossy(body).into_owned();
    if status != 200 {
        bail!("GET {path} on {addr} answered {status}: {}", body.trim());
    }
    Ok(body)
}

/// One line of the view: a service (`endpoint: None`, figures summed over its endpoints)
/// or one of its endpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub service: String,
    pub endpoint: Option<String>,
    /// Endpoint: its state (`ejected 12.3s` with the time left); service: `N/M available`.
    pub state: String,
    /// Requests per second over the interval; `None` without a previous sample.
    pub rate: Option<f64>,
    /// Share of requests that succeeded (0 to 1): over the interval when there is a previous
    /// sample, since the endpoint joined when there is none; `None` when there were no
    /// requests to judge by.
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: u64,
    /// Requests since the endpoint joined.
    pub requests: u64,
}

/// Growth of a counter between two reads; a counter that went down was reset (the
/// endpoint left and came back, or the proxy restarted), so all of it is new.
fn delta(prev: Option<u64>, cur: u64) -> u64 {
    match prev {
        Some(p) if p <= cur => cur - p,
        _ => cur,
    }
}

fn share(ok: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| ok as f64 / total as f64)
}

/// The rows for `cur`, with rates and success over `interval` when `prev` is given.
pub fn rows(prev: Option<&Sample>, cur: &Sample, interval: Duration) -> Vec<Row> {
    let seconds = interval.as_secs_f64();
    let mut out = Vec::new();
    for (service, endpoints) in &cur.services {
        let before = prev.map(|p| p.services.get(service.as_str()));
        let mut endpoint_rows = Vec::with_capacity(endpoints.len());
        let (mut d_requests, mut d_failures) = (0u64, 0u64);
        let (mut total_requests, mut total_failures, mut in_flight) = (0u64, 0u64, 0u64);
        let mut available = 0;
        for e in endpoints {
            // With a previous sample, an endpoint it lacks is new: everything it counts is
            // from this interval.
            let old = before.map(|list| {
                list.and_then(|l| l.iter().find(|o| o.address == e.address))
                    .map(|o| (o.requests, o.failures))
            });
            let (rate, success) = match old {
                Some(old) => {
                    let dr = delta(old.map(|o| o.0), e.requests);
                    let df = delta(old.map(|o| o.1), e.failures).min(dr);
                    d_requests += dr;
                    d_failures += df;
                    let rate = (seconds > 0.0).then(|| dr as f64 / seconds);
                    (rate, share(dr - df, dr))
                }
                None => (
                    None,
                    share(e.requests - e.failures.min(e.requests), e.requests),
                ),
            };
            total_requests += e.requests;
            total_failures += e.failures.min(e.requests);
            in_flight += e.in_flight;
            if e.state == "available" {
                available += 1;
            }
            let state = match (e.state.as_str(), e.ejected_for_ms) {
                ("ejected", Some(ms)) => format!("ejected {:.1}s", ms as f64 / 1000.0),
                (s, _) => s.to_string(),
            };
            endpoint_rows.push(Row {
                service: service.clone(),
                endpoint: Some(e.address.clone()),
                state,
                rate,
                success,
                p50_ms: e.p50_ms,
                p99_ms: e.p99_ms,
                in_flight: e.in_flight,
                requests: e.requests,
            });
        }
        let (rate, success) = if prev.is_some() {
            (
                (seconds > 0.0).then(|| d_requests as f64 / seconds),
                share(d_requests - d_failures, d_requests),
            )
        } else {
            (None, share(total_requests - total_failures, total_requests))
        };
        out.push(Row {
            service: service.clone(),
            endpoint: None,
            state: format!("{available}/{} available", endpoints.len()),
            rate,
            success,
            p50_ms: None,
            p99_ms: None,
            in_flight,
            requests: total_requests,
        });
        out.extend(endpoint_rows);
    }
    out
}

fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms >= 1000.0 => format!("{:.2}s", ms / 1000.0),
        Some(ms) if ms >= 100.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{ms:.1}ms"),
    }
}

/// The table for `cur`: a line per service, then its endpoints indented under it; rates and
/// success over `interval` when `prev` is given (see [`Row`]).
pub fn render(prev: Option<&Sample>, cur: &Sample, interval: Duration) -> String {
    let rows = rows(prev, cur, interval);
    if rows.is_empty() {
        return "no services\n".to_string();
    }
    const HEADER: [&str; 8] = [
        "SERVICE / ENDPOINT",
        "STATE",
        "RPS",
        "SUCCESS",
        "P50",
        "P99",
        "IN-FLIGHT",
        "REQUESTS",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            [
                match &r.endpoint {
                    None => r.service.clone(),
                    Some(e) => format!("  {e}"),
                },
                r.state.clone(),
                r.rate.map_or_else(|| "-".into(), |v| format!("{v:.1}")),
                r.success
                    .map_or_else(|| "-".into(), |v| format!("{:.2}%", v * 100.0)),
                latency(r.p50_ms),
                latency(r.p99_ms),
                r.in_flight.to_string(),
                r.requests.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |fields: &[&str]| {
        let mut text = String::new();
        for (i, (f, w)) in fields.iter().zip(widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            // Names and states to the left, numbers to the right.
            if i < 2 {
                let _ = write!(text, "{f:<w$}");
            } else {
                let _ = write!(text, "{f:>w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&HEADER);
    for row in &cells {
        let fields: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&fields);
    }
    out
}

/// Run the view until interrupted (or once, with `--once`).
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let interval = Duration::from_millis(args.interval_ms);
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal();
    let title = |elapsed: Duration| {
        format!(
            "coremesh top: admin {}, rates over {:.2}s\n\n",
            args.admin,
            elapsed.as_secs_f64()
        )
    };
    if args.once {
        let first = fetch(&args.admin)?;
        let first_at = Instant::now();
        std::thread::sleep(interval);
        let second = fetch(&args.admin)?;
        let elapsed = first_at.elapsed();
        let frame = title(elapsed) + &render(Some(&first), &second, elapsed);
        return ignore_closed_pipe(stdout.lock().write_all(frame.as_bytes()));
    }
    let mut prev: Option<(Sample, Instant)> = None;
    loop {
        let started = Instant::now();
        let frame = match fetch(&args.admin) {
            Ok(cur) => {
                let at = Instant::now();
                let (previous, elapsed) = match &prev {
                    Some((s, t)) => (Some(s), at.duration_since(*t)),
                    None => (None, interval),
                };
                let frame = title(elapsed) + &render(previous, &cur, elapsed);
                prev = Some((cur, at));
                frame
            }
            Err(e) => {
                prev = None;
                format!("coremesh top: {e:#}\n(retrying every {interval:?}; Ctrl-C quits)\n")
            }
        };
        let mut out = stdout.lock();
        let written = if terminal {
            out.write_all(CLEAR_SCREEN.as_bytes())
                .and_then(|()| out.write_all(frame.as_bytes()))
        } else {
            out.write_all(frame.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
        }
        .and_then(|()| out.flush());
        drop(out);
        if let Err(e) = written {
            // The reader went away (`coremesh top | head`): that ends the view.
            return ignore_closed_pipe(Err(e));
        }
        std::thread::sleep(interval.saturating_sub(started.elapsed()));
    }
}

fn ignore_closed_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn endpoint(address: &str, requests: u64, failures: u64) -> EndpointStat {
        EndpointStat {
            address: address.into(),
            state: "available".into(),
            ejected_for_ms: None,
            p50_ms: None,
            p99_ms: None,
            in_flight: 0,
            requests,
            failures,
        }
    }

    fn sample(services: &[(&str, Vec<EndpointStat>)]) -> Sample {
        Sample {
            services: services
                .iter()
                .map(|(s, e)| (s.to_string(), e.clone()))
                .collect(),
        }
    }

    #[test]
    fn parses_what_the_admin_server_writes() {
        // As proxy/src/report.rs serializes EndpointSummary, extra fields included.
        let json = r#"{
          "users": [
            {"address": "10.0.0.1:8080", "state": "available", "ejected_for_ms": null,
             "p50_ms": 1.5, "p90_ms": 2.0, "p99_ms": 9.25, "in_flight": 2, "requests": 10,
             "failures": 1, "success_rate": 0.9, "ejections": 0},
            {"address": "10.0.0.2:8080", "state": "ejected", "ejected_for_ms": 1500,
             "p50_ms": null, "p90_ms": null, "p99_ms": null, "in_flight": 0, "requests": 5,
             "failures": 5, "success_rate": 0.0, "ejections": 1}
          ],
          "empty": []
        }"#;
        let s = Sample::parse(json).unwrap();
        assert_eq!(s.services.len(), 2);
        assert_eq!(s.services["empty"], vec![]);
        let users = &s.services["users"];
        assert_eq!(users[0].p50_ms, Some(1.5));
        assert_eq!(users[0].p99_ms, Some(9.25));
        assert_eq!((users[0].requests, users[0].failures), (10, 1));
        assert_eq!(users[1].state, "ejected");
        assert_eq!(users[1].ejected_for_ms, Some(1500));
        assert!(Sample::parse("[1]").is_err());
        assert!(Sample::parse(r#"{"s":[{"address":"a"}]}"#).is_err());
    }

    #[test]
    fn without_a_previous_sample_there_is_no_rate_and_success_is_since_the_start() {
        let cur = sample(&[("users", vec![endpoint("a:1", 10, 1), endpoint("b:1", 0, 0)])]);
        let r = rows(None, &cur, Duration::from_secs(1));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].endpoint, None);
        assert_eq!(r[0].state, "2/2 available");
        assert_eq!(r[0].rate, None);
        assert_eq!(r[0].success, Some(0.9));
        assert_eq!(r[0].requests, 10);
        assert_eq!(r[1].endpoint.as_deref(), Some("a:1"));
        assert_eq!((r[1].rate, r[1].success), (None, Some(0.9)));
        assert_eq!((r[2].rate, r[2].success), (None, None));
    }

    #[test]
    fn rates_and_success_are_over_the_interval() {
        let prev = sample(&[("users", vec![endpoint("a:1", 10, 1), endpoint("b:1", 4, 0)])]);
        let cur = sample(&[("users", vec![endpoint("a:1", 30, 6), endpoint("b:1", 4, 0)])]);
        let r = rows(Some(&prev), &cur, Duration::from_secs(2));
        // a: 20 requests in 2 s, 5 of them failed.
        assert_eq!(r[1].rate, Some(10.0));
        assert_eq!(r[1].success, Some(0.75));
        // b: nothing in the interval: rate 0, no success figure.
        assert_eq!((r[2].rate, r[2].success), (Some(0.0), None));
        // The service: the sum.
        assert_eq!((r[0].rate, r[0].success), (Some(10.0), Some(0.75)));
        assert_eq!(r[0].requests, 34);
    }

    #[test]
    fn new_endpoints_and_reset_counters_count_whole() {
        let prev = sample(&[("users", vec![endpoint("a:1", 100, 0)])]);
        let cur = sample(&[
            ("users", vec![endpoint("a:1", 3, 0), endpoint("c:1", 2, 1)]),
            ("fresh", vec![endpoint("d:1", 4, 0)]),
        ]);
        let r = rows(Some(&prev), &cur, Duration::from_secs(1));
        let by = |e: &str| r.iter().find(|r| r.endpoint.as_deref() == Some(e)).unwrap();
        assert_eq!(by("a:1").rate, Some(3.0));
        assert_eq!((by("c:1").rate, by("c:1").success), (Some(2.0), Some(0.5)));
        // A service the previous read lacked: all its counts are new.
        assert_eq!(by("d:1").rate, Some(4.0));
        // Services in name order, each followed by its endpoints.
        let order: Vec<_> = r
            .iter()
            .map(|r| r.endpoint.clone().unwrap_or(r.service.clone()))
            .collect();
        assert_eq!(order, ["fresh", "d:1", "users", "a:1", "c:1"]);
    }

    #[test]
    fn states_and_in_flight() {
        let mut ejected = endpoint("a:1", 5, 5);
        ejected.state = "ejected".into();
        ejected.ejected_for_ms = Some(1234);
        let mut half = endpoint("b:1", 1, 0);
        half.state = "half-open".into();
        half.in_flight = 2;
        let mut ok = endpoint("c:1", 1, 0);
        ok.in_flight = 3;
        let r = rows(
            None,
            &sample(&[("users", vec![ejected, half, ok])]),
            Duration::from_secs(1),
        );
        assert_eq!(r[0].state, "1/3 available");
        assert_eq!(r[0].in_flight, 5);
        assert_eq!(r[1].state, "ejected 1.2s");
        assert_eq!(r[2].state, "half-open");
    }

    #[test]
    fn render_aligns_a_table() {
        let mut a = endpoint("10.0.0.1:8080", 30, 6);
        a.p50_ms = Some(1.25);
        a.p99_ms = Some(1500.0);
        a.in_flight = 1;
        let prev = sample(&[("users", vec![endpoint("10.0.0.1:8080", 10, 1)])]);
        let cur = sample(&[("users", vec![a])]);
        let text = render(Some(&prev), &cur, Duration::from_secs(2));
        let expected = "\
SERVICE / ENDPOINT  STATE           RPS  SUCCESS    P50    P99  IN-FLIGHT  REQUESTS
users               1/1 available  10.0   75.00%      -      -          1        30
  10.0.0.1:8080     available      10.0   75.00%  1.2ms  1.50s          1        30
";
        assert_eq!(text, expected);
        assert_eq!(
            render(None, &Sample::default(), Duration::from_secs(1)),
            "no services\n"
        );
        let once = render(None, &prev, Duration::from_secs(1));
        assert!(
            once.lines().nth(1).unwrap().contains("  -   90.00%"),
            "{once}"
        );
    }

    #[test]
    fn the_example_in_the_observability_doc() {
        let mut a = endpoint("10.0.0.1:8080", 9115, 0);
        a.p50_ms = Some(1.2);
        a.p99_ms = Some(9.8);
        a.in_flight = 3;
        let mut b = endpoint("10.0.0.2:8080", 5, 5);
        b.state = "ejected".into();
        b.ejected_for_ms = Some(1840);
        let prev = sample(&[(
            "users",
            vec![
                endpoint("10.0.0.1:8080", 9074, 0),
                endpoint("10.0.0.2:8080", 5, 5),
            ],
        )]);
        let cur = sample(&[("users", vec![a, b])]);
        let expected = "\
SERVICE / ENDPOINT  STATE           RPS  SUCCESS    P50    P99  IN-FLIGHT  REQUESTS
users               1/2 available  41.0  100.00%      -      -          3      9120
  10.0.0.1:8080     available      41.0  100.00%  1.2ms  9.8ms          3      9115
  10.0.0.2:8080     ejected 1.8s    0.0        -      -      -          0         5
";
        assert_eq!(render(Some(&prev), &cur, Duration::from_secs(1)), expected);
        let doc = include_str!("../../../docs/observability.md");
        assert!(
            doc.contains(expected),
            "docs/observability.md shows this table"
        );
    }

    #[test]
    fn latency_units() {
        assert_eq!(latency(None), "-");
        assert_eq!(latency(Some(0.04)), "0.0ms");
        assert_eq!(latency(Some(12.34)), "12.3ms");
        assert_eq!(latency(Some(250.4)), "250ms");
        assert_eq!(latency(Some(2500.0)), "2.50s");
    }

    /// A one-shot HTTP server on 127.0.0.1 answering `answer` to one connection.
    fn serve_once(answer: &'static [u8]) -> (String, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let thread = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer).unwrap();
            got
        });
        (addr, thread)
    }

    #[test]
    fn fetch_reads_endpoints_over_http() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 99\r\nconnection: close\r\n\r\n\
{\"s\":[{\"address\":\"a:1\",\"state\":\"available\",\"in_flight\":0,\"requests\":3,\"failures\":0,\"p50_ms\":null}]}   ",
        );
        let sample = fetch(&addr).unwrap();
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        assert!(
            request.starts_with("GET /endpoints HTTP/1.1\r\n"),
            "{request}"
        );
        assert_eq!(sample.services["s"][0].requests, 3);
    }

    #[test]
    fn fetch_reports_errors() {
        let (addr, server) = serve_once(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\nconnection: close\r\n\r\nnot found\n",
        );
        let e = fetch(&addr).unwrap_err().to_string();
        server.join().unwrap();
        assert!(e.contains("answered 404: not found"), "{e}");

        let (addr, server) = serve_once(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}");
        let e = fetch(&addr).unwrap_err().to_string();
        server.join().unwrap();
        assert!(e.contains("cut short"), "{e}");

        // Nothing listens there.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let e = fetch(&addr).unwrap_err().to_string();
        assert!(e.contains("cannot connect to the admin server"), "{e}");
    }
}
