//! What the discovery controller reports for metrics and the admin server:
//! [`DiscoveryStats`] (reload counters, the last error, one [`SourceStatus`] per source) and
//! [`ReloadOutcome`] (the answer to a forced reload, e.g. on SIGHUP).

use crate::error::ConfigErrors;
use std::time::SystemTime;

/// Counters and per-source state, as of the controller's last change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryStats {
    /// Configuration file versions accepted (valid and different from the one in force).
    pub reloads_applied: u64,
    /// Configuration file versions refused (invalid or unreadable); the previous
    /// configuration stayed in force each time.
    pub reloads_refused: u64,
    /// Snapshots handed to `on_snapshot`.
    pub snapshots_published: u64,
    /// The last error of any source (a refused file's errors, one per line), or none.
    pub last_error: Option<String>,
    /// When `last_error` was recorded.
    pub last_error_at: Option<SystemTime>,
    /// A reload changed `[proxy]`, which only a restart applies.
    pub restart_required: bool,
    /// The file source first, then DNS and Kubernetes sources in name order.
    pub sources: Vec<SourceStatus>,
}

/// The kind of a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SourceKind {
    File,
    Dns,
    Kubernetes,
}

impl SourceKind {
    /// `file`, `dns` or `kubernetes`, as in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::File => "file",
            SourceKind::Dns => "dns",
            SourceKind::Kubernetes => "kubernetes",
        }
    }
}

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceState {
    /// No answer yet.
    Pending,
    /// Its last attempt succeeded.
    Ok,
    /// Its last attempt failed; its last good answer (if any) is still in use.
    Failing,
}

/// One source: the file, a DNS name or a Kubernetes Service.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceStatus {
    pub kind: SourceKind,
    /// The file's path, `host:port` or `name.namespace:port`.
    pub target: String,
    pub state: SourceState,
    /// Endpoints in the last good answer (for the file source: 0).
    pub endpoints: usize,
    /// Answers that changed the endpoint set (for the file source: versions read).
    pub updates: u64,
    /// The last failure's text; kept after a recovery, until the next failure replaces it.
    pub last_error: Option<String>,
    /// When the last answer (good or bad) arrived.
    pub last_update: Option<SystemTime>,
}

impl SourceStatus {
    pub(crate) fn pending(kind: SourceKind, target: String) -> SourceStatus {
        SourceStatus {
            kind,
            target,
            state: SourceState::Pending,
            endpoints: 0,
            updates: 0,
            last_error: None,
            last_update: None,
        }
    }
}

/// What a forced reload ([`DiscoveryHandle::reload_now`](crate::DiscoveryHandle::reload_now))
/// did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// The file is valid and differs from the configuration in force: it is now in force
    /// (the snapshot follows within the debounce window).
    Applied,
    /// The file is valid and the same as the configuration in force.
    Unchanged,
    /// The file is invalid or unreadable: the configuration in force stays.
    Refused(ConfigErrors),
    /// Discovery runs without a configuration file.
    NoConfigFile,
    /// The controller has stopped (or did not answer in time).
    Stopped,
}
