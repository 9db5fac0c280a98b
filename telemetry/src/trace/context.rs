//! [`TraceContext`].
/// x
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// x
    pub trace_id: [u8; 16],
    /// x
    pub span_id: [u8; 8],
    /// x
    pub parent_span_id: Option<[u8; 8]>,
    /// x
    pub sampled: bool,
    /// x
    pub debug: bool,
}
