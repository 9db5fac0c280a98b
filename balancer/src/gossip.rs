//! What cores tell each other about a service: [`GossipBatch`], made by
//! [`ServiceBalancer::take_gossip`] and applied by [`ServiceBalancer::merge_gossip`].
//!
//! Every tick (default 100 ms, the proxy's loop decides) a core calls `take_gossip` on each
//! service: the interval histogram of every endpoint that saw outcomes since the last tick
//! is merged into this core's own window and moved into the batch (a fresh one from the
//! free list takes its place, lazily, at the next sample), together with the ejections this
//! core decided. The batch is an `Arc`, broadcast to every other core through
//! [`GossipPort`](crate::GossipPort); each peer adds the intervals into its window for the
//! service and applies the ejections (subject to its own ejection cap), never re-gossiping
//! them.
//!
//! Recycling: the balancer keeps a clone of each batch it handed out. Once every peer has
//! dropped its copy, `Arc::try_unwrap` succeeds at a later tick and the histograms go back
//! to the free list, so a steady state allocates no histograms. A peer that holds on to a
//! batch for more than [`MAX_UNRECLAIMED`] ticks just lets it go (then its histograms are
//! freed by whoever drops it last).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::histogram::LatencyHistogram;
use crate::service::ServiceBalancer;

/// Batches kept for recycling at most: a peer that lags more than this many ticks behind
/// no longer holds back histograms for reuse.
pub const MAX_UNRECLAIMED: usize = 8;

/// One endpoint's latency samples from one core's gossip interval.
#[derive(Debug)]
pub struct LatencyInterval {
    /// The endpoint.
    pub addr: SocketAddr,
    /// Its samples in microseconds (1 µs..60 s, two significant digits).
    pub histogram: LatencyHistogram,
}

/// An ejection decided on one core, for the others to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionNotice {
    /// The ejected endpoint.
    pub addr: SocketAddr,
    /// End of its back-off (cores share the monotonic clock, so an `Instant` travels).
    pub until: Instant,
    /// Its ejections in a row; a receiving core continues its own back-off sequence from at
    /// least this step (the sender's may be further along if suspect probes failed before).
    pub ejections: u32,
}

/// One core's news about one service since its last tick.
#[derive(Debug)]
pub struct GossipBatch {
    pub(crate) service: Arc<str>,
    pub(crate) latencies: Vec<LatencyInterval>,
    pub(crate) ejections: Vec<EjectionNotice>,
}

impl GossipBatch {
    /// The service this batch is about: route it to that service's balancer.
    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    /// Latency intervals, one per endpoint that saw outcomes.
    pub fn latencies(&self) -> &[LatencyInterval] {
        &self.latencies
    }

    /// Ejections decided since the last tick.
    pub fn ejections(&self) -> &[EjectionNotice] {
        &self.ejections
    }
}

impl ServiceBalancer {
    /// Ends this core's gossip interval at `now`: returns the batch to broadcast, or `None`
    /// if no endpoint saw an outcome and nothing was ejected. Also does the tick's
    /// housekeeping (expired back-offs become half-open, old window slots are dropped,
    /// histograms of batches that every peer has released are recycled).
    pub fn take_gossip(&mut self, now: Instant) -> Option<Arc<GossipBatch>> {
        self.reclaim_sent();
        self.refresh_ejections(now);
        let window = self.cfg.gossip_window;
        let mut latencies = Vec::new();
        for e in &mut self.endpoints {
            if !e.window.is_empty() {
                e.window.expire(now, window, &mut self.pool);
            }
            let Some(histogram) = e.interval.take() else {
                continue;
            };
            if histogram.is_empty() {
                self.pool.put(histogram);
                continue;
            }
            e.window.add(now, &histogram, window, &mut self.pool);
            latencies.push(LatencyInterval {
                addr: e.addr,
                histogram,
            });
        }
        self.neutral.dirty |= !latencies.is_empty();
        let ejections = std::mem::take(&mut self.pending_ejections);
        if latencies.is_empty() && ejections.is_empty() {
            return None;
        }
        let batch = Arc::new(GossipBatch {
            service: Arc::clone(&self.service),
            latencies,
            ejections,
        });
        self.sent.push_back(Arc::clone(&batch));
        if self.sent.len() > MAX_UNRECLAIMED {
            self.sent.pop_front();
        }
        Some(batch)
    }

    /// Applies a peer's batch at `now`: its latency intervals join this core's window for
    /// their endpoints, its ejections are applied where this core's ejection cap allows.
    /// Endpoints this core does not know are skipped. Returns `false` (and does nothing)
    /// if the batch is about another service.
    pub fn merge_gossip(&mut self, batch: &GossipBatch, now: Instant) -> bool {
        if batch.service != self.service {
            return false;
        }
        let window = self.cfg.gossip_window;
        for interval in &batch.latencies {
            if let Some(&i) = self.index.get(&interval.addr) {
                self.endpoints[i]
                    .window
                    .add(now, &interval.histogram, window, &mut self.pool);
                self.neutral.dirty = true;
            }
        }
        for notice in &batch.ejections {
            let Some(&i) = self.index.get(&notice.addr) else {
                continue;
            };
            let may_eject = self.out_of_pool.len() < self.cfg.max_ejected(self.endpoints.len());
            let newly_out = self.endpoints[i].ejection.apply_remote(
                now,
                notice.until,
                notice.ejections,
                may_eject,
            );
            if newly_out {
                self.suspects.retain(|&j| j != i);
                if !self.out_of_pool.contains(&i) {
                    self.out_of_pool.push(i);
                }
            }
        }
        true
    }

    /// Takes back the histograms of handed-out batches that no peer holds any more.
    fn reclaim_sent(&mut self) {
        for _ in 0..self.sent.len() {
            let Some(batch) = self.sent.pop_front() else {
                break;
            };
            match Arc::try_unwrap(batch) {
                Ok(batch) => {
                    for interval in batch.latencies {
                        self.pool.put(interval.histogram);
                    }
                }
                Err(still_shared) => self.sent.push_back(still_shared),
            }
        }
    }
}

#[cfg(test)]
mod tests;
