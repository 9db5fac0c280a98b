//! What `/proc` says about a contender's processes: CPU time (utime + stime), resident and
//! proportional memory, open descriptors, and the processes a parent started.

use std::fs;

/// CPU time of one process in clock ticks (utime + stime), or `None` once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

/// `utime + stime` from a `/proc/PID/stat` line (fields 14 and 15; the command name in
/// parentheses may contain spaces, so fields are counted after its closing parenthesis).
pub fn parse_stat_cpu(stat: &str) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Busy clock ticks of the whole machine (all CPUs) from `/proc/stat`: user, nice,
/// system, irq, softirq and steal.
pub fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum()
}

/// `root` and every process below it.
pub fn process_tree(root: u32) -> Vec<u32> {
    let mut all: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if let Some(ppid) = parent_of(pid) {
                    all.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(all.iter().filter(|(_, pp)| *pp == parent).map(|(p, _)| *p));
        i += 1;
    }
    tree
}

/// Summed CPU ticks of a process tree.
pub fn tree_cpu_ticks(root: u32) -> u64 {
    process_tree(root).into_iter().filter_map(cpu_ticks).sum()
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    kib_field(&status, field)
}

/// A `Name:   123 kB` field of `/proc/PID/status` or `smaps_rollup`.
pub fn kib_field(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .and_then(|l| l[field.len() + 1..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Memory of a process tree in KiB: summed RSS, and summed PSS (shared pages split between
/// the processes that map them, so a master and its workers are not counted twice).
pub fn tree_memory_kib(root: u32) -> (u64, u64) {
    let mut rss = 0;
    let mut pss = 0;
    for pid in process_tree(root) {
        rss += status_kib(pid, "VmRSS").unwrap_or(0);
        pss += fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| kib_field(&t, "Pss"))
            .unwrap_or(0);
    }
    (rss, pss)
}

/// Open descriptors of a process tree.
pub fn tree_fd_count(root: u32) -> usize {
    process_tree(root)
        .into_iter()
        .map(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd"))
                .map(|d| d.count())
                .unwrap_or(0)
        })
        .sum()
}

/// The CPUs each thread of a process tree may run on (`Cpus_allowed_list` of
/// `/proc/PID/task/TID/status`): every distinct list, with how many threads have it.
pub fn tree_cpus_allowed(root: u32) -> std::collections::BTreeMap<String, usize> {
    let mut lists = std::collections::BTreeMap::new();
    for pid in process_tree(root) {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let status = fs::read_to_string(task.path().join("status")).unwrap_or_default();
            if let Some(list) = cpus_allowed(&status) {
                *lists.entry(list).or_insert(0) += 1;
            }
        }
    }
    lists
}

/// `Cpus_allowed_list` of a `/proc/…/status` text.
pub fn cpus_allowed(status: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_name_with_spaces() {
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 5 1000 50";
        assert_eq!(parse_stat_cpu(line), Some(10));
        assert_eq!(
            kib_field("VmRSS:\t  1234 kB\nVmSwap: 0 kB", "VmRSS"),
            Some(1234)
        );
        assert_eq!(kib_field("VmRSSX: 1 kB", "VmRSS"), None);
    }

    #[test]
    fn our_own_process_is_visible() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        let (rss, _) = tree_memory_kib(me);
        assert!(rss > 0);
        assert!(tree_fd_count(me) > 0);
        assert!(process_tree(me).contains(&me));
        assert!(machine_busy_ticks() > 0);
        let cpus = tree_cpus_allowed(me);
        assert!(cpus.values().sum::<usize>() >= 1, "{cpus:?}");
        assert_eq!(
            cpus_allowed("Name:\tx\nCpus_allowed_list:\t1\nMems: 0\n").as_deref(),
            Some("1")
        );
    }
}
