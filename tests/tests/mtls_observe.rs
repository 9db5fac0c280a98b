//! The caller's verified identity in what the proxy shows, between two proxies over mutual
//! TLS on 127.0.0.1, on both drivers: proxy A (identity `…/sa/web`) sends service "app" over
//! mutual TLS to the inbound side of proxy B (identity `…/sa/app`), in front of the
//! application.
//!
//! - B's `/metrics`: the inbound request families carry `client_id="…/sa/web"` for requests
//!   that came over mutual TLS (HTTP/1, HTTP/2, gRPC), and no `client_id` for a plaintext
//!   caller on a path that allows one; the exposition passes `promtool check metrics`.
//! - B's spans: the inbound request span carries `coremesh.client_id`; A's attempt spans to
//!   B carry `coremesh.server_id` (the identity B proved).
//! - B's access log (the `coremesh` program, whose standard output it is): a `client_id`
//!   field on the lines of mutual TLS callers, none on the plaintext caller's.
//! - A request the inbound policy refuses is counted under `coremesh_errors_total{kind=
//!   "denied"}` (not `bad-request`) and `coremesh_inbound_denied_total{reason}`.
//! - Two proxies in one process keep their own identity metrics: one refuses a request
//!   and a reload, the other's counters stay at zero, and each shows its own certificate's
//!   expiry. Each counts its own outbound TLS handshakes: A's one handshake to B is on
//!   A's `/metrics`, and B's outbound count stays 0.
//!
//! The CAs and SVIDs are made with rcgen in a temporary directory. The access-log test runs
//! the `coremesh` program beside this test's build (`cargo build -p coremesh` first when
//! running `-p coremesh-tests` alone) or the one `COREMESH_BIN` names.

use coremesh_discovery::{
    Config, IdentitySettings, InboundPolicy, InboundRoute, InboundSettings, SideSettings,
};
use coremesh_tests::admin::{start_with_admin, AdminProxy};
use coremesh_tests::client::get;
use coremesh_tests::grpc_peers::{grpc_call, grpc_frame, method_path, GrpcServer};
use coremesh_tests::h2clients::{h2_request, H2Request};
use coremesh_tests::otlp::{ExportedSpan, OtlpCollector};
use coremesh_tests::prometheus::{promtool_check, Exposition, PromtoolVerdict};
use coremesh_tests::proxy::{base_config, driver_name, for_each_driver};
use coremesh_tests::traffic::wait_until;
use coremesh_tests::{Driver, Upstream};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

mod mtls_support;
use mtls_support::{ok, proxy_a, sample, validated, Ca, TempDir, APP, WAIT, WEB};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const API: &str = "spiffe://td/ns/prod/sa/api";
const POLL: Duration = Duration::from_millis(20);
/// 2999-01-01 and 3000-01-01, in seconds since the Unix epoch.
const END_2999: i64 = 32_472_144_000;
const END_3000: i64 = 32_503_680_000;

/// Proxy B's configuration: `identity`, and an inbound side on an ephemeral loopback port
/// in front of the application on `app_port`, under `policy`.
fn proxy_b(identity: IdentitySettings, app_port: u16, policy: InboundPolicy) -> Config {
    let mut config = base_config();
    config.identity = Some(identity);
    config.inbound = Some(InboundSettings {
        side: SideSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            ..SideSettings::default()
        },
        app_port: Some(app_port),
        policy,
        ..InboundSettings::default()
    });
    validated(&config);
    config
}

/// Every span exported to `collector`, quickly, and every request sampled.
fn traced(mut config: Config, collector: &OtlpCollector) -> Config {
    config.telemetry.otlp_endpoint = Some(collector.endpoint_url());
    config.telemetry.trace_sample_ratio = 1.0;
    config.telemetry.export_interval_ms = 10;
    config
}

/// mTLS everywhere but under `/healthz`, which takes plaintext callers too.
fn mtls_but_healthz() -> InboundPolicy {
    InboundPolicy {
        require_mtls: true,
        routes: vec![InboundRoute {
            path_prefix: Some("/healthz".to_owned()),
            require_mtls: Some(false),
            ..InboundRoute::default()
        }],
        ..InboundPolicy::default()
    }
}

fn inbound(b: &AdminProxy) -> SocketAddr {
    b.inbound_addr()
        .unwrap_or_else(|| panic!("B has an inbound listener"))
}

