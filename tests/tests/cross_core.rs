//! End-to-end gossip between proxy cores, on both drivers: with `proxy.cores = 2`, what one
//! core learned steers the other — an ejection decided on core A keeps core B's traffic off
//! the endpoint, and latency observed only on core A keeps core B off the slow endpoint.
//!
//! Which core serves a client connection is up to the kernel (`SO_REUSEPORT` hashes each
//! connection to one of the cores' listeners) and the proxy does not say (no response
//! header names the core). The tests find out through a side channel: a "whoami" service
//! with one echo upstream, which reports the upstream connection each request came on.
//! Each core has its own upstream connection pool, and with strictly sequential requests a
//! core keeps reusing its one pooled connection, so the upstream connection id names the
//! core. This is checked, not assumed: at the end the whoami upstream must have accepted
//! exactly two connections, and each client connection must still map to its own one —
//! then the two client connections were served by two different cores. (Pool sweeps are
//! pushed out of the way with a 10-minute pool idle timeout.)
//!
//! Core B is looked at only once the gossip has reached it, which the tests see on the
//! admin server's `coremesh_endpoint_state{state="ejected"}`, the number of cores that hold
//! an endpoint ejected: an ejection gossiped from core A shows as 2. The latency test uses an
//! ejection as a barrier: a core sends its peers one message per service and tick, in the
//! service order of the configuration, over a FIFO channel, so once core B holds an ejection
//! that core A decided after it had observed the slow endpoint, core B has merged that
//! observation too. Nothing waits for a fixed time; the limits below only turn a hang into a
//! failure.
//!
//! Limits: the tests prove that state crossed from core A to core B; they cannot show
//! how fast (the gossip tick is 100 ms).

use coremesh_discovery::{BalanceKind, Config, RouteConfig};
use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::client::Client;
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{base_config, for_each_driver, route_all, route_to, service};
use coremesh_tests::traffic::get_on;
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Ejection back-off long enough that no ejection in these tests ends while they look.
const LONG_EJECTION_MS: u64 = 60_000;

