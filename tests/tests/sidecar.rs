//! The sidecar's inbound and outbound sides on 127.0.0.1, on both drivers. Without
//! interception rules a connection's original destination is the listener it reached, so
//! these tests cover what that shows: inbound forwarding to the application (HTTP/1 with
//! the client's address in `X-Forwarded-For`, opaque TCP byte-exact), the refusal of a
//! connection bound for the proxy itself, the stop order (inbound stops accepting at once,
//! outbound keeps accepting until stopped; with `shutdown = "drain"` every listener stops
//! at once and the stop ends as soon as the connections in flight are done; in grace mode
//! the stop ends by itself after the grace period and an inbound request in flight
//! completes), a counted detection timeout, a sidecar without an explicit listener, and a
//! clear error when a side cannot listen.

use coremesh_discovery::{Config, InboundSettings, ShutdownMode, SideSettings};
use coremesh_tests::admin::start_with_admin;
use coremesh_tests::client::get;
use coremesh_tests::proxy::{base_config, for_each_driver, start_proxy};
use coremesh_tests::sockets::tcp_echo;
use coremesh_tests::upstream::Upstream;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on every wait: only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(30);

fn any_port() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

/// [`base_config`] with an inbound side (to `app_port` when given) and an outbound side,
/// both on ephemeral loopback ports, and a short shutdown grace.
fn sidecar_config(app_port: Option<u16>) -> Config {
    let mut config = base_config();
    // The outbound side stays open through the whole grace period at shutdown: keep it
    // short so that each proxy's drop is quick (every test waits for its own conditions).
    config.proxy.shutdown_grace_ms = 300;
    config.inbound = Some(InboundSettings {
        side: SideSettings {
            listen: any_port().into(),
            ..SideSettings::default()
        },
        app_port,
        ..InboundSettings::default()
    });
    config.outbound = Some(SideSettings {
        listen: any_port().into(),
        ..SideSettings::default()
    });
    config
}

/// The value of the sample `name{labels}` in a Prometheus text scrape.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Whether a connection to `addr` is accepted and then closed by the proxy without a
/// byte (nothing is sent, so the close is a clean end of stream).
fn closed_without_bytes(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn inbound_http_reaches_the_application_with_the_client_address() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let proxy = start_with_admin(driver, sidecar_config(Some(app.addr().port())));
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        for i in 0..3 {
            let response = get(inbound, &format!("/hello/{i}"), &[("Host", "app.local")])
                .unwrap_or_else(|e| panic!("request {i} through inbound: {e:?}"));
            assert_eq!(response.status, 200, "request {i}");
        }
        let received = app.received();
        assert_eq!(received.len(), 3);
        for (i, request) in received.iter().enumerate() {
            assert_eq!(request.path, format!("/hello/{i}"));
            assert_eq!(
                request.header("x-forwarded-for").as_deref(),
                Some("127.0.0.1")
            );
            assert_eq!(request.header("host").as_deref(), Some("app.local"));
        }
        let text = proxy.metrics_text();
        assert_eq!(
            sample(
                &text,
                "coremesh_sidecar_connections_total{direction=\"inbound\"}"
            ),
            Some(3),
            "{text}"
        );
        assert_eq!(
            sample(&text, "coremesh_detect_total{direction=\"inbound\",protocol=\"http1\",reason=\"matched\"}"),
            Some(3)
        );
        assert_eq!(
            sample(
                &text,
                "coremesh_sidecar_connections_total{direction=\"outbound\"}"
            ),
            Some(0)
        );
    });
}

