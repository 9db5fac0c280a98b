//! End-to-end HTTP/2 through the proxy, on both drivers: h2c (prior knowledge) GET and POST
//! with curl and nghttp to an HTTP/1 upstream and to nghttpd (bodies checked byte for byte,
//! one larger than every flow-control window), the upstream seeing the right protocol and
//! authority and no hop-by-hop field; an HTTP/1 client to an h2 endpoint (`protocol = "h2"`)
//! and an h2 client to an HTTP/1 endpoint (`protocol = "http1"`), trailers carried both
//! ways; one client connection's streams served by both cores; GOAWAY after
//! `max_connection_age_ms`.
//!
//! Each client and upstream helper is also run without the proxy (the `direct_*` tests), so
//! a failure through the proxy is the proxy's.

use coremesh_tests::admin::AdminProxy;
use coremesh_tests::client::{chunked_body, Client};
use coremesh_tests::h2mesh::{wait_metrics, MeshConfig};
use coremesh_tests::h2peers::{
    big_body, curl, h2_request, h2load_one_connection, nghttp, nghttp_one_connection, small_body,
    H2Request, Nghttpd, PyH2Server, Seen, Version,
};
use coremesh_tests::proxy::for_each_driver;
use coremesh_tests::upstream::{Action, ReceivedRequest, Response, Upstream};
use coremesh_tests::Driver;
use std::net::SocketAddr;
use std::time::Duration;

/// The authority clients ask for; the upstream must see it (Host or `:authority`).
const AUTHORITY: &str = "svc.example";
/// Hop-by-hop fields an HTTP/1 peer sends, which must not cross the proxy.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "x-hop",
];

/// An HTTP/1 upstream serving nghttpd's files: `GET /big` the big body, another GET the
/// small one, a POST its own body; each response carries the hop-by-hop fields
/// `Connection: x-hop`, `x-hop: 1` and `Keep-Alive: timeout=5`.
fn h1_files() -> Upstream {
    let (small, big) = (small_body(), big_body());
    Upstream::start("h1", move |req: &ReceivedRequest| {
        let body = if req.method == "POST" {
            req.body.clone()
        } else if req.path == "/big" {
            big.clone()
        } else {
            small.clone()
        };
        Action::Respond(
            Response::ok(body)
                .header("Connection", "x-hop")
                .header("x-hop", "1")
                .header("Keep-Alive", "timeout=5"),
        )
    })
}

/// An HTTP/1 upstream answering a chunked echo of the request body with the trailers
/// `x-resp-trailer: t2` and `x-req-trailers: <request trailers, name=value;...>`.
fn h1_trailers() -> Upstream {
    Upstream::start("h1-trailers", |req: &ReceivedRequest| {
        let seen: Vec<String> = req
            .trailers
            .iter()
            .map(|(n, v)| format!("{}={}", n.to_ascii_lowercase(), String::from_utf8_lossy(v)))
            .collect();
        let seen = seen.join(";");
        Action::Respond(
            Response::ok(req.body.clone())
                .chunked(&[("x-resp-trailer", "t2"), ("x-req-trailers", &seen)]),
        )
    })
}

/// A proxy with one service "backend" on `endpoint` (with `service_extra` lines, e.g. its
/// `protocol`) and a route to it.
fn proxy_to(driver: Driver, endpoint: SocketAddr, service_extra: &[&str]) -> AdminProxy {
    MeshConfig::new()
        .service("backend", &[endpoint], service_extra)
        .route("backend", &[])
        .start(driver)
}

/// An HTTP/2 client program.
#[derive(Debug, Clone, Copy)]
enum Tool {
    Curl,
    Nghttp,
}

/// One h2c request with `tool` to `addr` for [`AUTHORITY`]: GET, or POST with `body`.
fn h2c(tool: Tool, addr: SocketAddr, path: &str, body: Option<&[u8]>) -> Seen {
    match tool {
        Tool::Curl => curl(
            Version::H2c,
            addr,
            path,
            &[&format!("Host: {AUTHORITY}")],
            body,
        ),
        Tool::Nghttp => nghttp(
            addr,
            path,
            &[&format!(":authority: {AUTHORITY}"), "te: trailers"],
            &[],
            body,
        ),
    }
}

