//! The client side of a differential case: send each request of the case on one connection,
//! the next once the previous one's final response is complete, then half-close and keep
//! every byte the proxy sends until it closes.
//!
//! Completion is decided by [`message::read_response`], never by a pause: when a response
//! cannot be read (garbage, or a connection closed early) no further request is sent.

use crate::message::{self, Read as MessageRead};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

/// Read time-out of the client: generous, it only turns a hang into a failure.
const READ_BOUND: Duration = Duration::from_secs(20);

/// What the client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientCapture {
    /// Every byte received on the connection.
    pub bytes: Vec<u8>,
    /// For each request sent: whether it was a HEAD request (its response has no body).
    pub head_requests: Vec<bool>,
    /// A read that failed (time-out or error) instead of ending cleanly.
    pub error: Option<String>,
}

/// Whether the raw request starts with the HEAD method.
pub fn is_head(request: &[u8]) -> bool {
    request.starts_with(b"HEAD ")
}

/// For each request in `bytes` (several when pipelined), whether it is a HEAD request.
/// Bytes that do not form a whole request count as one request.
fn pipelined_heads(bytes: &[u8]) -> Vec<bool> {
    let mut heads = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match message::read_request(&bytes[at..]) {
            MessageRead::Complete(_, used) if used > 0 => {
                heads.push(is_head(&bytes[at..]));
                at += used;
            }
            _ => {
                heads.push(is_head(&bytes[at..]));
                break;
            }
        }
    }
    if heads.is_empty() {
        heads.push(false);
    }
    heads
}

pub fn run(addr: SocketAddr, requests: &[Vec<u8>]) -> ClientCapture {
    let mut capture = ClientCapture::default();
    if let Err(e) = exchange(addr, requests, &mut capture) {
        capture.error = Some(e.to_string());
    }
    capture
}

fn exchange(addr: SocketAddr, requests: &[Vec<u8>], capture: &mut ClientCapture) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, READ_BOUND)?;
    stream.set_read_timeout(Some(READ_BOUND))?;
    stream.set_write_timeout(Some(READ_BOUND))?;
    stream.set_nodelay(true)?;
    let mut read_to = 0;
    let mut eof = false;
    'requests: for request in requests {
        if eof {
            break;
        }
        if stream.write_all(request).is_err() {
            break;
        }
        // Pipelined requests in one section: wait for a final response to each of them
        // (a half-close with responses still due would make a proxy abort them).
        for head in pipelined_heads(request) {
            capture.head_requests.push(head);
            loop {
                match message::read_response(&capture.bytes[read_to..], head, eof) {
                    MessageRead::Complete(m, used) => {
                        read_to += used;
                        if !m.is_interim() {
                            break;
                        }
                    }
                    MessageRead::Invalid(_) => break 'requests,
                    MessageRead::Incomplete if eof => break 'requests,
                    MessageRead::Incomplete => eof = fill(&mut stream, &mut capture.bytes)?,
                }
            }
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    while !eof {
        eof = fill(&mut stream, &mut capture.bytes)?;
    }
    Ok(())
}

/// Read once into `bytes`; true at the end of the stream (a reset counts as the end).
fn fill(stream: &mut TcpStream, bytes: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                return Ok(false);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
            Err(e) => return Err(e),
        }
    }
}