fn exposition(proxy: &AdminProxy) -> Exposition {
    ok(Exposition::parse(&proxy.metrics_text()))
}

/// The inbound requests of `class` from `client_id` (`None`: the series without one).
fn inbound_requests(m: &Exposition, client_id: Option<&str>, class: &str) -> Option<f64> {
    let mut labels = vec![("direction", "inbound"), ("class", class)];
    labels.extend(client_id.map(|id| ("client_id", id)));
    m.value("coremesh_requests_total", &labels)
}

/// Waits until `proxy`'s metrics satisfy `done`; the last exposition.
fn metrics_when(proxy: &AdminProxy, what: &str, done: impl Fn(&Exposition) -> bool) -> Exposition {
    let mut last = exposition(proxy);
    let reached = wait_until(WAIT, POLL, || {
        last = exposition(proxy);
        done(&last)
    });
    assert!(reached, "{what}: {:#?}", last.samples);
    last
}

/// Every value the `client_id` label takes on `/metrics`.
fn client_ids(m: &Exposition) -> Vec<String> {
    let mut ids: Vec<String> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("client_id").cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn assert_promtool_accepts(text: &str) {
    match promtool_check(text) {
        Ok(PromtoolVerdict::Accepted { .. }) | Ok(PromtoolVerdict::NotInstalled) => {}
        Ok(PromtoolVerdict::Rejected { output }) => {
            panic!("promtool rejected the exposition: {output}\n{text}")
        }
        Err(e) => panic!("{e}"),
    }
}

fn server_spans(spans: &[ExportedSpan]) -> Vec<&ExportedSpan> {
    spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect()
}

/// Waits until `collector` received `n` server spans; all its spans.
fn wait_server_spans(collector: &OtlpCollector, n: usize) -> Vec<ExportedSpan> {
    let mut last = Vec::new();
    let reached = wait_until(WAIT, POLL, || {
        last = collector.spans();
        server_spans(&last).len() >= n
    });
    assert!(reached, "{n} server spans: {last:#?}");
    last
}

#[test]
fn http1_callers_identity_is_on_b_s_metrics_and_spans_and_a_plaintext_caller_has_none() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("http1");
    for_each_driver(|driver| {
        let (a_spans, b_spans) = (OtlpCollector::start(), OtlpCollector::start());
        let app = Upstream::echo();
        let b_config = proxy_b(
            dir.identity_until("app", &ca, APP, 3000),
            app.addr().port(),
            mtls_but_healthz(),
        );
        let b = start_with_admin(driver, traced(b_config, &b_spans));
        let a_config = proxy_a(dir.identity_until("web", &ca, WEB, 3000), inbound(&b), APP);
        let a = start_with_admin(driver, traced(a_config, &a_spans));
        for i in 0..3 {
            let r = get(a.addr(), &format!("/hello/{i}"), &[("Host", "app.local")])
                .unwrap_or_else(|e| panic!("request {i} through A and B: {e:?}"));
            assert_eq!(r.status, 200, "request {i}: {}", r.body_text());
        }
        // A plaintext caller, on the path that takes one; the header it sends is no proof.
        let plain = get(
            inbound(&b),
            "/healthz",
            &[("Host", "app.local"), ("x-coremesh-client-id", WEB)],
        )
        .unwrap_or_else(|e| panic!("plaintext /healthz: {e:?}"));
        assert_eq!(plain.status, 200, "{}", plain.body_text());
        assert_eq!(app.requests_received(), 4);

        let m = metrics_when(&b, "B counted the four requests", |m| {
            inbound_requests(m, Some(WEB), "2xx") == Some(3.0)
                && inbound_requests(m, None, "2xx") == Some(1.0)
        });
        assert_eq!(client_ids(&m), vec![WEB.to_owned()]);
        let count = "coremesh_response_latency_seconds_count";
        assert_eq!(
            m.value(count, &[("direction", "inbound"), ("client_id", WEB)]),
            Some(3.0)
        );
        assert_eq!(m.value(count, &[("direction", "inbound")]), Some(1.0));
        assert_promtool_accepts(&b.metrics_text());
        // A's own listener has no verified caller: no client_id there.
        assert_eq!(client_ids(&exposition(&a)), Vec::<String>::new());

        // B's request spans: three carry the caller's identity, the plaintext one none.
        let spans = wait_server_spans(&b_spans, 4);
        let servers = server_spans(&spans);
        assert_eq!(servers.len(), 4, "{servers:#?}");
        let with: Vec<Option<&str>> = servers
            .iter()
            .map(|s| s.str_attr("coremesh.client_id"))
            .collect();
        assert_eq!(
            with.iter().filter(|id| **id == Some(WEB)).count(),
            3,
            "{with:?}"
        );
        assert_eq!(with.iter().filter(|id| id.is_none()).count(), 1, "{with:?}");
        // A's attempts to B: B proved `APP`.
        let spans = wait_server_spans(&a_spans, 3);
        let attempts: Vec<&ExportedSpan> = spans
            .iter()
            .filter(|s| s.kind == SpanKind::Client)
            .collect();
        assert_eq!(attempts.len(), 3, "{spans:#?}");
        for attempt in attempts {
            assert_eq!(
                attempt.str_attr("coremesh.server_id"),
                Some(APP),
                "{attempt:#?}"
            );
        }
        for server in server_spans(&spans) {
            assert_eq!(server.str_attr("coremesh.client_id"), None, "{server:#?}");
        }
    });
}

