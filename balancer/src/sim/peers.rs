//! The peers' choices the simulation compares with: Linkerd-style peak-EWMA with two
//! random choices ([`PeakEwmaP2c`], per core) and least-connections ([`least_connections`],
//! over counts shared by all cores).

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use crate::decay::PeakEwma;

/// Linkerd's decay of its peak-EWMA RTT estimate.
const LINKERD_DECAY: Duration = Duration::from_secs(10);
/// Linkerd's RTT assumed for an endpoint without samples, in µs.
const LINKERD_DEFAULT_RTT_US: f64 = 30_000.0;

/// One core's peak-EWMA two-choice balancer.
#[derive(Debug)]
pub(crate) struct PeakEwmaP2c {
    rtt: Vec<PeakEwma>,
    pending: Vec<u32>,
}

impl PeakEwmaP2c {
    pub(crate) fn new(endpoints: usize) -> Self {
        PeakEwmaP2c {
            rtt: vec![PeakEwma::default(); endpoints],
            pending: vec![0; endpoints],
        }
    }

    fn cost(&self, i: usize, now: Instant) -> f64 {
        let rtt = self.rtt[i]
            .get(now, LINKERD_DECAY)
            .unwrap_or(LINKERD_DEFAULT_RTT_US);
        rtt * (f64::from(self.pending[i]) + 1.0)
    }

    /// Two distinct endpoints not in `tried` (all of them if every one was tried), the
    /// cheaper wins, a tie goes to the first draw.
    pub(crate) fn choose(&self, now: Instant, rng: &mut impl RngCore, tried: &[usize]) -> usize {
        let n = self.rtt.len();
        let untried = |i: &usize| !tried.contains(i);
        let count = (0..n).filter(untried).count();
        let (pool, k): (&dyn Fn(usize) -> usize, usize) = if count == 0 {
            (&|j| j, n)
        } else {
            (&|j| (0..n).filter(untried).nth(j).unwrap_or(0), count)
        };
        if k == 1 {
            return pool(0);
        }
        let a = rng.gen_range(0..k);
        let mut b = rng.gen_range(0..k - 1);
        if b >= a {
            b += 1;
        }
        let (a, b) = (pool(a), pool(b));
        if self.cost(b, now) < self.cost(a, now) {
            b
        } else {
            a
        }
    }

    pub(crate) fn dispatch(&mut self, i: usize) {
        self.pending[i] += 1;
    }

    pub(crate) fn outcome(&mut self, i: usize, now: Instant, latency: Duration) {
        self.pending[i] = self.pending[i].saturating_sub(1);
        let us = latency.as_secs_f64() * 1e6;
        self.rtt[i].observe(now, us, LINKERD_DECAY);
    }
}

/// The endpoint with the fewest `outstanding` requests among those not in `tried` (all if
/// every one was tried); ties at random.
pub(crate) fn least_connections(
    outstanding: &[u32],
    rng: &mut impl RngCore,
    tried: &[usize],
) -> usize {
    let n = outstanding.len();
    let any_untried = (0..n).any(|i| !tried.contains(&i));
    let eligible = |i: &usize| !any_untried || !tried.contains(i);
    let least = (0..n)
        .filter(eligible)
        .map(|i| outstanding[i])
        .min()
        .unwrap_or(0);
    let ties = (0..n)
        .filter(eligible)
        .filter(|&i| outstanding[i] == least)
        .count();
    let pick = rng.gen_range(0..ties.max(1));
    (0..n)
        .filter(eligible)
        .filter(|&i| outstanding[i] == least)
        .nth(pick)
        .unwrap_or(0)
}
