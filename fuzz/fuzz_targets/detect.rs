//! Protocol detection: no panic, and the decision does not depend on how the first bytes
//! arrive.
//!
//! Input: the bytes a client sends first. `sniff` on every prefix must be undecided up to
//! some length and then the same decision for every longer prefix (a decision, once made,
//! never changes as more bytes arrive); a prefix decided as a protocol must hold what that
//! protocol starts with; nothing is undecided past `MAX_DETECT_BYTES`.
#![no_main]

use coremesh::transport::detect::{sniff, Protocol, Sniff, H2_PREFACE, MAX_DETECT_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decided: Option<(usize, Sniff)> = None;
    for n in 0..=data.len() {
        let now = sniff(&data[..n]);
        match decided {
            Some((at, before)) => assert_eq!(now, before, "decided at {at}, changed at {n}"),
            None if now != Sniff::NeedMore => decided = Some((n, now)),
            None => assert!(n < MAX_DETECT_BYTES, "undecided at {n} bytes"),
        }
    }
    if let Some((at, Sniff::Is(protocol))) = decided {
        let first = &data[..at];
        match protocol {
            Protocol::Http1 => assert!(first.ends_with(b" HTTP/1.") && first[0] != b' '),
            Protocol::Http2 => assert_eq!(first, H2_PREFACE),
            Protocol::Tls => assert!(first.len() == 6 && first[0] == 0x16 && first[5] == 1),
            Protocol::Opaque => panic!("opaque is never a match"),
        }
    }
});
