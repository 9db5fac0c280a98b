//! The contenders — direct (no proxy), coremesh, nginx, HAProxy — and how each is started
//! for a topology: a generated config (kept in the results folder), the same CPU pinning
//! (`taskset`), a readiness check, and a stop that records how it ended.
//!
//! Two profiles: `Plain` (one endpoint, each proxy as shipped apart from keep-alive to the
//! upstream and worker/thread count) and `Resilient` (three endpoints, each proxy with its
//! own best balancing, retries and passive health checks, listed in [`best_settings`]).

use crate::procfs;
use crate::procs::{log_tail, Proc, Stopped};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a contender has to accept connections and answer a first request.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// Grace given on stop before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// A contender must still run this long after its first answer.
const STILL_UP_AFTER: Duration = Duration::from_millis(150);
/// Drain grace asked of coremesh on SIGTERM.
const COREMESH_GRACE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Direct,
    Coremesh,
    Nginx,
    Haproxy,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Direct, Kind::Coremesh, Kind::Nginx, Kind::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Coremesh => "coremesh",
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == s)
    }

    pub fn is_proxy(self) -> bool {
        self != Kind::Direct
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    Plain,
    Resilient,
}

/// What every contender start needs to know about this machine.
#[derive(Debug, Clone)]
pub struct Setup {
    pub coremesh: Result<PathBuf, String>,
    /// coremesh `proxy` flags found in its `--help`.
    pub coremesh_flags: Vec<String>,
    pub coremesh_driver: String,
    pub nginx: Result<PathBuf, String>,
    pub haproxy: Result<PathBuf, String>,
    pub taskset: Option<PathBuf>,
    pub proxy_cpus: Vec<usize>,
    /// Workers / threads / cores each proxy runs (default: one per proxy CPU).
    pub proxy_cores: Option<usize>,
    pub work_dir: PathBuf,
    pub config_dir: PathBuf,
    /// The open-file limit every child inherits.
    pub nofile: u64,
    /// coremesh needs `--admin` to keep running (see [`coremesh_preflight`]).
    pub coremesh_admin: bool,
}

impl Setup {
    /// Workers / threads / cores given to each proxy.
    pub fn cores(&self) -> usize {
        self.proxy_cores.unwrap_or(self.proxy_cpus.len()).max(1)
    }
}

/// The flags coremesh needs for its best resilient settings.
pub const COREMESH_RESILIENT_FLAGS: [&str; 4] =
    ["--balance", "--retries", "--retry-on", "--timeout"];

/// Each contender's settings in the resilient profile, for the report.
pub fn best_settings(kind: Kind, setup: &Setup) -> String {
    match kind {
        Kind::Direct => "no proxy".to_string(),
        Kind::Coremesh => {
            let missing = missing_coremesh_flags(setup);
            if missing.is_empty() {
                "`--balance least-latency --retries 3 --retry-on 502,503,504 --timeout 10000` (passive ejection is built in)".to_string()
            } else {
                format!(
                    "config file with `balance = \"least-latency\"`, `request_timeout_ms = 10000`; NOT available in this build: {}",
                    missing.join(", ")
                )
            }
        }
        Kind::Nginx => "`least_conn`, `max_fails=3 fail_timeout=5s`, `proxy_next_upstream error timeout http_502 http_503 http_504`, `proxy_next_upstream_tries 3`, upstream keepalive".to_string(),
        Kind::Haproxy => "`balance leastconn`, `retries 2`, `option redispatch 1`, `retry-on conn-failure empty-response response-timeout 502 503 504`, `check inter 1s fall 3 rise 2 observe layer7 error-limit 3 on-error mark-down`, `http-reuse always`".to_string(),
    }
}

pub fn missing_coremesh_flags(setup: &Setup) -> Vec<String> {
    COREMESH_RESILIENT_FLAGS
        .iter()
        .filter(|f| !setup.coremesh_flags.iter().any(|g| g == *f))
        .map(|f| f.to_string())
        .collect()
}

/// The flags `coremesh proxy --help` lists.
pub fn coremesh_proxy_flags(binary: &Path) -> Vec<String> {
    let Ok(out) = Command::new(binary).args(["proxy", "--help"]).output() else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.trim_end_matches([',', '.']).to_string())
        .collect()
}

