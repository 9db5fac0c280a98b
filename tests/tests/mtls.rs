//! Mutual TLS between two proxies on 127.0.0.1, on both drivers: proxy A (identity
//! `…/sa/web`) sends a service marked `tls = { identity = "…/sa/app" }` to the inbound side
//! of proxy B (identity `…/sa/app`), which hands it to the application. The application
//! sees the caller's verified identity in `x-coremesh-client-id` (a client-sent one is
//! replaced); A expecting another identity, plaintext to B when `require_mtls = true`, and
//! a client certificate from a CA B does not trust are each refused, reach nothing, and are
//! counted by B's TLS metrics. B's `authorize` lets only the allowed identities through
//! (403, counted by reason), per path with `[[inbound.routes]]`. HTTP/2 (h2c to A, h2 over
//! TLS between the proxies, h2c to nghttpd) and gRPC calls (grpcio) cross the same hop; a
//! gRPC call the policy refuses gets a trailers-only PERMISSION_DENIED. B's certificate is
//! renewed 20 times while requests run, each on a new handshake, without a failed request. The CAs and SVIDs are made with rcgen in a temporary
//! directory.

use coremesh_discovery::{
    Config, IdentitySettings, InboundPolicy, InboundRoute, InboundSettings, ServiceTls,
    SideSettings,
};
use coremesh_tests::admin::{start_with_admin, AdminProxy};
use coremesh_tests::client::get;
use coremesh_tests::grpc_peers::{grpc_call, grpc_frame, method_path, GrpcServer};
use coremesh_tests::h2clients::{h2_request, H2Request};
use coremesh_tests::h2upstreams::Nghttpd;
use coremesh_tests::proxy::{base_config, for_each_driver, route_all, service, start_proxy};
use coremesh_tests::{Driver, Upstream};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const WEB: &str = "spiffe://td/ns/prod/sa/web";
const APP: &str = "spiffe://td/ns/prod/sa/app";
const HEADER: &str = "x-coremesh-client-id";
/// Bound on every wait: only turns a hang into a failure.
const WAIT: Duration = Duration::from_secs(30);

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A certificate authority that issues X.509-SVIDs.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = ok(KeyPair::generate());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = ok(params.self_signed(&key));
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate, key) PEM of an SVID for `uri`.
    fn svid(&self, uri: &str) -> (String, String) {
        let key = ok(KeyPair::generate());
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "workload");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(ok(uri.try_into()))];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = ok(params.signed_by(&key, &self.issuer));
        (cert.pem(), key.serialize_pem())
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("coremesh-mtls-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        ok(std::fs::create_dir_all(&dir));
        TempDir(dir)
    }

    /// `[identity]` over files written here: an SVID for `uri` from `issuer`, and the
    /// certificates of `anchors` as the trust anchors.
    fn identity(&self, name: &str, issuer: &Ca, uri: &str, anchors: &[&Ca]) -> IdentitySettings {
        let bundle: String = anchors.iter().map(|ca| ca.pem.as_str()).collect();
        let (cert, key) = issuer.svid(uri);
        let write = |file: String, contents: &str| {
            let path = self.0.join(file);
            ok(std::fs::write(&path, contents));
            path
        };
        IdentitySettings {
            cert: write(format!("{name}.pem"), &cert),
            key: write(format!("{name}.key"), &key),
            trust_anchors: write(format!("{name}-bundle.pem"), &bundle),
            ..IdentitySettings::default()
        }
    }
}

