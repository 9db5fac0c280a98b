//! [`ServiceBalancer`]: one core's balancing state for one service — its endpoints, the
//! bookkeeping of dispatches and outcomes, endpoint-set updates and admin views.
//!
//! The choice itself lives in `choose.rs`, gossip in `gossip.rs`; both are further `impl`
//! blocks of this type.
//!
//! Lifecycle of an endpoint: it enters through [`ServiceBalancer::new`] or
//! [`ServiceBalancer::set_endpoints`] with no history (scored at the service's neutral
//! latency), builds history from its outcomes and from peers' gossip, may turn suspect after
//! a failure or be ejected and is then probed back on the back-off schedule (see
//! `eject.rs`), and leaves when a later `set_endpoints` omits it, giving its histograms back
//! to the free list. An endpoint present in both the old and the new set
//! keeps everything: latency history, in-flight count and ejection state.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::addr_map::AddrMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;

use crate::config::{BalancerConfig, ScoreModel};
use crate::decay::{FailureRate, PeakEwma};
use crate::eject::{Health, Transition};
use crate::endpoint::{score, Endpoint};
use crate::gossip::{EjectionNotice, GossipBatch};
use crate::histogram::{latency_us, HistogramPool};
use crate::outcome::{FailureKind, Outcome};

/// Which endpoint sits at the median of the known estimates is re-ranked at most this often
/// once history exists; its estimate is read afresh at every use, so the neutral latency
/// moves with the estimates in between (a cached *value* would fall behind estimates that
/// keep shrinking, and a new endpoint scored at it would lose every comparison by a hair).
const NEUTRAL_RERANK: Duration = Duration::from_millis(100);
/// Requests after which this core trusts an endpoint's score (predicted score): until then
/// — unless this core never sent it anything and other cores' samples say what it is
/// worth — the endpoint ties with the best unless it failed, so a new endpoint gets four requests per core to show what it
/// is worth — a negligible share of any busy service — and one slow first answer (a cold
/// cache, a slow start) does not hold it out until its estimate decays.
pub(crate) const UNIT_TRUSTED_SAMPLES: u32 = 4;
/// Recent failure rate above which an endpoint is not part of a tie (one failure sets it
/// to 0.1, which decays below this after 23 s without another, or clears at a good probe).
pub(crate) const FAILING_RATE: f64 = 0.01;
/// Free histograms kept beyond one per endpoint, for churn between gossip ticks.
const POOL_SLACK: usize = 16;

/// The endpoint chosen for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// The endpoint to send to.
    pub addr: SocketAddr,
    /// Its position in the endpoint list last given to `new` / `set_endpoints`
    /// (duplicates removed); only valid until the next `set_endpoints`.
    pub index: usize,
    /// This request is the single probe of an endpoint being re-tried after failing —
    /// half-open after an ejection, or suspect after a failure that did not eject it; its
    /// outcome decides whether the endpoint is back with a clean record.
    pub probe: bool,
}

/// What the admin API shows about one endpoint on this core.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointView {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Available, ejected or half-open.
    pub state: Health,
    /// Requests dispatched and not yet finished, on this core.
    pub in_flight: u32,
    /// Median of the latency window merged from all cores; `None` if the window is empty.
    pub p50: Option<Duration>,
    /// 90th percentile of the merged window.
    pub p90: Option<Duration>,
    /// 99th percentile of the merged window.
    pub p99: Option<Duration>,
    /// Samples in the merged window (all cores, last `gossip_window`).
    pub window_samples: u64,
    /// Outcomes recorded on this core since the endpoint joined.
    pub requests: u64,
    /// Failures among `requests`.
    pub failures: u64,
    /// `(requests - failures) / requests`, 1.0 before any request.
    pub success_rate: f64,
    /// Recent failure rate used in the score (decaying, 0..=1).
    pub recent_failure_rate: f64,
    /// The latency estimate without failures, for a request sent while this core has none
    /// in flight there (see `docs/balancing.md`); `None` while the endpoint has no history
    /// (it is scored as neutral).
    pub latency_estimate: Option<Duration>,
    /// The least-latency score (lower wins), in µs-equivalents.
    pub score: f64,
    /// Counted failures in a row.
    pub consecutive_failures: u32,
    /// Ejections in a row without a successful probe.
    pub ejections: u32,
}

