//! Every configured limit exactly at its value and one past it, end to end on both drivers:
//! request and response head size, header count, body size (Content-Length, chunked kept
//! for replay, chunked streamed), client connections per core, idle timeouts (client and
//! pooled upstream), a slow body (408) and the idle pool size.
//!
//! Each test configures small values; a timeout under test is short and the test waits for
//! its effect (a close, an answer), never for the clock.

use coremesh_discovery::{Config, DEFAULT_REPLAY_BODY_LIMIT};
use coremesh_tests::client::{chunked_body, Client};
use coremesh_tests::data::pseudo_random_bytes;
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::traffic::{answered_by, get_on, wait_until};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use coremesh_tests::Driver;
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Bound on every wait for a condition: only turns a hang into a failure.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// `max_header_bytes` under test (the smallest the configuration accepts is 1024).
const HEAD_LIMIT: usize = 2048;
/// `max_headers` under test (the smallest accepted is 8).
const HEADER_COUNT_LIMIT: usize = 16;
/// A timeout under test: short, since each test waits for its effect.
const SHORT_TIMEOUT_MS: u64 = 300;

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    assert!(
        wait_until(WAIT_LIMIT, Duration::from_millis(5), done),
        "timed out waiting for {what}"
    );
}

/// An echo upstream and a proxy to it, with `configure` applied.
fn echo_proxy(
    driver: Driver,
    configure: impl FnOnce(&mut Config),
) -> (Upstream, coremesh_tests::TestProxy) {
    let upstream = Upstream::echo();
    let mut config = one_service(&[upstream.addr()]);
    configure(&mut config);
    let proxy = start_proxy(driver, config);
    (upstream, proxy)
}

/// Send `raw` on a new connection and read the answer, which must be `status` with the
/// connection closed after it.
fn rejected_with(proxy: &coremesh_tests::TestProxy, raw: &[u8], status: u16, what: &str) {
    let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
    c.send_raw(raw).expect("send");
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("{what}: no response: {e}"));
    assert_eq!(r.status, status, "{what}: {}", r.body_text());
    assert!(
        c.is_closed_by_peer(),
        "{what}: connection closed after {status}"
    );
}

/// A GET whose head is exactly `len` bytes, padded in an `X-Pad` header.
fn request_head_of(len: usize) -> (Vec<u8>, usize) {
    let start = "GET /h HTTP/1.1\r\nHost: x\r\nX-Pad: ";
    let end = "\r\n\r\n";
    let pad = len - start.len() - end.len();
    let raw = format!("{start}{}{end}", "p".repeat(pad)).into_bytes();
    assert_eq!(raw.len(), len);
    (raw, pad)
}

#[test]
fn request_head_at_the_limit_passes_and_one_byte_over_gets_431() {
    for_each_driver(|driver| {
        let (upstream, proxy) = echo_proxy(driver, |c| c.defaults.max_header_bytes = HEAD_LIMIT);
        let (at, pad) = request_head_of(HEAD_LIMIT);
        let mut c = Client::connect(proxy.addr()).expect("connect");
        c.send_raw(&at).expect("send");
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200, "{HEAD_LIMIT} bytes: {}", r.body_text());
        assert_eq!(
            upstream.received()[0].header("x-pad").map(|v| v.len()),
            Some(pad)
        );

        let (over, _) = request_head_of(HEAD_LIMIT + 1);
        rejected_with(&proxy, &over, 431, "one byte over");
        assert_eq!(
            upstream.requests_received(),
            1,
            "the oversized head went nowhere"
        );
    });
}

