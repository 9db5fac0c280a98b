//! The `[discovery]` section: how the control thread watches the configuration file,
//! resolves DNS entries and talks to Kubernetes, with every default named here.
//!
//! Defaults (see `docs/configuration.md`):
//! - `discovery.debounce_ms` = 100: changes arriving within this window make one snapshot.
//! - `discovery.first_wait_ms` = 10000: `/ready` waits at most this for the first answers.
//! - `discovery.file.poll_interval_ms` = 500.
//! - `discovery.dns.servers` = none (the system resolver, `/etc/resolv.conf`),
//!   `min_refresh_ms` = 1000, `max_refresh_ms` = 30000, `timeout_ms` = 2000.
//! - `discovery.kubernetes.kubeconfig` = none (infer: `$KUBECONFIG`, `~/.kube/config`,
//!   then the in-cluster service account), `context` = none (the current context),
//!   `watch_timeout_secs` = 290, `list_page_size` = 500, `meshed_pods` = true,
//!   `trust_domain` = `cluster.local`.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

/// Changes arriving within this window (file rewrites, DNS answers, EndpointSlice events)
/// are folded into one snapshot: a rolling deployment touches many slices at once, and
/// each core would otherwise switch snapshots once per event.
pub const DEFAULT_DEBOUNCE_MS: u64 = 100;
/// How long `coremesh run` waits for every source's first answer (DNS, EndpointSlices)
/// before `/ready` says yes anyway (services still without endpoints answer 503 until
/// they arrive): long enough for a slow API server, short enough that a pod whose
/// discovery is broken still starts and says why.
pub const DEFAULT_FIRST_WAIT_MS: u64 = 10_000;
/// How often the configuration file is checked: cheap (one small read), and quick enough
/// that an edit is live within a second.
pub const DEFAULT_FILE_POLL_INTERVAL_MS: u64 = 500;
/// Shortest time between two lookups of one DNS name, whatever its TTL says (TTL 0
/// records would otherwise make us query in a loop).
pub const DEFAULT_DNS_MIN_REFRESH_MS: u64 = 1_000;
/// Longest time between two lookups of one DNS name: long TTLs are not trusted further,
/// so a moved service is followed within half a minute.
pub const DEFAULT_DNS_MAX_REFRESH_MS: u64 = 30_000;
/// One DNS query (per attempt; two attempts per server).
pub const DEFAULT_DNS_TIMEOUT_MS: u64 = 2_000;

/// How long the API server keeps one watch open (`timeoutSeconds`) before ending it; the
/// watch is then resumed from the last version seen. `kube`'s and client-go's choice: under
/// the API server's own minimum request timeout (1800 s), so the client decides when, and
/// often enough that a silently dead connection is noticed (after this plus 5 s).
pub const DEFAULT_KUBERNETES_WATCH_TIMEOUT_SECS: u32 = 290;
/// Objects per page of a list (`limit`): client-go's page size. Few services have more
/// EndpointSlices than this, and a page bounds what one answer holds in memory.
pub const DEFAULT_KUBERNETES_LIST_PAGE_SIZE: u32 = 500;
/// Whether the Kubernetes source learns from Pods which endpoints run a sidecar that
/// terminates mutual TLS (and the identity each must prove): on, so that a mesh whose
/// sidecars hold identities encrypts between them without naming each service's identity;
/// off needs no `pods` permission, and every Kubernetes endpoint is then plaintext unless its
/// service has `tls`.
pub const DEFAULT_KUBERNETES_MESHED_PODS: bool = true;
/// The trust domain of the identities the Kubernetes source derives from a meshed pod's
/// namespace and service account (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`): Kubernetes'
/// default cluster domain, which is what SPIRE's and Linkerd's Kubernetes set-ups use unless
/// told otherwise. It must be the trust domain the pods' certificates are issued in.
pub const DEFAULT_KUBERNETES_TRUST_DOMAIN: &str = "cluster.local";
/// The label `coremesh inject` puts on a pod template whose sidecar has an `[identity]`
/// (it terminates mutual TLS), with the value [`MTLS_POD_LABEL_VALUE`]; the Kubernetes
/// source watches Pods by it (`meshed_pods`). A label, not an annotation, so that the
/// watch selects those pods on the server and never sees the others.
pub const MTLS_POD_LABEL: &str = "coremesh.io/mtls";
/// The value of [`MTLS_POD_LABEL`] on a meshed pod.
pub const MTLS_POD_LABEL_VALUE: &str = "true";

