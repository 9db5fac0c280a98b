//! The labels of the sidecar's transport counters — protocol detection and opaque TCP —
//! and where those counters sit in a layout: the detection counts among the globals, one
//! TCP block among the globals (connections to no known service) and one in each service's
//! block.

use super::latency::{bucket, nanos, HISTOGRAM_STRIDE, INF_SLOT, SUM_SLOT};
use super::layout::{ServiceId, DETECTIONS, SVC_TCP, TCP_UNKNOWN};
use super::snapshot::LatencyHistogram;
use super::{CoreMetrics, MetricsSnapshot};
use std::time::Duration;

/// Which side of the sidecar a connection came in on, the `direction` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Accepted for the local application (from other hosts).
    Inbound,
    /// Accepted from the local application, on its way out.
    Outbound,
}

impl Side {
    /// Both sides, in slot order.
    pub const ALL: [Side; 2] = [Side::Inbound, Side::Outbound];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Inbound => "inbound",
            Side::Outbound => "outbound",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// The protocol detection decided on, the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 prior-knowledge connection preface.
    Http2,
    /// A TLS ClientHello record.
    Tls,
    /// Anything else: relayed as opaque bytes.
    Opaque,
}

impl Protocol {
    /// Every protocol, in slot order.
    pub const ALL: [Protocol; 4] = [
        Protocol::Http1,
        Protocol::Http2,
        Protocol::Tls,
        Protocol::Opaque,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
            Protocol::Tls => "tls",
            Protocol::Opaque => "opaque",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Why detection decided as it did, the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DetectReason {
    /// The first bytes matched the protocol.
    Matched,
    /// The destination port is configured as opaque: nothing was read.
    OpaquePort,
    /// No decision within the detection timeout (a server-speaks-first protocol sends
    /// nothing until the server does).
    Timeout,
    /// The client closed (or reset) its side before a decision.
    Closed,
    /// The first bytes are none of the known protocols.
    Unrecognised,
}

impl DetectReason {
    /// Every reason, in slot order.
    pub const ALL: [DetectReason; 5] = [
        DetectReason::Matched,
        DetectReason::OpaquePort,
        DetectReason::Timeout,
        DetectReason::Closed,
        DetectReason::Unrecognised,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DetectReason::Matched => "matched",
            DetectReason::OpaquePort => "opaque_port",
            DetectReason::Timeout => "timeout",
            DetectReason::Closed => "closed",
            DetectReason::Unrecognised => "unrecognised",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Which way relayed bytes went, the `way` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Way {
    /// From the client to the upstream.
    ToUpstream,
    /// From the upstream back to the client.
    ToClient,
}

impl Way {
    /// Both ways, in slot order.
    pub const ALL: [Way; 2] = [Way::ToUpstream, Way::ToClient];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Way::ToUpstream => "to_upstream",
            Way::ToClient => "to_client",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Detection counters: one per (side, protocol, reason).
pub(crate) const DETECT_CELLS: usize =
    Side::ALL.len() * Protocol::ALL.len() * DetectReason::ALL.len();

/// Offset of a detection counter within the detection block.
pub(crate) const fn detect_cell(side: Side, protocol: Protocol, reason: DetectReason) -> usize {
    (side.slot() * Protocol::ALL.len() + protocol.slot()) * DetectReason::ALL.len() + reason.slot()
}

/// Per side: connections, then bytes per way, then the connect-time histogram.
const TCP_PER_SIDE: usize = 1 + Way::ALL.len() + HISTOGRAM_STRIDE;
/// Opaque TCP counters of one destination (a service, or none).
pub(crate) const TCP_CELLS: usize = Side::ALL.len() * TCP_PER_SIDE;

/// Offset of the connection counter of `side` within a TCP block.
pub(crate) const fn tcp_connections_cell(side: Side) -> usize {
    side.slot() * TCP_PER_SIDE
}

/// Offset of the byte counter of `side` and `way` within a TCP block.
pub(crate) const fn tcp_bytes_cell(side: Side, way: Way) -> usize {
    side.slot() * TCP_PER_SIDE + 1 + way.slot()
}

/// Offset of the connect-time histogram of `side` within a TCP block.
pub(crate) const fn tcp_connect_cell(side: Side) -> usize {
    side.slot() * TCP_PER_SIDE + 1 + Way::ALL.len()
}

impl CoreMetrics {
    /// An opaque TCP connection on `side` to `service` (`None`: to no known service) took
    /// `connect_time` to connect to its upstream.
    pub fn record_tcp_connect_time(
        &self,
        side: Side,
        service: Option<ServiceId>,
        connect_time: Duration,
    ) {
        let base = tcp_connect_cell(side);
        let ns = nanos(connect_time);
        self.add_tcp(service, base + bucket(ns), 1);
        self.add_tcp(service, base + SUM_SLOT, ns);
    }

    /// Detection on `side` decided `protocol` for `reason`.
    pub fn record_detection(&self, side: Side, protocol: Protocol, reason: DetectReason) {
        self.add(DETECTIONS + detect_cell(side, protocol, reason), 1);
    }

    /// An opaque TCP connection on `side` to `service` (`None`: to no known service) was
    /// established.
    pub fn record_tcp_connection(&self, side: Side, service: Option<ServiceId>) {
        self.add_tcp(service, tcp_connections_cell(side), 1);
    }

    /// An opaque TCP connection on `side` to `service` carried `bytes` the `way` given.
    pub fn record_tcp_bytes(&self, side: Side, service: Option<ServiceId>, way: Way, bytes: u64) {
        self.add_tcp(service, tcp_bytes_cell(side, way), bytes);
    }

    fn add_tcp(&self, service: Option<ServiceId>, cell: usize, n: u64) {
        match service {
            Some(service) => self.add_service(service, SVC_TCP + cell, n),
            None => self.add(TCP_UNKNOWN + cell, n),
        }
    }
}

impl MetricsSnapshot {
    /// Detections on `side` that decided `protocol` for `reason`.
    pub fn detections(&self, side: Side, protocol: Protocol, reason: DetectReason) -> u64 {
        self.get(DETECTIONS + detect_cell(side, protocol, reason))
    }

    /// Opaque TCP connections on `side` to `service` (`None`: to no known service).
    pub fn tcp_connections(&self, side: Side, service: Option<&str>) -> u64 {
        self.tcp_counter(service, tcp_connections_cell(side))
    }

    /// Bytes relayed on opaque TCP connections on `side` to `service`, the `way` given.
    pub fn tcp_bytes(&self, side: Side, service: Option<&str>, way: Way) -> u64 {
        self.tcp_counter(service, tcp_bytes_cell(side, way))
    }

    /// The connect times of opaque TCP connections on `side` to `service`.
    pub fn tcp_connect_time(&self, side: Side, service: Option<&str>) -> LatencyHistogram {
        let base = tcp_connect_cell(side);
        let buckets: Vec<u64> = (0..=INF_SLOT)
            .map(|b| self.tcp_counter(service, base + b))
            .collect();
        LatencyHistogram {
            count: buckets.iter().fold(0, |a, b| a.wrapping_add(*b)),
            buckets,
            sum_nanos: self.tcp_counter(service, base + SUM_SLOT),
        }
    }

    fn tcp_counter(&self, service: Option<&str>, cell: usize) -> u64 {
        match service {
            Some(service) => self.service_counter(service, SVC_TCP + cell),
            None => self.get(TCP_UNKNOWN + cell),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_all() {
        for (i, s) in Side::ALL.iter().enumerate() {
            assert_eq!(s.slot(), i);
        }
        for (i, p) in Protocol::ALL.iter().enumerate() {
            assert_eq!(p.slot(), i);
        }
        for (i, r) in DetectReason::ALL.iter().enumerate() {
            assert_eq!(r.slot(), i);
        }
        for (i, w) in Way::ALL.iter().enumerate() {
            assert_eq!(w.slot(), i);
        }
    }

    #[test]
    fn cells_are_distinct_and_inside_their_blocks() {
        let mut seen = std::collections::HashSet::new();
        for side in Side::ALL {
            for protocol in Protocol::ALL {
                for reason in DetectReason::ALL {
                    let cell = detect_cell(side, protocol, reason);
                    assert!(cell < DETECT_CELLS);
                    assert!(seen.insert(cell));
                }
            }
        }
        assert_eq!(seen.len(), DETECT_CELLS);
        let mut seen = std::collections::HashSet::new();
        for side in Side::ALL {
            assert!(seen.insert(tcp_connections_cell(side)));
            for way in Way::ALL {
                assert!(seen.insert(tcp_bytes_cell(side, way)));
            }
            for slot in 0..HISTOGRAM_STRIDE {
                assert!(seen.insert(tcp_connect_cell(side) + slot));
            }
        }
        assert!(seen.iter().all(|&c| c < TCP_CELLS));
        assert_eq!(seen.len(), TCP_CELLS);
    }

    #[test]
    fn counts_land_under_their_labels_and_survive_a_merge() {
        let mut builder = super::super::LayoutBuilder::new(true);
        let db = builder.add_service("db", ["10.0.0.1:5432"]);
        builder.add_service("cache", ["10.0.0.2:6379"]);
        let layout = builder.build();
        let core = CoreMetrics::new(layout.clone());
        core.record_detection(Side::Outbound, Protocol::Opaque, DetectReason::Timeout);
        core.record_detection(Side::Outbound, Protocol::Opaque, DetectReason::Timeout);
        core.record_detection(Side::Inbound, Protocol::Http1, DetectReason::Matched);
        core.record_tcp_connection(Side::Outbound, Some(db));
        core.record_tcp_bytes(Side::Outbound, Some(db), Way::ToUpstream, 10);
        core.record_tcp_bytes(Side::Outbound, Some(db), Way::ToClient, 20);
        core.record_tcp_connection(Side::Outbound, None);
        core.record_tcp_bytes(Side::Outbound, None, Way::ToClient, 7);
        core.record_tcp_connect_time(Side::Outbound, None, Duration::from_millis(2));
        core.record_tcp_connect_time(Side::Outbound, Some(db), Duration::from_millis(20));
        let mut merged = MetricsSnapshot::empty();
        merged.merge(&core.snapshot());
        merged.merge(&CoreMetrics::new(layout).snapshot());
        let m = &merged;
        let (out, inb) = (Side::Outbound, Side::Inbound);
        assert_eq!(
            m.detections(out, Protocol::Opaque, DetectReason::Timeout),
            2
        );
        assert_eq!(m.detections(inb, Protocol::Http1, DetectReason::Matched), 1);
        assert_eq!(
            m.detections(inb, Protocol::Opaque, DetectReason::Timeout),
            0
        );
        assert_eq!(m.tcp_connections(out, Some("db")), 1);
        assert_eq!(m.tcp_connections(out, Some("cache")), 0);
        assert_eq!(m.tcp_connections(inb, Some("db")), 0);
        assert_eq!(m.tcp_connections(out, None), 1);
        assert_eq!(m.tcp_bytes(out, Some("db"), Way::ToUpstream), 10);
        assert_eq!(m.tcp_bytes(out, Some("db"), Way::ToClient), 20);
        assert_eq!(m.tcp_bytes(out, None, Way::ToClient), 7);
        assert_eq!(m.tcp_bytes(out, None, Way::ToUpstream), 0);
        let passthrough = m.tcp_connect_time(out, None);
        assert_eq!((passthrough.count, passthrough.buckets[1]), (1, 1));
        assert_eq!(passthrough.sum_nanos, 2_000_000);
        let db_connects = m.tcp_connect_time(out, Some("db"));
        assert_eq!((db_connects.count, db_connects.buckets[4]), (1, 1));
        assert_eq!(m.tcp_connect_time(inb, Some("db")).count, 0);
        assert_eq!(m.tcp_connect_time(out, Some("cache")).count, 0);
        // Nothing leaked into the neighbouring service's counters.
        assert_eq!(m.retry_budget_exhausted("cache"), 0);
        assert_eq!(m.upstream_connections_reused("db"), 0);
    }
}
