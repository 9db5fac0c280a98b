//! A small reverse proxy on pingora's proxy and load-balancing crates (round-robin over the
//! upstreams given on the command line), so coremesh-bench can compare coremesh with a
//! tokio work-stealing design. Usage: `coremesh-bench-pingora CONF.yaml LISTEN UPSTREAM...`
//! (`UPSTREAM...` may also be one comma-separated list).

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// Round-robin over the upstreams, with no retries and no health checks, in every scenario
/// (its contender file lists none, so it takes part in all, failing endpoints included; the
/// report prints these settings next to its figures).
struct RoundRobinProxy(Arc<LoadBalancer<RoundRobin>>);

#[async_trait]
impl ProxyHttp for RoundRobinProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let backend = self
            .0
            .select(b"", 256)
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "no upstream to select"))?;
        Ok(Box::new(HttpPeer::new(backend, false, String::new())))
    }
}

fn main() {
    if let Err(message) = run() {
        eprintln!("coremesh-bench-pingora: {message}");
        std::process::exit(2);
    }
}

fn run() -> std::result::Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--version") {
        println!(
            "coremesh-bench-pingora {} (pingora 0.9, round-robin)",
            env!("CARGO_PKG_VERSION")
        );
        return Ok(());
    }
    if args.len() < 3 {
        return Err("usage: coremesh-bench-pingora CONF.yaml LISTEN UPSTREAM...".into());
    }
    let yaml =
        std::fs::read_to_string(&args[0]).map_err(|e| format!("reading {}: {e}", args[0]))?;
    let conf = ServerConf::from_yaml(&yaml).map_err(|e| format!("{}: {e}", args[0]))?;
    let upstreams: Vec<&str> = args[2..]
        .iter()
        .flat_map(|a| a.split(','))
        .filter(|a| !a.is_empty())
        .collect();
    let upstreams = LoadBalancer::try_from_iter(upstreams.iter().copied())
        .map_err(|e| format!("upstreams {:?}: {e}", &args[2..]))?;
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();
    let mut service =
        http_proxy_service(&server.configuration, RoundRobinProxy(Arc::new(upstreams)));
    service.add_tcp(&args[1]);
    server.add_service(service);
    server.run_forever()
}
