//! The transparent sidecar end to end (root only; elsewhere it says why it is skipped).
//!
//! Two network namespaces joined by a veth: a client (10.77.N.1, fd77:N::1) and an
//! application (10.77.N.2, fd77:N::2). In the application's namespace: an HTTP server, a
//! TCP echo on an opaque port, a server that speaks first, two endpoints of a service
//! `users` claimed at the addresses 10.96.0.10:80 and [fd96::10]:80, the `coremesh`
//! program running as a uid of its own with `[inbound]` and `[outbound]` on their default
//! listeners (IPv4 and IPv6), and the rules of `coremesh iptables install`. Then:
//! - from the client, HTTP to the application's address arrives through inbound, over
//!   IPv4 and over IPv6 (the proxy counts it, the application sees the client's address
//!   in X-Forwarded-For); 1 MiB through the echo comes back byte-exact; the banner arrives
//!   before the client sends anything (with a detection timeout of ten minutes, a wait
//!   would hang the test);
//! - from the application's namespace, as root (not the proxy's uid): calls to the
//!   service address, IPv4 and IPv6, are balanced over its two endpoints through
//!   outbound, and a call to an address no service claims passes through to it (IPv4 and
//!   IPv6);
//! - SIGTERM, in the default `shutdown = "grace"`: inbound stops accepting while outbound
//!   still balances, and discovery still applies a change of the file (the service loses
//!   an endpoint); a second signal ends it. In `shutdown = "drain"`: every listener stops
//!   at once, a connection in flight still works, and the process exits as soon as it
//!   ends, long before the ten-minute grace period;
//! - `coremesh iptables uninstall` leaves the nat tables exactly as they were.
//!
//! It runs once per I/O driver, each in namespaces of its own: the first in "grace" mode,
//! the second in "drain" mode.

use coremesh_tests::admin::wait_for_admin;
use coremesh_tests::client::{self, Client};
use coremesh_tests::data::{pseudo_random_bytes, sha1_hex};
use coremesh_tests::netns::{can_run, coremesh_bin, Netns, Pair};
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{driver_name, DRIVERS};
use coremesh_tests::{Driver, Upstream};
use sidecar_support::{http_server, serve, wait_until, ProxyProcess, TempDir, BOUND, PROXY_UID};

mod sidecar_support;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// An opaque port by default (Redis): the echo server.
const ECHO_PORT: u16 = 6379;
/// An opaque port by default (MySQL, whose server speaks first): the banner server.
const BANNER_PORT: u16 = 3306;
const BANNER: &[u8] = b"220 banner from the application\r\n";
/// The addresses the service `users` claims.
const SERVICE_ADDR: &str = "10.96.0.10:80";
const SERVICE_ADDR6: &str = "[fd96::10]:80";
/// Calls to the service's IPv6 address (even, as [`SERVICE_CALLS`]).
const SERVICE_CALLS6: u64 = 4;
const ADMIN: &str = "127.0.0.1:4191";
/// Bytes through the echo.
const ECHO_BYTES: usize = 1024 * 1024;
/// Calls to the service address (an even number: round-robin gives each endpoint half).
const SERVICE_CALLS: u64 = 20;

#[test]
fn sidecar_in_network_namespaces() {
    if !can_run(
        "sidecar_in_network_namespaces",
        &[
            "iptables",
            "ip6tables",
            "iptables-save",
            "ip6tables-save",
            "setpriv",
        ],
    ) {
        return;
    }
    for (i, driver) in DRIVERS.into_iter().enumerate() {
        let mode = if i % 2 == 0 { "grace" } else { "drain" };
        eprintln!("sidecar on {}, shutdown {mode}", driver_name(driver));
        sidecar(driver, 1 + i as u8, mode);
    }
}

