//! How the configuration file and the dynamic sources combine: which DNS names and
//! Kubernetes Services a configuration needs watched ([`wanted_targets`]), the
//! configuration with every service's endpoints filled in from them ([`merged_config`]),
//! and its snapshot with the identities of meshed Kubernetes endpoints
//! ([`merged_snapshot`]).
//!
//! Pure functions: the controller calls them after each change and builds the snapshot of
//! the result.

use crate::targets::{DnsTarget, KubernetesTarget};
use crate::{Config, Snapshot};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;

/// The endpoints each dynamic source last reported (the last good answer: a source that
/// fails keeps its entry).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedEndpoints {
    pub dns: BTreeMap<DnsTarget, Vec<SocketAddr>>,
    pub kubernetes: BTreeMap<KubernetesTarget, Vec<SocketAddr>>,
    /// The ClusterIP:port destinations each Kubernetes target's Service claims.
    pub kubernetes_addresses: BTreeMap<KubernetesTarget, Vec<SocketAddr>>,
    /// The meshed endpoints of each Kubernetes target, with the identity each must prove.
    pub kubernetes_identities: BTreeMap<KubernetesTarget, BTreeMap<SocketAddr, String>>,
}

impl ResolvedEndpoints {
    /// Forgets the answers of targets that are no longer wanted.
    pub fn retain_wanted(&mut self, wanted: &WantedTargets) {
        self.dns.retain(|target, _| wanted.dns.contains(target));
        self.kubernetes
            .retain(|target, _| wanted.kubernetes.contains(target));
        self.kubernetes_addresses
            .retain(|target, _| wanted.kubernetes.contains(target));
        self.kubernetes_identities
            .retain(|target, _| wanted.kubernetes.contains(target));
    }
}

/// The dynamic sources a configuration needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WantedTargets {
    pub dns: BTreeSet<DnsTarget>,
    pub kubernetes: BTreeSet<KubernetesTarget>,
}

/// The `dns` and `kubernetes` targets of the services that some route sends to (by
/// `service` or in a `split`) or that claim `addresses` (the outbound side sends to them),
/// and with an `[outbound]` side every service's `kubernetes` targets (their Services'
/// ClusterIPs become its `addresses`):
/// a service neither names receives no traffic, so nothing is resolved or watched for it. Entries that do not parse are left out (validation
/// reports them).
pub fn wanted_targets(config: &Config) -> WantedTargets {
    let routed: HashSet<&str> = config
        .routes
        .iter()
        .flat_map(|route| {
            let split = route.split.iter().map(|target| target.service.as_str());
            route.service.as_deref().into_iter().chain(split)
        })
        .collect();
    let mut wanted = WantedTargets::default();
    for service in config.services.iter().filter(|service| {
        routed.contains(service.name.as_str())
            || !service.addresses.is_empty()
            || (config.outbound.is_some() && !service.kubernetes.is_empty())
    }) {
        let dns = service.dns.iter().filter_map(|e| DnsTarget::parse(e).ok());
        wanted.dns.extend(dns);
        let kubernetes = service
            .kubernetes
            .iter()
            .filter_map(|e| KubernetesTarget::parse(e).ok());
        wanted.kubernetes.extend(kubernetes);
    }
    wanted
}

/// `config` with each service's `endpoints` replaced by its static endpoints (in the order
/// written) followed by those its `dns` and `kubernetes` targets resolved to (sorted),
/// without duplicates, and its `dns` / `kubernetes` entries left as they are; and its
/// `addresses` followed by the ClusterIP:port destinations its `kubernetes` targets'
/// Services claim (sorted, without duplicates). A target without an answer yet
/// contributes nothing.
pub fn merged_config(config: &Config, resolved: &ResolvedEndpoints) -> Config {
    let mut merged = config.clone();
    for service in &mut merged.services {
        if service.dns.is_empty() && service.kubernetes.is_empty() {
            continue;
        }
        let dynamic: BTreeSet<SocketAddr> = service
            .dns
            .iter()
            .filter_map(|entry| DnsTarget::parse(entry).ok())
            .filter_map(|target| resolved.dns.get(&target))
            .chain(
                service
                    .kubernetes
                    .iter()
                    .filter_map(|entry| KubernetesTarget::parse(entry).ok())
                    .filter_map(|target| resolved.kubernetes.get(&target)),
            )
            .flatten()
            .copied()
            .filter(|address| address.port() != 0 && !address.ip().is_unspecified())
            .collect();
        let mut seen: HashSet<SocketAddr> = service.endpoints.iter().copied().collect();
        for address in dynamic {
            if seen.insert(address) {
                service.endpoints.push(address);
            }
        }
        let claimed: BTreeSet<SocketAddr> = service
            .kubernetes
            .iter()
            .filter_map(|entry| KubernetesTarget::parse(entry).ok())
            .filter_map(|target| resolved.kubernetes_addresses.get(&target))
            .flatten()
            .copied()
            .filter(|address| address.port() != 0 && !address.ip().is_unspecified())
            .collect();
        let mut seen: HashSet<SocketAddr> = service.addresses.iter().copied().collect();
        for address in claimed {
            if seen.insert(address) {
                service.addresses.push(address);
            }
        }
    }
    merged
}

