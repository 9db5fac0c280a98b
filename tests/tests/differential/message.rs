//! Reading HTTP/1 messages out of captured bytes, for the differential test: the same
//! function tells the scripted upstream when a request is complete, tells the client when a
//! response is complete, and splits a whole capture into messages for comparison. It accepts
//! what a lenient recipient would (bare-LF heads, chunk extensions, upper-case hex, leading
//! zeros, a list of identical Content-Length values) and reports anything else as invalid,
//! so the rendering can show the raw bytes instead.

/// A field line as httparse split it: name and value bytes (value without surrounding OWS).
pub type Field = (Vec<u8>, Vec<u8>);

/// How a body was delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closed the connection.
    Close,
}

/// One message read from a capture.
#[derive(Debug, Clone)]
pub struct Message {
    /// The request line or status line, without its line end.
    pub start_line: Vec<u8>,
    pub fields: Vec<Field>,
    pub framing: Framing,
    /// The body with chunked framing removed.
    pub body: Vec<u8>,
    /// For a chunked body: the framing as received (sizes, extensions, trailer section).
    pub chunked_raw: Vec<u8>,
    pub trailers: Vec<Field>,
    /// Response status code (0 for requests).
    pub status: u16,
    /// Request method (empty for responses).
    pub method: Vec<u8>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
}

impl Message {
    /// Values of field `name` (case-insensitive), in order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v.as_slice())
    }

    /// Lower-cased comma-separated tokens of every `name` field.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.values(name)
            .flat_map(|v| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_ascii_lowercase())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// An interim (1xx other than 101) response.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Outcome of reading one message from the start of a buffer.
#[derive(Debug)]
pub enum Read {
    /// More bytes are needed (or, for a close-delimited body, the end of the stream).
    Incomplete,
    /// A message and the bytes it took.
    Complete(Message, usize),
    /// These bytes are not a message this reader accepts.
    Invalid(String),
}

const MAX_FIELDS: usize = 256;

/// Read a request from the start of `buf`.
pub fn read_request(buf: &[u8]) -> Read {
    let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut slots);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Read::Incomplete,
        Err(e) => return Read::Invalid(format!("request head: {e}")),
    };
    let mut m = new_message(buf, head_len, req.headers);
    m.method = req.method.unwrap_or_default().as_bytes().to_vec();
    m.minor_version = req.version.unwrap_or(1);
    let te = m.tokens("transfer-encoding");
    m.framing = if !te.is_empty() {
        if te.last().map(String::as_str) != Some("chunked") {
            return Read::Invalid(format!("request transfer-encoding {te:?}"));
        }
        Framing::Chunked
    } else {
        match content_length(&m) {
            Err(e) => return Read::Invalid(e),
            Ok(Some(n)) if n > 0 => Framing::Length(n),
            Ok(_) => Framing::None,
        }
    };
    read_body(buf, head_len, m, false)
}

/// Read a response from the start of `buf`; `head_request`: it answers a HEAD request;
/// `eof`: the sender has closed (ends a close-delimited body).
pub fn read_response(buf: &[u8], head_request: bool, eof: bool) -> Read {
    let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut res = httparse::Response::new(&mut slots);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Read::Incomplete,
        Err(e) => return Read::Invalid(format!("response head: {e}")),
    };
    let mut m = new_message(buf, head_len, res.headers);
    m.status = res.code.unwrap_or_default();
    m.minor_version = res.version.unwrap_or(1);
    let te = m.tokens("transfer-encoding");
    let no_body = head_request || (100..200).contains(&m.status) || matches!(m.status, 204 | 304);
    m.framing = if no_body {
        Framing::None
    } else if te.last().map(String::as_str) == Some("chunked") {
        Framing::Chunked
    } else if !te.is_empty() {
        Framing::Close
    } else {
        match content_length(&m) {
            Err(e) => return Read::Invalid(e),
            Ok(Some(0)) => Framing::None,
            Ok(Some(n)) => Framing::Length(n),
            Ok(None) => Framing::Close,
        }
    };
    read_body(buf, head_len, m, eof)
}

