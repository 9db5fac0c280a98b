//! Where one request goes and under which rules: the route (when the connection's requests
//! are routed), the service or fixed address, the settings in force, and the deadline.
//! Protocol-neutral: a codec hands over the host, path and headers it parsed.

use super::{Origin, Target};
use crate::core::Core;
use crate::error::ProxyError;
use coremesh_discovery::{CompiledRoute, Settings, Snapshot};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// What routing looks at in a request, whatever its protocol.
pub struct RouteInput<'a, H> {
    /// The authority (absolute-form target, `Host`, or `:authority`).
    pub host: Option<&'a str>,
    /// The path with its query.
    pub path: &'a str,
    /// The header lines, by name and value.
    pub headers: H,
}

/// Where one request goes: the route (when routed), the service, or a fixed address.
pub struct Plan<'s> {
    pub route: Option<&'s CompiledRoute>,
    pub route_index: usize,
    /// `usize::MAX` when the request goes to a fixed address.
    pub service_index: usize,
    pub fixed_endpoint: Option<SocketAddr>,
    /// Add the client's address to `X-Forwarded-For` whatever the settings say.
    pub forwarded_for: bool,
    /// Passed through to an original destination no service claims, as written.
    pub passthrough: bool,
}

impl<'s> Plan<'s> {
    fn service(service_index: usize) -> Self {
        Plan {
            route: None,
            route_index: usize::MAX,
            service_index,
            fixed_endpoint: None,
            forwarded_for: false,
            passthrough: false,
        }
    }

    fn address(address: SocketAddr) -> Self {
        Plan {
            route: None,
            route_index: usize::MAX,
            service_index: usize::MAX,
            fixed_endpoint: Some(address),
            forwarded_for: true,
            passthrough: false,
        }
    }

    fn passthrough(destination: SocketAddr) -> Self {
        Plan {
            forwarded_for: false,
            passthrough: true,
            ..Plan::address(destination)
        }
    }

    /// The settings the request runs under: the service's, the passthrough's, or the
    /// defaults for the application. `NoEndpoints` when the service is gone.
    pub fn settings<'c>(
        &self,
        core: &'c Core,
        snapshot: &'s Snapshot,
    ) -> Result<&'c Settings, ProxyError>
    where
        's: 'c,
    {
        match self.fixed_endpoint {
            Some(_) if self.passthrough => Ok(&snapshot.passthrough.settings),
            Some(_) => Ok(&core.defaults),
            None => snapshot
                .services
                .get(self.service_index)
                .map(|s| &s.settings)
                .ok_or(ProxyError::NoEndpoints),
        }
    }

    /// The request's deadline: the route's timeout (else the service's request timeout),
    /// capped by a remaining budget the caller sent — a header for a third party is not
    /// the proxy's to read, so a passthrough ignores it.
    pub fn deadline(
        &self,
        settings: &Settings,
        started: Instant,
        caller: Option<Duration>,
    ) -> Instant {
        let mut timeout = self
            .route
            .and_then(|r| r.timeout)
            .unwrap_or(Duration::from_millis(settings.request_timeout_ms));
        if let Some(caller) = caller.filter(|_| !self.passthrough) {
            timeout = timeout.min(caller);
        }
        started + timeout
    }
}

/// Plan a request that came in on a connection of `origin`: routed, sent to the service
/// claiming the original destination (or passed through), or to the application.
pub fn plan<'s, 'h, H>(
    core: &Core,
    snapshot: &'s Snapshot,
    origin: Origin,
    input: impl FnOnce() -> RouteInput<'h, H>,
) -> Result<Plan<'s>, ProxyError>
where
    H: Iterator<Item = (&'h str, &'h [u8])>,
{
    match origin.target {
        Target::Route => route(core, snapshot, input()).ok_or(ProxyError::NoRoute),
        Target::Destination(destination) => {
            Ok(match snapshot.service_for_destination(destination) {
                Some(service_index) => Plan::service(service_index),
                None => Plan::passthrough(destination),
            })
        }
        Target::Application(address) => Ok(Plan::address(address)),
    }
}

/// Route on host, path and headers: the route and the service it picks.
fn route<'s, 'h>(
    core: &Core,
    snapshot: &'s Snapshot,
    input: RouteInput<'h, impl Iterator<Item = (&'h str, &'h [u8])>>,
) -> Option<Plan<'s>> {
    // Taken out of the core's scratch and put back before any await.
    let mut route_headers: Vec<httparse::Header<'_>> =
        std::mem::take(&mut *core.route_scratch.borrow_mut());
    route_headers.clear();
    route_headers.extend(
        input
            .headers
            .map(|(name, value)| httparse::Header { name, value }),
    );
    let route = snapshot.select_route(input.host, input.path, &route_headers);
    route_headers.clear();
    *core.route_scratch.borrow_mut() = route_headers
        .into_iter()
        .map(|_| httparse::EMPTY_HEADER)
        .collect();
    let route = route?;
    let service_index = route.pick_service(core.random_u32());
    let route_index = index_in(&snapshot.routes, route);
    Some(Plan {
        route: Some(route),
        route_index,
        service_index,
        fixed_endpoint: None,
        forwarded_for: false,
        passthrough: false,
    })
}

/// The index of `item`, an element of `items`, from its address instead of a search
/// (`usize::MAX` if it is not one).
fn index_in<T>(items: &[T], item: &T) -> usize {
    let offset = (item as *const T as usize).wrapping_sub(items.as_ptr() as usize);
    let i = offset / std::mem::size_of::<T>().max(1);
    match items.get(i) {
        Some(found) if std::ptr::eq(found, item) => i,
        _ => usize::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_in_finds_each_element_and_nothing_else() {
        let items = [10u64, 20, 30];
        for (i, item) in items.iter().enumerate() {
            assert_eq!(index_in(&items, item), i);
        }
        let other = 20u64;
        assert_eq!(index_in(&items, &other), usize::MAX);
        let empty: [u64; 0] = [];
        assert_eq!(index_in(&empty, &items[0]), usize::MAX);
        let units = [(), ()];
        assert_eq!(
            index_in(&units, &units[1]),
            0,
            "zero-sized: the first match"
        );
    }
}
