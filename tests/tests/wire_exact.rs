//! Messages the proxy must pass on without changing their meaning, and outcomes it must
//! record as they were, each on both drivers and real sockets: a header-less HTTP/1.0
//! request, an upstream head with bare LF line endings, `Expect: 100-continue` in HTTP/1.0,
//! malformed and unsupported request-line versions, a response body the upstream breaks
//! off, interim responses of an attempt that is retried, and ejections of an endpoint that
//! two services share.

use coremesh_discovery::BalanceKind;
use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::client::Client;
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{
    for_each_driver, header_exact, one_service, route_all, route_to, service, services_with_routes,
    start_proxy,
};
use coremesh_tests::traffic::{answered_by, get_on};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use coremesh_tests::wire::find;

/// Every `\r\n\r\n` in `bytes`: a forwarded head has exactly one, at its end.
fn blank_lines(bytes: &[u8]) -> usize {
    bytes.windows(4).filter(|w| w == b"\r\n\r\n").count()
}

#[test]
fn header_less_http_1_0_request_reaches_the_upstream_as_one_request() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(b"GET /a HTTP/1.0\r\n\r\n").expect("send");
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200, "{}", response.body_text());
        assert!(
            c.is_closed_by_peer(),
            "an HTTP/1.0 exchange ends the connection"
        );

        let received = upstream.received();
        assert_eq!(received.len(), 1, "{received:#?}");
        let raw = &received[0].raw;
        let text = String::from_utf8_lossy(raw);
        assert!(text.starts_with("GET /a HTTP/1.0\r\n"), "{text:?}");
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        assert_eq!(blank_lines(raw), 1, "the head has one end: {text:?}");
        assert_eq!(received[0].header("connection").as_deref(), Some("close"));
        assert!(
            received[0].has_header("x-coremesh-timeout-ms"),
            "the deadline goes in the head: {text:?}"
        );
        assert_eq!(upstream.requests_received(), 1);
        assert_eq!(upstream.bytes_received(), raw.len() as u64);
        assert_eq!(upstream.errors(), Vec::<String>::new());
    });
}

#[test]
fn bare_lf_response_head_reaches_the_client_with_crlf_and_its_status_line() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("lf", |req| {
            Action::Raw(
                format!(
                    "HTTP/1.1 201 Made\nContent-Length: {}\nX-Path: {}\n\n{}",
                    req.path.len(),
                    req.path,
                    req.path
                )
                .into_bytes(),
            )
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        for path in ["/first", "/second"] {
            let r = get_on(&mut c, path, &[], path);
            assert_eq!((r.status, r.reason.as_str()), (201, "Made"));
            assert!(
                r.raw_head.starts_with(b"HTTP/1.1 201 Made\r\n"),
                "{:?}",
                String::from_utf8_lossy(&r.raw_head)
            );
            assert_eq!(
                find(&r.raw_head, b"\n\n"),
                None,
                "no bare LF reaches the client"
            );
            assert_eq!(r.header("x-path").as_deref(), Some(path));
            assert_eq!(r.body, path.as_bytes());
        }
        assert_eq!(
            upstream.connections_accepted(),
            1,
            "the upstream connection was reused"
        );
    });
}

#[test]
fn expect_100_continue_is_ignored_for_http_1_0() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("echo", |req| Action::Respond(Response::ok(echo_body(req))));
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(b"POST /e HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello")
            .expect("send");
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.interim.len(),
            0,
            "no interim response to HTTP/1.0: {:?}",
            response
                .interim
                .iter()
                .map(|i| i.status)
                .collect::<Vec<_>>()
        );
        assert_eq!(response.version, "HTTP/1.1");
        let received = upstream.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body, b"hello");
        assert!(!received[0].has_header("expect"));
    });
}

