//! End-to-end deadlines through the proxy, on both drivers: a route timeout or a caller's
//! `x-coremesh-timeout-ms` below the upstream's latency yields a 504 `timeout` soon after
//! the deadline, with no further attempt; the remaining budget is forwarded to the upstream
//! in the same header; a per-attempt timeout is retried elsewhere for an idempotent
//! request only.
//!
//! Latency bounds are upper bounds with a margin of a second (the proxy must not sit on an
//! expired request); no test asserts that anything is fast.

use coremesh_discovery::{BalanceKind, Config};
use coremesh_tests::client::Client;
use coremesh_tests::proxy::{for_each_driver, one_service, start_proxy};
use coremesh_tests::traffic::{answered_by, get_on, wait_until};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use std::time::{Duration, Instant};

/// How long the slow upstreams take to answer.
const SLOW: Duration = Duration::from_millis(200);
/// Slack allowed past a deadline for the 504 to reach the client.
const SLACK: Duration = Duration::from_secs(1);
/// The per-attempt timeout of the retry test. It bounds the retry's attempt too, so it is
/// far above what a loopback exchange takes even on a loaded machine; the first attempt
/// meets an upstream that never answers, so the timeout is what ends it however long it is.
const ATTEMPT_TIMEOUT_MS: u64 = 2_000;

fn slow(name: &str) -> Upstream {
    Upstream::start(name, |_| {
        Action::delay(SLOW, Action::Respond(Response::ok("too late")))
    })
}

fn total_received(upstreams: &[&Upstream]) -> u64 {
    upstreams.iter().map(|u| u.requests_received()).sum()
}

/// Send `GET /` with `headers`; expect a 504 `timeout` within `deadline` + [`SLACK`], and
/// exactly one attempt across `upstreams` (waiting long enough for a second one to show).
fn expect_timeout_without_retry(
    client: &mut Client,
    headers: &[(&str, &str)],
    deadline: Duration,
    upstreams: &[&Upstream],
) {
    let started = Instant::now();
    let r = get_on(client, "/", headers, "the request with a deadline");
    let elapsed = started.elapsed();
    eprintln!("504 after {elapsed:?} (deadline {deadline:?})");
    assert_eq!(r.status, 504, "{}", r.body_text());
    assert_eq!(
        r.header("x-coremesh-error").as_deref(),
        Some("timeout"),
        "{}",
        r.body_text()
    );
    assert!(
        elapsed < deadline + SLACK,
        "the 504 came {elapsed:?} after the request; deadline {deadline:?} (+{SLACK:?} slack)"
    );
    // The one attempt reaches an upstream (it was written before the deadline); wait for
    // it, then for longer than the slow upstream takes, so a retry would have arrived.
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(5), || {
            total_received(upstreams) >= 1
        }),
        "the attempt reached an upstream"
    );
    std::thread::sleep(SLOW + Duration::from_millis(300));
    assert_eq!(
        total_received(upstreams),
        1,
        "no attempt after the first (no retry past the deadline)"
    );
}

fn two_slow_endpoints(a: &Upstream, b: &Upstream) -> Config {
    one_service(&[a.addr(), b.addr()])
}

#[test]
fn route_timeout_answers_504_and_stops_attempting() {
    for_each_driver(|driver| {
        let (a, b) = (slow("slow-a"), slow("slow-b"));
        let mut config = two_slow_endpoints(&a, &b);
        config.routes[0].timeout_ms = Some(50);
        // A retry would be allowed if anything allowed one: 503 retries on, budget default.
        config.routes[0].retry_on = vec![502, 503, 504];
        let proxy = start_proxy(driver, config);
        let mut client = Client::connect(proxy.addr()).expect("connect");
        expect_timeout_without_retry(&mut client, &[], Duration::from_millis(50), &[&a, &b]);
    });
}

#[test]
fn caller_deadline_header_answers_504_and_stops_attempting() {
    for_each_driver(|driver| {
        let (a, b) = (slow("slow-a"), slow("slow-b"));
        // No route timeout: the service default (15 s) is capped by the caller's 50 ms.
        let proxy = start_proxy(driver, two_slow_endpoints(&a, &b));
        let mut client = Client::connect(proxy.addr()).expect("connect");
        expect_timeout_without_retry(
            &mut client,
            &[("x-coremesh-timeout-ms", "50")],
            Duration::from_millis(50),
            &[&a, &b],
        );
    });
}

