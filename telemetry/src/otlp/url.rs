//! [`CollectorUrl`]: the OTLP/HTTP traces endpoint, `http://host[:port][/path][?query]`,
//! parsed with the `url` crate (WHATWG URL rules: IPv6 literals in brackets, IDNA, percent
//! encoding) and then checked for what the exporter can use.
//!
//! - Only `http://` (the exporter has no TLS).
//! - No user info (`http://user:pass@host`): the exporter sends no `Authorization` header,
//!   and credentials in a plain-HTTP URL would travel in clear text; a URL carrying them is
//!   refused with [`UrlError::UserInfo`] rather than quietly sent without them.
//! - The port defaults to 4318 (the OTLP/HTTP port), also when it is left out; an explicit
//!   `:80` is kept (the `url` crate drops a port equal to the scheme's default, so whether
//!   one was written is read from the authority as given).
//! - An empty path (or `/`) means `/v1/traces`; a query is kept; a fragment is not sent
//!   (it never is in HTTP).

use std::fmt;
use url::{Host, Url};

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
    /// `user[:password]@` before the host.
    #[error(
        "collector URL must not carry a user name or password (the exporter sends no \
         credentials, and http:// would expose them): {0:?}"
    )]
    UserInfo(String),
    /// Not a URL at all.
    #[error("collector URL is invalid ({reason}): {url:?}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What the URL parser said.
        reason: String,
    },
}

/// Where spans are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorUrl {
    host: String,
    port: u16,
    path: String,
}

