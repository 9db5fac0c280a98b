//! What `coremesh inject` adds to a pod, built from its flags: the `coremesh-init`
//! container (installs the interception rules), the `coremesh-proxy` native sidecar with its
//! configuration in an environment variable, and the small volume the rules need.
//!
//! Defaults (each a flag): image `coremesh:<this version>`, proxy uid 2102, inbound port
//! 4143, outbound port 4140, admin port 4191, proxy resources 100m CPU / 32Mi memory
//! requested, 1 CPU / 128Mi memory at most (a request above its limit is refused), a
//! startup probe every second up to 120 times, iptables waiting 10 s for its lock.

use super::node::{map, strings, Node};
use crate::cli::iptables::DEFAULT_LOCK_WAIT_SECONDS;
use anyhow::{bail, Context};
use std::path::PathBuf;

/// The container that installs the interception rules, then exits.
pub const INIT_CONTAINER: &str = "coremesh-init";
/// The proxy, as a native sidecar (an init container with `restartPolicy: Always`).
pub const PROXY_CONTAINER: &str = "coremesh-proxy";
/// An `emptyDir` at `/run` in `coremesh-init`: iptables takes its lock file there, and the
/// container's root file system is read-only.
pub const XTABLES_VOLUME: &str = "coremesh-xtables-lock";
/// The environment variable that carries the proxy's TOML configuration
/// (`coremesh run --config-env COREMESH_CONFIG`): no ConfigMap to create or keep in step.
pub const CONFIG_ENV: &str = "COREMESH_CONFIG";

/// The proxy's uid: the interception rules let its own traffic out unredirected.
pub const DEFAULT_PROXY_UID: u32 = 2102;
pub const DEFAULT_INBOUND_PORT: u16 = 4143;
pub const DEFAULT_OUTBOUND_PORT: u16 = 4140;
pub const DEFAULT_ADMIN_PORT: u16 = 4191;
/// The image both containers run; its entry point is the `coremesh` binary.
pub const DEFAULT_IMAGE: &str = concat!("coremesh:", env!("CARGO_PKG_VERSION"));
/// A sidecar's share of a node when idle: enough for probes, discovery and a trickle.
pub const DEFAULT_CPU_REQUEST: &str = "100m";
pub const DEFAULT_MEMORY_REQUEST: &str = "32Mi";
/// One core at most (the proxy then runs one event loop), and memory for the
/// connection buffers of a busy pod.
pub const DEFAULT_CPU_LIMIT: &str = "1";
pub const DEFAULT_MEMORY_LIMIT: &str = "128Mi";
/// How often the kubelet asks the proxy's `/ready` while it starts: the proxy is usually
/// ready within a second, and the application's containers wait for it.
pub const DEFAULT_STARTUP_PROBE_PERIOD_SECONDS: u32 = 1;
/// How many failed `/ready` checks the kubelet accepts before restarting the proxy:
/// with the period, two minutes (discovery alone may wait 10 s for a slow API server).
pub const DEFAULT_STARTUP_PROBE_FAILURE_THRESHOLD: u32 = 120;
/// Seconds before the first `/ready` check: none, the check is cheap.
pub const DEFAULT_STARTUP_PROBE_INITIAL_DELAY_SECONDS: u32 = 0;
/// Seconds between the kubelet's readiness (`/ready`) and liveness (`/live`) checks once
/// the proxy has started: Kubernetes' own default.
pub const DEFAULT_PROBE_PERIOD_SECONDS: u32 = 10;

