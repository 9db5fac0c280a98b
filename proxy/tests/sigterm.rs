//! The real `coremesh` binary, on both drivers: SIGTERM during load exits 0 with zero failed
//! requests, and 10 MiB streamed through `coremesh proxy` grows its peak memory by no more
//! than the proxy's streaming buffers (with slack), not by any part of the body.
//!
//! Each test runs `coremesh proxy --listen 127.0.0.1:0 --to UPSTREAM --cores 1 --driver D`
//! against a programmable upstream from `coremesh-tests`, reads the port and the driver from
//! its start-up log line, and kills the process if a test fails before it exits.

use coremesh::core::{BODY_CHUNK, BUFFER_SIZE};
use coremesh_discovery::DEFAULT_REPLAY_BODY_LIMIT;
use coremesh_tests::client::{self, Client};
use coremesh_tests::data::{pseudo_random_bytes, sha1_hex};
use coremesh_tests::load::{ClientEnd, Load};
use coremesh_tests::proxy::{
    assert_running_driver, driver_in_start_line, driver_name, for_each_driver,
};
use coremesh_tests::upstream::{echo_body, Action, Response, Upstream};
use coremesh_tests::Driver;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the binary may take to start accepting.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long it may take to exit after SIGTERM: in-flight requests take milliseconds; the
/// default grace period (30 s) bounds it.
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);
/// What precedes the address in the binary's start-up log line.
const LISTENING: &str = "coremesh listening on ";
const TEN_MIB: usize = 10 * 1024 * 1024;
/// What streaming one exchange holds at most at once, by the proxy's own limits: a body
/// chunk in flight each way (`BODY_CHUNK`, 64 KiB), the replay copy of a request body (kept
/// up to `replay_body_limit`, 64 KiB by default, and dropped once the body outgrows it), and a
/// read buffer for each side's head (`BUFFER_SIZE`, 16 KiB): 224 KiB.
const STREAMING_BUFFERS: usize = 2 * BODY_CHUNK + DEFAULT_REPLAY_BODY_LIMIT + 2 * BUFFER_SIZE;
/// Peak-memory (VmHWM) growth allowed while 10 MiB streams through, after a warm-up that
/// already allocated those buffers once: twice [`STREAMING_BUFFERS`] (448 KiB), slack for
/// the allocator placing a buffer anew before the old one is reused. Seen: under 64 KiB.
/// Holding a twentieth of the body at once would exceed it.
const MAX_HWM_GROWTH_KIB: u64 = (2 * STREAMING_BUFFERS / 1024) as u64;

/// A running `coremesh proxy` process; killed on drop if still running.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl ProxyProcess {
    /// Start the binary on 127.0.0.1:0 in front of `upstream` (an echo or otherwise named
    /// upstream); read the port it got and the driver it runs from its start-up log line
    /// (the driver must be the one asked for, see `assert_running_driver`), then wait until
    /// a request through it reaches `upstream`.
    fn start(driver: Driver, upstream: &Upstream) -> ProxyProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_coremesh"))
            .args(["proxy", "--listen", "127.0.0.1:0", "--to"])
            .arg(upstream.addr().to_string())
            .args(["--cores", "1", "--driver", driver_name(driver)])
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
        let stderr_reader = std::thread::spawn(move || {
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
        let mut process = ProxyProcess {
            child,
            addr: "127.0.0.1:1".parse().expect("a literal address"),
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        let (addr, running) = process.wait_for_start_line().unwrap_or_else(|why| {
            panic!(
                "coremesh proxy ({}) never logged its start: {why}; stderr:\n{}",
                driver_name(driver),
                process.stderr_text()
            )
        });
        process.addr = addr;
        assert_running_driver(driver, running);
        if let Err(why) = process.wait_until_serving(upstream) {
            panic!(
                "coremesh proxy ({}) never served: {why}; stderr:\n{}",
                driver_name(driver),
                process.stderr_text()
            );
        }
        process
    }

    /// The address and driver of the `coremesh listening on ADDR ..., driver NAME` line.
    fn wait_for_start_line(&mut self) -> Result<(SocketAddr, Driver), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let text = self.stderr_text();
            if let Some(found) = text.lines().find_map(|line| {
                let driver = driver_in_start_line(line)?;
                let rest = &line[line.find(LISTENING)? + LISTENING.len()..];
                let addr = rest.split_whitespace().next()?.parse().ok()?;
                Some((addr, driver))
            }) {
                return Ok(found);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited during start-up with {status}"));
            }
            if Instant::now() >= deadline {
                return Err(format!("no start-up line after {START_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_until_serving(&mut self, upstream: &Upstream) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited during start-up with {status}"));
            }
            if let Ok(response) = client::get(self.addr, "/ready", &[]) {
                return match response.header("x-upstream") {
                    Some(name) if name == upstream.name() && response.status == 200 => Ok(()),
                    other => Err(format!(
                        "{} answered by someone else: {} {other:?}",
                        self.addr, response.status
                    )),
                };
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not serving on {} after {START_TIMEOUT:?}",
                    self.addr
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(
            status.success(),
            "kill -TERM {} failed: {status}",
            self.pid()
        );
    }

    /// Wait for the process to exit; `None` after `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(reader) = self.stderr_reader.take() {
                    let _ = reader.join();
                }
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc/PID/status.
    fn vm_hwm_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM line in /proc/{}/status", self.pid()))
    }

    fn stderr_text(&self) -> String {
        let bytes = self
            .stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
    }
}

