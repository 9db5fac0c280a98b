//! One client connection's streams on every core, and client connections on the least
//! busy core: the per-core load every core can read without a lock, the choice of the core
//! a new stream or connection goes to, and the per-core inboxes that carry a stream's
//! handles or a connection's socket there.
//!
//! How a connection travels (`[proxy] spread_connections`). Each core accepts on its own
//! `SO_REUSEPORT` listener, and the kernel picks the listener by a hash of the connection's
//! addresses, not by load: eight connections land 6/2 or 7/1 on two cores about a third of
//! the time, and the busier core's connections then wait behind more of their neighbours.
//! So a core that accepts a connection while it is busier than the least busy core (by any
//! amount with `balanced`; always with `always`) sends the connection's socket there and
//! serves nothing of it: the other core registers the socket with its own driver and
//! serves it from its first byte, exactly as if its own listener had taken it. It costs one
//! queue message and one cross-thread wakeup per connection moved, only when it is moved.
//!
//! How a stream travels. The core that accepted the connection (A) keeps driving it: it
//! reads and writes the socket, decodes frames and holds the connection's accounting.
//! When it accepts a stream and another core (B) is less busy by more than
//! `[http2] spread_threshold` (or always, with `spread_streams = "always"`), it sends the
//! stream's handles — the request with its body stream and the response sender, both `h2`
//! handles that are `Send` — through B's inbox, a lock-free queue. B serves the stream
//! with its own `Core` (its snapshot, balancer, upstream connections and metrics), exactly
//! as A would have. The handles reach the connection's state through `h2`'s own
//! `Arc<Mutex<…>>` (made for multi-threaded runtimes): a frame B sends is queued there and
//! wakes A's connection task (monoio's `sync` feature carries a waker across threads on
//! both drivers), and a frame A receives for the stream (data, window, reset, trailers)
//! wakes B's task the same way. So flow control, resets and trailers behave as on one
//! core; what a handoff costs is that mutex shared by two cores and a cross-thread wakeup
//! per event (measured in `docs/http2.md`).
//!
//! Load: each core publishes in its own cache line how many client connections it has
//! open plus how many HTTP/2 streams it is serving; only that core writes it (a plain
//! store of a count it keeps itself), the others read it with a relaxed load when they
//! choose. Streams already sent but not yet taken in count too: beside its load each core
//! publishes how many streams it took from each other core, and a sender adds what it sent
//! beyond that, so a burst of streams decoded at once is not all sent to a core whose
//! load has not caught up yet. A core that stops taking streams (shutdown) says so in the same slot and
//! closes its inbox: a stream sent to it after that comes back and is served where it was
//! accepted, so none is lost.

use crate::pipeline::Origin;
use bytes::Bytes;
use coremesh_discovery::SpreadStreams;
use crossbeam_utils::CachePadded;
use futures_channel::mpsc::{unbounded, UnboundedReceiver, UnboundedSender};
use h2::server::SendResponse;
use h2::RecvStream;
use http::Request;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// A client connection on its way to another core, accepted and admitted (not yet read).
pub struct MovedConnection {
    pub stream: std::net::TcpStream,
    pub peer: SocketAddr,
    /// The sidecar side whose listener accepted it, or `None` for the explicit listener.
    pub side: Option<Arc<crate::sidecar::Side>>,
}

/// What one core sends another. (A stream is the larger and the more frequent: not boxed,
/// the queue's node already holds a message in its one allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Moved {
    Stream(Handoff),
    Connection(MovedConnection),
}

/// A stream on its way to another core.
pub struct Handoff {
    pub request: Request<RecvStream>,
    pub respond: SendResponse<Bytes>,
    pub peer: SocketAddr,
    pub origin: Origin,
    /// Held until the stream ends, wherever it is served (the connection's idle timer).
    pub ticket: super::open_streams::Ticket,
}

// The whole point: the handles may cross threads.
const _: () = {
    const fn sendable<T: Send>() {}
    sendable::<Handoff>();
    sendable::<MovedConnection>();
};

/// One core's published state.
struct Slot {
    /// Client connections open plus HTTP/2 streams being served on this core.
    load: AtomicU32,
    /// The core takes streams from others (false once it shuts down).
    open: AtomicBool,
    /// Streams this core took in from each core (wrapping).
    taken_from: Box<[AtomicU32]>,
}

