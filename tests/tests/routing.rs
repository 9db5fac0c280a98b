//! End-to-end routing through the proxy, on both drivers: by host, path (exact and prefix)
//! and header (exact and present), first match wins, 404 when nothing matches, and a
//! weighted split within a stated tolerance.

use coremesh_discovery::RouteConfig;
use coremesh_tests::client::{self, Client};
use coremesh_tests::proxy::{
    for_each_driver, header_exact, header_present, route_to, service, services_with_routes, split,
    start_proxy, TestProxy,
};
use coremesh_tests::upstream::Upstream;
use coremesh_tests::Driver;
use std::collections::HashMap;

/// One echo upstream per service, named after it.
struct Routed {
    upstreams: HashMap<&'static str, Upstream>,
    proxy: TestProxy,
}

impl Routed {
    /// The routes, in match order:
    /// 1. header `x-env: staging` → staging
    /// 2. host `a.example` → site-a
    /// 3. host `b.example` → site-b
    /// 4. path exactly `/health` → health
    /// 5. path prefix `/api` → api
    /// 6. header `x-canary` present → canary
    /// 7. path prefix `/api` → shadow (never chosen: route 5 matches first)
    ///
    /// and no catch-all.
    fn start(driver: Driver) -> Routed {
        let names = [
            "staging", "site-a", "site-b", "health", "api", "canary", "shadow",
        ];
        let upstreams: HashMap<_, _> = names
            .iter()
            .map(|n| (*n, Upstream::echo_named(n)))
            .collect();
        let services = names
            .iter()
            .map(|n| service(n, &[upstreams[n].addr()]))
            .collect();
        let routes = vec![
            RouteConfig {
                headers: vec![header_exact("x-env", "staging")],
                ..route_to("staging")
            },
            RouteConfig {
                host: Some("a.example".into()),
                ..route_to("site-a")
            },
            RouteConfig {
                host: Some("b.example".into()),
                ..route_to("site-b")
            },
            RouteConfig {
                path_exact: Some("/health".into()),
                ..route_to("health")
            },
            RouteConfig {
                path_prefix: Some("/api".into()),
                ..route_to("api")
            },
            RouteConfig {
                headers: vec![header_present("x-canary")],
                ..route_to("canary")
            },
            RouteConfig {
                path_prefix: Some("/api".into()),
                ..route_to("shadow")
            },
        ];
        let proxy = start_proxy(driver, services_with_routes(services, routes));
        Routed { upstreams, proxy }
    }

    /// Which upstream answered a GET (its `x-upstream`), or the status when none did.
    fn who(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
        let mut all = vec![("Host", host)];
        all.extend_from_slice(headers);
        let response = client::get(self.proxy.addr(), path, &all)
            .unwrap_or_else(|e| panic!("GET {path} (Host {host}, {headers:?}): {e}"));
        match response.header("x-upstream") {
            Some(name) if response.status == 200 => name,
            _ => format!("status {}", response.status),
        }
    }

    fn requests(&self, name: &str) -> u64 {
        self.upstreams[name].requests_received()
    }
}

#[test]
fn routes_by_host() {
    for_each_driver(|driver| {
        let r = Routed::start(driver);
        assert_eq!(r.who("a.example", "/", &[]), "site-a");
        assert_eq!(r.who("b.example", "/x", &[]), "site-b");
        assert_eq!(
            r.who("b.example:8080", "/x", &[]),
            "site-b",
            "the port in Host is ignored"
        );
        assert_eq!(
            r.who("A.Example", "/", &[]),
            "site-a",
            "host match is case-insensitive"
        );
        let received = r.upstreams["site-b"].received();
        assert_eq!(
            received[1].header("host").as_deref(),
            Some("b.example:8080"),
            "Host is forwarded as sent"
        );
    });
}

#[test]
fn routes_by_path_exact_and_prefix() {
    for_each_driver(|driver| {
        let r = Routed::start(driver);
        assert_eq!(r.who("other.example", "/health", &[]), "health");
        assert_eq!(
            r.who("other.example", "/health?verbose=1", &[]),
            "health",
            "the query is not part of the path"
        );
        assert_eq!(
            r.who("other.example", "/health/deep", &[]),
            "status 404",
            "exact is exact"
        );
        assert_eq!(r.who("other.example", "/api", &[]), "api");
        assert_eq!(r.who("other.example", "/api/users/7", &[]), "api");
        assert_eq!(
            r.who("other.example", "/apix", &[]),
            "status 404",
            "a prefix matches whole segments"
        );
        let received = r.upstreams["api"].received();
        assert_eq!(
            received[1].path, "/api/users/7",
            "the path is forwarded unchanged"
        );
    });
}

#[test]
fn routes_by_header_exact_and_present() {
    for_each_driver(|driver| {
        let r = Routed::start(driver);
        assert_eq!(
            r.who("a.example", "/", &[("x-env", "staging")]),
            "staging",
            "x-env: staging goes to staging"
        );
        assert_eq!(
            r.who("a.example", "/", &[("X-Env", "staging")]),
            "staging",
            "header names are case-insensitive"
        );
        assert_eq!(
            r.who("a.example", "/", &[("x-env", "production")]),
            "site-a",
            "another value does not match"
        );
        assert_eq!(
            r.who("a.example", "/", &[("x-env", "Staging")]),
            "site-a",
            "exact values are case-sensitive"
        );
        assert_eq!(
            r.who("other.example", "/", &[("x-canary", "")]),
            "canary",
            "present matches any value"
        );
        assert_eq!(
            r.who("other.example", "/", &[("x-canary", "yes")]),
            "canary"
        );
        assert_eq!(r.requests("staging"), 2);
        assert_eq!(r.requests("canary"), 2);
    });
}

