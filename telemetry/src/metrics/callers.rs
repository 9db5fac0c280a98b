//! Inbound requests by the caller's verified identity: the `client_id` label of the inbound
//! request families (`coremesh_requests_total`, `coremesh_response_latency_seconds`), for
//! callers that proved a SPIFFE ID over mutual TLS. Plaintext callers and the other
//! directions are counted in the layout as before, without the label.
//!
//! Each core keeps its own [`CallerTable`]: the identities in the order it first saw them,
//! at most the layout's `max_client_ids` of them, and one block of counters (status classes
//! and a latency histogram) per identity; every identity beyond the cap counts under
//! [`OVERFLOW_CLIENT_ID`]. An identity never leaves a core's table, so a series never moves
//! from its own label to the overflow one and its counters only grow. The table outlives
//! configuration changes (identities are not part of the configuration). A scrape merges
//! the cores' tables by identity ([`CallerCounts::merge`]); at most `max_client_ids` per core
//! (plus the overflow value) appear.

use super::latency::{bucket, nanos, HISTOGRAM_STRIDE, INF_SLOT, SUM_SLOT};
use super::layout::CLASSES;
use super::snapshot::LatencyHistogram;
use super::StatusClass;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Distinct callers' identities a core counts inbound requests under, by default: far more
/// than the callers a service has in a mesh (tens), few enough that a flood of identities
/// (a compromised CA, a test issuing one per request) adds at most this many label values
/// per core: each value is 5 request series and a 16-series histogram at most.
pub const DEFAULT_MAX_CLIENT_IDS: usize = 100;

/// The `client_id` value of the callers beyond the cap. A SPIFFE ID always starts with
/// `spiffe://`, so no caller's identity can be this.
pub const OVERFLOW_CLIENT_ID: &str = "other";

/// Counters per caller: one per status class, then a latency histogram.
pub(crate) const CALLER_STRIDE: usize = CLASSES + HISTOGRAM_STRIDE;

/// Counts per caller identity, as plain data: a core's, or several merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CallerCounts {
    /// Identities in the order first seen (the overflow entry holds [`OVERFLOW_CLIENT_ID`]).
    pub(crate) names: Vec<Arc<str>>,
    /// The index of the overflow entry, once something counted under it.
    pub(crate) overflow: Option<usize>,
    /// [`CALLER_STRIDE`] counters per entry of `names`.
    pub(crate) values: Vec<u64>,
}

impl CallerCounts {
    /// Appends an entry for `name`, all zero; its index.
    fn push(&mut self, name: Arc<str>) -> usize {
        self.names.push(name);
        self.values.resize(self.names.len() * CALLER_STRIDE, 0);
        self.names.len() - 1
    }

    fn overflow_entry(&mut self) -> usize {
        match self.overflow {
            Some(i) => i,
            None => {
                let i = self.push(Arc::from(OVERFLOW_CLIENT_ID));
                self.overflow = Some(i);
                i
            }
        }
    }

    /// The index of `name`'s entry (the overflow entry for [`OVERFLOW_CLIENT_ID`]).
    fn find(&self, name: &str) -> Option<usize> {
        if name == OVERFLOW_CLIENT_ID {
            return self.overflow;
        }
        self.names
            .iter()
            .enumerate()
            .find(|(i, n)| Some(*i) != self.overflow && &***n == name)
            .map(|(i, _)| i)
    }

    /// Adds `other`'s counts, identity by identity (at scrape time, off the cores).
    pub(crate) fn merge(&mut self, other: &CallerCounts) {
        let mut index: HashMap<Arc<str>, usize> = self
            .names
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.overflow)
            .map(|(i, n)| (n.clone(), i))
            .collect();
        for (j, name) in other.names.iter().enumerate() {
            let i = if Some(j) == other.overflow {
                self.overflow_entry()
            } else {
                match index.get(name) {
                    Some(&i) => i,
                    None => {
                        let i = self.push(name.clone());
                        index.insert(name.clone(), i);
                        i
                    }
                }
            };
            let (to, from) = (i * CALLER_STRIDE, j * CALLER_STRIDE);
            for k in 0..CALLER_STRIDE {
                let sum = self.values[to + k].wrapping_add(other.get(from + k));
                self.values[to + k] = sum;
            }
        }
    }

    pub(crate) fn get(&self, at: usize) -> u64 {
        self.values.get(at).copied().unwrap_or(0)
    }

    /// Requests of `class` from `client_id` (or from the callers beyond the cap, with
    /// [`OVERFLOW_CLIENT_ID`]).
    pub(crate) fn requests(&self, client_id: &str, class: StatusClass) -> u64 {
        self.find(client_id)
            .map_or(0, |i| self.get(i * CALLER_STRIDE + class.slot()))
    }

    /// The latency histogram of the requests from `client_id`.
    pub(crate) fn latency(&self, client_id: &str) -> Option<LatencyHistogram> {
        self.find(client_id).map(|i| self.histogram(i))
    }

    pub(crate) fn histogram(&self, i: usize) -> LatencyHistogram {
        let base = i * CALLER_STRIDE + CLASSES;
        let buckets: Vec<u64> = (0..=INF_SLOT).map(|b| self.get(base + b)).collect();
        LatencyHistogram {
            count: buckets.iter().fold(0, |a, b| a.wrapping_add(*b)),
            buckets,
            sum_nanos: self.get(base + SUM_SLOT),
        }
    }

    /// The entries in the order a scrape writes them: by identity, the overflow last.
    pub(crate) fn in_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.names.len())
            .filter(|i| Some(*i) != self.overflow)
            .collect();
        order.sort_by(|a, b| self.names[*a].cmp(&self.names[*b]));
        order.extend(self.overflow);
        order
    }
}

