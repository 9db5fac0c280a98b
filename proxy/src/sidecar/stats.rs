//! A side's own counters and their Prometheus families. They move once per connection
//! (not per request), so every core adds to one set of atomics; a scrape reads them.
//!
//! Families: `coremesh_sidecar_connections_total{direction}` (accepted and sent on),
//! `coremesh_sidecar_refused_total{direction}` (destination is the proxy itself, or none),
//! `coremesh_sidecar_connect_failures_total{direction}` (opaque: nothing could be
//! reached), `coremesh_sidecar_shed_total{direction}` (closed while waiting in detection
//! to make room for a newer connection, see `sidecar/waiting.rs`). Detection and opaque bytes are counted per core by the transport families
//! (`coremesh_detect_total`, `coremesh_tcp_connections_total`, `coremesh_tcp_bytes_total`).

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
    pub shed: AtomicU64,
    /// TLS handshakes on this side's listener (inbound termination).
    pub tls: crate::transport::tls_stats::TlsStats,
}

pub fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl SideStats {
    /// Count a refused connection; the first of the process is logged at warn level.
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

/// The families of every side in `sides`, in the Prometheus text format (with the TLS
/// families of the inbound side and of this proxy's `outbound` connections, `tls_stats.rs`).
pub fn render(
    sides: &[(Direction, &SideStats)],
    outbound: &crate::transport::tls_stats::TlsStats,
    out: &mut String,
) {
    if sides.is_empty() {
        return;
    }
    type Pick = fn(&SideStats) -> &AtomicU64;
    let families: [(&str, &str, Pick); 4] = [
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
            "Opaque connections closed because nothing could be reached.",
            |s| &s.connect_failures,
        ),
        (
            "shed",
            "Connections closed while waiting in detection, to make room for newer ones.",
            |s| &s.shed,
        ),
    ];
    for (name, help, pick) in families {
        let _ = writeln!(out, "# HELP coremesh_sidecar_{name}_total {help}");
        let _ = writeln!(out, "# TYPE coremesh_sidecar_{name}_total counter");
        for (direction, stats) in sides {
            let _ = writeln!(
                out,
                "coremesh_sidecar_{name}_total{{direction=\"{}\"}} {}",
                direction.label(),
                pick(stats).load(Ordering::Relaxed)
            );
        }
    }
    let mut tls: Vec<(&str, &crate::transport::tls_stats::TlsStats)> = sides
        .iter()
        .filter(|(d, _)| *d == Direction::Inbound)
        .map(|(d, s)| (d.label(), &s.tls))
        .collect();
    tls.push(("outbound", outbound));
    crate::transport::tls_stats::render(&tls, out);
}
