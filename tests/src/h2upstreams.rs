//! Upstreams of the HTTP/2 suites: `nghttpd` as an h2c upstream (its verbose log read back
//! as the requests it received), the recording Python `h2` upstream of
//! `tests/py/h2_server.py`, and an HTTP/1 file server in its own process. Each is killed on
//! drop.

use crate::h2peers::{big_body, small_body};
use crate::h2tools::{
    py_script, require_program, require_python_modules, Proc, TempDir, RUN_BOUND, START_BOUND,
};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

/// Fresh ports tried when another process took the chosen one before nghttpd bound it.
const PORT_ATTEMPTS: usize = 20;

/// One request as nghttpd logged it: its connection (nghttpd's `id`), stream, header
/// fields in order (pseudo-headers included) and trailer fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoggedRequest {
    pub conn: u64,
    pub stream: u64,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
}

impl LoggedRequest {
    /// The first value of field `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::h2tools::field(&self.headers, name)
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        crate::h2tools::field(&self.trailers, name)
    }
}

/// Parse nghttpd's `-v` log into requests: `[id=C] [t] recv (stream_id=S) name: value`
/// lines are fields; those after a `recv DATA frame` of the same stream are trailers.
pub fn parse_nghttpd_log(lines: &[String]) -> Vec<LoggedRequest> {
    let mut order: Vec<(u64, u64)> = Vec::new();
    let mut by_key: BTreeMap<(u64, u64), (LoggedRequest, bool)> = BTreeMap::new();
    for line in lines {
        let Some(conn) = line
            .strip_prefix("[id=")
            .and_then(|r| r.split(']').next())
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if let Some(at) = line.find("recv DATA frame") {
            if let Some(stream) = field_after(&line[at..], "stream_id=") {
                if let Some((_, data_seen)) = by_key.get_mut(&(conn, stream)) {
                    *data_seen = true;
                }
            }
            continue;
        }
        let Some(at) = line.find("recv (stream_id=") else {
            continue;
        };
        let rest = &line[at + "recv (stream_id=".len()..];
        let Some((stream, field)) = rest.split_once(") ") else {
            continue;
        };
        let Ok(stream) = stream.parse::<u64>() else {
            continue;
        };
        // A pseudo-header starts with ':'; split after the name.
        let split_from = usize::from(field.starts_with(':'));
        let Some(colon) = field[split_from..].find(": ") else {
            continue;
        };
        let (name, value) = (
            field[..split_from + colon].to_string(),
            field[split_from + colon + 2..].to_string(),
        );
        let key = (conn, stream);
        let entry = by_key.entry(key).or_insert_with(|| {
            order.push(key);
            (
                LoggedRequest {
                    conn,
                    stream,
                    ..Default::default()
                },
                false,
            )
        });
        if entry.1 {
            entry.0.trailers.push((name, value));
        } else {
            entry.0.headers.push((name, value));
        }
    }
    order
        .into_iter()
        .filter_map(|k| by_key.remove(&k).map(|(r, _)| r))
        .collect()
}

fn field_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(key)? + key.len()..];
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// nghttpd serving h2c on 127.0.0.1 from a directory holding `/small` and `/big`, with
/// `--echo-upload` (a POST or PUT is answered with its own body) and `-v` (every frame it
/// receives logged, which is how a test sees the requests). Killed on drop.
pub struct Nghttpd {
    proc: Proc,
    addr: SocketAddr,
    _docroot: TempDir,
}

