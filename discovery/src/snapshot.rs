//! [`Snapshot`]: the immutable form of a validated configuration that the control thread
//! builds and sends to every core (as an `Arc`), with per-service settings already merged
//! and routes compiled for matching.
//!
//! A core keeps the snapshot a request started with until the request ends, so a snapshot
//! is never changed in place; a new configuration is a new snapshot.

use crate::route::CompiledRoute;
use crate::{Config, Settings};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

/// Routes and services as one core uses them.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// `[defaults]`: what applies before a route is chosen (header limits, idle timeout).
    pub defaults: Settings,
    /// In configuration order; routes refer to them by index.
    pub services: Vec<ServiceSnapshot>,
    /// In configuration order: the first that matches wins.
    pub routes: Vec<CompiledRoute>,
    /// Original destination → index in [`services`](Self::services) of the service that
    /// claims it (its `addresses`): what the outbound side looks up for each connection.
    pub destinations: HashMap<SocketAddr, usize>,
    /// How the outbound side passes requests through to a destination no service claims
    /// (`[outbound.passthrough]`).
    pub passthrough: crate::Passthrough,
    /// Limits of HTTP/2 client connections (`[http2]`).
    pub http2: crate::Http2Settings,
    /// Who may call the application through the inbound side (`[inbound]`'s
    /// `require_mtls`, `authorize` and `[[inbound.routes]]`), compiled.
    pub inbound_policy: crate::CompiledInboundPolicy,
}

/// A destination service: its endpoints and its settings (defaults merged with its
/// overrides).
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSnapshot {
    pub name: String,
    pub endpoints: Vec<SocketAddr>,
    pub settings: Settings,
    /// Mutual TLS to the endpoints (`tls = { identity = … }`), none: plaintext.
    pub tls: Option<crate::ServiceTls>,
    /// Endpoints that discovery found meshed (a Kubernetes endpoint whose pod's sidecar
    /// terminates mutual TLS), each with the SPIFFE ID it must prove; only endpoints of
    /// this service, and none when `tls` is set (the service's own `tls` wins). Endpoints
    /// not listed are plaintext unless `tls` says otherwise.
    pub endpoint_identities: BTreeMap<SocketAddr, String>,
}