/// The `x-coremesh-timeout-ms` values the echo upstream received.
fn forwarded_budgets(upstream: &Upstream) -> Vec<Vec<String>> {
    upstream
        .received()
        .iter()
        .map(|r| {
            r.headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-coremesh-timeout-ms"))
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .collect()
}

#[test]
fn remaining_budget_is_forwarded_in_the_deadline_header() {
    // The forwarded value is the budget (the smallest of caller's header, route timeout,
    // default request timeout) less what the proxy spent before forwarding. The proxy's
    // clock for the request starts after the client began sending and the forward happens
    // before the client has its response, so the proxy spent less than the client waited:
    // budget - (client's wait, rounded up) - 1 (the proxy's rounding down to whole ms)
    // <= forwarded <= budget. A constant (1, or the budget itself) fails one side.
    // (caller's header, route timeout, the budget)
    let cases: [(Option<&str>, Option<u64>, u64); 4] = [
        (Some("5000"), None, 5_000),
        (Some("5000"), Some(1_000), 1_000),
        (Some("800"), Some(60_000), 800),
        (None, None, 15_000), // the default request timeout
    ];
    for (caller, route_timeout, bound) in cases {
        for_each_driver(|driver| {
            let upstream =
                Upstream::start("echo", |req| Action::Respond(Response::ok(echo_body(req))));
            let mut config = one_service(&[upstream.addr()]);
            config.routes[0].timeout_ms = route_timeout;
            let proxy = start_proxy(driver, config);
            let mut client = Client::connect(proxy.addr()).expect("connect");
            let headers: Vec<(&str, &str)> = caller
                .map(|v| vec![("x-coremesh-timeout-ms", v)])
                .unwrap_or_default();
            let sent_at = Instant::now();
            let r = get_on(&mut client, "/budget", &headers, "the request");
            let waited_ms = u64::try_from(sent_at.elapsed().as_micros().div_ceil(1000))
                .expect("a test request's wait fits u64 ms");
            let what = format!("caller {caller:?}, route timeout {route_timeout:?}");
            assert_eq!(r.status, 200, "{what}: {}", r.body_text());
            let budgets = forwarded_budgets(&upstream);
            assert_eq!(budgets.len(), 1, "{what}: one request upstream");
            assert_eq!(
                budgets[0].len(),
                1,
                "{what}: exactly one deadline header upstream (the caller's replaced): {:?}",
                budgets[0]
            );
            let forwarded: u64 = budgets[0][0]
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{what}: {:?} is not a number: {e}", budgets[0][0]));
            let lowest = bound.saturating_sub(waited_ms + 1).max(1);
            assert!(
                (lowest..=bound).contains(&forwarded),
                "{what}: forwarded budget {forwarded} ms, expected in {lowest}..={bound} \
                 (the budget less the {waited_ms} ms the client waited)"
            );
        });
    }
}

#[test]
fn attempt_timeout_is_retried_elsewhere_only_for_idempotent_requests() {
    for (method, retried) in [("GET", true), ("POST", false)] {
        for_each_driver(|driver| {
            // "silent" never answers: only the attempt timeout ends the first attempt.
            let silent = Upstream::start("silent", |_| Action::Hang);
            let fast = Upstream::fixed_named("fast", 200, b"ok");
            // Round-robin starts with the first endpoint: the first attempt goes to "silent".
            let mut config = one_service(&[silent.addr(), fast.addr()]);
            config.services[0].overrides.balance = Some(BalanceKind::RoundRobin);
            config.routes[0].attempt_timeout_ms = Some(ATTEMPT_TIMEOUT_MS);
            config.routes[0].timeout_ms = Some(60_000);
            let proxy = start_proxy(driver, config);
            let mut client = Client::connect(proxy.addr()).expect("connect");
            let started = Instant::now();
            client
                .send_request(method, "/attempt", &[], Some(b"body"))
                .expect("send");
            let r = client.read_response(false).expect("a response");
            let elapsed = started.elapsed();
            assert!(
                silent.wait_for_requests(1, Duration::from_secs(5)),
                "{method}: the first attempt reached the silent endpoint"
            );
            if retried {
                assert_eq!(
                    (r.status, answered_by(&r)),
                    (200, "fast".to_string()),
                    "{method}: {}",
                    r.body_text()
                );
                assert_eq!(fast.requests_received(), 1, "{method}");
            } else {
                assert_eq!(
                    (r.status, answered_by(&r)),
                    (504, "proxy:timeout".to_string()),
                    "{method}: {}",
                    r.body_text()
                );
                let attempt_timeout = Duration::from_millis(ATTEMPT_TIMEOUT_MS);
                assert!(
                    elapsed < attempt_timeout + SLACK,
                    "{method}: 504 after {elapsed:?}, attempt timeout {attempt_timeout:?}"
                );
                // A retry would have been sent before the 504; the next request on the
                // connection is answered after anything the first one caused.
                let after = get_on(&mut client, "/after", &[], "the request after the 504");
                assert_eq!(after.status, 200, "{}", after.body_text());
                let at_fast: Vec<String> = fast.received().iter().map(|r| r.path.clone()).collect();
                assert!(
                    !at_fast.iter().any(|p| p == "/attempt"),
                    "{method}: not retried, yet fast received {at_fast:?}"
                );
            }
            assert_eq!(
                silent
                    .received()
                    .iter()
                    .filter(|r| r.path == "/attempt")
                    .count(),
                1,
                "{method}: one attempt at the silent endpoint"
            );
        });
    }
}
