//! [`TraceContext`]: where a span sits in its trace (trace id, its own span id, its parent)
//! and whether the trace is sampled; new ids come from a caller-provided RNG so that tests
//! can replay exact sequences.

use super::hex::Hex;
use rand::RngCore;

/// One span's place in a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace (never all zero).
    pub trace_id: [u8; 16],
    /// This span (never all zero).
    pub span_id: [u8; 8],
    /// The span this one is a child of, when known.
    pub parent_span_id: Option<[u8; 8]>,
    /// Whether the trace is recorded (and its spans exported).
    pub sampled: bool,
    /// B3 debug: sample regardless of ratio, and say so downstream.
    pub debug: bool,
}

impl TraceContext {
    /// The first span of a new trace. Draws the trace id, then the span id.
    pub fn new_root<R: RngCore + ?Sized>(sampled: bool, rng: &mut R) -> TraceContext {
        let trace_id = random_trace_id(rng);
        TraceContext {
            trace_id,
            span_id: random_span_id(rng),
            parent_span_id: None,
            sampled,
            debug: false,
        }
    }

    /// A child span: same trace and sampling, a new span id, this span as its parent.
    pub fn child<R: RngCore + ?Sized>(&self, rng: &mut R) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_span_id(rng),
            parent_span_id: Some(self.span_id),
            sampled: self.sampled,
            debug: self.debug,
        }
    }

    /// The trace id as 32 lower-case hex digits (for logs).
    pub fn trace_id_hex(&self) -> Hex<'_> {
        Hex(&self.trace_id)
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> Hex<'_> {
        Hex(&self.span_id)
    }
}

/// A random, non-zero trace id.
pub fn random_trace_id<R: RngCore + ?Sized>(rng: &mut R) -> [u8; 16] {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    non_zero(&mut id);
    id
}

/// A random, non-zero span id.
pub fn random_span_id<R: RngCore + ?Sized>(rng: &mut R) -> [u8; 8] {
    let mut id = [0u8; 8];
    rng.fill_bytes(&mut id);
    non_zero(&mut id);
    id
}

/// All-zero ids are invalid in both W3C and B3; an RNG that gives one (chance 2^-64, or a
/// test's constant RNG) gets its last byte set instead of a second draw.
fn non_zero(id: &mut [u8]) {
    if id.iter().all(|&b| b == 0) {
        if let Some(last) = id.last_mut() {
            *last = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn ids_are_deterministic_given_the_rng() {
        let a = TraceContext::new_root(true, &mut SmallRng::seed_from_u64(1));
        let b = TraceContext::new_root(true, &mut SmallRng::seed_from_u64(1));
        assert_eq!(a, b);
        assert_ne!(a.trace_id, [0; 16]);
        assert_eq!(a.parent_span_id, None);
    }

    #[test]
    fn child_keeps_trace_and_points_at_parent() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut root = TraceContext::new_root(false, &mut rng);
        root.debug = true;
        let child = root.child(&mut rng);
        assert_eq!(child.trace_id, root.trace_id);
        assert_eq!(child.parent_span_id, Some(root.span_id));
        assert_ne!(child.span_id, root.span_id);
        assert!(!child.sampled);
        assert!(child.debug);
    }

    #[test]
    fn a_zero_rng_still_gives_valid_ids() {
        let mut zeros = StepRng::new(0, 0);
        let root = TraceContext::new_root(true, &mut zeros);
        assert_eq!(root.trace_id[..15], [0; 15]);
        assert_eq!(root.trace_id[15], 1);
        assert_eq!(root.span_id, [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(root.span_id_hex().to_string(), "0000000000000001");
    }
}
