//! Buffered reading of HTTP/1.1 wire pieces (heads, fixed-length bodies, chunked bodies with
//! trailers, read-to-close) shared by the test client and the programmable upstream.
//!
//! Every read keeps the raw bytes it consumed, so tests can see exactly what crossed the wire.

use std::fmt;
use std::io::{self, Read};

/// Largest head either side of the harness accepts (it is a test tool, not a limit under test).
pub const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// Largest chunk-size / trailer line accepted.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// What went wrong while reading from the peer.
#[derive(Debug)]
pub enum WireError {
    /// The socket failed (includes read time-outs: `WouldBlock` / `TimedOut`).
    Io(io::Error),
    /// The peer closed the connection; `consumed` bytes of the current message had arrived.
    Closed {
        consumed: usize,
        while_reading: &'static str,
    },
    /// The bytes do not form valid HTTP/1.1.
    Malformed(String),
}

impl WireError {
    /// True when the peer closed before sending a single byte of the message being read.
    pub fn is_clean_close(&self) -> bool {
        matches!(self, WireError::Closed { consumed: 0, .. })
    }
    /// True for a read that timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, WireError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "read timed out: {e}")
            }
            WireError::Io(e) => write!(f, "i/o error: {e}"),
            WireError::Closed {
                consumed,
                while_reading,
            } => {
                write!(f, "peer closed the connection after {consumed} bytes while reading {while_reading}")
            }
            WireError::Malformed(why) => write!(f, "malformed HTTP: {why}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// A header field as received: name as sent (case kept), value as raw bytes.
pub type Header = (String, Vec<u8>);

/// A decoded chunked body.
#[derive(Debug, Clone, Default)]
pub struct ChunkedBody {
    pub body: Vec<u8>,
    pub trailers: Vec<Header>,
    /// The body exactly as framed on the wire (sizes, extensions, CRLFs, trailers).
    pub raw: Vec<u8>,
}

/// A reader that buffers what it read past the end of the current message.
pub struct WireReader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
    /// Bytes taken from the socket so far (all messages).
    total_read: u64,
}

impl<R: Read> WireReader<R> {
    pub fn new(inner: R) -> Self {
        WireReader {
            inner,
            buf: Vec::new(),
            pos: 0,
            total_read: 0,
        }
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Bytes read from the socket so far, buffered or consumed.
    pub fn total_read(&self) -> u64 {
        self.total_read
    }

    /// Bytes read from the socket but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Take every buffered byte (e.g. the first tunnelled bytes after a 101).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let out = self.buf[self.pos..].to_vec();
        self.buf.clear();
        self.pos = 0;
        out
    }

    /// Read once from the socket into the buffer; returns the bytes added (0 = end of stream).
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let result = loop {
            // A signal delivered to this thread (the proxy under test shares the process)
            // interrupts a blocking read; that is not the peer's doing, so read again.
            match self.inner.read(&mut self.buf[old..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match result {
            Ok(n) => {
                self.buf.truncate(old + n);
                self.total_read += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.buf.truncate(old);
                Err(e)
            }
        }
    }

    /// Add bytes to the buffer as if they had been read (used after a non-blocking peek).
    pub fn push_buffered(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.total_read += bytes.len() as u64;
    }

    fn consume(&mut self, n: usize) -> Vec<u8> {
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        out
    }

    /// Read a head up to and including the blank line. `Ok(None)` when the peer closed before
    /// sending any byte of it (a clean end of a keep-alive connection).
    pub fn read_head(&mut self, what: &'static str) -> Result<Option<Vec<u8>>, WireError> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.pos..];
            let from = scanned.saturating_sub(3);
            if let Some(i) = find(&avail[from..], b"\r\n\r\n") {
                let end = from + i + 4;
                return Ok(Some(self.consume(end)));
            }
            scanned = avail.len();
            if scanned > MAX_HEAD_BYTES {
                return Err(WireError::Malformed(format!(
                    "{what} longer than {MAX_HEAD_BYTES} bytes"
                )));
            }
            if self.fill()? == 0 {
                let consumed = self.buf.len() - self.pos;
                if consumed == 0 {
                    return Ok(None);
                }
                return Err(WireError::Closed {
                    consumed,
                    while_reading: what,
                });
            }
        }
    }

    /// Read exactly `n` bytes.
    pub fn read_exact_vec(&mut self, n: usize, what: &'static str) -> Result<Vec<u8>, WireError> {
        while self.buf.len() - self.pos < n {
            if self.fill()? == 0 {
                return Err(WireError::Closed {
                    consumed: self.buf.len() - self.pos,
                    while_reading: what,
                });
            }
        }
        Ok(self.consume(n))
    }

    /// Read one line including its CRLF.
    pub fn read_line(&mut self, what: &'static str) -> Result<Vec<u8>, WireError> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                return Ok(self.consume(i + 2));
            }
            if self.buf.len() - self.pos > MAX_LINE_BYTES {
                return Err(WireError::Malformed(format!(
                    "{what}: line longer than {MAX_LINE_BYTES} bytes"
                )));
            }
            if self.fill()? == 0 {
                return Err(WireError::Closed {
                    consumed: self.buf.len() - self.pos,
                    while_reading: what,
                });
            }
        }
    }

    /// Read a chunked body (RFC 9112 §7.1), its trailers and the final CRLF.
    pub fn read_chunked(&mut self) -> Result<ChunkedBody, WireError> {
        let mut out = ChunkedBody::default();
        loop {
            let line = self.read_line("a chunk-size line")?;
            out.raw.extend_from_slice(&line);
            let size = parse_chunk_size(&line[..line.len() - 2])?;
            if size == 0 {
                break;
            }
            let size = usize::try_from(size)
                .map_err(|_| WireError::Malformed(format!("chunk size {size} too large")))?;
            let data = self.read_exact_vec(size, "chunk data")?;
            out.raw.extend_from_slice(&data);
            out.body.extend_from_slice(&data);
            let crlf = self.read_exact_vec(2, "the CRLF after chunk data")?;
            out.raw.extend_from_slice(&crlf);
            if crlf != b"\r\n" {
                return Err(WireError::Malformed(format!(
                    "chunk data not followed by CRLF but {crlf:?}"
                )));
            }
        }
        loop {
            let line = self.read_line("a trailer line")?;
            out.raw.extend_from_slice(&line);
            if line == b"\r\n" {
                return Ok(out);
            }
            out.trailers
                .push(parse_field_line(&line[..line.len() - 2])?);
        }
    }

    /// Read until the peer closes (a close-delimited body).
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, WireError> {
        while self.fill()? != 0 {}
        let n = self.buf.len() - self.pos;
        Ok(self.consume(n))
    }
}

