//! The admin server of an in-process proxy, on both drivers: `/live`, `/ready`, `/config`,
//! `/endpoints` (exact request counts, ejection), `/metrics` (exact counts by status class),
//! `/log-level` (absent in-process, working with a hook), `POST /shutdown` (refused when
//! disabled, accepted when enabled), unknown paths and methods; and `coremesh top` reading
//! a live proxy.
//!
//! Counts are exact: a test waits (bounded, [`wait_for_admin`]) until what the admin server
//! shows has reached what it sent — cores report at their tick and may record an outcome
//! just after the client read the response — then asserts equality.
//!
//! The server never blocks: 50 clients that stall in the middle of their heads do not hold
//! up `/live` and `/ready` (and each is answered once it finishes); a head that never ends
//! is closed by the whole-request timeout, also when it trickles in; the connection cap
//! answers `200` at the cap and `503` one over it, and closes unanswered past twice the cap;
//! a client that stops reading its answer is closed by the write timeout.
//!
//! Not covered here: `/shutdown` and `PUT /log-level` refused (403) from a non-loopback
//! peer. The admin server binds 127.0.0.1 in tests, so every peer is loopback; that decision
//! is unit-tested in `proxy/src/admin.rs` (through the same function that answers).

use coremesh::admin::LogLevel;
use coremesh_discovery::{BalanceKind, Config};
use coremesh_tests::admin::{
    admin_get_within, finish_stalled_head, non_reading_admin_client, stalled_admin_client,
    start_with_admin, start_with_admin_and_log_level, trickle_until_closed, wait_for_admin,
    AdminProxy, EndpointEntry, ADMIN_WAIT,
};
use coremesh_tests::client::Client;
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{
    driver_name, for_each_driver, header_exact, one_service, route_all, route_to, service,
    services_with_routes,
};
use coremesh_tests::traffic::{answered_by, get_on};
use coremesh_tests::upstream::{Action, Response, Upstream};
use coremesh_tests::Driver;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// [`one_service`] ("backend") over `upstreams`, round-robin, the route named "all", no
/// retries (a 503 reaches the client as it is, and each request is one attempt).
fn round_robin(upstreams: &[&Upstream]) -> Config {
    let addrs: Vec<_> = upstreams.iter().map(|u| u.addr()).collect();
    let mut config = one_service(&addrs);
    config.services[0].overrides.balance = Some(BalanceKind::RoundRobin);
    config.services[0].overrides.max_attempts = Some(1);
    config.routes[0].name = Some("all".into());
    config
}

/// `n` sequential GETs of `path` on one connection; the statuses.
fn gets(proxy: &AdminProxy, n: usize, path: &str) -> Vec<u16> {
    let mut client = Client::connect(proxy.addr()).expect("connect to the proxy");
    (0..n)
        .map(|i| get_on(&mut client, path, &[], &format!("GET {path} #{i}")).status)
        .collect()
}

/// Wait until `/endpoints` shows `total` requests over `service`'s endpoints; then the view.
fn endpoints_after(proxy: &AdminProxy, service: &str, total: u64) -> Vec<EndpointEntry> {
    wait_for_admin(|| {
        let view = proxy.endpoints();
        let list = view.service(service).map(<[_]>::to_vec).unwrap_or_default();
        let seen: u64 = list.iter().map(|e| e.requests).sum();
        let idle = list.iter().all(|e| e.in_flight == 0);
        (
            (seen >= total && idle).then(|| list.clone()),
            format!("{list:#?}"),
        )
    })
    .unwrap_or_else(|last| {
        panic!("/endpoints never showed {total} finished requests for {service}: {last}")
    })
}

/// Wait until `/metrics` has `coremesh_requests_total` summing to `total` over samples
/// with `labels`; then the whole exposition.
fn metrics_after(proxy: &AdminProxy, labels: &[(&str, &str)], total: f64) -> Exposition {
    wait_for_admin(|| {
        let text = proxy.metrics_text();
        let e = Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}\n{text}"));
        let seen = e.sum("coremesh_requests_total", labels);
        ((seen >= total).then_some(e), text)
    })
    .unwrap_or_else(|last| {
        panic!("/metrics never counted {total} requests with {labels:?}:\n{last}")
    })
}

