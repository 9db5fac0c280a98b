//! From a Kubernetes Service and its `discovery.k8s.io/v1` EndpointSlices to endpoint
//! addresses ([`resolve_endpoints`]), from the Service to the destinations it claims on
//! the outbound side ([`service_addresses`]: its ClusterIPs on the entry's port), and the set of watched objects kept up to date from
//! `kube`'s watcher events ([`ObjectSet`]). Pure: the watch task feeds them.
//!
//! Which endpoints are used:
//! - The entry's port names a Service port (by number or by name, TCP only); that port's
//!   name (empty for a single unnamed port) selects the EndpointSlice port of the same name,
//!   whose number is the endpoints' port (the container's target port).
//! - Endpoints whose `ready` condition holds (absent counts as ready, as the API says) are
//!   used. Only when no endpoint at all is ready are those `serving` and `terminating`
//!   used (a rolling restart that briefly leaves only terminating pods still serving
//!   should not fail every request).
//! - The first address of each endpoint is used (the EndpointSlice controller writes one;
//!   the API gives no meaning to more); slices of address type FQDN are skipped.
//! - An endpoint listed in several slices (as during a slice's replacement) counts once.
//! - The Pod behind each endpoint (its `targetRef` of kind `Pod`, in the Service's
//!   namespace) is noted, for [`crate::meshed_pods`] to say whether it is meshed.

use crate::targets::{KubernetesTarget, ServicePort};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The endpoints of a target, and why there are none when that is not simply because no
/// pod is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Sorted, without duplicates.
    pub endpoints: Vec<SocketAddr>,
    pub problem: Option<String>,
    /// The name of the Pod behind each of [`endpoints`](Self::endpoints) that names one
    /// (`targetRef` of kind `Pod`); an address listed for two pods keeps the first seen.
    pub pods: BTreeMap<SocketAddr, String>,
}

/// The endpoints `target` resolves to, given its Service (if it exists) and the
/// EndpointSlices labelled with its name.
pub fn resolve_endpoints<'a>(
    target: &KubernetesTarget,
    service: Option<&Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Resolution {
    let Some(service) = service else {
        return no_endpoints(format!(
            "Service {}/{} not found",
            target.namespace, target.service
        ));
    };
    let Some(port) = service_port(target, service) else {
        return no_endpoints(format!(
            "Service {}/{} has no TCP port {}",
            target.namespace, target.service, target.port
        ));
    };
    let port_name = port.name.as_deref().unwrap_or("");
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    let mut pods = BTreeMap::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let number = slice.ports.iter().flatten().find_map(|slice_port| {
            let same_name = slice_port.name.as_deref().unwrap_or("") == port_name;
            let number = slice_port.port.and_then(|n| u16::try_from(n).ok());
            (same_name && is_tcp(slice_port.protocol.as_deref()))
                .then_some(number)
                .flatten()
                .filter(|n| *n != 0)
        });
        let Some(number) = number else {
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(ip) = endpoint
                .addresses
                .first()
                .and_then(|address| address.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let address = SocketAddr::new(ip, number);
            let conditions = endpoint.conditions.as_ref();
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|target| target.kind.as_deref() == Some("Pod"))
                .and_then(|target| target.name.clone());
            if let Some(pod) = pod {
                pods.entry(address).or_insert(pod);
            }
            if is_ready {
                ready.insert(address);
            } else if is_serving && is_terminating {
                terminating.insert(address);
            }
        }
    }
    let chosen = if ready.is_empty() { terminating } else { ready };
    pods.retain(|address, _| chosen.contains(address));
    Resolution {
        endpoints: chosen.into_iter().collect(),
        problem: None,
        pods,
    }
}

/// The TCP port of `service` that `target` names, by number or by name.
fn service_port<'a>(
    target: &KubernetesTarget,
    service: &'a Service,
) -> Option<&'a k8s_openapi::api::core::v1::ServicePort> {
    let ports = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .map_or(&[][..], Vec::as_slice);
    ports.iter().find(|port| {
        is_tcp(port.protocol.as_deref())
            && match &target.port {
                ServicePort::Number(number) => port.port == i32::from(*number),
                ServicePort::Name(name) => port.name.as_deref() == Some(name.as_str()),
            }
    })
}