#[test]
fn first_matching_route_wins() {
    for_each_driver(|driver| {
        let r = Routed::start(driver);
        for i in 0..10 {
            assert_eq!(r.who("other.example", &format!("/api/{i}"), &[]), "api");
        }
        assert_eq!(
            r.who("a.example", "/api/x", &[]),
            "site-a",
            "the host route comes before the path route"
        );
        assert_eq!(
            r.who("b.example", "/health", &[("x-env", "staging")]),
            "staging",
            "route 1 beats routes 3 and 4"
        );
        assert_eq!(
            r.requests("shadow"),
            0,
            "a route listed after a matching one is never chosen"
        );
    });
}

#[test]
fn no_matching_route_gets_404_saying_so() {
    for_each_driver(|driver| {
        let r = Routed::start(driver);
        let response = client::get(r.proxy.addr(), "/nowhere", &[("Host", "other.example")])
            .expect("a response");
        assert_eq!(response.status, 404);
        let body = response.body_text().to_ascii_lowercase();
        assert!(
            body.contains("no route"),
            "the 404 body says no route matched: {body:?}"
        );
        let total: u64 = r.upstreams.values().map(|u| u.requests_received()).sum();
        assert_eq!(total, 0, "no upstream sees an unrouted request");

        // The connection stays usable after a 404.
        let mut c = Client::connect(r.proxy.addr()).expect("connect");
        c.send_request("GET", "/nowhere", &[("Host", "other.example")], None)
            .unwrap();
        assert_eq!(c.read_response(false).unwrap().status, 404);
        c.send_request("GET", "/health", &[("Host", "other.example")], None)
            .unwrap();
        assert_eq!(
            c.read_response(false)
                .unwrap()
                .header("x-upstream")
                .as_deref(),
            Some("health")
        );
    });
}

/// Requests in the weighted-split test.
const SPLIT_REQUESTS: u64 = 1000;
/// Canary weight 20 of 100.
const CANARY_SHARE: f64 = 0.2;
/// Allowed distance of the canary's share from 20%: ±7 percentage points, i.e. 130..=270
/// canary answers out of 1000.
///
/// Why this cannot flake: the proxy's RNG is seeded from the OS, so the canary count is
/// Binomial(1000, 0.2) (mean 200, standard deviation 12.6). The exact two-sided tail
/// P(|X − 200| > 70) = 4.2e-8 (computed by `binomial_outside`, checked below), i.e. a false
/// failure once in ~24 million runs, well under 1e-6. Any real bias of 7 points or more (a
/// split that ignores weights gives 50%, one that picks per connection gives 0% or 100%)
/// fails it.
const SPLIT_TOLERANCE: u64 = 70;

/// P(|X − n·p| > tolerance) for X ~ Binomial(n, p), summed exactly in log space.
fn binomial_outside(n: u64, p: f64, tolerance: u64) -> f64 {
    let mean = (n as f64 * p).round() as u64;
    let ln_fact = |k: u64| (1..=k).map(|i| (i as f64).ln()).sum::<f64>();
    (0..=n)
        .filter(|k| k.abs_diff(mean) > tolerance)
        .map(|k| {
            let ln = ln_fact(n) - ln_fact(k) - ln_fact(n - k)
                + k as f64 * p.ln()
                + (n - k) as f64 * (1.0 - p).ln();
            ln.exp()
        })
        .sum()
}

#[test]
fn split_tolerance_has_false_failure_probability_below_one_in_a_million() {
    let p = binomial_outside(SPLIT_REQUESTS, CANARY_SHARE, SPLIT_TOLERANCE);
    assert!(p < 1e-6, "P(outside tolerance) = {p:e}");
    assert!(
        p > 1e-9,
        "P(outside tolerance) = {p:e}: the sum is computed (not underflowed to 0)"
    );
}

#[test]
fn weighted_split_80_20_within_tolerance() {
    for_each_driver(|driver| {
        let stable = Upstream::echo_named("stable");
        let canary = Upstream::echo_named("canary");
        let services = vec![
            service("stable", &[stable.addr()]),
            service("canary", &[canary.addr()]),
        ];
        let routes = vec![RouteConfig {
            path_prefix: Some("/".into()),
            split: split(&[("stable", 80), ("canary", 20)]),
            ..Default::default()
        }];
        let proxy = start_proxy(driver, services_with_routes(services, routes));
        let mut c = Client::connect(proxy.addr()).expect("connect to the proxy");
        let mut counts: HashMap<String, u64> = HashMap::new();
        for i in 0..SPLIT_REQUESTS {
            c.send_request("GET", &format!("/split/{i}"), &[], None)
                .unwrap();
            let response = c
                .read_response(false)
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(response.status, 200, "request {i}");
            *counts
                .entry(response.header("x-upstream").unwrap_or_default())
                .or_default() += 1;
        }
        let stable_n = counts.get("stable").copied().unwrap_or(0);
        let canary_n = counts.get("canary").copied().unwrap_or(0);
        assert_eq!(
            stable_n + canary_n,
            SPLIT_REQUESTS,
            "every answer from stable or canary: {counts:?}"
        );
        let mean = (SPLIT_REQUESTS as f64 * CANARY_SHARE) as u64;
        assert!(
            canary_n.abs_diff(mean) <= SPLIT_TOLERANCE,
            "canary got {canary_n} of {SPLIT_REQUESTS} (expected {mean} ± {SPLIT_TOLERANCE})"
        );
        assert_eq!(stable.requests_received(), stable_n);
        assert_eq!(canary.requests_received(), canary_n);
    });
}
