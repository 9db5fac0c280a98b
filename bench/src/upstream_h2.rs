//! The built-in upstream's cleartext HTTP/2 (h2c with prior knowledge, on the same listener
//! as HTTP/1.1): just enough of RFC 9113 for a benchmark peer, so proxies can be measured
//! with HTTP/2 on both sides and the scenarios keep their seeded latencies, errors, worker
//! limits and counters.
//!
//! Every request (a stream whose header block, body and trailers have arrived) is counted
//! and answered as an HTTP/1.1 request is (same draw order, same delays), the answers of
//! one connection going out as each one's delay ends. The request's header block is not
//! decoded: every request gets the same answer — the body, or with `grpc` a unary gRPC
//! answer (a length-prefixed message and `grpc-status: 0` trailers); a failure is the
//! error status with a short text body. Flow control: the peer may send 2^31 − 1 bytes per
//! stream and connection (the connection's window is topped up as it is used); answers go
//! out in the order they became ready, their DATA in pieces as the peer's windows allow (a
//! stream waiting for its own window holds back no other).

use crate::grpc;
use crate::upstream::{admit, wait_until, ThreadState};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt, Splitable};
use monoio::net::TcpStream;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};

/// What a client sends first on a prior-knowledge HTTP/2 connection.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
/// The largest flow-control window.
const MAX_WINDOW: i64 = (1 << 31) - 1;
/// The window every stream and connection starts with.
const DEFAULT_WINDOW: i64 = 65_535;
/// The largest frame the peer may send (the protocol's own ceiling).
const MAX_FRAME_LIMIT: usize = (1 << 24) - 1;
const READ_BUFFER: usize = 16 * 1024;

/// One answer's frames, ready but for its DATA, which flow control may hold back.
struct Answer {
    stream: u32,
    /// The HEADERS frame, until it is sent.
    head: Option<Vec<u8>>,
    data: Vec<u8>,
    /// Bytes of `data` sent so far.
    sent: usize,
    trailers: Option<Vec<u8>>,
}

impl Answer {
    /// Append to `out` the head (once) and as much DATA as `window` (the connection's)
    /// and `stream_window` allow in frames of at most `max_frame` bytes, taking what is
    /// sent off both windows; then the trailers once all DATA is out. Whether the answer
    /// is complete.
    fn send_some(
        &mut self,
        window: &mut i64,
        stream_window: &mut i64,
        max_frame: usize,
        out: &mut Vec<u8>,
    ) -> bool {
        if let Some(head) = self.head.take() {
            out.extend_from_slice(&head);
        }
        let last = self.trailers.is_none();
        while self.sent < self.data.len() {
            let rest = self.data.len() - self.sent;
            let n = rest
                .min(max_frame.max(1))
                .min((*window).max(0) as usize)
                .min((*stream_window).max(0) as usize);
            if n == 0 {
                return false;
            }
            let flags = if last && n == rest { END_STREAM } else { 0 };
            frame_header(out, n, DATA, flags, self.stream);
            out.extend_from_slice(&self.data[self.sent..self.sent + n]);
            self.sent += n;
            *window -= n as i64;
            *stream_window -= n as i64;
        }
        if let Some(t) = self.trailers.take() {
            out.extend_from_slice(&t);
        }
        true
    }
}

/// One connection's shared state: what the writer sends, and the peer's windows.
struct Conn {
    out: RefCell<Vec<u8>>,
    waker: RefCell<Option<Waker>>,
    closed: Cell<bool>,
    /// The peer's connection window for our DATA.
    window: Cell<i64>,
    /// The peer's SETTINGS_INITIAL_WINDOW_SIZE and SETTINGS_MAX_FRAME_SIZE.
    initial_window: Cell<i64>,
    max_frame: Cell<usize>,
    /// Streams opened by the peer and not yet answered in full: their send windows,
    /// counted from the stream's first HEADERS (a WINDOW_UPDATE may come before the
    /// request ends).
    awaiting: RefCell<HashMap<u32, i64>>,
    /// Answers held by flow control, in the order they became ready.
    blocked: RefCell<VecDeque<Answer>>,
}

