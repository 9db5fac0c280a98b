//! End-to-end paths users rely on that the other suites do not walk, on both drivers: an
//! upstream closing an idle pooled connection before a POST, `Connection: close` from the
//! upstream mid keep-alive, retries of chunked bodies, of bodies around the replay limit and
//! with `Expect: 100-continue`, pipelines broken by the upstream or abandoned by the client,
//! duplicate `Host`, absolute-form targets, and an upstream that refuses a WebSocket upgrade.
//!
//! Every wait is for a condition (a request arriving, a FIN reaching a socket, a connection
//! closing), bounded only to turn a hang into a failure.

use coremesh_discovery::{BalanceKind, Config, DEFAULT_REPLAY_BODY_LIMIT};
use coremesh_tests::client::{build_request, chunked_body, Client};
use coremesh_tests::data::pseudo_random_bytes;
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::scripted::ScriptedUpstream;
use coremesh_tests::sockets::{tcp_socket, tcp_state, TCP_CLOSE_WAIT};
use coremesh_tests::traffic::{answered_by, get_on, wait_until};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use coremesh_tests::Driver;
use socket2::SockRef;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Bound on every wait for a condition: only turns a hang into a failure.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    assert!(
        wait_until(WAIT_LIMIT, Duration::from_millis(5), done),
        "timed out waiting for {what}"
    );
}

/// [`one_service`] over `endpoints`, round-robin (the first attempt goes to the first
/// endpoint), the route retrying on `retry_on`.
fn round_robin(endpoints: &[&Upstream], retry_on: &[u16]) -> Config {
    let addrs: Vec<_> = endpoints.iter().map(|u| u.addr()).collect();
    let mut config = one_service(&addrs);
    config.services[0].overrides.balance = Some(BalanceKind::RoundRobin);
    config.routes[0].retry_on = retry_on.to_vec();
    config
}

/// The first line of the echo upstream's body: `METHOD PATH VERSION`.
fn echoed_request_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

#[test]
fn post_after_the_upstream_closed_its_idle_pooled_connection_goes_out_once_on_a_new_one() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let mut config = one_service(&[upstream.addr()]);
        // The pooled connection must not expire on the proxy's side during the test.
        config.defaults.pool_idle_timeout_ms = 600_000;
        let proxy = start_proxy(driver, config);
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let warm = get_on(&mut c, "/warm", &[], "the request that pools a connection");
        assert_eq!(warm.status, 200);

        // The upstream closes its idle keep-alive connection; wait until its FIN has reached
        // the proxy's pooled socket.
        wait_for("the upstream connection to be open", || {
            upstream.connections_open() == 1
        });
        let pooled = upstream.open_connection_peers();
        assert_eq!(pooled.len(), 1);
        assert_eq!(upstream.close_open_connections(), 1);
        wait_for("the upstream's FIN at the proxy's pooled socket", || {
            tcp_state(pooled[0], upstream.addr()) == Some(TCP_CLOSE_WAIT)
        });

        c.send_request("POST", "/order", &[], Some(b"one order"))
            .expect("send the POST");
        let r = c.read_response(false).expect("a response to the POST");
        assert_eq!(r.status, 200, "body {:?}", r.body_text());
        assert!(!r.has_connection_close(), "the client keeps its connection");

        let received = upstream.received();
        let seen: Vec<_> = received
            .iter()
            .map(|r| (r.method.as_str(), r.path.as_str(), r.connection_id))
            .collect();
        assert_eq!(
            seen,
            [("GET", "/warm", 0), ("POST", "/order", 1)],
            "the POST went out exactly once, on a new upstream connection"
        );
        assert_eq!(received[1].body, b"one order");
        assert_eq!(upstream.connections_accepted(), 2);
        assert!(
            r.body_text().contains("\nconnection-id: 1\n"),
            "the answer came from the new connection: {}",
            r.body_text()
        );
    });
}

