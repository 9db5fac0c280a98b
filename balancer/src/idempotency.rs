//! Which requests are safe to repeat on another endpoint: [`is_idempotent`].

/// Whether `method` is idempotent per RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT and
/// DELETE. Method names are case-sensitive (RFC 9110 §9.1), so `get` is not GET.
pub fn is_idempotent(method: &[u8]) -> bool {
    matches!(
        method,
        b"GET" | b"HEAD" | b"OPTIONS" | b"TRACE" | b"PUT" | b"DELETE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_9110_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent(m.as_bytes()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "", "GETX"] {
            assert!(!is_idempotent(m.as_bytes()), "{m}");
        }
    }
}
