//! External programs of the HTTP/2 and gRPC suites (curl, nghttp, nghttpd, h2load, Python
//! with `h2` and `grpcio`): finding them — a missing one fails the test with the package to
//! install, never skips it — running one to completion within a bound, and child processes
//! whose output lines a test waits for, killed on drop.

use crate::netns::find_program;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Bound on one client program's run: generous, it only turns a hang into a failure.
pub const RUN_BOUND: Duration = Duration::from_secs(60);
/// Bound on a server program's first output line (its port, or that it listens).
pub const START_BOUND: Duration = Duration::from_secs(30);
/// Names the Python interpreter to use instead of `python3` on the `PATH`.
pub const PYTHON_ENV: &str = "COREMESH_TEST_PYTHON";
/// What `.ci/run` installs; quoted in every "missing program" failure.
pub const INSTALL_HINT: &str = "apt-get install -y nghttp2-client nghttp2-server curl \
     python3-h2 python3-grpcio python3-grpc-tools python3-websockets (or: python3 -m pip \
     install h2 grpcio grpcio-tools websockets); .ci/run does this";

/// Lock, ignoring poisoning (a panicking reader must not hide output from the test).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The path of `program` (from Debian package `package`); panics naming both when missing.
pub fn require_program(program: &str, package: &str) -> PathBuf {
    find_program(program).unwrap_or_else(|| {
        panic!(
            "`{program}` is needed by this test and is not installed (Debian package \
             {package}); {INSTALL_HINT}"
        )
    })
}

/// The Python interpreter: `$COREMESH_TEST_PYTHON`, else `python3` on the `PATH`.
pub fn python() -> PathBuf {
    match std::env::var_os(PYTHON_ENV) {
        Some(p) => PathBuf::from(p),
        None => require_program("python3", "python3"),
    }
}

/// Panics unless [`python`] can import every module in `modules`, naming the missing one.
pub fn require_python_modules(modules: &[&str]) -> PathBuf {
    let py = python();
    for module in modules {
        let out = Command::new(&py)
            .args(["-c", &format!("import {module}")])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", py.display()));
        assert!(
            out.status.success(),
            "Python module `{module}` is needed by this test and `{}` cannot import it: {}; \
             {INSTALL_HINT}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    py
}

/// A script of `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("py")
        .join(name);
    assert!(path.is_file(), "missing test script {}", path.display());
    path
}

/// A fresh temporary directory for one test's files, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("coremesh-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        TempDir(dir)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
    /// Write `bytes` to `name` in the directory; its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A program that ran to completion.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// The last stdout line parsed as JSON; panics naming `what` and quoting the output.
    pub fn json(&self, what: &str) -> serde_json::Value {
        let text = self.stdout_text();
        let line = text.lines().rev().find(|l| !l.trim().is_empty());
        line.and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| {
                panic!(
                    "{what}: no JSON result (exit {}); stdout: {text}; stderr: {}",
                    self.status, self.stderr
                )
            })
    }
    /// Panics naming `what` unless the program exited 0.
    pub fn expect_success(self, what: &str) -> Finished {
        assert!(
            self.status.success(),
            "{what}: exit {}; stdout: {}; stderr: {}",
            self.status,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        all
    })
}

/// Run `command` (stdin closed) to completion; a run longer than `bound` is killed and
/// fails the test, naming `what`.
pub fn run_bounded(mut command: Command, bound: Duration, what: &str) -> Finished {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: start {command:?}: {e}"));
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + bound;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
                panic!("{what}: still running after {bound:?}, killed; stderr: {stderr}");
            }
        }
    };
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
    }
}

#[derive(Default)]
struct Lines {
    stdout: Vec<String>,
    stderr: Vec<String>,
    /// Output streams that reached their end (2: the program has closed both).
    ended: usize,
}

/// A long-running program (a server, or a client a test watches): every output line kept,
/// waited for by content; killed on drop.
pub struct Proc {
    what: String,
    child: Option<Child>,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    readers: Vec<JoinHandle<()>>,
}

fn read_lines(
    from: impl Read + Send + 'static,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    stderr: bool,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            let (m, cv) = &*lines;
            let mut l = lock(m);
            if stderr {
                l.stderr.push(line);
            } else {
                l.stdout.push(line);
            }
            cv.notify_all();
        }
        let (m, cv) = &*lines;
        lock(m).ended += 1;
        cv.notify_all();
    })
}

impl Proc {
    /// Start `command` (stdin closed, both outputs read line by line).
    pub fn spawn(mut command: Command, what: &str) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: start {command:?}: {e}"));
        let lines = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let readers = vec![
            read_lines(
                child.stdout.take().expect("piped stdout"),
                lines.clone(),
                false,
            ),
            read_lines(
                child.stderr.take().expect("piped stderr"),
                lines.clone(),
                true,
            ),
        ];
        Proc {
            what: what.to_string(),
            child: Some(child),
            lines,
            readers,
        }
    }

    /// Wait up to `bound` for a line (on stdout or stderr) containing `needle`; that line.
    /// Panics, quoting the output, when it does not come (or the program's output ends).
    pub fn wait_line(&self, needle: &str, bound: Duration) -> String {
        self.try_wait_line(needle, bound)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Proc::wait_line`], with `Err` (quoting the output) instead of a panic.
    pub fn try_wait_line(&self, needle: &str, bound: Duration) -> Result<String, String> {
        let deadline = Instant::now() + bound;
        let (m, cv) = &*self.lines;
        let mut l = lock(m);
        loop {
            let found = l
                .stdout
                .iter()
                .chain(l.stderr.iter())
                .find(|s| s.contains(needle))
                .cloned();
            if let Some(line) = found {
                return Ok(line);
            }
            let now = Instant::now();
            if now >= deadline || l.ended == 2 {
                return Err(format!(
                    "{}: no line containing {needle:?} (waited up to {bound:?}, output \
                     ended: {}); stdout: {:?}; stderr: {:?}",
                    self.what,
                    l.ended == 2,
                    l.stdout,
                    l.stderr
                ));
            }
            l = cv
                .wait_timeout(l, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The port of a server that printed `PORT <n>` first.
    pub fn port(&self) -> u16 {
        let line = self.wait_line("PORT ", START_BOUND);
        line.rsplit(' ')
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad port line {line:?}: {e}", self.what))
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        lock(&self.lines.0).stdout.clone()
    }
    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        lock(&self.lines.0).stderr.clone()
    }
    /// Every stdout line that is a JSON object.
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Poll (every 10 ms, up to `bound`) until `done` holds over the JSON lines; whether it did.
    pub fn wait_json(&self, bound: Duration, done: impl Fn(&[serde_json::Value]) -> bool) -> bool {
        crate::traffic::wait_until(bound, Duration::from_millis(10), || {
            done(&self.json_lines())
        })
    }

    /// Whether the program has exited.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }

    /// Wait up to `bound` for the program to exit by itself; panics, quoting its output,
    /// when it does not.
    pub fn wait_exit(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        let child = self.child.as_mut().expect("the program is still held");
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    for r in self.readers.drain(..) {
                        let _ = r.join();
                    }
                    return status;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => panic!(
                    "{}: still running after {bound:?}; stdout: {:?}; stderr: {:?}",
                    self.what,
                    self.stdout_lines(),
                    self.stderr_lines()
                ),
            }
        }
    }

    /// Kill the program and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Resident set size of this process (`VmRSS` of `/proc/self/status`), in bytes.
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_else(|e| panic!("read /proc/self/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/self/status"));
    kib * 1024
}

/// The first value of field `name` in a list of (name, value) pairs as the peers report
/// them (headers or trailers).
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}