#[test]
fn connection_close_from_the_upstream_ends_that_upstream_connection_only() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("closer", |req| {
            let response = Response::ok(echo_body(req));
            Action::Respond(if req.path == "/last-on-this-connection" {
                response.header("connection", "close")
            } else {
                response
            })
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let paths = ["/a", "/last-on-this-connection", "/b", "/c"];
        for path in paths {
            let r = get_on(&mut c, path, &[], path);
            assert_eq!(r.status, 200, "{path}");
            assert!(
                !r.has_connection_close(),
                "{path}: the upstream's Connection: close is hop-by-hop; the client keeps \
                 its connection: {}",
                String::from_utf8_lossy(&r.raw_head)
            );
            assert_eq!(
                echoed_request_line(&r.body_text()),
                format!("GET {path} HTTP/1.1")
            );
        }
        let seen: Vec<_> = upstream
            .received()
            .iter()
            .map(|r| (r.path.clone(), r.connection_id, r.index_in_connection))
            .collect();
        let expected: Vec<_> = [
            ("/a", 0, 0),
            ("/last-on-this-connection", 0, 1),
            ("/b", 1, 0),
            ("/c", 1, 1),
        ]
        .iter()
        .map(|(p, c, i)| (p.to_string(), *c, *i))
        .collect();
        assert_eq!(seen, expected, "(path, upstream connection, index on it)");
        assert_eq!(upstream.connections_accepted(), 2);
        assert!(!c.peer_closed_now(), "the client connection is still open");
    });
}

#[test]
fn chunked_request_body_is_replayed_byte_for_byte_on_retry() {
    for_each_driver(|driver| {
        let first = Upstream::fixed_named("first", 503, b"try elsewhere");
        let second = Upstream::echo_named("second");
        let proxy = start_proxy(driver, round_robin(&[&first, &second], &[503]));
        let body = pseudo_random_bytes(3_000, 13);
        let framed = chunked_body(&body, 1_000, &[("x-checksum", "abc123")]);
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_request(
            "PUT",
            "/doc",
            &[("Transfer-Encoding", "chunked")],
            Some(&framed),
        )
        .expect("send");
        let r = c.read_response(false).expect("a response");
        assert_eq!(
            (r.status, answered_by(&r)),
            (200, "second".to_string()),
            "retried on the second endpoint: {}",
            r.body_text()
        );
        assert_eq!(first.requests_received(), 1);
        assert_eq!(second.requests_received(), 1);
        for (name, got) in [("first", first.received()), ("second", second.received())] {
            assert_eq!(got[0].body, body, "{name}: the whole body");
            assert_eq!(got[0].trailer("x-checksum").as_deref(), Some("abc123"));
            assert!(
                got[0].raw.ends_with(&framed),
                "{name}: the chunked framing went out exactly as the client sent it"
            );
        }
    });
}

/// A PUT of `len` bytes (Content-Length, or chunked in 4 KiB chunks) to round-robin
/// ["first" answering `first`, "second" echoing], retrying on 503.
fn put_through_retry(
    driver: Driver,
    first: Action,
    len: usize,
    chunked: bool,
) -> (coremesh_tests::RawResponse, Upstream, Upstream, Vec<u8>) {
    let first = Upstream::start("first", move |_| first.clone());
    let second = Upstream::echo_named("second");
    let proxy = start_proxy(driver, round_robin(&[&first, &second], &[503]));
    let body = pseudo_random_bytes(len, len as u64);
    let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
    if chunked {
        let framed = chunked_body(&body, 4096, &[]);
        c.send_request(
            "PUT",
            "/doc",
            &[("Transfer-Encoding", "chunked")],
            Some(&framed),
        )
    } else {
        c.send_request("PUT", "/doc", &[], Some(&body))
    }
    .expect("send the PUT");
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("{len} bytes (chunked: {chunked}): no response: {e}"));
    drop(c);
    drop(proxy);
    (r, first, second, body)
}