impl TempDir {
    /// Replaces `path` the way a renewal does: a new file renamed over the old one.
    fn replace(&self, path: &std::path::Path, contents: &str) {
        let next = path.with_extension("next");
        ok(std::fs::write(&next, contents));
        ok(std::fs::rename(&next, path));
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Proxy B: `identity`, and an inbound side on an ephemeral loopback port in front of
/// the application on `app_port`.
fn proxy_b(
    driver: Driver,
    identity: IdentitySettings,
    app_port: u16,
    require_mtls: bool,
) -> AdminProxy {
    let policy = InboundPolicy {
        require_mtls,
        ..InboundPolicy::default()
    };
    proxy_b_with(driver, identity, app_port, policy)
}

/// [`proxy_b`] with the inbound side's whole policy.
fn proxy_b_with(
    driver: Driver,
    identity: IdentitySettings,
    app_port: u16,
    policy: InboundPolicy,
) -> AdminProxy {
    let mut config = base_config();
    config.identity = Some(identity);
    let inbound = InboundSettings {
        side: SideSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            ..SideSettings::default()
        },
        app_port: Some(app_port),
        policy,
        ..InboundSettings::default()
    };
    config.inbound = Some(inbound);
    validated(&config);
    start_with_admin(driver, config)
}

/// Proxy A: `identity`, and every request to service "app" on `b_inbound`, reached over
/// mutual TLS expecting `expected` (one attempt, so refusals are counted once).
fn proxy_a(identity: IdentitySettings, b_inbound: SocketAddr, expected: &str) -> Config {
    let mut config = base_config();
    config.identity = Some(identity);
    let mut app = service("app", &[b_inbound]);
    app.tls = Some(ServiceTls {
        identity: expected.to_owned(),
    });
    app.overrides.max_attempts = Some(1);
    config.services.push(app);
    config.routes.push(route_all("app"));
    validated(&config);
    config
}

fn validated(config: &Config) {
    let violations = coremesh_discovery::validate(config);
    assert!(
        violations.is_empty(),
        "the test's configuration is invalid: {violations:?}"
    );
}

/// The value of the sample `series` (name and labels) in a Prometheus text scrape.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

fn inbound_failures(b: &AdminProxy, reason: &str) -> Option<u64> {
    sample(
        &b.metrics_text(),
        &format!(
            "coremesh_tls_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}"
        ),
    )
}

/// Waits until B's metrics show `want` inbound refusals for `reason`; the last value seen.
fn wait_failures(b: &AdminProxy, reason: &str, want: u64) -> Option<u64> {
    let start = Instant::now();
    loop {
        let seen = inbound_failures(b, reason);
        if seen == Some(want) || start.elapsed() > WAIT {
            return seen;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_application_sees_the_callers_verified_identity() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("identity");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let a = start_proxy(
            driver,
            proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, APP),
        );
        for i in 0..3 {
            let response = get(
                a.addr(),
                &format!("/hello/{i}"),
                &[
                    ("Host", "app.local"),
                    (HEADER, "spiffe://td/ns/prod/sa/forged"),
                ],
            )
            .unwrap_or_else(|e| panic!("request {i} through A and B: {e:?}"));
            assert_eq!(
                response.status,
                200,
                "request {i}: {}",
                response.body_text()
            );
        }
        let received = app.received();
        assert_eq!(received.len(), 3);
        for (i, request) in received.iter().enumerate() {
            assert_eq!(request.path, format!("/hello/{i}"));
            assert_eq!(
                request.header_tokens(HEADER),
                vec![WEB.to_owned()],
                "request {i}"
            );
        }
        let text = b.metrics_text();
        // A's pool carried the three requests over one mutual TLS connection.
        assert_eq!(
            sample(
                &text,
                "coremesh_tls_handshakes_total{direction=\"inbound\"}"
            ),
            Some(1)
        );
        assert_eq!(app.connections_accepted(), 1);
    });
}

#[test]
fn a_server_without_the_expected_identity_is_refused() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("mismatch");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let expected = "spiffe://td/ns/prod/sa/other";
        let a = start_proxy(
            driver,
            proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, expected),
        );
        let response = get(a.addr(), "/", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request through A: {e:?}"));
        assert!(
            matches!(response.status, 502 | 503),
            "status {}: {}",
            response.status,
            response.body_text()
        );
        // A refused B's certificate during the handshake (its alert is what B counts):
        // nothing went to B in plaintext.
        assert_eq!(wait_failures(&b, "alert", 1), Some(1));
        assert_eq!(inbound_failures(&b, "plaintext"), Some(0));
        assert_eq!(app.requests_received(), 0);
        assert_eq!(app.connections_accepted(), 0);
    });
}

