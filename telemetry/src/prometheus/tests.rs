//! Exact expositions of small scrapes, and `promtool check metrics` on a full one.

use super::*;
use crate::metrics::{
    CoreMetrics, DeniedReason, Direction, EndpointState, ErrorKind, LayoutBuilder, Peer,
    RetryReason, StatusClass, OVERFLOW_CLIENT_ID,
};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

const WEB: &str = "spiffe://td/ns/prod/sa/web";
const API: &str = "spiffe://td/ns/prod/sa/api";
const JOB: &str = "spiffe://td/ns/batch/sa/job";

/// Two cores of a mesh with a tricky service name, some traffic on each.
fn sample_scrape(per_endpoint: bool) -> MetricsSnapshot {
    let mut b = LayoutBuilder::new(per_endpoint);
    b.max_client_ids(2);
    let users = b.add_service("users", ["10.0.0.1:8080", "10.0.0.2:8080"]);
    let odd = b.add_service("we\"ird\\svc\nx", ["[::1]:9000"]);
    b.add_route("api", Some(users));
    b.add_route("odd", Some(odd));
    let layout = b.build();
    let api = layout.route_id("api", Some(users)).unwrap();
    let e1 = layout.endpoint_at(users, 0).unwrap();
    let e2 = layout.endpoint_at(users, 1).unwrap();

    let one = CoreMetrics::new(layout.clone());
    one.record_response(
        Direction::Proxy,
        api,
        Some(e1),
        200,
        Duration::from_millis(2),
    );
    one.record_response(
        Direction::Inbound,
        api,
        Some(e2),
        502,
        Duration::from_millis(40),
    );
    let unrouted = layout.unrouted();
    one.record_response(
        Direction::Outbound,
        unrouted,
        None,
        404,
        Duration::from_micros(50),
    );
    one.record_retry(Direction::Inbound, users, RetryReason::ConnectFailed);
    one.record_ejection(e2);
    one.set_endpoint_state(e2, EndpointState::Ejected);
    one.record_client_connection_opened();
    one.record_bytes_received(Peer::Client, 300);
    one.record_bytes_sent(Peer::Client, 700);
    one.record_upstream_connection_opened(users);
    one.record_error(ErrorKind::NoRoute);
    one.record_inbound_response_from(WEB, 200, Duration::from_millis(3));
    one.record_inbound_denied(DeniedReason::NotAuthorized);
    one.record_error(ErrorKind::Denied);

    let two = CoreMetrics::new(layout);
    two.record_response(
        Direction::Proxy,
        api,
        Some(e1),
        200,
        Duration::from_millis(7),
    );
    two.record_upstream_connection_reused(users);
    two.record_deadline_exceeded(Direction::Outbound, users);
    two.record_retry_budget_exhausted(Direction::Proxy, users);
    two.record_inbound_response_from(WEB, 200, Duration::from_millis(30));
    two.record_inbound_response_from(API, 403, Duration::from_micros(900));
    // Beyond the cap of two identities on this core.
    two.record_inbound_response_from(JOB, 200, Duration::from_millis(3));

    let mut merged = MetricsSnapshot::empty();
    merged.merge(&one.snapshot());
    merged.merge(&two.snapshot());
    merged
}

fn encoded(metrics: &MetricsSnapshot) -> String {
    let process = ProcessMetrics::read();
    let spans = SpanCounts {
        exported: 10,
        dropped_queue_full: 2,
        ..SpanCounts::default()
    };
    let mut out = String::new();
    encode(
        &Scrape {
            metrics,
            build: BuildInfo {
                version: "0.1.0",
                driver: "uring",
            },
            process: Some(&process),
            spans: Some(&spans),
        },
        &mut out,
    );
    out
}

fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn requests_show_exact_counts_per_endpoint() {
    let text = encoded(&sample_scrape(true));
    assert_eq!(
        lines_of(&text, "coremesh_requests_total"),
        [
            "coremesh_requests_total{direction=\"proxy\",service=\"users\",route=\"api\",endpoint=\"10.0.0.1:8080\",class=\"2xx\"} 2",
            "coremesh_requests_total{direction=\"inbound\",service=\"users\",route=\"api\",endpoint=\"10.0.0.2:8080\",class=\"5xx\"} 1",
            "coremesh_requests_total{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/api\",class=\"4xx\"} 1",
            "coremesh_requests_total{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",class=\"2xx\"} 2",
            "coremesh_requests_total{direction=\"inbound\",client_id=\"other\",class=\"2xx\"} 1",
            "coremesh_requests_total{direction=\"outbound\",class=\"4xx\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "coremesh_ejections_total{service=\"users\""),
        [
            "coremesh_ejections_total{service=\"users\",endpoint=\"10.0.0.1:8080\"} 0",
            "coremesh_ejections_total{service=\"users\",endpoint=\"10.0.0.2:8080\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "coremesh_endpoint_state{service=\"users\",endpoint=\"10.0.0.2:8080\""),
        [
            "coremesh_endpoint_state{service=\"users\",endpoint=\"10.0.0.2:8080\",state=\"available\"} 1",
            "coremesh_endpoint_state{service=\"users\",endpoint=\"10.0.0.2:8080\",state=\"ejected\"} 1",
            "coremesh_endpoint_state{service=\"users\",endpoint=\"10.0.0.2:8080\",state=\"half-open\"} 0",
        ]
    );
    assert!(text.contains("coremesh_cores 2\n"));
}

#[test]
fn histogram_is_cumulative_with_exact_sum() {
    let text = encoded(&sample_scrape(true));
    let api: Vec<&str> = lines_of(&text, "coremesh_response_latency_seconds")
        .into_iter()
        .filter(|l| l.contains("route=\"api\""))
        .collect();
    assert_eq!(
        api,
        [
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.001\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.0025\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.005\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.01\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.025\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.05\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.1\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.25\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"0.5\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"1\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"2.5\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"5\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"10\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"proxy\",service=\"users\",route=\"api\",le=\"+Inf\"} 2",
            "coremesh_response_latency_seconds_sum{direction=\"proxy\",service=\"users\",route=\"api\"} 0.009",
            "coremesh_response_latency_seconds_count{direction=\"proxy\",service=\"users\",route=\"api\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.001\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.0025\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.005\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.01\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.025\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.05\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.1\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.25\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"0.5\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"1\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"2.5\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"5\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"10\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",service=\"users\",route=\"api\",le=\"+Inf\"} 1",
            "coremesh_response_latency_seconds_sum{direction=\"inbound\",service=\"users\",route=\"api\"} 0.04",
            "coremesh_response_latency_seconds_count{direction=\"inbound\",service=\"users\",route=\"api\"} 1",
        ]
    );
    // The route that saw no request has no histogram.
    assert!(!text.contains("route=\"odd\""));
}

#[test]
fn per_endpoint_off_drops_the_endpoint_label() {
    let text = encoded(&sample_scrape(false));
    assert!(!text.contains("endpoint=\""));
    assert_eq!(
        lines_of(&text, "coremesh_requests_total{")
            .into_iter()
            .filter(|l| l.contains("service="))
            .collect::<Vec<_>>(),
        [
            "coremesh_requests_total{direction=\"proxy\",service=\"users\",route=\"api\",class=\"2xx\"} 2",
            "coremesh_requests_total{direction=\"inbound\",service=\"users\",route=\"api\",class=\"5xx\"} 1",
        ]
    );
    assert!(text.contains("coremesh_ejections_total{service=\"users\"} 1\n"));
    assert!(text.contains(
        "coremesh_endpoint_state{service=\"users\",state=\"available\"} 3\n\
         coremesh_endpoint_state{service=\"users\",state=\"ejected\"} 1\n"
    ));
}

#[test]
fn service_families_and_globals() {
    let text = encoded(&sample_scrape(true));
    for line in [
        "coremesh_retries_total{direction=\"inbound\",service=\"users\",reason=\"connect-failed\"} 1",
        "coremesh_retries_total{direction=\"proxy\",service=\"users\",reason=\"connect-failed\"} 0",
        "coremesh_retries_total{direction=\"proxy\",service=\"users\",reason=\"timeout\"} 0",
        "coremesh_retry_budget_exhausted_total{direction=\"proxy\",service=\"users\"} 1",
        "coremesh_deadline_exceeded_total{direction=\"outbound\",service=\"users\"} 1",
        "coremesh_deadline_exceeded_total{direction=\"proxy\",service=\"users\"} 0",
        "coremesh_upstream_connections_opened_total{service=\"users\"} 1",
        "coremesh_upstream_connections_reused_total{service=\"users\"} 1",
        "coremesh_tcp_connections_accepted_total 1",
        "coremesh_tcp_connections_open 1",
        "coremesh_received_bytes_total{peer=\"client\"} 300",
        "coremesh_sent_bytes_total{peer=\"client\"} 700",
        "coremesh_errors_total{kind=\"no-route\"} 1",
        "coremesh_spans_exported_total 10",
        "coremesh_spans_dropped_total{reason=\"queue_full\"} 2",
        "coremesh_build_info{version=\"0.1.0\",driver=\"uring\"} 1",
        "coremesh_retry_budget_exhausted_total{direction=\"proxy\",service=\"we\\\"ird\\\\svc\\nx\"} 0",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    // A side's per-service counters appear once they count something; the explicit
    // listener's are written at zero.
    for absent in [
        "coremesh_retry_budget_exhausted_total{direction=\"outbound\",service=\"users\"}",
        "coremesh_retries_total{direction=\"outbound\",service=\"users\",reason=\"timeout\"}",
        "coremesh_deadline_exceeded_total{direction=\"inbound\",service=\"users\"}",
    ] {
        assert!(!text.contains(absent), "{absent} at zero in\n{text}");
    }
    for family in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
}

#[test]
fn inbound_callers_carry_their_verified_identity() {
    let m = sample_scrape(true);
    assert_eq!(m.requests_from(WEB, StatusClass::Success), 2);
    assert_eq!(m.requests_from(API, StatusClass::ClientError), 1);
    assert_eq!(m.requests_from(JOB, StatusClass::Success), 0);
    assert_eq!(m.requests_from(OVERFLOW_CLIENT_ID, StatusClass::Success), 1);
    assert_eq!(m.inbound_denied(DeniedReason::NotAuthorized), 1);
    let text = encoded(&m);
    assert_eq!(
        lines_of(&text, "coremesh_response_latency_seconds_count{direction=\"inbound\""),
        [
            "coremesh_response_latency_seconds_count{direction=\"inbound\",service=\"users\",route=\"api\"} 1",
            "coremesh_response_latency_seconds_count{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/api\"} 1",
            "coremesh_response_latency_seconds_count{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\"} 2",
            "coremesh_response_latency_seconds_count{direction=\"inbound\",client_id=\"other\"} 1",
        ]
    );
    assert_eq!(
        lines_of(&text, "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\""),
        [
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.001\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.0025\"} 0",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.005\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.01\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.025\"} 1",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.05\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.1\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.25\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"0.5\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"1\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"2.5\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"5\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"10\"} 2",
            "coremesh_response_latency_seconds_bucket{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\",le=\"+Inf\"} 2",
        ]
    );
    assert!(text.contains(
        "coremesh_response_latency_seconds_sum{direction=\"inbound\",client_id=\"spiffe://td/ns/prod/sa/web\"} 0.033\n"
    ));
    assert_eq!(
        lines_of(&text, "coremesh_inbound_denied_total"),
        ["coremesh_inbound_denied_total{reason=\"not_authorized\"} 1"]
    );
    assert!(text.contains("coremesh_errors_total{kind=\"denied\"} 1\n"));
}

#[test]
fn no_denial_no_denied_family() {
    let mut b = LayoutBuilder::new(true);
    b.add_route("api", None);
    let core = CoreMetrics::new(b.build());
    let text = encoded(&core.snapshot());
    assert!(!text.contains("coremesh_inbound_denied_total"), "{text}");
    assert!(text.contains("coremesh_errors_total{kind=\"denied\"} 0\n"));
}

#[test]
fn every_family_has_help_and_type_once() {
    let text = encoded(&sample_scrape(true));
    let types = lines_of(&text, "# TYPE ");
    let helps = lines_of(&text, "# HELP ");
    assert_eq!(types.len(), helps.len());
    let mut names: Vec<&str> = types.iter().map(|l| l.split(' ').nth(2).unwrap()).collect();
    let count = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), count, "a family written twice");
}

/// Runs `promtool check metrics` on the exposition. promtool must be installed (CI installs
/// Debian's `prometheus` package); `COREMESH_TEST_SKIP_PROMTOOL=1` lets a machine without it
/// skip the check.
#[test]
fn promtool_accepts_the_exposition() {
    for per_endpoint in [true, false] {
        let text = encoded(&sample_scrape(per_endpoint));
        let child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && std::env::var("COREMESH_TEST_SKIP_PROMTOOL")
                        .is_ok_and(|v| v.trim() == "1") =>
            {
                println!("skipped: promtool is not installed (COREMESH_TEST_SKIP_PROMTOOL=1)");
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "promtool is not installed: install Debian's `prometheus` package (.ci/run \
                 does), or set COREMESH_TEST_SKIP_PROMTOOL=1 to skip this check"
            ),
            Err(e) => panic!("cannot run promtool: {e}"),
        };
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    }
}
