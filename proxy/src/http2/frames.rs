//! A watch on the frames of a client's HTTP/2 connection as they cross the socket, beside
//! the `h2` crate (which does the protocol): the error codes of the RST_STREAM and GOAWAY
//! frames the proxy sends (for `coremesh_http2_errors_total`, stream errors included, which
//! `h2` handles without telling), and floods of control frames a client sends (SETTINGS,
//! PING), which `h2` answers one by one without limit.

use std::time::{Duration, Instant};

const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;

/// Frames split from a byte stream that arrives in pieces of any size.
#[derive(Default)]
pub struct FrameSplitter {
    /// The current frame's header as far as it has arrived.
    header: [u8; 9],
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: usize,
    /// The first payload bytes of the current frame, when its type needs them.
    payload: [u8; 8],
    payload_len: usize,
    /// Bytes to skip before frames start (the client preface on a server connection).
    skip: usize,
}

/// A frame whose header (and first payload bytes, up to 8) have gone by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    /// The error code of an RST_STREAM or GOAWAY frame.
    pub error_code: Option<u32>,
}

impl FrameSplitter {
    /// A splitter that first skips `skip` bytes (e.g. the 24-byte client preface).
    pub fn skipping(skip: usize) -> Self {
        FrameSplitter {
            skip,
            ..Default::default()
        }
    }

    /// Feed bytes; `on_frame` is called for each frame once enough of it has gone by.
    pub fn feed(&mut self, mut data: &[u8], mut on_frame: impl FnMut(Frame)) {
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        while !data.is_empty() {
            if self.header_len < 9 {
                let n = (9 - self.header_len).min(data.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
                self.header_len += n;
                data = &data[n..];
                if self.header_len < 9 {
                    return;
                }
                let h = &self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                self.payload_len = 0;
                if self.wanted() == 0 {
                    on_frame(self.frame());
                }
                if self.payload_left == 0 {
                    self.header_len = 0;
                }
                continue;
            }
            let n = self.payload_left.min(data.len());
            let wanted = self.wanted();
            if self.payload_len < wanted {
                let take = (wanted - self.payload_len).min(n);
                self.payload[self.payload_len..self.payload_len + take]
                    .copy_from_slice(&data[..take]);
                self.payload_len += take;
                if self.payload_len == wanted {
                    on_frame(self.frame());
                }
            }
            self.payload_left -= n;
            data = &data[n..];
            if self.payload_left == 0 {
                self.header_len = 0;
            }
        }
    }

    /// Payload bytes the current frame's type needs before it is reported.
    fn wanted(&self) -> usize {
        let len = (usize::from(self.header[0]) << 16)
            | (usize::from(self.header[1]) << 8)
            | usize::from(self.header[2]);
        let want = match self.header[3] {
            RST_STREAM => 4,
            GOAWAY => 8,
            _ => 0,
        };
        want.min(len)
    }

    fn frame(&self) -> Frame {
        let p = &self.payload;
        let code_at = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let error_code = match self.header[3] {
            RST_STREAM if self.payload_len >= 4 => Some(code_at(0)),
            GOAWAY if self.payload_len >= 8 => Some(code_at(4)),
            _ => None,
        };
        Frame {
            kind: self.header[3],
            flags: self.header[4],
            error_code,
        }
    }
}

/// Counts a client's SETTINGS and PING frames (not acknowledgements) over a sliding window.
pub struct FloodWatch {
    limit: u32,
    window: Duration,
    started: Instant,
    count: u32,
}

impl FloodWatch {
    /// At most `limit` control frames per `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        FloodWatch {
            limit,
            window,
            started: Instant::now(),
            count: 0,
        }
    }

    /// Note `frame`; true when the client has sent too many control frames.
    pub fn flooded(&mut self, frame: &Frame) -> bool {
        let control = matches!(frame.kind, SETTINGS | PING) && frame.flags & ACK == 0;
        if !control {
            return false;
        }
        let now = Instant::now();
        if now.duration_since(self.started) > self.window {
            self.started = now;
            self.count = 0;
        }
        self.count += 1;
        self.count > self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut f = vec![
            (len >> 16) as u8,
            (len >> 8) as u8,
            len as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn error_codes_are_read_whatever_the_pieces() {
        let mut bytes = frame(0x0, 0x1, b"hello");
        bytes.extend(frame(RST_STREAM, 0, &[0, 0, 0, 8]));
        bytes.extend(frame(GOAWAY, 0, &[0, 0, 0, 5, 0, 0, 0, 11, b'x']));
        bytes.extend(frame(PING, 0, &[0; 8]));
        for piece in [1, 2, 3, 7, 100] {
            let mut s = FrameSplitter::default();
            let mut seen = Vec::new();
            for chunk in bytes.chunks(piece) {
                s.feed(chunk, |f| seen.push((f.kind, f.error_code)));
            }
            assert_eq!(
                seen,
                [
                    (0, None),
                    (RST_STREAM, Some(8)),
                    (GOAWAY, Some(11)),
                    (PING, None)
                ],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn the_preface_is_skipped() {
        let mut bytes = crate::http2::PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, &[]));
        let mut s = FrameSplitter::skipping(crate::http2::PREFACE.len());
        let mut kinds = Vec::new();
        s.feed(&bytes, |f| kinds.push(f.kind));
        assert_eq!(kinds, [SETTINGS]);
    }

    #[test]
    fn a_flood_of_pings_is_noticed_and_acks_are_not_counted() {
        let mut w = FloodWatch::new(3, Duration::from_secs(60));
        let ping = Frame {
            kind: PING,
            flags: 0,
            error_code: None,
        };
        let ack = Frame {
            kind: PING,
            flags: ACK,
            error_code: None,
        };
        assert!(!w.flooded(&ack));
        assert!(!w.flooded(&ping));
        assert!(!w.flooded(&ping));
        assert!(!w.flooded(&ping));
        assert!(w.flooded(&ping));
    }
}
