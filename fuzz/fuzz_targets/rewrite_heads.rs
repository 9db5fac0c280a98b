//! Head rewriter: parse → rewrite → parse again must succeed and agree.
//!
//! The input is parsed as a request and as a response. A request that parses is rewritten as
//! the proxy sends it upstream (`request_head`, then `append_deadline`), with nothing added and
//! with everything added; a response that parses is rewritten as the proxy sends it to the
//! client (`response_head`) in each way the forwarder calls it. The rewritten head must parse
//! to one complete head of exactly its length, with the same method, target (in origin-form
//! when it came in absolute-form, its authority then the Host) and status, the proxy's own
//! version (HTTP/1.1, except an HTTP/1.0 request without a Host), the same end-to-end headers
//! in the same order followed by what the proxy adds, one Content-Length with the parsed
//! value (none beside Transfer-Encoding), and the same body framing.
#![no_main]

use coremesh::http1::codec::{
    is_hop_by_hop, listed_in_connection, parse_request, parse_response, split_absolute_form,
    Framing, HeaderRef, HeaderScratch, Parsed, RequestHead, ResponseHead,
};
use coremesh::http1::rewrite::{
    append_deadline, request_head, response_head, RequestAdditions, DEADLINE_HEADER,
};
use coremesh_fuzz::{assert_request_in_bounds, assert_response_in_bounds};
use coremesh_telemetry::trace::is_trace_header;
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 200;
/// The most lines a rewrite adds to a head: a request gets `Connection`, `Via`,
/// `X-Forwarded-For`, the deadline and `traceparent`; a response `Connection` and `Via`. A
/// head parsed at the limit may leave the rewriter above it, as with any proxy that adds its
/// own lines, so the head is parsed again with room for them.
const ADDED_LINES: usize = 5;
const TRACE_LINE: &[u8] =
    b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n";

type Line = (Vec<u8>, Vec<u8>);

fn line(buf: &[u8], h: &HeaderRef) -> Line {
    (buf[h.name.clone()].to_vec(), buf[h.value.clone()].to_vec())
}

fn named(name: &[u8], value: &[u8]) -> Line {
    (name.to_vec(), value.to_vec())
}

fn is(name: &[u8], other: &[u8]) -> bool {
    name.eq_ignore_ascii_case(other)
}

/// Whether a header of this message is end-to-end, i.e. must reach the next hop.
fn end_to_end(buf: &[u8], tokens: &[std::ops::Range<usize>], name: &[u8]) -> bool {
    !is_hop_by_hop(name) && !listed_in_connection(buf, tokens, name)
}

/// The elements of every `X-Forwarded-For` line, in order.
fn forwarded_for(lines: &[Line]) -> Vec<Vec<u8>> {
    lines
        .iter()
        .filter(|(n, _)| is(n, b"x-forwarded-for"))
        .flat_map(|(_, v)| v.split(|&b| b == b',').map(|s| s.trim_ascii().to_vec()))
        .filter(|s| !s.is_empty())
        .collect()
}

/// Content-Length as the proxy sends it on: the first line only, its value as received when
/// that is plain digits, else the value the parser settled on; none when `value` is `None`.
fn one_content_length(lines: Vec<Line>, value: Option<u64>) -> Vec<Line> {
    let mut seen = false;
    lines
        .into_iter()
        .filter_map(|(n, v)| {
            if !is(&n, b"content-length") {
                return Some((n, v));
            }
            let value = value.filter(|_| !seen)?;
            seen = true;
            if !v.is_empty() && v.iter().all(u8::is_ascii_digit) {
                Some((n, v))
            } else {
                Some((n, value.to_string().into_bytes()))
            }
        })
        .collect()
}

fn reparse_request(out: &[u8]) -> RequestHead {
    let mut head = RequestHead::default();
    let mut scratch = HeaderScratch::new(MAX_HEADERS + ADDED_LINES);
    match parse_request(out, MAX_HEAD + 4096, &mut scratch, &mut head) {
        Ok(Parsed::Complete) => {}
        other => panic!(
            "rewritten request does not parse ({other:?}): {:?}",
            String::from_utf8_lossy(out)
        ),
    }
    assert_request_in_bounds(&head, out.len());
    assert_eq!(
        head.len,
        out.len(),
        "rewritten request head ends early: {:?}",
        String::from_utf8_lossy(out)
    );
    head
}

