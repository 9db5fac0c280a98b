//! Self-tests of the harness: the programmable upstream and the raw client talking to each
//! other directly, no proxy in between, so the end-to-end suites stand on proven tools.

use coremesh_tests::client::{self, chunked_body, BodyFraming, Client};
use coremesh_tests::data::{pseudo_random_bytes, sha1_hex};
use coremesh_tests::load::{ClientEnd, Load};
use coremesh_tests::proxy::{
    closed_port_addr, driver_check, driver_in_start_line, epoll_fallback_allowed, for_each_driver,
    one_service, start_proxy, ALLOW_EPOLL_FALLBACK_ENV,
};
use coremesh_tests::restartable::Restartable;
use coremesh_tests::upstream::{echo_body, websocket_accept, Action, Response, Upstream};
use coremesh_tests::wire::WireError;
use coremesh_tests::Driver;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn echo_reports_the_request_and_names_the_upstream() {
    let upstream = Upstream::echo_named("alpha");
    let response =
        client::get(upstream.addr(), "/hello?x=1", &[("X-Test", "yes")]).expect("echo response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-upstream").as_deref(), Some("alpha"));
    let received = upstream.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].method, "GET");
    assert_eq!(received[0].path, "/hello?x=1");
    assert_eq!(received[0].version, "HTTP/1.1");
    assert_eq!(received[0].header("x-test").as_deref(), Some("yes"));
    assert_eq!(response.body, echo_body(&received[0]));
    assert!(response
        .body_text()
        .starts_with("GET /hello?x=1 HTTP/1.1\n"));
    assert!(response.body_text().contains("\nX-Test: yes\n"));
    assert_eq!(upstream.connections_accepted(), 1);
    assert_eq!(upstream.requests_received(), 1);
    assert_eq!(upstream.bytes_received(), received[0].raw.len() as u64);
}

#[test]
fn content_length_bodies_both_ways() {
    let upstream = Upstream::start("cl", |req| {
        let mut body = req.body.clone();
        body.reverse();
        Action::Respond(Response::ok(body))
    });
    let response =
        client::request(upstream.addr(), "POST", "/r", &[], Some(b"hello world")).unwrap();
    assert_eq!(response.body, b"dlrow olleh");
    assert_eq!(response.framing, BodyFraming::ContentLength(11));
    assert_eq!(upstream.received()[0].body, b"hello world");
}

#[test]
fn chunked_bodies_with_trailers_both_ways() {
    let upstream = Upstream::start("chunky", |req| {
        let trailer = format!("got-{}", req.trailer("x-req-trailer").unwrap_or_default());
        Action::Respond(Response::ok(req.body.clone()).chunked(&[("x-resp-trailer", &trailer)]))
    });
    let mut c = Client::connect(upstream.addr()).unwrap();
    let body = chunked_body(b"hello chunked world", 5, &[("x-req-trailer", "abc")]);
    c.send_request(
        "POST",
        "/c",
        &[("Transfer-Encoding", "chunked")],
        Some(&body),
    )
    .unwrap();
    let response = c.read_response(false).unwrap();
    assert_eq!(response.framing, BodyFraming::Chunked);
    assert_eq!(response.body, b"hello chunked world");
    assert_eq!(
        response.trailer("x-resp-trailer").as_deref(),
        Some("got-abc")
    );
    let received = &upstream.received()[0];
    assert_eq!(received.body, b"hello chunked world");
    assert_eq!(received.trailer("x-req-trailer").as_deref(), Some("abc"));
    assert!(received.raw.ends_with(&body), "raw keeps the chunk framing");
}

#[test]
fn close_delimited_response_is_read_to_the_end() {
    let big = pseudo_random_bytes(200_000, 3);
    let expected = big.clone();
    let upstream = Upstream::start("cd", move |_| {
        Action::Respond(Response::ok(big.clone()).close_delimited())
    });
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_request("GET", "/", &[], None).unwrap();
    let response = c.read_response(false).unwrap();
    assert_eq!(response.framing, BodyFraming::CloseDelimited);
    assert_eq!(response.body, expected);
}

