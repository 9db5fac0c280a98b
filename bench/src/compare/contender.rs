//! The contenders — direct (no proxy, built in) and every proxy a contender file describes
//! (coremesh, nginx, HAProxy in `bench/contenders/`, any other by `--contender FILE`) —
//! and how each is started for a topology: a config rendered from its file's template (kept
//! in the results folder), the same CPU pinning (`taskset`), a readiness check, and a stop
//! that records how it ended.
//!
//! Two profiles: `Plain` (one endpoint, each proxy as shipped apart from keep-alive to the
//! upstream and worker/thread count) and `Resilient` (three endpoints, each proxy with its
//! own best balancing, retries and passive health checks, listed in [`best_settings`]).

use super::contender_file::{ContenderFile, Ready, ReadyCheck, Template};
use crate::procfs;
use crate::procs::{log_tail, Proc, Stopped};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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

/// A contender's name: `direct` (built in) or a contender file's `name`. Compared and
/// ordered as before contender files existed (direct, coremesh, nginx, haproxy, then the
/// others by name), so tables keep their row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(&'static str);

#[allow(non_upper_case_globals)]
impl Kind {
    pub const Direct: Kind = Kind("direct");
    pub const Coremesh: Kind = Kind("coremesh");
    pub const Nginx: Kind = Kind("nginx");
    pub const Haproxy: Kind = Kind("haproxy");
    const FIRST: [Kind; 4] = [Kind::Direct, Kind::Coremesh, Kind::Nginx, Kind::Haproxy];

    /// The contender of that name (names are interned: a run has a handful).
    pub fn named(name: &str) -> Kind {
        if let Some(k) = Kind::FIRST.into_iter().find(|k| k.0 == name) {
            return k;
        }
        static NAMES: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
        let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = names.iter().find(|n| **n == name) {
            return Kind(n);
        }
        let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
        names.push(leaked);
        Kind(leaked)
    }

    pub fn name(self) -> &'static str {
        self.0
    }

    pub fn is_proxy(self) -> bool {
        self != Kind::Direct
    }

    fn rank(self) -> usize {
        Kind::FIRST
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Kind::FIRST.len())
    }
}

impl Ord for Kind {
    fn cmp(&self, other: &Kind) -> std::cmp::Ordering {
        (self.rank(), self.0).cmp(&(other.rank(), other.0))
    }
}

impl PartialOrd for Kind {
    fn partial_cmp(&self, other: &Kind) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for Kind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Kind::named(&name))
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
    pub coremesh_driver: String,
    /// Every contender defined by a file (built-in or `--contender`), by name.
    pub files: BTreeMap<Kind, ContenderFile>,
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

    /// The placeholders every template of a contender file may use, for one start.
    pub fn vars(
        &self,
        listen: SocketAddr,
        endpoints: &[SocketAddr],
        work: &Path,
        config: &Path,
    ) -> BTreeMap<String, String> {
        let cpus: Vec<String> = self.proxy_cpus.iter().map(|c| c.to_string()).collect();
        let ups: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        let coremesh = self
            .coremesh
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        [
            ("listen", listen.to_string()),
            ("listen_host", listen.ip().to_string()),
            ("listen_port", listen.port().to_string()),
            ("upstreams", ups.join(",")),
            ("cpus", cpus.join(",")),
            ("cores", self.cores().to_string()),
            ("work", work.display().to_string()),
            ("config", config.display().to_string()),
            ("nofile", self.nofile.to_string()),
            ("max_connections", max_connections(self.nofile).to_string()),
            (
                "max_connections_paired",
                haproxy_maxconn(self.nofile).to_string(),
            ),
            ("coremesh", coremesh),
            ("coremesh_driver", self.coremesh_driver.clone()),
            ("root", super::workspace_root().display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Client and upstream connections a one-descriptor-per-connection proxy may hold under an
/// open-file limit (a margin kept for logs and listeners).
pub fn max_connections(nofile: u64) -> u64 {
    nofile.saturating_sub(100).clamp(1024, 30_000)
}

/// Each contender's settings in a profile, for the report.
pub fn settings(kind: Kind, setup: &Setup, profile: Profile) -> String {
    match setup.files.get(&kind) {
        _ if kind == Kind::Direct => "no proxy".to_string(),
        Some(f) => {
            let s = &f.profile(profile == Profile::Resilient).settings;
            if s.is_empty() {
                "as configured by its contender file".to_string()
            } else {
                s.clone()
            }
        }
        None => "unknown contender".to_string(),
    }
}

/// Each contender's settings in the resilient profile, for the report.
pub fn best_settings(kind: Kind, setup: &Setup) -> String {
    settings(kind, setup, Profile::Resilient)
}

/// Resolve a contender file's binary: a path (must exist) or a name on PATH.
pub fn resolve_binary(file: &ContenderFile, setup: &Setup) -> Result<PathBuf, String> {
    if file.binary.text.contains("{coremesh}") {
        setup.coremesh.clone()?;
    }
    let vars = setup.vars(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &[],
        &setup.work_dir,
        &setup.config_dir,
    );
    let name = file.binary.render(&file.origin, &vars, &[])?;
    let name = name.trim();
    if name.contains('/') {
        let p = PathBuf::from(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "{name} not found (field `binary` of {})",
                file.origin
            ))
        }
    } else {
        crate::wrk::on_path(name)
            .ok_or_else(|| format!("{name} not found on PATH: run bench/setup.sh"))
    }
}

/// The first line a contender's `version` command prints (stdout, else stderr).
pub fn version(file: &ContenderFile, setup: &Setup) -> String {
    let binary = match resolve_binary(file, setup) {
        Ok(b) => b,
        Err(e) => return e,
    };
    let vars = setup.vars(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        &[],
        &setup.work_dir,
        &setup.config_dir,
    );
    let mut cmd = Command::new(&binary);
    for a in &file.version {
        match a.render(&file.origin, &vars, &[]) {
            Ok(a) if !a.is_empty() => {
                cmd.arg(a);
            }
            Ok(_) => {}
            Err(e) => return e,
        }
    }
    let Ok(o) = cmd.output() else {
        return format!("{} did not run", binary.display());
    };
    let text = if o.stdout.is_empty() {
        o.stderr
    } else {
        o.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string()
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
    /// The placeholders its templates were rendered with (`{admin}`, `{work}`, …).
    pub vars: BTreeMap<String, String>,
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
    if kind == Kind::Direct {
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
            vars: BTreeMap::new(),
        });
    }
    let file = setup
        .files
        .get(&kind)
        .ok_or_else(|| format!("no contender file defines {:?}", kind.name()))?;
    let def = file.profile(profile == Profile::Resilient);
    launch(
        kind,
        setup,
        endpoints,
        Launch {
            name: format!("{}-{tag}", kind.name()),
            config: file.config.as_ref(),
            start: file.start.iter().chain(&def.args).collect(),
            vars: def.vars.clone(),
            templated_vars: BTreeMap::new(),
            admin_args: setup.coremesh_admin,
            ready: file.ready.clone(),
        },
    )
}

