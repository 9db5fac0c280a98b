//! The Kubernetes source: for each `kubernetes` entry, a task on the control thread's
//! runtime watches that one Service (field selector `metadata.name`) and its EndpointSlices
//! (label `kubernetes.io/service-name`) in that one namespace, and reports the endpoints
//! [`resolve_endpoints`] finds after every change, preceded by the ClusterIP:port
//! destinations [`service_addresses`] finds whenever they change (the outbound side
//! routes connections to them to this service). With `[discovery.kubernetes]
//! meshed_pods` (the default) it also watches the meshed Pods of that namespace (label
//! `coremesh.io/mtls=true`) and reports, whenever they change, the identity each meshed
//! endpoint must prove ([`endpoint_identities`]): a pod relabelled, deleted or replaced
//! changes its endpoint's TLS at the next report. Identities gained or changed are
//! reported before the endpoints, those lost after them.
//!
//! Lifecycle of a watch (all of it `kube`'s `watcher`, which this module checks in its
//! tests against an API server stand-in): list in pages of `list_page_size` (`limit`,
//! `continue`), then watch from the list's `resourceVersion` with `timeoutSeconds` =
//! `watch_timeout_secs` and `allowWatchBookmarks=true`; bookmarks move the version a
//! resumed watch starts from without carrying an object; a watch the server ends (at its
//! timeout) or the network drops is resumed from the last version seen; a `410 Gone` (the
//! version is too old, or a list page's `continue` token expired) makes it list again from
//! the start, and the relisted set replaces the old one. A slice relabelled away from the
//! Service arrives as a deletion (the server's label-selector semantics). Errors are reported (the last endpoints stay in
//! use) and retried with `kube`'s default back-off (under a second at first, growing to
//! about half a minute).
//!
//! Nothing is reported until every watch has listed once, so a start-up never publishes
//! a half-known endpoint set, nor a meshed endpoint as plaintext because its pod was not
//! listed yet (a Pod watch the API server refuses, as without the `pods` permission, keeps
//! the source failing with that reason rather than reporting meshed pods as plaintext).
//!
//! The client: `[discovery.kubernetes] kubeconfig` (and `context`) when set, else inferred
//! as `kubectl` does: `$KUBECONFIG` or `~/.kube/config`, then the in-cluster service
//! account (`KUBERNETES_SERVICE_HOST`, the token and CA under
//! `/var/run/secrets/kubernetes.io/serviceaccount/`). One client is shared by all watches.

use crate::discovery_settings::KubernetesSettings;
use crate::endpoint_slices::{resolve_endpoints, service_addresses, ObjectSet, SERVICE_NAME_LABEL};
use crate::meshed_pods::{endpoint_identities, label_selector, trim};
use crate::source_event::{SourceEvent, SourceUpdate};
use crate::targets::KubernetesTarget;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::OnceCell;

/// First wait after a failed attempt to build the client; doubles up to the maximum.
const CONNECT_RETRY_MIN: Duration = Duration::from_secs(1);
const CONNECT_RETRY_MAX: Duration = Duration::from_secs(30);

/// The client every watch of one `[discovery.kubernetes]` setting shares, built on first
/// use; a failed build is retried by the next watch that asks.
pub struct SharedClient {
    settings: KubernetesSettings,
    client: OnceCell<Client>,
}

impl SharedClient {
    pub fn new(settings: KubernetesSettings) -> Arc<SharedClient> {
        Arc::new(SharedClient {
            settings,
            client: OnceCell::new(),
        })
    }

    /// The settings the client is built from (and the watches paced by).
    pub fn settings(&self) -> &KubernetesSettings {
        &self.settings
    }

    pub async fn client(&self) -> Result<Client, String> {
        self.client
            .get_or_try_init(|| connect(&self.settings))
            .await
            .cloned()
    }
}

/// A client configured from `settings`.
pub async fn connect(settings: &KubernetesSettings) -> Result<Client, String> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|error| format!("cannot read kubeconfig {}: {error}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|error| format!("kubeconfig {}: {error}", path.display()))?
        }
        None if settings.context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|error| format!("kubeconfig: {error}"))?,
        None => kube::Config::infer()
            .await
            .map_err(|error| format!("no Kubernetes configuration found: {error}"))?,
    };
    Client::try_from(config).map_err(|error| format!("cannot build the Kubernetes client: {error}"))
}

