//! Protocol detection and opaque TCP on real sockets on 127.0.0.1, on both drivers: each
//! protocol recognised (also across a split first read), silence and closing, opaque
//! ports read nothing, relays byte-exact both ways with half-close and idle timeout, a
//! server that speaks first, and connecting past a dead endpoint.
//!
//! Peers are plain blocking sockets (on their own threads where both ways run at once);
//! the code under test runs on a monoio runtime of the driver under test. Every wait is
//! for a condition, bounded by [`BOUND`] only to turn a hang into a failure.

use coremesh::core::{Core, CoreParams};
use coremesh::error::ProxyError;
use coremesh::transport::conn::{Conn, Fill};
use coremesh::transport::detect::{
    detect, DetectConfig, DetectReason, Detection, Protocol, H2_PREFACE, MAX_DETECT_BYTES,
};
use coremesh::transport::opaque::{connect, relay, relay_to_service, RelayConfig};
use coremesh_discovery::{BalanceKind, Config, Snapshot};
use coremesh_telemetry::{Side, Way};
use coremesh_tests::proxy::{assert_running_driver, base_config, for_each_driver, service};
use coremesh_tests::Driver;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Turns a hang into a failure; no test waits this long when it passes.
const BOUND: Duration = Duration::from_secs(60);

/// Runs `test` on a runtime of `driver`, failing if it takes longer than [`BOUND`].
fn run<F, Fut>(driver: Driver, test: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    coremesh::runtime::run_on_driver(
        driver,
        || async move {
            if monoio::time::timeout(BOUND, test()).await.is_err() {
                panic!("the test did not finish within {BOUND:?}");
            }
        },
        |running| assert_running_driver(driver, running),
    )
    .expect("a runtime starts");
}

/// A connection accepted by the code under test, and the peer that connected.
async fn accepted() -> (Conn, TcpStream) {
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    // The kernel completes the handshake from its backlog: this does not wait for accept.
    let peer = TcpStream::connect(addr).expect("connect");
    let (stream, _) = listener.accept().await.expect("accept");
    (Conn::new(stream, Vec::with_capacity(16 * 1024)), peer)
}

/// An upstream connection made by the code under test, and the peer that accepted it.
async fn upstream() -> (monoio::net::TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local address");
    let stream = monoio::net::TcpStream::connect(addr)
        .await
        .expect("connect");
    let (peer, _) = listener.accept().expect("accept");
    (stream, peer)
}

fn ioctl_int(fd: i32, request: libc::c_ulong) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: `fd` is an open socket of this process; the ioctl writes one c_int to `n`.
    let rc = unsafe { libc::ioctl(fd, request, &mut n) };
    assert_eq!(rc, 0, "ioctl: {}", std::io::Error::last_os_error());
    n
}

/// Waits (polling, within [`BOUND`]) until `condition` holds.
async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < BOUND, "gave up waiting until {what}");
        monoio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits until everything `peer` sent has been acknowledged: it is in the receiver's queue.
async fn until_delivered(peer: &TcpStream) {
    let fd = peer.as_raw_fd();
    until("the peer's bytes are acknowledged", || {
        ioctl_int(fd, libc::TIOCOUTQ) == 0
    })
    .await;
}

/// Reads into `conn` until it buffers `n` bytes (or the peer closes).
async fn fill_to(conn: &mut Conn, n: usize) {
    while conn.buffered() < n {
        match conn.fill(n.max(MAX_DETECT_BYTES)).await {
            Ok(Fill::Read(_)) => {}
            other => panic!("expected more bytes, got {other:?}"),
        }
    }
}

fn client_hello() -> Vec<u8> {
    let body = [0x03, 0x03, 1, 2, 3, 4];
    let mut out = vec![0x16, 0x03, 0x01, 0x00, (body.len() + 4) as u8, 0x01, 0, 0];
    out.push(body.len() as u8);
    out.extend_from_slice(&body);
    out
}

fn matched(protocol: Protocol) -> Detection {
    Detection {
        protocol,
        reason: DetectReason::Matched,
    }
}

fn opaque(reason: DetectReason) -> Detection {
    Detection {
        protocol: Protocol::Opaque,
        reason,
    }
}

