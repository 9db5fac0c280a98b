//! SPIFFE IDs (`spiffe://<trust domain>/<path>`) as the SPIFFE ID specification writes them,
//! and the patterns an authorization list matches them with (an exact ID, or a prefix
//! ending in `/*`).

use std::fmt;

/// The scheme and separator every SPIFFE ID starts with.
pub const SPIFFE_SCHEME: &str = "spiffe://";
/// Longest SPIFFE ID in bytes (the specification's limit for URI SANs).
pub const MAX_SPIFFE_ID_BYTES: usize = 2048;
/// Longest trust domain name in bytes.
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

/// A syntactically valid SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    text: String,
    /// Where the path starts in `text` (`text.len()` when there is no path).
    path_at: usize,
}

impl SpiffeId {
    /// Reads `text` by the SPIFFE ID rules: lowercase scheme `spiffe`, a non-empty trust
    /// domain of `[a-z0-9.-_]`, and a path of non-empty segments of `[A-Za-z0-9.-_]`, none of
    /// them `.` or `..`, without a trailing `/`; no port, user info, query or fragment.
    pub fn parse(text: &str) -> Result<SpiffeId, String> {
        if text.len() > MAX_SPIFFE_ID_BYTES {
            return Err(format!("longer than {MAX_SPIFFE_ID_BYTES} bytes"));
        }
        let Some(rest) = text.strip_prefix(SPIFFE_SCHEME) else {
            return Err(format!("{text:?} does not start with {SPIFFE_SCHEME:?}"));
        };
        let (domain, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if domain.is_empty() {
            return Err(format!("{text:?} has an empty trust domain"));
        }
        if domain.len() > MAX_TRUST_DOMAIN_BYTES {
            return Err(format!(
                "{text:?}: trust domain longer than {MAX_TRUST_DOMAIN_BYTES} bytes"
            ));
        }
        if let Some(c) = domain.chars().find(|c| !is_trust_domain_char(*c)) {
            return Err(format!(
                "{text:?}: trust domain character {c:?} (allowed: a-z 0-9 . - _)"
            ));
        }
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                if segment.is_empty() {
                    return Err(format!("{text:?}: empty path segment or trailing '/'"));
                }
                if segment == "." || segment == ".." {
                    return Err(format!("{text:?}: path segment {segment:?}"));
                }
                if let Some(c) = segment.chars().find(|c| !is_path_char(*c)) {
                    return Err(format!(
                        "{text:?}: path character {c:?} (allowed: A-Z a-z 0-9 . - _)"
                    ));
                }
            }
        }
        Ok(SpiffeId {
            text: text.to_owned(),
            path_at: SPIFFE_SCHEME.len() + domain.len(),
        })
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The trust domain (`example.org` of `spiffe://example.org/ns/a`).
    pub fn trust_domain(&self) -> &str {
        &self.text[SPIFFE_SCHEME.len()..self.path_at]
    }

    /// The path, empty or starting with `/`.
    pub fn path(&self) -> &str {
        &self.text[self.path_at..]
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for SpiffeId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(text)
    }
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// One entry of an `authorize` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPattern {
    /// This identity only.
    Exact(SpiffeId),
    /// `spiffe://td/ns/prod/*`: every identity under that path (stored with its trailing
    /// `/`); `spiffe://td/*` is the whole trust domain.
    Prefix(String),
}

impl IdPattern {
    /// An exact SPIFFE ID, or a SPIFFE ID followed by `/*`.
    pub fn parse(text: &str) -> Result<IdPattern, String> {
        match text.strip_suffix("/*") {
            Some(base) => {
                SpiffeId::parse(base)?;
                Ok(IdPattern::Prefix(format!("{base}/")))
            }
            None => SpiffeId::parse(text).map(IdPattern::Exact),
        }
    }

    /// Whether `id` is allowed by this pattern.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            IdPattern::Exact(exact) => exact == id,
            IdPattern::Prefix(prefix) => id.as_str().starts_with(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{IdPattern, SpiffeId};

    #[test]
    fn valid_ids_are_read_with_their_parts() {
        let id = match SpiffeId::parse("spiffe://td.example/ns/prod/sa/web") {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(id.trust_domain(), "td.example");
        assert_eq!(id.path(), "/ns/prod/sa/web");
        let bare = SpiffeId::parse("spiffe://td").map(|id| id.path().to_owned());
        assert_eq!(bare, Ok(String::new()));
    }

    #[test]
    fn invalid_ids_are_refused() {
        for text in [
            "http://td/a",
            "SPIFFE://td/a",
            "spiffe://",
            "spiffe:///a",
            "spiffe://TD/a",
            "spiffe://td:8080/a",
            "spiffe://user@td/a",
            "spiffe://td/a/",
            "spiffe://td//a",
            "spiffe://td/./a",
            "spiffe://td/../a",
            "spiffe://td/a?x=1",
            "spiffe://td/a#f",
            "spiffe://td/a b",
        ] {
            assert!(SpiffeId::parse(text).is_err(), "accepted {text}");
        }
        let long = format!("spiffe://td/{}", "a".repeat(2048));
        assert!(SpiffeId::parse(&long).is_err());
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let id = |t: &str| match SpiffeId::parse(t) {
            Ok(id) => id,
            Err(e) => panic!("{e}"),
        };
        let pattern = |t: &str| match IdPattern::parse(t) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        let prod = pattern("spiffe://td/ns/prod/*");
        assert!(prod.matches(&id("spiffe://td/ns/prod/sa/web")));
        assert!(!prod.matches(&id("spiffe://td/ns/production/sa/web")));
        assert!(!prod.matches(&id("spiffe://td/ns/prod")));
        assert!(!prod.matches(&id("spiffe://other/ns/prod/sa/web")));
        let exact = pattern("spiffe://td/ns/prod/sa/web");
        assert!(exact.matches(&id("spiffe://td/ns/prod/sa/web")));
        assert!(!exact.matches(&id("spiffe://td/ns/prod/sa/web2")));
        assert!(pattern("spiffe://td/*").matches(&id("spiffe://td/x")));
        assert!(IdPattern::parse("spiffe://td/ns/*/sa/web").is_err());
        assert!(IdPattern::parse("*").is_err());
    }
}
