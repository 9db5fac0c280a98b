//! HTTP/1 passthrough on the outbound side, on both drivers (root only; elsewhere it says
//! why it is skipped). In a network namespace of its own, a rule redirects every TCP
//! connection made from 127.0.0.5 to the outbound listener, so a client bound to that
//! address reaches a raw server on 127.0.0.1 through the proxy, with that server as the
//! original destination that no service claims. The server records every byte it reads.
//!
//! - The bytes the destination receives equal what the client sent, for several request
//!   shapes (as they would through no proxy at all): HTTP/1.0 without headers, chunked
//!   with a chunk extension and trailers, `Expect: 100-continue`, odd but legal spacing
//!   with hop-by-hop, `X-Forwarded-For` and deadline headers, an absolute-form target (an
//!   application talking to an HTTP proxy), pipelined requests.
//! - CONNECT goes to the destination; on 2xx the connection is a tunnel both ways (bytes
//!   sent behind the CONNECT head included), closed by the side's `tcp_idle_timeout_ms`
//!   when idle; a refusal is relayed and the connection closed.
//! - Passed-through requests count in `coremesh_requests_total` under
//!   `direction="outbound",route="passthrough"` (no service label).
//! - Passthrough has its own limits: `[defaults]` (a service's) body limit does not apply,
//!   `[outbound.passthrough] max_header_bytes` does.

use coremesh_discovery::{Config, PassthroughSettings, SideSettings};
use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::client::Client;
use coremesh_tests::netns::{can_run, Netns};
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{base_config, for_each_driver};
use coremesh_tests::wire::WireReader;
use coremesh_tests::Driver;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The client's address: connections from it are redirected to the outbound listener.
const CLIENT_IP: &str = "127.0.0.5";

fn client_ip() -> IpAddr {
    CLIENT_IP.parse().expect("a literal address")
}

/// Runs `body` inside a new namespace with a proxy whose outbound side has `outbound`'s
/// settings (on an ephemeral port) and the redirect rule in place.
fn in_namespace(
    driver: Driver,
    edit: impl FnOnce(&mut Config) + Send,
    body: impl FnOnce(&AdminProxy) + Send,
) {
    let ns = Netns::new().expect("a network namespace");
    ns.enter(|| {
        let mut config = base_config();
        config.proxy.shutdown_grace_ms = 300;
        config.outbound = Some(SideSettings {
            listen: "127.0.0.1:0".parse().expect("a literal address"),
            ..SideSettings::default()
        });
        edit(&mut config);
        let proxy = start_with_admin(driver, config);
        let port = proxy.outbound_addr().expect("an outbound listener").port();
        ns.run(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-s",
                CLIENT_IP,
                "-j",
                "REDIRECT",
                "--to-ports",
                &port.to_string(),
            ],
        )
        .expect("the redirect rule");
        body(&proxy);
    })
    .expect("enter the namespace");
}

/// A server that records every byte it reads (each connection on a thread of its own, not
/// waited for: a connection the proxy keeps pooled ends when the proxy does).
struct Recorder {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Recorder {
    fn start(serve: fn(TcpStream, &Mutex<Vec<u8>>)) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the destination");
        let addr = listener.local_addr().expect("destination address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
                    let r = r.clone();
                    std::thread::spawn(move || serve(stream, &r));
                }
            }
        });
        Recorder {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().expect("not poisoned")).into_owned()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn record(received: &Mutex<Vec<u8>>, bytes: &[u8]) {
    received
        .lock()
        .expect("not poisoned")
        .extend_from_slice(bytes);
}