/// The task behind one `kubernetes` entry: gets the shared client (retrying, and reporting
/// each failure), then [`watch`]es.
pub async fn run(
    target: KubernetesTarget,
    client: Arc<SharedClient>,
    events: UnboundedSender<SourceEvent>,
) {
    let mut wait = CONNECT_RETRY_MIN;
    let settings = client.settings().clone();
    let client = loop {
        match client.client().await {
            Ok(client) => break client,
            Err(message) => {
                let event = SourceEvent::Kubernetes(target.clone(), SourceUpdate::Failed(message));
                if events.send(event).is_err() {
                    return;
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(CONNECT_RETRY_MAX);
            }
        }
    };
    watch(client, &settings, target, events).await;
}

/// Watches `target`'s Service and EndpointSlices, and its namespace's meshed Pods when
/// `settings.meshed_pods`, with `client` (paced by `settings`' watch timeout and list page
/// size) and sends an update each time its endpoints or their identities change (and a
/// failure each time a watch fails), until `events` is closed or the task is aborted.
pub async fn watch(
    client: Client,
    settings: &KubernetesSettings,
    target: KubernetesTarget,
    events: UnboundedSender<SourceEvent>,
) {
    let services_api: Api<Service> = Api::namespaced(client.clone(), &target.namespace);
    let slices_api: Api<EndpointSlice> = Api::namespaced(client.clone(), &target.namespace);
    let pods_api: Api<Pod> = Api::namespaced(client, &target.namespace);
    let paced = watcher::Config::default()
        .timeout(settings.watch_timeout_secs)
        .page_size(settings.list_page_size);
    let by_name = paced
        .clone()
        .fields(&format!("metadata.name={}", target.service));
    let by_label = paced
        .clone()
        .labels(&format!("{SERVICE_NAME_LABEL}={}", target.service));
    let meshed = paced.labels(&label_selector());
    let mut service_events = watcher(services_api, by_name).default_backoff().boxed();
    let mut slice_events = watcher(slices_api, by_label).default_backoff().boxed();
    let mut pod_events = if settings.meshed_pods {
        watcher(pods_api, meshed)
            .default_backoff()
            .map_ok(|event| event.modify(trim))
            .boxed()
    } else {
        futures::stream::pending().boxed()
    };
    let mut services: ObjectSet<Service> = ObjectSet::default();
    let mut slices: ObjectSet<EndpointSlice> = ObjectSet::default();
    let mut pods: ObjectSet<Pod> = ObjectSet::default();
    let mut reported: Option<(Vec<SocketAddr>, Option<String>)> = None;
    // None claimed until the Service says otherwise.
    let mut reported_addresses: Vec<SocketAddr> = Vec::new();
    // Every endpoint plaintext until the pods say otherwise.
    let mut reported_identities: BTreeMap<SocketAddr, String> = BTreeMap::new();
    // A watch failed since the last report: report again at the next event even if the
    // endpoints did not change, so the source is seen to have recovered.
    let mut failed = false;
    let send = |update: SourceUpdate| {
        events
            .send(SourceEvent::Kubernetes(target.clone(), update))
            .is_ok()
    };
    loop {
        let changed = tokio::select! {
            event = service_events.next() => match event {
                Some(Ok(event)) => services.apply(event) || failed,
                Some(Err(error)) => {
                    let message = format!("watch of Service {target}: {error}");
                    if !send(SourceUpdate::Failed(message)) {
                        return;
                    }
                    failed = true;
                    false
                }
                None => return,
            },
            event = slice_events.next() => match event {
                Some(Ok(event)) => slices.apply(event) || failed,
                Some(Err(error)) => {
                    let message = format!("watch of EndpointSlices of {target}: {error}");
                    if !send(SourceUpdate::Failed(message)) {
                        return;
                    }
                    failed = true;
                    false
                }
                None => return,
            },
            event = pod_events.next() => match event {
                Some(Ok(event)) => pods.apply(event) || failed,
                Some(Err(error)) => {
                    let message = format!("watch of meshed Pods in {}: {error}", target.namespace);
                    if !send(SourceUpdate::Failed(message)) {
                        return;
                    }
                    failed = true;
                    false
                }
                None => return,
            },
        };
        let pods_listed = !settings.meshed_pods || pods.listed();
        if !changed || !services.listed() || !slices.listed() || !pods_listed {
            continue;
        }
        let addresses = service_addresses(&target, services.get(&target.service));
        if addresses != reported_addresses {
            if !send(SourceUpdate::Addresses(addresses.clone())) {
                return;
            }
            reported_addresses = addresses;
        }
        let resolution =
            resolve_endpoints(&target, services.get(&target.service), slices.objects());
        let identities = endpoint_identities(&resolution, &pods, &settings.trust_domain);
        // Identities gained or changed go before the endpoints, those lost after them, so
        // that the controller (which may publish between two updates) never sees an
        // endpoint meshed before and after this change as plaintext.
        let mut gained = reported_identities.clone();
        gained.extend(identities.clone());
        if gained != reported_identities && !send(SourceUpdate::Identities(gained.clone())) {
            return;
        }
        let now = (resolution.endpoints, resolution.problem);
        if reported.as_ref() != Some(&now) || failed {
            failed = false;
            if !send(SourceUpdate::Endpoints(now.0.clone())) {
                return;
            }
            if let Some(problem) = &now.1 {
                if !send(SourceUpdate::Failed(problem.clone())) {
                    return;
                }
            }
            reported = Some(now);
        }
        if identities != gained && !send(SourceUpdate::Identities(identities.clone())) {
            return;
        }
        reported_identities = identities;
    }
}