#[test]
fn http2_and_grpc_callers_carry_their_identity_and_a_refusal_counts_as_denied() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("h2");
    for_each_driver(|driver| {
        let b_spans = OtlpCollector::start();
        let server = GrpcServer::start("G", &[]);
        // The gRPC service `test.Echo` is open to `sa/web`; every other path to `sa/api`.
        let policy = InboundPolicy {
            require_mtls: true,
            authorize: vec![API.to_owned()],
            routes: vec![InboundRoute {
                path_prefix: Some("/test.Echo/".to_owned()),
                authorize: Some(vec![WEB.to_owned()]),
                ..InboundRoute::default()
            }],
        };
        let b_config = proxy_b(
            dir.identity_until("app", &ca, APP, 3000),
            server.addr().port(),
            policy,
        );
        let b = start_with_admin(driver, traced(b_config, &b_spans));
        let a = start_with_admin(
            driver,
            proxy_a(dir.identity_until("web", &ca, WEB, 3000), inbound(&b), APP),
        );
        let call = grpc_call(a.addr(), "unary", 1, WAIT);
        assert_eq!(call.code, "OK", "{call:?}");
        let body = grpc_frame(b"x");
        let grpc_h2 = |path: &str| {
            h2_request(
                a.addr(),
                &H2Request {
                    method: "POST",
                    path,
                    headers: vec![("content-type", "application/grpc"), ("te", "trailers")],
                    body: Some(&body),
                    ..Default::default()
                },
            )
        };
        let allowed = grpc_h2(&method_path("Unary"));
        assert_eq!(
            (allowed.status, allowed.grpc_status()),
            (Some(200), Some("0")),
            "{allowed:?}"
        );
        let refused = grpc_h2(&method_path("Unary").replace("test.Echo", "other.Service"));
        assert_eq!(
            (refused.status, refused.grpc_status()),
            (Some(200), Some("7")),
            "PERMISSION_DENIED: {refused:?}"
        );

        let m = metrics_when(&b, "B counted the three calls", |m| {
            inbound_requests(m, Some(WEB), "2xx") == Some(2.0)
                && inbound_requests(m, Some(WEB), "4xx") == Some(1.0)
        });
        assert_eq!(client_ids(&m), vec![WEB.to_owned()]);
        assert_eq!(
            inbound_requests(&m, None, "2xx"),
            None,
            "no plaintext caller"
        );
        let errors = |kind| m.value("coremesh_errors_total", &[("kind", kind)]);
        assert_eq!(errors("denied"), Some(1.0));
        assert_eq!(errors("bad-request"), Some(0.0));
        assert_eq!(
            m.value(
                "coremesh_inbound_denied_total",
                &[("reason", "not_authorized")]
            ),
            Some(1.0)
        );
        assert_promtool_accepts(&b.metrics_text());

        let spans = wait_server_spans(&b_spans, 3);
        let servers = server_spans(&spans);
        assert_eq!(servers.len(), 3, "{servers:#?}");
        for span in servers {
            assert_eq!(span.str_attr("coremesh.client_id"), Some(WEB), "{span:#?}");
        }
    });
}