#[test]
fn malformed_request_line_versions_get_400_and_unsupported_ones_505() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let cases: [(&[u8], u16); 8] = [
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505),
            (b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/11\r\nHost: a\r\n\r\n", 400),
            (b"GET / FOO/1.1\r\nHost: a\r\n\r\n", 400),
            (b"GET /\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400),
        ];
        for (raw, status) in cases {
            let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
            c.send_raw(raw).expect("send");
            let r = c.read_response(false).expect("a response");
            assert_eq!(r.status, status, "{:?}", String::from_utf8_lossy(raw));
            assert!(c.is_closed_by_peer());
        }
        assert_eq!(upstream.requests_received(), 0);
    });
}

/// One service over `upstreams`, round-robin, no retries, an admin server.
fn admin_proxy(driver: coremesh_tests::Driver, upstreams: &[&Upstream]) -> AdminProxy {
    let addrs: Vec<_> = upstreams.iter().map(|u| u.addr()).collect();
    let mut config = one_service(&addrs);
    config.services[0].overrides.balance = Some(BalanceKind::RoundRobin);
    config.services[0].overrides.max_attempts = Some(1);
    start_with_admin(driver, config)
}

/// Wait until `/metrics` parses with `check` true; the exposition.
fn metrics_when(proxy: &AdminProxy, what: &str, check: impl Fn(&Exposition) -> bool) -> Exposition {
    wait_for_admin(|| {
        let text = proxy.metrics_text();
        let e = Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}\n{text}"));
        (check(&e).then_some(e), text)
    })
    .unwrap_or_else(|last| panic!("/metrics never showed {what}:\n{last}"))
}

#[test]
fn a_response_body_broken_off_by_the_upstream_is_a_failure() {
    for_each_driver(|driver| {
        // Promises 100 bytes, sends 10, then resets.
        let broken = Upstream::start("broken", |_| {
            Action::RawThenReset(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789".to_vec(),
            )
        });
        let proxy = admin_proxy(driver, &[&broken]);
        let addr = broken.addr().to_string();

        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_request("GET", "/cut", &[], None).expect("send");
        let head = c
            .read_head_only()
            .expect("the head went out before the break");
        assert_eq!(head.status, 200);
        assert!(
            c.read_response(false).is_err() || c.is_closed_by_peer(),
            "the client must see the body cut short"
        );

        let view = wait_for_admin(|| {
            let list = proxy
                .endpoints()
                .service("backend")
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let done = list.iter().any(|e| e.requests == 1 && e.in_flight == 0);
            (done.then(|| list.clone()), format!("{list:#?}"))
        })
        .unwrap_or_else(|last| panic!("/endpoints never counted the request: {last}"));
        assert_eq!(
            (view[0].address.as_str(), view[0].requests, view[0].failures),
            (addr.as_str(), 1, 1),
            "the balancer saw a failure: {view:#?}"
        );
        let m = metrics_when(&proxy, "the broken response", |m| {
            m.value(
                "coremesh_errors_total",
                &[("kind", "upstream-broke-response")],
            ) == Some(1.0)
        });
        assert_eq!(
            m.value(
                "coremesh_errors_total",
                &[("kind", "upstream-broke-response")]
            ),
            Some(1.0)
        );
    });
}

#[test]
fn interim_responses_of_a_retried_attempt_reach_the_client_once() {
    for_each_driver(|driver| {
        // "hints" sends 103 then 503 (retried); "good" sends 103 then 200.
        let hints = Upstream::start("hints", |_| {
            Action::Raw(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nX-Upstream: hints\r\n\r\n"
                    .to_vec(),
            )
        });
        let good = Upstream::start("good", |_| {
            Action::Raw(
                b"HTTP/1.1 103 Early Hints\r\nLink: </b.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Upstream: good\r\n\r\nok"
                    .to_vec(),
            )
        });
        let mut config = one_service(&[hints.addr(), good.addr()]);
        let o = &mut config.services[0].overrides;
        o.balance = Some(BalanceKind::RoundRobin);
        o.max_attempts = Some(2);
        config.routes[0].retry_on = vec![503];
        let proxy = start_proxy(driver, config);

        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        // Round-robin starts at "hints": its 503 is retried on "good".
        let r = get_on(&mut c, "/x", &[], "retried request");
        assert_eq!((r.status, answered_by(&r)), (200, "good".to_string()));
        let links: Vec<_> = r
            .interim
            .iter()
            .map(|i| (i.status, i.header("link").unwrap_or_default()))
            .collect();
        assert_eq!(links, [(103, "</a.css>".to_string())]);
        assert_eq!(hints.requests_received() + good.requests_received(), 2);
    });
}

