//! A blocking HTTP/1.1 POST over `std::net::TcpStream`, bounded by one timeout for the
//! whole exchange (connect, write, read). It runs on the control thread, never on a core.
//! One connection per batch (`Connection: close`): at one batch a second or less, reusing
//! connections would save little and cost a response-framing state machine. A 2xx body
//! is read when framed by `Content-Length` or `Transfer-Encoding: chunked` (collectors
//! send partial-success answers both ways); a refusal keeps its `Retry-After`.

use super::url::CollectorUrl;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime};

/// Largest response head read before giving up on it.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Largest response body read (an OTLP answer is a few bytes; more is not worth waiting
/// for).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Response header lines parsed.
const MAX_RESPONSE_HEADERS: usize = 32;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The collector's host name did not resolve.
    #[error("cannot resolve collector {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// No connection could be made (refused, unreachable).
    #[error("cannot connect to collector {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The exchange did not finish within the timeout.
    #[error("collector did not answer within {0:?}")]
    Timeout(Duration),
    /// Reading or writing failed.
    #[error("collector connection failed: {0}")]
    Io(io::Error),
    /// The collector answered with a non-2xx status (and maybe when to try again).
    #[error("collector answered HTTP {status}")]
    Status {
        /// The status code.
        status: u16,
        /// Its `Retry-After`, when it had a valid one.
        retry_after: Option<RetryAfter>,
    },
    /// The answer was not HTTP/1.x.
    #[error("collector sent an invalid response: {0}")]
    BadResponse(&'static str),
}

impl ExportError {
    /// Whether the collector asked for the same batch again later: 429, 502, 503 and 504,
    /// the statuses OTLP/HTTP names as retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ExportError::Status {
                status: 429 | 502 | 503 | 504,
                ..
            }
        )
    }

    /// The `Retry-After` of a refusal.
    pub fn retry_after(&self) -> Option<RetryAfter> {
        match self {
            ExportError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `delay-seconds`.
    Delay(Duration),
    /// An HTTP-date.
    At(SystemTime),
}

impl RetryAfter {
    /// Parses `120` or `Wed, 21 Oct 2015 07:28:00 GMT`; `None` for anything else.
    pub fn parse(value: &str) -> Option<RetryAfter> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // More digits than a u64 holds is "a very long time", not an error.
            let seconds = value.parse::<u64>().unwrap_or(u64::MAX);
            return Some(RetryAfter::Delay(Duration::from_secs(seconds)));
        }
        httpdate::parse_http_date(value).ok().map(RetryAfter::At)
    }

    /// How long to wait from `now` (wall clock); a date in the past is no wait.
    pub fn delay_from(self, now: SystemTime) -> Duration {
        match self {
            RetryAfter::Delay(delay) => delay,
            RetryAfter::At(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }
}

/// A 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The body, when it was framed by `Content-Length` or chunked and fit in
    /// `MAX_RESPONSE_BODY` (else empty).
    pub(crate) body: Vec<u8>,
}