/// Wait until every core of `proxy` holds `endpoint` of `service` ejected, as the admin
/// server's `coremesh_endpoint_state` counts cores; panics after the admin wait.
fn wait_until_ejected_on_every_core(proxy: &AdminProxy, service: &str, endpoint: SocketAddr) {
    let cores = proxy.cores() as f64;
    let endpoint = endpoint.to_string();
    let labels = [
        ("service", service),
        ("endpoint", endpoint.as_str()),
        ("state", "ejected"),
    ];
    wait_for_admin(|| {
        let text = proxy.metrics_text();
        let ejected_on = Exposition::parse(&text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .value("coremesh_endpoint_state", &labels);
        (
            (ejected_on == Some(cores)).then_some(()),
            format!("{service} {endpoint}: ejected on {ejected_on:?} of {cores} cores"),
        )
    })
    .unwrap_or_else(|last| panic!("the ejection never reached every core: {last}"));
}

/// Two cores; service "whoami" (one echo upstream) on path `/whoami`, service "backend"
/// on everything else.
fn two_core_config(whoami: &Upstream, backend: &[SocketAddr]) -> Config {
    let mut config = base_config();
    config.proxy.cores = 2;
    config.defaults.pool_idle_timeout_ms = 600_000;
    config.services = vec![
        service("whoami", &[whoami.addr()]),
        service("backend", backend),
    ];
    config.routes = vec![
        RouteConfig {
            path_prefix: Some("/whoami".into()),
            ..route_to("whoami")
        },
        route_all("backend"),
    ];
    config
}

fn whoami_upstream() -> Upstream {
    Upstream::start("whoami", |req| {
        Action::Respond(Response::ok(echo_body(req)))
    })
}

/// The whoami upstream's connection id for a request on `client`, i.e. its core's.
fn core_of(client: &mut Client) -> u64 {
    let r = get_on(client, "/whoami", &[], "whoami");
    assert_eq!(r.status, 200, "whoami: {}", r.body_text());
    let body = r.body_text();
    body.lines()
        .find_map(|l| l.strip_prefix("connection-id: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connection-id in the echo body: {body}"))
}

/// Two client connections served by different cores: (core A's, core B's).
struct TwoCores {
    a: Client,
    b: Client,
    id_a: u64,
    id_b: u64,
}

impl TwoCores {
    /// New connections until one lands on the other core. Each lands on a core the kernel
    /// picks by hashing its (new) source port, about evenly: 200 tries all on one core has
    /// probability 2^-199.
    fn find(proxy: SocketAddr) -> TwoCores {
        let mut a = Client::connect(proxy).expect("connect");
        let id_a = core_of(&mut a);
        for _ in 0..200 {
            let mut b = Client::connect(proxy).expect("connect");
            let id_b = core_of(&mut b);
            if id_b != id_a {
                return TwoCores { a, b, id_a, id_b };
            }
        }
        panic!("200 connections in a row served by the same core (or by no pooled connection)");
    }

    /// The identification still holds: the whoami upstream saw exactly two connections,
    /// and each client connection still maps to its own.
    fn verify(&mut self, whoami: &Upstream) {
        assert_eq!(core_of(&mut self.a), self.id_a, "core A's connection moved");
        assert_eq!(core_of(&mut self.b), self.id_b, "core B's connection moved");
        assert_eq!(
            whoami.connections_accepted(),
            2,
            "one pooled whoami connection per core (else the core identification is void)"
        );
    }
}

#[test]
fn ejection_decided_on_one_core_steers_the_other() {
    for_each_driver(|driver| {
        let whoami = whoami_upstream();
        let bad = Upstream::fixed_named("bad", 503, b"always failing");
        let healthy_a = Upstream::fixed_named("healthy-a", 200, b"ok");
        let healthy_b = Upstream::fixed_named("healthy-b", 200, b"ok");
        let mut config =
            two_core_config(&whoami, &[bad.addr(), healthy_a.addr(), healthy_b.addr()]);
        // Round-robin, which starts every core at the first endpoint, "bad": without the
        // ejection gossiped from core A, core B's first request goes to "bad". A long
        // ejection (48-60 s with jitter) so that it cannot end while the test looks.
        let o = &mut config.services[1].overrides;
        o.balance = Some(BalanceKind::RoundRobin);
        o.eject_base_ms = Some(LONG_EJECTION_MS);
        o.eject_max_ms = Some(LONG_EJECTION_MS);
        config.routes[1].retry_on = vec![503];
        let proxy = start_with_admin(driver, config);
        let mut cores = TwoCores::find(proxy.addr());

        // Core A: until "bad" has failed 5 requests in a row and is ejected there.
        for i in 0..100 {
            if bad.requests_received() >= 5 {
                break;
            }
            let r = get_on(&mut cores.a, "/x", &[], &format!("core A request {i}"));
            assert_eq!(r.status, 200, "core A request {i}: {}", r.body_text());
        }
        assert_eq!(bad.requests_received(), 5, "core A sent bad its 5 failures");

        // Core A ejected "bad"; wait until core B holds the ejection too.
        wait_until_ejected_on_every_core(&proxy, "backend", bad.addr());
        // Core B has sent nothing to "backend" yet; its round-robin would start at "bad".
        for i in 0..30 {
            let r = get_on(&mut cores.b, "/x", &[], &format!("core B request {i}"));
            assert_eq!(r.status, 200, "core B request {i}: {}", r.body_text());
        }
        assert_eq!(
            bad.requests_received(),
            5,
            "core B sent requests to the endpoint core A ejected"
        );
        cores.verify(&whoami);
    });
}

#[test]
fn latency_learned_on_one_core_steers_the_other() {
    // Two endpoints, fast and slow (+200 ms). With two endpoints, power of two choices
    // compares both on every request, so a core that knows the slow one is slow never
    // picks it. A core that does not know it scores the unknown endpoint at the neutral
    // (median) estimate, within the tie band of the known one, so it picks it with
    // probability about 1/2 per request until it learns: over the 30 requests that core B
    // is looked at, B would pick the slow endpoint at least once with probability about
    // 1 - 2^-30 if nothing had told it. So "no request of core B reaches the slow endpoint"
    // shows that core A's knowledge reached core B.
    //
    // Learned latency lives in the 10 s gossip window; core B's look ends within 8 s of
    // core A's observation of the slow endpoint, while B still holds that sample.
    //
    // The barrier: a service "marker" (one endpoint that answers 503, ejected at its first
    // failure), listed after "backend". Core A fails it once after it has seen the slow
    // endpoint; when core B holds "marker" ejected, it has merged core A's gossip up to that
    // tick, the slow endpoint's latency included.
    for_each_driver(|driver| {
        let whoami = whoami_upstream();
        let fast = Upstream::fixed_named("fast", 200, b"ok");
        let slow = Upstream::start("slow", |_| {
            Action::delay(
                Duration::from_millis(200),
                Action::Respond(Response::ok("slow")),
            )
        });
        let marker = Upstream::fixed_named("marker", 503, b"marker");
        let mut config = two_core_config(&whoami, &[fast.addr(), slow.addr()]);
        let mut marker_service = service("marker", &[marker.addr()]);
        let o = &mut marker_service.overrides;
        o.eject_consecutive_failures = Some(1);
        o.eject_max_percent = Some(100);
        o.eject_base_ms = Some(LONG_EJECTION_MS);
        o.eject_max_ms = Some(LONG_EJECTION_MS);
        config.services.push(marker_service);
        config.routes.insert(
            0,
            RouteConfig {
                path_prefix: Some("/marker".into()),
                ..route_to("marker")
            },
        );
        let proxy = start_with_admin(driver, config);
        let mut cores = TwoCores::find(proxy.addr());

        // Core A: until it has tried the slow endpoint (an unknown endpoint ties at the
        // neutral score and wins about half of its pairings: 20 s without one is
        // vanishingly unlikely), and at least 50 requests so that it knows the fast one well.
        let teach_started = Instant::now();
        let mut taught = 0;
        while (slow.requests_received() == 0 || taught < 50)
            && teach_started.elapsed() < Duration::from_secs(20)
        {
            let r = get_on(&mut cores.a, "/x", &[], &format!("core A request {taught}"));
            assert_eq!(r.status, 200, "core A request {taught}: {}", r.body_text());
            taught += 1;
        }
        let slow_seen_by_a = slow.requests_received();
        let observed_at = Instant::now();
        assert!(
            slow_seen_by_a >= 1,
            "core A never tried the slow endpoint in {taught} requests"
        );

        // The barrier: core A fails "marker" once (ejecting it there), after its look at
        // the slow endpoint; core B holding that ejection has merged the latency before it.
        let r = get_on(&mut cores.a, "/marker", &[], "core A's marker request");
        assert_eq!(r.status, 503, "the marker request: {}", r.body_text());
        assert_eq!(marker.requests_received(), 1);
        wait_until_ejected_on_every_core(&proxy, "marker", marker.addr());

        // 30 requests: without core A's news, core B would pick the slow endpoint at least
        // once with probability about 1 - 2^-30. Stopped early only if core A's sample is
        // about to leave the 10 s window (a machine too slow for this test).
        let look_until = observed_at + Duration::from_secs(8);
        let mut on_b = 0;
        while on_b < 30 && Instant::now() < look_until {
            let r = get_on(&mut cores.b, "/x", &[], &format!("core B request {on_b}"));
            assert_eq!(r.status, 200, "core B request {on_b}: {}", r.body_text());
            on_b += 1;
        }
        let slow_from_b = slow.requests_received() - slow_seen_by_a;
        eprintln!(
            "core A: {taught} requests, {slow_seen_by_a} to slow; core B: {on_b} requests, {slow_from_b} to slow"
        );
        assert!(
            on_b > 0,
            "core B sent no request within 8 s of core A's observation"
        );
        assert_eq!(
            slow_from_b, 0,
            "core B sent {slow_from_b} of {on_b} requests to the endpoint core A had seen slow"
        );
        cores.verify(&whoami);
    });
}
