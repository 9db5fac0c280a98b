//! The per-endpoint ejection state machine: [`Ejection`] and its public face [`Health`].
//!
//! ```text
//!            N consecutive failures (and the service's ejection cap allows)
//!  Available ─────────────────────────────────────────────► Ejected { until }
//!      ▲                                                      │ now ≥ until
//!      │ probe succeeds (ejection count resets)               ▼
//!      └─────────────────────────────────────────────────── HalfOpen ── one probe
//!                      probe fails: Ejected again, back-off doubled ◄──┘
//! ```
//!
//! The back-off of the k-th ejection in a row is `min(max, base × 2^(k-1))`, shortened by a
//! random factor in `[1 - jitter, 1]`. Outcomes that arrive while `Ejected` (requests sent
//! before the ejection, or fallbacks when nothing is available) do not change the state; in
//! `HalfOpen` the first outcome to arrive decides. The ejection cap is the service's
//! business: it passes `may_eject`.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use crate::backoff::exponential;
use crate::config::EjectionConfig;

/// Where an endpoint stands, as shown in [`EndpointView`](crate::EndpointView).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// In the pool.
    Available,
    /// Out of the pool until `until`.
    Ejected {
        /// When the endpoint becomes half-open.
        until: Instant,
    },
    /// Back-off over: the next request is a probe (`probe_in_flight` once it is sent).
    HalfOpen {
        /// Whether the single probe request is out and its outcome not yet known.
        probe_in_flight: bool,
    },
}

/// Internal state: `HalfOpen` remembers when its probe went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Available,
    Ejected { until: Instant },
    HalfOpen { probe_sent: Option<Instant> },
}

/// What an outcome did to the state, for the service to keep its bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// Newly out of the pool, until this instant (gossip it).
    Ejected(Instant),
    /// Half-open probe failed: out again, until this instant (gossip it).
    Reejected(Instant),
    /// Probe succeeded: back in the pool.
    Recovered,
}

#[derive(Debug, Clone)]
pub(crate) struct Ejection {
    state: State,
    consecutive_failures: u32,
    /// Ejections in a row without a successful probe; sets the back-off.
    ejections: u32,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            state: State::Available,
            consecutive_failures: 0,
            ejections: 0,
        }
    }
}

impl Ejection {
    pub(crate) fn is_available(&self) -> bool {
        self.state == State::Available
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The public view at `now` (an expired ejection shows as half-open).
    pub(crate) fn health(&self, now: Instant) -> Health {
        match self.state {
            State::Available => Health::Available,
            State::Ejected { until } if now < until => Health::Ejected { until },
            State::Ejected { .. } => Health::HalfOpen {
                probe_in_flight: false,
            },
            State::HalfOpen { probe_sent } => Health::HalfOpen {
                probe_in_flight: probe_sent.is_some(),
            },
        }
    }

    /// Moves an expired ejection to half-open.
    pub(crate) fn refresh(&mut self, now: Instant) {
        if let State::Ejected { until } = self.state {
            if now >= until {
                self.state = State::HalfOpen { probe_sent: None };
            }
        }
    }

    /// Whether a probe may be sent now: half-open with no probe out (or one out for longer
    /// than `probe_timeout`, whose outcome is taken to be lost).
    pub(crate) fn probe_ready(&self, now: Instant, cfg: &EjectionConfig) -> bool {
        match self.state {
            State::HalfOpen { probe_sent: None } => true,
            State::HalfOpen {
                probe_sent: Some(at),
            } => now.saturating_duration_since(at) >= cfg.probe_timeout,
            _ => false,
        }
    }

    /// Marks the probe as sent.
    pub(crate) fn start_probe(&mut self, now: Instant) {
        if let State::HalfOpen { .. } = self.state {
            self.state = State::HalfOpen {
                probe_sent: Some(now),
            };
        }
    }

    pub(crate) fn on_success(&mut self) -> Transition {
        self.consecutive_failures = 0;
        match self.state {
            State::HalfOpen { .. } => {
                self.state = State::Available;
                self.ejections = 0;
                Transition::Recovered
            }
            _ => Transition::None,
        }
    }

    pub(crate) fn on_failure(
        &mut self,
        now: Instant,
        cfg: &EjectionConfig,
        may_eject: bool,
        rng: &mut impl RngCore,
    ) -> Transition {
        match self.state {
            State::Available => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= cfg.consecutive_failures.max(1) && may_eject {
                    Transition::Ejected(self.eject(now, cfg, rng))
                } else {
                    Transition::None
                }
            }
            State::HalfOpen { .. } => Transition::Reejected(self.eject(now, cfg, rng)),
            State::Ejected { .. } => Transition::None,
        }
    }

    fn eject(&mut self, now: Instant, cfg: &EjectionConfig, rng: &mut impl RngCore) -> Instant {
        self.ejections = self.ejections.saturating_add(1);
        self.consecutive_failures = 0;
        let backoff = backoff_for(self.ejections, cfg, rng);
        // A configured back-off too large for the clock falls back to the default maximum.
        let until = now
            .checked_add(backoff)
            .unwrap_or_else(|| now + crate::config::DEFAULT_MAX_BACKOFF);
        self.state = State::Ejected { until };
        until
    }