/// An HTTP/1 origin: each request (its framing read as RFC 9112 says) is answered `200 ok`
/// (after a `100 Continue` when asked); HTTP/1.0 or `Connection: close` ends the connection.
fn serve_http(stream: TcpStream, received: &Mutex<Vec<u8>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = WireReader::new(stream);
    while let Ok(Some(head)) = r.read_head("a request head") {
        record(received, &head);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if req.parse(&head).is_err() {
            return;
        }
        let mut close = req.version == Some(0);
        let (mut length, mut chunked, mut expect) = (0usize, false, false);
        for h in req.headers.iter() {
            let value = String::from_utf8_lossy(h.value).trim().to_ascii_lowercase();
            match h.name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse().unwrap_or(0),
                "transfer-encoding" => chunked = value.ends_with("chunked"),
                "expect" => expect = value == "100-continue",
                "connection" => close |= value.contains("close"),
                _ => {}
            }
        }
        if expect && out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return;
        }
        let body = if chunked {
            r.read_chunked().map(|b| b.raw)
        } else {
            r.read_exact_vec(length, "a request body")
        };
        let Ok(body) = body else {
            return;
        };
        record(received, &body);
        if out
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            .is_err()
            || close
        {
            return;
        }
    }
}

/// One step of a client's conversation.
enum Step {
    Send(&'static [u8]),
    /// Read an interim `100 Continue`.
    Continue,
    /// Read a final response: `200 ok`.
    Ok,
}

/// Shapes of requests and how the client speaks them.
fn shapes() -> Vec<(&'static str, Vec<Step>)> {
    use Step::*;
    vec![
        (
            "HTTP/1.0 without headers",
            vec![Send(b"GET /plain HTTP/1.0\r\n\r\n"), Ok],
        ),
        (
            "chunked with an extension and trailers",
            vec![
                Send(
                    b"POST /up HTTP/1.1\r\nHost: third.example\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n\
                      5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n",
                ),
                Ok,
            ],
        ),
        (
            "Expect: 100-continue",
            vec![
                Send(b"PUT /e HTTP/1.1\r\nHost: third.example\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
                Continue,
                Send(b"abcde"),
                Ok,
            ],
        ),
        (
            "odd but legal spacing, hop-by-hop, X-Forwarded-For and deadline headers",
            vec![
                Send(
                    b"GET /s?q=1 HTTP/1.1\r\nHost:third.example\r\nX-Odd:   spaced   value\t\r\nX-Empty:\r\n\
                      x-forwarded-for: 10.1.2.3\r\nx-coremesh-timeout-ms: 5\r\nConnection: keep-alive, X-Hop\r\n\
                      X-Hop: 1\r\nTE: trailers\r\nKeep-Alive: timeout=5\r\ncontent-length: 0\r\n\r\n",
                ),
                Ok,
            ],
        ),
        (
            "an absolute-form target, as to an HTTP proxy",
            vec![
                Send(b"GET http://third.example/p?q HTTP/1.1\r\nHost: third.example\r\n\r\n"),
                Ok,
            ],
        ),
        (
            "pipelined requests",
            vec![
                Send(
                    b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc\
                      GET /3 HTTP/1.1\r\nHost: h\r\n\r\n",
                ),
                Ok,
                Ok,
                Ok,
            ],
        ),
    ]
}

#[test]
fn the_destination_receives_exactly_what_the_client_sent() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |proxy| {
                let mut answered = 0u32;
                for (shape, steps) in shapes() {
                    let destination = Recorder::start(serve_http);
                    let mut c = Client::connect_from(client_ip(), destination.addr)
                        .expect("connect through the redirect");
                    let mut sent = Vec::new();
                    for step in &steps {
                        match step {
                            Step::Send(bytes) => {
                                c.send_raw(bytes).expect("send");
                                sent.extend_from_slice(bytes);
                            }
                            Step::Continue => {
                                let r = c.read_head_only().expect("an interim response");
                                assert_eq!(r.status, 100, "{shape}");
                            }
                            Step::Ok => {
                                let r = c
                                    .read_response(false)
                                    .unwrap_or_else(|e| panic!("{shape}: a response: {e:?}"));
                                assert_eq!(
                                    (r.status, r.body_text().as_str()),
                                    (200, "ok"),
                                    "{shape}"
                                );
                                answered += 1;
                            }
                        }
                    }
                    drop(c);
                    assert_eq!(
                        destination.received(),
                        String::from_utf8_lossy(&sent),
                        "{shape}: the destination received other bytes than the client sent"
                    );
                }
                // Counted in the request families, as passthrough on the outbound side.
                let series = [
                    ("direction", "outbound"),
                    ("route", "passthrough"),
                    ("class", "2xx"),
                ];
                let counted = wait_for_admin(|| {
                    let text = proxy.metrics_text();
                    let e = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
                    let n = e.value("coremesh_requests_total", &series);
                    ((n >= Some(f64::from(answered))).then_some(n), text)
                })
                .unwrap_or_else(|last| {
                    panic!("{answered} passthrough requests not counted:\n{last}")
                });
                assert_eq!(counted, Some(f64::from(answered)));
            },
        );
    });
}

