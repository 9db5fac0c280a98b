//! Starting the proxy in-process for a test, running a test body once per I/O driver, and
//! building the configurations the suites use.
//!
//! Every proxy a test starts listens on 127.0.0.1:0 with `pin_cores = false` and is shut down
//! when its [`TestProxy`] is dropped, even when the test panics.
//!
//! Both drivers means both drivers: a proxy asked for io_uring that fell back to epoll (no
//! io_uring in this kernel, seccomp, locked-memory limits) fails the test, unless
//! [`ALLOW_EPOLL_FALLBACK_ENV`] is set to `1` for a machine that cannot run io_uring.

use coremesh::ProxyHandle;
use coremesh_discovery::{
    Config, Driver, HeaderMatch, RouteConfig, ServiceConfig, WeightedService,
};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::SocketAddr;
use std::ops::Deref;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

/// Both drivers every end-to-end case runs on.
pub const DRIVERS: [Driver; 2] = [Driver::Uring, Driver::Legacy];

/// Shutdown grace of test proxies: long enough for any in-flight test request, short enough
/// that a proxy left with a stuck connection does not stall the suite.
pub const TEST_SHUTDOWN_GRACE_MS: u64 = 5_000;

/// Set to `1` to let a proxy asked for io_uring run on the legacy (epoll) driver instead of
/// failing the test: for machines without io_uring only, since the "uring" half of every
/// test then runs epoll a second time.
pub const ALLOW_EPOLL_FALLBACK_ENV: &str = "COREMESH_TEST_ALLOW_EPOLL_FALLBACK";

/// Whether [`ALLOW_EPOLL_FALLBACK_ENV`] is set to `1` in this process's environment.
pub fn epoll_fallback_allowed() -> bool {
    std::env::var(ALLOW_EPOLL_FALLBACK_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Whether a proxy asked for `asked` and running `running` is what a test on `asked` may
/// use: the same driver, or io_uring fallen back to epoll when `fallback_allowed`.
pub fn driver_check(asked: Driver, running: Driver, fallback_allowed: bool) -> Result<(), String> {
    match (asked, running) {
        (a, r) if a == r => Ok(()),
        (Driver::Uring, Driver::Legacy) if fallback_allowed => Ok(()),
        (Driver::Uring, Driver::Legacy) => Err(format!(
            "asked for driver uring but the proxy fell back to legacy (epoll): this machine \
             cannot run io_uring here, so the uring half of the test would run epoll again; \
             set {ALLOW_EPOLL_FALLBACK_ENV}=1 to accept that"
        )),
        (a, r) => Err(format!(
            "asked for driver {} but the proxy runs {}",
            driver_name(a),
            driver_name(r)
        )),
    }
}

/// Panic unless a proxy asked for `asked` really runs `running` (see [`driver_check`] and
/// [`ALLOW_EPOLL_FALLBACK_ENV`]).
pub fn assert_running_driver(asked: Driver, running: Driver) {
    if let Err(why) = driver_check(asked, running, epoll_fallback_allowed()) {
        panic!("{why}");
    }
    if asked != running {
        eprintln!(
            "asked for {}, running {}: allowed by {ALLOW_EPOLL_FALLBACK_ENV}=1",
            driver_name(asked),
            driver_name(running)
        );
    }
}

/// The driver named in the binary's start-up log line (`coremesh listening on ADDR with N
/// core(s), driver NAME`, NAME as [`coremesh::driver_name`] writes it), if `line` is that line.
pub fn driver_in_start_line(line: &str) -> Option<Driver> {
    let rest = &line[line.find("coremesh listening on ")?..];
    let named = rest[rest.find(", driver ")? + ", driver ".len()..].trim_end();
    [Driver::Uring, Driver::Legacy]
        .into_iter()
        .find(|d| named.starts_with(coremesh::driver_name(*d)))
}

/// The lower-case name the CLI uses for `driver` (`--driver uring|legacy`).
pub fn driver_name(driver: Driver) -> &'static str {
    match driver {
        Driver::Uring => "uring",
        Driver::Legacy => "legacy",
    }
}

/// A proxy started by a test; shut down gracefully on drop.
pub struct TestProxy {
    handle: Option<ProxyHandle>,
    driver: Driver,
}

impl TestProxy {
    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.handle()
            .listen_addr()
            .expect("the test proxy has an explicit listener")
    }
    /// The driver the test asked for (the one running, unless [`ALLOW_EPOLL_FALLBACK_ENV`]
    /// let io_uring fall back to epoll).
    pub fn requested_driver(&self) -> Driver {
        self.driver
    }
    fn handle(&self) -> &ProxyHandle {
        self.handle
            .as_ref()
            .expect("TestProxy holds its handle until shutdown")
    }
    /// Graceful shutdown, waiting for it to finish.
    pub fn shutdown(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
    /// The handle itself, for tests that shut it down from another thread.
    pub fn into_handle(mut self) -> ProxyHandle {
        self.handle
            .take()
            .expect("TestProxy holds its handle until shutdown")
    }
}

impl Deref for TestProxy {
    type Target = ProxyHandle;
    fn deref(&self) -> &ProxyHandle {
        self.handle()
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
    }
}

/// Start the proxy in this process with `config` on `driver`: listen 127.0.0.1:0, no CPU
/// pinning, one core unless the config asks for more. Panics, naming the driver, if it fails.
pub fn start_proxy(driver: Driver, mut config: Config) -> TestProxy {
    config.proxy.driver = driver;
    config.proxy.listen = Some("127.0.0.1:0".parse().expect("a literal socket address"));
    config.proxy.pin_cores = false;
    config.proxy.admin = None;
    if config.proxy.cores == 0 {
        config.proxy.cores = 1;
    }
    let handle = match coremesh::start(config) {
        Ok(h) => h,
        Err(e) => panic!(
            "coremesh::start failed on driver {}: {e:#}",
            driver_name(driver)
        ),
    };
    let at = handle.listen_addr();
    assert!(
        at.is_some_and(|a| a.ip().is_loopback() && a.port() != 0),
        "driver {}: listen_addr() must report the bound loopback port, got {at:?}",
        driver_name(driver),
    );
    eprintln!(
        "proxy on {at:?} (asked for {}, running {})",
        driver_name(driver),
        driver_name(handle.driver())
    );
    let running = handle.driver();
    let proxy = TestProxy {
        handle: Some(handle),
        driver,
    };
    // After the TestProxy exists, so that a failure here still shuts the proxy down.
    assert_running_driver(driver, running);
    proxy
}

/// Run `body` once per driver (io_uring, then legacy). Both always run; if either fails the
/// test fails with one line per failing driver naming it and quoting its panic message.
pub fn for_each_driver(body: impl Fn(Driver)) {
    let mut failures = Vec::new();
    for driver in DRIVERS {
        let result = catch_unwind(AssertUnwindSafe(|| body(driver)));
        if let Err(panic) = result {
            failures.push(format!(
                "  on driver {}: {}",
                driver_name(driver),
                panic_message(&*panic)
            ));
        }
    }
    if !failures.is_empty() {
        panic!(
            "failed on {} of {} drivers:\n{}",
            failures.len(),
            DRIVERS.len(),
            failures.join("\n")
        );
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-text panic payload)".to_string()
    }
}