#[test]
fn body_at_the_replay_limit_is_retried_and_one_byte_over_is_not() {
    let limit = DEFAULT_REPLAY_BODY_LIMIT;
    let refuse = Action::Respond(Response::new(503).body("try elsewhere"));
    for_each_driver(|driver| {
        let (r, first, second, body) = put_through_retry(driver, refuse.clone(), limit, false);
        assert_eq!(
            (r.status, answered_by(&r)),
            (200, "second".to_string()),
            "{limit} bytes: kept for replay and retried: {}",
            r.body_text()
        );
        assert_eq!(first.received()[0].body, body);
        assert_eq!(second.received()[0].body, body, "replayed whole");

        let (r, first, second, body) = put_through_retry(driver, refuse.clone(), limit + 1, false);
        assert_eq!(
            (r.status, answered_by(&r), r.body_text().as_str()),
            (503, "first".to_string(), "try elsewhere"),
            "{} bytes: streamed, so the first attempt's answer is passed on",
            limit + 1
        );
        assert_eq!(first.requests_received(), 1);
        assert_eq!(first.received()[0].body, body);
        assert_eq!(second.requests_received(), 0, "never sent twice");
    });
}

#[test]
fn chunked_body_over_the_replay_limit_is_not_retried() {
    let refuse = Action::Respond(Response::new(503).body("try elsewhere"));
    for_each_driver(|driver| {
        let len = DEFAULT_REPLAY_BODY_LIMIT + 1;
        let (r, first, second, body) = put_through_retry(driver, refuse.clone(), len, true);
        assert_eq!(
            (r.status, answered_by(&r)),
            (503, "first".to_string()),
            "a chunked body past the replay limit streams: the first answer is passed on"
        );
        assert_eq!(first.requests_received(), 1);
        assert_eq!(first.received()[0].body, body);
        assert_eq!(second.requests_received(), 0, "never sent twice");
    });
}

#[test]
fn streamed_body_to_an_upstream_that_closes_gets_502_not_a_second_attempt() {
    let limit = DEFAULT_REPLAY_BODY_LIMIT;
    for_each_driver(|driver| {
        // At the limit the (idempotent) PUT is replayed on the healthy endpoint...
        let (r, first, second, body) =
            put_through_retry(driver, Action::CloseWithoutResponse, limit, false);
        assert_eq!((r.status, answered_by(&r)), (200, "second".to_string()));
        assert_eq!(first.received()[0].body, body);
        assert_eq!(second.received()[0].body, body);

        // ... one byte over, its bytes are gone: a clear 502, and no second attempt.
        for chunked in [false, true] {
            let (r, first, second, body) =
                put_through_retry(driver, Action::CloseWithoutResponse, limit + 1, chunked);
            assert_eq!(
                (r.status, answered_by(&r)),
                (502, "proxy:upstream-closed".to_string()),
                "chunked: {chunked}: {}",
                r.body_text()
            );
            assert_eq!(first.requests_received(), 1, "chunked: {chunked}");
            assert_eq!(first.received()[0].body, body, "chunked: {chunked}");
            assert_eq!(
                second.requests_received(),
                0,
                "chunked: {chunked}: never sent twice"
            );
        }
    });
}

#[test]
fn expect_100_continue_gets_one_interim_response_across_a_retry() {
    let limit = DEFAULT_REPLAY_BODY_LIMIT;
    for_each_driver(|driver| {
        for (len, retried) in [(1_000, true), (limit + 1, false)] {
            let first = Upstream::fixed_named("first", 503, b"try elsewhere");
            let second = Upstream::echo_named("second");
            let proxy = start_proxy(driver, round_robin(&[&first, &second], &[503]));
            let body = pseudo_random_bytes(len, 5);
            let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
            let head = format!(
                "PUT /doc HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n"
            );
            c.send_raw(head.as_bytes()).expect("send the head");
            let interim = c.read_head_only().expect("an interim response");
            assert_eq!(interim.status, 100, "{len} bytes");
            c.send_raw(&body).expect("send the body");
            let r = c.read_response(false).expect("the final response");
            assert!(
                r.interim.is_empty(),
                "{len} bytes: a second interim response reached the client: {:?}",
                r.interim.iter().map(|i| i.status).collect::<Vec<_>>()
            );
            assert_eq!(first.received()[0].body, body, "{len} bytes");
            if retried {
                assert_eq!((r.status, answered_by(&r)), (200, "second".to_string()));
                assert_eq!(second.received()[0].body, body);
            } else {
                assert_eq!((r.status, answered_by(&r)), (503, "first".to_string()));
                assert_eq!(second.requests_received(), 0, "never sent twice");
            }
        }
    });
}

