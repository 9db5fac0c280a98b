//! What a core reports to the control plane when asked (admin `/endpoints`, `/metrics`,
//! `coremesh top`): per-service endpoint views from its balancer and its counters. Built at
//! the core's tick from its own state, then sent as plain data.

use coremesh_balancer::{EndpointView, Health};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// One core's report.
#[derive(Debug, Clone)]
pub struct CoreReport {
    pub core: usize,
    pub at: Instant,
    pub services: Vec<(String, Vec<EndpointView>)>,
    pub connections_open: u64,
    /// HTTP/2 streams accepted on this core and served by another.
    pub streams_handed_off: u64,
    /// Client connections accepted on this core and served by another.
    pub connections_handed_off: u64,
    pub connections_accepted: u64,
    pub requests: u64,
    pub upstream_opened: u64,
    pub upstream_reused: u64,
    pub metrics: Option<coremesh_telemetry::MetricsSnapshot>,
}

/// An endpoint as the admin API shows it, merged over all cores.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    pub address: String,
    /// "available", "ejected" or "half-open" (the worst state any core holds).
    pub state: &'static str,
    /// Milliseconds until the ejection ends, when ejected.
    pub ejected_for_ms: Option<u64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub in_flight: u64,
    pub requests: u64,
    pub failures: u64,
    pub success_rate: Option<f64>,
    pub ejections: u64,
}

fn ms(d: Option<std::time::Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3)
}

/// Merge the per-core views of each service's endpoints.
pub fn merge_endpoint_views(reports: &[CoreReport]) -> BTreeMap<String, Vec<EndpointSummary>> {
    let mut out: BTreeMap<String, Vec<EndpointSummary>> = BTreeMap::new();
    for report in reports {
        for (service, views) in &report.services {
            let list = out.entry(service.clone()).or_default();
            for v in views {
                let address = v.addr.to_string();
                let idx = match list.iter().position(|e| e.address == address) {
                    Some(i) => i,
                    None => {
                        list.push(EndpointSummary {
                            address,
                            state: "available",
                            ejected_for_ms: None,
                            p50_ms: None,
                            p90_ms: None,
                            p99_ms: None,
                            in_flight: 0,
                            requests: 0,
                            failures: 0,
                            success_rate: None,
                            ejections: 0,
                        });
                        list.len() - 1
                    }
                };
                let e = &mut list[idx];
                match v.state {
                    Health::Ejected { until } => {
                        e.state = "ejected";
                        let left = until.saturating_duration_since(report.at).as_millis() as u64;
                        e.ejected_for_ms = Some(e.ejected_for_ms.unwrap_or(0).max(left));
                    }
                    Health::HalfOpen { .. } if e.state == "available" => e.state = "half-open",
                    _ => {}
                }
                // The merged window is the same on every core up to one gossip tick; keep
                // the figures of the core that has the most samples.
                if e.p50_ms.is_none() || v.p50.is_some() {
                    e.p50_ms = ms(v.p50).or(e.p50_ms);
                    e.p90_ms = ms(v.p90).or(e.p90_ms);
                    e.p99_ms = ms(v.p99).or(e.p99_ms);
                }
                e.in_flight += u64::from(v.in_flight);
                e.requests += v.requests;
                e.failures += v.failures;
                e.ejections = e.ejections.max(u64::from(v.ejections));
                e.success_rate =
                    (e.requests > 0).then(|| 1.0 - e.failures as f64 / e.requests as f64);
            }
        }
    }
    out
}
