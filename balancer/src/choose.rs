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
//! Within a tier, `Kind::LeastLatency` scores every eligible endpoint of a small service
//! (at most `scan_all_up_to`, default 8) and takes the lowest score; in a larger one it
//! draws two distinct endpoints at random and takes the lower (power of two choices). Scores
//! within [`TIE_TOLERANCE`] of the best are a tie — and so is an endpoint with too few
//! samples to judge (a new one gets its first few requests whatever its first answer said)
//! — except that an endpoint that failed recently is never tied with a better one. A tie
//! goes to the endpoint with the fewest requests in flight, and among equal counts to a
//! random one: endpoints that look alike then keep level queues (a random draw let them
//! drift apart as far as the band, and the longer queue set the tail), while under
//! sequential load, where nothing is in flight, they still share at random. `Kind::Random` takes
//! one at random, `Kind::RoundRobin` the next in turn. Random draws reject ineligible
//! endpoints a few times before falling back to listing the eligible ones, so a choice
//! costs O(1) in the common case even for thousands of endpoints, and nothing allocates
//! (the scan keeps its scores on the stack).

use std::net::SocketAddr;
use std::time::Instant;

use rand::{Rng, RngCore};

use crate::config::Kind;
use crate::endpoint::Endpoint;
use crate::service::{Choice, ServiceBalancer};

/// Random draws before listing the eligible endpoints instead. With at most half of the
/// endpoints out of the pool, eight draws find two eligible ones almost always.
const SAMPLE_ATTEMPTS: usize = 8;

/// Most endpoints scored in one choice, whatever `scan_all_up_to` says: the scan keeps its
/// scores in a fixed array on the stack.
pub(crate) const SCAN_ALL_LIMIT: usize = 16;

/// Two least-latency scores within this ratio of each other (the larger at most 1.25 × the
/// smaller) are a tie (see the module doc for how it is broken). Estimates of identical endpoints differ by the
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
                let penalty = self.penalty_us(now);
                let n = self.endpoints.len();
                if n <= self.cfg.scan_all_up_to.min(SCAN_ALL_LIMIT) {
                    return self.best_of_all(now, rng, &eligible, penalty);
                }
                let (a, b) = sample(&self.endpoints, &mut self.scratch, rng, &eligible, 2)?;
                let Some(b) = b else { return Some(a) };
                let (score_a, score_b) = (
                    self.score_of(a, now, penalty),
                    self.score_of(b, now, penalty),
                );
                // `a` is the first of two random draws: a tie goes to the one with fewer
                // requests in flight, else to either at random — unless the worse one is
                // failing.
                let tie = if self.is_failing(a, now) || self.is_failing(b, now) {
                    false
                } else {
                    self.is_untested(a)
                        || self.is_untested(b)
                        || (score_b * (1.0 + TIE_TOLERANCE) >= score_a
                            && score_a * (1.0 + TIE_TOLERANCE) >= score_b)
                };
                if tie {
                    let (na, nb) = (self.endpoints[a].in_flight, self.endpoints[b].in_flight);
                    return Some(if nb < na { b } else { a });
                }
                Some(if score_b < score_a { b } else { a })
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

impl ServiceBalancer {
    /// The eligible endpoint with the lowest score, scoring all of them (a small service);
    /// endpoints within [`TIE_TOLERANCE`] of the lowest are a tie, which goes to the fewest
    /// in flight, then at random.
    fn best_of_all(
        &mut self,
        now: Instant,
        rng: &mut impl RngCore,
        eligible: &impl Fn(&Endpoint) -> bool,
        penalty_us: f64,
    ) -> Option<usize> {
        let mut scores = [f64::INFINITY; SCAN_ALL_LIMIT];
        // Whether each endpoint may tie with a better one (not failing; or untested).
        let mut may_tie = [false; SCAN_ALL_LIMIT];
        let mut untested = [false; SCAN_ALL_LIMIT];
        let mut best = f64::INFINITY;
        let n = self.endpoints.len().min(SCAN_ALL_LIMIT);
        for i in 0..n {
            if eligible(&self.endpoints[i]) {
                scores[i] = self.score_of(i, now, penalty_us);
                best = best.min(scores[i]);
                may_tie[i] = !self.is_failing(i, now);
                untested[i] = self.is_untested(i);
            }
        }
        if best == f64::INFINITY {
            // Nothing eligible, or only infinite scores: take any eligible one.
            return (0..self.endpoints.len()).find(|&i| eligible(&self.endpoints[i]));
        }
        let band = best * (1.0 + TIE_TOLERANCE);
        let tied = |i: usize| {
            let v = scores[i];
            v == best || (v.is_finite() && may_tie[i] && (v <= band || untested[i]))
        };
        // Among the tied, the fewest requests in flight; equal counts at random.
        let fewest = (0..n)
            .filter(|&i| tied(i))
            .map(|i| self.endpoints[i].in_flight)
            .min()?;
        let candidate = |i: usize| tied(i) && self.endpoints[i].in_flight == fewest;
        let ties = (0..n).filter(|&i| candidate(i)).count();
        let pick = if ties > 1 { rng.gen_range(0..ties) } else { 0 };
        (0..n).filter(|&i| candidate(i)).nth(pick)
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
