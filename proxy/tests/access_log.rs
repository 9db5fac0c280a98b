//! The real `coremesh` binary, `coremesh run --config FILE`, on both drivers: with
//! `telemetry.access_log = true` each request gives one JSON line on standard output with
//! its route, service, endpoint, status, latency, attempts and trace id; the admin server's
//! `/log-level` changes the binary's log filter (debug lines appear after `PUT debug`, none
//! at the starting level `info`); and `POST /shutdown` (enabled in the file)
//! stops the process with exit status 0.
//!
//! The process listens on 127.0.0.1:0 (proxy and admin); the ports it got are read from its
//! start-up log on standard error. It is killed if a test fails before it exits.

use coremesh_tests::client::{self, Client};
use coremesh_tests::proxy::{
    assert_running_driver, closed_port_addr, driver_in_start_line, driver_name, for_each_driver,
};
use coremesh_tests::traffic::get_on;
use coremesh_tests::upstream::{Action, Response, Upstream};
use coremesh_tests::Driver;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the binary may take to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long lines and exits may take (bounds a broken run only).
const WAIT: Duration = Duration::from_secs(20);
/// A caller's trace id.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Lines read from a pipe, shared with the test.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Lines {
    fn snapshot(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    /// Wait until `done(lines)` holds; the lines then, or `Err` with them after `timeout`.
    fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Result<Vec<String>, Vec<String>> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(&lines) {
                return Ok(lines.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(lines.clone());
            }
            lines = self
                .changed
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn read_lines(pipe: impl std::io::Read + Send + 'static, into: Arc<Lines>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            into.lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line);
            into.changed.notify_all();
        }
    })
}

/// A running `coremesh run` process; killed on drop if still running.
struct RunProcess {
    child: Child,
    listen: SocketAddr,
    admin: SocketAddr,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    readers: Vec<JoinHandle<()>>,
    _dir: TempDir,
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "coremesh-access-log-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The address logged after `marker` on a stderr line, if any.
fn logged_addr(lines: &[String], marker: &str) -> Option<SocketAddr> {
    lines.iter().find_map(|l| {
        let rest = &l[l.find(marker)? + marker.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '\u{1b}')
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    })
}

impl RunProcess {
    /// Write `toml` (which asks for `driver`) to a file and run `coremesh run --config FILE`;
    /// wait until it logged both addresses and its admin server says ready. The driver its
    /// start-up line names must be `driver` (see `assert_running_driver`).
    fn start(tag: &str, driver: Driver, toml: &str) -> RunProcess {
        let dir = TempDir::new(tag);
        let path = dir.0.join("coremesh.toml");
        std::fs::write(&path, toml).expect("write the configuration file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_coremesh"))
            .arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the coremesh binary");
        let stdout = Arc::new(Lines::default());
        let stderr = Arc::new(Lines::default());
        let readers = vec![
            read_lines(child.stdout.take().expect("piped stdout"), stdout.clone()),
            read_lines(child.stderr.take().expect("piped stderr"), stderr.clone()),
        ];
        let logged = stderr.wait_for(START_TIMEOUT, |lines| {
            logged_addr(lines, "listening on ").is_some()
                && logged_addr(lines, "admin server on http://").is_some()
        });
        let mut process = RunProcess {
            child,
            listen: "127.0.0.1:1".parse().expect("literal"),
            admin: "127.0.0.1:1".parse().expect("literal"),
            stdout,
            stderr,
            readers,
            _dir: dir,
        };
        let lines = logged.unwrap_or_else(|lines| {
            panic!(
                "coremesh run never logged its addresses; stderr:\n{}",
                lines.join("\n")
            )
        });
        process.listen = logged_addr(&lines, "listening on ").expect("checked");
        process.admin = logged_addr(&lines, "admin server on http://").expect("checked");
        let running = lines
            .iter()
            .find_map(|l| driver_in_start_line(l))
            .unwrap_or_else(|| {
                panic!(
                    "no driver in the start-up line; stderr:\n{}",
                    lines.join("\n")
                )
            });
        assert_running_driver(driver, running);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = client::get(process.admin, "/ready", &[]) {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "admin /ready never said 200; stderr:\n{}",
                process.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        process
    }