/// The head the test upstream writes for `Response::ok(body).header("x-pad", pad)` to a
/// keep-alive request, byte for byte (see `write_response` in the harness).
fn upstream_head_len(name: &str, pad: usize, body_len: usize, extra: &[(String, String)]) -> usize {
    let mut head = format!("HTTP/1.1 200 OK\r\nx-pad: {}\r\n", "p".repeat(pad));
    for (n, v) in extra {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str(&format!(
        "x-upstream: {name}\r\ncontent-length: {body_len}\r\n\r\n"
    ));
    head.len()
}

#[test]
fn response_head_at_the_limit_passes_and_one_byte_over_gets_502() {
    for_each_driver(|driver| {
        let base = upstream_head_len("padded", 0, 2, &[]);
        let upstream = Upstream::start("padded", move |req| {
            let len: usize = req.path.trim_start_matches('/').parse().unwrap_or(0);
            Action::Respond(Response::ok("ok").header("x-pad", &"p".repeat(len - base)))
        });
        let mut config = one_service(&[upstream.addr()]);
        config.defaults.max_header_bytes = HEAD_LIMIT;
        let proxy = start_proxy(driver, config);
        let mut c = Client::connect(proxy.addr()).expect("connect");
        let r = get_on(&mut c, &format!("/{HEAD_LIMIT}"), &[], "head at the limit");
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(
            r.raw_head.len(),
            HEAD_LIMIT,
            "the head reached the client unchanged, at exactly the limit"
        );
        assert_eq!(r.body_text(), "ok");

        let over = HEAD_LIMIT + 1;
        let r = get_on(&mut c, &format!("/{over}"), &[], "head one byte over");
        assert_eq!(
            (r.status, answered_by(&r)),
            (502, "proxy:upstream-bad-response".to_string()),
            "a {over}-byte response head: {}",
            String::from_utf8_lossy(&r.raw_head[..r.raw_head.len().min(200)])
        );
    });
}

#[test]
fn request_header_count_at_the_limit_passes_and_one_over_gets_431() {
    let request = |fields: usize| {
        // Host is one of the fields.
        let mut raw = b"GET /n HTTP/1.1\r\nHost: x\r\n".to_vec();
        for i in 1..fields {
            raw.extend_from_slice(format!("X-N-{i}: {i}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        raw
    };
    for_each_driver(|driver| {
        let (upstream, proxy) = echo_proxy(driver, |c| c.defaults.max_headers = HEADER_COUNT_LIMIT);
        let mut c = Client::connect(proxy.addr()).expect("connect");
        c.send_raw(&request(HEADER_COUNT_LIMIT)).expect("send");
        let r = c.read_response(false).expect("a response");
        assert_eq!(
            r.status,
            200,
            "{HEADER_COUNT_LIMIT} fields: {}",
            r.body_text()
        );
        let got = &upstream.received()[0];
        for i in 1..HEADER_COUNT_LIMIT {
            assert_eq!(got.header(&format!("x-n-{i}")), Some(i.to_string()));
        }

        rejected_with(
            &proxy,
            &request(HEADER_COUNT_LIMIT + 1),
            431,
            "one field over",
        );
        assert_eq!(upstream.requests_received(), 1);
    });
}

#[test]
fn response_header_count_at_the_limit_passes_and_one_over_gets_502() {
    for_each_driver(|driver| {
        // The harness adds x-upstream and content-length to the handler's fields.
        let upstream = Upstream::start("many", |req| {
            let fields: usize = req.path.trim_start_matches('/').parse().unwrap_or(0);
            let mut response = Response::ok("ok");
            for i in 0..fields - 2 {
                response = response.header(&format!("x-r-{i}"), &i.to_string());
            }
            Action::Respond(response)
        });
        let mut config = one_service(&[upstream.addr()]);
        config.defaults.max_headers = HEADER_COUNT_LIMIT;
        let proxy = start_proxy(driver, config);
        let mut c = Client::connect(proxy.addr()).expect("connect");
        let r = get_on(
            &mut c,
            &format!("/{HEADER_COUNT_LIMIT}"),
            &[],
            "at the limit",
        );
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(r.headers.len(), HEADER_COUNT_LIMIT, "every field relayed");

        let over = HEADER_COUNT_LIMIT + 1;
        let r = get_on(&mut c, &format!("/{over}"), &[], "one over");
        assert_eq!(
            (r.status, answered_by(&r)),
            (502, "proxy:upstream-bad-response".to_string()),
            "{over} response fields"
        );
    });
}

/// `max_body_bytes` for bodies kept whole for replay (below the replay limit).
const SMALL_BODY_LIMIT: u64 = 100;

#[test]
fn content_length_body_at_the_limit_passes_and_one_byte_over_gets_413() {
    for_each_driver(|driver| {
        let (upstream, proxy) =
            echo_proxy(driver, |c| c.defaults.max_body_bytes = SMALL_BODY_LIMIT);
        let at = pseudo_random_bytes(SMALL_BODY_LIMIT as usize, 1);
        let mut c = Client::connect(proxy.addr()).expect("connect");
        c.send_request("POST", "/up", &[], Some(&at)).expect("send");
        let r = c.read_response(false).expect("a response");
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(upstream.received()[0].body, at);

        let over = pseudo_random_bytes(SMALL_BODY_LIMIT as usize + 1, 2);
        let mut raw = format!(
            "POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            over.len()
        )
        .into_bytes();
        raw.extend_from_slice(&over);
        rejected_with(&proxy, &raw, 413, "one byte over");
        assert_eq!(
            upstream.requests_received(),
            1,
            "nothing of it went upstream"
        );
    });
}

/// POST a chunked body of `len` bytes (in `chunk`-byte chunks) on a new connection.
fn post_chunked(proxy: &coremesh_tests::TestProxy, body: &[u8], chunk: usize) -> (u16, bool) {
    let mut c = Client::connect(proxy.addr()).expect("connect");
    let framed = chunked_body(body, chunk, &[]);
    c.send_request(
        "POST",
        "/up",
        &[("Transfer-Encoding", "chunked")],
        Some(&framed),
    )
    .expect("send");
    let r = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("chunked body of {} bytes: no response: {e}", body.len()));
    let closed = r.has_connection_close() && c.is_closed_by_peer();
    (r.status, closed)
}

#[test]
fn chunked_body_kept_for_replay_at_the_limit_passes_and_one_byte_over_gets_413() {
    for_each_driver(|driver| {
        let (upstream, proxy) =
            echo_proxy(driver, |c| c.defaults.max_body_bytes = SMALL_BODY_LIMIT);
        let at = pseudo_random_bytes(SMALL_BODY_LIMIT as usize, 3);
        assert_eq!(post_chunked(&proxy, &at, 30), (200, false));
        assert_eq!(upstream.received()[0].body, at);

        let over = pseudo_random_bytes(SMALL_BODY_LIMIT as usize + 1, 4);
        assert_eq!(
            post_chunked(&proxy, &over, 30),
            (413, true),
            "one byte over: 413 and the connection closed"
        );
        assert_eq!(upstream.received().len(), 1, "nothing of it went upstream");
    });
}

#[test]
fn streamed_chunked_body_at_the_limit_passes_and_one_byte_over_gets_413() {
    // Larger than the replay limit, so the body streams and the limit is counted on the way.
    let limit = DEFAULT_REPLAY_BODY_LIMIT as u64 + 40_000;
    for_each_driver(|driver| {
        let (upstream, proxy) = echo_proxy(driver, |c| c.defaults.max_body_bytes = limit);
        let at = pseudo_random_bytes(limit as usize, 5);
        assert_eq!(
            post_chunked(&proxy, &at, 1000),
            (200, false),
            "{limit} body bytes (the chunk framing does not count)"
        );
        assert_eq!(upstream.received()[0].body, at);

        let over = pseudo_random_bytes(limit as usize + 1, 6);
        assert_eq!(
            post_chunked(&proxy, &over, 1000),
            (413, true),
            "one byte over"
        );
        assert_eq!(
            upstream.received().len(),
            1,
            "the upstream never got a complete over-limit request"
        );
    });
}

#[test]
fn connections_at_the_limit_are_served_and_one_over_is_closed() {
    const MAX: usize = 2;
    for_each_driver(|driver| {
        let (upstream, proxy) = echo_proxy(driver, |c| c.defaults.max_connections = MAX);
        // Each answered request proves its connection is counted by the proxy.
        let mut open: Vec<Client> = (0..MAX)
            .map(|i| {
                let mut c = Client::connect(proxy.addr()).expect("connect");
                let r = get_on(&mut c, &format!("/c/{i}"), &[], &format!("connection {i}"));
                assert_eq!(r.status, 200, "connection {i} of {MAX}");
                c
            })
            .collect();
        let mut over = Client::connect(proxy.addr()).expect("the kernel accepts it");
        assert!(
            over.is_closed_by_peer(),
            "connection {} of a limit of {MAX} is closed at once",
            MAX + 1
        );

        // One leaves; a new connection is served once the proxy has seen it go.
        drop(open.remove(0));
        wait_for("a connection to be served after one closed", || {
            let Ok(mut c) = Client::connect(proxy.addr()) else {
                return false;
            };
            c.send_request("GET", "/again", &[], None).is_ok()
                && c.read_response(false).is_ok_and(|r| r.status == 200)
        });
        assert_eq!(
            upstream.requests_received(),
            MAX as u64 + 1,
            "connections over the limit never reached the upstream"
        );
    });
}

#[test]
fn idle_client_connection_is_closed_quietly_after_its_timeout() {
    for_each_driver(|driver| {
        let (_upstream, proxy) = echo_proxy(driver, |c| {
            c.defaults.client_idle_timeout_ms = SHORT_TIMEOUT_MS;
            c.defaults.header_read_timeout_ms = SHORT_TIMEOUT_MS;
        });
        // After a response.
        let mut c = Client::connect(proxy.addr()).expect("connect");
        assert_eq!(get_on(&mut c, "/once", &[], "the only request").status, 200);
        assert!(
            c.is_closed_by_peer(),
            "the proxy closes a keep-alive connection idle past client_idle_timeout_ms, \
             sending nothing"
        );
        // Before any byte: closed without a 408 (there was no request to answer).
        let mut silent = Client::connect(proxy.addr()).expect("connect");
        assert!(
            silent.is_closed_by_peer(),
            "a connection that sends nothing is closed after header_read_timeout_ms"
        );
    });
}

#[test]
fn idle_pooled_upstream_connection_is_closed_after_its_timeout() {
    for_each_driver(|driver| {
        let (upstream, proxy) = echo_proxy(driver, |c| {
            c.defaults.pool_idle_timeout_ms = SHORT_TIMEOUT_MS;
        });
        let mut c = Client::connect(proxy.addr()).expect("connect");
        assert_eq!(get_on(&mut c, "/first", &[], "first").status, 200);
        wait_for("the proxy to close its idle pooled connection", || {
            upstream.connections_open() == 0
        });
        assert_eq!(get_on(&mut c, "/second", &[], "second").status, 200);
        let ids: Vec<_> = upstream
            .received()
            .iter()
            .map(|r| r.connection_id)
            .collect();
        assert_eq!(ids, [0, 1], "the second request needed a new connection");
    });
}

#[test]
fn slow_body_gets_408_and_nothing_complete_goes_upstream() {
    for_each_driver(|driver| {
        // Kept for replay: read whole before forwarding, within the request timeout.
        let (upstream, proxy) = echo_proxy(driver, |c| {
            c.defaults.request_timeout_ms = SHORT_TIMEOUT_MS;
        });
        rejected_with(
            &proxy,
            b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf!",
            408,
            "half of a small body",
        );
        assert_eq!(upstream.bytes_received(), 0, "nothing was forwarded");
        drop(proxy);

        // Streamed: each read of the body must come within the client idle timeout.
        let (upstream, proxy) = echo_proxy(driver, |c| {
            c.defaults.client_idle_timeout_ms = SHORT_TIMEOUT_MS;
        });
        let len = DEFAULT_REPLAY_BODY_LIMIT * 2;
        let mut raw =
            format!("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        raw.extend_from_slice(&pseudo_random_bytes(DEFAULT_REPLAY_BODY_LIMIT + 1, 7));
        rejected_with(&proxy, &raw, 408, "part of a streamed body");
        wait_for("the proxy to drop the upstream connection", || {
            upstream.connections_open() == 0
        });
        assert!(
            upstream.received().is_empty(),
            "the upstream never got a complete request"
        );
    });
}

/// Requests to a path are held at the upstream until `n` of them have arrived.
#[derive(Default)]
struct Gate {
    arrived: Mutex<HashMap<String, usize>>,
    changed: Condvar,
}

impl Gate {
    fn pass_when(&self, path: &str, n: usize) {
        let mut arrived = self.arrived.lock().unwrap_or_else(|p| p.into_inner());
        *arrived.entry(path.to_string()).or_default() += 1;
        self.changed.notify_all();
        let _ = self
            .changed
            .wait_timeout_while(arrived, WAIT_LIMIT, |a| {
                a.get(path).copied().unwrap_or(0) < n
            })
            .unwrap_or_else(|p| p.into_inner());
    }
}

#[test]
fn pool_keeps_pool_max_idle_connections_and_closes_the_one_over() {
    const MAX_IDLE: usize = 2;
    const CONCURRENT: usize = MAX_IDLE + 1;
    for_each_driver(|driver| {
        let gate = Arc::new(Gate::default());
        let held = gate.clone();
        let upstream = Upstream::start("gated", move |req| {
            held.pass_when(&req.path, CONCURRENT);
            Action::Respond(Response::ok(echo_body(req)))
        });
        let mut config = one_service(&[upstream.addr()]);
        config.defaults.pool_max_idle = MAX_IDLE;
        config.defaults.pool_idle_timeout_ms = 600_000;
        let proxy = start_proxy(driver, config);
        let mut clients: Vec<Client> = (0..CONCURRENT)
            .map(|_| Client::connect(proxy.addr()).expect("connect"))
            .collect();
        for round in 1..=2 {
            // All requests of a round are in flight together, each on its own upstream
            // connection: pooled ones first, new ones for the rest.
            let path = format!("/round/{round}");
            for c in clients.iter_mut() {
                c.send_request("GET", &path, &[], None).expect("send");
            }
            for (i, c) in clients.iter_mut().enumerate() {
                let r = c
                    .read_response(false)
                    .unwrap_or_else(|e| panic!("round {round}, client {i}: {e}"));
                assert_eq!(r.status, 200, "round {round}, client {i}");
            }
            wait_for("the pool to close the connection over its size", || {
                upstream.connections_open() == MAX_IDLE
            });
        }
        assert_eq!(
            upstream.connections_accepted(),
            (CONCURRENT + (CONCURRENT - MAX_IDLE)) as u64,
            "round 1 opened {CONCURRENT}; the pool kept {MAX_IDLE}, so round 2 opened one"
        );
    });
}
