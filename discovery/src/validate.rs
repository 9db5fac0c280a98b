//! Validation of a deserialized [`Config`]: every rule the types cannot express, each
//! broken rule reported as a [`Violation`] naming its field. All violations are collected,
//! not only the first.
//!
//! Rules: service names unique and well-formed; each service has static endpoints, `dns`
//! or `kubernetes` entries (see `validate_sources.rs` for those and for `[discovery]`), no
//! port 0, no duplicates; a route sends to exactly one of `service` /
//! non-empty `split`, only to services that exist, with split weights adding up to more
//! than 0; at most one of `path_prefix` / `path_exact`, each starting with '/'; header
//! conditions on valid names with exactly one of `exact` / `present = true`; a valid host
//! pattern; timeouts and limits within the bounds below. Sidecar sides (`[inbound]`,
//! `[outbound]`): every listener (`proxy.listen`, `proxy.admin`, each address of both
//! sides) on its own address, IPv4 and IPv6 apart (IPv6 listeners are bound
//! `IPV6_V6ONLY`, so `0.0.0.0:P` and `[::]:P` do not collide); a side's `listen` not empty;
//! timeouts, buffers and `detect_max_bytes` within bounds; opaque ports and `app_port` not
//! 0; the application (`app_address:app_port`) not one of the proxy's own listeners (it
//! would loop); a service's `addresses` neither port 0 nor unspecified, each claimed by one
//! service only, and none equal to an outbound listener (that would loop).

use crate::field_path::FieldPath;
use crate::host::HostMatch;
use crate::{
    Config, HeaderMatch, InboundSettings, ProxySettings, RouteConfig, ServiceConfig, Settings,
    SettingsOverride, SideSettings,
};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};

/// Longest timeout accepted anywhere (one day): longer ones are surely typos, and keeping
/// them bounded keeps deadline arithmetic far from overflow.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;
/// Smallest `max_header_bytes`: a request line and a few headers must fit.
pub const MIN_MAX_HEADER_BYTES: usize = 1024;
/// Largest `max_header_bytes`: each connection may buffer this much.
pub const MAX_MAX_HEADER_BYTES: usize = 1024 * 1024;
/// Smallest `max_headers`: `Host`, `Content-Length` and a few more must fit.
pub const MIN_MAX_HEADERS: usize = 8;
/// Largest `max_headers`: the per-connection header array has this many slots.
pub const MAX_MAX_HEADERS: usize = 1024;
/// Largest `pool_max_idle` (idle connections per endpoint per core).
pub const MAX_POOL_MAX_IDLE: usize = 10_000;
/// Largest `max_connections` per core.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Largest `proxy.admin_max_connections`: each may hold a control-plane thread.
pub const MAX_ADMIN_CONNECTIONS: usize = 10_000;
/// Largest `proxy.cores`.
pub const MAX_CORES: usize = 1024;
/// Smallest `tcp_buffer_bytes` of a side: smaller buffers only add system calls.
pub const MIN_TCP_BUFFER_BYTES: usize = 512;
/// Largest `tcp_buffer_bytes` of a side: two of these per opaque connection.
pub const MAX_TCP_BUFFER_BYTES: usize = 16 * 1024 * 1024;
/// Smallest `detect_max_bytes`: the HTTP/2 preface (24 bytes) and a short HTTP/1 request
/// line must fit.
pub const MIN_DETECT_MAX_BYTES: usize = 64;
/// Largest `detect_max_bytes`: each connection being detected may buffer this much.
pub const MAX_DETECT_MAX_BYTES: usize = 1024 * 1024;

/// One broken rule: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: FieldPath,
    pub message: String,
}

/// Every rule `config` breaks, in the order of the file's sections; empty when valid.
pub fn validate(config: &Config) -> Vec<Violation> {
    let mut out = Violations(Vec::new());
    let root = FieldPath::root();
    check_proxy(&root.key("proxy"), &config.proxy, &mut out);
    check_settings(&root.key("defaults"), &config.defaults, &mut out);
    let services = root.key("services");
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (index, service) in config.services.iter().enumerate() {
        let path = services.index(index);
        check_service(&path, service, &mut out);
        if let Some(first) = names.insert(&service.name, index) {
            names.insert(&service.name, first);
            let message = format!(
                "duplicate service name {:?} (first defined at services[{first}])",
                service.name
            );
            out.push(path.key("name"), message);
        }
    }
    check_sides(config, &mut out);
    for (field, message) in config.http2.violations() {
        out.push(root.key("http2").key(field), message);
    }
    let routes = root.key("routes");
    for (index, route) in config.routes.iter().enumerate() {
        check_route(&routes.index(index), route, &names, &mut out);
    }
    let discovery = root.key("discovery");
    out.0.extend(crate::validate_sources::check_discovery(
        &discovery,
        &config.discovery,
    ));
    out.0.extend(crate::identity::violations(config));
    if let Err(e) = config.telemetry.validate() {
        out.push(root.key("telemetry").key(e.field), e.message);
    }
    out.0
}

