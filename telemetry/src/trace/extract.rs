//! [`extract`]: the trace context of an incoming request, from whichever formats it
//! carries, and [`Extracted::server_context`]: the context of the proxy's own span for it.
//!
//! Precedence when several formats are present: a valid `traceparent`, then `b3`, then the
//! `X-B3-*` set. A header that appears twice (other than `tracestate`) is invalid. The
//! formats that carried a valid context are the ones the upstream request gets back.

use super::b3::{self, MultiHeaders, B3};
use super::context::{random_span_id, TraceContext};
use super::sampler::Sampler;
use super::tracestate::{TraceState, MAX_TRACESTATE_HEADERS};
use super::w3c;
use rand::RngCore;

/// Which propagation formats to read or write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats {
    /// `traceparent` / `tracestate`.
    pub w3c: bool,
    /// `b3`.
    pub b3_single: bool,
    /// `X-B3-*`.
    pub b3_multi: bool,
}

impl Formats {
    /// W3C only: what a request without trace headers gets.
    pub const W3C: Formats = Formats {
        w3c: true,
        b3_single: false,
        b3_multi: false,
    };

    /// Whether no format is set.
    pub fn is_empty(&self) -> bool {
        !(self.w3c || self.b3_single || self.b3_multi)
    }
}

/// What a request's headers say about its trace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted<'h> {
    /// The caller's span (`span_id`; `parent_span_id` when B3 named one), if a valid
    /// context came in. Its `sampled` is the caller's decision, `false` when it made none.
    pub parent: Option<TraceContext>,
    /// The caller's sampling decision, if it made one (W3C always does; B3 may defer).
    pub sampling: Option<bool>,
    /// B3 debug: sample, and pass the flag on.
    pub debug: bool,
    /// Formats that carried a valid context or decision (empty: answer in W3C).
    pub formats: Formats,
    /// The W3C trace state to pass on (only with a valid `traceparent`).
    pub tracestate: TraceState<'h>,
}

/// Reads the trace headers among `headers` (name, value) — e.g. an `httparse` head's
/// `headers.iter().map(|h| (h.name, h.value))`. Names match case-insensitively; other
/// headers are skipped. Never fails: invalid input is ignored.
pub fn extract<'h, I>(headers: I) -> Extracted<'h>
where
    I: IntoIterator<Item = (&'h str, &'h [u8])>,
{
    let mut traceparent = Seen::None;
    let mut single = Seen::None;
    let mut multi = [Seen::None; 5];
    let mut tracestate: [&[u8]; MAX_TRACESTATE_HEADERS + 1] = [&[]; MAX_TRACESTATE_HEADERS + 1];
    let mut tracestate_lines = 0;
    for (name, value) in headers {
        let slot = match name.len() {
            2 if name.eq_ignore_ascii_case("b3") => &mut single,
            10 if name.eq_ignore_ascii_case("tracestate") => {
                if tracestate_lines < tracestate.len() {
                    tracestate[tracestate_lines] = value;
                    tracestate_lines += 1;
                }
                continue;
            }
            11 if name.eq_ignore_ascii_case("traceparent") => &mut traceparent,
            10 if name.eq_ignore_ascii_case("x-b3-flags") => &mut multi[4],
            11 if name.eq_ignore_ascii_case("x-b3-spanid") => &mut multi[1],
            12 if name.eq_ignore_ascii_case("x-b3-traceid") => &mut multi[0],
            12 if name.eq_ignore_ascii_case("x-b3-sampled") => &mut multi[3],
            17 if name.eq_ignore_ascii_case("x-b3-parentspanid") => &mut multi[2],
            _ => continue,
        };
        slot.see(value);
    }

    let mut out = Extracted::default();
    let w3c = traceparent.once().and_then(w3c::parse);
    let single = single.once().and_then(b3::parse_single);
    let multi = if multi.iter().any(|s| matches!(s, Seen::Twice)) {
        None
    } else {
        let headers = MultiHeaders {
            trace_id: multi[0].once(),
            span_id: multi[1].once(),
            parent_span_id: multi[2].once(),
            sampled: multi[3].once(),
            flags: multi[4].once(),
        };
        if headers.any() {
            b3::parse_multi(&headers)
        } else {
            None
        }
    };
    out.formats = Formats {
        w3c: w3c.is_some(),
        b3_single: single.is_some(),
        b3_multi: multi.is_some(),
    };

    if let Some(parent) = w3c {
        out.parent = Some(TraceContext {
            trace_id: parent.trace_id,
            span_id: parent.parent_id,
            parent_span_id: None,
            sampled: parent.sampled,
            debug: false,
        });
        out.sampling = Some(parent.sampled);
        out.tracestate = TraceState::parse(&tracestate[..tracestate_lines]);
        return out;
    }
    let b3 = match (single, multi) {
        (Some(context @ B3::Context { .. }), _) => Some(context),
        (_, Some(context @ B3::Context { .. })) => Some(context),
        (Some(decision), _) => Some(decision),
        (None, multi) => multi,
    };
    match b3 {
        Some(B3::Context {
            trace_id,
            span_id,
            parent_span_id,
            sampling,
            debug,
        }) => {
            out.parent = Some(TraceContext {
                trace_id,
                span_id,
                parent_span_id,
                sampled: debug || sampling.unwrap_or(false),
                debug,
            });
            out.sampling = if debug { Some(true) } else { sampling };
            out.debug = debug;
        }
        Some(B3::Decision { sampled, debug }) => {
            out.sampling = Some(sampled || debug);
            out.debug = debug;
        }
        None => {}
    }
    out
}

