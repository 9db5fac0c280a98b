//! The `mtls` scenario on real sockets: coremesh and nginx each run the two-proxy layout
//! (load → A → B → upstream) in plaintext and over mutual TLS in one quick comparison.
//! Every request is answered, B shows the hop was TLS 1.3 with a verified client
//! certificate (coremesh: its inbound handshake counter on /metrics; nginx: its access log
//! of `$ssl_protocol $ssl_client_verify`), B refuses plaintext in the TLS layout, and a
//! contender whose file has no `[mtls]` table is skipped with the reason. Then the table is
//! rendered from a fixed results file. Nothing is asserted about how fast anything ran.
//!
//! coremesh is `$COREMESH_BIN`, else `target/<profile>/coremesh` beside this test
//! (`cargo test --workspace` builds it; after `cargo test -p coremesh-bench` alone,
//! `cargo build -p coremesh` first).

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BENCH: &str = env!("CARGO_BIN_EXE_coremesh-bench");

/// A contender without `[mtls]`: it never starts in this scenario.
const NO_MTLS: &str = r#"
name = "no-mtls"
description = "a contender file without the two-proxy layout (a test contender)"
binary = "nginx"
version = ["-v"]
start = ["-c", "{config}"]
config = '''
listen {listen};
'''
"#;

fn coremesh_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("COREMESH_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test> -> target/<profile>/coremesh
    let exe = std::env::current_exe().unwrap_or_default();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("coremesh"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the coremesh program is not at {} (build it with `cargo build -p coremesh`, or name it with COREMESH_BIN=/path)",
        bin.display()
    );
    bin
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coremesh-bench-mtls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn row<'a>(results: &'a Value, contender: &str) -> &'a Value {
    results["scenarios"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == "mtls"))
        .and_then(|s| s["rows"].as_array())
        .and_then(|rows| rows.iter().find(|r| r["contender"] == contender))
        .unwrap_or_else(|| panic!("no {contender} row in mtls: {results}"))
}

