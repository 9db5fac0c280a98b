//! Lower-case hexadecimal for trace and span ids: strict decoding (exact length, lower case
//! only, as both W3C and B3 require) and a [`Hex`] display that does not allocate.

use std::fmt;

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Displays bytes as lower-case hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex<'a>(pub &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(32) {
            let text = &mut buf[..chunk.len() * 2];
            encode(chunk, text);
            // Hex digits are ASCII.
            f.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

/// Writes `bytes` as lower-case hex into `out` (which holds exactly twice as many bytes).
pub(crate) fn encode(bytes: &[u8], out: &mut [u8]) {
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// Appends `bytes` as lower-case hex to `out`.
pub(crate) fn push(bytes: &[u8], out: &mut Vec<u8>) {
    for byte in bytes {
        out.push(DIGITS[usize::from(byte >> 4)]);
        out.push(DIGITS[usize::from(byte & 0x0f)]);
    }
}

/// Decodes exactly `2 * N` lower-case hex digits.
pub(crate) fn decode<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(out)
}

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        assert_eq!(Hex(&id).to_string(), "00f067aa0ba902b7");
        assert_eq!(decode::<8>(b"00f067aa0ba902b7"), Some(id));
        let mut v = Vec::new();
        push(&id, &mut v);
        assert_eq!(v, b"00f067aa0ba902b7");
    }

    #[test]
    fn strict_decoding() {
        assert_eq!(decode::<8>(b"00F067AA0BA902B7"), None, "upper case");
        assert_eq!(decode::<8>(b"00f067aa0ba902b"), None, "short");
        assert_eq!(decode::<8>(b"00f067aa0ba902b7a"), None, "long");
        assert_eq!(decode::<2>(b"0g00"), None);
        assert_eq!(decode::<2>("é0".as_bytes()), None);
    }

    #[test]
    fn long_ids_display_whole() {
        assert_eq!(Hex(&[0xab; 40]).to_string(), "ab".repeat(40));
    }
}
