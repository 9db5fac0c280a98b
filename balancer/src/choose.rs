//! The choice of an endpoint: [`ServiceBalancer::choose`].
//!
//! Order of preference, first that yields an endpoint wins:
//! 1. a half-open endpoint waiting for its probe, then a suspect endpoint whose re-try
//!    probe is due (first attempts only: a retry, i.e. a non-empty `exclude`, is never
//!    spent on a probe);
//! 2. available endpoints not yet tried by this request;
//! 3. available endpoints, even if already tried (every healthy one failed this request;
//!    another go on a healthy one beats a known-bad one);
//! 4. nothing is available: every endpoint not yet tried, ejected or not;
//! 5. every endpoint.
//!
//! (In tiers 4–5 a half-open endpoint with its probe slot free becomes the probe even for a
//! retry: nothing healthy is left to spare it.)
//!
//! Within a tier, `Kind::LeastLatency` draws two distinct endpoints at random and takes
//! the lower score (power of two choices) — unless the two are within [`TIE_TOLERANCE`] of
//! each other, a tie that goes to the first draw, i.e. to either at random —
//! `Kind::Random` one at random, `Kind::RoundRobin` the next in turn. Random draws reject
//! ineligible endpoints a few times before falling back to listing the eligible ones, so a
//! choice costs O(1) in the common case even for thousands of endpoints.

use std::net::SocketAddr;
use std::time::Instant;

use rand::{Rng, RngCore};

use crate::config::Kind;
use crate::endpoint::Endpoint;
use crate::service::{Choice, ServiceBalancer};

/// Random draws before listing the eligible endpoints instead. With at most half of the
/// endpoints out of the pool, eight draws find two eligible ones almost always.
const SAMPLE_ATTEMPTS: usize = 8;

/// Two least-latency scores within this ratio of each other (the larger at most 1.25 × the
/// smaller) are a tie, broken at random. Estimates of identical endpoints differ by the
/// noise of the samples they happen to have seen — peak-EWMA keeps the largest recent one,
/// and latencies of a healthy service commonly spread by ±20 % — so a strict comparison
/// would hand every request to whichever was luckiest and starve the unluckiest under
/// sequential load, where in-flight counts never tell them apart. Real differences are
/// larger: a slow-down, a failure penalty, or one request in flight (× 2) are all well
/// outside the band.
pub(crate) const TIE_TOLERANCE: f64 = 0.25;

impl ServiceBalancer {
    /// Chooses the endpoint for a request at `now`, drawing randomness from `rng`.
    /// `exclude` lists the endpoints this request already tried. Returns `None` only when
    /// the service has no endpoints. If `Choice::probe` is set, the request is the single
    /// re-try probe of an endpoint that failed (half-open after an ejection, or suspect).
    pub fn choose(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        exclude: &[SocketAddr],
    ) -> Option<Choice> {
        if self.endpoints.is_empty() {
            return None;
        }
        self.refresh_ejections(now);
        if exclude.is_empty() {
            let probe_cfg = &self.cfg.ejection;
            let ready = self
                .out_of_pool
                .iter()
                .copied()
                .find(|&i| self.endpoints[i].ejection.probe_ready(now, probe_cfg));
            if let Some(i) = ready.or_else(|| self.due_suspect(now)) {
                return Some(self.take(i, now));
            }
        }
        let tried = |e: &Endpoint| exclude.contains(&e.addr);
        let untried_available = |e: &Endpoint| e.ejection.is_available() && !tried(e);
        let available = |e: &Endpoint| e.ejection.is_available();
        let untried = |e: &Endpoint| !tried(e);
        let any = |_: &Endpoint| true;

        let nothing_out = self.out_of_pool.is_empty();
        let chosen = self
            .pick(now, rng, untried_available)
            .or_else(|| {
                (!exclude.is_empty())
                    .then(|| self.pick(now, rng, available))
                    .flatten()
            })
            .or_else(|| {
                (!nothing_out && !exclude.is_empty())
                    .then(|| self.pick(now, rng, untried))
                    .flatten()
            })
            .or_else(|| (!nothing_out).then(|| self.pick(now, rng, any)).flatten());
        chosen.map(|i| self.take(i, now))
    }

    /// Builds the choice for endpoint `i`, claiming the probe if one is due (half-open, or
    /// suspect past its back-off).
    fn take(&mut self, i: usize, now: Instant) -> Choice {
        let e = &mut self.endpoints[i];
        let probe = e.ejection.probe_ready(now, &self.cfg.ejection);
        if probe {
            e.ejection.start_probe(now);
        }
        Choice {
            addr: e.addr,
            index: i,
            probe,
        }
    }

    /// One endpoint among those `eligible`, by the configured kind.
    fn pick(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        eligible: impl Fn(&Endpoint) -> bool,
    ) -> Option<usize> {
        match self.cfg.kind {
            Kind::LeastLatency => {
                let (a, b) = sample(&self.endpoints, &mut self.scratch, rng, &eligible, 2)?;
                let Some(b) = b else { return Some(a) };
                let (score_a, score_b) = (self.score_of(a, now), self.score_of(b, now));
                // `a` is the first of two random draws: a tie goes to either at random.
                Some(if score_b * (1.0 + TIE_TOLERANCE) < score_a {
                    b
                } else {
                    a
                })
            }
            Kind::Random => {
                sample(&self.endpoints, &mut self.scratch, rng, &eligible, 1).map(|(a, _)| a)
            }
            Kind::RoundRobin => {
                let n = self.endpoints.len();
                let start = self.round_robin_next % n;
                let i = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|&i| eligible(&self.endpoints[i]))?;
                self.round_robin_next = (i + 1) % n;
                Some(i)
            }
        }
    }
}

/// Draws `want` (1 or 2) distinct eligible endpoints uniformly at random: the first, and
/// the second if `want` is 2 and there is one. `None` if none is eligible.
fn sample(
    endpoints: &[Endpoint],
    scratch: &mut Vec<usize>,
    rng: &mut impl RngCore,
    eligible: &impl Fn(&Endpoint) -> bool,
    want: usize,
) -> Option<(usize, Option<usize>)> {
    let n = endpoints.len();
    // Small sets are listed directly: cheap, and every draw then counts.
    if n > SAMPLE_ATTEMPTS {
        let mut first = None;
        for _ in 0..SAMPLE_ATTEMPTS {
            let i = rng.gen_range(0..n);
            if first == Some(i) || !eligible(&endpoints[i]) {
                continue;
            }
            match first {
                None if want >= 2 => first = Some(i),
                None => return Some((i, None)),
                Some(f) => return Some((f, Some(i))),
            }
        }
    }
    scratch.clear();
    scratch.extend((0..n).filter(|&i| eligible(&endpoints[i])));
    match scratch.len() {
        0 => None,
        1 => Some((scratch[0], None)),
        k => {
            let a = rng.gen_range(0..k);
            if want < 2 {
                return Some((scratch[a], None));
            }
            let mut b = rng.gen_range(0..k - 1);
            if b >= a {
                b += 1;
            }
            Some((scratch[a], Some(scratch[b])))
        }
    }
}
