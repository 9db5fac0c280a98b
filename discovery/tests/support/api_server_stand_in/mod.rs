//! An API server stand-in: a plain-HTTP server on 127.0.0.1 that speaks the Kubernetes
//! API's list/watch protocol for `kube`'s watcher, over Services
//! (`/api/v1/namespaces/NS/services`), EndpointSlices
//! (`/apis/discovery.k8s.io/v1/namespaces/NS/endpointslices`) and Pods
//! (`/api/v1/namespaces/NS/pods`). It is the only Kubernetes
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

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

mod list;
mod request;
mod watch;
use list::serve_list;
use request::Request;
use watch::serve_watch;

/// The kinds served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Service,
    EndpointSlice,
    Pod,
}

impl Kind {
    fn api_version(self) -> &'static str {
        match self {
            Kind::Service | Kind::Pod => "v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Pod => "Pod",
        }
    }

    fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
            Kind::Pod => "PodList",
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

    pub fn apply_pod(&self, pod: &Pod) {
        let value = to_value(pod);
        self.shared
            .change(Kind::Pod, &value.clone(), Some(value), true);
    }

    pub fn delete_pod(&self, namespace: &str, name: &str) {
        self.shared
            .change(Kind::Pod, &stub(namespace, name), None, true);
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