/// The flags of `coremesh inject` that shape the sidecar.
#[derive(clap::Args, Debug, Clone)]
pub struct SidecarArgs {
    /// Image of both containers (`name:tag`); its entry point must be `coremesh`.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// The proxy runs as this uid; the interception rules skip its traffic.
    #[arg(long, default_value_t = DEFAULT_PROXY_UID)]
    pub proxy_uid: u32,
    /// Port of the inbound side (connections to the pod are redirected to it).
    #[arg(long, default_value_t = DEFAULT_INBOUND_PORT)]
    pub inbound_port: u16,
    /// Port of the outbound side (the application's connections are redirected to it).
    #[arg(long, default_value_t = DEFAULT_OUTBOUND_PORT)]
    pub outbound_port: u16,
    /// Port of the admin server (probes, metrics); never redirected.
    #[arg(long, default_value_t = DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,
    /// Inbound ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destination subnets left alone (CIDR), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub skip_subnets: Vec<String>,
    /// CPU requested for each coremesh container (a Kubernetes quantity).
    #[arg(long, default_value = DEFAULT_CPU_REQUEST)]
    pub cpu_request: String,
    /// Memory requested for each coremesh container.
    #[arg(long, default_value = DEFAULT_MEMORY_REQUEST)]
    pub memory_request: String,
    /// CPU limit of each coremesh container.
    #[arg(long, default_value = DEFAULT_CPU_LIMIT)]
    pub cpu_limit: String,
    /// Memory limit of each coremesh container.
    #[arg(long, default_value = DEFAULT_MEMORY_LIMIT)]
    pub memory_limit: String,
    /// The proxy's configuration (TOML) instead of the built-in one: it must enable the
    /// admin server on the admin port and the `[inbound]` / `[outbound]` sides on theirs.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds each iptables command of the init container waits for the xtables lock.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LOCK_WAIT_SECONDS)]
    pub iptables_lock_wait: u32,
    /// Seconds between the kubelet's `/ready` checks while the proxy starts.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_STARTUP_PROBE_PERIOD_SECONDS)]
    pub startup_probe_period: u32,
    /// Failed start-up checks before the kubelet restarts the proxy.
    #[arg(long, value_name = "COUNT", default_value_t = DEFAULT_STARTUP_PROBE_FAILURE_THRESHOLD)]
    pub startup_probe_failure_threshold: u32,
    /// Seconds before the kubelet's first start-up check.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_STARTUP_PROBE_INITIAL_DELAY_SECONDS)]
    pub startup_probe_initial_delay: u32,
    /// Seconds between the kubelet's readiness and liveness checks after the start.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_PROBE_PERIOD_SECONDS)]
    pub probe_period: u32,
}

impl Default for SidecarArgs {
    fn default() -> Self {
        SidecarArgs {
            image: DEFAULT_IMAGE.to_owned(),
            proxy_uid: DEFAULT_PROXY_UID,
            inbound_port: DEFAULT_INBOUND_PORT,
            outbound_port: DEFAULT_OUTBOUND_PORT,
            admin_port: DEFAULT_ADMIN_PORT,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            skip_subnets: Vec::new(),
            cpu_request: DEFAULT_CPU_REQUEST.to_owned(),
            memory_request: DEFAULT_MEMORY_REQUEST.to_owned(),
            cpu_limit: DEFAULT_CPU_LIMIT.to_owned(),
            memory_limit: DEFAULT_MEMORY_LIMIT.to_owned(),
            config: None,
            iptables_lock_wait: DEFAULT_LOCK_WAIT_SECONDS,
            startup_probe_period: DEFAULT_STARTUP_PROBE_PERIOD_SECONDS,
            startup_probe_failure_threshold: DEFAULT_STARTUP_PROBE_FAILURE_THRESHOLD,
            startup_probe_initial_delay: DEFAULT_STARTUP_PROBE_INITIAL_DELAY_SECONDS,
            probe_period: DEFAULT_PROBE_PERIOD_SECONDS,
        }
    }
}

/// What is added to each pod template.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    pub init_container: Node,
    pub proxy_container: Node,
    pub volume: Node,
    /// The proxy's configuration has `[identity]`: it terminates mutual TLS, and the
    /// template gets the label other proxies' discovery knows meshed pods by.
    pub mtls: bool,
}

