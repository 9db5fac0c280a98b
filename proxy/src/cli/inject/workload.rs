//! Where a Kubernetes object keeps its pod template: by `kind` and API group. Anything
//! else (Services, ConfigMaps, custom resources, unknown kinds) has none and passes
//! through untouched; a `List` is looked into item by item.

use super::node::Node;

/// The path from the object to its pod template, for the kinds that have one.
pub fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    match (group, kind) {
        ("", "Pod") => Some(&[]),
        ("apps" | "extensions", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            Some(&["spec", "template"])
        }
        ("batch", "Job") => Some(&["spec", "template"]),
        ("batch", "CronJob") => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// `kind/name` of an object, for messages (`document 3` when it has neither).
pub fn label(object: &Node, index: usize) -> String {
    let kind = object.get("kind").and_then(Node::as_str);
    let name = object.at(&["metadata", "name"]).and_then(Node::as_str);
    match (kind, name) {
        (Some(kind), Some(name)) => format!("{}/{name}", kind.to_ascii_lowercase()),
        (Some(kind), None) => format!("{} in document {index}", kind.to_ascii_lowercase()),
        _ => format!("document {index}"),
    }
}

/// What an object is, as far as injection goes.
pub enum Shape<'a> {
    /// A workload: its pod template (for a Pod, the Pod itself).
    Template(&'a mut Node),
    /// A workload kind without a template where one belongs.
    MissingTemplate,
    /// `kind: List`: its items.
    List(&'a mut Vec<Node>),
    /// Anything else.
    Other,
}

pub fn shape(object: &mut Node) -> Shape<'_> {
    let api_version = object
        .get("apiVersion")
        .and_then(Node::as_str)
        .unwrap_or("");
    let kind = object.get("kind").and_then(Node::as_str).unwrap_or("");
    // `kubectl get -o yaml` writes `kind: List`; typed lists are `DeploymentList` and so on.
    if kind.ends_with("List") {
        return match object.get_mut("items").and_then(Node::as_seq_mut) {
            Some(items) => Shape::List(items),
            None => Shape::Other,
        };
    }
    match template_path(api_version, kind) {
        None => Shape::Other,
        Some(path) => match object.at_mut(path) {
            Some(template) => Shape::Template(template),
            None => Shape::MissingTemplate,
        },
    }
}
