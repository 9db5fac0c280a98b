//! Differential test against Debian's nginx: each case of `tests/data/differential/` (raw
//! client requests, raw upstream responses, expectations) goes once through nginx (a reverse
//! proxy with `proxy_http_version 1.1` and a keep-alive upstream pool, see
//! `coremesh_tests::nginx`) and once through coremesh on each I/O driver, each time to a
//! fresh scripted upstream. What the upstream received and what the client received are
//! rendered after normalisation (rules in `differential/render.rs` and the corpus README)
//! and compared:
//!
//! - `expect: agree`: coremesh's renderings equal nginx's (or, where the case allows it,
//!   coremesh answered one of the `coremesh-may-answer` statuses and forwarded nothing odd);
//! - `expect: diverge`: a documented divergence; coremesh's renderings equal the case's
//!   `coremesh upstream` / `coremesh client` sections (its specific, correct behaviour; one
//!   of them where a case gives alternatives). nginx's are compared with the `nginx ...`
//!   sections where the case records them, and a change is reported, not failed.
//!
//! Cases named `issue13_*` check fixes being made on main (the case's `tracks:` line says
//! which): `cargo test -p coremesh-tests --test differential issue13_`.
//!
//! nginx missing is a failure unless `COREMESH_SKIP_NGINX` is set. `DIFFERENTIAL_SHOW=1`
//! prints every rendering (run with `--nocapture`).

#[path = "differential/client.rs"]
mod client;
#[path = "differential/corpus.rs"]
mod corpus;
#[path = "differential/message.rs"]
mod message;
#[path = "differential/render.rs"]
mod render;
#[path = "differential/scripted.rs"]
mod scripted;

use coremesh_tests::nginx::{require_nginx, Nginx};
use coremesh_tests::proxy::{driver_name, for_each_driver, one_service, start_proxy};
use coremesh_tests::Driver;
use corpus::{Case, Expect};
use scripted::ScriptedUpstream;
use std::path::Path;

/// What one proxy did with a case, normalised.
#[derive(Debug, Clone)]
struct Outcome {
    upstream: String,
    client: String,
    /// Status codes of the final responses the client could read.
    statuses: Vec<u16>,
}

fn final_statuses(capture: &client::ClientCapture) -> Vec<u16> {
    let mut statuses = Vec::new();
    let mut at = 0;
    let mut request = 0;
    loop {
        let head = capture.head_requests.get(request).copied().unwrap_or(false);
        match message::read_response(&capture.bytes[at..], head, true) {
            message::Read::Complete(m, used) if used > 0 => {
                at += used;
                if !m.is_interim() {
                    request += 1;
                    statuses.push(m.status);
                }
            }
            _ => return statuses,
        }
    }
}

fn outcome(case: &Case, upstream: scripted::Capture, client: client::ClientCapture) -> Outcome {
    if std::env::var_os("DIFFERENTIAL_SHOW_RAW").is_some() {
        eprintln!(
            "raw client bytes of {}: {}",
            case.name,
            render::escape(&client.bytes)
        );
        for (i, c) in upstream.connections.iter().enumerate() {
            eprintln!(
                "raw upstream connection {i} of {}: {}",
                case.name,
                render::escape(c)
            );
        }
    }
    Outcome {
        upstream: render::upstream(&upstream, case.strict),
        client: render::client(&client, case.own_response, case.strict),
        statuses: final_statuses(&client),
    }
}

fn through_nginx(binary: &Path, case: &Case) -> Outcome {
    let upstream = ScriptedUpstream::start(case.responses.clone());
    let mut nginx = Nginx::start(binary, upstream.addr())
        .unwrap_or_else(|e| panic!("case {}: starting nginx: {e}", case.name));
    let client = client::run(nginx.addr(), &case.requests);
    let log = nginx.error_log();
    nginx.stop();
    let capture = upstream.finish();
    if std::env::var_os("DIFFERENTIAL_SHOW").is_some() {
        eprintln!("--- nginx error log for {}:\n{log}", case.name);
    }
    outcome(case, capture, client)
}

