//! Mutual TLS to Kubernetes endpoints that discovery found meshed, on both drivers, with
//! CAs made by rcgen. Proxy A (identity `spiffe://td/ns/prod/sa/web`) discovers service
//! `app` through the API server stand-in of discovery's tests (read through a kubeconfig, as
//! `coremesh run` reads one): its EndpointSlice lists proxy B's inbound side (identity
//! `…/sa/app`, `require_mtls`), backed by Pod `app-1`, labelled `coremesh.io/mtls=true`
//! and running as service account `app`. Nothing in A's configuration names an identity:
//!
//! 1. A reaches B over mutual TLS expecting `spiffe://td/ns/prod/sa/app`; the application
//!    sees A's verified identity.
//! 2. The pod relabelled out of the mesh while a request is in flight on the pooled TLS
//!    connection: that request ends well, the connection is not pooled again (its
//!    endpoint's TLS changed while it was in use), and the next request goes out in
//!    plaintext, which B refuses (counted as `plaintext`); nothing reaches the application.
//! 3. The pod meshed again under another service account: A expects
//!    `…/sa/other`, B's certificate does not prove it, and A refuses B (B counts the
//!    alert); nothing reaches the application.

#[allow(dead_code)]
#[path = "../../discovery/tests/support/api_server_stand_in/mod.rs"]
mod api_server_stand_in;
mod mtls_support;

