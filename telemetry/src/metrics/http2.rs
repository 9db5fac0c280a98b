//! HTTP/2 errors the proxy met on client connections, by RFC 9113 error code: the
//! `reason` label of `coremesh_http2_errors_total`. One global cell per code; codes the
//! RFC does not name count under `unknown`.

use super::layout::HTTP2_ERRORS;
use super::{CoreMetrics, MetricsSnapshot};

/// The RFC 9113 §7 error code names, by code, then `unknown`.
pub const REASONS: [&str; 15] = [
    "no_error",
    "protocol_error",
    "internal_error",
    "flow_control_error",
    "settings_timeout",
    "stream_closed",
    "frame_size_error",
    "refused_stream",
    "cancel",
    "compression_error",
    "connect_error",
    "enhance_your_calm",
    "inadequate_security",
    "http_1_1_required",
    "unknown",
];

pub(crate) const HTTP2_CELLS: usize = REASONS.len();

fn slot(code: u32) -> usize {
    (code as usize).min(REASONS.len() - 1)
}

impl CoreMetrics {
    /// The proxy ended a client's HTTP/2 connection or stream with error `code` (or the
    /// client's error ended it).
    pub fn record_http2_error(&self, code: u32) {
        self.add(HTTP2_ERRORS + slot(code), 1);
    }
}

impl MetricsSnapshot {
    /// HTTP/2 errors with `code`.
    pub fn http2_errors(&self, code: u32) -> u64 {
        self.get(HTTP2_ERRORS + slot(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LayoutBuilder;

    #[test]
    fn codes_count_under_their_names_and_the_rest_under_unknown() {
        let core = CoreMetrics::new(LayoutBuilder::new(true).build());
        core.record_http2_error(11);
        core.record_http2_error(1);
        core.record_http2_error(1);
        core.record_http2_error(0x99);
        let s = core.snapshot();
        assert_eq!(REASONS[11], "enhance_your_calm");
        assert_eq!(s.http2_errors(11), 1);
        assert_eq!(s.http2_errors(1), 2);
        assert_eq!(s.http2_errors(14), 1);
        assert_eq!(s.http2_errors(0x55), 1, "unknown codes share one cell");
    }
}
