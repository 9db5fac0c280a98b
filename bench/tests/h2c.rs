//! HTTP/2 in the bench, on real loopback sockets with h2load (Debian `nghttp2-client`):
//! the built-in upstream answers h2c and unary gRPC, h2load's closed and open loops are
//! read into the generator's report, and a quick `compare --protocol h2c` runs nginx and
//! HAProxy defined by their contender files (h2c in front and to the upstreams) with
//! non-zero results, while a contender that refuses to start is reported and skipped.
//! Assertions are on counts and texts, never on how fast anything ran.

use coremesh_bench::grpc;
use coremesh_bench::h2load::{self, Shape};
use coremesh_bench::load::{Driver, LoadSpec, Mode, Stop};
use coremesh_bench::upstream::{self, UpstreamSpec};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BENCH: &str = env!("CARGO_BIN_EXE_coremesh-bench");

fn h2load_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("h2load"))
        .find(|p| p.is_file())
        .expect("h2load on PATH (Debian package nghttp2-client): these tests need it")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("coremesh-bench-h2c-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn the_upstream_answers_h2c_closed_and_open_loops() {
    let mut drivers = vec![Driver::Legacy];
    if monoio::utils::detect_uring() {
        drivers.push(Driver::Uring);
    }
    for driver in drivers {
        upstream_answers_h2c(driver);
    }
}

fn upstream_answers_h2c(driver: Driver) {
    let dir = temp_dir(&format!("upstream-{driver:?}"));
    let h2load = h2load_binary();
    let mut spec = UpstreamSpec::new();
    spec.driver = driver;
    spec.error_rate = 0.1;
    spec.seed = 7;
    let up = upstream::spawn(spec).expect("upstream");

    // Closed loop, an exact count over 4 connections.
    let load = LoadSpec {
        max_duration: Duration::from_secs(60),
        ..LoadSpec::new(up.addr, 4, Stop::Count(400))
    };
    let r = h2load::run(&load, &Shape::Get, &h2load, None, &dir)
        .expect("h2load")
        .report;
    assert_eq!(r.driver, "h2load");
    assert_eq!((r.scheduled, r.sent, r.responses), (400, 400, 400), "{r:?}");
    let stats = up.stats.snapshot();
    assert_eq!(stats.requests, 400);
    assert_eq!(stats.h2_requests, 400);
    // The seeded 503s, counted alike on both sides.
    assert!(stats.errors > 0);
    assert_eq!(r.errors.get("status_503").copied(), Some(stats.errors));
    assert_eq!(r.ok, 400 - stats.errors);
    assert_eq!(r.latency.count, 400);

    // Open loop: 2000 req/s for 0.5 s is a schedule of 1000 requests; every one that
    // h2load sent was answered (and counted by the upstream), the rest are `not_sent`.
    let load = LoadSpec {
        mode: Mode::Open { rate: 2000.0 },
        max_duration: Duration::from_secs(60),
        ..LoadSpec::new(up.addr, 4, Stop::Duration(Duration::from_millis(500)))
    };
    let r = h2load::run(&load, &Shape::Get, &h2load, None, &dir)
        .expect("h2load")
        .report;
    assert_eq!(r.mode, "open");
    assert_eq!(r.scheduled, 1000);
    assert!(r.responses > 0, "{r:?}");
    assert_eq!(up.stats.snapshot().h2_requests, 400 + r.responses);
    assert_eq!(
        r.errors.get("not_sent").copied().unwrap_or(0),
        1000 - r.sent.min(1000)
    );
    assert_eq!(r.latency.count, r.responses);
    up.stop();

    // A gRPC upstream takes the gRPC-framed POST and answers every call.
    let mut spec = UpstreamSpec::new();
    spec.driver = driver;
    spec.grpc = true;
    let up = upstream::spawn(spec).expect("grpc upstream");
    let body = dir.join("grpc.bin");
    grpc::write_body(&body, grpc::DEFAULT_PAYLOAD_BYTES).expect("body");
    let load = LoadSpec {
        max_duration: Duration::from_secs(60),
        ..LoadSpec::new(up.addr, 2, Stop::Count(100))
    };
    let r = h2load::run(&load, &Shape::Grpc { body }, &h2load, None, &dir)
        .expect("h2load")
        .report;
    assert_eq!((r.responses, r.ok, r.errors_total), (100, 100, 0), "{r:?}");
    assert_eq!(r.statuses.get(&200).copied(), Some(100));
    assert_eq!(up.stats.snapshot().h2_requests, 100);
    up.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A contender that refuses its arguments at start-up, as a coremesh without HTTP/2 does.
const REFUSES: &str = r#"
name = "refuses-h2c"
binary = "sh"
protocols = ["h2c"]
start = ["-c", "echo 'error: unexpected argument --upstream-protocol' >&2; exit 2"]
ready = { check = "tcp" }
[profiles.plain]
settings = "none"
[profiles.resilient]
settings = "none"
"#;

fn scenario<'a>(results: &'a Value, key: &str) -> &'a Value {
    results["scenarios"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["key"] == key))
        .unwrap_or_else(|| panic!("no scenario {key}"))
}