#[test]
fn pipeline_continues_on_a_new_upstream_connection_after_the_upstream_says_close() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("closer", |req| {
            let response = Response::ok(echo_body(req));
            Action::Respond(if req.path == "/p/1" {
                response.header("connection", "close")
            } else {
                response
            })
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let mut batch = Vec::new();
        for i in 0..4 {
            batch.extend(build_request("GET", &format!("/p/{i}"), &[], None));
        }
        c.send_raw(&batch).expect("send the pipeline");
        for i in 0..4 {
            let r = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("response {i}: {e}"));
            assert_eq!(r.status, 200, "response {i}");
            assert!(!r.has_connection_close(), "response {i}");
            assert_eq!(
                echoed_request_line(&r.body_text()),
                format!("GET /p/{i} HTTP/1.1"),
                "answered in order"
            );
        }
        let seen: Vec<_> = upstream
            .received()
            .iter()
            .map(|r| (r.path.clone(), r.connection_id))
            .collect();
        let expected: Vec<_> = [("/p/0", 0), ("/p/1", 0), ("/p/2", 1), ("/p/3", 1)]
            .iter()
            .map(|(p, c)| (p.to_string(), *c))
            .collect();
        assert_eq!(seen, expected, "(path, upstream connection)");
        assert!(!c.peer_closed_now(), "the client connection is still open");
    });
}

#[test]
fn pipeline_survives_the_upstream_closing_without_answering_mid_pipeline() {
    // The upstream drops its connection instead of answering the middle request, once. An
    // idempotent GET is retried (on a new connection to the same, only, endpoint); a POST
    // gets 502 and is not sent again; either way the requests after it are answered.
    for (method, retried) in [("GET", true), ("POST", false)] {
        for_each_driver(|driver| {
            let dropped = Arc::new(AtomicBool::new(false));
            let drop_once = dropped.clone();
            let upstream = Upstream::start("dropper", move |req| {
                if req.path == "/p/1" && !drop_once.swap(true, Ordering::SeqCst) {
                    Action::CloseWithoutResponse
                } else {
                    Action::Respond(Response::ok(echo_body(req)))
                }
            });
            let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
            let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
            let mut batch = build_request("GET", "/p/0", &[], None);
            batch.extend(build_request(method, "/p/1", &[], Some(b"pay once")));
            batch.extend(build_request("GET", "/p/2", &[], None));
            c.send_raw(&batch).expect("send the pipeline");
            let statuses: Vec<_> = (0..3)
                .map(|i| {
                    let r = c
                        .read_response(false)
                        .unwrap_or_else(|e| panic!("{method}: response {i}: {e}"));
                    if r.status == 200 {
                        let line = echoed_request_line(&r.body_text()).to_string();
                        assert!(
                            line.contains(&format!(" /p/{i} ")),
                            "{method}: response {i} answers {line}"
                        );
                    }
                    (r.status, answered_by(&r))
                })
                .collect();
            let middle = if retried {
                (200, "dropper".to_string())
            } else {
                (502, "proxy:upstream-closed".to_string())
            };
            assert_eq!(
                statuses,
                [
                    (200, "dropper".to_string()),
                    middle,
                    (200, "dropper".to_string())
                ],
                "{method}"
            );
            let paths: Vec<_> = upstream
                .received()
                .iter()
                .map(|r| (r.method.clone(), r.path.clone()))
                .collect();
            let mut expected = vec![("GET", "/p/0"), (method, "/p/1")];
            if retried {
                expected.push((method, "/p/1"));
            }
            expected.push(("GET", "/p/2"));
            let expected: Vec<_> = expected
                .iter()
                .map(|(m, p)| (m.to_string(), p.to_string()))
                .collect();
            assert_eq!(paths, expected, "{method}: what the upstream received");
            assert_eq!(upstream.connections_accepted(), 2, "{method}");
        });
    }
}