/// What a CONNECT server answers.
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";
const REFUSED: &[u8] =
    b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\ndeny";

/// An HTTP proxy: reads a CONNECT head, answers [`ESTABLISHED`] and echoes the tunnel.
fn serve_connect(stream: TcpStream, received: &Mutex<Vec<u8>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = WireReader::new(stream);
    let Ok(Some(head)) = r.read_head("a CONNECT head") else {
        return;
    };
    record(received, &head);
    if out.write_all(ESTABLISHED).is_err() {
        return;
    }
    let mut early = r.take_buffered();
    loop {
        if !early.is_empty() {
            record(received, &early);
            if out.write_all(&early).is_err() {
                return;
            }
        }
        match r.fill() {
            Ok(0) | Err(_) => break,
            Ok(_) => early = r.take_buffered(),
        }
    }
    let _ = out.shutdown(std::net::Shutdown::Write);
}

/// An HTTP proxy that refuses: [`REFUSED`], then reads until the client goes.
fn serve_refusal(stream: TcpStream, received: &Mutex<Vec<u8>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = WireReader::new(stream);
    if let Ok(Some(head)) = r.read_head("a CONNECT head") {
        record(received, &head);
        let _ = out.write_all(REFUSED);
    }
    if let Ok(rest) = r.read_to_close() {
        record(received, &rest);
    }
}

const CONNECT_HEAD: &[u8] =
    b"CONNECT target.example:443 HTTP/1.1\r\nHost: target.example:443\r\nProxy-Authorization: Basic eDp5\r\n\r\n";

#[test]
fn connect_is_passed_on_and_a_2xx_opens_a_tunnel() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |_proxy| {
                let destination = Recorder::start(serve_connect);
                let mut c = Client::connect_from(client_ip(), destination.addr)
                    .expect("connect through the redirect");
                let mut first = CONNECT_HEAD.to_vec();
                first.extend_from_slice(b"early");
                c.send_raw(&first).expect("send the CONNECT");
                let r = c.read_head_only().expect("the CONNECT answer");
                assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.raw_head));
                assert_eq!(c.read_exact_raw(5).expect("the early bytes back"), b"early");
                let later = vec![b'x'; 100_000];
                c.send_raw(&later).expect("send through the tunnel");
                assert_eq!(
                    c.read_exact_raw(later.len()).expect("the tunnel's echo"),
                    later
                );
                c.shutdown_write().expect("half-close");
                assert!(c.is_closed_by_peer(), "the half-close went through");
                drop(c);
                let mut sent = first;
                sent.extend_from_slice(&later);
                assert_eq!(destination.received(), String::from_utf8_lossy(&sent));
            },
        );
    });
}

#[test]
fn an_idle_connect_tunnel_is_closed_by_the_sides_tcp_idle_timeout() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        let idle_ms = |config: &mut Config| {
            if let Some(outbound) = &mut config.outbound {
                outbound.tcp_idle_timeout_ms = 200;
            }
        };
        in_namespace(driver, idle_ms, |_proxy| {
            let destination = Recorder::start(serve_connect);
            let mut c = Client::connect_from(client_ip(), destination.addr)
                .expect("connect through the redirect");
            c.send_raw(CONNECT_HEAD).expect("send the CONNECT");
            assert_eq!(c.read_head_only().expect("the answer").status, 200);
            c.send_raw(b"ping").expect("send through the tunnel");
            assert_eq!(c.read_exact_raw(4).expect("the echo"), b"ping");
            // Neither side sends or closes: only the idle timeout ends the tunnel (the
            // client's read timeout, 10 s, is far beyond it and fails the test).
            assert!(c.is_closed_by_peer(), "the idle tunnel was closed");
        });
    });
}

