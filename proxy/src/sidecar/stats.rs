//! A side's counters and their Prometheus families. They move once per connection (not
//! per request), so every core adds to one set of atomics; a scrape reads them.
//!
//! Families: `coremesh_sidecar_connections_total{direction}` (accepted and sent on),
//! `coremesh_sidecar_refused_total{direction}` (destination is the proxy itself, or none),
//! `coremesh_sidecar_connect_failures_total{direction}` (opaque: no endpoint answered),
//! `coremesh_sidecar_detect_total{direction,protocol,reason}`,
//! `coremesh_sidecar_opaque_bytes_total{direction,way}`.

use super::detect_first::{Protocol, Reason};
use super::Direction;
use crate::core::Core;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct SideStats {
    pub connections: AtomicU64,
    pub refused: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Indexed by [`detect_slot`].
    pub detect: [AtomicU64; DETECT_SLOTS.len()],
    pub to_upstream: AtomicU64,
    pub to_client: AtomicU64,
}

/// The (protocol, reason) pairs counted, in label form.
pub const DETECT_SLOTS: [(&str, &str); 5] = [
    ("http1", "matched"),
    ("opaque", "opaque_port"),
    ("opaque", "timeout"),
    ("opaque", "unrecognised"),
    ("closed", "closed"),
];

fn detect_slot(protocol: Protocol, reason: Reason) -> usize {
    match (protocol, reason) {
        (Protocol::Http1, _) => 0,
        (_, Reason::OpaquePort) => 1,
        (_, Reason::Timeout) => 2,
        (Protocol::Closed, _) => 4,
        _ => 3,
    }
}

pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl SideStats {
    pub fn detected(&self, protocol: Protocol, reason: Reason) {
        count(&self.detect[detect_slot(protocol, reason)]);
    }

    pub fn relayed(&self, to_upstream: u64, to_client: u64) {
        self.to_upstream.fetch_add(to_upstream, Ordering::Relaxed);
        self.to_client.fetch_add(to_client, Ordering::Relaxed);
    }

    /// Count a refused connection; the first on each core is logged at warn level.
    pub fn refused(&self, core: &Core, direction: Direction, peer: SocketAddr, to: SocketAddr) {
        let first = self.refused.fetch_add(1, Ordering::Relaxed) == 0;
        if first {
            tracing::warn!(
                core = core.id,
                direction = direction.label(),
                %peer,
                "refused a connection whose destination {to} is this proxy's own listener \
                 (not redirected, or it would loop); counted in coremesh_sidecar_refused_total"
            );
        } else {
            tracing::debug!(direction = direction.label(), %peer, "refused: destination {to} is this proxy");
        }
    }
}

/// The families of every side in `sides`, in the Prometheus text format.
pub fn render(sides: &[(Direction, &SideStats)], out: &mut String) {
    if sides.is_empty() {
        return;
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    type Pick = fn(&SideStats) -> &AtomicU64;
    let simple: [(&str, &str, Pick); 3] = [
        (
            "connections",
            "Connections a sidecar side accepted and sent on.",
            |s| &s.connections,
        ),
        (
            "refused",
            "Connections refused: their destination is this proxy (a loop) or unknown.",
            |s| &s.refused,
        ),
        (
            "connect_failures",
            "Opaque connections closed because no upstream could be reached.",
            |s| &s.connect_failures,
        ),
    ];
    for (name, help, pick) in simple {
        let _ = writeln!(out, "# HELP coremesh_sidecar_{name}_total {help}");
        let _ = writeln!(out, "# TYPE coremesh_sidecar_{name}_total counter");
        for (direction, stats) in sides {
            let _ = writeln!(
                out,
                "coremesh_sidecar_{name}_total{{direction=\"{}\"}} {}",
                direction.label(),
                load(pick(stats))
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP coremesh_sidecar_detect_total Protocol detection outcomes."
    );
    let _ = writeln!(out, "# TYPE coremesh_sidecar_detect_total counter");
    for (direction, stats) in sides {
        for (i, (protocol, reason)) in DETECT_SLOTS.iter().enumerate() {
            let _ = writeln!(
                out,
                "coremesh_sidecar_detect_total{{direction=\"{}\",protocol=\"{protocol}\",reason=\"{reason}\"}} {}",
                direction.label(),
                load(&stats.detect[i])
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP coremesh_sidecar_opaque_bytes_total Bytes relayed on opaque connections."
    );
    let _ = writeln!(out, "# TYPE coremesh_sidecar_opaque_bytes_total counter");
    for (direction, stats) in sides {
        for (way, counter) in [
            ("to_upstream", &stats.to_upstream),
            ("to_client", &stats.to_client),
        ] {
            let _ = writeln!(
                out,
                "coremesh_sidecar_opaque_bytes_total{{direction=\"{}\",way=\"{way}\"}} {}",
                direction.label(),
                load(counter)
            );
        }
    }
}