/// One start of a contender's process: what [`start`] takes from the file's profile, and
/// the `mtls` scenario from the file's `[mtls]` roles.
pub struct Launch<'a> {
    /// Names its config, log and work folder.
    pub name: String,
    pub config: Option<&'a Template>,
    pub start: Vec<&'a Template>,
    /// Placeholders added to the bench's own (a profile's `vars`, the `mtls` ones).
    pub vars: BTreeMap<String, String>,
    /// Placeholders whose values are templates themselves, rendered with all the others
    /// (the `[mtls.tls]` and `[mtls.plain]` ones).
    pub templated_vars: BTreeMap<String, &'a Template>,
    /// Add the file's `admin_args` (see [`coremesh_preflight`]).
    pub admin_args: bool,
    pub ready: Ready,
}

/// Start a contender file's process as `how` says, in front of `endpoints`, pinned to the
/// proxy CPUs, and wait until it is ready.
pub fn launch(
    kind: Kind,
    setup: &Setup,
    endpoints: &[SocketAddr],
    how: Launch<'_>,
) -> Result<Running, String> {
    let file = setup
        .files
        .get(&kind)
        .ok_or_else(|| format!("no contender file defines {:?}", kind.name()))?;
    let name = how.name;
    let log = setup.work_dir.join(format!("{name}.log"));
    let binary = resolve_binary(file, setup)?;
    let port = free_port().map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let work = setup.work_dir.join(&name);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let config = setup
        .config_dir
        .join(format!("{name}.{}", file.config_extension));
    let mut vars = setup.vars(addr, endpoints, &work, &config);
    vars.insert("binary".into(), binary.display().to_string());
    let admin = free_port().map_err(|e| e.to_string())?;
    vars.insert("admin".into(), format!("127.0.0.1:{admin}"));
    vars.extend(how.vars);
    let ups: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
    let mut rendered = BTreeMap::new();
    for (k, t) in &how.templated_vars {
        rendered.insert(k.clone(), t.render(&file.origin, &vars, &ups)?);
    }
    vars.extend(rendered);
    if let Some(t) = how.config {
        let text = t.render(&file.origin, &vars, &ups)?;
        std::fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    }
    let mut cmd = pinned(setup, &binary);
    for t in how.start {
        let arg = t.render(&file.origin, &vars, &ups)?;
        if !arg.is_empty() {
            cmd.arg(arg);
        }
    }
    if how.admin_args {
        for t in &file.admin_args {
            cmd.arg(t.render(&file.origin, &vars, &ups)?);
        }
    }
    cmd.envs(&file.env);
    let extra_logs: Vec<PathBuf> = file
        .logs
        .iter()
        .filter_map(|t| t.render(&file.origin, &vars, &ups).ok())
        .map(PathBuf::from)
        .collect();
    let command = show(&cmd);
    let mut proc = Proc::spawn(&name, cmd, &log, false).map_err(|e| format!("{e:#}"))?;
    let ready = wait_ready(&mut proc, addr, &how.ready).and_then(|()| {
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
            notes: Vec::new(),
            vars,
        }),
        Err(e) => {
            proc.kill();
            let extra: Vec<String> = extra_logs
                .iter()
                .map(|l| log_tail(l, 800).replace('\n', " | "))
                .collect();
            Err(format!(
                "{e}; log: {} {}",
                log_tail(&log, 800).replace('\n', " | "),
                extra.join(" ")
            ))
        }
    }
}

