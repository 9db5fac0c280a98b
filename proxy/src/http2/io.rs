//! HTTP/2 runs on the `h2` crate, which reads and writes through tokio's poll-style I/O
//! traits. This turns a core's monoio TCP connection into that (monoio's `poll-io`: no
//! tokio runtime, the same event loop) and hands back first the bytes the proxy already
//! read while it decided the protocol.

use monoio::net::tcp::stream_poll::TcpStreamPoll;
use monoio::net::TcpStream;
use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from and written to a connection, readable while `h2` owns it.
#[derive(Clone, Default)]
pub struct Counters {
    pub read: Rc<Cell<u64>>,
    pub written: Rc<Cell<u64>>,
}

/// A connection in poll style, with bytes already read from it served first.
pub struct H2Io {
    stream: TcpStreamPoll,
    read_ahead: Vec<u8>,
    offset: usize,
    counters: Counters,
}

impl H2Io {
    /// `read_ahead`: what was read from `stream` before (the client's preface, say).
    pub fn new(stream: TcpStream, read_ahead: Vec<u8>, counters: Counters) -> io::Result<H2Io> {
        let stream = stream.try_into_poll_io().map_err(|(e, _)| e)?;
        Ok(H2Io {
            stream,
            read_ahead,
            offset: 0,
            counters,
        })
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset < this.read_ahead.len() {
            let left = &this.read_ahead[this.offset..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.offset += n;
            if this.offset == this.read_ahead.len() {
                this.read_ahead = Vec::new();
                this.offset = 0;
            }
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        this.counters.read.set(this.counters.read.get() + n);
        polled
    }
}

impl H2Io {
    fn count_written(&self, polled: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = polled {
            let c = &self.counters.written;
            c.set(c.get() + *n as u64);
        }
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.count_written(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.count_written(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
