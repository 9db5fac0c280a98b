//! End-to-end HTTP/2 connections and streams through the proxy, on both drivers: one client
//! connection's streams served by both cores (`--cores 2`, per-core request counts), routed
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
use std::net::SocketAddr;
use std::time::Duration;

/// Requests of the one-connection test, and streams open at once on its connection.
const ONE_CONNECTION_REQUESTS: u64 = 4_000;
const ONE_CONNECTION_STREAMS: u32 = 64;

#[test]
#[ignore = "not built yet: a connection's streams are served on the core that accepted it \
            (docs/http2.md, \"Not yet\"); run with --ignored to see the gap"]
fn one_h2_connection_is_served_by_both_cores() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("fixed", 200, b"ok");
        let proxy = MeshConfig::new()
            .cores(2)
            .service("backend", &[upstream.addr()], &["protocol = \"http1\""])
            .route("backend", &[])
            .start(driver);
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
        let family = "coremesh_core_requests_total";
        let m = wait_metrics(&proxy, family, "per-core counts add up to the load", |e| {
            e.sum(family, &[]) >= ONE_CONNECTION_REQUESTS as f64
        });
        let mut per_core = std::collections::BTreeMap::new();
        for sample in m.matching(family, &[]) {
            let core = sample.labels.get("core").cloned().unwrap_or_default();
            *per_core.entry(core).or_insert(0.0) += sample.value;
        }
        assert_eq!(
            per_core.values().sum::<f64>(),
            ONE_CONNECTION_REQUESTS as f64,
            "every request counted once: {per_core:?}"
        );
        assert_eq!(per_core.len(), 2, "one count per core: {per_core:?}");
        assert!(
            per_core.values().all(|n| *n > 0.0),
            "the streams of one connection reached both cores: {per_core:?}"
        );
    });
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
