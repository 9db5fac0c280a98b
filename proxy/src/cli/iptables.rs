//! `coremesh iptables install|uninstall`: the nat-table rules that send a sidecar's TCP
//! traffic through the proxy, in chains of their own, for IPv4 and IPv6.
//!
//! What `install` adds to the `nat` table (the same for `iptables` and `ip6tables`):
//!
//! ```text
//! PREROUTING -p tcp -> COREMESH_PREROUTING
//!     RETURN for a destination that is not this host's own (forwarded traffic)
//!     RETURN for the admin port and each --skip-inbound-ports port (destination port)
//!     RETURN for each --skip-subnets subnet (source address)
//!     -> COREMESH_INBOUND_REDIRECT: REDIRECT --to-ports <inbound port>
//! OUTPUT -p tcp -> COREMESH_OUTPUT
//!     RETURN for -m owner --uid-owner <proxy uid>   (the proxy's own connections)
//!     RETURN for -o lo                              (loopback, see below)
//!     RETURN for each --skip-outbound-ports port (destination port)
//!     RETURN for each --skip-subnets subnet (destination address)
//!     -> COREMESH_OUTBOUND_REDIRECT: REDIRECT --to-ports <outbound port>
//! ```
//!
//! Loopback: a connection from the application to 127.0.0.1 (or to any local address, which
//! the kernel also routes through `lo`) stays local and is not redirected. The inbound side
//! forwards redirected connections to the application on 127.0.0.1, but it does so as the
//! proxy's uid, which the first rule already returns; so does every connection the outbound
//! side makes to an endpoint. Without the uid rule the proxy would redirect its own traffic
//! into itself.
//!
//! Idempotence: `install` creates each of its chains when missing and flushes it otherwise,
//! fills them, and appends the two jumps only when `-C` says they are absent; running it
//! twice leaves the table as running it once. `uninstall` deletes the jumps to its chains
//! (every copy), then flushes and deletes the chains, and touches nothing else; on a table
//! without them it does nothing. `--dry-run` prints the same steps as a shell script.
//! (While a second `install` refills a chain it has just flushed, new connections pass
//! without redirection for that moment; a first install has no such window, since the
//! jumps come last.)
//!
//! Programs: each step is one argv (no shell) for `iptables-nft` / `ip6tables-nft`, falling
//! back to the `-legacy` programs when the nft ones are missing or cannot read the nat table,
//! then to plain `iptables` / `ip6tables` (`--backend` forces one). A failing command stops
//! the run with the exact command and its standard error. Without CAP_NET_ADMIN, or without
//! any usable program, the run stops before touching anything and says what is missing.
//!
//! IPv6: when the IPv4 program works but its IPv6 twin is missing or cannot use the nat table
//! (IPv6 disabled in the kernel, no `ip6table_nat`), the IPv4 rules are applied and a warning
//! on standard error says IPv6 connections are not intercepted; the exit status is 0, since a
//! host or pod without IPv6 is common and has no IPv6 traffic to intercept. With
//! `--require-ipv6` that case is an error instead.

use anyhow::{anyhow, bail, Context};
use ipnet::IpNet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Jumped to from `PREROUTING` for TCP: decides what inbound traffic is redirected.
pub const CHAIN_PREROUTING: &str = "COREMESH_PREROUTING";
/// Redirects inbound TCP to the inbound listener.
pub const CHAIN_INBOUND_REDIRECT: &str = "COREMESH_INBOUND_REDIRECT";
/// Jumped to from `OUTPUT` for TCP: decides what outbound traffic is redirected.
pub const CHAIN_OUTPUT: &str = "COREMESH_OUTPUT";
/// Redirects outbound TCP to the outbound listener.
pub const CHAIN_OUTBOUND_REDIRECT: &str = "COREMESH_OUTBOUND_REDIRECT";
/// Every chain `install` creates, in the order it creates them.
pub const CHAINS: [&str; 4] = [
    CHAIN_INBOUND_REDIRECT,
    CHAIN_PREROUTING,
    CHAIN_OUTBOUND_REDIRECT,
    CHAIN_OUTPUT,
];
/// The built-in chains that jump to ours, and the chain each jumps to.
pub const JUMPS: [(&str, &str); 2] = [("PREROUTING", CHAIN_PREROUTING), ("OUTPUT", CHAIN_OUTPUT)];

