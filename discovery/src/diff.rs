//! [`snapshot_diff`]: what changed between two snapshots, service by service and route by
//! route. The controller publishes a new snapshot only when the diff is not empty, and logs
//! the diff's summary.

use crate::route::CompiledRoute;
use crate::snapshot::Snapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;

/// The differences between two snapshots. Endpoint sets are compared as sets: the same
/// endpoints in another order are no change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    pub services_added: Vec<String>,
    pub services_removed: Vec<String>,
    /// `(service, endpoint)` pairs, by service name then address.
    pub endpoints_added: Vec<(String, SocketAddr)>,
    pub endpoints_removed: Vec<(String, SocketAddr)>,
    /// Services (present in both) whose merged settings changed.
    pub settings_changed: Vec<String>,
    pub defaults_changed: bool,
    /// Names of routes added, removed or changed (conditions, targets by service name,
    /// weights, timeouts), in the new order, then removed ones.
    pub routes_changed: Vec<String>,
    /// Something else differs (a field this diff does not itemize, or only the order of
    /// services).
    pub other_changed: bool,
}

impl SnapshotDiff {
    pub fn is_empty(&self) -> bool {
        *self == SnapshotDiff::default()
    }
}

impl fmt::Display for SnapshotDiff {
    /// One line, e.g. `+1 service, +2 endpoints, -1 endpoint, routes changed: canary`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let count = |n: usize, sign: &str, what: &str| {
            let plural = if n == 1 { "" } else { "s" };
            format!("{sign}{n} {what}{plural}")
        };
        if !self.services_added.is_empty() {
            parts.push(count(self.services_added.len(), "+", "service"));
        }
        if !self.services_removed.is_empty() {
            parts.push(count(self.services_removed.len(), "-", "service"));
        }
        if !self.endpoints_added.is_empty() {
            parts.push(count(self.endpoints_added.len(), "+", "endpoint"));
        }
        if !self.endpoints_removed.is_empty() {
            parts.push(count(self.endpoints_removed.len(), "-", "endpoint"));
        }
        if !self.settings_changed.is_empty() {
            parts.push(format!(
                "settings changed: {}",
                self.settings_changed.join(", ")
            ));
        }
        if self.defaults_changed {
            parts.push("defaults changed".to_owned());
        }
        if !self.routes_changed.is_empty() {
            parts.push(format!(
                "routes changed: {}",
                self.routes_changed.join(", ")
            ));
        }
        if self.other_changed {
            parts.push("other changes".to_owned());
        }
        if parts.is_empty() {
            parts.push("no change".to_owned());
        }
        f.write_str(&parts.join(", "))
    }
}

/// What changed from `old` to `new`.
pub fn snapshot_diff(old: &Snapshot, new: &Snapshot) -> SnapshotDiff {
    let mut diff = SnapshotDiff {
        defaults_changed: old.defaults != new.defaults,
        ..SnapshotDiff::default()
    };
    let old_services: BTreeMap<&str, _> =
        old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_services: BTreeMap<&str, _> =
        new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (name, new_service) in &new_services {
        let Some(old_service) = old_services.get(name) else {
            diff.services_added.push((*name).to_owned());
            for endpoint in endpoint_set(&new_service.endpoints) {
                diff.endpoints_added.push(((*name).to_owned(), endpoint));
            }
            continue;
        };
        let before = endpoint_set(&old_service.endpoints);
        let after = endpoint_set(&new_service.endpoints);
        for endpoint in after.difference(&before) {
            diff.endpoints_added.push(((*name).to_owned(), *endpoint));
        }
        for endpoint in before.difference(&after) {
            diff.endpoints_removed.push(((*name).to_owned(), *endpoint));
        }
        if old_service.settings != new_service.settings {
            diff.settings_changed.push((*name).to_owned());
        }
    }
    for (name, old_service) in &old_services {
        if !new_services.contains_key(name) {
            diff.services_removed.push((*name).to_owned());
            for endpoint in endpoint_set(&old_service.endpoints) {
                diff.endpoints_removed.push(((*name).to_owned(), endpoint));
            }
        }
    }
    diff.routes_changed = changed_routes(old, new);
    if diff.is_empty() && !same_apart_from_endpoint_order(old, new) {
        diff.other_changed = true;
    }
    diff
}

fn endpoint_set(endpoints: &[SocketAddr]) -> BTreeSet<SocketAddr> {
    endpoints.iter().copied().collect()
}

/// A route with its targets named by service rather than by index (indices move when a
/// service is added before the ones a route sends to, which changes nothing for the route).
fn comparable(snapshot: &Snapshot, route: &CompiledRoute) -> (CompiledRoute, Vec<(String, u32)>) {
    let targets = route
        .targets
        .iter()
        .map(|(index, weight)| {
            let name = snapshot
                .services
                .get(*index)
                .map_or_else(String::new, |service| service.name.clone());
            (name, *weight)
        })
        .collect();
    let mut bare = route.clone();
    bare.targets.clear();
    (bare, targets)
}

fn changed_routes(old: &Snapshot, new: &Snapshot) -> Vec<String> {
    let mut changed = Vec::new();
    for (index, route) in new.routes.iter().enumerate() {
        let same = old
            .routes
            .get(index)
            .is_some_and(|before| comparable(old, before) == comparable(new, route));
        if !same {
            changed.push(route.name.clone());
        }
    }
    for route in old.routes.iter().skip(new.routes.len()) {
        changed.push(route.name.clone());
    }
    changed
}

