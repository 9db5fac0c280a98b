//! Bodies between HTTP/2 streams: the request body streamed to each attempt and kept for
//! replay while it is small, and
//! the pump that moves DATA frames from one stream to another under both sides' flow
//! control (a window is given back to the sender only once its bytes went on), then the
//! trailers or the end of the stream. Nothing is held whole.

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::HeaderMap;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::time::Duration;

/// Why a pump stopped early.
#[derive(Debug)]
pub enum PumpError {
    /// The side sending the body failed or reset its stream.
    Source(h2::Error),
    /// The side receiving it did.
    Destination(h2::Error),
    /// The receiving side went away.
    DestinationGone,
    /// An HTTP/1 source ended its body early or broke its framing.
    SourceBroke,
    /// The receiving side gave no window for longer than the stall limit.
    Stalled,
}

thread_local! {
    /// How long a pump waits for the receiver to open its window before it gives up on
    /// the stream (`[http2] stall_timeout_ms`): a client that stops reading holds the
    /// stream (and the upstream's) no longer. Per core: each core sets it from the
    /// snapshot it runs on.
    static STALL_LIMIT: Cell<Duration> = const {
        Cell::new(Duration::from_millis(coremesh_discovery::http2::DEFAULT_STALL_TIMEOUT_MS))
    };
}

/// Set this core's stall limit (see `STALL_LIMIT`).
pub fn set_stall_limit(limit: Duration) {
    STALL_LIMIT.with(|l| l.set(limit));
}

/// A request body as the attempts see it. Nothing waits for the body: an attempt starts
/// as soon as the head is in and its stream carries each chunk as the client sends it (a
/// bidirectional call whose client waits for each answer goes on at once). What was read
/// is kept, while it fits in the replay limit, so another attempt can send it again and
/// then go on with the rest of the client's stream.
pub struct BodySource {
    shared: Rc<RefCell<Kept>>,
}

/// What the attempts of one request share of its body.
struct Kept {
    /// The chunks read so far, in order, while `len` is within `limit` (and the one that
    /// crossed it when read ahead, which the first attempt still needs).
    chunks: Vec<Bytes>,
    len: usize,
    limit: usize,
    /// Some bytes read were not kept: no other attempt can send the body again.
    overflowed: bool,
    /// The client's stream, while no attempt is reading it and it has not ended.
    rest: Option<RecvStream>,
    /// The client ended the body (its trailers, if any, in `trailers`).
    ended: bool,
    trailers: Option<HeaderMap>,
    /// An attempt took the body.
    taken: bool,
}

impl Kept {
    /// Keep `chunk` for replay if it fits (true), or stop keeping.
    fn record(&mut self, chunk: &Bytes) -> bool {
        if self.overflowed {
            return false;
        }
        if self.len + chunk.len() > self.limit {
            self.overflowed = true;
            self.chunks = Vec::new();
            return false;
        }
        self.len += chunk.len();
        self.chunks.push(chunk.clone());
        true
    }
}

impl BodySource {
    /// The body of `stream`, kept for replay while it fits in `limit` bytes.
    pub fn new(stream: RecvStream, limit: usize) -> BodySource {
        let ended = stream.is_end_stream();
        BodySource::of(Kept {
            chunks: Vec::new(),
            len: 0,
            limit,
            overflowed: false,
            rest: (!ended).then_some(stream),
            ended,
            trailers: None,
            taken: false,
        })
    }

    fn of(kept: Kept) -> BodySource {
        BodySource {
            shared: Rc::new(RefCell::new(kept)),
        }
    }

    /// Everything read so far was kept, so another attempt can send the body again (a
    /// failed attempt gives the client's stream back when it is dropped).
    pub fn replayable(&self) -> bool {
        let kept = self.shared.borrow();
        // A body read ahead past the limit went whole to the attempt that took it.
        let spent = kept.taken && kept.len > kept.limit;
        !(kept.overflowed || spent)
    }

