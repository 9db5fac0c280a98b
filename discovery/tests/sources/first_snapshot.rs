//! The first snapshot is published at once: the debounce that gathers later changes into
//! one snapshot does not delay start-to-ready.

use crate::support::PATIENCE;
use coremesh_discovery::{parse_config, Discovery};

/// The longest `discovery.debounce_ms` validation allows.
const MAX_DEBOUNCE_MS: u64 = 60_000;

#[test]
fn the_first_snapshot_does_not_wait_for_the_debounce() {
    // The longest debounce allowed is far beyond the patience: waiting for it fails.
    assert!(std::time::Duration::from_millis(MAX_DEBOUNCE_MS) > PATIENCE);
    let text = format!(
        "[discovery]\ndebounce_ms = {MAX_DEBOUNCE_MS}\n\n[[services]]\nname = \"web\"\nendpoints = [\"127.0.0.1:8080\"]\n\n[[routes]]\nservice = \"web\"\n"
    );
    let config = match parse_config(&text, "first.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let handle = Discovery::start(None, config, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(handle.wait_ready(PATIENCE), "ready waited for the debounce");
    assert_eq!(handle.current().services[0].endpoints.len(), 1);
    handle.stop();
}
