//! Proxies of the HTTP/2 and gRPC suites, configured from TOML text the way a user writes it
//! (`[http2]`, a service's `protocol`, a route's `grpc_retry_on`), parsed by
//! [`coremesh_discovery::parse_config`] and started in-process with the admin server, so a
//! test reads `/metrics`. A setting the parser does not know fails the test with the
//! parser's own message.

use crate::admin::{start_with_admin, wait_for_admin, AdminProxy};
use crate::prometheus::Exposition;
use crate::proxy::TEST_SHUTDOWN_GRACE_MS;
use coremesh_discovery::{parse_config, Config, Driver};
use std::fmt::Display;
use std::net::SocketAddr;

/// A configuration file being written: `[proxy]`, `[http2]`, then services and routes.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    proxy: Vec<String>,
    http2: Vec<String>,
    sections: Vec<String>,
    services: Vec<String>,
    routes: Vec<String>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig::new()
    }
}

impl MeshConfig {
    /// One core, the test shutdown grace, nothing else.
    pub fn new() -> MeshConfig {
        MeshConfig {
            proxy: vec![
                "cores = 1".into(),
                format!("shutdown_grace_ms = {TEST_SHUTDOWN_GRACE_MS}"),
            ],
            http2: Vec::new(),
            sections: Vec::new(),
            services: Vec::new(),
            routes: Vec::new(),
        }
    }
    /// `[proxy] cores = n`.
    pub fn cores(mut self, n: usize) -> MeshConfig {
        self.proxy[0] = format!("cores = {n}");
        self
    }
    /// `key = value` in `[http2]` (value written as TOML, e.g. `100` or `"x"`).
    pub fn http2(mut self, key: &str, value: impl Display) -> MeshConfig {
        self.http2.push(format!("{key} = {value}"));
        self
    }
    /// Another whole section, as written (e.g. `[inbound]` and its keys).
    pub fn section(mut self, text: &str) -> MeshConfig {
        self.sections.push(text.to_string());
        self
    }
    /// A `[[services]]` entry with `endpoints` and `extra` lines (e.g. `protocol = "h2"`).
    pub fn service(mut self, name: &str, endpoints: &[SocketAddr], extra: &[&str]) -> MeshConfig {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let mut entry = format!(
            "[[services]]\nname = \"{name}\"\nendpoints = [{}]\n",
            list.join(", ")
        );
        for line in extra {
            entry.push_str(line);
            entry.push('\n');
        }
        self.services.push(entry);
        self
    }
    /// A `[[routes]]` entry sending every path to `service`, with `extra` lines (e.g.
    /// `grpc_retry_on = ["unavailable"]`).
    pub fn route(self, service: &str, extra: &[&str]) -> MeshConfig {
        self.route_prefix("/", service, extra)
    }
    /// A `[[routes]]` entry sending paths under `prefix` to `service`, with `extra` lines.
    pub fn route_prefix(mut self, prefix: &str, service: &str, extra: &[&str]) -> MeshConfig {
        let n = self.routes.len();
        let mut entry = format!(
            "[[routes]]\nname = \"route-{n}\"\npath_prefix = \"{prefix}\"\nservice = \"{service}\"\n"
        );
        for line in extra {
            entry.push_str(line);
            entry.push('\n');
        }
        self.routes.push(entry);
        self
    }
    /// The file.
    pub fn text(&self) -> String {
        let mut out = String::from("[proxy]\n");
        for line in &self.proxy {
            out.push_str(line);
            out.push('\n');
        }
        if !self.http2.is_empty() {
            out.push_str("\n[http2]\n");
            for line in &self.http2 {
                out.push_str(line);
                out.push('\n');
            }
        }
        for entry in self
            .sections
            .iter()
            .chain(self.services.iter())
            .chain(self.routes.iter())
        {
            out.push('\n');
            out.push_str(entry);
        }
        out
    }
    /// The file parsed; panics with the parser's message (an unknown setting included).
    pub fn parse(&self) -> Config {
        let text = self.text();
        parse_config(&text, "http2-test.toml").unwrap_or_else(|e| {
            panic!("the configuration does not parse: {e}\n--- file ---\n{text}")
        })
    }
    /// Start the proxy on `driver` with this configuration and its admin server.
    pub fn start(&self, driver: Driver) -> AdminProxy {
        start_with_admin(driver, self.parse())
    }
}

/// A proxy on `driver` with one service "backend" on `endpoint` (with `service_extra`
/// lines, e.g. its `protocol`) and a route sending everything to it.
pub fn proxy_to(driver: Driver, endpoint: SocketAddr, service_extra: &[&str]) -> AdminProxy {
    MeshConfig::new()
        .service("backend", &[endpoint], service_extra)
        .route("backend", &[])
        .start(driver)
}

/// `/metrics` parsed.
pub fn metrics(proxy: &AdminProxy) -> Exposition {
    let text = proxy.metrics_text();
    Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}"))
}

/// Wait (bounded, see [`wait_for_admin`]) until `/metrics` satisfies `done`; the exposition
/// then. Panics with `what` and the last scrape's lines naming `family` when it does not.
pub fn wait_metrics(
    proxy: &AdminProxy,
    family: &str,
    what: &str,
    done: impl Fn(&Exposition) -> bool,
) -> Exposition {
    wait_for_admin(|| {
        let text = proxy.metrics_text();
        let e = Exposition::parse(&text).unwrap_or_else(|e| panic!("/metrics: {e}"));
        let last = text
            .lines()
            .filter(|l| l.contains(family))
            .collect::<Vec<_>>()
            .join("\n");
        if done(&e) {
            (Some(e), last)
        } else {
            (None, last)
        }
    })
    .unwrap_or_else(|last| panic!("{what}; last /metrics lines for {family}:\n{last}"))
}

/// `coremesh_http2_errors_total` summed for `reason` (all other labels).
pub fn http2_errors(e: &Exposition, reason: &str) -> f64 {
    e.sum("coremesh_http2_errors_total", &[("reason", reason)])
}

/// The lower-case RFC 9113 name of an HTTP/2 error code, as the `reason` label writes it.
pub fn error_code_name(code: u64) -> &'static str {
    match code {
        0x0 => "no_error",
        0x1 => "protocol_error",
        0x2 => "internal_error",
        0x3 => "flow_control_error",
        0x4 => "settings_timeout",
        0x5 => "stream_closed",
        0x6 => "frame_size_error",
        0x7 => "refused_stream",
        0x8 => "cancel",
        0x9 => "compression_error",
        0xa => "connect_error",
        0xb => "enhance_your_calm",
        0xc => "inadequate_security",
        0xd => "http_1_1_required",
        _ => "unknown",
    }
}
