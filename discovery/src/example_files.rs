//! Tests that every example in `deploy/examples/` is a valid configuration and means what
//! its comments say.

use crate::{parse_config, Config, Snapshot};
use httparse::Header;
use std::path::PathBuf;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

fn load(name: &str) -> Config {
    let path = examples_dir().join(name);
    match crate::load_config(&path) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    }
}

#[test]
fn every_example_file_is_valid() {
    let entries = match std::fs::read_dir(examples_dir()) {
        Ok(entries) => entries,
        Err(error) => panic!("cannot list {}: {error}", examples_dir().display()),
    };
    let mut checked = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .extension()
            .is_some_and(|extension| extension == "toml")
        {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(error) => panic!("cannot read {}: {error}", path.display()),
            };
            if let Err(errors) = parse_config(&text, &path.display().to_string()) {
                panic!("{errors}");
            }
            checked.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    checked.sort();
    let expected = [
        "canary-split.toml",
        "environments.toml",
        "minimal.toml",
        "overrides.toml",
        "routes.toml",
    ];
    for name in expected {
        assert!(
            checked.iter().any(|checked| checked == name),
            "{name} is missing"
        );
    }
}

fn header<'a>(name: &'a str, value: &'a str) -> Header<'a> {
    Header {
        name,
        value: value.as_bytes(),
    }
}

/// Name of the service a request goes to (first split target for split routes).
fn destination(
    snapshot: &Snapshot,
    host: &str,
    path: &str,
    headers: &[Header<'_>],
) -> Option<String> {
    let route = snapshot.select_route(Some(host), path, headers)?;
    let service = route.pick_service(0);
    Some(snapshot.services.get(service)?.name.clone())
}

#[test]
fn minimal_sends_everything_to_its_one_service() {
    let snapshot = Snapshot::build(&load("minimal.toml"));
    assert_eq!(
        destination(&snapshot, "x", "/a?b", &[]).as_deref(),
        Some("backend")
    );
}

#[test]
fn routes_example_routes_as_commented() {
    let s = Snapshot::build(&load("routes.toml"));
    let go = |host: &str, path: &str, headers: &[Header<'_>]| destination(&s, host, path, headers);
    assert_eq!(
        go("web.example.com", "/", &[header("X-Debug", "1")]).as_deref(),
        Some("debug")
    );
    assert_eq!(
        go("web.example.com", "/healthz?verbose=1", &[]).as_deref(),
        Some("web")
    );
    assert_eq!(
        go("API.example.com:8443", "/v1/users", &[]).as_deref(),
        Some("api")
    );
    assert_eq!(
        go("api.example.com", "/v1beta", &[]).as_deref(),
        Some("web")
    );
    let ops = [header("x-team", "ops")];
    assert_eq!(
        go("a.internal.example.com", "/", &ops).as_deref(),
        Some("admin-ui")
    );
    assert_eq!(
        go("internal.example.com", "/", &ops).as_deref(),
        Some("web")
    );
    let other_team = [header("x-team", "Ops")];
    assert_eq!(
        go("a.internal.example.com", "/", &other_team).as_deref(),
        Some("web")
    );
}

#[test]
fn canary_split_is_ninety_ten() {
    let s = Snapshot::build(&load("canary-split.toml"));
    let route = match s.select_route(Some("shop"), "/cart", &[]) {
        Some(route) => route,
        None => panic!("the split route matches everything"),
    };
    assert_eq!(route.targets, vec![(0, 90), (1, 10)]);
    assert_eq!(route.pick_service(3_865_470_566), 0);
    assert_eq!(route.pick_service(3_865_470_567), 1);
    let forced = [header("x-canary", "always")];
    assert_eq!(
        destination(&s, "shop", "/", &forced).as_deref(),
        Some("checkout-canary")
    );
}

#[test]
fn environments_choose_by_x_env() {
    let s = Snapshot::build(&load("environments.toml"));
    let env = |value: &str| destination(&s, "orders", "/", &[header("x-env", value)]);
    assert_eq!(env("staging").as_deref(), Some("orders-staging"));
    assert_eq!(env("test").as_deref(), Some("orders-test"));
    assert_eq!(env("prod").as_deref(), Some("orders-production"));
    assert_eq!(
        destination(&s, "orders", "/", &[]).as_deref(),
        Some("orders-production")
    );
}

#[test]
fn overrides_merge_per_service() {
    let s = Snapshot::build(&load("overrides.toml"));
    let uploads = &s.services[0].settings;
    assert_eq!(uploads.max_body_bytes, 1_073_741_824);
    assert_eq!(uploads.request_timeout_ms, 300_000);
    assert_eq!(uploads.pool_max_idle, 8);
    assert_eq!(uploads.connect_timeout_ms, 500);
    let web = &s.services[2].settings;
    assert_eq!(web, &s.defaults);
    assert_eq!(s.defaults.max_header_bytes, 32_768);
}
