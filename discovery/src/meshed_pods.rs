//! Which endpoints of a Kubernetes Service are meshed, and the identity each must prove.
//!
//! - **Meshed.** The Pod behind an endpoint (its EndpointSlice `targetRef`) carries the label
//!   `coremesh.io/mtls=true` ([`MTLS_POD_LABEL`]), which `coremesh inject` writes on a pod
//!   template whose sidecar has an `[identity]`: that sidecar terminates mutual TLS. A pod
//!   without the label (not injected, injected without an identity, or an unknown pod) is
//!   reached in plaintext.
//! - **Identity.** `spiffe://<trust domain>/ns/<pod namespace>/sa/<pod's
//!   serviceAccountName>` (`default` when the pod names none), as Linkerd's destination
//!   service derives it from the pod's service account; the trust domain is
//!   `[discovery.kubernetes] trust_domain`.
//!
//! Pure: the watch task keeps the meshed Pods of the namespace (an [`ObjectSet`], watched by
//! [`label_selector`] and [`trim`]med) and calls [`endpoint_identities`] after each change.

use crate::discovery_settings::{MTLS_POD_LABEL, MTLS_POD_LABEL_VALUE};
use crate::endpoint_slices::{ObjectSet, Resolution};
use crate::SpiffeId;
use k8s_openapi::api::core::v1::{Pod, PodSpec};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The service account of a pod that names none (the API server fills this in on
/// creation; a pod read without it is taken as running under it).
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The label selector of the Pod watch: meshed pods only.
pub fn label_selector() -> String {
    format!("{MTLS_POD_LABEL}={MTLS_POD_LABEL_VALUE}")
}

/// The SPIFFE ID a meshed `pod` must prove; `None` when it is not meshed, or when its
/// namespace and service account do not make a valid SPIFFE ID (the API server's name
/// rules make that impossible; such a pod is left plaintext rather than guessed at).
pub fn pod_identity(pod: &Pod, trust_domain: &str) -> Option<String> {
    if pod.labels().get(MTLS_POD_LABEL).map(String::as_str) != Some(MTLS_POD_LABEL_VALUE) {
        return None;
    }
    let namespace = pod
        .metadata
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())?;
    let account = pod
        .spec
        .as_ref()
        .and_then(|spec| spec.service_account_name.as_deref())
        .filter(|account| !account.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT);
    // One path segment each: a `/` would make another path (`…/sa/a/b`).
    if namespace.contains('/') || account.contains('/') {
        return None;
    }
    let id = format!("spiffe://{trust_domain}/ns/{namespace}/sa/{account}");
    SpiffeId::parse(&id).ok().map(|_| id)
}

/// The endpoints of `resolution` whose pod is in `pods` and meshed, each with its
/// identity.
pub fn endpoint_identities(
    resolution: &Resolution,
    pods: &ObjectSet<Pod>,
    trust_domain: &str,
) -> BTreeMap<SocketAddr, String> {
    resolution
        .pods
        .iter()
        .filter_map(|(address, name)| {
            let identity = pod_identity(pods.get(name)?, trust_domain)?;
            Some((*address, identity))
        })
        .collect()
}

/// Drops what [`pod_identity`] does not read (containers, status, annotations, managed
/// fields), so that the watched pods of a busy namespace stay small in memory.
pub fn trim(pod: &mut Pod) {
    let account = pod.spec.take().and_then(|spec| spec.service_account_name);
    pod.spec = Some(PodSpec {
        service_account_name: account,
        ..PodSpec::default()
    });
    pod.status = None;
    pod.metadata.annotations = None;
    pod.metadata.managed_fields = None;
    pod.metadata.owner_references = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::runtime::watcher;

    const TD: &str = "cluster.local";

    fn pod(name: &str, label: Option<&str>, account: Option<&str>) -> Pod {
        let labels = label.map(|value| {
            BTreeMap::from([
                ("app".to_owned(), "api".to_owned()),
                (MTLS_POD_LABEL.to_owned(), value.to_owned()),
            ])
        });
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("prod".into()),
                labels,
                annotations: Some(BTreeMap::from([("a".to_owned(), "b".to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                service_account_name: account.map(str::to_owned),
                containers: vec![Container {
                    name: "app".into(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus::default()),
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_labelled_pod_proves_its_service_account() {
        assert_eq!(
            pod_identity(&pod("a", Some("true"), Some("api")), TD).as_deref(),
            Some("spiffe://cluster.local/ns/prod/sa/api")
        );
        assert_eq!(
            pod_identity(&pod("a", Some("true"), None), "td").as_deref(),
            Some("spiffe://td/ns/prod/sa/default")
        );
        assert_eq!(pod_identity(&pod("a", None, Some("api")), TD), None);
        assert_eq!(
            pod_identity(&pod("a", Some("false"), Some("api")), TD),
            None
        );
        let mut no_namespace = pod("a", Some("true"), Some("api"));
        no_namespace.metadata.namespace = None;
        assert_eq!(pod_identity(&no_namespace, TD), None);
        // Not a valid SPIFFE path segment: left plaintext, not guessed at.
        assert_eq!(pod_identity(&pod("a", Some("true"), Some("a/b")), TD), None);
        assert_eq!(pod_identity(&pod("a", Some("true"), Some("a b")), TD), None);
    }

    #[test]
    fn endpoints_take_the_identity_of_their_meshed_pod() {
        let mut pods = ObjectSet::default();
        pods.apply(watcher::Event::Init);
        for pod in [
            pod("api-1", Some("true"), Some("api")),
            pod("api-2", Some("true"), Some("admin")),
            pod("plain", None, Some("api")),
        ] {
            pods.apply(watcher::Event::InitApply(pod));
        }
        pods.apply(watcher::Event::InitDone);
        let resolution = Resolution {
            endpoints: vec![
                addr("10.0.0.1:80"),
                addr("10.0.0.2:80"),
                addr("10.0.0.3:80"),
                addr("10.0.0.4:80"),
                addr("10.0.0.5:80"),
            ],
            problem: None,
            pods: BTreeMap::from([
                (addr("10.0.0.1:80"), "api-1".to_owned()),
                (addr("10.0.0.2:80"), "api-2".to_owned()),
                (addr("10.0.0.3:80"), "plain".to_owned()),
                (addr("10.0.0.4:80"), "unknown".to_owned()),
            ]),
        };
        assert_eq!(
            endpoint_identities(&resolution, &pods, "td"),
            BTreeMap::from([
                (addr("10.0.0.1:80"), "spiffe://td/ns/prod/sa/api".to_owned()),
                (
                    addr("10.0.0.2:80"),
                    "spiffe://td/ns/prod/sa/admin".to_owned()
                ),
            ])
        );
    }

    #[test]
    fn trimming_keeps_what_the_identity_needs() {
        let mut trimmed = pod("api-1", Some("true"), Some("api"));
        trim(&mut trimmed);
        assert_eq!(trimmed.status, None);
        assert_eq!(trimmed.metadata.annotations, None);
        assert_eq!(
            trimmed.spec.as_ref().map(|spec| spec.containers.len()),
            Some(0)
        );
        assert_eq!(trimmed.name_any(), "api-1");
        assert_eq!(
            pod_identity(&trimmed, TD).as_deref(),
            Some("spiffe://cluster.local/ns/prod/sa/api")
        );
        assert_eq!(label_selector(), "coremesh.io/mtls=true");
    }
}