#[test]
fn plaintext_to_an_inbound_side_that_requires_mtls_is_refused_and_counted() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("plaintext");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let result = get(b_inbound, "/", &[("Host", "app.local")]);
        assert!(result.is_err(), "plaintext was answered: {result:?}");
        assert_eq!(wait_failures(&b, "plaintext", 1), Some(1));
        assert_eq!(app.requests_received(), 0);
        assert_eq!(app.connections_accepted(), 0);
    });
}

#[test]
fn a_client_certificate_from_another_ca_is_refused() {
    let ca = Ca::new("mesh");
    let stranger = Ca::new("elsewhere");
    let dir = TempDir::new("stranger");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        // A trusts B's CA (and its own), but its certificate comes from a CA B does not
        // trust.
        let a = start_proxy(
            driver,
            proxy_a(
                dir.identity("web", &stranger, WEB, &[&ca, &stranger]),
                b_inbound,
                APP,
            ),
        );
        let response = get(a.addr(), "/", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request through A: {e:?}"));
        assert!(
            matches!(response.status, 502 | 503),
            "status {}: {}",
            response.status,
            response.body_text()
        );
        assert_eq!(wait_failures(&b, "bad_certificate", 1), Some(1));
        assert_eq!(app.requests_received(), 0);
        assert_eq!(app.connections_accepted(), 0);
    });
}

fn denials(b: &AdminProxy, reason: &str) -> u64 {
    sample(
        &b.metrics_text(),
        &format!("coremesh_inbound_denied_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0)
}

#[test]
fn only_authorized_callers_reach_the_application() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("authorize");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        // Only `sa/api` may call, except under /public, open to everyone in `ns/prod`.
        let policy = InboundPolicy {
            require_mtls: true,
            authorize: vec!["spiffe://td/ns/prod/sa/api".to_owned()],
            routes: vec![InboundRoute {
                path_prefix: Some("/public".to_owned()),
                authorize: Some(vec!["spiffe://td/ns/prod/*".to_owned()]),
                ..InboundRoute::default()
            }],
        };
        let b = proxy_b_with(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            policy,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let a = start_proxy(
            driver,
            proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, APP),
        );
        let before = denials(&b, "not_authorized");
        let denied = get(a.addr(), "/private?x=1", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request to /private: {e:?}"));
        assert_eq!(denied.status, 403, "{}", denied.body_text());
        let allowed = get(a.addr(), "/public/page", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request to /public: {e:?}"));
        assert_eq!(allowed.status, 200, "{}", allowed.body_text());
        let received = app.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].path, "/public/page");
        assert_eq!(received[0].header_tokens(HEADER), vec![WEB.to_owned()]);
        assert_eq!(denials(&b, "not_authorized"), before + 1);
    });
}

#[test]
fn a_path_that_needs_no_certificate_takes_plaintext_and_the_others_refuse_it() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("healthz");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let policy = InboundPolicy {
            require_mtls: true,
            routes: vec![InboundRoute {
                path_prefix: Some("/healthz".to_owned()),
                require_mtls: Some(false),
                ..InboundRoute::default()
            }],
            ..InboundPolicy::default()
        };
        let b = proxy_b_with(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            policy,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let before = denials(&b, "no_client_cert");
        let probe = get(
            b_inbound,
            "/healthz",
            &[("Host", "app.local"), (HEADER, WEB)],
        )
        .unwrap_or_else(|e| panic!("plaintext /healthz: {e:?}"));
        assert_eq!(probe.status, 200, "{}", probe.body_text());
        let other = get(b_inbound, "/data", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("plaintext /data: {e:?}"));
        assert_eq!(other.status, 403, "{}", other.body_text());
        let received = app.received();
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].path, "/healthz");
        // No verified identity: the header the caller sent is not passed on.
        assert!(!received[0].has_header(HEADER));
        assert_eq!(denials(&b, "no_client_cert"), before + 1);
        assert_eq!(inbound_failures(&b, "plaintext"), Some(0));
    });
}

