//! B3 propagation (Zipkin): the single header `b3: {TraceId}-{SpanId}-{SamplingState}-
//! {ParentSpanId}` (the last two optional, or only a sampling state `0`/`1`/`d`) and the
//! multiple headers `X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`, `X-B3-Sampled`,
//! `X-B3-Flags`. Trace ids are 16 or 32 lower-case hex digits (64-bit ids are kept in the
//! low half); span ids 16.

use super::context::TraceContext;
use super::hex;

/// What a B3 header set says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum B3 {
    /// A span to continue, with the caller's decision if it made one.
    Context {
        trace_id: [u8; 16],
        span_id: [u8; 8],
        parent_span_id: Option<[u8; 8]>,
        sampling: Option<bool>,
        debug: bool,
    },
    /// Only a decision (`b3: 0`, `X-B3-Sampled: 1` alone, …): start a trace accordingly.
    Decision { sampled: bool, debug: bool },
}

fn trace_id(text: &[u8]) -> Option<[u8; 16]> {
    let id = match text.len() {
        32 => hex::decode::<16>(text)?,
        16 => {
            let low = hex::decode::<8>(text)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            id
        }
        _ => return None,
    };
    (id != [0; 16]).then_some(id)
}

fn span_id(text: &[u8]) -> Option<[u8; 8]> {
    hex::decode::<8>(text).filter(|id| *id != [0; 8])
}

/// `(sampled, debug)` of a single-header sampling state.
fn sampling_state(text: &[u8]) -> Option<(bool, bool)> {
    match text {
        b"1" => Some((true, false)),
        b"0" => Some((false, false)),
        b"d" => Some((true, true)),
        _ => None,
    }
}

/// Parses the `b3` single header.
pub(crate) fn parse_single(value: &[u8]) -> Option<B3> {
    let value = value.trim_ascii();
    if let Some((sampled, debug)) = sampling_state(value) {
        return Some(B3::Decision { sampled, debug });
    }
    let mut fields = value.split(|&b| b == b'-');
    let trace_id = trace_id(fields.next()?)?;
    let span_id = span_id(fields.next()?)?;
    let (sampling, debug) = match fields.next() {
        None => (None, false),
        Some(state) => {
            let (sampled, debug) = sampling_state(state)?;
            (Some(sampled), debug)
        }
    };
    let parent_span_id = match fields.next() {
        None => None,
        Some(parent) => Some(self::span_id(parent)?),
    };
    if fields.next().is_some() {
        return None;
    }
    Some(B3::Context {
        trace_id,
        span_id,
        parent_span_id,
        sampling,
        debug,
    })
}

/// The raw values of the multiple headers (each seen at most once; a repeated header is
/// passed as invalid by the caller).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MultiHeaders<'h> {
    pub(crate) trace_id: Option<&'h [u8]>,
    pub(crate) span_id: Option<&'h [u8]>,
    pub(crate) parent_span_id: Option<&'h [u8]>,
    pub(crate) sampled: Option<&'h [u8]>,
    pub(crate) flags: Option<&'h [u8]>,
}

impl MultiHeaders<'_> {
    pub(crate) fn any(&self) -> bool {
        self.trace_id.is_some()
            || self.span_id.is_some()
            || self.parent_span_id.is_some()
            || self.sampled.is_some()
            || self.flags.is_some()
    }
}