/// A configuration with nothing but test-friendly process settings: listen 127.0.0.1:0,
/// one core, no pinning, [`TEST_SHUTDOWN_GRACE_MS`].
pub fn base_config() -> Config {
    let mut config = Config::default();
    config.proxy.listen = Some("127.0.0.1:0".parse().expect("a literal socket address"));
    config.proxy.cores = 1;
    config.proxy.pin_cores = false;
    config.proxy.shutdown_grace_ms = TEST_SHUTDOWN_GRACE_MS;
    config
}

/// A service named `name` with static `endpoints` and no overrides. Built from
/// [`Config::quick`]'s service so that fields added to `ServiceConfig` later (discovery
/// sources, ...) keep their defaults here without this helper changing.
pub fn service(name: &str, endpoints: &[SocketAddr]) -> ServiceConfig {
    let listen = "127.0.0.1:0".parse().expect("a literal socket address");
    let mut service = Config::quick(listen, endpoints.to_vec())
        .services
        .into_iter()
        .next()
        .expect("Config::quick has one service");
    service.name = name.to_string();
    service
}

/// A route that sends every request (path prefix `/`) to `service`.
pub fn route_all(service: &str) -> RouteConfig {
    RouteConfig {
        path_prefix: Some("/".into()),
        service: Some(service.into()),
        ..Default::default()
    }
}

/// A route with no condition yet, to `service`; set `host`, `path_*` or `headers` on it.
pub fn route_to(service: &str) -> RouteConfig {
    RouteConfig {
        service: Some(service.into()),
        ..Default::default()
    }
}

/// A header condition: `name` equal to `value`.
pub fn header_exact(name: &str, value: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        exact: Some(value.into()),
        ..Default::default()
    }
}

/// A header condition: `name` present, any value.
pub fn header_present(name: &str) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        present: Some(true),
        ..Default::default()
    }
}

/// A split across services by weight.
pub fn split(weights: &[(&str, u32)]) -> Vec<WeightedService> {
    weights
        .iter()
        .map(|(s, w)| WeightedService {
            service: s.to_string(),
            weight: *w,
        })
        .collect()
}

/// [`base_config`] with one service "backend" on `endpoints` and a route sending everything
/// to it.
pub fn one_service(endpoints: &[SocketAddr]) -> Config {
    let mut config = base_config();
    config.services.push(service("backend", endpoints));
    config.routes.push(route_all("backend"));
    config
}

/// [`base_config`] with the given services and routes (in match order).
pub fn services_with_routes(services: Vec<ServiceConfig>, routes: Vec<RouteConfig>) -> Config {
    let mut config = base_config();
    config.services = services;
    config.routes = routes;
    config
}

/// An address on 127.0.0.1 where nothing listens, for as long as this test process runs:
/// connects to it are refused.
///
/// The port is held by a socket that is bound but never listens (without `SO_REUSEADDR` or
/// `SO_REUSEPORT`, so no other socket can bind it, and the kernel does not hand it out as an
/// ephemeral port) and that is kept open until the process exits. A port bound and
/// released at once could be taken by anyone a moment later, and then the "closed" endpoint
/// would answer.
pub fn closed_port_addr() -> SocketAddr {
    static HELD: Mutex<Vec<Socket>> = Mutex::new(Vec::new());
    let socket =
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("create a TCP socket");
    let any_port: SocketAddr = "127.0.0.1:0".parse().expect("a literal socket address");
    socket.bind(&any_port.into()).expect("bind 127.0.0.1:0");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the bound socket's address");
    HELD.lock().unwrap_or_else(|p| p.into_inner()).push(socket);
    addr
}
