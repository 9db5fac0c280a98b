//! `compare --contender FILE`: a proxy defined only by a contender file (nginx with
//! round-robin, written to a temporary file) runs in a quick comparison on loopback, and a
//! broken file is refused with its path, field and line. Assertions are on counts and
//! texts, never on how fast anything ran.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_coremesh-bench");

/// nginx, round-robin over every upstream in both profiles, no retries.
const NGINX_ROUND_ROBIN: &str = r#"
name = "nginx-rr"
description = "nginx, plain round-robin (a test contender)"
binary = "nginx"
version = ["-v"]
start = ["-p", "{work}", "-e", "{work}/error.log", "-c", "{config}"]
logs = ["{work}/error.log"]
config = '''
daemon off;
master_process on;
worker_processes {cores};
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events { worker_connections {max_connections}; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {work}/client_body_temp;
    proxy_temp_path {work}/proxy_temp;
    fastcgi_temp_path {work}/fastcgi_temp;
    uwsgi_temp_path {work}/uwsgi_temp;
    scgi_temp_path {work}/scgi_temp;
    upstream backend {
{for upstream in upstreams}
        server {upstream};
{end}
        keepalive 64;
    }
    server {
        listen {listen};
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream off;
        }
    }
}
'''

[profiles.plain]
settings = "round-robin, no retries"

[profiles.resilient]
settings = "round-robin, no retries, no health checks"
"#;

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coremesh-bench-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn row<'a>(results: &'a Value, scenario: &str, contender: &str) -> &'a Value {
    results["scenarios"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == scenario))
        .and_then(|s| s["rows"].as_array())
        .and_then(|rows| rows.iter().find(|r| r["contender"] == contender))
        .unwrap_or_else(|| panic!("no {contender} row in {scenario}"))
}

#[test]
fn a_contender_defined_only_by_a_file_runs_in_a_quick_comparison() {
    let dir = temp_dir("rr");
    let file = dir.join("nginx-rr.toml");
    std::fs::write(&file, NGINX_ROUND_ROBIN).expect("write contender file");
    let out = dir.join("out");
    let run = Command::new(BENCH)
        .args(["compare", "--quick", "--no-build", "--contenders", "direct"])
        .arg("--contender")
        .arg(&file)
        .args(["--scenarios", "overhead,slow", "--out"])
        .arg(&out)
        .output()
        .expect("run compare");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "compare failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("estimated run time"), "{stdout}");
    assert!(
        stdout.contains(&format!("results: {}", out.display())),
        "{stdout}"
    );
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let results: Value = serde_json::from_str(&text).expect("json");

    // Saturated throughput: the file's contender answered every request it got.
    let sat = row(&results, "overhead-saturated", "nginx-rr");
    assert!(sat["skipped"].is_null(), "skipped: {}", sat["skipped"]);
    let load = &sat["loads"]["saturated_round1"];
    let responses = load["responses"].as_u64().unwrap_or(0);
    assert!(responses > 0, "no responses: {load}");
    assert_eq!(load["errors_total"].as_u64(), Some(0), "{load}");
    assert_eq!(load["ok"].as_u64(), Some(responses));

    // Three endpoints (one slow): round-robin hands each a third, counted by the
    // upstreams themselves.
    let slow = row(&results, "slow", "nginx-rr");
    assert!(slow["skipped"].is_null(), "skipped: {}", slow["skipped"]);
    let served: Vec<u64> = ["u0", "u1", "u2-slow"]
        .iter()
        .map(|n| {
            slow["extra"][format!("served_{n}_round1")]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    let total: u64 = served.iter().sum();
    assert!(total >= 300, "too few requests served: {served:?}");
    for s in &served {
        // In-flight requests at the two counter snapshots shift a count by a few.
        assert!(
            s.abs_diff(total / 3) <= total / 50 + 3,
            "not round-robin: {served:?}"
        );
    }

    // The config rendered from the file's template has one `server` line per endpoint.
    let configs: Vec<PathBuf> = std::fs::read_dir(out.join("configs"))
        .expect("configs")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| file_name(p).starts_with("nginx-rr-slow"))
        .collect();
    assert_eq!(configs.len(), 1, "{configs:?}");
    let config = std::fs::read_to_string(&configs[0]).expect("config");
    assert_eq!(
        config.matches("        server 127.0.0.1:").count(),
        3,
        "{config}"
    );
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(report.contains("| nginx-rr |"), "{report}");
    assert!(
        report.contains("nginx-rr (contender file): nginx version"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn a_broken_contender_file_is_refused_with_its_field_and_line() {
    let dir = temp_dir("broken");
    let file = dir.join("broken.toml");
    // Line 11 of the file: `{cores}` misspelt.
    let broken =
        NGINX_ROUND_ROBIN.replace("worker_processes {cores};", "worker_processes {coers};");
    assert_eq!(
        broken
            .lines()
            .position(|l| l.contains("{coers}"))
            .map(|i| i + 1),
        Some(11)
    );
    std::fs::write(&file, &broken).expect("write");
    let run = Command::new(BENCH)
        .args(["compare", "--quick", "--no-build", "--contenders", "direct"])
        .arg("--contender")
        .arg(&file)
        .args(["--scenarios", "overhead", "--out"])
        .arg(dir.join("out"))
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    let expected = format!(
        "{}:11: field `config`: unknown placeholder `{{coers}}`",
        file.display()
    );
    assert!(stderr.contains(&expected), "{stderr}");
    // Nothing was run: no results were written.
    assert!(!dir.join("out").join("results.json").exists());

    // A value of the wrong type: the toml parser's own message, with the line and field.
    let wrong = NGINX_ROUND_ROBIN.replace("version = [\"-v\"]", "version = \"-v\"");
    std::fs::write(&file, &wrong).expect("write");
    let run = Command::new(BENCH)
        .args(["compare", "--quick", "--no-build", "--contender"])
        .arg(&file)
        .output()
        .expect("run compare");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains(&format!("{}:5: field `version`: ", file.display())),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
