//! End-to-end handling of bad input, on both drivers: strict RFC 9112 framing errors get 400,
//! the connection closed and nothing sent upstream; an oversized head gets 431, a slow head
//! 408; an unreachable upstream 502 and a hanging one 504.

use coremesh_discovery::Config;
use coremesh_tests::client::{self, Client};
use coremesh_tests::proxy::{closed_port_addr, for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::{Action, Upstream};
use coremesh_tests::Driver;

/// Send `raw` on a fresh connection and check the proxy answers `status`, closes the
/// connection when `must_close`, and forwards nothing: a good request sent afterwards on a
/// new connection must be the only thing the upstream ever received, byte for byte.
fn assert_rejected(
    driver: Driver,
    configure: impl FnOnce(&mut Config),
    raw: &[u8],
    status: u16,
    must_close: bool,
) {
    let upstream = Upstream::echo();
    let mut config = one_service(&[upstream.addr()]);
    configure(&mut config);
    let proxy = start_proxy(driver, config);
    let shown = String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned();

    let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
    c.send_raw(raw).expect("send the bad request");
    let response = c
        .read_response(false)
        .unwrap_or_else(|e| panic!("no response to {shown:?}: {e}"));
    assert_eq!(
        response.status,
        status,
        "status for {shown:?}, body {:?}",
        response.body_text()
    );
    if must_close {
        assert!(
            c.is_closed_by_peer(),
            "the proxy must close the connection after rejecting {shown:?}"
        );
    }
    drop(c);

    let good = client::get(proxy.addr(), "/after", &[]).expect("a good request after the bad one");
    assert_eq!(good.status, 200, "the proxy still serves good requests");
    let received = upstream.received();
    let paths: Vec<_> = received.iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/after"],
        "the upstream received only the good request (bad one: {shown:?})"
    );
    assert_eq!(upstream.requests_received(), 1);
    assert_eq!(
        upstream.bytes_received(),
        received[0].raw.len() as u64,
        "the upstream received bytes of the rejected request {shown:?}"
    );
    assert!(
        upstream.errors().is_empty(),
        "upstream saw: {:?}",
        upstream.errors()
    );
}

fn assert_400(driver: Driver, raw: &[u8]) {
    assert_rejected(driver, |_| {}, raw, 400, true);
}

#[test]
fn content_length_and_transfer_encoding_together_get_400() {
    for_each_driver(|driver| {
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        );
    });
}

#[test]
fn differing_content_lengths_get_400() {
    for_each_driver(|driver| {
        assert_400(driver, b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!");
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
        );
    });
}

#[test]
fn invalid_content_length_gets_400() {
    for_each_driver(|driver| {
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
        );
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
        );
    });
}

#[test]
fn unknown_transfer_coding_gets_400() {
    for_each_driver(|driver| {
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        );
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        );
    });
}

#[test]
fn invalid_chunk_size_gets_400() {
    for_each_driver(|driver| {
        assert_400(
            driver,
            b"POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        );
    });
}

#[test]
fn obs_fold_gets_400() {
    for_each_driver(|driver| {
        assert_400(
            driver,
            b"GET /bad HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        );
    });
}

#[test]
fn whitespace_before_colon_gets_400() {
    for_each_driver(|driver| {
        assert_400(driver, b"GET /bad HTTP/1.1\r\nHost : x\r\n\r\n");
        assert_400(
            driver,
            b"GET /bad HTTP/1.1\r\nHost: x\r\nX-Thing : y\r\n\r\n",
        );
    });
}

#[test]
fn head_over_the_limit_gets_431() {
    for_each_driver(|driver| {
        let mut raw = b"GET /big HTTP/1.1\r\nHost: x\r\n".to_vec();
        let filler = "a".repeat(120);
        for i in 0..64 {
            raw.extend_from_slice(format!("X-Filler-{i:02}: {filler}\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert!(raw.len() > 8 * 1024, "8 KiB of headers");
        assert_rejected(
            driver,
            |c| c.defaults.max_header_bytes = 4096,
            &raw,
            431,
            false,
        );
    });
}

#[test]
fn slow_head_gets_408() {
    for_each_driver(|driver| {
        // Half a head, then nothing: the proxy's header read timeout (300 ms) fires; the
        // client just waits for the answer (its own read time-out is 10 s).
        assert_rejected(
            driver,
            |c| c.defaults.header_read_timeout_ms = 300,
            b"GET /slow HTTP/1.1\r\nHost: x\r\n",
            408,
            true,
        );
    });
}

#[test]
fn unreachable_upstream_gets_502() {
    for_each_driver(|driver| {
        let proxy = start_proxy(driver, one_service(&[closed_port_addr()]));
        let response = client::get(proxy.addr(), "/nobody-home", &[]).expect("a response");
        assert_eq!(response.status, 502, "body {:?}", response.body_text());
    });
}

#[test]
fn hanging_upstream_gets_504() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("hang", |_| Action::Hang);
        let mut config = one_service(&[upstream.addr()]);
        config.defaults.request_timeout_ms = 300;
        let proxy = start_proxy(driver, config);
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_request("GET", "/slow", &[], None).unwrap();
        let response = c
            .read_response(false)
            .expect("a response before the client's 10 s read time-out");
        assert_eq!(response.status, 504, "body {:?}", response.body_text());
        assert!(
            upstream.requests_received() >= 1,
            "the request did reach the upstream"
        );
    });
}
