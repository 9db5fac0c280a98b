//! What a simulation runs: [`Scenario`] (endpoints, cores, load, retries), [`EndpointSpec`],
//! [`Dist`] and the choice [`Policy`] under test.

use std::time::Duration;

use rand::{Rng, RngCore};

use crate::config::{BalancerConfig, Kind, ScoreModel};

/// A distribution of durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Dist {
    /// Always this long.
    Fixed(Duration),
    /// Uniform between the two bounds.
    Uniform(Duration, Duration),
    /// Exponential with this mean.
    Exponential(Duration),
    /// A fixed part plus an exponential part with the given mean.
    Shifted(Duration, Duration),
    /// `Shifted(base, mean)`, and one draw in `one_in` also waits an exponential pause of
    /// mean `pause`: a busy machine's scheduling stalls, which land on a few answers.
    Paused {
        /// Fixed part.
        base: Duration,
        /// Mean of the exponential part.
        mean: Duration,
        /// Mean of a pause.
        pause: Duration,
        /// One draw in this many pauses (0: never).
        one_in: u32,
    },
}

impl Dist {
    /// One draw, in nanoseconds.
    pub(crate) fn sample_ns(&self, rng: &mut impl RngCore) -> u64 {
        let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
        let exp = |mean: Duration, rng: &mut dyn RngCore| {
            let u: f64 = rng.gen();
            // 1 - u is in (0, 1]: the logarithm is finite.
            (-(1.0 - u).ln() * ns(mean) as f64) as u64
        };
        match *self {
            Dist::Fixed(d) => ns(d),
            Dist::Uniform(lo, hi) if hi > lo => rng.gen_range(ns(lo)..=ns(hi)),
            Dist::Uniform(lo, _) => ns(lo),
            Dist::Exponential(mean) => exp(mean, rng),
            Dist::Shifted(base, mean) => ns(base).saturating_add(exp(mean, rng)),
            Dist::Paused {
                base,
                mean,
                pause,
                one_in,
            } => {
                let t = ns(base).saturating_add(exp(mean, rng));
                if one_in > 0 && rng.gen_range(0..one_in) == 0 {
                    t.saturating_add(exp(pause, rng))
                } else {
                    t
                }
            }
        }
    }

    /// The mean.
    pub fn mean(&self) -> Duration {
        match *self {
            Dist::Fixed(d) | Dist::Exponential(d) => d,
            Dist::Uniform(lo, hi) => (lo + hi.max(lo)) / 2,
            Dist::Shifted(base, mean) => base + mean,
            Dist::Paused {
                base,
                mean,
                pause,
                one_in,
            } => base + mean + pause.checked_div(one_in).unwrap_or_default(),
        }
    }
}

/// One simulated endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointSpec {
    /// Shown in reports.
    pub name: String,
    /// Time a worker spends on a request that succeeds.
    pub service: Dist,
    /// Requests served at once; more wait in a FIFO queue. `None`: no limit (a server that
    /// only waits, like one whose latency is a timer).
    pub workers: Option<u32>,
    /// Share of requests (0 to 1) answered with a counted failure (503).
    pub error_rate: f64,
    /// Time a worker spends on a request that fails.
    pub error_service: Dist,
}

impl EndpointSpec {
    /// An endpoint that never fails.
    pub fn new(name: &str, service: Dist, workers: Option<u32>) -> Self {
        EndpointSpec {
            name: name.to_string(),
            service,
            workers,
            error_rate: 0.0,
            error_service: service,
        }
    }

    /// The same endpoint failing `rate` of its requests, each failure taking `service`.
    pub fn failing(mut self, rate: f64, service: Dist) -> Self {
        self.error_rate = rate;
        self.error_service = service;
        self
    }
}

/// Where requests come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// This many connections, each sending its next request as soon as the previous one is
    /// answered; connection `i` belongs to core `i % cores`.
    Closed {
        /// Concurrent connections.
        connections: usize,
    },
    /// Poisson arrivals at this many requests per second, each to a random core.
    Open {
        /// Mean arrival rate.
        rate_per_sec: f64,
    },
}

