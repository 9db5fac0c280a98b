//! Metrics and distributed tracing end to end, on both drivers: `promtool check metrics` on
//! a live scrape; spans exported over OTLP/HTTP to a test collector (decoded with the
//! `opentelemetry-proto` types) with their parent/child links and attributes; the trace
//! context the upstream receives (W3C, B3 single, B3 multi); a retried request's two
//! attempt spans; a collector that is down, which costs spans (counted) but no request; and
//! a busy collector (429 and 503 with `Retry-After`, then a chunked partial success), whose
//! batch is posted again after the wait and whose rejected spans are counted.
//!
//! Every wait is bounded and on a condition (spans arrived, a counter reached a value).
//! Spans of one core reach the collector in the order they finished (one queue, batches
//! posted in order), which lets a test show that a span was *not* exported: a later
//! request's spans arrived and it was not among them.
//!
//! The access log goes to the process's standard output; it is tested on the binary in
//! `proxy/tests/access_log.rs`.

use coremesh_discovery::{BalanceKind, Config};
use coremesh_tests::admin::{start_with_admin, wait_for_admin, AdminProxy};
use coremesh_tests::client::Client;
use coremesh_tests::otlp::{decode, partial_success_chunked, ExportedSpan, OtlpCollector};
use coremesh_tests::prometheus::{promtool_check, Exposition, PromtoolVerdict};
use coremesh_tests::proxy::{
    closed_port_addr, for_each_driver, one_service, route_all, route_to, service,
    services_with_routes,
};
use coremesh_tests::traffic::get_on;
use coremesh_tests::upstream::{echo_body, Action, ReceivedRequest, Response, Upstream};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::net::SocketAddr;
use std::time::Duration;

/// How long spans may take to reach the collector: posted every 10 ms here, so this only
/// bounds a broken run.
const SPAN_WAIT: Duration = Duration::from_secs(15);
/// A caller's trace id and span id (the W3C specification's example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// OTLP status codes.
const STATUS_OK: i32 = 1;
const STATUS_ERROR: i32 = 2;

/// `config` with tracing on: every new root sampled, exported to `collector` every 10 ms.
fn traced(mut config: Config, otlp_endpoint: String) -> Config {
    config.telemetry.otlp_endpoint = Some(otlp_endpoint);
    config.telemetry.trace_sample_ratio = 1.0;
    config.telemetry.export_interval_ms = 10;
    config.telemetry.export_timeout_ms = 2_000;
    config
}

/// One service "backend" over `endpoints`, round-robin, route "all".
fn backend(endpoints: &[SocketAddr]) -> Config {
    let mut config = one_service(endpoints);
    config.services[0].overrides.balance = Some(BalanceKind::RoundRobin);
    config.routes[0].name = Some("all".into());
    config
}

/// Parse a version-00 `traceparent`: (trace id, parent id, flags).
fn traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value:?}");
    assert_eq!(parts[0], "00", "traceparent {value:?}");
    assert_eq!(parts[1].len(), 32, "traceparent {value:?}");
    assert_eq!(parts[2].len(), 16, "traceparent {value:?}");
    assert!(
        value
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "traceparent {value:?}: lower-case hex"
    );
    (parts[1].into(), parts[2].into(), parts[3].into())
}

fn spans_of<'a>(spans: &'a [ExportedSpan], trace_id: &str) -> Vec<&'a ExportedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// The one server span and the client spans (in attempt order) of a trace.
fn split_trace<'a>(
    spans: &'a [ExportedSpan],
    trace_id: &str,
) -> (&'a ExportedSpan, Vec<&'a ExportedSpan>) {
    let of_trace = spans_of(spans, trace_id);
    let servers: Vec<_> = of_trace
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "one server span for trace {trace_id}: {of_trace:#?}"
    );
    let mut clients: Vec<_> = of_trace
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Client)
        .collect();
    clients.sort_by_key(|s| s.int_attr("coremesh.attempt"));
    assert_eq!(
        servers.len() + clients.len(),
        of_trace.len(),
        "only server and client spans: {of_trace:#?}"
    );
    (servers[0], clients)
}