/// The snapshot of [`merged_config`], with each service's meshed Kubernetes endpoints
/// and their identities ([`ServiceSnapshot::endpoint_identities`]): only endpoints the
/// service has, none for a service with its own `tls` (which wins), and for an endpoint
/// two of its targets name differently, the first target's.
///
/// [`ServiceSnapshot::endpoint_identities`]: crate::ServiceSnapshot::endpoint_identities
pub fn merged_snapshot(config: &Config, resolved: &ResolvedEndpoints) -> Snapshot {
    let mut snapshot = Snapshot::build(&merged_config(config, resolved));
    for (service, built) in config.services.iter().zip(&mut snapshot.services) {
        if service.tls.is_some() {
            continue;
        }
        let endpoints: HashSet<SocketAddr> = built.endpoints.iter().copied().collect();
        let targets = service
            .kubernetes
            .iter()
            .filter_map(|entry| KubernetesTarget::parse(entry).ok())
            .filter_map(|target| resolved.kubernetes_identities.get(&target));
        for identities in targets {
            for (address, identity) in identities {
                if endpoints.contains(address) {
                    built
                        .endpoint_identities
                        .entry(*address)
                        .or_insert_with(|| identity.clone());
                }
            }
        }
    }
    snapshot
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_config;

    const TEXT: &str = r#"
[[services]]
name = "web"
endpoints = ["10.0.0.9:80"]
dns = ["web.example.com:80", "web-b.example.com:80"]

[[services]]
name = "api"
kubernetes = "api.prod:8080"

[[services]]
name = "unrouted"
dns = ["unrouted.example.com:80"]
kubernetes = ["unrouted.prod:80"]

[[routes]]
path_prefix = "/api"
split = [{ service = "api", weight = 1 }]

[[routes]]
service = "web"
"#;

    fn config() -> Config {
        match parse_config(TEXT, "merge.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        }
    }

    fn dns(entry: &str) -> DnsTarget {
        DnsTarget::parse(entry).unwrap_or_else(|problem| panic!("{entry}: {problem}"))
    }

    fn kubernetes(entry: &str) -> KubernetesTarget {
        KubernetesTarget::parse(entry).unwrap_or_else(|problem| panic!("{entry}: {problem}"))
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse()
            .unwrap_or_else(|error| panic!("{text}: {error}"))
    }

    #[test]
    fn only_routed_services_are_watched() {
        let wanted = wanted_targets(&config());
        let expected_dns: BTreeSet<DnsTarget> =
            [dns("web.example.com:80"), dns("web-b.example.com:80")].into();
        assert_eq!(wanted.dns, expected_dns);
        assert_eq!(wanted.kubernetes, [kubernetes("api.prod:8080")].into());
    }

    #[test]
    fn merged_endpoints_are_static_then_resolved_sorted_without_duplicates() {
        let mut resolved = ResolvedEndpoints::default();
        resolved.dns.insert(
            dns("web.example.com:80"),
            vec![addr("10.0.0.2:80"), addr("10.0.0.9:80"), addr("0.0.0.0:80")],
        );
        resolved.dns.insert(
            dns("web-b.example.com:80"),
            vec![addr("10.0.0.1:80"), addr("10.0.0.2:80")],
        );
        resolved.kubernetes.insert(
            kubernetes("api.prod:8080"),
            vec![addr("[fd00::1]:8080"), addr("10.1.0.1:8080")],
        );
        let merged = merged_config(&config(), &resolved);
        assert_eq!(
            merged.services[0].endpoints,
            vec![
                addr("10.0.0.9:80"),
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80")
            ]
        );
        assert_eq!(
            merged.services[1].endpoints,
            vec![addr("10.1.0.1:8080"), addr("[fd00::1]:8080")]
        );
        assert_eq!(merged.services[2].endpoints, vec![]);
        assert_eq!(merged.services[0].dns, config().services[0].dns);
    }

    #[test]
    fn forgetting_unwanted_answers() {
        let mut resolved = ResolvedEndpoints::default();
        resolved
            .dns
            .insert(dns("gone.example.com:80"), vec![addr("10.0.0.1:80")]);
        resolved
            .dns
            .insert(dns("web.example.com:80"), vec![addr("10.0.0.2:80")]);
        resolved.retain_wanted(&wanted_targets(&config()));
        assert_eq!(
            resolved.dns.keys().cloned().collect::<Vec<_>>(),
            vec![dns("web.example.com:80")]
        );
    }

    #[test]
    fn claimed_cluster_ips_follow_the_static_addresses_and_unrouted_services_are_watched_with_an_outbound_side(
    ) {
        let mut with_outbound = config();
        with_outbound.outbound = Some(crate::SideSettings::default());
        with_outbound.services[1].addresses = vec![addr("10.96.0.1:8080")];
        // Without a route to it, `unrouted`'s Service is watched once the outbound side
        // runs: its ClusterIP may be called directly.
        assert!(!wanted_targets(&config())
            .kubernetes
            .contains(&kubernetes("unrouted.prod:80")));
        assert!(wanted_targets(&with_outbound)
            .kubernetes
            .contains(&kubernetes("unrouted.prod:80")));

        let mut resolved = ResolvedEndpoints::default();
        resolved.kubernetes_addresses.insert(
            kubernetes("api.prod:8080"),
            vec![
                addr("10.96.0.1:8080"),
                addr("10.96.0.2:8080"),
                addr("0.0.0.0:8080"),
            ],
        );
        resolved
            .kubernetes_addresses
            .insert(kubernetes("unrouted.prod:80"), vec![addr("10.96.0.3:80")]);
        let merged = merged_config(&with_outbound, &resolved);
        assert_eq!(merged.services[0].addresses, vec![]);
        assert_eq!(
            merged.services[1].addresses,
            vec![addr("10.96.0.1:8080"), addr("10.96.0.2:8080")]
        );
        assert_eq!(merged.services[2].addresses, vec![addr("10.96.0.3:80")]);
        let snapshot = crate::Snapshot::build(&merged);
        assert_eq!(
            snapshot.service_for_destination(addr("10.96.0.2:8080")),
            Some(1)
        );
        assert_eq!(
            snapshot.service_for_destination(addr("10.96.0.3:80")),
            Some(2)
        );

        resolved.retain_wanted(&wanted_targets(&config()));
        assert_eq!(
            resolved
                .kubernetes_addresses
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            vec![kubernetes("api.prod:8080")]
        );
    }

    #[test]
    fn meshed_kubernetes_endpoints_carry_their_identity_unless_the_service_has_tls() {
        let mut config = config();
        let api = kubernetes("api.prod:8080");
        let mut resolved = ResolvedEndpoints::default();
        resolved.kubernetes.insert(
            api.clone(),
            vec![addr("10.1.0.1:8080"), addr("10.1.0.2:8080")],
        );
        let identity = |sa: &str| format!("spiffe://td/ns/prod/sa/{sa}");
        resolved.kubernetes_identities.insert(
            api.clone(),
            BTreeMap::from([
                (addr("10.1.0.1:8080"), identity("api")),
                // Not (or no longer) an endpoint of the service: left out.
                (addr("10.9.9.9:8080"), identity("gone")),
            ]),
        );
        let snapshot = merged_snapshot(&config, &resolved);
        assert_eq!(
            snapshot.services[1].endpoint_identities,
            BTreeMap::from([(addr("10.1.0.1:8080"), identity("api"))])
        );
        assert_eq!(snapshot.services[1].tls, None);
        assert!(snapshot.services[0].endpoint_identities.is_empty());

        // The service's own `tls` wins over what discovery found.
        config.services[1].tls = Some(crate::ServiceTls {
            identity: identity("explicit"),
        });
        let snapshot = merged_snapshot(&config, &resolved);
        assert!(snapshot.services[1].endpoint_identities.is_empty());

        resolved.retain_wanted(&WantedTargets::default());
        assert!(resolved.kubernetes_identities.is_empty());
    }
}
