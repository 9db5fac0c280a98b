//! Live configuration end to end: a configuration file the test rewrites (by rename, or in
//! place), the proxy with its discovery controller following that file, a barrier that
//! proves every core runs a new snapshot, and keep-alive load whose every request is tagged
//! with the configuration version in force when it was written.
//!
//! How "in force" is made exact without timing:
//! - [`LiveProxy`] installs each snapshot the controller publishes, then records it; so once
//!   [`LiveProxy::wait_installed`] sees snapshot `k`, its `Install` message is queued on every
//!   core. A `/metrics` scrape asks every core for a report over the same control channel,
//!   which a core drains in order: a scrape that merged every core
//!   ([`LiveProxy::wait_in_force_on_every_core`]) was answered after each core switched.
//! - [`TaggedLoad`] clients read the test's epoch just before writing a request (into its
//!   path) and again after reading the response. The test sets epoch `k` only after version
//!   `k` is in force on every core, and writes version `k + 1` only after that. A request
//!   tagged `before`, answered while the epoch was at most `after`, was therefore handled
//!   under some version in `before ..= after + 1`, and may only reach an endpoint of one of
//!   those ([`check_against_versions`]) — whatever the scheduling.

use crate::admin::{start_with_admin, wait_for_admin, AdminProxy};
use crate::client::Client;
use crate::prometheus::Exposition;
use crate::proxy::driver_name;
use crate::upstream::{echo_body, Action, Response, Upstream};
use coremesh_discovery::{
    parse_config, Discovery, DiscoveryHandle, DiscoveryStats, Driver, ReloadOutcome, Snapshot,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bounds every wait for the controller, the cores or the traffic; only a broken run hits
/// it (the file is polled every few tens of milliseconds, cores switch within a tick).
pub const LIVE_WAIT: Duration = Duration::from_secs(30);
/// Size every version of an in-place file is padded to (with a trailing comment), so that
/// a rewrite never truncates: a reader sees the old bytes, the new bytes, or (inside the
/// one `pwrite`) a mix that the controller's two-equal-reads rule cannot settle on.
pub const IN_PLACE_FILE_BYTES: usize = 4096;
/// Path prefix of tagged requests: `/live/{client}/{sequence}/{epoch}`.
const TAGGED_PREFIX: &str = "/live/";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How the test replaces the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Write a sibling file, then rename it over the configuration (editors, ConfigMaps).
    Rename,
    /// Overwrite the file's bytes in place, without truncating (every version padded to
    /// [`IN_PLACE_FILE_BYTES`]).
    InPlace,
}

/// A configuration file in its own temporary directory, removed on drop.
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
    mode: WriteMode,
    writes: AtomicU64,
}

