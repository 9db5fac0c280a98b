//! [`LatencyWindow`]: one endpoint's decaying merge of the latency intervals that all cores
//! (this one included) observed over the last `gossip_window`.
//!
//! The window is a short ring of [`WINDOW_SLOTS`] histograms, each covering
//! `gossip_window / WINDOW_SLOTS` of arrival time; intervals arriving (from this core's
//! tick or a peer's gossip) are added to the newest slot, and a slot whose start is a whole
//! window old is dropped. The sum of the live slots is kept in `total`, added to
//! incrementally and rebuilt only when a slot leaves. So "decay" is a sliding window with a
//! step of a fifth of the window, rather than exponential weights, because histograms hold
//! integer counts: dropping whole slots keeps them exact and costs nothing per sample.
//! An endpoint with no recent traffic holds no histogram at all.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::histogram::{new_latency_histogram, HistogramPool, LatencyHistogram};

/// Slots per window: the window forgets in steps of a fifth (2 s at the default 10 s), and
/// an endpoint with traffic holds at most this many histograms plus the total.
pub const WINDOW_SLOTS: u32 = 5;

#[derive(Debug)]
struct Slot {
    start: Instant,
    histogram: LatencyHistogram,
}

#[derive(Debug, Default)]
pub(crate) struct LatencyWindow {
    /// Oldest first.
    slots: VecDeque<Slot>,
    /// Sum of `slots`; `None` while the window is empty.
    total: Option<LatencyHistogram>,
    /// Cached (quantile, value in µs) of `total`, cleared whenever `total` changes.
    cached: Option<(f64, u64)>,
}

fn slot_len(window: Duration) -> Duration {
    (window / WINDOW_SLOTS).max(Duration::from_micros(1))
}

impl LatencyWindow {
    /// Adds one finished interval histogram, arriving at `now`.
    pub(crate) fn add(
        &mut self,
        now: Instant,
        interval: &LatencyHistogram,
        window: Duration,
        pool: &mut HistogramPool,
    ) {
        if interval.is_empty() {
            return;
        }
        self.expire(now, window, pool);
        let needs_slot = self
            .slots
            .back()
            .is_none_or(|s| now.saturating_duration_since(s.start) >= slot_len(window));
        if needs_slot {
            self.slots.push_back(Slot {
                start: now,
                histogram: pool.get(),
            });
        }
        // Same shape on every core, so addition cannot run out of range; a failure would
        // only lose this one interval, never corrupt the window.
        if let Some(slot) = self.slots.back_mut() {
            let _ = slot.histogram.add(interval);
        }
        let total = self.total.get_or_insert_with(|| pool.get());
        let _ = total.add(interval);
        self.cached = None;
    }

    /// Drops slots that started a whole window before `now` and rebuilds the total.
    pub(crate) fn expire(&mut self, now: Instant, window: Duration, pool: &mut HistogramPool) {
        let mut dropped = false;
        while let Some(front) = self.slots.front() {
            if now.saturating_duration_since(front.start) < window {
                break;
            }
            if let Some(slot) = self.slots.pop_front() {
                pool.put(slot.histogram);
            }
            dropped = true;
        }
        if !dropped {
            return;
        }
        self.cached = None;
        if self.slots.is_empty() {
            if let Some(total) = self.total.take() {
                pool.put(total);
            }
            return;
        }
        let total = self.total.get_or_insert_with(|| pool.get());
        total.reset();
        for slot in &self.slots {
            let _ = total.add(&slot.histogram);
        }
    }

    /// The window's `quantile` in microseconds, `None` if the window is empty. Cached until
    /// the window changes, so a choice does not rescan the histogram.
    pub(crate) fn quantile_us(&mut self, quantile: f64) -> Option<u64> {
        let total = self.total.as_ref().filter(|t| !t.is_empty())?;
        match self.cached {
            Some((q, value)) if q == quantile => Some(value),
            _ => {
                let value = total.value_at_quantile(quantile);
                self.cached = Some((quantile, value));
                Some(value)
            }
        }
    }

    /// The merged histogram as it stands at `now`, without mutating: slots already past
    /// the window are left out. `None` if nothing is left. For views, not the hot path.
    pub(crate) fn merged_at(
        &self,
        now: Instant,
        window: Duration,
    ) -> Option<std::borrow::Cow<'_, LatencyHistogram>> {
        let live = |s: &&Slot| now.saturating_duration_since(s.start) < window;
        let all_live = self.slots.iter().all(|s| live(&s));
        if all_live {
            return self
                .total
                .as_ref()
                .filter(|t| !t.is_empty())
                .map(std::borrow::Cow::Borrowed);
        }
        let mut merged = new_latency_histogram();
        for slot in self.slots.iter().filter(live) {
            let _ = merged.add(&slot.histogram);
        }
        (!merged.is_empty()).then_some(std::borrow::Cow::Owned(merged))
    }

    /// Samples in the window (all cores), as of its last change or expiry.
    pub(crate) fn samples(&self) -> u64 {
        self.total.as_ref().map_or(0, |t| t.len())
    }

    /// Whether any histogram is held (so housekeeping can skip idle endpoints).
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Returns every histogram to the pool (the endpoint is leaving).
    pub(crate) fn release(&mut self, pool: &mut HistogramPool) {
        for slot in self.slots.drain(..) {
            pool.put(slot.histogram);
        }
        if let Some(total) = self.total.take() {
            pool.put(total);
        }
        self.cached = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn interval(values_us: &[u64]) -> LatencyHistogram {
        let mut h = new_latency_histogram();
        for &v in values_us {
            h.saturating_record(v);
        }
        h
    }

    #[test]
    fn merges_intervals_and_forgets_after_the_window() {
        let t0 = Instant::now();
        let mut pool = HistogramPool::with_limit(16);
        let mut w = LatencyWindow::default();
        w.add(t0, &interval(&[1_000; 10]), WINDOW, &mut pool);
        assert_eq!(w.quantile_us(0.9), Some(1_003));
        // Three seconds later: a new slot, slow samples dominate p90.
        let t3 = t0 + Duration::from_secs(3);
        w.add(t3, &interval(&[30_000; 90]), WINDOW, &mut pool);
        assert_eq!(w.quantile_us(0.5), Some(30_079));
        assert_eq!(w.merged_at(t3, WINDOW).unwrap().len(), 100);
        // At t0 + 10 s the first slot is gone; at t3 + 10 s everything is.
        let t10 = t0 + WINDOW;
        assert_eq!(w.merged_at(t10, WINDOW).unwrap().len(), 90);
        w.expire(t10, WINDOW, &mut pool);
        assert_eq!(w.quantile_us(0.0), Some(29_952));
        w.expire(t3 + WINDOW, WINDOW, &mut pool);
        assert!(w.is_empty());
        assert_eq!(w.quantile_us(0.9), None);
        assert!(w.merged_at(t3 + WINDOW, WINDOW).is_none());
    }

    #[test]
    fn intervals_within_one_slot_share_it() {
        let t0 = Instant::now();
        let mut pool = HistogramPool::with_limit(16);
        let mut w = LatencyWindow::default();
        for i in 0..20 {
            w.add(
                t0 + Duration::from_millis(100 * i),
                &interval(&[500]),
                WINDOW,
                &mut pool,
            );
        }
        assert_eq!(w.slots.len(), 1);
        assert_eq!(pool.allocated(), 2);
        w.release(&mut pool);
        assert!(w.is_empty());
    }
}
