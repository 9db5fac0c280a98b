//! The DNS source: each `dns` entry (`host:port`) is looked up (A and AAAA) by its own task
//! on the control thread's runtime, again when the answer's TTL runs out (clamped to
//! `[discovery.dns] min_refresh_ms` .. `max_refresh_ms`), and sooner after a failure.
//!
//! Failures: a timeout, SERVFAIL, REFUSED or unreachable server is a failure: the last good
//! answer stays in use and the lookup is retried after `min_refresh_ms`, doubling up to
//! `max_refresh_ms`. An authoritative "no such name" (NXDOMAIN) or "no addresses" (NODATA)
//! is an answer, not a failure: the name then contributes no endpoints until it has
//! addresses again (re-asked after its negative TTL, clamped the same way).

use crate::discovery_settings::DnsSettings;
use crate::source_event::{SourceEvent, SourceUpdate};
use crate::targets::DnsTarget;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::TokioResolver;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;

/// Attempts per query and name server before a lookup fails.
const DNS_ATTEMPTS: usize = 2;

/// One lookup's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// The addresses (sorted, without duplicates, with the target's port) and how long the
    /// answer is valid.
    Addresses(Vec<SocketAddr>, Duration),
    /// The name has no A / AAAA records (NXDOMAIN or NODATA), for this long if the server
    /// said (the negative TTL of its SOA).
    NoAddresses(Option<Duration>),
    /// The lookup failed (timeout, server failure, network): the last answer stays.
    Failed(String),
}

/// A resolver for `settings`: its `servers` over UDP (TCP for truncated answers), or the
/// system's configuration (`/etc/resolv.conf`) when none are given. Answers are not
/// cached: the refresh schedule here already follows the TTLs, and a cache would hide
/// changes when `max_refresh_ms` is shorter than a record's TTL.
pub fn build_resolver(settings: &DnsSettings) -> Result<TokioResolver, String> {
    let mut builder = if settings.servers.is_empty() {
        TokioResolver::builder_tokio()
            .map_err(|error| format!("cannot read the system resolver configuration: {error}"))?
    } else {
        let servers = settings
            .servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        )
    };
    let options = builder.options_mut();
    options.timeout = Duration::from_millis(settings.timeout_ms);
    options.attempts = DNS_ATTEMPTS;
    options.cache_size = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder
        .build()
        .map_err(|error| format!("cannot build the DNS resolver: {error}"))
}

/// Looks `target` up once.
pub async fn resolve(resolver: &TokioResolver, target: &DnsTarget) -> DnsAnswer {
    match resolver.lookup_ip(target.host.as_str()).await {
        Ok(lookup) => {
            let mut addresses: Vec<SocketAddr> = lookup
                .iter()
                .map(|ip| SocketAddr::new(ip, target.port))
                .collect();
            addresses.sort();
            addresses.dedup();
            let ttl = lookup
                .valid_until()
                .saturating_duration_since(Instant::now());
            DnsAnswer::Addresses(addresses, ttl)
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords { negative_ttl, .. }))) => {
            DnsAnswer::NoAddresses(negative_ttl.map(|ttl| Duration::from_secs(u64::from(ttl))))
        }
        Err(error) => DnsAnswer::Failed(format!("lookup of {} failed: {error}", target.host)),
    }
}

/// When to ask again after an answer valid for `ttl`: the TTL, clamped to the settings.
pub fn refresh_after(ttl: Duration, settings: &DnsSettings) -> Duration {
    let min = Duration::from_millis(settings.min_refresh_ms);
    let max = Duration::from_millis(settings.max_refresh_ms).max(min);
    ttl.clamp(min, max)
}

/// When to retry after `consecutive_failures` (1 or more) failed lookups in a row:
/// `min_refresh_ms`, doubling with each failure, at most `max_refresh_ms`.
pub fn retry_after(consecutive_failures: u32, settings: &DnsSettings) -> Duration {
    let min = Duration::from_millis(settings.min_refresh_ms);
    let max = Duration::from_millis(settings.max_refresh_ms).max(min);
    let doublings = consecutive_failures.saturating_sub(1).min(20);
    min.saturating_mul(1 << doublings).min(max)
}

/// The task behind one `dns` entry: looks it up, reports, waits, until the controller
/// aborts it or goes away.
pub async fn run(
    target: DnsTarget,
    resolver: Arc<TokioResolver>,
    settings: DnsSettings,
    events: UnboundedSender<SourceEvent>,
) {
    let mut failures = 0;
    loop {
        let (update, wait) = match resolve(&resolver, &target).await {
            DnsAnswer::Addresses(addresses, ttl) => {
                failures = 0;
                (
                    SourceUpdate::Endpoints(addresses),
                    refresh_after(ttl, &settings),
                )
            }
            DnsAnswer::NoAddresses(ttl) => {
                failures = 0;
                let ttl = ttl.unwrap_or(Duration::ZERO);
                (
                    SourceUpdate::Endpoints(Vec::new()),
                    refresh_after(ttl, &settings),
                )
            }
            DnsAnswer::Failed(message) => {
                failures += 1;
                (
                    SourceUpdate::Failed(message),
                    retry_after(failures, &settings),
                )
            }
        };
        tracing::debug!(target = %target, ?update, next_in = ?wait, "dns lookup");
        if events
            .send(SourceEvent::Dns(target.clone(), update))
            .is_err()
        {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(min: u64, max: u64) -> DnsSettings {
        DnsSettings {
            min_refresh_ms: min,
            max_refresh_ms: max,
            ..DnsSettings::default()
        }
    }

    #[test]
    fn refresh_follows_the_ttl_within_the_clamps() {
        let s = settings(1_000, 30_000);
        assert_eq!(refresh_after(Duration::ZERO, &s), Duration::from_secs(1));
        assert_eq!(
            refresh_after(Duration::from_secs(7), &s),
            Duration::from_secs(7)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(3600), &s),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn retries_back_off_from_min_to_max() {
        let s = settings(1_000, 30_000);
        let waits: Vec<u64> = (1..=7)
            .map(|n| retry_after(n, &s).as_millis() as u64)
            .collect();
        assert_eq!(
            waits,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000]
        );
        assert_eq!(retry_after(u32::MAX, &s), Duration::from_secs(30));
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = DnsSettings::default();
        assert!(s.servers.is_empty());
        assert_eq!(
            s.min_refresh_ms,
            crate::discovery_settings::DEFAULT_DNS_MIN_REFRESH_MS
        );
        assert_eq!(s.max_refresh_ms, 30_000);
        assert_eq!(s.timeout_ms, 2_000);
    }
}
