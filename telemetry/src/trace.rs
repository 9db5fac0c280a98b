//! Trace context (placeholder while the parsers are written).
mod context;
pub use context::TraceContext;
