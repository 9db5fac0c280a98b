//! End-to-end HTTP/2 connections and streams through the proxy, on both drivers: one client
//! connection's streams served by both cores (`--cores 2`, per-core request counts; handed
//! off streams keep bodies, trailers and resets, and finish during shutdown), the idle
//! timeout, routed
//! and balanced one by one, multiplexed upstream; the SETTINGS the proxy advertises
//! (defaults and `[http2]`), GOAWAY after `max_connection_age_ms`, an upstream's GOAWAY or
//! REFUSED_STREAM before processing retried elsewhere, `coremesh proxy
//! --upstream-protocol h2`.
//!
//! Each client and upstream helper is also run without the proxy (the `direct_*` tests).

use coremesh_tests::h2mesh::{proxy_to, wait_metrics, MeshConfig};
use coremesh_tests::h2peers::{
    curl, h2_request, h2load_one_connection, nghttp_one_connection, small_body, H2Request, Nghttpd,
    PyH2Server, Version, AUTHORITY,
};
use coremesh_tests::proxy::for_each_driver;
use coremesh_tests::upstream::Upstream;
use coremesh_tests::Driver;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Streams held open at once on the one connection (the gated upstream answers none until
/// all arrived), then requests of the load that follows on a new connection.
const HELD_STREAMS: u64 = 32;
const ONE_CONNECTION_REQUESTS: u64 = 4_000;
const ONE_CONNECTION_STREAMS: u32 = 64;
/// How long a gated upstream waits for the rest of its requests: only turns a proxy that
/// never forwards them into a failure.
const GATE_BOUND: Duration = Duration::from_secs(60);

/// An HTTP/1 upstream that answers each request only once `n` requests have arrived (each
/// on its own connection thread; after that, at once).
fn gated_upstream(n: u64) -> Upstream {
    use coremesh_tests::upstream::{Action, Response};
    use std::sync::{Arc, Condvar, Mutex};
    let gate = Arc::new((Mutex::new(0u64), Condvar::new()));
    Upstream::start("gated", move |_| {
        let (arrived, signal) = &*gate;
        let mut count = arrived.lock().unwrap_or_else(|p| p.into_inner());
        *count += 1;
        signal.notify_all();
        let deadline = std::time::Instant::now() + GATE_BOUND;
        while *count < n {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            count = signal
                .wait_timeout(count, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Action::Respond(Response::ok(b"ok".to_vec()))
    })
}

/// `family` per `core` label.
fn per_core(e: &coremesh_tests::prometheus::Exposition, family: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for sample in e.matching(family, &[]) {
        let core = sample.labels.get("core").cloned().unwrap_or_default();
        *out.entry(core).or_insert(0) += sample.value as u64;
    }
    out
}

const CORE_REQUESTS: &str = "coremesh_core_requests_total";
const HANDED_OFF: &str = "coremesh_http2_streams_handed_off_total";

/// The default `spread_streams = "balanced"`: the accepting core serves streams until it
/// has `spread_threshold` (8) more in flight than the other, then hands them over. With
/// all 32 streams held open by the upstream, none finishes before all were placed, so the
/// split does not depend on timing: the first stays on the accepting core (1 in flight,
/// its connection, is not more than 0 + 8), and before the 32nd the accepting core has
/// more than 8 beyond the other unless the other already has some.
#[test]
fn one_h2_connection_is_served_by_both_cores() {
    for_each_driver(|driver| {
        let upstream = gated_upstream(HELD_STREAMS);
        let proxy = MeshConfig::new()
            .cores(2)
            .service("backend", &[upstream.addr()], &["protocol = \"http1\""])
            .route("backend", &[])
            .start(driver);
        let held = h2load_one_connection(proxy.addr(), "/", HELD_STREAMS, HELD_STREAMS as u32);
        assert_eq!(
            (held.succeeded, held.status_2xx),
            (HELD_STREAMS, HELD_STREAMS),
            "h2load, all streams at once on one connection: {held:?}"
        );
        let m = wait_metrics(&proxy, CORE_REQUESTS, "every stream counted", |e| {
            e.sum(CORE_REQUESTS, &[]) >= HELD_STREAMS as f64
        });
        let served = per_core(&m, CORE_REQUESTS);
        let handed = per_core(&m, HANDED_OFF);
        assert_eq!(served.len(), 2, "one count per core: {served:?}");
        assert_eq!(served.values().sum::<u64>(), HELD_STREAMS, "{served:?}");
        assert!(
            served.values().all(|n| *n > 0),
            "the streams of one connection reached both cores: {served:?}"
        );
        // One core accepted the connection and handed streams over; the other served
        // exactly those and handed none.
        let (accepting, other) = match (handed.get("0"), handed.get("1")) {
            (Some(&n), Some(&0)) if n > 0 => ("0", "1"),
            (Some(&0), Some(&n)) if n > 0 => ("1", "0"),
            _ => panic!("one core hands streams off, the other none: {handed:?}"),
        };
        assert_eq!(
            served.get(other),
            handed.get(accepting),
            "core {other} served exactly the streams core {accepting} handed it: \
             served {served:?}, handed off {handed:?}"
        );
        // Then a long run on one new connection: every stream answered and counted once.
        let load = h2load_one_connection(
            proxy.addr(),
            "/",
            ONE_CONNECTION_REQUESTS,
            ONE_CONNECTION_STREAMS,
        );
        assert_eq!(
            (load.succeeded, load.status_2xx),
            (ONE_CONNECTION_REQUESTS, ONE_CONNECTION_REQUESTS),
            "h2load over one connection: {load:?}"
        );
        let total = HELD_STREAMS + ONE_CONNECTION_REQUESTS;
        let m = wait_metrics(&proxy, CORE_REQUESTS, "every stream counted", |e| {
            e.sum(CORE_REQUESTS, &[]) >= total as f64
        });
        let served = per_core(&m, CORE_REQUESTS);
        assert_eq!(
            served.values().sum::<u64>(),
            total,
            "counted once: {served:?}"
        );
    });
}

/// `spread_streams = "always"`: every stream is served by the core that did not accept
/// its connection, and still carries its body and trailers both ways, and a client's
/// reset reaches the upstream.
#[test]
fn handed_off_streams_carry_bodies_trailers_and_resets() {
    for_each_driver(|driver| {
        let echo = PyH2Server::start("echo");
        let hang = PyH2Server::start("hang");
        let proxy = MeshConfig::new()
            .cores(2)
            .http2("spread_streams", "\"always\"")
            .service("echo", &[echo.addr()], &[])
            .service("hang", &[hang.addr()], &[])
            .route_prefix("/echo", "echo", &[])
            .route_prefix("/hang", "hang", &[])
            .start(driver);
        let body = coremesh_tests::h2peers::big_body();
        let answer = h2_request(
            proxy.addr(),
            &H2Request {
                method: "POST",
                path: "/echo",
                body: Some(&body),
                trailers: vec![("x-sum", "42")],
                ..Default::default()
            },
        );
        assert_eq!(answer.status, Some(200), "{answer:?}");
        assert!(answer.complete, "{answer:?}");
        assert!(answer.body == body, "the body came back whole");
        let body_len = body.len().to_string();
        assert_eq!(answer.trailer("x-body-len"), Some(body_len.as_str()));
        assert_eq!(
            answer.trailer("x-sum"),
            Some("42"),
            "request trailers went up"
        );
        // A request the upstream never answers, given up by the client (RST_STREAM
        // CANCEL): the handed-off stream resets its upstream stream too.
        let answer = h2_request(
            proxy.addr(),
            &H2Request {
                path: "/hang",
                wait: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        );
        assert!(answer.timed_out && answer.status.is_none(), "{answer:?}");
        assert!(
            hang.wait_event(Duration::from_secs(30), |e| e["event"] == "reset"
                && e["code"] == 8),
            "the client's reset reached the upstream: {:?}",
            hang.events()
        );
        let m = wait_metrics(&proxy, CORE_REQUESTS, "both streams counted", |e| {
            e.sum(CORE_REQUESTS, &[]) >= 2.0
        });
        let served = per_core(&m, CORE_REQUESTS);
        let handed = per_core(&m, HANDED_OFF);
        assert_eq!(
            handed.values().sum::<u64>(),
            2,
            "both handed off: {handed:?}"
        );
        for (core, other) in [("0", "1"), ("1", "0")] {
            assert_eq!(
                served.get(core),
                handed.get(other),
                "core {core} served what core {other} handed it: {served:?} {handed:?}"
            );
        }
    });
}

/// Streams in flight on the other core when the proxy shuts down.
const SHUTDOWN_STREAMS: u64 = 8;

/// An open-once gate: the flag and the condition it is signalled with.
type Gate = std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>;

/// An HTTP/1 upstream that holds every request until the returned gate is opened (bounded
/// by [`GATE_BOUND`]).
fn held_upstream() -> (Upstream, Gate) {
    use coremesh_tests::upstream::{Action, Response};
    let gate: Gate = Default::default();
    let held = gate.clone();
    let upstream = Upstream::start("held", move |_| {
        let (open, signal) = &*held;
        let deadline = std::time::Instant::now() + GATE_BOUND;
        let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            open = signal
                .wait_timeout(open, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Action::Respond(Response::ok(b"ok".to_vec()))
    });
    (upstream, gate)
}

/// Streams served by the other core finish after shutdown began: the listeners close, the
/// connection gets its GOAWAY, and the core that serves them waits for them.
#[test]
fn handed_off_streams_finish_during_shutdown() {
    for_each_driver(|driver| {
        let (upstream, gate) = held_upstream();
        let proxy = MeshConfig::new()
            .cores(2)
            .http2("spread_streams", "\"always\"")
            .service("backend", &[upstream.addr()], &["protocol = \"http1\""])
            .route("backend", &[])
            .start(driver);
        let addr = proxy.addr();
        let load = std::thread::spawn(move || {
            h2load_one_connection(addr, "/", SHUTDOWN_STREAMS, SHUTDOWN_STREAMS as u32)
        });
        assert!(
            upstream.wait_for_requests(SHUTDOWN_STREAMS as usize, GATE_BOUND),
            "every stream reached the upstream"
        );
        // Dropping the proxy shuts it down gracefully (and returns once it stopped).
        let shutter = std::thread::spawn(move || drop(proxy));
        // Shutdown has begun on both cores once no listener takes a connection.
        let deadline = std::time::Instant::now() + GATE_BOUND;
        while std::net::TcpStream::connect(addr).is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "the listeners never closed"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        {
            let (open, signal) = &*gate;
            *open.lock().unwrap_or_else(|p| p.into_inner()) = true;
            signal.notify_all();
        }
        let load = load.join().expect("h2load thread");
        assert_eq!(
            (load.succeeded, load.status_2xx),
            (SHUTDOWN_STREAMS, SHUTDOWN_STREAMS),
            "every stream in flight was answered: {load:?}"
        );
        assert!(shutter.join().is_ok(), "the proxy stopped");
    });
}

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types (RFC 9113 §6).
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_GOAWAY: u8 = 0x7;

/// What a client that opens an HTTP/2 connection and sends nothing after its SETTINGS
/// sees: the GOAWAY's error code (if one came) and whether the server then closed.
fn idle_client(addr: SocketAddr, bound: Duration) -> (Option<u32>, bool) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(addr).expect("connect to the proxy");
    let mut hello = PREFACE.to_vec();
    hello.extend_from_slice(&[0, 0, 0, FRAME_SETTINGS, 0, 0, 0, 0, 0]);
    sock.write_all(&hello).expect("send the preface");
    let deadline = std::time::Instant::now() + bound;
    let mut buf = Vec::new();
    let mut goaway = None;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return (goaway, false);
        }
        sock.set_read_timeout(Some(left)).expect("read timeout");
        let mut chunk = [0u8; 4096];
        match sock.read(&mut chunk) {
            Ok(0) => return (goaway, true),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (goaway, true),
            // A signal to the test process (the proxy runs in it) is not the server's doing.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return (goaway, false),
        }
        while buf.len() >= 9 {
            let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == FRAME_GOAWAY && len >= 8 {
                goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
    }
}

#[test]
fn an_idle_h2_connection_gets_goaway_and_is_closed() {
    for_each_driver(|driver| {
        let server = PyH2Server::start("hang");
        let proxy = MeshConfig::new()
            .http2("idle_timeout_ms", 300)
            .service("backend", &[server.addr()], &[])
            .route("backend", &[])
            .start(driver);
        assert_eq!(
            idle_client(proxy.addr(), Duration::from_secs(30)),
            (Some(0), true),
            "GOAWAY(NO_ERROR), then the close"
        );
        // A stream open far longer than the idle time keeps its connection: the client
        // gives up on it itself, without having seen a GOAWAY.
        let answer = h2_request(
            proxy.addr(),
            &H2Request {
                path: "/slow",
                wait: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        );
        assert!(answer.timed_out, "{answer:?}");
        assert_eq!(answer.goaway, None, "{answer:?}");
    });
}

/// Self-check of the idle client: nghttpd, which has no idle timeout of its own within the
/// bound, neither sends GOAWAY nor closes.
#[test]
fn direct_idle_client_to_nghttpd() {
    let server = Nghttpd::start(&[]);
    assert_eq!(
        idle_client(server.addr(), Duration::from_secs(1)),
        (None, false)
    );
}

/// Self-check: h2load over one connection straight to nghttpd.
#[test]
fn direct_h2load_one_connection_to_nghttpd() {
    let server = Nghttpd::start(&[]);
    let load = h2load_one_connection(server.addr(), "/small", 500, 16);
    assert_eq!((load.succeeded, load.status_2xx), (500, 500), "{load:?}");
}

#[test]
fn proxy_sends_goaway_after_max_connection_age() {
    for_each_driver(|driver| {
        let server = PyH2Server::start("hang");
        let proxy = MeshConfig::new()
            .http2("max_connection_age_ms", 300)
            .service("backend", &[server.addr()], &[])
            .route("backend", &[])
            .start(driver);
        // A request that is never answered keeps the connection open past its age; the
        // client gives up after a bound far beyond it, so the GOAWAY must come first.
        let answer = h2_request(
            proxy.addr(),
            &H2Request {
                path: "/slow",
                wait: Some(Duration::from_secs(20)),
                ..Default::default()
            },
        );
        assert_eq!(
            answer.goaway,
            Some(0),
            "GOAWAY(NO_ERROR) after the connection age: {answer:?}"
        );
    });
}

/// SETTINGS identifiers (RFC 9113 §6.5.2) and the value each has when not sent.
const MAX_CONCURRENT_STREAMS: u64 = 0x3;
const INITIAL_WINDOW_SIZE: u64 = 0x4;
const MAX_FRAME_SIZE: u64 = 0x5;
const MAX_HEADER_LIST_SIZE: u64 = 0x6;

/// The value of setting `id` in force on a connection to `addr`: the one the server sent,
/// else the protocol's default (none for the two the protocol leaves unlimited).
fn setting_in_force(settings: &std::collections::BTreeMap<u64, u64>, id: u64) -> Option<u64> {
    settings.get(&id).copied().or(match id {
        INITIAL_WINDOW_SIZE => Some(65_535),
        MAX_FRAME_SIZE => Some(16_384),
        _ => None,
    })
}

#[test]
fn proxy_advertises_its_http2_limits_defaults_and_configured() {
    use coremesh_tests::h2attack::server_settings;
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("fixed", 200, b"ok");
        let defaults = proxy_to(driver, upstream.addr(), &[]);
        let s = server_settings(defaults.addr());
        for (id, expected) in [
            (MAX_CONCURRENT_STREAMS, 100),
            (INITIAL_WINDOW_SIZE, 65_535),
            (MAX_FRAME_SIZE, 16_384),
            (MAX_HEADER_LIST_SIZE, 65_536),
        ] {
            assert_eq!(
                setting_in_force(&s, id),
                Some(expected),
                "default of setting {id:#x}: {s:?}"
            );
        }
        drop(defaults);
        let configured = MeshConfig::new()
            .http2("max_concurrent_streams", 7)
            .http2("max_header_list_bytes", 20_000)
            .http2("initial_stream_window_bytes", 131_072)
            .http2("initial_connection_window_bytes", 4_194_304)
            .http2("max_frame_bytes", 32_768)
            .service("backend", &[upstream.addr()], &[])
            .route("backend", &[])
            .start(driver);
        let s = server_settings(configured.addr());
        for (id, expected) in [
            (MAX_CONCURRENT_STREAMS, 7),
            (INITIAL_WINDOW_SIZE, 131_072),
            (MAX_FRAME_SIZE, 32_768),
            (MAX_HEADER_LIST_SIZE, 20_000),
        ] {
            assert_eq!(
                setting_in_force(&s, id),
                Some(expected),
                "configured setting {id:#x}: {s:?}"
            );
        }
    });
}

/// Self-check of the SETTINGS reading: nghttpd advertises its `-m`.
#[test]
fn direct_settings_of_nghttpd() {
    let server = Nghttpd::start(&["-m", "7"]);
    let s = coremesh_tests::h2attack::server_settings(server.addr());
    assert_eq!(
        setting_in_force(&s, MAX_CONCURRENT_STREAMS),
        Some(7),
        "{s:?}"
    );
    assert_eq!(
        setting_in_force(&s, INITIAL_WINDOW_SIZE),
        Some(65_535),
        "{s:?}"
    );
}

/// `coremesh proxy --to <to> <extra> --cores 1 --driver <driver>` on a fresh port (the
/// binary, as a user runs it), once it says it listens; and that port. A port taken by
/// another process between its choice and the bind is retried on another.
fn cli_proxy(
    to: SocketAddr,
    extra: &[&str],
    driver: &str,
) -> (coremesh_tests::h2tools::Proc, SocketAddr) {
    use coremesh_tests::h2peers::free_port;
    use coremesh_tests::h2tools::{Proc, START_BOUND};
    let mut last = String::new();
    for _ in 0..CLI_PORT_ATTEMPTS {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let mut cmd = std::process::Command::new(coremesh_tests::netns::coremesh_bin());
        cmd.args(["proxy", "--listen", &listen.to_string()])
            .args(["--to", &to.to_string()])
            .args(extra)
            .args(["--cores", "1", "--driver", driver]);
        let proxy = Proc::spawn(cmd, "coremesh proxy");
        match proxy.try_wait_line("coremesh listening on", START_BOUND) {
            Ok(_) => return (proxy, listen),
            Err(why) if why.contains("Address already in use") => last = why,
            Err(why) => panic!("{why}"),
        }
    }
    panic!("coremesh proxy found no free port in {CLI_PORT_ATTEMPTS} attempts: {last}");
}

/// Fresh ports [`cli_proxy`] tries.
const CLI_PORT_ATTEMPTS: usize = 5;

/// An HTTP/1.1 GET of /small for [`AUTHORITY`] with curl, answered in full.
fn h1_get_small(addr: SocketAddr, what: &str) {
    let seen = curl(
        Version::H1,
        addr,
        "/small",
        &[&format!("Host: {AUTHORITY}")],
        None,
    );
    assert_eq!((seen.status, seen.version.as_str()), (200, "1.1"), "{what}");
    assert!(seen.body == small_body(), "{what}: body");
}

/// `coremesh proxy --upstream-protocol h2`: an HTTP/1.1 client's request reaches nghttpd
/// as HTTP/2.
#[test]
fn cli_upstream_protocol_h2() {
    let server = Nghttpd::start(&[]);
    for driver in ["uring", "legacy"] {
        let (_proxy, listen) = cli_proxy(server.addr(), &["--upstream-protocol", "h2"], driver);
        h1_get_small(listen, driver);
    }
    let requests = server.wait_requests(2);
    assert!(
        requests
            .iter()
            .all(|r| r.header(":authority") == Some(AUTHORITY)),
        "HTTP/2 requests for the client's Host at nghttpd: {requests:?}"
    );
}

/// Self-check of the binary's harness: `coremesh proxy` without the new flag to the HTTP/1
/// upstream.
#[test]
fn direct_cli_proxy_to_the_http1_upstream() {
    let upstream = Upstream::fixed_named("h1", 200, &small_body());
    for driver in ["uring", "legacy"] {
        let (_proxy, listen) = cli_proxy(upstream.addr(), &[], driver);
        h1_get_small(listen, driver);
    }
    assert_eq!(upstream.requests_received(), 2);
}

#[test]
fn streams_of_one_connection_are_routed_and_balanced_independently() {
    for_each_driver(|driver| {
        let (a, b1, b2) = (
            Upstream::fixed_named("a", 200, b"a"),
            Upstream::fixed_named("b1", 200, b"b"),
            Upstream::fixed_named("b2", 200, b"b"),
        );
        let proxy = MeshConfig::new()
            .service("a", &[a.addr()], &["protocol = \"http1\""])
            .service(
                "b",
                &[b1.addr(), b2.addr()],
                &["balance = \"round-robin\"", "protocol = \"http1\""],
            )
            .route_prefix("/a", "a", &[])
            .route_prefix("/b", "b", &[])
            .start(driver);
        // 10 streams to /a and 10 to /b, all open at once on one connection.
        let statuses = nghttp_one_connection(proxy.addr(), &["/a", "/b"], 10);
        assert_eq!(statuses, vec![200; 20], "every stream answered");
        assert_eq!(
            a.requests_received(),
            10,
            "routed by path, stream by stream"
        );
        assert_eq!(b1.requests_received() + b2.requests_received(), 10);
        assert!(
            b1.requests_received() > 0 && b2.requests_received() > 0,
            "the streams of one connection are balanced one by one: {} and {}",
            b1.requests_received(),
            b2.requests_received()
        );
    });
}

/// Self-check: nghttp's many streams on one connection, straight to nghttpd.
#[test]
fn direct_nghttp_many_streams_to_nghttpd() {
    let server = Nghttpd::start(&[]);
    let statuses = nghttp_one_connection(server.addr(), &["/small", "/big"], 10);
    assert_eq!(statuses, vec![200; 20]);
    let requests = server.wait_requests(20);
    assert!(
        requests.iter().all(|r| r.conn == requests[0].conn),
        "one connection"
    );
}

/// POSTs (not idempotent: only "never processed" makes their retry safe) through a proxy
/// whose service has a `mode` Python upstream first and an echo upstream second, by
/// round-robin: every one answered 200 by the echo, and the first upstream was tried.
fn never_processed_is_retried_elsewhere(driver: Driver, mode: &str) {
    let bad = PyH2Server::start(mode);
    let good = PyH2Server::start("echo");
    let proxy = MeshConfig::new()
        .service(
            "backend",
            &[bad.addr(), good.addr()],
            &["balance = \"round-robin\""],
        )
        .route("backend", &[])
        .start(driver);
    let body = small_body();
    for i in 0..4 {
        let answer = h2_request(
            proxy.addr(),
            &H2Request {
                method: "POST",
                path: "/p",
                body: Some(&body),
                ..Default::default()
            },
        );
        assert_eq!(answer.status, Some(200), "request {i} ({mode}): {answer:?}");
        assert!(answer.body == body, "request {i}: echoed body");
    }
    assert!(
        bad.wait_event(Duration::from_secs(30), |e| e["event"] == "request"),
        "the {mode} upstream was tried"
    );
}

#[test]
fn upstream_goaway_before_processing_is_retried_elsewhere() {
    for_each_driver(|driver| never_processed_is_retried_elsewhere(driver, "goaway"));
}

#[test]
fn upstream_refused_stream_is_retried_elsewhere() {
    for_each_driver(|driver| never_processed_is_retried_elsewhere(driver, "refuse"));
}

/// Self-check of the GOAWAY and REFUSED_STREAM upstreams, straight to them.
#[test]
fn direct_goaway_and_refusing_upstreams() {
    let body = small_body();
    let request = H2Request {
        method: "POST",
        path: "/p",
        body: Some(&body),
        ..Default::default()
    };
    let goaway = PyH2Server::start("goaway");
    let answer = h2_request(goaway.addr(), &request);
    assert_eq!(
        (answer.goaway, answer.status),
        (Some(0), None),
        "{answer:?}"
    );
    let refuse = PyH2Server::start("refuse");
    let answer = h2_request(refuse.addr(), &request);
    assert_eq!((answer.reset, answer.status), (Some(7), None), "{answer:?}");
}

/// Requests of the multiplexing test, client connections, and streams per connection.
const MUX_REQUESTS: u64 = 1_000;
const MUX_CLIENTS: u32 = 4;
const MUX_STREAMS: u32 = 16;

/// Distinct nghttpd connections the logged requests came on.
fn connections_used(requests: &[coremesh_tests::h2peers::LoggedRequest]) -> usize {
    requests
        .iter()
        .map(|r| r.conn)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

#[test]
fn upstream_h2_connections_are_multiplexed() {
    for_each_driver(|driver| {
        let server = Nghttpd::start(&[]);
        let proxy = proxy_to(driver, server.addr(), &[]);
        // 64 streams at once over 4 client connections, on one core, to an endpoint
        // allowing 100 streams per connection: one upstream connection can carry them all.
        let load = coremesh_tests::h2peers::h2load(
            proxy.addr(),
            "/small",
            MUX_REQUESTS,
            MUX_CLIENTS,
            MUX_STREAMS,
        );
        assert_eq!(load.status_2xx, MUX_REQUESTS, "{load:?}");
        let requests = server.wait_requests(MUX_REQUESTS as usize);
        assert_eq!(requests.len() as u64, MUX_REQUESTS);
        let used = connections_used(&requests);
        assert!(
            used <= 2,
            "{MUX_REQUESTS} requests, at most 64 at once, came on {used} upstream connections"
        );
    });
}

/// Self-check of the connection count: h2load's 4 connections straight to nghttpd.
#[test]
fn direct_h2load_connections_counted_by_nghttpd() {
    let server = Nghttpd::start(&[]);
    let load = coremesh_tests::h2peers::h2load(
        server.addr(),
        "/small",
        MUX_REQUESTS,
        MUX_CLIENTS,
        MUX_STREAMS,
    );
    assert_eq!(load.status_2xx, MUX_REQUESTS, "{load:?}");
    let requests = server.wait_requests(MUX_REQUESTS as usize);
    assert_eq!(connections_used(&requests), MUX_CLIENTS as usize);
}