/// One core's counts per caller identity (single writer: the core).
#[derive(Debug, Default)]
pub(crate) struct CallerTable {
    pub(crate) counts: CallerCounts,
    /// foldhash (seeded per process): identities are short strings a trusted CA issued,
    /// at most `max_client_ids` of them, and SipHash would be most of a lookup's cost.
    by_name: HashMap<Arc<str>, usize, foldhash::fast::RandomState>,
    /// The entry of the last request: a connection's requests come one after another, so
    /// most lookups end at one comparison.
    last: usize,
}

impl CallerTable {
    /// The entry `client_id` counts under, with at most `max` identities of their own.
    fn entry(&mut self, client_id: &str, max: usize) -> usize {
        if self.counts.overflow != Some(self.last)
            && self
                .counts
                .names
                .get(self.last)
                .is_some_and(|n| &**n == client_id)
        {
            return self.last;
        }
        let i = match self.by_name.get(client_id) {
            Some(&i) => i,
            None if self.by_name.len() < max && client_id != OVERFLOW_CLIENT_ID => {
                let name: Arc<str> = Arc::from(client_id);
                let i = self.counts.push(name.clone());
                self.by_name.insert(name, i);
                i
            }
            None => self.counts.overflow_entry(),
        };
        self.last = i;
        i
    }

    /// A finished inbound request from `client_id`: the class of its status and its
    /// latency.
    pub(crate) fn record(&mut self, client_id: &str, max: usize, status: u16, latency: Duration) {
        let base = self.entry(client_id, max) * CALLER_STRIDE;
        let latency = nanos(latency);
        let cells = [
            (StatusClass::from_status(status).slot(), 1),
            (CLASSES + bucket(latency), 1),
            (CLASSES + SUM_SLOT, latency),
        ];
        for (at, n) in cells {
            if let Some(cell) = self.counts.values.get_mut(base + at) {
                *cell = cell.wrapping_add(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "spiffe://td/ns/prod/sa/web";
    const API: &str = "spiffe://td/ns/prod/sa/api";
    const JOB: &str = "spiffe://td/ns/batch/sa/job";

    #[test]
    fn callers_beyond_the_cap_count_under_the_overflow_value() {
        let mut t = CallerTable::default();
        let ms = Duration::from_millis;
        t.record(WEB, 2, 200, ms(3));
        t.record(WEB, 2, 200, ms(3));
        t.record(API, 2, 503, ms(300));
        t.record(JOB, 2, 200, ms(3));
        t.record(WEB, 2, 404, ms(3));
        t.record(JOB, 2, 200, ms(3));
        t.record(OVERFLOW_CLIENT_ID, 2, 200, ms(3));
        let c = &t.counts;
        assert_eq!(c.requests(WEB, StatusClass::Success), 2);
        assert_eq!(c.requests(WEB, StatusClass::ClientError), 1);
        assert_eq!(c.requests(API, StatusClass::ServerError), 1);
        assert_eq!(c.requests(JOB, StatusClass::Success), 0, "beyond the cap");
        assert_eq!(c.requests(OVERFLOW_CLIENT_ID, StatusClass::Success), 3);
        assert_eq!(c.names.len(), 3, "two identities and the overflow");
        let web = c.latency(WEB).unwrap_or_else(|| panic!("web's histogram"));
        assert_eq!(web.count, 3);
        assert_eq!(web.buckets[2], 3, "3 ms is in le=0.005");
        assert_eq!(web.sum_nanos, 9_000_000);
        assert_eq!(c.latency(API).map(|h| h.buckets[8]), Some(1));
        assert_eq!(c.in_order(), vec![1, 0, 2], "api, web, then the overflow");
    }

    #[test]
    fn a_cap_of_zero_counts_every_caller_under_the_overflow_value() {
        let mut t = CallerTable::default();
        t.record(WEB, 0, 200, Duration::ZERO);
        assert_eq!(t.counts.requests(WEB, StatusClass::Success), 0);
        assert_eq!(
            t.counts.requests(OVERFLOW_CLIENT_ID, StatusClass::Success),
            1
        );
    }

    #[test]
    fn merging_adds_by_identity() {
        let mut one = CallerTable::default();
        one.record(WEB, 1, 200, Duration::ZERO);
        one.record(API, 1, 200, Duration::ZERO);
        let mut two = CallerTable::default();
        two.record(API, 1, 200, Duration::ZERO);
        two.record(API, 1, 500, Duration::ZERO);
        two.record(WEB, 1, 200, Duration::ZERO);
        let mut merged = CallerCounts::default();
        merged.merge(&one.counts);
        merged.merge(&two.counts);
        assert_eq!(merged.requests(WEB, StatusClass::Success), 1);
        assert_eq!(merged.requests(API, StatusClass::Success), 1);
        assert_eq!(merged.requests(API, StatusClass::ServerError), 1);
        assert_eq!(
            merged.requests(OVERFLOW_CLIENT_ID, StatusClass::Success),
            2,
            "api on the first core, web on the second"
        );
        assert_eq!(merged.latency(API).map(|h| h.count), Some(2));
    }
}