impl Sidecar {
    /// The init container with `ports` (the pod's `tcpSocket` probe ports, see
    /// [`super::probes`]) added to its `--skip-inbound-ports`, after the flag's own.
    pub fn init_container_skipping(&self, ports: &[u16]) -> Node {
        let mut container = self.init_container.clone();
        if ports.is_empty() {
            return container;
        }
        let Some(args) = container.get_mut("args").and_then(Node::as_seq_mut) else {
            return container;
        };
        let flag = args
            .iter()
            .position(|a| a.as_str() == Some("--skip-inbound-ports"));
        match flag.and_then(|at| args.get_mut(at + 1)) {
            Some(Node::String(list)) => {
                let mut all: Vec<u16> = list.split(',').filter_map(|p| p.parse().ok()).collect();
                all.extend(
                    ports
                        .iter()
                        .filter(|p| !list.split(',').any(|q| q == p.to_string())),
                );
                *list = join(&all);
            }
            _ => {
                // Where `init_args` puts the flag: after `--admin-port N` and `--lock-wait N`.
                let at = args
                    .iter()
                    .rposition(|a| matches!(a.as_str(), Some("--admin-port" | "--lock-wait")))
                    .map_or(args.len(), |at| at + 2)
                    .min(args.len());
                args.insert(at, Node::str(join(ports)));
                args.insert(at, Node::str("--skip-inbound-ports"));
            }
        }
        container
    }
}

