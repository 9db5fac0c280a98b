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
//! renewed 20 times while requests run, each on a new handshake, without a failed request,
//! and after each renewal a new handshake presents that renewal's certificate. The CAs and
//! SVIDs are made with rcgen in a temporary directory (`mtls_support`).

use coremesh_discovery::{InboundPolicy, InboundRoute, ServiceTls};
use coremesh_tests::client::get;
use coremesh_tests::grpc_peers::{grpc_call, grpc_frame, method_path, GrpcServer};
use coremesh_tests::h2clients::{h2_request, H2Request};
use coremesh_tests::h2upstreams::Nghttpd;
use coremesh_tests::proxy::{base_config, for_each_driver, route_all, service, start_proxy};
use coremesh_tests::Upstream;
use mtls_support::*;
use std::time::{Duration, Instant};

mod mtls_support;

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
        // A fresh TLS client, trusting the CA, reads the certificate B presents.
        let probe = TlsClient::new(&ca, &ca.issue(WEB), &[b"http/1.1"]);
        let mut probes = 0u64;
        let presented = |probes: &mut u64| {
            *probes += 1;
            probe.server_certificate(b_inbound)
        };
        let mut previous = presented(&mut probes).unwrap_or_else(|e| panic!("first probe: {e}"));
        // B's reload counter is its own (not shared with the other proxies of this
        // process): nothing changed its files since it started.
        let before = reloads_ok(&b);
        assert_eq!(before, 0, "B reloaded before any renewal");
        for round in 1..=RENEWALS {
            let renewal = ca.issue(APP);
            // The key first: a poll in between sees a mismatch and keeps the identity in
            // force until the certificate follows.
            dir.replace(&key, &renewal.key_pem);
            dir.replace(&cert, &renewal.cert_pem);
            let start = Instant::now();
            while reloads_ok(&b) < before + round && start.elapsed() < WAIT {
                std::thread::sleep(Duration::from_millis(20));
            }
            // Exactly one install per renewal: a poll between the key and the certificate
            // is refused (key mismatch, counted apart), and a poll that read both files
            // already does not install them again at the next.
            let seen = reloads_ok(&b);
            assert_eq!(seen, round, "renewal {round} installed once");
            // A new handshake presents this renewal's certificate (each renewal is a new
            // key and serial): waited for, as the counter moves just after the install
            // and promises nothing about what another thread's next handshake reads.
            let mut last = Err(String::from("not probed"));
            let presents_it = wait_until(|| {
                last = presented(&mut probes);
                last.as_deref().ok() == Some(renewal.cert_der.as_slice())
            });
            assert!(
                presents_it,
                "renewal {round}: a new handshake does not present it (the previous \
                 certificate: {}; probe: {:?})",
                last.as_ref().ok() == Some(&previous),
                last.as_ref().map(|l| l.len())
            );
            previous = renewal.cert_der;
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
        // One per request, and one per probe.
        assert_eq!(handshakes, Some(ok + probes));
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
