//! The per-endpoint ejection state machine: [`Ejection`] and its public face [`Health`].
//!
//! ```text
//!               counted failure                N consecutive failures (and the cap allows)
//!  Available ─────────────────► Suspect ──────────────────────────────► Ejected { until }
//!      ▲  ▲   probe succeeds    │    ▲ │ failure: re-try later                │ now ≥ until
//!      │  └─────────────────────┘    └─┘ (back-off doubles if it was the probe) ▼
//!      │ probe succeeds (ejection count resets)                             HalfOpen ── one probe
//!      └────────────────────────────────────────────────────────────────────┘   │
//!                               probe fails: Ejected again, back-off doubled ◄──┘
//! ```
//!
//! *Suspect* is an endpoint that failed and has not passed a probe since: it stays in the
//! pool (the failure penalty in its score keeps least-latency away from it), and once its
//! back-off has passed since its last failure one request is let through as a probe, exactly
//! like half-open. So an endpoint that least-latency shuns after one failure — and which
//! therefore never fails five times in a row — is still re-tried on a schedule, and a
//! recovered one comes back within the back-off however fast its peers are.
//!
//! One back-off sequence serves both: `min(max, base × 2^p)` where `p` is the number of
//! probes (suspect or half-open) that failed in a row, shortened by a random factor in
//! `[1 - jitter, 1]`; a successful probe resets it. An ejection by N failures of ordinary
//! traffic therefore starts at `base`, as before, and an endpoint that kept failing its
//! suspect probes is ejected for the next step of the same sequence.
//!
//! Outcomes that arrive while `Ejected` (requests sent before the ejection, or fallbacks
//! when nothing is available) do not change the state; in `HalfOpen`, and in `Suspect` once
//! the probe is out, the first outcome to arrive decides. In `Suspect` without a probe out,
//! a success only resets the failures in a row (the penalty stays until a probe passes) and
//! a failure postpones the probe to a back-off after it. The ejection cap is the service's
//! business: it passes `may_eject`.

use std::time::{Duration, Instant};

use rand::{Rng, RngCore};

use crate::backoff::exponential;
use crate::config::EjectionConfig;

/// Where an endpoint stands, as shown in [`EndpointView`](crate::EndpointView).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// In the pool (including an endpoint that failed recently and awaits its re-try probe:
    /// it is still chosen by score, and its failures show in the view's counters).
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

/// Internal state: `Suspect` and `HalfOpen` remember when their probe went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Available,
    Suspect {
        retry_at: Instant,
        probe_sent: Option<Instant>,
    },
    Ejected {
        until: Instant,
    },
    HalfOpen {
        probe_sent: Option<Instant>,
    },
}

/// What an outcome did to the state, for the service to keep its bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transition {
    None,
    /// Failed and stays in the pool: suspect, its probe due at this instant.
    Suspect(Instant),
    /// Newly out of the pool, until this instant (gossip it).
    Ejected(Instant),
    /// Half-open probe failed: out again, until this instant (gossip it).
    Reejected(Instant),
    /// A probe (half-open or suspect) succeeded: back in the pool with a clean record.
    Recovered,
}

#[derive(Debug, Clone)]
pub(crate) struct Ejection {
    state: State,
    consecutive_failures: u32,
    /// Ejections in a row without a successful probe (shown, gossiped, counted in metrics).
    ejections: u32,
    /// Probes (suspect or half-open) that failed in a row: sets the next back-off.
    failed_probes: u32,
}

impl Default for Ejection {
    fn default() -> Self {
        Ejection {
            state: State::Available,
            consecutive_failures: 0,
            ejections: 0,
            failed_probes: 0,
        }
    }
}

impl Ejection {
    /// In the pool: available or suspect.
    pub(crate) fn is_available(&self) -> bool {
        matches!(self.state, State::Available | State::Suspect { .. })
    }

    /// Failed since its last successful probe; awaiting (or running) its re-try probe.
    pub(crate) fn is_suspect(&self) -> bool {
        matches!(self.state, State::Suspect { .. })
    }

