//! End-to-end HTTP/1.1 framing through the proxy, each case on both drivers: Content-Length,
//! chunked with trailers, close-delimited, HEAD/204/304, `Expect: 100-continue`, HTTP/1.0,
//! `Connection: close`, hop-by-hop headers, and 10 MiB bodies streamed both ways.

use coremesh_tests::client::{self, chunked_body, BodyFraming, Client};
use coremesh_tests::data::{pseudo_random_bytes, sha1_hex};
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};

const TEN_MIB: usize = 10 * 1024 * 1024;

#[test]
fn content_length_bodies_both_directions() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("cl", |req| {
            let mut body = req.body.clone();
            body.reverse();
            Action::Respond(Response::ok(body))
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let response = client::request(proxy.addr(), "POST", "/cl", &[], Some(b"hello world"))
            .expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"dlrow olleh");
        assert_eq!(response.framing, BodyFraming::ContentLength(11));
        assert_eq!(response.header("x-upstream").as_deref(), Some("cl"));
        let received = upstream.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body, b"hello world");
        assert_eq!(received[0].header("content-length").as_deref(), Some("11"));
    });
}

#[test]
fn chunked_request_and_response_with_trailers_pass_through() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("chunked", |req| {
            let trailer = format!("got-{}", req.trailer("x-req-trailer").unwrap_or_default());
            let response = Response::ok(req.body.clone())
                .header("Trailer", "x-resp-trailer")
                .chunked(&[("x-resp-trailer", &trailer)]);
            Action::Respond(response)
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let payload = b"a chunked request body, sent in pieces";
        let framed = chunked_body(payload, 7, &[("x-req-trailer", "abc")]);
        c.send_request(
            "POST",
            "/chunked",
            &[
                ("Transfer-Encoding", "chunked"),
                ("Trailer", "x-req-trailer"),
            ],
            Some(&framed),
        )
        .unwrap();
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(
            response.framing,
            BodyFraming::Chunked,
            "trailers need chunked framing to the client"
        );
        assert_eq!(response.body, payload);
        assert_eq!(
            response.trailer("x-resp-trailer").as_deref(),
            Some("got-abc"),
            "response trailers reach the client"
        );
        let received = upstream.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].body, payload);
        assert_eq!(
            received[0].trailer("x-req-trailer").as_deref(),
            Some("abc"),
            "request trailers reach the upstream"
        );
    });
}

#[test]
fn close_delimited_response_reaches_the_client_whole() {
    for_each_driver(|driver| {
        let body = pseudo_random_bytes(256 * 1024, 1);
        let sent = body.clone();
        let upstream = Upstream::start("eof", move |_| {
            Action::Respond(Response::ok(sent.clone()).close_delimited())
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let response = client::get(proxy.addr(), "/eof", &[]).expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body.len(), body.len());
        assert_eq!(sha1_hex(&response.body), sha1_hex(&body));
    });
}

#[test]
fn head_204_304_have_no_body() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("nobody", |req| match req.path.as_str() {
            "/204" => Action::Respond(Response::new(204)),
            "/304" => Action::Respond(Response::new(304).header("ETag", "\"v1\"")),
            _ => Action::Respond(Response::ok("eleven byte")),
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");

        c.send_request("HEAD", "/head", &[], None).unwrap();
        let head = c.read_response(true).expect("HEAD response");
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length").as_deref(),
            Some("11"),
            "HEAD keeps the GET's Content-Length"
        );

        c.send_request("GET", "/204", &[], None).unwrap();
        let no_content = c.read_response(false).expect("204 response");
        assert_eq!(no_content.status, 204);
        assert_eq!(no_content.framing, BodyFraming::NoBody);

        c.send_request("GET", "/304", &[("If-None-Match", "\"v1\"")], None)
            .unwrap();
        let not_modified = c.read_response(false).expect("304 response");
        assert_eq!(not_modified.status, 304);
        assert_eq!(not_modified.header("etag").as_deref(), Some("\"v1\""));

        // Any stray body byte after those heads would corrupt this response.
        c.send_request("GET", "/after", &[], None).unwrap();
        let after = c
            .read_response(false)
            .expect("the response after HEAD/204/304");
        assert_eq!(
            (after.status, after.body.as_slice()),
            (200, &b"eleven byte"[..])
        );
        assert!(!c.peer_closed_now(), "the connection stays open");
        let methods: Vec<_> = upstream
            .received()
            .iter()
            .map(|r| r.method.clone())
            .collect();
        assert_eq!(methods, ["HEAD", "GET", "GET", "GET"]);
        // The proxy read each bodiless response to its end and pooled the connection: all
        // four exchanges on one upstream connection, in order. A proxy that waited for the
        // HEAD's 11 bytes, or took a 204/304 as close-delimited, would have had to drop the
        // connection and open another.
        assert_eq!(
            upstream.connections_accepted(),
            1,
            "one pooled upstream connection"
        );
        let on_the_wire: Vec<(u64, u64)> = upstream
            .received()
            .iter()
            .map(|r| (r.connection_id, r.index_in_connection))
            .collect();
        assert_eq!(on_the_wire, [(0, 0), (0, 1), (0, 2), (0, 3)]);
    });
}