#[test]
fn inbound_opaque_tcp_comes_back_byte_exact() {
    for_each_driver(|driver| {
        let (echo, echo_thread) = tcp_echo();
        let mut config = sidecar_config(Some(echo.port()));
        if let Some(inbound) = &mut config.inbound {
            inbound.side.opaque_ports = vec![echo.port()];
        }
        let proxy = start_with_admin(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let payload: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let mut stream = TcpStream::connect(inbound).expect("connect to inbound");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let mut writer = stream.try_clone().expect("clone the stream");
        let to_send = payload.clone();
        let sender = std::thread::spawn(move || {
            writer.write_all(&to_send).expect("send 1 MiB");
            writer
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
        });
        let mut back = Vec::new();
        stream
            .read_to_end(&mut back)
            .expect("read the echo to its end");
        sender.join().expect("sender thread");
        echo_thread.join().expect("echo thread");
        assert_eq!(back.len(), payload.len());
        assert!(back == payload, "the echo differs from what was sent");
        // The relay writes its byte counts when it ends, which may be after the client has
        // read the last byte: wait for them, then read everything from that same scrape.
        let mut text = String::new();
        assert!(
            wait_until(|| {
                text = proxy.metrics_text();
                sample(
                    &text,
                    "coremesh_tcp_bytes_total{direction=\"inbound\",way=\"to_client\"}",
                ) == Some(1024 * 1024)
            }),
            "{text}"
        );
        let bytes = |way: &str| {
            let series = format!("coremesh_tcp_bytes_total{{direction=\"inbound\",way=\"{way}\"}}");
            sample(&text, &series)
        };
        assert_eq!(bytes("to_upstream"), Some(1024 * 1024), "{text}");
        assert_eq!(
            sample(&text, "coremesh_detect_total{direction=\"inbound\",protocol=\"opaque\",reason=\"opaque_port\"}"),
            Some(1)
        );
        // One relayed connection: one connect time observed.
        assert_eq!(
            sample(
                &text,
                "coremesh_tcp_connect_seconds_count{direction=\"inbound\"}"
            ),
            Some(1),
            "{text}"
        );
    });
}

#[test]
fn a_connection_bound_for_the_proxy_itself_is_refused() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        // No app_port: a connection straight to inbound has no port to go to.
        let proxy = start_with_admin(driver, sidecar_config(None));
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let outbound = proxy.outbound_addr().expect("an outbound listener");
        assert!(
            closed_without_bytes(outbound),
            "outbound to itself must be closed"
        );
        assert!(
            closed_without_bytes(inbound),
            "inbound without app_port must be closed"
        );
        let text = proxy.metrics_text();
        assert_eq!(
            sample(
                &text,
                "coremesh_sidecar_refused_total{direction=\"outbound\"}"
            ),
            Some(1),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "coremesh_sidecar_refused_total{direction=\"inbound\"}"
            ),
            Some(1),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "coremesh_sidecar_connections_total{direction=\"outbound\"}"
            ),
            Some(0)
        );
        assert_eq!(app.requests_received(), 0);
    });
}

#[test]
fn on_shutdown_inbound_stops_accepting_and_outbound_keeps_accepting_until_stopped() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let mut config = sidecar_config(Some(app.addr().port()));
        // Far longer than the test waits: only the outbound stop may end it early.
        config.proxy.shutdown_grace_ms = 600_000;
        let proxy = start_proxy(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let outbound = proxy.outbound_addr().expect("an outbound listener");
        let explicit = proxy.addr();
        let response = get(inbound, "/before", &[]).expect("inbound before shutdown");
        assert_eq!(response.status, 200);

        let handle = proxy.into_handle();
        let stopper = handle.outbound_stopper();
        let shutter = std::thread::spawn(move || handle.shutdown());
        assert!(
            wait_until(
                || TcpStream::connect(inbound).is_err() && TcpStream::connect(explicit).is_err()
            ),
            "the inbound and explicit listeners must stop accepting"
        );
        // Outbound still accepts, and still answers (here: refuses the loop by closing).
        assert!(
            closed_without_bytes(outbound),
            "outbound must keep accepting in the grace period"
        );
        assert!(!shutter.is_finished());

        stopper.stop();
        assert!(
            wait_until(|| shutter.is_finished()),
            "shutdown must end once outbound is stopped"
        );
        shutter.join().expect("shutdown returned");
        assert!(
            TcpStream::connect(outbound).is_err(),
            "outbound closed after the stop"
        );
        assert_eq!(app.requests_received(), 1);
    });
}

#[test]
fn a_side_that_cannot_listen_stops_the_start_with_its_name() {
    let taken = TcpListener::bind(any_port()).expect("take a port");
    let at = taken.local_addr().expect("its address");
    let mut config = sidecar_config(Some(1));
    if let Some(inbound) = &mut config.inbound {
        inbound.side.listen = at.into();
    }
    config.proxy.driver = coremesh_discovery::Driver::Legacy;
    match coremesh::start(config) {
        Ok(_) => panic!("started although {at} is taken"),
        Err(e) => {
            let message = format!("{e:#}");
            assert!(
                message.starts_with(&format!("cannot listen for inbound on {at}: ")),
                "{message}"
            );
        }
    }
}

