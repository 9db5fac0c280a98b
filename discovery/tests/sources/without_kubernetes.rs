//! Built without the `kubernetes` feature, a `kubernetes` entry still parses and
//! validates, and its source says why it has no endpoints.

use crate::support::{wait_until, PATIENCE};
use coremesh_discovery::{parse_config, Discovery, SourceKind, SourceState};

#[test]
fn a_kubernetes_entry_reports_that_this_build_cannot_watch() {
    let text = "[[services]]\nname = \"web\"\nkubernetes = \"web.prod:80\"\n\n[[routes]]\nservice = \"web\"\n";
    let config = match parse_config(text, "k.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let handle = Discovery::start(None, config, |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert!(handle.wait_ready(PATIENCE));
    wait_until("the source reports", || {
        handle
            .stats()
            .sources
            .iter()
            .any(|s| s.state == SourceState::Failing)
    });
    let stats = handle.stats();
    let source = &stats.sources[0];
    assert_eq!(
        (source.kind, source.target.as_str()),
        (SourceKind::Kubernetes, "web.prod:80")
    );
    let error = source.last_error.clone().unwrap_or_default();
    assert!(error.contains("no Kubernetes support"), "{error}");
    assert_eq!(handle.current().services[0].endpoints, vec![]);
    handle.stop();
}
