//! An API server stand-in: a plain-HTTP server on 127.0.0.1 that speaks the Kubernetes
//! API's list/watch protocol for `kube`'s watcher, over Services
//! (`/api/v1/namespaces/NS/services`) and EndpointSlices
//! (`/apis/discovery.k8s.io/v1/namespaces/NS/endpointslices`). It is the only Kubernetes
//! the tests know, so it keeps the API's semantics where the watcher depends on them, and
//! refuses (400, as the real server does) what it does not understand rather than
//! guessing. No authentication, no writes over HTTP.
//!
//! - **Versions.** One `resourceVersion` counter for every kind (like etcd's revision);
//!   each change takes the next one, and the object carries it.
//! - **List** (`GET` without `watch`): the objects matching `labelSelector` (`=`, `==`,
//!   `!=` terms) and `fieldSelector` (`metadata.name`, `metadata.namespace`), in key order,
//!   as a `...List` whose `metadata.resourceVersion` is the version listed at. With
//!   `limit=N`, at most N items and a `metadata.continue` token when more remain; a
//!   request with `continue` gets the next page *as of the first page's version* (a
//!   consistent snapshot, whatever changed since), or `410 Gone` with a Status of reason
//!   `Expired` when that version has been compacted. `continue` together with
//!   `resourceVersion` is refused (400), as the real server does.
//! - **Watch** (`watch=true`): a chunked stream of newline-separated `WatchEvent`s, first
//!   those after the requested `resourceVersion` (from history), then live ones; none or
//!   `0` starts with an `ADDED` per current object. A version older than the history kept
//!   gets one `ERROR` event with a `410 Gone` Status (`reason: Expired`). Label selectors
//!   are applied to each change as the API server's watch cache does: an object that
//!   leaves the selector (a slice relabelled to another Service) arrives as `DELETED`
//!   (the object as it was, at the new version), one that enters it as `ADDED`.
//! - **Bookmarks** (`allowWatchBookmarks=true` only): a `BOOKMARK` event carrying the
//!   version the watch has seen (objects of any kind count), sent when the test calls
//!   [`ApiServerStandIn::send_bookmarks`] and just before a watch ends at its timeout.
//! - **Timeouts**: a watch with `timeoutSeconds=N` (N > 0) ends cleanly (last chunk) N
//!   seconds after it started; the connection stays open for the next request.
//! - The test drives it: objects are built from `k8s-openapi` types and applied or deleted;
//!   [`ApiServerStandIn::drop_watches`] cuts every open watch connection without ending
//!   the stream (a network failure); [`ApiServerStandIn::compact`] forgets history and
//!   list snapshots (later watches from older versions, and old `continue` tokens, get
//!   `410`); [`ApiServerStandIn::expire_watches`] also sends `410 Gone` to every open
//!   watch; `*_unannounced` changes reach no open watch (events lost), so only a relist
//!   can see them; [`ApiServerStandIn::at_next`] queues changes for a moment the test
//!   cannot otherwise catch (a watch's timeout, the next page of a list).
//! - It records what it received (every request line, and each list's and watch's query
//!   parameters) and what it sent (each watch event, bookmarks), so tests can check the
//!   client's side of the protocol: a resumed watch from a relist, no event delivered
//!   twice.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

/// The two kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Service => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
        }
    }

    fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
        }
    }
}

/// A moment the test cannot reach by itself, at which queued [`Action`]s run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// A watch of this kind reached its `timeoutSeconds`: the actions run after its last
    /// bookmark and before its stream ends, so only a resumed watch can see them.
    WatchTimeout(Kind),
    /// A list request of this kind with a `continue` token arrived: the actions run before
    /// it is answered.
    ContinuedList(Kind),
}

/// A change queued with [`ApiServerStandIn::at_next`].
#[derive(Debug, Clone)]
pub enum Action {
    ApplySlice(Box<EndpointSlice>),
    DeleteSlice {
        namespace: String,
        name: String,
    },
    /// As [`ApiServerStandIn::compact`].
    Compact,
}

/// A list or watch request as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub kind: Kind,
    pub watch: bool,
    pub query: BTreeMap<String, String>,
    /// The HTTP status answered.
    pub status: u16,
}