/// Parse a chunk-size line without its CRLF: hex digits, optionally `;extensions`.
pub fn parse_chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits_end..];
    let rest_ok = rest.is_empty() || rest[0] == b';' || rest[0] == b' ' || rest[0] == b'\t';
    if digits_end == 0 || !rest_ok || digits_end > 16 {
        return Err(WireError::Malformed(format!(
            "invalid chunk-size line {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    let text = std::str::from_utf8(&line[..digits_end])
        .map_err(|e| WireError::Malformed(e.to_string()))?;
    u64::from_str_radix(text, 16)
        .map_err(|e| WireError::Malformed(format!("chunk size {text:?}: {e}")))
}

/// Parse `name: value` (no CRLF) into a header; rejects a missing colon or an empty name.
pub fn parse_field_line(line: &[u8]) -> Result<Header, WireError> {
    let colon = line.iter().position(|&b| b == b':').ok_or_else(|| {
        WireError::Malformed(format!(
            "field line without colon: {:?}",
            String::from_utf8_lossy(line)
        ))
    })?;
    let name = std::str::from_utf8(&line[..colon])
        .map_err(|_| WireError::Malformed("field name is not UTF-8".into()))?;
    if name.is_empty() || name.bytes().any(|b| b == b' ' || b == b'\t') {
        return Err(WireError::Malformed(format!("invalid field name {name:?}")));
    }
    let value = trim_ows(&line[colon + 1..]).to_vec();
    Ok((name.to_string(), value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Position of `needle` in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Values of every header named `name` (case-insensitive), in order.
pub fn header_values<'a>(
    headers: &'a [Header],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The comma-separated tokens of every header named `name`, lower-cased.
pub fn header_tokens(headers: &[Header], name: &str) -> Vec<String> {
    header_values(headers, name)
        .flat_map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|t| t.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|t| !t.is_empty())
        .collect()
}

/// Copy httparse's parsed headers into owned pairs.
pub fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<Header> {
    headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_head_then_chunked_body_with_trailers() {
        let wire = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\nNEXT".to_vec();
        let mut r = WireReader::new(&wire[..]);
        let head = r.read_head("head").unwrap().unwrap();
        assert!(head.ends_with(b"\r\n\r\n"));
        let body = r.read_chunked().unwrap();
        assert_eq!(body.body, b"hello!");
        assert_eq!(body.trailers, vec![("x-t".to_string(), b"1".to_vec())]);
        assert_eq!(r.buffered(), b"NEXT");
        assert_eq!(
            body.raw,
            b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nx-t: 1\r\n\r\n"
        );
    }

    #[test]
    fn clean_close_and_truncated_head_are_told_apart() {
        let mut empty = WireReader::new(&b""[..]);
        assert!(empty.read_head("head").unwrap().is_none());
        let mut cut = WireReader::new(&b"GET / HTTP/1.1\r\n"[..]);
        assert!(matches!(
            cut.read_head("head"),
            Err(WireError::Closed { consumed: 16, .. })
        ));
    }

    #[test]
    fn chunk_size_must_be_hex() {
        assert_eq!(parse_chunk_size(b"1A").unwrap(), 26);
        assert!(parse_chunk_size(b"zz").is_err());
        assert!(parse_chunk_size(b"").is_err());
        assert!(parse_chunk_size(b"-1").is_err());
    }
}
