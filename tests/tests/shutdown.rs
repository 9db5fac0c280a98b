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

/// How long a stop may take before the test calls it hung: far above the grace period,
/// it only turns a hang into a failure.
const STOP_BOUND: Duration = Duration::from_secs(60);

/// A request still waiting for its upstream when the grace period ends, with the access
/// log and span export on: the stop returns. (The waiting connection's task is left behind
/// by its core and still holds the core's log and span senders; the writer and the
/// exporter must end on the proxy's stop, not only when every sender is gone.)
#[test]
fn a_request_outliving_the_grace_period_does_not_hold_the_stop() {
    use coremesh_tests::otlp::OtlpCollector;
    for_each_driver(|driver| {
        let collector = OtlpCollector::start();
        let upstream = Upstream::start("hang", |_| Action::Hang);
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.shutdown_grace_ms = 100;
        config.telemetry.access_log = true;
        config.telemetry.otlp_endpoint = Some(collector.endpoint_url());
        config.telemetry.trace_sample_ratio = 1.0;
        let proxy = start_proxy(driver, config);
        let mut waiting = coremesh_tests::Client::connect(proxy.addr()).expect("connect");
        waiting.send_request("GET", "/hangs", &[], None).unwrap();
        let arrived =
            coremesh_tests::traffic::wait_until(STOP_BOUND, Duration::from_millis(10), || {
                upstream.requests_received() == 1
            });
        assert!(arrived, "the request reached the upstream");
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            proxy.shutdown();
            let _ = done_tx.send(());
        });
        assert!(
            done_rx.recv_timeout(STOP_BOUND).is_ok(),
            "the proxy's stop did not return"
        );
        drop(waiting);
    });
}
