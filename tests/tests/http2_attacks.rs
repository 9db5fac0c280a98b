//! HTTP/2 attacks known to have hit proxies, sent as raw frames through the proxy on both
//! drivers: rapid reset (CVE-2023-44487), CONTINUATION flood, SETTINGS and PING floods, a
//! header list over `max_header_list_bytes`, streams that never read (window exhaustion),
//! streams over `max_concurrent_streams`, a frame over `max_frame_bytes`, invalid
//! pseudo-headers and connection-specific fields, DATA on a closed stream.
//!
//! For each: the offender gets GOAWAY or RST_STREAM with an error code the attack calls
//! for, `coremesh_http2_errors_total{reason="<that code's name>"}` moves, the proxy's
//! memory (this process's RSS: the proxy runs in it) grows by less than [`MEMORY_BOUND`],
//! and a well-behaved h2 client on another connection is served during and after it.
//!
//! The attack scripts themselves are checked against nghttpd without the proxy
//! ([`direct_attack_scripts_against_nghttpd`]).

use coremesh_tests::admin::AdminProxy;
use coremesh_tests::h2attack::{attack_while_serving, AttackOutcome};
use coremesh_tests::h2mesh::{error_code_name, http2_errors, metrics, wait_metrics, MeshConfig};
use coremesh_tests::h2peers::{big_body, curl, small_body, FileServer, Nghttpd, Version};
use coremesh_tests::h2tools::rss_bytes;
use coremesh_tests::proxy::for_each_driver;
use coremesh_tests::Driver;
use std::net::SocketAddr;
use std::sync::Mutex;

/// Most the proxy's process may grow during one attack. Each flood sends tens of MB (the
/// never-read streams ask for 20 x 4 MiB): a proxy that buffered what it is sent, or what
/// it cannot deliver, would pass it.
const MEMORY_BOUND: u64 = 64 << 20;
/// `[http2] max_header_list_bytes` of the proxy under attack, and the size of the
/// oversized header of the header-list attack (twice as large).
const HEADER_LIST_LIMIT: usize = 16 * 1024;
/// The response body of `/big` for the never-read attack.
const NEVER_READ_BODY: usize = 4 << 20;
/// Streams the never-read attacker opens.
const NEVER_READ_STREAMS: &str = "20";
/// The service's request timeout under attack: stalled streams end after it.
const REQUEST_TIMEOUT_MS: u64 = 2_000;

const PROTOCOL_ERROR: u64 = 0x1;
const STREAM_CLOSED: u64 = 0x5;
const FRAME_SIZE_ERROR: u64 = 0x6;
const REFUSED_STREAM: u64 = 0x7;
const CANCEL: u64 = 0x8;
const COMPRESSION_ERROR: u64 = 0x9;
const ENHANCE_YOUR_CALM: u64 = 0xb;
const INTERNAL_ERROR: u64 = 0x2;

/// The upstream behind the proxy under attack, in its own process (so that what it holds
/// is not counted in this process's memory): `/small` and `/big` ([`NEVER_READ_BODY`] bytes).
fn upstream() -> FileServer {
    FileServer::start(&[
        ("small", &small_body()),
        ("big", &vec![b'z'; NEVER_READ_BODY]),
    ])
}

/// A proxy to `upstream` with a small header-list limit, a short request timeout, and
/// `http2` settings.
fn proxy_under_attack(driver: Driver, upstream: &FileServer, http2: &[(&str, u64)]) -> AdminProxy {
    let timeout = format!("request_timeout_ms = {REQUEST_TIMEOUT_MS}");
    let mut config = MeshConfig::new().http2("max_header_list_bytes", HEADER_LIST_LIMIT);
    for (key, value) in http2 {
        config = config.http2(key, value);
    }
    config
        .service(
            "backend",
            &[upstream.addr()],
            &[&timeout, "protocol = \"http1\""],
        )
        .route("backend", &[])
        .start(driver)
}

/// A well-behaved h2c GET of `/small` on its own connection, answered in full.
fn served(addr: SocketAddr, when: &str) {
    let seen = curl(Version::H2c, addr, "/small", &[], None);
    assert_eq!(seen.status, 200, "the well-behaved client {when}");
    assert!(
        seen.body == small_body(),
        "the well-behaved client {when}: body"
    );
}

/// Whether `outcome` holds a GOAWAY or a RST_STREAM with one of `codes`; the first such code.
fn answered_with(outcome: &AttackOutcome, codes: &[u64]) -> Option<u64> {
    outcome.codes().into_iter().find(|c| codes.contains(c))
}