impl Received {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }
}

/// One watch event written (bookmarks are counted apart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub kind: Kind,
    pub event_type: &'static str,
    pub name: String,
    /// The object's `resourceVersion` in the event.
    pub version: u64,
    /// Which watch (numbered from 1 in arrival order, every kind together).
    pub watch: usize,
}

/// One change: the object after it (`None`: deleted) and before it (`None`: created).
#[derive(Debug)]
struct Change {
    version: u64,
    kind: Kind,
    object: Option<Value>,
    previous: Option<Value>,
}

#[derive(Debug, Clone)]
enum Signal {
    Change(Arc<Change>),
    Bookmark,
    /// Cut every watch connection.
    Drop,
    /// Send `410 Gone` to every watch and end it.
    Expire,
}

type Key = (Kind, String, String);

#[derive(Default)]
struct State {
    version: u64,
    /// Watches from a version below this get `410 Gone`.
    oldest_watchable: u64,
    objects: BTreeMap<Key, Value>,
    history: Vec<Arc<Change>>,
    /// Every object as of a version a paged list started at, for its next pages.
    list_snapshots: BTreeMap<u64, BTreeMap<Key, Value>>,
    pending: BTreeMap<Trigger, Vec<Action>>,
    lists: BTreeMap<Kind, usize>,
    watches: BTreeMap<Kind, usize>,
    watch_timeouts: BTreeMap<Kind, usize>,
    bookmarks: BTreeMap<Kind, usize>,
    requests: Vec<String>,
    received: Vec<Received>,
    delivered: Vec<Delivered>,
    watch_count: usize,
}

struct Shared {
    state: Mutex<State>,
    signals: broadcast::Sender<Signal>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies (`Some`) or deletes (`None`) the object at `key`; `announce` = open and
    /// resumed watches hear of it.
    fn change(&self, kind: Kind, key_of: &Value, object: Option<Value>, announce: bool) {
        let mut state = self.lock();
        let key = (
            kind,
            text_at(key_of, &["metadata", "namespace"]),
            text_at(key_of, &["metadata", "name"]),
        );
        let previous = state.objects.get(&key).cloned();
        if object.is_none() && previous.is_none() {
            return;
        }
        state.version += 1;
        let version = state.version;
        let object = object.map(|mut object| {
            object["metadata"]["resourceVersion"] = json!(version.to_string());
            object
        });
        match &object {
            Some(object) => state.objects.insert(key, object.clone()),
            None => state.objects.remove(&key),
        };
        let change = Arc::new(Change {
            version,
            kind,
            object,
            previous,
        });
        if announce {
            state.history.push(change.clone());
            let _ = self.signals.send(Signal::Change(change));
        } else {
            // Lost: no open watch hears of it, and a watch resumed from an earlier version
            // cannot replay it either.
            state.history.clear();
            state.oldest_watchable = version + 1;
        }
    }

    fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.oldest_watchable = state.version + 1;
        state.list_snapshots.clear();
    }

    /// Runs the actions queued for `trigger`, if any.
    fn fire(&self, trigger: Trigger) {
        let actions = self.lock().pending.remove(&trigger).unwrap_or_default();
        for action in actions {
            match action {
                Action::ApplySlice(slice) => {
                    let value = to_value(&*slice);
                    self.change(Kind::EndpointSlice, &value.clone(), Some(value), true);
                }
                Action::DeleteSlice { namespace, name } => {
                    self.change(Kind::EndpointSlice, &stub(&namespace, &name), None, true);
                }
                Action::Compact => self.compact(),
            }
        }
    }
}

