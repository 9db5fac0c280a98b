//! The Kubernetes source against the API server stand-in: endpoints added, changed, marked
//! terminating and deleted; a dropped watch resumed without a relist; a `410 Gone` that
//! forces a relist which finds changes no event announced; the whole controller reaching
//! the stand-in through a kubeconfig and watching only what routes name.

use crate::support::api_server_stand_in::{ApiServerStandIn, Kind};
use crate::support::{wait_until, TempDir, PATIENCE};
use coremesh_discovery::kubernetes_source::watch;
use coremesh_discovery::source_event::{SourceEvent, SourceUpdate};
use coremesh_discovery::{
    parse_config, Discovery, KubernetesSettings, KubernetesTarget, Snapshot, SourceKind,
    SourceState,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

pub(crate) fn service(namespace: &str, name: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: 9090,
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Condition {
    Ready,
    /// Not ready, still serving, terminating.
    Terminating,
}

/// A slice of service `web` in `prod` with port `http` = 8080 and `metrics` = 9100.
pub(crate) fn slice(name: &str, endpoints: &[(&str, Condition)]) -> EndpointSlice {
    slice_of("web", name, endpoints)
}

/// A slice in `prod` labelled with `service`, ports as [`slice`]'s.
pub(crate) fn slice_of(
    service: &str,
    name: &str,
    endpoints: &[(&str, Condition)],
) -> EndpointSlice {
    let labels = BTreeMap::from([("kubernetes.io/service-name".to_owned(), service.to_owned())]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("prod".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![
            EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            },
            EndpointPort {
                name: Some("metrics".into()),
                port: Some(9100),
                protocol: Some("TCP".into()),
                ..EndpointPort::default()
            },
        ]),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(address, condition)| {
                    let (ready, terminating) = match condition {
                        Condition::Ready => (true, false),
                        Condition::Terminating => (false, true),
                    };
                    Endpoint {
                        addresses: vec![(*address).to_owned()],
                        conditions: Some(EndpointConditions {
                            ready: Some(ready),
                            serving: Some(true),
                            terminating: Some(terminating),
                        }),
                        ..Endpoint::default()
                    }
                })
                .collect(),
        ),
    }
}

use Condition::{Ready, Terminating};

pub(crate) fn addrs(list: &[&str]) -> Vec<SocketAddr> {
    list.iter()
        .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
        .collect()
}

/// What the watch task reported: endpoint sets in order, failures, and the destinations
/// the Service claimed.
pub(crate) struct Reports {
    pub(crate) updates: Receiver<SourceUpdate>,
    pub(crate) failures: Vec<String>,
    pub(crate) addresses: Vec<Vec<SocketAddr>>,
    /// Every identity map reported, in order.
    pub(crate) identities: Vec<BTreeMap<SocketAddr, String>>,
}

impl Reports {
    /// Waits for an endpoint report equal to `expected`, collecting failures on the way;
    /// the other endpoint sets reported meanwhile.
    pub(crate) fn until(&mut self, expected: &[SocketAddr]) -> Vec<Vec<SocketAddr>> {
        let mut seen = Vec::new();
        loop {
            match self.updates.recv_timeout(PATIENCE) {
                Ok(SourceUpdate::Endpoints(endpoints)) if endpoints == expected => return seen,
                Ok(SourceUpdate::Endpoints(endpoints)) => seen.push(endpoints),
                Ok(SourceUpdate::Failed(message)) => self.failures.push(message),
                Ok(SourceUpdate::Addresses(addresses)) => self.addresses.push(addresses),
                Ok(SourceUpdate::Identities(identities)) => self.identities.push(identities),
                Err(_) => panic!("never reported {expected:?}; reported {seen:?}"),
            }
        }
    }
}

/// Runs [`watch`] for `entry` against `stand_in` on a runtime of its own, with the default
/// settings.
fn start_watch(stand_in: &ApiServerStandIn, entry: &str) -> (tokio::runtime::Runtime, Reports) {
    start_watch_with(stand_in, entry, KubernetesSettings::default())
}

