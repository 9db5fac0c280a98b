//! HTTP/2 runs on the `h2` crate, which reads and writes through tokio's poll-style I/O
//! traits. This turns a core's monoio TCP connection into that (monoio's `poll-io`: no
//! tokio runtime, the same event loop) and hands back first the bytes the proxy already
//! read while it decided the protocol. A TLS connection is taken over as it is, its
//! handshake done ([`crate::transport::tls_poll`]).

use crate::transport::conn::Stream;
use crate::transport::tls_poll::TlsPoll;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
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

/// A client connection's frames watched as they cross the socket ([`super::frames`]).
pub struct Watch {
    incoming: super::frames::FrameSplitter,
    outgoing: super::frames::FrameSplitter,
    flood: super::frames::FloodWatch,
    /// Set when the client floods the connection with control frames.
    pub flooded: Rc<Cell<bool>>,
    /// Called with the error code of each RST_STREAM and GOAWAY frame the proxy sends.
    on_error: Box<dyn Fn(u32)>,
}

impl Watch {
    /// At most `control_frames` SETTINGS and PING frames per `window` from the client.
    pub fn new(
        control_frames: u32,
        window: std::time::Duration,
        on_error: Box<dyn Fn(u32)>,
    ) -> Self {
        Watch {
            incoming: super::frames::FrameSplitter::skipping(super::PREFACE.len()),
            outgoing: super::frames::FrameSplitter::default(),
            flood: super::frames::FloodWatch::new(control_frames, window),
            flooded: Rc::default(),
            on_error,
        }
    }

    fn read(&mut self, bytes: &[u8]) {
        let (flood, flooded) = (&mut self.flood, &self.flooded);
        self.incoming.feed(bytes, |f| {
            if flood.flooded(&f) {
                flooded.set(true);
            }
        });
    }

    fn wrote(&mut self, bytes: &[u8]) {
        let on_error = &self.on_error;
        self.outgoing.feed(bytes, |f| {
            if let Some(code) = f.error_code {
                on_error(code);
            }
        });
    }
}

/// A socket in poll style: plain TCP or TLS.
enum PollStream {
    Plain(TcpStreamPoll),
    Tls(Box<TlsPoll>),
}

/// Forward a poll call to whichever stream this is.
macro_rules! on_stream {
    ($stream:expr, $s:ident => $call:expr) => {
        match $stream {
            PollStream::Plain($s) => $call,
            PollStream::Tls($s) => $call,
        }
    };
}

/// A connection in poll style, with bytes already read from it served first.
pub struct H2Io {
    stream: PollStream,
    read_ahead: Vec<u8>,
    offset: usize,
    counters: Counters,
    watch: Option<Watch>,
}

impl H2Io {
    /// `read_ahead`: what was read from `stream` before (the client's preface, say).
    pub fn new(
        stream: impl Into<Stream>,
        read_ahead: Vec<u8>,
        counters: Counters,
    ) -> io::Result<H2Io> {
        let stream = match stream.into() {
            Stream::Plain(s) => PollStream::Plain(s.try_into_poll_io().map_err(|(e, _)| e)?),
            Stream::Tls(t) => PollStream::Tls(Box::new(TlsPoll::new(*t)?)),
        };
        Ok(H2Io {
            stream,
            read_ahead,
            offset: 0,
            counters,
            watch: None,
        })
    }

    /// Watch the frames crossing this (client) connection.
    pub fn watched(mut self, watch: Watch) -> Self {
        self.watch = Some(watch);
        self
    }
}

impl AsyncRead for H2Io {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = if this.offset < this.read_ahead.len() {
            let left = &this.read_ahead[this.offset..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.offset += n;
            if this.offset == this.read_ahead.len() {
                this.read_ahead = Vec::new();
                this.offset = 0;
            }
            Poll::Ready(Ok(()))
        } else {
            let polled = on_stream!(&mut this.stream, s => Pin::new(s).poll_read(cx, buf));
            let n = (buf.filled().len() - before) as u64;
            this.counters.read.set(this.counters.read.get() + n);
            polled
        };
        if let Some(watch) = this.watch.as_mut() {
            watch.read(&buf.filled()[before..]);
        }
        polled
    }
}

impl H2Io {
    fn count_written(&self, n: usize) {
        let c = &self.counters.written;
        c.set(c.get() + n as u64);
    }
}

impl AsyncWrite for H2Io {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = on_stream!(&mut self.stream, s => Pin::new(s).poll_write(cx, buf));
        if let Poll::Ready(Ok(n)) = polled {
            self.count_written(n);
            if let Some(watch) = self.watch.as_mut() {
                watch.wrote(&buf[..n]);
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = on_stream!(&mut self.stream, s => Pin::new(s).poll_write_vectored(cx, bufs));
        if let Poll::Ready(Ok(n)) = polled {
            self.count_written(n);
            if let Some(watch) = self.watch.as_mut() {
                let mut left = n;
                for b in bufs {
                    let take = left.min(b.len());
                    watch.wrote(&b[..take]);
                    left -= take;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        on_stream!(&self.stream, s => s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(&mut self.stream, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        on_stream!(&mut self.stream, s => Pin::new(s).poll_shutdown(cx))
    }
}
