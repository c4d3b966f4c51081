//! The end-to-end harness: a whole mesh (weftd, Bookinfo, sidecars) on its own loopback addresses, a
//! client that reads which reviews version served a page, and the `weft` command.

pub mod grafana;
pub mod prometheus;

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};
use weft_cli::demo::{self, Layout, Processes};

/// Polls `check` with a growing delay until it returns `Ok`, or fails once `deadline` has passed, naming
/// `what` and the last error (what the check saw, for the failure message). The end-to-end tests' one
/// polling helper: every wait for the mesh to reach a state goes through it.
pub async fn eventually<T, F, Fut>(
    what: &str,
    deadline: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    let mut delay = Duration::from_millis(10);
    let mut last = "no check finished".to_string();
    loop {
        // A check that hangs counts against the deadline too (it is cut off there).
        match tokio::time::timeout_at(until, check()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => last = format!("{e:#}"),
            Err(_) => {}
        }
        if tokio::time::Instant::now() >= until {
            bail!("{what}: not within {deadline:?}; last seen: {last}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Where the release binaries are.
pub fn bin_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    target.join("release")
}

/// A Bookinfo sample file.
pub fn sample(rel: &str) -> PathBuf {
    workspace().join("samples/bookinfo").join(rel)
}

/// A running mesh, stopped on drop.
pub struct Mesh {
    /// Addresses and commands.
    pub layout: Layout,
    /// Its processes.
    pub procs: Processes,
    /// Where the processes log.
    pub log_dir: PathBuf,
}

impl Mesh {
    /// Starts a mesh on `127.<net>.1.x` with weftd on `127.<net>.0.1`.
    pub async fn start(net: u8) -> anyhow::Result<Mesh> {
        let root = std::env::temp_dir().join(format!("weft-e2e-{}-{net}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let layout = Layout {
            subnet: format!("127.{net}.1"),
            weftd_ip: format!("127.{net}.0.1"),
            bin_dir: bin_dir(),
            config_dir: root.join("config"),
        };
        layout.write_registry()?;
        let log_dir = root.join("logs");
        let mut procs = Processes::default();
        if let Err(e) = demo::start(&layout, &log_dir, &mut procs).await {
            procs.stop_all().await;
            bail!("{e:#}\n{}", dump_logs(&log_dir));
        }
        Ok(Mesh {
            layout,
            procs,
            log_dir,
        })
    }

    /// `GET /productpage` as `user` (or anonymous); returns the page.
    pub async fn productpage(&self, user: Option<&str>) -> anyhow::Result<(u16, String)> {
        let path = match user {
            Some(u) => format!("/productpage?u={u}"),
            None => "/productpage".to_string(),
        };
        weft_cli::http::get(&self.layout.productpage_address(), &path).await
    }

    /// Which reviews workload served the page (`reviews-v2`), if the page says.
    pub async fn reviews_version(&self, user: Option<&str>) -> anyhow::Result<String> {
        let (status, page) = self.productpage(user).await?;
        if status != 200 {
            bail!("productpage answered {status}");
        }
        reviews_version_of(&page).with_context(|| format!("page names no reviews version:\n{page}"))
    }

    /// Runs `weft` against this mesh's weftd.
    pub fn weft(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(bin_dir().join("weft"));
        cmd.arg("--weftd")
            .arg(self.layout.debug_address())
            .args(args);
        cmd.output().expect("weft runs")
    }

    /// `weft apply -f <sample>`, panicking with its output on failure.
    pub fn apply(&self, sample_path: &str) {
        let p = sample(sample_path);
        let out = self.weft(&["apply", "-f", p.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "apply {sample_path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `weft delete -f <sample>`.
    pub fn delete(&self, sample_path: &str) {
        let p = sample(sample_path);
        let out = self.weft(&["delete", "-f", p.to_str().expect("utf-8 path")]);
        assert!(
            out.status.success(),
            "delete {sample_path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Polls until 10 consecutive pages come from reviews versions in `allowed`; returns how long that
    /// took (for the log, never for an assertion).
    pub async fn converge(
        &self,
        user: Option<&str>,
        allowed: &[&str],
        deadline: Duration,
    ) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let what = format!("10 pages in a row from {allowed:?}");
        eventually(&what, deadline, || async {
            for _ in 0..10 {
                let v = self.reviews_version(user).await?;
                if !allowed.contains(&v.as_str()) {
                    bail!("a page from {v}");
                }
            }
            Ok(())
        })
        .await?;
        Ok(start.elapsed())
    }

    /// weftd's proxy status (JSON list).
    pub async fn syncz(&self) -> anyhow::Result<serde_json::Value> {
        weft_cli::http::get_json(&self.layout.debug_address(), "/debug/syncz").await
    }

    /// weftd's proxy status of the six sidecars only (the ingress gateway left out: its routes come
    /// from Gateways, and it has none until `bookinfo-gateway.yaml` is applied).
    pub async fn sidecars_syncz(&self) -> anyhow::Result<serde_json::Value> {
        let v = self.syncz().await?;
        let sidecars = v
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["node_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("sidecar~"))
            })
            .cloned()
            .collect();
        Ok(serde_json::Value::Array(sidecars))
    }

    /// Waits until all six sidecars are connected and every type is SYNCED.
    pub async fn all_synced(&self, deadline: Duration) -> anyhow::Result<()> {
        eventually("every proxy SYNCED", deadline, || async {
            let v = self.sidecars_syncz().await?;
            let proxies = v.as_array().cloned().unwrap_or_default();
            let synced = proxies.len() == demo::WORKLOADS.len()
                && proxies.iter().all(|p| {
                    ["CDS", "LDS", "EDS", "RDS"]
                        .iter()
                        .all(|t| p["types"][t]["status"] == "SYNCED")
                });
            if !synced {
                bail!("{v}");
            }
            Ok(())
        })
        .await
    }

    /// Each connected proxy's last sent nonce of xDS type `t` (`LDS`, `RDS`, ...), by node id: what
    /// [`Mesh::pushed`] compares against after a change.
    pub async fn sent_nonces(&self, t: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let v = self.sidecars_syncz().await?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                let id = p["node_id"].as_str().unwrap_or_default().to_string();
                let nonce = p["types"][t]["sent_nonce"].as_str().unwrap_or_default();
                (id, nonce.to_string())
            })
            .collect())
    }

    /// Waits until weftd has sent every one of the six sidecars a new response of type `t` since
    /// `before` (from [`Mesh::sent_nonces`]) and each has acknowledged it: a change to the config
    /// directory is in force in every proxy, with no traffic sent to find out.
    pub async fn pushed(
        &self,
        t: &str,
        before: &BTreeMap<String, String>,
        deadline: Duration,
    ) -> anyhow::Result<()> {
        let what = format!("a new {t} acknowledged by every proxy");
        eventually(&what, deadline, || async {
            let v = self.sidecars_syncz().await?;
            let proxies = v.as_array().cloned().unwrap_or_default();
            let done = proxies.len() == demo::WORKLOADS.len()
                && proxies.iter().all(|p| {
                    let s = &p["types"][t];
                    let id = p["node_id"].as_str().unwrap_or_default();
                    s["status"] == "SYNCED"
                        && before.get(id).map(String::as_str) != s["sent_nonce"].as_str()
                });
            if !done {
                bail!("{v}");
            }
            Ok(())
        })
        .await
    }

    /// Writes `yaml` as `name` into the config directory weftd watches (through a hidden temporary
    /// file and a rename, so weftd never reads half a file); `mesh.yaml` replaces the MeshConfig.
    pub fn write_config(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let path = self.layout.config_dir.join(name);
        let tmp = self.layout.config_dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The logs of every process, for failure messages.
    pub fn logs(&self) -> String {
        dump_logs(&self.log_dir)
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        // Processes are killed on drop (kill_on_drop); the directories go with them.
        if let Some(root) = self.log_dir.parent() {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

/// `reviews-v2` from a page that says "Reviews served by: reviews-v2".
pub fn reviews_version_of(page: &str) -> Option<String> {
    let i = page.find("reviews-v")?;
    let v: String = page[i..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    Some(v)
}

/// The tail of every log file in `dir`.
pub fn dump_logs(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        out.push_str(&format!("==> {} <==\n", p.display()));
        for l in tail.into_iter().rev() {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// One HTTP/1.1 request written byte for byte on a new connection to `addr` (a sidecar's outbound port
/// with an absolute-form `target`, or any server with an origin-form one), with `headers` and
/// `connection: close`: the status and body, or an error when the connection fails, closes without a
/// status, or gives no answer in 5 s.
pub async fn raw_http1(
    addr: &str,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let go = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req =
            format!("{method} {target} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        let text = String::from_utf8_lossy(&buf);
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse::<u16>().ok())
            .with_context(|| format!("no status in {text:?}"))?;
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), go)
        .await
        .context("no answer in 5 s")?
}