/// The inbound listener's port (`[inbound] listen = "0.0.0.0:4143"` by default).
pub const DEFAULT_INBOUND_PORT: u16 = 4143;
/// The outbound listener's port (`[outbound] listen = "127.0.0.1:4140"` by default).
pub const DEFAULT_OUTBOUND_PORT: u16 = 4140;
/// The admin server's port, always left alone inbound (probes and scrapes reach it directly).
pub const DEFAULT_ADMIN_PORT: u16 = 4191;
/// Seconds each command waits for the xtables lock that another program (kube-proxy, Docker,
/// firewalld) may hold, instead of failing at once (`--lock-wait`): long enough for a
/// kube-proxy resync on a busy node, short enough that a stuck holder is reported.
pub const DEFAULT_LOCK_WAIT_SECONDS: u32 = 10;
/// Deletions of one jump in one `uninstall` at most (a copy added by hand goes too); a bound
/// so that a check that keeps answering "present" cannot loop forever.
pub const MAX_JUMP_DELETES: usize = 16;
/// CAP_NET_ADMIN's bit in the capability sets of `/proc/self/status`.
const CAP_NET_ADMIN: u32 = 12;
/// Where programs are looked for after `PATH` (a user's `PATH` often lacks the sbin folders).
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/// `coremesh iptables install|uninstall`.
#[derive(clap::Args, Debug, Clone)]
pub struct IptablesArgs {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Action {
    /// Add the rules that redirect TCP to the proxy (running it twice changes nothing).
    Install(InstallArgs),
    /// Remove exactly what `install` added, and nothing else.
    Uninstall(CommonArgs),
}

/// `coremesh iptables install`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// The uid the proxy runs as: its own connections are never redirected.
    #[arg(long)]
    pub proxy_uid: u32,
    /// The inbound listener's port: inbound TCP is redirected to it.
    #[arg(long, default_value_t = DEFAULT_INBOUND_PORT, value_parser = port)]
    pub inbound_port: u16,
    /// The outbound listener's port: outbound TCP is redirected to it.
    #[arg(long, default_value_t = DEFAULT_OUTBOUND_PORT, value_parser = port)]
    pub outbound_port: u16,
    /// Inbound destination ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports left alone, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = port)]
    pub skip_outbound_ports: Vec<u16>,
    /// Subnets left alone, comma-separated CIDRs (a bare address is one host): inbound by
    /// source address, outbound by destination address; IPv4 ones go to iptables, IPv6 ones
    /// to ip6tables.
    #[arg(long, value_delimiter = ',', value_parser = subnet)]
    pub skip_subnets: Vec<IpNet>,
    /// The admin server's port, always left alone inbound.
    #[arg(long, default_value_t = DEFAULT_ADMIN_PORT, value_parser = port)]
    pub admin_port: u16,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags both actions take.
#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// Print the commands, as a shell script, instead of running them.
    #[arg(long)]
    pub dry_run: bool,
    /// Which iptables: nft, legacy, or auto (nft, else legacy when nft is missing or unusable).
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: Backend,
    /// Fail instead of warning when ip6tables is missing or cannot use the nat table.
    #[arg(long)]
    pub require_ipv6: bool,
    /// Seconds each iptables command waits for the xtables lock another program holds.
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_LOCK_WAIT_SECONDS)]
    pub lock_wait: u32,
}

/// The iptables flavour to drive.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Auto,
    Nft,
    Legacy,
}

/// IPv4 (`iptables`) or IPv6 (`ip6tables`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The program's name without a flavour suffix.
    pub fn program(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
    fn holds(self, net: &IpNet) -> bool {
        matches!(
            (self, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        )
    }
}

/// A port number from the command line (1-65535).
fn port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

/// A subnet from the command line: `10.0.0.0/8`, `fd00::/8`, or one address.
pub fn subnet(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>()
            .map_err(|_| format!("{s:?} is not a CIDR subnet (like 10.0.0.0/8 or fd00::/8)"))?
    } else {
        IpNet::from(
            s.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an IP address or a CIDR subnet"))?,
        )
    };
    Ok(net.trunc())
}

/// What `install` redirects and what it leaves alone, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub admin_port: u16,
    /// Without the admin port and without repeats, in the order given.
    pub skip_inbound_ports: Vec<u16>,
    /// Without repeats, in the order given.
    pub skip_outbound_ports: Vec<u16>,
    /// Without repeats, in the order given.
    pub skip_subnets: Vec<IpNet>,
    /// Seconds each command waits for the xtables lock.
    pub lock_wait: u32,
}

impl Rules {
    /// Checks the flags: the two listeners need different ports.
    pub fn from_args(a: &InstallArgs) -> anyhow::Result<Rules> {
        if a.inbound_port == a.outbound_port {
            bail!(
                "--inbound-port and --outbound-port are both {}: the two listeners need different ports",
                a.inbound_port
            );
        }
        Ok(Rules {
            proxy_uid: a.proxy_uid,
            inbound_port: a.inbound_port,
            outbound_port: a.outbound_port,
            admin_port: a.admin_port,
            skip_inbound_ports: distinct(
                a.skip_inbound_ports
                    .iter()
                    .copied()
                    .filter(|p| *p != a.admin_port),
            ),
            skip_outbound_ports: distinct(a.skip_outbound_ports.iter().copied()),
            skip_subnets: distinct(a.skip_subnets.iter().copied()),
            lock_wait: a.common.lock_wait,
        })
    }
}

fn distinct<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// One command's arguments after the program name.
pub type Argv = Vec<String>;