#[test]
fn sigterm_during_load_exits_zero_with_no_failed_request() {
    for_each_driver(|driver| {
        let upstream = Upstream::start("slow", |req| {
            Action::delay(
                Duration::from_millis(20),
                Action::Respond(Response::ok(echo_body(req))),
            )
        });
        let mut proxy = ProxyProcess::start(driver, &upstream);
        let before_load = upstream.requests_received();
        let load = Load::start(proxy.addr, 4, "/load");
        assert!(
            load.wait_for_successes_per_client(3, Duration::from_secs(20)),
            "load did not get going: {:?}\nstderr:\n{}",
            load.failures(),
            proxy.stderr_text()
        );
        load.mark_shutdown_began();
        proxy.sigterm();
        let report = load.join();
        eprintln!(
            "{}: {} requests answered, clients ended by {:?}",
            driver_name(driver),
            report.succeeded,
            report.ends
        );
        let status = proxy.wait_exit(EXIT_TIMEOUT);
        let stderr = proxy.stderr_text();
        let status = status.unwrap_or_else(|| {
            panic!("still running {EXIT_TIMEOUT:?} after SIGTERM; stderr:\n{stderr}")
        });
        assert_eq!(
            status.code(),
            Some(0),
            "exit status after SIGTERM: {status}; stderr:\n{stderr}"
        );
        assert!(
            report.failures.is_empty(),
            "failed requests during SIGTERM:\n{}\nstderr:\n{stderr}",
            report.failures.join("\n")
        );
        assert!(
            report.ends.iter().all(|e| *e != ClientEnd::Failed),
            "{:?}",
            report.ends
        );
        assert_eq!(
            upstream.requests_received() - before_load,
            report.succeeded,
            "every request the upstream received was answered to its client"
        );
    });
}

#[test]
fn ten_mib_through_the_binary_keeps_peak_memory_bounded() {
    for_each_driver(|driver| {
        let download = pseudo_random_bytes(TEN_MIB, 21);
        let download_sha = sha1_hex(&download);
        let upstream = Upstream::start("stream", move |req| match req.method.as_str() {
            "POST" => Action::Respond(Response::ok(format!(
                "{} {}",
                req.body.len(),
                sha1_hex(&req.body)
            ))),
            _ if req.path == "/download" => Action::Respond(Response::ok(download.clone())),
            _ => Action::Respond(Response::ok("small")),
        });
        let proxy = ProxyProcess::start(driver, &upstream);
        let mut c = Client::connect(proxy.addr).expect("connect to the proxy");
        // Warm up: the connection, the upstream pool and the buffers exist before measuring.
        c.send_request(
            "POST",
            "/warm",
            &[],
            Some(&pseudo_random_bytes(256 * 1024, 1)),
        )
        .unwrap();
        assert_eq!(c.read_response(false).expect("warm-up POST").status, 200);
        c.send_request("GET", "/warm", &[], None).unwrap();
        assert_eq!(c.read_response(false).expect("warm-up GET").status, 200);
        let before = proxy.vm_hwm_kib();

        let upload = pseudo_random_bytes(TEN_MIB, 20);
        c.send_request("POST", "/upload", &[], Some(&upload))
            .unwrap();
        let response = c.read_response(false).expect("upload response");
        assert_eq!(
            response.body_text(),
            format!("{TEN_MIB} {}", sha1_hex(&upload))
        );
        let after_upload = proxy.vm_hwm_kib();
        assert!(
            after_upload.saturating_sub(before) < MAX_HWM_GROWTH_KIB,
            "VmHWM grew {} KiB during a 10 MiB upload ({before} -> {after_upload} KiB)",
            after_upload.saturating_sub(before)
        );

        c.send_request("GET", "/download", &[], None).unwrap();
        let response = c.read_response(false).expect("download response");
        assert_eq!(response.body.len(), TEN_MIB);
        assert_eq!(sha1_hex(&response.body), download_sha);
        let after_download = proxy.vm_hwm_kib();
        eprintln!(
            "{}: VmHWM {before} KiB before, {after_upload} after the upload, {after_download} after the download",
            driver_name(driver)
        );
        assert!(
            after_download.saturating_sub(before) < MAX_HWM_GROWTH_KIB,
            "VmHWM grew {} KiB during a 10 MiB upload and download ({before} -> {after_download} KiB)",
            after_download.saturating_sub(before)
        );
    });
}