/// A request of [`get_and_post`]: path, POST body (GET when none), expected answer body.
type Exchange<'a> = (&'static str, Option<&'a [u8]>, Vec<u8>);

/// GET /small, GET /big, and POST /small with the big body (echoed back).
fn exchanges(big: &[u8]) -> [Exchange<'_>; 3] {
    [
        ("/small", None, small_body()),
        ("/big", None, big.to_vec()),
        ("/small", Some(big), big.to_vec()),
    ]
}

/// GET /small, GET /big and POST /small with the big body, with `tool` to `addr`: each
/// answered 200 with exactly the expected bytes, over HTTP/2, with no hop-by-hop field.
fn get_and_post(tool: Tool, addr: SocketAddr) {
    let big = big_body();
    for (path, body, expected) in exchanges(&big) {
        let what = format!(
            "{tool:?} {} {path}",
            if body.is_some() { "POST" } else { "GET" }
        );
        let seen = h2c(tool, addr, path, body);
        assert_eq!(seen.status, 200, "{what}: status");
        if let Tool::Curl = tool {
            assert_eq!(
                seen.version, "2",
                "{what}: curl spoke HTTP/{}",
                seen.version
            );
        }
        assert_eq!(seen.body.len(), expected.len(), "{what}: body length");
        assert!(seen.body == expected, "{what}: body bytes differ");
        for name in HOP_BY_HOP {
            assert_eq!(
                seen.header(name),
                None,
                "{what}: hop-by-hop {name} reached the client"
            );
        }
    }
}

/// What the HTTP/1 upstream must have seen of [`get_and_post`]: three HTTP/1.1 requests
/// for [`AUTHORITY`], the POST with the whole big body.
fn check_h1_upstream_saw(upstream: &Upstream) {
    assert!(
        upstream.wait_for_requests(3, Duration::from_secs(30)),
        "the upstream got {} requests",
        upstream.requests_received()
    );
    let received = upstream.received();
    assert_eq!(received.len(), 3, "requests at the upstream");
    for r in &received {
        assert_eq!(r.version, "HTTP/1.1", "{} {}", r.method, r.path);
        assert_eq!(
            r.header("host").as_deref(),
            Some(AUTHORITY),
            "Host of {}",
            r.path
        );
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "x-hop",
            "upgrade",
        ] {
            assert!(
                !r.has_header(name),
                "hop-by-hop {name} reached the upstream"
            );
        }
    }
    assert_eq!(received[2].method, "POST");
    assert!(
        received[2].body == big_body(),
        "the POST body reached the upstream whole"
    );
}

/// What nghttpd must have logged of [`get_and_post`]: three HTTP/2 requests for
/// [`AUTHORITY`] (`te: trailers` kept when the client sent it), no connection-specific field.
fn check_nghttpd_saw(server: &Nghttpd, tool: Tool) {
    let requests = server.wait_requests(3);
    assert_eq!(requests.len(), 3, "requests at nghttpd: {requests:?}");
    for r in &requests {
        assert_eq!(r.header(":authority"), Some(AUTHORITY), "{r:?}");
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            assert_eq!(r.header(name), None, "{name} reached nghttpd: {r:?}");
        }
        if let Tool::Nghttp = tool {
            assert_eq!(r.header("te"), Some("trailers"), "te: trailers kept: {r:?}");
        }
    }
    assert_eq!(requests[2].header(":method"), Some("POST"));
    assert_eq!(
        requests[2].header("content-length"),
        Some(big_body().len().to_string().as_str())
    );
}

fn through_proxy_to_h1(tool: Tool) {
    for_each_driver(|driver| {
        let upstream = h1_files();
        let proxy = proxy_to(driver, upstream.addr(), &[]);
        get_and_post(tool, proxy.addr());
        check_h1_upstream_saw(&upstream);
    });
}