/// The destinations `target`'s Service claims: each of its ClusterIPs (`clusterIPs`,
/// else `clusterIP`; both families of a dual-stack Service) with the Service port the
/// entry names, sorted. None for a missing Service, a headless one (`None`), an
/// ExternalName one, or a port it does not have.
pub fn service_addresses(target: &KubernetesTarget, service: Option<&Service>) -> Vec<SocketAddr> {
    let Some(service) = service else {
        return Vec::new();
    };
    let Some(port) = service_port(target, service).and_then(|p| u16::try_from(p.port).ok()) else {
        return Vec::new();
    };
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let ips = match spec.cluster_ips.as_deref() {
        Some(ips) if !ips.is_empty() => ips.to_vec(),
        _ => spec.cluster_ip.iter().cloned().collect(),
    };
    let addresses: BTreeSet<SocketAddr> = ips
        .iter()
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, port))
        .filter(|address| address.port() != 0)
        .collect();
    addresses.into_iter().collect()
}

fn is_tcp(protocol: Option<&str>) -> bool {
    protocol.is_none_or(|protocol| protocol == "TCP")
}

fn no_endpoints(problem: String) -> Resolution {
    Resolution {
        endpoints: Vec::new(),
        problem: Some(problem),
        pods: BTreeMap::new(),
    }
}

/// The objects one watch currently sees, by name, kept from `kube`'s watcher events. A
/// (re)list (`Init`, `InitApply`..., `InitDone`, as after a `410 Gone`) replaces the whole
/// set at `InitDone`, so objects deleted while the watch was away leave.
#[derive(Debug, Clone)]
pub struct ObjectSet<K> {
    objects: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
    listed: bool,
}

impl<K> Default for ObjectSet<K> {
    fn default() -> Self {
        ObjectSet {
            objects: BTreeMap::new(),
            relisting: None,
            listed: false,
        }
    }
}