/// Runs [`watch`] for `entry` against `stand_in` with `settings` (its pacing).
pub(crate) fn start_watch_with(
    stand_in: &ApiServerStandIn,
    entry: &str,
    settings: KubernetesSettings,
) -> (tokio::runtime::Runtime, Reports) {
    let target = KubernetesTarget::parse(entry).unwrap_or_else(|p| panic!("{entry}: {p}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    let (events, mut event_receiver) = tokio::sync::mpsc::unbounded_channel();
    let (updates, update_receiver) = channel();
    let config = stand_in.kube_config();
    runtime.spawn(async move {
        let client = kube::Client::try_from(config).unwrap_or_else(|e| panic!("client: {e}"));
        watch(client, &settings, target, events).await;
    });
    runtime.spawn(async move {
        while let Some(SourceEvent::Kubernetes(_, update)) = event_receiver.recv().await {
            if updates.send(update).is_err() {
                return;
            }
        }
    });
    let reports = Reports {
        updates: update_receiver,
        failures: Vec::new(),
        addresses: Vec::new(),
        identities: Vec::new(),
    };
    (runtime, reports)
}

#[test]
fn a_watch_follows_endpoint_slices_through_a_dropped_watch_and_410_gone() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready), ("10.1.0.2", Ready)]));
    let (runtime, mut reports) = start_watch(&stand_in, "web.prod.svc.cluster.local:80");

    // Listed: the ready endpoints on the Service port's target port.
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.0.2:8080"]));
    assert_eq!(stand_in.lists(Kind::Service), 1);
    assert_eq!(stand_in.lists(Kind::EndpointSlice), 1);

    // Added: a second slice.
    stand_in.apply_slice(&slice("web-b", &[("10.1.1.1", Ready)]));
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.0.2:8080", "10.1.1.1:8080"]));

    // Marked terminating: it leaves while others are ready.
    stand_in.apply_slice(&slice(
        "web-a",
        &[("10.1.0.1", Ready), ("10.1.0.2", Terminating)],
    ));
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.1.1:8080"]));

    // Changed: an endpoint replaced by another.
    stand_in.apply_slice(&slice(
        "web-a",
        &[("10.1.0.3", Ready), ("10.1.0.2", Terminating)],
    ));
    reports.until(&addrs(&["10.1.0.3:8080", "10.1.1.1:8080"]));

    // Deleted slice, and nothing ready left: the serving-but-terminating ones are used.
    stand_in.apply_slice(&slice(
        "web-a",
        &[("10.1.0.3", Terminating), ("10.1.0.2", Terminating)],
    ));
    stand_in.delete_slice("prod", "web-b");
    reports.until(&addrs(&["10.1.0.2:8080", "10.1.0.3:8080"]));

    // A dropped watch resumes from its last version: no relist, and the change made
    // meanwhile arrives.
    let lists_before = stand_in.lists(Kind::EndpointSlice);
    let watches_before = stand_in.watches(Kind::EndpointSlice);
    stand_in.drop_watches();
    stand_in.apply_slice(&slice("web-b", &[("10.1.1.2", Ready)]));
    reports.until(&addrs(&["10.1.1.2:8080"]));
    assert!(stand_in.watches(Kind::EndpointSlice) > watches_before);
    assert_eq!(stand_in.lists(Kind::EndpointSlice), lists_before);

    // Changes no event announced, then 410 Gone: the relist finds them; the slice deleted
    // meanwhile leaves.
    stand_in.apply_slice_unannounced(&slice("web-c", &[("10.1.2.1", Ready)]));
    stand_in.delete_slice_unannounced("prod", "web-b");
    stand_in.expire_watches();
    reports.until(&addrs(&["10.1.2.1:8080"]));
    assert!(stand_in.lists(Kind::EndpointSlice) > lists_before);
    assert!(
        reports
            .failures
            .iter()
            .any(|f| f.contains("Expired") || f.contains("410")),
        "{:?}",
        reports.failures
    );

    // The Service deleted: no endpoints, and the reason reported.
    stand_in.delete_service("prod", "web");
    reports.until(&[]);
    wait_until("the missing Service is reported", || {
        while let Ok(update) = reports.updates.try_recv() {
            if let SourceUpdate::Failed(message) = update {
                reports.failures.push(message);
            }
        }
        reports
            .failures
            .iter()
            .any(|f| f == "Service prod/web not found")
    });
    runtime.shutdown_background();
}

/// `service` with ClusterIPs, as the API server allocates them.
fn with_cluster_ips(mut service: Service, ips: &[&str]) -> Service {
    if let Some(spec) = service.spec.as_mut() {
        spec.cluster_ip = ips.first().map(|ip| (*ip).to_owned());
        spec.cluster_ips = Some(ips.iter().map(|ip| (*ip).to_owned()).collect());
    }
    service
}

#[test]
fn the_service_claims_its_cluster_ips_on_the_entry_port_before_the_endpoints() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&with_cluster_ips(
        service("prod", "web"),
        &["10.96.0.10", "fd00::10"],
    ));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    let (runtime, mut reports) = start_watch(&stand_in, "web.prod:http");
    reports.until(&addrs(&["10.1.0.1:8080"]));
    // Reported once, before the first endpoints; a slice change does not repeat it.
    assert_eq!(
        reports.addresses,
        [addrs(&["10.96.0.10:80", "[fd00::10]:80"])]
    );
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.2", Ready)]));
    reports.until(&addrs(&["10.1.0.2:8080"]));
    assert_eq!(reports.addresses.len(), 1);

    // The Service made headless: it claims nothing any more.
    stand_in.apply_service(&with_cluster_ips(service("prod", "web"), &["None"]));
    wait_until("the headless Service claims nothing", || {
        while let Ok(update) = reports.updates.try_recv() {
            if let SourceUpdate::Addresses(addresses) = update {
                reports.addresses.push(addresses);
            }
        }
        reports.addresses.len() == 2
    });
    assert_eq!(reports.addresses[1], vec![]);
    runtime.shutdown_background();

    // A named port other than the first: its own port number.
    let (runtime, mut reports) = start_watch(&stand_in, "web.prod:metrics");
    stand_in.apply_service(&with_cluster_ips(service("prod", "web"), &["10.96.0.11"]));
    reports.until(&addrs(&["10.1.0.2:9100"]));
    wait_until("the metrics port is claimed", || {
        while let Ok(update) = reports.updates.try_recv() {
            if let SourceUpdate::Addresses(addresses) = update {
                reports.addresses.push(addresses);
            }
        }
        reports.addresses.last() == Some(&addrs(&["10.96.0.11:9090"]))
    });
    runtime.shutdown_background();
}