/// Whether the snapshots are equal once each service's endpoints are sorted.
fn same_apart_from_endpoint_order(old: &Snapshot, new: &Snapshot) -> bool {
    let sorted = |snapshot: &Snapshot| {
        let mut snapshot = snapshot.clone();
        for service in &mut snapshot.services {
            service.endpoints.sort();
        }
        snapshot
    };
    sorted(old) == sorted(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_config;

    fn snapshot(text: &str) -> Snapshot {
        match parse_config(text, "diff.toml") {
            Ok(config) => Snapshot::build(&config),
            Err(errors) => panic!("{errors}"),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    const BASE: &str = r#"
[[services]]
name = "stable"
endpoints = ["10.0.0.1:80", "10.0.0.2:80"]

[[services]]
name = "canary"
endpoints = ["10.0.1.1:80"]

[[routes]]
name = "split"
split = [{ service = "stable", weight = 90 }, { service = "canary", weight = 10 }]
"#;

    #[test]
    fn identical_snapshots_have_an_empty_diff() {
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(BASE));
        assert!(diff.is_empty(), "{diff:?}");
        assert_eq!(diff.to_string(), "no change");
    }

    #[test]
    fn endpoint_order_is_no_change() {
        let reordered = BASE.replace(
            r#"["10.0.0.1:80", "10.0.0.2:80"]"#,
            r#"["10.0.0.2:80", "10.0.0.1:80"]"#,
        );
        assert!(snapshot_diff(&snapshot(BASE), &snapshot(&reordered)).is_empty());
    }

    #[test]
    fn endpoints_added_and_removed() {
        let changed = BASE.replace(
            r#"["10.0.0.1:80", "10.0.0.2:80"]"#,
            r#"["10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"]"#,
        );
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(&changed));
        let expected = SnapshotDiff {
            endpoints_added: vec![
                ("stable".into(), addr("10.0.0.3:80")),
                ("stable".into(), addr("10.0.0.4:80")),
            ],
            endpoints_removed: vec![("stable".into(), addr("10.0.0.1:80"))],
            ..SnapshotDiff::default()
        };
        assert_eq!(diff, expected);
        assert_eq!(diff.to_string(), "+2 endpoints, -1 endpoint");
    }

    #[test]
    fn shifted_weights_change_the_route() {
        let shifted = BASE
            .replace("weight = 90", "weight = 50")
            .replace("weight = 10", "weight = 50");
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(&shifted));
        let expected = SnapshotDiff {
            routes_changed: vec!["split".into()],
            ..SnapshotDiff::default()
        };
        assert_eq!(diff, expected);
        assert_eq!(diff.to_string(), "routes changed: split");
    }

    #[test]
    fn services_added_and_removed_with_their_endpoints() {
        let text = BASE
            .replace("name = \"canary\"", "name = \"preview\"")
            .replace("service = \"canary\"", "service = \"preview\"");
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(&text));
        let expected = SnapshotDiff {
            services_added: vec!["preview".into()],
            services_removed: vec!["canary".into()],
            endpoints_added: vec![("preview".into(), addr("10.0.1.1:80"))],
            endpoints_removed: vec![("canary".into(), addr("10.0.1.1:80"))],
            routes_changed: vec!["split".into()],
            ..SnapshotDiff::default()
        };
        assert_eq!(diff, expected);
        assert_eq!(
            diff.to_string(),
            "+1 service, -1 service, +1 endpoint, -1 endpoint, routes changed: split"
        );
    }

    #[test]
    fn a_service_inserted_before_moves_indices_but_not_routes() {
        let text = format!("[[services]]\nname = \"first\"\nendpoints = [\"10.9.9.9:80\"]\n{BASE}");
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(&text));
        let expected = SnapshotDiff {
            services_added: vec!["first".into()],
            endpoints_added: vec![("first".into(), addr("10.9.9.9:80"))],
            ..SnapshotDiff::default()
        };
        assert_eq!(diff, expected);
    }

    #[test]
    fn settings_defaults_and_route_lists() {
        let text = format!(
            "[defaults]\nconnect_timeout_ms = 5\n{}\n[[routes]]\nname = \"more\"\nservice = \"canary\"\n",
            BASE.replace(
                "name = \"canary\"",
                "name = \"canary\"\nrequest_timeout_ms = 100"
            )
        );
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(&text));
        let expected = SnapshotDiff {
            settings_changed: vec!["canary".into(), "stable".into()],
            defaults_changed: true,
            routes_changed: vec!["more".into()],
            ..SnapshotDiff::default()
        };
        assert_eq!(diff, expected);
        let back = snapshot_diff(&snapshot(&text), &snapshot(BASE));
        assert_eq!(back.routes_changed, vec!["more".to_owned()]);
    }

    #[test]
    fn service_order_alone_is_another_change() {
        let swapped = r#"
[[services]]
name = "canary"
endpoints = ["10.0.1.1:80"]

[[services]]
name = "stable"
endpoints = ["10.0.0.1:80", "10.0.0.2:80"]

[[routes]]
name = "split"
split = [{ service = "stable", weight = 90 }, { service = "canary", weight = 10 }]
"#;
        let diff = snapshot_diff(&snapshot(BASE), &snapshot(swapped));
        let expected = SnapshotDiff {
            other_changed: true,
            ..SnapshotDiff::default()
        };
        assert_eq!(diff, expected);
    }
}
