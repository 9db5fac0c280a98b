//! A TCP connection with its read buffer: bytes are read into an owned buffer (io_uring
//! takes ownership while the read is in flight), parsed in place, and forwarded to the
//! other side from that same buffer without copying.
//!
//! The stream is plain TCP or TLS ([`Stream`]). The plain case costs one discriminant
//! test per read or write; the TLS case's futures are boxed so that they do not grow the
//! plain path's futures (every connection future holds a read's state).

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use std::io;

pub use super::tls::TlsStream;

/// A connection's byte stream: plain TCP, or TLS over TCP (boxed: the TLS state is large
/// and the plain case stays the size of a TCP stream plus a tag).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stream::Plain(s) => f.debug_tuple("Plain").field(s).finish(),
            Stream::Tls(t) => f.debug_tuple("Tls").field(t.tcp()).finish(),
        }
    }
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Self {
        Stream::Plain(s)
    }
}

impl From<TlsStream> for Stream {
    fn from(s: TlsStream) -> Self {
        Stream::Tls(Box::new(s))
    }
}

/// The TCP socket underneath, for socket options, addresses and peeks; bytes always go
/// through [`Conn`]'s methods (this gives no `&mut`).
impl std::ops::Deref for Stream {
    type Target = TcpStream;
    fn deref(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.tcp(),
        }
    }
}

impl Stream {
    /// The TLS session, when this is one.
    pub fn tls(&self) -> Option<&TlsStream> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => Some(t),
        }
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        self
    }

    /// Ready to read: bytes (or the end) wait on the socket, or TLS holds bytes already.
    pub async fn readable(&self, relaxed: bool) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.readable(relaxed).await,
            Stream::Tls(t) if t.has_buffered() => Ok(()),
            Stream::Tls(t) => t.tcp().readable(relaxed).await,
        }
    }

    /// Close the writing side (a TLS stream sends its close_notify first).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        use monoio::io::AsyncWriteRent;
        match self {
            Stream::Plain(s) => s.shutdown().await,
            Stream::Tls(t) => Box::pin(t.shutdown()).await,
        }
    }
}

/// A TLS read into `buf`'s spare capacity, boxed by the caller (see the module doc).
async fn tls_read(
    t: &mut TlsStream,
    mut buf: Vec<u8>,
    cancel: Option<CancelHandle>,
) -> (io::Result<usize>, Vec<u8>) {
    let res = t.read_into(&mut buf, cancel).await;
    (res, buf)
}

/// A connection and the bytes read from it but not yet consumed (`buf[start..]`).
pub struct Conn {
    pub stream: Stream,
    pub buf: Vec<u8>,
    pub start: usize,
    /// Bytes read from and written to this connection, for metrics.
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Result of asking for more bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// This many new bytes are now buffered.
    Read(usize),
    /// The peer closed its side.
    Eof,
    /// The buffer already holds `max` unconsumed bytes.
    Full,
}

