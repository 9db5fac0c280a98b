//! Tests of route selection and split picking on snapshots built from TOML.

use crate::{parse_config, CompiledRoute, Snapshot};
use httparse::Header;

fn snapshot(text: &str) -> Snapshot {
    match parse_config(text, "routes.toml") {
        Ok(config) => Snapshot::build(&config),
        Err(errors) => panic!("{errors}"),
    }
}

const ROUTES: &str = r#"
[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]

[[services]]
name = "api"
endpoints = ["10.0.0.2:80"]

[[services]]
name = "staging"
endpoints = ["10.0.0.3:80"]

[[routes]]
name = "staging"
headers = [{ name = "X-Env", exact = "staging" }]
service = "staging"

[[routes]]
name = "debug"
host = "*.example.com"
headers = [{ name = "x-debug", present = true }]
service = "api"

[[routes]]
name = "health"
path_exact = "/healthz"
service = "api"

[[routes]]
name = "api"
host = "api.example.com"
path_prefix = "/v1/"
service = "api"

[[routes]]
name = "web"
host = "www.example.com"
service = "web"
"#;

/// The name of the route selected for this request, if any.
fn selected(
    snapshot: &Snapshot,
    host: Option<&str>,
    path: &str,
    headers: &[Header<'_>],
) -> Option<String> {
    snapshot
        .select_route(host, path, headers)
        .map(|route| route.name.clone())
}

fn header<'a>(name: &'a str, value: &'a str) -> Header<'a> {
    Header {
        name,
        value: value.as_bytes(),
    }
}

#[test]
fn selects_by_host_ignoring_case_and_port() {
    let s = snapshot(ROUTES);
    assert_eq!(
        selected(&s, Some("WWW.Example.com:8080"), "/", &[]).as_deref(),
        Some("web")
    );
    assert_eq!(
        selected(&s, Some("api.example.com"), "/v1", &[]).as_deref(),
        Some("api")
    );
    assert_eq!(selected(&s, Some("example.com"), "/", &[]), None);
    assert_eq!(selected(&s, None, "/", &[]), None);
}

#[test]
fn selects_by_path_segments_and_ignores_the_query() {
    let s = snapshot(ROUTES);
    let api = Some("api.example.com");
    assert_eq!(selected(&s, api, "/v1", &[]).as_deref(), Some("api"));
    assert_eq!(selected(&s, api, "/v1/", &[]).as_deref(), Some("api"));
    assert_eq!(
        selected(&s, api, "/v1/users?id=3", &[]).as_deref(),
        Some("api")
    );
    assert_eq!(selected(&s, api, "/v1?x=/", &[]).as_deref(), Some("api"));
    assert_eq!(selected(&s, api, "/v1x", &[]), None);
    assert_eq!(selected(&s, api, "/", &[]), None);
    assert_eq!(
        selected(&s, None, "/healthz?full=1", &[]).as_deref(),
        Some("health")
    );
    assert_eq!(selected(&s, None, "/healthz/", &[]), None);
    assert_eq!(selected(&s, None, "/healthz/x", &[]), None);
}

#[test]
fn selects_by_headers() {
    let s = snapshot(ROUTES);
    let staging = [
        header("Host", "www.example.com"),
        header("x-env", "staging"),
    ];
    assert_eq!(
        selected(&s, Some("www.example.com"), "/", &staging).as_deref(),
        Some("staging")
    );
    // Values are compared byte for byte.
    let upper = [header("x-env", "Staging")];
    assert_eq!(
        selected(&s, Some("www.example.com"), "/", &upper).as_deref(),
        Some("web")
    );
    // Any of several same-named headers may match.
    let repeated = [header("X-ENV", "prod"), header("x-env", "staging")];
    assert_eq!(
        selected(&s, None, "/", &repeated).as_deref(),
        Some("staging")
    );
    // `present` needs the header and accepts any value, even empty.
    let debug = [header("X-Debug", "")];
    assert_eq!(
        selected(&s, Some("a.example.com"), "/", &debug).as_deref(),
        Some("debug")
    );
    assert_eq!(selected(&s, Some("a.example.com"), "/", &[]), None);
    assert_eq!(selected(&s, Some("example.com"), "/", &debug), None);
}

#[test]
fn first_match_wins() {
    let s = snapshot(ROUTES);
    // Both "debug" (wildcard host + header) and "web" (exact host) match; "debug" is first.
    let debug = [header("x-debug", "1")];
    assert_eq!(
        selected(&s, Some("www.example.com"), "/", &debug).as_deref(),
        Some("debug")
    );
    // "staging" comes before everything.
    let both = [header("x-debug", "1"), header("x-env", "staging")];
    assert_eq!(
        selected(&s, Some("api.example.com"), "/v1", &both).as_deref(),
        Some("staging")
    );
}

#[test]
fn a_route_without_conditions_matches_everything_and_unnamed_routes_get_their_index() {
    let text = r#"
[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]

[[routes]]
path_prefix = "/only"
service = "web"

[[routes]]
service = "web"
"#;
    let s = snapshot(text);
    assert_eq!(
        selected(&s, None, "/only/x", &[]).as_deref(),
        Some("routes[0]")
    );
    assert_eq!(selected(&s, None, "/", &[]).as_deref(), Some("routes[1]"));
    assert_eq!(
        selected(&s, Some("any.host:1"), "*", &[header("a", "b")]).as_deref(),
        Some("routes[1]")
    );
}

#[test]
fn root_and_trailing_slash_prefixes() {
    let text = r#"
[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]

[[routes]]
name = "docs"
path_prefix = "/docs/"
service = "web"

[[routes]]
name = "root"
path_prefix = "/"
service = "web"
"#;
    let s = snapshot(text);
    assert_eq!(selected(&s, None, "/docs", &[]).as_deref(), Some("docs"));
    assert_eq!(
        selected(&s, None, "/docs/a/b", &[]).as_deref(),
        Some("docs")
    );
    assert_eq!(selected(&s, None, "/docsy", &[]).as_deref(), Some("root"));
    assert_eq!(selected(&s, None, "/", &[]).as_deref(), Some("root"));
}

fn split(targets: Vec<(usize, u32)>) -> CompiledRoute {
    CompiledRoute {
        name: "split".into(),
        host: None,
        path: None,
        headers: Vec::new(),
        targets,
        timeout: None,
        attempt_timeout: None,
        retry_on: Vec::new(),
        retry_non_idempotent: false,
        grpc_retry_on: Vec::new(),
    }
}

#[test]
fn pick_service_splits_rolls_at_exact_boundaries() {
    // 90/10: rolls below ceil(0.9 * 2^32) = 3_865_470_567 go to the first target.
    let route = split(vec![(3, 90), (7, 10)]);
    assert_eq!(route.pick_service(0), 3);
    assert_eq!(route.pick_service(3_865_470_566), 3);
    assert_eq!(route.pick_service(3_865_470_567), 7);
    assert_eq!(route.pick_service(u32::MAX), 7);
}

#[test]
fn pick_service_skips_zero_weights_and_handles_single_targets() {
    let route = split(vec![(0, 0), (1, 1), (2, 0), (3, 1)]);
    assert_eq!(route.pick_service(0), 1);
    assert_eq!(route.pick_service((1 << 31) - 1), 1);
    assert_eq!(route.pick_service(1 << 31), 3);
    assert_eq!(route.pick_service(u32::MAX), 3);
    let single = split(vec![(5, 1)]);
    assert_eq!(single.pick_service(0), 5);
    assert_eq!(single.pick_service(u32::MAX), 5);
    // Only an unvalidated config can produce these; they must not panic.
    assert_eq!(split(vec![]).pick_service(7), 0);
    assert_eq!(split(vec![(4, 0)]).pick_service(7), 4);
}

#[test]
fn pick_service_is_proportional_over_all_rolls_in_steps() {
    // 60 rolls at i * ceil(2^32 / 60): weights 1/2/3 get exactly 10/20/30 of them.
    let route = split(vec![(0, 1), (1, 2), (2, 3)]);
    let mut counts = [0usize; 3];
    let step = 71_582_789u32;
    for i in 0..60u32 {
        counts[route.pick_service(i * step)] += 1;
    }
    assert_eq!(counts, [10, 20, 30]);
}

#[test]
fn compiled_split_uses_service_indices_and_route_timeout() {
    let text = r#"
[[services]]
name = "stable"
endpoints = ["10.0.0.1:80"]

[[services]]
name = "canary"
endpoints = ["10.0.0.2:80"]

[[routes]]
split = [{ service = "canary", weight = 10 }, { service = "stable", weight = 90 }]
timeout_ms = 250
"#;
    let s = snapshot(text);
    let route = &s.routes[0];
    assert_eq!(route.targets, vec![(1, 10), (0, 90)]);
    assert_eq!(route.timeout, Some(std::time::Duration::from_millis(250)));
    assert_eq!(
        s.request_timeout(route, 0),
        std::time::Duration::from_millis(250)
    );
}
