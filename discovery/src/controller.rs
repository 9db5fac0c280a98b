//! [`Discovery`]: the controller on the control thread that owns the sources (the
//! configuration file, DNS names, Kubernetes Services), merges what they report into the
//! configuration's services, and hands every core a new [`Snapshot`] when — and only
//! when — something changed.
//!
//! How a change reaches the cores:
//! 1. A source reports: the file watch finds a new valid version (an invalid one is
//!    refused and counted, and the configuration in force stays), a DNS lookup answers, an
//!    EndpointSlice event arrives.
//! 2. The controller records it and marks the state dirty. A new configuration also
//!    starts the sources it newly names and stops those it no longer names.
//! 3. `debounce_ms` after the first change of a burst (at once until every source has
//!    answered, so that the first snapshot pays no debounce), the controller merges and
//!    builds the snapshot ([`merged_snapshot`]: the endpoints, and the identities of meshed
//!    ones), and diffs it with the last one published ([`snapshot_diff`]). If anything differs it calls `on_snapshot` with an `Arc` of it
//!    (the proxy sends that to each core, which switches at a loop boundary) and logs the
//!    diff.
//!
//! All of it runs on one thread with a current-thread tokio runtime; nothing here is
//! touched by a data-plane core. [`DiscoveryHandle`] is how other threads talk to it:
//! counters and source status for metrics and the admin server, a forced reload for
//! SIGHUP, and a stop that joins the thread.

use crate::diff::snapshot_diff;
use crate::discovery_settings::{DnsSettings, KubernetesSettings};
use crate::dns_source;
use crate::file_watch::{FileCheck, FileWatch};
use crate::merge::{merged_snapshot, wanted_targets, ResolvedEndpoints};
use crate::source_event::{SourceEvent, SourceUpdate};
use crate::status::{DiscoveryStats, ReloadOutcome, SourceKind, SourceState, SourceStatus};
use crate::targets::{DnsTarget, KubernetesTarget};
use crate::{Config, ConfigErrors, Snapshot};
use hickory_resolver::TokioResolver;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// After the file is seen to change, it is read again this much later and used only if
/// both reads agree (a writer may still be writing it).
pub const FILE_SETTLE_DELAY: Duration = Duration::from_millis(50);
/// How long [`DiscoveryHandle::reload_now`] waits for the controller's answer.
pub const RELOAD_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start the discovery runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot start the discovery thread: {0}")]
    Thread(std::io::Error),
}

/// Starts the discovery controller; see the module documentation.
pub struct Discovery;

impl Discovery {
    /// Starts the controller thread.
    ///
    /// - `config_path`: the file to watch (and re-read on [`DiscoveryHandle::reload_now`]);
    ///   `None` runs the sources of `initial` without a file.
    /// - `initial`: the configuration in force, already validated; the proxy runs
    ///   `Snapshot::build(&initial)`, and `on_snapshot` is first called when the merged
    ///   snapshot differs from that one (typically when the first DNS answers and
    ///   EndpointSlices arrive, or at once when there are none).
    /// - `on_snapshot`: called on the controller thread with each new snapshot.
    pub fn start(
        config_path: Option<PathBuf>,
        initial: Config,
        on_snapshot: impl Fn(Arc<Snapshot>) + Send + 'static,
    ) -> Result<DiscoveryHandle, DiscoveryError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(DiscoveryError::Runtime)?;
        let published = Arc::new(Snapshot::build(&initial));
        let shared = Arc::new(Shared {
            state: Mutex::new(SharedState {
                stats: DiscoveryStats::default(),
                current: published.clone(),
                ready: false,
            }),
            changed: Condvar::new(),
        });
        let (commands, command_receiver) = mpsc::unbounded_channel();
        let controller_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("coremesh-discovery".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let (events, event_receiver) = mpsc::unbounded_channel();
                    let mut controller = Controller::new(
                        config_path,
                        initial,
                        published,
                        Box::new(on_snapshot),
                        controller_shared,
                        events,
                    );
                    controller.run(command_receiver, event_receiver).await;
                    controller.stop_sources();
                });
            })
            .map_err(DiscoveryError::Thread)?;
        Ok(DiscoveryHandle {
            commands,
            shared,
            thread: Some(thread),
        })
    }
}

