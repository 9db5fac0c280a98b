//! Gossip between simulated cores: two balancers for the same service joined by a
//! two-port `GossipMesh`, one fake clock, seeded RNGs.

use std::sync::Arc;
use std::time::Duration;

use crate::service::tests::{addr, Sim};
use crate::{BalancerConfig, FailureKind, GossipMesh, Health, Outcome};

const MS: Duration = Duration::from_millis(1);

/// Ships every batch core `from` has to core `to` through the mesh; returns batches moved.
fn tick(from: &mut Sim, to: &mut Sim, ports: &[crate::GossipPort], now_to: bool) -> usize {
    let (src, dst) = if now_to { (0, 1) } else { (1, 0) };
    let mut moved = 0;
    if let Some(batch) = from.bal.take_gossip(from.now) {
        assert_eq!(ports[src].broadcast(&batch), 1);
    }
    while let Some(batch) = ports[dst].try_recv() {
        assert!(to.bal.merge_gossip(&batch, to.now));
        moved += 1;
    }
    moved
}

#[test]
fn merged_latency_steers_the_other_core() {
    let ports = GossipMesh::new(2);
    let mut a = Sim::new(&[1, 2], BalancerConfig::default());
    let mut b = Sim::new(&[1, 2], BalancerConfig::default());
    let (x, y) = (addr(1), addr(2));
    // Before any gossip, core B has no history and picks both.
    let before = (0..100).filter(|_| b.choose() == x).count();
    assert!(before > 20 && before < 80, "{before}");

    for _ in 0..20 {
        a.request(x, 30 * MS, Outcome::Success);
        a.request(y, MS, Outcome::Success);
    }
    b.now = a.now;
    assert_eq!(tick(&mut a, &mut b, &ports, true), 1);
    for _ in 0..100 {
        assert_eq!(b.choose(), y);
    }
    let vx = b.view(x);
    assert_eq!(vx.window_samples, 20);
    assert_eq!(vx.p90, Some(Duration::from_micros(30_079)));
    assert_eq!(vx.requests, 0, "B sent nothing itself");

    // After the window, B has forgotten and explores again.
    b.advance(Duration::from_secs(10));
    assert_eq!(b.view(x).p90, None);
    let after = (0..100).filter(|_| b.choose() == x).count();
    assert!(after > 20, "{after}");
}

#[test]
fn both_cores_converge_on_the_same_window() {
    let ports = GossipMesh::new(2);
    let mut a = Sim::new(&[1, 2], BalancerConfig::default());
    let mut b = Sim::new(&[1, 2], BalancerConfig::default());
    let x = addr(1);
    for round in 0..10 {
        for _ in 0..5 {
            a.request(x, 10 * MS, Outcome::Success);
            b.request(x, 20 * MS, Outcome::Success);
        }
        let now = a.now.max(b.now) + Duration::from_millis(100 * round);
        a.now = now;
        b.now = now;
        tick(&mut a, &mut b, &ports, true);
        tick(&mut b, &mut a, &ports, false);
    }
    let (va, vb) = (a.view(x), b.view(x));
    assert_eq!(va.window_samples, 100);
    assert_eq!(vb.window_samples, 100);
    assert_eq!((va.p50, va.p90), (vb.p50, vb.p90));
    assert_eq!(va.p90, Some(Duration::from_micros(20_095)));
}

#[test]
fn ejection_decided_on_one_core_applies_on_the_other() {
    let ports = GossipMesh::new(2);
    let mut a = Sim::new(&[1, 2, 3, 4], BalancerConfig::default());
    let mut b = Sim::new(&[1, 2, 3, 4], BalancerConfig::default());
    let x = addr(1);
    for _ in 0..5 {
        a.request(x, MS, Outcome::Failure(FailureKind::Connect));
    }
    let Health::Ejected { until } = a.health(x) else {
        panic!("A ejected x");
    };
    b.now = a.now;
    tick(&mut a, &mut b, &ports, true);
    assert_eq!(b.health(x), Health::Ejected { until });
    assert_eq!(b.view(x).ejections, 1);
    for _ in 0..100 {
        assert_ne!(b.choose(), x);
    }
    // B probes on its own once the back-off ends.
    b.now = until;
    let c = b.bal.choose(b.now, &mut b.rng, &[]).unwrap();
    assert_eq!((c.addr, c.probe), (x, true));
}