    /// Read ahead, before any attempt took the body, until it ends or no longer fits in
    /// the replay limit: an HTTP/1 endpoint then gets a small body whole, with its length.
    pub async fn fill(&mut self) -> Result<(), h2::Error> {
        loop {
            let mut rest = {
                let mut kept = self.shared.borrow_mut();
                if kept.taken || kept.len > kept.limit {
                    return Ok(());
                }
                match kept.rest.take() {
                    Some(rest) => rest,
                    None => return Ok(()),
                }
            };
            match rest.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = rest.flow_control().release_capacity(chunk.len());
                    let mut kept = self.shared.borrow_mut();
                    // Kept even past the limit: the first attempt still sends it.
                    kept.len += chunk.len();
                    kept.chunks.push(chunk);
                    kept.rest = Some(rest);
                }
                None => {
                    let trailers = rest.trailers().await?;
                    let mut kept = self.shared.borrow_mut();
                    kept.ended = true;
                    kept.trailers = trailers;
                    return Ok(());
                }
            }
        }
    }

    /// The body for one attempt: what was kept, then the rest of the client's stream.
    /// `None` when an earlier attempt took a body that could not be kept.
    pub fn for_attempt(&mut self) -> Option<BodyFeed> {
        if !self.replayable() {
            return None;
        }
        let mut kept = self.shared.borrow_mut();
        let replay = if kept.len > kept.limit {
            // Read ahead past the limit: this attempt is the only one.
            kept.overflowed = true;
            std::mem::take(&mut kept.chunks)
        } else {
            kept.chunks.clone()
        };
        kept.taken = true;
        Some(BodyFeed {
            replay: replay.into(),
            rest: kept.rest.take(),
            ended: kept.ended,
            trailers: kept.trailers.clone(),
            shared: self.shared.clone(),
        })
    }
}

/// One attempt's body: the kept chunks, then the client's stream, which goes back to the
/// [`BodySource`] when the attempt is dropped before the body ended.
pub struct BodyFeed {
    replay: VecDeque<Bytes>,
    rest: Option<RecvStream>,
    ended: bool,
    trailers: Option<HeaderMap>,
    shared: Rc<RefCell<Kept>>,
}

impl BodyFeed {
    /// Nothing to send: the request goes out with END_STREAM on its headers.
    pub fn is_empty(&self) -> bool {
        self.ended && self.trailers.is_none() && self.replay.iter().all(|b| b.is_empty())
    }

    /// The whole body is in hand and has no trailers: its length, for an HTTP/1 head.
    pub fn whole_len(&self) -> Option<u64> {
        (self.ended && self.trailers.is_none())
            .then(|| self.replay.iter().map(|b| b.len() as u64).sum())
    }

    /// The kept chunks, for an HTTP/1 head that carries a whole body.
    pub fn replay(&self) -> impl Iterator<Item = &Bytes> {
        self.replay.iter()
    }

    /// The next chunk, and whether its window is still to be given back (by
    /// [`BodyFeed::sent`], once it went on): the kept chunks first, then the client's
    /// stream. A chunk kept for replay is held here anyway, so its window goes back at
    /// once; one that no longer fits only once it went on. `Ok(None)` at the end of the
    /// body, whose trailers [`BodyFeed::trailers`] then gives.
    pub async fn next(&mut self) -> Result<Option<(Bytes, bool)>, h2::Error> {
        if let Some(chunk) = self.replay.pop_front() {
            return Ok(Some((chunk, false)));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Ok(None);
        };
        match rest.data().await {
            Some(chunk) => {
                let chunk = chunk?;
                let kept = self.shared.borrow_mut().record(&chunk);
                if kept {
                    let _ = rest.flow_control().release_capacity(chunk.len());
                }
                Ok(Some((chunk, !kept)))
            }
            None => {
                let trailers = rest.trailers().await?;
                self.rest = None;
                self.ended = true;
                self.trailers.clone_from(&trailers);
                let mut kept = self.shared.borrow_mut();
                kept.ended = true;
                kept.trailers = trailers;
                Ok(None)
            }
        }
    }

    /// `n` bytes read from the client went on: the client may send as much again.
    pub fn sent(&mut self, n: usize) {
        if let Some(rest) = self.rest.as_mut() {
            let _ = rest.flow_control().release_capacity(n);
        }
    }

    /// The body's trailers, once it ended.
    pub fn trailers(&self) -> Option<HeaderMap> {
        self.trailers.clone()
    }
}

impl Drop for BodyFeed {
    fn drop(&mut self) {
        if let Some(rest) = self.rest.take() {
            self.shared.borrow_mut().rest = Some(rest);
        }
    }
}

/// Send `feed` on `dst`, ending the stream.
pub async fn pump_feed(mut feed: BodyFeed, dst: &mut SendStream<Bytes>) -> Result<(), PumpError> {
    while let Some((chunk, owed)) = feed.next().await.map_err(PumpError::Source)? {
        let n = chunk.len();
        send_all(dst, chunk).await?;
        if owed {
            feed.sent(n);
        }
    }
    finish(dst, feed.trailers())
}

