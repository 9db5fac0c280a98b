//! Checks shared by the fuzz targets: every range a parsed head keeps must lie inside the head.

use coremesh::http1::codec::{HeaderRef, Parsed, RequestHead, ResponseHead};
use std::ops::Range;

/// Panics unless `range` is well-formed and lies within `0..len`.
pub fn assert_within(what: &str, range: &Range<usize>, len: usize) {
    assert!(
        range.start <= range.end && range.end <= len,
        "{what} {range:?} is outside the head (0..{len})"
    );
}

/// Panics unless a header's name and value lie within its line and the line within `0..len`.
pub fn assert_header(h: &HeaderRef, len: usize) {
    assert_within("header line", &h.line, len);
    assert!(
        h.line.start <= h.name.start && h.name.end <= h.line.end,
        "header name {:?} outside its line {:?}",
        h.name,
        h.line
    );
    assert!(
        h.line.start <= h.value.start && h.value.end <= h.line.end,
        "header value {:?} outside its line {:?}",
        h.value,
        h.line
    );
    assert!(!h.name.is_empty(), "empty header name at {:?}", h.line);
}

/// Panics unless every range of a complete request head lies within its `len` bytes, which lie
/// within the buffer of `buf_len` bytes it was parsed from.
pub fn assert_request_in_bounds(head: &RequestHead, buf_len: usize) {
    assert!(
        head.len <= buf_len,
        "head.len {} > input {buf_len}",
        head.len
    );
    assert!(head.len > 0, "complete head of 0 bytes");
    assert_within("method", &head.method, head.len);
    assert!(!head.method.is_empty(), "empty method");
    assert_within("target", &head.target, head.len);
    for h in &head.headers {
        assert_header(h, head.len);
    }
    if let Some(host) = &head.host {
        assert_within("host", host, head.len);
        assert!(
            head.headers.iter().any(|h| h.value == *host),
            "host {host:?} is not a header value"
        );
    }
    for t in &head.connection_tokens {
        assert_within("connection token", t, head.len);
    }
    assert!(head.framing.is_some(), "complete head without framing");
}

/// The same for a complete response head.
pub fn assert_response_in_bounds(head: &ResponseHead, buf_len: usize) {
    assert!(
        head.len <= buf_len,
        "head.len {} > input {buf_len}",
        head.len
    );
    assert!(head.len > 0, "complete head of 0 bytes");
    assert_within("status line", &head.status_line, head.len);
    assert!((100..=999).contains(&head.status), "status {}", head.status);
    for h in &head.headers {
        assert_header(h, head.len);
        assert!(
            h.line.start >= head.status_line.end,
            "header {:?} overlaps the status line {:?}",
            h.line,
            head.status_line
        );
    }
    for t in &head.connection_tokens {
        assert_within("connection token", t, head.len);
    }
}

/// Checks that hold for any head parser, given `parse` (input, head to fill) and a complete
/// head of `n` bytes at the start of `data` that parsed as `shown` (its `Debug` form):
/// the head's bytes alone parse the same, into a head that held `warm_up` before (so
/// nothing depends on what follows the head or came before it); and one byte short is
/// never complete.
pub fn assert_head_stable<H: Default + std::fmt::Debug, E>(
    mut parse: impl FnMut(&[u8], &mut H) -> Result<Parsed, E>,
    data: &[u8],
    n: usize,
    shown: &str,
    warm_up: &[u8],
) {
    let mut reused = H::default();
    let _ = parse(warm_up, &mut reused);
    assert!(matches!(
        parse(&data[..n], &mut reused),
        Ok(Parsed::Complete)
    ));
    assert_eq!(
        format!("{reused:?}"),
        shown,
        "head depends on what follows it or came before"
    );
    let mut short = H::default();
    assert!(
        !matches!(parse(&data[..n - 1], &mut short), Ok(Parsed::Complete)),
        "a prefix of the head is complete"
    );
}
