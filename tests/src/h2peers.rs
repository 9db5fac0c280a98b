//! HTTP/2 peers of the HTTP/2 suites: `nghttpd` as an h2c upstream (its verbose log read
//! back as the requests it received), a recording Python `h2` upstream, and the clients —
//! curl, nghttp, the Python `h2` client, h2load — each reporting what it saw.
//!
//! Every helper takes a plain address, so each works against a direct target (nghttpd, the
//! harness's HTTP/1 [`Upstream`](crate::Upstream)) as well as through the proxy: the
//! suites' self-checks run the same helpers without the proxy.

use crate::data::pseudo_random_bytes;
use crate::h2tools::{
    py_script, require_program, require_python_modules, run_bounded, Proc, TempDir, RUN_BOUND,
    START_BOUND,
};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::Duration;

/// Size of nghttpd's `/small` file.
pub const SMALL_BYTES: usize = 100;
/// Size of nghttpd's `/big` file and of the large request bodies: 16 times the default
/// stream window (65,535 bytes), so it cannot pass without WINDOW_UPDATEs.
pub const BIG_BYTES: usize = 1 << 20;
/// Fresh ports tried when another process took the chosen one before nghttpd bound it.
const PORT_ATTEMPTS: usize = 20;

/// The bytes of nghttpd's `/small`.
pub fn small_body() -> Vec<u8> {
    pseudo_random_bytes(SMALL_BYTES, 11)
}
/// The bytes of nghttpd's `/big`, and the large request body of the POST tests.
pub fn big_body() -> Vec<u8> {
    pseudo_random_bytes(BIG_BYTES, 12)
}

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
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
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
        let py = require_python_modules(&["h2"]);
        let mut cmd = Command::new(py);
        cmd.arg(py_script("h2_server.py")).args(["--mode", mode]);
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

/// Which HTTP version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1.
    H1,
    /// HTTP/2 with prior knowledge (h2c).
    H2c,
}

/// What curl or nghttp saw of one response.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub status: u16,
    /// `1.1` or `2` (curl's `%{http_version}`); empty for nghttp, which speaks only h2.
    pub version: String,
    /// Response header fields, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request with curl to `http://addr{path}`: `--http2-prior-knowledge` or `--http1.1`,
/// `headers` as `-H`, a `--data-binary` body when `body` is given. Panics when curl fails
/// (any transport or protocol error).
pub fn curl(
    version: Version,
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
    body: Option<&[u8]>,
) -> Seen {
    let binary = require_program("curl", "curl");
    let dir = TempDir::new("curl");
    let out = dir.path().join("body");
    let head = dir.path().join("head");
    let mut cmd = Command::new(binary);
    cmd.args(["-sS", "--max-time", "60", "-o"])
        .arg(&out)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code} %{http_version}"])
        .arg(match version {
            Version::H1 => "--http1.1",
            Version::H2c => "--http2-prior-knowledge",
        });
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(body) = body {
        let file = dir.file("request", body);
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    cmd.arg(format!("http://{addr}{path}"));
    let done = run_bounded(cmd, RUN_BOUND, "curl").expect_success("curl");
    let summary = done.stdout_text();
    let mut parts = summary.split_whitespace();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = parts.next().unwrap_or("").to_string();
    let head_text = std::fs::read_to_string(&head).unwrap_or_default();
    // With several heads (a 1xx first), the last one is the response's.
    let last_head = head_text
        .split("\r\n\r\n")
        .filter(|h| !h.trim().is_empty())
        .last()
        .unwrap_or("");
    let headers = last_head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Seen {
        status,
        version,
        headers,
        body: std::fs::read(&out).unwrap_or_default(),
    }
}

