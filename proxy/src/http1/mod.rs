//! HTTP/1.x on both sides of the proxy: the zero-copy codec ([`codec`]), body framing
//! ([`body`]), head rewriting ([`rewrite`]), the client connection loop ([`server`]), one
//! request's attempts against HTTP/1 upstreams ([`forward`]) or, translated, HTTP/2 ones
//! ([`to_h2`]), and upgraded tunnels ([`tunnel`]).

pub mod body;
pub mod codec;
pub mod forward;
pub mod rewrite;
pub mod server;
pub mod to_h2;
pub mod tunnel;
