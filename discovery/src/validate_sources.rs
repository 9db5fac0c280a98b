//! Validation of what the discovery sources read: each service's `dns` and `kubernetes`
//! entries (well-formed, no duplicates) and the `[discovery]` section (intervals within
//! bounds, usable name server addresses).

use crate::discovery_settings::DiscoverySettings;
use crate::field_path::FieldPath;
use crate::targets::{DnsTarget, KubernetesTarget};
use crate::validate::{Violation, MAX_TIMEOUT_MS};
use crate::ServiceConfig;
use std::collections::HashSet;

/// Shortest `discovery.file.poll_interval_ms`: below this the poll is busy work.
pub const MIN_FILE_POLL_INTERVAL_MS: u64 = 10;
/// Longest `discovery.debounce_ms`: a change must not wait longer than this to be applied.
pub const MAX_DEBOUNCE_MS: u64 = 60_000;

/// Violations in `service`'s `dns` and `kubernetes` entries.
pub fn check_service_sources(path: &FieldPath, service: &ServiceConfig) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (index, entry) in service.dns.iter().enumerate() {
        let entry_path = path.key("dns").index(index);
        match DnsTarget::parse(entry) {
            Ok(target) if !seen.insert(target.clone()) => {
                out.push(violation(
                    entry_path,
                    format!("duplicate dns entry {entry:?}"),
                ));
            }
            Ok(_) => {}
            Err(problem) => out.push(violation(
                entry_path,
                format!("dns entry {entry:?} {problem}"),
            )),
        }
    }
    let mut seen = HashSet::new();
    for (index, entry) in service.kubernetes.iter().enumerate() {
        let entry_path = path.key("kubernetes").index(index);
        match KubernetesTarget::parse(entry) {
            Ok(target) if !seen.insert(target.clone()) => {
                let message = format!("duplicate kubernetes entry {entry:?}");
                out.push(violation(entry_path, message));
            }
            Ok(_) => {}
            Err(problem) => {
                let message = format!("kubernetes entry {entry:?} {problem}");
                out.push(violation(entry_path, message));
            }
        }
    }
    out
}

/// Violations in `[discovery]`.
pub fn check_discovery(path: &FieldPath, discovery: &DiscoverySettings) -> Vec<Violation> {
    let mut out = Vec::new();
    if discovery.debounce_ms > MAX_DEBOUNCE_MS {
        let message = format!(
            "{} ms is more than {MAX_DEBOUNCE_MS} ms",
            discovery.debounce_ms
        );
        out.push(violation(path.key("debounce_ms"), message));
    }
    let poll = discovery.file.poll_interval_ms;
    if !(MIN_FILE_POLL_INTERVAL_MS..=MAX_TIMEOUT_MS).contains(&poll) {
        let message = format!("{poll} is outside {MIN_FILE_POLL_INTERVAL_MS} ms to one day");
        out.push(violation(path.key("file").key("poll_interval_ms"), message));
    }
    let dns = &discovery.dns;
    let dns_path = path.key("dns");
    for (field, value) in [
        ("min_refresh_ms", dns.min_refresh_ms),
        ("max_refresh_ms", dns.max_refresh_ms),
        ("timeout_ms", dns.timeout_ms),
    ] {
        if value == 0 {
            out.push(violation(dns_path.key(field), "must be greater than 0"));
        } else if value > MAX_TIMEOUT_MS {
            let message = format!("{value} ms is more than one day ({MAX_TIMEOUT_MS} ms)");
            out.push(violation(dns_path.key(field), message));
        }
    }
    if dns.min_refresh_ms > dns.max_refresh_ms {
        let message = format!(
            "{} ms is less than `min_refresh_ms` ({} ms)",
            dns.max_refresh_ms, dns.min_refresh_ms
        );
        out.push(violation(dns_path.key("max_refresh_ms"), message));
    }
    for (index, server) in dns.servers.iter().enumerate() {
        let server_path = dns_path.key("servers").index(index);
        if server.port() == 0 {
            out.push(violation(
                server_path,
                format!("server {server} has port 0"),
            ));
        } else if server.ip().is_unspecified() {
            let message = format!("server {server} has an unspecified address");
            out.push(violation(server_path, message));
        }
    }
    let kubernetes_path = path.key("kubernetes");
    if let Some(kubeconfig) = &discovery.kubernetes.kubeconfig {
        if kubeconfig.as_os_str().is_empty() {
            out.push(violation(
                kubernetes_path.key("kubeconfig"),
                "must not be empty (leave it out to infer)",
            ));
        }
    }
    if discovery.kubernetes.context.as_deref() == Some("") {
        out.push(violation(
            kubernetes_path.key("context"),
            "must not be empty (leave it out for the current context)",
        ));
    }
    out
}

fn violation(path: FieldPath, message: impl Into<String>) -> Violation {
    Violation {
        path,
        message: message.into(),
    }
}
