//! Host patterns of routes (`example.com`, `*.example.com`, either with an optional
//! `:port`) and how a request's `Host` is compared with them: case-insensitively, with the
//! port left out on both sides.

use std::net::Ipv6Addr;

/// Longest host name DNS allows.
const MAX_HOST_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// A compiled host condition: lower-case, without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// The host itself, e.g. `example.com` or `[::1]`.
    Exact(String),
    /// Any subdomain of a suffix, stored with its leading dot: `*.example.com` is
    /// `Subdomain(".example.com")`, matching `a.example.com` and `a.b.example.com` but not
    /// `example.com`.
    Subdomain(String),
}

impl HostMatch {
    /// Parses a route's `host`; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<HostMatch, String> {
        let host = strip_pattern_port(pattern)?;
        if host.len() > MAX_HOST_LEN {
            return Err(format!("is longer than {MAX_HOST_LEN} characters"));
        }
        if let Some(inner) = host.strip_prefix('[') {
            let address = inner.strip_suffix(']').unwrap_or(inner);
            return match address.parse::<Ipv6Addr>() {
                Ok(_) if inner.ends_with(']') => Ok(HostMatch::Exact(host.to_ascii_lowercase())),
                _ => Err("is not a valid bracketed IPv6 address".to_owned()),
            };
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        check_labels(name)?;
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            HostMatch::Subdomain(format!(".{name}"))
        } else {
            HostMatch::Exact(name)
        })
    }

    /// Whether a request host (already without port, see [`request_host`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Exact(expected) => host.eq_ignore_ascii_case(expected),
            HostMatch::Subdomain(suffix) => {
                host.len() > suffix.len()
                    && host
                        .get(host.len() - suffix.len()..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

/// The host part of a request's `Host` header or authority: without `:port` and without a
/// trailing dot. Borrows, never allocates.
pub fn request_host(authority: &str) -> &str {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => &authority[..=end],
            None => authority,
        };
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// The pattern without its `:port`, after checking the port is 1 to 65535.
fn strip_pattern_port(pattern: &str) -> Result<&str, String> {
    let (host, port) = if pattern.starts_with('[') {
        // An unclosed bracket is left for the IPv6 check to report.
        let Some(end) = pattern.find(']') else {
            return Ok(pattern);
        };
        let (host, rest) = pattern.split_at(end + 1);
        if rest.is_empty() {
            return Ok(host);
        }
        match rest.strip_prefix(':') {
            Some(port) => (host, port),
            None => return Err("has text after the IPv6 address that is not a `:port`".into()),
        }
    } else {
        match pattern.rsplit_once(':') {
            Some(pair) => pair,
            None => return Ok(pattern),
        }
    };
    let valid = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port > 0);
    if valid {
        Ok(host)
    } else {
        Err(format!(
            "has an invalid port {port:?} (expected 1 to 65535)"
        ))
    }
}

/// Dot-separated labels of letters, digits and inner hyphens, each 1 to 63 characters.
fn check_labels(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".to_owned());
    }
    for label in name.split('.') {
        if label == "*" {
            return Err("may only use `*` as the whole first label, as in `*.example.com`".into());
        }
        if label.is_empty() {
            return Err(
                "has an empty label (two dots in a row, or a leading or trailing dot)".into(),
            );
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(format!(
                "has a label longer than {MAX_LABEL_LEN} characters"
            ));
        }
        if let Some(bad) = label
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && *c != '-')
        {
            return Err(format!(
                "contains {bad:?}; a host name has letters, digits, '-' and '.'"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("has a label that starts or ends with '-'".to_owned());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(pattern: &str) -> HostMatch {
        match HostMatch::parse(pattern) {
            Ok(host) => host,
            Err(error) => panic!("{pattern} should parse: {error}"),
        }
    }

    #[test]
    fn parses_exact_wildcard_port_and_ipv6() {
        assert_eq!(
            parsed("Example.COM"),
            HostMatch::Exact("example.com".into())
        );
        assert_eq!(
            parsed("*.example.com"),
            HostMatch::Subdomain(".example.com".into())
        );
        assert_eq!(
            parsed("example.com:8080"),
            HostMatch::Exact("example.com".into())
        );
        assert_eq!(
            parsed("*.example.com:443"),
            HostMatch::Subdomain(".example.com".into())
        );
        assert_eq!(parsed("10.0.0.1"), HostMatch::Exact("10.0.0.1".into()));
        assert_eq!(parsed("[::1]:8080"), HostMatch::Exact("[::1]".into()));
        assert_eq!(parsed("localhost"), HostMatch::Exact("localhost".into()));
    }

    #[test]
    fn rejects_bad_patterns() {
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "foo*.com",
            "a..b",
            ".a",
            "a.",
            "-a.com",
            "a-.com",
            "a_b.com",
            "a b",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "[::1",
            "[zz]",
            "[::1]x",
            "http://example.com",
        ] {
            assert!(HostMatch::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long_label = "a".repeat(64);
        assert!(HostMatch::parse(&long_label).is_err());
    }

    #[test]
    fn request_host_drops_port_and_trailing_dot() {
        assert_eq!(request_host("Example.com:8080"), "Example.com");
        assert_eq!(request_host("example.com."), "example.com");
        assert_eq!(request_host("example.com"), "example.com");
        assert_eq!(request_host("[::1]:8080"), "[::1]");
        assert_eq!(request_host("[::1]"), "[::1]");
    }

    #[test]
    fn matching_is_case_insensitive_and_wildcards_exclude_the_apex() {
        let exact = parsed("example.com");
        assert!(exact.matches("EXAMPLE.com"));
        assert!(!exact.matches("www.example.com"));
        let wildcard = parsed("*.example.com");
        assert!(wildcard.matches("a.example.com"));
        assert!(wildcard.matches("A.B.Example.Com"));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches(".example.com"));
        assert!(!wildcard.matches("badexample.com"));
    }
}
