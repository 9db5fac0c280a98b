//! Debian's nginx as a reference reverse proxy for differential tests: a child process with a
//! generated configuration in its own temporary directory, listening on 127.0.0.1, proxying
//! with `proxy_http_version 1.1` to one upstream over a keep-alive pool, stopped on drop.
//!
//! The configuration is [`config_text`]; every directive that departs from nginx's defaults
//! says why. nginx runs with `daemon off` and `master_process off`, so the child is the one
//! process that serves, and stopping it (SIGKILL through [`std::process::Child::kill`], then
//! a wait) leaves nothing behind. Its error log is kept in the temporary directory and quoted
//! when something goes wrong.
//!
//! A missing nginx fails the test that asked for it, unless [`OPT_OUT_ENV`] is set: the
//! differential test is only worth having if it cannot silently stop running.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Set (to any value) to let tests that need nginx pass without it, saying so on stderr.
pub const OPT_OUT_ENV: &str = "COREMESH_SKIP_NGINX";
/// Set to the path of an nginx binary to use instead of the one found on the `PATH` or in
/// `/usr/sbin`.
pub const BINARY_ENV: &str = "COREMESH_NGINX";
/// How long nginx may take to write its pid file (it does so once its listener is bound):
/// generous, it only turns a hang into a failure.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between checks for the pid file while nginx starts.
const START_POLL: Duration = Duration::from_millis(10);
/// Fresh ports tried when another process took the chosen one before nginx could bind it.
const PORT_ATTEMPTS: usize = 20;

/// Where nginx is, or `None` when the test may skip (nginx missing and [`OPT_OUT_ENV`] set).
/// Panics when nginx is missing and the opt-out is not set.
pub fn require_nginx() -> Option<PathBuf> {
    if let Some(path) = find_binary() {
        return Some(path);
    }
    if std::env::var_os(OPT_OUT_ENV).is_some() {
        eprintln!("nginx not found and {OPT_OUT_ENV} is set: skipping the differential test");
        return None;
    }
    panic!(
        "nginx is needed by this test and was not found (looked at ${BINARY_ENV}, the PATH \
         and /usr/sbin/nginx); install it (apt-get install nginx, or nginx-light) or set {OPT_OUT_ENV}=1 \
         to skip"
    );
}

fn find_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(BINARY_ENV) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|p| p.is_file())
}

/// The nginx configuration used as the reference reverse proxy.
///
/// - `master_process off`, `daemon off`: one process, a child of the test.
/// - `proxy_http_version 1.1` + `proxy_set_header Connection ""` + `keepalive`: the keep-alive
///   upstream pool nginx documents for HTTP/1.1 upstreams.
/// - `proxy_set_header Host $http_host`: forward the client's Host (nginx's default would
///   send the upstream block's name); an absent Host stays absent (empty values are not sent).
/// - header buffers of 64 KiB for client heads and upstream heads, as coremesh's default
///   `max_header_bytes`, so the same heads fit both.
pub fn config_text(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    let mut c = String::new();
    let _ = writeln!(c, "daemon off;\nmaster_process off;\nworker_processes 1;");
    let _ = writeln!(c, "pid {d}/nginx.pid;\nerror_log {d}/error.log info;");
    let _ = writeln!(c, "events {{ worker_connections 256; }}");
    let _ = writeln!(c, "http {{");
    let _ = writeln!(c, "  access_log off;");
    for (directive, sub) in [
        ("client_body_temp_path", "client_body"),
        ("proxy_temp_path", "proxy"),
        ("fastcgi_temp_path", "fastcgi"),
        ("uwsgi_temp_path", "uwsgi"),
        ("scgi_temp_path", "scgi"),
    ] {
        let _ = writeln!(c, "  {directive} {d}/{sub};");
    }
    let _ = writeln!(c, "  large_client_header_buffers 4 64k;");
    let _ = writeln!(c, "  proxy_buffer_size 64k;\n  proxy_buffers 8 64k;");
    let _ = writeln!(c, "  proxy_busy_buffers_size 128k;");
    let _ = writeln!(
        c,
        "  upstream backend {{ server {upstream}; keepalive 16; }}"
    );
    let _ = writeln!(c, "  server {{");
    let _ = writeln!(c, "    listen {listen};");
    let _ = writeln!(c, "    location / {{");
    let _ = writeln!(c, "      proxy_pass http://backend;");
    let _ = writeln!(c, "      proxy_http_version 1.1;");
    let _ = writeln!(c, "      proxy_set_header Connection \"\";");
    let _ = writeln!(c, "      proxy_set_header Host $http_host;");
    let _ = writeln!(c, "    }}\n  }}\n}}");
    c
}

/// A running nginx; killed and waited for on drop, its directory removed.
pub struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// Start `binary` proxying to `upstream`, listening on a free port of 127.0.0.1. Returns
    /// once nginx has bound its listener (it writes its pid file after that).
    pub fn start(binary: &Path, upstream: SocketAddr) -> Result<Nginx, String> {
        let dir = temp_dir()?;
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let listen = free_port()?;
            match start_on(binary, &dir, listen, upstream) {
                Ok(child) => {
                    return Ok(Nginx {
                        child,
                        dir,
                        addr: listen,
                    })
                }
                Err(Failure::PortTaken(log)) => last_error = log,
                Err(Failure::Other(e)) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(format!(
            "nginx could not bind a port in {PORT_ATTEMPTS} attempts; last log:\n{last_error}"
        ))
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// nginx's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// Kill nginx and wait for it; its sockets (client and upstream) are closed when this
    /// returns. Idempotent.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

enum Failure {
    /// nginx exited because the port was taken meanwhile; its log.
    PortTaken(String),
    Other(String),
}

fn start_on(
    binary: &Path,
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
) -> Result<Child, Failure> {
    let conf = dir.join("nginx.conf");
    let log = dir.join("error.log");
    let pid = dir.join("nginx.pid");
    let _ = std::fs::remove_file(&pid);
    let _ = std::fs::remove_file(&log);
    std::fs::write(&conf, config_text(dir, listen, upstream))
        .map_err(|e| Failure::Other(format!("write {}: {e}", conf.display())))?;
    let mut child = Command::new(binary)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Failure::Other(format!("spawn {}: {e}", binary.display())))?;
    let deadline = Instant::now() + START_TIMEOUT;
    let child_pid = child.id().to_string();
    loop {
        let written = std::fs::read_to_string(&pid).unwrap_or_default();
        if written.trim() == child_pid {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(if text.contains("Address already in use") {
                Failure::PortTaken(text)
            } else {
                Failure::Other(format!("nginx exited at start ({status}); log:\n{text}"))
            });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(Failure::Other(format!(
                "nginx did not write its pid file within {START_TIMEOUT:?}; log:\n{text}"
            )));
        }
        std::thread::sleep(START_POLL);
    }
}

/// A port of 127.0.0.1 that was free a moment ago (nginx cannot be handed a bound socket
/// in single-process mode, so a race with another process is possible and retried).
fn free_port() -> Result<SocketAddr, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map_err(|e| format!("local address: {e}"))
}

/// A new, empty, private directory under the system temporary directory.
fn temp_dir() -> Result<PathBuf, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("coremesh-nginx-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    Ok(dir)
}
