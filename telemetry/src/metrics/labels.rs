//! The fixed label values of the metric families: response status classes, retry reasons,
//! endpoint states, error kinds and the peer a byte count is about. Each enum knows its
//! Prometheus label value and its slot in a family's block of counters.

/// The class of a response status, the `class` label of `coremesh_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx (and anything below 200).
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx (and anything above 599).
    ServerError,
}

impl StatusClass {
    /// Every class, in slot order.
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Success,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// The class of `status`; codes outside 100..=599 fall into the nearest class.
    pub const fn from_status(status: u16) -> StatusClass {
        match status {
            0..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            _ => StatusClass::ServerError,
        }
    }

    /// The label value: `1xx` … `5xx`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Why an attempt was retried, the `reason` label of `coremesh_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// The connection to the endpoint was refused or could not be made.
    ConnectFailed,
    /// Connecting to the endpoint took longer than the connect timeout.
    ConnectTimeout,
    /// The endpoint closed or reset the connection before a response.
    Reset,
    /// The endpoint did not answer within the attempt's time.
    Timeout,
    /// The endpoint answered with a status that is retried (such as 503).
    Status,
}

impl RetryReason {
    /// Every reason, in slot order.
    pub const ALL: [RetryReason; 5] = [
        RetryReason::ConnectFailed,
        RetryReason::ConnectTimeout,
        RetryReason::Reset,
        RetryReason::Timeout,
        RetryReason::Status,
    ];

    /// The label value (also the span attribute value).
    pub const fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectFailed => "connect-failed",
            RetryReason::ConnectTimeout => "connect-timeout",
            RetryReason::Reset => "reset",
            RetryReason::Timeout => "timeout",
            RetryReason::Status => "status",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Where an endpoint stands on one core, the `state` label of `coremesh_endpoint_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndpointState {
    /// In the pool.
    Available,
    /// Out of the pool until its back-off ends.
    Ejected,
    /// Back-off over; the next request to it is a probe.
    HalfOpen,
}

impl EndpointState {
    /// Every state, in slot order.
    pub const ALL: [EndpointState; 3] = [
        EndpointState::Available,
        EndpointState::Ejected,
        EndpointState::HalfOpen,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointState::Available => "available",
            EndpointState::Ejected => "ejected",
            EndpointState::HalfOpen => "half-open",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// What went wrong, the `kind` label of `coremesh_errors_total`. The names are the proxy's
/// `ProxyError::kind()` names, so [`ErrorKind::from_name`] maps them one to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client's request broke the rules (400, 408, 413, 417, 431, 505).
    BadRequest,
    /// The client went away mid-request.
    ClientGone,
    /// No route matched the request (404).
    NoRoute,
    /// The destination service had no endpoint to send to (503).
    NoEndpoints,
    /// A connection to an upstream endpoint failed.
    ConnectFailed,
    /// A connection to an upstream endpoint timed out.
    ConnectTimeout,
    /// The upstream closed or reset the connection before any response byte.
    UpstreamClosed,
    /// The upstream broke the connection after the response had started.
    UpstreamBrokeResponse,
    /// The upstream's response could not be parsed or broke a limit.
    UpstreamBadResponse,
    /// The request's deadline passed before a response head arrived (504).
    Timeout,
    /// The proxy was shutting down and did not start the request.
    ShuttingDown,
    /// The inbound policy refused the caller (403, PERMISSION_DENIED).
    Denied,
    /// Any other kind (a name this crate does not know).
    Other,
}

impl ErrorKind {
    /// Every kind, in slot order.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::BadRequest,
        ErrorKind::ClientGone,
        ErrorKind::NoRoute,
        ErrorKind::NoEndpoints,
        ErrorKind::ConnectFailed,
        ErrorKind::ConnectTimeout,
        ErrorKind::UpstreamClosed,
        ErrorKind::UpstreamBrokeResponse,
        ErrorKind::UpstreamBadResponse,
        ErrorKind::Timeout,
        ErrorKind::ShuttingDown,
        ErrorKind::Denied,
        ErrorKind::Other,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::ClientGone => "client-gone",
            ErrorKind::NoRoute => "no-route",
            ErrorKind::NoEndpoints => "no-endpoints",
            ErrorKind::ConnectFailed => "connect-failed",
            ErrorKind::ConnectTimeout => "connect-timeout",
            ErrorKind::UpstreamClosed => "upstream-closed",
            ErrorKind::UpstreamBrokeResponse => "upstream-broke-response",
            ErrorKind::UpstreamBadResponse => "upstream-bad-response",
            ErrorKind::Timeout => "timeout",
            ErrorKind::ShuttingDown => "shutting-down",
            ErrorKind::Denied => "denied",
            ErrorKind::Other => "other",
        }
    }

    /// The kind called `name`, or [`ErrorKind::Other`]. Meant to be called once per kind
    /// (at start-up), not per request.
    pub fn from_name(name: &str) -> ErrorKind {
        ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == name)
            .unwrap_or(ErrorKind::Other)
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Why the inbound policy refused a request, the `reason` label of
/// `coremesh_inbound_denied_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeniedReason {
    /// The policy asks for a verified identity and the caller has none (plaintext).
    NoClientCert,
    /// The caller's verified identity matches none of the allowed ones.
    NotAuthorized,
}

impl DeniedReason {
    /// Every reason, in slot order.
    pub const ALL: [DeniedReason; 2] = [DeniedReason::NoClientCert, DeniedReason::NotAuthorized];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeniedReason::NoClientCert => "no_client_cert",
            DeniedReason::NotAuthorized => "not_authorized",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Whom bytes were exchanged with, the `peer` label of the byte counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The downstream client connections.
    Client,
    /// The upstream endpoint connections.
    Upstream,
}

impl Peer {
    /// Both peers, in slot order.
    pub const ALL: [Peer; 2] = [Peer::Client, Peer::Upstream];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Peer::Client => "client",
            Peer::Upstream => "upstream",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }
}

