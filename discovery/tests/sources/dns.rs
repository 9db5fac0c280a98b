//! The DNS source against a real DNS server (hickory-server) on loopback: answers become
//! endpoints, a changed record is followed, a dead server leaves the last good answer in
//! use, and a removed name leaves its service without endpoints.

use crate::support::dns_server::TestDnsServer;
use crate::support::wait_until;
use coremesh_discovery::{
    parse_config, Discovery, DiscoveryHandle, Snapshot, SourceKind, SourceState,
};
use std::net::{IpAddr, SocketAddr};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::Duration;

fn config_text(server: SocketAddr) -> String {
    format!(
        r#"
[discovery]
debounce_ms = 10

[discovery.dns]
servers = ["{server}"]
min_refresh_ms = 50
max_refresh_ms = 200
timeout_ms = 200

[[services]]
name = "web"
endpoints = ["127.0.0.99:9000"]
dns = ["web.mesh.test.:8080"]

[[routes]]
service = "web"
"#
    )
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect()
}

/// Waits for the next published snapshot whose `web` endpoints are `expected`, skipping
/// none: each snapshot published must be the expected one.
fn next_endpoints(snapshots: &Receiver<Arc<Snapshot>>, expected: &[SocketAddr]) {
    let snapshot = snapshots
        .recv_timeout(crate::support::PATIENCE)
        .unwrap_or_else(|_| panic!("no snapshot with {expected:?}"));
    assert_eq!(snapshot.services[0].endpoints, expected);
}

fn web_status(handle: &DiscoveryHandle) -> (SourceState, usize, Option<String>) {
    let stats = handle.stats();
    let status = stats
        .sources
        .iter()
        .find(|s| s.kind == SourceKind::Dns)
        .unwrap_or_else(|| panic!("no dns source in {stats:?}"));
    (status.state, status.endpoints, status.last_error.clone())
}

#[test]
fn dns_answers_are_followed_and_failures_keep_the_last_good_answer() {
    let mut server = TestDnsServer::start("mesh.test.");
    server.set(
        "web",
        &[ip("127.0.0.11"), ip("127.0.0.12"), ip("fd00::1")],
        1,
    );
    let config = match parse_config(&config_text(server.addr()), "dns.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let (sender, snapshots) = channel();
    let handle = Discovery::start(None, config, move |snapshot| {
        let _ = sender.send(snapshot);
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // The answer joins the static endpoint.
    next_endpoints(
        &snapshots,
        &addrs(&[
            "127.0.0.99:9000",
            "127.0.0.11:8080",
            "127.0.0.12:8080",
            "[fd00::1]:8080",
        ]),
    );
    assert!(handle.wait_ready(crate::support::PATIENCE));
    assert_eq!(web_status(&handle).0, SourceState::Ok);

    // A record changes during the test: the endpoint set follows.
    server.set("web", &[ip("127.0.0.13"), ip("fd00::1")], 1);
    next_endpoints(
        &snapshots,
        &addrs(&["127.0.0.99:9000", "127.0.0.13:8080", "[fd00::1]:8080"]),
    );

    // The server dies: lookups fail, the last good answer stays, no snapshot is published.
    let port = server.addr();
    server.stop();
    wait_until("the dns source reports a failure", || {
        web_status(&handle).0 == SourceState::Failing
    });
    let (_, endpoints, error) = web_status(&handle);
    assert_eq!(endpoints, 2);
    let error = error.unwrap_or_default();
    assert!(error.contains("web.mesh.test."), "{error}");
    assert_eq!(handle.stats().last_error.as_deref(), Some(error.as_str()));
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        snapshots.try_recv().is_err(),
        "a failure published a snapshot"
    );
    assert_eq!(
        handle.current().services[0].endpoints,
        addrs(&["127.0.0.99:9000", "127.0.0.13:8080", "[fd00::1]:8080"])
    );

    // It comes back (same port) with other records: followed again.
    let server = TestDnsServer::start_on("mesh.test.", port);
    server.set("web", &[ip("127.0.0.14")], 1);
    next_endpoints(&snapshots, &addrs(&["127.0.0.99:9000", "127.0.0.14:8080"]));
    wait_until("the dns source recovers", || {
        web_status(&handle).0 == SourceState::Ok
    });

    // The name is removed (NXDOMAIN): an answer, not a failure; only the static endpoint
    // is left.
    server.set("web", &[], 1);
    next_endpoints(&snapshots, &addrs(&["127.0.0.99:9000"]));
    assert_eq!(web_status(&handle).0, SourceState::Ok);
    handle.stop();
}
