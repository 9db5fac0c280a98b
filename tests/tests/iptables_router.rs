//! The interception rules on a host that also forwards (root only; elsewhere it says why
//! it is skipped): three namespaces, client — router — server, with `coremesh run` and the
//! rules of `coremesh iptables install` in the router. Traffic from the client to the
//! server, which the router only forwards, must reach the server directly — the server
//! sees the client's own address and the proxy's counters do not move — while traffic to
//! the router's own address is intercepted by its inbound side. Deleting the rule that
//! makes the difference (`-m addrtype ! --dst-type LOCAL -j RETURN`) sends the forwarded
//! traffic into the proxy, which shows the test can tell. Once per I/O driver.

use coremesh_tests::admin::wait_for_admin;
use coremesh_tests::client;
use coremesh_tests::netns::{can_run, coremesh_bin, Netns, Routed};
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{driver_name, DRIVERS};
use coremesh_tests::Driver;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The proxy's uid: no user on a test machine has it, and the rules exempt it.
const PROXY_UID: u32 = 47_214;
const ADMIN: &str = "127.0.0.1:4191";
/// The port of both HTTP servers: the server's, and the router's own application.
const APP_PORT: u16 = 8080;
/// Calls each way.
const CALLS: u64 = 3;
/// Turns a hang into a failure; nothing waits for it on a working run.
const BOUND: Duration = Duration::from_secs(30);
/// The rule under test, as `iptables -D` takes it.
const FORWARDED_RETURN: &[&str] = &[
    "COREMESH_PREROUTING",
    "-m",
    "addrtype",
    "!",
    "--dst-type",
    "LOCAL",
    "-j",
    "RETURN",
];

#[test]
fn forwarded_traffic_passes_the_router_and_its_own_is_intercepted() {
    if !can_run(
        "forwarded_traffic_passes_the_router_and_its_own_is_intercepted",
        &[
            "iptables",
            "ip6tables",
            "iptables-save",
            "setpriv",
            "sysctl",
        ],
    ) {
        return;
    }
    for (i, driver) in DRIVERS.into_iter().enumerate() {
        eprintln!("router on {}", driver_name(driver));
        router(driver, 1 + i as u8);
    }
}

