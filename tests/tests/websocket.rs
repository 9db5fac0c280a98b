//! End-to-end WebSocket through the proxy, on both drivers: an `Upgrade: websocket` request
//! gets the upstream's 101, then bytes are tunnelled both ways until the client closes.

use coremesh_tests::client::Client;
use coremesh_tests::data::pseudo_random_bytes;
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::{Action, Upstream};

/// RFC 6455 §1.3's example key and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn upgrade_request() -> Vec<u8> {
    format!(
        "GET /chat HTTP/1.1\r\nHost: ws.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn websocket_upgrade_then_bytes_echo_both_ways() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("ws", |_| Action::WebSocketEcho);
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        c.send_raw(&upgrade_request()).unwrap();
        let response = c.read_response(false).expect("the upgrade response");
        assert_eq!(
            response.status,
            101,
            "head: {}",
            String::from_utf8_lossy(&response.raw_head)
        );
        assert_eq!(
            response.header("sec-websocket-accept").as_deref(),
            Some(ACCEPT)
        );
        assert!(response
            .header_tokens("upgrade")
            .contains(&"websocket".to_string()));
        assert!(response
            .header_tokens("connection")
            .contains(&"upgrade".to_string()));

        let received = upstream.received();
        assert_eq!(received.len(), 1);
        assert!(
            received[0]
                .header_tokens("upgrade")
                .contains(&"websocket".to_string()),
            "Upgrade forwarded"
        );
        assert!(
            received[0]
                .header_tokens("connection")
                .contains(&"upgrade".to_string()),
            "Connection: upgrade forwarded"
        );
        assert_eq!(
            received[0].header("sec-websocket-key").as_deref(),
            Some(KEY)
        );

        // Several rounds, small to large, including a round bigger than any socket buffer.
        for (round, len) in [1usize, 125, 4096, 65_536, 1_000_000]
            .into_iter()
            .enumerate()
        {
            let bytes = pseudo_random_bytes(len, round as u64);
            c.send_raw(&bytes).unwrap();
            let echoed = c
                .read_exact_raw(len)
                .unwrap_or_else(|e| panic!("round {round} ({len} bytes): {e}"));
            assert!(
                echoed == bytes,
                "round {round}: {len} bytes came back different"
            );
        }
        c.shutdown_write().unwrap();
        assert!(
            c.is_closed_by_peer(),
            "closing the client side ends the tunnel"
        );
        assert_eq!(
            upstream.requests_received(),
            1,
            "nothing after the upgrade was parsed as HTTP"
        );
    });
}
