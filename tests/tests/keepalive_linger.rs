//! End-to-end, on both drivers: a keep-alive client sending its requests back to back is
//! read through the read that lingers after each response (`client_keepalive_linger_ms`),
//! requests split across reads and a close during the linger are handled as on the
//! bufferless path, and lingering off (`0`) serves the same requests the same way.

use coremesh_tests::client::Client;
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::Upstream;
use std::time::Duration;

/// The longest linger the configuration accepts: every request after the second is read by
/// a lingering read however slowly this test runs.
const LONGEST_LINGER_MS: u64 = 1_000;
/// Bound on every wait for the proxy: only turns a hang into a failure.
const WAIT_LIMIT: Duration = Duration::from_secs(30);

fn serve_back_to_back(linger_ms: u64) {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let mut config = one_service(&[upstream.addr()]);
        config.defaults.client_keepalive_linger_ms = linger_ms;
        let proxy = start_proxy(driver, config);
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.set_read_timeout(WAIT_LIMIT).expect("read timeout");
        for i in 0..50 {
            let path = format!("/linger/{i}");
            if i % 10 == 9 {
                // A head split in two: the lingering read takes the first part, the head
                // read the rest.
                let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n");
                c.send_raw(head.as_bytes()).expect("send the first part");
                std::thread::yield_now();
                c.send_raw(b"x-part: 2\r\n\r\n").expect("send the rest");
            } else {
                c.send_request("GET", &path, &[], None).expect("send");
            }
            let response = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("linger {linger_ms}, request {i}: {e}"));
            assert_eq!(response.status, 200, "request {i}");
            let expected = format!("GET {path} HTTP/1.1\n");
            assert!(
                response.body_text().starts_with(&expected),
                "request {i} got: {}",
                response.body_text()
            );
        }
        assert_eq!(upstream.requests_received(), 50);
        // The client closes its side while the proxy's read lingers (or waits): the proxy
        // closes the connection instead of holding it.
        c.shutdown_write().expect("half-close");
        assert!(c.is_closed_by_peer(), "linger {linger_ms}: not closed");
        assert_eq!(upstream.requests_received(), 50, "nothing more was sent");
    });
}

#[test]
fn back_to_back_requests_are_read_by_the_lingering_read() {
    serve_back_to_back(LONGEST_LINGER_MS);
}

#[test]
fn with_lingering_off_the_same_requests_are_served_the_same_way() {
    serve_back_to_back(0);
}