impl SidecarArgs {
    /// The containers and volume these flags describe; an invalid flag or configuration
    /// file is an error that names it.
    pub fn build(&self) -> anyhow::Result<Sidecar> {
        self.check()?;
        let (config, mtls) = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let mtls = self.check_config(&text, &path.display().to_string())?;
                (text, mtls)
            }
            None => (self.default_config(), false),
        };
        Ok(Sidecar {
            init_container: self.init_container(),
            proxy_container: self.proxy_container(config),
            volume: map([("name", Node::str(XTABLES_VOLUME)), ("emptyDir", map([]))]),
            mtls,
        })
    }

    fn check(&self) -> anyhow::Result<()> {
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            bail!("--image {:?} is not an image name", self.image);
        }
        if self.proxy_uid == 0 {
            bail!("--proxy-uid must not be 0: the proxy runs as a non-root user");
        }
        let ports = [
            ("--inbound-port", self.inbound_port),
            ("--outbound-port", self.outbound_port),
            ("--admin-port", self.admin_port),
        ];
        for (i, (flag, port)) in ports.iter().enumerate() {
            if *port == 0 {
                bail!("{flag} must not be 0");
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, p)| p == port) {
                bail!("{flag} and {other} are both {port}");
            }
        }
        for (flag, value) in [
            ("--cpu-request", &self.cpu_request),
            ("--memory-request", &self.memory_request),
            ("--cpu-limit", &self.cpu_limit),
            ("--memory-limit", &self.memory_limit),
        ] {
            if !is_quantity(value) {
                bail!("{flag} {value:?} is not a Kubernetes quantity (such as 100m, 1, 64Mi)");
            }
        }
        for (resource, request, limit) in [
            ("cpu", &self.cpu_request, &self.cpu_limit),
            ("memory", &self.memory_request, &self.memory_limit),
        ] {
            if let (Some(r), Some(l)) = (quantity_value(request), quantity_value(limit)) {
                if r > l {
                    bail!(
                        "--{resource}-request {request} is more than --{resource}-limit {limit}: \
                         Kubernetes refuses a container whose request exceeds its limit"
                    );
                }
            }
        }
        for subnet in &self.skip_subnets {
            check_cidr(subnet).with_context(|| format!("--skip-subnets {subnet:?}"))?;
        }
        for (flag, value) in [
            ("--startup-probe-period", self.startup_probe_period),
            ("--probe-period", self.probe_period),
            (
                "--startup-probe-failure-threshold",
                self.startup_probe_failure_threshold,
            ),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1 (Kubernetes' minimum)");
            }
        }
        Ok(())
    }

    /// A configuration given with `--config` must be valid and serve the probes; true when
    /// it has `[identity]` (the proxy terminates mutual TLS).
    fn check_config(&self, text: &str, origin: &str) -> anyhow::Result<bool> {
        let config = coremesh_discovery::parse_config(text, origin)
            .map_err(|errors| anyhow::anyhow!("{errors}"))?;
        match &config.proxy.admin {
            Some(admin) if admin.addrs().iter().any(|a| a.port() == self.admin_port) => {}
            _ => bail!(
                "{origin}: [proxy] admin must listen on port {} (--admin-port): the kubelet \
                 probes /ready there",
                self.admin_port
            ),
        }
        // The init container redirects to --inbound-port / --outbound-port: a side that
        // listens elsewhere would leave the pod's TCP going to a port nobody serves.
        let sides = [
            (
                "[inbound]",
                "--inbound-port",
                self.inbound_port,
                config
                    .inbound
                    .as_ref()
                    .map(|side| other_port(&side.side.listen, self.inbound_port)),
            ),
            (
                "[outbound]",
                "--outbound-port",
                self.outbound_port,
                config
                    .outbound
                    .as_ref()
                    .map(|side| other_port(&side.listen, self.outbound_port)),
            ),
        ];
        for (section, flag, port, listen) in sides {
            match listen {
                Some(listen) if listen == port => {}
                Some(listen) => bail!(
                    "{origin}: {section} listen is on port {listen}, but the init container \
                     redirects to {flag} {port}: make them the same (change the file or pass \
                     {flag} {listen})"
                ),
                None => bail!(
                    "{origin}: has no {section} section, but the init container redirects to \
                     {flag} {port}: add {section} with listen on port {port}"
                ),
            }
        }
        Ok(config.identity.is_some())
    }

    /// The configuration the proxy runs with unless `--config` gives one: the admin server
    /// on all addresses of both families (for the kubelet's probes), both sides, JSON
    /// logs; no services, so every outbound connection passes through to where the
    /// application sent it.
    pub fn default_config(&self) -> String {
        // Every listener is on IPv4 and IPv6 (the IPv6 address left out in a pod without
        // IPv6), as the ip6tables rules redirect there too and the kubelet may probe over
        // IPv6: on the default ports a side's default addresses, on another port the same
        // pair written `*:P` (inbound) or `localhost:P` (outbound).
        let listen = |port: u16, default: u16, pair: &str, v4: &str, v6: &str| {
            if port == default {
                format!("# {v4}:{port} and [{v6}]:{port}, the default.\n")
            } else {
                format!("listen = \"{pair}:{port}\"  # {v4}:{port} and [{v6}]:{port}\n")
            }
        };
        format!(
            "# Written by `coremesh inject`.\n\
             [proxy]\n\
             admin = \"*:{admin}\"  # 0.0.0.0:{admin} and [::]:{admin}\n\
             pin_cores = false\n\
             log_format = \"json\"\n\
             # A native sidecar is signalled after the application has exited: exit as\n\
             # soon as the connections in flight are done.\n\
             shutdown = \"drain\"\n\
             \n\
             [inbound]\n\
             {inbound}\
             \n\
             [outbound]\n\
             {outbound}",
            admin = self.admin_port,
            inbound = listen(
                self.inbound_port,
                DEFAULT_INBOUND_PORT,
                "*",
                "0.0.0.0",
                "::"
            ),
            outbound = listen(
                self.outbound_port,
                DEFAULT_OUTBOUND_PORT,
                "localhost",
                "127.0.0.1",
                "::1"
            ),
        )
    }

    /// `coremesh iptables install` with these ports and skips.
    fn init_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "iptables".to_owned(),
            "install".to_owned(),
            "--proxy-uid".to_owned(),
            self.proxy_uid.to_string(),
            "--inbound-port".to_owned(),
            self.inbound_port.to_string(),
            "--outbound-port".to_owned(),
            self.outbound_port.to_string(),
            "--admin-port".to_owned(),
            self.admin_port.to_string(),
        ]
        .into();
        if self.iptables_lock_wait != DEFAULT_LOCK_WAIT_SECONDS {
            args.push("--lock-wait".to_owned());
            args.push(self.iptables_lock_wait.to_string());
        }
        let lists = [
            ("--skip-inbound-ports", join(&self.skip_inbound_ports)),
            ("--skip-outbound-ports", join(&self.skip_outbound_ports)),
            ("--skip-subnets", self.skip_subnets.join(",")),
        ];
        for (flag, list) in lists {
            if !list.is_empty() {
                args.push(flag.to_owned());
                args.push(list);
            }
        }
        args
    }

    fn resources(&self) -> Node {
        map([
            (
                "requests",
                map([
                    ("cpu", Node::str(&self.cpu_request)),
                    ("memory", Node::str(&self.memory_request)),
                ]),
            ),
            (
                "limits",
                map([
                    ("cpu", Node::str(&self.cpu_limit)),
                    ("memory", Node::str(&self.memory_limit)),
                ]),
            ),
        ])
    }

    /// Runs once as root with NET_ADMIN and NET_RAW (what iptables needs) and nothing else.
    fn init_container(&self) -> Node {
        map([
            ("name", Node::str(INIT_CONTAINER)),
            ("image", Node::str(&self.image)),
            ("args", strings(self.init_args())),
            ("resources", self.resources()),
            (
                "securityContext",
                map([
                    ("runAsUser", Node::Int(0)),
                    ("runAsNonRoot", Node::Bool(false)),
                    ("privileged", Node::Bool(false)),
                    ("allowPrivilegeEscalation", Node::Bool(false)),
                    ("readOnlyRootFilesystem", Node::Bool(true)),
                    (
                        "capabilities",
                        map([
                            ("add", strings(["NET_ADMIN", "NET_RAW"])),
                            ("drop", strings(["ALL"])),
                        ]),
                    ),
                ]),
            ),
            (
                "volumeMounts",
                Node::Seq(vec![map([
                    ("name", Node::str(XTABLES_VOLUME)),
                    ("mountPath", Node::str("/run")),
                ])]),
            ),
        ])
    }

    /// The proxy: a native sidecar, so it starts (and is ready, by its startup probe)
    /// before the application's containers, and stops after them.
    fn proxy_container(&self, config: String) -> Node {
        let admin_probe = |path: &str| {
            map([(
                "httpGet",
                map([
                    ("path", Node::str(path)),
                    ("port", Node::str("coremesh-admin")),
                ]),
            )])
        };
        let mut startup = admin_probe("/ready");
        let mut readiness = admin_probe("/ready");
        let mut liveness = admin_probe("/live");
        if let (Some(s), Some(r), Some(l)) = (
            startup.as_map_mut(),
            readiness.as_map_mut(),
            liveness.as_map_mut(),
        ) {
            if self.startup_probe_initial_delay != 0 {
                s.insert(
                    "initialDelaySeconds".into(),
                    Node::Int(self.startup_probe_initial_delay.into()),
                );
            }
            s.insert(
                "periodSeconds".into(),
                Node::Int(self.startup_probe_period.into()),
            );
            s.insert(
                "failureThreshold".into(),
                Node::Int(self.startup_probe_failure_threshold.into()),
            );
            r.insert("periodSeconds".into(), Node::Int(self.probe_period.into()));
            l.insert("periodSeconds".into(), Node::Int(self.probe_period.into()));
        }
        let uid = i64::from(self.proxy_uid);
        map([
            ("name", Node::str(PROXY_CONTAINER)),
            ("image", Node::str(&self.image)),
            ("restartPolicy", Node::str("Always")),
            ("args", strings(["run", "--config-env", CONFIG_ENV])),
            (
                "env",
                Node::Seq(vec![map([
                    ("name", Node::str(CONFIG_ENV)),
                    ("value", Node::String(config)),
                ])]),
            ),
            (
                "ports",
                Node::Seq(vec![
                    port("coremesh-in", self.inbound_port),
                    port("coremesh-admin", self.admin_port),
                ]),
            ),
            ("startupProbe", startup),
            ("readinessProbe", readiness),
            ("livenessProbe", liveness),
            ("resources", self.resources()),
            (
                "securityContext",
                map([
                    ("runAsUser", Node::Int(uid)),
                    ("runAsGroup", Node::Int(uid)),
                    ("runAsNonRoot", Node::Bool(true)),
                    ("allowPrivilegeEscalation", Node::Bool(false)),
                    ("readOnlyRootFilesystem", Node::Bool(true)),
                    ("capabilities", map([("drop", strings(["ALL"]))])),
                ]),
            ),
        ])
    }
}

