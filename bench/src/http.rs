//! The little HTTP/1.1 the bench needs on both sides: how a response or request body is
//! framed, an incremental chunked-body scanner, and the head parsing that the load
//! generator (responses) and the built-in upstream (requests) share.

/// The header naming the upstream that answered (set by the built-in upstream and relayed
/// by every proxy), so the generator can keep one latency histogram per upstream.
pub const UPSTREAM_HEADER: &str = "x-upstream";
/// Most header fields read in one head.
pub const MAX_HEADERS: usize = 64;
/// Largest head accepted; a larger one is an error (the bench only talks to its own
/// upstream and to proxies relaying it, whose heads are small).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
    /// Until the peer closes the connection (responses only).
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub head_len: usize,
    pub framing: BodyFraming,
    /// The connection must not be reused after this response.
    pub close: bool,
    /// Byte range of the [`UPSTREAM_HEADER`] value in the parsed data, when present.
    pub upstream: Option<(usize, usize)>,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub head_len: usize,
    pub path: String,
    pub framing: BodyFraming,
    pub close: bool,
    pub is_head: bool,
}

/// Outcome of parsing a head from the bytes read so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parse<T> {
    Complete(T),
    Partial,
    Invalid(&'static str),
}

struct Common {
    framing: Option<BodyFraming>,
    close: bool,
    keep_alive: bool,
}

fn scan_headers(headers: &[httparse::Header<'_>]) -> Result<Common, &'static str> {
    let mut common = Common {
        framing: None,
        close: false,
        keep_alive: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            let text = std::str::from_utf8(h.value).map_err(|_| "bad content-length")?;
            let n: u64 = text.trim().parse().map_err(|_| "bad content-length")?;
            if matches!(common.framing, Some(BodyFraming::Length(m)) if m != n) {
                return Err("conflicting content-length");
            }
            if common.framing != Some(BodyFraming::Chunked) {
                common.framing = Some(BodyFraming::Length(n));
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let chunked = h
                .value
                .split(|&b| b == b',')
                .next_back()
                .map(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
                .unwrap_or(false);
            if !chunked {
                return Err("transfer-encoding without chunked last");
            }
            common.framing = Some(BodyFraming::Chunked);
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    common.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    common.keep_alive = true;
                }
            }
        }
    }
    Ok(common)
}

/// Parse a response head; `head_request` says whether it answers a HEAD (no body then).
pub fn parse_response(data: &[u8], head_request: bool) -> Parse<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(data) {
        Ok(httparse::Status::Partial) => {
            if data.len() > MAX_HEAD_BYTES {
                Parse::Invalid("response head too large")
            } else {
                Parse::Partial
            }
        }
        Err(_) => Parse::Invalid("malformed response head"),
        Ok(httparse::Status::Complete(head_len)) => {
            let status = response.code.unwrap_or(0);
            let http10 = response.version == Some(0);
            let common = match scan_headers(response.headers) {
                Ok(c) => c,
                Err(e) => return Parse::Invalid(e),
            };
            let no_body = head_request || status / 100 == 1 || status == 204 || status == 304;
            let framing = if no_body {
                BodyFraming::None
            } else {
                common.framing.unwrap_or(BodyFraming::UntilClose)
            };
            let close = common.close
                || (http10 && !common.keep_alive)
                || framing == BodyFraming::UntilClose;
            let base = data.as_ptr() as usize;
            let upstream = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(UPSTREAM_HEADER))
                .map(|h| {
                    // httparse hands out slices of `data`: the value's offset is where it sits.
                    let start = (h.value.as_ptr() as usize).saturating_sub(base);
                    (start, start + h.value.len())
                })
                .filter(|&(start, end)| end <= head_len && start <= end);
            Parse::Complete(ResponseHead {
                status,
                head_len,
                framing,
                close,
                upstream,
            })
        }
    }
}

/// Parse a request head.
pub fn parse_request(data: &[u8]) -> Parse<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(data) {
        Ok(httparse::Status::Partial) => {
            if data.len() > MAX_HEAD_BYTES {
                Parse::Invalid("request head too large")
            } else {
                Parse::Partial
            }
        }
        Err(_) => Parse::Invalid("malformed request head"),
        Ok(httparse::Status::Complete(head_len)) => {
            let http10 = request.version == Some(0);
            let common = match scan_headers(request.headers) {
                Ok(c) => c,
                Err(e) => return Parse::Invalid(e),
            };
            Parse::Complete(RequestHead {
                head_len,
                path: request.path.unwrap_or("/").to_string(),
                framing: common.framing.unwrap_or(BodyFraming::None),
                close: common.close || (http10 && !common.keep_alive),
                is_head: request.method == Some("HEAD"),
            })
        }
    }
}

/// Incremental scanner of a chunked body: feed it bytes as they arrive; it says how many
/// belong to the body and when the body (with its trailers) has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkScanner {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size { value: u64, digits: u8 },
    Extension { value: u64 },
    SizeLf { value: u64 },
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    FinalLf,
    Done,
}

/// What one call to [`ChunkScanner::scan`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    pub consumed: usize,
    pub done: bool,
}