/// One request with nghttp (h2c) to `http://addr{path}`: `headers` as `-H`, `trailers` as
/// `--trailer`, a `-d` body when `body` is given. Status and headers from its HAR.
pub fn nghttp(
    addr: SocketAddr,
    path: &str,
    headers: &[&str],
    trailers: &[&str],
    body: Option<&[u8]>,
) -> Seen {
    let binary = require_program("nghttp", "nghttp2-client");
    let dir = TempDir::new("nghttp");
    let har = dir.path().join("har.json");
    let mut cmd = Command::new(binary);
    cmd.args(["-t", "60"])
        .arg(format!("--har={}", har.display()));
    for h in headers {
        cmd.args(["-H", h]);
    }
    for t in trailers {
        cmd.arg(format!("--trailer={t}"));
    }
    if let Some(body) = body {
        cmd.arg("-d").arg(dir.file("request", body));
    }
    cmd.arg(format!("http://{addr}{path}"));
    let done = run_bounded(cmd, RUN_BOUND, "nghttp").expect_success("nghttp");
    let har_text = std::fs::read_to_string(&har)
        .unwrap_or_else(|e| panic!("nghttp wrote no HAR ({e}); stderr: {}", done.stderr));
    let v: serde_json::Value = serde_json::from_str(&har_text)
        .unwrap_or_else(|e| panic!("nghttp's HAR is not JSON ({e}): {har_text}"));
    let response = &v["log"]["entries"][0]["response"];
    let status = response["status"].as_u64().unwrap_or_else(|| {
        panic!(
            "nghttp got no response (stderr: {}); HAR: {har_text}",
            done.stderr
        )
    }) as u16;
    let headers = response["headers"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    (
                        h["name"].as_str().unwrap_or("").to_ascii_lowercase(),
                        h["value"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Seen {
        status,
        version: String::new(),
        headers,
        body: done.stdout,
    }
}

/// Several requests on ONE nghttp connection: every `paths` entry `multiply` times, all
/// streams open at once (h2c, bodies discarded). The statuses, one per request, from its HAR.
pub fn nghttp_one_connection(addr: SocketAddr, paths: &[&str], multiply: u32) -> Vec<u16> {
    let binary = require_program("nghttp", "nghttp2-client");
    let dir = TempDir::new("nghttp-many");
    let har = dir.path().join("har.json");
    let mut cmd = Command::new(binary);
    cmd.args(["-n", "-t", "60", "-m", &multiply.to_string()])
        .arg(format!("--har={}", har.display()));
    for p in paths {
        cmd.arg(format!("http://{addr}{p}"));
    }
    let done = run_bounded(cmd, RUN_BOUND, "nghttp").expect_success("nghttp");
    let har_text = std::fs::read_to_string(&har)
        .unwrap_or_else(|e| panic!("nghttp wrote no HAR ({e}); stderr: {}", done.stderr));
    let v: serde_json::Value = serde_json::from_str(&har_text)
        .unwrap_or_else(|e| panic!("nghttp's HAR is not JSON ({e}): {har_text}"));
    v["log"]["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["response"]["status"].as_u64().unwrap_or(0) as u16)
                .collect()
        })
        .unwrap_or_default()
}

/// What the Python `h2` client saw (see `tests/py/h2_client.py`).
#[derive(Debug, Clone)]
pub struct H2Answer {
    pub status: Option<u16>,
    pub headers: Vec<(String, String)>,
    pub trailers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub reset: Option<u32>,
    pub goaway: Option<u32>,
    pub complete: bool,
    pub timed_out: bool,
    /// The server closed the connection before the answer was complete.
    pub closed: bool,
}

impl H2Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        self.trailers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    /// `grpc-status` from the trailers, or from the headers of a trailers-only answer.
    pub fn grpc_status(&self) -> Option<&str> {
        self.trailer("grpc-status")
            .or_else(|| self.header("grpc-status"))
    }
}

/// A request for [`h2_request`].
#[derive(Debug, Clone, Default)]
pub struct H2Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authority: Option<&'a str>,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Option<&'a [u8]>,
    pub trailers: Vec<(&'a str, &'a str)>,
    /// How long to wait for the whole answer before giving up (and cancelling the stream).
    pub wait: Option<Duration>,
}