fn sidecar(driver: Driver, subnet: u8, mode: &str) {
    let pair = Pair::new(subnet).unwrap_or_else(|e| panic!("{e:#}"));
    let (client_ns, app_ns) = (&pair.a, &pair.b);
    let app_ip = pair.b_addr;
    let saves = ["iptables-save", "ip6tables-save"];
    let before: Vec<String> = saves.iter().map(|s| app_ns.nat_rules(s).unwrap()).collect();

    // The application's side: its servers, and the service's endpoints.
    let servers = app_ns
        .enter(|| {
            let app = Upstream::start("app", |req| {
                coremesh_tests::Action::Respond(coremesh_tests::Response::ok(format!(
                    "xff={}",
                    req.header("x-forwarded-for").unwrap_or_default()
                )))
            });
            let echo = echo_server(&format!("127.0.0.1:{ECHO_PORT}"));
            let banner = banner_server(&format!("127.0.0.1:{BANNER_PORT}"));
            (
                app,
                echo,
                banner,
                Upstream::fixed_named("users-a", 200, b"a"),
                Upstream::fixed_named("users-b", 200, b"b"),
            )
        })
        .unwrap();
    let servers = app_ns.guard(servers);
    let (app, echo, banner, users_a, users_b) = &*servers;
    // Somewhere no service claims: a server in the client's namespace.
    let elsewhere = client_ns
        .enter(|| http_server(&format!("{}:0", pair.a_addr), b"elsewhere"))
        .unwrap();
    let elsewhere6 = client_ns
        .enter(|| http_server(&format!("[{}]:0", pair.a_addr6), b"elsewhere6"))
        .unwrap();

    let dir = TempDir::new();
    // The sides on their default listeners: IPv4 and IPv6. A grace period far longer than
    // the test waits: only a second signal (grace) or the last connection (drain) ends it.
    let config_text = |endpoints: &str| {
        format!(
            r#"[proxy]
listen = "127.0.0.1:4180"
admin = "{ADMIN}"
cores = 1
pin_cores = false
driver = "{driver}"
shutdown_grace_ms = 600000
shutdown = "{mode}"

[defaults]
balance = "round-robin"

[outbound]
detect_timeout_ms = 600000

[inbound]
detect_timeout_ms = 600000

[[services]]
name = "users"
endpoints = [{endpoints}]
addresses = ["{SERVICE_ADDR}", "{SERVICE_ADDR6}"]
"#,
            driver = driver_name(driver),
        )
    };
    let config = dir.write(
        "coremesh.toml",
        &config_text(&format!("\"{}\", \"{}\"", users_a.addr(), users_b.addr())),
    );
    let started = Instant::now();
    let mut proxy = ProxyProcess::start(app_ns, &config, &dir);
    let ready = app_ns
        .enter(|| {
            wait_until(|| {
                client::get(ADMIN.parse().unwrap(), "/ready", &[])
                    .map(|r| r.status == 200)
                    .unwrap_or(false)
            })
        })
        .unwrap();
    assert!(ready, "not ready within {BOUND:?}\n{}", proxy.log());
    // Printed, not asserted: from spawning the program to the first `/ready` answered 200
    // (polled every 20 ms, so up to that much late).
    eprintln!(
        "{}: start to ready {} ms",
        driver_name(driver),
        started.elapsed().as_millis()
    );

    let uid = PROXY_UID.to_string();
    app_ns
        .run(
            coremesh_bin().to_str().unwrap(),
            &["iptables", "install", "--proxy-uid", &uid],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Inbound HTTP from the client, to the application's address and port.
    let app_addr = SocketAddr::from((app_ip, app.addr().port()));
    let inbound_calls = 3;
    client_ns
        .enter(|| {
            for _ in 0..inbound_calls {
                let r = client::get(app_addr, "/hello", &[]).unwrap();
                assert_eq!(r.status, 200, "{}", proxy.log());
                assert_eq!(r.body_text(), format!("xff={}", pair.a_addr));
            }
        })
        .unwrap();
    // The same over IPv6, to the application's IPv6 address.
    let app_addr6 = SocketAddr::from((pair.b_addr6, app.addr().port()));
    client_ns
        .enter(|| {
            for _ in 0..inbound_calls {
                let r = client::get(app_addr6, "/hello6", &[]).unwrap();
                assert_eq!(r.status, 200, "{}", proxy.log());
                assert_eq!(r.body_text(), format!("xff={}", pair.a_addr6));
            }
        })
        .unwrap();
    let inbound_calls = 2 * inbound_calls;
    assert_eq!(app.requests_received(), inbound_calls);
    let counted = app_ns
        .enter(|| {
            wait_for_admin(|| {
                let m = metrics();
                let n = m.sum(
                    "coremesh_sidecar_connections_total",
                    &[("direction", "inbound")],
                );
                let http = m.sum(
                    "coremesh_detect_total",
                    &[("direction", "inbound"), ("protocol", "http1")],
                );
                let want = inbound_calls as f64;
                (
                    (n == want && http == want).then_some(()),
                    format!("{n} {http}"),
                )
            })
        })
        .unwrap();
    assert!(counted.is_ok(), "inbound requests counted: {counted:?}");

    // 1 MiB through the echo, from the client, byte-exact.
    let sent = pseudo_random_bytes(ECHO_BYTES, 10);
    let back = client_ns
        .enter(|| echo_through(SocketAddr::from((app_ip, ECHO_PORT)), &sent))
        .unwrap();
    assert_eq!(back.len(), sent.len());
    assert_eq!(sha1_hex(&back), sha1_hex(&sent));
    assert_eq!(echo.load(Ordering::SeqCst), 1, "echo connections");

    // The banner, before the client sends anything.
    let line = client_ns
        .enter(|| read_banner(SocketAddr::from((app_ip, BANNER_PORT))))
        .unwrap();
    assert_eq!(line, BANNER);
    assert_eq!(banner.load(Ordering::SeqCst), 1, "banner connections");
    // Both were opaque at once (their ports), and the echo's bytes were counted each way.
    let opaque = app_ns
        .enter(|| {
            wait_for_admin(|| {
                let m = metrics();
                let ports = m.sum(
                    "coremesh_detect_total",
                    &[("direction", "inbound"), ("reason", "opaque_port")],
                );
                let bytes = |way| {
                    m.sum(
                        "coremesh_tcp_bytes_total",
                        &[("direction", "inbound"), ("way", way)],
                    )
                };
                let (up, down) = (bytes("to_upstream"), bytes("to_client"));
                let done = ports == 2.0
                    && up == ECHO_BYTES as f64
                    && down == (ECHO_BYTES + BANNER.len()) as f64;
                (
                    done.then_some(()),
                    format!("ports {ports} up {up} down {down}"),
                )
            })
        })
        .unwrap();
    assert!(opaque.is_ok(), "opaque inbound counted: {opaque:?}");

    // Outbound, from the application's namespace as root: the service address is
    // balanced over the two endpoints.
    let service: SocketAddr = SERVICE_ADDR.parse().unwrap();
    let bodies = app_ns
        .enter(|| {
            (0..SERVICE_CALLS)
                .map(|_| {
                    let r = client::get(service, "/users", &[("Host", "users")]).unwrap();
                    assert_eq!(r.status, 200);
                    r.body_text()
                })
                .collect::<Vec<String>>()
        })
        .unwrap();
    let from_a = bodies.iter().filter(|b| *b == "a").count() as u64;
    assert_eq!(from_a, SERVICE_CALLS / 2, "{bodies:?}");
    assert_eq!(users_a.requests_received(), SERVICE_CALLS / 2);
    assert_eq!(users_b.requests_received(), SERVICE_CALLS / 2);
    // And its IPv6 address, through the outbound side's IPv6 listener.
    let service6: SocketAddr = SERVICE_ADDR6.parse().unwrap();
    let bodies = app_ns
        .enter(|| {
            (0..SERVICE_CALLS6)
                .map(|_| {
                    let r = client::get(service6, "/users", &[("Host", "users")]).unwrap();
                    assert_eq!(r.status, 200, "{}", proxy.log());
                    r.body_text()
                })
                .collect::<Vec<String>>()
        })
        .unwrap();
    let from_a = bodies.iter().filter(|b| *b == "a").count() as u64;
    assert_eq!(from_a, SERVICE_CALLS6 / 2, "{bodies:?}");
    assert_eq!(
        users_a.requests_received() + users_b.requests_received(),
        SERVICE_CALLS + SERVICE_CALLS6
    );

    // Outbound to an address no service claims: passed through to it, and seen by the
    // proxy (the endpoints of `users` saw nothing more).
    let r = app_ns
        .enter(|| client::get(elsewhere.addr, "/", &[]).unwrap())
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"elsewhere");
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 1);
    let r = app_ns
        .enter(|| client::get(elsewhere6.addr, "/", &[]).unwrap())
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"elsewhere6");
    assert_eq!(elsewhere6.connections.load(Ordering::SeqCst), 1);
    let outbound_calls = SERVICE_CALLS + SERVICE_CALLS6 + 2;
    let seen = app_ns
        .enter(|| {
            wait_for_admin(|| {
                let m = metrics();
                let n = m.sum(
                    "coremesh_sidecar_connections_total",
                    &[("direction", "outbound")],
                );
                // The service's requests count under the outbound direction, by original
                // destination; the two passthrough requests under `route="passthrough"`.
                let routed = m.sum(
                    "coremesh_requests_total",
                    &[
                        ("direction", "outbound"),
                        ("service", "users"),
                        ("route", "original-destination"),
                        ("class", "2xx"),
                    ],
                );
                let passed = m.sum(
                    "coremesh_requests_total",
                    &[("direction", "outbound"), ("route", "passthrough")],
                );
                let want = (SERVICE_CALLS + SERVICE_CALLS6) as f64;
                (
                    (n == outbound_calls as f64 && routed == want && passed == 2.0).then_some(()),
                    format!("{n} {routed} {passed}"),
                )
            })
        })
        .unwrap();
    assert!(
        seen.is_ok(),
        "outbound connections, routed and passthrough requests: {seen:?}"
    );

    let call_service = || {
        app_ns
            .enter(|| client::get(service, "/users", &[("Host", "users")]).map(|r| r.body_text()))
            .unwrap()
    };
    let inbound_refused = || {
        client_ns
            .enter(|| TcpStream::connect_timeout(&app_addr, BOUND).is_err())
            .unwrap()
    };
    if mode == "grace" {
        proxy.signal("TERM");
        assert!(
            wait_until(inbound_refused),
            "inbound still accepts\n{}",
            proxy.log()
        );
        // Outbound still balances, and discovery still applies a change: `users` loses
        // its endpoint `a` (written whole, then renamed in place).
        assert!(matches!(call_service().as_deref(), Ok("a" | "b")));
        let next = dir.write(
            "coremesh.toml.next",
            &config_text(&format!("\"{}\"", users_b.addr())),
        );
        std::fs::rename(&next, &config).unwrap();
        let only_b = wait_until(|| (0..4).all(|_| call_service().ok().as_deref() == Some("b")));
        assert!(
            only_b,
            "the change was not applied in the grace period\n{}",
            proxy.log()
        );
        // A second signal ends the grace period: exit 0.
        proxy.stop();
    } else {
        // A connection in flight: through inbound to the echo.
        let mut open = client_ns
            .enter(|| TcpStream::connect_timeout(&SocketAddr::from((app_ip, ECHO_PORT)), BOUND))
            .unwrap()
            .unwrap();
        open.set_read_timeout(Some(BOUND)).unwrap();
        let mut back = [0u8; 4];
        open.write_all(b"ping").unwrap();
        open.read_exact(&mut back).unwrap();
        proxy.signal("TERM");
        // Every listener stops at once, outbound too.
        assert!(
            wait_until(inbound_refused),
            "inbound still accepts\n{}",
            proxy.log()
        );
        assert!(
            call_service().is_err(),
            "outbound still accepts in drain mode"
        );
        // The connection in flight still works and holds the exit.
        open.write_all(b"pong").unwrap();
        open.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"pong");
        assert!(
            proxy.running(),
            "exited with a connection in flight\n{}",
            proxy.log()
        );
        open.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        open.read_to_end(&mut rest).unwrap();
        drop(open);
        // Exits by itself, long before the grace period (600 s) ends.
        proxy.wait_exit();
    }

    app_ns
        .run(coremesh_bin().to_str().unwrap(), &["iptables", "uninstall"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let after: Vec<String> = saves.iter().map(|s| app_ns.nat_rules(s).unwrap()).collect();
    assert_eq!(after, before, "uninstall did not restore the nat tables");
}

fn metrics() -> Exposition {
    metrics_at(ADMIN.parse().unwrap())
}

fn metrics_at(admin: SocketAddr) -> Exposition {
    let r = client::get(admin, "/metrics", &[]).unwrap();
    Exposition::parse(&r.body_text()).unwrap()
}

/// The ports `inject` is given in [`inject_ports_keep_ipv6`]: none of them a default.
const INJECT_INBOUND: u16 = 5143;
const INJECT_OUTBOUND: u16 = 5140;
const INJECT_ADMIN: u16 = 5191;

/// A pod injected with ports other than the defaults keeps IPv6 on every listener: the
/// configuration `coremesh inject --inbound-port 5143 --outbound-port 5140 --admin-port
/// 5191` writes, run with the rules it installs, carries an IPv6 client's call through
/// inbound, an IPv6 call of the application through outbound (passed through), and
/// answers the kubelet's probe on the pod's IPv6 address; IPv4 as well. Once per driver.
#[test]
fn inject_ports_keep_ipv6() {
    if !can_run(
        "inject_ports_keep_ipv6",
        &[
            "iptables",
            "ip6tables",
            "iptables-save",
            "ip6tables-save",
            "setpriv",
        ],
    ) {
        return;
    }
    for (i, driver) in DRIVERS.into_iter().enumerate() {
        eprintln!("injected ports on {}", driver_name(driver));
        injected_ports(driver, 11 + i as u8);
    }
}

fn injected_ports(driver: Driver, subnet: u8) {
    let pair = Pair::new(subnet).unwrap_or_else(|e| panic!("{e:#}"));
    let (client_ns, app_ns) = (&pair.a, &pair.b);
    let saves = ["iptables-save", "ip6tables-save"];
    let before: Vec<String> = saves.iter().map(|s| app_ns.nat_rules(s).unwrap()).collect();
    let app = app_ns
        .enter(|| {
            Upstream::start("app", |req| {
                coremesh_tests::Action::Respond(coremesh_tests::Response::ok(format!(
                    "xff={}",
                    req.header("x-forwarded-for").unwrap_or_default()
                )))
            })
        })
        .unwrap();
    let app = app_ns.guard(app);
    let elsewhere = client_ns
        .enter(|| http_server(&format!("{}:0", pair.a_addr), b"elsewhere"))
        .unwrap();
    let elsewhere6 = client_ns
        .enter(|| http_server(&format!("[{}]:0", pair.a_addr6), b"elsewhere6"))
        .unwrap();

    let args = coremesh::cli::inject::sidecar::SidecarArgs {
        inbound_port: INJECT_INBOUND,
        outbound_port: INJECT_OUTBOUND,
        admin_port: INJECT_ADMIN,
        ..Default::default()
    };
    // What `inject` writes, on one core of the driver under test.
    let text = args.default_config().replacen(
        "[proxy]\n",
        &format!("[proxy]\ncores = 1\ndriver = \"{}\"\n", driver_name(driver)),
        1,
    );
    let dir = TempDir::new();
    let config = dir.write("coremesh.toml", &text);
    let proxy = ProxyProcess::start(app_ns, &config, &dir);
    let admin = SocketAddr::from(([127, 0, 0, 1], INJECT_ADMIN));
    let ready = app_ns
        .enter(|| {
            wait_until(|| {
                client::get(admin, "/ready", &[])
                    .map(|r| r.status == 200)
                    .unwrap_or(false)
            })
        })
        .unwrap();
    assert!(ready, "not ready within {BOUND:?}\n{}", proxy.log());
    let uid = PROXY_UID.to_string();
    let ports = [
        ("--inbound-port", INJECT_INBOUND),
        ("--outbound-port", INJECT_OUTBOUND),
        ("--admin-port", INJECT_ADMIN),
    ]
    .map(|(flag, port)| [flag.to_owned(), port.to_string()]);
    let mut install = vec![
        "iptables".to_owned(),
        "install".to_owned(),
        "--proxy-uid".to_owned(),
        uid,
    ];
    install.extend(ports.into_iter().flatten());
    let install: Vec<&str> = install.iter().map(String::as_str).collect();
    app_ns
        .run(coremesh_bin().to_str().unwrap(), &install)
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The kubelet's probe, on the pod's addresses (the rules never redirect the admin port).
    for ip in [IpAddr::from(pair.b_addr), IpAddr::from(pair.b_addr6)] {
        let r = client_ns
            .enter(|| client::get(SocketAddr::new(ip, INJECT_ADMIN), "/ready", &[]))
            .unwrap();
        assert_eq!(
            r.map(|r| r.status).ok(),
            Some(200),
            "/ready on {ip}\n{}",
            proxy.log()
        );
    }
    // Inbound, from the client, to the application's port on both of the pod's addresses.
    let port = app.addr().port();
    for (ip, client_ip) in [
        (IpAddr::from(pair.b_addr), IpAddr::from(pair.a_addr)),
        (IpAddr::from(pair.b_addr6), IpAddr::from(pair.a_addr6)),
    ] {
        let r = client_ns
            .enter(|| client::get(SocketAddr::new(ip, port), "/hello", &[]))
            .unwrap()
            .unwrap_or_else(|e| panic!("inbound to {ip}: {e}\n{}", proxy.log()));
        assert_eq!(r.status, 200);
        assert_eq!(r.body_text(), format!("xff={client_ip}"));
    }
    assert_eq!(app.requests_received(), 2);
    // Outbound, from the application (root, not the proxy's uid): passed through, both
    // families.
    for (server, body) in [(&elsewhere, "elsewhere"), (&elsewhere6, "elsewhere6")] {
        let r = app_ns
            .enter(|| client::get(server.addr, "/", &[]))
            .unwrap()
            .unwrap_or_else(|e| panic!("outbound to {}: {e}\n{}", server.addr, proxy.log()));
        assert_eq!((r.status, r.body_text().as_str()), (200, body));
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    }
    let counted = app_ns
        .enter(|| {
            wait_for_admin(|| {
                let m = metrics_at(admin);
                let side = |direction| {
                    m.sum(
                        "coremesh_sidecar_connections_total",
                        &[("direction", direction)],
                    )
                };
                let (inbound, outbound) = (side("inbound"), side("outbound"));
                let passed = m.sum(
                    "coremesh_requests_total",
                    &[("direction", "outbound"), ("route", "passthrough")],
                );
                let done = inbound == 2.0 && outbound == 2.0 && passed == 2.0;
                (
                    done.then_some(()),
                    format!("inbound {inbound} outbound {outbound} passthrough {passed}"),
                )
            })
        })
        .unwrap();
    assert!(counted.is_ok(), "both families counted: {counted:?}");

    proxy.stop();
    app_ns
        .run(coremesh_bin().to_str().unwrap(), &["iptables", "uninstall"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let after: Vec<String> = saves.iter().map(|s| app_ns.nat_rules(s).unwrap()).collect();
    assert_eq!(after, before, "uninstall did not restore the nat tables");
}

/// A TCP echo on `addr`; counts connections.
fn echo_server(addr: &str) -> Arc<AtomicU64> {
    serve(addr, |mut s| {
        let mut buf = [0u8; 16384];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    })
}

/// A server that writes [`BANNER`] as soon as it accepts, then reads until EOF.
fn banner_server(addr: &str) -> Arc<AtomicU64> {
    serve(addr, |mut s| {
        let _ = s.write_all(BANNER);
        let mut buf = [0u8; 1024];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    })
}

/// Writes `bytes` and reads everything back until the echo closes.
fn echo_through(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let s = TcpStream::connect_timeout(&addr, BOUND).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.set_write_timeout(Some(BOUND)).unwrap();
    let mut writer = s.try_clone().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            writer.write_all(bytes).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::with_capacity(bytes.len());
        (&s).read_to_end(&mut back).unwrap();
        back
    })
}

/// Connects and reads one line without sending anything.
fn read_banner(addr: SocketAddr) -> Vec<u8> {
    let mut c = Client::connect(addr).unwrap();
    c.set_read_timeout(BOUND).unwrap();
    c.read_exact_raw(BANNER.len()).unwrap()
}

/// A namespace without IPv6: the sides' default IPv6 listener is left out (the start does
/// not fail), while an IPv6 address written in `listen` stops the start with its name.
#[test]
fn without_ipv6_the_default_ipv6_listener_is_skipped_and_a_written_one_is_an_error() {
    if !can_run(
        "without_ipv6_the_default_ipv6_listener_is_skipped",
        &["sysctl"],
    ) {
        return;
    }
    let ns = Netns::new().unwrap_or_else(|e| panic!("{e:#}"));
    for key in ["all", "default", "lo"] {
        ns.run(
            "sysctl",
            &["-qw", &format!("net.ipv6.conf.{key}.disable_ipv6=1")],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let sidecar = |outbound: Option<&str>, admin: Option<&str>| {
        let mut config = coremesh_tests::proxy::base_config();
        config.proxy.listen = None;
        config.proxy.admin = admin.map(|a| a.parse().unwrap());
        config.proxy.cores = 1;
        config.proxy.pin_cores = false;
        config.proxy.driver = Driver::Legacy;
        config.proxy.shutdown_grace_ms = 0;
        let mut side = coremesh_discovery::SideSettings::default();
        if let Some(addr) = outbound {
            side.listen = addr.parse::<SocketAddr>().unwrap().into();
        }
        config.outbound = Some(side);
        config
    };
    // Sockets bound by the proxy's threads belong to the namespace they are started in.
    // The admin server's pair (`*:P`, as `inject` writes it) is skipped the same way.
    let (defaults, written, admin_written) = ns
        .enter(|| {
            let defaults = coremesh::start(sidecar(None, Some("*:4191"))).map(|handle| {
                let addrs = (handle.outbound_addrs().to_vec(), handle.admin_addr());
                handle.shutdown();
                addrs
            });
            let written = coremesh::start(sidecar(Some("[::1]:4140"), None)).map(|h| h.shutdown());
            let admin_written =
                coremesh::start(sidecar(None, Some("[::1]:4191"))).map(|h| h.shutdown());
            (defaults, written, admin_written)
        })
        .unwrap();
    let defaults = defaults.unwrap_or_else(|e| panic!("the default pair must start: {e:#}"));
    assert_eq!(
        defaults,
        (
            vec![SocketAddr::from(([127, 0, 0, 1], 4140))],
            Some(SocketAddr::from(([0, 0, 0, 0], 4191)))
        )
    );
    let error = written.err().map(|e| format!("{e:#}")).unwrap_or_default();
    assert!(
        error.starts_with("cannot listen for outbound on [::1]:4140: "),
        "{error}"
    );
    let error = admin_written
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        error.starts_with("cannot listen for admin on [::1]:4191: "),
        "{error}"
    );
}
