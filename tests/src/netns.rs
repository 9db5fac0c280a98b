//! Network namespaces for the root-only suites: unique names, veth pairs between them,
//! commands and threads run inside them, and a guard that removes them even on panic.
//!
//! A test asks [`skip_reason`] first: without root, or without the `ip` program (or another
//! program it names), it prints why and returns early — the one skip the suite allows (see
//! the README's Tests section). Everything a test builds lives in namespaces it made
//! (`cm-<pid>-<n>`), so nothing reaches the machine's own network.
//!
//! Sockets belong to the namespace of the thread that creates them, for their whole life:
//! [`Netns::enter`] runs a closure on a thread moved into a namespace, so servers started
//! there listen inside it and clients connect from inside it, while the test itself stays
//! in the machine's namespace.

use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Where `ip netns add` keeps the namespaces it names.
const NETNS_DIR: &str = "/var/run/netns";
/// Where programs are looked for after `PATH`.
const SBIN_DIRS: [&str; 3] = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Why this machine cannot run a root-only network test, or `None` when it can: not root,
/// or one of `ip` and `programs` missing.
pub fn skip_reason(programs: &[&str]) -> Option<String> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Some(format!("not root (effective uid {uid})")),
        None => return Some("cannot read the effective uid from /proc/self/status".into()),
    }
    for p in std::iter::once(&"ip").chain(programs) {
        if find_program(p).is_none() {
            return Some(format!("`{p}` is not installed"));
        }
    }
    None
}

/// Prints that `test` is skipped and why, when it must be; `true` when it can run.
pub fn can_run(test: &str, programs: &[&str]) -> bool {
    match skip_reason(programs) {
        None => true,
        Some(why) => {
            eprintln!("skipped: {test}: {why} (network-namespace tests need root)");
            false
        }
    }
}

/// The effective uid, from `/proc/self/status`.
pub fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `name` in `PATH`, then in the sbin folders.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path_dirs = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Names the `coremesh` program to run instead of the one beside this test's build.
pub const COREMESH_BIN_ENV: &str = "COREMESH_BIN";

/// The `coremesh` program the root-only suites run inside namespaces: `$COREMESH_BIN`, else
/// `target/<profile>/coremesh` beside this test executable (`cargo test --workspace` builds
/// it; after `cargo test -p coremesh-tests` alone, `cargo build -p coremesh` first).
pub fn coremesh_bin() -> PathBuf {
    if let Some(p) = std::env::var_os(COREMESH_BIN_ENV) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/coremesh
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("coremesh"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "the coremesh program is not at {} (build it with `cargo build -p coremesh`, or name \
         it with {COREMESH_BIN_ENV}=/path)",
        bin.display()
    );
    bin
}

/// Runs `program args` to completion; an error names the command and its stderr when it
/// does not exit 0.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{program} {}`", args.join(" ")))?;
    checked(&format!("{program} {}", args.join(" ")), out)
}

/// The stdout of a finished command, or an error with its exit status and stderr.
pub fn checked(what: &str, out: Output) -> anyhow::Result<String> {
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace this test made, deleted (with every process still in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace named `cm-<pid>-<n>`, with its loopback up.
    pub fn new() -> anyhow::Result<Netns> {
        let name = format!(
            "cm-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.run("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip netns exec <name> program args...`, not started yet.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args` in the namespace; its stdout, or an error with its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(program)
            .args(args)
            .output()
            .with_context(|| format!("cannot run `{program}` in {}", self.name))?;
        checked(
            &format!("ip netns exec {} {program} {}", self.name, args.join(" ")),
            out,
        )
    }

    /// Runs `f` on a new thread inside this namespace and returns what it returns. Sockets
    /// `f` creates (and threads it spawns) stay in the namespace.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
        let path = Path::new(NETNS_DIR).join(&self.name);
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(file.as_raw_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| anyhow::anyhow!("setns into {}: {e}", path.display()))?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// `value` (made by [`Netns::enter`]) dropped inside this namespace when the guard
    /// drops: what stops a server by connecting to it (as [`crate::Upstream`] does) must
    /// connect from where it listens.
    pub fn guard<T: Send>(&self, value: T) -> Inside<'_, T> {
        Inside {
            ns: self,
            value: Some(value),
        }
    }

    /// `iptables-save -t nat` (or `ip6tables-save`, `iptables-legacy-save`: `save`) in the
    /// namespace, without comments and packet counters, so two readings compare equal when
    /// the rules are the same.
    pub fn nat_rules(&self, save: &str) -> anyhow::Result<String> {
        Ok(normalise_save(&self.run(save, &["-t", "nat"])?))
    }
}

/// A value that is dropped inside its namespace (see [`Netns::guard`]).
pub struct Inside<'a, T: Send> {
    ns: &'a Netns,
    value: Option<T>,
}

