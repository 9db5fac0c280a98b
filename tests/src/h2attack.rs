//! HTTP/2 attacks for the attack suite: `tests/py/h2_attack.py` run against an address
//! while a well-behaved client is served on another connection, and what the attacker got
//! back (GOAWAY, RST_STREAMs, statuses) read into an [`AttackOutcome`].

use crate::h2tools::{py_script, require_python_modules, Proc, RUN_BOUND, START_BOUND};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// What the attacker saw.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttackOutcome {
    pub attack: String,
    /// The GOAWAY's error code, if one came.
    pub goaway: Option<u64>,
    /// RST_STREAM frames received, by error code.
    pub resets: BTreeMap<u64, u64>,
    /// Response statuses received, by status.
    pub statuses: BTreeMap<u16, u64>,
    /// The server closed the connection.
    pub closed: bool,
    /// The server stopped reading while the attacker was still sending.
    pub send_blocked: bool,
    pub sent_frames: u64,
    /// `data-closed` only: the first request was answered before the late DATA.
    pub first_stream_ended: Option<bool>,
    /// The server's SETTINGS, by identifier (the values it sent; others are the RFC's).
    pub settings: BTreeMap<u64, u64>,
}

impl AttackOutcome {
    /// Error codes the attacker was sent, GOAWAY's first, then the RST_STREAMs'.
    pub fn codes(&self) -> Vec<u64> {
        self.goaway
            .into_iter()
            .chain(self.resets.keys().copied())
            .collect()
    }
}

/// An attack under way; [`RunningAttack::finish`] waits for its outcome.
pub struct RunningAttack {
    proc: Proc,
}

impl RunningAttack {
    /// Start `attack` on `addr` with `extra` arguments (`--count N`, `--path P`, ...); returns
    /// once the attacker says the attack is under way.
    pub fn start(addr: SocketAddr, attack: &str, extra: &[&str]) -> RunningAttack {
        let py = require_python_modules(&["h2", "hpack", "hyperframe"]);
        let mut cmd = Command::new(py);
        cmd.arg(py_script("h2_attack.py"))
            .arg(addr.to_string())
            .arg(attack)
            .args(extra);
        let proc = Proc::spawn(cmd, &format!("h2_attack.py {attack}"));
        proc.wait_line("ATTACKING", START_BOUND);
        RunningAttack { proc }
    }

    /// Wait for the attacker to end (bounded) and read what it saw.
    pub fn finish(mut self) -> AttackOutcome {
        let status = self.proc.wait_exit(RUN_BOUND * 2);
        let v = self.proc.json_lines().pop().unwrap_or_else(|| {
            panic!(
                "the attacker printed no outcome (exit {status}); stderr: {:?}",
                self.proc.stderr_lines()
            )
        });
        let by_code = |key: &str| -> BTreeMap<u64, u64> {
            v[key]
                .as_object()
                .map(|o| {
                    o.iter()
                        .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default()
        };
        AttackOutcome {
            attack: v["attack"].as_str().unwrap_or("").to_string(),
            goaway: v["goaway"].as_u64(),
            resets: by_code("resets"),
            statuses: by_code("statuses")
                .into_iter()
                .map(|(k, n)| (k as u16, n))
                .collect(),
            closed: v["closed"].as_bool().unwrap_or(false),
            send_blocked: v["send_blocked"].as_bool().unwrap_or(false),
            sent_frames: v["sent_frames"].as_u64().unwrap_or(0),
            first_stream_ended: v["first_stream_ended"].as_bool(),
            settings: by_code("settings"),
        }
    }
}

/// Run `attack` on `addr`, and `meanwhile` (a well-behaved client on its own connection)
/// once the attack is under way; the attacker's outcome.
pub fn attack_while_serving(
    addr: SocketAddr,
    attack: &str,
    extra: &[&str],
    meanwhile: impl FnOnce(),
) -> AttackOutcome {
    let running = RunningAttack::start(addr, attack, extra);
    meanwhile();
    running.finish()
}

/// The server's SETTINGS after a plain handshake (the `settings` mode of the script).
pub fn server_settings(addr: SocketAddr) -> BTreeMap<u64, u64> {
    RunningAttack::start(addr, "settings", &["--wait", "30"])
        .finish()
        .settings
}

/// How long the attacker reads the server's answer after its attack: long, since the
/// answer ends the wait (GOAWAY, close, or every stream ended).
pub const ANSWER_WAIT: Duration = Duration::from_secs(30);
