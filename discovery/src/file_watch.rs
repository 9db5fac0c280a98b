//! [`FileWatch`]: notices that the configuration file changed, by reading it and comparing
//! a hash of its bytes with the last one seen, and reads the new version.
//!
//! Polling rather than inotify: it needs no file-system support, sees a file replaced by
//! rename (how most editors and Kubernetes ConfigMap volumes update files) exactly like one
//! rewritten in place, and does not depend on timestamps, whose granularity can hide two
//! writes within one tick. Reading a configuration file twice a second costs nothing.
//!
//! A change is acted on once it has **settled**: the same bytes read twice in a row (the
//! controller re-checks after a short delay). A file caught half-written is then not
//! refused only to be accepted a moment later. A file that cannot be read (deleted,
//! renamed away, permissions) must also be seen twice in a row before it is reported, and
//! is reported once, not at every poll.

use crate::error::ConfigErrors;
use crate::parse::parse_config;
use crate::Config;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// What the file looked like at one check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// A hash of its bytes.
    Content(u64),
    /// It could not be read; the error text.
    Unreadable(String),
}

/// The outcome of one [`FileWatch::check`].
#[derive(Debug, Clone, PartialEq)]
pub enum FileCheck {
    /// Same as the last version acted on.
    Unchanged,
    /// Different, but not yet read twice the same: check again shortly.
    Settling,
    /// A new version (or a forced read): the parsed and validated configuration, or every
    /// error in it (an unreadable file is one error without position).
    Changed(Result<Box<Config>, ConfigErrors>),
}

/// Watches one configuration file.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    origin: String,
    /// The version last acted on.
    current: Option<Seen>,
    /// A different version seen once, waiting to be seen again.
    pending: Option<Seen>,
}