impl<T: Send> std::ops::Deref for Inside<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value.as_ref().expect("present until dropped")
    }
}

impl<T: Send> Drop for Inside<'_, T> {
    fn drop(&mut self) {
        if let Some(value) = self.value.take() {
            if let Err(e) = self.ns.enter(move || drop(value)) {
                eprintln!("could not drop a value inside {}: {e:#}", self.ns.name);
            }
        }
    }
}

/// `iptables-save` text without its `#` lines and with chain counters zeroed.
pub fn normalise_save(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        match (line.starts_with(':'), line.rfind(" [")) {
            (true, Some(at)) => out.push_str(&line[..at]),
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside would keep the namespace (and its veth) alive.
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            let me = std::process::id().to_string();
            for pid in pids.split_whitespace().filter(|p| *p != me) {
                let _ = Command::new("kill").args(["-KILL", pid]).output();
            }
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("could not remove network namespace {}: {e:#}", self.name);
        }
    }
}

/// Two namespaces joined by a veth pair: `a` has `10.77.<subnet>.1/24` and
/// `fd77:<subnet>::1/64`, `b` has `10.77.<subnet>.2/24` and `fd77:<subnet>::2/64` (usable at
/// once: no duplicate address detection), both ends are up, and each routes everything
/// else through the other (so an address no one has still leaves through the veth instead
/// of failing with "network unreachable").
#[derive(Debug)]
pub struct Pair {
    pub a: Netns,
    pub b: Netns,
    pub a_addr: Ipv4Addr,
    pub b_addr: Ipv4Addr,
    pub a_addr6: Ipv6Addr,
    pub b_addr6: Ipv6Addr,
}

/// The name of each veth end inside its namespace.
pub const VETH: &str = "cm0";

impl Pair {
    pub fn new(subnet: u8) -> anyhow::Result<Pair> {
        let a = Netns::new()?;
        let b = Netns::new()?;
        run(
            "ip",
            &[
                "link", "add", "name", VETH, "netns", &a.name, "type", "veth", "peer", "name",
                VETH, "netns", &b.name,
            ],
        )?;
        let a_addr = Ipv4Addr::new(10, 77, subnet, 1);
        let b_addr = Ipv4Addr::new(10, 77, subnet, 2);
        let a_addr6 = Ipv6Addr::new(0xfd77, subnet.into(), 0, 0, 0, 0, 0, 1);
        let b_addr6 = Ipv6Addr::new(0xfd77, subnet.into(), 0, 0, 0, 0, 0, 2);
        for (ns, mine, theirs, mine6, theirs6) in [
            (&a, a_addr, b_addr, a_addr6, b_addr6),
            (&b, b_addr, a_addr, b_addr6, a_addr6),
        ] {
            ns.run("ip", &["addr", "add", &format!("{mine}/24"), "dev", VETH])?;
            ns.run(
                "ip",
                &[
                    "-6",
                    "addr",
                    "add",
                    &format!("{mine6}/64"),
                    "dev",
                    VETH,
                    "nodad",
                ],
            )?;
            ns.run("ip", &["link", "set", VETH, "up"])?;
            ns.run(
                "ip",
                &["route", "add", "default", "via", &theirs.to_string()],
            )?;
            ns.run(
                "ip",
                &["-6", "route", "add", "default", "via", &theirs6.to_string()],
            )?;
        }
        Ok(Pair {
            a,
            b,
            a_addr,
            b_addr,
            a_addr6,
            b_addr6,
        })
    }
}