use api_server_stand_in::ApiServerStandIn;
use coremesh_discovery::discovery_settings::MTLS_POD_LABEL;
use coremesh_discovery::{
    Config, Discovery, IdentitySettings, InboundPolicy, InboundSettings, SideSettings, Snapshot,
};
use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::client::get;
use coremesh_tests::prometheus::Exposition;
use coremesh_tests::proxy::{base_config, for_each_driver, route_all, service};
use coremesh_tests::upstream::{echo_body, Action, Response};
use coremesh_tests::{Driver, Upstream};
use k8s_openapi::api::core::v1::{
    ObjectReference, Pod, PodSpec, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mtls_support::{validated, Ca, TempDir, APP, HEADER, WAIT, WEB};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

/// Service `app` in `prod`: port `http` 80.
fn app_service() -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some("app".into()),
            namespace: Some("prod".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `app`'s one slice: `endpoint` (its port the `http` target port), backed by pod `app-1`.
fn app_slice(endpoint: SocketAddr) -> EndpointSlice {
    let labels = BTreeMap::from([("kubernetes.io/service-name".to_owned(), "app".to_owned())]);
    EndpointSlice {
        metadata: ObjectMeta {
            name: Some("app-a".into()),
            namespace: Some("prod".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(i32::from(endpoint.port())),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
        endpoints: Some(vec![Endpoint {
            addresses: vec![endpoint.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                name: Some("app-1".into()),
                namespace: Some("prod".into()),
                ..ObjectReference::default()
            }),
            ..Endpoint::default()
        }]),
    }
}

/// Pod `app-1` running as `account`, labelled meshed when `meshed`.
fn app_pod(meshed: bool, account: &str) -> Pod {
    let mut labels = BTreeMap::from([("app".to_owned(), "app".to_owned())]);
    if meshed {
        labels.insert(MTLS_POD_LABEL.to_owned(), "true".to_owned());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some("app-1".into()),
            namespace: Some("prod".into()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some(account.into()),
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Proxy B: `identity`, an inbound side requiring mutual TLS in front of `app_port`.
fn proxy_b(driver: Driver, identity: IdentitySettings, app_port: u16) -> AdminProxy {
    let mut config = base_config();
    config.identity = Some(identity);
    config.inbound = Some(InboundSettings {
        side: SideSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            ..SideSettings::default()
        },
        app_port: Some(app_port),
        policy: InboundPolicy {
            require_mtls: true,
            ..InboundPolicy::default()
        },
        ..InboundSettings::default()
    });
    validated(&config);
    start_with_admin(driver, config)
}

/// Proxy A's configuration: `identity`, every request to service `app`, discovered as
/// `app.prod:http` through `kubeconfig` (one attempt, so each refusal is counted once).
fn proxy_a_config(identity: IdentitySettings, kubeconfig: PathBuf) -> Config {
    let mut config = base_config();
    config.identity = Some(identity);
    config.discovery.debounce_ms = 10;
    config.discovery.kubernetes.kubeconfig = Some(kubeconfig);
    config.discovery.kubernetes.trust_domain = "td".to_owned();
    let mut app = service("app", &[]);
    app.kubernetes = vec!["app.prod:http".to_owned()];
    app.overrides.max_attempts = Some(1);
    config.services.push(app);
    config.routes.push(route_all("app"));
    validated(&config);
    config
}

/// The value of the sample `series` (name and labels) in a Prometheus text scrape.
fn sample(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

fn inbound_failures(b: &AdminProxy, reason: &str) -> u64 {
    sample(
        &b.metrics_text(),
        &format!(
            "coremesh_tls_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}"
        ),
    )
}

/// Waits for a published snapshot in which service `app`'s one endpoint is `endpoint`
/// with `identity` expected (`None`: plaintext).
fn wait_snapshot(
    snapshots: &Receiver<Arc<Snapshot>>,
    endpoint: SocketAddr,
    identity: Option<&str>,
) {
    let deadline = Instant::now() + WAIT;
    let mut last = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(snapshot) = snapshots.recv_timeout(left) else {
            break;
        };
        let app = &snapshot.services[0];
        let expected: BTreeMap<SocketAddr, String> = identity
            .map(|id| (endpoint, id.to_owned()))
            .into_iter()
            .collect();
        if app.endpoints == [endpoint] && app.endpoint_identities == expected {
            return;
        }
        last = Some((app.endpoints.clone(), app.endpoint_identities.clone()));
    }
    panic!("no snapshot with {endpoint} expecting {identity:?}; the last: {last:?}");
}

/// A gate the application holds `/held` requests at until the test opens it.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn wait(&self) {
        let deadline = Instant::now() + WAIT;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            open = self
                .opened
                .wait_timeout(open, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }
}

/// Waits until a `/metrics` scrape of A merged its core: the core answered it after
/// every snapshot installed before the scrape was asked for (one control channel, drained
/// in order).
fn in_force(a: &AdminProxy) {
    let merged = wait_for_admin(|| {
        let text = a.metrics_text();
        let cores = Exposition::parse(&text)
            .ok()
            .and_then(|m| m.value("coremesh_cores", &[]));
        (
            (cores == Some(1.0)).then_some(()),
            format!("coremesh_cores {cores:?}"),
        )
    });
    merged.unwrap_or_else(|e| panic!("A's core never answered a scrape: {e}"));
}

#[test]
fn a_meshed_pod_is_reached_over_mutual_tls_as_its_service_account() {
    let ca = Ca::new("mesh");
    let dir = TempDir::new("meshed");
    for_each_driver(|driver| {
        let gate = Arc::new(Gate::default());
        let held = gate.clone();
        let app = Upstream::start("app", move |request| {
            if request.path == "/held" {
                held.wait();
            }
            Action::Respond(Response::ok(echo_body(request)))
        });
        let b = proxy_b(
            driver,
            dir.identity("app", &ca, APP, &[&ca]),
            app.addr().port(),
        );
        let b_inbound = b.inbound_addr().expect("B's inbound listener");

        let stand_in = ApiServerStandIn::start();
        stand_in.apply_service(&app_service());
        stand_in.apply_pod(&app_pod(true, "app"));
        stand_in.apply_slice(&app_slice(b_inbound));
        let kubeconfig = dir.write("kubeconfig", &stand_in.kubeconfig_yaml());
        let config = proxy_a_config(dir.identity("web", &ca, WEB, &[&ca]), kubeconfig);
        let a = start_with_admin(driver, config.clone());
        let installer = a.installer();
        let (sender, snapshots) = channel();
        let discovery = Discovery::start(None, config, move |snapshot| {
            installer.install(snapshot.clone());
            let _ = sender.send(snapshot);
        })
        .unwrap_or_else(|e| panic!("Discovery::start: {e}"));

        // 1. Meshed: mutual TLS, and the application sees A's identity.
        wait_snapshot(&snapshots, b_inbound, Some(APP));
        in_force(&a);
        for path in ["/hello", "/again"] {
            let response = get(a.addr(), path, &[("Host", "app.local")])
                .unwrap_or_else(|e| panic!("{path}: {e:?}"));
            assert_eq!(response.status, 200, "{path}: {}", response.body_text());
        }
        let received = app.received();
        assert_eq!(received.len(), 2);
        for request in &received {
            assert_eq!(request.header_tokens(HEADER), vec![WEB.to_owned()]);
        }
        let handshakes = sample(
            &b.metrics_text(),
            "coremesh_tls_handshakes_total{direction=\"inbound\"}",
        );
        assert_eq!(handshakes, 1, "both requests on one pooled connection");

        // 2. The pod relabelled out of the mesh while a request is in flight on that
        // connection: the request ends well, its connection is not pooled again, and the
        // next request goes out in plaintext, which B refuses.
        let client = a.addr();
        let in_flight = std::thread::spawn(move || {
            get(client, "/held", &[("Host", "app.local")]).map(|response| response.status)
        });
        assert!(app.wait_for_requests(3, WAIT), "/held never arrived");
        stand_in.apply_pod(&app_pod(false, "app"));
        wait_snapshot(&snapshots, b_inbound, None);
        in_force(&a);
        gate.open();
        let held_status = in_flight
            .join()
            .unwrap_or_else(|_| panic!("the /held client"));
        assert_eq!(held_status.ok(), Some(200));
        let refused = get(a.addr(), "/plain", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request in plaintext: {e:?}"));
        assert!(matches!(refused.status, 502 | 503), "{}", refused.status);
        assert!(
            wait_for_admin(|| {
                let seen = inbound_failures(&b, "plaintext");
                (
                    (seen == 1).then_some(()),
                    format!("{seen} plaintext refusals"),
                )
            })
            .is_ok(),
            "B never counted the plaintext connection"
        );
        assert_eq!(app.requests_received(), 3);

        // 3. Meshed again, as another service account: A expects that identity, B's
        // certificate does not prove it, and A refuses B.
        let alerts = inbound_failures(&b, "alert");
        stand_in.apply_pod(&app_pod(true, "other"));
        wait_snapshot(&snapshots, b_inbound, Some("spiffe://td/ns/prod/sa/other"));
        in_force(&a);
        let refused = get(a.addr(), "/wrong", &[("Host", "app.local")])
            .unwrap_or_else(|e| panic!("request to the wrong identity: {e:?}"));
        assert!(matches!(refused.status, 502 | 503), "{}", refused.status);
        assert!(
            wait_for_admin(|| {
                let seen = inbound_failures(&b, "alert");
                ((seen == alerts + 1).then_some(()), format!("{seen} alerts"))
            })
            .is_ok(),
            "B never counted A's refusal"
        );
        assert_eq!(inbound_failures(&b, "plaintext"), 1);
        assert_eq!(app.requests_received(), 3);

        discovery.stop();
    });
}