impl FileWatch {
    /// A watch that has seen nothing yet: its first check reports the file as changed
    /// (once it settles).
    pub fn new(path: &Path) -> FileWatch {
        FileWatch {
            path: path.to_owned(),
            origin: path.display().to_string(),
            current: None,
            pending: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file. With `force` (SIGHUP, `reload_now`), the file is parsed and reported
    /// whether or not it changed, without waiting for it to settle.
    pub fn check(&mut self, force: bool) -> FileCheck {
        let read = std::fs::read(&self.path).map_err(|error| format!("cannot read file: {error}"));
        // An empty file is a file being rewritten in place (truncated, not yet written):
        // wait for its content rather than run with no services and no routes. A forced
        // read reports it as an error.
        if read
            .as_ref()
            .is_ok_and(|bytes| bytes.iter().all(u8::is_ascii_whitespace))
        {
            if force {
                return FileCheck::Changed(Err(ConfigErrors::single(
                    &self.origin,
                    "the file is empty".to_string(),
                )));
            }
            return FileCheck::Settling;
        }
        let seen = match &read {
            Ok(bytes) => {
                let mut hasher = DefaultHasher::new();
                bytes.hash(&mut hasher);
                Seen::Content(hasher.finish())
            }
            Err(message) => Seen::Unreadable(message.clone()),
        };
        if !force {
            if self.current.as_ref() == Some(&seen) {
                self.pending = None;
                return FileCheck::Unchanged;
            }
            if self.pending.as_ref() != Some(&seen) {
                self.pending = Some(seen);
                return FileCheck::Settling;
            }
        }
        self.pending = None;
        self.current = Some(seen);
        let text = read.and_then(|bytes| {
            String::from_utf8(bytes).map_err(|error| format!("is not UTF-8: {error}"))
        });
        FileCheck::Changed(match text {
            Ok(text) => parse_config(&text, &self.origin).map(Box::new),
            Err(message) => Err(ConfigErrors::single(&self.origin, message)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str) -> TempFile {
            let path = std::env::temp_dir().join(format!(
                "coremesh-file-watch-{}-{name}.toml",
                std::process::id()
            ));
            TempFile(path)
        }

        fn write(&self, text: &str) {
            if let Err(error) = std::fs::write(&self.0, text) {
                panic!("cannot write {}: {error}", self.0.display());
            }
        }

        /// Replaces the file by rename, as editors and ConfigMap volumes do.
        fn replace(&self, text: &str) {
            let staging = self.0.with_extension("staging");
            if let Err(error) = std::fs::write(&staging, text) {
                panic!("cannot write {}: {error}", staging.display());
            }
            if let Err(error) = std::fs::rename(&staging, &self.0) {
                panic!("cannot rename onto {}: {error}", self.0.display());
            }
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    const VALID: &str = "[[services]]\nname = \"web\"\nendpoints = [\"10.0.0.1:80\"]\n";

    fn changed_config(check: FileCheck) -> Config {
        match check {
            FileCheck::Changed(Ok(config)) => *config,
            other => panic!("expected a valid change, got {other:?}"),
        }
    }

    #[test]
    fn a_change_is_reported_once_it_settles_and_then_once_only() {
        let file = TempFile::new("settle");
        file.write(VALID);
        let mut watch = FileWatch::new(&file.0);
        assert_eq!(watch.check(false), FileCheck::Settling);
        let config = changed_config(watch.check(false));
        assert_eq!(config.services[0].name, "web");
        assert_eq!(watch.check(false), FileCheck::Unchanged);

        file.replace(&VALID.replace("10.0.0.1", "10.0.0.2"));
        assert_eq!(watch.check(false), FileCheck::Settling);
        let config = changed_config(watch.check(false));
        assert_eq!(
            config.services[0].endpoints,
            vec![([10, 0, 0, 2], 80).into()]
        );
        assert_eq!(watch.check(false), FileCheck::Unchanged);
    }

    #[test]
    fn an_empty_file_is_never_taken_for_a_configuration() {
        let file = TempFile::new("empty");
        file.write("[[services]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n");
        let mut watch = FileWatch::new(&file.0);
        assert_eq!(watch.check(false), FileCheck::Settling);
        assert!(matches!(watch.check(false), FileCheck::Changed(Ok(_))));
        file.write("");
        for _ in 0..5 {
            assert_eq!(watch.check(false), FileCheck::Settling);
        }
        assert!(matches!(watch.check(true), FileCheck::Changed(Err(_))));
    }

    #[test]
    fn a_file_still_being_written_waits() {
        let file = TempFile::new("partial");
        file.write(VALID);
        let mut watch = FileWatch::new(&file.0);
        let _ = watch.check(false);
        let _ = watch.check(false);
        file.write("[[services]]\nname = \"w");
        assert_eq!(watch.check(false), FileCheck::Settling);
        file.write(&VALID.replace("web", "www"));
        assert_eq!(watch.check(false), FileCheck::Settling);
        assert_eq!(changed_config(watch.check(false)).services[0].name, "www");
    }

    #[test]
    fn an_invalid_file_is_reported_with_its_line_once() {
        let file = TempFile::new("invalid");
        file.write("[[services]]\nname = \"web\"\nendpoints = [\"10.0.0.1\"]\n");
        let mut watch = FileWatch::new(&file.0);
        let _ = watch.check(false);
        match watch.check(false) {
            FileCheck::Changed(Err(errors)) => {
                assert_eq!(errors.len(), 1);
                assert_eq!(errors.errors[0].line, 3);
                assert_eq!(errors.errors[0].field, "services[0].endpoints[0]");
            }
            other => panic!("expected errors, got {other:?}"),
        }
        assert_eq!(watch.check(false), FileCheck::Unchanged);
    }

    #[test]
    fn a_missing_file_is_reported_once_and_its_return_is_a_change() {
        let file = TempFile::new("missing");
        file.write(VALID);
        let mut watch = FileWatch::new(&file.0);
        let _ = watch.check(false);
        let _ = watch.check(false);
        let _ = std::fs::remove_file(&file.0);
        assert_eq!(watch.check(false), FileCheck::Settling);
        match watch.check(false) {
            FileCheck::Changed(Err(errors)) => {
                assert!(errors.to_string().contains("cannot read file"), "{errors}");
            }
            other => panic!("expected errors, got {other:?}"),
        }
        assert_eq!(watch.check(false), FileCheck::Unchanged);
        file.write(VALID);
        assert_eq!(watch.check(false), FileCheck::Settling);
        assert_eq!(changed_config(watch.check(false)).services.len(), 1);
    }

    #[test]
    fn a_forced_check_reads_at_once_even_without_change() {
        let file = TempFile::new("force");
        file.write(VALID);
        let mut watch = FileWatch::new(&file.0);
        assert_eq!(changed_config(watch.check(true)).services.len(), 1);
        assert_eq!(watch.check(false), FileCheck::Unchanged);
        assert_eq!(changed_config(watch.check(true)).services.len(), 1);
        assert_eq!(watch.path(), file.0.as_path());
    }
}