#[test]
fn head_204_304_have_no_body_and_keep_the_connection_usable() {
    let upstream = Upstream::start("nobody", |req| match req.path.as_str() {
        "/204" => Action::Respond(Response::new(204).body("ignored")),
        "/304" => Action::Respond(Response::new(304).body("ignored")),
        _ => Action::Respond(Response::ok("eleven byte")),
    });
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_request("HEAD", "/", &[], None).unwrap();
    let head = c.read_response(true).unwrap();
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(head.header("content-length").as_deref(), Some("11"));
    for path in ["/204", "/304"] {
        c.send_request("GET", path, &[], None).unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!(r.framing, BodyFraming::NoBody);
        assert!(r.body.is_empty());
    }
    c.send_request("GET", "/", &[], None).unwrap();
    assert_eq!(c.read_response(false).unwrap().body, b"eleven byte");
    assert_eq!(upstream.connections_accepted(), 1);
}

#[test]
fn expect_100_continue_sends_interim_then_final() {
    let upstream = Upstream::echo();
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_raw(b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let interim = c.read_head_only().unwrap();
    assert_eq!(interim.status, 100);
    c.send_raw(b"hello").unwrap();
    let response = c.read_response(false).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.interim.is_empty());
    assert_eq!(upstream.received()[0].body, b"hello");
}

