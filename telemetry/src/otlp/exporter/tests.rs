//! The exporter against a test OTLP receiver on 127.0.0.1 (decoding each request with the
//! `opentelemetry-proto` types), against a closed port, and against a silent one.

use super::*;
use crate::metrics::RetryReason;
use crate::otlp::{ExportTracePartialSuccess, ExportTraceServiceRequest};
use crate::span::{SpanKind, SpanStatus};
use crate::span_queue::SpanQueue;
use crate::trace::{extract, Sampler, TraceContext};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::SystemTime;

/// What the receiver saw of one POST.
#[derive(Debug)]
struct Received {
    path: String,
    content_type: String,
    request: ExportTraceServiceRequest,
}

/// A test OTLP/HTTP receiver: answers `answers` requests with `response_body` (protobuf,
/// 200), sending each decoded request to the returned channel.
fn receiver(
    answers: usize,
    response_body: Vec<u8>,
) -> (
    CollectorUrl,
    mpsc::Receiver<Received>,
    thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = CollectorUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        for _ in 0..answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_len, path, content_type, length) = loop {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut req = httparse::Request::new(&mut headers);
                if let httparse::Status::Complete(len) = req.parse(&buf).unwrap() {
                    let header = |name: &str| {
                        req.headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case(name))
                            .map(|h| String::from_utf8(h.value.to_vec()).unwrap())
                            .unwrap_or_default()
                    };
                    assert_eq!(req.method, Some("POST"));
                    break (
                        len,
                        req.path.unwrap().to_string(),
                        header("content-type"),
                        header("content-length").parse::<usize>().unwrap(),
                    );
                }
            };
            while buf.len() < head_len + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "body cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            let request =
                ExportTraceServiceRequest::decode(&buf[head_len..head_len + length]).unwrap();
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                response_body.len()
            );
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(&response_body).unwrap();
            tx.send(Received {
                path,
                content_type,
                request,
            })
            .unwrap();
        }
    });
    (url, rx, handle)
}

fn spans_of(r: &Received) -> &[ProtoSpan] {
    &r.request.resource_spans[0].scope_spans[0].spans
}

fn attribute<'a>(span: &'a ProtoSpan, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn simple_span(n: u8) -> Span {
    let context = TraceContext {
        trace_id: [n; 16],
        span_id: [n; 8],
        parent_span_id: None,
        sampled: true,
        debug: false,
    };
    Span::start(
        &context,
        "request",
        SpanKind::Server,
        SystemTime::UNIX_EPOCH,
    )
}

fn config(url: CollectorUrl) -> ExporterConfig {
    ExporterConfig {
        timeout: Duration::from_secs(5),
        ..ExporterConfig::new(url)
    }
}