/// Three namespaces in a line, `client` — `router` — `server`, joined by two veth pairs,
/// with the router forwarding IPv4 between them (`ip_forward=1` in its namespace only):
/// the client has `10.78.<subnet>.1/24` and routes everything through the router's
/// `10.78.<subnet>.2`; the server has `10.79.<subnet>.2/24` and routes everything through
/// the router's `10.79.<subnet>.1`. Inside the router, [`VETH`] faces the client and
/// [`ROUTER_SERVER_VETH`] the server.
#[derive(Debug)]
pub struct Routed {
    pub client: Netns,
    pub router: Netns,
    pub server: Netns,
    pub client_addr: Ipv4Addr,
    /// The router's address on the client's side.
    pub router_addr: Ipv4Addr,
    /// The router's address on the server's side.
    pub router_server_side: Ipv4Addr,
    pub server_addr: Ipv4Addr,
}

/// The router's veth towards the server (its veth towards the client is [`VETH`]).
pub const ROUTER_SERVER_VETH: &str = "cm1";

impl Routed {
    pub fn new(subnet: u8) -> anyhow::Result<Routed> {
        let client = Netns::new()?;
        let router = Netns::new()?;
        let server = Netns::new()?;
        for (a, a_dev, b, b_dev) in [
            (&client, VETH, &router, VETH),
            (&router, ROUTER_SERVER_VETH, &server, VETH),
        ] {
            run(
                "ip",
                &[
                    "link", "add", "name", a_dev, "netns", &a.name, "type", "veth", "peer", "name",
                    b_dev, "netns", &b.name,
                ],
            )?;
        }
        let client_addr = Ipv4Addr::new(10, 78, subnet, 1);
        let router_addr = Ipv4Addr::new(10, 78, subnet, 2);
        let router_server_side = Ipv4Addr::new(10, 79, subnet, 1);
        let server_addr = Ipv4Addr::new(10, 79, subnet, 2);
        for (ns, dev, addr) in [
            (&client, VETH, client_addr),
            (&router, VETH, router_addr),
            (&router, ROUTER_SERVER_VETH, router_server_side),
            (&server, VETH, server_addr),
        ] {
            ns.run("ip", &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ns.run("ip", &["link", "set", dev, "up"])?;
        }
        client.run(
            "ip",
            &["route", "add", "default", "via", &router_addr.to_string()],
        )?;
        server.run(
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                &router_server_side.to_string(),
            ],
        )?;
        // Per namespace: the machine's own setting is untouched.
        router.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"])?;
        Ok(Routed {
            client,
            router,
            server,
            client_addr,
            router_addr,
            router_server_side,
            server_addr,
        })
    }
}

/// Where a connection redirected by the nat table was going (`SO_ORIGINAL_DST`, or its IPv6
/// twin); for a connection nothing redirected, its own local address.
pub fn original_dst(stream: &TcpStream) -> anyhow::Result<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    let fd = stream.as_raw_fd();
    let local = stream.local_addr()?;
    // No connection-tracking entry with a NAT binding (nothing redirected it, or no nat
    // table in this namespace): the kernel answers ENOENT.
    let unredirected = |e: nix::errno::Errno| -> anyhow::Result<SocketAddr> {
        match e {
            nix::errno::Errno::ENOENT => Ok(local),
            e => Err(e.into()),
        }
    };
    Ok(match local {
        SocketAddr::V4(_) => {
            let sa = match getsockopt(fd, sockopt::OriginalDst) {
                Ok(sa) => sa,
                Err(e) => return unredirected(e),
            };
            SocketAddr::new(
                IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))),
                u16::from_be(sa.sin_port),
            )
        }
        SocketAddr::V6(_) => {
            let sa = match getsockopt(fd, sockopt::Ip6tOriginalDst) {
                Ok(sa) => sa,
                Err(e) => return unredirected(e),
            };
            SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)),
                u16::from_be(sa.sin6_port),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_output_loses_comments_and_counters_only() {
        let text = "# Generated by iptables-save v1.8.9 on Tue\n*nat\n:PREROUTING ACCEPT [3:180]\n\
                    :X - [0:0]\n-A X -p tcp -j REDIRECT --to-ports 4140\nCOMMIT\n# Completed on Tue\n";
        assert_eq!(
            normalise_save(text),
            "*nat\n:PREROUTING ACCEPT\n:X -\n-A X -p tcp -j REDIRECT --to-ports 4140\nCOMMIT\n"
        );
    }
}
