//! Server-side costs read from /proc: CPU time (utime + stime of
//! /proc/PID/stat), resident memory (VmRSS of /proc/PID/status), open file
//! descriptors (entries of /proc/PID/fd) and the load average.

use std::fs;

use serde::Serialize;

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux for every
/// architecture the benchmarks run on).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime in clock ticks, from the text of /proc/PID/stat.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. There, field 0 is the state (field 3 of the man page), so
    // utime (14) and stime (15) are at 11 and 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in KiB, from the text of /proc/PID/status.
pub fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds a process has used so far (`None` if it is gone).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|t| t as f64 / TICKS_PER_SECOND)
}

/// Resident memory of a process in KiB (`None` if it is gone).
pub fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss_kib(&fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// Open file descriptors of a process (`None` if it is gone or not ours to read).
pub fn fd_count(pid: u32) -> Option<u64> {
    let entries = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(entries.filter(Result::is_ok).count() as u64)
}

/// The 1-, 5- and 15-minute load averages, from the text of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// This machine's load averages now (`None` without /proc).
pub fn loadavg() -> Option<[f64; 3]> {
    parse_loadavg(&fs::read_to_string("/proc/loadavg").ok()?)
}

/// Whether a process has ended (gone, or a zombie its parent has not reaped).
pub fn has_exited(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// CPU time of a set of processes at one moment.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    seconds: Vec<(u32, Option<f64>)>,
}

impl CpuSnapshot {
    /// Reads every pid now.
    pub fn take(pids: &[u32]) -> Self {
        Self {
            seconds: pids.iter().map(|&pid| (pid, cpu_seconds(pid))).collect(),
        }
    }

    /// CPU seconds used by each process between `self` and `later`.
    pub fn used_until(&self, later: &CpuSnapshot) -> Vec<ProcessCpu> {
        self.seconds
            .iter()
            .zip(&later.seconds)
            .map(|(&(pid, before), &(_, after))| ProcessCpu {
                pid,
                cpu_seconds: match (before, after) {
                    (Some(b), Some(a)) => crate::latency::round3((a - b).max(0.0)),
                    _ => 0.0,
                },
            })
            .collect()
    }
}

/// CPU seconds one process used during a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProcessCpu {
    /// Process id.
    pub pid: u32,
    /// CPU seconds (user + system).
    pub cpu_seconds: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_command_name() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 4 0 100 1000 200";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_cpu_ticks("1 (x) S 1 2"), None);
    }

    #[test]
    fn rss_line_is_found() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t3\n";
        assert_eq!(parse_rss_kib(status), Some(5120));
        assert_eq!(parse_rss_kib("Name:\tx\n"), None);
    }

    #[test]
    fn loadavg_fields() {
        assert_eq!(
            parse_loadavg("2.26 1.21 0.86 3/412 9999\n"),
            Some([2.26, 1.21, 0.86])
        );
        assert_eq!(parse_loadavg("2.26 x"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn own_process_is_readable() {
        let me = std::process::id();
        assert!(fd_count(me).is_some_and(|n| n >= 3));
        assert_eq!(fd_count(u32::MAX), None);
        assert!(!has_exited(me));
        assert!(has_exited(u32::MAX));
        assert!(cpu_seconds(me).is_some());
        assert!(rss_kib(me).is_some_and(|kib| kib > 0));
        let before = CpuSnapshot::take(&[me, u32::MAX]);
        let used = before.used_until(&CpuSnapshot::take(&[me, u32::MAX]));
        assert_eq!(used.len(), 2);
        assert!(used[0].cpu_seconds >= 0.0);
        assert_eq!(used[1].cpu_seconds, 0.0);
    }
}