impl<K: kube::Resource + Clone> ObjectSet<K> {
    /// Applies one watcher event; true when the set of objects (as seen by
    /// [`objects`](Self::objects)) may have changed.
    pub fn apply(&mut self, event: watcher::Event<K>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(object) => match &mut self.relisting {
                Some(relisting) => {
                    relisting.insert(object.name_any(), object);
                    false
                }
                None => {
                    self.objects.insert(object.name_any(), object);
                    true
                }
            },
            watcher::Event::InitDone => {
                if let Some(relisting) = self.relisting.take() {
                    self.objects = relisting;
                }
                self.listed = true;
                true
            }
            watcher::Event::Apply(object) => {
                self.objects.insert(object.name_any(), object);
                true
            }
            watcher::Event::Delete(object) => self.objects.remove(&object.name_any()).is_some(),
        }
    }

    /// Whether a first list has completed (before that the set may be partial).
    pub fn listed(&self) -> bool {
        self.listed
    }

    pub fn get(&self, name: &str) -> Option<&K> {
        self.objects.get(name)
    }

    pub fn objects(&self) -> impl Iterator<Item = &K> {
        self.objects.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort as K8sServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn target(entry: &str) -> KubernetesTarget {
        KubernetesTarget::parse(entry).unwrap_or_else(|problem| panic!("{entry}: {problem}"))
    }

    fn service(ports: &[(Option<&str>, i32, Option<&str>)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol)| K8sServicePort {
                            name: name.map(str::to_owned),
                            port: *port,
                            protocol: protocol.map(str::to_owned),
                            ..K8sServicePort::default()
                        })
                        .collect(),
                ),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    /// `(address, ready, serving, terminating)`.
    type Row<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>);

    fn slice(
        name: &str,
        kind: &str,
        ports: &[(Option<&str>, i32)],
        rows: &[Row<'_>],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            address_type: kind.into(),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| EndpointPort {
                        name: name.map(str::to_owned),
                        port: Some(*port),
                        protocol: Some("TCP".into()),
                        ..EndpointPort::default()
                    })
                    .collect(),
            ),
            endpoints: Some(
                rows.iter()
                    .map(|(address, ready, serving, terminating)| Endpoint {
                        addresses: vec![(*address).to_owned()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            serving: *serving,
                            terminating: *terminating,
                        }),
                        ..Endpoint::default()
                    })
                    .collect(),
            ),
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            .collect()
    }

    const READY: (Option<bool>, Option<bool>, Option<bool>) = (Some(true), Some(true), Some(false));
    const TERMINATING: (Option<bool>, Option<bool>, Option<bool>) =
        (Some(false), Some(true), Some(true));
    const GONE: (Option<bool>, Option<bool>, Option<bool>) = (Some(false), Some(false), Some(true));

    fn row(address: &str, state: (Option<bool>, Option<bool>, Option<bool>)) -> Row<'_> {
        (address, state.0, state.1, state.2)
    }

    #[test]
    fn ready_endpoints_on_the_matching_port() {
        let service = service(&[(Some("http"), 80, None), (Some("admin"), 9000, None)]);
        let slices = [
            slice(
                "web-a",
                "IPv4",
                &[(Some("http"), 8080), (Some("admin"), 9901)],
                &[
                    row("10.0.0.2", READY),
                    row("10.0.0.1", READY),
                    row("10.0.0.3", TERMINATING),
                ],
            ),
            slice(
                "web-b",
                "IPv6",
                &[(Some("http"), 8080)],
                &[row("fd00::1", READY), ("10.0.0.9", None, None, None)],
            ),
        ];
        let by_number = resolve_endpoints(&target("web.prod:80"), Some(&service), &slices);
        assert_eq!(
            by_number.endpoints,
            addrs(&[
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.9:8080",
                "[fd00::1]:8080"
            ])
        );
        assert_eq!(by_number.problem, None);
        let by_name = resolve_endpoints(&target("web.prod:admin"), Some(&service), &slices);
        assert_eq!(
            by_name.endpoints,
            addrs(&["10.0.0.1:9901", "10.0.0.2:9901"])
        );
    }

    #[test]
    fn terminating_endpoints_only_when_none_is_ready() {
        let service = service(&[(None, 80, Some("TCP"))]);
        let only_terminating = [slice(
            "web-a",
            "IPv4",
            &[(None, 8080)],
            &[row("10.0.0.1", TERMINATING), row("10.0.0.2", GONE)],
        )];
        let resolution =
            resolve_endpoints(&target("web.prod:80"), Some(&service), &only_terminating);
        assert_eq!(resolution.endpoints, addrs(&["10.0.0.1:8080"]));
        let mixed = [slice(
            "web-a",
            "IPv4",
            &[(Some(""), 8080)],
            &[row("10.0.0.1", TERMINATING), row("10.0.0.3", READY)],
        )];
        let resolution = resolve_endpoints(&target("web.prod:80"), Some(&service), &mixed);
        assert_eq!(resolution.endpoints, addrs(&["10.0.0.3:8080"]));
    }

    #[test]
    fn duplicates_fqdn_slices_and_other_ports_are_left_out() {
        let service = service(&[(Some("http"), 80, None), (Some("dns"), 53, Some("UDP"))]);
        let slices = [
            slice(
                "a",
                "IPv4",
                &[(Some("http"), 8080)],
                &[row("10.0.0.1", READY)],
            ),
            slice(
                "b",
                "IPv4",
                &[(Some("http"), 8080)],
                &[row("10.0.0.1", READY)],
            ),
            slice(
                "c",
                "FQDN",
                &[(Some("http"), 8080)],
                &[row("example.com", READY)],
            ),
            slice(
                "d",
                "IPv4",
                &[(Some("other"), 7000)],
                &[row("10.0.0.7", READY)],
            ),
        ];
        let resolution = resolve_endpoints(&target("web.prod:80"), Some(&service), &slices);
        assert_eq!(resolution.endpoints, addrs(&["10.0.0.1:8080"]));
        let udp = resolve_endpoints(&target("web.prod:53"), Some(&service), &slices);
        assert_eq!(udp.endpoints, vec![]);
        assert_eq!(
            udp.problem.as_deref(),
            Some("Service prod/web has no TCP port 53")
        );
    }

    #[test]
    fn each_chosen_endpoint_names_its_pod() {
        use k8s_openapi::api::core::v1::ObjectReference;
        let service = service(&[(None, 80, None)]);
        let mut web = slice(
            "web-a",
            "IPv4",
            &[(None, 8080)],
            &[
                row("10.0.0.1", READY),
                row("10.0.0.2", READY),
                row("10.0.0.3", TERMINATING),
                row("10.0.0.4", READY),
                row("10.0.0.5", READY),
            ],
        );
        let references = [
            Some(("Pod", "web-1")),
            Some(("Pod", "web-2")),
            Some(("Pod", "web-3")),
            Some(("Node", "node-1")),
            None,
        ];
        for (endpoint, reference) in web.endpoints.iter_mut().flatten().zip(references) {
            endpoint.target_ref = reference.map(|(kind, name)| ObjectReference {
                kind: Some(kind.into()),
                name: Some(name.into()),
                ..ObjectReference::default()
            });
        }
        let resolution = resolve_endpoints(&target("web.prod:80"), Some(&service), [&web]);
        assert_eq!(
            resolution.endpoints,
            addrs(&[
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.4:8080",
                "10.0.0.5:8080"
            ])
        );
        // The terminating endpoint is not chosen; the others name a pod or none.
        let pods: Vec<(SocketAddr, &str)> = resolution
            .pods
            .iter()
            .map(|(address, pod)| (*address, pod.as_str()))
            .collect();
        assert_eq!(
            pods,
            vec![
                (addrs(&["10.0.0.1:8080"])[0], "web-1"),
                (addrs(&["10.0.0.2:8080"])[0], "web-2")
            ]
        );
    }

    #[test]
    fn a_missing_service_has_no_endpoints() {
        let slices = [slice(
            "a",
            "IPv4",
            &[(None, 8080)],
            &[row("10.0.0.1", READY)],
        )];
        let resolution = resolve_endpoints(&target("web.prod:80"), None, &slices);
        assert_eq!(resolution.endpoints, vec![]);
        assert_eq!(
            resolution.problem.as_deref(),
            Some("Service prod/web not found")
        );
    }

    #[test]
    fn object_set_follows_events_and_relists() {
        let a = slice("a", "IPv4", &[], &[]);
        let b = slice("b", "IPv4", &[], &[]);
        let c = slice("c", "IPv4", &[], &[]);
        let mut set = ObjectSet::default();
        assert!(!set.apply(watcher::Event::Init));
        assert!(!set.apply(watcher::Event::InitApply(a.clone())));
        assert!(!set.listed());
        assert!(set.apply(watcher::Event::InitDone));
        assert!(set.listed());
        assert!(set.apply(watcher::Event::Apply(b.clone())));
        let names = |set: &ObjectSet<EndpointSlice>| -> Vec<String> {
            set.objects().map(|s| s.name_any()).collect()
        };
        assert_eq!(names(&set), vec!["a", "b"]);
        assert!(set.apply(watcher::Event::Delete(a.clone())));
        assert!(!set.apply(watcher::Event::Delete(a.clone())));
        // A relist (after 410 Gone) that no longer has `b` but has `c`.
        assert!(!set.apply(watcher::Event::Init));
        assert!(!set.apply(watcher::Event::InitApply(c.clone())));
        assert_eq!(names(&set), vec!["b"]);
        assert!(set.apply(watcher::Event::InitDone));
        assert_eq!(names(&set), vec!["c"]);
        assert!(set.get("c").is_some());
    }

    #[test]
    fn a_service_claims_its_cluster_ips_on_the_named_port() {
        let ports = [
            (Some("http"), 80, None),
            (Some("metrics"), 9090, Some("TCP")),
        ];
        let with_ips = |cluster_ip: Option<&str>, cluster_ips: Option<&[&str]>| {
            let mut service = service(&ports);
            if let Some(spec) = service.spec.as_mut() {
                spec.cluster_ip = cluster_ip.map(str::to_owned);
                spec.cluster_ips =
                    cluster_ips.map(|ips| ips.iter().map(|ip| (*ip).to_owned()).collect());
            }
            service
        };
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter()
                .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
                .collect()
        };
        let single = with_ips(Some("10.96.0.10"), None);
        assert_eq!(
            service_addresses(&target("web.prod:http"), Some(&single)),
            addrs(&["10.96.0.10:80"])
        );
        assert_eq!(
            service_addresses(&target("web.prod:9090"), Some(&single)),
            addrs(&["10.96.0.10:9090"])
        );
        let dual = with_ips(Some("10.96.0.10"), Some(&["fd00::10", "10.96.0.10"]));
        assert_eq!(
            service_addresses(&target("web.prod:metrics"), Some(&dual)),
            addrs(&["10.96.0.10:9090", "[fd00::10]:9090"])
        );
        let headless = with_ips(Some("None"), Some(&["None"]));
        assert_eq!(
            service_addresses(&target("web.prod:http"), Some(&headless)),
            vec![]
        );
        assert_eq!(
            service_addresses(&target("web.prod:81"), Some(&single)),
            vec![]
        );
        assert_eq!(service_addresses(&target("web.prod:http"), None), vec![]);
        assert_eq!(
            service_addresses(&target("web.prod:http"), Some(&with_ips(None, None))),
            vec![]
        );
    }
}
