//! End-to-end WebSocket through the proxy, on both drivers: an `Upgrade: websocket` request
//! gets the upstream's 101, then bytes are tunnelled both ways until the client closes; a
//! tunnel idle both ways past `proxy.tunnel_idle_timeout_ms` is closed while an active one
//! stays open.

use coremesh_tests::client::Client;
use coremesh_tests::data::pseudo_random_bytes;
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::{Action, Upstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

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

/// Only turns a hang into a failure; nothing here is expected to come near it.
const HANG_BOUND: Duration = Duration::from_secs(30);

/// A client whose connection through the proxy at `addr` has been upgraded (101).
fn upgraded(addr: SocketAddr) -> Client {
    let mut c = Client::connect(addr).expect("connect to the proxy");
    c.set_read_timeout(HANG_BOUND).unwrap();
    c.send_raw(&upgrade_request()).unwrap();
    let response = c.read_response(false).expect("the upgrade response");
    assert_eq!(response.status, 101);
    c
}

/// Send `bytes` through the tunnel and read them back from the echoing upstream.
fn echo(c: &mut Client, bytes: &[u8]) {
    c.send_raw(bytes).unwrap();
    let back = c
        .read_exact_raw(bytes.len())
        .unwrap_or_else(|e| panic!("echo of {} bytes: {e}", bytes.len()));
    assert_eq!(back, bytes);
}

#[test]
fn an_idle_tunnel_is_closed_while_an_active_one_stays_open() {
    for_each_driver(|driver| {
        // Long enough that the active tunnel's 20 ms rounds never come near it.
        const IDLE: Duration = Duration::from_millis(1_000);
        let upstream = Upstream::start("ws", |_| Action::WebSocketEcho);
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.tunnel_idle_timeout_ms = IDLE.as_millis() as u64;
        let proxy = start_proxy(driver, config);
        let mut idle = upgraded(proxy.addr());
        let mut active = upgraded(proxy.addr());
        echo(&mut idle, b"one round, then silence");

        // The active tunnel echoes a message every 20 ms until the idle one is closed, and
        // on for at least three idle timeouts in all.
        let start = Instant::now();
        let mut idle_closed = false;
        let mut rounds = 0u64;
        while !idle_closed || start.elapsed() < 3 * IDLE {
            echo(&mut active, format!("round {rounds}").as_bytes());
            rounds += 1;
            idle_closed = idle_closed || idle.peer_closed_now();
            assert!(
                start.elapsed() < HANG_BOUND,
                "the idle tunnel is still open after {HANG_BOUND:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(idle_closed);

        // The active tunnel still carries bytes, and ends when its client closes.
        echo(&mut active, b"still open");
        active.shutdown_write().unwrap();
        assert!(
            active.is_closed_by_peer(),
            "closing the client ends the tunnel"
        );
        assert_eq!(
            upstream.requests_received(),
            2,
            "two upgrades, nothing else"
        );
    });
}