#[test]
fn each_protocol_is_recognised_and_its_bytes_stay_buffered() {
    let mut h2 = H2_PREFACE.to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    let cases: Vec<(Vec<u8>, Detection)> = vec![
        (
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            matched(Protocol::Http1),
        ),
        (h2, matched(Protocol::Http2)),
        (client_hello(), matched(Protocol::Tls)),
        (
            b"SSH-2.0-OpenSSH_9.6\r\n".to_vec(),
            opaque(DetectReason::Unrecognised),
        ),
    ];
    for_each_driver(|driver| {
        let cases = cases.clone();
        run(driver, || async move {
            for (bytes, expected) in cases {
                let (mut conn, mut peer) = accepted().await;
                peer.write_all(&bytes).expect("write");
                let got = detect(&mut conn, 8080, &DetectConfig::default()).await;
                assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(&bytes));
                assert!(!conn.data().is_empty() && bytes.starts_with(conn.data()));
                // Nothing was consumed: the rest follows what detection read.
                fill_to(&mut conn, bytes.len()).await;
                assert_eq!(conn.data(), &bytes[..]);
            }
        });
    });
}

#[test]
fn a_first_read_of_one_byte_waits_for_the_rest() {
    let cases: Vec<(Vec<u8>, Protocol)> = vec![
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Protocol::Http1),
        (H2_PREFACE.to_vec(), Protocol::Http2),
        (client_hello(), Protocol::Tls),
    ];
    for_each_driver(|driver| {
        let cases = cases.clone();
        run(driver, || async move {
            for (bytes, protocol) in cases {
                let (mut conn, mut peer) = accepted().await;
                let server_fd = conn.stream.as_raw_fd();
                let detecting = monoio::spawn(async move {
                    let d = detect(&mut conn, 8080, &DetectConfig::default()).await;
                    (d, conn)
                });
                peer.write_all(&bytes[..1]).expect("write");
                until_delivered(&peer).await;
                // Detection has read the single byte (nothing is left in the socket) ...
                until("detection read the first byte", || {
                    ioctl_int(server_fd, libc::FIONREAD) == 0
                })
                .await;
                // ... and only then does the rest arrive.
                peer.write_all(&bytes[1..]).expect("write");
                let (d, conn) = detecting.await;
                assert_eq!(d, matched(protocol));
                assert_eq!(conn.bytes_in as usize, conn.buffered());
                assert!(conn.data().len() > 1 && bytes.starts_with(conn.data()));
            }
        });
    });
}

#[test]
fn detection_gives_up_at_the_configured_byte_limit() {
    // A request line whose target is longer than the limit: undecided at the limit.
    let line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(200));
    for_each_driver(|driver| {
        let line = line.clone();
        run(driver, || async move {
            for (max_bytes, expected) in [
                (128, opaque(DetectReason::Unrecognised)),
                (1024, matched(Protocol::Http1)),
            ] {
                let (mut conn, mut peer) = accepted().await;
                peer.write_all(line.as_bytes()).expect("write");
                until_delivered(&peer).await;
                let cfg = DetectConfig {
                    max_bytes,
                    ..DetectConfig::default()
                };
                let got = detect(&mut conn, 8080, &cfg).await;
                assert_eq!(got, expected, "max_bytes {max_bytes}");
                // Nothing is consumed: what was read is still there for the next path.
                assert!(!conn.data().is_empty() && line.as_bytes().starts_with(conn.data()));
            }
        });
    });
}

#[test]
fn a_silent_client_is_opaque_after_the_timeout_and_loses_nothing() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (mut conn, mut peer) = accepted().await;
            let cfg = DetectConfig {
                timeout: Duration::from_millis(50),
                ..DetectConfig::default()
            };
            assert_eq!(
                detect(&mut conn, 8080, &cfg).await,
                opaque(DetectReason::Timeout)
            );
            assert_eq!(conn.buffered(), 0);
            // Bytes sent after the timeout are all read by whatever comes next.
            peer.write_all(b"late bytes").expect("write");
            fill_to(&mut conn, 10).await;
            assert_eq!(conn.data(), b"late bytes");
        });
    });
}