/// A stream or connection and the core that sent it.
type Message = (usize, Moved);

/// What every core shares: the slots and the inboxes' sending ends.
struct Shared {
    slots: Box<[CachePadded<Slot>]>,
    inboxes: Box<[UnboundedSender<Message>]>,
}

/// One core's part of the mesh: its slot to write, the others to read, and its inbox.
pub struct Member {
    id: usize,
    shared: Arc<Shared>,
    /// This core's load, kept here and published to its slot on each change.
    load: Cell<u32>,
    /// Streams this core sent to each core (wrapping), against their `taken_from`.
    sent_to: Box<[Cell<u32>]>,
    inbox: RefCell<Option<UnboundedReceiver<Message>>>,
}

/// A core's inbox, as [`Member::take_inbox`] gives it.
pub type Inbox = UnboundedReceiver<Message>;

/// The members of a mesh of `cores` cores, one per core in order.
pub fn mesh(cores: usize) -> Vec<Member> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..cores).map(|_| unbounded()).unzip();
    let shared = Arc::new(Shared {
        slots: (0..cores)
            .map(|_| {
                CachePadded::new(Slot {
                    load: AtomicU32::new(0),
                    open: AtomicBool::new(true),
                    taken_from: (0..cores).map(|_| AtomicU32::new(0)).collect(),
                })
            })
            .collect(),
        inboxes: senders.into_boxed_slice(),
    });
    receivers
        .into_iter()
        .enumerate()
        .map(|(id, inbox)| Member {
            id,
            shared: shared.clone(),
            load: Cell::new(0),
            sent_to: (0..cores).map(|_| Cell::new(0)).collect(),
            inbox: RefCell::new(Some(inbox)),
        })
        .collect()
}

impl Member {
    /// Add `delta` (may be negative) to this core's load and publish it.
    pub fn add_load(&self, delta: i32) {
        let load = self.load.get().saturating_add_signed(delta);
        self.load.set(load);
        self.shared.slots[self.id]
            .load
            .store(load, Ordering::Relaxed);
    }

    pub fn load(&self) -> u32 {
        self.load.get()
    }

    /// The core a new stream accepted here should go to, if another.
    pub fn target(&self, mode: SpreadStreams, threshold: u32) -> Option<usize> {
        if mode == SpreadStreams::Off {
            return None;
        }
        let others = self
            .shared
            .slots
            .iter()
            .enumerate()
            .filter(|(id, s)| *id != self.id && s.open.load(Ordering::Relaxed))
            .map(|(id, s)| {
                let taken = s.taken_from[self.id].load(Ordering::Relaxed);
                let on_the_way = self.sent_to[id].get().wrapping_sub(taken);
                (
                    id,
                    s.load.load(Ordering::Relaxed).saturating_add(on_the_way),
                )
            });
        choose(self.load.get(), others, mode, threshold)
    }

    /// Send `handoff` to core `to`'s inbox; it comes back if that core takes no more.
    /// (Not boxed: the queue's node holds it in the one allocation a message costs, and it
    /// comes back only from a core that is shutting down.)
    #[allow(clippy::result_large_err)]
    pub fn send(&self, to: usize, handoff: Handoff) -> Result<(), Handoff> {
        match self.send_moved(to, Moved::Stream(handoff)) {
            Ok(()) => Ok(()),
            Err(Moved::Stream(back)) => Err(back),
            Err(Moved::Connection(_)) => unreachable!("a stream was sent"),
        }
    }

    /// Send a connection to core `to`'s inbox; it comes back if that core takes no more.
    pub fn send_connection(
        &self,
        to: usize,
        connection: MovedConnection,
    ) -> Result<(), MovedConnection> {
        match self.send_moved(to, Moved::Connection(connection)) {
            Ok(()) => Ok(()),
            Err(Moved::Connection(back)) => Err(back),
            Err(Moved::Stream(_)) => unreachable!("a connection was sent"),
        }
    }

    #[allow(clippy::result_large_err)]
    fn send_moved(&self, to: usize, moved: Moved) -> Result<(), Moved> {
        let (Some(inbox), Some(sent)) = (self.shared.inboxes.get(to), self.sent_to.get(to)) else {
            return Err(moved);
        };
        match inbox.unbounded_send((self.id, moved)) {
            Ok(()) => {
                sent.set(sent.get().wrapping_add(1));
                Ok(())
            }
            Err(e) => Err(e.into_inner().1),
        }
    }