#[test]
fn live_ready_and_config() {
    for_each_driver(|driver| {
        let a = Upstream::fixed_named("a", 200, b"a");
        let b = Upstream::fixed_named("b", 200, b"b");
        let mut only_b = route_to("other");
        only_b.headers.push(header_exact("x-to", "other"));
        let config = services_with_routes(
            vec![
                service("backend", &[a.addr()]),
                service("other", &[b.addr()]),
            ],
            vec![only_b, route_all("backend")],
        );
        let proxy = start_with_admin(driver, config);

        let live = proxy.get("/live");
        assert_eq!((live.status, live.body_text().as_str()), (200, "live\n"));
        let ready = proxy.get("/ready");
        assert_eq!((ready.status, ready.body_text().as_str()), (200, "ready\n"));

        let config = proxy.get("/config");
        assert_eq!(config.status, 200, "{}", config.body_text());
        assert_eq!(
            config.header("content-type").as_deref(),
            Some("application/json")
        );
        let json: serde_json::Value =
            serde_json::from_slice(&config.body).expect("/config is JSON");
        let names: Vec<&str> = json["services"]
            .as_array()
            .expect("/config has a services list")
            .iter()
            .map(|s| s["name"].as_str().expect("a service has a name"))
            .collect();
        assert_eq!(names, ["backend", "other"]);
        let endpoints: Vec<&str> = json["services"][1]["endpoints"]
            .as_array()
            .expect("services[1].endpoints")
            .iter()
            .map(|e| e.as_str().expect("an endpoint is a string"))
            .collect();
        assert_eq!(endpoints, [b.addr().to_string()]);
        assert_eq!(json["routes"][0]["service"].as_str(), Some("other"));

        // Unknown paths and wrong methods.
        assert_eq!(proxy.get("/nope").status, 404);
        assert_eq!(proxy.request("POST", "/live", Some(b"x")).status, 405);
        assert_eq!(proxy.request("DELETE", "/metrics", None).status, 405);
        assert_eq!(proxy.get("/shutdown").status, 405);
    });
}

#[test]
fn ready_follows_set_ready() {
    for_each_driver(|driver| {
        let a = Upstream::fixed_named("a", 200, b"a");
        let mut config = one_service(&[a.addr()]);
        config.proxy.admin = Some("127.0.0.1:0".parse().expect("literal"));
        config.proxy.driver = driver;
        config.proxy.listen = Some("127.0.0.1:0".parse().expect("literal"));
        let handle = coremesh::start_with(
            config,
            coremesh::StartOptions {
                not_ready_yet: true,
                ..Default::default()
            },
        )
        .expect("start");
        coremesh_tests::proxy::assert_running_driver(driver, handle.driver());
        let admin = handle.admin_addr().expect("admin address");
        let get = |path: &str| coremesh_tests::admin::admin_request(admin, "GET", path, None);
        assert_eq!(
            get("/ready").status,
            503,
            "not ready before set_ready(true)"
        );
        assert_eq!(get("/live").status, 200, "live while not ready");
        handle.set_ready(true);
        assert_eq!(get("/ready").status, 200);
        handle.set_ready(false);
        assert_eq!(get("/ready").status, 503);
        handle.shutdown();
    });
}

