//! An API server stand-in: a plain-HTTP server on 127.0.0.1 that speaks enough of the
//! Kubernetes API's list/watch protocol for `kube`'s watcher, over Services
//! (`/api/v1/namespaces/NS/services`) and EndpointSlices
//! (`/apis/discovery.k8s.io/v1/namespaces/NS/endpointslices`). It is not a Kubernetes API
//! server: no authentication, no writes over HTTP, only equality selectors.
//!
//! - **List**: the objects matching `labelSelector` / `fieldSelector` (equality terms,
//!   `metadata.name` / `metadata.namespace` for fields) as a `...List` whose
//!   `metadata.resourceVersion` is the current version.
//! - **Watch** (`?watch=true` or `?watch=1`): a chunked stream of newline-separated
//!   `WatchEvent`s (`ADDED`, `MODIFIED`, `DELETED`), first those after the requested
//!   `resourceVersion` from history, then live ones. A version older than the history
//!   kept gets one `ERROR` event with a `410 Gone` Status (`reason: Expired`), as the
//!   real server sends.
//! - The test drives it: objects are built from `k8s-openapi` types and applied or deleted
//!   (each change gets the next resourceVersion); [`ApiServerStandIn::drop_watches`] cuts
//!   every open watch connection without ending the stream (a network failure);
//!   [`ApiServerStandIn::expire_watches`] forgets the history and sends `410 Gone` to every
//!   open watch, forcing a relist; `*_unannounced` changes update the objects and the
//!   version but reach no open watch (events lost), so only a relist can see them.
//! - It counts list and watch requests per kind and logs every request line, so tests can
//!   tell a resumed watch from a relist and check what was watched at all.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
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

    fn list_kind(self) -> &'static str {
        match self {
            Kind::Service => "ServiceList",
            Kind::EndpointSlice => "EndpointSliceList",
        }
    }
}

/// One change, as a watch event.
#[derive(Debug, Clone)]
struct Change {
    version: u64,
    kind: Kind,
    event_type: &'static str,
    object: Value,
}

#[derive(Debug, Clone)]
enum Signal {
    Change(Arc<Change>),
    /// Cut every watch connection.
    Drop,
    /// Send `410 Gone` to every watch and end it.
    Expire,
}

#[derive(Default)]
struct State {
    version: u64,
    /// Watches from a version below this get `410 Gone`.
    oldest_watchable: u64,
    objects: BTreeMap<(Kind, String, String), Value>,
    history: Vec<Arc<Change>>,
    lists: BTreeMap<Kind, usize>,
    watches: BTreeMap<Kind, usize>,
    requests: Vec<String>,
}