fn check_request(buf: &[u8], head: &RequestHead, add: &RequestAdditions<'_>, deadline: bool) {
    let mut first = Vec::new();
    request_head(buf, head, add, &mut first);
    let mut out = Vec::new();
    if deadline {
        append_deadline(&first, 1234, TRACE_LINE, &mut out);
    } else {
        out = first;
    }
    let again = reparse_request(&out);
    let shown = String::from_utf8_lossy(&out);

    assert_eq!(
        &out[again.method.clone()],
        &buf[head.method.clone()],
        "method changed: {shown:?}"
    );
    let target = &buf[head.target.clone()];
    let absolute = split_absolute_form(target);
    let (want_target, want_host) = match &absolute {
        Some((host, rest)) => {
            let rest = &target[*rest..];
            let path = if rest.starts_with(b"/") {
                rest.to_vec()
            } else {
                [b"/".as_slice(), rest].concat()
            };
            (path, Some(target[host.clone()].to_vec()))
        }
        None => (target.to_vec(), head.host.clone().map(|r| buf[r].to_vec())),
    };
    assert_eq!(
        out[again.target.clone()].to_vec(),
        want_target,
        "target changed: {shown:?}"
    );
    let want_version = u8::from(head.minor_version == 1 || want_host.is_some());
    assert_eq!(
        again.minor_version, want_version,
        "not the proxy's version: {shown:?}"
    );
    assert_eq!(again.framing, head.framing, "framing changed: {shown:?}");
    assert_eq!(
        again.host.clone().map(|r| out[r].to_vec()),
        want_host,
        "Host changed: {shown:?}"
    );
    assert_eq!(again.upgrade, head.upgrade, "upgrade changed: {shown:?}");
    assert!(!again.expect_continue, "Expect forwarded: {shown:?}");
    if head.minor_version == 0 {
        assert!(
            again.close,
            "HTTP/1.0 request forwarded without close: {shown:?}"
        );
    }

    // The end-to-end headers in order, then what the proxy adds.
    let combine_xff = add.forwarded_for.is_some();
    let mut expected: Vec<Line> = Vec::new();
    if let Some((host, _)) = &absolute {
        expected.push(named(b"Host", &target[host.clone()]));
    }
    let mut original_xff = Vec::new();
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        if absolute.is_some() && is(name, b"host") {
            continue;
        }
        let kept = if is(name, b"upgrade") {
            head.upgrade
        } else {
            end_to_end(buf, &head.connection_tokens, name)
                && !is(name, b"expect")
                && !is(name, DEADLINE_HEADER)
                && !(add.strip_trace && std::str::from_utf8(name).is_ok_and(is_trace_header))
        };
        if !kept {
            continue;
        }
        if combine_xff && is(name, b"x-forwarded-for") {
            original_xff.push(line(buf, h));
        } else {
            expected.push(line(buf, h));
        }
    }
    let mut expected = one_content_length(expected, head.content_length);
    if head.upgrade {
        expected.push(named(b"Connection", b"upgrade"));
    } else if head.minor_version == 0 {
        expected.push(named(b"Connection", b"close"));
    }
    if add.via {
        expected.push(named(b"Via", b"1.1 coremesh"));
    }
    if deadline {
        expected.push(named(DEADLINE_HEADER, b"1234"));
        expected.push(named(b"traceparent", &TRACE_LINE[13..TRACE_LINE.len() - 2]));
    }
    let actual: Vec<Line> = again.headers.iter().map(|h| line(&out, h)).collect();
    let (actual_xff, actual_rest): (Vec<Line>, Vec<Line>) = actual
        .into_iter()
        .partition(|(n, _)| combine_xff && is(n, b"x-forwarded-for"));
    assert_eq!(actual_rest, expected, "headers changed: {shown:?}");
    if let Some(ip) = add.forwarded_for {
        let mut want = forwarded_for(&original_xff);
        want.push(ip.to_string().into_bytes());
        assert_eq!(
            forwarded_for(&actual_xff),
            want,
            "X-Forwarded-For changed: {shown:?}"
        );
    }
}