/// The port of a side's address that is not `port` (the first one), else `port`: every
/// address of the side (IPv4 and IPv6) must be where the rules redirect.
fn other_port(listen: &coremesh_discovery::Listen, port: u16) -> u16 {
    listen
        .addrs()
        .iter()
        .map(|addr| addr.port())
        .find(|p| *p != port)
        .unwrap_or(port)
}

fn port(name: &str, number: u16) -> Node {
    map([
        ("name", Node::str(name)),
        ("containerPort", Node::Int(i64::from(number))),
        ("protocol", Node::str("TCP")),
    ])
}

fn join(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A Kubernetes resource quantity: a decimal number and an optional suffix (binary `Ki`..
/// `Ei`, decimal `m`, `k`, `M`..`E`, or an exponent `e3`).
fn is_quantity(text: &str) -> bool {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let digits_ok = number.chars().any(|c| c.is_ascii_digit()) && number.matches('.').count() <= 1;
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .map(|exp| exp.strip_prefix(['+', '-']).unwrap_or(exp))
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    digits_ok && suffix_ok
}

/// A quantity's value in base units (cores, bytes), for comparing a request with its
/// limit; `None` when `text` is not a quantity.
fn quantity_value(text: &str) -> Option<f64> {
    if !is_quantity(text) {
        return None;
    }
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent => 10f64.powi(exponent[1..].parse().ok()?),
    };
    Some(number * scale)
}

/// `address/prefix`, IPv4 or IPv6.
fn check_cidr(text: &str) -> anyhow::Result<()> {
    let (address, prefix) = text
        .split_once('/')
        .context("must be address/prefix, as 10.0.0.0/8")?;
    let address: std::net::IpAddr = address.parse().context("invalid address")?;
    let prefix: u8 = prefix.parse().context("invalid prefix length")?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        bail!("prefix length {prefix} is over {max}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use coremesh_discovery::Listen;

    #[test]
    fn quantities_are_checked() {
        for good in ["100m", "1", "0.5", "64Mi", "1Gi", "128M", "1e3", "2E-1"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "1.2.3", "64MB", "-1", "1 Gi", "e3", "1e"] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn bad_flags_are_refused_with_the_flag_named() {
        type Change = fn(&mut SidecarArgs);
        let cases: [(&str, Change); 6] = [
            ("--proxy-uid", |a| a.proxy_uid = 0),
            ("--admin-port and --inbound-port", |a| {
                a.admin_port = a.inbound_port
            }),
            ("--memory-limit", |a| a.memory_limit = "lots".into()),
            ("--cpu-request", |a| a.cpu_request = String::new()),
            ("--image", |a| a.image = "a b".into()),
            ("--skip-subnets", |a| {
                a.skip_subnets = vec!["10.0.0.0/33".into()]
            }),
        ];
        for (flag, change) in cases {
            let mut args = SidecarArgs::default();
            change(&mut args);
            let error = format!("{:#}", args.build().expect_err(flag));
            assert!(error.contains(flag), "{flag}: {error}");
        }
    }

    #[test]
    fn the_built_in_configuration_is_valid_and_uses_the_flags_ports() {
        let args = SidecarArgs {
            inbound_port: 5143,
            outbound_port: 5140,
            admin_port: 5191,
            ..SidecarArgs::default()
        };
        let config = match coremesh_discovery::parse_config(&args.default_config(), "built-in") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        };
        // Each listener is a pair of both families whose IPv6 address may be left out.
        let pair = |listen: Option<Listen>| {
            listen.map(|l| {
                let addrs = l.addrs().to_vec();
                let skipped: Vec<bool> = addrs.iter().map(|a| l.may_skip(*a)).collect();
                (addrs, skipped)
            })
        };
        let both = |v4: &str, v6: &str| {
            Some((
                vec![v4.parse().unwrap(), v6.parse().unwrap()],
                vec![false, true],
            ))
        };
        assert_eq!(pair(config.proxy.admin), both("0.0.0.0:5191", "[::]:5191"));
        assert_eq!(
            pair(config.inbound.map(|side| side.side.listen)),
            both("0.0.0.0:5143", "[::]:5143")
        );
        assert_eq!(
            pair(config.outbound.map(|side| side.listen)),
            both("127.0.0.1:5140", "[::1]:5140")
        );
        assert_eq!(config.proxy.log_format, coremesh_discovery::LogFormat::Json);
        assert_eq!(
            config.proxy.shutdown,
            coremesh_discovery::ShutdownMode::Drain
        );
    }

    #[test]
    fn on_the_default_ports_the_sides_keep_both_families() {
        let text = SidecarArgs::default().default_config();
        let config = match coremesh_discovery::parse_config(&text, "built-in") {
            Ok(config) => config,
            Err(errors) => panic!("{errors}"),
        };
        let inbound = config.inbound.map(|side| side.side.listen);
        let outbound = config.outbound.map(|side| side.listen);
        assert_eq!(
            inbound.map(|l| (l.addrs().to_vec(), l.is_explicit())),
            Some((
                vec![
                    "0.0.0.0:4143".parse().unwrap(),
                    "[::]:4143".parse().unwrap()
                ],
                false
            ))
        );
        assert_eq!(
            outbound.map(|l| (l.addrs().to_vec(), l.is_explicit())),
            Some((
                vec![
                    "127.0.0.1:4140".parse().unwrap(),
                    "[::1]:4140".parse().unwrap()
                ],
                false
            ))
        );
        assert_eq!(config.proxy.listen, None, "{text}");
    }

    #[test]
    fn a_configuration_file_must_serve_the_probes_on_the_admin_port() {
        let dir = std::env::temp_dir().join(format!("coremesh-inject-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("mesh.toml");
        std::fs::write(&file, "[proxy]\nadmin = \"0.0.0.0:9901\"\n").expect("write");
        let args = SidecarArgs {
            config: Some(file.clone()),
            ..SidecarArgs::default()
        };
        let error = format!("{:#}", args.build().expect_err("wrong admin port"));
        std::fs::write(&file, "[proxy]\ncores = \"two\"\n").expect("write");
        let invalid = format!("{:#}", args.build().expect_err("invalid"));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            error.ends_with("[proxy] admin must listen on port 4191 (--admin-port): the kubelet probes /ready there"),
            "{error}"
        );
        assert!(invalid.contains(":2:9: field `proxy.cores`"), "{invalid}");
    }

    #[test]
    fn init_arguments_carry_ports_and_skips() {
        let args = SidecarArgs {
            skip_inbound_ports: vec![22, 9090],
            skip_subnets: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
            ..SidecarArgs::default()
        };
        assert_eq!(
            args.init_args().join(" "),
            "iptables install --proxy-uid 2102 --inbound-port 4143 --outbound-port 4140 \
             --admin-port 4191 --skip-inbound-ports 22,9090 --skip-subnets 10.0.0.0/8,fd00::/8"
        );
    }
}