struct Violations(Vec<Violation>);

impl Violations {
    fn push(&mut self, path: FieldPath, message: impl Into<String>) {
        self.0.push(Violation {
            path,
            message: message.into(),
        });
    }

    fn timeout(&mut self, path: FieldPath, value: u64) {
        if value == 0 {
            self.push(path, "must be greater than 0");
        } else if value > MAX_TIMEOUT_MS {
            self.push(
                path,
                format!("{value} ms is more than one day ({MAX_TIMEOUT_MS} ms)"),
            );
        }
    }

    fn range(&mut self, path: FieldPath, value: usize, min: usize, max: usize) {
        if value < min || value > max {
            self.push(path, format!("{value} is outside {min} to {max}"));
        }
    }
}

fn check_proxy(path: &FieldPath, proxy: &ProxySettings, out: &mut Violations) {
    if proxy.cores > MAX_CORES {
        let message = format!(
            "{} is more than {MAX_CORES} (0 means one per CPU)",
            proxy.cores
        );
        out.push(path.key("cores"), message);
    }
    if proxy.shutdown_grace_ms > MAX_TIMEOUT_MS {
        out.push(path.key("shutdown_grace_ms"), "is more than one day");
    }
    out.timeout(
        path.key("admin_request_timeout_ms"),
        proxy.admin_request_timeout_ms,
    );
    out.timeout(
        path.key("admin_write_timeout_ms"),
        proxy.admin_write_timeout_ms,
    );
    out.range(
        path.key("admin_max_connections"),
        proxy.admin_max_connections,
        1,
        MAX_ADMIN_CONNECTIONS,
    );
    out.timeout(
        path.key("tunnel_idle_timeout_ms"),
        proxy.tunnel_idle_timeout_ms,
    );
    out.range(
        path.key("tunnel_buffer_bytes"),
        proxy.tunnel_buffer_bytes,
        MIN_TCP_BUFFER_BYTES,
        MAX_TCP_BUFFER_BYTES,
    );
    // 0 turns lingering off: a close is immediate.
    if proxy.lingering_close_ms > 0 {
        out.timeout(path.key("lingering_close_ms"), proxy.lingering_close_ms);
    }
    if proxy
        .admin
        .as_ref()
        .is_some_and(|admin| admin.addrs().is_empty())
    {
        out.push(path.key("admin"), "needs at least one address");
    }
    if let Some(listen) = proxy.listen {
        let admin = proxy.admin.as_ref().map_or(&[][..], |admin| admin.addrs());
        if admin.contains(&listen) && listen.port() != 0 {
            out.push(path.key("admin"), "is the same address as `proxy.listen`");
        }
    }
}

/// `[inbound]`, `[outbound]`, the listeners they add and the services' `addresses`.
fn check_sides(config: &Config, out: &mut Violations) {
    let root = FieldPath::root();
    if let Some(outbound) = &config.outbound {
        check_side(&root.key("outbound"), outbound, out);
    }
    if let Some(inbound) = &config.inbound {
        check_inbound(&root.key("inbound"), inbound, out);
    }
    check_listeners_distinct(config, out);
    let outbound_listen: &[SocketAddr] = config
        .outbound
        .as_ref()
        .map(|side| side.listen.addrs())
        .unwrap_or_default();
    let mut claimed: HashMap<SocketAddr, usize> = HashMap::new();
    for (index, service) in config.services.iter().enumerate() {
        for (i, address) in service.addresses.iter().enumerate() {
            let path = root.key("services").index(index).key("addresses").index(i);
            if address.port() == 0 {
                out.push(path, format!("address {address} has port 0"));
            } else if address.ip().is_unspecified() {
                out.push(path, format!("address {address} is unspecified"));
            } else if outbound_listen.contains(address) {
                let message = format!("address {address} is the outbound listener (it would loop)");
                out.push(path, message);
            } else if let Some(first) = claimed.get(address) {
                let message = format!(
                    "address {address} is already claimed by services[{first}] ({:?})",
                    config.services[*first].name
                );
                out.push(path, message);
            } else {
                claimed.insert(*address, index);
            }
        }
    }
}

