//! `coremesh iptables install|uninstall` against the real programs, in network namespaces
//! the tests make (root only; elsewhere each test says why it is skipped): installing twice
//! is installing once, uninstalling restores the nat table exactly (with or without unrelated
//! rules already there), `--dry-run` prints a script that does the same, a caller without
//! CAP_NET_ADMIN is told so, and — with plain servers standing in for the proxy's
//! listeners — every kind of connection, IPv4 and IPv6, goes where the rules say.

use coremesh_tests::netns::{can_run, coremesh_bin, original_dst, Netns, Pair};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// The install every test uses: several skips of each kind, both families' subnets.
const INSTALL: &[&str] = &[
    "iptables",
    "install",
    "--proxy-uid",
    "2102",
    "--skip-inbound-ports",
    "22,9000",
    "--skip-outbound-ports",
    "5432",
    "--skip-subnets",
    "10.9.0.0/16,fd09::/64",
];
const UNINSTALL: &[&str] = &["iptables", "uninstall"];
const SAVES: [&str; 2] = ["iptables-save", "ip6tables-save"];

/// Both families' nat tables, normalised.
fn nat(ns: &Netns, saves: &[&str]) -> Vec<String> {
    saves
        .iter()
        .map(|s| ns.nat_rules(s).unwrap_or_else(|e| panic!("{e:#}")))
        .collect()
}

