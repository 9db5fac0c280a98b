//! The unary gRPC call of the h2c load: the request body h2load posts (one length-prefixed
//! message, as gRPC frames it) and the names both sides use.

use std::path::Path;

/// The method h2load calls (any path works: the built-in upstream answers every HTTP/2
/// request the same way).
pub const PATH: &str = "/coremesh.bench.Echo/Unary";
/// The request's and the answer's content type.
pub const CONTENT_TYPE: &str = "application/grpc";
/// Bytes of the payload string in the request message.
pub const DEFAULT_PAYLOAD_BYTES: usize = 64;

/// A protobuf message with one field: `string payload = 1;` holding `bytes` times `x`.
pub fn message(bytes: usize) -> Vec<u8> {
    let mut m = vec![0x0a]; // field 1, wire type 2 (length-delimited)
    let mut len = bytes as u64;
    loop {
        let low = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            m.push(low);
            break;
        }
        m.push(low | 0x80);
    }
    m.extend(std::iter::repeat_n(b'x', bytes));
    m
}

/// One gRPC length-prefixed message: a compressed flag (0), the length as 4 bytes
/// big-endian, then the message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The message of a body holding exactly one uncompressed length-prefixed message, or why
/// it is not one.
pub fn unframe(body: &[u8]) -> Result<&[u8], String> {
    if body.len() < 5 {
        return Err(format!(
            "{} bytes: shorter than the 5-byte prefix",
            body.len()
        ));
    }
    if body[0] != 0 {
        return Err(format!("compressed flag {} (expected 0)", body[0]));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    if body.len() - 5 != len {
        return Err(format!(
            "prefix says {len} bytes, {} follow",
            body.len() - 5
        ));
    }
    Ok(&body[5..])
}

/// Write the request body of a call whose payload holds `bytes` bytes.
pub fn write_body(path: &Path, bytes: usize) -> std::io::Result<()> {
    std::fs::write(path, frame(&message(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_one_prefixed_message() {
        let body = frame(&message(64));
        assert_eq!(&body[..5], &[0, 0, 0, 0, 66]);
        assert_eq!(unframe(&body).expect("framed"), &message(64)[..]);
        assert_eq!(&message(64)[..2], &[0x0a, 64]);
        // A length of 200 takes two varint bytes.
        assert_eq!(&message(200)[..3], &[0x0a, 0xc8, 0x01]);
        assert!(unframe(&body[..4]).is_err());
        assert!(unframe(&body[..20]).is_err());
        let mut compressed = body.clone();
        compressed[0] = 1;
        assert!(unframe(&compressed).is_err());
    }
}