#[test]
fn client_aborting_mid_response_leaves_the_proxy_healthy() {
    // Far more than every socket buffer between the upstream and the client can hold, so the
    // proxy is still relaying it when the client aborts.
    const BIG: usize = 32 * 1024 * 1024;
    for_each_driver(|driver| {
        let big = Arc::new(vec![b'x'; BIG]);
        let upstream = Upstream::start("big", move |req| {
            if req.path == "/big" {
                Action::Respond(Response::ok(big.as_slice()))
            } else {
                Action::Respond(Response::ok(echo_body(req)))
            }
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let mut batch = build_request("GET", "/big", &[], None);
        batch.extend(build_request("GET", "/p/1", &[], None));
        batch.extend(build_request("POST", "/p/2", &[], Some(b"never forwarded")));
        c.send_raw(&batch).expect("send the pipeline");
        let head = c.read_head_only().expect("the big response's head");
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some(BIG.to_string()));
        // Abort: close with unread bytes and SO_LINGER 0, so the proxy sees a reset.
        SockRef::from(c.stream())
            .set_linger(Some(Duration::ZERO))
            .expect("SO_LINGER 0");
        drop(c);

        // The proxy drops the upstream connection it was relaying from.
        wait_for("the relayed upstream connection to close", || {
            upstream.connections_open() == 0
        });
        let mut after = Client::connect(proxy.addr()).expect("connect again");
        let r = get_on(&mut after, "/after", &[], "the request after the abort");
        assert_eq!(r.status, 200);
        assert_eq!(echoed_request_line(&r.body_text()), "GET /after HTTP/1.1");
        let seen: Vec<_> = upstream
            .received()
            .iter()
            .map(|r| (r.path.clone(), r.connection_id))
            .collect();
        assert_eq!(
            seen,
            [("/big".to_string(), 0), ("/after".to_string(), 1)],
            "the pipelined requests behind the aborted response were never forwarded"
        );
    });
}

/// Send `raw` on a new connection: the proxy answers `status` and closes, and the upstream
/// never hears of it (a good request afterwards is all it receives).
fn assert_rejected(driver: Driver, raw: &[u8], status: u16) {
    let upstream = Upstream::echo();
    let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
    let shown = String::from_utf8_lossy(raw).into_owned();
    let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
    c.send_raw(raw).expect("send");
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("no response to {shown:?}: {e}"));
    assert_eq!(r.status, status, "{shown:?}: {}", r.body_text());
    assert!(c.is_closed_by_peer(), "{shown:?}: connection closed");
    let mut good = Client::connect(proxy.addr()).expect("connect");
    assert_eq!(get_on(&mut good, "/after", &[], "after").status, 200);
    let paths: Vec<_> = upstream.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/after"], "{shown:?} never reached the upstream");
    assert_eq!(
        upstream.bytes_received(),
        upstream.received()[0].raw.len() as u64
    );
}

#[test]
fn duplicate_host_gets_400() {
    for_each_driver(|driver| {
        for raw in [
            &b"GET /a HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"[..],
            b"GET /a HTTP/1.1\r\nHost: a.example\r\nHost: a.example\r\n\r\n",
            b"GET /a HTTP/1.1\r\nhost: a.example\r\nX-Other: 1\r\nHOST: b.example\r\n\r\n",
            b"GET /a HTTP/1.1\r\nHost: a.example\r\nHost:\r\n\r\n",
        ] {
            assert_rejected(driver, raw, 400);
        }
    });
}