/// The attributes both span kinds carry, and the ones only attempts do.
fn assert_server_span(span: &ExportedSpan, status: i64) {
    assert_eq!(span.name, "proxy", "{span:#?}");
    assert_eq!(
        span.str_attr("coremesh.service"),
        Some("backend"),
        "{span:#?}"
    );
    assert_eq!(span.str_attr("coremesh.route"), Some("all"), "{span:#?}");
    assert_eq!(
        span.int_attr("http.response.status_code"),
        Some(status),
        "{span:#?}"
    );
    assert_eq!(span.resource_service.as_deref(), Some("coremesh"));
    assert!(span.end_unix_nano >= span.start_unix_nano, "{span:#?}");
}

fn assert_attempt_span(
    span: &ExportedSpan,
    server: &ExportedSpan,
    endpoint: SocketAddr,
    attempt: i64,
) {
    assert_eq!(span.name, "attempt", "{span:#?}");
    assert_eq!(span.trace_id, server.trace_id, "{span:#?}");
    assert_eq!(
        span.parent_span_id.as_deref(),
        Some(server.span_id.as_str()),
        "an attempt is a child of the request's server span: {span:#?}"
    );
    assert_ne!(span.span_id, server.span_id);
    assert_eq!(
        span.str_attr("coremesh.service"),
        Some("backend"),
        "{span:#?}"
    );
    assert_eq!(
        span.str_attr("coremesh.endpoint"),
        Some(endpoint.to_string().as_str()),
        "{span:#?}"
    );
    assert_eq!(
        span.int_attr("coremesh.attempt"),
        Some(attempt),
        "{span:#?}"
    );
    assert!(
        span.int_attr("coremesh.deadline_ms").is_some(),
        "an attempt records its deadline: {span:#?}"
    );
    assert!(
        span.start_unix_nano >= server.start_unix_nano
            && span.end_unix_nano <= server.end_unix_nano,
        "an attempt lies within its request: {span:#?} in {server:#?}"
    );
}

/// The one request the upstream received carrying `marker` in its path.
fn received_with(upstream: &Upstream, marker: &str) -> ReceivedRequest {
    let found: Vec<_> = upstream
        .received()
        .into_iter()
        .filter(|r| r.path.contains(marker))
        .collect();
    assert_eq!(found.len(), 1, "one request {marker} at the upstream");
    found.into_iter().next().expect("one")
}

#[test]
fn promtool_accepts_a_live_scrape() {
    for_each_driver(|driver| {
        // Traffic that fills most families: successes, upstream 503s, a retried
        // connect failure, unrouted 404s, and spans exported.
        let collector = OtlpCollector::start();
        let ok = Upstream::fixed_named("ok", 200, b"ok");
        let failing = Upstream::fixed_named("failing", 503, b"no");
        let dead = closed_port_addr();
        let mut to_failing = route_to("failing");
        to_failing.path_prefix = Some("/fail".into());
        let mut to_backend = route_all("backend");
        to_backend.path_prefix = Some("/api".into());
        let mut config = services_with_routes(
            vec![
                service("backend", &[dead, ok.addr()]),
                service("failing", &[failing.addr()]),
            ],
            vec![to_failing, to_backend],
        );
        config.services[0].overrides.balance = Some(BalanceKind::RoundRobin);
        let config = traced(config, collector.endpoint_url());
        let proxy = start_with_admin(driver, config);
        let mut client = Client::connect(proxy.addr()).expect("connect");
        let mut statuses = Vec::new();
        for (i, path) in ["/api/a", "/api/b", "/fail", "/fail", "/other", "/api/c"]
            .iter()
            .enumerate()
        {
            statuses.push(get_on(&mut client, path, &[], &format!("#{i} {path}")).status);
        }
        assert_eq!(statuses, [200, 200, 503, 503, 404, 200]);
        // Every request answered by the proxy is sampled: wait until its spans were
        // exported so the span counters are in the scrape too.
        let text = wait_for_admin(|| {
            let text = proxy.metrics_text();
            let e = Exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let counted = e.sum("coremesh_requests_total", &[]) >= 6.0
                && e.value("coremesh_spans_exported_total", &[]) > Some(0.0);
            (counted.then(|| text.clone()), text)
        })
        .unwrap_or_else(|last| panic!("the scrape never showed the traffic:\n{last}"));

        match promtool_check(&text).unwrap_or_else(|e| panic!("{e}")) {
            PromtoolVerdict::Accepted { .. } => {}
            PromtoolVerdict::Rejected { output } => {
                panic!(
                    "promtool check metrics rejected the scrape:\n{output}\n--- scrape ---\n{text}"
                )
            }
            PromtoolVerdict::NotInstalled => {
                // Only with COREMESH_TEST_SKIP_PROMTOOL=1; otherwise promtool_check fails.
                eprintln!("skipped the promtool check: promtool is not installed");
            }
        }
    });
}

