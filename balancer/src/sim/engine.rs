//! The event loop of the simulation: [`run`].
//!
//! Time is whole nanoseconds since the start; an event queue ordered by (time, sequence)
//! makes every run a pure function of the scenario, the policy and the seed. Events: a
//! closed-loop connection starts its next request, an open-loop request arrives, an attempt
//! is chosen and sent, an endpoint finishes an attempt, a core's gossip tick.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::peers::{least_connections, PeakEwmaP2c};
use super::report::{EndpointReport, Report};
use super::scenario::{Load, Policy, RetryBackoff, Scenario};
use crate::backoff::backoff;
use crate::mesh::{GossipMesh, GossipPort};
use crate::outcome::{FailureKind, Outcome};
use crate::service::ServiceBalancer;

/// Attempts a request makes at most, whatever the scenario says (the tried list is a
/// fixed array).
const MAX_ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// Closed loop: connection `client` sends its next request.
    Start { client: usize },
    /// Open loop: the next request arrives.
    Arrive,
    /// Request `req` chooses an endpoint and is sent.
    Attempt { req: usize },
    /// Endpoint `endpoint` finishes request `req`.
    Done {
        req: usize,
        endpoint: usize,
        failed: bool,
    },
    /// Core `core` gossips.
    Tick { core: usize },
}

#[derive(Debug, Clone, Copy)]
struct Request {
    core: usize,
    client: Option<usize>,
    started: u64,
    sent: u64,
    tried: [usize; MAX_ATTEMPTS],
    attempts: usize,
}

#[derive(Debug, Default)]
struct Server {
    busy: u32,
    queue: VecDeque<usize>,
    /// Sent and not finished (busy + queued), over all cores.
    outstanding: u32,
}

enum Core {
    Balancer(Box<ServiceBalancer>, GossipPort),
    PeakEwma(PeakEwmaP2c),
    Shared,
}

struct World<'a> {
    scenario: &'a Scenario,
    base: Instant,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    requests: Vec<Request>,
    free: Vec<usize>,
    servers: Vec<Server>,
    cores: Vec<Core>,
    core_rngs: Vec<SmallRng>,
    world_rng: SmallRng,
    endpoint_rngs: Vec<SmallRng>,
    addrs: Vec<SocketAddr>,
    measure_from: u64,
    end: u64,
    latencies: Histogram<u64>,
    completed: u64,
    errors: u64,
    retries: u64,
    attempts: Vec<u64>,
    failures: Vec<u64>,
    /// Passive health checks of [`Policy::LeastConnectionsEjecting`]: counted failures in
    /// a row per endpoint, and until when (ns) each is out of the choice.
    errors_in_a_row: Vec<u32>,
    down_until: Vec<u64>,
    passive: Option<(u32, u64)>,
}

fn ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// Runs `policy` on `scenario` with randomness from `seed`; simulated time starts at
/// `base`. Deterministic: the same arguments give the same report.
pub fn run(scenario: &Scenario, policy: &Policy, seed: u64, base: Instant) -> Report {
    let n = scenario.endpoints.len();
    let cores = scenario.cores.max(1);
    let addrs: Vec<SocketAddr> = (0..n)
        .map(|i| SocketAddr::from(([127, 0, 0, 1], 10_000 + i as u16)))
        .collect();
    let mut ports = GossipMesh::new(cores).into_iter();
    let core_states = (0..cores)
        .map(|_| match policy {
            Policy::Balancer(cfg) => match ports.next() {
                Some(port) => Core::Balancer(
                    Box::new(ServiceBalancer::new(Arc::from("sim"), &addrs, cfg.clone())),
                    port,
                ),
                None => Core::Shared,
            },
            Policy::PeakEwmaP2c => Core::PeakEwma(PeakEwmaP2c::new(n)),
            Policy::LeastConnections | Policy::LeastConnectionsEjecting { .. } => Core::Shared,
        })
        .collect();
    // Constant bounds (1 µs to 10 min, three digits), not influenced by any input.
    let latencies =
        Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds");
    let measure_from = ns(scenario.warmup);
    let mut world = World {
        scenario,
        base,
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        requests: Vec::new(),
        free: Vec::new(),
        servers: (0..n).map(|_| Server::default()).collect(),
        cores: core_states,
        core_rngs: (0..cores)
            .map(|c| {
                SmallRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(c as u64 + 1))
            })
            .collect(),
        world_rng: SmallRng::seed_from_u64(seed),
        endpoint_rngs: (0..n)
            .map(|i| {
                SmallRng::seed_from_u64(seed.wrapping_add(0x5151u64.wrapping_mul(i as u64 + 1)))
            })
            .collect(),
        addrs,
        measure_from,
        end: measure_from.saturating_add(ns(scenario.duration)),
        latencies,
        completed: 0,
        errors: 0,
        retries: 0,
        attempts: vec![0; n],
        failures: vec![0; n],
        errors_in_a_row: vec![0; n],
        down_until: vec![0; n],
        passive: match policy {
            Policy::LeastConnectionsEjecting { errors, down } => Some((*errors, ns(*down))),
            _ => None,
        },
    };
    world.start();
    while let Some(Reverse((at, _, event))) = world.queue.pop() {
        if at > world.end {
            break;
        }
        world.now = at;
        world.handle(event);
    }
    world.report()
}

