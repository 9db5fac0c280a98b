//! `coremesh proxy` checks its command-line flags like a configuration file: a flag over
//! its limit is refused with exit code 2 and a message naming the setting, before anything
//! is bound.

use std::process::Command;

fn proxy_with(extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_coremesh"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:9"])
        .args(extra)
        .output()
        .expect("run coremesh");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn too_many_cores_is_refused() {
    let (code, stderr) = proxy_with(&["--cores", "5000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("proxy.cores"), "{stderr}");
}

#[test]
fn a_grace_period_over_a_day_is_refused() {
    let (code, stderr) = proxy_with(&["--grace-ms", "90000000"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("shutdown_grace_ms"), "{stderr}");
}