impl Snapshot {
    /// Builds the snapshot of `config`, which [`parse_config`](crate::parse_config) or
    /// [`validate`](crate::validate()) has accepted. An invalid config does not panic: a
    /// reference to an unknown service is dropped from its route, and the route then has
    /// fewer (possibly no) targets.
    pub fn build(config: &Config) -> Snapshot {
        let services: Vec<ServiceSnapshot> = config
            .services
            .iter()
            .map(|service| ServiceSnapshot {
                name: service.name.clone(),
                endpoints: service.endpoints.clone(),
                settings: config.defaults.merged(&service.overrides),
                tls: service.tls.clone(),
                endpoint_identities: BTreeMap::new(),
            })
            .collect();
        let find = |name: &str| services.iter().position(|service| service.name == name);
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, route)| CompiledRoute::compile(index, route, &find))
            .collect();
        // Validation makes each address claimed once; unvalidated, the first claim wins.
        let mut destinations = HashMap::new();
        for (index, service) in config.services.iter().enumerate() {
            for address in &service.addresses {
                destinations.entry(*address).or_insert(index);
            }
        }
        Snapshot {
            defaults: config.defaults.clone(),
            services,
            routes,
            destinations,
            passthrough: crate::Passthrough::of(config.outbound.as_ref(), &config.defaults),
            http2: config.http2.clone(),
            inbound_policy: config
                .inbound
                .as_ref()
                .map(|i| i.policy.compile())
                .unwrap_or_default(),
        }
    }

    /// The service claiming original destination `destination`, if any (O(1)).
    pub fn service_for_destination(&self, destination: SocketAddr) -> Option<usize> {
        self.destinations.get(&destination).copied()
    }

    /// Index in [`services`](Self::services) of the service called `name`.
    pub fn service_index(&self, name: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|service| service.name == name)
    }

    /// Whole-request timeout for `route` sending to service `service`: the route's own
    /// `timeout_ms`, else the service's `request_timeout_ms`, else `[defaults]`'s.
    pub fn request_timeout(&self, route: &CompiledRoute, service: usize) -> Duration {
        route.timeout.unwrap_or_else(|| {
            let settings = self
                .services
                .get(service)
                .map_or(&self.defaults, |s| &s.settings);
            Duration::from_millis(settings.request_timeout_ms)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_config, BalanceKind, DEFAULT_MAX_HEADERS, DEFAULT_REQUEST_TIMEOUT_MS};

    fn build(text: &str) -> Snapshot {
        match parse_config(text, "snapshot.toml") {
            Ok(config) => Snapshot::build(&config),
            Err(errors) => panic!("{errors}"),
        }
    }

    const TEXT: &str = r#"
[defaults]
connect_timeout_ms = 300
max_body_bytes = 1000

[[services]]
name = "web"
endpoints = ["10.0.0.1:80", "10.0.0.2:80"]

[[services]]
name = "slow"
endpoints = ["10.0.0.3:80"]
request_timeout_ms = 60000
max_body_bytes = 5000
balance = "random"

[[routes]]
service = "slow"
"#;

    #[test]
    fn services_without_overrides_get_the_defaults() {
        let snapshot = build(TEXT);
        let web = &snapshot.services[0];
        assert_eq!(web.name, "web");
        assert_eq!(
            web.endpoints,
            vec![([10, 0, 0, 1], 80).into(), ([10, 0, 0, 2], 80).into()]
        );
        let expected = Settings {
            connect_timeout_ms: 300,
            max_body_bytes: 1000,
            ..Settings::default()
        };
        assert_eq!(web.settings, expected);
        assert_eq!(snapshot.defaults, expected);
        assert_eq!(web.settings.max_headers, DEFAULT_MAX_HEADERS);
        assert_eq!(web.settings.request_timeout_ms, DEFAULT_REQUEST_TIMEOUT_MS);
    }

    #[test]
    fn service_overrides_are_merged_over_the_defaults() {
        let snapshot = build(TEXT);
        let slow = &snapshot.services[1];
        let expected = Settings {
            connect_timeout_ms: 300,
            request_timeout_ms: 60_000,
            max_body_bytes: 5000,
            balance: BalanceKind::Random,
            ..Settings::default()
        };
        assert_eq!(slow.settings, expected);
    }

    #[test]
    fn service_index_and_request_timeout() {
        let snapshot = build(TEXT);
        assert_eq!(snapshot.service_index("web"), Some(0));
        assert_eq!(snapshot.service_index("slow"), Some(1));
        assert_eq!(snapshot.service_index("nope"), None);
        let route = &snapshot.routes[0];
        assert_eq!(route.targets, vec![(1, 1)]);
        assert_eq!(snapshot.request_timeout(route, 1), Duration::from_secs(60));
        assert_eq!(
            snapshot.request_timeout(route, 0),
            Duration::from_millis(15_000)
        );
    }

    #[test]
    fn addresses_map_to_their_service() {
        let snapshot = build(
            r#"
[[services]]
name = "web"
endpoints = ["10.0.0.1:80"]

[[services]]
name = "api"
endpoints = ["10.0.0.2:80"]
addresses = ["10.96.0.10:80", "[fd00::10]:8080"]
"#,
        );
        let api = |text: &str| {
            text.parse::<SocketAddr>()
                .map(|a| snapshot.service_for_destination(a))
        };
        assert_eq!(api("10.96.0.10:80"), Ok(Some(1)));
        assert_eq!(api("[fd00::10]:8080"), Ok(Some(1)));
        assert_eq!(api("10.96.0.10:81"), Ok(None));
        assert_eq!(api("10.0.0.2:80"), Ok(None));
        assert_eq!(snapshot.destinations.len(), 2);
    }

    #[test]
    fn an_unvalidated_config_builds_without_panicking() {
        let config = Config {
            routes: vec![crate::RouteConfig {
                host: Some("bad host".into()),
                service: Some("ghost".into()),
                ..Default::default()
            }],
            ..Config::default()
        };
        let snapshot = Snapshot::build(&config);
        assert_eq!(snapshot.routes[0].targets, vec![]);
        assert_eq!(snapshot.routes[0].pick_service(1), 0);
    }
}
