//! A flood of connections that send nothing, more than `[defaults] max_connections`, on
//! each side, on both drivers:
//! - while they wait in detection they hold no place under the cap: at most
//!   `max_connections` wait per core, and each newcomer beyond that sheds the one that has
//!   waited longest (closed at once, `coremesh_sidecar_shed_total`);
//! - so a well-behaved request made during the flood is answered;
//! - the detection timeout ends each wait that was not shed (counted as
//!   `reason="timeout"`), the connection is relayed as opaque TCP, and the relay's idle
//!   timeout then closes it on both sides: every flood connection ends without the client
//!   doing anything, and the counters add up to exactly the flood and the request.
//!
//! Inbound runs on 127.0.0.1 (a connection made straight to the side goes to `app_port`);
//! outbound runs in a network namespace of its own (root only; elsewhere it says why it is
//! skipped) where a rule redirects connections from 127.0.0.5 to the side, so their
//! original destination is the application's address and they are passed through.

use coremesh_discovery::{Config, InboundSettings, SideSettings};
use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::client::{get, Client};
use coremesh_tests::netns::{can_run, Netns};
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{base_config, for_each_driver};
use coremesh_tests::upstream::Upstream;
use coremesh_tests::Driver;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

/// Connections served at once per core (the proxy runs one core).
const CAP: usize = 6;
/// Silent connections beyond the cap.
const OVER: usize = 4;
/// The sides' detection timeout and relay idle timeout: long enough that the request
/// made during the flood usually finds every place taken (either way, the counts add up).
const DETECT_MS: u64 = 1_000;
/// Turns a hang into a failure; nothing waits for it on a working run.
const BOUND: Duration = Duration::from_secs(30);

fn side(detect_and_idle_ms: u64) -> SideSettings {
    SideSettings {
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        // Detection applies on every port (none is opaque at once).
        opaque_ports: Vec::new(),
        detect_timeout_ms: detect_and_idle_ms,
        tcp_idle_timeout_ms: detect_and_idle_ms,
        ..SideSettings::default()
    }
}

fn flood_config(edit: impl FnOnce(&mut Config)) -> Config {
    let mut config = base_config();
    config.proxy.shutdown_grace_ms = 300;
    config.defaults.max_connections = CAP;
    edit(&mut config);
    config
}

/// Opens `CAP + OVER` connections to `to` from `from` (when given) that send nothing,
/// waits until `proxy` has taken all of them in, runs `during` (the flood still open), then
/// waits until the proxy has closed every flood connection.
fn flood(
    proxy: &AdminProxy,
    direction: &str,
    to: SocketAddr,
    from: Option<IpAddr>,
    during: impl FnOnce(),
) {
    // One at a time, each taken in before the next: a burst arriving before the side has
    // run at all would meet the accept's own count (closed at once).
    let taken_in = |n: usize| {
        wait_for_admin(|| {
            let m = Exposition::parse(&proxy.metrics_text()).expect("metrics");
            let seen = m.sum(
                "coremesh_sidecar_connections_total",
                &[("direction", direction)],
            );
            ((seen == n as f64).then_some(()), format!("{seen}"))
        })
    };
    let mut silent = Vec::new();
    for i in 0..CAP + OVER {
        let stream = match from {
            Some(ip) => Client::connect_from(ip, to)
                .expect("connect through the redirect")
                .stream()
                .try_clone()
                .expect("clone"),
            None => TcpStream::connect(to).expect("connect"),
        };
        stream.set_read_timeout(Some(BOUND)).expect("read timeout");
        silent.push(stream);
        let taken = taken_in(i + 1);
        assert!(taken.is_ok(), "flood connection {i} taken in: {taken:?}");
    }
    during();
    // Each read returns at the proxy's close (EOF or reset), not at the client's bound.
    let started = std::time::Instant::now();
    for (i, mut stream) in silent.into_iter().enumerate() {
        let mut byte = [0u8; 1];
        let read = loop {
            match stream.read(&mut byte) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                read => break read,
            }
        };
        assert!(
            matches!(read, Ok(0)) || read.as_ref().is_err_and(|e| !timed_out(e)),
            "flood connection {i} was not closed by the proxy: {read:?}"
        );
    }

    // Printed, not asserted: how long the flood lasted (the detection timeout, then the
    // relay's idle timeout).
    eprintln!("the flood ended after {} ms", started.elapsed().as_millis());
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// The side's counters reach exactly: the flood and `then` more connections, `then`
/// HTTP/1 detections, and one end for each flood connection: shed, or its detection timed
/// out (how many of each depends on when the request came; printed).
fn assert_counted(proxy: &AdminProxy, direction: &str, then: f64) {
    let flood = (CAP + OVER) as f64;
    let counted = wait_for_admin(|| {
        let m = Exposition::parse(&proxy.metrics_text()).expect("metrics");
        let connections = m.sum(
            "coremesh_sidecar_connections_total",
            &[("direction", direction)],
        );
        let shed = m.sum("coremesh_sidecar_shed_total", &[("direction", direction)]);
        let timeouts = m.sum(
            "coremesh_detect_total",
            &[("direction", direction), ("reason", "timeout")],
        );
        let http = m.sum(
            "coremesh_detect_total",
            &[("direction", direction), ("protocol", "http1")],
        );
        let seen = [connections, shed + timeouts, http];
        let want = [flood + then, flood, then];
        (
            (seen == want).then_some(format!("shed {shed}, timed out {timeouts}")),
            format!("connections, shed + timeouts, http1: {seen:?}, want {want:?}"),
        )
    });
    if let Ok(ends) = &counted {
        eprintln!("{direction}: {ends}");
    }
    let detections: Vec<String> = proxy
        .metrics_text()
        .lines()
        .filter(|l| l.starts_with("coremesh_detect_total") || l.starts_with("coremesh_tcp_"))
        .map(str::to_owned)
        .collect();
    assert!(
        counted.is_ok(),
        "{direction}: {counted:?}\n{}",
        detections.join("\n")
    );
}

