//! Body framing while streaming: how many of the bytes at hand belong to the current
//! message. Bodies are forwarded as received (chunk framing and trailers included), so the
//! proxy never holds a body whole; the chunked scanner only validates and finds the end.

/// Incremental validator of a chunked body (RFC 9112 §7.1).
#[derive(Debug, Clone, Default)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
    size_digits: u8,
    /// Bytes of the current trailer line (0 means the line is empty so far).
    trailer_line_len: usize,
    /// Payload bytes seen so far (chunk data only: no sizes, extensions, CRLFs, trailers).
    data_bytes: u64,
    /// A bare LF ends a line as CRLF does (responses only, see [`ChunkedScanner::response`]).
    lenient: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum State {
    #[default]
    Size,
    /// Whitespace after the size: only more of it or `;` may follow (RFC 9112 §7.1.1).
    SizeSpace,
    /// A chunk extension (`;name=value`...) up to CR.
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// Trailer section: lines until an empty one.
    Trailer,
    TrailerLf,
    Done,
}

/// What the scanner found in a slice of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scan {
    /// Bytes of the slice that belong to this body.
    pub consumed: usize,
    /// The body's last byte is among them.
    pub done: bool,
}

/// A chunked body that cannot be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

/// Longest chunk-size accepted, in hex digits (16 = u64).
const MAX_SIZE_DIGITS: u8 = 15;
/// Longest chunk extension or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

