//! Rotation: [`Reloader`] notices a change of the certificate, key or trust anchor files
//! (modification time, size, inode: a replaced file or a swapped Kubernetes secret
//! symlink) and loads them again; [`Watcher`] calls it on its own thread every
//! `reload_interval_ms`. A new identity that fails any check (unreadable, bad PEM, key not
//! the certificate's, expired, not an SVID, not chained to the anchors) is refused with one
//! log line and the identity in force stays; the same broken files are not retried until
//! they change again.
//!
//! The files' state is taken before they are read, so a write that lands in between is
//! seen as a change at the next poll, which reads the files again. When those are what is
//! already in force (the renewal was read at the first poll already), nothing is
//! installed, counted or logged a second time: a renewal is installed once.

use super::load::{unix_seconds, Identity};
use super::metrics::IdentityMetrics;
use super::reason::IdentityError;
use super::store::IdentityStore;
use coremesh_discovery::{IdentitySettings, SpiffeId};
use crossbeam_channel::{bounded, RecvTimeoutError, Sender};
use rustls::pki_types::UnixTime;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What one file looked like at a poll (`None`: it could not be read).
type Stamp = Option<(i64, i64, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.mtime(), m.mtime_nsec(), m.len(), m.ino()))
}

fn stamps(settings: &IdentitySettings) -> [Stamp; 3] {
    [
        stamp(&settings.cert),
        stamp(&settings.key),
        stamp(&settings.trust_anchors),
    ]
}

/// The outcome of a poll that saw a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The new identity is in force.
    Installed { id: SpiffeId, not_after: i64 },
    /// The new files were refused; the identity in force stays.
    Refused(IdentityError),
}

/// Reloads the identity when its files change.
pub struct Reloader {
    settings: IdentitySettings,
    store: IdentityStore,
    metrics: Arc<IdentityMetrics>,
    seen: [Stamp; 3],
    /// The identity in force expired and that was logged (once, until a new one).
    expiry_logged: bool,
}

impl Reloader {
    /// A reloader for the files `settings` names, which `store`'s identity was loaded from
    /// (their state now counts as seen).
    pub fn new(
        settings: IdentitySettings,
        store: IdentityStore,
        metrics: Arc<IdentityMetrics>,
    ) -> Reloader {
        let seen = stamps(&settings);
        Reloader {
            settings,
            store,
            metrics,
            seen,
            expiry_logged: false,
        }
    }

    /// Looks at the files once: `None` when nothing changed since the last look,
    /// otherwise what became of the change (logged and counted).
    pub fn poll(&mut self, now: UnixTime) -> Option<ReloadOutcome> {
        // The state is taken before the files are read: a write that lands after it is
        // seen as a change at the next poll.
        let current = stamps(&self.settings);
        self.poll_at(current, now)
    }

    /// [`poll`](Self::poll) with the files' state `current`, taken before they are read.
    fn poll_at(&mut self, current: [Stamp; 3], now: UnixTime) -> Option<ReloadOutcome> {
        if current == self.seen {
            self.log_expiry(now);
            return None;
        }
        self.seen = current;
        let in_force = self.store.current();
        match Identity::load(&self.settings, now) {
            // What is in force already (read by an earlier poll that raced the write).
            Ok(identity) if identity.same_as(&in_force) => {
                self.log_expiry(now);
                None
            }
            Ok(identity) => {
                let (id, not_after) = (identity.id.clone(), identity.not_after);
                let remaining = not_after - unix_seconds(now);
                self.store.install(identity);
                self.expiry_logged = false;
                self.metrics.installed(not_after);
                self.metrics.reload_ok();
                tracing::info!(
                    identity = %id,
                    expires_in_s = remaining,
                    "identity reloaded: new handshakes use the new certificate"
                );
                Some(ReloadOutcome::Installed { id, not_after })
            }
            Err(error) => {
                self.metrics.reload_refused(error.reason);
                tracing::warn!(
                    reason = error.reason.label(),
                    in_force = %in_force.id,
                    "identity reload refused, keeping the identity in force: {}",
                    error.detail
                );
                Some(ReloadOutcome::Refused(error))
            }
        }
    }
}