    pub(crate) fn ejections(&self) -> u32 {
        self.ejections
    }

    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The public view at `now` (an expired ejection shows as half-open, a suspect as
    /// available).
    pub(crate) fn health(&self, now: Instant) -> Health {
        match self.state {
            State::Available | State::Suspect { .. } => Health::Available,
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

    /// Whether a probe may be sent now: half-open, or suspect past its back-off, with no
    /// probe out (or one out for longer than `probe_timeout`, whose outcome is taken to be
    /// lost).
    pub(crate) fn probe_ready(&self, now: Instant, cfg: &EjectionConfig) -> bool {
        self.next_probe_at(now, cfg).is_some_and(|at| now >= at)
    }

    /// When a probe may be sent (`now` if it may be sent now), for a half-open or suspect
    /// endpoint; `None` for others. (An expired ejection becomes half-open through
    /// [`refresh`](Self::refresh).)
    pub(crate) fn next_probe_at(&self, now: Instant, cfg: &EjectionConfig) -> Option<Instant> {
        let lost = |sent: Instant| sent.checked_add(cfg.probe_timeout);
        match self.state {
            State::HalfOpen { probe_sent: None } => Some(now),
            State::HalfOpen {
                probe_sent: Some(sent),
            }
            | State::Suspect {
                probe_sent: Some(sent),
                ..
            } => lost(sent),
            State::Suspect {
                retry_at,
                probe_sent: None,
            } => Some(retry_at),
            State::Available | State::Ejected { .. } => None,
        }
    }

    /// Marks the probe as sent.
    pub(crate) fn start_probe(&mut self, now: Instant) {
        match &mut self.state {
            State::HalfOpen { probe_sent } | State::Suspect { probe_sent, .. } => {
                *probe_sent = Some(now);
            }
            State::Available | State::Ejected { .. } => {}
        }
    }

    pub(crate) fn on_success(&mut self) -> Transition {
        self.consecutive_failures = 0;
        match self.state {
            State::HalfOpen { .. }
            | State::Suspect {
                probe_sent: Some(_),
                ..
            } => {
                self.state = State::Available;
                self.ejections = 0;
                self.failed_probes = 0;
                Transition::Recovered
            }
            State::Available | State::Suspect { .. } | State::Ejected { .. } => Transition::None,
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
            State::Available | State::Suspect { .. } => {
                if let State::Suspect {
                    probe_sent: Some(_),
                    ..
                } = self.state
                {
                    self.failed_probes = self.failed_probes.saturating_add(1);
                }
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                if self.consecutive_failures >= cfg.consecutive_failures.max(1) && may_eject {
                    return Transition::Ejected(self.eject(now, cfg, rng));
                }
                let retry_at = later(now, backoff_for(self.failed_probes + 1, cfg, rng));
                self.state = State::Suspect {
                    retry_at,
                    probe_sent: None,
                };
                Transition::Suspect(retry_at)
            }
            State::HalfOpen { .. } => {
                self.failed_probes = self.failed_probes.saturating_add(1);
                Transition::Reejected(self.eject(now, cfg, rng))
            }
            State::Ejected { .. } => Transition::None,
        }
    }

    fn eject(&mut self, now: Instant, cfg: &EjectionConfig, rng: &mut impl RngCore) -> Instant {
        self.ejections = self.ejections.saturating_add(1);
        self.consecutive_failures = 0;
        let until = later(now, backoff_for(self.failed_probes + 1, cfg, rng));
        self.state = State::Ejected { until };
        until
    }

    /// Applies an ejection decided on another core. Returns whether the endpoint newly left
    /// the pool. An endpoint in the pool is ejected only if `may_eject`; one that is already
    /// out keeps the later of the two deadlines. The back-off continues from the sender's
    /// ejection count at least.
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
        let newly_out = match self.state {
            State::Available | State::Suspect { .. } if may_eject => {
                self.state = State::Ejected { until };
                self.consecutive_failures = 0;
                true
            }
            State::Available | State::Suspect { .. } => return false,
            State::Ejected { until: mine } => {
                self.state = State::Ejected {
                    until: mine.max(until),
                };
                false
            }
            State::HalfOpen { .. } => {
                self.state = State::Ejected { until };
                false
            }
        };
        self.ejections = self.ejections.max(ejections);
        self.failed_probes = self.failed_probes.max(ejections.saturating_sub(1));
        newly_out
    }
}

/// `now + backoff`; a configured back-off too large for the clock falls back to the default
/// maximum.
fn later(now: Instant, backoff: Duration) -> Instant {
    now.checked_add(backoff)
        .unwrap_or_else(|| now + crate::config::DEFAULT_MAX_BACKOFF)
}

/// The `step`-th back-off of a sequence (1-based: `base`, then doubling), jittered downward.
pub(crate) fn backoff_for(step: u32, cfg: &EjectionConfig, rng: &mut impl RngCore) -> Duration {
    let full = exponential(
        step.saturating_sub(1),
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
            assert!(matches!(
                e.on_failure(t0, &cfg, true, &mut rng),
                Transition::Suspect(_)
            ));
        }
        assert_eq!(
            e.on_success(),
            Transition::None,
            "not a probe: still suspect"
        );
        assert!(e.is_suspect() && e.is_available());
        for _ in 0..4 {
            assert!(matches!(
                e.on_failure(t0, &cfg, true, &mut rng),
                Transition::Suspect(_)
            ));
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
            assert!(matches!(
                e.on_failure(t0, &cfg, false, &mut rng),
                Transition::Suspect(_)
            ));
        }
        assert!(e.is_available());
        assert_eq!(e.consecutive_failures(), 7);
        assert!(matches!(
            e.on_failure(t0, &cfg, true, &mut rng),
            Transition::Ejected(_)
        ));
    }

    #[test]
    fn a_failure_makes_a_suspect_probed_after_the_backoff() {
        let t0 = Instant::now();
        let cfg = EjectionConfig::default();
        let mut rng = SmallRng::seed_from_u64(5);
        let mut e = Ejection::default();
        assert_eq!(e.next_probe_at(t0, &cfg), None);
        let Transition::Suspect(retry_at) = e.on_failure(t0, &cfg, true, &mut rng) else {
            panic!("one failure makes a suspect");
        };
        let wait = retry_at - t0;
        assert!(wait >= secs(0.8) && wait <= secs(1.0), "{wait:?}");
        assert_eq!(e.health(t0), Health::Available);
        assert!(!e.probe_ready(retry_at - secs(0.001), &cfg));
        assert!(e.probe_ready(retry_at, &cfg));
        // One probe at a time; a lost one frees the slot after probe_timeout.
        e.start_probe(retry_at);
        assert!(!e.probe_ready(retry_at, &cfg));
        assert_eq!(
            e.next_probe_at(retry_at, &cfg),
            Some(retry_at + cfg.probe_timeout)
        );
        // The probe fails: the next re-try is one doubled back-off after it.
        let t1 = retry_at + secs(0.001);
        let Transition::Suspect(next) = e.on_failure(t1, &cfg, true, &mut rng) else {
            panic!("a failed probe below the ejection threshold keeps it suspect");
        };
        let wait = next - t1;
        assert!(wait >= secs(1.6) && wait <= secs(2.0), "{wait:?}");
        // A failure of ordinary traffic postpones the probe without doubling.
        let t2 = t1 + secs(0.5);
        let Transition::Suspect(next) = e.on_failure(t2, &cfg, true, &mut rng) else {
            panic!("still suspect");
        };
        let wait = next - t2;
        assert!(wait >= secs(1.6) && wait <= secs(2.0), "{wait:?}");
        // The probe succeeds: back to a clean record.
        e.start_probe(next);
        assert_eq!(e.on_success(), Transition::Recovered);
        assert!(!e.is_suspect() && e.is_available());
        assert_eq!(e.consecutive_failures(), 0);
        let Transition::Suspect(again) = e.on_failure(next, &cfg, true, &mut rng) else {
            panic!("suspect again");
        };
        assert!(again - next <= secs(1.0), "the sequence restarted");
    }

    #[test]
    fn ejection_after_failed_suspect_probes_continues_their_backoff() {
        let t0 = Instant::now();
        let cfg = EjectionConfig {
            backoff_jitter: 0.0,
            ..EjectionConfig::default()
        };
        let mut rng = SmallRng::seed_from_u64(5);
        let mut e = Ejection::default();
        let mut now = t0;
        let mut waits = Vec::new();
        loop {
            match e.on_failure(now, &cfg, true, &mut rng) {
                Transition::Suspect(at) => {
                    waits.push((at - now).as_secs());
                    now = at;
                    e.start_probe(now);
                }
                Transition::Ejected(until) => {
                    waits.push((until - now).as_secs());
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        // Re-tries 1, 2, 4, 8 s apart; the fifth failure in a row ejects for 16 s.
        assert_eq!(waits, [1, 2, 4, 8, 16]);
        assert_eq!(e.ejections(), 1);
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