#[test]
fn exported_spans_keep_parent_links_and_attributes() {
    let (url, rx, server) = receiver(1, Vec::new());
    let queue = SpanQueue::new(16);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::new(config(url), queue.into_receiver());

    // A request arrives with a W3C parent; the proxy makes its span and two attempts.
    let headers: [(&str, &[u8]); 1] = [(
        "traceparent",
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let incoming = extract(headers);
    let mut rng = SmallRng::seed_from_u64(1);
    let server_ctx = incoming.server_context(&Sampler::new(0.0), &mut rng);
    let first = server_ctx.child(&mut rng);
    let second = server_ctx.child(&mut rng);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let (users, api): (Arc<str>, Arc<str>) = (Arc::from("users"), Arc::from("api"));

    let mut a1 = Span::start(&first, "attempt", SpanKind::Client, t0);
    a1.attributes.service = Some(users.clone());
    a1.attributes.endpoint = Some(Arc::from("10.0.0.1:8080"));
    a1.attributes.attempt = Some(1);
    a1.attributes.deadline = Some(Duration::from_millis(2000));
    a1.finish(
        t0 + Duration::from_millis(3),
        SpanStatus::Error("upstream-closed"),
    );
    let mut a2 = Span::start(
        &second,
        "attempt",
        SpanKind::Client,
        t0 + Duration::from_millis(3),
    );
    a2.attributes.service = Some(users.clone());
    a2.attributes.endpoint = Some(Arc::from("10.0.0.2:8080"));
    a2.attributes.attempt = Some(2);
    a2.attributes.retry_reason = Some(RetryReason::Reset);
    a2.attributes.http_status = Some(200);
    a2.finish(t0 + Duration::from_millis(9), SpanStatus::Ok);
    let mut request = Span::start(&server_ctx, "proxy", SpanKind::Server, t0);
    request.attributes.service = Some(users);
    request.attributes.route = Some(api);
    request.attributes.http_status = Some(200);
    request.finish(t0 + Duration::from_millis(10), SpanStatus::Ok);
    for span in [a1, a2, request] {
        assert!(sender.try_send(span));
    }

    match exporter.export_pending() {
        ExportOutcome::Exported {
            spans: 3,
            rejected: 0,
        } => {}
        other => panic!("{other:?}"),
    }
    let got = rx.recv().unwrap();
    server.join().unwrap();
    assert_eq!(got.path, "/v1/traces");
    assert_eq!(got.content_type, "application/x-protobuf");
    let spans = spans_of(&got);
    assert_eq!(spans.len(), 3);
    let (a1, a2, request) = (&spans[0], &spans[1], &spans[2]);

    let incoming_trace = hex(b"4bf92f3577b34da6a3ce929d0e0e4736");
    for span in spans {
        assert_eq!(span.trace_id, incoming_trace);
    }
    assert_eq!(request.parent_span_id, hex(b"00f067aa0ba902b7"));
    assert_eq!(request.span_id, server_ctx.span_id.to_vec());
    assert_eq!(a1.parent_span_id, request.span_id);
    assert_eq!(a2.parent_span_id, request.span_id);
    assert_ne!(a1.span_id, a2.span_id);

    assert_eq!(
        attribute(request, "coremesh.route"),
        Some(&Value::StringValue("api".into()))
    );
    assert_eq!(
        attribute(request, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(attribute(a1, "coremesh.attempt"), Some(&Value::IntValue(1)));
    assert_eq!(
        attribute(a1, "coremesh.deadline_ms"),
        Some(&Value::IntValue(2000))
    );
    assert_eq!(attribute(a1, "coremesh.retry_reason"), None);
    assert_eq!(a1.status.as_ref().unwrap().message, "upstream-closed");
    assert_eq!(attribute(a2, "coremesh.attempt"), Some(&Value::IntValue(2)));
    assert_eq!(
        attribute(a2, "coremesh.retry_reason"),
        Some(&Value::StringValue("reset".into()))
    );
    assert_eq!(
        attribute(a2, "coremesh.endpoint"),
        Some(&Value::StringValue("10.0.0.2:8080".into()))
    );
    assert_eq!(a2.start_time_unix_nano, 1_700_000_000_003_000_000);

    assert_eq!(stats.counts().exported, 3);
    assert_eq!(stats.counts().dropped(), 0);
}

fn hex(text: &[u8]) -> Vec<u8> {
    text.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn run_posts_full_batches_then_the_rest_when_the_queue_closes() {
    let (url, rx, server) = receiver(3, Vec::new());
    let queue = SpanQueue::new(16);
    let sender = queue.sender();
    let stats = queue.stats();
    for n in 1..=5 {
        assert!(sender.try_send(simple_span(n)));
    }
    drop(sender);
    let exporter = OtlpExporter::new(
        ExporterConfig {
            max_batch: 2,
            interval: Duration::from_secs(3600),
            ..config(url)
        },
        queue.into_receiver(),
    );
    thread::spawn(move || exporter.run()).join().unwrap();
    server.join().unwrap();
    let batches: Vec<Vec<u8>> = rx
        .try_iter()
        .map(|r| spans_of(&r).iter().map(|s| s.trace_id[0]).collect())
        .collect();
    assert_eq!(batches, [vec![1, 2], vec![3, 4], vec![5]]);
    assert_eq!(stats.counts().exported, 5);
}

#[test]
fn with_the_collector_down_spans_are_dropped_and_counted_and_senders_never_wait() {
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let queue = SpanQueue::new(4);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::new(
        config(CollectorUrl::parse(&format!("http://{addr}")).unwrap()),
        queue.into_receiver(),
    );
    // The core side: 4 fit, 2 are dropped at once instead of waiting.
    let queued: Vec<bool> = (1..=6).map(|n| sender.try_send(simple_span(n))).collect();
    assert_eq!(queued, [true, true, true, true, false, false]);

    match exporter.export_pending() {
        ExportOutcome::Failed {
            spans: 4,
            error: ExportError::Connect { .. },
        } => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(exporter.export_pending(), ExportOutcome::Idle));
    // The queue has room again; the exporter goes on.
    assert!(sender.try_send(simple_span(7)));
    assert!(matches!(
        exporter.export_pending(),
        ExportOutcome::Failed { spans: 1, .. }
    ));
    let counts = stats.counts();
    assert_eq!(counts.exported, 0);
    assert_eq!(counts.dropped_queue_full, 2);
    assert_eq!(counts.dropped_export_failed, 5);
    assert_eq!(counts.dropped(), 7);
}

#[test]
fn a_silent_collector_costs_one_timeout_per_batch() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = CollectorUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let queue = SpanQueue::new(4);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::new(
        ExporterConfig {
            timeout: Duration::from_millis(200),
            ..config(url)
        },
        queue.into_receiver(),
    );
    assert!(sender.try_send(simple_span(1)));
    match exporter.export_pending() {
        ExportOutcome::Failed {
            spans: 1,
            error: ExportError::Timeout(_),
        } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(stats.counts().dropped_export_failed, 1);
    drop(listener);
}

#[test]
fn rejected_spans_of_a_partial_success_are_counted() {
    let answer = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 1,
            error_message: "one span too old".into(),
        }),
    }
    .encode_to_vec();
    let (url, rx, server) = receiver(1, answer);
    let queue = SpanQueue::new(4);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::new(config(url), queue.into_receiver());
    for n in 1..=3 {
        assert!(sender.try_send(simple_span(n)));
    }
    match exporter.export_pending() {
        ExportOutcome::Exported {
            spans: 3,
            rejected: 1,
        } => {}
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
    assert_eq!(spans_of(&rx.recv().unwrap()).len(), 3);
    let counts = stats.counts();
    assert_eq!((counts.exported, counts.dropped_rejected), (2, 1));
}

/// The exporter's clocks, moved by the test: `sleep` advances them.
#[derive(Clone)]
struct ManualClock(Arc<std::sync::Mutex<(Instant, SystemTime)>>);

impl ManualClock {
    fn new() -> ManualClock {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        ManualClock(Arc::new(std::sync::Mutex::new((Instant::now(), wall))))
    }

    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap();
        now.0 += by;
        now.1 += by;
    }
}

impl ExportClock for ManualClock {
    fn now(&self) -> Instant {
        self.0.lock().unwrap().0
    }
    fn wall(&self) -> SystemTime {
        self.0.lock().unwrap().1
    }
    fn sleep(&self, duration: Duration) {
        self.advance(duration);
    }
}

/// A test OTLP/HTTP receiver answering the n-th post with `answers[n]` (raw bytes, head
/// and body), sending each decoded request to the returned channel.
fn scripted(
    answers: Vec<Vec<u8>>,
) -> (
    CollectorUrl,
    mpsc::Receiver<ExportTraceServiceRequest>,
    thread::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = CollectorUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        for answer in answers {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            let (head_len, length) = loop {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "client closed early");
                buf.extend_from_slice(&chunk[..n]);
                let mut headers = [httparse::EMPTY_HEADER; 16];
                let mut req = httparse::Request::new(&mut headers);
                if let httparse::Status::Complete(len) = req.parse(&buf).unwrap() {
                    let length: usize = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                        .unwrap();
                    break (len, length);
                }
            };
            while buf.len() < head_len + length {
                let n = stream.read(&mut chunk).unwrap();
                assert!(n > 0, "body cut short");
                buf.extend_from_slice(&chunk[..n]);
            }
            let request =
                ExportTraceServiceRequest::decode(&buf[head_len..head_len + length]).unwrap();
            stream.write_all(&answer).unwrap();
            tx.send(request).unwrap();
        }
    });
    (url, rx, handle)
}

