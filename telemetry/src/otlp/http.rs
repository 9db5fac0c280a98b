//! A blocking HTTP/1.1 POST over `std::net::TcpStream`, bounded by one timeout for the
//! whole exchange (connect, write, read). It runs on the control thread, never on a core.
//! One connection per batch (`Connection: close`): at one batch a second or less, reusing
//! connections would save little and cost a response-framing state machine.

use super::url::CollectorUrl;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

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
    /// The collector answered with a non-2xx status.
    #[error("collector answered HTTP {0}")]
    Status(u16),
    /// The answer was not HTTP/1.x.
    #[error("collector sent an invalid response: {0}")]
    BadResponse(&'static str),
}

/// A 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// The body, when the answer had a `Content-Length` (up to `MAX_RESPONSE_BODY`).
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
                if !(200..300).contains(&status) {
                    return Err(ExportError::Status(status));
                }
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let body = match length {
                    Some(length) if length <= MAX_RESPONSE_BODY => {
                        read_body(&mut stream, buf.split_off(head_len), length, remaining)
                            .unwrap_or_default()
                    }
                    _ => Vec::new(),
                };
                return Ok(Answer { status, body });
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

/// Reads the rest of a `length`-byte body; `None` if it does not all arrive in time (the
/// export still counts as delivered: the status said so).
fn read_body(
    stream: &mut TcpStream,
    mut body: Vec<u8>,
    length: usize,
    remaining: impl Fn() -> Result<Duration, ExportError>,
) -> Option<Vec<u8>> {
    let mut chunk = [0u8; 4096];
    while body.len() < length {
        stream.set_read_timeout(Some(remaining().ok()?)).ok()?;
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    body.truncate(length);
    Some(body)
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
        assert!(matches!(err, ExportError::Status(503)), "{err}");
        let (url, _server) = serve_once(b"SSH-2.0-OpenSSH\r\n\r\n");
        let err = post(&url, "x", b"hello", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, ExportError::BadResponse(_)), "{err}");
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
