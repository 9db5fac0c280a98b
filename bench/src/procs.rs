//! Child processes of the comparison: each starts in its own process group, is listed in a
//! process-wide registry, and is stopped with its whole group — on a normal stop (SIGTERM,
//! then SIGKILL after a grace), when its guard drops (errors, panics), and when the bench
//! itself gets SIGINT/SIGTERM/SIGHUP ([`install_cleanup_on_signal`]).

use crate::sys;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static GROUPS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn register(pgid: u32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.push(pgid);
    }
}

fn unregister(pgid: u32) {
    if let Ok(mut g) = GROUPS.lock() {
        g.retain(|p| *p != pgid);
    }
}

/// Kill every registered group (used on a signal to the bench).
pub fn kill_all() {
    let groups = GROUPS.lock().map(|g| g.clone()).unwrap_or_default();
    for pgid in groups {
        let _ = sys::kill_group(pgid, sys::SIGKILL);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: kill every child group, then exit with 128 + signal.
pub fn install_cleanup_on_signal() -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("cleanup-on-signal".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                eprintln!("coremesh-bench: signal {signal}: stopping every child process");
                kill_all();
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// How a child ended when stopped.
#[derive(Debug, Clone)]
pub struct Stopped {
    /// Exit code, or `None` when ended by a signal.
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Time from SIGTERM to exit.
    pub took: Duration,
    /// Whether it had to be killed after the grace period.
    pub killed: bool,
}

/// A running child process group.
pub struct Proc {
    pub name: String,
    child: Child,
    pgid: u32,
    stdout: Option<ChildStdout>,
    done: bool,
}

impl Proc {
    /// Start `cmd` in a new process group, its stderr (and stdout, unless `pipe_stdout`) to
    /// `log`.
    pub fn spawn(
        name: &str,
        mut cmd: Command,
        log: &Path,
        pipe_stdout: bool,
    ) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(log)
            .map_err(|e| anyhow::anyhow!("cannot create log {}: {e}", log.display()))?;
        let err = file.try_clone()?;
        cmd.stdin(Stdio::null()).stderr(Stdio::from(err));
        if pipe_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(Stdio::from(file));
        }
        cmd.process_group(0);
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}"))?;
        let pgid = child.id();
        register(pgid);
        let stdout = child.stdout.take();
        Ok(Proc {
            name: name.to_string(),
            child,
            pgid,
            stdout,
            done: false,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line the child prints on stdout (piped), within `limit`.
    pub fn first_line(&mut self, limit: Duration) -> anyhow::Result<String> {
        let stdout = self
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("{}: stdout is not piped", self.name))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line).map(|_| line);
            // Keep the pipe open (the child may print more) until the child ends.
            let _ = tx.send(read);
            let mut sink = String::new();
            while reader.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
        match rx.recv_timeout(limit) {
            Ok(Ok(line)) if !line.is_empty() => Ok(line.trim().to_string()),
            Ok(Ok(_)) => anyhow::bail!("{} ended before printing anything", self.name),
            Ok(Err(e)) => anyhow::bail!("{}: cannot read stdout: {e}", self.name),
            Err(_) => anyhow::bail!("{} printed nothing within {limit:?}", self.name),
        }
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL it.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        let began = Instant::now();
        if self.done {
            return Stopped {
                code: None,
                signal: None,
                took: Duration::ZERO,
                killed: false,
            };
        }
        let _ = sys::kill_group(self.pgid, sys::SIGTERM);
        let mut status = None;
        while began.elapsed() < grace {
            if let Some(s) = self.exited() {
                status = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let took = began.elapsed();
        let killed = status.is_none();
        // Whatever is left of the group (workers of a master that exited) goes too.
        let _ = sys::kill_group(self.pgid, sys::SIGKILL);
        let status = status.or_else(|| self.child.wait().ok());
        self.finish();
        use std::os::unix::process::ExitStatusExt;
        Stopped {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            took,
            killed,
        }
    }

    /// SIGKILL the group at once.
    pub fn kill(&mut self) {
        if !self.done {
            let _ = sys::kill_group(self.pgid, sys::SIGKILL);
            let _ = self.child.wait();
            self.finish();
        }
    }

    fn finish(&mut self) {
        self.done = true;
        unregister(self.pgid);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Text without ANSI escape sequences (colours in logs).
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `max` bytes of a log file, for a report.
pub fn log_tail(path: &Path, max: usize) -> String {
    let text = strip_ansi(&std::fs::read_to_string(path).unwrap_or_default());
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x"),
            "2026  INFO x"
        );
    }
}
