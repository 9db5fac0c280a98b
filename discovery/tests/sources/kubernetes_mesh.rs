//! Meshed pods against the API server stand-in: the Kubernetes source watches the Pods
//! labelled `coremesh.io/mtls=true` in the Service's namespace and reports the identity
//! each meshed endpoint must prove (`spiffe://<trust domain>/ns/<ns>/sa/<account>`), gained
//! ones before the endpoints and lost ones after them; a pod relabelled, given another
//! service account, or deleted changes the report; a pod without the label stays
//! plaintext; with `meshed_pods = false` no pod is watched. Through the controller, the
//! identities reach the snapshot, and a service's own `tls` wins over them.

use crate::kubernetes::{addrs, service, slice, start_watch_with, Condition, Reports};
use crate::support::api_server_stand_in::{ApiServerStandIn, Kind};
use crate::support::{wait_until, TempDir, PATIENCE};
use coremesh_discovery::discovery_settings::MTLS_POD_LABEL;
use coremesh_discovery::source_event::SourceUpdate;
use coremesh_discovery::{parse_config, Discovery, KubernetesSettings, Snapshot};
use k8s_openapi::api::core::v1::{ObjectReference, Pod, PodSpec};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc::channel;
use std::sync::Arc;

use Condition::Ready;

/// A pod `name` in `prod` running as `account`, labelled meshed when `meshed`.
fn pod(name: &str, meshed: bool, account: &str) -> Pod {
    let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
    if meshed {
        labels.insert(MTLS_POD_LABEL.to_owned(), "true".to_owned());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("prod".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(account.into()),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// [`slice`] whose endpoints name their pods: `(address, pod)`.
fn slice_of_pods(name: &str, endpoints: &[(&str, &str)]) -> EndpointSlice {
    let rows: Vec<(&str, Condition)> = endpoints.iter().map(|(a, _)| (*a, Ready)).collect();
    let mut built = slice(name, &rows);
    for (endpoint, (_, pod)) in built.endpoints.iter_mut().flatten().zip(endpoints) {
        endpoint.target_ref = Some(ObjectReference {
            kind: Some("Pod".into()),
            name: Some((*pod).into()),
            namespace: Some("prod".into()),
            ..ObjectReference::default()
        });
    }
    built
}

fn identities(list: &[(&str, &str)]) -> BTreeMap<SocketAddr, String> {
    list.iter()
        .map(|(address, account)| {
            let address = addrs(&[*address])[0];
            (address, format!("spiffe://td/ns/prod/sa/{account}"))
        })
        .collect()
}

impl Reports {
    /// Waits for an identity report equal to `expected`; the endpoint sets reported
    /// meanwhile.
    fn until_identities(
        &mut self,
        expected: &BTreeMap<SocketAddr, String>,
    ) -> Vec<Vec<SocketAddr>> {
        let mut seen = Vec::new();
        loop {
            match self.updates.recv_timeout(PATIENCE) {
                Ok(SourceUpdate::Identities(identities)) => {
                    let done = identities == *expected;
                    self.identities.push(identities);
                    if done {
                        return seen;
                    }
                }
                Ok(SourceUpdate::Endpoints(endpoints)) => seen.push(endpoints),
                Ok(SourceUpdate::Failed(message)) => self.failures.push(message),
                Ok(SourceUpdate::Addresses(addresses)) => self.addresses.push(addresses),
                Err(_) => panic!(
                    "never reported identities {expected:?}; reported {:?}",
                    self.identities
                ),
            }
        }
    }
}

fn trust_domain_td() -> KubernetesSettings {
    KubernetesSettings {
        trust_domain: "td".into(),
        ..KubernetesSettings::default()
    }
}

#[test]
fn meshed_pods_give_their_endpoints_an_identity_and_each_change_is_reported() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_pod(&pod("web-1", true, "web"));
    stand_in.apply_pod(&pod("web-2", false, "web"));
    stand_in.apply_slice(&slice_of_pods(
        "web-a",
        &[
            ("10.1.0.1", "web-1"),
            ("10.1.0.2", "web-2"),
            ("10.1.0.3", "web-3"), // a pod the watch has not seen
        ],
    ));
    let (runtime, mut reports) = start_watch_with(&stand_in, "web.prod:http", trust_domain_td());

    // Only the meshed pod's endpoint, with its service account, reported before the
    // endpoints themselves.
    let all = addrs(&["10.1.0.1:8080", "10.1.0.2:8080", "10.1.0.3:8080"]);
    reports.until(&all);
    assert_eq!(
        reports.identities,
        [identities(&[("10.1.0.1:8080", "web")])]
    );

    // The second pod meshed (re-created from an injected template, under another service
    // account): its endpoint joins; the endpoints themselves did not change.
    stand_in.apply_pod(&pod("web-2", true, "admin"));
    let endpoints = reports.until_identities(&identities(&[
        ("10.1.0.1:8080", "web"),
        ("10.1.0.2:8080", "admin"),
    ]));
    assert_eq!(endpoints, Vec::<Vec<SocketAddr>>::new());

    // The first one relabelled out of the mesh: the watch sees it leave (label-selector
    // semantics) and its endpoint is plaintext again.
    stand_in.apply_pod(&pod("web-1", false, "web"));
    reports.until_identities(&identities(&[("10.1.0.2:8080", "admin")]));

    // The slice drops the meshed endpoint: the endpoints are reported without it before
    // the identities are (a snapshot between the two never has it in plaintext).
    stand_in.apply_slice(&slice_of_pods(
        "web-a",
        &[("10.1.0.1", "web-1"), ("10.1.0.3", "web-3")],
    ));
    let next = |reports: &Reports| {
        reports
            .updates
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no update"))
    };
    assert_eq!(
        next(&reports),
        SourceUpdate::Endpoints(addrs(&["10.1.0.1:8080", "10.1.0.3:8080"]))
    );
    assert_eq!(next(&reports), SourceUpdate::Identities(BTreeMap::new()));
    // And back: its identity before the endpoint.
    stand_in.apply_slice(&slice_of_pods(
        "web-a",
        &[
            ("10.1.0.1", "web-1"),
            ("10.1.0.2", "web-2"),
            ("10.1.0.3", "web-3"),
        ],
    ));
    assert_eq!(
        next(&reports),
        SourceUpdate::Identities(identities(&[("10.1.0.2:8080", "admin")]))
    );
    assert_eq!(next(&reports), SourceUpdate::Endpoints(all.clone()));

    // The second pod deleted while the slice still lists its address: plaintext.
    stand_in.delete_pod("prod", "web-2");
    let endpoints = reports.until_identities(&BTreeMap::new());
    assert_eq!(endpoints, Vec::<Vec<SocketAddr>>::new());
    assert_eq!(reports.identities.len(), 4, "{:?}", reports.identities);

    // The pod watch asks only for meshed pods, in the Service's namespace.
    let pod_requests = stand_in.received(Kind::Pod);
    assert!(pod_requests.iter().any(|r| r.watch), "{pod_requests:?}");
    for request in &pod_requests {
        assert_eq!(
            request.param("labelSelector"),
            Some("coremesh.io/mtls=true"),
            "{request:?}"
        );
        assert_eq!(request.status, 200);
    }
    assert_eq!(stand_in.lists(Kind::Pod), 1);
    assert_eq!(reports.failures, Vec::<String>::new());
    runtime.shutdown_background();
}

#[test]
fn a_pod_replaced_under_another_service_account_changes_the_expected_identity() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_pod(&pod("web-1", true, "web"));
    stand_in.apply_slice(&slice_of_pods("web-a", &[("10.1.0.1", "web-1")]));
    let (runtime, mut reports) = start_watch_with(&stand_in, "web.prod:80", trust_domain_td());
    reports.until(&addrs(&["10.1.0.1:8080"]));
    assert_eq!(
        reports.identities,
        [identities(&[("10.1.0.1:8080", "web")])]
    );

    // A rollout: the new pod (another service account) takes the same address, then the
    // slice names it.
    stand_in.delete_pod("prod", "web-1");
    stand_in.apply_pod(&pod("web-2", true, "web-v2"));
    stand_in.apply_slice(&slice_of_pods("web-a", &[("10.1.0.1", "web-2")]));
    reports.until_identities(&identities(&[("10.1.0.1:8080", "web-v2")]));
    runtime.shutdown_background();
}

#[test]
fn without_meshed_pods_no_pod_is_watched_and_every_endpoint_is_plaintext() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_pod(&pod("web-1", true, "web"));
    stand_in.apply_slice(&slice_of_pods("web-a", &[("10.1.0.1", "web-1")]));
    let settings = KubernetesSettings {
        meshed_pods: false,
        ..trust_domain_td()
    };
    let (runtime, mut reports) = start_watch_with(&stand_in, "web.prod:80", settings);
    reports.until(&addrs(&["10.1.0.1:8080"]));
    stand_in.apply_slice(&slice_of_pods(
        "web-a",
        &[("10.1.0.1", "web-1"), ("10.1.0.2", "web-1")],
    ));
    reports.until(&addrs(&["10.1.0.1:8080", "10.1.0.2:8080"]));
    assert_eq!(
        reports.identities,
        Vec::<BTreeMap<SocketAddr, String>>::new()
    );
    assert_eq!(stand_in.received(Kind::Pod), vec![]);
    runtime.shutdown_background();
}