/// One request with the Python `h2` client to `addr`.
pub fn h2_request(addr: SocketAddr, req: &H2Request) -> H2Answer {
    let py = require_python_modules(&["h2"]);
    let dir = TempDir::new("h2client");
    let out = dir.path().join("body");
    let mut cmd = Command::new(py);
    cmd.arg(py_script("h2_client.py"))
        .arg(addr.to_string())
        .args([
            "--method",
            if req.method.is_empty() {
                "GET"
            } else {
                req.method
            },
        ])
        .args(["--path", if req.path.is_empty() { "/" } else { req.path }])
        .arg("--out")
        .arg(&out);
    if let Some(a) = req.authority {
        cmd.args(["--authority", a]);
    }
    for (n, v) in &req.headers {
        cmd.arg("--header").arg(format!("{n}:{v}"));
    }
    for (n, v) in &req.trailers {
        cmd.arg("--trailer").arg(format!("{n}:{v}"));
    }
    if let Some(body) = req.body {
        cmd.arg("--body-file").arg(dir.file("request", body));
    }
    let wait = req.wait.unwrap_or(Duration::from_secs(30));
    cmd.args(["--wait", &format!("{}", wait.as_secs_f64())]);
    let done = run_bounded(cmd, wait + RUN_BOUND, "h2_client.py").expect_success("h2_client.py");
    let v = done.json("h2_client.py");
    let pairs = |key: &str| -> Vec<(String, String)> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p[0].as_str().unwrap_or("").to_string(),
                            p[1].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    H2Answer {
        status: v["status"].as_u64().map(|s| s as u16),
        headers: pairs("headers"),
        trailers: pairs("trailers"),
        body: std::fs::read(&out).unwrap_or_default(),
        reset: v["reset"].as_u64().map(|c| c as u32),
        goaway: v["goaway"].as_u64().map(|c| c as u32),
        complete: v["complete"].as_bool().unwrap_or(false),
        timed_out: v["timed_out"].as_bool().unwrap_or(false),
        closed: v["closed"].as_bool().unwrap_or(false),
    }
}

/// What h2load reported: requests done, succeeded, failed, errored, and 2xx responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadSummary {
    pub done: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub errored: u64,
    pub status_2xx: u64,
}

/// `h2load -n requests -c 1 -m streams` (h2c) to `http://addr{path}`: one client
/// connection carrying `streams` concurrent streams.
pub fn h2load_one_connection(
    addr: SocketAddr,
    path: &str,
    requests: u64,
    streams: u32,
) -> LoadSummary {
    h2load(addr, path, requests, 1, streams)
}

/// `h2load -n requests -c clients -m streams` (h2c) to `http://addr{path}`.
pub fn h2load(
    addr: SocketAddr,
    path: &str,
    requests: u64,
    clients: u32,
    streams: u32,
) -> LoadSummary {
    let binary = require_program("h2load", "nghttp2-client");
    let mut cmd = Command::new(binary);
    cmd.args(["-n", &requests.to_string(), "-c", &clients.to_string()])
        .args(["-m", &streams.to_string()])
        .arg(format!("http://{addr}{path}"));
    let done = run_bounded(cmd, RUN_BOUND * 2, "h2load");
    let text = done.stdout_text();
    parse_h2load(&text).unwrap_or_else(|| {
        panic!(
            "h2load printed no summary (exit {}): {text}; {}",
            done.status, done.stderr
        )
    })
}

/// Read h2load's `requests:` and `status codes:` lines.
pub fn parse_h2load(text: &str) -> Option<LoadSummary> {
    let requests = text.lines().find(|l| l.starts_with("requests:"))?;
    let number_before = |line: &str, word: &str| -> Option<u64> {
        let words: Vec<&str> = line
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|w| !w.is_empty())
            .collect();
        let at = words.iter().position(|w| *w == word)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    let statuses = text.lines().find(|l| l.starts_with("status codes:"))?;
    Some(LoadSummary {
        done: number_before(requests, "done")?,
        succeeded: number_before(requests, "succeeded")?,
        failed: number_before(requests, "failed")?,
        errored: number_before(requests, "errored")?,
        status_2xx: number_before(statuses, "2xx")?,
    })
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
