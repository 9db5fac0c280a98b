//! Reading one admin request from the bytes received so far: complete, need more bytes, or
//! refused (and why). A pure function of the buffer, so every outcome is unit-tested.

/// Largest admin request accepted, head and body together.
pub const MAX_ADMIN_REQUEST: usize = 64 * 1024;
/// Most header fields in an admin request.
const MAX_ADMIN_HEADERS: usize = 64;

/// One admin request: its method, its path without the query, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    Complete(AdminRequest),
    /// A prefix of a request within [`MAX_ADMIN_REQUEST`]: read more.
    Partial,
    /// Not a request this server takes; the reason goes into the 400 answer.
    Invalid(&'static str),
}

/// Parse `buf`, everything received on the connection so far.
pub fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_ADMIN_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_ADMIN_REQUEST => {
            return Parsed::Invalid("request larger than 64 KiB")
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid("not an HTTP/1.x request"),
    };
    if req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        return Parsed::Invalid("send the body with Content-Length");
    }
    let mut lengths = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"));
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => 0,
        (Some(h), None) => match std::str::from_utf8(h.value)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            Some(n) => n,
            None => return Parsed::Invalid("bad Content-Length"),
        },
        (Some(_), Some(_)) => return Parsed::Invalid("more than one Content-Length"),
    };
    let Some(total) = head_len
        .checked_add(length)
        .filter(|&t| t <= MAX_ADMIN_REQUEST)
    else {
        return Parsed::Invalid("request larger than 64 KiB");
    };
    if buf.len() < total {
        return Parsed::Partial;
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Parsed::Invalid("not an HTTP/1.x request");
    };
    let path = target.split('?').next().unwrap_or_default();
    Parsed::Complete(AdminRequest {
        method: method.to_string(),
        path: path.to_string(),
        body: buf[head_len..total].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(method: &str, path: &str, body: &[u8]) -> Parsed {
        Parsed::Complete(AdminRequest {
            method: method.into(),
            path: path.into(),
            body: body.into(),
        })
    }

    #[test]
    fn a_request_is_complete_only_with_its_whole_body() {
        let whole = b"PUT /log-level?x=1 HTTP/1.1\r\nContent-Length: 5\r\n\r\ndebug";
        for end in 0..whole.len() {
            assert_eq!(parse(&whole[..end]), Parsed::Partial, "{end} bytes");
        }
        assert_eq!(parse(whole), complete("PUT", "/log-level", b"debug"));
        assert_eq!(
            parse(b"GET /live HTTP/1.0\r\n\r\n"),
            complete("GET", "/live", b"")
        );
    }

    #[test]
    fn refusals_name_their_reason() {
        assert_eq!(
            parse(b"\x16\x03\x01 hello\r\n\r\n"),
            Parsed::Invalid("not an HTTP/1.x request")
        );
        assert_eq!(
            parse(b"PUT /log-level HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            Parsed::Invalid("bad Content-Length")
        );
        assert_eq!(
            parse(b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx"),
            Parsed::Invalid("more than one Content-Length")
        );
        assert_eq!(
            parse(b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Parsed::Invalid("send the body with Content-Length")
        );
    }

    #[test]
    fn the_size_limit_holds_at_and_one_byte_over() {
        let head = b"PUT /log-level HTTP/1.1\r\nContent-Length: ";
        let at = |body_len: usize| {
            let mut r = head.to_vec();
            let digits = format!("{body_len}\r\n\r\n");
            r.extend_from_slice(digits.as_bytes());
            r
        };
        // Both lengths below have five digits, as 10000 has.
        let head_len = at(10_000).len();
        let body_at = MAX_ADMIN_REQUEST - head_len;
        let mut exact = at(body_at);
        assert_eq!(exact.len(), head_len);
        exact.resize(MAX_ADMIN_REQUEST, b'a');
        assert!(matches!(parse(&exact), Parsed::Complete(_)));
        let mut over = at(body_at + 1);
        over.resize(MAX_ADMIN_REQUEST + 1, b'a');
        assert_eq!(parse(&over), Parsed::Invalid("request larger than 64 KiB"));
        // A head that never ends is refused once it passes the limit.
        let mut endless = b"GET / HTTP/1.1\r\nx: ".to_vec();
        endless.resize(MAX_ADMIN_REQUEST, b'a');
        assert_eq!(parse(&endless), Parsed::Partial);
        endless.push(b'a');
        assert_eq!(
            parse(&endless),
            Parsed::Invalid("request larger than 64 KiB")
        );
    }
}