/// Posts `body` to `url` as `content_type`; the whole exchange ends within `timeout`.
pub(crate) fn post(
    url: &CollectorUrl,
    content_type: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<Answer, ExportError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ExportError::Timeout(timeout))
    };
    let addrs = (url.host(), url.port())
        .to_socket_addrs()
        .map_err(|source| ExportError::Resolve {
            host: url.host().to_string(),
            source,
        })?;
    let mut last = None;
    let mut stream = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return Err(ExportError::Timeout(timeout))
            }
            Err(source) => {
                last = Some(ExportError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
    let mut stream = match stream {
        Some(stream) => stream,
        None => {
            return Err(last.unwrap_or_else(|| ExportError::Resolve {
                host: url.host().to_string(),
                source: io::Error::new(io::ErrorKind::NotFound, "no address"),
            }))
        }
    };
    let _ = stream.set_nodelay(true);
    let io_error = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ExportError::Timeout(timeout),
        _ => ExportError::Io(e),
    };

    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         User-Agent: coremesh/{}\r\nConnection: close\r\n\r\n",
        url.path(),
        url.host_header(),
        content_type,
        body.len(),
        env!("CARGO_PKG_VERSION"),
    );
    for part in [head.as_bytes(), body] {
        stream
            .set_write_timeout(Some(remaining()?))
            .map_err(ExportError::Io)?;
        stream.write_all(part).map_err(io_error)?;
    }

    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let status = response.code.unwrap_or(0);
                if status == 100 {
                    // An interim answer: drop it and read on.
                    buf.drain(..head_len);
                    continue;
                }
                let header = |name: &str| {
                    response
                        .headers
                        .iter()
                        .rev()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .and_then(|h| std::str::from_utf8(h.value).ok())
                };
                if !(200..300).contains(&status) {
                    let retry_after = header("retry-after").and_then(RetryAfter::parse);
                    return Err(ExportError::Status {
                        status,
                        retry_after,
                    });
                }
                let chunked = header("transfer-encoding").is_some_and(|codings| {
                    codings
                        .rsplit(',')
                        .next()
                        .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"))
                });
                let length = header("content-length").and_then(|v| v.trim().parse::<usize>().ok());
                let rest = buf.split_off(head_len);
                let body = if chunked {
                    read_chunked(&mut stream, rest, &remaining)
                } else {
                    match length {
                        Some(length) if length <= MAX_RESPONSE_BODY => {
                            read_body(&mut stream, rest, length, &remaining)
                        }
                        _ => None,
                    }
                };
                return Ok(Answer {
                    status,
                    body: body.unwrap_or_default(),
                });
            }
            Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
                return Err(ExportError::BadResponse("response head too large"))
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(ExportError::BadResponse("not an HTTP/1.x response")),
        }
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(ExportError::Io)?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(ExportError::BadResponse(
                    "connection closed before a response",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// Reads more of the answer into `buf`; `None` when the time is up or the peer closed.
fn read_more(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    remaining: &impl Fn() -> Result<Duration, ExportError>,
) -> Option<()> {
    let mut chunk = [0u8; 4096];
    loop {
        stream.set_read_timeout(Some(remaining().ok()?)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Some(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Reads the rest of a `length`-byte body; `None` if it does not all arrive in time (the
/// export still counts as delivered: the status said so).
fn read_body(
    stream: &mut TcpStream,
    mut body: Vec<u8>,
    length: usize,
    remaining: &impl Fn() -> Result<Duration, ExportError>,
) -> Option<Vec<u8>> {
    while body.len() < length {
        read_more(stream, &mut body, remaining)?;
    }
    body.truncate(length);
    Some(body)
}

/// Reads and decodes a chunked body that starts in `raw`; `None` if it is malformed,
/// larger than `MAX_RESPONSE_BODY`, or does not all arrive in time. Trailers are not read
/// (the connection is closed after the answer anyway).
fn read_chunked(
    stream: &mut TcpStream,
    mut raw: Vec<u8>,
    remaining: &impl Fn() -> Result<Duration, ExportError>,
) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        match httparse::parse_chunk_size(&raw[at..]) {
            Ok(httparse::Status::Complete((_, 0))) => return Some(body),
            Ok(httparse::Status::Complete((size_line, size))) => {
                let size = usize::try_from(size).ok()?;
                if body.len().checked_add(size)? > MAX_RESPONSE_BODY {
                    return None;
                }
                let data = at + size_line;
                let end = data + size;
                while raw.len() < end + 2 {
                    read_more(stream, &mut raw, remaining)?;
                }
                if &raw[end..end + 2] != b"\r\n" {
                    return None;
                }
                body.extend_from_slice(&raw[data..end]);
                at = end + 2;
            }
            Ok(httparse::Status::Partial) if raw.len() - at > MAX_RESPONSE_HEAD => return None,
            Ok(httparse::Status::Partial) => read_more(stream, &mut raw, remaining)?,
            Err(_) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    /// A one-shot server: reads the request head and body, answers `answer`, hands back
    /// what it read.
    fn serve_once(answer: &'static [u8]) -> (CollectorUrl, thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = CollectorUrl::parse(&format!(
            "http://{}/v1/traces",
            listener.local_addr().unwrap()
        ))
        .unwrap();
        let handle = thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut chunk = [0u8; 1024];
            // Head, then a 5-byte body.
            loop {
                let n = s.read(&mut chunk).unwrap();
                got.extend_from_slice(&chunk[..n]);
                if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    if got.len() >= i + 4 + 5 {
                        break;
                    }
                }
            }
            s.write_all(answer).unwrap();
            got
        });
        (url, handle)
    }

    #[test]
    fn posts_and_reads_the_answer() {
        let (url, server) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc");
        let answer = post(
            &url,
            "application/x-protobuf",
            b"hello",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(
            answer,
            Answer {
                status: 200,
                body: b"abc".to_vec()
            }
        );
        let request = String::from_utf8(server.join().unwrap()).unwrap();
        let port = url.port();
        assert_eq!(
            request,
            format!(
                "POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                 Content-Type: application/x-protobuf\r\nContent-Length: 5\r\n\
                 User-Agent: coremesh/{}\r\nConnection: close\r\n\r\nhello",
                env!("CARGO_PKG_VERSION")
            )
        );
    }

    #[test]
    fn error_statuses_and_garbage_fail() {
        let (url, _server) =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
        let err = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::Status {
                    status: 503,
                    retry_after: None
                }
            ),
            "{err}"
        );
        let (url, _server) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let err = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ExportError::BadResponse(_)), "{err}");
    }

    #[test]
    fn retry_after_is_kept_with_the_status() {
        let (url, _server) = serve_once(
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        );
        let err = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap_err();
        assert!(err.is_retryable());
        assert_eq!(
            err.retry_after(),
            Some(RetryAfter::Delay(Duration::from_secs(7)))
        );
        let (url, _server) = serve_once(b"HTTP/1.1 400 Bad Request\r\nRetry-After: 7\r\n\r\n");
        let err = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap_err();
        assert!(!err.is_retryable());
    }

    #[test]
    fn retry_after_forms() {
        let epoch = SystemTime::UNIX_EPOCH;
        let now = epoch + Duration::from_secs(1_700_000_000);
        let delay = |v: &str| RetryAfter::parse(v).map(|r| r.delay_from(now));
        assert_eq!(delay("0"), Some(Duration::ZERO));
        assert_eq!(delay(" 120 "), Some(Duration::from_secs(120)));
        // 1 700 000 000 s after the epoch is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            delay("Tue, 14 Nov 2023 22:13:25 GMT"),
            Some(Duration::from_secs(5))
        );
        assert_eq!(delay("Tue, 14 Nov 2023 22:13:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            delay("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(delay("-1"), None);
        assert_eq!(delay("soon"), None);
        assert_eq!(delay(""), None);
    }

    #[test]
    fn a_chunked_answer_is_decoded() {
        let (url, _server) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
        );
        let answer = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap();
        assert_eq!(answer.body, b"abcde");
        // A broken chunk still counts as delivered (the status said so), without a body.
        let (url, _server) =
            serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n");
        let answer = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap();
        assert_eq!((answer.status, answer.body), (200, Vec::new()));
    }

    #[test]
    fn interim_100_is_skipped() {
        let (url, _server) =
            serve_once(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
        let answer = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap();
        assert_eq!(answer.status, 204);
    }

    #[test]
    fn a_silent_collector_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url =
            CollectorUrl::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        // Accepted by the kernel's backlog, never answered.
        let err = post(&url, "x", b"hello", Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ExportError::Timeout(_)), "{err}");
        drop(listener);
    }

    #[test]
    fn a_closed_port_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let url = CollectorUrl::parse(&format!("http://{addr}")).unwrap();
        let err = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap_err();
        match err {
            ExportError::Connect { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused)
            }
            other => panic!("{other}"),
        }
    }
}
