//! [`ProcessMetrics`]: the standard `process_*` metrics, read from `/proc/self` (Linux).
//! Each value is `None` where the file could not be read or parsed; the encoder then leaves
//! that family out.

use super::text::{family, sample, Value};
use std::fs;

/// Clock ticks per second of the times in `/proc/*/stat` (`USER_HZ`): fixed at 100 by the
/// kernel's user ABI on every architecture Linux exposes it on, so no `sysconf` is needed.
const USER_HZ: f64 = 100.0;

/// The process's resource use, as Prometheus client libraries report it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessMetrics {
    /// User + system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, in bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory, in bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessMetrics {
    /// Reads the current values from `/proc/self` (blocking file reads: call it on the
    /// control thread).
    pub fn read() -> ProcessMetrics {
        let stat = fs::read_to_string("/proc/self/stat").ok();
        let stat = stat.as_deref().and_then(parse_stat);
        let boot_time = fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| parse_boot_time(&s));
        let status = fs::read_to_string("/proc/self/status").ok();
        let limits = fs::read_to_string("/proc/self/limits").ok();
        let open_fds = fs::read_dir("/proc/self/fd")
            .ok()
            .map(|dir| dir.count() as u64);
        ProcessMetrics {
            cpu_seconds: stat.map(|s| (s.utime + s.stime) as f64 / USER_HZ),
            resident_memory_bytes: status.as_deref().and_then(parse_vm_rss),
            virtual_memory_bytes: stat.map(|s| s.vsize),
            open_fds,
            max_fds: limits.as_deref().and_then(parse_max_fds),
            start_time_seconds: match (stat, boot_time) {
                (Some(s), Some(boot)) => Some(boot as f64 + s.start_ticks as f64 / USER_HZ),
                _ => None,
            },
        }
    }

    /// Writes the families that have a value.
    pub fn encode(&self, out: &mut String) {
        let families: [(&str, &str, &str, Option<Value>); 6] = [
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                self.cpu_seconds.map(Value::Float),
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                self.resident_memory_bytes.map(Value::Int),
            ),
            (
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                self.virtual_memory_bytes.map(Value::Int),
            ),
            (
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                self.open_fds.map(Value::Int),
            ),
            (
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                self.max_fds.map(Value::Int),
            ),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds.map(Value::Float),
            ),
        ];
        for (name, kind, help, value) in families {
            if let Some(value) = value {
                family(out, name, kind, help);
                sample(out, name, &[], value);
            }
        }
    }
}

/// The fields of `/proc/self/stat` used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
    vsize: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The `VmRSS:` line of `/proc/self/status`, in kB.
fn parse_vm_rss(text: &str) -> Option<u64> {
    let line = text.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.split_ascii_whitespace().next()?.parse().ok()?;
    kb.checked_mul(1024)
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?;
    line.split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_tricky_command_name() {
        let text = "4242 (core mesh) (x) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 987654321 2000 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(
            stat,
            Stat {
                utime: 250,
                stime: 50,
                start_ticks: 123456,
                vsize: 987654321
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn parses_status_stat_and_limits() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(
            parse_boot_time("cpu 1 2\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessMetrics::read();
        assert!(p.cpu_seconds.is_some());
        assert!(p.resident_memory_bytes.unwrap() > 0);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.start_time_seconds.unwrap() > 1_000_000_000.0);
    }

    #[test]
    fn encodes_only_known_values() {
        let p = ProcessMetrics {
            open_fds: Some(12),
            cpu_seconds: Some(1.5),
            ..ProcessMetrics::default()
        };
        let mut out = String::new();
        p.encode(&mut out);
        assert_eq!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n\
             # TYPE process_cpu_seconds_total counter\n\
             process_cpu_seconds_total 1.5\n\
             # HELP process_open_fds Number of open file descriptors.\n\
             # TYPE process_open_fds gauge\n\
             process_open_fds 12\n"
        );
    }
}