    fn stderr_text(&self) -> String {
        self.stderr.snapshot().join("\n")
    }

    fn admin(&self, method: &str, path: &str, body: Option<&[u8]>) -> client::RawResponse {
        client::request(self.admin, method, path, &[], body)
            .unwrap_or_else(|e| panic!("admin {method} {path}: {e}"))
    }

    /// Wait for the process to exit and its pipes to close.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                for r in self.readers.drain(..) {
                    let _ = r.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `POST /shutdown` (enabled in the file): 202, then exit status 0. Everything the
    /// process wrote.
    fn shutdown_through_admin(mut self) -> Output {
        let r = self.admin("POST", "/shutdown", None);
        assert_eq!(r.status, 202, "POST /shutdown: {}", r.body_text());
        let status = self.wait_exit(WAIT).unwrap_or_else(|| {
            panic!(
                "coremesh did not exit after POST /shutdown; stderr:\n{}",
                self.stderr_text()
            )
        });
        assert!(
            status.success(),
            "exit status {status}; stderr:\n{}",
            self.stderr_text()
        );
        Output {
            stdout: self.stdout.snapshot(),
            stderr: self.stderr.snapshot(),
        }
    }
}

/// The lines a process wrote, once it has exited.
struct Output {
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// The `DEBUG` lines of a log (the level is a word of its own in the binary's format).
fn debug_lines(stderr: &[String]) -> Vec<&String> {
    stderr
        .iter()
        .filter(|l| l.split_whitespace().any(|w| w == "DEBUG"))
        .collect()
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

/// The configuration file: one core on `driver`, admin with shutdown enabled, the access
/// log on, tracing on (so lines carry trace ids) towards a collector that is not there.
/// Routes: `/api` to "backend" (`ok`), `/retry` to "flaky" (a closed port first, then
/// `ok`, round-robin), nothing else.
fn config_file(driver: Driver, ok: SocketAddr, dead: SocketAddr, collector: SocketAddr) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
admin = "127.0.0.1:0"
cores = 1
driver = "{driver}"
pin_cores = false
shutdown_grace_ms = 5000
admin_shutdown = true

[telemetry]
access_log = true
otlp_endpoint = "http://{collector}"
trace_sample_ratio = 1.0
export_interval_ms = 50
export_timeout_ms = 500

[[services]]
name = "backend"
endpoints = ["{ok}"]

[[services]]
name = "flaky"
endpoints = ["{dead}", "{ok}"]
balance = "round-robin"

[[routes]]
name = "api"
path_prefix = "/api"
service = "backend"

[[routes]]
name = "retry"
path_prefix = "/retry"
service = "flaky"
"#,
        driver = driver_name(driver)
    )
}

fn field<'a>(line: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    line.get(key)
        .unwrap_or_else(|| panic!("access log line without {key:?}: {line}"))
}

