//! Tunnels and opaque TCP over mutual TLS, on both drivers, with the CAs and SVIDs of
//! `mtls_support`: a WebSocket session (Python `websockets` as client and application)
//! through proxy A's service over mutual TLS to proxy B's inbound side, and straight to B
//! over TLS with a client certificate; an upgrade from a TLS client relayed with half-close,
//! byte counts and a close_notify at the end; opaque TCP from a TLS caller relayed to the
//! application when B's `authorize` allows its identity, and closed before the application
//! sees a byte when it does not, or when a plaintext caller meets `require_mtls`.

use coremesh_discovery::{InboundPolicy, InboundRoute};
use coremesh_tests::admin::AdminProxy;
use coremesh_tests::data::pseudo_random_bytes;
use coremesh_tests::h2tools::{py_script, require_python_modules, run_bounded, Proc, RUN_BOUND};
use coremesh_tests::proxy::{for_each_driver, start_proxy};
use mtls_support::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

mod mtls_support;

/// The `ws_peer.py` echo application.
fn ws_server() -> Proc {
    let mut cmd = Command::new(require_python_modules(&["websockets"]));
    cmd.arg(py_script("ws_peer.py")).arg("serve");
    Proc::spawn(cmd, "WebSocket server")
}

/// One `ws_peer.py client` session to `url` with `messages` messages; its JSON summary.
fn ws_session(
    url: &str,
    messages: usize,
    tls: Option<&coremesh_discovery::IdentitySettings>,
) -> serde_json::Value {
    let mut cmd = Command::new(require_python_modules(&["websockets"]));
    cmd.arg(py_script("ws_peer.py"))
        .args(["client", url, "--messages", &messages.to_string()]);
    if let Some(id) = tls {
        cmd.arg("--ca")
            .arg(&id.trust_anchors)
            .arg("--cert")
            .arg(&id.cert)
            .arg("--key")
            .arg(&id.key);
    }
    run_bounded(cmd, RUN_BOUND, "WebSocket client")
        .expect_success("WebSocket client")
        .json("WebSocket client")
}

/// What the client of [`ws_session`] must have seen: the greeting, each echo in order, and
/// the server's closing frame answering its own (1000, "done").
fn assert_clean_session(summary: &serde_json::Value, messages: usize) {
    let expected: Vec<String> = (0..messages)
        .map(|i| format!("echo:message {i} {}", "x".repeat(i * 1000)))
        .collect();
    assert_eq!(summary["greeting"], "hello", "{summary}");
    let echoes: Vec<String> = summary["echoes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(echoes, expected);
    assert_eq!(summary["close_code"], 1000, "{summary}");
    assert_eq!(summary["close_reason"], "done", "{summary}");
}

/// Waits until the application logged `sessions` clean closes; the messages it received.
fn wait_app_sessions(app: &Proc, sessions: usize) -> Vec<String> {
    let closed = app.wait_json(WAIT, |all| {
        all.iter().filter(|e| e["event"] == "closed").count() >= sessions
    });
    let events = app.json_lines();
    assert!(closed, "{sessions} sessions closed: {events:?}");
    for e in events.iter().filter(|e| e["event"] == "closed") {
        assert_eq!(e["code"], 1000, "{e}");
        assert_eq!(e["reason"], "done", "{e}");
    }
    events
        .iter()
        .filter(|e| e["event"] == "message")
        .filter_map(|e| e["data"].as_str().map(String::from))
        .collect()
}

fn inbound_handshakes(b: &AdminProxy) -> Option<u64> {
    sample(
        &b.metrics_text(),
        "coremesh_tls_handshakes_total{direction=\"inbound\"}",
    )
}

#[test]
fn a_websocket_session_crosses_the_mtls_hop_both_ways() {
    const MESSAGES: usize = 5;
    let ca = Ca::new("mesh");
    let dir = TempDir::new("ws");
    for_each_driver(|driver| {
        let app = ws_server();
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let a = start_proxy(
            driver,
            proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, APP),
        );
        // The client speaks plaintext to A; A's connection to B is mutual TLS.
        let through_a = ws_session(&format!("ws://{}/chat", a.addr()), MESSAGES, None);
        assert_clean_session(&through_a, MESSAGES);
        let sent: Vec<String> = (0..MESSAGES)
            .map(|i| format!("message {i} {}", "x".repeat(i * 1000)))
            .collect();
        assert_eq!(wait_app_sessions(&app, 1), sent);
        assert_eq!(inbound_handshakes(&b), Some(1));
        // A TLS client of its own (no ALPN: B reads the decrypted bytes to tell HTTP).
        let web = dir.identity("caller", &ca, WEB, &[&ca]);
        let straight = ws_session(&format!("wss://{b_inbound}/chat"), MESSAGES, Some(&web));
        assert_clean_session(&straight, MESSAGES);
        let both: Vec<String> = sent.iter().chain(&sent).cloned().collect();
        assert_eq!(wait_app_sessions(&app, 2), both);
        assert_eq!(inbound_handshakes(&b), Some(2));
    });
}