/// Run `attack` (with `extra` arguments) against a fresh proxy on `driver`, a well-behaved
/// client served before, during and after it. Then: the offender got one of `codes`
/// (GOAWAY or RST_STREAM), the counter of that code moved (when `counted`), and memory
/// grew by less than [`MEMORY_BOUND`]. The outcome, for more checks.
fn survive(
    driver: Driver,
    attack: &str,
    extra: &[&str],
    codes: &[u64],
    counted: bool,
) -> (AttackOutcome, FileServer) {
    survive_with(driver, &[], attack, extra, codes, counted)
}

/// [`survive`] with `http2` settings on the proxy.
fn survive_with(
    driver: Driver,
    http2: &[(&str, u64)],
    attack: &str,
    extra: &[&str],
    codes: &[u64],
    counted: bool,
) -> (AttackOutcome, FileServer) {
    // One attack at a time in this process, so that the memory measured is this one's.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let upstream = upstream();
    let proxy = proxy_under_attack(driver, &upstream, http2);
    let addr = proxy.addr();
    served(addr, "before the attack");
    let before = rss_bytes();
    let outcome = attack_while_serving(addr, attack, extra, || served(addr, "during the attack"));
    eprintln!("{attack}: {outcome:?}");
    served(addr, "after the attack");
    let after = rss_bytes();
    assert!(
        after.saturating_sub(before) < MEMORY_BOUND,
        "{attack}: RSS grew from {before} to {after} bytes (bound {MEMORY_BOUND})"
    );
    if codes.is_empty() {
        // Refused by an HTTP status on the stream (checked by the caller), not by a frame.
        drop(proxy);
        return (outcome, upstream);
    }
    let names: Vec<_> = codes.iter().map(|c| error_code_name(*c)).collect();
    let code = answered_with(&outcome, codes).unwrap_or_else(|| {
        panic!("{attack}: the offender got none of {names:?} as GOAWAY or RST_STREAM: {outcome:?}")
    });
    if counted {
        let reason = error_code_name(code);
        wait_metrics(
            &proxy,
            "coremesh_http2_errors_total",
            &format!("{attack}: coremesh_http2_errors_total{{reason=\"{reason}\"}} moved"),
            |e| http2_errors(e, reason) >= 1.0,
        );
    }
    drop(proxy);
    (outcome, upstream)
}

#[test]
fn rapid_reset_gets_goaway_enhance_your_calm() {
    for_each_driver(|driver| {
        let (outcome, upstream) = survive(
            driver,
            "rapid-reset",
            &["--count", "20000"],
            &[ENHANCE_YOUR_CALM],
            true,
        );
        assert_eq!(outcome.goaway, Some(ENHANCE_YOUR_CALM), "{outcome:?}");
        // Three well-behaved requests, and far fewer than the 20,000 reset streams.
        let forwarded = upstream.paths().len();
        assert!(
            forwarded < 10_000,
            "reset streams must not all become upstream requests: {forwarded}"
        );
    });
}

#[test]
fn continuation_flood_gets_goaway() {
    for_each_driver(|driver| {
        let (outcome, _) = survive(
            driver,
            "continuation-flood",
            &["--count", "100000"],
            &[ENHANCE_YOUR_CALM, PROTOCOL_ERROR, COMPRESSION_ERROR],
            true,
        );
        assert!(outcome.goaway.is_some(), "a connection error: {outcome:?}");
    });
}

#[test]
fn settings_flood_gets_goaway_enhance_your_calm() {
    for_each_driver(|driver| {
        let (outcome, _) = survive(
            driver,
            "settings-flood",
            &["--count", "100000"],
            &[ENHANCE_YOUR_CALM],
            true,
        );
        assert_eq!(outcome.goaway, Some(ENHANCE_YOUR_CALM), "{outcome:?}");
    });
}

#[test]
fn ping_flood_gets_goaway_enhance_your_calm() {
    for_each_driver(|driver| {
        let (outcome, _) = survive(
            driver,
            "ping-flood",
            &["--count", "100000"],
            &[ENHANCE_YOUR_CALM],
            true,
        );
        assert_eq!(outcome.goaway, Some(ENHANCE_YOUR_CALM), "{outcome:?}");
    });
}