#[test]
fn ejections_of_an_endpoint_two_services_share_are_counted_once() {
    for_each_driver(|driver| {
        let shared = Upstream::fixed_named("shared", 503, b"no");
        let good_a = Upstream::fixed_named("good-a", 200, b"a");
        let good_b = Upstream::fixed_named("good-b", 200, b"b");
        let mut to_other = route_to("other");
        to_other.headers.push(header_exact("x-to", "other"));
        let mut config = services_with_routes(
            vec![
                service("front", &[shared.addr(), good_a.addr(), good_b.addr()]),
                service("other", &[shared.addr()]),
            ],
            vec![to_other, route_all("front")],
        );
        let o = &mut config.services[0].overrides;
        o.balance = Some(BalanceKind::RoundRobin);
        o.max_attempts = Some(1);
        o.eject_consecutive_failures = Some(5);
        o.eject_base_ms = Some(600_000);
        o.eject_max_ms = Some(600_000);
        let proxy = start_with_admin(driver, config);

        // Round-robin from the first endpoint: requests 0, 3, 6, 9, 12 go to "shared".
        let mut client = Client::connect(proxy.addr()).expect("connect");
        let shared_hits = (0..13)
            .map(|i| get_on(&mut client, "/x", &[], &format!("request {i}")))
            .filter(|r| answered_by(r) == "shared")
            .count();
        assert_eq!(shared_hits, 5);

        let addr = shared.addr().to_string();
        let ejections = |m: &Exposition, service: &str| {
            m.value(
                "coremesh_ejections_total",
                &[("service", service), ("endpoint", &addr)],
            )
        };
        metrics_when(&proxy, "the shared endpoint ejected from front", |m| {
            ejections(m, "front") == Some(1.0)
        });
        // Each scrape brings the counters up to the balancer's view: however often it
        // runs, one ejection stays one, and "other" never ejected it.
        for _ in 0..5 {
            let text = proxy.metrics_text();
            let m = Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}\n{text}"));
            assert_eq!(ejections(&m, "front"), Some(1.0), "{text}");
            assert_eq!(ejections(&m, "other"), Some(0.0), "{text}");
        }
    });
}

#[test]
fn a_streamed_body_moves_to_another_endpoint_when_the_first_refuses_to_connect() {
    for_each_driver(|driver| {
        let good = Upstream::start("good", |req| {
            Action::Respond(Response::ok(req.body.clone()))
        });
        let refusing = coremesh_tests::proxy::closed_port_addr();
        let mut config = one_service(&[refusing, good.addr()]);
        let o = &mut config.services[0].overrides;
        o.balance = Some(BalanceKind::RoundRobin);
        o.max_attempts = Some(2);
        let proxy = start_proxy(driver, config);

        // Larger than the replay limit, so the body is streamed, never kept whole; a POST,
        // so only "nothing went out" makes a second attempt safe.
        let body = coremesh_tests::data::pseudo_random_bytes(200 * 1024, 7);
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_request("POST", "/big", &[], Some(&body))
            .expect("send");
        let r = c.read_response(false).expect("a response");
        assert_eq!(
            (r.status, answered_by(&r)),
            (200, "good".to_string()),
            "{}",
            r.body_text()
        );
        assert_eq!(r.body.len(), body.len());
        assert!(r.body == body, "the echoed body differs");
        let received = good.received();
        assert_eq!(received.len(), 1, "the POST reached the good endpoint once");
        assert!(received[0].body == body);
    });
}
