//! `perf stat` attached to a contender's processes for the length of one load: task-clock
//! (CPU time in nanoseconds, finer than /proc's ticks), context switches and system calls
//! (`raw_syscalls:sys_enter`), and `instructions:u` / `instructions:k` where the machine
//! has hardware counters (a VM often has none: perf then says `<not supported>` and the
//! figure is left out).

use crate::procs::Proc;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The events counted.
pub const EVENTS: &str =
    "task-clock,context-switches,raw_syscalls:sys_enter,instructions:u,instructions:k";

/// A running `perf stat -p PIDS`.
pub struct PerfStat {
    proc: Proc,
    out: PathBuf,
}

/// Counts by event name (`task-clock` in milliseconds, as perf prints it).
pub type Counts = BTreeMap<String, f64>;

/// The `perf stat` arguments for `pids`, writing CSV to `out`.
pub fn args(pids: &[u32], out: &Path) -> Vec<String> {
    let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
    vec![
        "stat".into(),
        "-x".into(),
        ",".into(),
        "-e".into(),
        EVENTS.into(),
        "-p".into(),
        pids.join(","),
        "-o".into(),
        out.display().to_string(),
    ]
}

impl PerfStat {
    /// Attach `perf` to `pids` (every thread of each); `None` with the reason when it
    /// cannot run. Counting starts a moment after this returns: it waits 200 ms for perf
    /// to attach, which adds idle time, not requests, to the counts.
    pub fn attach(perf: &Path, pids: &[u32], work: &Path, tag: &str) -> Result<PerfStat, String> {
        let out = work.join(format!("perf-{tag}-{}.csv", std::process::id()));
        let log = work.join(format!("perf-{tag}-{}.log", std::process::id()));
        let mut cmd = Command::new(perf);
        cmd.args(args(pids, &out));
        let mut proc = Proc::spawn("perf stat", cmd, &log, false).map_err(|e| format!("{e:#}"))?;
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = proc.exited() {
            return Err(format!(
                "perf stat exited at once ({status}): {}",
                crate::procs::log_tail(&log, 300).replace('\n', " | ")
            ));
        }
        Ok(PerfStat { proc, out })
    }

    /// Stop counting (SIGINT, as perf expects) and read the counts.
    pub fn finish(mut self) -> Result<Counts, String> {
        let _ = crate::sys::kill_group(self.proc.pid(), crate::sys::SIGINT);
        let began = Instant::now();
        while self.proc.exited().is_none() {
            if began.elapsed() > Duration::from_secs(10) {
                self.proc.kill();
                return Err("perf stat did not stop within 10 s of SIGINT".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.out).map_err(|e| format!("perf output: {e}"))?;
        let _ = std::fs::remove_file(&self.out);
        Ok(parse(&text))
    }
}

/// perf's CSV (`value,unit,event,…`); comments, and events it could not count, are left out.
pub fn parse(text: &str) -> Counts {
    let mut counts = Counts::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 3 {
            continue;
        }
        if let Ok(v) = cols[0].trim().parse::<f64>() {
            counts.insert(cols[2].trim().to_string(), v);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_perf_csv() {
        // perf 6.x on a VM without hardware counters.
        let text = "# started on Wed Dec  2 04:20:00 2026\n\n1.38,msec,task-clock,1383385,100.00,0.689,CPUs utilized\n3,,context-switches,1383385,100.00,0.000,/sec\n29,,raw_syscalls:sys_enter,1383385,100.00,20.963,K/sec\n<not supported>,,instructions:u,0,100.00,,\n";
        let c = parse(text);
        assert_eq!(c.get("task-clock"), Some(&1.38));
        assert_eq!(c.get("context-switches"), Some(&3.0));
        assert_eq!(c.get("raw_syscalls:sys_enter"), Some(&29.0));
        assert!(!c.contains_key("instructions:u"));
        let a = args(&[10, 11], Path::new("/tmp/p.csv")).join(" ");
        assert_eq!(a, format!("stat -x , -e {EVENTS} -p 10,11 -o /tmp/p.csv"));
    }
}
