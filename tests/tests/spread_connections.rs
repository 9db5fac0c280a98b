//! `[proxy] spread_connections`, on both drivers with two cores: by default (`balanced`)
//! the client connections are split evenly between the cores whatever the kernel's
//! `SO_REUSEPORT` hash does (each connection is opened and answered before the next, so
//! each core's count is settled when the next is accepted and the split is exact);
//! `always` moves every connection to the other core, where it is served whole (several
//! requests, a request body, the client's address), on the explicit listener and on the
//! sidecar's inbound side (HTTP and opaque TCP); `off` moves none.

use coremesh_discovery::{Config, InboundSettings, SideSettings, SpreadConnections};
use coremesh_tests::admin::{start_with_admin, AdminProxy};
use coremesh_tests::client::Client;
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{base_config, for_each_driver, one_service};
use coremesh_tests::upstream::Upstream;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const OPEN: &str = "coremesh_core_connections_open";
const MOVED: &str = "coremesh_connections_handed_off_total";
const REQUESTS: &str = "coremesh_core_requests_total";
/// Bound on every wait: only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(30);

/// `family` per `core` label.
fn per_core(e: &Exposition, family: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for sample in e.matching(family, &[]) {
        let core = sample.labels.get("core").cloned().unwrap_or_default();
        *out.entry(core).or_insert(0) += sample.value as u64;
    }
    out
}

fn scrape(proxy: &AdminProxy) -> Exposition {
    let text = proxy.metrics_text();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}\n{text}"))
}

/// Scrape until `done` holds (a core reports at its next tick), at most [`WAIT`].
fn scrape_until(proxy: &AdminProxy, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let deadline = Instant::now() + WAIT;
    loop {
        let e = scrape(proxy);
        if done(&e) {
            return e;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: open {:?}, moved {:?}, requests {:?}",
                per_core(&e, OPEN),
                per_core(&e, MOVED),
                per_core(&e, REQUESTS)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A two-core proxy in front of `app` with `spread`.
fn two_cores(app: SocketAddr, spread: SpreadConnections) -> Config {
    let mut config = one_service(&[app]);
    config.proxy.cores = 2;
    config.proxy.spread_connections = spread;
    config
}

/// One keep-alive GET on `client`, answered 200.
fn get_on(client: &mut Client, path: &str) {
    client
        .send_request("GET", path, &[("Host", "spread.test")], None)
        .unwrap_or_else(|e| panic!("send {path}: {e}"));
    let response = client
        .read_response(false)
        .unwrap_or_else(|e| panic!("response to {path}: {e:?}"));
    assert_eq!(response.status, 200, "{path}");
    assert!(!response.has_connection_close(), "{path}: kept alive");
}

/// 64 connections, opened one after another and each answered before the next, all held
/// open: 32 on each core, whichever listener the kernel gave each one to.
#[test]
fn balanced_connections_are_split_evenly_between_the_cores() {
    const CONNECTIONS: usize = 64;
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let proxy = start_with_admin(driver, two_cores(app.addr(), SpreadConnections::Balanced));
        let mut clients = Vec::with_capacity(CONNECTIONS);
        for i in 0..CONNECTIONS {
            let mut client =
                Client::connect(proxy.addr()).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            get_on(&mut client, &format!("/c/{i}"));
            clients.push(client);
        }
        let e = scrape_until(&proxy, "every connection counted open", |e| {
            e.sum(OPEN, &[]) as usize == CONNECTIONS
        });
        let open = per_core(&e, OPEN);
        let half = (CONNECTIONS / 2) as u64;
        assert_eq!(
            open.values().copied().collect::<Vec<_>>(),
            vec![half, half],
            "open connections per core: {open:?} (moved: {:?})",
            per_core(&e, MOVED)
        );
        let requests = per_core(&e, REQUESTS);
        assert_eq!(
            requests.values().copied().collect::<Vec<_>>(),
            vec![half, half],
            "requests per core: {requests:?}"
        );
        // The held connections still work, on whichever core serves them.
        for (i, client) in clients.iter_mut().enumerate() {
            get_on(client, &format!("/again/{i}"));
        }
        assert_eq!(app.received().len(), 2 * CONNECTIONS);
        drop(clients);
        scrape_until(&proxy, "every connection closed", |e| {
            e.sum(OPEN, &[]) == 0.0
        });
    });
}

/// `off`: no connection moves (the split is the kernel's).
#[test]
fn with_spread_off_no_connection_moves() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let proxy = start_with_admin(driver, two_cores(app.addr(), SpreadConnections::Off));
        let mut clients = Vec::new();
        for i in 0..16 {
            let mut client =
                Client::connect(proxy.addr()).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            get_on(&mut client, "/");
            clients.push(client);
        }
        let e = scrape_until(&proxy, "every connection counted open", |e| {
            e.sum(OPEN, &[]) == 16.0
        });
        assert_eq!(e.sum(MOVED, &[]), 0.0, "{:?}", per_core(&e, MOVED));
    });
}