#[test]
fn traceparent_is_continued_and_spans_link_up() {
    for_each_driver(|driver| {
        let collector = OtlpCollector::start();
        let upstream = Upstream::start("echo", |req| Action::Respond(Response::ok(echo_body(req))));
        let proxy = start_with_admin(
            driver,
            traced(backend(&[upstream.addr()]), collector.endpoint_url()),
        );
        let mut client = Client::connect(proxy.addr()).expect("connect");

        // 1: the caller's sampled context and its tracestate.
        let incoming = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
        let r = get_on(
            &mut client,
            "/with-context",
            &[
                ("traceparent", &incoming),
                ("tracestate", "vendor=a,other=b"),
            ],
            "request with traceparent",
        );
        assert_eq!(r.status, 200);
        // 2: no context: a new root.
        let r = get_on(
            &mut client,
            "/without-context",
            &[],
            "request without context",
        );
        assert_eq!(r.status, 200);

        let with = received_with(&upstream, "/with-context");
        let (trace, parent, flags) =
            traceparent(&with.header("traceparent").expect("traceparent forwarded"));
        assert_eq!((trace.as_str(), flags.as_str()), (TRACE_ID, "01"));
        assert_ne!(
            parent, CALLER_SPAN,
            "the upstream's parent is the proxy's attempt span"
        );
        assert_eq!(
            with.header("tracestate").as_deref(),
            Some("vendor=a,other=b"),
            "tracestate passed on unchanged"
        );
        assert!(!with.has_header("b3") && !with.has_header("x-b3-traceid"));

        let without = received_with(&upstream, "/without-context");
        let (new_trace, new_parent, new_flags) =
            traceparent(&without.header("traceparent").expect("traceparent added"));
        assert_ne!(new_trace, TRACE_ID);
        assert_ne!(new_trace, "0".repeat(32));
        assert_eq!(new_flags, "01", "sampled at ratio 1.0");
        assert!(!without.has_header("tracestate"));

        let spans = collector
            .wait_for_spans(4, SPAN_WAIT)
            .unwrap_or_else(|got| panic!("4 spans expected, got {got:#?}"));
        assert_eq!(
            spans.len(),
            4,
            "one server and one attempt span per request: {spans:#?}"
        );

        let (server, attempts) = split_trace(&spans, TRACE_ID);
        assert_eq!(
            server.parent_span_id.as_deref(),
            Some(CALLER_SPAN),
            "the server span is the caller's child"
        );
        assert_server_span(server, 200);
        assert_eq!(server.status.as_ref().map(|s| s.0), Some(STATUS_OK));
        assert_eq!(attempts.len(), 1, "{attempts:#?}");
        assert_attempt_span(attempts[0], server, upstream.addr(), 1);
        assert_eq!(
            attempts[0].span_id, parent,
            "the upstream saw the attempt span as parent"
        );
        assert_eq!(attempts[0].int_attr("http.response.status_code"), Some(200));
        assert_eq!(attempts[0].str_attr("coremesh.retry_reason"), None);

        let (root, attempts) = split_trace(&spans, &new_trace);
        assert_eq!(root.parent_span_id, None, "a new root has no parent");
        assert_server_span(root, 200);
        assert_eq!(attempts.len(), 1);
        assert_attempt_span(attempts[0], root, upstream.addr(), 1);
        assert_eq!(attempts[0].span_id, new_parent);
        assert!(collector.errors().is_empty(), "{:?}", collector.errors());
    });
}