#[test]
fn expect_100_continue_gets_interim_then_final_and_body_arrives_once() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(b"PUT /upload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n").unwrap();
        let interim = c
            .read_head_only()
            .expect("an interim response before the body is sent");
        assert_eq!(
            interim.status,
            100,
            "first response head: {:?}",
            String::from_utf8_lossy(&interim.raw_head)
        );
        c.send_raw(b"hello world").unwrap();
        let response = c.read_response(false).expect("the final response");
        assert_eq!(response.status, 200);
        assert!(
            response.interim.is_empty(),
            "exactly one 100 Continue, got {} more",
            response.interim.len()
        );
        let received = upstream.received();
        assert_eq!(received.len(), 1, "the upstream receives the request once");
        assert_eq!(
            received[0].body, b"hello world",
            "the upstream receives the body once"
        );
        assert_eq!(upstream.requests_received(), 1);
    });
}

#[test]
fn http10_client_gets_its_response_then_the_connection_closes() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);
        assert!(
            response.body_text().starts_with("GET /old "),
            "body: {}",
            response.body_text()
        );
        assert!(
            c.is_closed_by_peer(),
            "the proxy closes an HTTP/1.0 connection after the response"
        );
    });
}

#[test]
fn http10_client_never_gets_a_chunked_response() {
    // RFC 9112 §7.1: chunked must not be sent to an HTTP/1.0 recipient; the proxy has to
    // delimit the body another way (close-delimited or a length).
    for_each_driver(|driver| {
        let upstream = Upstream::start("chunked", |_| {
            Action::Respond(Response::ok("chunked upstream body").chunked(&[]))
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(b"GET /old HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);
        assert_ne!(
            response.framing,
            BodyFraming::Chunked,
            "head: {}",
            String::from_utf8_lossy(&response.raw_head)
        );
        assert_eq!(response.body, b"chunked upstream body");
        assert!(c.is_closed_by_peer());
    });
}

#[test]
fn connection_close_is_honoured() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_request("GET", "/bye", &[("Connection", "close")], None)
            .unwrap();
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);
        assert!(response.body_text().starts_with("GET /bye "));
        assert!(
            c.is_closed_by_peer(),
            "the proxy closes after the response to `Connection: close`"
        );
    });
}

#[test]
fn hop_by_hop_headers_are_not_forwarded_and_end_to_end_ones_are() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("hop", |req| {
            let response = Response::ok(echo_body(req))
                .header("Connection", "x-resp-hop")
                .header("X-Resp-Hop", "1")
                .header("Keep-Alive", "timeout=5")
                .header("Proxy-Connection", "keep-alive")
                .header("X-Resp-End", "kept");
            Action::Respond(response)
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let headers = [
            ("Connection", "keep-alive, X-Custom-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("X-Custom-Hop", "secret"),
            ("X-End-To-End", "kept"),
        ];
        c.send_request("GET", "/hop", &headers, None).unwrap();
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);

        let received = upstream.received();
        assert_eq!(received.len(), 1);
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "x-custom-hop",
        ] {
            assert!(
                !received[0].has_header(name),
                "hop-by-hop header {name} reached the upstream: {:?}",
                received[0].header(name)
            );
        }
        assert_eq!(received[0].header("x-end-to-end").as_deref(), Some("kept"));

        for name in ["x-resp-hop", "keep-alive", "proxy-connection"] {
            assert!(
                !response.has_header(name),
                "hop-by-hop response header {name} reached the client"
            );
        }
        assert!(
            !response
                .header_tokens("connection")
                .contains(&"x-resp-hop".to_string()),
            "the upstream's Connection header reached the client"
        );
        assert_eq!(response.header("x-resp-end").as_deref(), Some("kept"));
    });
}

#[test]
fn ten_mib_request_body_streams_through_intact() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("sink", |req| {
            Action::Respond(Response::ok(format!(
                "{} {}",
                req.body.len(),
                sha1_hex(&req.body)
            )))
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let body = pseudo_random_bytes(TEN_MIB, 10);
        let expected = format!("{TEN_MIB} {}", sha1_hex(&body));

        let response =
            client::request(proxy.addr(), "POST", "/upload", &[], Some(&body)).expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body_text(), expected, "Content-Length upload");

        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let framed = chunked_body(&body, 64 * 1024, &[]);
        c.send_request(
            "POST",
            "/upload-chunked",
            &[("Transfer-Encoding", "chunked")],
            Some(&framed),
        )
        .unwrap();
        let response = c.read_response(false).expect("a response");
        assert_eq!(response.status, 200);
        assert_eq!(response.body_text(), expected, "chunked upload");
    });
}

#[test]
fn ten_mib_response_body_streams_through_intact() {
    for_each_driver(|driver| {
        let body = pseudo_random_bytes(TEN_MIB, 11);
        let expected = sha1_hex(&body);
        let upstream = Upstream::start("source", move |req| {
            let response = Response::ok(body.clone());
            Action::Respond(if req.path == "/chunked" {
                response.chunked(&[])
            } else {
                response
            })
        });
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        for path in ["/length", "/chunked"] {
            c.send_request("GET", path, &[], None).unwrap();
            let response = c.read_response(false).expect("a response");
            assert_eq!(response.status, 200, "{path}");
            assert_eq!(response.body.len(), TEN_MIB, "{path}");
            assert_eq!(sha1_hex(&response.body), expected, "{path}");
        }
    });
}