#[test]
fn in_drain_mode_every_listener_stops_at_once_and_the_stop_ends_with_the_last_connection() {
    for_each_driver(|driver| {
        let (echo, echo_thread) = tcp_echo();
        let mut config = sidecar_config(Some(echo.port()));
        if let Some(inbound) = &mut config.inbound {
            inbound.side.opaque_ports = vec![echo.port()];
        }
        // Far longer than the test waits: only the last connection ending may end it.
        config.proxy.shutdown_grace_ms = 600_000;
        config.proxy.shutdown = ShutdownMode::Drain;
        let proxy = start_proxy(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let outbound = proxy.outbound_addr().expect("an outbound listener");
        let explicit = proxy.addr();
        // A connection in flight through inbound: one exchange proves it is relayed.
        let mut open = TcpStream::connect(inbound).expect("connect to inbound");
        open.set_read_timeout(Some(WAIT)).expect("read timeout");
        open.write_all(b"ping").expect("send");
        let mut back = [0u8; 4];
        open.read_exact(&mut back).expect("the echo answers");
        assert_eq!(&back, b"ping");

        let handle = proxy.into_handle();
        let shutter = std::thread::spawn(move || handle.shutdown());
        assert!(
            wait_until(|| [inbound, outbound, explicit]
                .iter()
                .all(|addr| TcpStream::connect(addr).is_err())),
            "every listener, outbound too, must stop accepting"
        );
        // The connection in flight still works, and holds the stop.
        open.write_all(b"pong").expect("send in the grace period");
        open.read_exact(&mut back).expect("the echo still answers");
        assert_eq!(&back, b"pong");
        assert!(
            !shutter.is_finished(),
            "the stop waits for the open connection"
        );
        open.shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let mut rest = Vec::new();
        open.read_to_end(&mut rest).expect("the relay ends");
        assert!(rest.is_empty());
        drop(open);
        assert!(
            wait_until(|| shutter.is_finished()),
            "the stop must end once the last connection is done, long before the grace period"
        );
        shutter.join().expect("shutdown returned");
        echo_thread.join().expect("echo thread");
    });
}

#[test]
fn a_sidecar_without_an_explicit_listener_starts() {
    let app = Upstream::echo();
    let only = |inbound: bool, outbound: bool| {
        let mut config = sidecar_config(Some(app.addr().port()));
        config.proxy.driver = coremesh_discovery::Driver::Legacy;
        config.proxy.pin_cores = false;
        config.proxy.cores = 1;
        config.proxy.listen = None;
        if !inbound {
            config.inbound = None;
        }
        if !outbound {
            config.outbound = None;
        }
        assert_eq!(coremesh_discovery::validate(&config), vec![]);
        config
    };
    for (inbound, outbound) in [(true, false), (false, true), (true, true)] {
        let handle = coremesh::start(only(inbound, outbound))
            .unwrap_or_else(|e| panic!("inbound {inbound} outbound {outbound}: {e:#}"));
        assert_eq!(handle.listen_addr(), None, "no explicit listener");
        assert_eq!(handle.inbound_addr().is_some(), inbound);
        assert_eq!(handle.outbound_addr().is_some(), outbound);
        if let Some(at) = handle.inbound_addr() {
            let response = get(at, "/through", &[]).expect("a request through inbound");
            assert_eq!(response.status, 200);
        }
        if let Some(at) = handle.outbound_addr() {
            assert!(
                closed_without_bytes(at),
                "outbound serves (refuses the loop)"
            );
        }
        handle.outbound_stopper().stop();
        handle.shutdown();
    }
    assert_eq!(app.requests_received(), 2);
    // The parsed form: a file with only `[outbound]` is valid and binds no explicit
    // listener (its default would be the outbound side's address).
    let config = coremesh_discovery::parse_config("[outbound]\n", "only.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.explicit_listen(), None);
}

#[test]
fn a_detection_timeout_is_counted() {
    for_each_driver(|driver| {
        let (echo, echo_thread) = tcp_echo();
        let mut config = sidecar_config(Some(echo.port()));
        if let Some(inbound) = &mut config.inbound {
            // The echo's port is not opaque: detection waits for the client's first bytes.
            inbound.side.opaque_ports = vec![];
            inbound.side.detect_timeout_ms = 50;
        }
        let proxy = start_with_admin(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        // A client that says nothing until the server does (a speak-first protocol).
        let mut silent = TcpStream::connect(inbound).expect("connect to inbound");
        silent.set_read_timeout(Some(WAIT)).expect("read timeout");
        let series =
            "coremesh_detect_total{direction=\"inbound\",protocol=\"opaque\",reason=\"timeout\"}";
        let mut text = String::new();
        assert!(
            wait_until(|| {
                text = proxy.metrics_text();
                sample(&text, series) == Some(1)
            }),
            "{text}"
        );
        // Decided opaque, the connection is relayed to the application.
        silent.write_all(b"late").expect("send after the timeout");
        let mut back = [0u8; 4];
        silent.read_exact(&mut back).expect("the echo answers");
        assert_eq!(&back, b"late");
        silent
            .shutdown(std::net::Shutdown::Write)
            .expect("half-close");
        let mut rest = Vec::new();
        silent.read_to_end(&mut rest).expect("the relay ends");
        echo_thread.join().expect("echo thread");
        let text = proxy.metrics_text();
        let matched =
            "coremesh_detect_total{direction=\"inbound\",protocol=\"opaque\",reason=\"matched\"}";
        assert_eq!(sample(&text, series), Some(1), "{text}");
        assert_eq!(sample(&text, matched), Some(0), "{text}");
    });
}

#[test]
fn in_grace_mode_outbound_accepts_until_the_grace_ends_by_itself() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let mut config = sidecar_config(Some(app.addr().port()));
        // Long enough that "right after the stop began" is inside it even on a busy host;
        // the stop must still end by itself, with no outbound stopper.
        config.proxy.shutdown_grace_ms = 2_000;
        let proxy = start_proxy(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let outbound = proxy.outbound_addr().expect("an outbound listener");
        let handle = proxy.into_handle();
        let shutter = std::thread::spawn(move || handle.shutdown());
        assert!(
            wait_until(|| TcpStream::connect(inbound).is_err()),
            "inbound must stop accepting"
        );
        assert!(
            closed_without_bytes(outbound),
            "outbound must keep accepting in the grace period"
        );
        assert!(
            wait_until(|| shutter.is_finished()),
            "the stop must end by itself once the grace period is over"
        );
        shutter.join().expect("shutdown returned");
        assert!(
            TcpStream::connect(outbound).is_err(),
            "outbound closed after the grace period"
        );
    });
}

/// An application that answers its first request only once told to: it reports the
/// request head's arrival on `arrived`, then waits for `release`.
fn held_app() -> (
    SocketAddr,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
    JoinHandle<()>,
) {
    let listener = TcpListener::bind(any_port()).expect("bind the application");
    let addr = listener.local_addr().expect("application address");
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let Ok((mut stream, _)) = listener.accept() else {
            return;
        };
        let _ = stream.set_read_timeout(Some(WAIT));
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => return,
            }
        }
        let _ = arrived_tx.send(());
        if release_rx.recv_timeout(WAIT).is_ok() {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
        }
    });
    (addr, arrived, release, thread)
}

