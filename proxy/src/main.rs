//! The `coremesh` command line: `proxy` (a quick reverse proxy), `run` (a config file),
//! `check` (validate a config file), `demo` (the whole thing on a built-in setup), `top`,
//! `iptables` (the rules that make it a transparent sidecar) and `inject` / `uninject` (the
//! sidecar in Kubernetes manifests).

use clap::{Parser, Subcommand, ValueEnum};
use coremesh::admin::LogLevel;
use coremesh::StartOptions;
use coremesh_discovery::{BalanceKind, Config, Driver, EndpointEntry, LogFormat};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "coremesh",
    version,
    about = "A thread-per-core service-mesh sidecar proxy"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum DriverArg {
    Uring,
    Legacy,
}

impl From<DriverArg> for Driver {
    fn from(d: DriverArg) -> Driver {
        match d {
            DriverArg::Uring => Driver::Uring,
            DriverArg::Legacy => Driver::Legacy,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for LogFormat {
    fn from(f: LogFormatArg) -> LogFormat {
        match f {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum BalanceArg {
    LeastLatency,
    RoundRobin,
    Random,
}

impl From<BalanceArg> for BalanceKind {
    fn from(b: BalanceArg) -> BalanceKind {
        match b {
            BalanceArg::LeastLatency => BalanceKind::LeastLatency,
            BalanceArg::RoundRobin => BalanceKind::RoundRobin,
            BalanceArg::Random => BalanceKind::Random,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum UpstreamProtocolArg {
    /// As the client spoke (HTTP/2 out for HTTP/2 in, HTTP/1.1 for HTTP/1).
    Preserve,
    Http1,
    H2,
}

impl From<UpstreamProtocolArg> for coremesh_discovery::UpstreamProtocol {
    fn from(p: UpstreamProtocolArg) -> Self {
        match p {
            UpstreamProtocolArg::Preserve => coremesh_discovery::UpstreamProtocol::Preserve,
            UpstreamProtocolArg::Http1 => coremesh_discovery::UpstreamProtocol::Http1,
            UpstreamProtocolArg::H2 => coremesh_discovery::UpstreamProtocol::H2,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Reverse-proxy one listener to a set of endpoints, no config file needed.
    Proxy {
        /// Address to accept on.
        #[arg(long, default_value = coremesh_discovery::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Endpoints, comma-separated `ip:port` or `host:port` (a name is resolved like a
        /// service's `dns` entry: A and AAAA, the hosts file first, again as the TTL says).
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<EndpointEntry>,
        /// Admin server address (e.g. 127.0.0.1:4191, or `*:4191` for IPv4 and IPv6).
        #[arg(long)]
        admin: Option<coremesh_discovery::Listen>,
        /// A whole admin request must arrive within this many milliseconds.
        #[arg(long, default_value_t = coremesh_discovery::DEFAULT_ADMIN_REQUEST_TIMEOUT_MS)]
        admin_request_timeout_ms: u64,
        /// An admin answer must be written within this many milliseconds.
        #[arg(long, default_value_t = coremesh_discovery::DEFAULT_ADMIN_WRITE_TIMEOUT_MS)]
        admin_write_timeout_ms: u64,
        /// Admin connections served at once; one more is answered 503.
        #[arg(long, default_value_t = coremesh_discovery::DEFAULT_ADMIN_MAX_CONNECTIONS)]
        admin_max_connections: usize,
        /// Worker cores (default: one per available CPU).
        #[arg(long)]
        cores: Option<usize>,
        /// I/O driver; io_uring falls back to legacy where the kernel lacks it.
        #[arg(long, value_enum, default_value = "uring")]
        driver: DriverArg,
        /// Grace period for in-flight requests on SIGTERM / SIGINT, in milliseconds.
        #[arg(long)]
        grace_ms: Option<u64>,
        /// How to choose among endpoints.
        #[arg(long, value_enum, default_value = "least-latency")]
        balance: BalanceArg,
        /// The protocol requests go to the endpoints in.
        #[arg(long, value_enum, default_value = "preserve")]
        upstream_protocol: UpstreamProtocolArg,
        /// Attempts per request, the first included, for failures that are safe to retry.
        #[arg(long)]
        retries: Option<u32>,
        /// Response statuses on which idempotent requests are retried elsewhere (e.g. 502,503,504).
        #[arg(long, value_delimiter = ',')]
        retry_on: Vec<u16>,
        /// Request timeout in milliseconds (all attempts together).
        #[arg(long)]
        timeout: Option<u64>,
        /// Log lines on standard error as text (colours only on a terminal) or JSON.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Run with a TOML configuration file (watched for changes), or one held in an
    /// environment variable.
    Run {
        #[arg(long, short, required_unless_present = "config_env")]
        config: Option<PathBuf>,
        /// Read the configuration's TOML text from this environment variable instead of a
        /// file (what `coremesh inject` sets up); it does not change while running.
        #[arg(long, value_name = "VAR", conflicts_with = "config")]
        config_env: Option<String>,
        /// Overrides `[proxy] log_format`.
        #[arg(long, value_enum)]
        log_format: Option<LogFormatArg>,
    },
    /// Validate a configuration file and name each error with its line and field.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start demo backends and the proxy in this process, drive traffic, print what happened.
    Demo(coremesh::cli::demo::DemoArgs),
    /// A live view of a running proxy's services and endpoints (reads the admin server).
    Top(coremesh::cli::top::TopArgs),
    /// Install or remove the nat-table rules that send this host's or pod's TCP through the proxy.
    Iptables(coremesh::cli::iptables::IptablesArgs),
    /// Add the coremesh sidecar to the workloads of Kubernetes YAML (to standard output).
    Inject(coremesh::cli::inject::InjectArgs),
    /// Take out what `inject` added, giving back the original YAML.
    Uninject(coremesh::cli::inject::UninjectArgs),
    /// The workload identity for mutual TLS: `identity check --config FILE`.
    Identity(coremesh::cli::identity::IdentityArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Proxy {
            listen,
            to,
            admin,
            admin_request_timeout_ms,
            admin_write_timeout_ms,
            admin_max_connections,
            cores,
            driver,
            grace_ms,
            balance,
            upstream_protocol,
            retries,
            retry_on,
            timeout,
            log_format,
        } => {
            let mut addresses = Vec::new();
            let mut names = Vec::new();
            for entry in to {
                match entry {
                    EndpointEntry::Address(address) => addresses.push(address),
                    EndpointEntry::Name(target) => names.push(target.to_string()),
                }
            }
            let mut config = Config::quick(listen, addresses);
            if let Some(service) = config.services.first_mut() {
                service.dns = names;
            }
            if let Some(format) = log_format {
                config.proxy.log_format = format.into();
            }
            config.defaults.balance = balance.into();
            config.defaults.protocol = upstream_protocol.into();
            if let Some(n) = retries {
                config.defaults.max_attempts = n;
            }
            if let Some(ms) = timeout {
                config.defaults.request_timeout_ms = ms;
            }
            for route in &mut config.routes {
                route.retry_on = retry_on.clone();
            }
            config.proxy.admin = admin;
            config.proxy.admin_request_timeout_ms = admin_request_timeout_ms;
            config.proxy.admin_write_timeout_ms = admin_write_timeout_ms;
            config.proxy.admin_max_connections = admin_max_connections;
            config.proxy.cores = cores.unwrap_or(0);
            config.proxy.driver = driver.into();
            if let Some(g) = grace_ms {
                config.proxy.shutdown_grace_ms = g;
            }
            // Every flag is in the configuration before it is checked.
            let problems = coremesh_discovery::validate(&config);
            if !problems.is_empty() {
                for p in &problems {
                    eprintln!("coremesh: {}: {}", p.path, p.message);
                }
                return ExitCode::from(2);
            }
            let log_level = init_logging(config.proxy.log_format);
            serve(config, log_level, None)
        }
        Command::Run {
            config: path,
            config_env,
            log_format,
        } => {
            let loaded = match (&path, &config_env) {
                (_, Some(var)) => config_from_env(var),
                (Some(path), None) => coremesh_discovery::load_config(path),
                (None, None) => Err(coremesh_discovery::ConfigErrors::single(
                    "coremesh run",
                    "needs --config FILE or --config-env VAR".to_owned(),
                )),
            };
            match loaded {
                Ok(mut cfg) => {
                    if let Some(format) = log_format {
                        cfg.proxy.log_format = format.into();
                    }
                    let log_level = init_logging(cfg.proxy.log_format);
                    serve(cfg, log_level, path)
                }
                Err(errors) => {
                    eprintln!("{errors}");
                    return ExitCode::from(2);
                }
            }
        }
        Command::Check { config } => match coremesh_discovery::load_config(&config) {
            Ok(cfg) => {
                println!(
                    "{}: OK ({} services, {} routes)",
                    config.display(),
                    cfg.services.len(),
                    cfg.routes.len()
                );
                Ok(())
            }
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::from(2);
            }
        },
        Command::Demo(args) => {
            init_logging(LogFormat::Text);
            coremesh::cli::demo::run(args)
        }
        Command::Top(args) => coremesh::cli::top::run(args),
        Command::Iptables(args) => coremesh::cli::iptables::run(args),
        Command::Inject(args) => coremesh::cli::inject::run_inject(args),
        Command::Uninject(args) => coremesh::cli::inject::run_uninject(args),
        Command::Identity(args) => return coremesh::cli::identity::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coremesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration held in the environment variable `var` (`coremesh run --config-env`).
fn config_from_env(var: &str) -> Result<Config, coremesh_discovery::ConfigErrors> {
    let origin = format!("${var}");
    match std::env::var(var) {
        Ok(text) => coremesh_discovery::parse_config(&text, &origin),
        Err(error) => Err(coremesh_discovery::ConfigErrors::single(
            &origin,
            format!("cannot read the environment variable: {error}"),
        )),
    }
}

/// Structured logs to stderr, filtered by `RUST_LOG` (default `info`), changeable at run
/// time through the admin server's `/log-level`: text (ANSI colours only when stderr is a
/// terminal and `NO_COLOR` is unset), or one JSON object per line.
fn init_logging(format: LogFormat) -> Arc<dyn LogLevel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, reload, EnvFilter};
    let initial = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&initial).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (text, json) = match format {
        LogFormat::Text => (
            Some(fmt::layer().with_ansi(colour).with_writer(std::io::stderr)),
            None,
        ),
        LogFormat::Json => (None, Some(fmt::layer().json().with_writer(std::io::stderr))),
    };
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(json)
        .try_init();
    Arc::new(ReloadableLevel {
        handle,
        current: std::sync::Mutex::new(initial),
    })
}

struct ReloadableLevel {
    handle: tracing_subscriber::reload::Handle<
        tracing_subscriber::EnvFilter,
        tracing_subscriber::Registry,
    >,
    current: std::sync::Mutex<String>,
}

impl LogLevel for ReloadableLevel {
    fn get(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }
    fn set(&self, filter: &str) -> Result<(), String> {
        let parsed = tracing_subscriber::EnvFilter::try_new(filter)
            .map_err(|e| format!("invalid filter {filter:?}: {e}"))?;
        self.handle.reload(parsed).map_err(|e| e.to_string())?;
        if let Ok(mut c) = self.current.lock() {
            *c = filter.to_string();
        }
        Ok(())
    }
}

/// Run the proxy until SIGTERM, SIGINT or an admin `POST /shutdown`, then shut down
/// gracefully and exit 0. With a config file (`coremesh run`), the discovery controller
/// watches it (and DNS / Kubernetes sources) and installs each new snapshot on every core,
/// and SIGHUP re-reads the file at once.
fn serve(
    config: Config,
    log_level: Arc<dyn LogLevel>,
    path: Option<PathBuf>,
) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // A file to watch, or names to resolve and Services to follow: the discovery
    // controller runs, and `/ready` waits for its first answers.
    let discover = path.is_some()
        || config
            .services
            .iter()
            .any(|service| !service.dns.is_empty() || !service.kubernetes.is_empty());
    let wanted: &[i32] = if path.is_some() {
        &[SIGTERM, SIGINT, SIGHUP]
    } else {
        &[SIGTERM, SIGINT]
    };
    let started = std::time::Instant::now();
    // How long `/ready` waits for the first DNS answers and EndpointSlices before it says
    // yes anyway (services without endpoints answer 503 until they arrive).
    let first_wait = std::time::Duration::from_millis(config.discovery.first_wait_ms);
    let mut signals = signal_hook::iterator::Signals::new(wanted)?;
    let signal_handle = signals.handle();
    let handle = coremesh::start_with(
        config.clone(),
        StartOptions {
            log_level: Some(log_level),
            not_ready_yet: discover,
        },
    )?;
    let discovery = match discover {
        true => {
            let installer = handle.installer();
            let discovery =
                coremesh_discovery::Discovery::start(path.clone(), config, move |snapshot| {
                    installer.install(snapshot);
                })?;
            let discovery = Arc::new(discovery);
            let stats_source = Arc::downgrade(&discovery);
            handle.set_extra_metrics(Box::new(move || {
                stats_source
                    .upgrade()
                    .map(|d| discovery_metrics(&d.stats()))
                    .unwrap_or_default()
            }));
            if !discovery.wait_ready(first_wait) {
                tracing::warn!("discovery sources have not all answered yet; serving anyway");
            }
            handle.set_ready(true);
            Some(discovery)
        }
        false => None,
    };
    // Every listener is bound (`start_with` returns after binding them) and the first
    // discovery round is done: `/ready` says yes from here.
    tracing::info!(
        "ready {:.1} ms after start",
        started.elapsed().as_secs_f64() * 1e3
    );
    // systemd `Type=notify` (deploy/systemd/coremesh.service): units ordered after this one,
    // such as the interception rules, start only now. Nothing without $NOTIFY_SOCKET.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("cannot tell systemd the proxy is ready ($NOTIFY_SOCKET): {e}");
    }
    let (tx, rx) = crossbeam_channel::bounded::<i32>(8);
    let signal_thread = std::thread::spawn(move || {
        for signal in signals.forever() {
            if tx.send(signal).is_err() {
                break;
            }
        }
    });
    loop {
        crossbeam_channel::select! {
            recv(rx) -> signal => match (signal, &discovery, &path) {
                (Ok(SIGHUP), Some(discovery), Some(path)) => match discovery.reload_now() {
                    coremesh_discovery::ReloadOutcome::Refused(errors) => {
                        tracing::error!("{}: reload refused, the configuration in force stays:\n{errors}", path.display());
                    }
                    outcome => tracing::info!("{}: reload: {outcome:?}", path.display()),
                },
                (Ok(signal), _, _) => {
                    tracing::info!(signal, "shutting down: no new connections, finishing in-flight requests");
                    break;
                }
                (Err(_), _, _) => break,
            },
            recv(handle.shutdown_requests()) -> _ => {
                tracing::info!("shutting down (admin request): no new connections, finishing in-flight requests");
                handle.outbound_stopper().stop();
                break;
            }
        }
    }
    // The outbound side keeps working through the grace period unless `/shutdown` (or a
    // second signal) asks to stop now.
    let stopper = handle.outbound_stopper();
    let requests = handle.shutdown_requests().clone();
    let signals_again = rx.clone();
    std::thread::spawn(move || {
        crossbeam_channel::select! {
            recv(requests) -> _ => {},
            recv(signals_again) -> _ => {},
        }
        stopper.stop();
    });
    handle.set_ready(false);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Discovery keeps installing snapshots while the cores drain: the outbound side may
    // serve the application's calls for the whole grace period.
    handle.shutdown();
    // The metrics closure holds only a weak reference, so this is the last one.
    if let Some(Ok(d)) = discovery.map(Arc::try_unwrap) {
        d.stop();
    }
    signal_handle.close();
    let _ = signal_thread.join();
    tracing::info!("stopped");
    Ok(())
}

/// Discovery's counters as Prometheus families.
fn discovery_metrics(stats: &coremesh_discovery::DiscoveryStats) -> String {
    format!(
        "# HELP coremesh_config_reloads_total Configuration file versions accepted.\n\
         # TYPE coremesh_config_reloads_total counter\n\
         coremesh_config_reloads_total {}\n\
         # HELP coremesh_config_reloads_refused_total Configuration file versions refused (invalid); the previous one stayed in force.\n\
         # TYPE coremesh_config_reloads_refused_total counter\n\
         coremesh_config_reloads_refused_total {}\n\
         # HELP coremesh_discovery_snapshots_total Snapshots of routes and endpoints installed on the cores.\n\
         # TYPE coremesh_discovery_snapshots_total counter\n\
         coremesh_discovery_snapshots_total {}\n",
        stats.reloads_applied, stats.reloads_refused, stats.snapshots_published
    )
}