/// The running stand-in; stops when dropped.
pub struct ApiServerStandIn {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    signals: broadcast::Sender<Signal>,
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
        let state = Arc::new(Mutex::new(State {
            version: 1,
            oldest_watchable: 1,
            ..State::default()
        }));
        let (signals, _) = broadcast::channel(1024);
        let accept_state = state.clone();
        let accept_signals = signals.clone();
        runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = accept_state.clone();
                let signals = accept_signals.clone();
                tokio::spawn(async move {
                    serve_connection(stream, state, signals).await;
                });
            }
        });
        ApiServerStandIn {
            addr,
            state,
            signals,
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
        self.change(Kind::Service, to_value(service), false, true);
    }

    pub fn apply_slice(&self, slice: &EndpointSlice) {
        self.change(Kind::EndpointSlice, to_value(slice), false, true);
    }

    pub fn delete_slice(&self, namespace: &str, name: &str) {
        self.change(Kind::EndpointSlice, stub(namespace, name), true, true);
    }

    pub fn delete_service(&self, namespace: &str, name: &str) {
        self.change(Kind::Service, stub(namespace, name), true, true);
    }

    /// Applies `slice` without telling any open watch (the event is lost).
    pub fn apply_slice_unannounced(&self, slice: &EndpointSlice) {
        self.change(Kind::EndpointSlice, to_value(slice), false, false);
    }

    /// Deletes a slice without telling any open watch.
    pub fn delete_slice_unannounced(&self, namespace: &str, name: &str) {
        self.change(Kind::EndpointSlice, stub(namespace, name), true, false);
    }

    /// Cuts every open watch connection mid-stream.
    pub fn drop_watches(&self) {
        let _ = self.signals.send(Signal::Drop);
    }

    /// Forgets all history (every version so far becomes too old to watch from) and sends
    /// `410 Gone` to every open watch.
    pub fn expire_watches(&self) {
        {
            let mut state = self.lock();
            state.history.clear();
            state.oldest_watchable = state.version + 1;
        }
        let _ = self.signals.send(Signal::Expire);
    }

    pub fn lists(&self, kind: Kind) -> usize {
        self.lock().lists.get(&kind).copied().unwrap_or(0)
    }

    pub fn watches(&self, kind: Kind) -> usize {
        self.lock().watches.get(&kind).copied().unwrap_or(0)
    }

    /// Every request line received, in order (`GET /path?query`).
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn change(&self, kind: Kind, mut object: Value, delete: bool, announce: bool) {
        let mut state = self.lock();
        state.version += 1;
        let version = state.version;
        let namespace = text_at(&object, &["metadata", "namespace"]);
        let name = text_at(&object, &["metadata", "name"]);
        let key = (kind, namespace, name);
        let event_type = if delete {
            match state.objects.remove(&key) {
                Some(stored) => object = stored,
                None => return,
            }
            "DELETED"
        } else if state.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if !delete {
            state.objects.insert(key, object.clone());
        }
        let change = Arc::new(Change {
            version,
            kind,
            event_type,
            object,
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
}

impl Drop for ApiServerStandIn {
    fn drop(&mut self) {
        let _ = self.signals.send(Signal::Drop);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// A parsed request target.
struct Request {
    kind: Kind,
    namespace: String,
    query: BTreeMap<String, String>,
}

impl Request {
    fn parse(target: &str) -> Option<Request> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (kind, namespace) = match segments.as_slice() {
            ["api", "v1", "namespaces", namespace, "services"] => (Kind::Service, *namespace),
            ["apis", "discovery.k8s.io", "v1", "namespaces", namespace, "endpointslices"] => {
                (Kind::EndpointSlice, *namespace)
            }
            _ => return None,
        };
        let query = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
            .collect();
        Some(Request {
            kind,
            namespace: namespace.to_owned(),
            query,
        })
    }

    fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }

    fn matches(&self, kind: Kind, object: &Value) -> bool {
        kind == self.kind
            && text_at(object, &["metadata", "namespace"]) == self.namespace
            && selector_holds(self.query.get("labelSelector"), |key| {
                object["metadata"]["labels"][key]
                    .as_str()
                    .map(str::to_owned)
            })
            && selector_holds(self.query.get("fieldSelector"), |key| match key {
                "metadata.name" => Some(text_at(object, &["metadata", "name"])),
                "metadata.namespace" => Some(text_at(object, &["metadata", "namespace"])),
                _ => None,
            })
    }
}

/// Equality terms only: `a=b,c==d`.
fn selector_holds(selector: Option<&String>, value_of: impl Fn(&str) -> Option<String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            let (key, expected) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .unwrap_or((term, ""));
            value_of(key.trim()).as_deref() == Some(expected.trim())
        })
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

/// Serves requests on one connection until the peer closes it or a watch ends it.
async fn serve_connection(
    mut stream: TcpStream,
    state: Arc<Mutex<State>>,
    signals: broadcast::Sender<Signal>,
) {
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
        lock(&state).requests.push(target.clone());
        let (method, path) = target.split_once(' ').unwrap_or(("", ""));
        let request = if method == "GET" {
            Request::parse(path)
        } else {
            None
        };
        let Some(request) = request else {
            let body = status_json(404, "NotFound", "the stand-in serves only list and watch");
            if write_response(&mut stream, 404, &body).await.is_err() {
                return;
            }
            continue;
        };
        if request.is_watch() {
            serve_watch(stream, &state, &signals, &request).await;
            return;
        }
        let body = {
            let mut state = lock(&state);
            *state.lists.entry(request.kind).or_default() += 1;
            let items: Vec<Value> = state
                .objects
                .iter()
                .filter(|((kind, _, _), object)| request.matches(*kind, object))
                .map(|(_, object)| object.clone())
                .collect();
            json!({
                "apiVersion": request.kind.api_version(),
                "kind": request.kind.list_kind(),
                "metadata": { "resourceVersion": state.version.to_string() },
                "items": items,
            })
        };
        if write_response(&mut stream, 200, &body).await.is_err() {
            return;
        }
    }
}

async fn serve_watch(
    mut stream: TcpStream,
    state: &Mutex<State>,
    signals: &broadcast::Sender<Signal>,
    request: &Request,
) {
    let from: Option<u64> = request
        .query
        .get("resourceVersion")
        .and_then(|version| version.parse().ok())
        .filter(|version| *version > 0);
    let (mut live, backlog, gone) = {
        let mut state = lock(state);
        *state.watches.entry(request.kind).or_default() += 1;
        let live = signals.subscribe();
        match from {
            Some(from) if from + 1 < state.oldest_watchable => (live, Vec::new(), true),
            Some(from) => {
                let backlog = state
                    .history
                    .iter()
                    .filter(|change| change.version > from)
                    .filter(|change| request.matches(change.kind, &change.object))
                    .map(|change| event_json(change.event_type, &change.object))
                    .collect();
                (live, backlog, false)
            }
            None => {
                let backlog = state
                    .objects
                    .iter()
                    .filter(|((kind, _, _), object)| request.matches(*kind, object))
                    .map(|(_, object)| event_json("ADDED", object))
                    .collect();
                (live, backlog, false)
            }
        }
    };
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                transfer-encoding: chunked\r\n\r\n";
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if gone {
        let _ = write_chunk(&mut stream, &gone_event()).await;
        let _ = stream.write_all(b"0\r\n\r\n").await;
        return;
    }
    for event in backlog {
        if write_chunk(&mut stream, &event).await.is_err() {
            return;
        }
    }
    loop {
        match live.recv().await {
            Ok(Signal::Change(change)) => {
                if request.matches(change.kind, &change.object) {
                    let event = event_json(change.event_type, &change.object);
                    if write_chunk(&mut stream, &event).await.is_err() {
                        return;
                    }
                }
            }
            Ok(Signal::Expire) => {
                let _ = write_chunk(&mut stream, &gone_event()).await;
                let _ = stream.write_all(b"0\r\n\r\n").await;
                return;
            }
            // Cut: close the socket without the final chunk, as a broken network would.
            Ok(Signal::Drop) | Err(_) => return,
        }
    }
}

fn event_json(event_type: &str, object: &Value) -> Value {
    json!({ "type": event_type, "object": object })
}

fn gone_event() -> Value {
    json!({
        "type": "ERROR",
        "object": status_json(410, "Expired", "too old resource version"),
    })
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
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.flush().await
}
