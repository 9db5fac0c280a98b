//! What the namespace suites of the sidecar share: the `coremesh` program run as a uid
//! of its own in a namespace, a folder it can read, small servers that count their
//! connections, and a bounded wait for a condition.

#![allow(dead_code)]

use coremesh_tests::netns::{coremesh_bin, Netns};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy's uid: no user on a test machine has it, and the rules exempt it.
pub const PROXY_UID: u32 = 47_213;
/// Turns a hang into a failure; nothing waits for it on a working run.
pub const BOUND: Duration = Duration::from_secs(30);

/// Polls `cond` until it holds or [`BOUND`] has passed.
pub fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub struct Elsewhere {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
}

/// One HTTP answer `body` per connection, after reading a request head.
pub fn http_server(addr: &str, body: &'static [u8]) -> Elsewhere {
    let listener = TcpListener::bind(addr).unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = accept_loop(listener, move |mut s| {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let _ = s.write_all(body);
    });
    Elsewhere { addr, connections }
}

pub fn serve(addr: &str, handle: impl Fn(TcpStream) + Send + Sync + 'static) -> Arc<AtomicU64> {
    accept_loop(TcpListener::bind(addr).unwrap(), handle)
}

/// Accepts forever on a thread (the listener lives as long as the test process), one
/// thread per connection; counts connections.
pub fn accept_loop(
    listener: TcpListener,
    handle: impl Fn(TcpStream) + Send + Sync + 'static,
) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(BOUND));
            let h = handle.clone();
            std::thread::spawn(move || h(s));
        }
    });
    count
}

/// A folder for the proxy's configuration and log, readable by the proxy's uid.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "cm-sidecar-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        set_mode(&p, 0o755);
        TempDir(p)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        set_mode(&p, 0o644);
        p
    }
}

pub fn set_mode(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `coremesh run` in a namespace as [`PROXY_UID`]; killed on drop unless stopped.
pub struct ProxyProcess {
    child: Option<Child>,
    pub log: PathBuf,
}

impl ProxyProcess {
    pub fn start(ns: &Netns, config: &std::path::Path, dir: &TempDir) -> ProxyProcess {
        let log = dir.0.join("proxy.log");
        let file = std::fs::File::create(&log).unwrap();
        let uid = PROXY_UID.to_string();
        let child = ns
            .command("setpriv")
            .args(["--reuid", &uid, "--regid", &uid, "--clear-groups", "--"])
            .arg(coremesh_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        ProxyProcess {
            child: Some(child),
            log,
        }
    }

    pub fn log(&self) -> String {
        format!(
            "--- proxy log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Sends the process signal `name` (e.g. `TERM`).
    pub fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let pid = child.id().to_string();
            let sent = std::process::Command::new("kill")
                .args([&format!("-{name}"), &pid])
                .status()
                .unwrap();
            assert!(sent.success(), "kill -{name} {pid}");
        }
    }

    /// Whether the process has not exited yet.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, and the exit status must be 0 within [`BOUND`].
    pub fn stop(self) {
        self.signal("TERM");
        self.wait_exit();
    }

    /// The exit status must be 0 within [`BOUND`].
    pub fn wait_exit(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let mut status = None;
        let _ = wait_until(|| {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        let log = self.log();
        match status {
            Some(s) => assert!(s.success(), "proxy exited with {s}\n{log}"),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("proxy still running {BOUND:?} after SIGTERM\n{log}");
            }
        }
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("{}", self.log());
            }
        }
    }
}
