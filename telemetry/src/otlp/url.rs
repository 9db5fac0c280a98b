//! [`CollectorUrl`]: the OTLP/HTTP traces endpoint, `http://host[:port][/path]`.

use std::fmt;

/// The OTLP/HTTP port collectors listen on by default.
pub const DEFAULT_OTLP_HTTP_PORT: u16 = 4318;
/// The OTLP/HTTP path for traces, used when the URL names no path.
pub const DEFAULT_TRACES_PATH: &str = "/v1/traces";

/// Why a collector URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Only `http://` is supported (the exporter has no TLS).
    #[error("collector URL must start with http:// (TLS is not supported): {0:?}")]
    Scheme(String),
    /// No host after the scheme.
    #[error("collector URL has no host: {0:?}")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("collector URL has an invalid port: {0:?}")]
    Port(String),
    /// Characters that cannot appear in a request line.
    #[error("collector URL has spaces or control characters: {0:?}")]
    Characters(String),
}

/// Where spans are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    host: String,
    port: u16,
    path: String,
}

impl CollectorUrl {
    /// Parses `http://host[:port][/path]`; the port defaults to 4318 and an empty path (or
    /// `/`) to `/v1/traces`. IPv6 hosts are written in brackets.
    pub fn parse(url: &str) -> Result<CollectorUrl, UrlError> {
        if url.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(UrlError::Characters(url.to_string()));
        }
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| UrlError::Scheme(url.to_string()))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6
                .find(']')
                .ok_or_else(|| UrlError::NoHost(url.to_string()))?;
            let port = &v6[end + 1..];
            let port = match port.strip_prefix(':') {
                Some(p) => Some(p),
                None if port.is_empty() => None,
                None => return Err(UrlError::Port(url.to_string())),
            };
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(url.to_string()));
        }
        let port = match port {
            None => DEFAULT_OTLP_HTTP_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return Err(UrlError::Port(url.to_string())),
            },
        };
        let path = if path.is_empty() || path == "/" {
            DEFAULT_TRACES_PATH.to_string()
        } else {
            path.to_string()
        };
        Ok(CollectorUrl {
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The `Host` header value.
    pub(crate) fn host_header(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for CollectorUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.host_header(), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let url =
            CollectorUrl::parse("http://otel-collector.observability:4318/v1/traces").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("otel-collector.observability", 4318, "/v1/traces")
        );
        let url = CollectorUrl::parse("http://127.0.0.1").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("127.0.0.1", 4318, "/v1/traces")
        );
        let url = CollectorUrl::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!((url.port(), url.path()), (9, "/v1/traces"));
        let url = CollectorUrl::parse("http://[::1]:4318/custom/traces?x=1").unwrap();
        assert_eq!(
            (url.host(), url.port(), url.path()),
            ("::1", 4318, "/custom/traces?x=1")
        );
        assert_eq!(url.host_header(), "[::1]:4318");
        assert_eq!(url.to_string(), "http://[::1]:4318/custom/traces?x=1");
        assert_eq!(CollectorUrl::parse("http://[::1]").unwrap().port(), 4318);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let err = |s: &str| CollectorUrl::parse(s).unwrap_err();
        assert_eq!(
            err("https://c:4318"),
            UrlError::Scheme("https://c:4318".into())
        );
        assert_eq!(err("c:4318"), UrlError::Scheme("c:4318".into()));
        assert_eq!(err("http://:4318"), UrlError::NoHost("http://:4318".into()));
        assert_eq!(err("http://c:0"), UrlError::Port("http://c:0".into()));
        assert_eq!(
            err("http://c:99999"),
            UrlError::Port("http://c:99999".into())
        );
        assert_eq!(err("http://c:x/"), UrlError::Port("http://c:x/".into()));
        assert_eq!(err("http://[::1]x"), UrlError::Port("http://[::1]x".into()));
        assert_eq!(err("http://[::1"), UrlError::NoHost("http://[::1".into()));
        assert_eq!(
            err("http://c/a b"),
            UrlError::Characters("http://c/a b".into())
        );
    }
}