#[test]
fn remote_ejection_of_a_suspect_takes_it_out_of_the_pool() {
    let ports = GossipMesh::new(2);
    let mut a = Sim::new(&[1, 2, 3, 4], BalancerConfig::default());
    let mut b = Sim::new(&[1, 2, 3, 4], BalancerConfig::default());
    let x = addr(1);
    // B saw one failure (x is suspect there); A sees five and ejects it.
    b.request(x, MS, Outcome::Failure(FailureKind::Connect));
    for _ in 0..5 {
        a.request(x, MS, Outcome::Failure(FailureKind::Connect));
    }
    let Health::Ejected { until } = a.health(x) else {
        panic!("A ejected x");
    };
    b.now = a.now;
    tick(&mut a, &mut b, &ports, true);
    assert_eq!(b.health(x), Health::Ejected { until });
    // While it is ejected, B neither chooses it nor probes it as a suspect.
    b.advance(until - b.now - MS);
    for _ in 0..100 {
        let c = b.bal.choose(b.now, &mut b.rng, &[]).unwrap();
        assert!(c.addr != x && !c.probe);
    }
    b.advance(MS);
    let c = b.bal.choose(b.now, &mut b.rng, &[]).unwrap();
    assert_eq!((c.addr, c.probe), (x, true), "half-open on B too");
}

#[test]
fn remote_ejections_respect_the_local_cap() {
    let ports = GossipMesh::new(2);
    let mut cfg_a = BalancerConfig::default();
    cfg_a.ejection.max_ejected_ratio = 1.0;
    let mut a = Sim::new(&[1, 2, 3, 4], cfg_a);
    let mut b = Sim::new(&[1, 2, 3, 4], BalancerConfig::default());
    for port in 1..=4 {
        for _ in 0..5 {
            a.request(addr(port), MS, Outcome::Failure(FailureKind::Reset));
        }
    }
    b.now = a.now;
    tick(&mut a, &mut b, &ports, true);
    let out = b
        .bal
        .views(b.now)
        .iter()
        .filter(|v| v.state != Health::Available)
        .count();
    assert_eq!(out, 2);
}

#[test]
fn batches_name_their_service_and_idle_ticks_send_nothing() {
    let mut a = Sim::new(&[1], BalancerConfig::default());
    assert!(a.bal.take_gossip(a.now).is_none());
    a.request(addr(1), MS, Outcome::Success);
    let batch = a
        .bal
        .take_gossip(a.now)
        .expect("one endpoint saw a request");
    assert_eq!(&**batch.service(), "svc");
    assert_eq!(batch.latencies().len(), 1);
    assert_eq!(batch.latencies()[0].addr, addr(1));
    assert!(batch.ejections().is_empty());
    assert!(a.bal.take_gossip(a.now).is_none());

    let endpoints = [addr(1)];
    let mut other =
        crate::ServiceBalancer::new(Arc::from("other"), &endpoints, BalancerConfig::default());
    assert!(!other.merge_gossip(&batch, a.now));
    assert_eq!(other.views(a.now)[0].window_samples, 0);
}

#[test]
fn histograms_are_recycled_in_steady_state() {
    let ports = GossipMesh::new(2);
    let mut a = Sim::new(&[1, 2, 3], BalancerConfig::default());
    let mut b = Sim::new(&[1, 2, 3], BalancerConfig::default());
    let mut allocated_after_warmup = 0;
    for round in 0..300 {
        for port in 1..=3 {
            a.request(addr(port), MS, Outcome::Success);
            b.request(addr(port), 2 * MS, Outcome::Success);
        }
        let now = a.now.max(b.now) + Duration::from_millis(100);
        a.now = now;
        b.now = now;
        tick(&mut a, &mut b, &ports, true);
        tick(&mut b, &mut a, &ports, false);
        if round == 150 {
            allocated_after_warmup = a.bal.histograms_allocated();
        }
    }
    // Warm-up fills the windows (slots + totals + intervals in flight); after that, every
    // histogram comes from the free list.
    assert_eq!(a.bal.histograms_allocated(), allocated_after_warmup);
    assert!(allocated_after_warmup <= 3 * (crate::WINDOW_SLOTS as u64 + 4));
}