#[test]
fn a_client_that_closes_first_is_opaque_with_what_it_sent() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (mut conn, peer) = accepted().await;
            drop(peer);
            let got = detect(&mut conn, 8080, &DetectConfig::default()).await;
            assert_eq!(got, opaque(DetectReason::Closed));
            assert_eq!(conn.buffered(), 0);

            let (mut conn, mut peer) = accepted().await;
            peer.write_all(b"GE").expect("write");
            peer.shutdown(Shutdown::Write).expect("shutdown");
            let got = detect(&mut conn, 8080, &DetectConfig::default()).await;
            assert_eq!(got, opaque(DetectReason::Closed));
            assert_eq!(conn.data(), b"GE");
        });
    });
}

#[test]
fn an_opaque_port_reads_nothing() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (mut conn, mut peer) = accepted().await;
            let request = b"GET / HTTP/1.1\r\n\r\n";
            peer.write_all(request).expect("write");
            until_delivered(&peer).await;
            let got = detect(&mut conn, 5432, &DetectConfig::default()).await;
            assert_eq!(got, opaque(DetectReason::OpaquePort));
            assert_eq!((conn.buffered(), conn.bytes_in), (0, 0));
            let queued = ioctl_int(conn.stream.as_raw_fd(), libc::FIONREAD);
            assert_eq!(queued as usize, request.len());
        });
    });
}

/// `len` bytes that differ between `seed`s and do not repeat with a short period.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Sends `out` then half-closes, while reading everything until EOF; returns what was read.
fn exchange(peer: TcpStream, out: Vec<u8>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        peer.set_read_timeout(Some(BOUND)).expect("timeout");
        let mut writer = peer.try_clone().expect("clone");
        let sending = thread::spawn(move || {
            writer.write_all(&out).expect("write");
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut got = Vec::new();
        (&peer).read_to_end(&mut got).expect("read");
        sending.join().expect("writer");
        got
    })
}

/// A core whose only service, `db`, has `endpoints`, balanced round-robin, tried
/// `max_attempts` times, an endpoint ejected after `eject_after` failures (0: never).
fn core_with(endpoints: &[SocketAddr], max_attempts: u32, eject_after: u32) -> Rc<Core> {
    let mut config: Config = base_config();
    let mut db = service("db", endpoints);
    db.overrides.balance = Some(BalanceKind::RoundRobin);
    db.overrides.max_attempts = Some(max_attempts);
    db.overrides.eject_consecutive_failures = Some(eject_after);
    db.overrides.eject_base_ms = Some(600_000);
    db.overrides.eject_max_percent = Some(100);
    config.services = vec![db];
    let snapshot = Arc::new(Snapshot::build(&config));
    let layout = coremesh::observe::build_layout(&snapshot, true);
    Core::new(CoreParams {
        id: 0,
        tracer: None,
        access_log: None,
        defaults: config.defaults.clone(),
        grace: Duration::from_secs(1),
        tunnel_idle: Duration::from_secs(60),
        tunnel_buffer: coremesh_discovery::DEFAULT_TUNNEL_BUFFER_BYTES,
        lingering_close: Duration::from_secs(1),
        spread_connections: Default::default(),
        snapshot,
        seed: 7,
        gossip: None,
        layout,
        meshed: coremesh::transport::tls_meshed::MeshedEndpoints::new(
            None,
            Duration::from_secs(5),
            Default::default(),
        ),
    })
}