/// Parses the multiple headers. Ids present but invalid or incomplete make the whole set
/// invalid; without ids, `X-B3-Sampled` / `X-B3-Flags` are a decision alone.
pub(crate) fn parse_multi(headers: &MultiHeaders<'_>) -> Option<B3> {
    let debug = match headers.flags.map(<[u8]>::trim_ascii) {
        None | Some(b"0") => false,
        Some(b"1") => true,
        Some(_) => return None,
    };
    let sampling = match headers.sampled.map(<[u8]>::trim_ascii) {
        None => None,
        Some(b"1") | Some(b"true") => Some(true),
        Some(b"0") | Some(b"false") => Some(false),
        Some(_) => return None,
    };
    match (headers.trace_id, headers.span_id) {
        (None, None) if headers.parent_span_id.is_none() => {
            if debug {
                Some(B3::Decision {
                    sampled: true,
                    debug,
                })
            } else {
                sampling.map(|sampled| B3::Decision { sampled, debug })
            }
        }
        (Some(trace), Some(span)) => Some(B3::Context {
            trace_id: trace_id(trace.trim_ascii())?,
            span_id: span_id(span.trim_ascii())?,
            parent_span_id: match headers.parent_span_id {
                None => None,
                Some(parent) => Some(span_id(parent.trim_ascii())?),
            },
            sampling,
            debug,
        }),
        _ => None,
    }
}

/// Appends a trace id: 16 digits when it is a 64-bit id (high half zero), else 32.
fn push_trace_id(id: &[u8; 16], out: &mut Vec<u8>) {
    if id[..8] == [0; 8] {
        hex::push(&id[8..], out);
    } else {
        hex::push(id, out);
    }
}

