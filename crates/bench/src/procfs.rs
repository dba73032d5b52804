//! What Linux's /proc says about a process: memory (VmRSS, VmHWM) and CPU
//! time consumed (utime + stime).

use anyhow::{anyhow, Context};

/// A process to read: another one by pid, or this one.
#[derive(Debug, Clone, Copy)]
pub enum Proc {
    Pid(u32),
    SelfProc,
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::Pid(p) => format!("/proc/{p}/{file}"),
            Proc::SelfProc => format!("/proc/self/{file}"),
        }
    }
}

/// Resident set size now and its high-water mark, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(p: Proc) -> anyhow::Result<Memory> {
    let path = p.path("status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_memory(&text).ok_or_else(|| anyhow!("no VmRSS/VmHWM in {path}"))
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        let rest = line[name.len()..].trim_start_matches(':').trim();
        rest.split_whitespace().next()?.parse().ok()
    };
    Some(Memory {
        rss_kib: field("VmRSS")?,
        hwm_kib: field("VmHWM")?,
    })
}

/// utime + stime of the process (all its threads), in clock ticks.
pub fn cpu_ticks(p: Proc) -> anyhow::Result<u64> {
    let path = p.path("stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_cpu_ticks(&text).ok_or_else(|| anyhow!("unexpected format of {path}"))
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // "pid (comm) state ppid ..."; comm may contain spaces and parentheses,
    // so fields are counted from the last ')'. After it, field 3 (state) is
    // index 0, so utime (field 14) is index 11 and stime (15) index 12.
    let after = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Machine-wide CPU time from /proc/stat, in clock ticks (all cores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    pub total: u64,
}

pub fn machine_ticks() -> anyhow::Result<MachineTicks> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_machine_ticks(&text).ok_or_else(|| anyhow!("unexpected format of /proc/stat"))
}

fn parse_machine_ticks(stat: &str) -> Option<MachineTicks> {
    // "cpu  user nice system idle iowait irq softirq steal guest guest_nice";
    // guest time is already counted in user and nice.
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    if f.len() < 5 {
        return None;
    }
    let total: u64 = f.iter().sum();
    Some(MachineTicks {
        busy: total - f[3] - f[4],
        total,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux we know).
pub fn clock_ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t: &u64| t > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let s = "Name:\tferrostack\nVmPeak:\t  100 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   12345 kB\n";
        assert_eq!(
            parse_memory(s),
            Some(Memory {
                rss_kib: 12345,
                hwm_kib: 20480
            })
        );
        assert_eq!(parse_memory("Name:\tx\n"), None);
    }

    #[test]
    fn parses_stat_with_odd_comm() {
        let s =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 42 1000 200";
        assert_eq!(parse_cpu_ticks(s), Some(325));
        assert_eq!(parse_cpu_ticks("1 (x) S 1"), None);
    }

    #[test]
    fn parses_proc_stat() {
        let s = "cpu  10 20 30 400 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n";
        assert_eq!(
            parse_machine_ticks(s),
            Some(MachineTicks {
                busy: 10 + 20 + 30 + 6 + 7 + 8,
                total: 10 + 20 + 30 + 400 + 5 + 6 + 7 + 8
            })
        );
        assert_eq!(parse_machine_ticks("cpu0 1 2\n"), None);
    }

    #[test]
    fn reads_this_process() {
        machine_ticks().unwrap();
        let m = memory(Proc::SelfProc).unwrap();
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
        cpu_ticks(Proc::SelfProc).unwrap();
        assert!(clock_ticks_per_sec() > 0);
    }
}