/// Where the latency an endpoint without history is scored at comes from: the current
/// estimate of the endpoint ranked at the median, or the configured default if none has
/// history.
#[derive(Debug, Default)]
pub(crate) struct Neutral {
    /// Index of the median endpoint at the last ranking; `None` if none had history.
    pub(crate) median_of: Option<usize>,
    pub(crate) ranked_at: Option<Instant>,
    /// Outcomes or gossip arrived since the ranking.
    pub(crate) dirty: bool,
}

/// Balancing state of one service on one core. See the crate documentation for the
/// calling sequence.
#[derive(Debug)]
pub struct ServiceBalancer {
    pub(crate) service: Arc<str>,
    pub(crate) cfg: BalancerConfig,
    pub(crate) endpoints: Vec<Endpoint>,
    /// Endpoint position by address: two lookups per request (dispatch and outcome), so
    /// with the fast [`AddrMap`] hash rather than SipHash.
    pub(crate) index: AddrMap<usize>,
    /// Indices of endpoints that are ejected or half-open (at most `max_ejected`, small).
    pub(crate) out_of_pool: Vec<usize>,
    /// Indices of suspect endpoints: in the pool, failed since their last good probe.
    pub(crate) suspects: Vec<usize>,
    /// No suspect's probe is due before this; `None`: look at the next first attempt.
    pub(crate) next_suspect_probe: Option<Instant>,
    pub(crate) pool: HistogramPool,
    /// Peak-EWMA of every success on the service: the "worst recent latency" that a
    /// failure is worth at least.
    pub(crate) service_peak: PeakEwma,
    pub(crate) neutral: Neutral,
    pub(crate) round_robin_next: usize,
    pub(crate) scratch: Vec<usize>,
    pub(crate) scratch_latencies: Vec<(f64, usize)>,
    /// Ejections decided here since the last gossip tick.
    pub(crate) pending_ejections: Vec<EjectionNotice>,
    /// Batches handed out, kept so their histograms come back once every peer dropped them.
    pub(crate) sent: VecDeque<Arc<GossipBatch>>,
}

impl ServiceBalancer {
    /// A balancer for `service` over `endpoints` (duplicates ignored), all starting neutral.
    pub fn new(service: Arc<str>, endpoints: &[SocketAddr], cfg: BalancerConfig) -> Self {
        let mut balancer = ServiceBalancer {
            service,
            cfg,
            endpoints: Vec::new(),
            index: AddrMap::default(),
            out_of_pool: Vec::new(),
            suspects: Vec::new(),
            next_suspect_probe: None,
            pool: HistogramPool::with_limit(POOL_SLACK),
            service_peak: PeakEwma::default(),
            neutral: Neutral::default(),
            round_robin_next: 0,
            scratch: Vec::new(),
            scratch_latencies: Vec::new(),
            pending_ejections: Vec::new(),
            sent: VecDeque::new(),
        };
        balancer.set_endpoints(endpoints);
        balancer
    }

