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