/// One step of a plan. A check exits 0 when what it asks about is there and 1 when it is
/// not; any other exit is an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Always run.
    Run(Argv),
    /// Run `then` when `check` says absent.
    IfAbsent { check: Argv, then: Argv },
    /// Run `then`, in order, when `check` says present.
    IfPresent { check: Argv, then: Vec<Step> },
    /// Run `then` as long as `check` says present (at most [`MAX_JUMP_DELETES`] times).
    WhilePresent { check: Argv, then: Argv },
}

/// `-w <lock_wait> -t nat` followed by `args`.
fn nat(lock_wait: u32, args: &[&str]) -> Argv {
    let wait = lock_wait.to_string();
    ["-w", wait.as_str(), "-t", "nat"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect()
}

/// The jump rule from a built-in chain to ours, after `-A` / `-C` / `-D` and the chain.
fn jump_rule(chain: &str) -> [&str; 4] {
    ["-p", "tcp", "-j", chain]
}

/// `install`'s steps for one family: chains created or flushed, filled, then the jumps.
pub fn install_plan(rules: &Rules, family: Family) -> Vec<Step> {
    let mut steps = Vec::new();
    for chain in CHAINS {
        steps.push(Step::IfAbsent {
            check: nat(rules.lock_wait, &["-S", chain]),
            then: nat(rules.lock_wait, &["-N", chain]),
        });
        steps.push(Step::Run(nat(rules.lock_wait, &["-F", chain])));
    }
    let append = |chain: &str, rule: &[&str]| {
        let mut args = vec!["-A", chain];
        args.extend_from_slice(rule);
        Step::Run(nat(rules.lock_wait, &args))
    };
    let inbound = rules.inbound_port.to_string();
    steps.push(append(
        CHAIN_INBOUND_REDIRECT,
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &inbound],
    ));
    // Only connections to this host (or pod) are inbound: traffic the host forwards (to
    // containers, as a router) goes on untouched.
    steps.push(append(
        CHAIN_PREROUTING,
        &["-m", "addrtype", "!", "--dst-type", "LOCAL", "-j", "RETURN"],
    ));
    let admin = rules.admin_port.to_string();
    steps.push(append(
        CHAIN_PREROUTING,
        &["-p", "tcp", "--dport", &admin, "-j", "RETURN"],
    ));
    for p in &rules.skip_inbound_ports {
        let p = p.to_string();
        steps.push(append(
            CHAIN_PREROUTING,
            &["-p", "tcp", "--dport", &p, "-j", "RETURN"],
        ));
    }
    let nets: Vec<String> = rules
        .skip_subnets
        .iter()
        .filter(|n| family.holds(n))
        .map(|n| n.to_string())
        .collect();
    for net in &nets {
        steps.push(append(CHAIN_PREROUTING, &["-s", net, "-j", "RETURN"]));
    }
    steps.push(append(
        CHAIN_PREROUTING,
        &["-p", "tcp", "-j", CHAIN_INBOUND_REDIRECT],
    ));
    let outbound = rules.outbound_port.to_string();
    steps.push(append(
        CHAIN_OUTBOUND_REDIRECT,
        &["-p", "tcp", "-j", "REDIRECT", "--to-ports", &outbound],
    ));
    let uid = rules.proxy_uid.to_string();
    steps.push(append(
        CHAIN_OUTPUT,
        &["-m", "owner", "--uid-owner", &uid, "-j", "RETURN"],
    ));
    steps.push(append(CHAIN_OUTPUT, &["-o", "lo", "-j", "RETURN"]));
    for p in &rules.skip_outbound_ports {
        let p = p.to_string();
        steps.push(append(
            CHAIN_OUTPUT,
            &["-p", "tcp", "--dport", &p, "-j", "RETURN"],
        ));
    }
    for net in &nets {
        steps.push(append(CHAIN_OUTPUT, &["-d", net, "-j", "RETURN"]));
    }
    steps.push(append(
        CHAIN_OUTPUT,
        &["-p", "tcp", "-j", CHAIN_OUTBOUND_REDIRECT],
    ));
    for (builtin, ours) in JUMPS {
        let rule = jump_rule(ours);
        let with = |op: &str| {
            let mut args = vec![op, builtin];
            args.extend_from_slice(&rule);
            nat(rules.lock_wait, &args)
        };
        steps.push(Step::IfAbsent {
            check: with("-C"),
            then: with("-A"),
        });
    }
    steps
}

/// `uninstall`'s steps for one family: the jumps, then our chains flushed, then deleted.
pub fn uninstall_plan(lock_wait: u32) -> Vec<Step> {
    let mut steps = Vec::new();
    for (builtin, ours) in JUMPS {
        let rule = jump_rule(ours);
        let with = |op: &str| {
            let mut args = vec![op, builtin];
            args.extend_from_slice(&rule);
            nat(lock_wait, &args)
        };
        // `-C` on a jump to a chain that does not exist is an error, not "absent".
        steps.push(Step::IfPresent {
            check: nat(lock_wait, &["-S", ours]),
            then: vec![Step::WhilePresent {
                check: with("-C"),
                then: with("-D"),
            }],
        });
    }
    for op in ["-F", "-X"] {
        for chain in CHAINS {
            steps.push(Step::IfPresent {
                check: nat(lock_wait, &["-S", chain]),
                then: vec![Step::Run(nat(lock_wait, &[op, chain]))],
            });
        }
    }
    steps
}