#[test]
fn in_grace_mode_an_inbound_request_in_flight_across_the_stop_completes() {
    for_each_driver(|driver| {
        let (app, arrived, release, app_thread) = held_app();
        let mut config = sidecar_config(Some(app.port()));
        // Far longer than the test waits: the outbound stop ends it.
        config.proxy.shutdown_grace_ms = 600_000;
        let proxy = start_proxy(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let client = std::thread::spawn(move || get(inbound, "/slow", &[]));
        arrived
            .recv_timeout(WAIT)
            .expect("the request reaches the application");
        let handle = proxy.into_handle();
        let stopper = handle.outbound_stopper();
        let shutter = std::thread::spawn(move || handle.shutdown());
        assert!(
            wait_until(|| TcpStream::connect(inbound).is_err()),
            "inbound must stop accepting"
        );
        release.send(()).expect("release the answer");
        let response = client
            .join()
            .expect("client thread")
            .expect("the request in flight is answered");
        assert_eq!(
            (response.status, response.body.as_slice()),
            (200, &b"late"[..])
        );
        stopper.stop();
        assert!(
            wait_until(|| shutter.is_finished()),
            "shutdown must end once outbound is stopped"
        );
        shutter.join().expect("shutdown returned");
        app_thread.join().expect("application thread");
    });
}
