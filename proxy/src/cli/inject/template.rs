//! Adding the sidecar to one pod template (or Pod) and taking it out again, exactly.
//!
//! `inject` puts `coremesh-init` and `coremesh-proxy` first among the init containers (so
//! the application's own init containers already run meshed), appends the iptables lock
//! volume, and marks the template with the annotation `coremesh.io/injected`. When the
//! sidecar's configuration has `[identity]` it also labels the template
//! `coremesh.io/mtls: "true"`: other proxies' Kubernetes discovery watches pods by that
//! label and reaches them over mutual TLS, expecting the identity of their service account.
//! Keys it had to create (`metadata`, `annotations`, `labels`, `initContainers`,
//! `volumes`) are listed in `coremesh.io/injected-created`, so that `uninject` removes
//! them again and the result equals the original. A template already injected is injected anew (the old sidecar
//! out, the new one in): injecting twice gives what injecting once gives, and a newer
//! image or flag replaces the old one.
//!
//! The ports of the application's `tcpSocket` probes are added to the init container's
//! `--skip-inbound-ports` (see [`super::probes`]); they live in the init container alone,
//! so `uninject` takes them out with it.

use super::node::{Map, Node};
use super::probes::tcp_probe_ports;
use super::sidecar::{Sidecar, INIT_CONTAINER, PROXY_CONTAINER, XTABLES_VOLUME};
pub use coremesh_discovery::discovery_settings::{MTLS_POD_LABEL, MTLS_POD_LABEL_VALUE};

/// Marks an injected template; its value is the version of coremesh that injected it.
pub const INJECTED_ANNOTATION: &str = "coremesh.io/injected";
/// The keys `inject` created (comma-separated; `key=null` when it replaced a null).
pub const CREATED_ANNOTATION: &str = "coremesh.io/injected-created";
/// `disabled` on a pod template keeps it out of the mesh; `enabled` is the default.
pub const INJECT_ANNOTATION: &str = "coremesh.io/inject";

/// What became of one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Left as it was, and why.
    Skipped(String),
}

/// Adds `sidecar` to `template` (a mapping with `metadata` and `spec`), or says why not.
pub fn inject(template: &mut Node, sidecar: &Sidecar) -> Result<Outcome, String> {
    match template.at(&["metadata", "annotations", INJECT_ANNOTATION]) {
        None => {}
        Some(Node::String(value)) if value == "enabled" => {}
        Some(Node::String(value)) if value == "disabled" => {
            return Ok(Outcome::Skipped(format!("{INJECT_ANNOTATION}: disabled")));
        }
        Some(other) => {
            return Err(format!(
                "annotation {INJECT_ANNOTATION} must be \"enabled\" or \"disabled\", not {}",
                describe(other)
            ))
        }
    }
    if template
        .at(&["metadata", "annotations", INJECTED_ANNOTATION])
        .is_some()
    {
        uninject(template)?;
    }
    let spec = template
        .get("spec")
        .ok_or("has no pod spec (`spec`)")?
        .as_map()
        .ok_or("`spec` is not a mapping")?;
    if spec.get("hostNetwork") == Some(&Node::Bool(true)) {
        return Ok(Outcome::Skipped(
            "hostNetwork: true (the interception rules would apply to the node)".to_owned(),
        ));
    }
    if template
        .at(&["metadata", "labels", MTLS_POD_LABEL])
        .is_some()
    {
        return Ok(Outcome::Skipped(format!(
            "already has the label {MTLS_POD_LABEL} without the annotation {INJECTED_ANNOTATION}"
        )));
    }
    for (list, name) in [
        ("initContainers", INIT_CONTAINER),
        ("initContainers", PROXY_CONTAINER),
        ("containers", INIT_CONTAINER),
        ("containers", PROXY_CONTAINER),
        ("volumes", XTABLES_VOLUME),
    ] {
        if named(spec.get(list), name).is_some() {
            return Ok(Outcome::Skipped(format!(
                "already has {list} entry {name:?} without the annotation {INJECTED_ANNOTATION}"
            )));
        }
    }

    let probe_ports = tcp_probe_ports(template.get("spec").unwrap_or(&Node::Null))?;
    let root = template.as_map_mut().ok_or("is not a mapping")?;
    let mut created = Vec::new();
    let spec = child_map(root, "spec", &mut created)?;
    let init_containers = child_seq(spec, "initContainers", &mut created)?;
    init_containers.insert(0, sidecar.proxy_container.clone());
    init_containers.insert(0, sidecar.init_container_skipping(&probe_ports));
    child_seq(spec, "volumes", &mut created)?.push(sidecar.volume.clone());
    let metadata = child_map(root, "metadata", &mut created)?;
    let annotations = child_map(metadata, "annotations", &mut created)?;
    annotations.insert(
        INJECTED_ANNOTATION.to_owned(),
        Node::str(env!("CARGO_PKG_VERSION")),
    );
    if sidecar.mtls {
        let labels = child_map(metadata, "labels", &mut created)?;
        labels.insert(MTLS_POD_LABEL.to_owned(), Node::str(MTLS_POD_LABEL_VALUE));
    }
    if !created.is_empty() {
        let annotations = child_map(metadata, "annotations", &mut created)?;
        annotations.insert(CREATED_ANNOTATION.to_owned(), Node::str(created.join(",")));
    }
    Ok(Outcome::Injected)
}

