//! The channels between cores: [`GossipMesh::new`] wires one [`GossipPort`] per core, each
//! able to broadcast a batch to every other core and to receive theirs.
//!
//! Each core has one bounded `crossbeam-channel` inbox; a port holds a sender to every other
//! core's inbox. Sending never blocks: a full inbox (a peer that lags) drops the batch for
//! that peer and counts the drop — latency gossip is advisory, the next tick carries fresher
//! news. Nothing here takes a lock on the request path.

use std::cell::Cell;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::gossip::GossipBatch;

/// Batches a core's inbox holds: one batch per service per tick, so 1024 covers a second of
/// lag for a hundred services at the default 100 ms tick, while costing only pointers.
pub const DEFAULT_GOSSIP_INBOX: usize = 1024;

/// Constructor of the set of ports connecting `cores` cores.
#[derive(Debug)]
pub struct GossipMesh;

impl GossipMesh {
    /// One port per core (`ports[i].core() == i`), inboxes of [`DEFAULT_GOSSIP_INBOX`].
    #[allow(clippy::new_ret_no_self)]
    pub fn new(cores: usize) -> Vec<GossipPort> {
        Self::with_capacity(cores, DEFAULT_GOSSIP_INBOX)
    }

    /// One port per core with inboxes holding `capacity` batches (at least one).
    pub fn with_capacity(cores: usize, capacity: usize) -> Vec<GossipPort> {
        let (senders, receivers): (Vec<Sender<_>>, Vec<Receiver<_>>) =
            (0..cores).map(|_| bounded(capacity.max(1))).unzip();
        receivers
            .into_iter()
            .enumerate()
            .map(|(core, inbox)| GossipPort {
                core,
                inbox,
                peers: senders
                    .iter()
                    .enumerate()
                    .filter(|&(peer, _)| peer != core)
                    .map(|(_, s)| s.clone())
                    .collect(),
                sent: Cell::new(0),
                dropped: Cell::new(0),
            })
            .collect()
    }
}

/// One core's end of the gossip mesh. It is `Send` (move it to its core) but not `Sync`:
/// its counters are plain cells owned by that core.
#[derive(Debug)]
pub struct GossipPort {
    core: usize,
    inbox: Receiver<Arc<GossipBatch>>,
    peers: Vec<Sender<Arc<GossipBatch>>>,
    sent: Cell<u64>,
    dropped: Cell<u64>,
}

impl GossipPort {
    /// The core this port belongs to.
    pub fn core(&self) -> usize {
        self.core
    }

    /// Sends `batch` to every other core without blocking; returns how many peers got it.
    /// A peer whose inbox is full (or gone) misses it, and the drop is counted.
    pub fn broadcast(&self, batch: &Arc<GossipBatch>) -> usize {
        let mut delivered = 0;
        for peer in &self.peers {
            match peer.try_send(Arc::clone(batch)) {
                Ok(()) => delivered += 1,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.dropped.set(self.dropped.get() + 1);
                }
            }
        }
        self.sent.set(self.sent.get() + delivered as u64);
        delivered
    }

    /// The next batch from a peer, if any; never blocks. Merge it with
    /// [`ServiceBalancer::merge_gossip`](crate::ServiceBalancer::merge_gossip) of the
    /// balancer for `batch.service()`, then drop it so its sender can recycle it.
    pub fn try_recv(&self) -> Option<Arc<GossipBatch>> {
        self.inbox.try_recv().ok()
    }

    /// Batch deliveries to peers so far (one per peer reached).
    pub fn sent(&self) -> u64 {
        self.sent.get()
    }

    /// Batch deliveries dropped because a peer's inbox was full or closed.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(service: &str) -> Arc<GossipBatch> {
        Arc::new(GossipBatch {
            service: Arc::from(service),
            latencies: Vec::new(),
            ejections: Vec::new(),
        })
    }

    #[test]
    fn broadcast_reaches_every_other_core_once() {
        let ports = GossipMesh::new(3);
        assert_eq!(
            ports.iter().map(|p| p.core()).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(ports[0].broadcast(&batch("a")), 2);
        assert!(ports[0].try_recv().is_none());
        assert_eq!(&**ports[1].try_recv().unwrap().service(), "a");
        assert_eq!(&**ports[2].try_recv().unwrap().service(), "a");
        assert!(ports[1].try_recv().is_none());
        assert_eq!(ports[0].sent(), 2);
    }

    #[test]
    fn full_inbox_drops_and_counts() {
        let ports = GossipMesh::with_capacity(2, 1);
        assert_eq!(ports[0].broadcast(&batch("a")), 1);
        assert_eq!(ports[0].broadcast(&batch("b")), 0);
        assert_eq!(ports[0].dropped(), 1);
        assert_eq!(&**ports[1].try_recv().unwrap().service(), "a");
        assert!(ports[1].try_recv().is_none());
    }

    #[test]
    fn ports_move_to_their_threads() {
        let mut ports = GossipMesh::new(2);
        let remote = ports.pop().unwrap();
        let b = batch("x");
        ports[0].broadcast(&b);
        let got = std::thread::spawn(move || remote.try_recv().map(|b| b.service().to_string()))
            .join()
            .unwrap();
        assert_eq!(got.as_deref(), Some("x"));
        drop(b);
    }
}