#[test]
fn a_refused_connect_is_relayed_and_the_connection_closed() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |_proxy| {
                let destination = Recorder::start(serve_refusal);
                let mut c = Client::connect_from(client_ip(), destination.addr)
                    .expect("connect through the redirect");
                c.send_raw(CONNECT_HEAD).expect("send the CONNECT");
                let r = c.read_response(false).expect("the refusal");
                assert_eq!((r.status, r.body_text().as_str()), (407, "deny"));
                assert!(c.is_closed_by_peer(), "no tunnel after a refusal");
                drop(c);
                assert_eq!(
                    destination.received(),
                    String::from_utf8_lossy(CONNECT_HEAD)
                );
            },
        );
    });
}

#[test]
fn passthrough_has_its_own_limits_not_a_services() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        let limits = |config: &mut Config| {
            config.defaults.max_body_bytes = 16;
            if let Some(outbound) = &mut config.outbound {
                outbound.passthrough = PassthroughSettings {
                    max_header_bytes: 1024,
                    ..PassthroughSettings::default()
                };
            }
        };
        in_namespace(driver, limits, |_proxy| {
            let destination = Recorder::start(serve_http);
            // A body beyond `[defaults] max_body_bytes` (a service's limit) goes through.
            let body = vec![b'b'; 1000];
            let mut request = format!(
                "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(&body);
            let mut c = Client::connect_from(client_ip(), destination.addr)
                .expect("connect through the redirect");
            c.send_raw(&request).expect("send");
            let r = c.read_response(false).expect("a response");
            assert_eq!(r.status, 200, "{}", r.body_text());
            drop(c);
            assert_eq!(destination.received(), String::from_utf8_lossy(&request));

            // A head beyond `[outbound.passthrough] max_header_bytes` does not.
            let big = format!(
                "GET /h HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
                "v".repeat(2000)
            );
            let mut c = Client::connect_from(client_ip(), destination.addr)
                .expect("connect through the redirect");
            c.send_raw(big.as_bytes()).expect("send");
            let r = c.read_response(false).expect("a response");
            assert_eq!(r.status, 431, "{}", r.body_text());
            drop(c);
            assert_eq!(
                destination.received(),
                String::from_utf8_lossy(&request),
                "the large head did not reach the destination"
            );
        });
    });
}

/// An origin that refuses a body on sight: `413` right after the request head, then it
/// records whatever else arrives until the proxy closes, then [`CLOSED`].
fn serve_early_refusal(stream: TcpStream, received: &Mutex<Vec<u8>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = WireReader::new(stream);
    if let Ok(Some(head)) = r.read_head("a request head") {
        record(received, &head);
        let _ = out.write_all(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if let Ok(rest) = r.read_to_close() {
        record(received, &rest);
    }
    record(received, CLOSED);
}

/// An origin that answers an `Expect` with a `100` of its own wording, then `200 ok`.
fn serve_own_continue(stream: TcpStream, received: &Mutex<Vec<u8>>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = WireReader::new(stream);
    let Ok(Some(head)) = r.read_head("a request head") else {
        return;
    };
    record(received, &head);
    if out.write_all(OWN_CONTINUE).is_err() {
        return;
    }
    if let Ok(body) = r.read_exact_vec(5, "a request body") {
        record(received, &body);
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
}

const CLOSED: &[u8] = b"<closed>";
const OWN_CONTINUE: &[u8] = b"HTTP/1.1 100 Go Ahead\r\n\r\n";
const EXPECT_HEAD: &[u8] = b"PUT /upload HTTP/1.1\r\nHost: target.example\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n";

#[test]
fn an_expect_is_answered_by_the_destination_which_may_refuse_the_body() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |_proxy| {
                let destination = Recorder::start(serve_early_refusal);
                let mut c = Client::connect_from(client_ip(), destination.addr)
                    .expect("connect through the redirect");
                c.send_raw(EXPECT_HEAD).expect("send the head");
                // The first thing the client hears is the refusal: no `100` from the proxy.
                let r = c.read_head_only().expect("the refusal");
                assert_eq!(r.status, 413, "{}", String::from_utf8_lossy(&r.raw_head));
                // A client that sends its body anyway: it must not reach the destination.
                let _ = c.send_raw(b"hello");
                assert!(
                    c.is_closed_by_peer(),
                    "the connection closes after the refusal"
                );
                drop(c);
                let mut waited = 0;
                while !destination.received().ends_with("<closed>") && waited < 3000 {
                    std::thread::sleep(Duration::from_millis(10));
                    waited += 1;
                }
                let mut expected = EXPECT_HEAD.to_vec();
                expected.extend_from_slice(CLOSED);
                assert_eq!(destination.received(), String::from_utf8_lossy(&expected));
            },
        );
    });
}

