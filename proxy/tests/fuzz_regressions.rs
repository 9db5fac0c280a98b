//! Inputs the fuzz targets (fuzz/fuzz_targets/) found or confirmed, kept as regression tests of
//! the head parser and rewriter: each one would change what the next hop reads.

use coremesh::http1::codec::{
    parse_request, parse_response, Framing, HeaderScratch, Parsed, RequestHead, ResponseHead,
};
use coremesh::http1::rewrite::{request_head, response_head, RequestAdditions};

fn request(raw: &[u8]) -> RequestHead {
    let mut head = RequestHead::default();
    let parsed = parse_request(raw, 64 * 1024, &mut HeaderScratch::new(32), &mut head);
    assert!(matches!(parsed, Ok(Parsed::Complete)), "{parsed:?}");
    head
}

fn response(raw: &[u8]) -> Result<ResponseHead, u16> {
    let mut head = ResponseHead::default();
    match parse_response(raw, 64 * 1024, &mut HeaderScratch::new(32), &mut head) {
        Ok(Parsed::Complete) => Ok(head),
        Ok(Parsed::Partial) => panic!("partial"),
        Err(e) => Err(e.status),
    }
}

fn upstream_head(raw: &[u8], forwarded_for: Option<&str>) -> String {
    let head = request(raw);
    let add = RequestAdditions {
        forwarded_for: forwarded_for.map(|ip| ip.parse().unwrap()),
        strip_trace: false,
        via: false,
        extra: b"",
        client_id: coremesh::http1::rewrite::ClientIdHeader::Keep,
    };
    let mut out = Vec::new();
    request_head(raw, &head, &add, &mut out);
    String::from_utf8(out).unwrap()
}

fn client_head(raw: &[u8], dechunk: bool) -> String {
    let head = response(raw).unwrap();
    let mut out = Vec::new();
    response_head(raw, &head, dechunk, false, false, dechunk, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn connection_cannot_make_framing_or_host_hop_by_hop() {
    // Dropping Content-Length would leave the body to be read as the next request.
    let raw = b"POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nConnection: content-length, host, x-a\r\nX-A: 1\r\n\r\nhello";
    assert_eq!(request(raw).framing, Some(Framing::Length(5)));
    assert_eq!(
        upstream_head(raw, None),
        "POST /u HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"
    );
    let raw = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: Transfer-Encoding\r\n\r\n";
    assert_eq!(
        upstream_head(raw, None),
        "POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: content-length\r\n\r\nok";
    assert_eq!(
        client_head(raw, false),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    );
}

#[test]
fn a_status_code_below_100_is_refused() {
    // 050 would pass for an interim response with no body.
    assert_eq!(
        response(b"HTTP/1.1 050 X\r\nContent-Length: 5\r\n\r\nhello").err(),
        Some(502)
    );
    assert_eq!(response(b"HTTP/1.1 000 X\r\n\r\n").err(), Some(502));
    assert_eq!(
        response(b"HTTP/1.1 100 Continue\r\n\r\n").unwrap().status,
        100
    );
}

#[test]
fn every_forwarded_for_line_is_combined_in_order() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.2, 10.0.0.3\r\n\r\n";
    assert_eq!(
        upstream_head(raw, Some("10.0.0.9")),
        "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.9\r\n\r\n"
    );
}

#[test]
fn content_length_beside_transfer_encoding_is_not_forwarded() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        client_head(raw, false),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    // Turned into a close-delimited body for an HTTP/1.0 client: neither framing is sent.
    assert_eq!(
        client_head(raw, true),
        "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    );
}
