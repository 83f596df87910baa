//! CPU time and memory (peak, and resident now) of a process (the server
//! under test, when the bench started it), read from Linux's /proc.

use std::io;

use crate::report::EngineUsage;

/// Reads `/proc/{pid}/stat` (utime, stime) and `/proc/{pid}/status` (VmHWM).
/// Call it before the process exits: a reaped process has no /proc entry.
pub fn process_usage(pid: u32) -> io::Result<EngineUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse(&stat, &status, clock_ticks())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc format"))
}

/// Resident memory now of a process: its whole resident set and the
/// anonymous part of it (the heap), bytes, from `/proc/{pid}/status`.
pub fn process_memory(pid: u32) -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status_bytes(&status, "VmRSS:")
        .zip(status_bytes(&status, "RssAnon:"))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc format"))
}

/// A `kB` field of `/proc/{pid}/status` (e.g. `"VmHWM:"`), in bytes.
fn status_bytes(status: &str, field: &str) -> Option<u64> {
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux ABI Volley targets (the kernel fixes it
    // for /proc regardless of CONFIG_HZ).
    100.0
}

fn parse(stat: &str, status: &str, ticks: f64) -> Option<EngineUsage> {
    // The command name may hold spaces and parentheses: fields start after
    // the last ')'. utime and stime are fields 14 and 15 (1-based), i.e. the
    // 12th and 13th after the state field.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let hwm = status_bytes(status, "VmHWM:")?;
    Some(EngineUsage {
        cpu_user_secs: utime / ticks,
        cpu_system_secs: stime / ticks,
        peak_rss_bytes: hwm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let stat =
            "1234 (vol ley) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 100 0 0";
        let status = "Name:\tvolley\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n";
        let u = parse(stat, status, 100.0).unwrap();
        assert_eq!(u.cpu_user_secs, 2.5);
        assert_eq!(u.cpu_system_secs, 0.75);
        assert_eq!(u.peak_rss_bytes, 2048 * 1024);
        assert_eq!(status_bytes(status, "VmRSS:"), Some(1000 * 1024));
        assert_eq!(status_bytes(status, "RssAnon:"), None);
    }

    #[test]
    fn reads_our_own_process() {
        // Burn a little CPU so the figure is not zero.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let u = process_usage(std::process::id()).unwrap();
        assert!(u.peak_rss_bytes > 1024 * 1024, "{u:?}");
        assert!(u.cpu_user_secs + u.cpu_system_secs > 0.0, "{u:?}");
        let (rss, anon) = process_memory(std::process::id()).unwrap();
        assert!(rss >= anon && anon > 0, "{rss} {anon}");
    }
}