#[test]
fn the_destinations_own_100_continue_reaches_the_client() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |_proxy| {
                let destination = Recorder::start(serve_own_continue);
                let mut c = Client::connect_from(client_ip(), destination.addr)
                    .expect("connect through the redirect");
                c.send_raw(EXPECT_HEAD).expect("send the head");
                let interim = c.read_head_only().expect("the interim answer");
                assert_eq!(interim.raw_head, OWN_CONTINUE, "the destination's own 100");
                c.send_raw(b"hello").expect("send the body");
                let r = c.read_response(false).expect("the final answer");
                assert_eq!((r.status, r.body_text().as_str()), (200, "ok"));
                drop(c);
                let mut expected = EXPECT_HEAD.to_vec();
                expected.extend_from_slice(b"hello");
                assert_eq!(destination.received(), String::from_utf8_lossy(&expected));
            },
        );
    });
}

#[test]
fn opaque_passthrough_connects_within_the_passthrough_connect_timeout() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        let timeouts = |config: &mut Config| {
            // Far beyond the client's read timeout (10 s): waiting for it fails the test.
            config.defaults.connect_timeout_ms = 60_000;
            if let Some(outbound) = &mut config.outbound {
                outbound.passthrough = PassthroughSettings {
                    connect_timeout_ms: 100,
                    ..PassthroughSettings::default()
                };
            }
        };
        in_namespace(driver, timeouts, |_proxy| {
            // The proxy's connect to the destination gets no answer (its SYN is dropped; the
            // client's own connection is redirected to the proxy before the filter sees it).
            let dropped = std::process::Command::new("iptables")
                .args(["-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.9"])
                .args(["--dport", "6379", "-j", "DROP"])
                .status()
                .expect("run iptables");
            assert!(dropped.success(), "the drop rule");
            // 6379 is an opaque port: relayed as TCP with no detection wait.
            let to: SocketAddr = "127.0.0.9:6379".parse().expect("a literal address");
            let mut c =
                Client::connect_from(client_ip(), to).expect("connect through the redirect");
            assert!(
                c.is_closed_by_peer(),
                "the unreachable destination's connection was closed after the passthrough timeout"
            );
        });
    });
}

/// A destination answering with bare-LF line endings (RFC 9112 §2.2 lets a recipient
/// accept them in the start line and fields), and what the client gets through the proxy:
/// the head with CRLF line endings (as nginx also writes it; `Connection: close` added, as
/// asked), and the body byte for byte as the client gets it directly.
const BARE_LF_ANSWERS: [(&str, &[u8], &[u8]); 2] = [
    (
        "Content-Length",
        b"HTTP/1.1 200 OK\nContent-Length: 5\nX-Lf: yes\n\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Lf: yes\r\nConnection: close\r\n\r\nhello",
    ),
    (
        "no length, until the close",
        b"HTTP/1.1 200 OK\nX-Lf: yes\nConnection: close\n\nuntil the end",
        b"HTTP/1.1 200 OK\r\nX-Lf: yes\r\nConnection: close\r\n\r\nuntil the end",
    ),
];