#[test]
fn access_log_has_one_json_line_per_request() {
    for_each_driver(|driver| {
        let ok = Upstream::start("ok", |req| {
            if req.path.contains("503") {
                Action::Respond(Response::new(503).body("no"))
            } else {
                Action::Respond(Response::ok("yes"))
            }
        });
        let dead = closed_port_addr();
        let collector = closed_port_addr();
        let process = RunProcess::start(
            driver_name(driver),
            driver,
            &config_file(driver, ok.addr(), dead, collector),
        );
        let mut client = Client::connect(process.listen).expect("connect to the proxy");
        let incoming = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
        let requests: [(&str, &[(&str, &str)]); 4] = [
            ("/api/a", &[("traceparent", incoming.as_str())]),
            ("/retry/b", &[]),
            ("/nowhere", &[]),
            ("/api/503", &[]),
        ];
        let statuses: Vec<u16> = requests
            .iter()
            .map(|(path, headers)| get_on(&mut client, path, headers, path).status)
            .collect();
        assert_eq!(statuses, [200, 200, 404, 503]);
        drop(client);

        let lines = process
            .stdout
            .wait_for(WAIT, |l| l.len() >= 4)
            .unwrap_or_else(|got| panic!("4 access log lines expected, got {got:#?}"));
        let lines = {
            // Nothing more after the process stops (and every line so far was one request).
            let all = process.shutdown_through_admin();
            assert_eq!(all.stdout, lines, "exactly one line per request");
            // RUST_LOG=info throughout: not one debug line (the control for the log-level
            // test, whose debug lines appear only after its change).
            assert_eq!(
                debug_lines(&all.stderr),
                Vec::<&String>::new(),
                "debug lines at level info"
            );
            all.stdout
        };
        let parsed: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
            .collect();
        let ok_addr = ok.addr().to_string();
        let summary: Vec<_> = parsed
            .iter()
            .map(|l| {
                (
                    field(l, "route").as_str().map(str::to_string),
                    field(l, "service").as_str().map(str::to_string),
                    field(l, "endpoint").as_str().map(str::to_string),
                    field(l, "status").as_u64(),
                    field(l, "attempts").as_u64(),
                )
            })
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            summary,
            vec![
                (s("api"), s("backend"), s(&ok_addr), Some(200), Some(1)),
                (s("retry"), s("flaky"), s(&ok_addr), Some(200), Some(2)),
                (None, None, None, Some(404), Some(0)),
                (s("api"), s("backend"), s(&ok_addr), Some(503), Some(1)),
            ],
            "(route, service, endpoint, status, attempts) per line:\n{}",
            lines.join("\n")
        );
        assert_eq!(field(&parsed[0], "trace_id").as_str(), Some(TRACE_ID));
        for l in &parsed {
            let time = field(l, "time").as_str().expect("time is a string");
            assert!(
                time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                "RFC 3339 UTC with milliseconds: {time}"
            );
            let latency = field(l, "latency_ms")
                .as_f64()
                .expect("latency_ms is a number");
            assert!(latency >= 0.0, "{l}");
            let trace = field(l, "trace_id").as_str().expect("traced: a trace id");
            assert!(
                trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()),
                "{l}"
            );
        }
    });
}

#[test]
fn log_level_changes_the_binarys_filter() {
    let ok = Upstream::fixed_named("ok", 200, b"ok");
    let process = RunProcess::start(
        "log-level",
        Driver::Legacy,
        &config_file(
            Driver::Legacy,
            ok.addr(),
            closed_port_addr(),
            closed_port_addr(),
        ),
    );
    let get = process.admin("GET", "/log-level", None);
    assert_eq!((get.status, get.body_text().as_str()), (200, "info\n"));
    let before = process.stderr.snapshot();
    assert_eq!(
        debug_lines(&before),
        Vec::<&String>::new(),
        "debug lines at level info"
    );
    let put = process.admin("PUT", "/log-level", Some(b"debug"));
    assert_eq!((put.status, put.body_text().as_str()), (200, "debug\n"));
    let get = process.admin("GET", "/log-level", None);
    assert_eq!((get.status, get.body_text().as_str()), (200, "debug\n"));
    let bad = process.admin("PUT", "/log-level", Some(b"coremesh=[[["));
    assert_eq!(bad.status, 400, "{}", bad.body_text());
    let get = process.admin("GET", "/log-level", None);
    assert_eq!(
        get.body_text(),
        "debug\n",
        "a refused filter leaves the old one"
    );
    let out = process.shutdown_through_admin();
    assert!(
        out.stdout.is_empty(),
        "no request, no access log line: {:?}",
        out.stdout
    );
    // At debug, each core logs how long it drained when it stops (proxy/src/runtime.rs);
    // at info (the access log test above) that line is absent.
    let debug = debug_lines(&out.stderr);
    assert!(
        debug.iter().any(|l| l.contains("core stopped after")),
        "no debug line from the core's stop after PUT /log-level debug; stderr:\n{}",
        out.stderr.join("\n")
    );
}
