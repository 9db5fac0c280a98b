//! Clients of the HTTP/2 suites, each reporting what it saw: curl (HTTP/1.1 or h2c), nghttp
//! (one request, or many streams on one connection), the Python `h2` client of
//! `tests/py/h2_client.py` (trailers, gRPC framing, a request given up and cancelled) and
//! h2load.

use crate::h2tools::{
    py_script, require_program, require_python_modules, run_bounded, TempDir, RUN_BOUND,
};
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

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
        crate::h2tools::field(&self.headers, name)
    }
    pub fn trailer(&self, name: &str) -> Option<&str> {
        crate::h2tools::field(&self.trailers, name)
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
    /// The body goes out only once this file exists (the head first, on its own).
    pub body_gate: Option<&'a std::path::Path>,
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
    if let Some(gate) = req.body_gate {
        cmd.arg("--body-gate").arg(gate);
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