impl CollectorUrl {
    /// Parses `http://host[:port][/path]`; see the module notes for what is refused and
    /// what the defaults are.
    pub fn parse(text: &str) -> Result<CollectorUrl, UrlError> {
        let refuse = |make: fn(String) -> UrlError| make(text.to_string());
        // The URL parser would quietly strip these; a configured value holding them is a
        // mistake worth naming.
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(refuse(UrlError::Characters));
        }
        let url = Url::parse(text).map_err(|error| match error {
            url::ParseError::EmptyHost => refuse(UrlError::NoHost),
            url::ParseError::InvalidPort => refuse(UrlError::Port),
            url::ParseError::RelativeUrlWithoutBase => refuse(UrlError::Scheme),
            other => UrlError::Invalid {
                url: text.to_string(),
                reason: other.to_string(),
            },
        })?;
        if url.scheme() != "http" || !has_authority(text) {
            return Err(refuse(UrlError::Scheme));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse(UrlError::UserInfo));
        }
        let host = match url.host() {
            Some(Host::Domain(domain)) if !domain.is_empty() => domain.to_string(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
            _ => return Err(refuse(UrlError::NoHost)),
        };
        let port = match url.port() {
            Some(0) => return Err(refuse(UrlError::Port)),
            Some(port) => port,
            // Elided by the parser because it equals http's 80, or not written at all.
            None if explicit_port(text) => 80,
            None => DEFAULT_OTLP_HTTP_PORT,
        };
        let mut path = match url.path() {
            "" | "/" => DEFAULT_TRACES_PATH.to_string(),
            path => path.to_string(),
        };
        if let Some(query) = url.query() {
            path.push('?');
            path.push_str(query);
        }
        Ok(CollectorUrl { host, port, path })
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request target: the path and query, percent-encoded.
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

/// The authority as written: after `scheme://`, up to the path, query or fragment.
fn authority(text: &str) -> Option<&str> {
    let (_, rest) = text.split_once("//")?;
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Whether `scheme://` is followed by an authority (`http:host` is refused: the parser
/// would accept it, but it is more likely a typo than an intent).
fn has_authority(text: &str) -> bool {
    text.split_once(':')
        .is_some_and(|(_, rest)| rest.starts_with("//"))
}

/// Whether the authority as written names a port (`host:port`, `[v6]:port`).
fn explicit_port(text: &str) -> bool {
    let Some(authority) = authority(text) else {
        return false;
    };
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let after_host = match host_and_port.rfind(']') {
        Some(end) => &host_and_port[end + 1..],
        None => host_and_port,
    };
    after_host.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &str) -> (String, u16, String) {
        let url = CollectorUrl::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (url.host().to_string(), url.port(), url.path().to_string())
    }

    fn owned(host: &str, port: u16, path: &str) -> (String, u16, String) {
        (host.to_string(), port, path.to_string())
    }

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(
            parts("http://otel-collector.observability:4318/v1/traces"),
            owned("otel-collector.observability", 4318, "/v1/traces")
        );
        assert_eq!(
            parts("http://Collector.Example"),
            owned("collector.example", 4318, "/v1/traces")
        );
        assert_eq!(
            parts("http://127.0.0.1:9/"),
            owned("127.0.0.1", 9, "/v1/traces")
        );
    }

    #[test]
    fn ipv6_literals_keep_their_port_and_header_form() {
        assert_eq!(parts("http://[::1]:4318"), owned("::1", 4318, "/v1/traces"));
        assert_eq!(parts("http://[::1]"), owned("::1", 4318, "/v1/traces"));
        assert_eq!(
            parts("http://[fd00::0001]:9999/custom/traces?x=1"),
            owned("fd00::1", 9999, "/custom/traces?x=1")
        );
        let url = CollectorUrl::parse("http://[::1]:4318").unwrap();
        assert_eq!(url.host_header(), "[::1]:4318");
        assert_eq!(url.to_string(), "http://[::1]:4318/v1/traces");
    }

    #[test]
    fn the_default_port_is_4318_but_an_explicit_80_is_kept() {
        assert_eq!(parts("http://c").1, 4318);
        assert_eq!(parts("http://c/v1/traces").1, 4318);
        assert_eq!(parts("http://c:80").1, 80);
        assert_eq!(parts("http://c:80/v1/traces").1, 80);
        assert_eq!(parts("http://[::1]:80").1, 80);
        assert_eq!(parts("http://c:4318").1, 4318);
    }

    #[test]
    fn paths_queries_and_fragments() {
        assert_eq!(parts("http://c/otlp/v1/traces").2, "/otlp/v1/traces");
        assert_eq!(parts("http://c?tenant=a").2, "/v1/traces?tenant=a");
        assert_eq!(parts("http://c/p#frag").2, "/p");
        assert_eq!(parts("http://c/a%20b").2, "/a%20b");
        assert_eq!(parts("http://c/x/../v1/traces").2, "/v1/traces");
    }

    #[test]
    fn user_info_is_refused_with_a_clear_error() {
        for text in [
            "http://user:secret@c:4318/v1/traces",
            "http://user@c",
            "http://:secret@[::1]:4318",
        ] {
            let error = CollectorUrl::parse(text).unwrap_err();
            assert_eq!(error, UrlError::UserInfo(text.into()));
            assert!(
                error.to_string().contains("user name or password"),
                "{error}"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let err = |s: &str| CollectorUrl::parse(s).unwrap_err();
        assert_eq!(
            err("https://c:4318"),
            UrlError::Scheme("https://c:4318".into())
        );
        assert_eq!(err("c:4318"), UrlError::Scheme("c:4318".into()));
        assert_eq!(err("http:c"), UrlError::Scheme("http:c".into()));
        assert_eq!(err("/v1/traces"), UrlError::Scheme("/v1/traces".into()));
        assert_eq!(err("http://:4318"), UrlError::NoHost("http://:4318".into()));
        assert_eq!(err("http://c:0"), UrlError::Port("http://c:0".into()));
        assert_eq!(
            err("http://c:99999"),
            UrlError::Port("http://c:99999".into())
        );
        assert_eq!(err("http://c:x/"), UrlError::Port("http://c:x/".into()));
        assert!(matches!(err("http://[::1]x"), UrlError::Invalid { .. }));
        assert!(matches!(err("http://[::1"), UrlError::Invalid { .. }));
        assert_eq!(
            err("http://c/a b"),
            UrlError::Characters("http://c/a b".into())
        );
        assert_eq!(
            err("http://c/\tx"),
            UrlError::Characters("http://c/\tx".into())
        );
    }
}