/// Takes out what [`inject`] added; `Ok(false)` when `template` was not injected.
pub fn uninject(template: &mut Node) -> Result<bool, String> {
    let Some(annotations) = template
        .at_mut(&["metadata", "annotations"])
        .and_then(Node::as_map_mut)
    else {
        return Ok(false);
    };
    if annotations.shift_remove(INJECTED_ANNOTATION).is_none() {
        return Ok(false);
    }
    let created = match annotations.shift_remove(CREATED_ANNOTATION) {
        None => String::new(),
        Some(Node::String(list)) => list,
        Some(other) => {
            return Err(format!(
                "annotation {CREATED_ANNOTATION} must be a string, not {}",
                describe(&other)
            ))
        }
    };
    let created: Vec<&str> = created.split(',').filter(|k| !k.is_empty()).collect();
    let root = template.as_map_mut().ok_or("is not a mapping")?;
    if let Some(spec) = root.get_mut("spec").and_then(Node::as_map_mut) {
        for (list, names) in [
            ("initContainers", &[INIT_CONTAINER, PROXY_CONTAINER][..]),
            ("volumes", &[XTABLES_VOLUME][..]),
        ] {
            if let Some(items) = spec.get_mut(list).and_then(Node::as_seq_mut) {
                items.retain(|item| !names.iter().any(|n| has_name(item, n)));
            }
            restore(spec, list, &created);
        }
    }
    if let Some(metadata) = root.get_mut("metadata").and_then(Node::as_map_mut) {
        if let Some(labels) = metadata.get_mut("labels").and_then(Node::as_map_mut) {
            labels.shift_remove(MTLS_POD_LABEL);
        }
        restore(metadata, "labels", &created);
        restore(metadata, "annotations", &created);
    }
    restore(root, "metadata", &created);
    Ok(true)
}

/// The mapping at `parent[key]`, created (and noted in `created`) when absent or null.
fn child_map<'a>(
    parent: &'a mut Map,
    key: &str,
    created: &mut Vec<String>,
) -> Result<&'a mut Map, String> {
    note_creation(parent, key, created, || Node::Map(Map::new()));
    parent
        .get_mut(key)
        .and_then(Node::as_map_mut)
        .ok_or_else(|| format!("`{key}` is not a mapping"))
}

/// The sequence at `parent[key]`, created (and noted in `created`) when absent or null.
fn child_seq<'a>(
    parent: &'a mut Map,
    key: &str,
    created: &mut Vec<String>,
) -> Result<&'a mut Vec<Node>, String> {
    note_creation(parent, key, created, || Node::Seq(Vec::new()));
    parent
        .get_mut(key)
        .and_then(Node::as_seq_mut)
        .ok_or_else(|| format!("`{key}` is not a list"))
}

fn note_creation(parent: &mut Map, key: &str, created: &mut Vec<String>, empty: fn() -> Node) {
    match parent.get(key) {
        None => {
            created.push(key.to_owned());
            parent.insert(key.to_owned(), empty());
        }
        Some(Node::Null) => {
            created.push(format!("{key}=null"));
            parent.insert(key.to_owned(), empty());
        }
        Some(_) => {}
    }
}

/// Undoes the creation of `parent[key]` if `created` lists it and it is empty again
/// (something added to it since stays, and so does the key).
fn restore(parent: &mut Map, key: &str, created: &[&str]) {
    let empty = match parent.get(key) {
        Some(Node::Map(m)) => m.is_empty(),
        Some(Node::Seq(s)) => s.is_empty(),
        _ => false,
    };
    if !empty {
        return;
    }
    if created.contains(&key) {
        parent.shift_remove(key);
    } else if created.iter().any(|c| c.strip_suffix("=null") == Some(key)) {
        parent.insert(key.to_owned(), Node::Null);
    }
}

/// The entry of the list `items` whose `name` is `name`.
fn named<'a>(items: Option<&'a Node>, name: &str) -> Option<&'a Node> {
    items?.as_seq()?.iter().find(|item| has_name(item, name))
}

fn has_name(item: &Node, name: &str) -> bool {
    item.get("name").and_then(Node::as_str) == Some(name)
}

fn describe(node: &Node) -> String {
    match node {
        Node::String(s) => format!("{s:?}"),
        Node::Null => "null".to_owned(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::UInt(u) => u.to_string(),
        Node::Float(f) => f.to_string(),
        Node::Seq(_) => "a list".to_owned(),
        Node::Map(_) => "a mapping".to_owned(),
    }
}