    /// Applies an ejection decided on another core. Returns whether the endpoint newly left
    /// the pool. An available endpoint is ejected only if `may_eject`; one that is already
    /// out keeps the later of the two deadlines.
    pub(crate) fn apply_remote(
        &mut self,
        now: Instant,
        until: Instant,
        ejections: u32,
        may_eject: bool,
    ) -> bool {
        if until <= now {
            return false;
        }
        match self.state {
            State::Available if may_eject => {
                self.state = State::Ejected { until };
                self.consecutive_failures = 0;
                self.ejections = self.ejections.max(ejections);
                true
            }
            State::Available => false,
            State::Ejected { until: mine } => {
                self.state = State::Ejected {
                    until: mine.max(until),
                };
                self.ejections = self.ejections.max(ejections);
                false
            }
            State::HalfOpen { .. } => {
                self.state = State::Ejected { until };
                self.ejections = self.ejections.max(ejections);
                false
            }
        }
    }
}

/// Back-off of the `ejections`-th ejection in a row (1-based), jittered downward.
pub(crate) fn backoff_for(
    ejections: u32,
    cfg: &EjectionConfig,
    rng: &mut impl RngCore,
) -> Duration {
    let full = exponential(
        ejections.saturating_sub(1),
        cfg.base_backoff,
        cfg.max_backoff.max(cfg.base_backoff),
    );
    let jitter = cfg.backoff_jitter.clamp(0.0, 1.0);
    let factor = if jitter > 0.0 {
        rng.gen_range((1.0 - jitter)..=1.0)
    } else {
        1.0
    };
    full.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn ejects_after_consecutive_failures_only() {
        let t0 = Instant::now();
        let cfg = EjectionConfig::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut e = Ejection::default();
        for _ in 0..4 {
            assert_eq!(e.on_failure(t0, &cfg, true, &mut rng), Transition::None);
        }
        e.on_success();
        for _ in 0..4 {
            assert_eq!(e.on_failure(t0, &cfg, true, &mut rng), Transition::None);
        }
        let Transition::Ejected(until) = e.on_failure(t0, &cfg, true, &mut rng) else {
            panic!("fifth failure in a row ejects");
        };
        let backoff = until - t0;
        assert!(backoff >= secs(0.8) && backoff <= secs(1.0), "{backoff:?}");
        assert_eq!(e.health(t0), Health::Ejected { until });
        assert_eq!(
            e.health(until),
            Health::HalfOpen {
                probe_in_flight: false
            }
        );
    }

    #[test]
    fn cap_refusal_keeps_counting() {
        let t0 = Instant::now();
        let cfg = EjectionConfig::default();
        let mut rng = SmallRng::seed_from_u64(1);
        let mut e = Ejection::default();
        for _ in 0..7 {
            assert_eq!(e.on_failure(t0, &cfg, false, &mut rng), Transition::None);
        }
        assert!(e.is_available());
        assert_eq!(e.consecutive_failures(), 7);
        assert!(matches!(
            e.on_failure(t0, &cfg, true, &mut rng),
            Transition::Ejected(_)
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_max() {
        let cfg = EjectionConfig::default();
        let mut rng = SmallRng::seed_from_u64(3);
        for (k, full) in [
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (6, 32.0),
            (7, 60.0),
            (40, 60.0),
        ] {
            let b = backoff_for(k, &cfg, &mut rng);
            assert!(b <= secs(full) && b >= secs(full * 0.8), "{k}: {b:?}");
        }
        let exact = EjectionConfig {
            backoff_jitter: 0.0,
            ..cfg
        };
        assert_eq!(backoff_for(2, &exact, &mut rng), secs(2.0));
    }

    #[test]
    fn absurd_backoff_config_does_not_panic() {
        let t0 = Instant::now();
        let cfg = EjectionConfig {
            base_backoff: Duration::MAX,
            max_backoff: Duration::MAX,
            consecutive_failures: 1,
            ..EjectionConfig::default()
        };
        let mut rng = SmallRng::seed_from_u64(1);
        let mut e = Ejection::default();
        assert!(matches!(
            e.on_failure(t0, &cfg, true, &mut rng),
            Transition::Ejected(_)
        ));
    }

    #[test]
    fn remote_ejection_respects_cap_and_keeps_later_deadline() {
        let t0 = Instant::now();
        let mut e = Ejection::default();
        assert!(!e.apply_remote(t0, t0 + secs(1.0), 1, false));
        assert!(e.is_available());
        assert!(
            !e.apply_remote(t0, t0, 1, true),
            "expired notice is ignored"
        );
        assert!(e.apply_remote(t0, t0 + secs(1.0), 2, true));
        assert_eq!(e.ejections(), 2);
        e.apply_remote(t0, t0 + secs(0.5), 1, true);
        assert_eq!(
            e.health(t0),
            Health::Ejected {
                until: t0 + secs(1.0)
            }
        );
    }
}