fn through_proxy_to_nghttpd(tool: Tool) {
    for_each_driver(|driver| {
        let server = Nghttpd::start(&[]);
        // protocol left at its default, preserve: h2 in, h2 out.
        let proxy = proxy_to(driver, server.addr(), &[]);
        get_and_post(tool, proxy.addr());
        check_nghttpd_saw(&server, tool);
    });
}

#[test]
fn curl_h2c_get_and_post_through_the_proxy_to_an_http1_upstream() {
    through_proxy_to_h1(Tool::Curl);
}

#[test]
fn nghttp_get_and_post_through_the_proxy_to_an_http1_upstream() {
    through_proxy_to_h1(Tool::Nghttp);
}

#[test]
fn curl_h2c_get_and_post_through_the_proxy_to_nghttpd() {
    through_proxy_to_nghttpd(Tool::Curl);
}

#[test]
fn nghttp_get_and_post_through_the_proxy_to_nghttpd() {
    through_proxy_to_nghttpd(Tool::Nghttp);
}

/// Self-check: the same clients and checks straight to nghttpd pass.
#[test]
fn direct_curl_and_nghttp_to_nghttpd() {
    for tool in [Tool::Curl, Tool::Nghttp] {
        let server = Nghttpd::start(&[]);
        get_and_post(tool, server.addr());
        check_nghttpd_saw(&server, tool);
    }
}

/// Self-check: the HTTP/1 upstream and its checks, with curl over HTTP/1.1 and no proxy
/// (its hop-by-hop response fields do reach a direct client: that part is the proxy's job).
#[test]
fn direct_curl_http1_to_the_http1_upstream() {
    let upstream = h1_files();
    let big = big_body();
    for (path, body, expected) in exchanges(&big) {
        let seen = curl(
            Version::H1,
            upstream.addr(),
            path,
            &[&format!("Host: {AUTHORITY}")],
            body,
        );
        assert_eq!((seen.status, seen.version.as_str()), (200, "1.1"));
        assert!(seen.body == expected, "{path}: body bytes");
        assert_eq!(seen.header("x-hop"), Some("1"));
    }
    check_h1_upstream_saw(&upstream);
}

