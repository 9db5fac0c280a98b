//! `identity::start` from outside: the identity a configuration names is loaded, its
//! expiry appears on `/metrics`, and a renewal made the way Kubernetes updates a secret
//! volume (a `..data` symlink swapped to a new directory) is installed by the watcher
//! thread, counted, and used by new handshakes' configurations.

mod identity_pki;

use identity_pki::{ca, ok, svid, Dir};
use std::time::{Duration, Instant};

/// 2999-01-01 and 3000-01-01, in seconds since the Unix epoch.
const END_2999: i64 = 32_472_144_000;
const END_3000: i64 = 32_503_680_000;

/// The identity families of a `/metrics` of a proxy whose identity metrics are `identity`.
fn metric_lines(identity: Option<&coremesh::identity::IdentityMetrics>) -> Vec<String> {
    coremesh::observe::metrics::render(&[], "legacy", None, identity)
        .lines()
        .filter(|l| l.starts_with("coremesh_identity_"))
        .map(str::to_owned)
        .collect()
}

/// Writes the three files into `dir/<version>` and points `dir/..data` at it.
fn publish(dir: &Dir, version: &str, cert: &str, key: &str, anchors: &str) {
    let versioned = dir.0.join(version);
    ok(std::fs::create_dir_all(&versioned));
    ok(std::fs::write(versioned.join("svid.pem"), cert));
    ok(std::fs::write(versioned.join("svid.key"), key));
    ok(std::fs::write(versioned.join("bundle.pem"), anchors));
    let next = dir.0.join("..data_tmp");
    let _ = std::fs::remove_file(&next);
    ok(std::os::unix::fs::symlink(version, &next));
    ok(std::fs::rename(&next, dir.0.join("..data")));
}

#[test]
fn start_shows_the_expiry_and_the_watcher_installs_a_renewal() {
    let dir = Dir::new("start");
    let ca = ca("mesh ca");
    let (cert, key) = svid(&ca, Some(2999));
    publish(&dir, "v1", &cert, &key, &ca.pem);
    for name in ["svid.pem", "svid.key", "bundle.pem"] {
        ok(std::os::unix::fs::symlink(
            format!("..data/{name}"),
            dir.0.join(name),
        ));
    }
    let config_path = dir.config_linked();
    let config = ok(coremesh_discovery::load_config(&config_path).map_err(|e| e.to_string()));
    let mut settings = config.identity.unwrap_or_default();
    settings.reload_interval_ms = 100;

    assert_eq!(
        metric_lines(None),
        Vec::<String>::new(),
        "nothing before an identity"
    );
    let (configs, watcher) = ok(coremesh::identity::start(&settings));
    let metrics = watcher.metrics().clone();
    assert_eq!(configs.store().current().not_after, END_2999);
    assert_eq!(
        metric_lines(Some(&metrics)),
        vec![
            format!("coremesh_identity_cert_expiry_timestamp_seconds {END_2999}"),
            "coremesh_identity_reloads_total{result=\"ok\"} 0".to_owned(),
        ]
    );
    let server_config = configs.server_config();

    let (cert, key) = svid(&ca, Some(3000));
    publish(&dir, "v2", &cert, &key, &ca.pem);
    let deadline = Instant::now() + Duration::from_secs(30);
    while configs.store().current().not_after != END_3000 {
        assert!(Instant::now() < deadline, "the renewal was not installed");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(watcher);
    assert_eq!(
        metric_lines(Some(&metrics)),
        vec![
            format!("coremesh_identity_cert_expiry_timestamp_seconds {END_3000}"),
            "coremesh_identity_reloads_total{result=\"ok\"} 1".to_owned(),
        ]
    );
    assert!(std::sync::Arc::ptr_eq(
        &server_config,
        &configs.server_config()
    ));
}