#[test]
fn absolute_form_target_goes_out_in_origin_form_with_the_host_of_the_target() {
    // RFC 9112 §3.2.2: a proxy receiving the absolute-form ignores the received Host and
    // generates one from the target; toward an origin server the target is sent in
    // origin-form (§3.2.1). nginx does the same (`GET /p/q?x=1`, Host from the URI).
    let cases = [
        (
            "GET http://other.example:8080/p/q?x=1 HTTP/1.1\r\nHost: header.example\r\n\r\n",
            "/p/q?x=1",
            "other.example:8080",
        ),
        (
            "GET http://other.example HTTP/1.1\r\nHost: other.example\r\n\r\n",
            "/",
            "other.example",
        ),
        (
            "GET http://other.example?q HTTP/1.1\r\nHost: other.example\r\n\r\n",
            "/?q",
            "other.example",
        ),
    ];
    for_each_driver(|driver| {
        for (raw, path, host) in cases {
            let upstream = Upstream::echo();
            let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
            let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
            c.send_raw(raw.as_bytes()).expect("send");
            let r = c.read_response(false).expect("a response");
            assert_eq!(r.status, 200, "{raw:?}: {}", r.body_text());
            let got = upstream.received();
            assert_eq!(got.len(), 1, "{raw:?}");
            let hosts: Vec<_> = got[0]
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("host"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect();
            assert_eq!(
                (got[0].path.as_str(), hosts),
                (path, vec![host.to_string()]),
                "{raw:?}: the upstream got {:?}",
                String::from_utf8_lossy(&got[0].raw)
            );
        }
    });
}

#[test]
fn refused_websocket_upgrade_is_passed_on_and_the_connection_stays_http() {
    for status in [200u16, 400] {
        for_each_driver(|driver| {
            let upstream = Upstream::start("no-ws", move |req| {
                if req.path == "/chat" {
                    Action::Respond(Response::new(status).body("no websocket here"))
                } else {
                    Action::Respond(Response::ok(echo_body(req)))
                }
            });
            let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
            let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
            c.send_raw(
                b"GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n",
            )
            .expect("send the upgrade request");
            let r = c.read_response(false).expect("the refusal");
            assert_eq!(
                (r.status, r.body_text().as_str()),
                (status, "no websocket here"),
                "the upstream's answer, as it is"
            );
            assert!(!r.has_header("upgrade"), "{status}: no Upgrade without 101");
            assert!(
                !r.header_tokens("connection")
                    .contains(&"upgrade".to_string()),
                "{status}: {}",
                String::from_utf8_lossy(&r.raw_head)
            );
            let next = get_on(&mut c, "/next", &[], "the request after the refusal");
            assert_eq!(next.status, 200, "{status}");
            assert_eq!(
                echoed_request_line(&next.body_text()),
                "GET /next HTTP/1.1",
                "{status}: the connection still speaks HTTP"
            );
            let paths: Vec<_> = upstream.received().iter().map(|r| r.path.clone()).collect();
            assert_eq!(paths, ["/chat", "/next"], "{status}");
        });
    }
}

/// `200 OK` with `body` and its Content-Length.
fn raw_ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[test]
fn bytes_after_a_response_never_reach_the_next_request() {
    // The upstream's first answer carries a second response behind it, in the same write.
    // Reusing that connection would hand "smuggled" to the next request.
    for_each_driver(|driver| {
        let upstream = ScriptedUpstream::start(|conn, index, _| {
            if (conn, index) == (0, 0) {
                let mut both = raw_ok("first");
                both.extend(raw_ok("smuggled"));
                both
            } else {
                raw_ok(&format!("conn-{conn}-request-{index}"))
            }
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        assert_eq!(get_on(&mut c, "/1", &[], "first").body_text(), "first");
        assert_eq!(
            get_on(&mut c, "/2", &[], "second").body_text(),
            "conn-1-request-0",
            "the connection that sent more than its response was not reused"
        );
        assert_eq!(upstream.connections_accepted(), 2);
    });
}

#[test]
fn bytes_arriving_on_an_idle_pooled_connection_retire_it() {
    for_each_driver(|driver| {
        let upstream = ScriptedUpstream::start(|conn, index, _| {
            raw_ok(&format!("conn-{conn}-request-{index}"))
        });
        let mut config = one_service(&[upstream.addr()]);
        config.defaults.pool_idle_timeout_ms = 600_000;
        let proxy = start_proxy(driver, config);
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        assert_eq!(
            get_on(&mut c, "/1", &[], "first").body_text(),
            "conn-0-request-0"
        );
        // A response nobody asked for lands on the pooled connection; wait until the
        // proxy's side has acknowledged all of it: it then waits in the proxy's socket,
        // or the read the proxy keeps posted on an idle connection (io_uring) took it.
        let unsolicited = raw_ok("unsolicited");
        upstream
            .write_to(0, &unsolicited)
            .expect("write on the idle connection");
        let pooled = upstream.peer_of(0).expect("connection 0's far end");
        wait_for("the unsolicited bytes at the proxy's pooled socket", || {
            tcp_socket(upstream.addr(), pooled).is_some_and(|s| s.tx_queue == 0)
        });
        assert_eq!(
            get_on(&mut c, "/2", &[], "second").body_text(),
            "conn-1-request-0",
            "the connection with unsolicited bytes was not reused"
        );
        let heads: Vec<_> = upstream.heads().iter().map(|(c, i, _)| (*c, *i)).collect();
        assert_eq!(heads, [(0, 0), (1, 0)]);
    });
}

#[test]
fn requests_pipelined_behind_connection_close_are_never_forwarded() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let mut batch = build_request("GET", "/a", &[], None);
        batch.extend(build_request("GET", "/b", &[("Connection", "close")], None));
        batch.extend(build_request("POST", "/c", &[], Some(b"must not go")));
        c.send_raw(&batch).expect("send the pipeline");
        let a = c.read_response(false).expect("response to /a");
        assert_eq!(echoed_request_line(&a.body_text()), "GET /a HTTP/1.1");
        let b = c.read_response(false).expect("response to /b");
        assert_eq!(echoed_request_line(&b.body_text()), "GET /b HTTP/1.1");
        assert!(b.has_connection_close(), "the last response says close");
        assert!(c.is_closed_by_peer(), "and the proxy closes");
        let paths: Vec<_> = upstream.received().iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["/a", "/b"], "nothing after the close was forwarded");
    });
}