/// Appends `b3: …\r\n` for `context`.
pub(crate) fn write_single(context: &TraceContext, out: &mut Vec<u8>) {
    out.extend_from_slice(b"b3: ");
    push_trace_id(&context.trace_id, out);
    out.push(b'-');
    hex::push(&context.span_id, out);
    out.extend_from_slice(match (context.debug, context.sampled) {
        (true, _) => b"-d",
        (false, true) => b"-1",
        (false, false) => b"-0",
    });
    if let Some(parent) = &context.parent_span_id {
        out.push(b'-');
        hex::push(parent, out);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends the `X-B3-*` lines for `context` (`X-B3-Flags: 1` instead of `X-B3-Sampled`
/// when debug, as B3 asks).
pub(crate) fn write_multi(context: &TraceContext, out: &mut Vec<u8>) {
    out.extend_from_slice(b"X-B3-TraceId: ");
    push_trace_id(&context.trace_id, out);
    out.extend_from_slice(b"\r\nX-B3-SpanId: ");
    hex::push(&context.span_id, out);
    out.extend_from_slice(b"\r\n");
    if let Some(parent) = &context.parent_span_id {
        out.extend_from_slice(b"X-B3-ParentSpanId: ");
        hex::push(parent, out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(match (context.debug, context.sampled) {
        (true, _) => b"X-B3-Flags: 1\r\n",
        (false, true) => b"X-B3-Sampled: 1\r\n",
        (false, false) => b"X-B3-Sampled: 0\r\n",
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const T128: &[u8] = b"80f198ee56343ba864fe8b2a57d3eff7";
    const SPAN: &[u8] = b"e457b5a2e4d86bd1";
    const PARENT: &[u8] = b"05e3ac9a4f6e3b90";

    /// (trace id, span id, parent span id, sampling, debug).
    type Parts = ([u8; 16], [u8; 8], Option<[u8; 8]>, Option<bool>, bool);

    fn ctx(single: &[u8]) -> Parts {
        match parse_single(single) {
            Some(B3::Context {
                trace_id,
                span_id,
                parent_span_id,
                sampling,
                debug,
            }) => (trace_id, span_id, parent_span_id, sampling, debug),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_header_forms() {
        let full = ctx(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90");
        assert_eq!(full.0, hex::decode::<16>(T128).unwrap());
        assert_eq!(full.1, hex::decode::<8>(SPAN).unwrap());
        assert_eq!(full.2, Some(hex::decode::<8>(PARENT).unwrap()));
        assert_eq!((full.3, full.4), (Some(true), false));

        let bare = ctx(b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1");
        assert_eq!((bare.2, bare.3, bare.4), (None, None, false));

        let debug = ctx(b"64fe8b2a57d3eff7-e457b5a2e4d86bd1-d");
        assert_eq!(debug.0[..8], [0; 8]);
        assert_eq!(debug.0[8..], hex::decode::<8>(b"64fe8b2a57d3eff7").unwrap());
        assert_eq!((debug.3, debug.4), (Some(true), true));

        assert_eq!(
            parse_single(b"0"),
            Some(B3::Decision {
                sampled: false,
                debug: false
            })
        );
        assert_eq!(
            parse_single(b"d"),
            Some(B3::Decision {
                sampled: true,
                debug: true
            })
        );
    }

    #[test]
    fn single_header_rejects() {
        for bad in [
            &b""[..],
            b"2",
            b"80f198ee56343ba864fe8b2a57d3eff7",
            b"80f198ee56343ba864fe8b2a57d3eff7-",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-x",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3",
            b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-9",
            b"80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1",
            b"00000000000000000000000000000000-e457b5a2e4d86bd1",
            b"80f198ee56343ba864fe8b2a57d3eff7-0000000000000000",
            b"80f198ee56343ba864fe8b2a57d3ef-e457b5a2e4d86bd1",
        ] {
            assert_eq!(
                parse_single(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn multi_headers() {
        let all = MultiHeaders {
            trace_id: Some(T128),
            span_id: Some(SPAN),
            parent_span_id: Some(PARENT),
            sampled: Some(b"0"),
            flags: None,
        };
        assert_eq!(
            parse_multi(&all),
            Some(B3::Context {
                trace_id: hex::decode::<16>(T128).unwrap(),
                span_id: hex::decode::<8>(SPAN).unwrap(),
                parent_span_id: Some(hex::decode::<8>(PARENT).unwrap()),
                sampling: Some(false),
                debug: false,
            })
        );
        let flags_only = MultiHeaders {
            flags: Some(b"1"),
            ..MultiHeaders::default()
        };
        assert_eq!(
            parse_multi(&flags_only),
            Some(B3::Decision {
                sampled: true,
                debug: true
            })
        );
        let legacy = MultiHeaders {
            sampled: Some(b"true"),
            ..MultiHeaders::default()
        };
        assert_eq!(
            parse_multi(&legacy),
            Some(B3::Decision {
                sampled: true,
                debug: false
            })
        );
        assert_eq!(parse_multi(&MultiHeaders::default()), None);
        for bad in [
            MultiHeaders {
                trace_id: Some(T128),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                trace_id: Some(T128),
                span_id: Some(b"zz"),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                sampled: Some(b"yes"),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                trace_id: Some(T128),
                span_id: Some(SPAN),
                parent_span_id: Some(b"0"),
                ..MultiHeaders::default()
            },
            MultiHeaders {
                parent_span_id: Some(PARENT),
                ..MultiHeaders::default()
            },
        ] {
            assert_eq!(parse_multi(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn writes_both_forms() {
        let context = TraceContext {
            trace_id: hex::decode::<16>(T128).unwrap(),
            span_id: hex::decode::<8>(SPAN).unwrap(),
            parent_span_id: Some(hex::decode::<8>(PARENT).unwrap()),
            sampled: true,
            debug: false,
        };
        let mut out = Vec::new();
        write_single(&context, &mut out);
        write_multi(&context, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90\r\n\
             X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n\
             X-B3-SpanId: e457b5a2e4d86bd1\r\n\
             X-B3-ParentSpanId: 05e3ac9a4f6e3b90\r\n\
             X-B3-Sampled: 1\r\n"
        );
        let mut short = TraceContext {
            parent_span_id: None,
            debug: true,
            ..context
        };
        short.trace_id[..8].fill(0);
        let mut out = Vec::new();
        write_single(&short, &mut out);
        write_multi(&short, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "b3: 64fe8b2a57d3eff7-e457b5a2e4d86bd1-d\r\n\
             X-B3-TraceId: 64fe8b2a57d3eff7\r\n\
             X-B3-SpanId: e457b5a2e4d86bd1\r\n\
             X-B3-Flags: 1\r\n"
        );
    }
}
