//! Writing the trace context to the upstream request: [`write_trace_headers`] appends
//! header lines (`Name: value\r\n`) in the formats the request came with (W3C when it came
//! with none), and [`is_trace_header`] tells the forwarder which incoming lines to leave
//! out so the upstream does not see two contexts.

use super::b3;
use super::context::TraceContext;
use super::extract::Formats;
use super::tracestate::TraceState;
use super::w3c;

/// Every header name this module reads or writes (lower case).
pub const TRACE_HEADERS: [&str; 8] = [
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
];

/// Whether `name` is a trace header (any case).
pub fn is_trace_header(name: &str) -> bool {
    TRACE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Appends the header lines carrying `context` (the attempt's span) to `out`: W3C
/// `traceparent` (and the incoming `tracestate`, unchanged), `b3`, and/or the `X-B3-*`
/// set, as `formats` says; W3C alone when `formats` is empty.
pub fn write_trace_headers(
    context: &TraceContext,
    formats: Formats,
    tracestate: &TraceState<'_>,
    out: &mut Vec<u8>,
) {
    let formats = if formats.is_empty() {
        Formats::W3C
    } else {
        formats
    };
    if formats.w3c {
        w3c::write(context, out);
        if !tracestate.is_empty() {
            out.extend_from_slice(b"tracestate: ");
            tracestate.write_value(out);
            out.extend_from_slice(b"\r\n");
        }
    }
    if formats.b3_single {
        b3::write_single(context, out);
    }
    if formats.b3_multi {
        b3::write_multi(context, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::extract::extract;
    use crate::trace::sampler::Sampler;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn context() -> TraceContext {
        TraceContext {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            parent_span_id: Some([0xef; 8]),
            sampled: false,
            debug: false,
        }
    }

    #[test]
    fn no_format_means_w3c() {
        let mut out = Vec::new();
        write_trace_headers(
            &context(),
            Formats::default(),
            &TraceState::default(),
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "traceparent: 00-{}-{}-00\r\n",
                "ab".repeat(16),
                "cd".repeat(8)
            )
        );
    }

    #[test]
    fn answers_in_the_formats_that_came_in() {
        let headers: [(&str, &[u8]); 3] = [
            ("b3", b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("X-B3-TraceId", b"80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", b"e457b5a2e4d86bd1"),
        ];
        let incoming = extract(headers);
        let mut rng = SmallRng::seed_from_u64(1);
        let server = incoming.server_context(&Sampler::new(0.0), &mut rng);
        let attempt = server.child(&mut rng);
        let mut out = Vec::new();
        write_trace_headers(&attempt, incoming.formats, &incoming.tracestate, &mut out);
        let text = String::from_utf8(out).unwrap();
        let span = attempt.span_id_hex().to_string();
        let parent = server.span_id_hex().to_string();
        assert_eq!(
            text,
            format!(
                "b3: 80f198ee56343ba864fe8b2a57d3eff7-{span}-1-{parent}\r\n\
                 X-B3-TraceId: 80f198ee56343ba864fe8b2a57d3eff7\r\n\
                 X-B3-SpanId: {span}\r\n\
                 X-B3-ParentSpanId: {parent}\r\n\
                 X-B3-Sampled: 1\r\n"
            )
        );
    }

    #[test]
    fn tracestate_goes_out_unchanged_with_w3c() {
        let headers: [(&str, &[u8]); 3] = [
            (
                "traceparent",
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("tracestate", b"rojo=00f067aa0ba902b7"),
            ("tracestate", b"congo=t61rcWkgMzE"),
        ];
        let incoming = extract(headers);
        let mut rng = SmallRng::seed_from_u64(1);
        let attempt = incoming
            .server_context(&Sampler::new(0.0), &mut rng)
            .child(&mut rng);
        let mut out = Vec::new();
        write_trace_headers(&attempt, incoming.formats, &incoming.tracestate, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(text.ends_with("-01\r\ntracestate: rojo=00f067aa0ba902b7,congo=t61rcWkgMzE\r\n"));
    }

    #[test]
    fn recognises_trace_headers() {
        assert!(is_trace_header("TraceParent"));
        assert!(is_trace_header("X-B3-ParentSpanId"));
        assert!(is_trace_header("B3"));
        assert!(!is_trace_header("x-b3"));
        assert!(!is_trace_header("host"));
    }
}