impl Nghttpd {
    /// Start nghttpd with `extra` arguments (e.g. `--trailer=x-t: 1`); panics when it is not
    /// installed or does not come up.
    pub fn start(extra: &[&str]) -> Nghttpd {
        let binary = require_program("nghttpd", "nghttp2-server");
        let docroot = TempDir::new("nghttpd");
        docroot.file("small", &small_body());
        docroot.file("big", &big_body());
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let mut cmd = Command::new(&binary);
            cmd.args(["-v", "--no-tls", "--echo-upload", "-a", "127.0.0.1", "-d"])
                .arg(docroot.path())
                .args(extra)
                .arg(port.to_string());
            let mut proc = Proc::spawn(cmd, "nghttpd");
            let up = crate::traffic::wait_until(START_BOUND, Duration::from_millis(10), || {
                proc.stdout_lines()
                    .iter()
                    .chain(proc.stderr_lines().iter())
                    .any(|l| l.contains("listen 127.0.0.1:"))
                    || proc.has_exited()
            });
            if up && !proc.has_exited() {
                return Nghttpd {
                    proc,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    _docroot: docroot,
                };
            }
            last = format!("{:?} {:?}", proc.stdout_lines(), proc.stderr_lines());
        }
        panic!("nghttpd did not start in {PORT_ATTEMPTS} attempts: {last}");
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every request logged so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        parse_nghttpd_log(&self.proc.stdout_lines())
    }
    /// Wait (bounded) until `n` requests are logged; all of them.
    pub fn wait_requests(&self, n: usize) -> Vec<LoggedRequest> {
        let ok = crate::traffic::wait_until(RUN_BOUND, Duration::from_millis(10), || {
            self.requests().len() >= n
        });
        assert!(
            ok,
            "nghttpd logged {} requests, expected {n}",
            self.requests().len()
        );
        self.requests()
    }
}

/// A port on 127.0.0.1 that was free a moment ago (for programs that take a port number).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("bind 127.0.0.1:0: {e}"))
}

/// The Python `h2` upstream of `tests/py/h2_server.py` in `mode` (`hang` or `echo`),
/// recording what it receives as JSON lines. Killed on drop.
pub struct PyH2Server {
    proc: Proc,
    addr: SocketAddr,
}

impl PyH2Server {
    pub fn start(mode: &str) -> PyH2Server {
        PyH2Server::start_with(mode, &[])
    }
    /// Started with more arguments (`--max-streams K`, `--gather N`).
    pub fn start_with(mode: &str, args: &[&str]) -> PyH2Server {
        let py = require_python_modules(&["h2"]);
        let mut cmd = Command::new(py);
        cmd.arg(py_script("h2_server.py"))
            .args(["--mode", mode])
            .args(args);
        let proc = Proc::spawn(cmd, "h2_server.py");
        let addr = SocketAddr::from(([127, 0, 0, 1], proc.port()));
        PyH2Server { proc, addr }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// Every event so far (`request`, `end`, `reset`, `goaway`).
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.proc.json_lines()
    }
    /// Wait (bounded by `bound`) until an event satisfies `pred`; whether one did.
    pub fn wait_event(&self, bound: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> bool {
        self.proc.wait_json(bound, |all| all.iter().any(&pred))
    }
}

/// An HTTP/1 upstream in its own process (Python's `http.server` over a directory), for
/// tests that measure this process's memory: a large response it serves is not held here.
/// Every request path it served is read back from its log. Killed on drop.
pub struct FileServer {
    proc: Proc,
    addr: SocketAddr,
    _root: TempDir,
}

impl FileServer {
    /// Serve `files` (name, bytes) on 127.0.0.1.
    pub fn start(files: &[(&str, &[u8])]) -> FileServer {
        let root = TempDir::new("files");
        for (name, bytes) in files {
            root.file(name, bytes);
        }
        let py = crate::h2tools::python();
        let mut cmd = Command::new(py);
        cmd.args([
            "-u",
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(root.path())
        .arg("0");
        let proc = Proc::spawn(cmd, "http.server");
        let line = proc.wait_line("Serving HTTP on", START_BOUND);
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        FileServer {
            proc,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _root: root,
        }
    }
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// The paths of the requests served so far, from the log (`"GET /p HTTP/1.1" 200 -`).
    pub fn paths(&self) -> Vec<String> {
        self.proc
            .stderr_lines()
            .iter()
            .filter_map(|l| {
                let quoted = l.split('"').nth(1)?;
                quoted.split_whitespace().nth(1).map(str::to_string)
            })
            .collect()
    }
}
