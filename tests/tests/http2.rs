//! End-to-end HTTP/2 through the proxy, on both drivers: h2c (prior knowledge) GET and POST
//! with curl and nghttp to an HTTP/1 upstream and to nghttpd (bodies checked byte for byte,
//! one larger than every flow-control window), the upstream seeing the right protocol and
//! authority and no hop-by-hop field; an HTTP/1 client to an h2 endpoint (`protocol = "h2"`)
//! and an h2 client to an HTTP/1 endpoint (`protocol = "http1"`), trailers carried both
//! ways; the sidecar's inbound side taking h2c. Connections and streams are in
//! `http2_connections.rs`.
//!
//! Each client and upstream helper is also run without the proxy (the `direct_*` tests), so
//! a failure through the proxy is the proxy's.

use coremesh_tests::client::{chunked_body, Client};
use coremesh_tests::h2mesh::{proxy_to, wait_metrics, MeshConfig};
use coremesh_tests::h2peers::{
    big_body, curl, h2_request, nghttp, small_body, H2Request, Nghttpd, PyH2Server, Seen, Version,
    AUTHORITY,
};
use coremesh_tests::proxy::for_each_driver;
use coremesh_tests::upstream::{Action, ReceivedRequest, Response, Upstream};
use std::net::SocketAddr;
use std::time::Duration;

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
        let proxy = proxy_to(driver, upstream.addr(), &["protocol = \"http1\""]);
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

/// A POST whose body comes only after its head went out and the endpoint refused that
/// first attempt (REFUSED_STREAM, never processed): the retry carries the whole body, read
/// from the client's stream after the refusal.
#[test]
fn a_body_sent_after_the_first_attempt_was_refused_goes_whole_to_the_retry() {
    for_each_driver(|driver| {
        let upstream = PyH2Server::start("refuse-first");
        let proxy = proxy_to(driver, upstream.addr(), &[]);
        let body = small_body();
        let gate_dir = coremesh_tests::h2tools::TempDir::new("gate");
        let gate = gate_dir.path().join("open");
        let answer = std::thread::scope(|s| {
            let client = s.spawn(|| {
                h2_request(
                    proxy.addr(),
                    &H2Request {
                        method: "POST",
                        path: "/late-body",
                        body: Some(&body),
                        body_gate: Some(&gate),
                        ..Default::default()
                    },
                )
            });
            assert!(
                upstream.wait_event(Duration::from_secs(30), |e| e["event"] == "request"),
                "the first attempt's head reached the endpoint before the body was sent"
            );
            std::fs::write(&gate, b"").expect("open the body gate");
            client.join().expect("client thread")
        });
        assert_eq!(answer.status, Some(200), "{answer:?}");
        assert!(answer.body == body, "the echoed body is the whole body");
        let events = upstream.events();
        let requests = events.iter().filter(|e| e["event"] == "request").count();
        let ended: Vec<u64> = events
            .iter()
            .filter(|e| e["event"] == "end")
            .filter_map(|e| e["body_len"].as_u64())
            .collect();
        assert_eq!(requests, 2, "one refused attempt and one retry: {events:?}");
        assert_eq!(ended, [body.len() as u64], "the retry's body: {events:?}");
    });
}

/// Streams through one client connection and an endpoint allowing 2 streams per connection.
const GATHERED_STREAMS: u64 = 6;

/// An endpoint that allows 2 concurrent streams per connection (refusing a third) and
/// answers only once 6 requests are open at once: the proxy reads each new connection's
/// SETTINGS before using it and opens more connections instead of queueing streams behind
/// a full one (which would never be answered).
#[test]
fn a_full_upstream_connection_gets_a_second_one() {
    for_each_driver(|driver| {
        let n = GATHERED_STREAMS.to_string();
        let upstream = PyH2Server::start_with("echo", &["--max-streams", "2", "--gather", &n]);
        let proxy = MeshConfig::new()
            .http2("max_upstream_connections", 3)
            .service("backend", &[upstream.addr()], &[])
            .route("backend", &[])
            .start(driver);
        let load = coremesh_tests::h2peers::h2load_one_connection(
            proxy.addr(),
            "/gathered",
            GATHERED_STREAMS,
            GATHERED_STREAMS as u32,
        );
        let events = upstream.events();
        assert_eq!(
            (load.succeeded, load.status_2xx),
            (GATHERED_STREAMS, GATHERED_STREAMS),
            "{load:?}: {events:?}"
        );
        let requests: Vec<u64> = events
            .iter()
            .filter(|e| e["event"] == "request")
            .filter_map(|e| e["conn"].as_u64())
            .collect();
        let conns: std::collections::BTreeSet<u64> = requests.iter().copied().collect();
        // No stream was refused: each connection got streams only once its SETTINGS
        // were read.
        assert_eq!(requests.len() as u64, GATHERED_STREAMS, "{events:?}");
        assert_eq!(
            conns.len(),
            3,
            "three connections of two streams: {events:?}"
        );
    });
}