/// A started contender.
pub struct Running {
    pub kind: Kind,
    /// Where clients connect.
    pub addr: SocketAddr,
    proc: Option<Proc>,
    pub log: Option<PathBuf>,
    pub command: String,
    pub notes: Vec<String>,
}

/// A stop, as recorded in the results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub took_ms: f64,
    pub killed_after_grace: bool,
}

impl From<Stopped> for StopRecord {
    fn from(s: Stopped) -> StopRecord {
        StopRecord {
            exit_code: s.code,
            signal: s.signal,
            took_ms: s.took.as_secs_f64() * 1000.0,
            killed_after_grace: s.killed,
        }
    }
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(|p| p.pid())
    }

    /// CPU ticks of the contender's processes (0 for direct).
    pub fn cpu_ticks(&self) -> u64 {
        self.pid().map(procfs::tree_cpu_ticks).unwrap_or(0)
    }

    /// (RSS, PSS) in KiB of the contender's processes.
    pub fn memory_kib(&self) -> (u64, u64) {
        self.pid().map(procfs::tree_memory_kib).unwrap_or((0, 0))
    }

    pub fn fd_count(&self) -> usize {
        self.pid().map(procfs::tree_fd_count).unwrap_or(0)
    }

    /// Whether the contender died on its own.
    pub fn died(&mut self) -> Option<String> {
        let p = self.proc.as_mut()?;
        p.exited()
            .map(|s| format!("{} exited on its own ({s})", self.kind.name()))
    }

    pub fn stop(mut self) -> Option<StopRecord> {
        self.proc.take().map(|mut p| p.stop(STOP_GRACE).into())
    }

    pub fn log_tail(&self) -> String {
        self.log
            .as_ref()
            .map(|l| log_tail(l, 1500))
            .unwrap_or_default()
    }
}

/// A free loopback port (bound and released; nothing else runs here that would take it).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn pinned(setup: &Setup, program: &Path) -> Command {
    match &setup.taskset {
        Some(taskset) if !setup.proxy_cpus.is_empty() => {
            let cpus: Vec<String> = setup.proxy_cpus.iter().map(|c| c.to_string()).collect();
            let mut c = Command::new(taskset);
            c.arg("-c").arg(cpus.join(",")).arg(program);
            c
        }
        _ => Command::new(program),
    }
}