#[test]
fn interim_responses_are_collected() {
    let upstream = Upstream::echo();
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_raw(
        b"PUT /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let response = c.read_response(false).unwrap();
    assert_eq!(
        response
            .interim
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        vec![100]
    );
    assert_eq!(response.status, 200);
}

#[test]
fn http10_and_connection_close_end_the_connection() {
    let upstream = Upstream::echo();
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_raw(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(c.read_response(false).unwrap().status, 200);
    assert!(c.is_closed_by_peer());

    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_request("GET", "/close", &[("Connection", "close")], None)
        .unwrap();
    let response = c.read_response(false).unwrap();
    assert!(response.has_connection_close());
    assert!(c.is_closed_by_peer());
}

#[test]
fn keep_alive_and_pipelining_on_one_connection() {
    let upstream = Upstream::echo();
    let mut c = Client::connect(upstream.addr()).unwrap();
    for i in 0..100 {
        c.send_request("GET", &format!("/seq/{i}"), &[], None)
            .unwrap();
        let r = c.read_response(false).unwrap();
        assert!(r
            .body_text()
            .starts_with(&format!("GET /seq/{i} HTTP/1.1\n")));
    }
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend(client::build_request(
            "GET",
            &format!("/pipe/{i}"),
            &[],
            None,
        ));
    }
    c.send_raw(&batch).unwrap();
    for i in 0..5 {
        let r = c.read_response(false).unwrap();
        assert!(r
            .body_text()
            .starts_with(&format!("GET /pipe/{i} HTTP/1.1\n")));
    }
    assert_eq!(upstream.connections_accepted(), 1);
    assert_eq!(upstream.requests_received(), 105);
    let received = upstream.received();
    assert!(received
        .iter()
        .enumerate()
        .all(|(i, r)| r.connection_id == 0 && r.index_in_connection == i as u64));
    assert!(!c.peer_closed_now());
}

#[test]
fn delay_reset_close_and_hang_actions() {
    let upstream = Upstream::start("faults", |req| match req.path.as_str() {
        "/delay" => Action::delay(
            Duration::from_millis(50),
            Action::Respond(Response::ok("late")),
        ),
        "/reset" => Action::Reset,
        "/close" => Action::CloseWithoutResponse,
        _ => Action::Hang,
    });
    let started = Instant::now();
    assert_eq!(
        client::get(upstream.addr(), "/delay", &[]).unwrap().body,
        b"late"
    );
    assert!(started.elapsed() >= Duration::from_millis(50));

    match client::get(upstream.addr(), "/reset", &[]) {
        Err(WireError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
        other => panic!("expected a reset, got {other:?}"),
    }
    match client::get(upstream.addr(), "/close", &[]) {
        Err(e) => assert!(e.is_clean_close(), "expected a clean close, got {e}"),
        Ok(r) => panic!("expected a close, got {}", r.status),
    }
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.set_read_timeout(Duration::from_millis(200)).unwrap();
    c.send_request("GET", "/hang", &[], None).unwrap();
    let err = c
        .read_response(false)
        .expect_err("a hanging upstream sends nothing");
    assert!(err.is_timeout(), "expected a time-out, got {err}");
    assert!(upstream.wait_for_requests(4, Duration::from_secs(5)));
    let mut upstream = upstream;
    let stopping = Instant::now();
    upstream.stop();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop wakes a hang at once"
    );
    c.set_read_timeout(Duration::from_secs(5)).unwrap();
    assert!(c.is_closed_by_peer(), "stop closes the hanging connection");
}

#[test]
fn websocket_echo_after_upgrade() {
    // RFC 6455 §1.3's example key and accept value.
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    let upstream = Upstream::start("ws", |_| Action::WebSocketEcho);
    let mut c = Client::connect(upstream.addr()).unwrap();
    c.send_raw(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let response = c.read_response(false).unwrap();
    assert_eq!(response.status, 101);
    assert_eq!(
        response.header("sec-websocket-accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    for round in 0..5 {
        let bytes = pseudo_random_bytes(1000 * (round + 1), round as u64);
        c.send_raw(&bytes).unwrap();
        assert_eq!(c.read_exact_raw(bytes.len()).unwrap(), bytes);
    }
    c.shutdown_write().unwrap();
    assert!(c.is_closed_by_peer());

    let plain = client::get(upstream.addr(), "/ws", &[]).unwrap();
    assert_eq!(
        plain.status, 400,
        "a request that is not an upgrade is refused"
    );
}

#[test]
fn ten_mib_each_way() {
    const LEN: usize = 10 * 1024 * 1024;
    let upstream = Upstream::start("big", |req| {
        if req.method == "POST" {
            Action::Respond(Response::ok(format!(
                "{} {}",
                req.body.len(),
                sha1_hex(&req.body)
            )))
        } else {
            Action::Respond(Response::ok(pseudo_random_bytes(LEN, 9)))
        }
    });
    let body = pseudo_random_bytes(LEN, 8);
    let up = client::request(upstream.addr(), "POST", "/up", &[], Some(&body)).unwrap();
    assert_eq!(up.body_text(), format!("{LEN} {}", sha1_hex(&body)));
    let down = client::get(upstream.addr(), "/down", &[]).unwrap();
    assert_eq!(sha1_hex(&down.body), sha1_hex(&pseudo_random_bytes(LEN, 9)));
}

#[test]
fn stop_joins_with_idle_connections_open() {
    let mut upstream = Upstream::echo();
    let mut clients: Vec<Client> = (0..10)
        .map(|_| Client::connect(upstream.addr()).unwrap())
        .collect();
    for c in &mut clients {
        c.send_request("GET", "/", &[], None).unwrap();
        assert_eq!(c.read_response(false).unwrap().status, 200);
    }
    upstream.stop();
    for c in &mut clients {
        assert!(c.is_closed_by_peer());
    }
    assert_eq!(upstream.connections_accepted(), 10);
    assert!(upstream.errors().is_empty(), "{:?}", upstream.errors());
}

#[test]
fn load_stops_cleanly_on_connection_close() {
    let closing = Arc::new(AtomicBool::new(false));
    let flag = closing.clone();
    let upstream = Upstream::start("load", move |req| {
        let response = Response::ok(echo_body(req));
        let response = if flag.load(Ordering::SeqCst) {
            response.header("Connection", "close")
        } else {
            response
        };
        Action::delay(Duration::from_millis(2), Action::Respond(response))
    });
    let load = Load::start(upstream.addr(), 4, "/load");
    assert!(
        load.wait_for_successes_per_client(3, Duration::from_secs(10)),
        "{:?}",
        load.failures()
    );
    load.mark_shutdown_began();
    closing.store(true, Ordering::SeqCst);
    let report = load.join();
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    assert!(report.succeeded >= 12);
    assert!(
        report.ends.iter().all(|e| *e == ClientEnd::ConnectionClose),
        "{:?}",
        report.ends
    );
}

#[test]
fn load_reports_a_request_left_unanswered() {
    let dropping = Arc::new(AtomicBool::new(false));
    let flag = dropping.clone();
    let upstream = Upstream::start("drop", move |req| {
        if flag.load(Ordering::SeqCst) {
            Action::CloseWithoutResponse
        } else {
            Action::delay(
                Duration::from_millis(2),
                Action::Respond(Response::ok(echo_body(req))),
            )
        }
    });
    let load = Load::start(upstream.addr(), 2, "/load");
    assert!(load.wait_for_successes_per_client(2, Duration::from_secs(10)));
    load.mark_shutdown_began();
    dropping.store(true, Ordering::SeqCst);
    let report = load.join();
    assert_eq!(report.failures.len(), 2, "{:?}", report.failures);
    assert!(
        report
            .failures
            .iter()
            .all(|f| f.contains("got no full response")),
        "{:?}",
        report.failures
    );
}

#[test]
fn driver_check_refuses_a_silent_fallback_unless_allowed() {
    for d in [Driver::Uring, Driver::Legacy] {
        assert_eq!(driver_check(d, d, false), Ok(()));
        assert_eq!(driver_check(d, d, true), Ok(()));
    }
    let refused = driver_check(Driver::Uring, Driver::Legacy, false)
        .expect_err("io_uring fallen back to epoll fails the test");
    assert!(refused.contains(ALLOW_EPOLL_FALLBACK_ENV), "{refused}");
    assert_eq!(driver_check(Driver::Uring, Driver::Legacy, true), Ok(()));
    // Asked for epoll, running io_uring: no setting makes that right.
    assert!(driver_check(Driver::Legacy, Driver::Uring, false).is_err());
    assert!(driver_check(Driver::Legacy, Driver::Uring, true).is_err());
}

#[test]
fn the_binarys_start_line_names_its_driver() {
    let line = |name: &str| {
        format!(
            "2026-01-01T00:00:00.000000Z  INFO coremesh: coremesh listening on 127.0.0.1:4140 \
             with 2 core(s), driver {name}"
        )
    };
    assert_eq!(
        driver_in_start_line(&line(coremesh::driver_name(Driver::Uring))),
        Some(Driver::Uring)
    );
    assert_eq!(
        driver_in_start_line(&line(coremesh::driver_name(Driver::Legacy))),
        Some(Driver::Legacy)
    );
    assert_eq!(driver_in_start_line(&line("kqueue")), None);
    assert_eq!(
        driver_in_start_line("INFO coremesh: admin server on http://127.0.0.1:1"),
        None
    );
}

#[test]
fn each_driver_runs_what_it_names() {
    // start_proxy fails a test whose proxy runs another driver than asked; this shows it
    // directly: the handle reports the driver asked for (io_uring only may fall back, and
    // only with the opt-out set).
    let upstream = Upstream::echo();
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let fell_back = driver == Driver::Uring && proxy.driver() == Driver::Legacy;
        assert!(
            proxy.driver() == driver || (fell_back && epoll_fallback_allowed()),
            "asked for {driver:?}, running {:?}",
            proxy.driver()
        );
        assert_eq!(
            client::get(proxy.addr(), "/", &[])
                .expect("a response")
                .status,
            200
        );
    });
}

/// Whether `addr` refuses a connect.
fn refused(addr: SocketAddr) -> bool {
    matches!(TcpStream::connect(addr), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

/// Whether a new socket (with `SO_REUSEADDR`, the most a test's listener ever asks) can
/// bind `addr`.
fn bindable(addr: SocketAddr) -> bool {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("create a socket");
    socket.set_reuse_address(true).expect("SO_REUSEADDR");
    socket.bind(&addr.into()).is_ok()
}

#[test]
fn a_closed_port_refuses_and_nobody_else_can_take_it() {
    let addr = closed_port_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    for _ in 0..3 {
        assert!(refused(addr), "connects to {addr} are refused");
    }
    assert!(TcpListener::bind(addr).is_err(), "{addr} stays held");
    assert!(!bindable(addr), "{addr} stays held, SO_REUSEADDR or not");
    assert_ne!(
        closed_port_addr(),
        addr,
        "each call holds a port of its own"
    );
    assert!(refused(addr), "still refused later in the test");
}

#[test]
fn a_stopped_relay_refuses_keeps_its_port_and_comes_back_on_it() {
    let upstream = Upstream::echo_named("behind");
    let mut relay = Restartable::start(upstream.addr());
    let addr = relay.addr();
    let through = |what: &str| {
        let r = client::get(addr, "/", &[]).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.header("x-upstream").as_deref(), Some("behind"), "{what}");
    };
    through("before the stop");
    for round in 0..3 {
        relay.stop();
        assert!(!relay.is_running());
        assert!(
            refused(addr),
            "round {round}: stopped, connects are refused"
        );
        assert!(
            !bindable(addr),
            "round {round}: stopped, the port stays the relay's"
        );
        relay.restart();
        assert_eq!(relay.addr(), addr);
        through(&format!("round {round}: after the restart"));
    }
    assert_eq!(upstream.requests_received(), 4);
}