fn new_message(buf: &[u8], head_len: usize, fields: &[httparse::Header<'_>]) -> Message {
    let line_end = buf[..head_len]
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(head_len);
    let start_line = buf[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&buf[..line_end]);
    Message {
        start_line: start_line.to_vec(),
        fields: fields
            .iter()
            .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
            .collect(),
        framing: Framing::None,
        body: Vec::new(),
        chunked_raw: Vec::new(),
        trailers: Vec::new(),
        status: 0,
        method: Vec::new(),
        minor_version: 1,
    }
}

/// The Content-Length, accepting repeated fields and lists when every value is the same.
fn content_length(m: &Message) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for value in m.values("content-length") {
        for item in value.split(|&b| b == b',') {
            let item = String::from_utf8_lossy(item).trim().to_string();
            let n: u64 = item
                .parse()
                .map_err(|_| format!("content-length {item:?}"))?;
            if found.is_some_and(|f| f != n) {
                return Err(format!("differing content-lengths {found:?} and {n}"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn read_body(buf: &[u8], head_len: usize, mut m: Message, eof: bool) -> Read {
    let rest = &buf[head_len..];
    match m.framing {
        Framing::None => Read::Complete(m, head_len),
        Framing::Length(n) => {
            let Ok(n) = usize::try_from(n) else {
                return Read::Invalid(format!("content-length {n} too large"));
            };
            if rest.len() < n {
                return Read::Incomplete;
            }
            m.body = rest[..n].to_vec();
            Read::Complete(m, head_len + n)
        }
        Framing::Close => {
            if !eof {
                return Read::Incomplete;
            }
            m.body = rest.to_vec();
            Read::Complete(m, buf.len())
        }
        Framing::Chunked => match read_chunked(rest, &mut m) {
            Ok(Some(used)) => {
                m.chunked_raw = rest[..used].to_vec();
                Read::Complete(m, head_len + used)
            }
            Ok(None) => Read::Incomplete,
            Err(e) => Read::Invalid(e),
        },
    }
}

/// Decode a chunked body at the start of `buf` into `m`; the bytes it took, or `None` when
/// incomplete.
fn read_chunked(buf: &[u8], m: &mut Message) -> Result<Option<usize>, String> {
    let mut at = 0;
    m.body.clear();
    m.trailers.clear();
    loop {
        let Some(line_len) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + line_len];
        let digits_end = line
            .iter()
            .position(|b| !b.is_ascii_hexdigit())
            .unwrap_or(line.len());
        let size_text = std::str::from_utf8(&line[..digits_end]).unwrap_or("");
        let after = &line[digits_end..];
        if size_text.is_empty() || !(after.is_empty() || after[0] == b';') {
            return Err(format!(
                "chunk-size line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let size = u64::from_str_radix(size_text, 16)
            .ok()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| format!("chunk size {size_text:?}"))?;
        at += line_len + 2;
        if size == 0 {
            break;
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        m.body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
    loop {
        let Some(line_len) = find_crlf(&buf[at..]) else {
            return Ok(None);
        };
        let line = &buf[at..at + line_len];
        at += line_len + 2;
        if line.is_empty() {
            return Ok(Some(at));
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| format!("trailer line {:?}", String::from_utf8_lossy(line)))?;
        let value = line[colon + 1..].trim_ascii().to_vec();
        m.trailers.push((line[..colon].to_vec(), value));
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_with_extensions_trailers_and_upper_case_sizes() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00A;x=1\r\n0123456789\r\n0000\r\nT: v\r\n\r\nNEXT";
        let Read::Complete(m, used) = read_response(wire, false, false) else {
            panic!("complete");
        };
        assert_eq!(m.body, b"0123456789");
        assert_eq!(m.trailers, vec![(b"T".to_vec(), b"v".to_vec())]);
        assert_eq!(&wire[used..], b"NEXT");
    }

    #[test]
    fn close_delimited_waits_for_the_end() {
        let wire = b"HTTP/1.1 200 OK\r\n\r\nabc";
        assert!(matches!(
            read_response(wire, false, false),
            Read::Incomplete
        ));
        let Read::Complete(m, _) = read_response(wire, false, true) else {
            panic!("complete at eof");
        };
        assert_eq!(m.body, b"abc");
    }

    #[test]
    fn bare_lf_head_is_read() {
        let wire = b"HTTP/1.1 204 No Content\nA: b\n\n";
        let Read::Complete(m, used) = read_response(wire, false, false) else {
            panic!("complete");
        };
        assert_eq!(m.start_line, b"HTTP/1.1 204 No Content");
        assert_eq!(used, wire.len());
    }
}
