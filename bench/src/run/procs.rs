//! Processes the orchestrator starts (each pinned to a core, each in its own process group so that stopping
//! it also stops the workers it forked), and what the kernel says about them: CPU time from
//! `/proc/PID/stat`, resident memory from `/proc/PID/status`.

use anyhow::Context;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which core a process runs on (`taskset -c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Core {
    /// CPU 0: load generator and upstream.
    Load,
    /// CPU 1: the proxies under test.
    Proxy,
}

/// How processes are pinned on this machine.
#[derive(Debug, Clone)]
pub struct Pinning {
    /// `taskset` found and at least two CPUs.
    pub enabled: bool,
}

impl Pinning {
    /// Pins when `taskset` exists and there are two CPUs or more.
    pub fn detect() -> Pinning {
        let cpus = super::machine::online_cpus();
        let taskset = Command::new("taskset")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Pinning {
            enabled: taskset && cpus >= 2,
        }
    }

    /// A command for `program` pinned to `core` (taskset execs it, so the child's PID is the program's).
    pub fn command(&self, core: Core, program: impl AsRef<std::ffi::OsStr>) -> Command {
        if self.enabled {
            let mut c = Command::new("taskset");
            c.arg("-c")
                .arg(match core {
                    Core::Load => "0",
                    Core::Proxy => "1",
                })
                .arg(program);
            c
        } else {
            Command::new(program)
        }
    }
}

/// A started process, stopped (with its process group) on drop.
#[derive(Debug)]
pub struct Proc {
    /// Name for logs and errors.
    pub name: String,
    child: Child,
    /// Its log file (stdout and stderr).
    pub log: PathBuf,
}

impl Proc {
    /// Starts `cmd` in its own process group with output in `log_dir/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone().context("cannot duplicate a log handle")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Its PID (also its process group ID).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// The last lines of its log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// SIGTERM to its group, up to 3 s to exit, then SIGKILL to the group.
    pub fn stop(&mut self) {
        if self.exited() {
            signal_group(self.pid(), "KILL");
            return;
        }
        signal_group(self.pid(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.exited() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left in the group (nginx workers, a stuck child) goes too.
        signal_group(self.pid(), "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first process that has exited, with the end of its log.
pub fn first_exited(procs: &mut [Proc]) -> Option<String> {
    for p in procs.iter_mut() {
        if p.exited() {
            return Some(format!("{} exited: {}", p.name, p.log_tail()));
        }
    }
    None
}

/// Sends a signal to a process group we created (its ID is the PID of the process we started).
fn signal_group(pgid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Clock ticks per second for `/proc/PID/stat` times (`getconf CLK_TCK`, 100 on Linux in practice).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

/// utime + stime in ticks, from the text of `/proc/PID/stat`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12 here.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The parent PID, from the text of `/proc/PID/stat`.
pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS in KiB, from the text of `/proc/PID/status`.
pub fn parse_status_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn read_stat(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The given PIDs and every descendant of theirs alive now (nginx's worker, for example).
pub fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = roots.to_vec();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    let parents: Vec<(u32, u32)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, parse_stat_ppid(&read_stat(pid)?)?)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        for &(pid, ppid) in &parents {
            if ppid == p && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

/// CPU seconds (user + system) the processes have used so far, summed.
pub fn cpu_seconds(pids: &[u32], ticks: f64) -> f64 {
    pids.iter()
        .filter_map(|&p| parse_stat_ticks(&read_stat(p)?))
        .sum::<u64>() as f64
        / ticks
}

/// Resident memory of the processes now, summed, KiB.
pub fn rss_kb(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|&p| {
            parse_status_rss_kb(&std::fs::read_to_string(format!("/proc/{p}/status")).ok()?)
        })
        .sum()
}

/// Busy and steal time of one CPU, in ticks, from the text of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuTimes {
    /// user + nice + system + irq + softirq.
    pub busy: u64,
    /// Time the hypervisor ran something else while this virtual CPU wanted to run.
    pub steal: u64,
}

/// The `cpuN` line of `/proc/stat`.
pub fn parse_proc_stat_cpu(stat: &str, cpu: usize) -> Option<CpuTimes> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: at(0) + at(1) + at(2) + at(5) + at(6),
        steal: at(7),
    })
}

/// Now, for one CPU.
pub fn cpu_times(cpu: usize) -> Option<CpuTimes> {
    parse_proc_stat_cpu(&std::fs::read_to_string("/proc/stat").ok()?, cpu)
}

/// Memory samples taken during a run.
#[derive(Debug, Default, Clone)]
pub struct RssSamples {
    /// Summed VmRSS per sample, KiB.
    pub samples: Vec<u64>,
}

impl RssSamples {
    /// Steady state: the median of the second half of the run's samples (after warm-up growth).
    pub fn steady(&self) -> Option<u64> {
        let half = &self.samples[self.samples.len() / 2..];
        let v: Vec<f64> = half.iter().map(|&x| x as f64).collect();
        crate::stats::median(&v).map(|m| m.round() as u64)
    }

    /// The largest sample.
    pub fn peak(&self) -> Option<u64> {
        self.samples.iter().copied().max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let stat =
            "1234 (weft (proxy) x) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 75 0 0 20 0 3 0 100 \
                    1000000 500 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ppid(stat), Some(1));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn proc_stat_cpu_lines() {
        let stat = "cpu  10 0 10 100 0 0 0 0 0 0\ncpu0 5 0 5 50 0 0 0 0 0 0\ncpu1 100 2 30 900 4 1 3 7 0 0\nintr 1\n";
        assert_eq!(
            parse_proc_stat_cpu(stat, 1),
            Some(CpuTimes {
                busy: 136,
                steal: 7
            })
        );
        assert_eq!(parse_proc_stat_cpu(stat, 2), None);
        assert!(cpu_times(0).is_some());
    }

    #[test]
    fn rss_from_status() {
        let status = "Name:\tnginx\nVmPeak:\t  9000 kB\nVmRSS:\t    6144 kB\nThreads:\t1\n";
        assert_eq!(parse_status_rss_kb(status), Some(6144));
        assert_eq!(parse_status_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn steady_is_the_second_half_and_peak_the_max() {
        let s = RssSamples {
            samples: vec![1000, 5000, 9000, 9100, 9000, 9200],
        };
        assert_eq!(s.steady(), Some(9100));
        assert_eq!(s.peak(), Some(9200));
        assert_eq!(RssSamples::default().steady(), None);
    }

    #[test]
    fn this_process_is_measurable() {
        let me = std::process::id();
        assert!(rss_kb(&[me]) > 0);
        assert!(cpu_seconds(&[me], clock_ticks()) >= 0.0);
        assert!(with_descendants(&[me]).contains(&me));
    }
}
