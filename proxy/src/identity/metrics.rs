//! [`IdentityMetrics`]: the certificate's expiry and the outcome of each reload, for
//! `/metrics`. One set per proxy (made by `identity::start`, shared by its reloader and
//! its `/metrics`): written by the reloader (off the cores), read at scrape time. Two
//! proxies in one process count apart.
//!
//! Families: `coremesh_identity_cert_expiry_timestamp_seconds` (gauge: the expiry of the
//! certificate in force), `coremesh_identity_reloads_total{result="ok"}` and
//! `coremesh_identity_reloads_total{result="refused",reason="…"}` (counters). Nothing is
//! written while no identity was ever loaded. (The inbound requests the policy refuses,
//! `coremesh_inbound_denied_total`, are counted by each core with its other request
//! metrics.)

use super::reason::Reason;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// One proxy's identity metrics.
#[derive(Debug)]
pub struct IdentityMetrics {
    /// Seconds since the Unix epoch; 0 while no identity is in force.
    expiry: AtomicI64,
    reloads_ok: AtomicU64,
    /// Per [`Reason::index`].
    refused: [AtomicU64; Reason::ALL.len()],
}

impl Default for IdentityMetrics {
    fn default() -> Self {
        IdentityMetrics::new()
    }
}

impl IdentityMetrics {
    pub const fn new() -> IdentityMetrics {
        IdentityMetrics {
            expiry: AtomicI64::new(0),
            reloads_ok: AtomicU64::new(0),
            refused: [const { AtomicU64::new(0) }; Reason::ALL.len()],
        }
    }

    /// An identity expiring at `not_after` is in force (the first or a reload).
    pub fn installed(&self, not_after: i64) {
        self.expiry.store(not_after, Ordering::Relaxed);
    }

    pub fn reload_ok(&self) {
        self.reloads_ok.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reload_refused(&self, reason: Reason) {
        self.refused[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn expiry(&self) -> i64 {
        self.expiry.load(Ordering::Relaxed)
    }

    pub fn reloads_ok(&self) -> u64 {
        self.reloads_ok.load(Ordering::Relaxed)
    }

    pub fn reloads_refused(&self, reason: Reason) -> u64 {
        self.refused[reason.index()].load(Ordering::Relaxed)
    }

    /// Appends the families in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let expiry = self.expiry();
        if expiry == 0 {
            return;
        }
        out.push_str("# HELP coremesh_identity_cert_expiry_timestamp_seconds When the workload certificate in force expires (seconds since the Unix epoch).\n");
        out.push_str("# TYPE coremesh_identity_cert_expiry_timestamp_seconds gauge\n");
        let _ = writeln!(
            out,
            "coremesh_identity_cert_expiry_timestamp_seconds {expiry}"
        );
        out.push_str("# HELP coremesh_identity_reloads_total Reloads of the identity files: installed, or refused by reason (the identity in force stays).\n");
        out.push_str("# TYPE coremesh_identity_reloads_total counter\n");
        let _ = writeln!(
            out,
            "coremesh_identity_reloads_total{{result=\"ok\"}} {}",
            self.reloads_ok()
        );
        for reason in Reason::ALL {
            let count = self.reloads_refused(reason);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "coremesh_identity_reloads_total{{result=\"refused\",reason=\"{}\"}} {count}",
                    reason.label()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdentityMetrics;
    use crate::identity::Reason;

    #[test]
    fn nothing_is_written_before_an_identity_and_every_count_after() {
        let metrics = IdentityMetrics::new();
        let mut out = String::new();
        metrics.render(&mut out);
        assert_eq!(out, "");
        metrics.installed(1_900_000_000);
        metrics.reload_ok();
        metrics.reload_refused(Reason::KeyMismatch);
        metrics.reload_refused(Reason::KeyMismatch);
        metrics.render(&mut out);
        let samples: Vec<&str> = out.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            vec![
                "coremesh_identity_cert_expiry_timestamp_seconds 1900000000",
                "coremesh_identity_reloads_total{result=\"ok\"} 1",
                "coremesh_identity_reloads_total{result=\"refused\",reason=\"key_mismatch\"} 2",
            ]
        );
    }
}
