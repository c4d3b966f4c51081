//! A real Prometheus for the tests, started by `scripts/prometheus` (which installs Debian's package
//! when it is missing), and the helper that runs every query of a dashboard against a Prometheus and
//! says which came back empty.

use crate::grafana::{self, Dashboard, Query};
use anyhow::{bail, Context};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// A Prometheus on loopback, killed (and its directory removed) on drop.
pub struct Prometheus {
    /// Its address, `ip:port`.
    pub addr: String,
    /// Its config file, storage and log.
    pub dir: PathBuf,
    _child: tokio::process::Child,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML) on `ip`, a port the script picks, and a new storage
    /// directory; returns once it answers `/-/ready`.
    pub async fn start(ip: &str, config: &str) -> anyhow::Result<Prometheus> {
        let dir = std::env::temp_dir().join(format!("weft-prometheus-{}-{ip}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).context("creating Prometheus's directory")?;
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).context("writing Prometheus's config")?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let mut child = tokio::process::Command::new(crate::workspace().join("scripts/prometheus"))
            .arg("--config")
            .arg(&config_file)
            .arg("--storage")
            .arg(dir.join("data"))
            .arg("--listen")
            .arg(ip)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot run scripts/prometheus")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let log = || std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default();
        // The script installs the package if it must (a minute at most, usually), then says where
        // Prometheus listens and becomes it.
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(300), lines.next_line())
            .await
            .with_context(|| format!("scripts/prometheus said nothing\n{}", log()))?
            .context("reading scripts/prometheus")?
            .with_context(|| format!("scripts/prometheus failed\n{}", log()))?;
        let addr = first
            .strip_prefix("prometheus listening on http://")
            .with_context(|| format!("scripts/prometheus said {first:?}\n{}", log()))?
            .to_string();
        let p = Prometheus {
            addr,
            dir,
            _child: child,
        };
        crate::eventually("Prometheus ready", Duration::from_secs(30), || async {
            let (status, body) = weft_cli::http::get(&p.addr, "/-/ready").await?;
            if status != 200 {
                bail!("{status} {body}");
            }
            Ok(())
        })
        .await
        .with_context(|| p.log())?;
        Ok(p)
    }

    /// Prometheus's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns its result (the series, or a scalar's value as one element).
    pub async fn query(&self, promql: &str) -> anyhow::Result<Vec<Value>> {
        query(&self.addr, promql).await
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // The process is killed on drop (kill_on_drop); its directory goes with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An instant query against the Prometheus at `addr` (`host:port`), failing with Prometheus's own
/// message when it refuses the query.
pub async fn query(addr: &str, promql: &str) -> anyhow::Result<Vec<Value>> {
    let path = format!("/api/v1/query?query={}", percent_encode(promql));
    let (status, body) = weft_cli::http::get(addr, &path).await?;
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("Prometheus answered {status}, not JSON: {body}"))?;
    if v["status"] != "success" {
        bail!(
            "{}: {}",
            v["errorType"].as_str().unwrap_or("error"),
            v["error"].as_str().unwrap_or(&body)
        );
    }
    let result = &v["data"]["result"];
    Ok(match v["data"]["resultType"].as_str() {
        Some("scalar") | Some("string") => vec![result.clone()],
        _ => result.as_array().cloned().unwrap_or_default(),
    })
}

/// Everything but RFC 3986's unreserved characters, percent-encoded.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// What running a dashboard's queries found.
#[derive(Debug, Default)]
pub struct Report {
    /// The dashboard's title.
    pub dashboard: String,
    /// Queries that returned at least one series.
    pub with_data: Vec<Query>,
    /// Queries that returned nothing.
    pub empty: Vec<Query>,
    /// Queries Prometheus refused, with its reason (bad PromQL), or a variable without a value.
    pub failed: Vec<(Query, String)>,
}

impl Report {
    /// Every query returned data.
    pub fn all_have_data(&self) -> bool {
        self.empty.is_empty() && self.failed.is_empty()
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} queries with data, {} empty, {} failed",
            self.dashboard,
            self.with_data.len(),
            self.empty.len(),
            self.failed.len()
        )?;
        for q in &self.empty {
            writeln!(f, "  empty: {q}")?;
        }
        for (q, e) in &self.failed {
            writeln!(f, "  failed: {q}\n    {e}")?;
        }
        Ok(())
    }
}

/// Runs every query of `dashboard` (see [`Dashboard::queries`]) against the Prometheus at `addr`,
/// its variables set from `vars` (usually [`Dashboard::default_values`]).
pub async fn run_dashboard(
    addr: &str,
    dashboard: &Dashboard,
    vars: &BTreeMap<String, String>,
) -> Report {
    let mut report = Report {
        dashboard: dashboard.title().to_string(),
        ..Default::default()
    };
    for q in dashboard.queries() {
        let result = match grafana::expand(&q.expr, vars) {
            Ok(promql) => query(addr, &promql).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(r) if r.is_empty() => report.empty.push(q),
            Ok(_) => report.with_data.push(q),
            Err(e) => report.failed.push((q, format!("{e:#}"))),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::percent_encode("sum(rate(x{a=~\"b.*\"}[1m])) / 2"),
            "sum%28rate%28x%7Ba%3D~%22b.%2A%22%7D%5B1m%5D%29%29%20%2F%202"
        );
    }
}