#[test]
fn http2_crosses_the_mtls_hop_with_the_callers_identity() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("h2");
    for_each_driver(|driver| {
        let app = Nghttpd::start(&[]);
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
            true,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let a = start_proxy(
            driver,
            proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, APP),
        );
        let request = H2Request {
            path: "/missing",
            headers: vec![(HEADER, "spiffe://td/ns/prod/sa/forged")],
            ..Default::default()
        };
        let direct = h2_request(app.addr(), &request);
        let through = h2_request(a.addr(), &request);
        assert!(through.complete, "{through:?}");
        assert_eq!(through.status, direct.status, "{through:?}");
        let logged = app.wait_requests(2);
        assert_eq!(logged.len(), 2);
        assert_eq!(
            logged[0].header(HEADER),
            Some("spiffe://td/ns/prod/sa/forged")
        );
        assert_eq!(logged[1].header(HEADER), Some(WEB), "{:?}", logged[1]);
        assert_eq!(
            sample(
                &b.metrics_text(),
                "coremesh_tls_handshakes_total{direction=\"inbound\"}"
            ),
            Some(1)
        );
    });
}

#[test]
fn grpc_calls_cross_the_mtls_hop_and_a_refused_caller_gets_permission_denied() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("grpc");
    for_each_driver(|driver| {
        let server = GrpcServer::start("G", &[]);
        // Only the gRPC service `test.Echo` is open to `sa/web`; every other path to `sa/api`.
        let policy = InboundPolicy {
            require_mtls: true,
            authorize: vec!["spiffe://td/ns/prod/sa/api".to_owned()],
            routes: vec![InboundRoute {
                path_prefix: Some("/test.Echo/".to_owned()),
                authorize: Some(vec![WEB.to_owned()]),
                ..InboundRoute::default()
            }],
        };
        let b = proxy_b_with(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            server.addr().port(),
            policy,
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let a = start_proxy(
            driver,
            proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, APP),
        );
        for (kind, n, expected) in [
            ("unary", 1, vec!["G:hello".to_owned()]),
            ("server", 3, (0..3).map(|i| format!("G:{i}")).collect()),
        ] {
            let r = grpc_call(a.addr(), kind, n, WAIT);
            assert_eq!(r.code, "OK", "{kind}: {r:?}");
            assert_eq!(r.messages, expected, "{kind}");
        }
        let before = denials(&b, "not_authorized");
        let body = grpc_frame(b"x");
        let path = method_path("Unary").replace("test.Echo", "other.Service");
        let refused = h2_request(
            a.addr(),
            &H2Request {
                method: "POST",
                path: &path,
                headers: vec![("content-type", "application/grpc"), ("te", "trailers")],
                body: Some(&body),
                ..Default::default()
            },
        );
        assert_eq!(refused.status, Some(200), "{refused:?}");
        assert!(refused.complete, "{refused:?}");
        assert_eq!(
            refused.header("grpc-status"),
            Some("7"),
            "trailers-only: {refused:?}"
        );
        assert!(refused.body.is_empty(), "{refused:?}");
        assert_eq!(denials(&b, "not_authorized"), before + 1);
    });
}

fn reloads_ok(b: &AdminProxy) -> u64 {
    sample(
        &b.metrics_text(),
        "coremesh_identity_reloads_total{result=\"ok\"}",
    )
    .unwrap_or(0)
}