#[test]
fn a_mebibyte_each_way_arrives_byte_exact_and_is_counted() {
    const MIB: usize = 1024 * 1024;
    for_each_driver(|driver| {
        run(driver, || async {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let core = core_with(&[listener.local_addr().expect("addr")], 1, 0);
            let (mut conn, mut client) = accepted().await;
            // The client's first bytes are read by detection and must go first.
            client.write_all(b"{ping}").expect("write");
            let got = detect(&mut conn, 8080, &DetectConfig::default()).await;
            assert_eq!(got, opaque(DetectReason::Unrecognised));
            let to_upstream = pattern(1, MIB);
            let to_client = pattern(2, MIB);
            let client_side = exchange(client, to_upstream.clone());
            let upstream_side = thread::spawn(move || {
                let (peer, _) = listener.accept().expect("accept");
                exchange(peer, to_client).join().expect("upstream peer")
            });
            let cfg = RelayConfig {
                buffer_bytes: 4096,
                ..RelayConfig::default()
            };
            let report = relay_to_service(&core, conn, Side::Outbound, 0, &cfg)
                .await
                .expect("connected");
            // The relay ends once both sides have closed: the peers are done too.
            let at_upstream = upstream_side.join().expect("upstream peer");
            let at_client = client_side.join().expect("client peer");
            assert_eq!(&at_upstream[..6], b"{ping}");
            assert!(
                at_upstream[6..] == to_upstream[..],
                "client → upstream bytes differ"
            );
            assert!(
                at_client == pattern(2, MIB),
                "upstream → client bytes differ"
            );
            assert_eq!(report.to_upstream, (MIB + 6) as u64);
            assert_eq!(report.to_client, MIB as u64);
            assert!(!report.idle_closed);
            let m = core.metrics.borrow().snapshot();
            assert_eq!(m.tcp_connections(Side::Outbound, Some("db")), 1);
            assert_eq!(m.tcp_connections(Side::Inbound, Some("db")), 0);
            // One connection, one connect time.
            assert_eq!(m.tcp_connect_time(Side::Outbound, Some("db")).count, 1);
            assert_eq!(m.tcp_connect_time(Side::Inbound, Some("db")).count, 0);
            let bytes = |way| m.tcp_bytes(Side::Outbound, Some("db"), way);
            assert_eq!(bytes(Way::ToUpstream), (MIB + 6) as u64);
            assert_eq!(bytes(Way::ToClient), MIB as u64);
        });
    });
}

#[test]
fn a_half_close_by_the_client_passes_on_and_the_upstream_still_answers() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (conn, mut client) = accepted().await;
            let (up, mut peer) = upstream().await;
            client.set_read_timeout(Some(BOUND)).expect("timeout");
            peer.set_read_timeout(Some(BOUND)).expect("timeout");
            let upstream_side = thread::spawn(move || {
                let mut got = Vec::new();
                peer.read_to_end(&mut got)
                    .expect("read until the client's FIN");
                peer.write_all(b"pong after your FIN").expect("write");
                peer.shutdown(Shutdown::Write).expect("shutdown");
                got
            });
            let client_side = thread::spawn(move || {
                client.write_all(b"ping").expect("write");
                client.shutdown(Shutdown::Write).expect("shutdown");
                let mut got = Vec::new();
                client.read_to_end(&mut got).expect("read");
                got
            });
            let report = relay(conn, up, &RelayConfig::default()).await;
            assert_eq!(upstream_side.join().expect("upstream"), b"ping");
            assert_eq!(client_side.join().expect("client"), b"pong after your FIN");
            assert_eq!((report.to_upstream, report.to_client), (4, 19));
        });
    });
}

#[test]
fn a_half_close_by_the_upstream_passes_on_and_the_client_still_sends() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (conn, mut client) = accepted().await;
            let (up, mut peer) = upstream().await;
            client.set_read_timeout(Some(BOUND)).expect("timeout");
            peer.set_read_timeout(Some(BOUND)).expect("timeout");
            let upstream_side = thread::spawn(move || {
                peer.write_all(b"all I will say").expect("write");
                peer.shutdown(Shutdown::Write).expect("shutdown");
                let mut got = Vec::new();
                peer.read_to_end(&mut got).expect("read");
                got
            });
            let client_side = thread::spawn(move || {
                let mut got = Vec::new();
                client
                    .read_to_end(&mut got)
                    .expect("read until the upstream's FIN");
                client.write_all(b"still sending").expect("write");
                client.shutdown(Shutdown::Write).expect("shutdown");
                got
            });
            let report = relay(conn, up, &RelayConfig::default()).await;
            assert_eq!(client_side.join().expect("client"), b"all I will say");
            assert_eq!(upstream_side.join().expect("upstream"), b"still sending");
            assert_eq!((report.to_upstream, report.to_client), (13, 14));
        });
    });
}