fn show(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Start `kind` in front of `endpoints`; `tag` names its config and log files.
pub fn start(
    kind: Kind,
    setup: &Setup,
    profile: Profile,
    endpoints: &[SocketAddr],
    tag: &str,
) -> Result<Running, String> {
    let cores = setup.cores();
    let name = format!("{}-{tag}", kind.name());
    let log = setup.work_dir.join(format!("{name}.log"));
    let (cmd, addr, notes) = match kind {
        Kind::Direct => {
            if endpoints.len() != 1 {
                return Err(
                    "no proxy in front of several endpoints: a client alone cannot balance".into(),
                );
            }
            return Ok(Running {
                kind,
                addr: endpoints[0],
                proc: None,
                log: None,
                command: String::new(),
                notes: Vec::new(),
            });
        }
        Kind::Coremesh => {
            let binary = setup.coremesh.clone()?;
            let port = free_port().map_err(|e| e.to_string())?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let to: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
            let mut notes = Vec::new();
            let missing = missing_coremesh_flags(setup);
            let mut cmd = pinned(setup, &binary);
            if profile == Profile::Resilient && !missing.is_empty() {
                let path = setup.config_dir.join(format!("{name}.toml"));
                let admin = if setup.coremesh_admin {
                    Some(free_port().map_err(|e| e.to_string())?)
                } else {
                    None
                };
                let text = coremesh_config(addr, cores, endpoints, &setup.coremesh_driver, admin);
                std::fs::write(&path, text).map_err(|e| e.to_string())?;
                cmd.arg("run").arg("--config").arg(&path);
                notes.push(format!(
                    "coremesh was run without {}: not available in this build",
                    missing.join(", ")
                ));
            } else {
                cmd.args([
                    "proxy",
                    "--listen",
                    &addr.to_string(),
                    "--to",
                    &to.join(","),
                ])
                .args(["--cores", &cores.to_string()])
                .args(["--driver", &setup.coremesh_driver])
                .args(["--grace-ms", &COREMESH_GRACE_MS.to_string()]);
                if setup.coremesh_admin {
                    let admin = free_port().map_err(|e| e.to_string())?;
                    cmd.args(["--admin", &format!("127.0.0.1:{admin}")]);
                }
                if profile == Profile::Resilient {
                    cmd.args(["--balance", "least-latency", "--retries", "3"])
                        .args(["--retry-on", "502,503,504", "--timeout", "10000"]);
                }
            }
            cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
            (cmd, addr, notes)
        }
        Kind::Nginx => {
            let binary = setup.nginx.clone()?;
            let port = free_port().map_err(|e| e.to_string())?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let prefix = setup.work_dir.join(&name);
            std::fs::create_dir_all(prefix.join("tmp")).map_err(|e| e.to_string())?;
            let text = nginx_config(addr, cores, endpoints, profile, &prefix, setup.nofile);
            let path = setup.config_dir.join(format!("{name}.conf"));
            std::fs::write(&path, &text).map_err(|e| e.to_string())?;
            let mut cmd = pinned(setup, &binary);
            cmd.arg("-p")
                .arg(&prefix)
                .arg("-e")
                .arg(prefix.join("error.log"))
                .arg("-c")
                .arg(&path);
            (cmd, addr, Vec::new())
        }
        Kind::Haproxy => {
            let binary = setup.haproxy.clone()?;
            let port = free_port().map_err(|e| e.to_string())?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let text = haproxy_config(addr, cores, endpoints, profile, setup.nofile);
            let path = setup.config_dir.join(format!("{name}.cfg"));
            std::fs::write(&path, &text).map_err(|e| e.to_string())?;
            let mut cmd = pinned(setup, &binary);
            cmd.arg("-db").arg("-f").arg(&path);
            (cmd, addr, Vec::new())
        }
    };
    let command = show(&cmd);
    let mut proc = Proc::spawn(&name, cmd, &log, false).map_err(|e| format!("{e:#}"))?;
    let ready = wait_ready(&mut proc, addr).and_then(|()| {
        // Still there a moment later (a process that serves and then quits is not ready).
        std::thread::sleep(STILL_UP_AFTER);
        match proc.exited() {
            Some(status) => Err(format!("exited on its own right after start ({status})")),
            None => Ok(()),
        }
    });
    match ready {
        Ok(()) => Ok(Running {
            kind,
            addr,
            proc: Some(proc),
            log: Some(log.clone()),
            command,
            notes,
        }),
        Err(e) => {
            proc.kill();
            let extra = match kind {
                Kind::Nginx => log_tail(&setup.work_dir.join(&name).join("error.log"), 800),
                _ => String::new(),
            };
            Err(format!(
                "{e}; log: {} {}",
                log_tail(&log, 800).replace('\n', " | "),
                extra.replace('\n', " | ")
            ))
        }
    }
}

/// Accepting connections and answering a GET with an HTTP status line.
fn wait_ready(proc: &mut Proc, addr: SocketAddr) -> Result<(), String> {
    let began = Instant::now();
    let mut last = String::from("never tried");
    while began.elapsed() < READY_WITHIN {
        if let Some(status) = proc.exited() {
            return Err(format!("exited at start-up ({status})"));
        }
        match probe(addr) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not ready within {READY_WITHIN:?}: {last}"))
}

/// One GET on a fresh connection; the status code.
pub fn probe(addr: SocketAddr) -> Result<u16, String> {
    let text = fetch(addr, "/")?;
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| text.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP response: {:?}", &text[..text.len().min(60)]))
}

/// GET `path` with `Connection: close`; the whole response as text.
pub fn fetch(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// coremesh's config file for the resilient profile when its CLI lacks the flags.
pub fn coremesh_config(
    listen: SocketAddr,
    cores: usize,
    endpoints: &[SocketAddr],
    driver: &str,
    admin: Option<u16>,
) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    let mut lines = vec![
        "# Generated by coremesh-bench compare.".to_string(),
        "[proxy]".to_string(),
        format!("listen = \"{listen}\""),
        format!("cores = {cores}"),
        format!("driver = \"{driver}\""),
        format!("shutdown_grace_ms = {COREMESH_GRACE_MS}"),
    ];
    if let Some(port) = admin {
        lines.push(format!("admin = \"127.0.0.1:{port}\""));
    }
    lines.extend([
        String::new(),
        "[defaults]".to_string(),
        "balance = \"least-latency\"".to_string(),
        "request_timeout_ms = 10000".to_string(),
        String::new(),
        "[[services]]".to_string(),
        "name = \"bench\"".to_string(),
        format!("endpoints = [{}]", eps.join(", ")),
        String::new(),
        "[[routes]]".to_string(),
        "service = \"bench\"".to_string(),
    ]);
    lines.join("\n") + "\n"
}

/// nginx as a reverse proxy with keep-alive to the upstream and `cores` workers, within
/// an open-file limit of `nofile`.
pub fn nginx_config(
    listen: SocketAddr,
    cores: usize,
    endpoints: &[SocketAddr],
    profile: Profile,
    prefix: &Path,
    nofile: u64,
) -> String {
    let p = prefix.display();
    let resilient = profile == Profile::Resilient;
    // Client and upstream connections both count; keep a margin for logs and listeners.
    let worker_connections = nofile.saturating_sub(100).clamp(1024, 30_000);
    let mut l: Vec<String> = vec![
        "# Generated by coremesh-bench compare.".into(),
        "daemon off;".into(),
        "master_process on;".into(),
        format!("worker_processes {cores};"),
        format!("worker_rlimit_nofile {nofile};"),
        format!("pid {p}/nginx.pid;"),
        format!("error_log {p}/error.log warn;"),
        String::new(),
        "events {".into(),
        format!("    worker_connections {worker_connections};"),
        "    multi_accept on;".into(),
        "    accept_mutex off;".into(),
        "}".into(),
        String::new(),
        "http {".into(),
        "    access_log off;".into(),
        "    keepalive_requests 1000000;".into(),
        "    keepalive_timeout 120s;".into(),
    ];
    for t in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        l.push(format!("    {t}_temp_path {p}/tmp/{t};"));
    }
    l.push(String::new());
    l.push("    upstream backend {".into());
    if resilient {
        l.push("        least_conn;".into());
    }
    for e in endpoints {
        if resilient {
            l.push(format!("        server {e} max_fails=3 fail_timeout=5s;"));
        } else {
            l.push(format!("        server {e};"));
        }
    }
    l.extend([
        "        keepalive 256;".into(),
        "        keepalive_requests 1000000;".into(),
        "        keepalive_timeout 60s;".into(),
        "    }".into(),
        String::new(),
        "    server {".into(),
        format!("        listen {listen} backlog=16384;"),
        "        location / {".into(),
        "            proxy_pass http://backend;".into(),
        "            proxy_http_version 1.1;".into(),
        "            proxy_set_header Connection \"\";".into(),
        "            proxy_connect_timeout 1s;".into(),
        "            proxy_read_timeout 10s;".into(),
    ]);
    if resilient {
        l.push("            proxy_next_upstream error timeout http_502 http_503 http_504;".into());
        l.push("            proxy_next_upstream_tries 3;".into());
    }
    l.extend(["        }".into(), "    }".into(), "}".into()]);
    l.join("\n") + "\n"
}

/// HAProxy in HTTP mode with `cores` threads. Its `maxconn` is what the open-file limit
/// allows (HAProxy needs two descriptors per connection and refuses to start otherwise).
pub fn haproxy_config(
    listen: SocketAddr,
    cores: usize,
    endpoints: &[SocketAddr],
    profile: Profile,
    nofile: u64,
) -> String {
    let resilient = profile == Profile::Resilient;
    let maxconn = haproxy_maxconn(nofile);
    let mut l: Vec<String> = vec![
        "# Generated by coremesh-bench compare.".into(),
        "global".into(),
        format!("    nbthread {cores}"),
        format!("    maxconn {maxconn}"),
        String::new(),
        "defaults".into(),
        "    mode http".into(),
        format!("    maxconn {maxconn}"),
        "    timeout connect 1s".into(),
        "    timeout client 60s".into(),
        "    timeout server 10s".into(),
        "    timeout http-keep-alive 60s".into(),
    ];
    if resilient {
        l.push("    retries 2".into());
        l.push("    option redispatch 1".into());
        l.push("    retry-on conn-failure empty-response response-timeout 502 503 504".into());
    }
    l.extend([
        String::new(),
        "frontend bench".into(),
        format!("    bind {listen} backlog 16384"),
        "    default_backend servers".into(),
        String::new(),
        "backend servers".into(),
        format!(
            "    balance {}",
            if resilient { "leastconn" } else { "roundrobin" }
        ),
        "    http-reuse always".into(),
    ]);
    for (i, e) in endpoints.iter().enumerate() {
        if resilient {
            l.push(format!("    server s{i} {e} check inter 1s fall 3 rise 2 observe layer7 error-limit 3 on-error mark-down"));
        } else {
            l.push(format!("    server s{i} {e}"));
        }
    }
    l.join("\n") + "\n"
}

/// The most connections HAProxy can be given under an open-file limit.
pub fn haproxy_maxconn(nofile: u64) -> u64 {
    (nofile.saturating_sub(100) / 2).clamp(256, 30_000)
}

/// Whether coremesh keeps running after start without an admin server; if it quits on its
/// own (seen with a build whose admin shutdown channel closes when no admin server is
/// configured), whether it runs with `--admin`. `Ok(Some(reason))`: it needs `--admin`.
pub fn coremesh_preflight(binary: &Path, work_dir: &Path) -> Result<Option<String>, String> {
    let try_once = |admin: bool| -> Result<(), String> {
        let port = free_port().map_err(|e| e.to_string())?;
        let sink = free_port().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(binary);
        cmd.args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--to", &format!("127.0.0.1:{sink}"), "--cores", "1"])
            .env("NO_COLOR", "1");
        if admin {
            let a = free_port().map_err(|e| e.to_string())?;
            cmd.args(["--admin", &format!("127.0.0.1:{a}")]);
        }
        let log = work_dir.join(format!("coremesh-preflight-{admin}.log"));
        let mut proc =
            Proc::spawn("coremesh preflight", cmd, &log, false).map_err(|e| format!("{e:#}"))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let began = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if proc.exited().is_some() || began.elapsed() > READY_WITHIN {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        let result = match proc.exited() {
            Some(status) => Err(format!(
                "exited on its own after start ({status}): {}",
                log_tail(&log, 300).replace('\n', " | ")
            )),
            None => Ok(()),
        };
        proc.stop(STOP_GRACE);
        result
    };
    match try_once(false) {
        Ok(()) => Ok(None),
        Err(without) => match try_once(true) {
            Ok(()) => Ok(Some(format!(
                "`coremesh proxy` without `--admin` {without}; with `--admin 127.0.0.1:PORT` it keeps running, so every coremesh in this run was given an admin address"
            ))),
            Err(with) => Err(format!("coremesh {without}; with --admin too: {with}")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_name_every_endpoint_and_the_listener() {
        let l: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let eps: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().expect("a"),
            "127.0.0.1:2".parse().expect("b"),
        ];
        let n = nginx_config(l, 1, &eps, Profile::Resilient, Path::new("/tmp/x"), 20_000);
        assert!(n.contains("    worker_connections 19900;"));
        assert!(n.contains("listen 127.0.0.1:9000"));
        assert!(n.contains("server 127.0.0.1:2 max_fails=3"));
        assert!(n.contains("least_conn;"));
        let h = haproxy_config(l, 1, &eps, Profile::Plain, 20_000);
        assert!(h.contains("    maxconn 9950\n"));
        assert!(h.contains("bind 127.0.0.1:9000"));
        assert!(h.contains("server s1 127.0.0.1:2\n"));
        assert!(!h.contains("retry-on"));
        let c = coremesh_config(l, 1, &eps, "uring", None);
        assert!(c.contains("endpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\"]"));
    }
}
