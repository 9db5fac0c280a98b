//! TLS handshake outcomes by reason, and their Prometheus family
//! `coremesh_tls_handshake_failures_total{direction,reason}` (with
//! `coremesh_tls_handshakes_total{direction}` for the successes). They move once per
//! connection, so every core of a proxy adds to one set of atomics per direction, owned by
//! that proxy (the inbound side's in its `SideStats`, the outbound one handed to each
//! core's meshed endpoints): two proxies in one process count apart.

use std::fmt::Write;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a TLS connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// The handshake did not end within its timeout (a stalled or truncated hello).
    Timeout,
    /// The peer closed (or reset) the connection during the handshake.
    Closed,
    /// Not a well-formed TLS handshake (garbage after the record header, a bad message).
    Protocol,
    /// A certificate was required and the peer sent none.
    NoCertificate,
    /// The peer's certificate was refused (unknown CA, expired, wrong identity).
    BadCertificate,
    /// The peer refused the handshake with an alert.
    Alert,
    /// A listener that requires TLS got a plaintext connection.
    Plaintext,
    /// Anything else (a local configuration error, an I/O error).
    Other,
}

impl FailReason {
    pub const ALL: [FailReason; 8] = [
        FailReason::Timeout,
        FailReason::Closed,
        FailReason::Protocol,
        FailReason::NoCertificate,
        FailReason::BadCertificate,
        FailReason::Alert,
        FailReason::Plaintext,
        FailReason::Other,
    ];

    /// The metrics label `reason`.
    pub fn label(self) -> &'static str {
        match self {
            FailReason::Timeout => "timeout",
            FailReason::Closed => "closed",
            FailReason::Protocol => "protocol",
            FailReason::NoCertificate => "no_certificate",
            FailReason::BadCertificate => "bad_certificate",
            FailReason::Alert => "alert",
            FailReason::Plaintext => "plaintext",
            FailReason::Other => "other",
        }
    }

    /// What a failed handshake's error says.
    pub fn of(err: &io::Error) -> FailReason {
        if let Some(e) = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return match e {
                rustls::Error::NoCertificatesPresented => FailReason::NoCertificate,
                rustls::Error::InvalidCertificate(_) => FailReason::BadCertificate,
                rustls::Error::AlertReceived(_) => FailReason::Alert,
                rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
                | rustls::Error::PeerIncompatible(_)
                | rustls::Error::PeerMisbehaved(_)
                | rustls::Error::DecryptError => FailReason::Protocol,
                _ => FailReason::Other,
            };
        }
        match err.kind() {
            io::ErrorKind::TimedOut => FailReason::Timeout,
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe => FailReason::Closed,
            io::ErrorKind::PermissionDenied => FailReason::BadCertificate,
            io::ErrorKind::InvalidData => FailReason::Protocol,
            _ => FailReason::Other,
        }
    }
}

/// Handshakes done and refused on one side.
#[derive(Debug, Default)]
pub struct TlsStats {
    pub handshakes: AtomicU64,
    failures: [AtomicU64; FailReason::ALL.len()],
}

impl TlsStats {
    /// Count one refusal; the first for each reason is logged at warn level.
    pub fn failed(&self, reason: FailReason) {
        if self.failures[reason as usize].fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                reason = reason.label(),
                "refused a TLS connection; counted in coremesh_tls_handshake_failures_total \
                 (further ones at debug level)"
            );
        }
    }

    /// Refusals so far for `reason`.
    pub fn failures(&self, reason: FailReason) -> u64 {
        self.failures[reason as usize].load(Ordering::Relaxed)
    }

    pub fn succeeded(&self) {
        self.handshakes.fetch_add(1, Ordering::Relaxed);
    }
}

/// The TLS families for `sides` (a `direction` label and its counters), Prometheus text.
pub fn render(sides: &[(&str, &TlsStats)], out: &mut String) {
    if sides.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "# HELP coremesh_tls_handshakes_total TLS handshakes completed."
    );
    let _ = writeln!(out, "# TYPE coremesh_tls_handshakes_total counter");
    for (direction, stats) in sides {
        let n = stats.handshakes.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "coremesh_tls_handshakes_total{{direction=\"{direction}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP coremesh_tls_handshake_failures_total TLS connections refused, by reason."
    );
    let _ = writeln!(out, "# TYPE coremesh_tls_handshake_failures_total counter");
    for (direction, stats) in sides {
        for reason in FailReason::ALL {
            let _ = writeln!(
                out,
                "coremesh_tls_handshake_failures_total{{direction=\"{direction}\",reason=\"{}\"}} {}",
                reason.label(),
                stats.failures(reason)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_rendered_by_reason() {
        let stats = TlsStats::default();
        stats.failed(FailReason::Timeout);
        stats.failed(FailReason::Timeout);
        stats.failed(FailReason::Plaintext);
        stats.succeeded();
        let mut out = String::new();
        render(&[("inbound", &stats)], &mut out);
        assert!(out.contains("coremesh_tls_handshakes_total{direction=\"inbound\"} 1\n"));
        for (reason, n) in [("timeout", 2), ("plaintext", 1), ("protocol", 0)] {
            let line = format!(
                "coremesh_tls_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}} {n}\n"
            );
            assert!(out.contains(&line), "{line} in {out}");
        }
        assert_eq!(out.matches("# TYPE").count(), 2);
    }

    #[test]
    fn errors_map_to_reasons() {
        let rustls_err = |e| io::Error::other(e);
        assert_eq!(
            FailReason::of(&rustls_err(rustls::Error::NoCertificatesPresented)),
            FailReason::NoCertificate
        );
        assert_eq!(
            FailReason::of(&io::ErrorKind::TimedOut.into()),
            FailReason::Timeout
        );
        assert_eq!(
            FailReason::of(&io::ErrorKind::UnexpectedEof.into()),
            FailReason::Closed
        );
    }
}