#[test]
fn two_proxies_in_one_process_keep_their_identity_metrics_apart() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("apart");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let mut b_identity = dir.identity_until("app", &ca, APP, 3000);
        b_identity.reload_interval_ms = 100;
        let b_cert = b_identity.cert.clone();
        // Only `sa/api` may call B.
        let policy = InboundPolicy {
            require_mtls: true,
            authorize: vec![API.to_owned()],
            ..InboundPolicy::default()
        };
        let b = start_with_admin(driver, proxy_b(b_identity, app.addr().port(), policy));
        let a = start_with_admin(
            driver,
            proxy_a(dir.identity_until("web", &ca, WEB, 2999), inbound(&b), APP),
        );
        let denied = get(a.addr(), "/", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request through A: {e:?}"));
        assert_eq!(denied.status, 403, "{}", denied.body_text());
        assert_eq!(app.requests_received(), 0);
        // B refuses a broken renewal.
        ok(std::fs::write(&b_cert, "not a certificate"));
        let refused = "coremesh_identity_reloads_total{result=\"refused\",reason=\"bad_pem\"}";
        let reached = wait_until(WAIT, POLL, || sample(&b.metrics_text(), refused) == Some(1));
        assert!(reached, "B refused the broken file: {}", b.metrics_text());

        let (a_text, b_text) = (a.metrics_text(), b.metrics_text());
        let denied = "coremesh_inbound_denied_total{reason=\"not_authorized\"}";
        let denied_kind = "coremesh_errors_total{kind=\"denied\"}";
        let expiry = "coremesh_identity_cert_expiry_timestamp_seconds";
        let ok_reloads = "coremesh_identity_reloads_total{result=\"ok\"}";
        assert_eq!(sample(&b_text, denied), Some(1), "{b_text}");
        assert_eq!(sample(&b_text, denied_kind), Some(1), "{b_text}");
        assert_eq!(
            sample(&b_text, "coremesh_errors_total{kind=\"bad-request\"}"),
            Some(0)
        );
        assert_eq!(sample(&b_text, expiry), Some(END_3000 as u64));
        // A refused nothing: its counters are its own.
        assert_eq!(sample(&a_text, denied), None, "{a_text}");
        assert!(
            !a_text.contains("coremesh_inbound_denied_total"),
            "{a_text}"
        );
        assert_eq!(sample(&a_text, denied_kind), Some(0), "{a_text}");
        assert_eq!(sample(&a_text, refused), None, "{a_text}");
        assert_eq!(sample(&a_text, ok_reloads), Some(0), "{a_text}");
        assert_eq!(sample(&a_text, expiry), Some(END_2999 as u64), "{a_text}");
    });
}

#[test]
fn two_proxies_in_one_process_count_their_outbound_handshakes_apart() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("outbound");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let b = start_with_admin(
            driver,
            proxy_b(
                dir.identity_until("app", &ca, APP, 3000),
                app.addr().port(),
                InboundPolicy::default(),
            ),
        );
        // A is a plain proxy (no sidecar side) with an identity: its outbound TLS families
        // are on its /metrics all the same.
        let a_config = proxy_a(dir.identity_until("web", &ca, WEB, 3000), inbound(&b), APP);
        validated(&a_config);
        let a = start_with_admin(driver, a_config);
        // One request: one outbound handshake, by A.
        let response = get(a.addr(), "/", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request through A: {e:?}"));
        assert_eq!(response.status, 200, "{}", response.body_text());
        assert_eq!(app.requests_received(), 1);
        let handshakes =
            |direction: &str| format!("coremesh_tls_handshakes_total{{direction=\"{direction}\"}}");
        let outbound = handshakes("outbound");
        let reached = wait_until(WAIT, POLL, || {
            sample(&a.metrics_text(), &outbound) == Some(1)
        });
        assert!(reached, "A's outbound handshake: {}", a.metrics_text());
        let (a_text, b_text) = (a.metrics_text(), b.metrics_text());
        assert_eq!(sample(&b_text, &handshakes("inbound")), Some(1), "{b_text}");
        // B made none: A's handshake is not on B's /metrics.
        assert_eq!(sample(&b_text, &outbound), Some(0), "{b_text}");
        assert_eq!(sample(&a_text, &outbound), Some(1), "{a_text}");
        for text in [&a_text, &b_text] {
            let refused: u64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("coremesh_tls_handshake_failures_total{direction=\"outbound\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .sum();
            assert_eq!(refused, 0, "{text}");
        }
    });
}