#[test]
fn header_list_over_the_limit_is_refused_and_not_forwarded() {
    for_each_driver(|driver| {
        let size = (2 * HEADER_LIST_LIMIT).to_string();
        let (outcome, upstream) = survive(
            driver,
            "header-list",
            &["--count", &size, "--path", "/oversized"],
            // Answered on its stream with 431 (RFC 9113 §10.5.1), as `h2` does: no reset
            // frame, and nothing for the error counter.
            &[],
            false,
        );
        assert_eq!(
            outcome.statuses,
            [(431, 1)].into_iter().collect(),
            "the oversized request is answered 431 and nothing else: {outcome:?}"
        );
        assert!(
            upstream.paths().iter().all(|p| p != "/oversized"),
            "the oversized request did not reach the upstream"
        );
    });
}

#[test]
fn streams_that_never_read_are_ended_without_buffering_their_bodies() {
    for_each_driver(|driver| {
        // The stalled streams end by the request timeout (or sooner): any reset code or a
        // GOAWAY will do; what matters is that memory stays bounded and others are served.
        let (outcome, _) = survive(
            driver,
            "never-read",
            &["--count", NEVER_READ_STREAMS, "--path", "/big"],
            &[
                CANCEL,
                INTERNAL_ERROR,
                ENHANCE_YOUR_CALM,
                PROTOCOL_ERROR,
                REFUSED_STREAM,
                0,
            ],
            false,
        );
        let streams: u64 = NEVER_READ_STREAMS.parse().expect("a number");
        // A stream whose body stalled was reset; one that got no head in time was
        // answered with the proxy's error (a whole answer, no body to stall on).
        let reset = outcome.resets.values().sum::<u64>();
        let refused: u64 = outcome
            .statuses
            .iter()
            .filter(|(status, _)| **status != 200)
            .map(|(_, n)| n)
            .sum();
        assert!(
            outcome.goaway.is_some() || reset + refused == streams,
            "every stalled stream ended: {outcome:?}"
        );
    });
}

/// `[http2] max_concurrent_streams` of the stream-limit test, and the streams its client
/// opens at once (twice as many).
const STREAM_LIMIT: u64 = 8;

#[test]
fn streams_over_max_concurrent_streams_are_refused() {
    for_each_driver(|driver| {
        let streams = (2 * STREAM_LIMIT).to_string();
        let (outcome, _) = survive_with(
            driver,
            &[("max_concurrent_streams", STREAM_LIMIT)],
            "never-read",
            &["--count", &streams, "--path", "/big"],
            &[REFUSED_STREAM, PROTOCOL_ERROR],
            true,
        );
        let refused = outcome.resets.get(&REFUSED_STREAM).copied().unwrap_or(0)
            + outcome.resets.get(&PROTOCOL_ERROR).copied().unwrap_or(0);
        assert!(
            outcome.goaway == Some(PROTOCOL_ERROR) || refused >= STREAM_LIMIT,
            "the {STREAM_LIMIT} streams over the limit were refused: {outcome:?}"
        );
    });
}

/// A frame larger than the proxy's SETTINGS_MAX_FRAME_SIZE (its default, 16,384 bytes).
const OVERSIZED_FRAME: &str = "20000";

#[test]
fn a_frame_over_max_frame_bytes_gets_goaway_frame_size_error() {
    for_each_driver(|driver| {
        let (outcome, _) = survive(
            driver,
            "oversized-frame",
            &["--count", OVERSIZED_FRAME, "--path", "/small"],
            &[FRAME_SIZE_ERROR],
            true,
        );
        assert_eq!(outcome.goaway, Some(FRAME_SIZE_ERROR), "{outcome:?}");
    });
}

/// The malformed requests of RFC 9113 §8.2 and §8.3: each is a stream error PROTOCOL_ERROR.
const MALFORMED: [&str; 5] = [
    "pseudo-unknown",
    "pseudo-missing",
    "pseudo-after",
    "pseudo-connection",
    "pseudo-uppercase",
];

#[test]
fn malformed_requests_get_protocol_error_and_are_not_forwarded() {
    for_each_driver(|driver| {
        for attack in MALFORMED {
            let (outcome, upstream) = survive(
                driver,
                attack,
                &["--path", "/malformed"],
                &[PROTOCOL_ERROR],
                true,
            );
            assert!(
                outcome.statuses.is_empty(),
                "{attack}: no answer: {outcome:?}"
            );
            assert!(
                upstream.paths().iter().all(|p| p != "/malformed"),
                "{attack}: the malformed request did not reach the upstream"
            );
        }
    });
}

