//! Request head parser: no panic; a complete head lies within the input and every range within
//! the head; the result depends only on the head's bytes and not on a head parsed before; the
//! size limit is exact.
#![no_main]

use coremesh::http1::codec::{parse_request, HeaderScratch, Parsed, RequestHead};
use coremesh_fuzz::{assert_head_stable, assert_request_in_bounds};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

fn parse(buf: &[u8], max_head: usize, head: &mut RequestHead) -> Result<Parsed, u16> {
    let mut scratch = HeaderScratch::new(MAX_HEADERS);
    parse_request(buf, max_head, &mut scratch, head).map_err(|e| {
        assert!(
            matches!(e.status, 400 | 417 | 431 | 501 | 505),
            "unexpected status {e:?}"
        );
        assert!(!e.reason.is_empty());
        e.status
    })
}

fuzz_target!(|data: &[u8]| {
    let mut head = RequestHead::default();
    let first = parse(data, MAX_HEAD, &mut head);
    let Ok(Parsed::Complete) = first else {
        if let Ok(Parsed::Partial) = first {
            assert!(data.len() < MAX_HEAD, "partial at the size limit");
        }
        return;
    };
    assert_request_in_bounds(&head, data.len());
    let n = head.len;
    let shown = format!("{head:?}");

    // The head alone parses the same, into a head that held another request before; one
    // byte short is never complete.
    assert_head_stable(
        |buf, h| parse(buf, MAX_HEAD, h),
        data,
        n,
        &shown,
        b"POST /o HTTP/1.1\r\nHost: o\r\nConnection: x, y\r\nTransfer-Encoding: chunked\r\n\r\n",
    );

    // The limit is exact: a head of n bytes passes a limit of n and fails one of n - 1 with 431.
    let mut at_limit = RequestHead::default();
    assert!(matches!(
        parse(data, n, &mut at_limit),
        Ok(Parsed::Complete)
    ));
    assert_eq!(format!("{at_limit:?}"), shown);
    let mut over = RequestHead::default();
    assert_eq!(parse(data, n - 1, &mut over).err(), Some(431));
});