/// The running controller, seen from other threads. Dropping it stops the controller.
pub struct DiscoveryHandle {
    commands: UnboundedSender<Command>,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DiscoveryHandle {
    /// Counters, the last error and the state of every source.
    pub fn stats(&self) -> DiscoveryStats {
        self.shared.lock().stats.clone()
    }

    /// The last snapshot handed to `on_snapshot` (before the first: `Snapshot::build` of
    /// the initial configuration).
    pub fn current(&self) -> Arc<Snapshot> {
        self.shared.lock().current.clone()
    }

    /// Re-reads the configuration file now (for SIGHUP) and says what came of it. Waits for
    /// the controller's answer, at most [`RELOAD_REPLY_TIMEOUT`].
    pub fn reload_now(&self) -> ReloadOutcome {
        let (reply, answer) = std::sync::mpsc::channel();
        if self.commands.send(Command::ReloadNow(reply)).is_err() {
            return ReloadOutcome::Stopped;
        }
        answer
            .recv_timeout(RELOAD_REPLY_TIMEOUT)
            .unwrap_or(ReloadOutcome::Stopped)
    }

    /// Waits until every source has answered at least once (successfully or not) and the
    /// resulting snapshot has been published; false if `timeout` passed first. Useful
    /// before taking traffic, so that DNS and Kubernetes services start with endpoints.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        while !state.ready {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = match self.shared.changed.wait_timeout(state, left) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    /// Stops every source and joins the controller thread.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the discovery thread panicked");
            }
        }
    }
}

impl Drop for DiscoveryHandle {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// The handle moves to (and is shared with) the proxy's signal and admin threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<DiscoveryHandle>();
};

enum Command {
    ReloadNow(std::sync::mpsc::Sender<ReloadOutcome>),
    Stop,
}

/// What the controller shares with [`DiscoveryHandle`]: written by the controller after
/// each step, read by anyone.
struct Shared {
    state: Mutex<SharedState>,
    changed: Condvar,
}

struct SharedState {
    stats: DiscoveryStats,
    current: Arc<Snapshot>,
    ready: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SharedState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The DNS tasks of one `[discovery.dns]` setting and the resolver they share.
struct DnsSources {
    settings: DnsSettings,
    resolver: Arc<OnceCell<Arc<TokioResolver>>>,
    tasks: BTreeMap<DnsTarget, JoinHandle<()>>,
}

/// The Kubernetes tasks of one `[discovery.kubernetes]` setting.
struct KubernetesSources {
    #[cfg(feature = "kubernetes")]
    client: Arc<crate::kubernetes_source::SharedClient>,
    tasks: BTreeMap<KubernetesTarget, JoinHandle<()>>,
}

impl KubernetesSources {
    fn new(settings: &KubernetesSettings) -> KubernetesSources {
        #[cfg(not(feature = "kubernetes"))]
        let _ = settings;
        KubernetesSources {
            #[cfg(feature = "kubernetes")]
            client: crate::kubernetes_source::SharedClient::new(settings.clone()),
            tasks: BTreeMap::new(),
        }
    }
}

struct Controller {
    /// The configuration in force (as read: static endpoints only).
    config: Config,
    /// `[proxy]` as the process started with it (a change needs a restart).
    started_proxy: crate::ProxySettings,
    resolved: ResolvedEndpoints,
    published: Arc<Snapshot>,
    /// When the first unpublished change arrived.
    dirty_since: Option<Instant>,
    /// The controller has been ready (every source answered, the snapshot published): from
    /// then on a change waits `debounce_ms` for others. Before, nothing is waited for
    /// (start-to-ready pays no debounce).
    settled: bool,
    file: Option<FileWatch>,
    next_file_check: Instant,
    dns: DnsSources,
    kubernetes: KubernetesSources,
    kubernetes_settings: KubernetesSettings,
    stats: DiscoveryStats,
    statuses: BTreeMap<(SourceKind, String), SourceStatus>,
    events: UnboundedSender<SourceEvent>,
    shared: Arc<Shared>,
    on_snapshot: Box<dyn Fn(Arc<Snapshot>) + Send>,
}

impl Controller {
    fn new(
        config_path: Option<PathBuf>,
        config: Config,
        published: Arc<Snapshot>,
        on_snapshot: Box<dyn Fn(Arc<Snapshot>) + Send>,
        shared: Arc<Shared>,
        events: UnboundedSender<SourceEvent>,
    ) -> Controller {
        let mut statuses = BTreeMap::new();
        let file = config_path.map(|path| FileWatch::new(&path));
        if let Some(file) = &file {
            let target = file.path().display().to_string();
            let status = SourceStatus::pending(SourceKind::File, target.clone());
            statuses.insert((SourceKind::File, target), status);
        }
        let dns = DnsSources {
            settings: config.discovery.dns.clone(),
            resolver: Arc::new(OnceCell::new()),
            tasks: BTreeMap::new(),
        };
        let kubernetes_settings = config.discovery.kubernetes.clone();
        let mut controller = Controller {
            started_proxy: config.proxy.clone(),
            kubernetes: KubernetesSources::new(&kubernetes_settings),
            kubernetes_settings,
            config,
            resolved: ResolvedEndpoints::default(),
            published,
            dirty_since: None,
            settled: false,
            file,
            next_file_check: Instant::now(),
            dns,
            stats: DiscoveryStats::default(),
            statuses,
            events,
            shared,
            on_snapshot,
        };
        controller.reconcile_sources();
        // With no source to wait for, the initial snapshot is already complete.
        controller.mark_dirty();
        controller
    }