/// Ready as its file says: accepting connections, or answering a GET with an HTTP status
/// line.
fn wait_ready(proc: &mut Proc, addr: SocketAddr, ready: &Ready) -> Result<(), String> {
    let began = Instant::now();
    let within = Duration::from_secs_f64(ready.timeout_s);
    let mut last = String::from("never tried");
    while began.elapsed() < within {
        if let Some(status) = proc.exited() {
            return Err(format!("exited at start-up ({status})"));
        }
        let attempt = match ready.check {
            ReadyCheck::Http => fetch(addr, &ready.path).and_then(|t| status_of(&t).map(|_| ())),
            ReadyCheck::Tcp => TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                .map(|_| ())
                .map_err(|e| e.to_string()),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("not ready within {within:?}: {last}"))
}

fn status_of(text: &str) -> Result<u16, String> {
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| text.starts_with("HTTP/1."))
        .ok_or_else(|| format!("not an HTTP response: {:?}", &text[..text.len().min(60)]))
}

/// One GET on a fresh connection; the status code.
pub fn probe(addr: SocketAddr) -> Result<u16, String> {
    status_of(&fetch(addr, "/")?)
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

    fn setup() -> Setup {
        let files = ContenderFile::built_in()
            .expect("built-in files")
            .into_iter()
            .map(|f| (Kind::named(&f.name), f))
            .collect();
        Setup {
            coremesh: Ok(PathBuf::from("/bin/coremesh")),
            coremesh_driver: "uring".into(),
            files,
            taskset: None,
            proxy_cpus: vec![1],
            proxy_cores: None,
            work_dir: PathBuf::from("/tmp/x"),
            config_dir: PathBuf::from("/tmp/x"),
            nofile: 20_000,
            coremesh_admin: false,
        }
    }

    fn config(kind: Kind, profile: Profile, eps: &[SocketAddr]) -> String {
        let setup = setup();
        let file = &setup.files[&kind];
        let l: SocketAddr = "127.0.0.1:9000".parse().expect("addr");
        let mut vars = setup.vars(l, eps, Path::new("/tmp/x/w"), Path::new("/tmp/x/c"));
        vars.insert("binary".into(), "b".into());
        vars.extend(file.profile(profile == Profile::Resilient).vars.clone());
        let ups: Vec<String> = eps.iter().map(|e| e.to_string()).collect();
        let t = file.config.as_ref().expect("a config template");
        t.render(&file.origin, &vars, &ups).expect("renders")
    }

    #[test]
    fn configs_name_every_endpoint_and_the_listener() {
        let eps: Vec<SocketAddr> = vec![
            "127.0.0.1:1".parse().expect("a"),
            "127.0.0.1:2".parse().expect("b"),
        ];
        let n = config(Kind::Nginx, Profile::Resilient, &eps);
        assert!(n.contains("    worker_connections 19900;"));
        assert!(n.contains("listen 127.0.0.1:9000"));
        assert!(n.contains("server 127.0.0.1:2 max_fails=3"));
        assert!(n.contains("least_conn;"));
        assert!(n.contains("            proxy_next_upstream_tries 3;\n"));
        let n = config(Kind::Nginx, Profile::Plain, &eps);
        assert!(n.contains("    upstream backend {\n        server 127.0.0.1:1;\n        server 127.0.0.1:2;\n        keepalive 256;"), "{n}");
        assert!(!n.contains("proxy_next_upstream"));
        let h = config(Kind::Haproxy, Profile::Plain, &eps);
        assert!(h.contains("    maxconn 9950\n"));
        assert!(h.contains("bind 127.0.0.1:9000"));
        assert!(h.contains("server s1 127.0.0.1:2\n"));
        assert!(h.contains("    balance roundrobin\n"));
        assert!(
            h.contains("    timeout http-keep-alive 60s\n\nfrontend bench"),
            "{h}"
        );
        assert!(!h.contains("retry-on"));
        let h = config(Kind::Haproxy, Profile::Resilient, &eps);
        assert!(h.contains("    retries 2\n    option redispatch 1\n    retry-on conn-failure"));
        assert!(h.contains("server s0 127.0.0.1:1 check inter 1s"));
    }

    #[test]
    fn kinds_keep_their_order_and_names() {
        let other = Kind::named("pingora");
        assert_eq!(other, Kind::named("pingora"));
        let mut all = [
            other,
            Kind::Haproxy,
            Kind::Nginx,
            Kind::Coremesh,
            Kind::Direct,
        ];
        all.sort();
        let names: Vec<&str> = all.iter().map(|k| k.name()).collect();
        assert_eq!(names, ["direct", "coremesh", "nginx", "haproxy", "pingora"]);
        let json = serde_json::to_string(&other).expect("json");
        assert_eq!(json, "\"pingora\"");
        let back: Kind = serde_json::from_str(&json).expect("back");
        assert_eq!(back, other);
    }
}