#[test]
fn uninvited_protocol_switch_gets_502_and_the_client_connection_goes_on() {
    for_each_driver(|driver| {
        let upstream = ScriptedUpstream::start(|conn, index, _| {
            if conn == 0 {
                b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
                    .to_vec()
            } else {
                raw_ok(&format!("conn-{conn}-request-{index}"))
            }
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let r = get_on(&mut c, "/plain", &[], "a request that asked for no upgrade");
        assert_eq!(
            (r.status, answered_by(&r)),
            (502, "proxy:upstream-bad-response".to_string()),
            "{}",
            r.body_text()
        );
        assert!(!r.has_header("upgrade"));
        let next = get_on(&mut c, "/next", &[], "the next request");
        assert_eq!(
            (next.status, next.body_text().as_str()),
            (200, "conn-1-request-0"),
            "the switched connection was dropped, the client's kept"
        );
    });
}

#[test]
fn connect_is_refused_with_501_and_never_reaches_the_upstream() {
    // A 2xx to CONNECT turns the connection into a tunnel (RFC 9110 §9.3.6): relayed as an
    // ordinary response, its body would be read as tunnel bytes and the upstream connection
    // pooled mid-tunnel. coremesh does not tunnel CONNECT, so it says so (nginx: 400).
    for_each_driver(|driver| {
        assert_rejected(
            driver,
            b"CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\n\r\n",
            501,
        );
    });
}

#[test]
fn asterisk_form_options_is_forwarded_as_it_is() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200);
        let got = upstream.received();
        assert_eq!(
            (got[0].method.as_str(), got[0].path.as_str()),
            ("OPTIONS", "*")
        );
    });
}

#[test]
fn client_that_half_closes_after_its_request_still_gets_the_response() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_request("POST", "/last", &[], Some(b"final words"))
            .expect("send");
        c.shutdown_write().expect("half-close");
        let r = c
            .read_response(false)
            .expect("the response after the half-close");
        assert_eq!(r.status, 200);
        assert!(
            r.body_text().contains("\nbody-length: 11\n"),
            "{}",
            r.body_text()
        );
        assert!(c.is_closed_by_peer(), "then the proxy closes too");
        assert_eq!(upstream.received()[0].body, b"final words");
    });
}