    /// A message from this core's inbox is taken in: publish it (the sender stops counting
    /// it as on its way) and give back what it carries.
    pub fn took(&self, (from, handoff): Message) -> Moved {
        if let Some(taken) = self.shared.slots[self.id].taken_from.get(from) {
            taken.store(
                taken.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Relaxed,
            );
        }
        handoff
    }

    #[cfg(test)]
    fn stats_sent_to(&self, to: usize) -> u32 {
        self.sent_to[to].get()
    }

    /// This core's inbox (once: the task that serves it takes it).
    pub fn take_inbox(&self) -> Option<Inbox> {
        self.inbox.borrow_mut().take()
    }

    /// Take no more streams from other cores: others stop choosing this core, and a
    /// stream sent anyway comes back to its sender. Those already queued are still
    /// received.
    pub fn close(&self, inbox: &mut Inbox) {
        self.shared.slots[self.id]
            .open
            .store(false, Ordering::Relaxed);
        inbox.close();
    }
}

/// The least busy of `others` (core, load) when a stream accepted by a core with load
/// `mine` should go there: always with [`SpreadStreams::Always`], with
/// [`SpreadStreams::Balanced`] when `mine` exceeds its load by more than `threshold`.
/// Ties go to the lowest core number.
pub fn choose(
    mine: u32,
    others: impl Iterator<Item = (usize, u32)>,
    mode: SpreadStreams,
    threshold: u32,
) -> Option<usize> {
    let (core, load) = others.min_by_key(|&(id, load)| (load, id))?;
    match mode {
        SpreadStreams::Off => None,
        SpreadStreams::Always => Some(core),
        SpreadStreams::Balanced => (mine > load.saturating_add(threshold)).then_some(core),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_moves_only_to_a_core_less_busy_by_more_than_the_threshold() {
        let b = SpreadStreams::Balanced;
        assert_eq!(choose(10, [(1, 2)].into_iter(), b, 8), None, "10 - 2 = 8");
        assert_eq!(choose(11, [(1, 2)].into_iter(), b, 8), Some(1));
        assert_eq!(choose(1, [(1, 0)].into_iter(), b, 0), Some(1));
        assert_eq!(choose(0, [(1, 0)].into_iter(), b, 0), None);
        assert_eq!(
            choose(20, [(0, 5), (2, 3), (3, 3)].into_iter(), b, 8),
            Some(2),
            "the least busy, the lowest number on a tie"
        );
        assert_eq!(choose(u32::MAX, [(1, u32::MAX)].into_iter(), b, 8), None);
        assert_eq!(choose(50, std::iter::empty(), b, 0), None, "no other core");
        assert_eq!(
            choose(0, [(1, 7)].into_iter(), SpreadStreams::Always, 8),
            Some(1)
        );
        assert_eq!(
            choose(99, [(1, 0)].into_iter(), SpreadStreams::Off, 0),
            None
        );
    }

    /// A real stream's handles, from an `h2` client and server over an in-memory pipe.
    fn real_handoff() -> Handoff {
        let rt = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(rt) => rt,
            Err(e) => panic!("runtime: {e}"),
        };
        rt.block_on(async {
            let (client_io, server_io) = tokio::io::duplex(64 * 1024);
            let client = tokio::spawn(async move {
                let (mut send, conn) = match h2::client::handshake(client_io).await {
                    Ok(c) => c,
                    Err(e) => panic!("client handshake: {e}"),
                };
                tokio::spawn(conn);
                let request = match Request::get("http://spread.test/").body(()) {
                    Ok(r) => r,
                    Err(e) => panic!("request: {e}"),
                };
                if let Err(e) = send.send_request(request, true) {
                    panic!("send: {e}");
                }
                send
            });
            let mut server = match h2::server::handshake(server_io).await {
                Ok(s) => s,
                Err(e) => panic!("server handshake: {e}"),
            };
            let (request, respond) = match server.accept().await {
                Some(Ok(stream)) => stream,
                other => panic!("no stream: {:?}", other.map(|r| r.map(|_| ()))),
            };
            drop(client.await);
            Handoff {
                request,
                respond,
                peer: SocketAddr::from(([127, 0, 0, 1], 1)),
                origin: Origin::EXPLICIT,
                ticket: super::super::open_streams::OpenStreams::new(std::time::Instant::now())
                    .open(),
            }
        })
    }

    #[test]
    fn a_connection_reaches_an_open_core_and_comes_back_from_a_closed_one() {
        let listener = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l,
            Err(e) => panic!("bind: {e}"),
        };
        let connection = || {
            let addr = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("addr: {e}"));
            let client = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
            let (stream, peer) = listener.accept().unwrap_or_else(|e| panic!("accept: {e}"));
            (
                client,
                MovedConnection {
                    stream,
                    peer,
                    side: None,
                },
            )
        };
        let members = mesh(2);
        let Some(mut inbox) = members[1].take_inbox() else {
            panic!("an inbox");
        };
        members[0].add_load(1);
        let (_client, moved) = connection();
        let peer = moved.peer;
        assert!(members[0].send_connection(1, moved).is_ok());
        assert_eq!(
            members[0].target(SpreadStreams::Balanced, 0),
            None,
            "1 is not more than the 1 on its way"
        );
        match inbox.try_recv() {
            Ok(message) => match members[1].took(message) {
                Moved::Connection(c) => assert_eq!(c.peer, peer),
                Moved::Stream(_) => panic!("a connection was sent"),
            },
            Err(e) => panic!("not delivered: {e:?}"),
        }
        members[1].close(&mut inbox);
        let (_client, moved) = connection();
        let back = members[0].send_connection(1, moved);
        assert!(
            back.is_err(),
            "a closed core's inbox gives the connection back"
        );
        assert_eq!(members[0].stats_sent_to(1), 1);
    }

    #[test]
    fn a_stream_reaches_an_open_core_and_comes_back_from_a_closed_one() {
        let members = mesh(2);
        let Some(mut inbox) = members[1].take_inbox() else {
            panic!("an inbox");
        };
        members[0].add_load(1);
        assert!(members[0].send(1, real_handoff()).is_ok());
        assert_eq!(
            members[0].target(SpreadStreams::Balanced, 0),
            None,
            "1 is not more than the 1 on its way"
        );
        match inbox.try_recv() {
            Ok(message) => {
                let Moved::Stream(handoff) = members[1].took(message) else {
                    panic!("a stream was sent");
                };
                assert_eq!(handoff.request.uri().path(), "/");
            }
            Err(e) => panic!("not delivered: {e:?}"),
        }
        assert_eq!(
            members[0].target(SpreadStreams::Balanced, 0),
            Some(1),
            "taken in (and not yet in its load): 1 is more than 0"
        );
        members[1].close(&mut inbox);
        let back = members[0].send(1, real_handoff());
        assert!(back.is_err(), "a closed core's inbox gives the stream back");
        assert_eq!(
            members[0].stats_sent_to(1),
            1,
            "a stream that came back was not counted as sent"
        );
    }

    #[test]
    fn loads_are_published_and_a_closed_core_is_not_chosen() {
        let members = mesh(3);
        members[0].add_load(5);
        members[1].add_load(3);
        members[1].add_load(-1);
        assert_eq!(members[1].load(), 2);
        members[2].add_load(4);
        let b = SpreadStreams::Balanced;
        assert_eq!(members[0].target(b, 2), Some(1), "5 > 2 + 2");
        assert_eq!(members[0].target(b, 3), None);
        assert_eq!(members[2].target(b, 0), Some(1));
        // Three streams sent to core 1 and not taken in yet count as its load; once it
        // says it took them, they count no more.
        members[2].sent_to[1].set(3);
        assert_eq!(
            members[2].target(b, 0),
            None,
            "4 is not more than 2 + 3 (or 5)"
        );
        assert_eq!(
            members[2].target(SpreadStreams::Always, 0),
            Some(0),
            "5 and 5: the lower number"
        );
        members[1].shared.slots[1].taken_from[2].store(3, Ordering::Relaxed);
        assert_eq!(members[2].target(b, 0), Some(1));
        let mut inbox = match members[1].take_inbox() {
            Some(i) => i,
            None => panic!("the inbox is taken once"),
        };
        assert!(members[1].take_inbox().is_none());
        members[1].close(&mut inbox);
        assert_eq!(members[0].target(b, 0), Some(2), "core 1 is closed");
        assert_eq!(members[0].target(SpreadStreams::Always, 0), Some(2));
        members[0].add_load(-10);
        assert_eq!(members[0].load(), 0, "never below zero");
    }
}