impl ConfigFile {
    /// Create `live.toml` holding `text` in a fresh directory under the system's temp dir.
    pub fn create(tag: &str, mode: WriteMode, text: &str) -> ConfigFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "coremesh-live-{}-{tag}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let file = ConfigFile {
            path: dir.join("live.toml"),
            dir,
            mode,
            writes: AtomicU64::new(0),
        };
        if let Err(e) = std::fs::write(&file.path, file.bytes_of(text)) {
            panic!("cannot write {}: {e}", file.path.display());
        }
        file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The origin the controller names in its errors (`{origin}:{line}:{column}: ...`).
    pub fn origin(&self) -> String {
        self.path.display().to_string()
    }

    pub fn mode(&self) -> WriteMode {
        self.mode
    }

    /// Replace the file's content with `text`, the way [`WriteMode`] says.
    pub fn write(&self, text: &str) {
        let bytes = self.bytes_of(text);
        match self.mode {
            WriteMode::Rename => {
                let n = self.writes.fetch_add(1, Ordering::SeqCst);
                let staging = self.dir.join(format!("live.toml.{n}.tmp"));
                if let Err(e) = std::fs::write(&staging, &bytes) {
                    panic!("cannot write {}: {e}", staging.display());
                }
                if let Err(e) = std::fs::rename(&staging, &self.path) {
                    panic!("cannot rename onto {}: {e}", self.path.display());
                }
            }
            WriteMode::InPlace => {
                use std::os::unix::fs::FileExt;
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&self.path)
                    .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path.display()));
                // One positioned write of the whole (same-sized) file: no truncation.
                file.write_all_at(&bytes, 0)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", self.path.display()));
            }
        }
    }

    fn bytes_of(&self, text: &str) -> Vec<u8> {
        let mut bytes = text.as_bytes().to_vec();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        if self.mode == WriteMode::InPlace {
            // `#` + padding + `\n`: a comment line after everything else.
            assert!(
                bytes.len() + 2 <= IN_PLACE_FILE_BYTES,
                "a configuration of {} bytes does not fit the in-place size {IN_PLACE_FILE_BYTES}",
                bytes.len()
            );
            bytes.push(b'#');
            bytes.resize(IN_PLACE_FILE_BYTES - 1, b' ');
            bytes.push(b'\n');
        }
        bytes
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Snapshots handed to the proxy, in order, each recorded after its `install` returned.
#[derive(Default)]
struct Installed {
    snapshots: Mutex<Vec<Arc<Snapshot>>>,
    changed: Condvar,
}

/// The proxy (with its admin server) and a discovery controller following a [`ConfigFile`],
/// wired as `coremesh run` wires them. Discovery is stopped before the proxy on drop.
pub struct LiveProxy {
    discovery: Option<DiscoveryHandle>,
    proxy: Option<AdminProxy>,
    installed: Arc<Installed>,
    cores: usize,
    driver: Driver,
}

impl LiveProxy {
    /// Start the proxy on `driver` with the configuration `file` holds now (its `[proxy]`
    /// must already be what [`start_with_admin`] runs: listen and admin on 127.0.0.1:0,
    /// no pinning, a fixed number of cores), then the controller; waits until the file
    /// source has read the file once.
    pub fn start(driver: Driver, file: &ConfigFile) -> LiveProxy {
        let text = std::fs::read_to_string(file.path())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.path().display()));
        let config = parse_config(&text, &file.origin())
            .unwrap_or_else(|e| panic!("the initial configuration is invalid:\n{e}"));
        assert!(
            config.proxy.cores > 0,
            "the file must fix [proxy] cores, to know how many reports a scrape must merge"
        );
        assert_eq!(
            config.proxy.driver, driver,
            "the file's [proxy] driver must be the one the test runs"
        );
        let cores = config.proxy.cores;
        let proxy = start_with_admin(driver, config.clone());
        let installed = Arc::new(Installed::default());
        let installer = proxy.installer();
        let record = installed.clone();
        let discovery = Discovery::start(Some(file.path().to_owned()), config, move |s| {
            installer.install(s.clone());
            lock(&record.snapshots).push(s);
            record.changed.notify_all();
        })
        .unwrap_or_else(|e| panic!("Discovery::start failed: {e}"));
        assert!(
            discovery.wait_ready(LIVE_WAIT),
            "driver {}: discovery never read the configuration file: {:?}",
            driver_name(driver),
            discovery.stats()
        );
        LiveProxy {
            discovery: Some(discovery),
            proxy: Some(proxy),
            installed,
            cores,
            driver,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.proxy().addr()
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    pub fn proxy(&self) -> &AdminProxy {
        self.proxy
            .as_ref()
            .expect("LiveProxy holds its proxy until dropped")
    }

    pub fn discovery(&self) -> &DiscoveryHandle {
        self.discovery
            .as_ref()
            .expect("LiveProxy holds its controller until dropped")
    }

    pub fn stats(&self) -> DiscoveryStats {
        self.discovery().stats()
    }

    /// `reload_now`, as SIGHUP does in `coremesh run`.
    pub fn reload_now(&self) -> ReloadOutcome {
        self.discovery().reload_now()
    }

    /// Snapshots installed so far.
    pub fn installed_count(&self) -> usize {
        lock(&self.installed.snapshots).len()
    }

    /// Wait until `n` snapshots have been installed; the `n`th (1-based), or `None` after
    /// [`LIVE_WAIT`].
    pub fn wait_installed(&self, n: usize) -> Option<Arc<Snapshot>> {
        assert!(n > 0, "snapshots are counted from 1");
        let deadline = Instant::now() + LIVE_WAIT;
        let mut snapshots = lock(&self.installed.snapshots);
        while snapshots.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            snapshots = self
                .installed
                .changed
                .wait_timeout(snapshots, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Some(snapshots[n - 1].clone())
    }

    /// The barrier: scrape `/metrics` until a scrape merged every core and shows, for each
    /// service in `expected`, exactly those endpoints, each seen by every core. Call it
    /// after [`wait_installed`](Self::wait_installed) returned the snapshot: then every
    /// core has switched to it (see the module documentation). Err with the last scrape's
    /// summary after the admin wait.
    pub fn wait_in_force_on_every_core(
        &self,
        expected: &BTreeMap<String, BTreeSet<SocketAddr>>,
    ) -> Result<(), String> {
        let cores = self.cores as f64;
        wait_for_admin(|| {
            let text = self.proxy().metrics_text();
            let m = match Exposition::parse(&text) {
                Ok(m) => m,
                Err(e) => return (None, format!("unparsable /metrics: {e}")),
            };
            let merged = m.value("coremesh_cores", &[]);
            let mut seen: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
            for sample in m.matching("coremesh_endpoint_state", &[]) {
                if let (Some(service), Some(endpoint)) =
                    (sample.labels.get("service"), sample.labels.get("endpoint"))
                {
                    *seen
                        .entry(service.clone())
                        .or_default()
                        .entry(endpoint.clone())
                        .or_default() += sample.value;
                }
            }
            let all_there = merged == Some(cores)
                && expected.iter().all(|(service, endpoints)| {
                    let want: BTreeMap<String, f64> =
                        endpoints.iter().map(|a| (a.to_string(), cores)).collect();
                    seen.get(service).cloned().unwrap_or_default() == want
                });
            let summary = format!("coremesh_cores {merged:?}, endpoint states per core {seen:?}");
            (all_there.then_some(()), summary)
        })
    }
}

impl Drop for LiveProxy {
    fn drop(&mut self) {
        if let Some(discovery) = self.discovery.take() {
            discovery.stop();
        }
        drop(self.proxy.take());
    }
}

/// A request an upstream received with a tagged path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub client: u32,
    pub sequence: u64,
    pub epoch: u32,
}

/// Parse `/live/{client}/{sequence}/{epoch}`.
pub fn parse_tag(path: &str) -> Option<Tag> {
    let mut parts = path.strip_prefix(TAGGED_PREFIX)?.split('/');
    let tag = Tag {
        client: parts.next()?.parse().ok()?,
        sequence: parts.next()?.parse().ok()?,
        epoch: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(tag)
}

struct UpstreamLog {
    tags: Mutex<Vec<Tag>>,
    untagged: AtomicU64,
    /// Highest epoch tag received; -1 before the first.
    max_epoch: AtomicI64,
}

/// Echo upstreams named `up0`, `up1`, ... that log the tag of every request they receive.
pub struct TaggedUpstreams {
    upstreams: Vec<Upstream>,
    logs: Vec<Arc<UpstreamLog>>,
}

impl TaggedUpstreams {
    pub fn start(n: usize) -> TaggedUpstreams {
        let mut upstreams = Vec::with_capacity(n);
        let mut logs = Vec::with_capacity(n);
        for i in 0..n {
            let log = Arc::new(UpstreamLog {
                tags: Mutex::new(Vec::new()),
                untagged: AtomicU64::new(0),
                max_epoch: AtomicI64::new(-1),
            });
            let handler_log = log.clone();
            upstreams.push(Upstream::start(&upstream_name(i), move |req| {
                match parse_tag(&req.path) {
                    Some(tag) => {
                        lock(&handler_log.tags).push(tag);
                        handler_log
                            .max_epoch
                            .fetch_max(i64::from(tag.epoch), Ordering::SeqCst);
                    }
                    None => {
                        handler_log.untagged.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Action::Respond(Response::ok(echo_body(req)))
            }));
            logs.push(log);
        }
        TaggedUpstreams { upstreams, logs }
    }

    pub fn len(&self) -> usize {
        self.upstreams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.upstreams[i].addr()
    }

    /// The index of the upstream listening on `addr`.
    pub fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.upstreams.iter().position(|u| u.addr() == addr)
    }

    /// Tagged requests received by upstream `i`, in arrival order.
    pub fn tags(&self, i: usize) -> Vec<Tag> {
        lock(&self.logs[i].tags).clone()
    }

    /// Untagged requests received by upstream `i`.
    pub fn untagged(&self, i: usize) -> u64 {
        self.logs[i].untagged.load(Ordering::SeqCst)
    }

    /// Whether upstream `i` has received a request tagged `epoch` or later.
    pub fn reached_in(&self, i: usize, epoch: u32) -> bool {
        self.logs[i].max_epoch.load(Ordering::SeqCst) >= i64::from(epoch)
    }

    /// Protocol errors any upstream saw.
    pub fn errors(&self) -> Vec<String> {
        self.upstreams
            .iter()
            .flat_map(|u| {
                u.errors()
                    .into_iter()
                    .map(move |e| format!("{}: {e}", u.name()))
            })
            .collect()
    }
}

/// `up{i}`, as `x-upstream` names upstream `i`.
pub fn upstream_name(i: usize) -> String {
    format!("up{i}")
}

fn upstream_index(name: &str) -> Option<usize> {
    name.strip_prefix("up")?.parse().ok()
}

/// One request a load client completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub sequence: u64,
    /// Epoch read just before the request was written (its tag).
    pub epoch_before: u32,
    /// Epoch read just after its response was read.
    pub epoch_after: u32,
    /// Upstream index that answered (`x-upstream`).
    pub upstream: usize,
}

/// What the load saw, per client.
#[derive(Debug, Default)]
pub struct TaggedReport {
    pub completed: Vec<Vec<Completed>>,
    /// Every failed request: a non-2xx, a wrong echo, a written request without a full
    /// response, a failed write or connect, or the proxy closing a keep-alive connection.
    pub failures: Vec<String>,
}

impl TaggedReport {
    pub fn total(&self) -> usize {
        self.completed.iter().map(Vec::len).sum()
    }
}

/// Keep-alive clients sending tagged GETs back to back until stopped.
pub struct TaggedLoad {
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicU32>,
    per_epoch: Arc<Vec<AtomicU64>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<Vec<Completed>>>,
}

impl TaggedLoad {
    /// Start `clients` threads against `addr`; epochs run from 0 to `epochs - 1`;
    /// `upstreams` is how many `up{i}` may answer.
    pub fn start(addr: SocketAddr, clients: usize, epochs: usize, upstreams: usize) -> TaggedLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Arc::new(AtomicU32::new(0));
        let per_epoch = Arc::new((0..epochs).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|id| {
                let client = LoadClient {
                    id: id as u32,
                    addr,
                    upstreams,
                    stop: stop.clone(),
                    epoch: epoch.clone(),
                    per_epoch: per_epoch.clone(),
                    failures: failures.clone(),
                };
                std::thread::Builder::new()
                    .name(format!("live-load-{id}"))
                    .spawn(move || client.run())
                    .expect("spawn a load client")
            })
            .collect();
        TaggedLoad {
            stop,
            epoch,
            per_epoch,
            failures,
            threads,
        }
    }

    /// From now on requests are tagged `epoch` (call once version `epoch` is in force on
    /// every core).
    pub fn set_epoch(&self, epoch: u32) {
        assert!(
            (epoch as usize) < self.per_epoch.len(),
            "epoch {epoch} out of range"
        );
        self.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Requests tagged `epoch` that completed successfully.
    pub fn completed_in(&self, epoch: u32) -> u64 {
        self.per_epoch[epoch as usize].load(Ordering::SeqCst)
    }

    /// Failures so far.
    pub fn failures(&self) -> Vec<String> {
        lock(&self.failures).clone()
    }

    /// Stop every client after its current request, and collect what they saw.
    pub fn stop(self) -> TaggedReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut completed = Vec::new();
        for (id, t) in self.threads.into_iter().enumerate() {
            match t.join() {
                Ok(c) => completed.push(c),
                Err(_) => {
                    lock(&self.failures).push(format!("client {id}: its thread panicked"));
                    completed.push(Vec::new());
                }
            }
        }
        let failures = lock(&self.failures).clone();
        TaggedReport {
            completed,
            failures,
        }
    }
}

struct LoadClient {
    id: u32,
    addr: SocketAddr,
    upstreams: usize,
    stop: Arc<AtomicBool>,
    epoch: Arc<AtomicU32>,
    per_epoch: Arc<Vec<AtomicU64>>,
    failures: Arc<Mutex<Vec<String>>>,
}

impl LoadClient {
    fn fail(&self, why: String) {
        lock(&self.failures).push(format!("client {}: {why}", self.id));
    }

    fn run(self) -> Vec<Completed> {
        let mut completed = Vec::new();
        let mut sequence = 0u64;
        let mut connection: Option<Client> = None;
        while !self.stop.load(Ordering::SeqCst) {
            let client = match &mut connection {
                Some(c) => c,
                None => match Client::connect(self.addr) {
                    Ok(c) => connection.insert(c),
                    Err(e) => {
                        self.fail(format!("connect failed: {e}"));
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                },
            };
            if client.peer_closed_now() {
                self.fail(format!(
                    "the proxy closed the keep-alive connection before request {sequence}"
                ));
                connection = None;
                continue;
            }
            let epoch_before = self.epoch.load(Ordering::SeqCst);
            let target = format!("{TAGGED_PREFIX}{}/{sequence}/{epoch_before}", self.id);
            sequence += 1;
            if let Err(e) = client.send_request("GET", &target, &[], None) {
                self.fail(format!("writing {target} failed: {e}"));
                connection = None;
                continue;
            }
            let response = match client.read_response(false) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(format!(
                        "{target} was written and got no full response: {e}"
                    ));
                    connection = None;
                    continue;
                }
            };
            let epoch_after = self.epoch.load(Ordering::SeqCst);
            let echoed = format!("GET {target} HTTP/1.1\n");
            let upstream = response
                .header("x-upstream")
                .and_then(|n| upstream_index(&n))
                .filter(|&i| i < self.upstreams);
            match upstream {
                Some(upstream)
                    if response.status == 200 && response.body.starts_with(echoed.as_bytes()) =>
                {
                    completed.push(Completed {
                        sequence: sequence - 1,
                        epoch_before,
                        epoch_after,
                        upstream,
                    });
                    self.per_epoch[epoch_before as usize].fetch_add(1, Ordering::SeqCst);
                }
                _ => {
                    self.fail(format!(
                        "{target}: status {}, x-upstream {:?}, x-coremesh-error {:?}, body {:?}",
                        response.status,
                        response.header("x-upstream"),
                        response.header("x-coremesh-error"),
                        String::from_utf8_lossy(&response.body[..response.body.len().min(120)])
                    ));
                }
            }
            if response.has_connection_close() {
                connection = None;
            }
        }
        completed
    }
}

