//! The machine, the versions under test and the date, for the report.

use crate::report::Machine;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// CPUs online on the machine (not only those this process may run on: `bench/run` pins the orchestrator
/// to CPU 0, which `available_parallelism` would report as one CPU).
pub fn online_cpus() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| parse_cpu_list(s.trim()))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6,8-9`.
pub fn parse_cpu_list(s: &str) -> Option<usize> {
    let mut n = 0;
    for part in s.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => {
                b.parse::<usize>()
                    .ok()?
                    .checked_sub(a.parse::<usize>().ok()?)?
                    + 1
            }
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    (n > 0).then_some(n)
}

/// CPU count, model and kernel release.
pub fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    Machine {
        cpus: online_cpus(),
        model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    }
}

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let o = Command::new(cmd).args(args).output().ok()?;
    // nginx prints its version on stderr.
    let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&o.stderr));
    Some(s)
}

/// The version in `nginx version: nginx/1.22.1`.
pub fn parse_nginx_version(s: &str) -> Option<String> {
    Some(
        s.split("nginx/")
            .nth(1)?
            .split_whitespace()
            .next()?
            .to_string(),
    )
}

/// The version in `HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/`.
pub fn parse_haproxy_version(s: &str) -> Option<String> {
    let line = s.lines().find(|l| l.contains("version"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "version")?;
    words.next().map(str::to_string)
}

/// The version of package `name` in a Cargo.lock.
pub fn lock_version(lock: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"\n");
    let at = lock.find(&needle)? + needle.len();
    let rest = &lock[at..];
    let v = rest.lines().next()?.strip_prefix("version = \"")?;
    Some(v.trim_end_matches('"').to_string())
}

/// weft (package version and commit), nginx, haproxy, pingora (from the peer's Cargo.lock), rustc.
pub fn versions(pingora_bin: &Path) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let commit = output("git", &["rev-parse", "--short=12", "HEAD"])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty() && !s.contains(' '));
    let dirty = Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--", "crates"])
        .status()
        .is_ok_and(|s| s.code() == Some(1));
    let weft = match commit {
        Some(c) if dirty => format!("{} ({c}, crates/ modified)", env!("CARGO_PKG_VERSION")),
        Some(c) => format!("{} ({c})", env!("CARGO_PKG_VERSION")),
        None => env!("CARGO_PKG_VERSION").to_string(),
    };
    v.insert("weft".into(), weft);
    let unknown = || "not installed".to_string();
    v.insert(
        "nginx".into(),
        output("nginx", &["-v"])
            .as_deref()
            .and_then(parse_nginx_version)
            .unwrap_or_else(unknown),
    );
    v.insert(
        "haproxy".into(),
        output("haproxy", &["-v"])
            .as_deref()
            .and_then(parse_haproxy_version)
            .unwrap_or_else(unknown),
    );
    let lock = std::fs::read_to_string("bench/pingora-peer/Cargo.lock").unwrap_or_default();
    let pingora = lock_version(&lock, "pingora").unwrap_or_else(|| "unknown".into());
    v.insert(
        "pingora".into(),
        if pingora_bin.exists() {
            pingora
        } else {
            format!("{pingora} (not built)")
        },
    );
    v.insert(
        "rustc".into(),
        output("rustc", &["--version"])
            .map(|s| s.trim().trim_start_matches("rustc ").to_string())
            .unwrap_or_else(unknown),
    );
    v
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Now, UTC, as `2026-03-01T12:00:00Z`.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    format_rfc3339(secs)
}

/// Seconds since the epoch as RFC 3339, UTC.
pub fn format_rfc3339(secs: i64) -> String {
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        for (s, n) in [
            ("0", Some(1)),
            ("0-1", Some(2)),
            ("0-3,6,8-9", Some(7)),
            ("", None),
            ("x", None),
        ] {
            assert_eq!(parse_cpu_list(s), n, "{s:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn version_strings() {
        assert_eq!(
            parse_nginx_version("nginx version: nginx/1.22.1\n").as_deref(),
            Some("1.22.1")
        );
        assert_eq!(
            parse_haproxy_version(
                "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/\n"
            )
            .as_deref(),
            Some("2.6.12-1+deb12u4")
        );
        let lock = "[[package]]\nname = \"pingora\"\nversion = \"0.9.1\"\n";
        assert_eq!(lock_version(lock, "pingora").as_deref(), Some("0.9.1"));
        assert_eq!(lock_version(lock, "nope"), None);
    }
}