#[test]
fn endpoints_count_each_request_exactly() {
    for_each_driver(|driver| {
        let ups: Vec<Upstream> = ["a", "b", "c"]
            .iter()
            .map(|n| Upstream::fixed_named(n, 200, b"ok"))
            .collect();
        let proxy = start_with_admin(driver, round_robin(&ups.iter().collect::<Vec<_>>()));

        // Before any request: every endpoint listed, available, nothing counted.
        let before = proxy.endpoints();
        let list = before.service("backend").expect("backend in /endpoints");
        assert_eq!(list.len(), 3, "{list:#?}");
        for (e, u) in list.iter().zip(&ups) {
            assert_eq!(e.address, u.addr().to_string());
            assert_eq!(
                (e.state.as_str(), e.requests, e.failures, e.in_flight),
                ("available", 0, 0, 0)
            );
            assert_eq!(e.ejected_for_ms, None);
        }

        let statuses = gets(&proxy, 9, "/x");
        assert_eq!(statuses, vec![200; 9]);
        let list = endpoints_after(&proxy, "backend", 9);
        for (e, u) in list.iter().zip(&ups) {
            assert_eq!(u.requests_received(), 3, "round-robin: 3 each");
            assert_eq!(
                (
                    e.address.as_str(),
                    e.state.as_str(),
                    e.requests,
                    e.failures,
                    e.in_flight,
                    e.ejections
                ),
                (u.addr().to_string().as_str(), "available", 3, 0, 0, 0),
                "{e:#?}"
            );
            assert_eq!(e.success_rate, Some(1.0), "{e:#?}");
            assert_eq!(e.ejected_for_ms, None);
            if let (Some(p50), Some(p90), Some(p99)) = (e.p50_ms, e.p90_ms, e.p99_ms) {
                assert!(p50 <= p90 && p90 <= p99, "{e:#?}");
            }
        }
    });
}

#[test]
fn endpoint_failing_five_times_in_a_row_shows_ejected() {
    for_each_driver(|driver| {
        let bad = Upstream::fixed_named("bad", 503, b"failing");
        let good_a = Upstream::fixed_named("good-a", 200, b"ok");
        let good_b = Upstream::fixed_named("good-b", 200, b"ok");
        let mut config = round_robin(&[&bad, &good_a, &good_b]);
        // Ejected after 5 failures in a row (the default), for a minute: the state cannot
        // end before the test looks. 50 % of 3 endpoints: 1 may be out.
        let o = &mut config.services[0].overrides;
        o.eject_consecutive_failures = Some(5);
        o.eject_base_ms = Some(60_000);
        o.eject_max_ms = Some(60_000);
        let proxy = start_with_admin(driver, config);

        // Round-robin from the first endpoint: requests 0, 3, 6, 9 and 12 go to "bad".
        let mut client = Client::connect(proxy.addr()).expect("connect");
        let mut by = Vec::new();
        for i in 0..13 {
            let r = get_on(&mut client, "/x", &[], &format!("request {i}"));
            by.push((r.status, answered_by(&r)));
        }
        let expected: Vec<(u16, String)> = (0..13)
            .map(|i| match i % 3 {
                0 => (503, "bad".to_string()),
                1 => (200, "good-a".to_string()),
                _ => (200, "good-b".to_string()),
            })
            .collect();
        assert_eq!(by, expected);

        let bad_addr = bad.addr().to_string();
        let list = wait_for_admin(|| {
            let view = proxy.endpoints();
            let list = view
                .service("backend")
                .map(<[_]>::to_vec)
                .unwrap_or_default();
            let ejected = list
                .iter()
                .any(|e| e.address == bad_addr && e.state == "ejected");
            (ejected.then(|| list.clone()), format!("{list:#?}"))
        })
        .unwrap_or_else(|last| panic!("bad never shown ejected: {last}"));
        let bad_view = &list[0];
        assert_eq!(
            (
                bad_view.address.as_str(),
                bad_view.state.as_str(),
                bad_view.requests,
                bad_view.failures,
                bad_view.ejections
            ),
            (bad_addr.as_str(), "ejected", 5, 5, 1),
            "{bad_view:#?}"
        );
        assert_eq!(bad_view.success_rate, Some(0.0));
        let left = bad_view
            .ejected_for_ms
            .expect("an ejected endpoint says for how long");
        assert!(
            left > 0 && left <= 60_000,
            "ejected for {left} ms of at most 60 000"
        );
        for (e, u) in list[1..].iter().zip([&good_a, &good_b]) {
            assert_eq!(
                (e.address.as_str(), e.state.as_str(), e.requests, e.failures),
                (u.addr().to_string().as_str(), "available", 4, 0),
                "{e:#?}"
            );
        }

        // The same in /metrics: one ejection, one core seeing it ejected. Cores export
        // endpoint states to their metrics at their gossip tick, so /metrics may lag
        // /endpoints by one tick: wait for it.
        let state_labels = |state: &'static str| {
            [
                ("service", "backend"),
                ("endpoint", bad_addr.as_str()),
                ("state", state),
            ]
        };
        let m = wait_for_admin(|| {
            let text = proxy.metrics_text();
            let m = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let ejected = m.value("coremesh_endpoint_state", &state_labels("ejected"));
            ((ejected == Some(1.0)).then_some(m), text)
        })
        .unwrap_or_else(|last| panic!("/metrics never showed bad ejected:\n{last}"));
        let at = |state| m.value("coremesh_endpoint_state", &state_labels(state));
        assert_eq!(
            (at("available"), at("ejected"), at("half-open")),
            (Some(0.0), Some(1.0), Some(0.0))
        );
        assert_eq!(
            m.value(
                "coremesh_ejections_total",
                &[("service", "backend"), ("endpoint", &bad_addr)]
            ),
            Some(1.0)
        );
    });
}