#[test]
fn renewing_the_certificate_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    const RENEWALS: u64 = 20;
    let ca = Ca::new("mesh");
    let dir = TempDir::new("renew");
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let mut b_identity = dir.identity("app", &ca, APP, &[&ca]);
        b_identity.reload_interval_ms = 100;
        let (cert, key) = (b_identity.cert.clone(), b_identity.key.clone());
        let b = proxy_b(driver, b_identity, app.addr().port(), true);
        let b_inbound = b.inbound_addr().expect("B's inbound listener");
        let mut a_config = proxy_a(dir.identity("web", &ca, WEB, &[&ca]), b_inbound, APP);
        // No pooling: every request is a new handshake with the certificate in force.
        a_config.services[0].overrides.pool_max_idle = Some(0);
        let a = start_proxy(driver, a_config);
        let target = a.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    match get(target, "/load", &[("Host", "app.local")]) {
                        Ok(r) if r.status == 200 => ok += 1,
                        other => failed.push(format!("{other:?}")),
                    }
                }
                (ok, failed)
            })
        };
        let before = reloads_ok(&b);
        for round in 1..=RENEWALS {
            let (new_cert, new_key) = ca.svid(APP);
            // The key first: a poll in between sees a mismatch and keeps the identity in
            // force until the certificate follows.
            dir.replace(&key, &new_key);
            dir.replace(&cert, &new_cert);
            let start = Instant::now();
            while reloads_ok(&b) < before + round && start.elapsed() < WAIT {
                std::thread::sleep(Duration::from_millis(20));
            }
            // At least: the reload counter is the process's, shared with every proxy a
            // test runs in it.
            let seen = reloads_ok(&b);
            assert!(seen >= before + round, "renewal {round} installed: {seen}");
        }
        stop.store(true, Ordering::Relaxed);
        let (ok, failed) = load
            .join()
            .unwrap_or_else(|_| panic!("the load thread panicked"));
        assert!(
            failed.is_empty(),
            "{} failed requests: {:?}",
            failed.len(),
            failed
        );
        assert!(ok > 0);
        assert_eq!(app.requests_received(), ok);
        let handshakes = sample(
            &b.metrics_text(),
            "coremesh_tls_handshakes_total{direction=\"inbound\"}",
        );
        assert_eq!(handshakes, Some(ok));
    });
}

/// `[identity]` is read at start: a configuration installed later that marks a service
/// `tls` on a proxy started without one refuses that service instead of reaching it in
/// plaintext.
#[test]
fn a_service_turned_to_mtls_without_an_identity_in_force_is_refused_not_sent_in_plaintext() {
    for_each_driver(|driver| {
        let app = Upstream::echo();
        let mut config = base_config();
        config.services.push(service("app", &[app.addr()]));
        config.routes.push(route_all("app"));
        config.services[0].overrides.max_attempts = Some(1);
        let a = start_proxy(driver, config.clone());
        let plain = get(a.addr(), "/before", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("plaintext request: {e:?}"));
        assert_eq!(plain.status, 200, "{}", plain.body_text());
        config.services[0].tls = Some(ServiceTls {
            identity: APP.to_owned(),
        });
        a.install(std::sync::Arc::new(coremesh_discovery::Snapshot::build(
            &config,
        )));
        // Applied at each core's next loop boundary: wait until a request is refused.
        let start = Instant::now();
        let refused = loop {
            let r = get(a.addr(), "/after", &[("Host", "app.local")])
                .unwrap_or_else(|e| panic!("request after the install: {e:?}"));
            if r.status != 200 || start.elapsed() > WAIT {
                break r;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            matches!(refused.status, 502 | 503),
            "status {}: {}",
            refused.status,
            refused.body_text()
        );
        // From then on requests are refused and none reaches the application.
        let later = get(a.addr(), "/later", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request after the refusal: {e:?}"));
        assert!(matches!(later.status, 502 | 503), "status {}", later.status);
        assert!(
            !app.received().iter().any(|r| r.path == "/later"),
            "a request reached the application in plaintext"
        );
    });
}