fn check_side(path: &FieldPath, side: &SideSettings, out: &mut Violations) {
    if side.listen.addrs().is_empty() {
        out.push(path.key("listen"), "needs at least one address");
    }
    out.timeout(path.key("detect_timeout_ms"), side.detect_timeout_ms);
    out.range(
        path.key("detect_max_bytes"),
        side.detect_max_bytes,
        MIN_DETECT_MAX_BYTES,
        MAX_DETECT_MAX_BYTES,
    );
    out.timeout(path.key("tcp_idle_timeout_ms"), side.tcp_idle_timeout_ms);
    out.range(
        path.key("tcp_buffer_bytes"),
        side.tcp_buffer_bytes,
        MIN_TCP_BUFFER_BYTES,
        MAX_TCP_BUFFER_BYTES,
    );
    for (i, port) in side.opaque_ports.iter().enumerate() {
        if *port == 0 {
            out.push(path.key("opaque_ports").index(i), "port 0 is not a port");
        }
    }
    check_passthrough(&path.key("passthrough"), &side.passthrough, out);
}

fn check_passthrough(path: &FieldPath, p: &crate::PassthroughSettings, out: &mut Violations) {
    out.range(
        path.key("max_header_bytes"),
        p.max_header_bytes,
        MIN_MAX_HEADER_BYTES,
        MAX_MAX_HEADER_BYTES,
    );
    out.timeout(path.key("header_read_timeout_ms"), p.header_read_timeout_ms);
    out.timeout(path.key("connect_timeout_ms"), p.connect_timeout_ms);
    out.timeout(path.key("response_timeout_ms"), p.response_timeout_ms);
    out.timeout(path.key("body_idle_timeout_ms"), p.body_idle_timeout_ms);
    out.timeout(path.key("continue_wait_ms"), p.continue_wait_ms);
}

fn check_inbound(path: &FieldPath, inbound: &InboundSettings, out: &mut Violations) {
    check_side(path, &inbound.side, out);
    if inbound.app_address.is_unspecified() {
        let message = format!(
            "{} is unspecified; name the application's address (usually 127.0.0.1)",
            inbound.app_address
        );
        out.push(path.key("app_address"), message);
    }
    if inbound.app_port == Some(0) {
        out.push(path.key("app_port"), "port 0 is not a port");
    }
}

/// Every listener of `config`: its field, its name in messages, its address.
fn listeners(config: &Config) -> Vec<(FieldPath, String, SocketAddr)> {
    let root = FieldPath::root();
    let mut listeners = Vec::new();
    if let Some(listen) = config.explicit_listen() {
        let path = root.key("proxy").key("listen");
        listeners.push((path, "proxy.listen".to_owned(), listen));
    }
    let lists = [
        ("proxy", "admin", config.proxy.admin.as_ref()),
        (
            "outbound",
            "listen",
            config.outbound.as_ref().map(|o| &o.listen),
        ),
        (
            "inbound",
            "listen",
            config.inbound.as_ref().map(|i| &i.side.listen),
        ),
    ];
    for (section, key, listen) in lists {
        let Some(listen) = listen else { continue };
        let path = root.key(section).key(key);
        for (entry, addr) in listen.addrs_by_entry() {
            let path = match entry {
                None => path.clone(),
                Some(i) => path.index(i),
            };
            listeners.push((path, format!("{section}.{key}"), addr));
        }
    }
    listeners
}

/// Each listener binds its own address: two on one address would share connections.
fn check_listeners_distinct(config: &Config, out: &mut Violations) {
    let listeners = listeners(config);
    // A pair (`*:P`) is two addresses of one entry: the entry is reported once.
    let mut reported: Vec<&FieldPath> = Vec::new();
    for (later, (path, this, address)) in listeners.iter().enumerate() {
        if reported.contains(&path) {
            continue;
        }
        for (_, name, earlier) in &listeners[..later] {
            // `proxy.admin` against `proxy.listen` is reported by `check_proxy`.
            if (this == "proxy.admin" && name == "proxy.listen") || !overlaps(*earlier, *address) {
                continue;
            }
            let hint = if name == "proxy.listen" {
                "; a sidecar sets `proxy.listen` to a port of its own (or the side to another)"
            } else {
                ""
            };
            let message = format!("{address} is the same listener as `{name}` ({earlier}){hint}");
            out.push(path.clone(), message);
            reported.push(path);
            break;
        }
    }
    if let Some(inbound) = &config.inbound {
        check_application(inbound, &listeners, out);
    }
}