impl ChunkedScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// A scanner for a response body, where a bare LF ends a chunk line as CRLF does (as
    /// curl and nginx read such answers). Requests stay strict: a client's framing that
    /// two parsers could read differently is how requests are smuggled.
    pub fn response() -> Self {
        ChunkedScanner {
            lenient: true,
            ..Self::default()
        }
    }

    /// The end of a trailer line; true when it was the empty line that ends the body.
    fn end_trailer_line(&mut self, trailers: Option<&mut Vec<u8>>) -> bool {
        if self.trailer_line_len == 0 {
            self.state = State::Done;
            return true;
        }
        if let Some(t) = trailers {
            t.extend_from_slice(b"\r\n");
        }
        self.trailer_line_len = 0;
        self.state = State::Trailer;
        false
    }

    /// The end of a chunk-size line.
    fn end_size_line(&mut self) {
        self.size_digits = 0;
        if self.size == 0 {
            self.state = State::Trailer;
            self.trailer_line_len = 0;
        } else {
            self.state = State::Data;
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes scanned so far: what a body-size limit counts (framing excluded).
    pub fn data_bytes(&self) -> u64 {
        self.data_bytes
    }

    /// Scan `data`, the next bytes of the body.
    pub fn scan(&mut self, data: &[u8]) -> Result<Scan, ChunkError> {
        self.scan_into(data, None, None)
    }

    /// Scan `data` and append the chunk payload (without framing or trailers) to `sink`:
    /// used to turn a chunked body into a close-delimited one for an HTTP/1.0 client.
    pub fn decode(&mut self, data: &[u8], sink: &mut Vec<u8>) -> Result<Scan, ChunkError> {
        self.scan_into(data, Some(sink), None)
    }

    /// [`decode`](Self::decode), and append the trailer section's bytes (its lines with
    /// their CRLFs, without the final empty line) to `trailers`: to carry trailers into
    /// another protocol.
    pub fn decode_with_trailers(
        &mut self,
        data: &[u8],
        sink: &mut Vec<u8>,
        trailers: &mut Vec<u8>,
    ) -> Result<Scan, ChunkError> {
        self.scan_into(data, Some(sink), Some(trailers))
    }

    fn scan_into(
        &mut self,
        data: &[u8],
        mut sink: Option<&mut Vec<u8>>,
        mut trailers: Option<&mut Vec<u8>>,
    ) -> Result<Scan, ChunkError> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.size_digits >= MAX_SIZE_DIGITS {
                            return Err(ChunkError("chunk size too large"));
                        }
                        let digit = (b as char).to_digit(16).unwrap_or(0);
                        self.size = (self.size << 4) | u64::from(digit);
                        self.size_digits += 1;
                    }
                    b';' if self.size_digits > 0 => {
                        self.state = State::Extension;
                        self.trailer_line_len = 0;
                    }
                    b' ' | b'\t' if self.size_digits > 0 => {
                        self.state = State::SizeSpace;
                        self.trailer_line_len = 0;
                    }
                    b'\r' if self.size_digits > 0 => self.state = State::SizeLf,
                    b'\n' if self.size_digits > 0 && self.lenient => self.end_size_line(),
                    _ => return Err(ChunkError("invalid chunk size")),
                },
                State::SizeSpace => match b {
                    b';' => self.state = State::Extension,
                    b' ' | b'\t' => {
                        self.trailer_line_len += 1;
                        if self.trailer_line_len > MAX_LINE {
                            return Err(ChunkError("chunk extension too long"));
                        }
                    }
                    _ => {
                        return Err(ChunkError(
                            "whitespace after a chunk size not followed by ';'",
                        ))
                    }
                },
                State::Extension => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' if self.lenient => self.end_size_line(),
                    b'\n' => return Err(ChunkError("bare LF in chunk extension")),
                    _ => {
                        self.trailer_line_len += 1;
                        if self.trailer_line_len > MAX_LINE {
                            return Err(ChunkError("chunk extension too long"));
                        }
                    }
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError("missing LF after chunk size"));
                    }
                    self.end_size_line();
                }
                State::Data => {
                    let available = (data.len() - i) as u64;
                    let take = available.min(self.size);
                    if let Some(sink) = sink.as_deref_mut() {
                        sink.extend_from_slice(&data[i..i + take as usize]);
                    }
                    self.size -= take;
                    self.data_bytes += take;
                    i += take as usize;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    b'\n' if self.lenient => self.state = State::Size,
                    _ => return Err(ChunkError("missing CRLF after chunk data")),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("missing CRLF after chunk data"));
                    }
                    self.state = State::Size;
                }
                State::Trailer => match b {
                    b'\r' => self.state = State::TrailerLf,
                    b'\n' if self.lenient => {
                        if self.end_trailer_line(trailers.as_deref_mut()) {
                            return Ok(Scan {
                                consumed: i + 1,
                                done: true,
                            });
                        }
                    }
                    b'\n' => return Err(ChunkError("bare LF in trailer")),
                    _ => {
                        self.trailer_line_len += 1;
                        if self.trailer_line_len > MAX_LINE {
                            return Err(ChunkError("trailer line too long"));
                        }
                        if let Some(t) = trailers.as_deref_mut() {
                            t.push(b);
                        }
                    }
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("missing LF in trailer"));
                    }
                    if self.end_trailer_line(trailers.as_deref_mut()) {
                        return Ok(Scan {
                            consumed: i + 1,
                            done: true,
                        });
                    }
                }
                State::Done => {
                    return Ok(Scan {
                        consumed: i,
                        done: true,
                    })
                }
            }
            i += 1;
        }
        Ok(Scan {
            consumed: data.len(),
            done: self.state == State::Done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(input: &[u8]) -> Result<Scan, ChunkError> {
        ChunkedScanner::new().scan(input)
    }

    #[test]
    fn whole_body_with_trailers() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 1\r\n\r\nNEXT";
        let s = scan_all(body).unwrap();
        assert_eq!(
            s,
            Scan {
                consumed: body.len() - 4,
                done: true
            }
        );
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let body = b"a\r\n0123456789\r\n0\r\n\r\n";
        let mut sc = ChunkedScanner::new();
        for (i, b) in body.iter().enumerate() {
            let s = sc.scan(std::slice::from_ref(b)).unwrap();
            assert_eq!(s.consumed, 1);
            assert_eq!(s.done, i == body.len() - 1);
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(scan_all(b"zz\r\n").is_err());
        assert!(scan_all(b"\r\n").is_err());
        assert!(scan_all(b"-1\r\n").is_err());
        assert!(scan_all(b"ffffffffffffffff\r\n").is_err());
        assert!(scan_all(b"3\r\nabcX").is_err());
        assert!(scan_all(b"3\nabc").is_err());
    }

    #[test]
    fn whitespace_after_a_size_only_before_an_extension() {
        assert!(scan_all(b"5 \r\nhello\r\n0\r\n\r\n").is_err());
        assert!(scan_all(b"5\t\r\nhello\r\n0\r\n\r\n").is_err());
        assert!(scan_all(b"5 x\r\nhello\r\n0\r\n\r\n").is_err());
        let ok = b"5 \t;a=b\r\nhello\r\n0\r\n\r\n";
        assert_eq!(
            scan_all(ok),
            Ok(Scan {
                consumed: ok.len(),
                done: true
            })
        );
    }

    #[test]
    fn decode_keeps_only_payload() {
        let mut sink = Vec::new();
        let mut sc = ChunkedScanner::new();
        let s = sc
            .decode(b"5\r\nhello\r\n1;x\r\n!\r\n0\r\nt: 1\r\n\r\n", &mut sink)
            .unwrap();
        assert!(s.done);
        assert_eq!(sink, b"hello!");
    }

    #[test]
    fn data_bytes_count_payload_only_across_splits() {
        let body = b"5\r\nhello\r\n1;x\r\n!\r\n0\r\nt: 1\r\n\r\n";
        let mut whole = ChunkedScanner::new();
        whole.scan(body).unwrap();
        assert_eq!(whole.data_bytes(), 6);
        let mut split = ChunkedScanner::new();
        for b in body {
            split.scan(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(split.data_bytes(), 6);
        let mut partial = ChunkedScanner::new();
        partial.scan(b"5\r\nhel").unwrap();
        assert_eq!(partial.data_bytes(), 3);
    }

    #[test]
    fn partial_is_not_an_error() {
        let s = scan_all(b"5\r\nhel").unwrap();
        assert_eq!(
            s,
            Scan {
                consumed: 6,
                done: false
            }
        );
    }

    #[test]
    fn a_response_may_end_its_chunk_lines_with_a_bare_lf_and_a_request_may_not() {
        let body = b"5\nhello\n6;x=y\n world\n0\nx-t: 1\n\n";
        let mut plain = Vec::new();
        let mut trailers = Vec::new();
        let scan = ChunkedScanner::response()
            .decode_with_trailers(body, &mut plain, &mut trailers)
            .expect("a lenient scanner reads bare LF");
        assert_eq!(
            scan,
            Scan {
                consumed: body.len(),
                done: true
            }
        );
        assert_eq!(plain, b"hello world");
        assert_eq!(trailers, b"x-t: 1\r\n");
        assert!(
            ChunkedScanner::new().scan(body).is_err(),
            "requests stay strict"
        );
    }
}
