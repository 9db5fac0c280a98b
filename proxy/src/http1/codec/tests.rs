//! Unit tests of request / response head parsing and framing decisions.

use super::*;

fn req(raw: &[u8]) -> Result<(Parsed, RequestHead), HeadError> {
    let mut scratch = HeaderScratch::new(64);
    let mut head = RequestHead::default();
    parse_request(raw, 64 * 1024, &mut scratch, &mut head).map(|p| (p, head))
}

fn status_of(raw: &[u8]) -> u16 {
    match req(raw) {
        Err(e) => e.status,
        Ok(_) => 0,
    }
}

#[test]
fn simple_get_is_complete_with_offsets() {
    let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nX-A: 1\r\n\r\nrest";
    let (p, h) = req(raw).unwrap();
    assert!(matches!(p, Parsed::Complete));
    assert_eq!(h.len, raw.len() - 4);
    assert_eq!(&raw[h.method.clone()], b"GET");
    assert_eq!(&raw[h.target.clone()], b"/a?b=1");
    assert_eq!(&raw[h.host.clone().unwrap()], b"x.test");
    assert_eq!(&raw[h.headers[1].line.clone()], b"X-A: 1");
    assert_eq!(h.framing, Some(Framing::None));
    assert!(!h.close);
}

#[test]
fn partial_then_too_large() {
    assert!(matches!(
        req(b"GET / HTTP/1.1\r\nHo").unwrap().0,
        Parsed::Partial
    ));
    let mut scratch = HeaderScratch::new(64);
    let mut head = RequestHead::default();
    let big = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 200]].concat();
    let e = parse_request(&big, 100, &mut scratch, &mut head).unwrap_err();
    assert_eq!(e.status, 431);
}

#[test]
fn framing_errors_are_400() {
    assert_eq!(status_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
        400
    );
    assert_eq!(
        status_of(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n"),
        400
    );
    assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400);
    assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 400);
}

