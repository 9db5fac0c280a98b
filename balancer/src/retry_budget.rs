//! The retry budget: [`RetryBudget`] lets retries add at most a fixed fraction of the
//! requests (plus a small floor) over a sliding window, so retries cannot amplify an outage.
//!
//! The window is a ring of [`BUDGET_SLOTS`] slots, each counting the requests and retries
//! of `window / BUDGET_SLOTS`; a slot older than the window is reset when its turn comes
//! again, which is how the budget refills as time moves on.

use std::time::{Duration, Instant};

/// Retries may add 20 % to the requests: enough to ride out a failing instance among five,
/// too little to double the load on a struggling service (linkerd's default too).
pub const DEFAULT_RETRY_RATIO: f64 = 0.2;
/// Retries always allowed per second regardless of traffic, so a service with little
/// traffic can still retry its occasional failure.
pub const DEFAULT_RETRY_MIN_PER_SEC: u32 = 10;
/// The window the ratio is measured over.
pub const DEFAULT_RETRY_WINDOW: Duration = Duration::from_secs(10);
/// Slots in the sliding window: the budget forgets in steps of a tenth of the window.
pub const BUDGET_SLOTS: usize = 10;

/// Retry budget settings. Defaults: `ratio` 0.2, `min_per_sec` 10, `window` 10 s.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request recorded in the window.
    pub ratio: f64,
    /// Retries allowed per second of the window regardless of requests.
    pub min_per_sec: u32,
    /// Length of the sliding window.
    pub window: Duration,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: DEFAULT_RETRY_RATIO,
            min_per_sec: DEFAULT_RETRY_MIN_PER_SEC,
            window: DEFAULT_RETRY_WINDOW,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Which slot-length interval since `origin` this slot currently counts.
    epoch: u64,
    requests: u64,
    retries: u64,
}

/// A per-core (or per-service) retry budget over a sliding window.
///
/// Call [`record_request`](Self::record_request) once for every original request (not for
/// retries) and [`try_withdraw`](Self::try_withdraw) before every retry; retry only when it
/// returns `true`. Over any window, withdrawals succeed at most
/// `ratio × requests + min_per_sec × window_seconds` times.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    cfg: RetryBudgetConfig,
    slot_len: Duration,
    origin: Option<Instant>,
    slots: [Slot; BUDGET_SLOTS],
    withdrawn_total: u64,
    refused_total: u64,
}

impl RetryBudget {
    /// A full budget (only the `min_per_sec` floor until requests are recorded).
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        let window = cfg.window.max(Duration::from_millis(BUDGET_SLOTS as u64));
        let slot_len = window / BUDGET_SLOTS as u32;
        RetryBudget {
            cfg,
            slot_len,
            origin: None,
            slots: [Slot::default(); BUDGET_SLOTS],
            withdrawn_total: 0,
            refused_total: 0,
        }
    }

    /// Counts an original request, which earns `ratio` retries.
    pub fn record_request(&mut self, now: Instant) {
        self.current_slot(now).requests += 1;
    }

    /// Takes one retry from the budget: `true` if the retry may go ahead, `false` (and the
    /// refusal is counted) if the window's budget is spent.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.remaining(now) >= 1 {
            self.current_slot(now).retries += 1;
            self.withdrawn_total += 1;
            true
        } else {
            self.refused_total += 1;
            false
        }
    }

    /// Whole retries still available in the current window.
    pub fn remaining(&self, now: Instant) -> u64 {
        let (requests, retries) = self.window_totals(now);
        let floor = f64::from(self.cfg.min_per_sec) * self.cfg.window.as_secs_f64();
        let allowance = self.cfg.ratio.max(0.0) * requests as f64 + floor;
        // The epsilon keeps 0.2 × 5 = 0.99999… from losing a whole retry.
        let allowance = (allowance + 1e-9).floor() as u64;
        allowance.saturating_sub(retries)
    }

    /// Retries granted since creation.
    pub fn withdrawn_total(&self) -> u64 {
        self.withdrawn_total
    }

    /// Retries refused since creation.
    pub fn refused_total(&self) -> u64 {
        self.refused_total
    }

    /// The configuration this budget runs with.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.cfg
    }

    fn epoch(&self, now: Instant) -> u64 {
        let Some(origin) = self.origin else { return 0 };
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        u64::try_from(elapsed / self.slot_len.as_nanos().max(1)).unwrap_or(u64::MAX)
    }

    fn current_slot(&mut self, now: Instant) -> &mut Slot {
        if self.origin.is_none() {
            self.origin = Some(now);
        }
        let epoch = self.epoch(now);
        let slot = &mut self.slots[(epoch % BUDGET_SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        slot
    }

    /// Requests and retries in the slots that are still inside the window.
    fn window_totals(&self, now: Instant) -> (u64, u64) {
        let epoch = self.epoch(now);
        self.slots
            .iter()
            .filter(|s| s.epoch <= epoch && epoch - s.epoch < BUDGET_SLOTS as u64)
            .fold((0, 0), |(q, r), s| (q + s.requests, r + s.retries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ratio: f64, min_per_sec: u32) -> RetryBudgetConfig {
        RetryBudgetConfig {
            ratio,
            min_per_sec,
            window: Duration::from_secs(10),
        }
    }

    #[test]
    fn refuses_once_spent_and_refills_after_the_window() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(cfg(0.2, 1));
        for _ in 0..100 {
            budget.record_request(t0);
        }
        // 0.2 × 100 + 1/s × 10 s = 30 retries.
        assert_eq!(budget.remaining(t0), 30);
        for i in 0..30 {
            assert!(budget.try_withdraw(t0), "retry {i}");
        }
        assert!(!budget.try_withdraw(t0));
        assert!(!budget.try_withdraw(t0 + Duration::from_secs(5)));
        assert_eq!(budget.refused_total(), 2);
        assert_eq!(budget.withdrawn_total(), 30);
        // Once the window has moved past the slot, only the floor is left (requests forgotten too).
        let later = t0 + Duration::from_secs(10);
        assert_eq!(budget.remaining(later), 10);
        assert!(budget.try_withdraw(later));
    }

    #[test]
    fn floor_allows_retries_without_traffic() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(cfg(0.2, 10));
        let granted = (0..200).filter(|_| budget.try_withdraw(t0)).count();
        assert_eq!(granted, 100);
        assert_eq!(budget.refused_total(), 100);
    }

    #[test]
    fn window_slides_slot_by_slot() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(cfg(0.5, 0));
        for _ in 0..10 {
            budget.record_request(t0);
        }
        let t5 = t0 + Duration::from_secs(5);
        for _ in 0..10 {
            budget.record_request(t5);
        }
        assert_eq!(budget.remaining(t5), 10);
        // At t0 + 10 s the first slot has left the window; the second has not.
        assert_eq!(budget.remaining(t0 + Duration::from_secs(10)), 5);
        assert_eq!(budget.remaining(t0 + Duration::from_secs(15)), 0);
    }

    #[test]
    fn zero_ratio_and_floor_refuses_everything() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(cfg(0.0, 0));
        budget.record_request(t0);
        assert!(!budget.try_withdraw(t0));
    }
}