/// The inbound side must not hand connections to one of the proxy's own listeners: with
/// `app_port` set, `app_address:app_port` is checked here. Without it the port is each
/// connection's original destination port, checked per connection (such a connection is
/// refused, as a loop).
fn check_application(
    inbound: &InboundSettings,
    listeners: &[(FieldPath, String, SocketAddr)],
    out: &mut Violations,
) {
    let Some(port) = inbound.app_port.filter(|p| *p != 0) else {
        return;
    };
    let app = SocketAddr::new(inbound.app_address, port);
    if let Some((_, name, listener)) = listeners
        .iter()
        .find(|(_, _, listener)| serves(*listener, app))
    {
        let message = format!(
            "the application {app} (app_address:app_port) is the proxy's own `{name}` \
             listener ({listener}): inbound connections would loop"
        );
        let path = FieldPath::root().key("inbound").key("app_port");
        out.push(path, message);
    }
}

/// Whether a connection to `to` would reach `listener`: the same address, or the same port
/// on a listener bound to the unspecified address of `to`'s family (IPv4-mapped IPv6
/// addresses count as IPv4).
pub fn serves(listener: SocketAddr, to: SocketAddr) -> bool {
    let (listener, to) = (unmapped(listener), unmapped(to));
    listener.port() == to.port()
        && (listener.ip() == to.ip()
            || (listener.ip().is_unspecified() && listener.is_ipv4() == to.is_ipv4()))
}

/// Two listeners collide on one port when their addresses are equal or one is the
/// unspecified address of the other's family (binding 0.0.0.0:P takes P on every IPv4
/// address). IPv4 and IPv6 never collide: IPv6 listeners are bound `IPV6_V6ONLY`, so
/// `[::]:P` leaves `0.0.0.0:P` free. An IPv4-mapped IPv6 address is its IPv4 address.
pub fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let (a, b) = (unmapped(a), unmapped(b));
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; any other address as it is.
fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// The numeric settings, each checked the same way in `[defaults]` and in overrides.
fn check_setting(path: FieldPath, field: &str, value: u64, out: &mut Violations) {
    let size = usize::try_from(value).unwrap_or(usize::MAX);
    match field {
        "max_header_bytes" => out.range(path, size, MIN_MAX_HEADER_BYTES, MAX_MAX_HEADER_BYTES),
        "max_headers" => out.range(path, size, MIN_MAX_HEADERS, MAX_MAX_HEADERS),
        "pool_max_idle" => out.range(path, size, 0, MAX_POOL_MAX_IDLE),
        "max_connections" => out.range(path, size, 1, MAX_MAX_CONNECTIONS),
        "max_body_bytes" => {}
        _ => out.timeout(path, value),
    }
}