#[test]
fn same_content_length_twice_is_fine() {
    let (_, h) = req(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n").unwrap();
    assert_eq!(h.framing, Some(Framing::Length(3)));
}

#[test]
fn connection_tokens_and_http10() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\n\r\n";
    let (_, h) = req(raw).unwrap();
    assert!(h.close);
    assert!(listed_in_connection(raw, &h.connection_tokens, b"x-secret"));
    let (_, h) = req(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert!(h.close);
    assert_eq!(h.minor_version, 0);
}

#[test]
fn upgrade_needs_both_headers() {
    let (_, h) =
        req(b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
            .unwrap();
    assert!(h.upgrade);
    let (_, h) = req(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n").unwrap();
    assert!(!h.upgrade);
}

#[test]
fn response_framing() {
    let mut scratch = HeaderScratch::new(64);
    let mut head = ResponseHead::default();
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(head.framing(false), Framing::Length(5));
    assert_eq!(head.framing(true), Framing::None);
    assert_eq!(&raw[head.status_line.clone()], b"HTTP/1.1 200 OK");
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(head.framing(false), Framing::Chunked);
    let raw = b"HTTP/1.1 204 No Content\r\n\r\n";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(head.framing(false), Framing::None);
    let raw = b"HTTP/1.0 200 OK\r\n\r\n";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(head.framing(false), Framing::UntilClose);
    assert!(head.close);
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n";
    assert_eq!(
        parse_response(raw, 1024, &mut scratch, &mut head)
            .unwrap_err()
            .status,
        502
    );
}

/// A small xorshift generator: the mutation test replays the same inputs every run.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to HTTP framing, favoured by the mutations.
const INTERESTING: &[u8] = b"\r\n :;,\t0123456789abcdefABCDEF-+xX\x00\x7f\xff";

fn mutate(rng: &mut XorShift, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            1 => v.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < v.len() => {
                v.remove(at);
            }
            3 => v.truncate(at),
            _ => {
                let i = at.min(v.len().saturating_sub(1));
                if let Some(b) = v.get_mut(i) {
                    *b ^= 1 << rng.below(8);
                }
            }
        }
    }
    v
}

#[test]
fn mutated_heads_never_panic_and_offsets_stay_in_bounds() {
    let requests: [&[u8]; 4] = [
        b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: keep-alive, X-A\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET http://h/p HTTP/1.0\r\n\r\n",
    ];
    let responses: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close, X-B\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"HTTP/1.0 304 Not Modified\r\n\r\n",
    ];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut scratch = HeaderScratch::new(16);
    let mut req_head = RequestHead::default();
    let mut resp_head = ResponseHead::default();
    let mut complete = 0;
    for round in 0..20_000 {
        let input = mutate(&mut rng, requests[round % requests.len()]);
        if let Ok(Parsed::Complete) = parse_request(&input, 1024, &mut scratch, &mut req_head) {
            complete += 1;
            assert!(req_head.len <= input.len());
            for h in &req_head.headers {
                assert!(h.line.end <= req_head.len && h.name.end <= h.value.end.max(h.name.end));
                let _ = (
                    &input[h.name.clone()],
                    &input[h.value.clone()],
                    &input[h.line.clone()],
                );
            }
            let _ = (
                &input[req_head.method.clone()],
                &input[req_head.target.clone()],
            );
            let mut out = Vec::new();
            let add = crate::http1::rewrite::RequestAdditions {
                forwarded_for: None,
                strip_trace: true,
                via: true,
                extra: b"",
                client_id: crate::http1::rewrite::ClientIdHeader::Strip,
            };
            crate::http1::rewrite::request_head(&input, &req_head, &add, &mut out);
        }
        let input = mutate(&mut rng, responses[round % responses.len()]);
        if let Ok(Parsed::Complete) = parse_response(&input, 1024, &mut scratch, &mut resp_head) {
            let _ = resp_head.framing(round % 2 == 0);
            let mut out = Vec::new();
            crate::http1::rewrite::response_head(
                &input, &resp_head, true, false, true, true, &mut out,
            );
        }
        let body = mutate(&mut rng, b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n");
        let mut scanner = crate::http1::body::ChunkedScanner::new();
        let mut sink = Vec::new();
        if let Ok(scan) = scanner.decode(&body, &mut sink) {
            assert!(scan.consumed <= body.len());
        }
    }
    // The mutations keep many inputs valid, so the checks above ran on real heads.
    assert!(complete > 2_000, "only {complete} complete heads");
}

#[test]
fn status_line_of_a_bare_lf_head() {
    let mut scratch = HeaderScratch::new(64);
    let mut head = ResponseHead::default();
    let raw = b"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(&raw[head.status_line.clone()], b"HTTP/1.1 200 OK");
    assert_eq!(head.content_length, Some(2));
    let raw = b"HTTP/1.1 204 No Content\n\n";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(&raw[head.status_line.clone()], b"HTTP/1.1 204 No Content");
    // A status line with no reason phrase.
    let raw = b"HTTP/1.1 200 \r\n\r\n";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(&raw[head.status_line.clone()], b"HTTP/1.1 200 ");
}

#[test]
fn malformed_versions_are_400_and_unsupported_ones_505() {
    for raw in [
        b"GET / HTTP/2.0\r\nHost: a\r\n\r\n".as_slice(),
        b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
        b"GET / HTTP/3.0\r\n\r\n",
    ] {
        assert_eq!(status_of(raw), 505, "{}", String::from_utf8_lossy(raw));
    }
    for raw in [
        b"GET / http/1.1\r\nHost: a\r\n\r\n".as_slice(),
        b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n",
        b"GET / HTTP/11\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.\r\nHost: a\r\n\r\n",
        b"GET / FOO/1.1\r\nHost: a\r\n\r\n",
        b"GET /\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"G\x01T / HTTP/1.1\r\nHost: a\r\n\r\n",
        b" GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    ] {
        assert_eq!(status_of(raw), 400, "{}", String::from_utf8_lossy(raw));
    }
}

#[test]
fn expect_continue_is_ignored_in_http_1_0() {
    let (_, h) =
        req(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").unwrap();
    assert!(!h.expect_continue);
    let (_, h) =
        req(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
            .unwrap();
    assert!(h.expect_continue);
}

#[test]
fn absolute_form_targets_split_into_host_and_the_rest() {
    let split =
        |t: &'static [u8]| split_absolute_form(t).map(|(host, rest)| (&t[host], &t[rest..]));
    assert_eq!(
        split(b"http://a.example:8080/p?q=1"),
        Some((b"a.example:8080".as_slice(), b"/p?q=1".as_slice()))
    );
    assert_eq!(
        split(b"HTTPS://a.example"),
        Some((b"a.example".as_slice(), b"".as_slice()))
    );
    assert_eq!(
        split(b"http://a.example?q"),
        Some((b"a.example".as_slice(), b"?q".as_slice()))
    );
    assert_eq!(
        split(b"http://user:pw@a.example/x"),
        Some((b"a.example".as_slice(), b"/x".as_slice()))
    );
    assert_eq!(split(b"/plain"), None);
    assert_eq!(split(b"ftp://a.example/"), None);
    assert_eq!(split(b"a.example:443"), None);
    assert_eq!(
        status_of(b"GET http:///p HTTP/1.1\r\nHost: a\r\n\r\n"),
        400,
        "an absolute-form target needs a host"
    );
}

#[test]
fn transfer_encoding_in_an_http_1_0_response_ends_the_connection() {
    let mut scratch = HeaderScratch::new(64);
    let mut head = ResponseHead::default();
    let raw = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n";
    parse_response(raw, 1024, &mut scratch, &mut head).unwrap();
    assert_eq!(head.framing(false), Framing::Chunked);
    assert!(
        head.close,
        "the connection is not reused after faulty framing"
    );
}