#[test]
fn unsampled_context_is_passed_on_and_not_exported() {
    for_each_driver(|driver| {
        let collector = OtlpCollector::start();
        let upstream = Upstream::fixed_named("ok", 200, b"ok");
        let proxy = start_with_admin(
            driver,
            traced(backend(&[upstream.addr()]), collector.endpoint_url()),
        );
        let mut client = Client::connect(proxy.addr()).expect("connect");
        let unsampled = format!("00-{TRACE_ID}-{CALLER_SPAN}-00");
        let r = get_on(
            &mut client,
            "/unsampled",
            &[("traceparent", &unsampled)],
            "unsampled",
        );
        assert_eq!(r.status, 200);
        let later = "0af7651916cd43dd8448eb211c80319c";
        let sampled = format!("00-{later}-b7ad6b7169203331-01");
        let r = get_on(
            &mut client,
            "/sampled",
            &[("traceparent", &sampled)],
            "sampled",
        );
        assert_eq!(r.status, 200);

        let (trace, _, flags) = traceparent(
            &received_with(&upstream, "/unsampled")
                .header("traceparent")
                .expect("traceparent forwarded"),
        );
        assert_eq!(
            (trace.as_str(), flags.as_str()),
            (TRACE_ID, "00"),
            "the caller's decision kept"
        );

        let spans = collector
            .wait_for_spans(2, SPAN_WAIT)
            .unwrap_or_else(|got| panic!("the sampled request's 2 spans, got {got:#?}"));
        assert_eq!(spans_of(&spans, later).len(), 2, "{spans:#?}");
        assert!(
            spans_of(&spans, TRACE_ID).is_empty(),
            "nothing exported for the unsampled request (its spans would have come first): {spans:#?}"
        );
    });
}

#[test]
fn retried_request_has_two_attempt_spans_under_one_server_span() {
    for_each_driver(|driver| {
        let collector = OtlpCollector::start();
        let upstream = Upstream::fixed_named("ok", 200, b"ok");
        // Round-robin starts with the first endpoint: a closed port, so the first attempt
        // fails to connect and the request is retried on the upstream.
        let dead = closed_port_addr();
        let proxy = start_with_admin(
            driver,
            traced(backend(&[dead, upstream.addr()]), collector.endpoint_url()),
        );
        let mut client = Client::connect(proxy.addr()).expect("connect");
        let incoming = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
        let r = get_on(
            &mut client,
            "/retried",
            &[("traceparent", &incoming)],
            "retried",
        );
        assert_eq!(r.status, 200, "{}", r.body_text());
        assert_eq!(upstream.requests_received(), 1);

        let spans = collector
            .wait_for_spans(3, SPAN_WAIT)
            .unwrap_or_else(|got| panic!("3 spans expected, got {got:#?}"));
        assert_eq!(spans.len(), 3, "{spans:#?}");
        let (server, attempts) = split_trace(&spans, TRACE_ID);
        assert_server_span(server, 200);
        assert_eq!(attempts.len(), 2, "{attempts:#?}");

        let first = attempts[0];
        assert_attempt_span(first, server, dead, 1);
        assert_eq!(
            first.int_attr("http.response.status_code"),
            None,
            "no answer: {first:#?}"
        );
        assert_eq!(
            first.str_attr("coremesh.retry_reason"),
            None,
            "the first attempt is no retry"
        );
        assert_eq!(
            first.status,
            Some((STATUS_ERROR, "connect-failed".to_string())),
            "{first:#?}"
        );

        let second = attempts[1];
        assert_attempt_span(second, server, upstream.addr(), 2);
        assert_eq!(second.int_attr("http.response.status_code"), Some(200));
        assert_eq!(
            second.str_attr("coremesh.retry_reason"),
            Some("connect-failed"),
            "{second:#?}"
        );
        assert_eq!(second.status.as_ref().map(|s| s.0), Some(STATUS_OK));
        assert!(
            second.start_unix_nano >= first.end_unix_nano,
            "attempts in order"
        );

        let (_, parent, _) = traceparent(
            &received_with(&upstream, "/retried")
                .header("traceparent")
                .expect("traceparent"),
        );
        assert_eq!(
            parent, second.span_id,
            "the upstream saw the second attempt's span"
        );
    });
}

