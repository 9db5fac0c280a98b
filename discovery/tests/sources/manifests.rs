//! Every manifest in `deploy/kubernetes/` deserializes into its `k8s-openapi` type without
//! losing a field (so a misspelled key fails), the RBAC grants what the Kubernetes source
//! needs, the Deployment runs as that ServiceAccount, and the ConfigMap's `mesh.toml` is a
//! valid configuration.

use coremesh_discovery::{parse_config, KubernetesTarget};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn manifest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Every YAML document of every manifest, with the file it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest_dir())
        .unwrap_or_else(|e| panic!("deploy/kubernetes: {e}"))
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let name = file
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{name}: {e}"));
        let values: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        documents.extend(values.into_iter().map(|value| (name.clone(), value)));
    }
    documents
}

/// `document` as a `T`, checked to serialize back to exactly the document: a key the type
/// does not know would be dropped and make the two differ.
fn typed<T: DeserializeOwned + Serialize>(file: &str, document: &Value) -> T {
    let object: T = serde_json::from_value(document.clone())
        .unwrap_or_else(|e| panic!("{file}: not a valid {}: {e}", kind(document)));
    let back = serde_json::to_value(&object).unwrap_or_else(|e| panic!("{file}: {e}"));
    assert_eq!(
        &back,
        document,
        "{file}: {} loses or changes fields",
        kind(document)
    );
    object
}

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap_or("(no kind)")
}

/// The verbs each rule grants on `(api group, resource)`.
fn grants(rules: &[PolicyRule]) -> BTreeMap<(String, String), Vec<String>> {
    let mut grants = BTreeMap::new();
    for rule in rules {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                grants.insert((group.clone(), resource.clone()), rule.verbs.clone());
            }
        }
    }
    grants
}

fn needed_grants() -> BTreeMap<(String, String), Vec<String>> {
    let read = vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()];
    // The meshed-pod watch lists and watches; it never gets one pod.
    let watch = vec!["list".to_owned(), "watch".to_owned()];
    BTreeMap::from([
        ((String::new(), "services".to_owned()), read.clone()),
        ((String::new(), "pods".to_owned()), watch),
        (
            ("discovery.k8s.io".to_owned(), "endpointslices".to_owned()),
            read,
        ),
    ])
}

#[test]
fn every_manifest_is_its_kubernetes_type_and_they_fit_together() {
    let mut kinds = Vec::new();
    let mut service_accounts = Vec::new();
    let mut deployments = Vec::new();
    let mut bound_subjects = Vec::new();
    let mut config_maps = Vec::new();
    for (file, document) in documents() {
        kinds.push(kind(&document).to_owned());
        match kind(&document) {
            "ServiceAccount" => {
                let account: ServiceAccount = typed(&file, &document);
                service_accounts.push(account.metadata.name.unwrap_or_default());
            }
            "Role" => {
                let role: Role = typed(&file, &document);
                assert_eq!(
                    grants(role.rules.as_deref().unwrap_or_default()),
                    needed_grants()
                );
            }
            "ClusterRole" => {
                let role: ClusterRole = typed(&file, &document);
                assert_eq!(
                    grants(role.rules.as_deref().unwrap_or_default()),
                    needed_grants()
                );
            }
            "RoleBinding" => {
                let binding: RoleBinding = typed(&file, &document);
                assert_eq!(binding.role_ref.kind, "Role");
                assert_eq!(binding.role_ref.name, "coremesh-discovery");
                bound_subjects.extend(binding.subjects.unwrap_or_default());
            }
            "ClusterRoleBinding" => {
                let binding: ClusterRoleBinding = typed(&file, &document);
                assert_eq!(binding.role_ref.kind, "ClusterRole");
                assert_eq!(binding.role_ref.name, "coremesh-discovery");
                bound_subjects.extend(binding.subjects.unwrap_or_default());
            }
            "ConfigMap" => config_maps.push(typed::<ConfigMap>(&file, &document)),
            "Deployment" => deployments.push(typed::<Deployment>(&file, &document)),
            other => panic!("{file}: unexpected kind {other}"),
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "Role",
            "RoleBinding",
            "ServiceAccount"
        ]
    );
    assert_eq!(service_accounts, ["coremesh"]);
    for subject in &bound_subjects {
        assert_eq!(subject.kind, "ServiceAccount");
        assert_eq!(subject.name, "coremesh");
        assert_eq!(subject.namespace.as_deref(), Some("default"));
    }

    // The Deployment runs as that account, with the sidecar mounting the ConfigMap.
    let [deployment] = deployments.as_slice() else {
        panic!("one Deployment expected");
    };
    let pod = deployment
        .spec
        .template
        .spec
        .as_ref()
        .unwrap_or_else(|| panic!("the Deployment has no pod spec"));
    assert_eq!(pod.service_account_name.as_deref(), Some("coremesh"));
    let sidecar = pod
        .init_containers
        .iter()
        .flatten()
        .find(|container| container.name == "coremesh")
        .unwrap_or_else(|| panic!("no coremesh sidecar"));
    assert_eq!(sidecar.restart_policy.as_deref(), Some("Always"));
    assert_eq!(
        sidecar.args.as_deref(),
        Some(
            &[
                "run".to_owned(),
                "--config".to_owned(),
                "/etc/coremesh/mesh.toml".to_owned()
            ][..]
        )
    );
    let volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|volume| volume.name == "coremesh-config")
        .and_then(|volume| volume.config_map.as_ref())
        .unwrap_or_else(|| panic!("no coremesh-config volume"));

    // The mounted configuration is valid for coremesh.
    let [config_map] = config_maps.as_slice() else {
        panic!("one ConfigMap expected");
    };
    assert_eq!(
        config_map.metadata.name.as_deref(),
        Some(volume.name.as_str())
    );
    let text = config_map
        .data
        .as_ref()
        .and_then(|data| data.get("mesh.toml"))
        .unwrap_or_else(|| panic!("the ConfigMap has no mesh.toml"));
    let config = match parse_config(text, "configmap.yaml mesh.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let entries: Vec<String> = config
        .services
        .iter()
        .flat_map(|service| service.kubernetes.iter())
        .filter_map(|entry| KubernetesTarget::parse(entry).ok())
        .map(|target| target.to_string())
        .collect();
    assert_eq!(
        entries,
        ["payments.default:http", "payments-canary.default:http"]
    );
}