#[test]
fn data_on_a_closed_stream_gets_stream_closed() {
    for_each_driver(|driver| {
        let (outcome, _) = survive(driver, "data-closed", &[], &[STREAM_CLOSED], true);
        assert_eq!(
            outcome.first_stream_ended,
            Some(true),
            "the first request was answered: {outcome:?}"
        );
    });
}

/// The per-attack counter starts at zero: a proxy that has seen no attack counts nothing.
#[test]
fn no_attack_no_http2_errors() {
    for_each_driver(|driver| {
        let upstream = upstream();
        let proxy = proxy_under_attack(driver, &upstream, &[]);
        served(proxy.addr(), "with no attack");
        let m = metrics(&proxy);
        assert_eq!(
            m.sum("coremesh_http2_errors_total", &[]),
            0.0,
            "no HTTP/2 error without an attack"
        );
        assert!(
            m.types.contains_key("coremesh_http2_errors_total"),
            "the family is exposed (with no samples, or zeros) from the start"
        );
    });
}

/// Self-check of the attack scripts and the well-behaved client, straight to nghttpd (whose
/// answers to these attacks are known: it resets malformed requests with PROTOCOL_ERROR,
/// ends the connection on DATA to a closed stream with STREAM_CLOSED, closes it on a
/// CONTINUATION flood and on a header list beyond its limit, and holds never-read streams).
#[test]
fn direct_attack_scripts_against_nghttpd() {
    let server = Nghttpd::start(&[]);
    let addr = server.addr();
    let run = |attack: &str, extra: &[&str]| {
        let outcome = attack_while_serving(addr, attack, extra, || served(addr, attack));
        eprintln!("{attack}: {outcome:?}");
        outcome
    };
    for attack in MALFORMED {
        let o = run(attack, &[]);
        assert_eq!(o.resets.get(&PROTOCOL_ERROR), Some(&1), "{attack}: {o:?}");
    }
    let o = run("data-closed", &["--path", "/small"]);
    assert_eq!(
        (o.first_stream_ended, o.goaway),
        (Some(true), Some(STREAM_CLOSED)),
        "{o:?}"
    );
    let o = run("continuation-flood", &["--count", "100000"]);
    assert!(o.closed, "{o:?}");
    let o = run("header-list", &["--count", "100000"]);
    assert!(o.closed, "{o:?}");
    let o = run(
        "never-read",
        &["--count", "5", "--path", "/big", "--wait", "2"],
    );
    assert_eq!(o.statuses.get(&200), Some(&5), "{o:?}");
    assert!(o.resets.is_empty() && !o.closed, "{o:?}");
    for (attack, frames) in [
        ("rapid-reset", 2000),
        ("settings-flood", 1000),
        ("ping-flood", 1000),
    ] {
        let o = run(attack, &["--count", "1000", "--wait", "2"]);
        assert_eq!(o.sent_frames, frames, "{attack}: every frame sent: {o:?}");
    }
    let o = run("oversized-frame", &["--count", OVERSIZED_FRAME]);
    assert_eq!(o.goaway, Some(FRAME_SIZE_ERROR), "{o:?}");
    // Over the stream limit: nghttpd ends the connection with PROTOCOL_ERROR.
    let limited = Nghttpd::start(&["-m", "4"]);
    let o = attack_while_serving(
        limited.addr(),
        "never-read",
        &["--count", "8", "--path", "/big"],
        || {},
    );
    assert_eq!(o.goaway, Some(PROTOCOL_ERROR), "{o:?}");
    // The big body is what never-read asked for: served whole to a reader.
    let seen = curl(Version::H2c, addr, "/big", &[], None);
    assert!(seen.body == big_body());
}

/// Self-check of the out-of-process upstream: it serves its files and logs their paths.
#[test]
fn direct_file_server_upstream() {
    let upstream = upstream();
    let seen = curl(Version::H1, upstream.addr(), "/small", &[], None);
    assert_eq!(seen.status, 200);
    assert!(seen.body == small_body());
    let seen = curl(Version::H1, upstream.addr(), "/big", &[], None);
    assert_eq!(seen.body.len(), NEVER_READ_BODY);
    assert!(
        coremesh_tests::traffic::wait_until(
            std::time::Duration::from_secs(30),
            std::time::Duration::from_millis(10),
            || upstream.paths() == ["/small", "/big"]
        ),
        "{:?}",
        upstream.paths()
    );
}