fn coremesh(ns: &Netns, args: &[&str]) -> std::process::Output {
    ns.command(coremesh_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run coremesh in {}: {e}", ns.name()))
}

fn coremesh_ok(ns: &Netns, args: &[&str]) -> String {
    let out = coremesh(ns, args);
    assert!(
        out.status.success(),
        "coremesh {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn with_backend(args: &[&str], backend: &str) -> Vec<String> {
    args.iter()
        .map(|s| s.to_string())
        .chain(["--backend".to_string(), backend.to_string()])
        .collect()
}

/// The rules `INSTALL` adds, as `iptables-save` prints them, for one family.
fn expected_rules(v6: bool) -> Vec<String> {
    let net = if v6 { "fd09::/64" } else { "10.9.0.0/16" };
    [
        "-A PREROUTING -p tcp -j COREMESH_PREROUTING".to_string(),
        "-A OUTPUT -p tcp -j COREMESH_OUTPUT".to_string(),
        "-A COREMESH_INBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4143".to_string(),
        "-A COREMESH_OUTBOUND_REDIRECT -p tcp -j REDIRECT --to-ports 4140".to_string(),
        "-A COREMESH_OUTPUT -m owner --uid-owner 2102 -j RETURN".to_string(),
        "-A COREMESH_OUTPUT -o lo -j RETURN".to_string(),
        "-A COREMESH_OUTPUT -p tcp -m tcp --dport 5432 -j RETURN".to_string(),
        format!("-A COREMESH_OUTPUT -d {net} -j RETURN"),
        "-A COREMESH_OUTPUT -p tcp -j COREMESH_OUTBOUND_REDIRECT".to_string(),
        "-A COREMESH_PREROUTING -m addrtype ! --dst-type LOCAL -j RETURN".to_string(),
        "-A COREMESH_PREROUTING -p tcp -m tcp --dport 4191 -j RETURN".to_string(),
        "-A COREMESH_PREROUTING -p tcp -m tcp --dport 22 -j RETURN".to_string(),
        "-A COREMESH_PREROUTING -p tcp -m tcp --dport 9000 -j RETURN".to_string(),
        format!("-A COREMESH_PREROUTING -s {net} -j RETURN"),
        "-A COREMESH_PREROUTING -p tcp -j COREMESH_INBOUND_REDIRECT".to_string(),
    ]
    .to_vec()
}

/// Install twice, uninstall, and check every table at each step against `before`.
fn install_twice_then_uninstall(ns: &Netns, backend: &str, saves: &[&str]) {
    let before = nat(ns, saves);
    coremesh_ok(ns, &strs(&with_backend(INSTALL, backend)));
    let once = nat(ns, saves);
    for (i, table) in once.iter().enumerate() {
        let lines: Vec<&str> = table.lines().collect();
        for rule in expected_rules(i == 1) {
            assert!(
                lines.contains(&rule.as_str()),
                "{}: {rule:?} missing after install:\n{table}",
                saves[i]
            );
        }
        let ours = lines.iter().filter(|l| l.contains("COREMESH_")).count();
        assert_eq!(
            ours,
            15 + 4,
            "{}: 15 rules and 4 chains:\n{table}",
            saves[i]
        );
        // Everything that was there before is still there, in the same order.
        let kept: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| !l.contains("COREMESH_"))
            .collect();
        assert_eq!(kept.join("\n") + "\n", before[i], "{}", saves[i]);
    }
    coremesh_ok(ns, &strs(&with_backend(INSTALL, backend)));
    assert_eq!(nat(ns, saves), once, "a second install changed the tables");
    coremesh_ok(ns, &strs(&with_backend(UNINSTALL, backend)));
    assert_eq!(
        nat(ns, saves),
        before,
        "uninstall did not restore the tables"
    );
    coremesh_ok(ns, &strs(&with_backend(UNINSTALL, backend)));
    assert_eq!(
        nat(ns, saves),
        before,
        "a second uninstall changed the tables"
    );
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn install_twice_is_once_and_uninstall_restores_an_empty_table() {
    if !can_run(
        "install_twice_is_once_and_uninstall_restores_an_empty_table",
        &["iptables", "ip6tables", "iptables-save"],
    ) {
        return;
    }
    let ns = Netns::new().unwrap();
    install_twice_then_uninstall(&ns, "auto", &SAVES);
}

#[test]
fn uninstall_leaves_rules_that_were_already_there() {
    if !can_run(
        "uninstall_leaves_rules_that_were_already_there",
        &["iptables", "ip6tables", "iptables-save"],
    ) {
        return;
    }
    let ns = Netns::new().unwrap();
    for program in ["iptables", "ip6tables"] {
        for rule in [
            &["-N", "OTHER"][..],
            &["-A", "OTHER", "-p", "udp", "-j", "RETURN"],
            &["-A", "PREROUTING", "-j", "OTHER"],
            &[
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "--dport",
                "9999",
                "-j",
                "REDIRECT",
                "--to-ports",
                "1",
            ],
            &["-A", "OUTPUT", "-p", "tcp", "-j", "RETURN"],
        ] {
            let mut args = vec!["-t", "nat"];
            args.extend_from_slice(rule);
            ns.run(program, &args).unwrap();
        }
    }
    install_twice_then_uninstall(&ns, "auto", &SAVES);
}

#[test]
fn the_legacy_backend_installs_and_uninstalls_the_same_way() {
    if !can_run(
        "the_legacy_backend_installs_and_uninstalls_the_same_way",
        &[
            "iptables-legacy",
            "ip6tables-legacy",
            "iptables-legacy-save",
        ],
    ) {
        return;
    }
    let ns = Netns::new().unwrap();
    install_twice_then_uninstall(
        &ns,
        "legacy",
        &["iptables-legacy-save", "ip6tables-legacy-save"],
    );
}

#[test]
fn dry_run_prints_a_script_that_does_what_install_and_uninstall_do() {
    if !can_run(
        "dry_run_prints_a_script_that_does_what_install_and_uninstall_do",
        &["iptables", "ip6tables", "iptables-save", "sh"],
    ) {
        return;
    }
    let by_program = Netns::new().unwrap();
    let by_script = Netns::new().unwrap();
    let before = nat(&by_script, &SAVES);
    let mut install = INSTALL.to_vec();
    install.push("--dry-run");
    let script = coremesh_ok(&by_script, &install);
    // Printing changed nothing.
    assert_eq!(nat(&by_script, &SAVES), before);
    by_script.run("sh", &["-e", "-c", &script]).unwrap();
    coremesh_ok(&by_program, INSTALL);
    assert_eq!(nat(&by_script, &SAVES), nat(&by_program, &SAVES));
    let script = coremesh_ok(&by_script, &["iptables", "uninstall", "--dry-run"]);
    by_script.run("sh", &["-e", "-c", &script]).unwrap();
    assert_eq!(nat(&by_script, &SAVES), before);
}

#[test]
fn without_cap_net_admin_nothing_changes_and_the_capability_is_named() {
    if !can_run(
        "without_cap_net_admin_nothing_changes_and_the_capability_is_named",
        &["iptables", "iptables-save", "setpriv"],
    ) {
        return;
    }
    let ns = Netns::new().unwrap();
    let before = nat(&ns, &SAVES);
    let bin = coremesh_bin();
    for action in [INSTALL, UNINSTALL] {
        let out = ns
            .command("setpriv")
            .args(["--reuid", "2102", "--regid", "2102", "--clear-groups"])
            .arg(&bin)
            .args(action)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("missing capability CAP_NET_ADMIN"),
            "{stderr}"
        );
    }
    assert_eq!(nat(&ns, &SAVES), before);
}

/// How long a connection in these tests may take; only a broken run waits for it.
const IO_BOUND: Duration = Duration::from_secs(10);

/// A server on `addr` that answers each connection with `<name> <original destination>`
/// and closes it.
fn answer_server(addr: SocketAddr, name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let local = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let dst = match original_dst(&s) {
                Ok(a) => a.to_string(),
                Err(e) => format!("(no original destination: {e})"),
            };
            let _ = (&s).write_all(format!("{name} {dst}").as_bytes());
        }
    });
    local
}