/// A chunked answer whose chunk lines end with a bare LF: curl decodes it directly ("hello
/// world") and nginx as a proxy re-chunks it with CRLF; the proxy must not cut it short.
/// A bare-LF chunked answer, and the head the client gets for it (its body is re-chunked
/// with CRLF: see [`dechunk_crlf`]).
const BARE_LF_CHUNKED: (&[u8], &[u8]) = (
    b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nX-Lf: yes\n\n5\nhello\n6\n world\n0\n\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Lf: yes\r\nConnection: close\r\n\r\n",
);

/// The payload of a chunked body framed strictly with CRLF and without trailers; `None`
/// when its framing is anything else (a bare LF included).
fn dechunk_crlf(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            return (rest == "\r\n").then_some(out);
        }
        out.push_str(rest.get(..size)?);
        body = rest.get(size..)?.strip_prefix("\r\n")?;
    }
}

const CLOSING_REQUEST: &[u8] = b"GET /lf HTTP/1.1\r\nHost: lf.example\r\nConnection: close\r\n\r\n";

/// Reads one request head, answers `answer`'s bytes, closes.
fn serve_answer(stream: TcpStream, answer: &'static [u8]) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    let mut r = WireReader::new(stream);
    if let Ok(Some(_)) = r.read_head("a request head") {
        let _ = out.write_all(answer);
    }
}

/// Everything `client` reads after sending `request`, until the other end closes.
fn exchange(mut client: TcpStream, request: &[u8]) -> Vec<u8> {
    use std::io::Read;
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    client.write_all(request).expect("send the request");
    let mut back = Vec::new();
    let _ = client.read_to_end(&mut back);
    back
}

/// What a client gets from a destination answering `answer`: directly, and through the
/// proxy (in a namespace from [`in_namespace`]).
fn direct_and_through(answer: &'static [u8]) -> (Vec<u8>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let to = listener.local_addr().expect("address");
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            if let Ok((stream, _)) = listener.accept() {
                serve_answer(stream, answer);
            }
        }
    });
    let direct = exchange(TcpStream::connect(to).expect("direct"), CLOSING_REQUEST);
    let through = Client::connect_from(client_ip(), to).expect("through the proxy");
    let through = exchange(
        through.stream().try_clone().expect("clone"),
        CLOSING_REQUEST,
    );
    let _ = server.join();
    (direct, through)
}

fn body_of(response: &[u8]) -> &[u8] {
    let lf = response
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|at| at + 2);
    let crlf = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let at = match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(response.len()),
    };
    &response[at..]
}

#[test]
fn a_destination_answering_with_bare_lf_lines() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |_proxy| {
                for (shape, answer, expected) in BARE_LF_ANSWERS {
                    let (direct, through) = direct_and_through(answer);
                    assert_eq!(direct, answer, "{shape}: the destination's own bytes");
                    assert_eq!(
                        String::from_utf8_lossy(&through),
                        String::from_utf8_lossy(expected),
                        "{shape}"
                    );
                    assert_eq!(body_of(&through), body_of(&direct), "{shape}: the body");
                }
            },
        );
    });
}

/// A chunked answer whose chunk lines end with a bare LF reaches the client whole,
/// re-chunked with CRLF (as nginx does): the same head as the other bare-LF answers, and
/// the same body as the client reads directly. It used to be cut after the head.
#[test]
fn a_bare_lf_chunked_answer_is_not_cut_short() {
    if !can_run("passthrough", &["iptables"]) {
        return;
    }
    for_each_driver(|driver| {
        in_namespace(
            driver,
            |_| {},
            |_proxy| {
                let (answer, expected_head) = BARE_LF_CHUNKED;
                let (direct, through) = direct_and_through(answer);
                assert_eq!(direct, answer);
                let text = String::from_utf8_lossy(&through);
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    panic!("no whole head: {text:?}");
                };
                assert_eq!(format!("{head}\r\n\r\n").as_bytes(), expected_head);
                assert_eq!(
                    dechunk_crlf(body),
                    Some("hello world".to_owned()),
                    "{body:?}"
                );
            },
        );
    });
}