/// An application that answers an upgrade with 101, reads until the client's end of
/// stream, then answers what it got after that end (`got N;` and the bytes back) and
/// closes: what the client reads proves its half-close went through while the other way
/// stayed open. The thread gives back the request head and the bytes after it.
fn upgrade_app() -> (SocketAddr, JoinHandle<(String, Vec<u8>)>) {
    let listener = ok(TcpListener::bind("127.0.0.1:0"));
    let addr = ok(listener.local_addr());
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = ok(listener.accept());
        ok(conn.set_read_timeout(Some(WAIT)));
        let mut got = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        let head_end = loop {
            if let Some(at) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = ok(conn.read(&mut buf));
            assert!(n > 0, "closed before the request head ended");
            got.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
        let mut body = got.split_off(head_end);
        ok(conn.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n",
        ));
        loop {
            let n = ok(conn.read(&mut buf));
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        ok(conn.write_all(format!("got {};", body.len()).as_bytes()));
        ok(conn.write_all(&body));
        (head, body)
    });
    (addr, handle)
}

fn client_bytes(b: &AdminProxy, way: &str) -> Option<u64> {
    sample(
        &b.metrics_text(),
        &format!("coremesh_{way}_bytes_total{{peer=\"client\"}}"),
    )
}

#[test]
fn an_upgrade_from_a_tls_client_is_relayed_with_half_close_and_close_notify() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("upgrade");
    let client = TlsClient::new(&ca, &ca.issue(WEB), &[b"http/1.1"]);
    for_each_driver(|driver| {
        let (app, app_thread) = upgrade_app();
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let mut conn = ok(client.connect(b_inbound));
        // Bytes right behind the head: buffered with it, carried into the tunnel.
        let head = "GET /upgrade HTTP/1.1\r\nHost: app.local\r\nUpgrade: test\r\n\
                    Connection: Upgrade\r\n\r\n";
        let early = b"early bytes".to_vec();
        ok(conn.write_all(&[head.as_bytes(), &early].concat()));
        let mut response = Vec::new();
        while !response.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = ok(conn.read(&mut byte));
            assert_eq!(n, 1, "closed within the response head: {response:?}");
            response.push(byte[0]);
        }
        let response_text = String::from_utf8_lossy(&response).into_owned();
        assert!(
            response_text.starts_with("HTTP/1.1 101 "),
            "{response_text}"
        );
        let late = pseudo_random_bytes(300_000, 7);
        ok(conn.write_all(&late));
        // Half-close: the close_notify, then the FIN; reading goes on.
        close(&mut conn);
        let (answer, end) = read_to_end(&mut conn);
        let sent: Vec<u8> = [early.as_slice(), &late].concat();
        let expected: Vec<u8> = [format!("got {};", sent.len()).as_bytes(), &sent].concat();
        assert_eq!(answer.len(), expected.len());
        assert!(
            answer == expected,
            "the answer after the half-close differs"
        );
        assert_eq!(
            end,
            TlsEnd::CloseNotify,
            "the tunnel's end is a close_notify"
        );
        let (app_head, app_body) = app_thread
            .join()
            .unwrap_or_else(|_| panic!("the application thread panicked"));
        assert!(
            app_head.starts_with("GET /upgrade HTTP/1.1\r\n"),
            "{app_head}"
        );
        assert!(
            app_head.to_ascii_lowercase().contains("upgrade: test"),
            "{app_head}"
        );
        assert!(app_body == sent, "the application got other bytes");
        // Counted as the plaintext tunnel counts: every byte of the client's, each once.
        let received = (head.len() + sent.len()) as u64;
        let answered = (response.len() + expected.len()) as u64;
        assert!(
            wait_until(|| client_bytes(&b, "received") == Some(received)
                && client_bytes(&b, "sent") == Some(answered)),
            "client bytes: received {:?} (want {received}), sent {:?} (want {answered})",
            client_bytes(&b, "received"),
            client_bytes(&b, "sent")
        );
        assert_eq!(inbound_handshakes(&b), Some(1));
    });
}