/// `[discovery]`. Defaults: see the `DEFAULT_*` constants above.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DiscoverySettings {
    #[serde(default = "d_debounce_ms")]
    pub debounce_ms: u64,
    /// `/ready` waits at most this long for every source's first answer.
    #[serde(default = "d_first_wait_ms")]
    pub first_wait_ms: u64,
    #[serde(default)]
    pub file: FileSettings,
    #[serde(default)]
    pub dns: DnsSettings,
    #[serde(default)]
    pub kubernetes: KubernetesSettings,
}

impl Default for DiscoverySettings {
    fn default() -> Self {
        DiscoverySettings {
            debounce_ms: d_debounce_ms(),
            first_wait_ms: d_first_wait_ms(),
            file: FileSettings::default(),
            dns: DnsSettings::default(),
            kubernetes: KubernetesSettings::default(),
        }
    }
}

impl DiscoverySettings {
    /// Whether every field has its default (then the section is not written out).
    pub fn is_default(&self) -> bool {
        *self == DiscoverySettings::default()
    }
}

/// `[discovery.file]`: the configuration file watch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    #[serde(default = "d_poll_interval_ms")]
    pub poll_interval_ms: u64,
}

impl Default for FileSettings {
    fn default() -> Self {
        FileSettings {
            poll_interval_ms: d_poll_interval_ms(),
        }
    }
}

/// `[discovery.dns]`: the resolver used for services' `dns` entries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DnsSettings {
    /// Name servers, `ip:port`; empty = the system's (`/etc/resolv.conf`, with its search
    /// domains and `ndots`).
    #[serde(default)]
    pub servers: Vec<SocketAddr>,
    #[serde(default = "d_min_refresh_ms")]
    pub min_refresh_ms: u64,
    #[serde(default = "d_max_refresh_ms")]
    pub max_refresh_ms: u64,
    #[serde(default = "d_dns_timeout_ms")]
    pub timeout_ms: u64,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            servers: Vec::new(),
            min_refresh_ms: d_min_refresh_ms(),
            max_refresh_ms: d_max_refresh_ms(),
            timeout_ms: d_dns_timeout_ms(),
        }
    }
}

/// `[discovery.kubernetes]`: how to reach the API server for services' `kubernetes`
/// entries, and how its lists and watches are paced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// A kubeconfig file; none = infer (`$KUBECONFIG`, `~/.kube/config`, then in-cluster).
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; none = its current context.
    #[serde(default)]
    pub context: Option<String>,
    /// `timeoutSeconds` of each watch (1 to 3600).
    #[serde(default = "d_watch_timeout_secs")]
    pub watch_timeout_secs: u32,
    /// `limit` of each list page (1 to 10000).
    #[serde(default = "d_list_page_size")]
    pub list_page_size: u32,
    /// Watch the Pods labelled [`MTLS_POD_LABEL`] in each watched Service's namespace,
    /// and reach the endpoints they back over mutual TLS, expecting the pod's identity.
    #[serde(default = "d_meshed_pods")]
    pub meshed_pods: bool,
    /// The trust domain of those identities.
    #[serde(default = "d_trust_domain")]
    pub trust_domain: String,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings {
            kubeconfig: None,
            context: None,
            watch_timeout_secs: d_watch_timeout_secs(),
            list_page_size: d_list_page_size(),
            meshed_pods: d_meshed_pods(),
            trust_domain: d_trust_domain(),
        }
    }
}

fn d_first_wait_ms() -> u64 {
    DEFAULT_FIRST_WAIT_MS
}
fn d_debounce_ms() -> u64 {
    DEFAULT_DEBOUNCE_MS
}
fn d_poll_interval_ms() -> u64 {
    DEFAULT_FILE_POLL_INTERVAL_MS
}
fn d_min_refresh_ms() -> u64 {
    DEFAULT_DNS_MIN_REFRESH_MS
}
fn d_max_refresh_ms() -> u64 {
    DEFAULT_DNS_MAX_REFRESH_MS
}
fn d_dns_timeout_ms() -> u64 {
    DEFAULT_DNS_TIMEOUT_MS
}
fn d_watch_timeout_secs() -> u32 {
    DEFAULT_KUBERNETES_WATCH_TIMEOUT_SECS
}
fn d_list_page_size() -> u32 {
    DEFAULT_KUBERNETES_LIST_PAGE_SIZE
}
fn d_meshed_pods() -> bool {
    DEFAULT_KUBERNETES_MESHED_PODS
}
fn d_trust_domain() -> String {
    DEFAULT_KUBERNETES_TRUST_DOMAIN.to_owned()
}
