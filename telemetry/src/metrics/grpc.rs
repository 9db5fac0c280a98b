//! gRPC responses by status, per `direction`: `coremesh_grpc_responses_total{direction,
//! grpc_status}`. One global cell per (direction, code); codes above 16 count under
//! `unknown`.

use super::labels::Direction;
use super::layout::GRPC_RESPONSES;
use super::{CoreMetrics, MetricsSnapshot};

/// Codes 0 to 16, then one cell for any other value.
pub(crate) const CODES: usize = 18;
pub(crate) const GRPC_CELLS: usize = Direction::ALL.len() * CODES;

/// The label value of cell `code` (0 to 17).
pub fn code_label(code: usize) -> String {
    if code + 1 >= CODES {
        "unknown".to_owned()
    } else {
        code.to_string()
    }
}

fn cell(direction: Direction, code: u32) -> usize {
    GRPC_RESPONSES + direction.slot() * CODES + (code as usize).min(CODES - 1)
}

impl CoreMetrics {
    /// A gRPC call that came in on `direction` ended with `grpc-status: code` (the
    /// endpoint's or the proxy's own).
    pub fn record_grpc_response(&self, direction: Direction, code: u32) {
        self.add(cell(direction, code), 1);
    }
}

impl MetricsSnapshot {
    /// gRPC calls on `direction` that ended with status `code`.
    pub fn grpc_responses(&self, direction: Direction, code: u32) -> u64 {
        self.get(cell(direction, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LayoutBuilder;

    #[test]
    fn statuses_count_per_direction_and_the_rest_under_unknown() {
        let core = CoreMetrics::new(LayoutBuilder::new(true).build());
        core.record_grpc_response(Direction::Inbound, 0);
        core.record_grpc_response(Direction::Inbound, 14);
        core.record_grpc_response(Direction::Outbound, 14);
        core.record_grpc_response(Direction::Proxy, 99);
        let s = core.snapshot();
        assert_eq!(s.grpc_responses(Direction::Inbound, 0), 1);
        assert_eq!(s.grpc_responses(Direction::Inbound, 14), 1);
        assert_eq!(s.grpc_responses(Direction::Outbound, 14), 1);
        assert_eq!(s.grpc_responses(Direction::Outbound, 0), 0);
        assert_eq!(s.grpc_responses(Direction::Proxy, 17), 1);
        assert_eq!(code_label(17), "unknown");
        assert_eq!(code_label(4), "4");
    }
}
