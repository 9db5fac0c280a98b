//! Test data: deterministic pseudo-random bodies and their checksums.

use sha1::{Digest as _, Sha1};

/// `len` bytes from a xorshift generator seeded by `seed`: incompressible, reproducible, and
/// different at every offset, so a dropped, duplicated or reordered block changes the checksum.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    if state == 0 {
        state = 1;
    }
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Lower-case hex SHA-1 of `bytes`.
pub fn sha1_hex(bytes: &[u8]) -> String {
    Sha1::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_random_bytes_are_reproducible_and_seed_dependent() {
        assert_eq!(pseudo_random_bytes(1000, 7), pseudo_random_bytes(1000, 7));
        assert_ne!(pseudo_random_bytes(1000, 7), pseudo_random_bytes(1000, 8));
        assert_eq!(pseudo_random_bytes(13, 1).len(), 13);
    }

    #[test]
    fn sha1_of_abc() {
        assert_eq!(sha1_hex(b"abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
    }
}