/// How often a header was seen.
#[derive(Debug, Clone, Copy)]
enum Seen<'h> {
    None,
    Once(&'h [u8]),
    Twice,
}

impl<'h> Seen<'h> {
    fn see(&mut self, value: &'h [u8]) {
        *self = match self {
            Seen::None => Seen::Once(value),
            _ => Seen::Twice,
        };
    }

    fn once(self) -> Option<&'h [u8]> {
        match self {
            Seen::Once(value) => Some(value),
            _ => None,
        }
    }
}

impl Extracted<'_> {
    /// The context of the proxy's span for this request. With a parent: same trace, a new
    /// span id, the caller's span as parent. Without: a new root trace. Sampled if the
    /// caller decided so (or asked for debug); when the caller made no decision, `sampler`
    /// decides. Draws from `rng` in this order: the sampling decision (only when `sampler`
    /// decides and its ratio is strictly between 0 and 1), then the trace id (new roots),
    /// then the span id.
    pub fn server_context<R: RngCore + ?Sized>(
        &self,
        sampler: &Sampler,
        rng: &mut R,
    ) -> TraceContext {
        let sampled = match self.sampling {
            Some(decision) => decision || self.debug,
            None => sampler.sample(rng),
        };
        match &self.parent {
            Some(parent) => TraceContext {
                trace_id: parent.trace_id,
                span_id: random_span_id(rng),
                parent_span_id: Some(parent.span_id),
                sampled,
                debug: self.debug,
            },
            None => {
                let mut root = TraceContext::new_root(sampled, rng);
                root.debug = self.debug;
                root
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::hex;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const TP: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TP_OFF: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    const B3: &[u8] = b"80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90";

    fn trace_id(text: &[u8]) -> [u8; 16] {
        hex::decode::<16>(text).unwrap()
    }

    #[test]
    fn w3c_parent_is_continued_and_its_decision_followed() {
        let headers: [(&str, &[u8]); 3] = [
            ("Host", b"x"),
            ("TraceParent", TP_OFF),
            ("tracestate", b"rojo=00f067aa0ba902b7"),
        ];
        let e = extract(headers);
        assert_eq!(e.formats, Formats::W3C);
        assert_eq!(e.sampling, Some(false));
        assert!(!e.tracestate.is_empty());
        let parent = e.parent.unwrap();
        assert_eq!(
            parent.trace_id,
            trace_id(b"4bf92f3577b34da6a3ce929d0e0e4736")
        );
        // Ratio 1 would sample a new root, but the caller said no.
        let mut rng = SmallRng::seed_from_u64(1);
        let server = e.server_context(&Sampler::new(1.0), &mut rng);
        assert_eq!(server.trace_id, parent.trace_id);
        assert_eq!(server.parent_span_id, Some(parent.span_id));
        assert!(!server.sampled);
    }

    #[test]
    fn invalid_headers_start_a_new_root() {
        let headers: [(&str, &[u8]); 3] = [
            ("traceparent", b"00-xyz"),
            ("tracestate", b"rojo=1"),
            ("b3", b"not-b3"),
        ];
        let e = extract(headers);
        assert_eq!(e, Extracted::default());
        let mut rng = SmallRng::seed_from_u64(3);
        let root = e.server_context(&Sampler::new(1.0), &mut rng);
        assert_eq!(root.parent_span_id, None);
        assert!(root.sampled);
        let mut same = SmallRng::seed_from_u64(3);
        assert_eq!(e.server_context(&Sampler::new(1.0), &mut same), root);
    }

    #[test]
    fn repeated_traceparent_is_invalid_but_b3_still_counts() {
        let headers: [(&str, &[u8]); 3] = [("traceparent", TP), ("traceparent", TP), ("b3", B3)];
        let e = extract(headers);
        assert_eq!(
            e.formats,
            Formats {
                w3c: false,
                b3_single: true,
                b3_multi: false
            }
        );
        let parent = e.parent.unwrap();
        assert_eq!(
            parent.trace_id,
            trace_id(b"80f198ee56343ba864fe8b2a57d3eff7")
        );
        assert_eq!(
            parent.parent_span_id,
            Some(hex::decode::<8>(b"05e3ac9a4f6e3b90").unwrap())
        );
        assert_eq!(e.sampling, Some(true));
    }

    #[test]
    fn w3c_wins_over_b3_and_both_are_answered() {
        let headers: [(&str, &[u8]); 4] = [
            ("b3", B3),
            ("traceparent", TP),
            ("X-B3-TraceId", b"80f198ee56343ba864fe8b2a57d3eff7"),
            ("X-B3-SpanId", b"e457b5a2e4d86bd1"),
        ];
        let e = extract(headers);
        assert_eq!(
            e.formats,
            Formats {
                w3c: true,
                b3_single: true,
                b3_multi: true
            }
        );
        assert_eq!(
            e.parent.unwrap().trace_id,
            trace_id(b"4bf92f3577b34da6a3ce929d0e0e4736")
        );
    }

    #[test]
    fn b3_multi_without_decision_defers_to_the_sampler() {
        let headers: [(&str, &[u8]); 2] = [
            ("x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", b"e457b5a2e4d86bd1"),
        ];
        let e = extract(headers);
        assert_eq!(e.sampling, None);
        assert!(e.formats.b3_multi);
        let mut rng = SmallRng::seed_from_u64(5);
        assert!(!e.server_context(&Sampler::new(0.0), &mut rng).sampled);
        assert!(e.server_context(&Sampler::new(1.0), &mut rng).sampled);
    }

    #[test]
    fn b3_decisions_alone() {
        let deny: [(&str, &[u8]); 1] = [("b3", b"0")];
        let e = extract(deny);
        assert_eq!((e.parent, e.sampling), (None, Some(false)));
        let mut rng = SmallRng::seed_from_u64(9);
        assert!(!e.server_context(&Sampler::new(1.0), &mut rng).sampled);

        let debug: [(&str, &[u8]); 1] = [("X-B3-Flags", b"1")];
        let e = extract(debug);
        assert!(e.debug);
        let root = e.server_context(&Sampler::new(0.0), &mut rng);
        assert!(root.sampled && root.debug);
    }

    #[test]
    fn repeated_multi_header_is_invalid() {
        let headers: [(&str, &[u8]); 3] = [
            ("x-b3-traceid", b"80f198ee56343ba864fe8b2a57d3eff7"),
            ("x-b3-spanid", b"e457b5a2e4d86bd1"),
            ("x-b3-spanid", b"e457b5a2e4d86bd2"),
        ];
        assert_eq!(extract(headers), Extracted::default());
    }

    #[test]
    fn too_many_tracestate_lines_drop_the_state() {
        let headers: Vec<(&str, &[u8])> = std::iter::once(("traceparent", TP))
            .chain((0..MAX_TRACESTATE_HEADERS + 1).map(|_| ("tracestate", &b"a=1"[..])))
            .collect();
        let e = extract(headers);
        assert!(e.parent.is_some());
        assert!(e.tracestate.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = SmallRng::seed_from_u64(11);
        let names = [
            "traceparent",
            "tracestate",
            "b3",
            "x-b3-traceid",
            "x-b3-spanid",
            "x-b3-parentspanid",
            "x-b3-sampled",
            "x-b3-flags",
        ];
        for i in 0..2000u32 {
            let len = (rng.next_u32() % 80) as usize;
            let mut value = vec![0u8; len];
            rng.fill_bytes(&mut value);
            // Mostly hex and dashes, sometimes anything.
            if i % 3 != 0 {
                for b in &mut value {
                    *b = b"0123456789abcdef-"[usize::from(*b) % 17];
                }
            }
            let name = names[(rng.next_u32() as usize) % names.len()];
            let headers: [(&str, &[u8]); 2] = [(name, &value), ("traceparent", &value)];
            let e = extract(headers);
            let _ = e.server_context(&Sampler::new(0.5), &mut rng);
        }
    }
}