impl Conn {
    pub fn new(stream: impl Into<Stream>, buf: Vec<u8>) -> Self {
        Conn {
            stream: stream.into(),
            buf,
            start: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    /// The unconsumed bytes. A read cancelled mid-flight (a timeout) takes the buffer with
    /// it, leaving `buf` empty behind a stale `start`: the connection then holds nothing.
    pub fn data(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    pub fn buffered(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Mark `n` buffered bytes as used.
    pub fn consume(&mut self, n: usize) {
        self.start += n.min(self.buffered());
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Read more bytes, keeping at most `max` unconsumed bytes buffered.
    pub async fn fill(&mut self, max: usize) -> io::Result<Fill> {
        let Some(len) = self.make_room(max) else {
            return Ok(Fill::Full);
        };
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = match &mut self.stream {
            Stream::Plain(s) => {
                let (res, slice) = s.read(buf.slice_mut(len..)).await;
                (res, slice.into_inner())
            }
            Stream::Tls(t) => Box::pin(tls_read(t, buf, None)).await,
        };
        self.buf = buf;
        self.count(res)
    }

    /// [`fill`](Self::fill) with a read that `cancel` can stop: a cancelled read gives the
    /// buffer back and ends with the error `ECANCELED` (see [`is_cancelled`]), or with the bytes
    /// it had already read when the cancel came too late — so nothing is lost either way.
    pub async fn fill_cancelable(&mut self, max: usize, cancel: CancelHandle) -> io::Result<Fill> {
        let Some(len) = self.make_room(max) else {
            return Ok(Fill::Full);
        };
        let buf = std::mem::take(&mut self.buf);
        let (res, buf) = match &mut self.stream {
            Stream::Plain(s) => {
                let (res, slice) = s.cancelable_read(buf.slice_mut(len..), cancel).await;
                (res, slice.into_inner())
            }
            Stream::Tls(t) => Box::pin(tls_read(t, buf, Some(cancel))).await,
        };
        self.buf = buf;
        self.count(res)
    }

    /// Make room for a read; the length the read appends at, `None` when `max` unconsumed
    /// bytes are buffered already.
    fn make_room(&mut self, max: usize) -> Option<usize> {
        if self.buffered() >= max {
            return None;
        }
        if self.start >= self.buf.len() {
            // Nothing unconsumed (or the buffer went with a cancelled read): start afresh.
            self.buf.clear();
            self.start = 0;
        }
        if self.start > 0 && self.buf.len() == self.buf.capacity() {
            let len = self.buf.len();
            self.buf.copy_within(self.start..len, 0);
            self.buf.truncate(len - self.start);
            self.start = 0;
        }
        if self.buf.len() == self.buf.capacity() {
            let room = max
                .saturating_sub(self.buffered())
                .min(self.buf.capacity().max(4096));
            self.buf.reserve(room.max(1));
        }
        Some(self.buf.len())
    }

    fn count(&mut self, res: io::Result<usize>) -> io::Result<Fill> {
        match res {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.bytes_in += n as u64;
                Ok(Fill::Read(n))
            }
            Err(e) => Err(e),
        }
    }

    /// Write `n` buffered bytes to `dst`, then consume them.
    pub async fn forward(&mut self, n: usize, dst: &mut Conn) -> io::Result<()> {
        let n = n.min(self.buffered());
        if n == 0 {
            return Ok(());
        }
        self.write_buffered(self.start..self.start + n, dst).await?;
        self.consume(n);
        Ok(())
    }

    /// Write a range of the buffer to `dst` without consuming it (for replays).
    pub async fn write_buffered(
        &mut self,
        range: std::ops::Range<usize>,
        dst: &mut Conn,
    ) -> io::Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let len = range.len() as u64;
        match &mut dst.stream {
            Stream::Plain(s) => {
                let buf = std::mem::take(&mut self.buf);
                let (res, slice) = s.write_all(buf.slice(range)).await;
                self.buf = slice.into_inner();
                res?;
            }
            Stream::Tls(t) => Box::pin(t.write_all(&self.buf[range])).await?,
        }
        dst.bytes_out += len;
        Ok(())
    }

    /// Write all of `bytes` (an owned buffer, returned for reuse).
    pub async fn write_vec(&mut self, bytes: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let len = bytes.len() as u64;
        let (res, bytes) = write_vec(&mut self.stream, bytes).await;
        if res.is_ok() {
            self.bytes_out += len;
        }
        (res, bytes)
    }
}

/// Write all of `bytes` (an owned buffer, returned for reuse).
pub async fn write_vec(stream: &mut Stream, bytes: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
    if bytes.is_empty() {
        return (Ok(()), bytes);
    }
    match stream {
        Stream::Plain(s) => {
            let (res, bytes) = s.write_all(bytes).await;
            (res.map(|_| ()), bytes)
        }
        Stream::Tls(t) => {
            let res = Box::pin(t.write_all(&bytes)).await;
            (res, bytes)
        }
    }
}

/// Whether a read ended because it was cancelled (see [`Conn::fill_cancelable`]).
pub fn is_cancelled(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECANCELED)
}

/// What a non-blocking peek at a socket's receive queue finds.
#[derive(Debug, PartialEq, Eq)]
enum Peek {
    /// Nothing yet (the peer is quiet).
    Nothing,
    /// Bytes are waiting to be read.
    Bytes,
    /// End of stream, or an error such as a reset.
    Closed,
}

fn peek(stream: &TcpStream) -> Peek {
    use std::os::fd::AsRawFd;
    let fd = stream.as_raw_fd();
    let mut byte = [0u8; 1];
    // SAFETY: `fd` is an open socket owned by `stream`, borrowed for this call only; the
    // buffer is a valid 1-byte stack array; MSG_DONTWAIT makes the call non-blocking.
    let n = unsafe {
        libc::recv(
            fd,
            byte.as_mut_ptr().cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        n if n > 0 => Peek::Bytes,
        0 => Peek::Closed,
        _ if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock => Peek::Nothing,
        _ => Peek::Closed,
    }
}

/// Whether an idle pooled connection is still usable: no EOF, no reset and no unexpected
/// bytes waiting (bytes nobody asked for mean the stream is out of sync). Peeks without
/// blocking.
pub fn idle_conn_is_alive(stream: &TcpStream) -> bool {
    peek(stream) == Peek::Nothing
}

/// Whether the peer sent bytes that nobody has read yet. Peeks without blocking.
pub fn has_unread_bytes(stream: &TcpStream) -> bool {
    peek(stream) == Peek::Bytes
}

#[cfg(test)]
mod tests {
    use super::{is_cancelled, Conn, Fill};
    use monoio::io::Canceller;
    use monoio::net::TcpStream;
    use std::future::Future;
    use std::io::Write;
    use std::net::TcpListener;
    use std::task::{Context, Waker};
    use std::time::Duration;

    /// Runs the test body on the io_uring driver (where the kernel offers it) and on the
    /// legacy one.
    fn on_each_driver<F: Future<Output = ()>>(body: impl Fn() -> F) {
        if let Ok(mut rt) = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .enable_timer()
            .build()
        {
            rt.block_on(body());
        }
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("legacy runtime")
            .block_on(body());
    }

    /// Our connection (with an empty 4 KiB buffer) and the peer's end of it.
    async fn pair() -> (Conn, std::net::TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let ours = TcpStream::connect(addr).await.expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        (Conn::new(ours, Vec::with_capacity(4096)), theirs)
    }

    #[test]
    fn a_cancelled_read_gives_the_buffer_back_and_the_next_read_gets_the_bytes() {
        on_each_driver(|| async {
            let (mut conn, mut theirs) = pair().await;
            let canceller = Canceller::new();
            {
                let mut read = std::pin::pin!(conn.fill_cancelable(1024, canceller.handle()));
                // Posted: nothing to read yet.
                let mut cx = Context::from_waker(Waker::noop());
                assert!(read.as_mut().poll(&mut cx).is_pending());
                drop(canceller.cancel());
                let err = read.await.expect_err("cancelled before any byte");
                assert!(is_cancelled(&err), "{err}");
            }
            assert_eq!(conn.buf.capacity(), 4096, "the buffer came back");
            assert_eq!(conn.buffered(), 0);
            theirs.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
            assert_eq!(conn.fill(1024).await.expect("read"), Fill::Read(18));
            assert_eq!(conn.data(), b"GET / HTTP/1.1\r\n\r\n");
        });
    }

    #[test]
    fn bytes_that_arrive_before_the_cancel_are_read_once_whoever_wins() {
        on_each_driver(|| async {
            // With the driver's turns in between, the read is in flight (and may complete)
            // before the cancel; without, the read and the cancel go in together.
            for turns in [false, true] {
                let (mut conn, mut theirs) = pair().await;
                let canceller = Canceller::new();
                let sent = b"GET /late HTTP/1.1\r\n\r\n";
                let first = {
                    let mut read = std::pin::pin!(conn.fill_cancelable(1024, canceller.handle()));
                    let mut cx = Context::from_waker(Waker::noop());
                    assert!(read.as_mut().poll(&mut cx).is_pending());
                    if turns {
                        monoio::time::sleep(Duration::from_millis(1)).await;
                    }
                    theirs.write_all(sent).expect("write");
                    if turns {
                        monoio::time::sleep(Duration::from_millis(1)).await;
                    }
                    drop(canceller.cancel());
                    read.await
                };
                match first {
                    Ok(Fill::Read(n)) => assert_eq!(n, sent.len()),
                    Err(e) if is_cancelled(&e) => {
                        let again = conn.fill(1024).await.expect("read");
                        assert_eq!(again, Fill::Read(sent.len()));
                    }
                    other => panic!("turns {turns}: {other:?}"),
                }
                assert_eq!(conn.data(), sent, "turns {turns}");
            }
        });
    }
}