/// The `coremesh` program running `config` (B as a user runs it, its access log on
/// standard output); killed on drop.
struct Program {
    proc: coremesh_tests::h2tools::Proc,
    inbound: SocketAddr,
    _dir: TempDir,
}

impl Program {
    fn start(driver: Driver, toml: &str) -> Program {
        let dir = TempDir::new("program");
        let path = dir.0.join("coremesh.toml");
        ok(std::fs::write(&path, toml));
        let mut cmd = std::process::Command::new(coremesh_tests::netns::coremesh_bin());
        cmd.arg("run")
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let proc = coremesh_tests::h2tools::Proc::spawn(cmd, "coremesh run");
        let line = proc.wait_line(
            "coremesh listening on",
            coremesh_tests::h2tools::START_BOUND,
        );
        // `coremesh listening on 127.0.0.1:PORT (inbound) with 1 core(s), driver …`
        let inbound = line
            .find(" (inbound)")
            .and_then(|end| line[..end].rsplit([' ', ',']).next()?.parse().ok())
            .unwrap_or_else(|| panic!("no inbound address in {line:?}"));
        let running = coremesh_tests::proxy::driver_in_start_line(&line)
            .unwrap_or_else(|| panic!("no driver in the start line {line:?}"));
        coremesh_tests::proxy::assert_running_driver(driver, running);
        Program {
            proc,
            inbound,
            _dir: dir,
        }
    }

    /// The access-log lines so far (JSON objects with a `status`).
    fn access_log(&self) -> Vec<serde_json::Value> {
        self.proc
            .json_lines()
            .into_iter()
            .filter(|l| l.get("status").is_some())
            .collect()
    }
}

#[test]
fn the_access_log_names_the_verified_caller_and_no_one_for_a_plaintext_caller() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("access-log");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let b_identity = dir.identity_until("app", &ca, APP, 3000);
        let path = |p: &PathBuf| p.display().to_string();
        let toml = format!(
            r#"[proxy]
listen = "127.0.0.1:0"
cores = 1
driver = "{driver}"
pin_cores = false
shutdown_grace_ms = 1000

[telemetry]
access_log = true

[identity]
cert = "{cert}"
key = "{key}"
trust_anchors = "{anchors}"

[inbound]
listen = "127.0.0.1:0"
app_port = {app_port}
require_mtls = true

[[inbound.routes]]
path_prefix = "/healthz"
require_mtls = false
"#,
            driver = driver_name(driver),
            cert = path(&b_identity.cert),
            key = path(&b_identity.key),
            anchors = path(&b_identity.trust_anchors),
            app_port = app.addr().port(),
        );
        let b = Program::start(driver, &toml);
        let a = start_with_admin(
            driver,
            proxy_a(dir.identity_until("web", &ca, WEB, 3000), b.inbound, APP),
        );
        for i in 0..2 {
            let r = get(a.addr(), &format!("/hello/{i}"), &[("Host", "app.local")])
                .unwrap_or_else(|e| panic!("request {i} through A and B: {e:?}"));
            assert_eq!(r.status, 200, "request {i}: {}", r.body_text());
        }
        let plain = get(b.inbound, "/healthz", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("plaintext /healthz: {e:?}"));
        assert_eq!(plain.status, 200, "{}", plain.body_text());
        let reached = wait_until(WAIT, POLL, || b.access_log().len() >= 3);
        let lines = b.access_log();
        assert!(reached, "three access-log lines: {lines:#?}");
        assert_eq!(lines.len(), 3, "{lines:#?}");
        let mut ids: Vec<Option<&str>> = lines
            .iter()
            .map(|l| {
                l.get("client_id")
                    .map(|v| v.as_str().unwrap_or("not a string"))
            })
            .collect();
        ids.sort();
        assert_eq!(ids, vec![None, Some(WEB), Some(WEB)], "{lines:#?}");
        let plaintext = lines
            .iter()
            .find(|l| l.get("client_id").is_none())
            .unwrap_or_else(|| panic!("{lines:#?}"));
        assert_eq!(plaintext["status"], 200, "{plaintext}");
        assert_eq!(app.requests_received(), 3);
    });
}
