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
    pub work_dir: PathBuf,
    pub config_dir: PathBuf,
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
    let cores = setup.proxy_cpus.len().max(1);
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
                let text = coremesh_config(addr, cores, endpoints, &setup.coremesh_driver);
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
                if profile == Profile::Resilient {
                    cmd.args(["--balance", "least-latency", "--retries", "3"])
                        .args(["--retry-on", "502,503,504", "--timeout", "10000"]);
                }
            }
            cmd.env("RUST_LOG", "info");
            (cmd, addr, notes)
        }
        Kind::Nginx => {
            let binary = setup.nginx.clone()?;
            let port = free_port().map_err(|e| e.to_string())?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let prefix = setup.work_dir.join(&name);
            std::fs::create_dir_all(prefix.join("tmp")).map_err(|e| e.to_string())?;
            let text = nginx_config(addr, cores, endpoints, profile, &prefix);
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
            let text = haproxy_config(addr, cores, endpoints, profile);
            let path = setup.config_dir.join(format!("{name}.cfg"));
            std::fs::write(&path, &text).map_err(|e| e.to_string())?;
            let mut cmd = pinned(setup, &binary);
            cmd.arg("-db").arg("-f").arg(&path);
            (cmd, addr, Vec::new())
        }
    };
    let command = show(&cmd);
    let mut proc = Proc::spawn(&name, cmd, &log, false).map_err(|e| format!("{e:#}"))?;
    match wait_ready(&mut proc, addr) {
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
) -> String {
    let eps: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "# Generated by coremesh-bench compare.\n[proxy]\nlisten = \"{listen}\"\ncores = {cores}\ndriver = \"{driver}\"\nshutdown_grace_ms = {COREMESH_GRACE_MS}\n\n\
         [defaults]\nbalance = \"least-latency\"\nrequest_timeout_ms = 10000\n\n\
         [[services]]\nname = \"bench\"\nendpoints = [{}]\n\n[[routes]]\nservice = \"bench\"\n",
        eps.join(", ")
    )
}

/// nginx as a reverse proxy with keep-alive to the upstream and `cores` workers.
pub fn nginx_config(
    listen: SocketAddr,
    cores: usize,
    endpoints: &[SocketAddr],
    profile: Profile,
    prefix: &Path,
) -> String {
    let p = prefix.display();
    let resilient = profile == Profile::Resilient;
    let servers: Vec<String> = endpoints
        .iter()
        .map(|e| {
            if resilient {
                format!("        server {e} max_fails=3 fail_timeout=5s;")
            } else {
                format!("        server {e};")
            }
        })
        .collect();
    let balance = if resilient {
        "        least_conn;\n"
    } else {
        ""
    };
    let next = if resilient {
        "            proxy_next_upstream error timeout http_502 http_503 http_504;\n            proxy_next_upstream_tries 3;\n"
    } else {
        ""
    };
    format!(
        "# Generated by coremesh-bench compare.\n\
daemon off;\nmaster_process on;\nworker_processes {cores};\nworker_rlimit_nofile 65536;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\n\
events {{\n    worker_connections 30000;\n    multi_accept on;\n    accept_mutex off;\n}}\n\n\
http {{\n    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout 120s;\n\
    client_body_temp_path {p}/tmp/body;\n    proxy_temp_path {p}/tmp/proxy;\n    fastcgi_temp_path {p}/tmp/fastcgi;\n    uwsgi_temp_path {p}/tmp/uwsgi;\n    scgi_temp_path {p}/tmp/scgi;\n\n\
    upstream backend {{\n{balance}{}\n        keepalive 256;\n        keepalive_requests 1000000;\n        keepalive_timeout 60s;\n    }}\n\n\
    server {{\n        listen {listen} backlog=16384;\n        location / {{\n            proxy_pass http://backend;\n            proxy_http_version 1.1;\n            proxy_set_header Connection \"\";\n            proxy_connect_timeout 1s;\n            proxy_read_timeout 10s;\n{next}        }}\n    }}\n}}\n",
        servers.join("\n")
    )
}

/// HAProxy in HTTP mode with `cores` threads.
pub fn haproxy_config(
    listen: SocketAddr,
    cores: usize,
    endpoints: &[SocketAddr],
    profile: Profile,
) -> String {
    let resilient = profile == Profile::Resilient;
    let servers: Vec<String> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            if resilient {
                format!("    server s{i} {e} check inter 1s fall 3 rise 2 observe layer7 error-limit 3 on-error mark-down")
            } else {
                format!("    server s{i} {e}")
            }
        })
        .collect();
    let retry = if resilient {
        "    retries 2\n    option redispatch 1\n    retry-on conn-failure empty-response response-timeout 502 503 504\n"
    } else {
        ""
    };
    let balance = if resilient { "leastconn" } else { "roundrobin" };
    format!(
        "# Generated by coremesh-bench compare.\n\
global\n    nbthread {cores}\n    maxconn 30000\n\n\
defaults\n    mode http\n    maxconn 30000\n    timeout connect 1s\n    timeout client 60s\n    timeout server 10s\n    timeout http-keep-alive 60s\n{retry}\n\
frontend bench\n    bind {listen} backlog 16384\n    default_backend servers\n\n\
backend servers\n    balance {balance}\n    http-reuse always\n{}\n",
        servers.join("\n")
    )
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
        let n = nginx_config(l, 1, &eps, Profile::Resilient, Path::new("/tmp/x"));
        assert!(n.contains("listen 127.0.0.1:9000"));
        assert!(n.contains("server 127.0.0.1:2 max_fails=3"));
        assert!(n.contains("least_conn;"));
        let h = haproxy_config(l, 1, &eps, Profile::Plain);
        assert!(h.contains("bind 127.0.0.1:9000"));
        assert!(h.contains("server s1 127.0.0.1:2\n"));
        assert!(!h.contains("retry-on"));
        let c = coremesh_config(l, 1, &eps, "uring");
        assert!(c.contains("endpoints = [\"127.0.0.1:1\", \"127.0.0.1:2\"]"));
    }
}
