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
    if discovery.first_wait_ms > MAX_TIMEOUT_MS {
        let message = format!("{} ms is more than a day", discovery.first_wait_ms);
        out.push(violation(path.key("first_wait_ms"), message));
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
    for (field, value, max) in [
        (
            "watch_timeout_secs",
            discovery.kubernetes.watch_timeout_secs,
            MAX_KUBERNETES_WATCH_TIMEOUT_SECS,
        ),
        (
            "list_page_size",
            discovery.kubernetes.list_page_size,
            MAX_KUBERNETES_LIST_PAGE_SIZE,
        ),
    ] {
        if !(1..=max).contains(&value) {
            let message = format!("{value} is outside 1 to {max}");
            out.push(violation(kubernetes_path.key(field), message));
        }
    }
    let trust_domain = &discovery.kubernetes.trust_domain;
    if let Err(problem) = crate::SpiffeId::parse(&format!("spiffe://{trust_domain}")) {
        out.push(violation(
            kubernetes_path.key("trust_domain"),
            format!("{trust_domain:?} is not a SPIFFE trust domain: {problem}"),
        ));
    }
    out
}

/// An hour: the API server's own limit on a request is about as long (its minimum request
/// timeout, 1800 s, randomised up to twice that).
const MAX_KUBERNETES_WATCH_TIMEOUT_SECS: u32 = 3600;
/// Larger pages gain nothing and make one answer large.
const MAX_KUBERNETES_LIST_PAGE_SIZE: u32 = 10_000;