/// `program args...` as a shell word list (the arguments never need quoting).
fn command_line(program: &str, argv: &[String]) -> String {
    let mut line = program.to_string();
    for a in argv {
        line.push(' ');
        line.push_str(a);
    }
    line
}

/// A plan as shell commands that do the same thing (what `--dry-run` prints).
pub fn render(program: &str, steps: &[Step]) -> String {
    let mut out = String::new();
    for step in steps {
        let _ = writeln!(out, "{}", render_step(program, step));
    }
    out
}

fn render_step(program: &str, step: &Step) -> String {
    let quiet = |argv: &[String]| format!("{} >/dev/null 2>&1", command_line(program, argv));
    match step {
        Step::Run(argv) => command_line(program, argv),
        Step::IfAbsent { check, then } => {
            format!("{} || {}", quiet(check), command_line(program, then))
        }
        Step::IfPresent { check, then } => {
            let body: Vec<String> = then.iter().map(|s| render_step(program, s)).collect();
            format!("if {}; then {}; fi", quiet(check), body.join("; "))
        }
        Step::WhilePresent { check, then } => format!(
            "while {}; do {}; done",
            quiet(check),
            command_line(program, then)
        ),
    }
}

/// Whether `/proc/self/status` text grants capability `bit` in the effective set
/// (`None` when the text has no readable `CapEff` line).
pub fn has_capability(status: &str, bit: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let mask = u64::from_str_radix(hex, 16).ok()?;
    Some(mask & (1u64 << bit) != 0)
}

/// A program found on this machine, by the name it is shown with.
#[derive(Debug, Clone)]
struct Program {
    name: String,
    path: PathBuf,
}

/// `name` in `PATH`, then in the sbin folders.
fn find_program(name: &str) -> Option<PathBuf> {
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The flavour suffixes to try, in order.
fn suffixes(backend: Backend) -> &'static [&'static str] {
    match backend {
        Backend::Auto => &["-nft", "-legacy", ""],
        Backend::Nft => &["-nft"],
        Backend::Legacy => &["-legacy"],
    }
}

/// The first of `names` that exists and can list the nat table, or why none could.
fn first_usable(names: &[String], lock_wait: u32) -> Result<Program, String> {
    let mut why = Vec::new();
    for name in names {
        let Some(path) = find_program(name) else {
            why.push(format!(
                "{name}: not found (looked in PATH and {})",
                SBIN_DIRS.join(", ")
            ));
            continue;
        };
        let program = Program {
            name: name.clone(),
            path,
        };
        match execute(&program, &nat(lock_wait, &["-S"])) {
            Ok(out) if out.code == Some(0) => return Ok(program),
            Ok(out) => why.push(format!(
                "{name}: cannot list the nat table ({}): {}",
                exit_text(out.code),
                out.stderr.trim()
            )),
            Err(e) => why.push(format!("{name}: cannot run it: {e}")),
        }
    }
    Err(why.join("; "))
}

/// The output of one finished command.
struct Finished {
    code: Option<i32>,
    stderr: String,
}

fn exit_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit status {c}"),
        None => "killed by a signal".to_string(),
    }
}