fn through_coremesh(driver: Driver, case: &Case) -> Outcome {
    let upstream = ScriptedUpstream::start(case.responses.clone());
    let proxy = start_proxy(driver, one_service(&[upstream.addr()]));
    let client = client::run(proxy.addr(), &case.requests);
    proxy.shutdown();
    outcome(case, upstream.finish(), client)
}

fn show(who: &str, o: &Outcome) -> String {
    format!(
        "{who} upstream received:\n{}{who} client received:\n{}",
        o.upstream, o.client
    )
}

/// Lines printed under `DIFFERENTIAL_SHOW`, marked so they can be picked out of the log.
fn shown(text: &str) -> String {
    text.lines().map(|l| format!("| {l}\n")).collect()
}

/// Run the case `name` through nginx and coremesh (both drivers) and check the expectation.
fn check(name: &str) {
    let Some(binary) = require_nginx() else {
        return;
    };
    let case = corpus::load(name);
    let nginx = through_nginx(&binary, &case);
    let showing = std::env::var_os("DIFFERENTIAL_SHOW").is_some();
    if showing {
        eprintln!(
            "{}",
            shown(&format!("=== case {name}\n{}", show("nginx", &nginx)))
        );
    }
    let tracks = case
        .tracks
        .as_deref()
        .map(|t| format!(" [tracks: {t}]"))
        .unwrap_or_default();
    for_each_driver(|driver| {
        let coremesh = through_coremesh(driver, &case);
        let who = format!("coremesh ({})", driver_name(driver));
        if showing {
            eprintln!("{}", shown(&show(&who, &coremesh)));
        }
        let context = format!(
            "case {name}{tracks} ({})\n{}\n{}",
            case.path.display(),
            show("nginx", &nginx),
            show(&who, &coremesh)
        );
        match case.expect {
            Expect::Agree => {
                let allowed_refusal = coremesh.statuses.len() == 1
                    && case.coremesh_may_answer.contains(&coremesh.statuses[0])
                    && !coremesh.client.contains("not a response")
                    && !coremesh.client.contains("incomplete:");
                if allowed_refusal {
                    // A refusal forwards what nginx forwarded, or (a request refused) nothing.
                    assert!(
                        coremesh.upstream == nginx.upstream || coremesh.upstream == "(nothing)\n",
                        "upstream side differs: {context}"
                    );
                    return;
                }
                assert_eq!(
                    coremesh.upstream, nginx.upstream,
                    "upstream side differs: {context}"
                );
                assert_eq!(
                    coremesh.client, nginx.client,
                    "client side differs: {context}"
                );
            }
            Expect::Diverge => {
                for (label, expected, got) in [
                    (
                        "coremesh upstream",
                        &case.coremesh_upstream,
                        &coremesh.upstream,
                    ),
                    ("coremesh client", &case.coremesh_client, &coremesh.client),
                ] {
                    if expected.len() == 1 {
                        assert_eq!(
                            got, &expected[0],
                            "`{label}` differs from the case: {context}"
                        );
                    } else if !expected.is_empty() {
                        assert!(
                            expected.contains(got),
                            "`{label}` is none of the case's {} alternatives: {context}",
                            expected.len()
                        );
                    }
                }
                // nginx's side is the record of what the reference did when the case was
                // written (nginx 1.22); another nginx release may differ without that
                // saying anything about coremesh, so a change is reported, not failed.
                for (label, expected, got) in [
                    ("nginx upstream", &case.nginx_upstream, &nginx.upstream),
                    ("nginx client", &case.nginx_client, &nginx.client),
                ] {
                    if expected.as_ref().is_some_and(|e| e != got) {
                        eprintln!("note: case {name}: `{label}` differs from the record:\n{got}");
                    }
                }
            }
        }
    });
}

/// One test per corpus file, so each case can be run (and fail) on its own.
macro_rules! cases {
    ($($test:ident => $file:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check($file);
            }
        )*
        /// Every case with a test.
        const LISTED: &[&str] = &[$($file),*];
    };
}

