//! Programs nobody here wrote, on the sidecar path (root only; elsewhere it says why it is
//! skipped): `curl` as the application's client and as a remote client, nginx as the
//! application and as a server elsewhere.
//!
//! Two network namespaces joined by a veth (as `sidecar_netns.rs` builds them): a client
//! (10.77.N.1) and an application (10.77.N.2). In the application's namespace nginx serves
//! the application on 127.0.0.1:8080, which is also the one endpoint of a service `web`
//! claimed at 10.96.0.10:80; in the client's namespace another nginx serves on
//! 10.77.N.1:8081, an address no service claims. `coremesh` runs in the application's
//! namespace as a uid of its own, with the rules of `coremesh iptables install`. Then:
//! - curl in the client's namespace calls the application at 10.77.N.2:8080 through the
//!   inbound side: a small answer, a 256 KiB file, two requests on one kept-alive
//!   connection, and a POST of 100 KiB;
//! - curl in the application's namespace (as root, not the proxy's uid) calls the service
//!   address through the outbound side (routed to `web`), and the nginx elsewhere
//!   (passed through);
//!
//! and each answer's status and body bytes are exactly nginx's, while `/metrics` counts
//! every request under its direction and route. Once per I/O driver.

use coremesh_tests::admin::wait_for_admin;
use coremesh_tests::client;
use coremesh_tests::data::pseudo_random_bytes;
use coremesh_tests::netns::{can_run, coremesh_bin, Netns, Pair};
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{driver_name, DRIVERS};
use coremesh_tests::Driver;
use sidecar_support::{wait_until, ProxyProcess, TempDir, BOUND, PROXY_UID};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};

mod sidecar_support;

const SERVICE_ADDR: &str = "10.96.0.10:80";
const APP_PORT: u16 = 8080;
const ELSEWHERE_PORT: u16 = 8081;
const ADMIN: &str = "127.0.0.1:4191";
/// The file each nginx serves as `/big.bin`.
const BIG_BYTES: usize = 256 * 1024;
/// The body curl POSTs to the application.
const POST_BYTES: usize = 100 * 1024;

#[test]
fn curl_and_nginx_through_both_sides() {
    if !can_run(
        "curl_and_nginx_through_both_sides",
        &["iptables", "ip6tables", "setpriv", "curl"],
    ) {
        return;
    }
    let Some(nginx) = coremesh_tests::nginx::require_nginx() else {
        return;
    };
    for (i, driver) in DRIVERS.into_iter().enumerate() {
        eprintln!("curl and nginx on {}", driver_name(driver));
        real_clients(driver, 13 + i as u8, &nginx);
    }
}

fn real_clients(driver: Driver, subnet: u8, nginx: &Path) {
    let pair = Pair::new(subnet).unwrap_or_else(|e| panic!("{e:#}"));
    let (client_ns, app_ns) = (&pair.a, &pair.b);
    let files = TempDir::new();
    let big = pseudo_random_bytes(BIG_BYTES, 7);
    std::fs::write(files.0.join("big.bin"), &big).unwrap();
    let post = files.0.join("post.bin");
    std::fs::write(&post, pseudo_random_bytes(POST_BYTES, 8)).unwrap();

    let app = NginxServer::start(
        app_ns,
        nginx,
        "app",
        SocketAddr::from(([127, 0, 0, 1], APP_PORT)),
        &files.0,
    );
    let elsewhere_addr = SocketAddr::from((pair.a_addr, ELSEWHERE_PORT));
    let elsewhere = NginxServer::start(client_ns, nginx, "elsewhere", elsewhere_addr, &files.0);

    let dir = TempDir::new();
    let config = dir.write(
        "coremesh.toml",
        &format!(
            r#"[proxy]
admin = "{ADMIN}"
cores = 1
pin_cores = false
driver = "{driver}"
shutdown_grace_ms = 1000

[outbound]

[inbound]

[[services]]
name = "web"
endpoints = ["127.0.0.1:{APP_PORT}"]
addresses = ["{SERVICE_ADDR}"]
"#,
            driver = driver_name(driver),
        ),
    );
    let proxy = ProxyProcess::start(app_ns, &config, &dir);
    let ready = app_ns
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
    app_ns
        .run(
            coremesh_bin().to_str().unwrap(),
            &["iptables", "install", "--proxy-uid", &uid],
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
    let context = || {
        format!(
            "{}\n--- app nginx ---\n{}\n--- elsewhere nginx ---\n{}",
            proxy.log(),
            app.error_log(),
            elsewhere.error_log()
        )
    };

    // Inbound: a remote curl calls the application.
    let app_url = format!("http://{}:{APP_PORT}", pair.b_addr);
    let hello = curl(client_ns, &dir, &[&format!("{app_url}/hello")]);
    assert_eq!(
        hello,
        [("200 1".to_owned(), b"hello from app\n".to_vec())],
        "{}",
        context()
    );
    let file = curl(client_ns, &dir, &[&format!("{app_url}/big.bin")]);
    assert_eq!(file[0].0, "200 1", "{}", context());
    assert!(
        file[0].1 == big,
        "the file through inbound differs\n{}",
        context()
    );
    // Two requests on one connection: the second makes no new connection.
    let kept = curl(
        client_ns,
        &dir,
        &[&format!("{app_url}/hello"), &format!("{app_url}/hello")],
    );
    let statuses: Vec<&str> = kept.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["200 1", "200 0"], "{}", context());
    assert!(kept.iter().all(|(_, body)| body == b"hello from app\n"));
    let posted = curl_with(
        client_ns,
        &dir,
        &["--data-binary", &format!("@{}", post.display())],
        &[&format!("{app_url}/hello")],
    );
    assert_eq!(
        posted,
        [("200 1".to_owned(), b"hello from app\n".to_vec())],
        "{}",
        context()
    );

    // Outbound: the application's curl calls the service address and somewhere else.
    let service_url = format!("http://{SERVICE_ADDR}");
    let routed = curl(app_ns, &dir, &[&format!("{service_url}/hello")]);
    assert_eq!(
        routed,
        [("200 1".to_owned(), b"hello from app\n".to_vec())],
        "{}",
        context()
    );
    let routed_file = curl(app_ns, &dir, &[&format!("{service_url}/big.bin")]);
    assert_eq!(routed_file[0].0, "200 1", "{}", context());
    assert!(routed_file[0].1 == big, "the file through outbound differs");
    let elsewhere_url = format!("http://{elsewhere_addr}");
    let passed = curl(app_ns, &dir, &[&format!("{elsewhere_url}/hello")]);
    assert_eq!(
        passed,
        [("200 1".to_owned(), b"hello from elsewhere\n".to_vec())],
        "{}",
        context()
    );
    let passed_file = curl(app_ns, &dir, &[&format!("{elsewhere_url}/big.bin")]);
    assert_eq!(passed_file[0].0, "200 1", "{}", context());
    assert!(passed_file[0].1 == big, "the file passed through differs");

    // Every request counted under its direction, and nothing else.
    let counted = app_ns
        .enter(|| {
            wait_for_admin(|| {
                let m = metrics();
                let requests = |labels: &[(&str, &str)]| m.sum("coremesh_requests_total", labels);
                let inbound = requests(&[("direction", "inbound"), ("class", "2xx")]);
                let inbound_all = requests(&[("direction", "inbound")]);
                let routed = requests(&[
                    ("direction", "outbound"),
                    ("service", "web"),
                    ("route", "original-destination"),
                    ("class", "2xx"),
                ]);
                let passed = requests(&[
                    ("direction", "outbound"),
                    ("route", "passthrough"),
                    ("class", "2xx"),
                ]);
                let outbound_all = requests(&[("direction", "outbound")]);
                let seen = [inbound, inbound_all, routed, passed, outbound_all];
                (
                    (seen == [5.0, 5.0, 2.0, 2.0, 4.0]).then_some(()),
                    format!(
                        "inbound 2xx/all {inbound}/{inbound_all}, routed {routed}, passthrough \
                         {passed}, outbound all {outbound_all}"
                    ),
                )
            })
        })
        .unwrap();
    assert!(counted.is_ok(), "{counted:?}\n{}", context());

    proxy.stop();
    app_ns
        .run(coremesh_bin().to_str().unwrap(), &["iptables", "uninstall"])
        .unwrap_or_else(|e| panic!("{e:#}"));
}

