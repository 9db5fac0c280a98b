//! Connections below HTTP: what protocol a connection speaks, and relaying the ones the
//! proxy does not parse as opaque bytes.

pub mod detect;
pub mod opaque;