#[test]
fn metrics_count_requests_by_class_exactly() {
    for_each_driver(|driver| {
        // "/ok" answers 200, "/fail" 503; no retries, so each is one attempt.
        let upstream = Upstream::start("mixed", |req| {
            if req.path == "/fail" {
                Action::Respond(Response::new(503).body("no"))
            } else {
                Action::Respond(Response::ok("yes"))
            }
        });
        let mut config = round_robin(&[&upstream]);
        config.routes[0].path_prefix = Some("/".into());
        let proxy = start_with_admin(driver, config);
        let endpoint = upstream.addr().to_string();

        let mut client = Client::connect(proxy.addr()).expect("connect");
        let mut statuses = Vec::new();
        for i in 0..7 {
            statuses.push(get_on(&mut client, "/ok", &[], &format!("ok {i}")).status);
        }
        for i in 0..3 {
            statuses.push(get_on(&mut client, "/fail", &[], &format!("fail {i}")).status);
        }
        assert_eq!(statuses, [vec![200; 7], vec![503; 3]].concat());

        let m = metrics_after(&proxy, &[("service", "backend")], 10.0);
        let count = |class: &str| {
            m.value(
                "coremesh_requests_total",
                &[
                    ("direction", "proxy"),
                    ("service", "backend"),
                    ("route", "all"),
                    ("endpoint", &endpoint),
                    ("class", class),
                ],
            )
        };
        assert_eq!((count("2xx"), count("5xx")), (Some(7.0), Some(3.0)));
        let all: Vec<_> = m.matching("coremesh_requests_total", &[]);
        assert_eq!(
            all.len(),
            2,
            "only the two series that saw requests: {all:#?}"
        );
        let latency = &[
            ("direction", "proxy"),
            ("service", "backend"),
            ("route", "all"),
        ];
        assert_eq!(
            m.value("coremesh_response_latency_seconds_count", latency),
            Some(10.0)
        );
        assert_eq!(
            m.value(
                "coremesh_response_latency_seconds_bucket",
                &[
                    ("direction", "proxy"),
                    ("service", "backend"),
                    ("route", "all"),
                    ("le", "+Inf")
                ]
            ),
            Some(10.0)
        );
        assert_eq!(
            m.sum("coremesh_retries_total", &[("service", "backend")]),
            0.0
        );
        assert_eq!(
            m.value("coremesh_tcp_connections_accepted_total", &[]),
            Some(1.0)
        );
        assert_eq!(m.value("coremesh_cores", &[]), Some(1.0));
        assert_eq!(
            m.sum("coremesh_upstream_connections_opened_total", &[])
                + m.sum("coremesh_upstream_connections_reused_total", &[]),
            10.0,
            "each attempt opened or reused one upstream connection"
        );
        assert_eq!(upstream.requests_received(), 10);
    });
}