/// `(field, value)` of every numeric setting present in `o`.
fn numeric_overrides(o: &SettingsOverride) -> [(&'static str, Option<u64>); 10] {
    let size = |value: Option<usize>| value.map(|v| u64::try_from(v).unwrap_or(u64::MAX));
    [
        ("header_read_timeout_ms", o.header_read_timeout_ms),
        ("max_header_bytes", size(o.max_header_bytes)),
        ("max_headers", size(o.max_headers)),
        ("max_body_bytes", o.max_body_bytes),
        ("connect_timeout_ms", o.connect_timeout_ms),
        ("request_timeout_ms", o.request_timeout_ms),
        ("client_idle_timeout_ms", o.client_idle_timeout_ms),
        ("pool_max_idle", size(o.pool_max_idle)),
        ("pool_idle_timeout_ms", o.pool_idle_timeout_ms),
        ("max_connections", size(o.max_connections)),
    ]
}

fn check_settings(path: &FieldPath, settings: &Settings, out: &mut Violations) {
    let linger = settings.client_keepalive_linger_ms;
    if linger > crate::model::MAX_CLIENT_KEEPALIVE_LINGER_MS {
        out.push(
            path.key("client_keepalive_linger_ms"),
            format!(
                "{linger} is outside 0 to {}",
                crate::model::MAX_CLIENT_KEEPALIVE_LINGER_MS
            ),
        );
    }
    let all = SettingsOverride {
        header_read_timeout_ms: Some(settings.header_read_timeout_ms),
        max_header_bytes: Some(settings.max_header_bytes),
        max_headers: Some(settings.max_headers),
        max_body_bytes: Some(settings.max_body_bytes),
        connect_timeout_ms: Some(settings.connect_timeout_ms),
        request_timeout_ms: Some(settings.request_timeout_ms),
        client_idle_timeout_ms: Some(settings.client_idle_timeout_ms),
        pool_max_idle: Some(settings.pool_max_idle),
        pool_idle_timeout_ms: Some(settings.pool_idle_timeout_ms),
        max_connections: Some(settings.max_connections),
        max_attempts: Some(settings.max_attempts),
        retry_budget_ratio: Some(settings.retry_budget_ratio),
        retry_budget_window_ms: Some(settings.retry_budget_window_ms),
        retry_backoff_base_ms: Some(settings.retry_backoff_base_ms),
        retry_backoff_max_ms: Some(settings.retry_backoff_max_ms),
        eject_base_ms: Some(settings.eject_base_ms),
        eject_max_ms: Some(settings.eject_max_ms),
        eject_max_percent: Some(settings.eject_max_percent),
        failure_statuses: Some(settings.failure_statuses.clone()),
        ..SettingsOverride::default()
    };
    check_overrides(path, &all, out);
}

fn check_overrides(path: &FieldPath, overrides: &SettingsOverride, out: &mut Violations) {
    for (field, value) in numeric_overrides(overrides) {
        if let Some(value) = value {
            check_setting(path.key(field), field, value, out);
        }
    }
    check_resilience(path, overrides, out);
}

/// Retry, budget and ejection settings.
fn check_resilience(path: &FieldPath, o: &SettingsOverride, out: &mut Violations) {
    if let Some(n) = o.max_attempts {
        if !(1..=10).contains(&n) {
            out.push(path.key("max_attempts"), format!("{n} is outside 1..=10"));
        }
    }
    if let Some(r) = o.retry_budget_ratio {
        if !(0.0..=10.0).contains(&r) || r.is_nan() {
            out.push(
                path.key("retry_budget_ratio"),
                format!("{r} is outside 0.0..=10.0"),
            );
        }
    }
    for (field, value) in [
        ("retry_budget_window_ms", o.retry_budget_window_ms),
        ("eject_base_ms", o.eject_base_ms),
        ("eject_max_ms", o.eject_max_ms),
    ] {
        if let Some(v) = value {
            out.timeout(path.key(field), v);
        }
    }
    for (field, value) in [
        ("retry_backoff_base_ms", o.retry_backoff_base_ms),
        ("retry_backoff_max_ms", o.retry_backoff_max_ms),
    ] {
        if let Some(v) = value {
            if v > 60_000 {
                out.push(path.key(field), format!("{v} is above 60000"));
            }
        }
    }
    if let Some(p) = o.eject_max_percent {
        if p > 100 {
            out.push(path.key("eject_max_percent"), format!("{p} is above 100"));
        }
    }
    if let Some(list) = &o.failure_statuses {
        for (i, spec) in list.iter().enumerate() {
            if crate::status_ranges::parse_status_spec(spec).is_none() {
                out.push(
                    path.key("failure_statuses").index(i),
                    format!("{spec:?} is not \"5xx\", a status like \"503\" or a range like \"500-504\""),
                );
            }
        }
    }
}

fn check_service(path: &FieldPath, service: &ServiceConfig, out: &mut Violations) {
    if let Err(problem) = check_name(&service.name) {
        out.push(
            path.key("name"),
            format!("service name {:?} {problem}", service.name),
        );
    }
    if service.endpoints.is_empty() && service.dns.is_empty() && service.kubernetes.is_empty() {
        let message = format!(
            "service {:?} has no endpoints, dns or kubernetes entries",
            service.name
        );
        out.push(path.key("endpoints"), message);
    }
    out.0.extend(crate::validate_sources::check_service_sources(
        path, service,
    ));
    let mut seen = HashSet::new();
    for (index, endpoint) in service.endpoints.iter().enumerate() {
        let endpoint_path = path.key("endpoints").index(index);
        if endpoint.port() == 0 {
            out.push(endpoint_path, format!("endpoint {endpoint} has port 0"));
        } else if endpoint.ip().is_unspecified() {
            out.push(
                endpoint_path,
                format!("endpoint {endpoint} has an unspecified address"),
            );
        } else if !seen.insert(*endpoint) {
            out.push(endpoint_path, format!("duplicate endpoint {endpoint}"));
        }
    }
    check_overrides(path, &service.overrides, out);
}

/// Service names appear in metrics and logs: 1 to 253 of letters, digits, '.', '_', '-'.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 253 {
        return Err("must be 1 to 253 characters long");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn check_route(
    path: &FieldPath,
    route: &RouteConfig,
    services: &HashMap<&str, usize>,
    out: &mut Violations,
) {
    if route.name.as_deref() == Some("") {
        out.push(path.key("name"), "must not be empty (leave it out instead)");
    }
    if let Some(host) = &route.host {
        if let Err(problem) = HostMatch::parse(host) {
            out.push(path.key("host"), format!("host pattern {host:?} {problem}"));
        }
    }
    if route.path_prefix.is_some() && route.path_exact.is_some() {
        out.push(
            path.key("path_exact"),
            "set at most one of `path_prefix` and `path_exact`",
        );
    }
    for (field, value) in [
        ("path_prefix", &route.path_prefix),
        ("path_exact", &route.path_exact),
    ] {
        let Some(value) = value.as_deref() else {
            continue;
        };
        if let Err(problem) = check_path(value) {
            out.push(path.key(field), format!("path {value:?} {problem}"));
        }
    }
    for (index, header) in route.headers.iter().enumerate() {
        check_header(&path.key("headers").index(index), header, out);
    }
    check_destination(path, route, services, out);
    if let Some(timeout) = route.timeout_ms {
        out.timeout(path.key("timeout_ms"), timeout);
    }
    if let Some(timeout) = route.attempt_timeout_ms {
        out.timeout(path.key("attempt_timeout_ms"), timeout);
    }
    for (i, status) in route.retry_on.iter().enumerate() {
        if !(100..=599).contains(status) {
            out.push(
                path.key("retry_on").index(i),
                format!("{status} is not an HTTP status"),
            );
        }
    }
}

/// Paths start with '/' and hold no query, fragment, whitespace or control characters.
fn check_path(value: &str) -> Result<(), &'static str> {
    if !value.starts_with('/') {
        return Err("must start with '/'");
    }
    if value.contains(['?', '#']) {
        return Err("must not contain '?' or '#' (the query is ignored when matching)");
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

/// A header condition: a valid field name and exactly one of `exact` / `present = true`.
fn check_header(path: &FieldPath, header: &HeaderMatch, out: &mut Violations) {
    if !is_token(&header.name) {
        let message = format!("{:?} is not a valid header name", header.name);
        out.push(path.key("name"), message);
    }
    match (&header.exact, header.present) {
        (_, Some(false)) => out.push(
            path.key("present"),
            "`present = false` is not supported; use `present = true` or leave it out",
        ),
        (Some(_), Some(true)) => out.push(
            path.key("present"),
            "set only one of `exact` and `present = true`",
        ),
        (None, None) => out.push(path.clone(), "set `exact = \"...\"` or `present = true`"),
        _ => {}
    }
    if let Some(value) = &header.exact {
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            out.push(path.key("exact"), "must not contain CR, LF or NUL");
        }
    }
}

/// An HTTP field name: one or more `tchar`s (RFC 9110, section 5.6.2).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_destination(
    path: &FieldPath,
    route: &RouteConfig,
    services: &HashMap<&str, usize>,
    out: &mut Violations,
) {
    match (&route.service, route.split.is_empty()) {
        (None, true) => out.push(
            path.clone(),
            "route has no destination: set `service` or `split`",
        ),
        (Some(_), false) => out.push(
            path.key("split"),
            "set exactly one of `service` and `split`",
        ),
        _ => {}
    }
    let unknown = |name: &str| !services.contains_key(name);
    if let Some(service) = route.service.as_deref().filter(|name| unknown(name)) {
        out.push(path.key("service"), format!("unknown service {service:?}"));
    }
    for (index, target) in route.split.iter().enumerate() {
        if unknown(&target.service) {
            let message = format!("unknown service {:?}", target.service);
            out.push(path.key("split").index(index).key("service"), message);
        }
    }
    let total: u64 = route
        .split
        .iter()
        .map(|target| u64::from(target.weight))
        .sum();
    if !route.split.is_empty() && total == 0 {
        out.push(
            path.key("split"),
            "split weights add up to 0; at least one must be above 0",
        );
    }
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
