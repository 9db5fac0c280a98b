//! The cost of recording one finished request, for `perf stat -e instructions:u`:
//! `record_cost KIND N` records N requests and exits. Run it with N = 0 and a large N; the
//! difference of the instruction counts over N is the cost per request (start-up cancels).
//!
//! KIND: `plain` (`record_response`, what every outbound and plaintext request costs),
//! `caller` (`record_inbound_response_from` with one verified caller, as one connection's
//! requests come), `callers` (eight callers taking turns, every lookup a miss of the
//! previous-caller shortcut), `overflow` (callers beyond `max_client_ids`).
//!
//! ```text
//! cargo build --release --example record_cost -p coremesh-telemetry
//! perf stat -e instructions:u target/release/examples/record_cost plain 10000000
//! ```

use coremesh_telemetry::{CoreMetrics, Direction, LayoutBuilder};
use std::hint::black_box;
use std::time::Duration;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "plain".to_owned());
    let n: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut b = LayoutBuilder::new(true);
    b.max_client_ids(4);
    let users = b.add_service("users", ["10.0.0.1:8080", "10.0.0.2:8080"]);
    let api = b.add_route("api", Some(users));
    let layout = b.build();
    let endpoint = layout.endpoint_at(users, 1);
    let metrics = CoreMetrics::new(layout);
    let ids: Vec<String> = (0..8)
        .map(|i| format!("spiffe://cluster.local/ns/prod/sa/caller-{i}"))
        .collect();
    if kind == "overflow" {
        // The cap's four identities take their places first.
        for id in &ids[..4] {
            metrics.record_inbound_response_from(id, 200, Duration::ZERO);
        }
    }
    for i in 0..n {
        let latency = Duration::from_micros(black_box(i % 5000));
        let status = black_box(200);
        match kind.as_str() {
            "plain" => metrics.record_response(Direction::Outbound, api, endpoint, status, latency),
            "caller" => metrics.record_inbound_response_from(&ids[0], status, latency),
            "callers" => {
                metrics.record_inbound_response_from(&ids[(i % 8) as usize], status, latency)
            }
            "overflow" => {
                metrics.record_inbound_response_from(&ids[4 + (i % 4) as usize], status, latency)
            }
            other => {
                eprintln!("unknown kind {other:?}: plain, caller, callers or overflow");
                std::process::exit(2);
            }
        }
    }
    black_box(metrics.snapshot());
}