cases! {
    absolute_form_target => "absolute-form-target",
    chunked_upper_hex_leading_zeros => "chunked-upper-hex-leading-zeros",
    connection_listed_fields => "connection-listed-fields",
    duplicate_headers => "duplicate-headers",
    empty_header_values => "empty-header-values",
    http10_client_chunked_response => "http10-client-chunked-response",
    http10_client_keep_alive => "http10-client-keep-alive",
    http10_forwarded_version => "http10-forwarded-version",
    http10_upstream_response => "http10-upstream-response",
    http10_upstream_transfer_encoding => "http10-upstream-transfer-encoding",
    http11_expect_continue => "http11-expect-continue",
    interim_103_and_100 => "interim-103-and-100",
    issue13_http10_expect_continue => "issue13-http10-expect-continue",
    issue13_http10_without_header_lines => "issue13-http10-without-header-lines",
    issue13_invalid_request_line_bad_version_digits => "issue13-invalid-request-line-bad-version-digits",
    issue13_invalid_request_line_control_in_target => "issue13-invalid-request-line-control-in-target",
    issue13_invalid_request_line_double_space => "issue13-invalid-request-line-double-space",
    issue13_invalid_request_line_empty_method => "issue13-invalid-request-line-empty-method",
    issue13_invalid_request_line_lower_case_version => "issue13-invalid-request-line-lower-case-version",
    issue13_invalid_request_line_no_version => "issue13-invalid-request-line-no-version",
    issue13_invalid_request_line_space_in_target => "issue13-invalid-request-line-space-in-target",
    issue13_invalid_request_line_tab_separator => "issue13-invalid-request-line-tab-separator",
    issue13_invalid_request_line_trailing_word => "issue13-invalid-request-line-trailing-word",
    issue13_upstream_bare_lf => "issue13-upstream-bare-lf",
    long_header_lines => "long-header-lines",
    no_body_204_with_body => "no-body-204-with-body",
    no_body_304_with_body => "no-body-304-with-body",
    no_body_head_with_body => "no-body-head-with-body",
    non_ascii_values => "non-ascii-values",
    pipelined_requests => "pipelined-requests",
    request_bare_lf => "request-bare-lf",
    request_chunk_bare_lf => "request-chunk-bare-lf",
    request_chunk_data_without_crlf => "request-chunk-data-without-crlf",
    request_chunk_size_overflow => "request-chunk-size-overflow",
    request_chunk_size_with_space => "request-chunk-size-with-space",
    request_chunked_extensions_trailers => "request-chunked-extensions-trailers",
    request_chunked_twice => "request-chunked-twice",
    request_content_length_leading_zeros => "request-content-length-leading-zeros",
    request_content_length_list => "request-content-length-list",
    request_content_length_plus => "request-content-length-plus",
    request_duplicate_host => "request-duplicate-host",
    request_get_with_body => "request-get-with-body",
    request_http10_transfer_encoding => "request-http10-transfer-encoding",
    request_identity_then_chunked => "request-identity-then-chunked",
    request_missing_host => "request-missing-host",
    request_nul_in_value => "request-nul-in-value",
    request_obs_fold => "request-obs-fold",
    request_space_before_colon => "request-space-before-colon",
    request_te_and_cl => "request-te-and-cl",
    request_transfer_coding_case => "request-transfer-coding-case",
    request_version_12 => "request-version-12",
    request_version_20 => "request-version-20",
    request_version_30 => "request-version-30",
    response_chunk_bare_lf => "response-chunk-bare-lf",
    response_chunk_size_with_space => "response-chunk-size-with-space",
    response_chunked_extensions_trailers => "response-chunked-extensions-trailers",
    response_close_delimited => "response-close-delimited",
    response_content_length_list => "response-content-length-list",
    response_differing_content_lengths => "response-differing-content-lengths",
    response_invalid_chunk_size => "response-invalid-chunk-size",
    response_invalid_content_length => "response-invalid-content-length",
    response_no_reason_phrase => "response-no-reason-phrase",
    response_nul_in_value => "response-nul-in-value",
    response_obs_fold => "response-obs-fold",
    response_space_before_colon => "response-space-before-colon",
    response_status_out_of_range => "response-status-out-of-range",
    response_te_and_cl => "response-te-and-cl",
}

#[test]
fn every_corpus_file_has_a_test() {
    let mut listed: Vec<String> = LISTED.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        listed,
        corpus::case_names(),
        "each tests/data/differential/*.case needs a line in cases! (and each line a file)"
    );
}