/// `always`: every connection is served by the core that did not accept it, whole: three
/// requests on it, one with a body, the client's address in `X-Forwarded-For`.
#[test]
fn always_moves_every_connection_and_serves_it_whole() {
    const CONNECTIONS: usize = 10;
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let mut config = two_cores(app.addr(), SpreadConnections::Always);
        config.defaults.add_forwarded_for = true;
        let proxy = start_with_admin(driver, config);
        for i in 0..CONNECTIONS {
            let mut client =
                Client::connect(proxy.addr()).unwrap_or_else(|e| panic!("connection {i}: {e}"));
            get_on(&mut client, &format!("/a/{i}"));
            let body = format!("body of connection {i}").repeat(100);
            client
                .send_request(
                    "POST",
                    &format!("/b/{i}"),
                    &[("Host", "spread.test")],
                    Some(body.as_bytes()),
                )
                .unwrap_or_else(|e| panic!("send POST {i}: {e}"));
            let response = client
                .read_response(false)
                .unwrap_or_else(|e| panic!("POST {i}: {e:?}"));
            assert_eq!(response.status, 200, "POST {i}");
            get_on(&mut client, &format!("/c/{i}"));
        }
        let received = app.received();
        assert_eq!(received.len(), 3 * CONNECTIONS);
        for (i, request) in received.iter().enumerate() {
            assert_eq!(
                request.header("x-forwarded-for").as_deref(),
                Some("127.0.0.1"),
                "request {i}"
            );
            if request.method == "POST" {
                assert!(
                    String::from_utf8_lossy(&request.body).starts_with("body of connection"),
                    "request {i}: the body arrived"
                );
                assert_eq!(request.body.len() % 100, 0, "request {i}: whole body");
            }
        }
        let e = scrape_until(&proxy, "every request counted", |e| {
            e.sum(REQUESTS, &[]) as usize == 3 * CONNECTIONS
        });
        assert_eq!(
            e.sum(MOVED, &[]) as usize,
            CONNECTIONS,
            "every connection moved: {:?}",
            per_core(&e, MOVED)
        );
        // Each core served exactly the connections the other one accepted.
        let moved = per_core(&e, MOVED);
        let requests = per_core(&e, REQUESTS);
        for (core, other) in [("0", "1"), ("1", "0")] {
            assert_eq!(
                requests.get(core).copied().unwrap_or(0),
                3 * moved.get(other).copied().unwrap_or(0),
                "core {core} served the connections core {other} moved: requests {requests:?}, moved {moved:?}"
            );
        }
    });
}

/// A sidecar with an inbound side to `app_port`, two cores, `always`.
fn inbound_always(app_port: u16) -> Config {
    let mut config = base_config();
    config.proxy.cores = 2;
    config.proxy.spread_connections = SpreadConnections::Always;
    config.proxy.shutdown_grace_ms = 300;
    config.inbound = Some(InboundSettings {
        side: SideSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            ..SideSettings::default()
        },
        app_port: Some(app_port),
        ..InboundSettings::default()
    });
    config
}

/// A connection moved from the sidecar's inbound listener keeps its side: HTTP reaches the
/// application with the client's address, and opaque TCP comes back byte-exact.
#[test]
fn always_moves_inbound_connections_with_their_side() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let proxy = start_with_admin(driver, inbound_always(app.addr().port()));
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        for i in 0..4 {
            let response =
                coremesh_tests::client::get(inbound, &format!("/in/{i}"), &[("Host", "app.local")])
                    .unwrap_or_else(|e| panic!("request {i} through inbound: {e:?}"));
            assert_eq!(response.status, 200, "request {i}");
        }
        let received = app.received();
        assert_eq!(received.len(), 4);
        for request in &received {
            assert_eq!(
                request.header("x-forwarded-for").as_deref(),
                Some("127.0.0.1")
            );
        }
        drop(proxy);

        let (echo, echo_thread) = coremesh_tests::sockets::tcp_echo();
        let proxy = start_with_admin(driver, inbound_always(echo.port()));
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = TcpStream::connect(inbound).expect("connect to inbound");
        stream.set_read_timeout(Some(WAIT)).expect("read timeout");
        let writer = {
            let mut stream = stream.try_clone().expect("clone the stream");
            let payload = payload.clone();
            std::thread::spawn(move || {
                stream.write_all(&payload).expect("write the payload");
                stream
                    .shutdown(std::net::Shutdown::Write)
                    .expect("half-close");
            })
        };
        let mut back = Vec::new();
        stream.read_to_end(&mut back).expect("read the echo");
        writer.join().expect("writer");
        echo_thread.join().expect("the echo server");
        assert!(
            back == payload,
            "{} of {} bytes came back, in order",
            back.len(),
            payload.len()
        );
        let e = scrape_until(&proxy, "the connection counted", |e| {
            e.sum(MOVED, &[]) >= 1.0
        });
        assert_eq!(e.sum(MOVED, &[]), 1.0, "{:?}", per_core(&e, MOVED));
    });
}
