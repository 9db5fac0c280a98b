//! The transport layer under the request path: where an intercepted connection was going
//! ([`original_dst`]).

pub mod original_dst;