    async fn run(
        &mut self,
        mut commands: UnboundedReceiver<Command>,
        mut events: UnboundedReceiver<SourceEvent>,
    ) {
        loop {
            self.share();
            let debounce = if self.settled {
                Duration::from_millis(self.config.discovery.debounce_ms)
            } else {
                Duration::ZERO
            };
            let publish_at = self.dirty_since.map(|since| since + debounce);
            let far = Instant::now() + Duration::from_secs(3600);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::ReloadNow(reply)) => {
                        let outcome = self.reload_file(true);
                        // The counters the caller may read next already count this reload.
                        self.share();
                        let _ = reply.send(outcome);
                    }
                    Some(Command::Stop) | None => return,
                },
                Some(event) = events.recv() => self.on_source_event(event),
                _ = tokio::time::sleep_until(self.next_file_check.into()), if self.file.is_some() => {
                    self.reload_file(false);
                }
                _ = tokio::time::sleep_until(publish_at.unwrap_or(far).into()), if publish_at.is_some() => {
                    self.publish();
                }
            }
        }
    }

    /// Checks the file (`force`: read and apply it now, changed or not) and applies a
    /// new valid version.
    fn reload_file(&mut self, force: bool) -> ReloadOutcome {
        let Some(file) = &mut self.file else {
            return ReloadOutcome::NoConfigFile;
        };
        let poll = Duration::from_millis(self.config.discovery.file.poll_interval_ms);
        let target = file.path().display().to_string();
        let check = file.check(force);
        if !force {
            self.next_file_check = Instant::now()
                + match check {
                    FileCheck::Settling => FILE_SETTLE_DELAY.min(poll),
                    _ => poll,
                };
        }
        match check {
            FileCheck::Unchanged | FileCheck::Settling => ReloadOutcome::Unchanged,
            FileCheck::Changed(Err(errors)) => self.refuse(&target, errors),
            FileCheck::Changed(Ok(config)) => self.apply_config(&target, *config),
        }
    }

    fn refuse(&mut self, target: &str, errors: ConfigErrors) -> ReloadOutcome {
        self.stats.reloads_refused += 1;
        tracing::error!("configuration refused, the one in force stays:\n{errors}");
        let text = errors.to_string();
        self.record_error(text.clone());
        if let Some(status) = self
            .statuses
            .get_mut(&(SourceKind::File, target.to_owned()))
        {
            status.state = SourceState::Failing;
            status.last_error = Some(text);
            status.last_update = Some(SystemTime::now());
            status.updates += 1;
        }
        ReloadOutcome::Refused(errors)
    }

    fn apply_config(&mut self, target: &str, config: Config) -> ReloadOutcome {
        if let Some(status) = self
            .statuses
            .get_mut(&(SourceKind::File, target.to_owned()))
        {
            status.state = SourceState::Ok;
            status.last_update = Some(SystemTime::now());
            status.updates += 1;
        }
        if config == self.config {
            return ReloadOutcome::Unchanged;
        }
        self.stats.reloads_applied += 1;
        let restart_required = config.proxy != self.started_proxy;
        if restart_required && !self.stats.restart_required {
            tracing::warn!(
                "`[proxy]` changed in {target}: listeners, cores and driver change only on restart"
            );
        }
        self.stats.restart_required = restart_required;
        tracing::info!("configuration {target} reloaded");
        self.config = config;
        self.reconcile_sources();
        self.mark_dirty();
        ReloadOutcome::Applied
    }

    /// Starts the sources the configuration names and stops the others.
    fn reconcile_sources(&mut self) {
        let wanted = wanted_targets(&self.config);
        if self.config.discovery.dns != self.dns.settings {
            for (_, task) in std::mem::take(&mut self.dns.tasks) {
                task.abort();
            }
            // The answers so far stay in use until the restarted lookups replace them.
            self.dns.settings = self.config.discovery.dns.clone();
            self.dns.resolver = Arc::new(OnceCell::new());
        }
        if self.config.discovery.kubernetes != self.kubernetes_settings {
            for (_, task) in std::mem::take(&mut self.kubernetes.tasks) {
                task.abort();
            }
            self.kubernetes_settings = self.config.discovery.kubernetes.clone();
            self.kubernetes = KubernetesSources::new(&self.kubernetes_settings);
        }
        self.dns.tasks.retain(|target, task| {
            let keep = wanted.dns.contains(target);
            if !keep {
                task.abort();
            }
            keep
        });
        self.kubernetes.tasks.retain(|target, task| {
            let keep = wanted.kubernetes.contains(target);
            if !keep {
                task.abort();
            }
            keep
        });
        for target in &wanted.dns {
            if !self.dns.tasks.contains_key(target) {
                let task = tokio::spawn(run_dns(
                    target.clone(),
                    self.dns.resolver.clone(),
                    self.dns.settings.clone(),
                    self.events.clone(),
                ));
                self.dns.tasks.insert(target.clone(), task);
            }
        }
        for target in &wanted.kubernetes {
            if !self.kubernetes.tasks.contains_key(target) {
                let task = self.spawn_kubernetes(target.clone());
                self.kubernetes.tasks.insert(target.clone(), task);
            }
        }
        self.resolved.retain_wanted(&wanted);
        self.statuses.retain(|(kind, target), _| match kind {
            SourceKind::File => true,
            SourceKind::Dns => wanted.dns.iter().any(|t| t.to_string() == *target),
            SourceKind::Kubernetes => wanted.kubernetes.iter().any(|t| t.to_string() == *target),
        });
        let names = wanted
            .dns
            .iter()
            .map(|t| (SourceKind::Dns, t.to_string()))
            .chain(
                wanted
                    .kubernetes
                    .iter()
                    .map(|t| (SourceKind::Kubernetes, t.to_string())),
            );
        for (kind, target) in names {
            self.statuses
                .entry((kind, target.clone()))
                .or_insert_with(|| SourceStatus::pending(kind, target));
        }
    }

    #[cfg(feature = "kubernetes")]
    fn spawn_kubernetes(&self, target: KubernetesTarget) -> JoinHandle<()> {
        tokio::spawn(crate::kubernetes_source::run(
            target,
            self.kubernetes.client.clone(),
            self.events.clone(),
        ))
    }

    #[cfg(not(feature = "kubernetes"))]
    fn spawn_kubernetes(&self, target: KubernetesTarget) -> JoinHandle<()> {
        let events = self.events.clone();
        tokio::spawn(async move {
            let message = "this build of coremesh has no Kubernetes support (cargo feature \
                           `kubernetes` of coremesh-discovery)"
                .to_owned();
            let _ = events.send(SourceEvent::Kubernetes(
                target,
                SourceUpdate::Failed(message),
            ));
        })
    }

    fn on_source_event(&mut self, event: SourceEvent) {
        let (kind, target, update) = match event {
            SourceEvent::Dns(target, update) => {
                if !self.dns.tasks.contains_key(&target) {
                    return; // from a task stopped since
                }
                let name = target.to_string();
                if let SourceUpdate::Endpoints(endpoints) = &update {
                    if self.resolved.dns.get(&target) != Some(endpoints) {
                        self.resolved.dns.insert(target, endpoints.clone());
                        self.source_changed(SourceKind::Dns, &name, endpoints.len());
                    }
                }
                (SourceKind::Dns, name, update)
            }
            SourceEvent::Kubernetes(target, update) => {
                if !self.kubernetes.tasks.contains_key(&target) {
                    return;
                }
                let name = target.to_string();
                if let SourceUpdate::Addresses(addresses) = update {
                    if self.resolved.kubernetes_addresses.get(&target) != Some(&addresses) {
                        let list: Vec<String> = addresses.iter().map(|a| a.to_string()).collect();
                        tracing::info!("kubernetes {name}: claims [{}]", list.join(", "));
                        self.resolved.kubernetes_addresses.insert(target, addresses);
                        self.mark_dirty();
                    }
                    return;
                }
                if let SourceUpdate::Identities(identities) = update {
                    if self.resolved.kubernetes_identities.get(&target) != Some(&identities) {
                        tracing::info!("kubernetes {name}: {} meshed endpoints", identities.len());
                        self.resolved
                            .kubernetes_identities
                            .insert(target, identities);
                        self.mark_dirty();
                    }
                    return;
                }
                if let SourceUpdate::Endpoints(endpoints) = &update {
                    if self.resolved.kubernetes.get(&target) != Some(endpoints) {
                        self.resolved.kubernetes.insert(target, endpoints.clone());
                        self.source_changed(SourceKind::Kubernetes, &name, endpoints.len());
                    }
                }
                (SourceKind::Kubernetes, name, update)
            }
        };
        let Some(status) = self.statuses.get_mut(&(kind, target.clone())) else {
            return;
        };
        let was_pending = status.state == SourceState::Pending;
        status.last_update = Some(SystemTime::now());
        match update {
            SourceUpdate::Endpoints(endpoints) => {
                if status.state == SourceState::Failing {
                    tracing::info!("{} {target}: recovered", kind.as_str());
                }
                status.state = SourceState::Ok;
                status.endpoints = endpoints.len();
            }
            SourceUpdate::Failed(message) => {
                if status.last_error.as_deref() != Some(message.as_str())
                    || status.state != SourceState::Failing
                {
                    tracing::warn!(
                        "{} {target}: {message} (its last endpoints, {}, stay in use)",
                        kind.as_str(),
                        status.endpoints
                    );
                }
                status.state = SourceState::Failing;
                status.last_error = Some(message.clone());
                self.record_error(message);
            }
            // Handled above, without changing the source's state.
            SourceUpdate::Addresses(_) | SourceUpdate::Identities(_) => {}
        }
        if was_pending {
            // The first answer of a source completes the start-up snapshot.
            self.mark_dirty();
        }
    }

    fn source_changed(&mut self, kind: SourceKind, target: &str, endpoints: usize) {
        tracing::info!("{} {target}: {endpoints} endpoints", kind.as_str());
        if let Some(status) = self.statuses.get_mut(&(kind, target.to_owned())) {
            status.updates += 1;
        }
        self.mark_dirty();
    }

    fn record_error(&mut self, message: String) {
        self.stats.last_error = Some(message);
        self.stats.last_error_at = Some(SystemTime::now());
    }

    fn mark_dirty(&mut self) {
        self.dirty_since.get_or_insert_with(Instant::now);
    }

    /// Builds the merged snapshot and hands it over if it differs from the last one.
    fn publish(&mut self) {
        self.dirty_since = None;
        let snapshot = merged_snapshot(&self.config, &self.resolved);
        let diff = snapshot_diff(&self.published, &snapshot);
        if diff.is_empty() {
            return;
        }
        let snapshot = Arc::new(snapshot);
        self.stats.snapshots_published += 1;
        tracing::info!("snapshot {}: {diff}", self.stats.snapshots_published);
        self.published = snapshot.clone();
        // Whoever receives the snapshot sees counters and `current()` that include it.
        self.share();
        (self.on_snapshot)(snapshot);
    }

    /// Copies counters, statuses and the current snapshot to [`Shared`].
    fn share(&mut self) {
        self.stats.sources = self.statuses.values().cloned().collect();
        let ready = self.dirty_since.is_none()
            && self
                .statuses
                .values()
                .all(|status| status.state != SourceState::Pending);
        self.settled |= ready;
        let mut state = self.shared.lock();
        state.stats = self.stats.clone();
        state.current = self.published.clone();
        state.ready = ready;
        drop(state);
        self.shared.changed.notify_all();
    }

    fn stop_sources(&mut self) {
        for (_, task) in std::mem::take(&mut self.dns.tasks) {
            task.abort();
        }
        for (_, task) in std::mem::take(&mut self.kubernetes.tasks) {
            task.abort();
        }
        self.share();
    }
}

/// One DNS entry's task: gets the shared resolver (built on first use; a failure is
/// reported and retried), then runs [`dns_source::run`].
async fn run_dns(
    target: DnsTarget,
    resolver: Arc<OnceCell<Arc<TokioResolver>>>,
    settings: DnsSettings,
    events: UnboundedSender<SourceEvent>,
) {
    let mut failures = 0;
    let resolver = loop {
        let built = resolver
            .get_or_try_init(|| async { dns_source::build_resolver(&settings).map(Arc::new) })
            .await;
        match built {
            Ok(resolver) => break resolver.clone(),
            Err(message) => {
                failures += 1;
                let event = SourceEvent::Dns(target.clone(), SourceUpdate::Failed(message));
                if events.send(event).is_err() {
                    return;
                }
                tokio::time::sleep(dns_source::retry_after(failures, &settings)).await;
            }
        }
    };
    dns_source::run(target, resolver, settings, events).await;
}
