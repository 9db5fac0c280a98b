//! [`Config::quick`]: the configuration `coremesh proxy --listen X --to A,B` stands for.

use crate::{Config, ProxySettings, RouteConfig, ServiceConfig};
use std::net::SocketAddr;

/// Name of the one service (and route) of a quick configuration.
pub const QUICK_SERVICE_NAME: &str = "default";

impl Config {
    /// One service [`QUICK_SERVICE_NAME`] with `endpoints`, one catch-all route to it,
    /// everything else default. Valid when `endpoints` is non-empty (check with
    /// [`validate`](crate::validate())).
    pub fn quick(listen: SocketAddr, endpoints: Vec<SocketAddr>) -> Config {
        Config {
            proxy: ProxySettings {
                listen: Some(listen),
                ..ProxySettings::default()
            },
            services: vec![ServiceConfig {
                name: QUICK_SERVICE_NAME.to_owned(),
                endpoints,
                ..ServiceConfig::default()
            }],
            routes: vec![RouteConfig {
                name: Some(QUICK_SERVICE_NAME.to_owned()),
                service: Some(QUICK_SERVICE_NAME.to_owned()),
                ..RouteConfig::default()
            }],
            ..Config::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{validate, Settings, Snapshot};

    #[test]
    fn quick_config_is_one_service_and_a_catch_all_route() {
        let listen: SocketAddr = ([127, 0, 0, 1], 4140).into();
        let a: SocketAddr = ([10, 0, 0, 1], 8080).into();
        let b: SocketAddr = ([10, 0, 0, 2], 8080).into();
        let config = Config::quick(listen, vec![a, b]);
        assert_eq!(validate(&config), vec![]);
        assert_eq!(config.proxy.listen, Some(listen));
        assert_eq!(config.defaults, Settings::default());

        let snapshot = Snapshot::build(&config);
        assert_eq!(snapshot.services.len(), 1);
        assert_eq!(snapshot.services[0].name, "default");
        assert_eq!(snapshot.services[0].endpoints, vec![a, b]);
        let route = snapshot.select_route(Some("anything:1"), "/any/path?q=1", &[]);
        assert_eq!(route.map(|route| route.targets.clone()), Some(vec![(0, 1)]));
        assert_eq!(
            snapshot
                .select_route(None, "/", &[])
                .map(|r| r.name.as_str()),
            Some("default")
        );
    }

    #[test]
    fn quick_config_without_endpoints_is_invalid() {
        let config = Config::quick(([127, 0, 0, 1], 0).into(), vec![]);
        let violations = validate(&config);
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].path.to_string(), "services[0].endpoints");
    }
}
