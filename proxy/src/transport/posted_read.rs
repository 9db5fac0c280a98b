//! An idle pooled upstream connection with the read for its next response already posted
//! (io_uring, plain TCP). The read waits on the idle connection, so its completion is also
//! how the pool learns that the upstream closed the connection or wrote to it unasked; a
//! request then goes out through the connection's write half and its response arrives by
//! the read posted at check-in, with no readiness wait before it and no cancel after it.

use monoio::io::{
    AsyncWriteRentExt, CancelableAsyncReadRent, Canceller, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::transport::conn::is_cancelled;

type ReadHalf = OwnedReadHalf<TcpStream>;

/// The read posted on the idle connection: its result, the buffer holding what it read,
/// and the read half it borrowed.
type ReadFuture = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>, ReadHalf)>>>;

/// A connection with its read posted, as it sits in the pool and as the pool hands it out.
pub struct PostedRead {
    read: ReadFuture,
    write: OwnedWriteHalf<TcpStream>,
    /// Stops the read (when the connection lingered long enough, or is wanted back whole).
    canceller: Option<Canceller>,
    cancelled: bool,
}

/// A posted read that completed, and the connection whole again.
pub struct Finished {
    /// What the read gave: bytes (the start of a response, or bytes nobody asked for when
    /// nothing was sent), `Ok(0)` for the upstream's close, or an error (`ECANCELED` when
    /// the read was cancelled before anything came: see [`Finished::cancelled`]).
    pub res: io::Result<usize>,
    /// The read's buffer, holding the bytes it read.
    pub buf: Vec<u8>,
    pub stream: TcpStream,
    /// The read's canceller, fresh for another read.
    pub canceller: Canceller,
}

impl Finished {
    /// The read was cancelled with nothing read: the connection is quiet and whole.
    pub fn cancelled(&self) -> bool {
        matches!(&self.res, Err(e) if is_cancelled(e))
    }
}

impl PostedRead {
    /// Post a read into `buf` (empty; the read fills its capacity) on `stream`. It is
    /// submitted at its first poll ([`PostedRead::try_finish`] or [`PostedRead::finish`]).
    pub fn new(stream: TcpStream, buf: Vec<u8>, canceller: Canceller) -> PostedRead {
        let (mut half, write) = stream.into_split();
        let handle = canceller.handle();
        let read: ReadFuture = Box::pin(async move {
            let (res, buf) = half.cancelable_read(buf, handle).await;
            (res, buf, half)
        });
        PostedRead {
            read,
            write,
            canceller: Some(canceller),
            cancelled: false,
        }
    }

    /// Poll the read once, with no waker (the pool looks again when it needs to): the
    /// connection whole once the read has completed, or the posted read still pending.
    pub fn try_finish(mut self) -> Result<Finished, PostedRead> {
        match self
            .read
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(done) => Ok(self.reunite(done)),
            Poll::Pending => Err(self),
        }
    }

    /// Wait for the read to complete (the response's first bytes), then the connection
    /// whole again.
    pub async fn finish(mut self) -> Finished {
        let done = self.read.as_mut().await;
        self.reunite(done)
    }

    /// Ask the read to stop; it then completes with `ECANCELED`, or with what it read if
    /// bytes came first. Idempotent.
    pub fn cancel(&mut self) {
        if self.cancelled {
            return;
        }
        self.cancelled = true;
        if let Some(c) = self.canceller.take() {
            self.canceller = Some(c.cancel());
        }
    }

    /// Whether [`PostedRead::cancel`] was called.
    pub fn is_cancelling(&self) -> bool {
        self.cancelled
    }

    /// The connection whole, the read cancelled first if it is still pending (`None` when
    /// the read found the connection closed or out of sync, or failed).
    pub async fn reclaim(mut self) -> (Option<TcpStream>, Canceller) {
        self.cancel();
        let done = self.finish().await;
        let quiet = done.cancelled();
        (quiet.then_some(done.stream), done.canceller)
    }

    /// Write all of `bytes` through the connection's write half while the read waits.
    pub async fn write_all(&mut self, bytes: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        if bytes.is_empty() {
            return (Ok(()), bytes);
        }
        let (res, bytes) = self.write.write_all(bytes).await;
        (res.map(|_| ()), bytes)
    }

    fn reunite(self, (res, buf, half): (io::Result<usize>, Vec<u8>, ReadHalf)) -> Finished {
        let PostedRead {
            write, canceller, ..
        } = self;
        let stream = match half.reunite(write) {
            Ok(stream) => stream,
            // Both halves came from one `into_split` in `new`.
            Err(_) => unreachable!("the halves of one stream"),
        };
        Finished {
            res,
            buf,
            stream,
            canceller: canceller.unwrap_or_default(),
        }
    }
}
