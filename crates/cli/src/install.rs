//! `weft install`: configuration for the add-ons that watch a mesh. `weft install prometheus` prints a
//! Prometheus configuration for a mesh in directory mode: one job scrapes weftd's own `/metrics`, the
//! other every connected proxy's Istio metrics, found through weftd's `/debug/prometheus_sd`.

use anyhow::{bail, Context};
use std::time::Duration;

/// Prometheus's scrape interval when none is given: Istio's sample Prometheus scrapes every 15 s.
pub const DEFAULT_SCRAPE_INTERVAL: &str = "15s";

/// The job that scrapes weftd, and the `app` label its target carries (the control-plane dashboard
/// selects weftd's process metrics by it, as Istio's selects istiod's by `app="istiod"`).
pub const WEFTD_JOB: &str = "weftd";
/// The job that scrapes the proxies.
pub const PROXIES_JOB: &str = "weft-proxies";

/// A Prometheus configuration scraping weftd at `weftd` (its debug address, `host:port`) and the
/// proxies it lists, every `interval`.
pub fn prometheus_config(weftd: &str, interval: Duration) -> anyhow::Result<String> {
    check_address(weftd)?;
    let every = prometheus_duration(interval)?;
    Ok(format!(
        "\
# Prometheus configuration for a Weft mesh in directory mode, printed by `weft install prometheus`.
# weftd's debug address: {weftd}. Check it with `promtool check config <file>`.
global:
  scrape_interval: {every}
  evaluation_interval: {every}
scrape_configs:
  # weftd's own metrics: pilot_* (pushes, rejects, convergence, connected proxies), the model's size
  # and process_* (the control-plane dashboard).
  - job_name: {WEFTD_JOB}
    metrics_path: /metrics
    static_configs:
      - targets: ['{weftd}']
        labels:
          app: {WEFTD_JOB}
  # Each connected proxy's Istio standard metrics (istio_requests_total, ...) on its stats port.
  # weftd lists the proxies that advertise one, with their namespace, workload, app and version, and
  # the path to scrape (__metrics_path__).
  - job_name: {PROXIES_JOB}
    http_sd_configs:
      - url: 'http://{weftd}/debug/prometheus_sd'
        refresh_interval: {every}
"
    ))
}

/// weftd's address must be `host:port`: it is written into YAML and a URL as it is.
fn check_address(addr: &str) -> anyhow::Result<()> {
    let (host, port) = addr
        .rsplit_once(':')
        .with_context(|| format!("weftd's address {addr:?} is not host:port"))?;
    port.parse::<u16>()
        .with_context(|| format!("weftd's address {addr:?} has no port number"))?;
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    if !host_ok {
        bail!("weftd's address {addr:?} is not host:port");
    }
    Ok(())
}

/// A duration as Prometheus writes it: whole seconds (`15s`) or milliseconds (`500ms`).
fn prometheus_duration(d: Duration) -> anyhow::Result<String> {
    if d.as_millis() == 0 || !d.subsec_nanos().is_multiple_of(1_000_000) {
        bail!("a scrape interval must be a whole number of milliseconds, at least 1ms (got {d:?})");
    }
    Ok(if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_scrapes_weftd_and_the_proxies_it_lists() {
        let c = prometheus_config("127.0.0.1:15014", Duration::from_secs(15)).expect("config");
        for want in [
            "scrape_interval: 15s\n",
            "  - job_name: weftd\n    metrics_path: /metrics\n",
            "      - targets: ['127.0.0.1:15014']\n        labels:\n          app: weftd\n",
            "  - job_name: weft-proxies\n",
            "      - url: 'http://127.0.0.1:15014/debug/prometheus_sd'\n        refresh_interval: 15s\n",
        ] {
            assert!(c.contains(want), "{want:?} in:\n{c}");
        }
    }

    #[test]
    fn durations_are_written_as_prometheus_reads_them() {
        for (d, want) in [
            (Duration::from_secs(15), Ok("15s")),
            (Duration::from_secs(90), Ok("90s")),
            (Duration::from_millis(500), Ok("500ms")),
            (Duration::from_millis(1500), Ok("1500ms")),
            (Duration::ZERO, Err(())),
            (Duration::from_micros(1500), Err(())),
        ] {
            let got = prometheus_duration(d);
            match want {
                Ok(w) => assert_eq!(got.expect("valid").as_str(), w, "{d:?}"),
                Err(()) => assert!(got.is_err(), "{d:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn a_bad_weftd_address_is_refused_naming_it() {
        for bad in [
            "weftd",
            "127.0.0.1:",
            "127.0.0.1:x",
            ":15014",
            "a b:1",
            "x':1",
        ] {
            let e = prometheus_config(bad, Duration::from_secs(1))
                .expect_err(bad)
                .to_string();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
        for good in ["localhost:15014", "[::1]:15014", "weftd.istio-system:15014"] {
            prometheus_config(good, Duration::from_secs(1)).expect(good);
        }
    }

    /// What Prometheus itself accepts, when its `promtool` is installed (`scripts/prometheus` installs
    /// Debian's prometheus package, which carries it; the end-to-end test runs the config for real).
    #[test]
    fn promtool_accepts_the_config() {
        let Ok(out) = std::process::Command::new("promtool")
            .arg("--version")
            .output()
        else {
            eprintln!("promtool is not installed (scripts/prometheus installs it): not checked");
            return;
        };
        assert!(out.status.success(), "promtool --version");
        let dir = std::env::temp_dir().join(format!("weft-promtool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for (addr, every) in [
            ("127.0.0.1:15014", Duration::from_secs(15)),
            ("[::1]:15014", Duration::from_millis(500)),
        ] {
            let file = dir.join("prometheus.yml");
            let config = prometheus_config(addr, every).expect("config");
            std::fs::write(&file, &config).expect("write");
            let out = std::process::Command::new("promtool")
                .args(["check", "config"])
                .arg(&file)
                .output()
                .expect("promtool runs");
            assert!(
                out.status.success(),
                "promtool refused:\n{config}\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
