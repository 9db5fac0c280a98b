//! W3C Trace Context `traceparent`: `version-traceid-parentid-flags`, e.g.
//! `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
//!
//! Version `00` must be exactly 55 characters; a higher version may carry more after a
//! `-`, and its first four fields are read as version `00`'s. Version `ff`, upper-case hex,
//! and all-zero ids are invalid.

use super::context::TraceContext;
use super::hex;

/// Length of a version-00 `traceparent`.
const LEN: usize = 55;

/// A parsed `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    pub(crate) trace_id: [u8; 16],
    pub(crate) parent_id: [u8; 8],
    pub(crate) sampled: bool,
}

pub(crate) fn parse(value: &[u8]) -> Option<TraceParent> {
    let value = value.trim_ascii();
    if value.len() < LEN {
        return None;
    }
    let version = hex::decode::<1>(&value[0..2])?[0];
    if version == 0xff || (version == 0 && value.len() != LEN) {
        return None;
    }
    if value.len() > LEN && value[LEN] != b'-' {
        return None;
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex::decode::<16>(&value[3..35])?;
    let parent_id = hex::decode::<8>(&value[36..52])?;
    let flags = hex::decode::<1>(&value[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    Some(TraceParent {
        trace_id,
        parent_id,
        sampled: flags & 0x01 != 0,
    })
}

/// Appends `traceparent: 00-…\r\n` for `context`.
pub(crate) fn write(context: &TraceContext, out: &mut Vec<u8>) {
    out.extend_from_slice(b"traceparent: 00-");
    hex::push(&context.trace_id, out);
    out.push(b'-');
    hex::push(&context.span_id, out);
    out.extend_from_slice(if context.sampled {
        b"-01\r\n"
    } else {
        b"-00\r\n"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: [u8; 16] = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    const PARENT: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];

    #[test]
    fn parses_the_spec_example() {
        let parsed = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            parsed,
            TraceParent {
                trace_id: TRACE,
                parent_id: PARENT,
                sampled: true
            }
        );
        let unsampled =
            parse(b" 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t").unwrap();
        assert!(!unsampled.sampled);
        // Other flag bits do not matter.
        assert!(
            parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03")
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn future_versions_are_read_as_00() {
        let parsed = parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever");
        assert_eq!(parsed.unwrap().trace_id, TRACE);
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_some());
        assert!(parse(b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x").is_none());
    }

    #[test]
    fn rejects_invalid_values() {
        for bad in [
            &b""[..],
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            b"0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-01".as_bytes(),
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn writes_version_00() {
        let context = TraceContext {
            trace_id: TRACE,
            span_id: PARENT,
            parent_span_id: None,
            sampled: true,
            debug: false,
        };
        let mut out = Vec::new();
        write(&context, &mut out);
        assert_eq!(
            out,
            b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n"
        );
    }
}