fn execute(program: &Program, argv: &[String]) -> std::io::Result<Finished> {
    let out = Command::new(&program.path).args(argv).output()?;
    Ok(Finished {
        code: out.status.code(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Runs one command that must succeed.
fn run_command(program: &Program, argv: &[String]) -> anyhow::Result<()> {
    let out = execute(program, argv)
        .with_context(|| format!("cannot run `{}`", command_line(&program.name, argv)))?;
    if out.code == Some(0) {
        return Ok(());
    }
    Err(anyhow!(
        "`{}` failed ({}): {}",
        command_line(&program.name, argv),
        exit_text(out.code),
        out.stderr.trim()
    ))
}

/// Runs a check: `true` when present (exit 0), `false` when absent (exit 1).
fn check(program: &Program, argv: &[String]) -> anyhow::Result<bool> {
    let out = execute(program, argv)
        .with_context(|| format!("cannot run `{}`", command_line(&program.name, argv)))?;
    match out.code {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        code => Err(anyhow!(
            "`{}` failed ({}): {}",
            command_line(&program.name, argv),
            exit_text(code),
            out.stderr.trim()
        )),
    }
}

fn apply(program: &Program, steps: &[Step]) -> anyhow::Result<()> {
    for step in steps {
        match step {
            Step::Run(argv) => run_command(program, argv)?,
            Step::IfAbsent { check: c, then } => {
                if !check(program, c)? {
                    run_command(program, then)?;
                }
            }
            Step::IfPresent { check: c, then } => {
                if check(program, c)? {
                    apply(program, then)?;
                }
            }
            Step::WhilePresent { check: c, then } => {
                let mut deleted = 0;
                while check(program, c)? {
                    if deleted == MAX_JUMP_DELETES {
                        bail!(
                            "`{}` still finds the rule after {MAX_JUMP_DELETES} deletions",
                            command_line(&program.name, c)
                        );
                    }
                    run_command(program, then)?;
                    deleted += 1;
                }
            }
        }
    }
    Ok(())
}

/// `coremesh iptables ...`.
pub fn run(args: IptablesArgs) -> anyhow::Result<()> {
    match args.action {
        Action::Install(a) => {
            let rules = Rules::from_args(&a)?;
            let plans = [
                (Family::V4, install_plan(&rules, Family::V4)),
                (Family::V6, install_plan(&rules, Family::V6)),
            ];
            carry_out(&plans, &a.common, "installed")
        }
        Action::Uninstall(common) => {
            let plans = [
                (Family::V4, uninstall_plan(common.lock_wait)),
                (Family::V6, uninstall_plan(common.lock_wait)),
            ];
            carry_out(&plans, &common, "uninstalled")
        }
    }
}

/// The program names `--dry-run` shows for a family: one per backend the run would use.
fn shown_names(family: Family, backend: Backend, done: &str) -> Vec<String> {
    let suffixes: &[&str] = match (backend, done) {
        // Uninstall cleans every backend: the script does too (each step is guarded, so a
        // backend without our chains is left as it is).
        (Backend::Auto, "uninstalled") => &["-nft", "-legacy"],
        (Backend::Auto, _) => &[""],
        (Backend::Nft, _) => &["-nft"],
        (Backend::Legacy, _) => &["-legacy"],
    };
    suffixes
        .iter()
        .map(|suffix| format!("{}{suffix}", family.program()))
        .collect()
}

fn carry_out(plans: &[(Family, Vec<Step>)], common: &CommonArgs, done: &str) -> anyhow::Result<()> {
    if common.dry_run {
        let mut script = String::new();
        for (family, steps) in plans {
            for name in shown_names(*family, common.backend, done) {
                script.push_str(&format!("# {} ({name})\n", family.label()));
                if done == "uninstalled"
                    && common.backend == Backend::Auto
                    && name.ends_with("-legacy")
                {
                    // As the real run: legacy only where its nat table exists.
                    script.push_str(&format!(
                        "if grep -qx nat {} 2>/dev/null; then\n{}fi\n",
                        legacy_names_file(*family),
                        render(&name, steps)
                    ));
                } else {
                    script.push_str(&render(&name, steps));
                }
            }
        }
        return match std::io::stdout().write_all(script.as_bytes()) {
            // A reader that stopped early (`| head`) is not a failure.
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        if has_capability(&status, CAP_NET_ADMIN) == Some(false) {
            bail!(
                "missing capability CAP_NET_ADMIN: changing the nat table needs it (run as root, \
                 or grant NET_ADMIN, plus NET_RAW for iptables-legacy)"
            );
        }
    }
    let programs = if done == "uninstalled" && common.backend == Backend::Auto {
        every_backend(common)?
    } else {
        one_backend(common, common.backend, done)?
    };
    let mut used = Vec::new();
    for (family, steps) in plans {
        for (_, program) in programs.iter().filter(|(f, _)| f == family) {
            apply(program, steps)?;
            used.push(program.name.clone());
        }
    }
    println!("coremesh iptables: {done} ({})", used.join(", "));
    Ok(())
}

/// The programs of one backend (`auto`: the first usable of nft, legacy, plain): IPv4's,
/// and its IPv6 twin unless that is unusable (a warning, or an error under
/// `--require-ipv6`).
fn one_backend(
    common: &CommonArgs,
    backend: Backend,
    done: &str,
) -> anyhow::Result<Vec<(Family, Program)>> {
    let names: Vec<String> = suffixes(backend)
        .iter()
        .map(|s| format!("{}{s}", Family::V4.program()))
        .collect();
    let v4 = first_usable(&names, common.lock_wait).map_err(|why| {
        anyhow!("no usable iptables program (install the iptables package): {why}")
    })?;
    // IPv6 uses the twin of the IPv4 program, so both families share one backend.
    let twin = v4
        .name
        .replacen(Family::V4.program(), Family::V6.program(), 1);
    let mut programs = vec![(Family::V4, v4)];
    match first_usable(&[twin], common.lock_wait) {
        Ok(v6) => programs.push((Family::V6, v6)),
        Err(why) => eprintln!("{}", ipv6_unusable(&why, common.require_ipv6, done)?),
    }
    Ok(programs)
}

/// Every backend that may hold our chains, for `uninstall`: rules a previous `install` put
/// in with another backend (an upgrade of the iptables package, a forced `--backend`, a
/// `kube-proxy` that switched) would otherwise stay behind and keep redirecting. nft's
/// programs are asked when usable; legacy's only for a family whose legacy nat table exists
/// in this network namespace (`/proc/net/ip_tables_names`), so that a host without legacy
/// tables does not get them loaded by the asking. Plain `iptables` is the fall-back when
/// neither flavour can be used.
fn every_backend(common: &CommonArgs) -> anyhow::Result<Vec<(Family, Program)>> {
    let mut programs = match one_backend(common, Backend::Nft, "uninstalled") {
        Ok(nft) => nft,
        Err(_) if legacy_nat_tables().is_empty() => {
            return one_backend(common, Backend::Auto, "uninstalled")
        }
        Err(_) => Vec::new(),
    };
    for family in legacy_nat_tables() {
        let name = format!("{}-legacy", family.program());
        match first_usable(&[name], common.lock_wait) {
            Ok(program) => programs.push((family, program)),
            Err(why) => eprintln!(
                "coremesh iptables: warning: the legacy {} nat table exists but cannot be \
                 cleaned: {why}",
                family.label()
            ),
        }
    }
    if programs.is_empty() {
        bail!("no usable iptables program (install the iptables package)");
    }
    Ok(programs)
}

/// Where the kernel lists the legacy (x_tables) tables of a family in use in this network
/// namespace.
fn legacy_names_file(family: Family) -> &'static str {
    match family {
        Family::V4 => "/proc/net/ip_tables_names",
        Family::V6 => "/proc/net/ip6_tables_names",
    }
}

/// The families whose legacy nat table exists in this network namespace.
fn legacy_nat_tables() -> Vec<Family> {
    [Family::V4, Family::V6]
        .into_iter()
        .filter(|family| {
            std::fs::read_to_string(legacy_names_file(*family))
                .is_ok_and(|names| names.lines().any(|l| l.trim() == "nat"))
        })
        .collect()
}

/// When IPv6's program cannot be used: the warning to print, or the error that stops the
/// run under `--require-ipv6`.
fn ipv6_unusable(why: &str, require: bool, done: &str) -> anyhow::Result<String> {
    if require {
        bail!("no usable ip6tables program (--require-ipv6): {why}");
    }
    Ok(format!(
        "coremesh iptables: warning: IPv6 rules not {done}, IPv6 connections are not \
         intercepted: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: IptablesArgs,
    }

    fn parse(line: &str) -> Result<IptablesArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("iptables").chain(line.split_whitespace()))
            .map(|c| c.args)
    }

    fn install_args(line: &str) -> InstallArgs {
        match parse(line).map(|a| a.action) {
            Ok(Action::Install(a)) => a,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn rules(line: &str) -> Rules {
        Rules::from_args(&install_args(line)).unwrap()
    }

    #[test]
    fn install_with_defaults_redirects_tcp_and_skips_the_proxy_loopback_and_admin() {
        let plan = render(
            "iptables",
            &install_plan(&rules("install --proxy-uid 2102"), Family::V4),
        );
        let expected = "\
iptables -w 10 -t nat -S COREMESH_INBOUND_REDIRECT >/dev/null 2>&1 || iptables -w 10 -t nat -N COREMESH_INBOUND_REDIRECT
iptables -w 10 -t nat -F COREMESH_INBOUND_REDIRECT
iptables -w 10 -t nat -S COREMESH_PREROUTING >/dev/null 2>&1 || iptables -w 10 -t nat -N COREMESH_PREROUTING
iptables -w 10 -t nat -F COREMESH_PREROUTING
iptables -w 10 -t nat -S COREMESH_OUTBOUND_REDIRECT >/dev/null 2>&1 || iptables -w 10 -t nat -N COREMESH_OUTBOUND_REDIRECT
iptables -w 10 -t nat -F COREMESH_OUTBOUND_REDIRECT
iptables -w 10 -t nat -S COREMESH_OUTPUT >/dev/null 2>&1 || iptables -w 10 -t nat -N COREMESH_OUTPUT
iptables -w 10 -t nat -F COREMESH_OUTPUT
iptables -w 10 -t nat -A COREMESH_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4143
iptables -w 10 -t nat -A COREMESH_PREROUTING -m addrtype ! --dst-type LOCAL -j RETURN
iptables -w 10 -t nat -A COREMESH_PREROUTING -p tcp --dport 4191 -j RETURN
iptables -w 10 -t nat -A COREMESH_PREROUTING -p tcp -j COREMESH_INBOUND_REDIRECT
iptables -w 10 -t nat -A COREMESH_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4140
iptables -w 10 -t nat -A COREMESH_OUTPUT -m owner --uid-owner 2102 -j RETURN
iptables -w 10 -t nat -A COREMESH_OUTPUT -o lo -j RETURN
iptables -w 10 -t nat -A COREMESH_OUTPUT -p tcp -j COREMESH_OUTBOUND_REDIRECT
iptables -w 10 -t nat -C PREROUTING -p tcp -j COREMESH_PREROUTING >/dev/null 2>&1 || iptables -w 10 -t nat -A PREROUTING -p tcp -j COREMESH_PREROUTING
iptables -w 10 -t nat -C OUTPUT -p tcp -j COREMESH_OUTPUT >/dev/null 2>&1 || iptables -w 10 -t nat -A OUTPUT -p tcp -j COREMESH_OUTPUT
";
        assert_eq!(plan, expected);
    }

    /// Only the rules appended to our chains (`-A COREMESH_...`), without the `-w 10 -t nat`.
    fn own_rules(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Run(argv) if argv[4] == "-A" => Some(argv[4..].join(" ")),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn skips_go_before_the_redirect_and_subnets_split_by_family() {
        let r = rules(
            "install --proxy-uid 7 --inbound-port 15006 --outbound-port 15001 \
             --skip-inbound-ports 22,4191,22,9000 --skip-outbound-ports 5432 \
             --skip-subnets 10.1.2.3/8,fd00::1/64,192.168.0.7 --admin-port 9901",
        );
        assert_eq!(r.skip_inbound_ports, vec![22, 4191, 9000]);
        assert_eq!(
            own_rules(&install_plan(&r, Family::V4)),
            vec![
                "-A COREMESH_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
                "-A COREMESH_PREROUTING -m addrtype ! --dst-type LOCAL -j RETURN",
                "-A COREMESH_PREROUTING -p tcp --dport 9901 -j RETURN",
                "-A COREMESH_PREROUTING -p tcp --dport 22 -j RETURN",
                "-A COREMESH_PREROUTING -p tcp --dport 4191 -j RETURN",
                "-A COREMESH_PREROUTING -p tcp --dport 9000 -j RETURN",
                "-A COREMESH_PREROUTING -s 10.0.0.0/8 -j RETURN",
                "-A COREMESH_PREROUTING -s 192.168.0.7/32 -j RETURN",
                "-A COREMESH_PREROUTING -p tcp -j COREMESH_INBOUND_REDIRECT",
                "-A COREMESH_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
                "-A COREMESH_OUTPUT -m owner --uid-owner 7 -j RETURN",
                "-A COREMESH_OUTPUT -o lo -j RETURN",
                "-A COREMESH_OUTPUT -p tcp --dport 5432 -j RETURN",
                "-A COREMESH_OUTPUT -d 10.0.0.0/8 -j RETURN",
                "-A COREMESH_OUTPUT -d 192.168.0.7/32 -j RETURN",
                "-A COREMESH_OUTPUT -p tcp -j COREMESH_OUTBOUND_REDIRECT",
            ]
        );
        let v6 = own_rules(&install_plan(&r, Family::V6));
        assert!(v6.contains(&"-A COREMESH_PREROUTING -s fd00::/64 -j RETURN".to_string()));
        assert!(v6.contains(&"-A COREMESH_OUTPUT -d fd00::/64 -j RETURN".to_string()));
        assert!(!v6
            .iter()
            .any(|l| l.contains("10.0.0.0") || l.contains("192.168")));
    }

    #[test]
    fn uninstall_removes_jumps_then_flushes_then_deletes_only_our_chains() {
        let text = render("ip6tables", &uninstall_plan(DEFAULT_LOCK_WAIT_SECONDS));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(
            lines[0],
            "if ip6tables -w 10 -t nat -S COREMESH_PREROUTING >/dev/null 2>&1; then \
             while ip6tables -w 10 -t nat -C PREROUTING -p tcp -j COREMESH_PREROUTING >/dev/null 2>&1; \
             do ip6tables -w 10 -t nat -D PREROUTING -p tcp -j COREMESH_PREROUTING; done; fi"
        );
        assert!(lines[1].contains("-D OUTPUT -p tcp -j COREMESH_OUTPUT"));
        for (i, chain) in CHAINS.iter().enumerate() {
            assert_eq!(
                lines[2 + i],
                format!(
                    "if ip6tables -w 10 -t nat -S {chain} >/dev/null 2>&1; then ip6tables -w 10 -t nat -F {chain}; fi"
                )
            );
            assert_eq!(
                lines[6 + i],
                format!(
                    "if ip6tables -w 10 -t nat -S {chain} >/dev/null 2>&1; then ip6tables -w 10 -t nat -X {chain}; fi"
                )
            );
        }
        // Nothing but our own chains and the two jumps to them is named.
        for line in &lines {
            assert!(
                !line.contains("-D") || line.contains("-j COREMESH_"),
                "{line}"
            );
        }
    }

    #[test]
    fn every_jump_install_adds_is_one_uninstall_removes() {
        let install = install_plan(&rules("install --proxy-uid 1"), Family::V4);
        let added: Vec<Vec<String>> = install
            .iter()
            .filter_map(|s| match s {
                Step::IfAbsent { then, .. } if then[4] == "-A" => Some(then[5..].to_vec()),
                _ => None,
            })
            .collect();
        let removed: Vec<Vec<String>> = uninstall_plan(DEFAULT_LOCK_WAIT_SECONDS)
            .iter()
            .filter_map(|s| match s {
                Step::IfPresent { then, .. } => match then.first() {
                    Some(Step::WhilePresent { then, .. }) => Some(then[5..].to_vec()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(added.len(), 2);
        assert_eq!(added, removed);
        let created: Vec<&String> = install
            .iter()
            .filter_map(|s| match s {
                Step::IfAbsent { then, .. } if then[4] == "-N" => Some(&then[5]),
                _ => None,
            })
            .collect();
        assert_eq!(created, CHAINS.to_vec());
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let err = |line: &str| match parse(line) {
            Err(e) => e.to_string(),
            Ok(a) => match a.action {
                Action::Install(a) => Rules::from_args(&a)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| panic!("{line}: accepted")),
                Action::Uninstall(_) => panic!("{line}: accepted"),
            },
        };
        assert!(err("install").contains("--proxy-uid"));
        assert!(err("install --proxy-uid 1 --inbound-port 0").contains("not a port"));
        assert!(err("install --proxy-uid 1 --skip-outbound-ports 80,x").contains("not a port"));
        assert!(err("install --proxy-uid 1 --skip-subnets 10.0.0.0/33").contains("CIDR"));
        assert!(err("install --proxy-uid 1 --skip-subnets nope").contains("IP address"));
        assert!(err("install --proxy-uid 1 --proxy-uid-x 2").contains("--proxy-uid-x"));
        assert!(err("install --proxy-uid 1 --inbound-port 4140").contains("different ports"));
    }

    #[test]
    fn dry_run_names_the_forced_backend_and_every_backend_for_uninstall() {
        let names = |family, backend, done| shown_names(family, backend, done).join(" ");
        assert_eq!(names(Family::V6, Backend::Auto, "installed"), "ip6tables");
        assert_eq!(
            names(Family::V4, Backend::Legacy, "installed"),
            "iptables-legacy"
        );
        assert_eq!(
            names(Family::V6, Backend::Nft, "uninstalled"),
            "ip6tables-nft"
        );
        assert_eq!(
            names(Family::V4, Backend::Auto, "uninstalled"),
            "iptables-nft iptables-legacy"
        );
    }

    #[test]
    fn the_lock_wait_reaches_every_command() {
        let r = rules("install --proxy-uid 1 --lock-wait 3");
        assert_eq!(r.lock_wait, 3);
        let install = render("iptables", &install_plan(&r, Family::V4));
        let uninstall = render("iptables", &uninstall_plan(3));
        for line in install.lines().chain(uninstall.lines()) {
            assert_eq!(
                line.matches("iptables -w 3 -t nat").count(),
                line.matches("iptables").count(),
                "{line}"
            );
        }
        assert_eq!(
            rules("install --proxy-uid 1").lock_wait,
            DEFAULT_LOCK_WAIT_SECONDS
        );
        assert!(parse("uninstall --lock-wait x").is_err());
    }

    #[test]
    fn a_missing_program_is_named_with_where_it_was_looked_for() {
        let names = [
            "coremesh-no-such-iptables".to_string(),
            "coremesh-nor-this".to_string(),
        ];
        let why = first_usable(&names, DEFAULT_LOCK_WAIT_SECONDS).unwrap_err();
        assert!(
            why.starts_with("coremesh-no-such-iptables: not found (looked in PATH and /usr/sbin"),
            "{why}"
        );
        assert!(why.contains("; coremesh-nor-this: not found"), "{why}");
    }

    #[test]
    fn unusable_ipv6_warns_unless_it_is_required() {
        let warning = ipv6_unusable("ip6tables-nft: not found", false, "installed").unwrap();
        assert_eq!(
            warning,
            "coremesh iptables: warning: IPv6 rules not installed, IPv6 connections are not \
             intercepted: ip6tables-nft: not found"
        );
        let err = ipv6_unusable("ip6tables-nft: not found", true, "installed").unwrap_err();
        assert!(err.to_string().contains("--require-ipv6"), "{err}");
    }

    #[test]
    fn default_ports_are_the_listeners_defaults() {
        let port = |a: &str| a.parse::<std::net::SocketAddr>().unwrap().port();
        assert_eq!(
            DEFAULT_INBOUND_PORT,
            port(coremesh_discovery::DEFAULT_INBOUND_LISTEN)
        );
        assert_eq!(
            DEFAULT_OUTBOUND_PORT,
            port(coremesh_discovery::DEFAULT_OUTBOUND_LISTEN)
        );
        assert_eq!(DEFAULT_ADMIN_PORT, port(crate::cli::top::DEFAULT_ADMIN));
    }

    #[test]
    fn capability_is_read_from_the_effective_set() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000001000\n";
        assert_eq!(has_capability(status, CAP_NET_ADMIN), Some(true));
        let status = "CapEff:\t000001ffffffefff\n";
        assert_eq!(has_capability(status, CAP_NET_ADMIN), Some(false));
        assert_eq!(has_capability("Name:\tx\n", CAP_NET_ADMIN), None);
    }
}
