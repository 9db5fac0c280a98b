//! Chunked body decoder: no panic, and the outcome does not depend on how the body arrives.
//!
//! Input: the first byte `k` says how many of the next bytes are piece lengths (`k % 8`); the
//! rest is the body, fed in pieces of those lengths (cycled; 0 means one byte). Scanning in
//! those pieces, byte by byte and in one go must agree on the bytes consumed, on the end of the
//! body, on the error, and (for `decode`) on the payload.
#![no_main]

use coremesh::http1::body::{ChunkError, ChunkedScanner, Scan};
use libfuzzer_sys::fuzz_target;

/// What feeding a whole input produced.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// Bytes that belong to the body (all of them when it did not end; 0 after an error).
    consumed: usize,
    done: bool,
    error: Option<ChunkError>,
    payload: Vec<u8>,
}

fn feed(body: &[u8], pieces: &[usize], decode: bool) -> Outcome {
    let mut scanner = ChunkedScanner::new();
    let mut out = Outcome {
        consumed: 0,
        done: false,
        error: None,
        payload: Vec::new(),
    };
    let mut at = 0;
    let mut lengths = pieces.iter().cycle();
    while at < body.len() {
        let len = lengths.next().copied().unwrap_or(body.len()).max(1);
        let piece = &body[at..(at + len).min(body.len())];
        let before = out.payload.len();
        let result = if decode {
            scanner.decode(piece, &mut out.payload)
        } else {
            scanner.scan(piece)
        };
        match result {
            Ok(Scan { consumed, done }) => {
                assert!(consumed <= piece.len(), "consumed more than given");
                assert!(
                    out.payload.len() - before <= consumed,
                    "decoded more payload than bytes consumed"
                );
                assert_eq!(done, scanner.is_done());
                out.consumed += consumed;
                if done {
                    out.done = true;
                    // A finished body takes nothing more.
                    let again = scanner.scan(b"0\r\n\r\n");
                    assert_eq!(
                        again,
                        Ok(Scan {
                            consumed: 0,
                            done: true
                        })
                    );
                    return out;
                }
                assert_eq!(consumed, piece.len(), "stopped early without finishing");
            }
            Err(e) => {
                // How much of the failing piece was read before the error is not reported,
                // so the count is not compared; the error and the payload so far are.
                out.consumed = 0;
                out.error = Some(e);
                return out;
            }
        }
        at += piece.len();
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(k % 8).min(rest.len());
    let (lengths, body) = rest.split_at(count);
    let pieces: Vec<usize> = lengths.iter().map(|&b| usize::from(b)).collect();

    let whole = feed(body, &[body.len()], false);
    let split = feed(body, &pieces, false);
    let bytewise = feed(body, &[1], false);
    assert_eq!(split, whole, "pieces {pieces:?} disagree with one go");
    assert_eq!(bytewise, whole, "byte by byte disagrees with one go");

    let decoded_whole = feed(body, &[body.len()], true);
    let decoded_split = feed(body, &pieces, true);
    let decoded_bytewise = feed(body, &[1], true);
    assert_eq!(
        decoded_split, decoded_whole,
        "decode in pieces {pieces:?} disagrees"
    );
    assert_eq!(
        decoded_bytewise, decoded_whole,
        "decode byte by byte disagrees"
    );
    assert_eq!(
        (
            decoded_whole.consumed,
            decoded_whole.done,
            decoded_whole.error
        ),
        (whole.consumed, whole.done, whole.error),
        "decode and scan disagree"
    );

    // A finished body's payload, chunked again, decodes to itself.
    if whole.done {
        let payload = decoded_whole.payload;
        let mut again = Vec::new();
        if !payload.is_empty() {
            again.extend_from_slice(format!("{:x}\r\n", payload.len()).as_bytes());
            again.extend_from_slice(&payload);
            again.extend_from_slice(b"\r\n");
        }
        again.extend_from_slice(b"0\r\n\r\n");
        let redone = feed(&again, &[again.len()], true);
        assert!(redone.done && redone.error.is_none());
        assert_eq!(redone.consumed, again.len());
        assert_eq!(redone.payload, payload);
    }
});
