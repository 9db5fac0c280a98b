//! The stand-in's reading of a request: path to kind and namespace, query parameters
//! checked as the API server checks them (unknown ones refused), label and field selectors,
//! and what a watch with those selectors sees of a change.

use super::{text_at, Change, Kind};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One selector term.
#[derive(Debug)]
pub(super) struct Term {
    key: String,
    equal: bool,
    value: String,
}

/// `a=b,c==d,e!=f`; anything else (set-based terms, existence) is refused, so a client
/// sending it would notice.
fn parse_selector(selector: Option<&String>) -> Result<Vec<Term>, String> {
    let Some(selector) = selector else {
        return Ok(Vec::new());
    };
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .map(|term| {
            let (key, equal, value) = if let Some((key, value)) = term.split_once("!=") {
                (key, false, value)
            } else if let Some((key, value)) = term.split_once("==") {
                (key, true, value)
            } else if let Some((key, value)) = term.split_once('=') {
                (key, true, value)
            } else {
                return Err(format!("the stand-in only knows = and != terms: {term:?}"));
            };
            Ok(Term {
                key: key.trim().to_owned(),
                equal,
                value: value.trim().to_owned(),
            })
        })
        .collect()
}

fn terms_hold(terms: &[Term], value_of: impl Fn(&str) -> Option<String>) -> bool {
    terms.iter().all(|term| {
        let actual = value_of(&term.key);
        (actual.as_deref() == Some(term.value.as_str())) == term.equal
    })
}

/// A parsed and checked request.
pub(super) struct Request {
    pub(super) kind: Kind,
    pub(super) namespace: String,
    pub(super) query: BTreeMap<String, String>,
    pub(super) labels: Vec<Term>,
    pub(super) fields: Vec<Term>,
}

/// Query parameters each request type may carry (what `kube` sends, and what the API
/// defines for it); anything else is refused.
const LIST_PARAMS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
];
const WATCH_PARAMS: &[&str] = &[
    "watch",
    "labelSelector",
    "fieldSelector",
    "resourceVersion",
    "resourceVersionMatch",
    "timeoutSeconds",
    "allowWatchBookmarks",
    "sendInitialEvents",
];

/// An answer other than 200: status, Status reason, message.
pub(super) type Refusal = (u16, &'static str, String);

pub(super) fn bad_request(message: impl Into<String>) -> Refusal {
    (400, "BadRequest", message.into())
}

impl Request {
    pub(super) fn parse(target: &str) -> Result<Request, Refusal> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (kind, namespace) = match segments.as_slice() {
            ["api", "v1", "namespaces", namespace, "services"] => (Kind::Service, *namespace),
            ["api", "v1", "namespaces", namespace, "pods"] => (Kind::Pod, *namespace),
            ["apis", "discovery.k8s.io", "v1", "namespaces", namespace, "endpointslices"] => {
                (Kind::EndpointSlice, *namespace)
            }
            _ => {
                let message = "the stand-in serves only lists and watches".to_owned();
                return Err((404, "NotFound", message));
            }
        };
        let query: BTreeMap<String, String> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        let labels = parse_selector(query.get("labelSelector")).map_err(bad_request)?;
        let fields = parse_selector(query.get("fieldSelector")).map_err(bad_request)?;
        for term in &fields {
            if !matches!(term.key.as_str(), "metadata.name" | "metadata.namespace") {
                return Err(bad_request(format!(
                    "field label not supported: {}",
                    term.key
                )));
            }
        }
        let request = Request {
            kind,
            namespace: namespace.to_owned(),
            query,
            labels,
            fields,
        };
        request.check()?;
        Ok(request)
    }

    pub(super) fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    pub(super) fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }

    /// The checks the API server makes on these parameters.
    fn check(&self) -> Result<(), Refusal> {
        let allowed = if self.is_watch() {
            WATCH_PARAMS
        } else {
            LIST_PARAMS
        };
        if let Some(unknown) = self
            .query
            .keys()
            .find(|key| !allowed.contains(&key.as_str()))
        {
            return Err(bad_request(format!(
                "the stand-in does not know the parameter {unknown:?} here"
            )));
        }
        for number in ["limit", "timeoutSeconds"] {
            if let Some(value) = self.param(number) {
                if value.parse::<u64>().is_err() {
                    return Err(bad_request(format!("{number}: not a number: {value:?}")));
                }
            }
        }
        if let Some(version) = self.param("resourceVersion") {
            if !version.is_empty() && version.parse::<u64>().is_err() {
                return Err(bad_request(format!(
                    "invalid resource version: {version:?}"
                )));
            }
        }
        if let Some(value) = self.param("allowWatchBookmarks") {
            if value != "true" && value != "false" {
                return Err(bad_request(format!("allowWatchBookmarks: {value:?}")));
            }
        }
        if self.param("continue").is_some() && self.param("resourceVersion").is_some() {
            return Err(bad_request(
                "specifying resource version is not allowed when using continue",
            ));
        }
        if self.param("resourceVersionMatch").is_some() && self.param("resourceVersion").is_none() {
            return Err(bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            ));
        }
        if self.param("sendInitialEvents").is_some() {
            return Err(bad_request(
                "the stand-in does not serve streaming lists (sendInitialEvents)",
            ));
        }
        Ok(())
    }

    pub(super) fn matches(&self, kind: Kind, object: &Value) -> bool {
        kind == self.kind
            && text_at(object, &["metadata", "namespace"]) == self.namespace
            && terms_hold(&self.labels, |key| {
                object["metadata"]["labels"][key]
                    .as_str()
                    .map(str::to_owned)
            })
            && terms_hold(&self.fields, |key| match key {
                "metadata.name" => Some(text_at(object, &["metadata", "name"])),
                "metadata.namespace" => Some(text_at(object, &["metadata", "namespace"])),
                _ => None,
            })
    }

    /// What a watch with this request's selectors sees of `change`.
    pub(super) fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
        let now = change
            .object
            .as_ref()
            .filter(|object| self.matches(change.kind, object));
        let before = change
            .previous
            .as_ref()
            .filter(|object| self.matches(change.kind, object));
        match (before, now) {
            (Some(_), Some(now)) => Some(("MODIFIED", now.clone())),
            (None, Some(now)) => Some(("ADDED", now.clone())),
            // Deleted, or no longer selected: the object as it was, at the new version.
            (Some(before), None) => {
                let mut gone = before.clone();
                gone["metadata"]["resourceVersion"] = json!(change.version.to_string());
                Some(("DELETED", gone))
            }
            (None, None) => None,
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' if index + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[index + 1..index + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(byte) => {
                        out.push(byte);
                        index += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Request {
    /// Kind and query only, for recording a refused request.
    pub(super) fn parse_unchecked(target: &str) -> Result<Request, ()> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut plain = Request::parse(path).map_err(|_| ())?;
        plain.query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        Ok(plain)
    }
}