impl Default for ChunkScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkScanner {
    pub fn new() -> ChunkScanner {
        ChunkScanner {
            state: ChunkState::Size {
                value: 0,
                digits: 0,
            },
        }
    }

    /// Scan `data`; stops at the end of the body (later bytes are not consumed).
    pub fn scan(&mut self, data: &[u8]) -> Result<Scanned, &'static str> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            self.state = match self.state {
                ChunkState::Done => break,
                ChunkState::Size { value, digits } => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if digits >= 15 {
                            return Err("chunk size too large");
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
                        ChunkState::Size {
                            value: value * 16 + d,
                            digits: digits + 1,
                        }
                    }
                    b';' | b' ' | b'\t' if digits > 0 => ChunkState::Extension { value },
                    b'\r' if digits > 0 => ChunkState::SizeLf { value },
                    _ => return Err("bad chunk size"),
                },
                ChunkState::Extension { value } => match b {
                    b'\r' => ChunkState::SizeLf { value },
                    b'\n' => return Err("bare LF in chunk extension"),
                    _ => ChunkState::Extension { value },
                },
                ChunkState::SizeLf { value } => match b {
                    b'\n' if value == 0 => ChunkState::TrailerStart,
                    b'\n' => ChunkState::Data(value),
                    _ => return Err("chunk size line without LF"),
                },
                ChunkState::Data(left) => {
                    let take = (data.len() - i).min(left.min(usize::MAX as u64) as usize);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data(left)
                    };
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => ChunkState::DataLf,
                    _ => return Err("chunk data not followed by CRLF"),
                },
                ChunkState::DataLf => match b {
                    b'\n' => ChunkState::Size {
                        value: 0,
                        digits: 0,
                    },
                    _ => return Err("chunk data not followed by CRLF"),
                },
                ChunkState::TrailerStart => match b {
                    b'\r' => ChunkState::FinalLf,
                    b'\n' => return Err("bare LF in trailers"),
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::TrailerLine => match b {
                    b'\n' => ChunkState::TrailerStart,
                    _ => ChunkState::TrailerLine,
                },
                ChunkState::FinalLf => match b {
                    b'\n' => ChunkState::Done,
                    _ => return Err("trailers not ended by CRLF"),
                },
            };
            i += 1;
            if self.state == ChunkState::Done {
                break;
            }
        }
        Ok(Scanned {
            consumed: i,
            done: self.state == ChunkState::Done,
        })
    }
}

/// A GET request head, ready to write.
pub fn get_request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: coremesh-bench\r\n\r\n")
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_framings() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_response(r, false),
            Parse::Complete(ResponseHead {
                status: 200,
                head_len: 38,
                framing: BodyFraming::Length(5),
                close: false,
                upstream: None,
            })
        );
        let r = b"HTTP/1.1 503 No\r\nX-Upstream: u2-slow\r\nContent-Length: 0\r\n\r\n";
        match parse_response(r, false) {
            Parse::Complete(h) => {
                let (a, b) = h.upstream.expect("tagged");
                assert_eq!(&r[a..b], b"u2-slow");
            }
            other => panic!("{other:?}"),
        }
        let r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        match parse_response(r, false) {
            Parse::Complete(h) => {
                assert_eq!(h.framing, BodyFraming::Chunked);
                assert!(h.close);
            }
            other => panic!("{other:?}"),
        }
        let r = b"HTTP/1.0 200 OK\r\n\r\n";
        match parse_response(r, false) {
            Parse::Complete(h) => {
                assert_eq!(h.framing, BodyFraming::UntilClose);
                assert!(h.close);
            }
            other => panic!("{other:?}"),
        }
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        match parse_response(r, false) {
            Parse::Complete(h) => assert_eq!(h.framing, BodyFraming::None),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n", false),
            Parse::Partial
        );
        assert!(matches!(
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false),
            Parse::Invalid(_)
        ));
    }

    #[test]
    fn request_heads() {
        let r = b"GET /a?b HTTP/1.1\r\nHost: x\r\n\r\n";
        match parse_request(r) {
            Parse::Complete(h) => {
                assert_eq!(h.path, "/a?b");
                assert_eq!(h.framing, BodyFraming::None);
                assert!(!h.close);
                assert_eq!(h.head_len, r.len());
            }
            other => panic!("{other:?}"),
        }
        match parse_request(b"HEAD / HTTP/1.0\r\n\r\n") {
            Parse::Complete(h) => {
                assert!(h.close);
                assert!(h.is_head);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chunked_scanner_byte_by_byte_and_whole() {
        let body = b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut whole = ChunkScanner::new();
        let s = whole.scan(body).expect("valid");
        assert!(s.done);
        assert_eq!(s.consumed, body.len() - 4);
        let mut bytewise = ChunkScanner::new();
        let mut consumed = 0;
        for (i, b) in body.iter().enumerate() {
            let s = bytewise.scan(std::slice::from_ref(b)).expect("valid");
            consumed += s.consumed;
            if s.done {
                assert_eq!(i + 1, body.len() - 4);
                break;
            }
        }
        assert_eq!(consumed, body.len() - 4);
        assert!(ChunkScanner::new().scan(b"zz\r\n").is_err());
    }
}