/// Which listener a request came in on, the `direction` label of the request families:
/// the explicit `[proxy] listen`, or a sidecar side. Chosen once per connection; recording
/// with it is an index, not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    Proxy,
    Inbound,
    Outbound,
}

impl Direction {
    /// Every direction, in slot order.
    pub const ALL: [Direction; 3] = [Direction::Proxy, Direction::Inbound, Direction::Outbound];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Proxy => "proxy",
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }

    pub(crate) const fn slot(self) -> usize {
        self as usize
    }

    /// Per-service counters written even at zero only for the explicit listener (as before
    /// the sides existed, so dashboards see them from the start); the sides' series appear
    /// once they count something, which keeps a scrape from tripling for every service.
    pub(crate) const fn skips_zero(self) -> bool {
        !matches!(self, Direction::Proxy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_code() {
        assert_eq!(StatusClass::from_status(0), StatusClass::Informational);
        assert_eq!(StatusClass::from_status(101), StatusClass::Informational);
        assert_eq!(StatusClass::from_status(200), StatusClass::Success);
        assert_eq!(StatusClass::from_status(299), StatusClass::Success);
        assert_eq!(StatusClass::from_status(304), StatusClass::Redirection);
        assert_eq!(StatusClass::from_status(404), StatusClass::ClientError);
        assert_eq!(StatusClass::from_status(499), StatusClass::ClientError);
        assert_eq!(StatusClass::from_status(503), StatusClass::ServerError);
        assert_eq!(StatusClass::from_status(999), StatusClass::ServerError);
        assert_eq!(StatusClass::ServerError.as_str(), "5xx");
    }

    #[test]
    fn slots_follow_all() {
        for (i, c) in StatusClass::ALL.iter().enumerate() {
            assert_eq!(c.slot(), i);
        }
        for (i, r) in RetryReason::ALL.iter().enumerate() {
            assert_eq!(r.slot(), i);
        }
        for (i, s) in EndpointState::ALL.iter().enumerate() {
            assert_eq!(s.slot(), i);
        }
        for (i, k) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(k.slot(), i);
        }
        for (i, p) in Peer::ALL.iter().enumerate() {
            assert_eq!(p.slot(), i);
        }
        for (i, r) in DeniedReason::ALL.iter().enumerate() {
            assert_eq!(r.slot(), i);
        }
    }

    #[test]
    fn error_kinds_map_from_proxy_names() {
        assert_eq!(
            ErrorKind::from_name("connect-timeout"),
            ErrorKind::ConnectTimeout
        );
        assert_eq!(
            ErrorKind::from_name("shutting-down"),
            ErrorKind::ShuttingDown
        );
        assert_eq!(ErrorKind::from_name("something-new"), ErrorKind::Other);
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_name(kind.as_str()), kind);
        }
    }
}