#[test]
fn a_flood_of_silent_connections_on_inbound() {
    for_each_driver(|driver| {
        let app = Upstream::fixed_named("app", 200, b"app");
        let config = flood_config(|config| {
            config.inbound = Some(InboundSettings {
                side: side(DETECT_MS),
                app_port: Some(app.addr().port()),
                ..InboundSettings::default()
            });
        });
        let proxy = start_with_admin(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");
        flood(&proxy, "inbound", inbound, None, || {
            let r = get(inbound, "/during", &[]).expect("a request during the flood");
            assert_eq!((r.status, r.body.as_slice()), (200, b"app".as_slice()));
        });
        assert_eq!(app.requests_received(), 1);
        assert_counted(&proxy, "inbound", 1.0);
    });
}

const CLIENT_IP: &str = "127.0.0.5";

#[test]
fn a_flood_of_silent_connections_on_outbound() {
    if !can_run("a_flood_of_silent_connections_on_outbound", &["iptables"]) {
        return;
    }
    for_each_driver(outbound_flood);
}

fn outbound_flood(driver: Driver) {
    let ns = Netns::new().expect("a network namespace");
    ns.enter(|| {
        let destination = Upstream::fixed_named("elsewhere", 200, b"elsewhere");
        let config = flood_config(|config| config.outbound = Some(side(DETECT_MS)));
        let proxy = start_with_admin(driver, config);
        let port = proxy.outbound_addr().expect("an outbound listener").port();
        let redirect = [
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
        ];
        let mut args: Vec<String> = redirect.iter().map(|a| a.to_string()).collect();
        args.push(port.to_string());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ns.run("iptables", &args).expect("the redirect rule");
        let from: IpAddr = CLIENT_IP.parse().expect("a literal address");
        flood(&proxy, "outbound", destination.addr(), Some(from), || {
            let mut c = Client::connect_from(from, destination.addr()).expect("connect");
            let request =
                coremesh_tests::client::build_request("GET", "/during", &[("Host", "h")], None);
            c.send_raw(&request).expect("send");
            let r = c.read_response(false).expect("an answer during the flood");
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, b"elsewhere".as_slice())
            );
        });
        assert_eq!(destination.requests_received(), 1);
        assert_counted(&proxy, "outbound", 1.0);
    })
    .expect("enter the namespace");
}