fn metrics() -> Exposition {
    let r = client::get(ADMIN.parse().unwrap(), "/metrics", &[]).unwrap();
    Exposition::parse(&r.body_text()).unwrap()
}

/// `curl` in `ns` fetching `urls` (one connection, kept alive between them): for each,
/// `"STATUS CONNECTS"` and the body bytes.
fn curl(ns: &Netns, dir: &TempDir, urls: &[&str]) -> Vec<(String, Vec<u8>)> {
    curl_with(ns, dir, &[], urls)
}

fn curl_with(ns: &Netns, dir: &TempDir, extra: &[&str], urls: &[&str]) -> Vec<(String, Vec<u8>)> {
    let bodies: Vec<PathBuf> = (0..urls.len())
        .map(|i| dir.0.join(format!("body-{i}")))
        .collect();
    let mut command = ns.command("curl");
    command.args([
        "--silent",
        "--show-error",
        "--noproxy",
        "*",
        "--max-time",
        "30",
        "--write-out",
        "%{http_code} %{num_connects}\\n",
    ]);
    command.args(extra);
    for (url, body) in urls.iter().zip(&bodies) {
        command.arg("--output").arg(body).arg(url);
    }
    let out = command.output().expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {urls:?}: {}\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .zip(&bodies)
        .map(|(line, body)| {
            let bytes = std::fs::read(body).unwrap_or_default();
            let _ = std::fs::remove_file(body);
            (line.to_owned(), bytes)
        })
        .collect()
}

/// nginx serving `/hello` ("hello from NAME\n") and `/big.bin` (from `files`) on `listen`,
/// in a namespace; killed on drop.
struct NginxServer {
    child: Child,
    dir: TempDir,
}

impl NginxServer {
    fn start(ns: &Netns, binary: &Path, name: &str, listen: SocketAddr, files: &Path) -> Self {
        let dir = TempDir::new();
        let d = dir.0.display();
        let f = files.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\nevents {{ worker_connections 64; }}\nhttp {{\n\
             access_log off;\nclient_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\ndefault_type application/octet-stream;\n\
             server {{\nlisten {listen};\n\
             location = /hello {{ return 200 \"hello from {name}\\n\"; }}\n\
             location = /big.bin {{ root {f}; }}\n}}\n}}\n"
        );
        let conf_path = dir.write("nginx.conf", &conf);
        let child = ns
            .command(binary)
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.0.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nginx");
        let server = NginxServer { child, dir };
        // It writes its pid file once its listener is bound.
        let pid_file = server.dir.0.join("nginx.pid");
        let started = wait_until(|| {
            std::fs::read_to_string(&pid_file).is_ok_and(|text| !text.trim().is_empty())
        });
        assert!(
            started,
            "nginx {name} did not start\n{}",
            server.error_log()
        );
        server
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("error.log")).unwrap_or_default()
    }
}

impl Drop for NginxServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