fn check_response(
    buf: &[u8],
    head: &ResponseHead,
    close: bool,
    upgrade: bool,
    via: bool,
    dechunk: bool,
) {
    let mut out = Vec::new();
    response_head(buf, head, close, upgrade, via, dechunk, &mut out);
    let shown = String::from_utf8_lossy(&out);
    let mut again = ResponseHead::default();
    let mut scratch = HeaderScratch::new(MAX_HEADERS + ADDED_LINES);
    match parse_response(&out, MAX_HEAD + 4096, &mut scratch, &mut again) {
        Ok(Parsed::Complete) => {}
        other => panic!("rewritten response does not parse ({other:?}): {shown:?}"),
    }
    assert_response_in_bounds(&again, out.len());
    assert_eq!(
        again.len,
        out.len(),
        "rewritten response head ends early: {shown:?}"
    );
    assert_eq!(again.status, head.status, "status changed: {shown:?}");
    assert_eq!(again.minor_version, 1, "not the proxy's version: {shown:?}");
    assert_eq!(
        &out[again.status_line.clone()][8..],
        &buf[head.status_line.clone()][8..],
        "status code or reason changed: {shown:?}"
    );
    let framing = head.framing(false);
    let want = if dechunk {
        Framing::UntilClose
    } else {
        framing
    };
    assert_eq!(again.framing(false), want, "framing changed: {shown:?}");
    assert_eq!(again.framing(true), Framing::None);
    if close || dechunk {
        assert!(again.close, "close not kept: {shown:?}");
    }
    let names: Vec<&[u8]> = again.headers.iter().map(|h| &out[h.name.clone()]).collect();
    assert!(
        !(names.iter().any(|n| is(n, b"transfer-encoding"))
            && names.iter().any(|n| is(n, b"content-length"))),
        "both Transfer-Encoding and Content-Length sent: {shown:?}"
    );

    let mut expected: Vec<Line> = Vec::new();
    for h in &head.headers {
        let name = &buf[h.name.clone()];
        let kept = if is(name, b"upgrade") {
            upgrade
        } else {
            end_to_end(buf, &head.connection_tokens, name)
                && !(dechunk && is(name, b"transfer-encoding"))
        };
        if kept {
            expected.push(line(buf, h));
        }
    }
    // Content-Length beside Transfer-Encoding must not be forwarded (RFC 9112 §6.3), and
    // goes on as one value otherwise (RFC 9110 §8.6).
    let mut expected = one_content_length(
        expected,
        head.content_length.filter(|_| !head.transfer_encoding),
    );
    if upgrade {
        expected.push(named(b"Connection", b"upgrade"));
    } else if close {
        expected.push(named(b"Connection", b"close"));
    }
    if via {
        expected.push(named(b"Via", b"1.1 coremesh"));
    }
    let actual: Vec<Line> = again.headers.iter().map(|h| line(&out, h)).collect();
    assert_eq!(actual, expected, "headers changed: {shown:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut scratch = HeaderScratch::new(MAX_HEADERS);
    let mut request = RequestHead::default();
    if let Ok(Parsed::Complete) = parse_request(data, MAX_HEAD, &mut scratch, &mut request) {
        let plain = RequestAdditions {
            forwarded_for: None,
            strip_trace: false,
            via: false,
            extra: b"",
            client_id: coremesh::http1::rewrite::ClientIdHeader::Keep,
        };
        check_request(data, &request, &plain, false);
        let ip: IpAddr = [10, 0, 0, 7].into();
        let all = RequestAdditions {
            forwarded_for: Some(ip),
            strip_trace: true,
            via: true,
            extra: b"",
            client_id: coremesh::http1::rewrite::ClientIdHeader::Keep,
        };
        check_request(data, &request, &all, true);
    }
    let mut response = ResponseHead::default();
    if let Ok(Parsed::Complete) = parse_response(data, MAX_HEAD, &mut scratch, &mut response) {
        check_response(data, &response, false, false, false, false);
        check_response(data, &response, true, false, true, false);
        if response.framing(false) == Framing::Chunked {
            check_response(data, &response, true, false, true, true);
        }
        if response.status == 101 {
            check_response(data, &response, false, true, true, false);
        }
    }
});