#[test]
fn metrics_without_per_endpoint_labels_and_unrouted_requests() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("a", 200, b"ok");
        let mut config = round_robin(&[&upstream]);
        config.routes[0].path_prefix = Some("/api".into());
        config.telemetry.per_endpoint_metrics = false;
        let proxy = start_with_admin(driver, config);

        let mut client = Client::connect(proxy.addr()).expect("connect");
        for i in 0..4 {
            assert_eq!(
                get_on(&mut client, "/api/x", &[], &format!("{i}")).status,
                200
            );
        }
        for i in 0..2 {
            assert_eq!(
                get_on(&mut client, "/elsewhere", &[], &format!("{i}")).status,
                404,
                "no route"
            );
        }
        let m = metrics_after(&proxy, &[], 6.0);
        assert_eq!(
            m.value(
                "coremesh_requests_total",
                &[
                    ("direction", "proxy"),
                    ("service", "backend"),
                    ("route", "all"),
                    ("class", "2xx")
                ]
            ),
            Some(4.0)
        );
        assert_eq!(
            m.value(
                "coremesh_requests_total",
                &[("direction", "proxy"), ("class", "4xx")]
            ),
            Some(2.0),
            "requests that matched no route carry neither service nor route"
        );
        assert!(
            m.samples.iter().all(|s| !s.labels.contains_key("endpoint")),
            "no endpoint label anywhere with per_endpoint_metrics = false"
        );
    });
}

#[test]
fn build_info_names_the_driver_as_documented() {
    // docs/observability.md: `coremesh_build_info{version, driver}`, driver `uring` or
    // `legacy`.
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("a", 200, b"ok");
        let proxy = start_with_admin(driver, round_robin(&[&upstream]));
        let m = Exposition::parse(&proxy.metrics_text()).expect("/metrics parses");
        let info = m.matching("coremesh_build_info", &[]);
        assert_eq!(info.len(), 1, "{info:#?}");
        let running = match proxy.driver() {
            Driver::Uring => "uring",
            Driver::Legacy => "legacy",
        };
        assert_eq!(
            info[0].labels.get("driver").map(String::as_str),
            Some(running),
            "{info:#?}"
        );
        assert_eq!(
            info[0].labels.get("version").map(String::as_str),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(info[0].value, 1.0);
    });
}

/// A log level kept in memory; refuses filters containing `!`.
struct FakeLevel(Mutex<String>);

impl LogLevel for FakeLevel {
    fn get(&self) -> String {
        self.0.lock().map(|l| l.clone()).unwrap_or_default()
    }
    fn set(&self, filter: &str) -> Result<(), String> {
        if filter.contains('!') {
            return Err(format!("invalid filter {filter:?}"));
        }
        if let Ok(mut l) = self.0.lock() {
            *l = filter.to_string();
        }
        Ok(())
    }
}

#[test]
fn log_level_is_absent_in_process_and_works_with_a_hook() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("a", 200, b"ok");
        {
            let proxy = start_with_admin(driver, round_robin(&[&upstream]));
            assert_eq!(
                proxy.get("/log-level").status,
                404,
                "no log control in-process"
            );
            assert_eq!(
                proxy.request("PUT", "/log-level", Some(b"debug")).status,
                404
            );
        }
        let level = Arc::new(FakeLevel(Mutex::new("info".into())));
        let proxy =
            start_with_admin_and_log_level(driver, round_robin(&[&upstream]), level.clone());
        let get = proxy.get("/log-level");
        assert_eq!((get.status, get.body_text().as_str()), (200, "info\n"));
        let put = proxy.request("PUT", "/log-level", Some(b"debug,coremesh=trace\n"));
        assert_eq!(
            (put.status, put.body_text().as_str()),
            (200, "debug,coremesh=trace\n")
        );
        assert_eq!(
            level.get(),
            "debug,coremesh=trace",
            "the hook got the trimmed filter"
        );
        assert_eq!(
            proxy.get("/log-level").body_text(),
            "debug,coremesh=trace\n"
        );
        let bad = proxy.request("PUT", "/log-level", Some(b"nope!"));
        assert_eq!(bad.status, 400, "{}", bad.body_text());
        assert_eq!(
            level.get(),
            "debug,coremesh=trace",
            "a refused filter changes nothing"
        );
    });
}