#[test]
fn a_relay_idle_both_ways_is_closed_on_both_sides() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (conn, mut client) = accepted().await;
            let (up, mut peer) = upstream().await;
            let cfg = RelayConfig {
                idle: Duration::from_millis(100),
                ..RelayConfig::default()
            };
            client.write_all(b"one").expect("write");
            let report = relay(conn, up, &cfg).await;
            assert!(report.idle_closed);
            assert_eq!((report.to_upstream, report.to_client), (3, 0));
            for (name, side) in [("client", &mut client), ("upstream", &mut peer)] {
                side.set_read_timeout(Some(BOUND)).expect("timeout");
                let mut got = Vec::new();
                // EOF (or a reset): the relay closed this side.
                let _ = side.read_to_end(&mut got);
                let expected: &[u8] = if name == "upstream" { b"one" } else { b"" };
                assert_eq!(got, expected, "{name}");
            }
        });
    });
}

#[test]
fn a_server_that_speaks_first_is_heard_before_the_client_says_anything() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (mut conn, mut client) = accepted().await;
            let (up, mut peer) = upstream().await;
            client.set_read_timeout(Some(BOUND)).expect("timeout");
            peer.set_read_timeout(Some(BOUND)).expect("timeout");
            let got = detect(&mut conn, 25, &DetectConfig::default()).await;
            assert_eq!(got, opaque(DetectReason::OpaquePort));
            let upstream_side = thread::spawn(move || {
                peer.write_all(b"220 ready\r\n").expect("write");
                let mut quit = [0u8; 6];
                peer.read_exact(&mut quit).expect("read");
                peer.write_all(b"221 bye\r\n").expect("write");
                quit
            });
            let client_side = thread::spawn(move || {
                let mut banner = [0u8; 11];
                client
                    .read_exact(&mut banner)
                    .expect("the banner, before sending");
                client.write_all(b"QUIT\r\n").expect("write");
                client.shutdown(Shutdown::Write).expect("shutdown");
                let mut rest = Vec::new();
                client.read_to_end(&mut rest).expect("read");
                (banner, rest)
            });
            let report = relay(conn, up, &RelayConfig::default()).await;
            let (banner, rest) = client_side.join().expect("client");
            assert_eq!(&banner, b"220 ready\r\n");
            assert_eq!(rest, b"221 bye\r\n");
            assert_eq!(&upstream_side.join().expect("upstream"), b"QUIT\r\n");
            assert_eq!((report.to_upstream, report.to_client), (6, 20));
        });
    });
}

/// An address nothing listens on: bound, then closed.
fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address")
}

/// Failures the balancer recorded for each endpoint of the core's only service.
fn failures(core: &Core) -> Vec<(SocketAddr, u64)> {
    let services = core.services.borrow();
    let mut views = services[0].balancer.views(Instant::now());
    views.sort_by_key(|v| v.addr);
    views.iter().map(|v| (v.addr, v.failures)).collect()
}

#[test]
fn a_connect_failure_is_retried_on_another_endpoint_and_ejects_the_dead_one() {
    for_each_driver(|driver| {
        run(driver, || async {
            let live = TcpListener::bind("127.0.0.1:0").expect("bind");
            let live_addr = live.local_addr().expect("addr");
            let dead = dead_addr();
            let core = core_with(&[dead, live_addr], 2, 1);
            let mut attempts = Vec::new();
            for _ in 0..4 {
                let connected = connect(&core, 0).await.expect("the live endpoint");
                assert_eq!(connected.addr, live_addr);
                attempts.push(connected.attempts);
            }
            // Round-robin tries the dead endpoint first or second; once it failed it is
            // ejected and never tried again.
            assert!(
                attempts == [2, 1, 1, 1] || attempts == [1, 2, 1, 1],
                "{attempts:?}"
            );
            let mut expected = vec![(dead, 1), (live_addr, 0)];
            expected.sort_by_key(|e| e.0);
            assert_eq!(failures(&core), expected);
        });
    });
}

#[test]
fn connecting_to_dead_endpoints_fails_within_max_attempts() {
    for_each_driver(|driver| {
        run(driver, || async {
            let (a, b) = (dead_addr(), dead_addr());
            let core = core_with(&[a, b], 2, 0);
            match connect(&core, 0).await {
                Err(ProxyError::Connect(_)) => {}
                other => panic!("expected a connect error, got {other:?}"),
            }
            // Each was tried once: two attempts, on two endpoints.
            let mut expected = vec![(a, 1), (b, 1)];
            expected.sort_by_key(|e| e.0);
            assert_eq!(failures(&core), expected);
        });
    });
}
