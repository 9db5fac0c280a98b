//! Compiled routes and request matching: [`Snapshot::select_route`] picks the first route
//! whose host, path and header conditions all hold, and [`CompiledRoute::pick_service`]
//! turns a random number into one of its weighted services. Both are pure and allocate
//! nothing per request.
//!
//! - host: case-insensitive, the request's `:port` ignored; `*.example.com` matches every
//!   subdomain but not `example.com` itself.
//! - path: the query (from '?') is ignored; `path_exact` compares whole paths;
//!   `path_prefix` compares whole segments, as Gateway API's `PathPrefix`: `/api` matches
//!   `/api`, `/api/` and `/api/x` but not `/apix`, and `/` matches every path.
//! - headers: names case-insensitive, `exact` values compared byte for byte (any of
//!   several same-named headers may match), `present` needs the header at all.

use crate::host::{request_host, HostMatch};
use crate::snapshot::Snapshot;
use crate::RouteConfig;
use std::time::Duration;

/// A route ready for matching.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledRoute {
    /// The configured `name`, else `routes[INDEX]`.
    pub name: String,
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    /// All must hold.
    pub headers: Vec<HeaderCondition>,
    /// `(service index, weight)`; a single `service` is one target of weight 1.
    pub targets: Vec<(usize, u32)>,
    /// The route's `timeout_ms`.
    pub timeout: Option<Duration>,
    /// The route's `attempt_timeout_ms`.
    pub attempt_timeout: Option<Duration>,
    /// Statuses on which a safe request is retried elsewhere.
    pub retry_on: Vec<u16>,
    /// Retry requests that are not idempotent too.
    pub retry_non_idempotent: bool,
    /// gRPC status codes on which a call is retried elsewhere.
    pub grpc_retry_on: Vec<u32>,
}

/// A path condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    /// Stored without a trailing '/' (except the root prefix "/" itself).
    Prefix(String),
}

/// A header condition; `name` is stored in lower case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCondition {
    pub name: String,
    pub value: HeaderValueMatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValueMatch {
    /// The value, byte for byte.
    Exact(Vec<u8>),
    /// Any value.
    Present,
}

impl Snapshot {
    /// The first route matching a request with this `Host` (or authority, port allowed),
    /// request-target path (query allowed) and headers; `None` when no route matches.
    pub fn select_route(
        &self,
        host: Option<&str>,
        path: &str,
        headers: &[httparse::Header<'_>],
    ) -> Option<&CompiledRoute> {
        let host = host.map(request_host);
        let path = path.split_once('?').map_or(path, |(path, _query)| path);
        self.routes
            .iter()
            .find(|route| route.matches(host, path, headers))
    }
}

impl CompiledRoute {
    /// `index` names the route when it has no name; `service_index` resolves service
    /// names (unknown ones are dropped, see [`Snapshot::build`]).
    pub(crate) fn compile(
        index: usize,
        route: &RouteConfig,
        service_index: &dyn Fn(&str) -> Option<usize>,
    ) -> CompiledRoute {
        let path = match (&route.path_exact, &route.path_prefix) {
            (Some(exact), _) => Some(PathMatch::Exact(exact.clone())),
            (None, Some(prefix)) => {
                let trimmed = prefix.trim_end_matches('/');
                Some(PathMatch::Prefix(
                    if trimmed.is_empty() { "/" } else { trimmed }.to_owned(),
                ))
            }
            (None, None) => None,
        };
        let headers = route
            .headers
            .iter()
            .map(|header| HeaderCondition {
                name: header.name.to_ascii_lowercase(),
                value: match &header.exact {
                    Some(value) => HeaderValueMatch::Exact(value.as_bytes().to_vec()),
                    None => HeaderValueMatch::Present,
                },
            })
            .collect();
        let targets = match &route.service {
            Some(name) => service_index(name)
                .map(|index| (index, 1))
                .into_iter()
                .collect(),
            None => route
                .split
                .iter()
                .filter_map(|target| Some((service_index(&target.service)?, target.weight)))
                .collect(),
        };
        CompiledRoute {
            name: route
                .name
                .clone()
                .unwrap_or_else(|| format!("routes[{index}]")),
            // An invalid pattern (only in an unvalidated config) matches exactly as written.
            host: route.host.as_deref().map(|host| {
                HostMatch::parse(host)
                    .unwrap_or_else(|_| HostMatch::Exact(host.to_ascii_lowercase()))
            }),
            path,
            headers,
            targets,
            timeout: route.timeout_ms.map(Duration::from_millis),
            attempt_timeout: route.attempt_timeout_ms.map(Duration::from_millis),
            retry_on: route.retry_on.clone(),
            retry_non_idempotent: route.retry_non_idempotent,
            grpc_retry_on: route.grpc_retry_on.iter().map(|g| g.code()).collect(),
        }
    }

    /// Whether a request matches: `host` without port, `path` without query.
    pub fn matches(
        &self,
        host: Option<&str>,
        path: &str,
        headers: &[httparse::Header<'_>],
    ) -> bool {
        let host_ok = match (&self.host, host) {
            (None, _) => true,
            (Some(pattern), Some(host)) => pattern.matches(host),
            (Some(_), None) => false,
        };
        host_ok
            && self
                .path
                .as_ref()
                .is_none_or(|condition| condition.matches(path))
            && self
                .headers
                .iter()
                .all(|condition| condition.matches(headers))
    }

    /// The service index for a uniformly random `roll`: target `i` gets the rolls in
    /// proportion to its weight (`roll * total >> 32` falls in its cumulative range), so
    /// a given roll always gives the same service. With no targets (only possible for an
    /// unvalidated config) the answer is 0.
    pub fn pick_service(&self, roll: u32) -> usize {
        let total: u64 = self
            .targets
            .iter()
            .map(|&(_, weight)| u64::from(weight))
            .sum();
        let Some(&(first, _)) = self.targets.first() else {
            return 0;
        };
        if total == 0 {
            return first;
        }
        let point = (u64::from(roll) * total) >> 32;
        let mut end = 0;
        for &(service, weight) in &self.targets {
            end += u64::from(weight);
            if point < end {
                return service;
            }
        }
        first
    }
}

impl PathMatch {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(expected) => path == expected,
            PathMatch::Prefix(prefix) if prefix == "/" => true,
            PathMatch::Prefix(prefix) => {
                path.starts_with(prefix.as_str())
                    && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
            }
        }
    }
}

impl HeaderCondition {
    pub fn matches(&self, headers: &[httparse::Header<'_>]) -> bool {
        headers.iter().any(|header| {
            header.name.eq_ignore_ascii_case(&self.name)
                && match &self.value {
                    HeaderValueMatch::Exact(expected) => header.value == expected.as_slice(),
                    HeaderValueMatch::Present => true,
                }
        })
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