impl Reloader {
    /// Says once that the identity in force has expired and no renewal came: peers now
    /// refuse its handshakes.
    fn log_expiry(&mut self, now: UnixTime) {
        if self.expiry_logged {
            return;
        }
        let in_force = self.store.current();
        if unix_seconds(now) > in_force.not_after {
            self.expiry_logged = true;
            tracing::error!(
                identity = %in_force.id,
                not_after = in_force.not_after,
                "the identity in force has expired and no valid renewal arrived: peers refuse new handshakes"
            );
        }
    }
}

/// The thread that polls a [`Reloader`]; dropping it stops the thread.
pub struct Watcher {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    metrics: Arc<IdentityMetrics>,
}

impl Watcher {
    pub fn spawn(mut reloader: Reloader) -> std::io::Result<Watcher> {
        let interval = Duration::from_millis(reloader.settings.reload_interval_ms.max(1));
        let metrics = reloader.metrics.clone();
        let (stop, stopped) = bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("coremesh-identity".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => {
                        reloader.poll(UnixTime::now());
                    }
                    _ => return,
                }
            })?;
        Ok(Watcher {
            stop: Some(stop),
            thread: Some(thread),
            metrics,
        })
    }

    /// The metrics of the identity it keeps current (its proxy's, for `/metrics`).
    pub fn metrics(&self) -> &Arc<IdentityMetrics> {
        &self.metrics
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{stamps, ReloadOutcome, Reloader};
    use crate::identity::test_pki::{Ca, TempDir};
    use crate::identity::{Identity, IdentityMetrics, IdentityStore};
    use coremesh_discovery::IdentitySettings;
    use rustls::pki_types::UnixTime;
    use std::sync::Arc;

    const API: &str = "spiffe://td/ns/prod/sa/api";

    /// A renewal completed after a poll took the files' state and before it read them is
    /// installed by that poll; the next poll sees the change of state, reads the same
    /// renewal, and installs nothing (one reload, one log line, the same identity).
    #[test]
    fn a_renewal_that_races_the_poll_is_installed_once() {
        let ca = Ca::new("race ca");
        let dir = TempDir::new("race");
        let first = ca.svid(API);
        dir.replace("svid.pem", &first.cert);
        dir.replace("svid.key", &first.key);
        dir.replace("bundle.pem", &ca.pem);
        let settings = IdentitySettings {
            cert: dir.path("svid.pem"),
            key: dir.path("svid.key"),
            trust_anchors: dir.path("bundle.pem"),
            ..IdentitySettings::default()
        };
        let now = UnixTime::now();
        let loaded = Identity::load(&settings, now).unwrap_or_else(|e| panic!("{e}"));
        let store = IdentityStore::new(loaded);
        let metrics = Arc::new(IdentityMetrics::new());
        let mut reloader = Reloader::new(settings.clone(), store.clone(), metrics.clone());

        // The renewal's key is written; a poll begins and takes the state of the files
        // (a change)...
        let renewal = ca.svid(API);
        dir.replace("svid.key", &renewal.key);
        let before_the_write = stamps(&settings);
        // ...the renewal's certificate is written...
        dir.replace("svid.pem", &renewal.cert);
        // ...and the poll reads the files: the whole renewal.
        assert!(matches!(
            reloader.poll_at(before_the_write, now),
            Some(ReloadOutcome::Installed { .. })
        ));
        let installed = store.current();
        assert_eq!(metrics.reloads_ok(), 1);
        // The next poll sees the files' new state: the same renewal, not installed again.
        assert_eq!(reloader.poll(now), None);
        assert_eq!(metrics.reloads_ok(), 1, "the renewal was installed once");
        assert!(
            Arc::ptr_eq(&installed, &store.current()),
            "the identity in force was not replaced"
        );
        assert_eq!(reloader.poll(now), None);

        // A new trust bundle with the same certificate is a change: installed.
        let next_ca = Ca::new("next ca");
        dir.replace("bundle.pem", &format!("{}{}", ca.pem, next_ca.pem));
        assert!(matches!(
            reloader.poll(now),
            Some(ReloadOutcome::Installed { .. })
        ));
        assert_eq!(metrics.reloads_ok(), 2);
        assert_eq!(store.current().roots.len(), 2);
    }
}
