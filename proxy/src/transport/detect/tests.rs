//! `sniff` on fixed inputs, on every prefix of each protocol's opening, and on random
//! prefixes and random bytes.

use super::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const TCHARS: &[u8] =
    b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A minimal ClientHello record: header, then a handshake header and a body.
fn client_hello(record_version: u8, body: &[u8]) -> Vec<u8> {
    let handshake_len = body.len() + 4;
    let mut out = vec![0x16, 0x03, record_version];
    out.extend_from_slice(&(handshake_len as u16).to_be_bytes());
    out.push(0x01);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(body);
    out
}

/// How many bytes `sniff` needs to decide `bytes`, which must open with `protocol`: every
/// shorter prefix is undecided and every longer one is `protocol`.
fn decides_at(bytes: &[u8], protocol: Protocol) -> usize {
    let at = (0..=bytes.len())
        .find(|&n| sniff(&bytes[..n]) != Sniff::NeedMore)
        .unwrap_or(usize::MAX);
    for n in at..=bytes.len() {
        assert_eq!(sniff(&bytes[..n]), Sniff::Is(protocol), "{:?}", &bytes[..n]);
    }
    at
}

#[test]
fn each_protocol_is_decided_as_soon_as_its_bytes_suffice() {
    let get = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(
        decides_at(get, Protocol::Http1),
        "GET /index.html HTTP/1.".len()
    );
    let options = b"OPTIONS * HTTP/1.0\r\n\r\n";
    assert_eq!(
        decides_at(options, Protocol::Http1),
        "OPTIONS * HTTP/1.".len()
    );
    let mut h2 = H2_PREFACE.to_vec();
    h2.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    assert_eq!(decides_at(&h2, Protocol::Http2), H2_PREFACE.len());
    for version in [0x00, 0x01, 0x03] {
        let hello = client_hello(version, &[0x03, 0x03, 7, 7, 7]);
        assert_eq!(decides_at(&hello, Protocol::Tls), 6);
    }
}

#[test]
fn other_openings_are_unrecognised() {
    let cases: &[&[u8]] = &[
        b"SSH-2.0-OpenSSH_9.6\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"get some_key\r\n",
        b"SET key value\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET /  HTTP/1.1\r\n",
        b"GET\t/ HTTP/1.1\r\n",
        b" GET / HTTP/1.1\r\n",
        b"GET /\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x16\x03\x01\x00\x00\x01",
        b"\x16\x03\x01\x40\x01\x01",
        b"\x16\x03\x05\x00\x10\x01",
        b"\x16\x02\x01\x00\x10\x01",
        b"\x16\x03\x01\x00\x10\x02",
        b"\x17\x03\x03\x00\x10",
        b"\xff\xfe",
    ];
    for case in cases {
        assert_eq!(
            sniff(case),
            Sniff::Unrecognised,
            "{:?}",
            String::from_utf8_lossy(case)
        );
    }
    let long_method = [b'A'; MAX_METHOD_BYTES + 1];
    assert_eq!(sniff(&long_method), Sniff::Unrecognised);
    assert_eq!(sniff(&long_method[..MAX_METHOD_BYTES]), Sniff::NeedMore);
}

#[test]
fn undecided_bytes_give_up_at_the_limit() {
    assert_eq!(sniff(b""), Sniff::NeedMore);
    let mut line = b"GET /".to_vec();
    line.resize(MAX_DETECT_BYTES - 1, b'a');
    assert_eq!(sniff(&line), Sniff::NeedMore);
    line.push(b'a');
    assert_eq!(sniff(&line), Sniff::Unrecognised);
    // A request line that fits is still recognised.
    let mut fits = b"GET /".to_vec();
    fits.resize(MAX_DETECT_BYTES - " HTTP/1.".len(), b'a');
    fits.extend_from_slice(b" HTTP/1.");
    assert_eq!(sniff(&fits), Sniff::Is(Protocol::Http1));
}

/// A random opening of `protocol`, long enough to be decided.
fn random_opening(rng: &mut SmallRng, protocol: Protocol) -> Vec<u8> {
    let mut out = Vec::new();
    match protocol {
        Protocol::Http1 => {
            for _ in 0..rng.gen_range(1..=MAX_METHOD_BYTES) {
                out.push(TCHARS[rng.gen_range(0..TCHARS.len())]);
            }
            out.push(b' ');
            for _ in 0..rng.gen_range(1..200) {
                let b = rng.gen_range(0x21..=0xffu8);
                out.push(if b == 0x7f { b'x' } else { b });
            }
            out.extend_from_slice(b" HTTP/1.");
            out.push(rng.gen_range(b'0'..=b'1'));
        }
        Protocol::Http2 => out.extend_from_slice(H2_PREFACE),
        Protocol::Tls => {
            let body: Vec<u8> = (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect();
            out = client_hello(rng.gen_range(0..=4), &body);
        }
        Protocol::Opaque => {}
    }
    let tail: Vec<u8> = (0..rng.gen_range(0..64)).map(|_| rng.gen()).collect();
    out.extend_from_slice(&tail);
    out
}

#[test]
fn random_prefixes_are_never_taken_for_another_protocol() {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0010);
    for _ in 0..3000 {
        let protocol = [Protocol::Http1, Protocol::Http2, Protocol::Tls][rng.gen_range(0..3)];
        let opening = random_opening(&mut rng, protocol);
        for n in 0..=opening.len() {
            match sniff(&opening[..n]) {
                Sniff::NeedMore => {}
                Sniff::Is(p) => assert_eq!(p, protocol, "{:?}", &opening[..n]),
                Sniff::Unrecognised => {
                    panic!("{protocol:?} prefix unrecognised: {:?}", &opening[..n])
                }
            }
        }
        assert_eq!(sniff(&opening), Sniff::Is(protocol), "{opening:?}");
    }
}

/// Random bytes, and valid openings with a byte changed: no panic, and a decision once
/// made stays the same as more bytes arrive (so how the bytes are split across reads
/// never changes the outcome).
#[test]
fn decisions_on_random_bytes_are_stable_as_bytes_arrive() {
    let mut rng = SmallRng::seed_from_u64(0x5eed_0011);
    for round in 0..5000 {
        let mut bytes = if round % 2 == 0 {
            (0..rng.gen_range(0..64))
                .map(|_| rng.gen())
                .collect::<Vec<u8>>()
        } else {
            let protocol = [Protocol::Http1, Protocol::Http2, Protocol::Tls][rng.gen_range(0..3)];
            random_opening(&mut rng, protocol)
        };
        if !bytes.is_empty() && round % 4 == 1 {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = rng.gen();
        }
        let mut decided: Option<Sniff> = None;
        for n in 0..=bytes.len() {
            let now = sniff(&bytes[..n]);
            match decided {
                Some(before) => assert_eq!(now, before, "{:?}", &bytes[..n]),
                None if now != Sniff::NeedMore => decided = Some(now),
                None => {}
            }
        }
    }
}

#[test]
fn the_default_config_is_the_default_side_settings() {
    let cfg = DetectConfig::default();
    assert_eq!(cfg.timeout, DEFAULT_DETECT_TIMEOUT);
    assert_eq!(cfg.opaque_ports, coremesh_discovery::DEFAULT_OPAQUE_PORTS);
    assert!(cfg.opaque_ports.contains(&5432) && !cfg.opaque_ports.contains(&80));
}
