//! [`ProcessMetrics`]: the standard `process_*` metrics, read from `/proc/self` (Linux).
//! Each value is `None` where the file could not be read or parsed; the encoder then leaves
//! that family out.

use super::text::{family, sample, Value};
use std::fs;

/// Clock ticks per second of the times in `/proc/*/stat` (`USER_HZ`), as
/// `sysconf(_SC_CLK_TCK)` answers it (the `AT_CLKTCK` value the kernel hands every process).
/// It is 100 on common builds but not promised to be: a kernel may be built otherwise, so
/// it is asked rather than assumed. A zero answer (impossible on Linux) falls back to 100.
fn clock_ticks_per_second() -> u64 {
    match rustix::param::clock_ticks_per_second() {
        0 => 100,
        ticks => ticks,
    }
}

/// `ticks` of `ticks_per_second` each, in seconds.
fn ticks_to_seconds(ticks: u64, ticks_per_second: u64) -> f64 {
    ticks as f64 / ticks_per_second.max(1) as f64
}

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
        let text = |path: &str| fs::read_to_string(path).ok();
        let files = ProcFiles {
            stat: text("/proc/self/stat"),
            system_stat: text("/proc/stat"),
            status: text("/proc/self/status"),
            limits: text("/proc/self/limits"),
            open_fds: fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count() as u64),
        };
        ProcessMetrics::from_files(&files, clock_ticks_per_second())
    }

    /// The values in `files`, whose tick counts run at `ticks_per_second`.
    fn from_files(files: &ProcFiles, ticks_per_second: u64) -> ProcessMetrics {
        let stat = files.stat.as_deref().and_then(parse_stat);
        let boot_time = files.system_stat.as_deref().and_then(parse_boot_time);
        let seconds = |ticks: u64| ticks_to_seconds(ticks, ticks_per_second);
        ProcessMetrics {
            cpu_seconds: stat.map(|s| seconds(s.utime + s.stime)),
            resident_memory_bytes: files.status.as_deref().and_then(parse_vm_rss),
            virtual_memory_bytes: stat.map(|s| s.vsize),
            open_fds: files.open_fds,
            max_fds: files.limits.as_deref().and_then(parse_max_fds),
            start_time_seconds: match (stat, boot_time) {
                (Some(s), Some(boot)) => Some(boot as f64 + seconds(s.start_ticks)),
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

/// The texts read from `/proc` (each `None` when unreadable).
#[derive(Debug, Default)]
struct ProcFiles {
    stat: Option<String>,
    system_stat: Option<String>,
    status: Option<String>,
    limits: Option<String>,
    open_fds: Option<u64>,
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
    fn ticks_convert_at_the_rate_the_system_reports() {
        assert_eq!(ticks_to_seconds(300, 100), 3.0);
        // A kernel with USER_HZ 250 or 1000: the same tick count is less time.
        assert_eq!(ticks_to_seconds(300, 250), 1.2);
        assert_eq!(ticks_to_seconds(1500, 1000), 1.5);
        assert_eq!(ticks_to_seconds(7, 0), 7.0);
        // utime 250 + stime 50 ticks, started 123456 ticks after boot.
        let files = ProcFiles {
            stat: Some(
                "4242 (coremesh) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
                 250 50 0 0 20 0 9 0 123456 987654321 2000 18446744073709551615"
                    .into(),
            ),
            system_stat: Some("cpu 1 2\nbtime 1700000000\n".into()),
            ..ProcFiles::default()
        };
        let at_250 = ProcessMetrics::from_files(&files, 250);
        assert_eq!(at_250.cpu_seconds, Some(1.2));
        assert_eq!(at_250.start_time_seconds, Some(1_700_000_000.0 + 493.824));
        let at_100 = ProcessMetrics::from_files(&files, 100);
        assert_eq!(at_100.cpu_seconds, Some(3.0));
        assert_eq!(at_100.start_time_seconds, Some(1_700_000_000.0 + 1234.56));
        // What this machine says is what sysconf(_SC_CLK_TCK) says (getconf asks it too).
        let getconf = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output();
        if let Ok(output) = getconf {
            let text = String::from_utf8_lossy(&output.stdout);
            if let Ok(expected) = text.trim().parse::<u64>() {
                assert_eq!(clock_ticks_per_second(), expected);
            }
        }
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