fn row<'a>(results: &'a Value, key: &str, contender: &str) -> &'a Value {
    scenario(results, key)["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["contender"] == contender))
        .unwrap_or_else(|| panic!("no {contender} row in {key}"))
}

fn contender_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contenders")
        .join(name)
}

#[test]
fn a_quick_h2c_comparison_runs_nginx_and_haproxy_from_their_files() {
    let _ = h2load_binary();
    let dir = temp_dir("compare");
    let refuses = dir.join("refuses-h2c.toml");
    std::fs::write(&refuses, REFUSES).expect("write contender file");
    let out = dir.join("out");
    let run = Command::new(BENCH)
        .args(["compare", "--quick", "--no-build", "--protocol", "h2c"])
        .args(["--contenders", "direct"])
        .arg("--contender")
        .arg(contender_file("nginx-h2c.toml"))
        .arg("--contender")
        .arg(contender_file("haproxy-h2c.toml"))
        .arg("--contender")
        .arg(&refuses)
        .args(["--scenarios", "overhead,slow,grpc", "--out"])
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

    for proxy in ["nginx-h2c", "haproxy-h2c"] {
        // Saturated (closed loop) and fixed-rate (open loop) loads, all answered.
        for (key, load) in [
            ("overhead-saturated", "saturated_round1"),
            ("overhead-fixed-rate", "fixed_rate"),
            ("grpc-saturated", "saturated_round1"),
        ] {
            let r = row(&results, key, proxy);
            assert!(r["skipped"].is_null(), "{proxy} {key}: {}", r["skipped"]);
            let l = &r["loads"][load];
            let responses = l["responses"].as_u64().unwrap_or(0);
            assert!(responses > 0, "{proxy} {key}: no responses: {l}");
            // Every request answered. (nginx's one 504 after 10 s in 12,200 on a loaded
            // run was the upstream losing a connection it had accepted: see
            // `every_connection_is_answered_across_the_stop_checks` in generator.rs.)
            let errors = l["errors_total"].as_u64().unwrap_or(u64::MAX);
            assert_eq!(errors, 0, "{proxy} {key}: {l}");
            // Every answer that is not ok is among the errors counted.
            let ok = l["ok"].as_u64().unwrap_or(0);
            assert!(
                ok <= responses && responses - ok <= errors,
                "{proxy} {key}: {l}"
            );
            assert_eq!(l["driver"], "h2load", "{proxy} {key}");
            assert!(r["figures"]["p99_us"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
        }
        // Three endpoints behind the proxy: every request reached them over h2c.
        let slow = row(&results, "slow", proxy);
        assert!(slow["skipped"].is_null(), "{proxy}: {}", slow["skipped"]);
        let served: u64 = ["u0", "u1", "u2-slow"]
            .iter()
            .map(|n| {
                slow["extra"][format!("served_{n}_round1")]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        assert!(served > 0, "{proxy}: no upstream requests: {slow}");
        assert_eq!(
            slow["extra"]["served_h2_round1"].as_u64(),
            Some(served),
            "{proxy}: not all over h2c: {slow}"
        );
    }
    // direct: h2load straight to the upstream.
    let direct = row(&results, "overhead-saturated", "direct");
    assert!(direct["loads"]["saturated_round1"]["responses"].as_u64() > Some(0));

    // The contender that would not start is listed as skipped with its own message, in
    // every scenario, and the others ran.
    for key in ["overhead-saturated", "slow", "grpc-saturated"] {
        let r = row(&results, key, "refuses-h2c");
        let reason = r["skipped"].as_str().unwrap_or("");
        assert!(
            reason.contains("unexpected argument --upstream-protocol"),
            "{key}: {r}"
        );
    }

    // The gRPC body every call posted: one uncompressed length-prefixed message.
    let body = std::fs::read(out.join("grpc-request.bin")).expect("grpc body");
    assert_eq!(body[0], 0, "compressed flag");
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    assert_eq!(len, body.len() - 5);
    assert_eq!(
        grpc::unframe(&body).expect("framed"),
        &grpc::message(grpc::DEFAULT_PAYLOAD_BYTES)[..]
    );

    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(report.contains("--protocol h2c"), "{report}");
    assert!(report.contains("h2load"), "{report}");
    assert!(report.contains("| refuses-h2c | skipped"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `h2-saturation` and `poll-io` in a quick run with nginx and HAProxy (their h2c and
/// HTTP/1.1 files are built in): h2load's closed loop sends exactly the count asked for
/// through every contender, every request is answered, the ratios to the peers and the
/// CPU layout are in the results.
#[test]
fn the_h2_saturation_and_poll_io_scenarios_send_exact_counts() {
    let _ = h2load_binary();
    let dir = temp_dir("saturation");
    let out = dir.join("out");
    let run = Command::new(BENCH)
        .args(["compare", "--quick", "--no-build", "--protocol", "h2c"])
        .args(["--contenders", "direct,nginx-h2c,haproxy-h2c"])
        .args(["--scenarios", "h2-saturation,poll-io"])
        .args([
            "--h2-requests",
            "3000",
            "--h2-connections",
            "3",
            "--h2-streams",
            "8",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run compare");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "compare failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("h2load -n 3000 -c 3 -m 8"), "{stdout}");
    let text = std::fs::read_to_string(out.join("results.json")).expect("results.json");
    let results: Value = serde_json::from_str(&text).expect("json");
    let exact = |l: &Value, what: &str| {
        assert_eq!(l["scheduled"].as_u64(), Some(3000), "{what}: {l}");
        assert_eq!(l["sent"].as_u64(), Some(3000), "{what}: {l}");
        assert_eq!(l["responses"].as_u64(), Some(3000), "{what}: {l}");
        assert_eq!(l["ok"].as_u64(), Some(3000), "{what}: {l}");
        assert_eq!(l["errors_total"].as_u64(), Some(0), "{what}: {l}");
        assert_eq!(l["connections"].as_u64(), Some(3), "{what}: {l}");
        assert_eq!(l["driver"], "h2load", "{what}");
    };
    for c in ["direct", "nginx-h2c", "haproxy-h2c"] {
        let r = row(&results, "h2-saturation", c);
        assert!(r["skipped"].is_null(), "{c}: {}", r["skipped"]);
        exact(&r["loads"]["round1"], c);
        assert_eq!(r["figures"]["responses"].as_f64(), Some(3000.0), "{r}");
        // Ratios to the peers of the same run: each peer is 1× itself.
        let f = &r["figures"];
        assert!(f["rps_x_nginx"].as_f64().is_some(), "{c}: {r}");
        assert!(f["rps_x_haproxy"].as_f64().is_some(), "{c}: {r}");
        if c != "direct" {
            assert!(f["cpu_us"].as_f64().is_some(), "{c}: {r}");
        }
    }
    let f = &row(&results, "h2-saturation", "nginx-h2c")["figures"];
    assert_eq!(f["rps_x_nginx"].as_f64(), Some(1.0));
    let notes = scenario(&results, "h2-saturation")["notes"].to_string();
    assert!(notes.contains("the same for every proxy"), "{notes}");

    for c in ["nginx-h2c", "haproxy-h2c"] {
        let r = row(&results, "poll-io", c);
        assert!(r["skipped"].is_null(), "{c}: {}", r["skipped"]);
        for leg in ["h1_round1", "m1_round1", "m32_round1"] {
            exact(&r["loads"][leg], &format!("{c} {leg}"));
        }
        for key in ["h1_cpu_us", "m1_cpu_us", "m32_cpu_us"] {
            assert!(r["figures"][key].as_f64().is_some(), "{c} {key}: {r}");
        }
    }
    let report = std::fs::read_to_string(out.join("report.md")).expect("report");
    assert!(
        report.contains("HTTP/2 saturation: h2load -n 3000 -c 3 -m 8"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An answer larger than the client's flow-control windows goes out in pieces as the
/// client opens them: h2load with 64 KiB − 1 windows (`-w 16 -W 16`, what HAProxy's h2
/// client also starts with) gets every 200,000-byte answer. The upstream used to wait
/// until a whole answer fit the windows: the client, given no DATA, never opened them,
/// and that answer and every one behind it on the connection never came. The 60 s bound
/// only turns such a hang into a failure.
#[test]
fn answers_larger_than_the_windows_go_out_as_the_windows_open() {
    let h2load = h2load_binary();
    let mut drivers = vec![Driver::Legacy];
    if monoio::utils::detect_uring() {
        drivers.push(Driver::Uring);
    }
    for driver in drivers {
        let mut spec = UpstreamSpec::new();
        spec.driver = driver;
        spec.body_bytes = 200_000;
        let up = upstream::spawn(spec).expect("upstream");
        let dir = temp_dir(&format!("windows-{driver:?}"));
        let out = dir.join("h2load.out");
        let mut child = Command::new(&h2load)
            .args(["-n", "40", "-c", "2", "-m", "4", "-w", "16", "-W", "16"])
            .arg(format!("http://{}/", up.addr))
            .stdout(std::fs::File::create(&out).expect("out file"))
            .spawn()
            .expect("h2load");
        let began = std::time::Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break Some(s);
            }
            if began.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(
            status.is_some_and(|s| s.success()),
            "{driver:?}: h2load did not finish: {text}"
        );
        let summary = h2load::parse(&text).expect("summary");
        assert_eq!(
            (summary.done, summary.succeeded),
            (40, 40),
            "{driver:?}: {text}"
        );
        // Every byte of every answer arrived: 40 × 200,000 of DATA.
        assert!(text.contains("(8000000) data"), "{driver:?}: {text}");
        assert_eq!(up.stats.snapshot().h2_requests, 40, "{driver:?}");
        up.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