#[test]
fn b3_context_is_forwarded_as_b3() {
    for_each_driver(|driver| {
        let collector = OtlpCollector::start();
        let upstream = Upstream::fixed_named("ok", 200, b"ok");
        let proxy = start_with_admin(
            driver,
            traced(backend(&[upstream.addr()]), collector.endpoint_url()),
        );
        let mut client = Client::connect(proxy.addr()).expect("connect");

        // B3 single with a 128-bit trace id.
        let single = format!("{TRACE_ID}-{CALLER_SPAN}-1");
        assert_eq!(
            get_on(&mut client, "/b3-single", &[("b3", &single)], "b3 single").status,
            200
        );
        // B3 single with a 64-bit trace id: written back with 16 digits.
        let short_trace = "a3ce929d0e0e4736";
        let short = format!("{short_trace}-{CALLER_SPAN}-1");
        assert_eq!(
            get_on(
                &mut client,
                "/b3-short",
                &[("b3", &short)],
                "b3 single, 64-bit"
            )
            .status,
            200
        );
        // B3 multi.
        let multi_trace = "0af7651916cd43dd8448eb211c80319c";
        assert_eq!(
            get_on(
                &mut client,
                "/b3-multi",
                &[
                    ("X-B3-TraceId", multi_trace),
                    ("X-B3-SpanId", CALLER_SPAN),
                    ("X-B3-Sampled", "1"),
                ],
                "b3 multi"
            )
            .status,
            200
        );

        let spans = collector
            .wait_for_spans(6, SPAN_WAIT)
            .unwrap_or_else(|got| panic!("6 spans expected, got {got:#?}"));
        assert_eq!(spans.len(), 6, "{spans:#?}");

        // Single: `b3: {trace}-{attempt span}-1-{server span}`, no other format added.
        let got = received_with(&upstream, "/b3-single");
        assert!(
            !got.has_header("traceparent"),
            "only the format that came in"
        );
        assert!(!got.has_header("x-b3-traceid"));
        let (server, attempts) = split_trace(&spans, TRACE_ID);
        assert_eq!(server.parent_span_id.as_deref(), Some(CALLER_SPAN));
        assert_eq!(attempts.len(), 1);
        assert_attempt_span(attempts[0], server, upstream.addr(), 1);
        assert_eq!(
            got.header("b3"),
            Some(format!(
                "{TRACE_ID}-{}-1-{}",
                attempts[0].span_id, server.span_id
            ))
        );

        let got = received_with(&upstream, "/b3-short");
        let padded = format!("{}{short_trace}", "0".repeat(16));
        let (server, attempts) = split_trace(&spans, &padded);
        assert_eq!(
            got.header("b3"),
            Some(format!(
                "{short_trace}-{}-1-{}",
                attempts[0].span_id, server.span_id
            )),
            "a 64-bit trace id is written back with 16 digits"
        );

        let got = received_with(&upstream, "/b3-multi");
        assert!(!got.has_header("b3") && !got.has_header("traceparent"));
        let (server, attempts) = split_trace(&spans, multi_trace);
        assert_eq!(server.parent_span_id.as_deref(), Some(CALLER_SPAN));
        assert_eq!(got.header("x-b3-traceid").as_deref(), Some(multi_trace));
        assert_eq!(
            got.header("x-b3-spanid").as_deref(),
            Some(attempts[0].span_id.as_str())
        );
        assert_eq!(
            got.header("x-b3-parentspanid").as_deref(),
            Some(server.span_id.as_str())
        );
        assert_eq!(got.header("x-b3-sampled").as_deref(), Some("1"));
    });
}

/// Span counters of a scrape: (exported, dropped by reason).
fn span_counts(proxy: &AdminProxy) -> (Option<f64>, Vec<(String, f64)>) {
    let e = Exposition::parse(&proxy.metrics_text()).expect("/metrics parses");
    let dropped = e
        .matching("coremesh_spans_dropped_total", &[])
        .iter()
        .map(|s| (s.labels.get("reason").cloned().unwrap_or_default(), s.value))
        .collect();
    (e.value("coremesh_spans_exported_total", &[]), dropped)
}

