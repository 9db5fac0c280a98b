//! Bodies between HTTP/2 streams: the request body kept for replay when it is small, and
//! the pump that moves DATA frames from one stream to another under both sides' flow
//! control (a window is given back to the sender only once its bytes went on), then the
//! trailers or the end of the stream. Nothing is held whole.

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use http::HeaderMap;
use std::future::poll_fn;

/// Why a pump stopped early.
#[derive(Debug)]
pub enum PumpError {
    /// The side sending the body failed or reset its stream.
    Source(h2::Error),
    /// The side receiving it did.
    Destination(h2::Error),
    /// The receiving side went away.
    DestinationGone,
    /// An HTTP/1 source ended its body early or broke its framing.
    SourceBroke,
    /// The receiving side gave no window for longer than the stall limit.
    Stalled,
}

/// How long a pump waits for the receiver to open its window before it gives up on the
/// stream: a client that stops reading holds the stream (and the upstream's) no longer.
pub const STALL_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request body as the attempts see it: what was read of it, and the rest of the
/// client's stream when it was not all read.
#[derive(Default)]
pub struct BodySource {
    /// Read already (all of it when `rest` is `None`).
    pub prefix: Vec<Bytes>,
    pub rest: Option<RecvStream>,
    /// The trailers, when all of the body was read and it had some.
    pub trailers: Option<HeaderMap>,
    /// The body was not whole and an attempt took it: nothing is left to send again.
    taken: bool,
}

impl BodySource {
    /// Read the body of `stream` while it fits in `limit` bytes: replayable if it all did.
    pub async fn read(mut stream: RecvStream, limit: usize) -> Result<BodySource, h2::Error> {
        let mut prefix = Vec::new();
        let mut total = 0usize;
        if stream.is_end_stream() {
            return Ok(BodySource::default());
        }
        while total <= limit {
            match stream.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    total += chunk.len();
                    let _ = stream.flow_control().release_capacity(chunk.len());
                    prefix.push(chunk);
                }
                None => {
                    let trailers = stream.trailers().await?;
                    return Ok(BodySource {
                        prefix,
                        rest: None,
                        trailers,
                        taken: false,
                    });
                }
            }
        }
        Ok(BodySource {
            prefix,
            rest: Some(stream),
            trailers: None,
            taken: false,
        })
    }

    /// Whole, so another attempt can send it again.
    pub fn replayable(&self) -> bool {
        self.rest.is_none() && !self.taken
    }

    /// Nothing to send: the request goes out with END_STREAM on its headers.
    pub fn is_empty(&self) -> bool {
        self.rest.is_none() && self.trailers.is_none() && self.prefix.iter().all(|b| b.is_empty())
    }

    /// A copy for one attempt when whole (`Bytes` clones share the data); otherwise the
    /// source itself is taken.
    pub fn for_attempt(&mut self) -> Option<BodySource> {
        if self.replayable() {
            Some(BodySource {
                prefix: self.prefix.clone(),
                rest: None,
                trailers: self.trailers.clone(),
                taken: false,
            })
        } else {
            self.rest.as_ref()?;
            let source = std::mem::take(self);
            self.taken = true;
            Some(source)
        }
    }
}

/// Send `source` on `dst`, ending the stream.
pub async fn pump_source(source: BodySource, dst: &mut SendStream<Bytes>) -> Result<(), PumpError> {
    for chunk in source.prefix {
        send_all(dst, chunk).await?;
    }
    match source.rest {
        Some(rest) => pump(rest, dst).await.map(|_| ()),
        None => finish(dst, source.trailers),
    }
}

/// Move the rest of `src` to `dst`, then its trailers (returned too) or the end of the
/// stream.
pub async fn pump(
    mut src: RecvStream,
    dst: &mut SendStream<Bytes>,
) -> Result<Option<HeaderMap>, PumpError> {
    while let Some(chunk) = src.data().await {
        let chunk = chunk.map_err(PumpError::Source)?;
        let n = chunk.len();
        send_all(dst, chunk).await?;
        // The sender may send as much again only now that these bytes went on.
        let _ = src.flow_control().release_capacity(n);
    }
    let trailers = src.trailers().await.map_err(PumpError::Source)?;
    finish(dst, trailers.clone())?;
    Ok(trailers)
}

fn finish(dst: &mut SendStream<Bytes>, trailers: Option<HeaderMap>) -> Result<(), PumpError> {
    match trailers {
        Some(t) => dst.send_trailers(t),
        None => dst.send_data(Bytes::new(), true),
    }
    .map_err(PumpError::Destination)
}

/// Send `chunk` as the receiver's window lets it through.
pub async fn send_all(dst: &mut SendStream<Bytes>, mut chunk: Bytes) -> Result<(), PumpError> {
    while !chunk.is_empty() {
        dst.reserve_capacity(chunk.len());
        let capacity = poll_fn(|cx| dst.poll_capacity(cx));
        let granted = match monoio::time::timeout(STALL_LIMIT, capacity).await {
            Ok(Some(Ok(n))) => n,
            Ok(Some(Err(e))) => return Err(PumpError::Destination(e)),
            Ok(None) => return Err(PumpError::DestinationGone),
            Err(_) => return Err(PumpError::Stalled),
        };
        if granted == 0 {
            continue;
        }
        let part = chunk.split_to(granted.min(chunk.len()));
        dst.send_data(part, false).map_err(PumpError::Destination)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_body_is_copied_for_each_attempt_and_an_empty_one_is_whole() {
        let mut whole = BodySource {
            prefix: vec![Bytes::from_static(b"abc")],
            ..Default::default()
        };
        assert!(whole.replayable());
        for _ in 0..2 {
            let copy = whole.for_attempt().expect("a whole body goes out again");
            assert_eq!(copy.prefix, [Bytes::from_static(b"abc")]);
        }
        assert!(whole.replayable());
        assert!(BodySource::default().is_empty() && BodySource::default().replayable());
    }

    #[test]
    fn a_taken_body_is_not_replayable() {
        // What `for_attempt` leaves behind when it hands over a body that was not whole.
        let mut left = BodySource {
            taken: true,
            ..Default::default()
        };
        assert!(!left.replayable(), "a retry would send an empty body");
        assert!(left.for_attempt().is_none());
    }
}
