//! A real DNS server on 127.0.0.1 for tests: `hickory-server` answering from an in-memory
//! zone, on its own thread and runtime. Records can be replaced while it runs, and the
//! server can be stopped (to make lookups time out) and started again on the same port.

use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::proto::rr::rdata::{A, AAAA, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

type Zone = InMemoryZoneHandler<TokioRuntimeProvider>;

/// Seconds a "no such name" answer may be cached (the SOA minimum).
pub const NEGATIVE_TTL: u32 = 1;

/// The running server.
pub struct TestDnsServer {
    addr: SocketAddr,
    origin: Name,
    zone: Arc<Zone>,
    runtime: Option<tokio::runtime::Runtime>,
    serial: std::sync::atomic::AtomicU32,
}

impl TestDnsServer {
    /// Serves zone `origin` (e.g. `"mesh.test."`) on a free UDP port of 127.0.0.1.
    pub fn start(origin: &str) -> TestDnsServer {
        TestDnsServer::start_on(origin, SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves zone `origin` on `addr` (to come back on the port of a stopped server).
    pub fn start_on(origin: &str, addr: SocketAddr) -> TestDnsServer {
        let origin = Name::from_str(origin).unwrap_or_else(|e| panic!("{origin}: {e}"));
        let zone = Arc::new(Zone::empty(
            origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("test DNS runtime: {e}"));
        let soa = SOA::new(
            origin.clone(),
            Name::from_str("hostmaster.mesh.test.").unwrap_or_else(|e| panic!("{e}")),
            1,
            60,
            60,
            60,
            NEGATIVE_TTL,
        );
        let record = Record::from_rdata(origin.clone(), NEGATIVE_TTL, RData::SOA(soa));
        let inserted = runtime.block_on(zone.upsert(record, 1));
        assert!(inserted, "SOA inserted");
        let mut catalog = Catalog::new();
        let handler: Arc<dyn ZoneHandler> = zone.clone();
        catalog.upsert(LowerName::from(&origin), vec![handler]);
        let socket = runtime
            .block_on(tokio::net::UdpSocket::bind(addr))
            .unwrap_or_else(|e| panic!("bind the test DNS server on {addr}: {e}"));
        let addr = socket
            .local_addr()
            .unwrap_or_else(|e| panic!("test DNS address: {e}"));
        let _guard = runtime.enter();
        let mut server = Server::new(catalog);
        server.register_socket(socket);
        runtime.spawn(async move {
            let _ = server.block_until_done().await;
        });
        drop(_guard);
        TestDnsServer {
            addr,
            origin,
            zone,
            runtime: Some(runtime),
            serial: std::sync::atomic::AtomicU32::new(2),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes `name` (relative to the zone, e.g. `"web"`) answer exactly `addresses` (A and
    /// AAAA records) with `ttl` seconds; an empty list removes the name.
    pub fn set(&self, name: &str, addresses: &[IpAddr], ttl: u32) {
        let name = Name::from_str(name)
            .and_then(|name| name.append_domain(&self.origin))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let lower = LowerName::from(&name);
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(runtime) = &self.runtime else {
            panic!("the test DNS server is stopped");
        };
        runtime.block_on(async {
            self.zone.records_mut().await.retain(|key, _| {
                !(key.name == lower && matches!(key.record_type, RecordType::A | RecordType::AAAA))
            });
            for address in addresses {
                let rdata = match address {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                let inserted = self
                    .zone
                    .upsert(Record::from_rdata(name.clone(), ttl, rdata), serial)
                    .await;
                assert!(inserted, "record for {name} inserted");
            }
        });
    }

    /// Stops answering (the socket closes; lookups then time out).
    pub fn stop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