/// A whole simulated setup.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The service's endpoints.
    pub endpoints: Vec<EndpointSpec>,
    /// Proxy cores, each with its own balancer.
    pub cores: usize,
    /// The clients.
    pub load: Load,
    /// Simulated time before measuring (balancers learn, queues settle).
    pub warmup: Duration,
    /// Simulated time measured after the warm-up.
    pub duration: Duration,
    /// Gossip tick of each core (the proxy's default is 100 ms).
    pub gossip_interval: Duration,
    /// Attempts per request (1: no retries); a failure is retried on another endpoint.
    pub max_attempts: u32,
    /// Base of the full-jitter retry back-off (the proxy's default is 2 ms).
    pub retry_backoff_base: Duration,
    /// Ceiling of the retry back-off (the proxy's default is 50 ms).
    pub retry_backoff_max: Duration,
    /// When a retry waits its back-off (the proxy's rule is
    /// [`RetryBackoff::SameEndpoint`]).
    pub retry_backoff: RetryBackoff,
}

/// Which retries wait the jittered back-off before they go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryBackoff {
    /// Every retry, wherever it goes (the proxy's former rule).
    Always,
    /// Only when every available endpoint was already tried by this request; while a
    /// fresh one is left the retry goes out at once (as nginx's `proxy_next_upstream`
    /// and HAProxy's redispatch do).
    SameEndpoint,
}

impl Scenario {
    /// `endpoints` behind `cores` cores with the proxy's defaults: 100 ms gossip, three
    /// attempts, 2–50 ms retry back-off (only once no fresh endpoint is left), 1 s of warm-up and 5 s measured.
    pub fn new(endpoints: Vec<EndpointSpec>, cores: usize, load: Load) -> Self {
        Scenario {
            endpoints,
            cores,
            load,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(5),
            gossip_interval: Duration::from_millis(100),
            max_attempts: 3,
            retry_backoff_base: Duration::from_millis(2),
            retry_backoff_max: Duration::from_millis(50),
            retry_backoff: RetryBackoff::SameEndpoint,
        }
    }
}

/// A choice policy under test.
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// The crate's own [`ServiceBalancer`](crate::ServiceBalancer) with this configuration
    /// (one per core, gossiping).
    Balancer(BalancerConfig),
    /// The endpoint with the fewest outstanding requests over all cores (HAProxy's and
    /// nginx's `leastconn` with shared counters); ties at random.
    LeastConnections,
    /// Least-connections with passive health checks, as the benchmark's peers run it: an
    /// endpoint that answers `errors` counted failures in a row (over all cores) is out of
    /// the choice for `down` (HAProxy's `observe layer7 error-limit 3 on-error mark-down`
    /// with `check inter 1s rise 2`: about 2 s; nginx's `max_fails=3 fail_timeout=5s`: 5 s,
    /// counting failures within the timeout rather than in a row). If every endpoint is
    /// down, any of them is used.
    LeastConnectionsEjecting {
        /// Counted failures in a row that take an endpoint out.
        errors: u32,
        /// How long it stays out.
        down: Duration,
    },
    /// Linkerd's choice: per core, two random endpoints, the lower
    /// `peak-EWMA RTT × (pending + 1)` wins; 10 s decay, 30 ms assumed before any sample;
    /// failures are latency samples like any other.
    PeakEwmaP2c,
}

impl Policy {
    /// The balancer's default: predicted latency, all endpoints scored in small services.
    pub fn predicted() -> Policy {
        Policy::Balancer(BalancerConfig::default())
    }

    /// The predicted-latency score with power of two choices whatever the size.
    pub fn predicted_p2c() -> Policy {
        Policy::Balancer(BalancerConfig {
            scan_all_up_to: 0,
            ..BalancerConfig::default()
        })
    }

    /// The former least-latency choice: the load-product score with two choices and its
    /// 100 ms failure penalty.
    pub fn load_product() -> Policy {
        Policy::Balancer(BalancerConfig {
            score: ScoreModel::LoadProduct,
            scan_all_up_to: 0,
            failure_penalty: Duration::from_millis(100),
            ..BalancerConfig::default()
        })
    }

    /// The balancer's round-robin.
    pub fn round_robin() -> Policy {
        Policy::Balancer(BalancerConfig {
            kind: Kind::RoundRobin,
            ..BalancerConfig::default()
        })
    }

    /// Every policy the comparison shows, with its name.
    pub fn all() -> Vec<(&'static str, Policy)> {
        vec![
            ("predicted", Policy::predicted()),
            ("predicted-p2c", Policy::predicted_p2c()),
            ("load-product", Policy::load_product()),
            ("peak-ewma-p2c", Policy::PeakEwmaP2c),
            ("least-conn", Policy::LeastConnections),
            ("round-robin", Policy::round_robin()),
        ]
    }
}
