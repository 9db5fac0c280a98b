//! End-to-end keep-alive and pipelining through the proxy, on both drivers: sequential
//! requests reuse one upstream connection, and pipelined requests are answered in order.

use coremesh_tests::client::{build_request, chunked_body, Client};
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use std::time::Duration;

#[test]
fn hundred_sequential_requests_use_one_upstream_connection() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        for i in 0..100 {
            c.send_request("GET", &format!("/seq/{i}"), &[], None)
                .unwrap();
            let response = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(response.status, 200, "request {i}");
            let expected = format!("GET /seq/{i} HTTP/1.1\n");
            assert!(
                response.body_text().starts_with(&expected),
                "request {i} got: {}",
                response.body_text()
            );
        }
        assert_eq!(upstream.requests_received(), 100);
        assert_eq!(
            upstream.connections_accepted(),
            1,
            "all 100 requests over one pooled upstream connection"
        );
        let received = upstream.received();
        let indices: Vec<u64> = received.iter().map(|r| r.index_in_connection).collect();
        assert_eq!(indices, (0..100).collect::<Vec<u64>>());
    });
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for_each_driver(|driver| {
        // Earlier requests take longer, so answering in completion order would reorder them.
        let upstream = Upstream::start("slow-first", |req| {
            let n: u64 = req
                .path
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            Action::delay(
                Duration::from_millis(20 * (5 - n.min(5))),
                Action::Respond(Response::ok(echo_body(req))),
            )
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let mut batch = Vec::new();
        for i in 0..5 {
            batch.extend(build_request("GET", &format!("/pipe/{i}"), &[], None));
        }
        c.send_raw(&batch).unwrap();
        for i in 0..5 {
            let response = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("response {i}: {e}"));
            assert_eq!(response.status, 200);
            let expected = format!("GET /pipe/{i} HTTP/1.1\n");
            assert!(
                response.body_text().starts_with(&expected),
                "response {i} was: {}",
                response.body_text()
            );
        }
        assert_eq!(upstream.requests_received(), 5);
    });
}

#[test]
fn pipelined_requests_with_bodies_and_head_are_answered_in_order() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let mut batch = build_request("GET", "/m/0", &[], None);
        batch.extend(build_request("POST", "/m/1", &[], Some(b"length body")));
        let framed = chunked_body(b"chunked body", 4, &[]);
        batch.extend(build_request(
            "POST",
            "/m/2",
            &[("Transfer-Encoding", "chunked")],
            Some(&framed),
        ));
        batch.extend(build_request("HEAD", "/m/3", &[], None));
        batch.extend(build_request("GET", "/m/4", &[], None));
        c.send_raw(&batch).unwrap();
        let expected = [
            ("GET", 0),
            ("POST", 11),
            ("POST", 12),
            ("HEAD", 0),
            ("GET", 0),
        ];
        for (i, (method, body_len)) in expected.iter().enumerate() {
            let response = c
                .read_response(*method == "HEAD")
                .unwrap_or_else(|e| panic!("response {i}: {e}"));
            assert_eq!(response.status, 200, "response {i}");
            if *method == "HEAD" {
                assert!(response.body.is_empty());
                continue;
            }
            let text = response.body_text();
            assert!(
                text.starts_with(&format!("{method} /m/{i} HTTP/1.1\n")),
                "response {i} was: {text}"
            );
            assert!(
                text.contains(&format!("\nbody-length: {body_len}\n")),
                "response {i} was: {text}"
            );
        }
        let received = upstream.received();
        let paths: Vec<_> = received.iter().map(|r| r.path.clone()).collect();
        assert_eq!(paths, ["/m/0", "/m/1", "/m/2", "/m/3", "/m/4"]);
        assert_eq!(received[1].body, b"length body");
        assert_eq!(received[2].body, b"chunked body");
        // The HEAD's response left the pooled connection usable for the GET after it.
        assert_eq!(
            upstream.connections_accepted(),
            1,
            "one upstream connection"
        );
        assert!(
            received
                .iter()
                .enumerate()
                .all(|(i, r)| r.connection_id == 0 && r.index_in_connection == i as u64),
            "{:?}",
            received
                .iter()
                .map(|r| (r.connection_id, r.index_in_connection))
                .collect::<Vec<_>>()
        );
    });
}