fn lines(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Every request scheduled was answered with a success.
fn all_answered(load: &Value, what: &str) {
    let scheduled = load["scheduled"].as_u64().unwrap_or(0);
    assert!(scheduled > 0, "{what}: nothing scheduled: {load}");
    assert_eq!(
        load["responses"].as_u64(),
        Some(scheduled),
        "{what}: {load}"
    );
    assert_eq!(load["ok"].as_u64(), Some(scheduled), "{what}: {load}");
    assert_eq!(load["errors_total"].as_u64(), Some(0), "{what}: {load}");
}

/// The inbound handshakes count in an evidence line
/// `B: coremesh_tls_handshakes_total{direction="inbound"} N`.
fn inbound_handshakes(evidence: &[String]) -> Option<u64> {
    evidence.iter().find_map(|l| {
        l.strip_prefix("B: coremesh_tls_handshakes_total{direction=\"inbound\"} ")?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn coremesh_and_nginx_run_the_two_proxy_layout_in_plaintext_and_over_mutual_tls() {
    let coremesh = coremesh_bin();
    let dir = temp_dir("run");
    let file = dir.join("no-mtls.toml");
    std::fs::write(&file, NO_MTLS).expect("write contender file");
    let out = dir.join("out");
    let run = Command::new(BENCH)
        .args(["compare", "--quick", "--no-build", "--coremesh"])
        .arg(&coremesh)
        .args(["--contenders", "direct,coremesh,nginx", "--contender"])
        .arg(&file)
        .args(["--scenarios", "mtls", "--out"])
        .arg(&out)
        .output()
        .expect("run compare");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "compare failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let results: Value = serde_json::from_str(&text).expect("json");

    for c in ["coremesh", "nginx"] {
        let r = row(&results, c);
        assert!(r["skipped"].is_null(), "{c}: {}", r["skipped"]);
        all_answered(&r["loads"]["plain_round1"], &format!("{c} plain"));
        all_answered(&r["loads"]["tls_round1"], &format!("{c} mutual TLS"));
        // Both layouts ran at the same open-loop rate.
        let rate = r["figures"]["rate"].as_f64().expect("rate");
        for hop in ["plain", "tls"] {
            assert_eq!(
                r["loads"][format!("{hop}_round1")]["target_rate"].as_f64(),
                Some(rate),
                "{c} {hop}"
            );
        }
        for key in [
            "plain_p50_us",
            "tls_p50_us",
            "added_p50_us",
            "added_p99_us",
            "plain_cpu_us",
            "tls_cpu_us",
            "added_cpu_us",
            "tls_saturated_rps",
        ] {
            assert!(r["figures"][key].as_f64().is_some(), "{c} {key}: {r}");
        }
        // With perf on the machine, both proxies' system calls per request, each layout.
        let perf = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("perf").is_file()));
        if perf {
            for key in ["plain_syscalls", "tls_syscalls", "added_syscalls"] {
                assert!(r["figures"][key].as_f64().is_some(), "{c} {key}: {r}");
            }
        }
        // A and B were pinned to the same CPUs (the proxy CPUs), every thread of both.
        let pins = |which: &str| -> Vec<String> {
            r["extra"][format!("cpus_allowed_{which}")]
                .as_object()
                .map(|o| o.keys().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(pins("a").len(), 1, "{c}: {}", r["extra"]);
        assert_eq!(pins("a"), pins("b"), "{c}");
        // B refused plaintext in the mutual TLS layout: no answer, or an error status.
        let plaintext = r["extra"]["b_plaintext_round1"].as_str().unwrap_or("");
        let refused = plaintext.starts_with("no answer")
            || plaintext
                .strip_prefix("answered ")
                .and_then(|s| s.parse::<u16>().ok())
                .is_some_and(|s| s >= 400);
        assert!(refused, "{c}: B answered plaintext: {plaintext}");
    }

    // coremesh's B completed inbound TLS handshakes over mutual TLS, none in plaintext.
    let cm = row(&results, "coremesh");
    let tls = lines(&cm["extra"]["evidence_tls_round1"]);
    let n = inbound_handshakes(&tls).unwrap_or(0);
    assert!(n >= 1, "no inbound handshake on coremesh's B: {tls:?}");
    let plain = lines(&cm["extra"]["evidence_plain_round1"]);
    assert_eq!(inbound_handshakes(&plain).unwrap_or(0), 0, "{plain:?}");

    // nginx's B: every connection from A was TLS 1.3 with a verified client certificate;
    // in plaintext, none was.
    let ng = row(&results, "nginx");
    let tls = lines(&ng["extra"]["evidence_tls_round1"]);
    assert!(!tls.is_empty(), "no access log lines on nginx's B");
    for l in &tls {
        assert!(l.starts_with("B: TLSv1.3 SUCCESS"), "{tls:?}");
    }
    let plain = lines(&ng["extra"]["evidence_plain_round1"]);
    assert!(!plain.is_empty(), "no access log lines on nginx's B");
    for l in &plain {
        assert!(l.starts_with("B: - -"), "{plain:?}");
    }

    // The contender without `[mtls]` is skipped with the reason, direct is left out.
    let skipped = row(&results, "no-mtls")["skipped"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(skipped.contains("has no `[mtls]` table"), "{skipped}");
    assert!(
        stdout.contains("no-mtls: skipped: its contender file"),
        "{stdout}"
    );

    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    // The report's command names the run's choices.
    assert!(
        report.contains(" compare --quick --contenders direct,coremesh,nginx --contender "),
        "{report}"
    );
    assert!(
        report.contains("no-mtls.toml --scenarios mtls`"),
        "{report}"
    );
    assert!(
        report.contains("## Mutual TLS cost: two proxies"),
        "{report}"
    );
    for c in ["coremesh", "nginx"] {
        assert!(report.contains(&format!("\n| {c} |")), "{report}");
    }
    assert!(report.contains("\n| no-mtls | skipped: "), "{report}");
    // The generated configurations: the mutual TLS ones name the certificates.
    let configs = out.join("configs");
    let config = |name: &str| {
        std::fs::read_to_string(configs.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let b = config("coremesh-mtls-tls-r0-b.conf");
    assert!(b.contains("require_mtls = true"), "{b}");
    assert!(b.contains("[identity]"), "{b}");
    assert!(!config("coremesh-mtls-plain-r0-b.conf").contains("[identity]"));
    let a = config("nginx-mtls-tls-r0-a.conf");
    assert!(a.contains("proxy_pass https://b;"), "{a}");
    assert!(a.contains("proxy_ssl_verify on;"), "{a}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The table of the scenario from a fixed results file, as `coremesh-bench report DIR`
/// renders it.
#[test]
fn the_mtls_table_is_rendered_from_a_results_file() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/mtls/results.json");
    let dir = temp_dir("report");
    std::fs::copy(&fixture, dir.join("results.json")).expect("copy fixture");
    coremesh_bench::compare::rerender(&dir).expect("render");
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report");
    assert!(
        report.contains("| contender | mTLS layout req/s (saturated) | plain p50 µs | mTLS p50 µs | added p50 µs ↓ | added p50 × nginx |"),
        "{report}"
    );
    // coremesh: plain p50 100, mTLS 130 → +30 µs (nginx +40: 0.75×); CPU 20 → 26 µs
    // (+6, nginx +8: 0.75×).
    assert!(
        report.contains("| coremesh | 20.0k | 100 | 130 | 30.0 | 0.75 |"),
        "{report}"
    );
    assert!(report.contains("| 20.0 | 26.0 | 6.00 | 0.75 |"), "{report}");
    // nginx's figures alone: this table's ratios are the `× nginx` columns.
    assert!(
        report.contains("| nginx | 10.0k | 150 | 190 | 40.0 | 1.00 | 500 | 600 | 100 | 1.00 |"),
        "{report}"
    );
    assert!(
        report.contains("| pingora | skipped: its contender file"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