fn status(line: &str, headers: &str) -> Vec<u8> {
    format!("HTTP/1.1 {line}\r\n{headers}Content-Length: 0\r\n\r\n").into_bytes()
}

fn ok() -> Vec<u8> {
    status("200 OK", "")
}

fn trace_ids(request: &ExportTraceServiceRequest) -> Vec<u8> {
    request.resource_spans[0].scope_spans[0]
        .spans
        .iter()
        .map(|s| s.trace_id[0])
        .collect()
}

#[test]
fn a_429_with_retry_after_holds_the_batch_until_then_and_posts_it_again() {
    let (url, rx, server) = scripted(vec![
        status("429 Too Many Requests", "Retry-After: 7\r\n"),
        ok(),
        ok(),
    ]);
    let clock = ManualClock::new();
    let queue = SpanQueue::new(8);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter =
        OtlpExporter::with_clock(config(url), queue.into_receiver(), Box::new(clock.clone()));
    for n in 1..=3 {
        assert!(sender.try_send(simple_span(n)));
    }
    let start = clock.now();
    match exporter.export_pending() {
        ExportOutcome::Deferred {
            spans: 3,
            retry: 1,
            retry_in,
            error: ExportError::Status { status: 429, .. },
        } => assert_eq!(retry_in, Duration::from_secs(7)),
        other => panic!("{other:?}"),
    }
    assert_eq!(trace_ids(&rx.recv().unwrap()), [1, 2, 3]);
    // Spans arriving meanwhile wait in the queue; nothing is posted before the time.
    assert!(sender.try_send(simple_span(4)));
    clock.advance(Duration::from_secs(6));
    for _ in 0..3 {
        match exporter.export_pending() {
            ExportOutcome::Waiting { spans: 3, until } => {
                assert_eq!(until, start + Duration::from_secs(7))
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(rx.try_recv().is_err());
    clock.advance(Duration::from_secs(1));
    assert!(matches!(
        exporter.export_pending(),
        ExportOutcome::Exported {
            spans: 3,
            rejected: 0
        }
    ));
    assert_eq!(trace_ids(&rx.recv().unwrap()), [1, 2, 3]);
    assert!(matches!(
        exporter.export_pending(),
        ExportOutcome::Exported {
            spans: 1,
            rejected: 0
        }
    ));
    assert_eq!(trace_ids(&rx.recv().unwrap()), [4]);
    server.join().unwrap();
    let counts = stats.counts();
    assert_eq!((counts.exported, counts.dropped()), (4, 0));
}

#[test]
fn retries_are_bounded_in_number_and_in_wait() {
    // An hour asked (capped at 10 s), none said (1 s doubled: 2 s), a date 5 s ahead (5 s),
    // then the batch is given up.
    let (url, rx, server) = scripted(vec![
        status("503 Service Unavailable", "Retry-After: 3600\r\n"),
        status("503 Service Unavailable", ""),
        status(
            "502 Bad Gateway",
            "Retry-After: Tue, 14 Nov 2023 22:13:37 GMT\r\n",
        ),
        status("504 Gateway Timeout", "Retry-After: 1\r\n"),
    ]);
    let clock = ManualClock::new();
    let queue = SpanQueue::new(8);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::with_clock(
        ExporterConfig {
            max_retries: 3,
            max_retry_delay: Duration::from_secs(10),
            ..config(url)
        },
        queue.into_receiver(),
        Box::new(clock.clone()),
    );
    assert!(sender.try_send(simple_span(1)));
    assert!(sender.try_send(simple_span(2)));
    let mut waits = Vec::new();
    loop {
        match exporter.export_pending() {
            ExportOutcome::Deferred {
                spans: 2,
                retry,
                retry_in,
                ..
            } => {
                waits.push((retry, retry_in.as_secs()));
                // The clock is at 1 700 000 000 s + the waits so far (22:13:20 + 12 s)
                // when the third answer's date (22:13:37) is read.
                clock.advance(retry_in);
            }
            ExportOutcome::Failed {
                spans: 2,
                error: ExportError::Status { status: 504, .. },
            } => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(waits, [(1, 10), (2, 2), (3, 5)]);
    server.join().unwrap();
    assert_eq!(rx.try_iter().count(), 4);
    let counts = stats.counts();
    assert_eq!((counts.exported, counts.dropped_export_failed), (0, 2));
    assert!(matches!(exporter.export_pending(), ExportOutcome::Idle));
}

#[test]
fn other_refusals_drop_the_batch_at_once() {
    let (url, rx, server) = scripted(vec![status("400 Bad Request", "Retry-After: 1\r\n")]);
    let queue = SpanQueue::new(8);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::with_clock(
        config(url),
        queue.into_receiver(),
        Box::new(ManualClock::new()),
    );
    assert!(sender.try_send(simple_span(1)));
    assert!(matches!(
        exporter.export_pending(),
        ExportOutcome::Failed {
            spans: 1,
            error: ExportError::Status { status: 400, .. }
        }
    ));
    assert!(matches!(exporter.export_pending(), ExportOutcome::Idle));
    server.join().unwrap();
    assert_eq!(rx.try_iter().count(), 1);
    assert_eq!(stats.counts().dropped_export_failed, 1);
}

#[test]
fn a_chunked_partial_success_counts_its_rejected_spans() {
    let answer = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "two spans too old".into(),
        }),
    }
    .encode_to_vec();
    let (first, second) = answer.split_at(answer.len() / 2);
    let mut chunked = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\n\
                        Transfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for part in [first, second] {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (url, rx, server) = scripted(vec![chunked]);
    let queue = SpanQueue::new(8);
    let sender = queue.sender();
    let stats = queue.stats();
    let mut exporter = OtlpExporter::new(config(url), queue.into_receiver());
    for n in 1..=3 {
        assert!(sender.try_send(simple_span(n)));
    }
    assert!(matches!(
        exporter.export_pending(),
        ExportOutcome::Exported {
            spans: 3,
            rejected: 2
        }
    ));
    server.join().unwrap();
    assert_eq!(trace_ids(&rx.recv().unwrap()), [1, 2, 3]);
    let counts = stats.counts();
    assert_eq!((counts.exported, counts.dropped_rejected), (1, 2));
}

#[test]
fn at_shutdown_a_held_batch_is_posted_once_without_waiting() {
    let (url, rx, server) = scripted(vec![
        status("503 Service Unavailable", "Retry-After: 30\r\n"),
        status("503 Service Unavailable", "Retry-After: 30\r\n"),
    ]);
    let clock = ManualClock::new();
    let queue = SpanQueue::new(8);
    let sender = queue.sender();
    let stats = queue.stats();
    let exporter = OtlpExporter::with_clock(
        ExporterConfig {
            max_batch: 1,
            ..config(url)
        },
        queue.into_receiver(),
        Box::new(clock.clone()),
    );
    assert!(sender.try_send(simple_span(1)));
    drop(sender);
    // The first post is deferred 30 s; the queue is closed, so the batch is posted once
    // more at once and then dropped, and `run` returns.
    thread::spawn(move || exporter.run()).join().unwrap();
    server.join().unwrap();
    assert_eq!(rx.try_iter().count(), 2);
    assert_eq!(stats.counts().dropped_export_failed, 1);
}
