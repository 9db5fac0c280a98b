//! TLS on a core's sockets: a rustls connection (server or client side) driven over a
//! monoio TCP stream with owned buffers, the handshake, and what it learnt of the peer
//! (certificates, ALPN protocol, identity).
//!
//! Why an adapter of our own rather than the `monoio-rustls` crate: the proxy needs the
//! verified peer certificates and the negotiated ALPN protocol after the handshake (the
//! crate did not expose the certificates), must hand the very same rustls connection to
//! HTTP/2's poll-style I/O when ALPN picks `h2` (see [`super::tls_poll`]), and must start
//! a server handshake from a ClientHello that detection already read into the
//! connection's buffer. Driving `rustls::Connection` is a few dozen lines: ciphertext is
//! read from the socket into an owned buffer (io_uring keeps it while the read is in
//! flight) and fed to `read_tls`; what `write_tls` produces goes out from another owned
//! buffer. Plaintext is read into and written from the caller's buffers directly.
//!
//! A read cancelled mid-flight ([`TlsStream::read_into`] with a cancel handle) gives the
//! ciphertext buffer back like a plain read does, so no byte of the record stream is lost.

use monoio::io::{AsyncReadRent, AsyncWriteRentExt, CancelHandle, CancelableAsyncReadRent};
use monoio::net::TcpStream;
use rustls::pki_types::CertificateDer;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// Ciphertext read from the socket at once: a little more than one full TLS record.
const CIPHERTEXT_READ_BYTES: usize = 17 * 1024;

/// The ALPN protocol id of HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";
/// The ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A TLS connection over a TCP stream (after or during its handshake).
pub struct TlsStream {
    pub(super) tcp: TcpStream,
    pub(super) tls: rustls::Connection,
    /// Ciphertext read from the socket; `incoming[start..]` is not yet given to rustls.
    pub(super) incoming: Vec<u8>,
    pub(super) start: usize,
    /// Ciphertext rustls produced, written out from here.
    outgoing: Vec<u8>,
    /// Decrypted bytes rustls holds that the caller has not read yet.
    plaintext: usize,
    /// The peer closed the TCP stream (rustls was told).
    eof: bool,
    /// The peer's identity ([`client_identity`]), read once the handshake is done.
    identity: Option<String>,
}

impl TlsStream {
    /// A server-side connection on `tcp`, whose first `read` bytes (the start of the
    /// ClientHello, read by detection) are already in hand.
    pub fn server(
        tcp: TcpStream,
        config: Arc<rustls::ServerConfig>,
        read: Vec<u8>,
    ) -> io::Result<TlsStream> {
        let tls = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(TlsStream::with(tcp, tls.into(), read))
    }

    /// A client-side connection on `tcp` to `server_name`.
    pub fn client(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    ) -> io::Result<TlsStream> {
        let tls = rustls::ClientConnection::new(config, server_name).map_err(io::Error::other)?;
        Ok(TlsStream::with(tcp, tls.into(), Vec::new()))
    }

    fn with(tcp: TcpStream, tls: rustls::Connection, incoming: Vec<u8>) -> TlsStream {
        TlsStream {
            tcp,
            tls,
            incoming,
            start: 0,
            outgoing: Vec::new(),
            plaintext: 0,
            eof: false,
            identity: None,
        }
    }

