//! The few system calls std does not offer: raising the open-file limit, signalling a
//! process group, and the clock-tick rate of `/proc` CPU times.
#![allow(unsafe_code)]

use std::io;

/// Raise RLIMIT_NOFILE to `wanted` (soft and, when allowed, hard); returns the soft limit
/// in force afterwards. Children started later inherit it.
pub fn raise_nofile(wanted: u64) -> io::Result<u64> {
    let mut current = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes one `rlimit` into the valid, exclusively borrowed struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.rlim_cur >= wanted {
        return Ok(current.rlim_cur);
    }
    let raised = libc::rlimit {
        rlim_cur: wanted,
        rlim_max: current.rlim_max.max(wanted),
    };
    // SAFETY: `setrlimit` only reads the valid struct passed by reference.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
        return Ok(wanted);
    }
    // Not allowed to raise the hard limit: go as far as it allows.
    let capped = libc::rlimit {
        rlim_cur: current.rlim_max.min(wanted),
        rlim_max: current.rlim_max,
    };
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &capped) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(capped.rlim_cur)
}

/// Send `signal` to every process of group `pgid`. Refuses group ids below 2, so a bad
/// id can never signal our own group or every process.
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    if pgid < 2 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal process group below 2",
        ));
    }
    // SAFETY: `kill` takes plain integers; a negative pid names the process group.
    if unsafe { libc::kill(-(pgid as i32), signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub const SIGTERM: i32 = libc::SIGTERM;
pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGINT: i32 = libc::SIGINT;

/// Clock ticks per second of `utime`/`stime` in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: `sysconf` takes an integer name and returns an integer.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as u64
    } else {
        100
    }
}
