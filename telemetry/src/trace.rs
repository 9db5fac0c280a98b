//! Distributed-trace context: reading it from a request's headers, deciding whether to
//! sample, making span ids, and writing it to the upstream request.
//!
//! Formats read: W3C Trace Context (`traceparent`, `tracestate`), B3 single header (`b3`)
//! and B3 multiple headers (`X-B3-TraceId`, `X-B3-SpanId`, `X-B3-ParentSpanId`,
//! `X-B3-Sampled`, `X-B3-Flags`). Invalid input is ignored (the request starts a new root
//! trace); nothing here panics on what a peer sends.
//!
//! One request's flow:
//!
//! ```
//! use coremesh_telemetry::trace::{extract, write_trace_headers, Sampler};
//! use rand::{rngs::SmallRng, SeedableRng};
//!
//! let mut rng = SmallRng::seed_from_u64(7);
//! let sampler = Sampler::new(0.01);
//! let headers: [(&str, &[u8]); 1] = [(
//!     "traceparent",
//!     b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
//! )];
//! let incoming = extract(headers);
//! let request = incoming.server_context(&sampler, &mut rng); // the proxy's span
//! let attempt = request.child(&mut rng); // one per attempt
//! let mut head = Vec::new();
//! write_trace_headers(&attempt, incoming.formats, &incoming.tracestate, &mut head);
//! assert!(head.starts_with(b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-"));
//! assert!(head.ends_with(b"-01\r\n"));
//! ```

mod b3;
mod context;
mod extract;
mod hex;
mod inject;
pub(crate) mod sampler;
mod tracestate;
mod w3c;

pub use context::{random_span_id, random_trace_id, TraceContext};
pub use extract::{extract, Extracted, Formats};
pub use hex::Hex;
pub use inject::{is_trace_header, write_trace_headers, TRACE_HEADERS};
pub use sampler::{Sampler, DEFAULT_SAMPLE_RATIO};
pub use tracestate::{TraceState, MAX_TRACESTATE_HEADERS};