/// A TCP echo application: echoes until the client's end of stream, then closes; counts
/// its connections.
struct EchoApp {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

impl EchoApp {
    fn start() -> EchoApp {
        let listener = ok(TcpListener::bind("127.0.0.1:0"));
        let addr = ok(listener.local_addr());
        let connections = Arc::new(AtomicU64::new(0));
        let counted = connections.clone();
        // Accepts for as long as the test process lives (its listener is never closed).
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        EchoApp { addr, connections }
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

fn tcp_bytes(b: &AdminProxy, way: &str) -> Option<u64> {
    sample(
        &b.metrics_text(),
        &format!("coremesh_tcp_bytes_total{{direction=\"inbound\",way=\"{way}\"}}"),
    )
}

/// Opaque bytes: the first one is no method token, no TLS record and no HTTP/2 preface.
fn opaque_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = pseudo_random_bytes(len, seed);
    bytes[0] = 0;
    bytes
}

#[test]
fn opaque_tcp_over_mtls_reaches_the_application_only_from_an_authorized_caller() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("opaque");
    let allowed = TlsClient::new(&ca, &ca.issue(WEB), &[]);
    let stranger = TlsClient::new(&ca, &ca.issue("spiffe://td/ns/prod/sa/other"), &[]);
    for_each_driver(|driver| {
        let app = EchoApp::start();
        // Only `sa/web` may call; plaintext is let in at the connection (a path takes it),
        // so the opaque connection's own decision is what refuses it.
        let policy = InboundPolicy {
            require_mtls: true,
            authorize: vec![WEB.to_owned()],
            routes: vec![InboundRoute {
                path_prefix: Some("/healthz".to_owned()),
                require_mtls: Some(false),
                authorize: Some(Vec::new()),
                ..InboundRoute::default()
            }],
        };
        let b = proxy_b_with(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr.port(),
            policy,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");

        // Allowed: relayed both ways, the half-close passed on, a close_notify at the end.
        let sent = opaque_bytes(200_000, 1);
        let mut conn = ok(allowed.connect(b_inbound));
        ok(conn.write_all(&sent));
        let echoed = read_exact_or_end(&mut conn, sent.len());
        assert_eq!(echoed.len(), sent.len());
        assert!(echoed == sent, "the echo differs");
        close(&mut conn);
        assert_eq!(read_to_end(&mut conn), (Vec::new(), TlsEnd::CloseNotify));
        assert_eq!(app.connections(), 1);
        let len = Some(sent.len() as u64);
        assert!(
            wait_until(|| tcp_bytes(&b, "to_upstream") == len && tcp_bytes(&b, "to_client") == len),
            "opaque bytes: {:?} / {:?}",
            tcp_bytes(&b, "to_upstream"),
            tcp_bytes(&b, "to_client")
        );

        // Another identity: closed, nothing reaches the application, counted.
        let (not_authorized, no_cert) =
            (denials(&b, "not_authorized"), denials(&b, "no_client_cert"));
        let mut conn = ok(stranger.connect(b_inbound));
        let _ = conn.write_all(&opaque_bytes(1000, 2));
        close(&mut conn);
        let (answer, _) = read_to_end(&mut conn);
        assert_eq!(answer.len(), 0, "a refused caller got an answer");
        assert_eq!(denials(&b, "not_authorized"), not_authorized + 1);

        // Plaintext: closed the same way.
        let mut plain = ok(TcpStream::connect(b_inbound));
        ok(plain.set_read_timeout(Some(WAIT)));
        let _ = plain.write_all(&opaque_bytes(1000, 3));
        let _ = plain.shutdown(std::net::Shutdown::Write);
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer);
        assert_eq!(answer.len(), 0, "a plaintext caller got an answer");
        assert_eq!(denials(&b, "no_client_cert"), no_cert + 1);

        assert_eq!(
            app.connections(),
            1,
            "a refused caller reached the application"
        );
        assert_eq!(tcp_bytes(&b, "to_upstream"), len);
    });
}
