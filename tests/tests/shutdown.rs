//! End-to-end graceful shutdown of the in-process proxy under load, on both drivers: every
//! request written gets a full response; clients stop only on a clean close.
//! See [`coremesh_tests::load`] for what counts as a failure and why it cannot flake.

use coremesh_tests::load::{ClientEnd, Load};
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use std::time::Duration;

/// Load client threads.
const CLIENTS: usize = 8;
/// Upstream latency, so that requests are in flight when shutdown begins.
const UPSTREAM_DELAY: Duration = Duration::from_millis(20);

#[test]
fn graceful_shutdown_during_load_fails_no_request() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("slow", |req| {
            Action::delay(
                UPSTREAM_DELAY,
                Action::Respond(Response::ok(echo_body(req))),
            )
        });
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.cores = 2;
        let proxy = start_proxy(driver, config);
        let load = Load::start(proxy.addr(), CLIENTS, "/load");
        assert!(
            load.wait_for_successes_per_client(3, Duration::from_secs(20)),
            "load did not get going: {:?}",
            load.failures()
        );

        let handle = proxy.into_handle();
        load.mark_shutdown_began();
        let shutter = std::thread::spawn(move || handle.shutdown());
        let report = load.join();
        shutter.join().expect("shutdown() returned");
        eprintln!(
            "{} requests answered, clients ended by {:?}",
            report.succeeded, report.ends
        );

        assert!(
            report.failures.is_empty(),
            "failed requests during shutdown:\n{}",
            report.failures.join("\n")
        );
        assert!(
            report.ends.iter().all(|e| *e != ClientEnd::Failed),
            "{:?}",
            report.ends
        );
        assert!(report.succeeded >= 3 * CLIENTS as u64);
        assert_eq!(
            upstream.requests_received(),
            report.succeeded,
            "every request the upstream received was answered to its client"
        );
    });
}

#[test]
fn shutdown_with_idle_connections_returns_and_refuses_new_ones() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
        let addr = proxy.addr();
        let mut idle = coremesh_tests::Client::connect(addr).expect("connect");
        idle.send_request("GET", "/once", &[], None).unwrap();
        assert_eq!(idle.read_response(false).unwrap().status, 200);
        proxy.shutdown();
        assert!(
            idle.is_closed_by_peer(),
            "an idle keep-alive connection is closed by shutdown"
        );
        let refused = std::net::TcpStream::connect(addr);
        assert!(refused.is_err(), "the listener is closed after shutdown");
    });
}
