//! What a worker costs the host, read when `/metrics` is scraped: its CPU
//! time from `/proc/<pid>/stat` (its own and its waited-for children's,
//! so a plugin's forks count) and its memory cgroup's use now and at peak.

use std::path::Path;

/// Clock ticks per second of `/proc/<pid>/stat`'s times (USER_HZ).
fn ticks_per_second() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// CPU seconds of a process and its reaped children, from the text of
/// its `/proc/<pid>/stat`: `utime stime cutime cstime` (fields 14-17),
/// counted after the command name's closing parenthesis (a name may hold
/// spaces and parentheses).
pub fn cpu_seconds_from_stat(stat: &str, ticks_per_second: u64) -> Option<f64> {
    let after = &stat[stat.rfind(')')? + 1..];
    // After the name: state is field 3, so utime (14) is the 12th here.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let mut ticks = 0u64;
    for i in 11..15 {
        let v: i64 = fields.get(i)?.parse().ok()?;
        ticks = ticks.saturating_add(u64::try_from(v).ok()?);
    }
    Some(ticks as f64 / ticks_per_second.max(1) as f64)
}

/// CPU seconds of a running process; `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat =
        std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    cpu_seconds_from_stat(&stat, ticks_per_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime ...
        let stat = "42 (ward worker (x)) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 30 20 20 0 1 0";
        assert_eq!(cpu_seconds_from_stat(stat, 100), Some(3.5));
        assert_eq!(cpu_seconds_from_stat("42 (x) S 1", 100), None);
        assert_eq!(cpu_seconds_from_stat("garbage", 100), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let mine = cpu_seconds(std::process::id()).unwrap();
        assert!(mine >= 0.0);
        assert_eq!(cpu_seconds(u32::MAX), None);
    }
}
