//! The real `coremesh run` under a fake systemd, on both drivers: with `$NOTIFY_SOCKET`
//! naming a datagram socket the test binds in a temporary folder, the proxy sends
//! `READY=1` once `/ready` answers 200 (every listener bound, first discovery done) and
//! `STOPPING=1` when SIGTERM starts its shutdown, then exits 0. This is what lets
//! `deploy/systemd/coremesh.service` be `Type=notify`, so that the interception rules
//! (ordered after it) never go in before the proxy can take the traffic.

use coremesh_tests::client;
use coremesh_tests::proxy::{driver_name, for_each_driver};
use coremesh_tests::Driver;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Only a hang waits this long: start-up takes well under a second.
const BOUND: Duration = Duration::from_secs(60);
/// What precedes the admin address in the start-up log.
const ADMIN_LINE: &str = "admin server on http://";

/// A folder of this test's own, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("coremesh-notify-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary folder");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The proxy process, killed on drop if still running, with its standard error collected.
struct Proxy {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Proxy {
    fn start(config: &std::path::Path, notify_socket: &std::path::Path) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coremesh"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("NOTIFY_SOCKET", notify_socket)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the coremesh binary");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut pipe = child.stderr.take().expect("piped stderr");
        let sink = stderr.clone();
        std::thread::spawn(move || {
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
        Proxy { child, stderr }
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }

    /// The admin address from the start-up log (logged before the proxy is ready).
    fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + BOUND;
        loop {
            let text = self.stderr_text();
            if let Some(addr) = text.lines().find_map(|line| {
                let rest = &line[line.find(ADMIN_LINE)? + ADMIN_LINE.len()..];
                rest.split(|c: char| c.is_whitespace() || c == '"')
                    .next()?
                    .parse()
                    .ok()
            }) {
                return addr;
            }
            assert!(
                Instant::now() < deadline,
                "no admin address logged:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn sigterm(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) takes plain integers and touches no memory of this process; the
        // pid is our own child's, not yet reaped (the Child is still held).
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + BOUND;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit:\n{}",
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The next notification, as text; fails the test after [`BOUND`].
fn next_notification(socket: &UnixDatagram, proxy: &Proxy, waiting_for: &str) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification ({waiting_for}) within {BOUND:?}: {e}; stderr:\n{}",
            proxy.stderr_text()
        ),
    }
}

fn ready_then_stopping(driver: Driver) {
    let dir = TempDir::new(driver_name(driver));
    let notify_path = dir.0.join("notify");
    let socket = UnixDatagram::bind(&notify_path).expect("bind the notification socket");
    socket
        .set_read_timeout(Some(BOUND))
        .expect("a read timeout");
    let config = dir.0.join("coremesh.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\ncores = 1\n\
             driver = \"{}\"\n\n\
             [[services]]\nname = \"backend\"\nendpoints = [\"127.0.0.1:9\"]\n",
            driver_name(driver)
        ),
    )
    .expect("write the configuration");

    let mut proxy = Proxy::start(&config, &notify_path);
    let first = next_notification(&socket, &proxy, "READY=1");
    assert_eq!(first, "READY=1\n", "stderr:\n{}", proxy.stderr_text());
    // Sent only once `/ready` is true: the first look after it already sees 200.
    let admin = proxy.admin_addr();
    let ready = client::get(admin, "/ready", &[])
        .unwrap_or_else(|e| panic!("GET /ready on {admin}: {e:?}"));
    assert_eq!(ready.status, 200, "stderr:\n{}", proxy.stderr_text());

    proxy.sigterm();
    let second = next_notification(&socket, &proxy, "STOPPING=1");
    assert_eq!(second, "STOPPING=1\n");
    let status = proxy.wait_exit();
    assert!(
        status.success(),
        "{status}; stderr:\n{}",
        proxy.stderr_text()
    );
}

#[test]
fn systemd_hears_ready_after_ready_is_true_and_stopping_at_sigterm() {
    for_each_driver(ready_then_stopping);
}
