//! Response head parser: no panic; a complete head lies within the input and every range within
//! the head; the status line is the head's first line without its line ending; the result
//! depends only on the head's bytes and not on a head parsed before; the size limit holds.
#![no_main]

use coremesh::http1::codec::{parse_response, HeaderScratch, Parsed, ResponseHead};
use coremesh_fuzz::{assert_head_stable, assert_response_in_bounds};
use libfuzzer_sys::fuzz_target;

const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 100;

fn parse(buf: &[u8], max_head: usize, head: &mut ResponseHead) -> Result<Parsed, u16> {
    let mut scratch = HeaderScratch::new(MAX_HEADERS);
    parse_response(buf, max_head, &mut scratch, head).map_err(|e| {
        assert_eq!(e.status, 502, "unexpected status {e:?}");
        e.status
    })
}

fuzz_target!(|data: &[u8]| {
    let mut head = ResponseHead::default();
    let first = parse(data, MAX_HEAD, &mut head);
    let Ok(Parsed::Complete) = first else {
        if let Ok(Parsed::Partial) = first {
            assert!(data.len() < MAX_HEAD, "partial at the size limit");
        }
        return;
    };
    assert_response_in_bounds(&head, data.len());
    let n = head.len;

    // The status line is the first line (after any empty lines, which the parser skips),
    // whole, without its line ending.
    let line = &data[head.status_line.clone()];
    assert!(
        data[..head.status_line.start]
            .iter()
            .all(|&b| b == b'\r' || b == b'\n'),
        "status line {:?} does not start the head",
        head.status_line
    );
    assert!(
        line.starts_with(b"HTTP/1."),
        "status line {:?} is not the head's first line",
        String::from_utf8_lossy(line)
    );
    let rest = &data[head.status_line.end..n];
    assert!(
        rest.starts_with(b"\r\n") || rest.starts_with(b"\n"),
        "status line {:?} is not followed by a line ending",
        String::from_utf8_lossy(line)
    );
    assert!(!line.contains(&b'\n'), "status line spans lines");
    assert_eq!(
        &line[9..12],
        head.status.to_string().as_bytes(),
        "status code is not in the status line"
    );
    let shown = format!("{head:?}");

    // The head alone parses the same, into a head that held another response before; one
    // byte short is never complete.
    assert_head_stable(
        |buf, h| parse(buf, MAX_HEAD, h),
        data,
        n,
        &shown,
        b"HTTP/1.1 200 OK\r\nConnection: x, y\r\nContent-Length: 5\r\n\r\n",
    );

    // Framing is decided for every request method without panicking.
    let _ = head.framing(true);
    let _ = head.framing(false);
});