    /// Run the handshake to its end (the caller puts a timeout around it).
    pub async fn handshake(&mut self) -> io::Result<()> {
        loop {
            self.flush().await?;
            if !self.tls.is_handshaking() {
                self.identity = self.tls.peer_certificates().and_then(client_identity);
                return Ok(());
            }
            match self.feed() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    // Tell the peer why (the alert rustls queued), then fail.
                    let _ = self.flush().await;
                    return Err(e);
                }
            }
            if self.read_socket(None).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
        }
    }

    /// The peer's certificate chain (leaf first), as verified in the handshake.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.tls.peer_certificates()
    }

    /// The peer's identity, from its verified certificate ([`client_identity`]).
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The protocol ALPN settled on, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// The negotiated TLS version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.tls.protocol_version()
    }

    /// Whether a read would find bytes without touching the socket.
    pub fn has_buffered(&self) -> bool {
        self.plaintext > 0 || self.start < self.incoming.len()
    }

    /// The TCP stream underneath (socket options, readiness).
    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Give rustls ciphertext already read; true when that made progress (a record was
    /// processed). Stops at the first record that yields plaintext, so rustls never holds
    /// more than its receive limit.
    fn feed(&mut self) -> io::Result<bool> {
        let fed = feed_ciphertext(&mut self.tls, &self.incoming, &mut self.start)?;
        if let Some(plaintext) = fed {
            self.plaintext = plaintext;
        }
        Ok(fed.is_some())
    }

    /// Read ciphertext from the socket and hand it to rustls; the bytes read (0: the peer
    /// closed, which rustls is told).
    async fn read_socket(&mut self, cancel: Option<CancelHandle>) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.incoming);
        buf.clear();
        buf.reserve(CIPHERTEXT_READ_BYTES);
        let (res, buf) = match cancel {
            Some(c) => self.tcp.cancelable_read(buf, c).await,
            None => self.tcp.read(buf).await,
        };
        self.incoming = buf;
        self.start = 0;
        let n = res?;
        if n == 0 {
            self.eof = true;
            self.tls.read_tls(&mut io::empty())?;
            let state = self.tls.process_new_packets().map_err(io::Error::other)?;
            self.plaintext = state.plaintext_bytes_to_read();
            return Ok(0);
        }
        // A protocol error queues an alert for the peer: send it, then fail.
        if let Err(e) = self.feed() {
            let _ = self.flush().await;
            return Err(e);
        }
        Ok(n)
    }

    /// Write out whatever rustls has queued (handshake messages, records, alerts).
    pub async fn flush(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            let mut out = std::mem::take(&mut self.outgoing);
            out.clear();
            while self.tls.wants_write() {
                if self.tls.write_tls(&mut out)? == 0 {
                    break;
                }
            }
            if out.is_empty() {
                // Nothing to send after all (a failed session may still "want" to).
                self.outgoing = out;
                return Ok(());
            }
            let (res, out) = self.tcp.write_all(out).await;
            self.outgoing = out;
            res?;
        }
        Ok(())
    }

    /// Read decrypted bytes into `buf`'s spare capacity (it must have some); 0 at the end
    /// of the stream (a close_notify, or the peer closing the socket).
    pub async fn read_into(
        &mut self,
        buf: &mut Vec<u8>,
        cancel: Option<CancelHandle>,
    ) -> io::Result<usize> {
        loop {
            if self.plaintext > 0 || self.eof {
                let len = buf.len();
                buf.resize(buf.capacity(), 0);
                let read = self.tls.reader().read(&mut buf[len..]);
                let n = *read.as_ref().unwrap_or(&0);
                buf.truncate(len + n);
                match read {
                    Ok(n) => {
                        self.plaintext = self.plaintext.saturating_sub(n);
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.plaintext = 0,
                    // The peer closed the socket without a close_notify: the end all the same.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if self.eof {
                    return Ok(0);
                }
            }
            if self.feed()? {
                self.flush().await?;
                continue;
            }
            self.read_socket(cancel.clone()).await?;
            // Key updates and the like need an answer.
            self.flush().await?;
        }
    }

    /// Encrypt and send all of `bytes`.
    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let mut stuck = false;
        while !bytes.is_empty() {
            let n = self.tls.writer().write(bytes)?;
            bytes = &bytes[n..];
            // rustls takes nothing while its send buffer is full; the flush empties it,
            // so a second refusal in a row means it never will.
            if n == 0 && std::mem::replace(&mut stuck, true) {
                return Err(io::ErrorKind::WriteZero.into());
            }
            stuck &= n == 0;
            self.flush().await?;
        }
        Ok(())
    }

    /// Send a close_notify and give back the socket (`None` when it could not be sent).
    pub async fn close_notify(mut self: Box<Self>) -> Option<TcpStream> {
        self.tls.send_close_notify();
        self.flush().await.ok()?;
        Some(self.tcp)
    }

    /// Send a close_notify, then close the writing side of the socket.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        use monoio::io::AsyncWriteRent;
        self.tls.send_close_notify();
        self.flush().await?;
        self.tcp.shutdown().await
    }
}

/// The workload identity in a verified peer certificate chain, for `x-coremesh-client-id`
/// and the outbound identity check: the leaf certificate's URI SAN when it has exactly one
/// (as a SPIFFE X.509-SVID has), else none.
///
/// The one place the request path asks for an identity: the identity module's SPIFFE rules
/// replace the body of this function.
pub fn client_identity(certs: &[CertificateDer<'_>]) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let leaf = certs.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) => Some(*uri),
        _ => None,
    });
    let uri = uris.next()?;
    // Exactly one, and only bytes that may appear in a header value as they are.
    (uris.next().is_none() && !uri.is_empty() && uri.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| uri.to_string())
}

/// Give `tls` the ciphertext of `incoming[*start..]`, moving `start` past what it took,
/// until a record yields plaintext (so rustls never holds more than its receive limit).
/// The plaintext bytes then ready, or `None` when no record was taken.
pub(super) fn feed_ciphertext(
    tls: &mut rustls::Connection,
    incoming: &[u8],
    start: &mut usize,
) -> io::Result<Option<usize>> {
    let mut plaintext = None;
    while *start < incoming.len() {
        let mut rest = &incoming[*start..];
        let n = tls.read_tls(&mut rest)?;
        if n == 0 {
            break;
        }
        *start += n;
        let state = tls.process_new_packets().map_err(io::Error::other)?;
        let ready = state.plaintext_bytes_to_read();
        plaintext = Some(ready);
        if ready > 0 {
            break;
        }
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests;
