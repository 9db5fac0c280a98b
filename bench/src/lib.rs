//! coremesh-bench: the load generator, the built-in upstream and the side-by-side
//! comparison of coremesh with nginx and HAProxy (report, raw JSON and SVG plots).
//!
//! Nothing here is needed by the proxy at run time. Every load loop is bounded in count and
//! time, only loopback addresses are used, and every process started is stopped with its
//! process group.
#![deny(unsafe_code)]

pub mod compare;
pub mod grpc;
pub mod h2load;
pub mod http;
pub mod load;
pub mod perf;
pub mod plot;
pub mod procfs;
pub mod procs;
pub mod schedule;
pub mod simulate;
pub mod stats;
pub mod sys;
pub mod upstream;
pub mod upstream_h2;
pub mod wrk;