#[test]
fn shutdown_is_refused_when_disabled() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("a", 200, b"ok");
        let config = round_robin(&[&upstream]);
        assert!(!config.proxy.admin_shutdown, "off by default");
        let proxy = start_with_admin(driver, config);
        let r = proxy.request("POST", "/shutdown", None);
        assert_eq!(r.status, 404, "{}", r.body_text());
        assert!(
            proxy.shutdown_requests().try_recv().is_err(),
            "no shutdown request passed on"
        );
        assert_eq!(gets(&proxy, 1, "/x"), [200], "still serving");
    });
}

#[test]
fn shutdown_is_accepted_when_enabled() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("a", 200, b"ok");
        let mut config = round_robin(&[&upstream]);
        config.proxy.admin_shutdown = true;
        let proxy = start_with_admin(driver, config);
        let r = proxy.request("POST", "/shutdown", None);
        assert_eq!(r.status, 202, "{}", r.body_text());
        assert_eq!(
            proxy.shutdown_requests().recv_timeout(ADMIN_WAIT),
            Ok(()),
            "the handle's shutdown_requests() received the request"
        );
        assert!(
            proxy.shutdown_requests().try_recv().is_err(),
            "exactly one message per request"
        );
        // Stopping is the embedder's decision: the proxy serves until it is shut down.
        assert_eq!(gets(&proxy, 1, "/x"), [200]);
    });
}

/// Wait until `coremesh top`'s fetch shows `total` requests for "backend".
fn top_sample_after(admin: SocketAddr, total: u64) -> coremesh::cli::top::Sample {
    wait_for_admin(|| match coremesh::cli::top::fetch(&admin.to_string()) {
        Ok(s) => {
            let seen: u64 = s
                .services
                .get("backend")
                .map(|l| l.iter().map(|e| e.requests).sum())
                .unwrap_or(0);
            let text = format!("{s:#?}");
            ((seen >= total).then_some(s), text)
        }
        Err(e) => (None, format!("{e:#}")),
    })
    .unwrap_or_else(|last| panic!("top never saw {total} requests: {last}"))
}

#[test]
fn top_reads_a_live_proxy() {
    for_each_driver(|driver| {
        let a = Upstream::fixed_named("a", 200, b"ok");
        let b = Upstream::fixed_named("b", 503, b"no");
        let mut config = round_robin(&[&a, &b]);
        // Ejection off: "b" fails every request and must stay in turn.
        config.services[0].overrides.eject_consecutive_failures = Some(0);
        let proxy = start_with_admin(driver, config);
        let what = driver_name(driver);

        assert_eq!(gets(&proxy, 4, "/x"), [200, 503, 200, 503], "{what}");
        let first = top_sample_after(proxy.admin(), 4);
        assert_eq!(gets(&proxy, 6, "/x"), [200, 503, 200, 503, 200, 503]);
        let second = top_sample_after(proxy.admin(), 10);

        let rows = coremesh::cli::top::rows(Some(&first), &second, Duration::from_secs(2));
        let summary: Vec<_> = rows
            .iter()
            .map(|r| {
                (
                    r.endpoint.clone(),
                    r.state.clone(),
                    r.rate,
                    r.success,
                    r.in_flight,
                    r.requests,
                )
            })
            .collect();
        // 6 requests in "2 s": 3 each; a succeeds, b fails (a 503 is a failure).
        assert_eq!(
            summary,
            vec![
                (
                    None,
                    "2/2 available".to_string(),
                    Some(3.0),
                    Some(0.5),
                    0,
                    10
                ),
                (
                    Some(a.addr().to_string()),
                    "available".to_string(),
                    Some(1.5),
                    Some(1.0),
                    0,
                    5
                ),
                (
                    Some(b.addr().to_string()),
                    "available".to_string(),
                    Some(1.5),
                    Some(0.0),
                    0,
                    5
                ),
            ],
            "{what}"
        );
        let table = coremesh::cli::top::render(Some(&first), &second, Duration::from_secs(2));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("SERVICE / ENDPOINT"), "{table}");
        assert!(lines[1].starts_with("backend "), "{table}");
        assert!(
            lines[2].starts_with(&format!("  {} ", a.addr())) && lines[2].contains("100.00%"),
            "{table}"
        );
        assert!(
            lines[3].starts_with(&format!("  {} ", b.addr())) && lines[3].contains("0.00%"),
            "{table}"
        );

        // The command itself, once, over a short interval.
        let args = coremesh::cli::top::TopArgs {
            admin: proxy.admin().to_string(),
            interval_ms: 10,
            once: true,
        };
        coremesh::cli::top::run(args).expect("coremesh top --once against a live proxy");
    });
}