/// Connects (as this process, root) and reads the answer.
fn ask(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect_timeout(&addr, IO_BOUND)
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(IO_BOUND)).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// Connects from `ns` as `uid` (bash's /dev/tcp under setpriv) and reads the answer.
fn ask_as(ns: &Netns, uid: &str, addr: SocketAddr) -> String {
    let script = format!("exec 3<>/dev/tcp/{}/{} && cat <&3", addr.ip(), addr.port());
    ns.run(
        "setpriv",
        &[
            "--reuid",
            uid,
            "--regid",
            uid,
            "--clear-groups",
            "bash",
            "-c",
            &script,
        ],
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn the_rules_send_each_connection_where_it_belongs() {
    if !can_run(
        "the_rules_send_each_connection_where_it_belongs",
        &["iptables", "ip6tables", "setpriv", "bash"],
    ) {
        return;
    }
    for (subnet, v6) in [(3, false), (4, true)] {
        where_connections_go(subnet, v6);
    }
}

fn where_connections_go(subnet: u8, v6: bool) {
    let pair = Pair::new(subnet).unwrap_or_else(|e| panic!("{e:#}"));
    let (client_ns, app_ns) = (&pair.a, &pair.b);
    let (client_ip, app_ip, any, lo): (IpAddr, IpAddr, IpAddr, IpAddr) = if v6 {
        (
            pair.a_addr6.into(),
            pair.b_addr6.into(),
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::LOCALHOST.into(),
        )
    } else {
        (
            pair.a_addr.into(),
            pair.b_addr.into(),
            Ipv4Addr::UNSPECIFIED.into(),
            Ipv4Addr::LOCALHOST.into(),
        )
    };
    let at = |ip: IpAddr, port: u16| SocketAddr::new(ip, port);
    // Stand-ins for the proxy's listeners, the application and what it calls.
    app_ns
        .enter(|| {
            answer_server(at(any, 4143), "inbound");
            answer_server(at(lo, 4140), "outbound");
            answer_server(at(any, 8080), "app");
            answer_server(at(any, 4191), "admin");
            answer_server(at(any, 2222), "ssh");
        })
        .unwrap();
    client_ns
        .enter(|| {
            answer_server(at(client_ip, 9000), "remote");
            answer_server(at(client_ip, 5432), "remote-db");
        })
        .unwrap();
    let from_client = |port: u16| client_ns.enter(|| ask(at(app_ip, port))).unwrap();
    let from_app = |addr: SocketAddr| app_ns.enter(|| ask(addr)).unwrap();
    let expect = |name: &str, addr: SocketAddr| format!("{name} {addr}");
    let install = |extra: &[&str]| {
        let mut args = vec![
            "iptables",
            "install",
            "--proxy-uid",
            "2102",
            "--skip-inbound-ports",
            "2222",
            "--skip-outbound-ports",
            "5432",
        ];
        args.extend_from_slice(extra);
        coremesh_ok(app_ns, &args);
    };

    install(&[]);
    // Inbound: redirected to the inbound listener, original destination kept; the admin
    // port and the skipped port are reached directly.
    assert_eq!(from_client(8080), expect("inbound", at(app_ip, 8080)));
    assert_eq!(from_client(4191), expect("admin", at(app_ip, 4191)));
    assert_eq!(from_client(2222), expect("ssh", at(app_ip, 2222)));
    // Outbound from the application (root): redirected to the outbound listener, except a
    // skipped port, loopback, and the host's own address (routed through `lo`).
    let remote = at(client_ip, 9000);
    assert_eq!(from_app(remote), expect("outbound", remote));
    let db = at(client_ip, 5432);
    assert_eq!(from_app(db), expect("remote-db", db));
    assert_eq!(from_app(at(lo, 8080)), expect("app", at(lo, 8080)));
    assert_eq!(from_app(at(app_ip, 8080)), expect("app", at(app_ip, 8080)));
    // The proxy's uid goes out as it is.
    assert_eq!(ask_as(app_ns, "2102", remote), expect("remote", remote));
    assert_eq!(ask_as(app_ns, "2103", remote), expect("outbound", remote));

    // Installed again with the client's address skipped: both ways reach it directly.
    let skip = client_ip.to_string();
    install(&["--skip-subnets", &skip]);
    assert_eq!(from_client(8080), expect("app", at(app_ip, 8080)));
    assert_eq!(from_app(remote), expect("remote", remote));

    coremesh_ok(app_ns, UNINSTALL);
    assert_eq!(from_client(8080), expect("app", at(app_ip, 8080)));
    assert_eq!(from_app(remote), expect("remote", remote));
    assert_eq!(ask_as(app_ns, "2103", remote), expect("remote", remote));
}

/// Whether the legacy nat table of `file`'s family exists in `ns`.
fn legacy_nat_exists(ns: &Netns, file: &str) -> bool {
    ns.run("cat", &[file])
        .map(|names| names.lines().any(|l| l.trim() == "nat"))
        .unwrap_or(false)
}

#[test]
fn uninstall_cleans_our_chains_on_every_backend() {
    let saves = [
        "iptables-nft-save",
        "ip6tables-nft-save",
        "iptables-legacy-save",
        "ip6tables-legacy-save",
    ];
    let mut programs = vec![
        "iptables-nft",
        "ip6tables-nft",
        "iptables-legacy",
        "ip6tables-legacy",
        "cat",
    ];
    programs.extend_from_slice(&saves);
    if !can_run("uninstall_cleans_our_chains_on_every_backend", &programs) {
        return;
    }
    let ns = Netns::new().unwrap();
    // nft alone: uninstall cleans it and asks legacy nothing (its tables stay unloaded).
    let nft_before = nat(&ns, &saves[..2]);
    coremesh_ok(&ns, &strs(&with_backend(INSTALL, "nft")));
    assert_ne!(nat(&ns, &saves[..2]), nft_before);
    coremesh_ok(&ns, UNINSTALL);
    assert_eq!(nat(&ns, &saves[..2]), nft_before);
    for file in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        assert!(
            !legacy_nat_exists(&ns, file),
            "{file}: uninstall loaded legacy nat"
        );
    }

    // Chains on both backends (an install with each): one plain uninstall removes both.
    let before = nat(&ns, &saves);
    coremesh_ok(&ns, &strs(&with_backend(INSTALL, "nft")));
    coremesh_ok(&ns, &strs(&with_backend(INSTALL, "legacy")));
    for (save, table) in saves.iter().zip(nat(&ns, &saves)) {
        assert_eq!(
            table.lines().filter(|l| l.contains("COREMESH_")).count(),
            15 + 4,
            "{save} after install:\n{table}"
        );
    }
    let said = coremesh_ok(&ns, UNINSTALL);
    assert_eq!(
        said.trim(),
        "coremesh iptables: uninstalled (iptables-nft, iptables-legacy, ip6tables-nft, \
         ip6tables-legacy)"
    );
    assert_eq!(nat(&ns, &saves), before, "uninstall left chains behind");
    // Again: nothing left to do, nothing changes.
    coremesh_ok(&ns, UNINSTALL);
    assert_eq!(nat(&ns, &saves), before);

    // Legacy alone, as an install that chose legacy leaves it.
    coremesh_ok(&ns, &strs(&with_backend(INSTALL, "legacy")));
    coremesh_ok(&ns, UNINSTALL);
    assert_eq!(nat(&ns, &saves), before);
}