impl Conn {
    fn push(&self, bytes: &[u8]) {
        if self.closed.get() {
            return;
        }
        self.out.borrow_mut().extend_from_slice(bytes);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Send `answer` now if the windows allow, else queue it behind the others.
    fn answer(&self, answer: Answer) {
        self.blocked.borrow_mut().push_back(answer);
        self.flush_blocked();
    }

    /// Send what the windows allow of the queued answers, in order; an answer whose
    /// stream the peer reset is dropped.
    fn flush_blocked(&self) {
        let mut out = Vec::new();
        {
            let mut blocked = self.blocked.borrow_mut();
            let mut windows = self.awaiting.borrow_mut();
            let mut window = self.window.get();
            let max_frame = self.max_frame.get();
            blocked.retain_mut(|a| {
                let Some(stream_window) = windows.get_mut(&a.stream) else {
                    return false;
                };
                let done = a.send_some(&mut window, stream_window, max_frame, &mut out);
                if done {
                    windows.remove(&a.stream);
                }
                !done
            });
            self.window.set(window);
        }
        if !out.is_empty() {
            self.push(&out);
        }
    }
}

fn frame_header(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
}

/// An HPACK integer with an `n`-bit prefix, the prefix byte's other bits being `flags`.
fn hpack_int(out: &mut Vec<u8>, n: u8, flags: u8, value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// An HPACK string literal without Huffman coding.
fn hpack_str(out: &mut Vec<u8>, s: &[u8]) {
    hpack_int(out, 7, 0, s.len());
    out.extend_from_slice(s);
}

/// A field "literal without indexing" whose name is static-table entry `index`.
fn field_indexed_name(out: &mut Vec<u8>, index: usize, value: &[u8]) {
    hpack_int(out, 4, 0, index);
    hpack_str(out, value);
}

/// A field "literal without indexing" with a literal name.
fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    hpack_str(out, name);
    hpack_str(out, value);
}

/// Static-table entries (RFC 7541, appendix A).
const STATUS_200: u8 = 0x88;
const STATUS: usize = 8;
const CONTENT_LENGTH: usize = 28;
const CONTENT_TYPE: usize = 31;

/// The header block of an answer.
fn head_block(status: u16, content_type: &str, length: Option<usize>, upstream: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    if status == 200 {
        b.push(STATUS_200);
    } else {
        field_indexed_name(&mut b, STATUS, status.to_string().as_bytes());
    }
    field_indexed_name(&mut b, CONTENT_TYPE, content_type.as_bytes());
    if let Some(n) = length {
        field_indexed_name(&mut b, CONTENT_LENGTH, n.to_string().as_bytes());
    }
    field(&mut b, b"x-upstream", upstream.as_bytes());
    b
}

/// A HEADERS frame holding `block` (one frame: the blocks here are small).
fn headers_frame(block: &[u8], stream: u32, end_stream: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + block.len());
    let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
    frame_header(&mut out, block.len(), HEADERS, flags, stream);
    out.extend_from_slice(block);
    out
}

/// The answers of one upstream, prepared once: (header block, body, trailer block).
struct Prepared {
    ok: (Vec<u8>, Vec<u8>, Option<Vec<u8>>),
    error: (Vec<u8>, Vec<u8>),
}

impl Prepared {
    fn new(state: &ThreadState) -> Prepared {
        let spec = &state.spec;
        let name = &spec.name;
        let ok = if spec.grpc {
            let body = grpc::frame(&grpc::message(spec.body_bytes));
            let mut trailers = Vec::new();
            field(&mut trailers, b"grpc-status", b"0");
            (
                head_block(200, grpc::CONTENT_TYPE, None, name),
                body,
                Some(trailers),
            )
        } else {
            let body = vec![b'x'; spec.body_bytes];
            (
                head_block(200, "text/plain", Some(body.len()), name),
                body,
                None,
            )
        };
        let err_body = format!("{} from {}\n", spec.error_status, name).into_bytes();
        Prepared {
            ok,
            error: (
                head_block(spec.error_status, "text/plain", Some(err_body.len()), name),
                err_body,
            ),
        }
    }

    fn answer(&self, stream: u32, fail: bool) -> Answer {
        let (block, data, trailers) = if fail {
            (&self.error.0, &self.error.1, None)
        } else {
            (&self.ok.0, &self.ok.1, self.ok.2.as_ref())
        };
        let head = headers_frame(block, stream, data.is_empty() && trailers.is_none());
        Answer {
            stream,
            head: Some(head),
            data: data.clone(),
            sent: 0,
            trailers: trailers.map(|t| headers_frame(t, stream, true)),
        }
    }
}