fn router(driver: Driver, subnet: u8) {
    let net = Routed::new(subnet).unwrap_or_else(|e| panic!("{e:#}"));
    let before = net.router.nat_rules("iptables-save").unwrap();
    let at_server = net
        .server
        .enter(|| who_server(&format!("0.0.0.0:{APP_PORT}"), "server"))
        .unwrap();
    let at_router = net
        .router
        .enter(|| who_server(&format!("0.0.0.0:{APP_PORT}"), "router-app"))
        .unwrap();

    let dir = TempDir::new();
    let config = dir.write(
        "coremesh.toml",
        &format!(
            r#"[proxy]
listen = "127.0.0.1:4180"
admin = "{ADMIN}"
cores = 1
pin_cores = false
driver = "{driver}"
shutdown_grace_ms = 2000

[outbound]
listen = "127.0.0.1:4140"

[inbound]
listen = "0.0.0.0:4143"
"#,
            driver = driver_name(driver),
        ),
    );
    let proxy = ProxyProcess::start(&net.router, &config, &dir);
    let ready = net
        .router
        .enter(|| {
            wait_until(|| {
                client::get(ADMIN.parse().unwrap(), "/ready", &[])
                    .map(|r| r.status == 200)
                    .unwrap_or(false)
            })
        })
        .unwrap();
    assert!(ready, "not ready within {BOUND:?}\n{}", proxy.log());
    let uid = PROXY_UID.to_string();
    let coremesh = coremesh_bin();
    let coremesh = coremesh.to_str().unwrap();
    net.router
        .run(
            coremesh,
            &[
                "iptables",
                "install",
                "--proxy-uid",
                &uid,
                "--skip-inbound-ports",
                "22",
            ],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));

    // Through the router to the server: forwarded as it is, never redirected.
    let server = SocketAddr::from((net.server_addr, APP_PORT));
    let client_ip = net.client_addr;
    let ask = |addr: SocketAddr| {
        net.client
            .enter(|| {
                let r = client::get(addr, "/", &[]).unwrap_or_else(|e| panic!("{addr}: {e:?}"));
                assert_eq!(r.status, 200);
                r.body_text()
            })
            .unwrap()
    };
    for _ in 0..CALLS {
        assert_eq!(ask(server), format!("server peer={client_ip} xff="));
    }
    assert_eq!(at_server.load(Ordering::SeqCst), CALLS);

    // To the router's own address: intercepted, and forwarded by the inbound side to the
    // router's application on loopback, with the client's address in X-Forwarded-For.
    let own = SocketAddr::from((net.router_addr, APP_PORT));
    for _ in 0..CALLS {
        assert_eq!(
            ask(own),
            format!("router-app peer=127.0.0.1 xff={client_ip}")
        );
    }
    assert_eq!(at_router.load(Ordering::SeqCst), CALLS);
    // The proxy counted exactly the intercepted connections: none of the forwarded ones.
    let counted = net.router.enter(|| connections_reach(CALLS, 0)).unwrap();
    assert!(
        counted.is_ok(),
        "inbound, outbound: {counted:?}\n{}",
        proxy.log()
    );

    // Without the rule that returns forwarded traffic, the same call to the server is taken
    // by the router's proxy and lands on the router's application: the test can tell.
    let mut delete = vec!["-w", "10", "-t", "nat", "-D"];
    delete.extend_from_slice(FORWARDED_RETURN);
    net.router.run("iptables", &delete).unwrap();
    assert_eq!(
        ask(server),
        format!("router-app peer=127.0.0.1 xff={client_ip}")
    );
    assert_eq!(at_server.load(Ordering::SeqCst), CALLS);
    let counted = net
        .router
        .enter(|| connections_reach(CALLS + 1, 0))
        .unwrap();
    assert!(
        counted.is_ok(),
        "inbound, outbound: {counted:?}\n{}",
        proxy.log()
    );

    net.router
        .run(coremesh, &["iptables", "uninstall"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(net.router.nat_rules("iptables-save").unwrap(), before);
    proxy.stop();
}

/// Waits until the proxy's connection counters are `inbound` and `outbound` (the value
/// they had at the last look, when not).
fn connections_reach(inbound: u64, outbound: u64) -> Result<(), String> {
    wait_for_admin(|| {
        let r = client::get(ADMIN.parse().unwrap(), "/metrics", &[]).unwrap();
        let m = Exposition::parse(&r.body_text()).unwrap();
        let count = |direction| {
            m.sum(
                "coremesh_sidecar_connections_total",
                &[("direction", direction)],
            )
        };
        let (i, o) = (count("inbound"), count("outbound"));
        (
            (i == inbound as f64 && o == outbound as f64).then_some(()),
            format!("{i}, {o}"),
        )
    })
}

fn wait_until(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// An HTTP server that answers each request with `<name> peer=<peer ip> xff=<header>` and
/// closes; counts its connections.
fn who_server(addr: &str, name: &'static str) -> Arc<AtomicU64> {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = s.set_read_timeout(Some(BOUND));
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).map(|n| n == 1).unwrap_or(false)
            {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let xff = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("x-forwarded-for")
                        .then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            let peer = s
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let body = format!("{name} peer={peer} xff={xff}");
            let _ = s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    count
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "cm-router-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).unwrap();
        set_mode(&p, 0o755);
        TempDir(p)
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        set_mode(&p, 0o644);
        p
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `coremesh run` in a namespace as [`PROXY_UID`]; killed on drop unless stopped.
struct ProxyProcess {
    child: Option<Child>,
    log: PathBuf,
}

impl ProxyProcess {
    fn start(ns: &Netns, config: &Path, dir: &TempDir) -> ProxyProcess {
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

    fn log(&self) -> String {
        format!(
            "--- proxy log ---\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// SIGTERM, and the exit status must be 0 within [`BOUND`].
    fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
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