/// The running stand-in; stops when dropped.
pub struct ApiServerStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ApiServerStandIn {
    pub fn start() -> ApiServerStandIn {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("stand-in runtime: {e}"));
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("stand-in bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("stand-in address: {e}"));
        let (signals, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                version: 1,
                oldest_watchable: 1,
                ..State::default()
            }),
            signals,
        });
        let accept_shared = shared.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    serve_connection(stream, &shared).await;
                });
            }
        });
        ApiServerStandIn {
            addr,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `kube` client configuration for this stand-in: plain HTTP, no credentials.
    pub fn kube_config(&self) -> kube::Config {
        let url = self
            .url()
            .parse()
            .unwrap_or_else(|e| panic!("stand-in url: {e}"));
        kube::Config::new(url)
    }

    /// A kubeconfig file's text pointing at this stand-in.
    pub fn kubeconfig_yaml(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: {}\n\
             users:\n- name: nobody\n  user: {{}}\ncontexts:\n- name: stand-in\n  context:\n    \
             cluster: stand-in\n    user: nobody\ncurrent-context: stand-in\n",
            self.url()
        )
    }

    pub fn apply_service(&self, service: &Service) {
        let value = to_value(service);
        self.shared
            .change(Kind::Service, &value.clone(), Some(value), true);
    }

    pub fn apply_slice(&self, slice: &EndpointSlice) {
        let value = to_value(slice);
        self.shared
            .change(Kind::EndpointSlice, &value.clone(), Some(value), true);
    }

    pub fn delete_slice(&self, namespace: &str, name: &str) {
        self.shared
            .change(Kind::EndpointSlice, &stub(namespace, name), None, true);
    }

    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.shared
            .change(Kind::Service, &stub(namespace, name), None, true);
    }

    /// Applies `slice` without telling any open watch (the event is lost).
    pub fn apply_slice_unannounced(&self, slice: &EndpointSlice) {
        let value = to_value(slice);
        self.shared
            .change(Kind::EndpointSlice, &value.clone(), Some(value), false);
    }

    /// Deletes a slice without telling any open watch.
    pub fn delete_slice_unannounced(&self, namespace: &str, name: &str) {
        self.shared
            .change(Kind::EndpointSlice, &stub(namespace, name), None, false);
    }

    /// Queues `actions` to run at the next `trigger`.
    pub fn at_next(&self, trigger: Trigger, actions: Vec<Action>) {
        self.shared
            .lock()
            .pending
            .entry(trigger)
            .or_default()
            .extend(actions);
    }

    /// Whether actions queued for `trigger` are still waiting.
    pub fn pending(&self, trigger: Trigger) -> bool {
        self.shared.lock().pending.contains_key(&trigger)
    }

    /// Sends a `BOOKMARK` to every open watch that allowed them.
    pub fn send_bookmarks(&self) {
        let _ = self.shared.signals.send(Signal::Bookmark);
    }

    /// Cuts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _ = self.shared.signals.send(Signal::Drop);
    }

    /// Forgets all history and list snapshots, as an etcd compaction at the current
    /// version: watches from any earlier version, and `continue` tokens of lists started
    /// earlier, get `410 Gone`. Open watches go on.
    pub fn compact(&self) {
        self.shared.compact();
    }

    /// [`compact`](Self::compact)s and sends `410 Gone` to every open watch.
    pub fn expire_watches(&self) {
        self.shared.compact();
        let _ = self.shared.signals.send(Signal::Expire);
    }

    /// The current `resourceVersion`.
    pub fn version(&self) -> u64 {
        self.shared.lock().version
    }

    /// List requests of `kind` (every page counts).
    pub fn lists(&self, kind: Kind) -> usize {
        self.shared.lock().lists.get(&kind).copied().unwrap_or(0)
    }

    /// Watch requests of `kind`.
    pub fn watches(&self, kind: Kind) -> usize {
        self.shared.lock().watches.get(&kind).copied().unwrap_or(0)
    }

    /// Watches of `kind` ended at their `timeoutSeconds`.
    pub fn watch_timeouts(&self, kind: Kind) -> usize {
        let state = self.shared.lock();
        state.watch_timeouts.get(&kind).copied().unwrap_or(0)
    }

    /// Bookmarks sent to watches of `kind`.
    pub fn bookmarks(&self, kind: Kind) -> usize {
        self.shared
            .lock()
            .bookmarks
            .get(&kind)
            .copied()
            .unwrap_or(0)
    }

    /// Every request line received, in order (`GET /path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }

    /// Every list and watch request of `kind`, in order.
    pub fn received(&self, kind: Kind) -> Vec<Received> {
        let state = self.shared.lock();
        state
            .received
            .iter()
            .filter(|received| received.kind == kind)
            .cloned()
            .collect()
    }

    /// Every watch event of `kind` written, in order.
    pub fn delivered(&self, kind: Kind) -> Vec<Delivered> {
        let state = self.shared.lock();
        state
            .delivered
            .iter()
            .filter(|delivered| delivered.kind == kind)
            .cloned()
            .collect()
    }
}

