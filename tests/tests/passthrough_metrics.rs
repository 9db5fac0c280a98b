//! The request families carry the `direction` of the listener each request came in on, on
//! both drivers: requests to the explicit listener count under `direction="proxy"`, those
//! through the inbound side under `direction="inbound"`, and the scrape stays a valid
//! exposition (`promtool check metrics`). (Outbound passthrough requests are counted under
//! `direction="outbound",route="passthrough"`: see `passthrough.rs`, which needs root.)

use coremesh_discovery::{InboundSettings, SideSettings};
use coremesh_tests::admin::{start_with_admin, wait_for_admin};
use coremesh_tests::client::Client;
use coremesh_tests::prometheus::{promtool_check, Exposition, PromtoolVerdict};
use coremesh_tests::proxy::{for_each_driver, one_service};
use coremesh_tests::traffic::get_on;
use coremesh_tests::upstream::Upstream;

const REQUESTS: &str = "coremesh_requests_total";
const LATENCY_COUNT: &str = "coremesh_response_latency_seconds_count";

#[test]
fn request_families_carry_the_direction_of_their_listener() {
    for_each_driver(|driver| {
        let upstream = Upstream::echo();
        let mut config = one_service(&[upstream.addr()]);
        config.proxy.shutdown_grace_ms = 300;
        config.inbound = Some(InboundSettings {
            side: SideSettings {
                listen: "127.0.0.1:0".parse().expect("a literal address"),
                ..SideSettings::default()
            },
            app_port: Some(upstream.addr().port()),
            ..InboundSettings::default()
        });
        let proxy = start_with_admin(driver, config);
        let inbound = proxy.inbound_addr().expect("an inbound listener");

        let mut explicit = Client::connect(proxy.addr()).expect("connect to the proxy");
        for i in 0..3 {
            assert_eq!(
                get_on(&mut explicit, "/p", &[], &format!("proxy {i}")).status,
                200
            );
        }
        let mut side = Client::connect(inbound).expect("connect to the inbound side");
        for i in 0..2 {
            assert_eq!(
                get_on(&mut side, "/i", &[], &format!("inbound {i}")).status,
                200
            );
        }

        let (e, text) = wait_for_admin(|| {
            let text = proxy.metrics_text();
            let e = Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}\n{text}"));
            let done = e.sum(REQUESTS, &[]) >= 5.0;
            (done.then(|| (e, text.clone())), text)
        })
        .unwrap_or_else(|last| panic!("/metrics never counted 5 requests:\n{last}"));
        let by = |name, direction| e.sum(name, &[("direction", direction)]);
        assert_eq!(by(REQUESTS, "proxy"), 3.0, "{text}");
        assert_eq!(by(REQUESTS, "inbound"), 2.0, "{text}");
        assert_eq!(by(REQUESTS, "outbound"), 0.0, "{text}");
        assert_eq!(e.sum(REQUESTS, &[]), 5.0, "no request without a direction");
        assert_eq!(by(LATENCY_COUNT, "proxy"), 3.0);
        assert_eq!(by(LATENCY_COUNT, "inbound"), 2.0);
        let endpoint = upstream.addr().to_string();
        assert_eq!(
            e.sum(
                REQUESTS,
                &[
                    ("direction", "proxy"),
                    ("service", "backend"),
                    ("endpoint", &endpoint),
                    ("class", "2xx"),
                ],
            ),
            3.0,
            "{text}"
        );
        assert_eq!(
            e.value(REQUESTS, &[("direction", "inbound"), ("class", "2xx")]),
            Some(2.0),
            "inbound requests go to the application, not a service: {text}"
        );
        // Per-service counters: the explicit listener's at zero too (one per reason), the
        // sides' only once they count something (none retried here).
        assert_eq!(
            e.matching(
                "coremesh_retries_total",
                &[("service", "backend"), ("direction", "proxy")]
            )
            .len(),
            5,
            "one series per reason: {text}"
        );
        assert_eq!(
            e.matching("coremesh_retries_total", &[("service", "backend")])
                .len(),
            5,
            "no zero series for the sides: {text}"
        );
        match promtool_check(&text).unwrap_or_else(|e| panic!("{e}")) {
            PromtoolVerdict::Accepted { .. } => {}
            PromtoolVerdict::Rejected { output } => {
                panic!("promtool rejected the scrape:\n{output}\n--- scrape ---\n{text}")
            }
            PromtoolVerdict::NotInstalled => eprintln!("promtool is not installed: not checked"),
        }
    });
}