async fn read_more<R: AsyncReadRent>(reader: &mut R, buf: &mut Vec<u8>) -> bool {
    let mut owned = std::mem::take(buf);
    if owned.capacity() - owned.len() < READ_BUFFER / 4 {
        owned.reserve(READ_BUFFER);
    }
    let len = owned.len();
    let (result, slice) = reader.read(owned.slice_mut(len..)).await;
    *buf = slice.into_inner();
    matches!(result, Ok(n) if n > 0)
}

async fn write_loop<W: monoio::io::AsyncWriteRent>(mut writer: W, conn: Rc<Conn>) {
    loop {
        std::future::poll_fn(|cx| {
            if !conn.out.borrow().is_empty() || conn.closed.get() {
                Poll::Ready(())
            } else {
                *conn.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let bytes = std::mem::take(&mut *conn.out.borrow_mut());
        if bytes.is_empty() {
            return;
        }
        let (result, _) = writer.write_all(bytes).await;
        if result.is_err() {
            conn.close();
            return;
        }
    }
}

/// The payload of a frame without its padding (and priority fields, for HEADERS).
fn unpadded(payload: &[u8], flags: u8, kind: u8) -> Option<&[u8]> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        pad = *p.first()? as usize;
        p = &p[1..];
    }
    if kind == HEADERS && flags & PRIORITY != 0 {
        p = p.get(5..)?;
    }
    p.get(..p.len().checked_sub(pad)?)
}

/// Serve one HTTP/2 connection whose first bytes (`buf`) hold the client preface.
pub(crate) async fn serve(stream: TcpStream, mut buf: Vec<u8>, state: Rc<ThreadState>) {
    let (mut reader, writer) = stream.into_split();
    let conn = Rc::new(Conn {
        out: RefCell::new(Vec::with_capacity(READ_BUFFER)),
        waker: RefCell::new(None),
        closed: Cell::new(false),
        window: Cell::new(DEFAULT_WINDOW),
        initial_window: Cell::new(DEFAULT_WINDOW),
        max_frame: Cell::new(16_384),
        awaiting: RefCell::new(HashMap::new()),
        blocked: RefCell::new(VecDeque::new()),
    });
    let writer_task = monoio::spawn(write_loop(writer, conn.clone()));
    let prepared = Rc::new(Prepared::new(&state));
    // Our preface: SETTINGS (the largest stream window), and the connection window opened
    // as wide.
    let mut hello = Vec::new();
    frame_header(&mut hello, 6, SETTINGS, 0, 0);
    hello.extend_from_slice(&SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes());
    hello.extend_from_slice(&(MAX_WINDOW as u32).to_be_bytes());
    frame_header(&mut hello, 4, WINDOW_UPDATE, 0, 0);
    hello.extend_from_slice(&((MAX_WINDOW - DEFAULT_WINDOW) as u32).to_be_bytes());
    conn.push(&hello);
    buf.drain(..PREFACE.len().min(buf.len()));
    // Streams whose request has not fully arrived; a header block continued in
    // CONTINUATION frames (its stream, and whether it ends the stream).
    let mut receiving: HashSet<u32> = HashSet::new();
    let mut continuing: Option<(u32, bool)> = None;
    // DATA received since the connection window was last topped up.
    let mut consumed: i64 = 0;
    'read: loop {
        // Frames are taken from `at` on, and the bytes before it dropped once per read.
        let mut at = 0;
        while buf.len() - at >= 9 {
            let f = &buf[at..];
            let len = u32::from_be_bytes([0, f[0], f[1], f[2]]) as usize;
            if len > MAX_FRAME_LIMIT {
                break 'read;
            }
            if f.len() < 9 + len {
                break;
            }
            let (kind, flags) = (f[3], f[4]);
            let id = u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff;
            let payload = &f[9..9 + len];
            let mut completed = None;
            match kind {
                DATA => {
                    consumed += len as i64;
                    if flags & END_STREAM != 0 && receiving.remove(&id) {
                        completed = Some(id);
                    }
                }
                HEADERS => {
                    // A stream's send window starts with its first HEADERS.
                    conn.awaiting
                        .borrow_mut()
                        .entry(id)
                        .or_insert(conn.initial_window.get());
                    let end = flags & END_STREAM != 0;
                    if flags & END_HEADERS == 0 {
                        continuing = Some((id, end));
                        receiving.insert(id);
                    } else if end {
                        receiving.remove(&id);
                        completed = Some(id);
                    } else {
                        receiving.insert(id);
                    }
                    if unpadded(payload, flags, kind).is_none() {
                        break 'read;
                    }
                }
                CONTINUATION => {
                    if let (Some((sid, end)), true) = (continuing, flags & END_HEADERS != 0) {
                        continuing = None;
                        if end && receiving.remove(&sid) {
                            completed = Some(sid);
                        }
                    }
                }
                RST_STREAM => {
                    receiving.remove(&id);
                    conn.awaiting.borrow_mut().remove(&id);
                    conn.flush_blocked();
                }
                SETTINGS if flags & ACK == 0 => {
                    for s in payload.chunks_exact(6) {
                        let key = u16::from_be_bytes([s[0], s[1]]);
                        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]) as i64;
                        match key {
                            SETTINGS_INITIAL_WINDOW_SIZE => {
                                let delta = value - conn.initial_window.get();
                                conn.initial_window.set(value);
                                for w in conn.awaiting.borrow_mut().values_mut() {
                                    *w += delta;
                                }
                            }
                            SETTINGS_MAX_FRAME_SIZE => conn.max_frame.set(value as usize),
                            _ => {}
                        }
                    }
                    let mut ack = Vec::with_capacity(9);
                    frame_header(&mut ack, 0, SETTINGS, ACK, 0);
                    conn.push(&ack);
                    conn.flush_blocked();
                }
                PING if flags & ACK == 0 && len == 8 => {
                    let mut pong = Vec::with_capacity(17);
                    frame_header(&mut pong, 8, PING, ACK, 0);
                    pong.extend_from_slice(payload);
                    conn.push(&pong);
                }
                WINDOW_UPDATE if len == 4 => {
                    let inc = (u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                        & 0x7fff_ffff) as i64;
                    if id == 0 {
                        conn.window.set(conn.window.get() + inc);
                    } else if let Some(w) = conn.awaiting.borrow_mut().get_mut(&id) {
                        *w += inc;
                    }
                    conn.flush_blocked();
                }
                GOAWAY => {}
                _ => {}
            }
            at += 9 + len;
            if consumed > MAX_WINDOW / 2 {
                let mut up = Vec::with_capacity(13);
                frame_header(&mut up, 4, WINDOW_UPDATE, 0, 0);
                up.extend_from_slice(&(consumed as u32).to_be_bytes());
                conn.push(&up);
                consumed = 0;
            }
            if let Some(sid) = completed {
                let (done, fail) = admit(&state);
                state.stats.h2_requests.fetch_add(1, Ordering::Relaxed);
                if fail {
                    state.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                match done {
                    None => conn.answer(prepared.answer(sid, fail)),
                    Some(at) => {
                        let (conn, prepared) = (conn.clone(), prepared.clone());
                        monoio::spawn(async move {
                            wait_until(Some(at)).await;
                            conn.answer(prepared.answer(sid, fail));
                        });
                    }
                }
            }
        }
        buf.drain(..at);
        if !read_more(&mut reader, &mut buf).await {
            break;
        }
    }
    conn.close();
    let _ = writer_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpack_integers_and_fields() {
        let mut out = Vec::new();
        hpack_int(&mut out, 5, 0, 10);
        assert_eq!(out, [10]);
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        out.clear();
        hpack_int(&mut out, 5, 0, 1337);
        assert_eq!(out, [31, 154, 10]);
        // content-type (static 31) with a 4-bit prefix: 15, then 16.
        out.clear();
        field_indexed_name(&mut out, CONTENT_TYPE, b"a");
        assert_eq!(out, [0x0f, 0x10, 1, b'a']);
        let block = head_block(503, "text/plain", Some(3), "u0");
        assert_eq!(&block[..5], &[0x08, 3, b'5', b'0', b'3']);
        assert_eq!(head_block(200, "t", None, "u")[0], STATUS_200);
    }

    #[test]
    fn padding_and_priority_are_taken_off() {
        // Pad length 2, priority (5 bytes), block "ab", 2 bytes of padding.
        let p = [2, 0, 0, 0, 1, 16, b'a', b'b', 0, 0];
        assert_eq!(unpadded(&p, PADDED | PRIORITY, HEADERS), Some(&b"ab"[..]));
        assert_eq!(unpadded(&[9, 1], PADDED, DATA), None);
        assert_eq!(unpadded(b"xy", 0, DATA), Some(&b"xy"[..]));
    }
}