/// Move the rest of `src` to `dst`, then its trailers (returned too) or the end of the
/// stream.
pub async fn pump(
    mut src: RecvStream,
    dst: &mut SendStream<Bytes>,
) -> Result<Option<HeaderMap>, PumpError> {
    while let Some(chunk) = src.data().await {
        let chunk = chunk.map_err(PumpError::Source)?;
        let n = chunk.len();
        send_all(dst, chunk).await?;
        // The sender may send as much again only now that these bytes went on.
        let _ = src.flow_control().release_capacity(n);
    }
    let trailers = src.trailers().await.map_err(PumpError::Source)?;
    finish(dst, trailers.clone())?;
    Ok(trailers)
}

fn finish(dst: &mut SendStream<Bytes>, trailers: Option<HeaderMap>) -> Result<(), PumpError> {
    match trailers {
        Some(t) => dst.send_trailers(t),
        None => dst.send_data(Bytes::new(), true),
    }
    .map_err(PumpError::Destination)
}

/// Send `chunk` as the receiver's window lets it through.
pub async fn send_all(dst: &mut SendStream<Bytes>, mut chunk: Bytes) -> Result<(), PumpError> {
    while !chunk.is_empty() {
        dst.reserve_capacity(chunk.len());
        let capacity = poll_fn(|cx| dst.poll_capacity(cx));
        let stall = STALL_LIMIT.with(Cell::get);
        let granted = match monoio::time::timeout(stall, capacity).await {
            Ok(Some(Ok(n))) => n,
            Ok(Some(Err(e))) => return Err(PumpError::Destination(e)),
            Ok(None) => return Err(PumpError::DestinationGone),
            Err(_) => return Err(PumpError::Stalled),
        };
        if granted == 0 {
            continue;
        }
        let part = chunk.split_to(granted.min(chunk.len()));
        dst.send_data(part, false).map_err(PumpError::Destination)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body read whole already (`chunks`), or read ahead (`len` past `limit`).
    fn kept(chunks: &[&'static [u8]], limit: usize, ended: bool) -> BodySource {
        let chunks: Vec<Bytes> = chunks.iter().map(|c| Bytes::from_static(c)).collect();
        BodySource::of(Kept {
            len: chunks.iter().map(Bytes::len).sum(),
            chunks,
            limit,
            overflowed: false,
            rest: None,
            ended,
            trailers: None,
            taken: false,
        })
    }

    #[monoio::test]
    async fn a_whole_body_is_sent_again_by_each_attempt_and_an_empty_one_is_empty() {
        let mut whole = kept(&[b"ab", b"c"], 10, true);
        assert!(whole.replayable());
        for _ in 0..2 {
            let mut feed = whole.for_attempt().expect("a whole body goes out again");
            assert_eq!(feed.whole_len(), Some(3));
            let mut sent = Vec::new();
            while let Some((chunk, owed)) = feed.next().await.expect("kept chunks") {
                assert!(
                    !owed,
                    "a kept chunk's window was given back when it was read"
                );
                sent.extend_from_slice(&chunk);
            }
            assert_eq!(sent, b"abc");
        }
        assert!(whole.replayable());
        let mut empty = kept(&[], 10, true);
        assert!(empty.for_attempt().is_some_and(|f| f.is_empty()));
    }

    #[test]
    fn a_body_read_past_the_limit_goes_to_one_attempt_only() {
        let mut ahead = kept(&[b"abcd", b"efgh"], 6, false);
        assert!(ahead.replayable(), "nothing went out yet");
        let feed = ahead
            .for_attempt()
            .expect("the first attempt sends what was read");
        assert_eq!(feed.replay.len(), 2);
        assert_eq!(feed.whole_len(), None, "the client has not ended the body");
        drop(feed);
        assert!(!ahead.replayable(), "a retry would send a body with a hole");
        assert!(ahead.for_attempt().is_none());
    }

    #[test]
    fn a_chunk_that_does_not_fit_ends_the_keeping() {
        let source = kept(&[b"abcd"], 6, false);
        let mut shared = source.shared.borrow_mut();
        assert!(
            shared.record(&Bytes::from_static(b"ef")),
            "6 bytes fit in 6"
        );
        assert!(!shared.record(&Bytes::from_static(b"g")));
        assert!(shared.overflowed && shared.chunks.is_empty());
        assert!(
            !shared.record(&Bytes::from_static(b"")),
            "nothing is kept after a hole"
        );
        drop(shared);
        assert!(!source.replayable());
    }
}