#[test]
fn collector_down_costs_spans_not_requests() {
    for_each_driver(|driver| {
        let upstream = Upstream::fixed_named("ok", 200, b"ok");
        let nowhere = format!("http://{}", closed_port_addr());
        let proxy = start_with_admin(driver, traced(backend(&[upstream.addr()]), nowhere));
        let mut client = Client::connect(proxy.addr()).expect("connect");
        for i in 0..20 {
            let r = get_on(&mut client, "/x", &[], &format!("request {i}"));
            assert_eq!(r.status, 200, "request {i} with the collector down");
        }
        assert_eq!(upstream.requests_received(), 20);

        // 20 requests x (server + attempt span), every post refused.
        let counts = wait_for_admin(|| {
            let counts = span_counts(&proxy);
            let failed = counts
                .1
                .iter()
                .find(|(r, _)| r == "export_failed")
                .map_or(0.0, |(_, n)| *n);
            (
                (failed >= 40.0).then(|| counts.clone()),
                format!("{counts:?}"),
            )
        })
        .unwrap_or_else(|last| panic!("40 spans never counted as export_failed: {last}"));
        assert_eq!(
            counts,
            (
                Some(0.0),
                vec![
                    ("queue_full".to_string(), 0.0),
                    ("exporter_gone".to_string(), 0.0),
                    ("export_failed".to_string(), 40.0),
                    ("rejected".to_string(), 0.0),
                ]
            )
        );
        // And still serving.
        let r = get_on(&mut client, "/x", &[], "after the failed exports");
        assert_eq!(r.status, 200);
    });
}

#[test]
fn exported_spans_are_counted() {
    for_each_driver(|driver| {
        let collector = OtlpCollector::start();
        let upstream = Upstream::fixed_named("ok", 200, b"ok");
        let proxy = start_with_admin(
            driver,
            traced(backend(&[upstream.addr()]), collector.endpoint_url()),
        );
        let mut client = Client::connect(proxy.addr()).expect("connect");
        for i in 0..5 {
            assert_eq!(get_on(&mut client, "/x", &[], &format!("{i}")).status, 200);
        }
        let spans = collector
            .wait_for_spans(10, SPAN_WAIT)
            .unwrap_or_else(|got| panic!("10 spans expected, got {}", got.len()));
        assert_eq!(spans.len(), 10);
        let counts = wait_for_admin(|| {
            let counts = span_counts(&proxy);
            (
                (counts.0 >= Some(10.0)).then(|| counts.clone()),
                format!("{counts:?}"),
            )
        })
        .unwrap_or_else(|last| panic!("10 exported spans never counted: {last}"));
        assert_eq!(counts.0, Some(10.0));
        assert!(counts.1.iter().all(|(_, n)| *n == 0.0), "{counts:?}");
    });
}

#[test]
fn a_busy_collector_gets_the_batch_again_after_retry_after_and_rejections_are_counted() {
    for_each_driver(|driver| {
        let collector = OtlpCollector::start_scripted(vec![
            Response::new(429).header("retry-after", "1"),
            Response::new(503).header("retry-after", "1"),
            partial_success_chunked(1, "one span refused"),
        ]);
        let upstream = Upstream::fixed_named("ok", 200, b"ok");
        let proxy = start_with_admin(
            driver,
            traced(backend(&[upstream.addr()]), collector.endpoint_url()),
        );
        let mut client = Client::connect(proxy.addr()).expect("connect");
        for i in 0..5 {
            assert_eq!(get_on(&mut client, "/x", &[], &format!("{i}")).status, 200);
        }
        // 5 requests x (server + attempt span), exported or rejected, none dropped.
        let counts = wait_for_admin(|| {
            let counts = span_counts(&proxy);
            let rejected = counts
                .1
                .iter()
                .find(|(r, _)| r == "rejected")
                .map_or(0.0, |(_, n)| *n);
            let settled = counts.0.unwrap_or(0.0) + rejected >= 10.0;
            (settled.then(|| counts.clone()), format!("{counts:?}"))
        })
        .unwrap_or_else(|last| panic!("10 spans never settled: {last}"));
        assert_eq!(
            counts,
            (
                Some(9.0),
                vec![
                    ("queue_full".to_string(), 0.0),
                    ("exporter_gone".to_string(), 0.0),
                    ("export_failed".to_string(), 0.0),
                    ("rejected".to_string(), 1.0),
                ]
            )
        );
        // The refused batch was posted three times, byte for byte; every span arrived, and
        // apart from those repeats, once.
        let posts = collector.posts();
        assert!(posts.len() >= 3, "{} posts", posts.len());
        assert_eq!(posts[1].body, posts[0].body);
        assert_eq!(posts[2].body, posts[0].body);
        let repeated = decode(&posts[0].body).expect("decodes").len();
        let spans = collector.spans();
        assert_eq!(spans.len(), 10 + 2 * repeated);
        let mut ids: Vec<&str> = spans[2 * repeated..]
            .iter()
            .map(|s| s.span_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 10);
    });
}