#[test]
fn with_an_outbound_side_the_controller_maps_cluster_ips_to_their_service() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&with_cluster_ips(service("prod", "web"), &["10.96.0.10"]));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    let dir = TempDir::new("kubeconfig-outbound");
    let kubeconfig = dir.file("kubeconfig");
    crate::support::write_in_place(&kubeconfig, &stand_in.kubeconfig_yaml());
    // No route names `web`: the outbound side alone makes it watched.
    let text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"

[outbound]
listen = "127.0.0.1:4140"

[discovery]
debounce_ms = 10

[discovery.kubernetes]
kubeconfig = "{}"

[[services]]
name = "local"
endpoints = ["127.0.0.1:9"]

[[services]]
name = "web"
kubernetes = "web.prod:http"
"#,
        kubeconfig.display()
    );
    let config = match parse_config(&text, "k8s.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let (sender, snapshots) = channel::<Arc<Snapshot>>();
    let handle = Discovery::start(None, config, move |snapshot| {
        let _ = sender.send(snapshot);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let cluster_ip: SocketAddr = ([10, 96, 0, 10], 80).into();
    let snapshot = loop {
        let snapshot = snapshots
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no snapshot with the endpoints and the claim"));
        if !snapshot.services[1].endpoints.is_empty() && !snapshot.destinations.is_empty() {
            break snapshot;
        }
    };
    assert!(handle.wait_ready(PATIENCE));
    assert_eq!(snapshot.services[1].endpoints, addrs(&["10.1.0.1:8080"]));
    assert_eq!(snapshot.service_for_destination(cluster_ip), Some(1));
    assert_eq!(snapshot.destinations.len(), 1);
    handle.stop();
}

#[test]
fn a_named_port_picks_its_own_target_port() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    let (runtime, mut reports) = start_watch(&stand_in, "web.prod:metrics");
    reports.until(&addrs(&["10.1.0.1:9100"]));
    runtime.shutdown_background();
}

#[test]
fn the_controller_watches_only_routed_services_through_a_kubeconfig() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready)]));
    let dir = TempDir::new("kubeconfig");
    let kubeconfig = dir.file("kubeconfig");
    crate::support::write_in_place(&kubeconfig, &stand_in.kubeconfig_yaml());
    let text = format!(
        r#"
[discovery]
debounce_ms = 10

[discovery.kubernetes]
kubeconfig = "{}"

[[services]]
name = "web"
kubernetes = "web.prod.svc.cluster.local:http"

[[services]]
name = "unrouted"
kubernetes = ["db.other:5432"]

[[routes]]
service = "web"
"#,
        kubeconfig.display()
    );
    let config = match parse_config(&text, "k8s.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let (sender, snapshots) = channel::<Arc<Snapshot>>();
    let handle = Discovery::start(None, config, move |snapshot| {
        let _ = sender.send(snapshot);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let next = |expected: &[SocketAddr]| {
        let snapshot = snapshots
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no snapshot with {expected:?}"));
        assert_eq!(snapshot.services[0].endpoints, expected);
        assert_eq!(snapshot.services[1].endpoints, vec![]);
    };
    next(&addrs(&["10.1.0.1:8080"]));
    assert!(handle.wait_ready(PATIENCE));
    stand_in.apply_slice(&slice("web-a", &[("10.1.0.1", Ready), ("10.1.0.2", Ready)]));
    next(&addrs(&["10.1.0.1:8080", "10.1.0.2:8080"]));

    let stats = handle.stats();
    let sources: Vec<(SourceKind, String, SourceState, usize)> = stats
        .sources
        .iter()
        .map(|s| (s.kind, s.target.clone(), s.state, s.endpoints))
        .collect();
    assert_eq!(
        sources,
        vec![(
            SourceKind::Kubernetes,
            "web.prod:http".to_owned(),
            SourceState::Ok,
            2
        )]
    );
    let requests = stand_in.requests();
    assert!(!requests.is_empty());
    for request in &requests {
        assert!(request.contains("/namespaces/prod/"), "{request}");
        assert!(
            request.contains("metadata.name%3Dweb")
                || request.contains("kubernetes.io%2Fservice-name%3Dweb")
                || request.contains("/pods?") && request.contains("coremesh.io%2Fmtls%3Dtrue"),
            "{request}"
        );
    }
    handle.stop();
}
