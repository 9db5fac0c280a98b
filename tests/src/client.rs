//! A raw HTTP/1.1 client on std::net for end-to-end tests: send exact bytes, read responses
//! (Content-Length, chunked with trailers, close-delimited, 1xx interim, no-body statuses),
//! and tell whether the peer closed the connection. Every read has a time-out, so a test that
//! waits for a response never hangs.

use crate::wire::{header_tokens, header_values, owned_headers, Header, WireError, WireReader};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Read and write time-out of a new client: generous, it only bounds a broken test.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most header fields parsed in one response head.
const MAX_RESPONSE_HEADERS: usize = 256;

/// How the body of a response was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// HEAD, 1xx, 101, 204, 304.
    NoBody,
    ContentLength(u64),
    Chunked,
    /// Read until the server closed.
    CloseDelimited,
}

/// A response as read off the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub reason: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    pub headers: Vec<Header>,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<Header>,
    /// The final response's head as received, through the blank line.
    pub raw_head: Vec<u8>,
    /// 1xx interim responses (other than 101) received before this one, in order.
    pub interim: Vec<RawResponse>,
    pub framing: BodyFraming,
}

impl RawResponse {
    /// The first value of header `name` (case-insensitive), lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        header_values(&self.headers, name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        header_values(&self.headers, name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect()
    }
    pub fn has_header(&self, name: &str) -> bool {
        header_values(&self.headers, name).next().is_some()
    }
    /// Lower-cased comma-separated tokens of every `name` header.
    pub fn header_tokens(&self, name: &str) -> Vec<String> {
        header_tokens(&self.headers, name)
    }
    /// The first value of trailer `name` (case-insensitive).
    pub fn trailer(&self, name: &str) -> Option<String> {
        header_values(&self.trailers, name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    /// Whether the response carries `Connection: close`.
    pub fn has_connection_close(&self) -> bool {
        self.header_tokens("connection")
            .iter()
            .any(|t| t == "close")
    }
    /// The body, lossily as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection.
pub struct Client {
    reader: WireReader<TcpStream>,
}

impl Client {
    /// Connect with [`DEFAULT_IO_TIMEOUT`] for connect, reads and writes.
    pub fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect_timeout(&addr, DEFAULT_IO_TIMEOUT)?;
        stream.set_read_timeout(Some(DEFAULT_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: WireReader::new(stream),
        })
    }

    /// Connect from `source` (a local address to bind first), with the same timeouts as
    /// [`Client::connect`].
    pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> io::Result<Client> {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&addr.into(), DEFAULT_IO_TIMEOUT)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(DEFAULT_IO_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            reader: WireReader::new(stream),
        })
    }

    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    pub fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream().set_read_timeout(Some(timeout))
    }

    /// Write `bytes` exactly as given.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut stream = self.reader.get_ref();
        stream.write_all(bytes)?;
        stream.flush()
    }

    /// Send a request built by [`build_request`].
    pub fn send_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> io::Result<()> {
        self.send_raw(&build_request(method, path, headers, body))
    }

    /// Read one final response, collecting 1xx interim responses (101 is final).
    /// `method_was_head`: the request was HEAD, so the response has no body whatever it says.
    pub fn read_response(&mut self, method_was_head: bool) -> Result<RawResponse, WireError> {
        let mut interim = Vec::new();
        loop {
            let mut response = self.read_head_only()?;
            if (100..200).contains(&response.status) && response.status != 101 {
                interim.push(response);
                continue;
            }
            response.interim = interim;
            self.read_body(&mut response, method_was_head)?;
            return Ok(response);
        }
    }

    /// Read one response head and no body (e.g. a `100 Continue`).
    pub fn read_head_only(&mut self) -> Result<RawResponse, WireError> {
        let Some(head) = self.reader.read_head("a response head")? else {
            return Err(WireError::Closed {
                consumed: 0,
                while_reading: "a response head",
            });
        };
        let mut header_buf = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut parsed = httparse::Response::new(&mut header_buf);
        match parsed.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            Ok(httparse::Status::Partial) => {
                return Err(WireError::Malformed("incomplete response head".into()))
            }
            Err(e) => {
                return Err(WireError::Malformed(format!(
                    "response head: {e}: {:?}",
                    String::from_utf8_lossy(&head)
                )))
            }
        }
        Ok(RawResponse {
            status: parsed.code.unwrap_or_default(),
            reason: parsed.reason.unwrap_or_default().to_string(),
            version: format!("HTTP/1.{}", parsed.version.unwrap_or(1)),
            headers: owned_headers(parsed.headers),
            body: Vec::new(),
            trailers: Vec::new(),
            raw_head: head.clone(),
            interim: Vec::new(),
            framing: BodyFraming::NoBody,
        })
    }

    /// Read the body of `response`, whose head [`read_head_only`](Self::read_head_only)
    /// returned (so a caller can tell a response cut short from one that never came).
    pub fn read_body(
        &mut self,
        response: &mut RawResponse,
        method_was_head: bool,
    ) -> Result<(), WireError> {
        let status = response.status;
        if method_was_head || (100..200).contains(&status) || status == 204 || status == 304 {
            response.framing = BodyFraming::NoBody;
            return Ok(());
        }
        let te = response.header_tokens("transfer-encoding");
        if te.last().map(String::as_str) == Some("chunked") {
            let chunked = self.reader.read_chunked()?;
            response.body = chunked.body;
            response.trailers = chunked.trailers;
            response.framing = BodyFraming::Chunked;
            return Ok(());
        }
        if te.is_empty() {
            let lengths = response.header_all("content-length");
            if let Some(first) = lengths.first() {
                if lengths.iter().any(|l| l.trim() != first.trim()) {
                    return Err(WireError::Malformed(format!(
                        "differing content-lengths {lengths:?}"
                    )));
                }
                let n: u64 = first.trim().parse().map_err(|_| {
                    WireError::Malformed(format!("invalid content-length {first:?}"))
                })?;
                let len = usize::try_from(n)
                    .map_err(|_| WireError::Malformed(format!("content-length {n} too large")))?;
                response.body = self.reader.read_exact_vec(len, "a response body")?;
                response.framing = BodyFraming::ContentLength(n);
                return Ok(());
            }
        }
        response.body = self.reader.read_to_close()?;
        response.framing = BodyFraming::CloseDelimited;
        Ok(())
    }

    /// Read exactly `n` bytes (after an upgrade: tunnelled bytes), buffered ones first.
    pub fn read_exact_raw(&mut self, n: usize) -> Result<Vec<u8>, WireError> {
        self.reader.read_exact_vec(n, "raw bytes")
    }

    /// Wait (up to the read time-out) for the peer to close: true when a read returns end of
    /// stream or the connection was reset; false when bytes arrive (kept for the next read) or
    /// the wait times out.
    pub fn is_closed_by_peer(&mut self) -> bool {
        if !self.reader.buffered().is_empty() {
            return false;
        }
        match self.reader.fill() {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => is_reset(&e),
        }
    }

    /// Without waiting: has the peer already closed (end of stream or reset)? Bytes that are
    /// already there are kept for the next read.
    pub fn peer_closed_now(&mut self) -> bool {
        if !self.reader.buffered().is_empty() {
            return false;
        }
        let stream = self.reader.get_ref();
        if stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut buf = [0u8; 16 * 1024];
        let result = self.reader.get_mut().read(&mut buf);
        let _ = self.reader.get_ref().set_nonblocking(false);
        match result {
            Ok(0) => true,
            Ok(n) => {
                self.reader.push_buffered(&buf[..n]);
                false
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => is_reset(&e),
        }
    }

    /// Bytes received but not yet read as part of a response (after a complete response:
    /// bytes the peer sent that no request asked for).
    pub fn buffered_len(&self) -> usize {
        self.reader.buffered().len()
    }

    /// Half-close: tell the peer this side sends no more.
    pub fn shutdown_write(&self) -> io::Result<()> {
        self.stream().shutdown(Shutdown::Write)
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
    )
}

/// Bytes of a request: `Host: localhost` unless a Host header is given, and `Content-Length`
/// when there is a body and neither Content-Length nor Transfer-Encoding is given (a given
/// Transfer-Encoding means `body` is already framed).
pub fn build_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !has("host") {
        out.extend_from_slice(b"Host: localhost\r\n");
    }
    for (n, v) in headers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    if let Some(body) = body {
        out.extend_from_slice(body);
    }
    out
}

/// Frame `body` as chunks of at most `chunk` bytes, with `trailers`.
pub fn chunked_body(body: &[u8], chunk: usize, trailers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    for piece in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for (n, v) in trailers {
        out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// One GET on a new connection.
pub fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<RawResponse, WireError> {
    request(addr, "GET", path, headers, None)
}

/// One request on a new connection.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<RawResponse, WireError> {
    let mut client = Client::connect(addr)?;
    client.send_request(method, path, headers, body)?;
    client.read_response(method.eq_ignore_ascii_case("HEAD"))
}