fn violation(path: FieldPath, message: impl Into<String>) -> Violation {
    Violation {
        path,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use crate::discovery_settings::*;
    use crate::{parse_config, Config, DnsSettings, KubernetesSettings};
    use std::path::PathBuf;

    fn parsed(text: &str) -> Config {
        match parse_config(text, "s.toml") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        match parse_config(text, "s.toml") {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn dns_and_kubernetes_entries_parse_in_both_forms() {
        let config = parsed(
            r#"
[[services]]
name = "a"
dns = ["a.example.com:80", "b.example.com:8080"]

[[services]]
name = "b"
kubernetes = "web.prod.svc.cluster.local:http"

[[services]]
name = "c"
endpoints = ["10.0.0.1:80"]
kubernetes = ["web.prod:80", "web.staging:80"]
"#,
        );
        assert_eq!(
            config.services[0].dns,
            ["a.example.com:80", "b.example.com:8080"]
        );
        assert!(config.services[0].kubernetes.is_empty());
        assert_eq!(
            config.services[1].kubernetes,
            ["web.prod.svc.cluster.local:http"]
        );
        assert_eq!(
            config.services[2].kubernetes,
            ["web.prod:80", "web.staging:80"]
        );
        assert_eq!(config.discovery, DiscoverySettings::default());
    }

    #[test]
    fn the_discovery_section_and_its_defaults() {
        let config = parsed(
            r#"
[discovery]
debounce_ms = 50

[discovery.file]
poll_interval_ms = 250

[discovery.dns]
servers = ["127.0.0.1:5353", "[::1]:53"]
max_refresh_ms = 10000

[discovery.kubernetes]
kubeconfig = "/etc/coremesh/kubeconfig"
context = "prod"
watch_timeout_secs = 60
"#,
        );
        let expected = DiscoverySettings {
            debounce_ms: 50,
            first_wait_ms: DEFAULT_FIRST_WAIT_MS,
            file: FileSettings {
                poll_interval_ms: 250,
            },
            dns: DnsSettings {
                servers: vec![
                    ([127, 0, 0, 1], 5353).into(),
                    "[::1]:53".parse().unwrap_or_else(|e| panic!("{e}")),
                ],
                min_refresh_ms: DEFAULT_DNS_MIN_REFRESH_MS,
                max_refresh_ms: 10_000,
                timeout_ms: DEFAULT_DNS_TIMEOUT_MS,
            },
            kubernetes: KubernetesSettings {
                kubeconfig: Some(PathBuf::from("/etc/coremesh/kubeconfig")),
                context: Some("prod".into()),
                watch_timeout_secs: 60,
                list_page_size: DEFAULT_KUBERNETES_LIST_PAGE_SIZE,
                meshed_pods: true,
                trust_domain: "cluster.local".into(),
            },
        };
        assert_eq!(config.discovery, expected);
        let defaults = parsed("[discovery]\n").discovery;
        assert_eq!(defaults.debounce_ms, DEFAULT_DEBOUNCE_MS);
        assert_eq!(
            defaults.file.poll_interval_ms,
            DEFAULT_FILE_POLL_INTERVAL_MS
        );
        assert_eq!(defaults.dns.min_refresh_ms, 1_000);
        assert_eq!(defaults.dns.max_refresh_ms, 30_000);
        assert_eq!(defaults.dns.timeout_ms, 2_000);
        assert!(defaults.dns.servers.is_empty());
        assert_eq!(defaults.kubernetes, KubernetesSettings::default());
        assert!(defaults.is_default());
    }

    #[test]
    fn bad_entries_are_reported_at_their_line() {
        let text = r#"[[services]]
name = "a"
dns = ["a.example.com", "10.0.0.1:80", "a.example.com:80", "A.example.com:80"]

[[services]]
name = "b"
kubernetes = "web:80"

[[services]]
name = "c"
kubernetes = ["web.prod:80", "web.prod.svc.cluster.local:80", "Web.prod:http"]

[[services]]
name = "d"
"#;
        assert_eq!(
            errors(text),
            vec![
                "s.toml:3:8: field `services[0].dns[0]`: dns entry \"a.example.com\" must be `host:port`",
                "s.toml:3:25: field `services[0].dns[1]`: dns entry \"10.0.0.1:80\" is an IP address, not a name; list it in `endpoints`",
                "s.toml:3:60: field `services[0].dns[3]`: duplicate dns entry \"A.example.com:80\"",
                "s.toml:7:1: field `services[1].kubernetes[0]`: kubernetes entry \"web:80\" must name the Service and its namespace, as `name.namespace:port`",
                "s.toml:11:30: field `services[2].kubernetes[1]`: duplicate kubernetes entry \"web.prod.svc.cluster.local:80\"",
                "s.toml:11:63: field `services[2].kubernetes[2]`: kubernetes entry \"Web.prod:http\" has an invalid Service name \"Web\" (1 to 63 lower-case letters, digits and inner '-')",
                "s.toml:13:1: field `services[3].endpoints`: service \"d\" has no endpoints, dns or kubernetes entries",
            ]
        );
    }

    #[test]
    fn wrong_types_of_the_new_keys_are_reported_at_their_line() {
        let text = "[[services]]\nname = \"a\"\ndns = \"a.example.com:80\"\n\n[[services]]\nname = \"b\"\nkubernetes = 3\n";
        assert_eq!(
            errors(text),
            vec![
                "s.toml:3:7: field `services[0].dns`: invalid type: string \"a.example.com:80\", expected a sequence",
                "s.toml:7:14: field `services[1].kubernetes`: invalid type: integer `3`, expected a string or an array of strings",
            ]
        );
    }

    /// The `toml` blocks of `docs/configuration.md` that show `dns`, `kubernetes` or
    /// `[discovery]` parse and validate.
    #[test]
    fn the_documented_examples_are_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let blocks: Vec<&str> = text
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .filter(|block| block.contains("dns =") || block.contains("[discovery]"))
            .collect();
        assert_eq!(blocks.len(), 2, "{blocks:?}");
        for block in blocks {
            parsed(block);
        }
    }

    #[test]
    fn discovery_settings_out_of_bounds() {
        let text = r#"[discovery]
debounce_ms = 60001
file = { poll_interval_ms = 5 }

[discovery.dns]
servers = ["127.0.0.1:0", "0.0.0.0:53"]
min_refresh_ms = 5000
max_refresh_ms = 1000
timeout_ms = 0

[discovery.kubernetes]
kubeconfig = ""
context = ""
watch_timeout_secs = 0
list_page_size = 10001
trust_domain = "Example.org"
unknown = 1
"#;
        assert_eq!(
            errors(text),
            vec!["s.toml:17:1: field `discovery.kubernetes.unknown`: unknown field `unknown`, expected one of `kubeconfig`, `context`, `watch_timeout_secs`, `list_page_size`, `meshed_pods`, `trust_domain`"]
        );
        let text = text.replace("unknown = 1\n", "");
        assert_eq!(
            errors(&text),
            vec![
                "s.toml:2:1: field `discovery.debounce_ms`: 60001 ms is more than 60000 ms",
                "s.toml:3:10: field `discovery.file.poll_interval_ms`: 5 is outside 10 ms to one day",
                "s.toml:6:12: field `discovery.dns.servers[0]`: server 127.0.0.1:0 has port 0",
                "s.toml:6:27: field `discovery.dns.servers[1]`: server 0.0.0.0:53 has an unspecified address",
                "s.toml:8:1: field `discovery.dns.max_refresh_ms`: 1000 ms is less than `min_refresh_ms` (5000 ms)",
                "s.toml:9:1: field `discovery.dns.timeout_ms`: must be greater than 0",
                "s.toml:12:1: field `discovery.kubernetes.kubeconfig`: must not be empty (leave it out to infer)",
                "s.toml:13:1: field `discovery.kubernetes.context`: must not be empty (leave it out for the current context)",
                "s.toml:14:1: field `discovery.kubernetes.watch_timeout_secs`: 0 is outside 1 to 3600",
                "s.toml:15:1: field `discovery.kubernetes.list_page_size`: 10001 is outside 1 to 10000",
                "s.toml:16:1: field `discovery.kubernetes.trust_domain`: \"Example.org\" is not a SPIFFE trust domain: \"spiffe://Example.org\": trust domain character 'E' (allowed: a-z 0-9 . - _)",
            ]
        );
    }
}