#[test]
fn the_controller_puts_the_identities_in_the_snapshot_and_a_services_tls_wins() {
    let stand_in = ApiServerStandIn::start();
    stand_in.apply_service(&service("prod", "web"));
    stand_in.apply_pod(&pod("web-1", true, "web"));
    stand_in.apply_pod(&pod("web-2", false, "web"));
    stand_in.apply_slice(&slice_of_pods(
        "web-a",
        &[("10.1.0.1", "web-1"), ("10.1.0.2", "web-2")],
    ));
    let dir = TempDir::new("kubeconfig-mesh");
    let kubeconfig = dir.file("kubeconfig");
    crate::support::write_in_place(&kubeconfig, &stand_in.kubeconfig_yaml());
    let text = format!(
        r#"
[discovery]
debounce_ms = 10

[discovery.kubernetes]
kubeconfig = "{}"
trust_domain = "td"

# Needed by a service's `tls`; discovery does not read the files.
[identity]
cert = "/run/svid.pem"
key = "/run/svid.key"
trust_anchors = "/run/bundle.pem"

[[services]]
name = "web"
kubernetes = "web.prod:http"

[[services]]
name = "web-pinned"
kubernetes = "web.prod:http"
tls = {{ identity = "spiffe://td/ns/prod/sa/pinned" }}

[[routes]]
path_prefix = "/pinned"
service = "web-pinned"

[[routes]]
service = "web"
"#,
        kubeconfig.display()
    );
    let config = match parse_config(&text, "mesh.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let (sender, snapshots) = channel::<Arc<Snapshot>>();
    let handle = Discovery::start(None, config, move |snapshot| {
        let _ = sender.send(snapshot);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let next = || {
        snapshots
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no snapshot"))
    };
    let first = next();
    let both = addrs(&["10.1.0.1:8080", "10.1.0.2:8080"]);
    assert_eq!(first.services[0].endpoints, both);
    assert_eq!(
        first.services[0].endpoint_identities,
        identities(&[("10.1.0.1:8080", "web")])
    );
    assert_eq!(first.services[1].endpoints, both);
    assert!(first.services[1].endpoint_identities.is_empty());
    assert!(handle.wait_ready(PATIENCE));

    // Only the pod changes: a new snapshot all the same.
    stand_in.apply_pod(&pod("web-2", true, "web"));
    let second = next();
    assert_eq!(second.services[0].endpoints, both);
    assert_eq!(
        second.services[0].endpoint_identities,
        identities(&[("10.1.0.1:8080", "web"), ("10.1.0.2:8080", "web")])
    );
    assert!(second.services[1].endpoint_identities.is_empty());
    wait_until("the controller counts both snapshots", || {
        handle.stats().snapshots_published == 2
    });
    handle.stop();
}
