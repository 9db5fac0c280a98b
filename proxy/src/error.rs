//! The proxy's one error type: where a failure came from (client, upstream, proxy), what the
//! client is told, and whether another attempt may fix it. Retries, metrics and the status
//! sent to the client all read it instead of re-deciding.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Proxy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// The client's head or body broke the rules; `status` is 400/408/413/417/431/501/505.
    BadRequest {
        status: u16,
        reason: &'static str,
    },
    /// The inbound policy refused the caller (403; gRPC: PERMISSION_DENIED).
    Denied(coremesh_telemetry::DeniedReason),
    /// The client went away mid-request; nobody to answer.
    ClientGone,
    NoRoute,
    NoEndpoints,
    /// TCP connect refused or failed.
    Connect(String),
    ConnectTimeout,
    /// The upstream closed or reset before any response byte arrived.
    UpstreamClosed {
        request_sent: bool,
    },
    /// The upstream broke the connection after the response started.
    UpstreamBrokeResponse,
    UpstreamBadResponse(&'static str),
    /// The request's deadline passed before the response head arrived.
    Timeout,
    /// The proxy is shutting down and did not start the request.
    ShuttingDown,
}

impl ProxyError {
    pub fn source(&self) -> Source {
        match self {
            ProxyError::BadRequest { .. } | ProxyError::Denied(_) | ProxyError::ClientGone => {
                Source::Client
            }
            ProxyError::NoRoute | ProxyError::NoEndpoints | ProxyError::ShuttingDown => {
                Source::Proxy
            }
            _ => Source::Upstream,
        }
    }

    /// The status the client gets, if it can still get one.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest { status, .. } => *status,
            ProxyError::Denied(_) => 403,
            ProxyError::ClientGone => 499,
            ProxyError::NoRoute => 404,
            ProxyError::NoEndpoints | ProxyError::ShuttingDown => 503,
            ProxyError::Connect(_)
            | ProxyError::UpstreamClosed { .. }
            | ProxyError::UpstreamBrokeResponse
            | ProxyError::UpstreamBadResponse(_) => 502,
            ProxyError::ConnectTimeout | ProxyError::Timeout => 504,
        }
    }

    /// A stable short name, for logs, metrics and the `x-coremesh-error` header.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { .. } => "bad-request",
            ProxyError::Denied(_) => "denied",
            ProxyError::ClientGone => "client-gone",
            ProxyError::NoRoute => "no-route",
            ProxyError::NoEndpoints => "no-endpoints",
            ProxyError::Connect(_) => "connect-failed",
            ProxyError::ConnectTimeout => "connect-timeout",
            ProxyError::UpstreamClosed { .. } => "upstream-closed",
            ProxyError::UpstreamBrokeResponse => "upstream-broke-response",
            ProxyError::UpstreamBadResponse(_) => "upstream-bad-response",
            ProxyError::Timeout => "timeout",
            ProxyError::ShuttingDown => "shutting-down",
        }
    }

    /// The metrics label for this error.
    pub fn metric_kind(&self) -> coremesh_telemetry::ErrorKind {
        use coremesh_telemetry::ErrorKind as K;
        match self {
            ProxyError::BadRequest { .. } => K::BadRequest,
            ProxyError::Denied(_) => K::Denied,
            ProxyError::ClientGone => K::ClientGone,
            ProxyError::NoRoute => K::NoRoute,
            ProxyError::NoEndpoints => K::NoEndpoints,
            ProxyError::Connect(_) => K::ConnectFailed,
            ProxyError::ConnectTimeout => K::ConnectTimeout,
            ProxyError::UpstreamClosed { .. } => K::UpstreamClosed,
            ProxyError::UpstreamBrokeResponse => K::UpstreamBrokeResponse,
            ProxyError::UpstreamBadResponse(_) => K::UpstreamBadResponse,
            ProxyError::Timeout => K::Timeout,
            ProxyError::ShuttingDown => K::ShuttingDown,
        }
    }

    /// Whether the upstream cannot have seen the request, so any request may be retried
    /// elsewhere; `UpstreamClosed` after sending is retryable only for idempotent requests.
    pub fn nothing_processed(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::ConnectTimeout
                | ProxyError::UpstreamClosed {
                    request_sent: false
                }
        )
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadRequest { reason, .. } => write!(f, "bad request: {reason}"),
            ProxyError::Denied(coremesh_telemetry::DeniedReason::NoClientCert) => {
                f.write_str("denied: a verified client certificate is required")
            }
            ProxyError::Denied(coremesh_telemetry::DeniedReason::NotAuthorized) => {
                f.write_str("denied: the caller's identity is not authorized")
            }
            ProxyError::ClientGone => f.write_str("client closed the connection"),
            ProxyError::NoRoute => f.write_str("no route matched this request"),
            ProxyError::NoEndpoints => f.write_str("the service has no endpoints"),
            ProxyError::Connect(e) => write!(f, "upstream connect failed: {e}"),
            ProxyError::ConnectTimeout => f.write_str("upstream connect timed out"),
            ProxyError::UpstreamClosed { .. } => {
                f.write_str("upstream closed the connection before responding")
            }
            ProxyError::UpstreamBrokeResponse => f.write_str("upstream broke off its response"),
            ProxyError::UpstreamBadResponse(r) => write!(f, "upstream sent a bad response: {r}"),
            ProxyError::Timeout => f.write_str("upstream did not respond before the deadline"),
            ProxyError::ShuttingDown => f.write_str("the proxy is shutting down"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// The reason phrase for a status the proxy generates.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_kind_names_match_error_kinds() {
        let all = [
            ProxyError::BadRequest {
                status: 400,
                reason: "x",
            },
            ProxyError::Denied(coremesh_telemetry::DeniedReason::NotAuthorized),
            ProxyError::ClientGone,
            ProxyError::NoRoute,
            ProxyError::NoEndpoints,
            ProxyError::Connect("refused".into()),
            ProxyError::ConnectTimeout,
            ProxyError::UpstreamClosed { request_sent: true },
            ProxyError::UpstreamBrokeResponse,
            ProxyError::UpstreamBadResponse("x"),
            ProxyError::Timeout,
            ProxyError::ShuttingDown,
        ];
        for e in all {
            assert_eq!(e.metric_kind().as_str(), e.kind(), "{e:?}");
        }
    }
}