/// An HTTP/1.1 POST of the big body, chunked with the trailer `x-req-trailer: r1`, with
/// hop-by-hop fields and `TE: trailers`, to `addr`.
fn h1_post_with_trailer(addr: SocketAddr) -> coremesh_tests::RawResponse {
    let body = chunked_body(&big_body(), 16 * 1024, &[("x-req-trailer", "r1")]);
    let mut client = Client::connect(addr).expect("connect");
    client
        .send_request(
            "POST",
            "/echo",
            &[
                ("Host", AUTHORITY),
                ("Transfer-Encoding", "chunked"),
                ("TE", "trailers"),
                ("Connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
            ],
            Some(&body),
        )
        .expect("send the request");
    client.read_response(false).expect("read the response")
}

/// An h2 upstream's field list from a `request` event of the Python upstream.
fn event_fields(event: &serde_json::Value) -> Vec<(String, String)> {
    event["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap_or("").to_string(),
                        h[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn http1_client_to_an_h2_endpoint_with_trailers_both_ways() {
    for_each_driver(|driver| {
        // The Python upstream echoes the body, then sends as trailers `x-body-len` and the
        // request's own trailers.
        let server = PyH2Server::start("echo");
        let proxy = proxy_to(driver, server.addr(), &["protocol = \"h2\""]);
        let r = h1_post_with_trailer(proxy.addr());
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert!(r.body == big_body(), "the echoed body, byte for byte");
        assert_eq!(
            r.trailer("x-req-trailer").as_deref(),
            Some("r1"),
            "the chunked trailer went up as an HTTP/2 trailer and came back as a chunked one"
        );
        assert_eq!(
            r.trailer("x-body-len"),
            Some(big_body().len().to_string()),
            "the upstream's HTTP/2 trailer reaches the HTTP/1 client"
        );
        let events = server.events();
        let request = events
            .iter()
            .find(|e| e["event"] == "request")
            .expect("the request reached the h2 upstream");
        let fields = event_fields(request);
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(field(":authority"), Some(AUTHORITY), "{fields:?}");
        assert_eq!(field(":method"), Some("POST"), "{fields:?}");
        for name in HOP_BY_HOP {
            assert_eq!(
                field(name),
                None,
                "{name} reached the h2 upstream: {fields:?}"
            );
        }
    });
}

/// Self-check of the HTTP/1 trailer request and its reading: straight to the HTTP/1
/// trailer upstream, which reports the trailers it got and sends its own.
#[test]
fn direct_http1_trailers_to_the_http1_trailer_upstream() {
    let upstream = h1_trailers();
    let r = h1_post_with_trailer(upstream.addr());
    assert_eq!(r.status, 200);
    assert!(r.body == big_body());
    assert_eq!(
        r.trailer("x-req-trailers").as_deref(),
        Some("x-req-trailer=r1")
    );
    assert_eq!(r.trailer("x-resp-trailer").as_deref(), Some("t2"));
}

#[test]
fn http1_client_get_and_post_to_nghttpd_with_protocol_h2() {
    for_each_driver(|driver| {
        let server = Nghttpd::start(&[]);
        let proxy = proxy_to(driver, server.addr(), &["protocol = \"h2\""]);
        let big = big_body();
        for (path, body, expected) in exchanges(&big) {
            let seen = curl(
                Version::H1,
                proxy.addr(),
                path,
                &[&format!("Host: {AUTHORITY}")],
                body,
            );
            assert_eq!((seen.status, seen.version.as_str()), (200, "1.1"), "{path}");
            assert!(seen.body == expected, "{path}: body bytes");
        }
        check_nghttpd_saw(&server, Tool::Curl);
    });
}

/// Self-check of the trailer reading in nghttpd's log: nghttp sends a trailer straight to it.
#[test]
fn direct_nghttp_trailer_is_logged_by_nghttpd() {
    let server = Nghttpd::start(&["--trailer=x-resp-trailer: t1"]);
    let seen = nghttp(
        server.addr(),
        "/small",
        &[],
        &["x-req-trailer: r1"],
        Some(&big_body()),
    );
    assert_eq!(seen.status, 200);
    assert!(seen.body == big_body());
    let requests = server.wait_requests(1);
    assert_eq!(
        requests[0].trailer("x-req-trailer"),
        Some("r1"),
        "{requests:?}"
    );
}

/// The h2 request of the trailer tests: POST of the big body with a trailer.
fn h2_post_with_trailer(addr: SocketAddr) -> coremesh_tests::h2peers::H2Answer {
    let big = big_body();
    h2_request(
        addr,
        &H2Request {
            method: "POST",
            path: "/echo",
            authority: Some(AUTHORITY),
            headers: vec![("te", "trailers")],
            body: Some(&big),
            trailers: vec![("x-req-trailer", "r1")],
            ..Default::default()
        },
    )
}

#[test]
fn h2_client_to_an_http1_endpoint_with_trailers_both_ways() {
    for_each_driver(|driver| {
        let upstream = h1_trailers();
        let proxy = proxy_to(driver, upstream.addr(), &["protocol = \"http1\""]);
        let answer = h2_post_with_trailer(proxy.addr());
        assert_eq!(answer.status, Some(200), "{answer:?}");
        assert!(answer.complete, "{answer:?}");
        assert!(answer.body == big_body(), "the echoed body, byte for byte");
        assert_eq!(answer.trailer("x-resp-trailer"), Some("t2"), "{answer:?}");
        assert_eq!(
            answer.trailer("x-req-trailers"),
            Some("x-req-trailer=r1"),
            "the HTTP/1 upstream got the h2 trailer as a chunked trailer"
        );
        let received = upstream.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].version, "HTTP/1.1");
        assert_eq!(received[0].header("host").as_deref(), Some(AUTHORITY));
        assert!(received[0].body == big_body());
    });
}

/// Self-check: the Python h2 client and the Python h2 echo upstream carry trailers both ways.
#[test]
fn direct_python_h2_client_to_the_python_h2_upstream_carries_trailers() {
    let server = PyH2Server::start("echo");
    let answer = h2_post_with_trailer(server.addr());
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert!(answer.body == big_body());
    assert_eq!(answer.trailer("x-req-trailer"), Some("r1"), "{answer:?}");
    assert_eq!(
        answer.trailer("x-body-len"),
        Some(big_body().len().to_string().as_str())
    );
}

/// Requests of the one-connection test, and streams open at once on its connection.
const ONE_CONNECTION_REQUESTS: u64 = 4_000;
const ONE_CONNECTION_STREAMS: u32 = 64;

#[test]
fn one_h2_connection_is_served_by_both_cores() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("fixed", 200, b"ok");
        let proxy = MeshConfig::new()
            .cores(2)
            .service("backend", &[upstream.addr()], &[])
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
        let (core0, core1) = (
            m.sum(family, &[("core", "0")]),
            m.sum(family, &[("core", "1")]),
        );
        assert_eq!(
            core0 + core1,
            ONE_CONNECTION_REQUESTS as f64,
            "every request counted once"
        );
        assert!(
            core0 > 0.0 && core1 > 0.0,
            "the streams of one connection reached both cores: core 0 {core0}, core 1 {core1}"
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
/// binary, as a user runs it), once it says it listens; and that port.
fn cli_proxy(
    to: SocketAddr,
    extra: &[&str],
    driver: &str,
) -> (coremesh_tests::h2tools::Proc, SocketAddr) {
    use coremesh_tests::h2peers::free_port;
    use coremesh_tests::h2tools::{Proc, START_BOUND};
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = std::process::Command::new(coremesh_tests::netns::coremesh_bin());
    cmd.args(["proxy", "--listen", &listen.to_string()])
        .args(["--to", &to.to_string()])
        .args(extra)
        .args(["--cores", "1", "--driver", driver]);
    let proxy = Proc::spawn(cmd, "coremesh proxy");
    proxy.wait_line("coremesh listening on", START_BOUND);
    (proxy, listen)
}

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
    let upstream = h1_files();
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
            .service("a", &[a.addr()], &[])
            .service("b", &[b1.addr(), b2.addr()], &["balance = \"round-robin\""])
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

/// The sidecar's inbound side takes h2c as HTTP/2 (today it passes it through as opaque
/// TCP, which the request count and `X-Forwarded-For` tell apart).
#[test]
fn sidecar_inbound_accepts_h2c_and_preserves_it_to_the_application() {
    for_each_driver(|driver| {
        let app = Nghttpd::start(&[]);
        let inbound = format!(
            "[inbound]\nlisten = \"127.0.0.1:0\"\napp_port = {}\n",
            app.addr().port()
        );
        let proxy = MeshConfig::new().section(&inbound).start(driver);
        let addr = proxy.inbound_addr().expect("an inbound listener");
        get_and_post(Tool::Curl, addr);
        check_nghttpd_saw(&app, Tool::Curl);
        // Handled as HTTP (not passed through as opaque bytes): each stream is a request,
        // with the client's address added as for HTTP/1.
        for r in app.requests() {
            assert_eq!(
                r.header("x-forwarded-for"),
                Some("127.0.0.1"),
                "the inbound side added X-Forwarded-For (it handled HTTP/2, not opaque TCP): {r:?}"
            );
        }
        let family = "coremesh_requests_total";
        let m = wait_metrics(&proxy, family, "three inbound requests counted", |e| {
            e.sum(family, &[("direction", "inbound")]) >= 3.0
        });
        assert_eq!(m.sum(family, &[("direction", "inbound")]), 3.0);
    });
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
