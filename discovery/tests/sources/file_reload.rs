//! The file source under the controller: 50 rewrites of the configuration file (endpoints
//! added and removed, split weights shifted, in place and by rename), one of them invalid;
//! exactly the valid versions become snapshots, in order, and the invalid one is refused
//! with its line and field. Also the forced reload behind SIGHUP.

use crate::support::{replace_by_rename, wait_until, write_in_place, TempDir, PATIENCE};
use coremesh_discovery::{
    load_config, parse_config, Config, Discovery, ReloadOutcome, Snapshot, SourceKind, SourceState,
};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

/// Version `i` of the file: `stable` has 1 to 5 endpoints, `canary` 1 to 3 (so both sets
/// change from one version to the next), and the canary's share grows by 2% a version.
/// The `routes[0].split[1]` entry is on line 18.
fn version(i: u32) -> String {
    let stable: Vec<String> = (0..1 + i % 5)
        .map(|n| format!("\"10.0.0.{}:8080\"", 1 + n + i))
        .collect();
    let canary: Vec<String> = (0..1 + i % 3)
        .map(|n| format!("\"10.0.1.{}:8080\"", 1 + n))
        .collect();
    format!(
        r#"# version {i}
[discovery]
debounce_ms = 10
file = {{ poll_interval_ms = 20 }}

[[services]]
name = "stable"
endpoints = [{}]

[[services]]
name = "canary"
endpoints = [{}]

[[routes]]
name = "checkout"
split = [
  {{ service = "stable", weight = {} }},
  {{ service = "canary", weight = {} }},
]
"#,
        stable.join(", "),
        canary.join(", "),
        100 - 2 * i,
        2 * i,
    )
}

const INVALID_AT: u32 = 25;

fn parsed(text: &str) -> Config {
    match parse_config(text, "mesh.toml") {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    }
}

#[test]
fn fifty_rewrites_publish_exactly_the_valid_versions() {
    let dir = TempDir::new("fifty");
    let path = dir.file("mesh.toml");
    write_in_place(&path, &version(0));
    let initial = match load_config(&path) {
        Ok(config) => config,
        Err(errors) => panic!("{errors}"),
    };
    let (sender, snapshots) = channel::<Arc<Snapshot>>();
    let handle = Discovery::start(Some(path.clone()), initial, move |snapshot| {
        let _ = sender.send(snapshot);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(handle.wait_ready(PATIENCE));
    assert!(
        snapshots.try_recv().is_err(),
        "the unchanged file published a snapshot"
    );

    let mut published = Vec::new();
    for i in 1..=50 {
        if i == INVALID_AT {
            let invalid = version(i).replace(
                "{ service = \"canary\", weight",
                "{ service = \"ghost\", weight",
            );
            write_in_place(&path, &invalid);
            wait_until("the invalid version is refused", || {
                handle.stats().reloads_refused == 1
            });
            let stats = handle.stats();
            let error = stats.last_error.unwrap_or_default();
            let origin = path.display();
            assert_eq!(
                error,
                format!(
                    "{origin}:18:5: field `routes[0].split[1].service`: unknown service \"ghost\""
                )
            );
            let file = &stats.sources[0];
            assert_eq!(
                (file.kind, file.state),
                (SourceKind::File, SourceState::Failing)
            );
            continue;
        }
        if i % 2 == 0 {
            replace_by_rename(&path, &version(i));
        } else {
            write_in_place(&path, &version(i));
        }
        let snapshot = snapshots
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|_| panic!("no snapshot for version {i}"));
        published.push((i, snapshot));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        snapshots.try_recv().is_err(),
        "an extra snapshot was published"
    );

    let valid: Vec<u32> = (1..=50).filter(|i| *i != INVALID_AT).collect();
    assert_eq!(published.iter().map(|(i, _)| *i).collect::<Vec<_>>(), valid);
    for (i, snapshot) in &published {
        let expected = Snapshot::build(&parsed(&version(*i)));
        assert_eq!(**snapshot, expected, "version {i}");
        let route = &snapshot.routes[0];
        assert_eq!(route.targets, vec![(0, 100 - 2 * i), (1, 2 * i)]);
    }
    let stats = handle.stats();
    // Exactly the 49 valid versions were published (above, with their contents). A file
    // rewritten in place can also be read mid-write in a state that is valid and then
    // superseded within the debounce window; such a read counts as applied but publishes
    // nothing of its own, so `reloads_applied` is at least, not exactly, 49.
    assert!(stats.reloads_applied >= 49, "{}", stats.reloads_applied);
    assert_eq!(stats.reloads_refused, 1);
    assert_eq!(stats.snapshots_published, 49);
    assert_eq!(stats.sources[0].state, SourceState::Ok);
    assert!(!stats.restart_required);
    assert_eq!(*handle.current(), *published[published.len() - 1].1);
    handle.stop();
}

#[test]
fn a_forced_reload_applies_refuses_or_finds_nothing_new() {
    let dir = TempDir::new("forced");
    let path = dir.file("mesh.toml");
    // A poll so slow that only forced reloads see the changes.
    let slow = |i| version(i).replace("poll_interval_ms = 20", "poll_interval_ms = 3600000");
    write_in_place(&path, &slow(1));
    let (sender, snapshots) = channel::<Arc<Snapshot>>();
    let handle = Discovery::start(Some(path.clone()), parsed(&slow(1)), move |snapshot| {
        let _ = sender.send(snapshot);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(handle.wait_ready(PATIENCE));
    assert_eq!(handle.reload_now(), ReloadOutcome::Unchanged);

    write_in_place(&path, &slow(2));
    assert_eq!(handle.reload_now(), ReloadOutcome::Applied);
    let snapshot = snapshots
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("no snapshot"));
    assert_eq!(*snapshot, Snapshot::build(&parsed(&slow(2))));

    write_in_place(&path, &slow(3).replace("weight = 6", "weight = -6"));
    match handle.reload_now() {
        ReloadOutcome::Refused(errors) => {
            assert_eq!(errors.len(), 1);
            assert_eq!(errors.errors[0].line, 18);
            assert_eq!(errors.errors[0].field, "routes[0].split[1].weight");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(handle.stats().reloads_refused, 1);
    assert_eq!(*handle.current(), *snapshot);

    write_in_place(&path, "[proxy]\nlisten = \"127.0.0.1:1\"\n");
    assert_eq!(handle.reload_now(), ReloadOutcome::Applied);
    wait_until("the emptied configuration is published", || {
        handle.current().services.is_empty()
    });
    assert!(handle.stats().restart_required);
    handle.stop();

    let without_file =
        Discovery::start(None, Config::default(), |_| {}).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(without_file.reload_now(), ReloadOutcome::NoConfigFile);
    assert!(without_file.wait_ready(PATIENCE));
    drop(without_file);
}