impl Drop for ApiServerStandIn {
    fn drop(&mut self) {
        let _ = self.shared.signals.send(Signal::Drop);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or_else(|e| panic!("serialize: {e}"))
}

fn stub(namespace: &str, name: &str) -> Value {
    json!({ "metadata": { "namespace": namespace, "name": name } })
}

fn text_at(value: &Value, path: &[&str]) -> String {
    let mut value = value;
    for key in path {
        value = &value[*key];
    }
    value.as_str().unwrap_or_default().to_owned()
}

fn version_of(object: &Value) -> u64 {
    text_at(object, &["metadata", "resourceVersion"])
        .parse()
        .unwrap_or(0)
}

/// One selector term.
#[derive(Debug)]
struct Term {
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
struct Request {
    kind: Kind,
    namespace: String,
    query: BTreeMap<String, String>,
    labels: Vec<Term>,
    fields: Vec<Term>,
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
type Refusal = (u16, &'static str, String);

fn bad_request(message: impl Into<String>) -> Refusal {
    (400, "BadRequest", message.into())
}

impl Request {
    fn parse(target: &str) -> Result<Request, Refusal> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (kind, namespace) = match segments.as_slice() {
            ["api", "v1", "namespaces", namespace, "services"] => (Kind::Service, *namespace),
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

    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn is_watch(&self) -> bool {
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

    fn matches(&self, kind: Kind, object: &Value) -> bool {
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
    fn event_for(&self, change: &Change) -> Option<(&'static str, Value)> {
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

/// Serves requests on one connection until the peer closes it or a watch is cut.
async fn serve_connection(mut stream: TcpStream, shared: &Shared) {
    let mut buffer = Vec::new();
    loop {
        let target = loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(&buffer) {
                Ok(httparse::Status::Complete(length)) => {
                    let target = request.path.unwrap_or("/").to_owned();
                    let method = request.method.unwrap_or("").to_owned();
                    buffer.drain(..length);
                    break format!("{method} {target}");
                }
                Ok(httparse::Status::Partial) => {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                    }
                }
                Err(_) => return,
            }
        };
        shared.lock().requests.push(target.clone());
        let (method, path) = target.split_once(' ').unwrap_or(("", ""));
        let request = if method == "GET" {
            Request::parse(path)
        } else {
            Err((
                405,
                "MethodNotAllowed",
                "the stand-in serves only GET".to_owned(),
            ))
        };
        let request = match request {
            Ok(request) => request,
            Err((status, reason, message)) => {
                if let Ok(parsed) = Request::parse_unchecked(path) {
                    record(shared, &parsed, status);
                }
                let body = status_json(status, reason, &message);
                if write_response(&mut stream, status, &body).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let ended = if request.is_watch() {
            serve_watch(&mut stream, shared, &request).await
        } else {
            serve_list(&mut stream, shared, &request).await
        };
        if !ended {
            return;
        }
    }
}

impl Request {
    /// Kind and query only, for recording a refused request.
    fn parse_unchecked(target: &str) -> Result<Request, ()> {
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

fn record(shared: &Shared, request: &Request, status: u16) {
    let mut state = shared.lock();
    let counter = if request.is_watch() {
        &mut state.watches
    } else {
        &mut state.lists
    };
    *counter.entry(request.kind).or_default() += 1;
    state.received.push(Received {
        kind: request.kind,
        watch: request.is_watch(),
        query: request.query.clone(),
        status,
    });
}

/// A `continue` token: the version the list started at, and the last key served.
fn continue_token(version: u64, namespace: &str, name: &str) -> String {
    format!("{version}/{namespace}/{name}")
}

fn parse_continue(token: &str) -> Option<(u64, String, String)> {
    let mut parts = token.splitn(3, '/');
    let version = parts.next()?.parse().ok()?;
    Some((version, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

const EXPIRED_CONTINUE: &str = "The provided continue parameter is too old to display a \
    consistent list result. You can start a new list without the continue parameter, or \
    use the continue value from the response.";

/// Answers a list (one page of it); false when the connection failed.
async fn serve_list(stream: &mut TcpStream, shared: &Shared, request: &Request) -> bool {
    if request.param("continue").is_some() {
        shared.fire(Trigger::ContinuedList(request.kind));
    }
    let answer = list_page(shared, request);
    let (status, body) = match answer {
        Ok(body) => (200, body),
        Err((status, reason, message)) => (status, status_json(status, reason, &message)),
    };
    record(shared, request, status);
    write_response(stream, status, &body).await.is_ok()
}

fn list_page(shared: &Shared, request: &Request) -> Result<Value, Refusal> {
    let mut state = shared.lock();
    let limit = request
        .param("limit")
        .and_then(|limit| limit.parse::<usize>().ok())
        .filter(|limit| *limit > 0);
    let (version, after) = match request.param("continue") {
        Some(token) => {
            let Some((version, namespace, name)) = parse_continue(token) else {
                return Err(bad_request(format!("invalid continue token {token:?}")));
            };
            if !state.list_snapshots.contains_key(&version) {
                return Err((410, "Expired", EXPIRED_CONTINUE.to_owned()));
            }
            (version, Some((request.kind, namespace, name)))
        }
        None => {
            if let Some(asked) = request
                .param("resourceVersion")
                .and_then(|version| version.parse::<u64>().ok())
            {
                if asked > state.version {
                    let message = format!("Too large resource version: {asked}");
                    return Err((504, "Timeout", message));
                }
            }
            (state.version, None)
        }
    };
    let objects = match after {
        Some(_) => state
            .list_snapshots
            .get(&version)
            .cloned()
            .unwrap_or_default(),
        None => state.objects.clone(),
    };
    let mut matching = objects
        .iter()
        .filter(|(key, _)| after.as_ref().is_none_or(|after| *key > after))
        .filter(|((kind, _, _), object)| request.matches(*kind, object));
    let items: Vec<(Key, Value)> = matching
        .by_ref()
        .take(limit.unwrap_or(usize::MAX))
        .map(|(key, object)| (key.clone(), object.clone()))
        .collect();
    let more = matching.next().is_some();
    let mut metadata = json!({ "resourceVersion": version.to_string() });
    if more {
        if let Some(((_, namespace, name), _)) = items.last() {
            metadata["continue"] = json!(continue_token(version, namespace, name));
        }
        state.list_snapshots.entry(version).or_insert(objects);
    }
    Ok(json!({
        "apiVersion": request.kind.api_version(),
        "kind": request.kind.list_kind(),
        "metadata": metadata,
        "items": items.into_iter().map(|(_, object)| object).collect::<Vec<_>>(),
    }))
}

/// How a watch stream ended.
enum WatchEnd {
    /// Last chunk written: the connection can serve the next request.
    Ended,
    /// Cut, or the client went away.
    Cut,
}

/// Serves a watch; true when the stream ended cleanly (the connection goes on).
async fn serve_watch(stream: &mut TcpStream, shared: &Shared, request: &Request) -> bool {
    let from: Option<u64> = request
        .param("resourceVersion")
        .and_then(|version| version.parse().ok())
        .filter(|version| *version > 0);
    let bookmarks = request.param("allowWatchBookmarks") == Some("true");
    let timeout = request
        .param("timeoutSeconds")
        .and_then(|seconds| seconds.parse::<u64>().ok())
        .filter(|seconds| *seconds > 0)
        .map(Duration::from_secs);
    record(shared, request, 200);
    let (mut live, backlog, mut seen, error, watch) = {
        let mut state = shared.lock();
        state.watch_count += 1;
        let watch = state.watch_count;
        let live = shared.signals.subscribe();
        let version = state.version;
        match from {
            Some(from) if from + 1 < state.oldest_watchable => {
                let message = format!("too old resource version: {from} ({version})");
                (
                    live,
                    Vec::new(),
                    version,
                    Some((410, "Expired", message)),
                    watch,
                )
            }
            Some(from) if from > version => {
                let message = format!("Too large resource version: {from}, current: {version}");
                (
                    live,
                    Vec::new(),
                    version,
                    Some((504, "Timeout", message)),
                    watch,
                )
            }
            Some(from) => {
                let backlog = state
                    .history
                    .iter()
                    .filter(|change| change.version > from)
                    .filter_map(|change| request.event_for(change))
                    .collect();
                (live, backlog, version, None, watch)
            }
            None => {
                let backlog = state
                    .objects
                    .iter()
                    .filter(|((kind, _, _), object)| request.matches(*kind, object))
                    .map(|(_, object)| ("ADDED", object.clone()))
                    .collect();
                (live, backlog, version, None, watch)
            }
        }
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return false;
    }
    if let Some((code, reason, message)) = error {
        let _ = write_chunk(stream, &error_event(code, reason, &message)).await;
        return stream.write_all(b"0\r\n\r\n").await.is_ok();
    }
    let deliver = |event_type: &'static str, object: &Value| Delivered {
        kind: request.kind,
        event_type,
        name: text_at(object, &["metadata", "name"]),
        version: version_of(object),
        watch,
    };
    for (event_type, object) in backlog {
        shared.lock().delivered.push(deliver(event_type, &object));
        if write_chunk(stream, &event_json(event_type, &object))
            .await
            .is_err()
        {
            return false;
        }
    }
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let end = loop {
        let signal = match deadline {
            Some(deadline) => tokio::select! {
                signal = live.recv() => Some(signal),
                () = tokio::time::sleep_until(deadline) => None,
            },
            None => Some(live.recv().await),
        };
        match signal {
            Some(Ok(Signal::Change(change))) => {
                seen = seen.max(change.version);
                if let Some((event_type, object)) = request.event_for(&change) {
                    shared.lock().delivered.push(deliver(event_type, &object));
                    if write_chunk(stream, &event_json(event_type, &object))
                        .await
                        .is_err()
                    {
                        break WatchEnd::Cut;
                    }
                }
            }
            Some(Ok(Signal::Bookmark)) => {
                if bookmarks
                    && write_bookmark(stream, shared, request.kind, seen)
                        .await
                        .is_err()
                {
                    break WatchEnd::Cut;
                }
            }
            Some(Ok(Signal::Expire)) => {
                let message = format!("too old resource version: {seen}");
                let _ = write_chunk(stream, &error_event(410, "Expired", &message)).await;
                break WatchEnd::Ended;
            }
            // Cut: close the socket without the final chunk, as a broken network would.
            Some(Ok(Signal::Drop)) | Some(Err(_)) => break WatchEnd::Cut,
            // The timeout: a last bookmark (as the API server sends before a watch's
            // deadline), then the end of the stream.
            None => {
                if bookmarks
                    && write_bookmark(stream, shared, request.kind, seen)
                        .await
                        .is_err()
                {
                    break WatchEnd::Cut;
                }
                *shared
                    .lock()
                    .watch_timeouts
                    .entry(request.kind)
                    .or_default() += 1;
                shared.fire(Trigger::WatchTimeout(request.kind));
                break WatchEnd::Ended;
            }
        }
    };
    match end {
        WatchEnd::Ended => stream.write_all(b"0\r\n\r\n").await.is_ok(),
        WatchEnd::Cut => false,
    }
}

async fn write_bookmark(
    stream: &mut TcpStream,
    shared: &Shared,
    kind: Kind,
    version: u64,
) -> std::io::Result<()> {
    *shared.lock().bookmarks.entry(kind).or_default() += 1;
    let object = json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind(),
        "metadata": { "resourceVersion": version.to_string() },
    });
    write_chunk(stream, &event_json("BOOKMARK", &object)).await
}

fn event_json(event_type: &str, object: &Value) -> Value {
    json!({ "type": event_type, "object": object })
}

fn error_event(code: u16, reason: &str, message: &str) -> Value {
    json!({ "type": "ERROR", "object": status_json(code, reason, message) })
}

fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

async fn write_chunk(stream: &mut TcpStream, value: &Value) -> std::io::Result<()> {
    let mut line = value.to_string();
    line.push('\n');
    let chunk = format!("{:x}\r\n{line}\r\n", line.len());
    stream.write_all(chunk.as_bytes()).await?;
    stream.flush().await
}

async fn write_response(stream: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}