#[test]
fn top_says_why_it_cannot_read() {
    let nothing = coremesh_tests::proxy::closed_port_addr();
    let args = coremesh::cli::top::TopArgs {
        admin: nothing.to_string(),
        interval_ms: 10,
        once: true,
    };
    let e = coremesh::cli::top::run(args).expect_err("nothing listens there");
    assert!(
        format!("{e:#}").contains("cannot connect to the admin server"),
        "{e:#}"
    );
}

/// Only turns a hang into a failure; nothing here is expected to come near it.
const HANG_BOUND: Duration = Duration::from_secs(30);

#[test]
fn fifty_stalled_admin_clients_do_not_hold_up_live_and_ready() {
    const STALLED: usize = 50;
    // The default cap leaves room for the probes.
    const { assert!(coremesh_discovery::DEFAULT_ADMIN_MAX_CONNECTIONS > STALLED + 1) };
    for_each_driver(|driver| {
        let upstream = Upstream::fixed(200, b"ok");
        let mut config = one_service(&[upstream.addr()]);
        // Far longer than the test: the stalled clients stay open throughout.
        config.proxy.admin_request_timeout_ms = 10 * 60 * 1000;
        let proxy = start_with_admin(driver, config);
        let mut stalled: Vec<_> = (0..STALLED)
            .map(|_| stalled_admin_client(proxy.admin(), HANG_BOUND))
            .collect();
        // Served one at a time, these would wait behind every stalled client.
        let ready = admin_get_within(proxy.admin(), "/ready", HANG_BOUND);
        assert_eq!((ready.status, ready.body_text().as_str()), (200, "ready\n"));
        let live = admin_get_within(proxy.admin(), "/live", HANG_BOUND);
        assert_eq!((live.status, live.body_text().as_str()), (200, "live\n"));
        // Each stalled client was held open, and is answered once its head is complete.
        let answered: Vec<(u16, String)> = stalled
            .iter_mut()
            .map(|c| {
                let r = finish_stalled_head(c);
                (r.status, r.body_text())
            })
            .collect();
        assert_eq!(answered, vec![(200, "live\n".to_string()); STALLED]);
    });
}

#[test]
fn a_head_that_never_ends_is_closed_by_the_whole_request_timeout() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed(200, b"ok");
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.admin_request_timeout_ms = 200;
        let proxy = start_with_admin(driver, config);

        // Stalls after part of its head: 408, then the connection is closed.
        let mut c = stalled_admin_client(proxy.admin(), HANG_BOUND);
        let r = c.read_response(false).expect("a 408 before the close");
        assert_eq!(
            (r.status, r.body_text().as_str()),
            (408, "request not received within 200 ms\n")
        );
        assert!(c.is_closed_by_peer(), "closed after the 408");

        // Sends a byte of its head every 20 ms, never ending it: no read waits long, but
        // the whole request is late, so it is closed all the same.
        let end = trickle_until_closed(proxy.admin(), Duration::from_millis(20), HANG_BOUND)
            .unwrap_or_else(|e| panic!("a trickling head was never closed: {e}"));
        let text = String::from_utf8_lossy(&end.received);
        assert!(
            end.received.is_empty() || text.starts_with("HTTP/1.1 408 "),
            "only a 408 may precede the close, got {text:?}"
        );

        // The server still answers.
        assert_eq!(proxy.get("/live").status, 200);
    });
}