impl World<'_> {
    fn instant(&self) -> Instant {
        self.base + Duration::from_nanos(self.now)
    }

    fn schedule(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, event)));
    }

    fn start(&mut self) {
        if self.scenario.endpoints.is_empty() {
            return;
        }
        match self.scenario.load {
            Load::Closed { connections } => {
                for client in 0..connections {
                    self.schedule(0, Event::Start { client });
                }
            }
            Load::Open { .. } => self.schedule(0, Event::Arrive),
        }
        let cores = self.cores.len() as u64;
        let tick = ns(self.scenario.gossip_interval).max(1);
        for core in 0..self.cores.len() {
            self.schedule(tick * (core as u64 + 1) / cores, Event::Tick { core });
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Start { client } => {
                let core = client % self.cores.len();
                let req = self.new_request(core, Some(client));
                self.attempt(req);
            }
            Event::Arrive => {
                let core = self.world_rng.gen_range(0..self.cores.len());
                let req = self.new_request(core, None);
                self.attempt(req);
                if let Load::Open { rate_per_sec } = self.scenario.load {
                    if rate_per_sec > 0.0 {
                        let u: f64 = self.world_rng.gen();
                        let gap = -(1.0 - u).ln() / rate_per_sec * 1e9;
                        self.schedule(self.now + (gap as u64).max(1), Event::Arrive);
                    }
                }
            }
            Event::Attempt { req } => self.attempt(req),
            Event::Done {
                req,
                endpoint,
                failed,
            } => self.done(req, endpoint, failed),
            Event::Tick { core } => self.tick(core),
        }
    }

    fn new_request(&mut self, core: usize, client: Option<usize>) -> usize {
        let r = Request {
            core,
            client,
            started: self.now,
            sent: self.now,
            tried: [0; MAX_ATTEMPTS],
            attempts: 0,
        };
        match self.free.pop() {
            Some(i) => {
                self.requests[i] = r;
                i
            }
            None => {
                self.requests.push(r);
                self.requests.len() - 1
            }
        }
    }

    /// Chooses an endpoint for `req` on its core and sends it there.
    fn attempt(&mut self, req: usize) {
        let now = self.instant();
        let r = self.requests[req];
        let tried = &r.tried[..r.attempts];
        let rng = &mut self.core_rngs[r.core];
        let endpoint = match &mut self.cores[r.core] {
            Core::Balancer(bal, _) => {
                let mut exclude = [self.addrs[0]; MAX_ATTEMPTS];
                for (slot, &i) in exclude.iter_mut().zip(tried) {
                    *slot = self.addrs[i];
                }
                let choice = bal.choose(now, rng, &exclude[..tried.len()]);
                let Some(choice) = choice else { return };
                bal.on_dispatch(choice.addr);
                choice.index
            }
            Core::PeakEwma(p) => {
                let i = p.choose(now, rng, tried);
                p.dispatch(i);
                i
            }
            Core::Shared => {
                let outstanding: Vec<u32> = self.servers.iter().map(|s| s.outstanding).collect();
                // An endpoint marked down is left out like one already tried (and used
                // like one if nothing else is left).
                let mut skip = [0usize; 2 * MAX_ATTEMPTS];
                let mut k = 0;
                for &i in tried {
                    skip[k] = i;
                    k += 1;
                }
                for (i, &until) in self.down_until.iter().enumerate() {
                    if until > self.now && k < skip.len() && !tried.contains(&i) {
                        skip[k] = i;
                        k += 1;
                    }
                }
                least_connections(&outstanding, rng, &skip[..k])
            }
        };
        let r = &mut self.requests[req];
        r.tried[r.attempts] = endpoint;
        r.attempts += 1;
        r.sent = self.now;
        if self.now >= self.measure_from {
            self.attempts[endpoint] += 1;
        }
        let server = &mut self.servers[endpoint];
        server.outstanding += 1;
        let limit = self.scenario.endpoints[endpoint]
            .workers
            .unwrap_or(u32::MAX);
        if server.busy < limit {
            server.busy += 1;
            self.serve(req, endpoint);
        } else {
            server.queue.push_back(req);
        }
    }

    /// A worker of `endpoint` takes `req`: draw its fate and schedule its end.
    fn serve(&mut self, req: usize, endpoint: usize) {
        let spec = &self.scenario.endpoints[endpoint];
        let rng = &mut self.endpoint_rngs[endpoint];
        let failed = spec.error_rate > 0.0 && rng.gen::<f64>() < spec.error_rate;
        let took = if failed {
            spec.error_service.sample_ns(rng)
        } else {
            spec.service.sample_ns(rng)
        };
        self.schedule(
            self.now.saturating_add(took.max(1)),
            Event::Done {
                req,
                endpoint,
                failed,
            },
        );
    }

    fn done(&mut self, req: usize, endpoint: usize, failed: bool) {
        let server = &mut self.servers[endpoint];
        server.outstanding = server.outstanding.saturating_sub(1);
        match server.queue.pop_front() {
            Some(next) => self.serve(next, endpoint),
            None => server.busy = server.busy.saturating_sub(1),
        }
        let now = self.instant();
        let r = self.requests[req];
        let latency = Duration::from_nanos(self.now - r.sent);
        let outcome = if failed {
            Outcome::Failure(FailureKind::Status(503))
        } else {
            Outcome::Success
        };
        let rng = &mut self.core_rngs[r.core];
        match &mut self.cores[r.core] {
            Core::Balancer(bal, _) => {
                bal.on_outcome(self.addrs[endpoint], now, latency, outcome, rng)
            }
            Core::PeakEwma(p) => p.outcome(endpoint, now, latency),
            Core::Shared => {}
        }
        if let Some((errors, down)) = self.passive {
            if failed {
                self.errors_in_a_row[endpoint] += 1;
                if self.errors_in_a_row[endpoint] >= errors {
                    self.errors_in_a_row[endpoint] = 0;
                    self.down_until[endpoint] = self.now.saturating_add(down);
                }
            } else {
                self.errors_in_a_row[endpoint] = 0;
            }
        }
        let measured = r.sent >= self.measure_from;
        if failed && measured {
            self.failures[endpoint] += 1;
        }
        let limit = (self.scenario.max_attempts.max(1) as usize).min(MAX_ATTEMPTS);
        if failed && r.attempts < limit {
            let tried = &r.tried[..r.attempts];
            let fresh = match &self.cores[r.core] {
                Core::Balancer(bal, _) => {
                    let mut exclude = [self.addrs[0]; MAX_ATTEMPTS];
                    for (slot, &i) in exclude.iter_mut().zip(tried) {
                        *slot = self.addrs[i];
                    }
                    bal.has_untried_available(&exclude[..tried.len()])
                }
                Core::PeakEwma(_) | Core::Shared => tried.len() < self.addrs.len(),
            };
            let wait = match self.scenario.retry_backoff {
                RetryBackoff::SameEndpoint if fresh => Duration::ZERO,
                RetryBackoff::Always | RetryBackoff::SameEndpoint => backoff(
                    r.attempts as u32 - 1,
                    self.scenario.retry_backoff_base,
                    self.scenario.retry_backoff_max,
                    &mut self.core_rngs[r.core],
                ),
            };
            if r.started >= self.measure_from {
                self.retries += 1;
            }
            self.schedule(self.now + ns(wait), Event::Attempt { req });
            return;
        }
        if r.started >= self.measure_from {
            self.completed += 1;
            self.errors += u64::from(failed);
            let us = ((self.now - r.started) / 1_000).max(1);
            self.latencies.saturating_record(us);
        }
        self.free.push(req);
        if let Some(client) = r.client {
            self.schedule(self.now, Event::Start { client });
        }
    }

    /// Core `core`'s gossip tick: send its batch to the others, merge what they sent.
    fn tick(&mut self, core: usize) {
        let now = self.instant();
        if let Core::Balancer(bal, port) = &mut self.cores[core] {
            if let Some(batch) = bal.take_gossip(now) {
                port.broadcast(&batch);
            }
            while let Some(batch) = port.try_recv() {
                bal.merge_gossip(&batch, now);
            }
        }
        let tick = ns(self.scenario.gossip_interval).max(1);
        self.schedule(self.now + tick, Event::Tick { core });
    }

    fn report(&self) -> Report {
        let total: u64 = self.attempts.iter().sum();
        let seconds = self.scenario.duration.as_secs_f64().max(1e-9);
        let q = |p: f64| Duration::from_micros(self.latencies.value_at_quantile(p));
        Report {
            completed: self.completed,
            errors: self.errors,
            retries: self.retries,
            throughput: self.completed as f64 / seconds,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            endpoints: self
                .scenario
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, spec)| EndpointReport {
                    name: spec.name.clone(),
                    attempts: self.attempts[i],
                    share: if total == 0 {
                        0.0
                    } else {
                        self.attempts[i] as f64 / total as f64
                    },
                    failures: self.failures[i],
                })
                .collect(),
        }
    }
}
