//! A TLS connection in poll style (tokio's `AsyncRead`/`AsyncWrite` over monoio's
//! `poll-io`), for HTTP/2: the same rustls connection the handshake ran on
//! ([`super::tls::TlsStream`]), taken over with any ciphertext already read.

use super::tls::TlsStream;
use monoio::net::tcp::stream_poll::TcpStreamPoll;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Ciphertext read from the socket at once.
const CIPHERTEXT_READ_BYTES: usize = 17 * 1024;

pub struct TlsPoll {
    tcp: TcpStreamPoll,
    tls: rustls::Connection,
    /// Ciphertext read; `incoming[start..]` not yet given to rustls.
    incoming: Vec<u8>,
    start: usize,
    /// Ciphertext to send; `outgoing[sent..]` not yet written.
    outgoing: Vec<u8>,
    sent: usize,
    eof: bool,
    closing: bool,
}

impl TlsPoll {
    /// The poll-style form of `stream` (its handshake done).
    pub fn new(stream: TlsStream) -> io::Result<TlsPoll> {
        let TlsStream {
            tcp,
            tls,
            incoming,
            start,
            ..
        } = stream;
        let tcp = tcp.try_into_poll_io().map_err(|(e, _)| e)?;
        Ok(TlsPoll {
            tcp,
            tls,
            incoming,
            start,
            outgoing: Vec::new(),
            sent: 0,
            eof: false,
            closing: false,
        })
    }

    /// Give rustls the ciphertext in hand; true when some was taken.
    fn feed(&mut self) -> io::Result<bool> {
        let fed = super::tls::feed_ciphertext(&mut self.tls, &self.incoming, &mut self.start)?;
        Ok(fed.is_some())
    }

    /// Write out what rustls has queued.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.sent == self.outgoing.len() {
                self.outgoing.clear();
                self.sent = 0;
                if !self.tls.wants_write() {
                    return Poll::Ready(Ok(()));
                }
                while self.tls.wants_write() {
                    if self.tls.write_tls(&mut self.outgoing)? == 0 {
                        break;
                    }
                }
                if self.outgoing.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
    }
}

impl AsyncRead for TlsPoll {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.tls.reader().read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(())),
                Err(e) => return Poll::Ready(Err(e)),
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.feed()? {
                // Answers (a key update) go out when they can; reading goes on.
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
                continue;
            }
            this.incoming.clear();
            this.incoming.resize(CIPHERTEXT_READ_BYTES, 0);
            this.start = 0;
            let mut read = ReadBuf::new(&mut this.incoming);
            let polled = Pin::new(&mut this.tcp).poll_read(cx, &mut read);
            let n = read.filled().len();
            this.incoming.truncate(n);
            ready!(polled)?;
            if n == 0 {
                this.eof = true;
                this.tls.read_tls(&mut io::empty())?;
                this.tls.process_new_packets().map_err(io::Error::other)?;
            }
        }
    }
}

impl AsyncWrite for TlsPoll {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // Earlier records first: rustls's buffer stays bounded.
        ready!(this.poll_send(cx))?;
        let n = this.tls.writer().write(buf)?;
        // Start sending; the rest goes with the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.closing {
            this.closing = true;
            this.tls.send_close_notify();
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
