//! What an operator sees of the real `coremesh` binary: a log written to a pipe (as
//! `kubectl logs` and journald read it) has no colour codes; `--log-format json` and
//! `[proxy] log_format = "json"` write one JSON object per line; `run --config-env`
//! reads its configuration from the environment; `--to` and `endpoints` take
//! `localhost:PORT` and resolve it.

use coremesh_tests::client;
use coremesh_tests::upstream::Upstream;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bounds a broken start-up or shutdown; never reached when things work.
const TIMEOUT: Duration = Duration::from_secs(40);
const ESC: u8 = 0x1b;

/// A running `coremesh` with its stderr collected; killed on drop if still running.
struct Running {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(env!("CARGO_BIN_EXE_coremesh"));
        command
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn the coremesh binary");
        let mut pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Running {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> Vec<u8> {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stderr()).into_owned()
    }

    /// The first value `find` picks out of a line of the log, waiting for it.
    fn wait_for<T>(&mut self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(found) = self.text().lines().find_map(&find) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited ({status}) before {what}; stderr:\n{}", self.text());
            }
            assert!(
                Instant::now() < deadline,
                "no {what} after {TIMEOUT:?}; stderr:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then the whole log once the process has exited 0.
    fn stop(mut self) -> Vec<u8> {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of this process; the
        // pid is our own child's, not yet reaped (the Child is still held).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
        let deadline = Instant::now() + TIMEOUT;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            assert!(Instant::now() < deadline, "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        assert!(status.success(), "{status}; stderr:\n{}", self.text());
        self.stderr()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// The address in a text line `... coremesh listening on ADDR with ...`.
fn listen_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("coremesh listening on ")? + "coremesh listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// The `fields.message` of a JSON log line.
fn json_message(line: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(value["fields"]["message"].as_str()?.to_owned())
}

/// Every line of `log` is a JSON object with a level and a message; their messages.
fn json_lines(log: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(log).expect("the log is UTF-8");
    assert!(!text.is_empty(), "no log at all");
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nlog:\n{text}"));
            assert!(value["level"].is_string(), "no level: {line}");
            value["fields"]["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message: {line}"))
                .to_owned()
        })
        .collect()
}

#[test]
fn a_text_log_into_a_pipe_has_no_escape_codes() {
    let upstream = Upstream::echo();
    let to = upstream.addr().to_string();
    let mut proxy = Running::start(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &to,
            "--cores",
            "1",
        ],
        &[],
    );
    proxy.wait_for("the start-up line", listen_addr);
    let log = proxy.stop();
    let text = String::from_utf8_lossy(&log);
    assert!(text.contains("coremesh listening on "), "{text}");
    assert!(text.contains("stopped"), "{text}");
    assert_eq!(
        log.iter().filter(|&&b| b == ESC).count(),
        0,
        "escape codes in a piped log:\n{text:?}"
    );
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let upstream = Upstream::echo();
    let to = upstream.addr().to_string();
    let mut proxy = Running::start(
        &[
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--to",
            &to,
            "--cores",
            "1",
            "--log-format",
            "json",
        ],
        &[],
    );
    let addr = proxy.wait_for("the start-up line", |line| {
        listen_addr(&json_message(line)?)
    });
    let response = client::get(addr, "/", &[]).expect("a request through the proxy");
    assert_eq!(response.status, 200);
    let messages = json_lines(&proxy.stop());
    assert!(messages
        .iter()
        .any(|m| m.starts_with("coremesh listening on ")));
    assert_eq!(messages.last().map(String::as_str), Some("stopped"));
}

#[test]
fn run_reads_its_configuration_and_log_format_from_the_environment() {
    let upstream = Upstream::echo();
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\ncores = 1\nlog_format = \"json\"\n\n\
         [[services]]\nname = \"web\"\nendpoints = [\"{}\"]\n\n[[routes]]\nservice = \"web\"\n",
        upstream.addr()
    );
    let mut proxy = Running::start(
        &["run", "--config-env", "MESH_TOML"],
        &[("MESH_TOML", &config)],
    );
    let addr = proxy.wait_for("the start-up line", |line| {
        listen_addr(&json_message(line)?)
    });
    let response = client::get(addr, "/", &[]).expect("a request through the proxy");
    assert_eq!(response.status, 200);
    json_lines(&proxy.stop());

    // A variable that is not set, or holds an invalid configuration, is refused by name.
    let out = Command::new(env!("CARGO_BIN_EXE_coremesh"))
        .args(["run", "--config-env", "COREMESH_TEST_UNSET_VARIABLE"])
        .env_remove("COREMESH_TEST_UNSET_VARIABLE")
        .output()
        .expect("run coremesh");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("$COREMESH_TEST_UNSET_VARIABLE: cannot read the environment variable"),
        "{stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_coremesh"))
        .args(["run", "--config-env", "MESH_TOML"])
        .env("MESH_TOML", "[proxy]\ncores = \"two\"\n")
        .output()
        .expect("run coremesh");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("$MESH_TOML:2:9: field `proxy.cores`"),
        "{stderr}"
    );
}

/// The endpoints `/endpoints` lists for service `service`.
fn admin_endpoints(admin: SocketAddr, service: &str) -> Vec<String> {
    let Ok(response) = client::get(admin, "/endpoints", &[]) else {
        return Vec::new();
    };
    // `{"service": [{"address": "ip:port", ...}, ...], ...}`
    let value: serde_json::Value = serde_json::from_slice(&response.body).unwrap_or_default();
    value[service]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["address"].as_str().map(str::to_owned))
        .collect()
}

/// `localhost:PORT` as `--to` (and as an `endpoints` entry of a file) is resolved and
/// served; before, only an IP address was accepted.
#[test]
fn localhost_names_in_to_and_endpoints_are_resolved() {
    let upstream = Upstream::echo();
    let port = upstream.addr().port();
    let named = format!("localhost:{port}");
    let dir = std::env::temp_dir().join(format!("coremesh-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("mesh.toml");
    let config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ncores = 1\n\n\
         [[services]]\nname = \"web\"\nendpoints = [\"{named}\"]\n\n[[routes]]\nservice = \"web\"\n"
    );
    std::fs::write(&file, config).expect("write the config");
    let file_arg = file.display().to_string();
    let runs: [(&[&str], &str); 2] = [
        (
            &[
                "proxy",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
                "--cores",
                "1",
                "--to",
                &named,
            ],
            "default",
        ),
        (&["run", "--config", &file_arg], "web"),
    ];
    for (args, service) in runs {
        let mut proxy = Running::start(args, &[]);
        let addr = proxy.wait_for("the start-up line", listen_addr);
        let admin = proxy.wait_for("the admin line", |line| {
            let rest = &line[line.find("admin server on http://")? + 23..];
            rest.trim().parse::<SocketAddr>().ok()
        });
        let deadline = Instant::now() + TIMEOUT;
        let expected = format!("127.0.0.1:{port}");
        while !admin_endpoints(admin, service).contains(&expected) {
            assert!(
                Instant::now() < deadline,
                "{args:?}: {expected} never among the endpoints {:?}; stderr:\n{}",
                admin_endpoints(admin, service),
                proxy.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = upstream.requests_received();
        let response = client::get(addr, "/", &[]).expect("a request through the proxy");
        assert_eq!(response.status, 200, "{args:?}");
        assert_eq!(upstream.requests_received(), before + 1);
        proxy.stop();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