/// Check every request against the versions: `in_force[k]` is the set of upstream indices
/// that are endpoints (of any service) while version `k` is in force. Client side: each
/// response came from an upstream of some version in `before ..= after + 1`. Upstream side:
/// every tagged request an upstream received is one a client completed, received exactly
/// once, by the upstream that answered it. Returns every violation (the first 20 in full).
pub fn check_against_versions(
    in_force: &[BTreeSet<usize>],
    report: &TaggedReport,
    upstreams: &TaggedUpstreams,
) -> Vec<String> {
    let last = in_force.len().saturating_sub(1);
    let mut violations = Vec::new();
    let mut by_request: HashMap<(u32, u64), (usize, u32, u32)> = HashMap::new();
    for (client, completed) in report.completed.iter().enumerate() {
        for c in completed {
            let from = c.epoch_before as usize;
            let to = (c.epoch_after as usize + 1).min(last);
            if !(from..=to).any(|k| in_force[k].contains(&c.upstream)) {
                violations.push(format!(
                    "client {client} request {} (written in epoch {}, answered by epoch {}) \
                     was answered by {}, an endpoint of none of versions {from}..={to}",
                    c.sequence,
                    c.epoch_before,
                    c.epoch_after,
                    upstream_name(c.upstream)
                ));
            }
            by_request.insert(
                (client as u32, c.sequence),
                (c.upstream, c.epoch_before, c.epoch_after),
            );
        }
    }
    let mut receipts: HashMap<(u32, u64), u32> = HashMap::new();
    for i in 0..upstreams.len() {
        for tag in upstreams.tags(i) {
            *receipts.entry((tag.client, tag.sequence)).or_default() += 1;
            match by_request.get(&(tag.client, tag.sequence)) {
                None => violations.push(format!(
                    "{} received client {} request {} (epoch {}) that no client completed",
                    upstream_name(i),
                    tag.client,
                    tag.sequence,
                    tag.epoch
                )),
                Some(&(answered_by, _, _)) if answered_by != i => violations.push(format!(
                    "{} received client {} request {}, answered by {}",
                    upstream_name(i),
                    tag.client,
                    tag.sequence,
                    upstream_name(answered_by)
                )),
                Some(_) => {}
            }
        }
    }
    for (&(client, sequence), &(upstream, before, after)) in &by_request {
        let n = receipts.get(&(client, sequence)).copied().unwrap_or(0);
        if n != 1 {
            violations.push(format!(
                "client {client} request {sequence} (epochs {before}..{after}, answered by {}) \
                 was received {n} times by the upstreams",
                upstream_name(upstream)
            ));
        }
    }
    if violations.len() > 20 {
        let more = violations.len() - 20;
        violations.truncate(20);
        violations.push(format!("... and {more} more"));
    }
    violations
}
