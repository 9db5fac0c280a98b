//! Support for discovery's integration tests: a real DNS server on loopback, an API server
//! stand-in for Kubernetes, temporary directories and bounded waits.
#![allow(dead_code)]

#[cfg(feature = "kubernetes")]
pub mod api_server_stand_in;
pub mod dns_server;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen within milliseconds before it
/// fails: generous, since CI machines are slow, and never reached when things work.
pub const PATIENCE: Duration = Duration::from_secs(20);

/// Polls `condition` every 5 ms until it holds or [`PATIENCE`] runs out; panics with
/// `what` then.
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A directory under the system's temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!(
            "coremesh-discovery-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        if let Err(error) = std::fs::create_dir_all(&path) {
            panic!("cannot create {}: {error}", path.display());
        }
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `path` in place (truncate and write).
pub fn write_in_place(path: &Path, text: &str) {
    if let Err(error) = std::fs::write(path, text) {
        panic!("cannot write {}: {error}", path.display());
    }
}

/// Replaces `path` by writing a sibling file and renaming it over `path`, as editors and
/// Kubernetes ConfigMap volumes do.
pub fn replace_by_rename(path: &Path, text: &str) {
    let staging = path.with_extension("staging");
    write_in_place(&staging, text);
    if let Err(error) = std::fs::rename(&staging, path) {
        panic!("cannot rename onto {}: {error}", path.display());
    }
}