    /// The service this balancer serves (gossip batches are routed by it).
    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// The configuration in force.
    pub fn config(&self) -> &BalancerConfig {
        &self.cfg
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the service has no endpoints (then [`choose`](Self::choose) returns `None`).
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoints, in choice-index order.
    pub fn endpoints(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.endpoints.iter().map(|e| e.addr)
    }

    /// Latency histograms allocated so far (the rest were recycled); for metrics and tests.
    pub fn histograms_allocated(&self) -> u64 {
        self.pool.allocated()
    }

    /// Replaces the endpoint set. Endpoints that stay keep their latency history, in-flight
    /// count and ejection state; new ones start with no history; removed ones are dropped.
    pub fn set_endpoints(&mut self, endpoints: &[SocketAddr]) {
        let mut old: HashMap<SocketAddr, Endpoint> =
            self.endpoints.drain(..).map(|e| (e.addr, e)).collect();
        let mut seen = HashSet::with_capacity(endpoints.len());
        for &addr in endpoints {
            if seen.insert(addr) {
                let endpoint = old.remove(&addr).unwrap_or_else(|| Endpoint::new(addr));
                self.endpoints.push(endpoint);
            }
        }
        for (_, mut gone) in old {
            gone.release(&mut self.pool);
        }
        self.index = self
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| (e.addr, i))
            .collect();
        self.out_of_pool = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.ejection.is_available())
            .map(|(i, _)| i)
            .collect();
        self.suspects = self
            .endpoints
            .iter()
            .enumerate()
            .filter(|(_, e)| e.ejection.is_suspect())
            .map(|(i, _)| i)
            .collect();
        self.next_suspect_probe = None;
        self.round_robin_next = 0;
        self.neutral = Neutral::default();
        self.pool.set_limit(self.endpoints.len() + POOL_SLACK);
    }

    /// Whether an endpoint in the pool (available or suspect) is left that this request has
    /// not tried (`exclude`): then a retry's [`choose`](Self::choose) takes a fresh one.
    /// The proxy waits the retry back-off only when none is left — a back-off spares an
    /// endpoint that just failed, and a retry on another one does not load it again.
    pub fn has_untried_available(&self, exclude: &[SocketAddr]) -> bool {
        self.endpoints
            .iter()
            .any(|e| e.ejection.is_available() && !exclude.contains(&e.addr))
    }

    /// A request was sent to `addr` (its in-flight count goes up by one). Every dispatch
    /// must be followed by exactly one [`on_outcome`](Self::on_outcome).
    pub fn on_dispatch(&mut self, addr: SocketAddr) {
        if let Some(&i) = self.index.get(&addr) {
            let e = &mut self.endpoints[i];
            e.unit.dispatched(e.in_flight);
            e.in_flight = e.in_flight.saturating_add(1);
        }
    }

    /// A request to `addr` finished after `latency` with `outcome`: in-flight goes down,
    /// the latency and outcome are recorded, and the ejection state machine advances
    /// (`rng` jitters a resulting back-off). Unknown addresses (already removed) are ignored.
    pub fn on_outcome(
        &mut self,
        addr: SocketAddr,
        now: Instant,
        latency: Duration,
        outcome: Outcome,
        rng: &mut impl RngCore,
    ) {
        let Some(&i) = self.index.get(&addr) else {
            return;
        };
        let may_eject = self.out_of_pool.len() < self.cfg.max_ejected(self.endpoints.len());
        let tau = self.cfg.ewma_decay;
        let e = &mut self.endpoints[i];
        e.in_flight = e.in_flight.saturating_sub(1);
        e.requests += 1;
        let transition = match outcome {
            Outcome::Success => {
                e.record_latency(now, latency, &self.cfg, &mut self.pool);
                self.service_peak
                    .observe(now, latency_us(latency) as f64, tau);
                e.failure_rate.observe(now, false, tau);
                e.ejection.on_success()
            }
            Outcome::Failure(kind) => {
                e.failures += 1;
                if kind == FailureKind::Timeout {
                    // The endpoint took at least this long: real evidence of slowness.
                    e.record_latency(now, latency, &self.cfg, &mut self.pool);
                }
                e.failure_rate.observe(now, true, tau);
                e.ejection
                    .on_failure(now, &self.cfg.ejection, may_eject, rng)
            }
        };
        self.neutral.dirty = true;
        match transition {
            Transition::None => {}
            Transition::Suspect(retry_at) => {
                if !self.suspects.contains(&i) {
                    self.suspects.push(i);
                }
                self.next_suspect_probe = self.next_suspect_probe.map(|at| at.min(retry_at));
            }
            Transition::Ejected(until) | Transition::Reejected(until) => {
                self.suspects.retain(|&j| j != i);
                if !self.out_of_pool.contains(&i) {
                    self.out_of_pool.push(i);
                }
                let ejections = self.endpoints[i].ejection.ejections();
                self.note_ejection(EjectionNotice {
                    addr,
                    until,
                    ejections,
                });
            }
            Transition::Recovered => {
                // The back-off paid for those failures and the probe is fresh evidence:
                // the endpoint comes back without a failure penalty.
                self.endpoints[i].failure_rate = FailureRate::default();
                self.out_of_pool.retain(|&j| j != i);
                self.suspects.retain(|&j| j != i);
            }
        }
    }

    fn note_ejection(&mut self, notice: EjectionNotice) {
        match self
            .pending_ejections
            .iter_mut()
            .find(|n| n.addr == notice.addr)
        {
            Some(existing) => *existing = notice,
            None => self.pending_ejections.push(notice),
        }
    }

    /// Moves endpoints whose back-off has ended to half-open.
    pub(crate) fn refresh_ejections(&mut self, now: Instant) {
        for &i in &self.out_of_pool {
            self.endpoints[i].ejection.refresh(now);
        }
    }

    /// A suspect endpoint whose probe is due at `now`, if any. Looks through the suspects
    /// only once the earliest known due time has come, so a choice costs nothing extra
    /// while none is due.
    pub(crate) fn due_suspect(&mut self, now: Instant) -> Option<usize> {
        if self.suspects.is_empty() || self.next_suspect_probe.is_some_and(|at| now < at) {
            return None;
        }
        let cfg = &self.cfg.ejection;
        let mut next: Option<Instant> = None;
        for &i in &self.suspects {
            match self.endpoints[i].ejection.next_probe_at(now, cfg) {
                Some(at) if at <= now => {
                    self.next_suspect_probe = None;
                    return Some(i);
                }
                Some(at) => next = Some(next.map_or(at, |n| n.min(at))),
                None => {}
            }
        }
        self.next_suspect_probe = next;
        None
    }

    /// The penalty magnitude in µs: what one failure is worth beyond a retry's latency —
    /// `failure_penalty` for the predicted score; for the load-product score the larger of
    /// it and the worst recent latency of the service.
    pub(crate) fn penalty_us(&self, now: Instant) -> f64 {
        let floor = latency_us(self.cfg.failure_penalty) as f64;
        if self.cfg.score == ScoreModel::Predicted {
            // The retry's own latency is in the score already (`× (1 + failure_rate)`).
            return floor;
        }
        let peak = self
            .service_peak
            .get(now, self.cfg.ewma_decay)
            .unwrap_or(0.0);
        floor.max(peak)
    }

    /// The latency an endpoint without history is scored at: the current estimate of the
    /// endpoint at the median of those with history (re-ranked at most every
    /// [`NEUTRAL_RERANK`] while outcomes arrive), or `cfg.neutral_latency` if none has any.
    pub(crate) fn neutral_us(&mut self, now: Instant) -> f64 {
        let n = &self.neutral;
        let ranked = match n.ranked_at {
            None => false,
            Some(at) => {
                !n.dirty
                    || (n.median_of.is_some() && now.saturating_duration_since(at) < NEUTRAL_RERANK)
            }
        };
        if ranked {
            let median = match self.neutral.median_of {
                None => return latency_us(self.cfg.neutral_latency) as f64,
                Some(i) => self.endpoints[i].latency_estimate(now, &self.cfg),
            };
            if let Some(v) = median {
                return v;
            }
        }
        let mut known = std::mem::take(&mut self.scratch_latencies);
        known.clear();
        for (i, e) in self.endpoints.iter_mut().enumerate() {
            if let Some(v) = e.latency_estimate(now, &self.cfg) {
                known.push((v, i));
            }
        }
        let (value_us, median_of) = if known.is_empty() {
            (latency_us(self.cfg.neutral_latency) as f64, None)
        } else {
            let mid = known.len() / 2;
            let (_, &mut (v, i), _) = known.select_nth_unstable_by(mid, |a, b| a.0.total_cmp(&b.0));
            (v, Some(i))
        };
        self.scratch_latencies = known;
        self.neutral = Neutral {
            median_of,
            ranked_at: Some(now),
            dirty: false,
        };
        value_us
    }

    /// [`neutral_us`](Self::neutral_us) without re-ranking or touching caches, for views.
    fn neutral_at(&self, now: Instant) -> f64 {
        self.neutral
            .median_of
            .and_then(|i| self.endpoints[i].latency_estimate_at(now, &self.cfg))
            .unwrap_or(latency_us(self.cfg.neutral_latency) as f64)
    }

    /// Score of endpoint `i` at `now` (lower wins), with the failure penalty `penalty_us`
    /// (from [`penalty_us`](Self::penalty_us), read once per choice).
    pub(crate) fn score_of(&mut self, i: usize, now: Instant, penalty_us: f64) -> f64 {
        let window = self.cfg.gossip_window;
        let e = &mut self.endpoints[i];
        e.window.expire(now, window, &mut self.pool);
        let estimate = e.latency_estimate(now, &self.cfg);
        let latency = match estimate {
            Some(v) => v,
            None => self.neutral_us(now),
        };
        let e = &self.endpoints[i];
        let rate = e.failure_rate.get(now, self.cfg.ewma_decay);
        score(self.cfg.score, latency, rate, penalty_us, e.in_flight)
    }

    /// Whether endpoint `i` failed recently enough that its score never ties with a better
    /// one: the tie band is for the noise between healthy endpoints, a failure is a real
    /// difference.
    pub(crate) fn is_failing(&self, i: usize, now: Instant) -> bool {
        self.endpoints[i].failure_rate.get(now, self.cfg.ewma_decay) > FAILING_RATE
    }

    /// Whether endpoint `i` is part of any tie it is not failing in: too few samples on
    /// this core to trust its score (see [`UNIT_TRUSTED_SAMPLES`]).
    pub(crate) fn is_untested(&self, i: usize) -> bool {
        let e = &self.endpoints[i];
        let sent = e.unit.dispatches();
        // Never tried here but seen by other cores: their samples are what this core knows
        // (one slow answer another core saw still steers this one).
        self.cfg.score == ScoreModel::Predicted
            && sent < UNIT_TRUSTED_SAMPLES
            && (sent > 0 || e.window.samples() == 0)
    }

    /// A snapshot of every endpoint for the admin API, in choice-index order.
    pub fn views(&self, now: Instant) -> Vec<EndpointView> {
        let penalty = self.penalty_us(now);
        let neutral = self.neutral_at(now);
        let us = |v: u64| Duration::from_micros(v);
        self.endpoints
            .iter()
            .map(|e| {
                let merged = e.window.merged_at(now, self.cfg.gossip_window);
                let q = |quantile| merged.as_ref().map(|h| us(h.value_at_quantile(quantile)));
                let estimate = e.latency_estimate_at(now, &self.cfg);
                let rate = e.failure_rate.get(now, self.cfg.ewma_decay);
                let latency = estimate.unwrap_or(neutral);
                EndpointView {
                    addr: e.addr,
                    state: e.ejection.health(now),
                    in_flight: e.in_flight,
                    p50: q(0.5),
                    p90: q(0.9),
                    p99: q(0.99),
                    window_samples: merged.as_ref().map_or(0, |h| h.len()),
                    requests: e.requests,
                    failures: e.failures,
                    success_rate: if e.requests == 0 {
                        1.0
                    } else {
                        (e.requests - e.failures) as f64 / e.requests as f64
                    },
                    recent_failure_rate: rate,
                    latency_estimate: estimate
                        .and_then(|v| Duration::try_from_secs_f64(v / 1e6).ok()),
                    score: score(self.cfg.score, latency, rate, penalty, e.in_flight),
                    consecutive_failures: e.ejection.consecutive_failures(),
                    ejections: e.ejection.ejections(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