#[test]
fn the_connection_cap_serves_at_the_cap_and_answers_503_one_over() {
    for_each_driver(|driver| {
        const CAP: usize = 3;
        let upstream = Upstream::fixed(200, b"ok");
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.admin_max_connections = CAP;
        config.proxy.admin_request_timeout_ms = 10 * 60 * 1000;
        let proxy = start_with_admin(driver, config);
        let admin = proxy.admin();

        // CAP - 1 stalled connections: one more is the CAP-th, and is served.
        let mut stalled: Vec<_> = (0..CAP - 1)
            .map(|_| stalled_admin_client(admin, HANG_BOUND))
            .collect();
        let at_cap = admin_get_within(admin, "/live", HANG_BOUND);
        assert_eq!(
            (at_cap.status, at_cap.body_text().as_str()),
            (200, "live\n")
        );

        // CAP stalled connections: the next one is over the cap. Connections are accepted in
        // order, so the stalled ones hold every slot when it arrives.
        stalled.push(stalled_admin_client(admin, HANG_BOUND));
        let mut over = Client::connect(admin).expect("connect to the admin server");
        over.set_read_timeout(HANG_BOUND).unwrap();
        over.send_request("GET", "/ready", &[], None).unwrap();
        let r = over.read_response(false).expect("a 503 over the cap");
        assert_eq!(
            (r.status, r.body_text().as_str()),
            (
                503,
                "too many admin connections (proxy.admin_max_connections = 3)\n"
            )
        );
        assert!(r.has_connection_close());
        assert!(over.is_closed_by_peer(), "closed after the 503");

        // An over-cap connection keeps its own slot until its client closes; with CAP of
        // those open too, one more connection is closed at once, unanswered.
        let mut refused = vec![over];
        for _ in 1..CAP {
            let mut c = Client::connect(admin).expect("connect to the admin server");
            c.set_read_timeout(HANG_BOUND).unwrap();
            c.send_request("GET", "/ready", &[], None).unwrap();
            assert_eq!(c.read_response(false).expect("a 503").status, 503);
            refused.push(c);
        }
        let mut unanswered = Client::connect(admin).expect("connect to the admin server");
        unanswered.set_read_timeout(HANG_BOUND).unwrap();
        assert!(
            unanswered.is_closed_by_peer(),
            "over twice the cap: closed without an answer"
        );
        drop(refused);

        // A stalled client that finishes is answered, and its slot is free again once its
        // connection has closed.
        let mut done = stalled.remove(0);
        let r = finish_stalled_head(&mut done);
        assert_eq!((r.status, r.body_text().as_str()), (200, "live\n"));
        assert!(done.is_closed_by_peer());
        let again = admin_get_within(admin, "/ready", HANG_BOUND);
        assert_eq!(again.status, 200, "{}", again.body_text());
    });
}

#[test]
fn a_client_that_stops_reading_is_closed_by_the_write_timeout() {
    use std::io::Read;
    for_each_driver(|driver| {
        // Far larger than any socket buffer, so the write stalls when the client stops.
        const EXTRA: usize = 32 * 1024 * 1024;
        let upstream = Upstream::fixed(200, b"ok");
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.admin_max_connections = 1;
        config.proxy.admin_write_timeout_ms = 200;
        let proxy = start_with_admin(driver, config);
        proxy.set_extra_metrics(Box::new(|| "#".repeat(EXTRA)));
        let mut stalled = non_reading_admin_client(proxy.admin(), "/metrics");

        // The stalled answer holds the only slot (503) until the write timeout frees it.
        wait_for_admin(|| {
            let r = admin_get_within(proxy.admin(), "/live", HANG_BOUND);
            (
                (r.status == 200).then_some(()),
                format!("{} {}", r.status, r.body_text()),
            )
        })
        .unwrap_or_else(|last| panic!("the slot was never freed; last answer: {last}"));

        // The stalled client gets what was sent before the server gave up: a part.
        stalled.set_read_timeout(Some(HANG_BOUND)).unwrap();
        let mut got = Vec::new();
        match stalled.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("reading the abandoned answer: {e}"),
        }
        assert!(
            got.len() < EXTRA,
            "the answer was cut short, got {} bytes",
            got.len()
        );
    });
}
