//! `weft demo`: weftd, the six Bookinfo workloads and a weft-proxy beside each, and an ingress gateway
//! (`weft-proxy --gateway`, labelled `istio: ingressgateway` as Istio's is), on loopback.
//!
//! Each workload gets its own address in 127.0.0.0/8 (Linux routes the whole block to `lo`), so every
//! service keeps Bookinfo's port 9080 as it would in a pod: the sidecar listens on `<ip>:9080` (inbound),
//! `<ip>:15001` (the app's `http_proxy`) and `<ip>:15000` (admin); the app listens on `<ip>:19080`.
//! The same [`Layout`] is used by the end-to-end tests, so they start exactly what users start.
//!
//! Mutual TLS is on, as Istio installs it: weftd runs its CA (state in `<config-dir>/.weftd`), each
//! sidecar gets a token for its workload's service account and obtains its certificate from the CA,
//! and the WorkloadEntries say each workload has a sidecar (`security.istio.io/tlsMode: istio`), so
//! sidecars speak mTLS to each other (auto mTLS) and accept both mTLS and plaintext (PERMISSIVE).

use crate::http::get;
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The registry file of the demo (ServiceEntries and WorkloadEntries on 127.0.1.x).
pub const BOOKINFO_REGISTRY: &str =
    include_str!("../../../samples/bookinfo/platform/local/bookinfo.yaml");
/// The subnet the registry file is written for.
pub const DEFAULT_SUBNET: &str = "127.0.1";
/// The namespace of the demo's workloads.
pub const NAMESPACE: &str = "default";
/// The label that says a workload has a sidecar, which the demo's workloads carry as Istio's injector
/// puts it on pods.
pub const TLS_MODE_LABEL: &str = "security.istio.io/tlsMode=istio";
/// weftd's TLS port: the CA and xDS (Istio's 15012).
pub const SECURE_PORT: u16 = 15012;
/// Where the application listens on its workload address.
pub const APP_PORT: u16 = 19080;
/// The service port.
pub const SERVICE_PORT: u16 = 9080;

/// One Bookinfo workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Service name.
    pub service: &'static str,
    /// Version label.
    pub version: &'static str,
    /// Last octet of its address.
    pub host: u8,
}

impl Workload {
    /// `reviews-v2`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.service, self.version)
    }

    /// Its service account, as Istio's bookinfo.yaml names them (`bookinfo-reviews`).
    pub fn service_account(&self) -> String {
        format!("bookinfo-{}", self.service)
    }
}

/// Bookinfo's workloads, with the addresses `samples/bookinfo/platform/local/bookinfo.yaml` records.
pub const WORKLOADS: [Workload; 6] = [
    Workload {
        service: "productpage",
        version: "v1",
        host: 10,
    },
    Workload {
        service: "details",
        version: "v1",
        host: 11,
    },
    Workload {
        service: "reviews",
        version: "v1",
        host: 12,
    },
    Workload {
        service: "reviews",
        version: "v2",
        host: 13,
    },
    Workload {
        service: "reviews",
        version: "v3",
        host: 14,
    },
    Workload {
        service: "ratings",
        version: "v1",
        host: 15,
    },
];

/// The demo's ingress gateway: Istio's default one, `istio-ingressgateway` in `istio-system` with the
/// labels its Gateways select (`istio: ingressgateway`).
pub const GATEWAY_NAME: &str = "istio-ingressgateway";
/// The gateway's namespace.
pub const GATEWAY_NAMESPACE: &str = "istio-system";
/// The gateway's labels, as Istio's chart puts them on its pods.
pub const GATEWAY_LABELS: &str = "istio=ingressgateway,app=istio-ingressgateway";
/// The gateway's service account.
pub const GATEWAY_SERVICE_ACCOUNT: &str = "istio-ingressgateway-service-account";
/// Last octet of the gateway's address (the workloads have 10 to 15).
pub const GATEWAY_HOST: u8 = 20;
/// The port of the Bookinfo Gateway's HTTP server (`bookinfo-gateway.yaml`: 8080, where Istio's
/// unprivileged gateway containers listen).
pub const GATEWAY_HTTP_PORT: u16 = 8080;

/// Where everything of one demo mesh lives.
#[derive(Debug, Clone)]
pub struct Layout {
    /// First three octets of the workloads' addresses (`127.0.1`).
    pub subnet: String,
    /// weftd's address.
    pub weftd_ip: String,
    /// Directory holding `weftd`, `weft-proxy` and `bookinfo`.
    pub bin_dir: PathBuf,
    /// weftd's config directory.
    pub config_dir: PathBuf,
}

impl Layout {
    /// A workload's address.
    pub fn ip(&self, w: &Workload) -> String {
        format!("{}.{}", self.subnet, w.host)
    }
    /// weftd's xDS address.
    pub fn xds_address(&self) -> String {
        format!("{}:15010", self.weftd_ip)
    }
    /// weftd's TLS port: the CA and xDS.
    pub fn secure_address(&self) -> String {
        format!("{}:{SECURE_PORT}", self.weftd_ip)
    }
    /// weftd's state directory: the CA's root and key, the token key, and the workloads' tokens.
    /// Inside the config directory (removed with it), where the leading dot keeps weftd's reader out.
    pub fn state_dir(&self) -> PathBuf {
        self.config_dir.join(".weftd")
    }
    /// The mesh's root, which weftd's CA generates on its first start and the sidecars trust.
    pub fn root_cert(&self) -> PathBuf {
        self.state_dir().join("root-cert.pem")
    }
    /// Where a workload's CA token is.
    pub fn token_file(&self, w: &Workload) -> PathBuf {
        self.state_dir()
            .join("tokens")
            .join(format!("{}.token", w.name()))
    }
    /// Writes each workload's token for weftd's CA (what `weftd token` prints), made with the state
    /// directory's token key (created if missing, so before weftd's first start). Readable by the
    /// owner only: a token obtains that workload's certificates.
    pub fn write_tokens(&self) -> anyhow::Result<()> {
        use weft_control::ca::token::{token_command, TokenArgs, DEFAULT_TOKEN_TTL};
        let ttl = weft_api::Duration::parse(DEFAULT_TOKEN_TTL)
            .map_err(|e| anyhow::anyhow!("token lifetime {DEFAULT_TOKEN_TTL}: {e}"))?
            .get();
        let gateway = (
            GATEWAY_NAME.to_string(),
            GATEWAY_NAMESPACE,
            GATEWAY_SERVICE_ACCOUNT.to_string(),
            self.gateway_token_file(),
        );
        let all = WORKLOADS
            .iter()
            .map(|w| (w.name(), NAMESPACE, w.service_account(), self.token_file(w)))
            .chain([gateway]);
        for (name, namespace, service_account, path) in all {
            let token = token_command(&TokenArgs {
                state_dir: self.state_dir(),
                namespace: namespace.into(),
                service_account,
                ttl,
            })
            .with_context(|| format!("cannot make the token of {name}"))?;
            write_private(&path, token.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }
    /// The ingress gateway's address.
    pub fn gateway_ip(&self) -> String {
        format!("{}.{GATEWAY_HOST}", self.subnet)
    }
    /// Where the Bookinfo Gateway's HTTP server listens once `bookinfo-gateway.yaml` is applied.
    pub fn gateway_address(&self) -> String {
        format!("{}:{GATEWAY_HTTP_PORT}", self.gateway_ip())
    }
    /// The gateway's admin address.
    pub fn gateway_admin_address(&self) -> String {
        format!("{}:15000", self.gateway_ip())
    }
    /// Where the gateway's CA token is.
    pub fn gateway_token_file(&self) -> PathBuf {
        self.state_dir()
            .join("tokens")
            .join(format!("{GATEWAY_NAME}.token"))
    }
    /// weftd's debug address.
    pub fn debug_address(&self) -> String {
        format!("{}:15014", self.weftd_ip)
    }
    /// weftd's console.
    pub fn console_address(&self) -> String {
        format!(
            "{}:{}",
            self.weftd_ip,
            crate::dashboard::DEFAULT_CONSOLE_PORT
        )
    }
    /// productpage through its sidecar.
    pub fn productpage_address(&self) -> String {
        format!("{}.10:{SERVICE_PORT}", self.subnet)
    }
    /// A workload's sidecar admin address.
    pub fn admin_address(&self, w: &Workload) -> String {
        format!("{}:15000", self.ip(w))
    }

    /// Writes the registry (rewritten for this subnet) into the config directory.
    pub fn write_registry(&self) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.config_dir)
            .with_context(|| format!("cannot create {}", self.config_dir.display()))?;
        let text = BOOKINFO_REGISTRY.replace("127.0.1.", &format!("{}.", self.subnet));
        let path = self.config_dir.join("bookinfo.yaml");
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        let path = self.config_dir.join("mesh.yaml");
        std::fs::write(&path, self.mesh_config())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// The demo's MeshConfig: access logs on each sidecar's stdout (its own log file), and every
    /// request traced (Istio's demo profile samples 100 %) to weftd's own Zipkin collector.
    pub fn mesh_config(&self) -> String {
        format!(
            "# weft demo: Istio's demo profile's telemetry.\n\
             accessLogFile: /dev/stdout\n\
             defaultConfig:\n  \
               tracing:\n    \
                 sampling: 100\n    \
                 zipkin:\n      \
                   address: {}:9411\n",
            self.weftd_ip
        )
    }

    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// The weftd command.
    pub fn weftd(&self) -> Command {
        let mut c = Command::new(self.bin("weftd"));
        c.arg("--config-dir")
            .arg(&self.config_dir)
            .arg("--xds-address")
            .arg(self.xds_address())
            .arg("--debug-address")
            .arg(self.debug_address())
            .arg("--console-address")
            .arg(self.console_address())
            // The CA (and xDS over TLS) on the TLS port, its root and keys in the state directory.
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--secure-address")
            .arg(self.secure_address())
            // One machine's six proxies: scraping them every 5 s costs nothing and keeps the console
            // lively (Istio's 15 s elsewhere).
            .arg("--scrape-interval")
            .arg("5s");
        c
    }

    /// The application command for a workload.
    pub fn app(&self, w: &Workload) -> Command {
        let ip = self.ip(w);
        let mut c = Command::new(self.bin("bookinfo"));
        c.arg("--service")
            .arg(w.service)
            .arg("--version")
            .arg(w.version)
            .arg("--listen")
            .arg(format!("{ip}:{APP_PORT}"))
            .env("http_proxy", format!("http://{ip}:15001"));
        c
    }

    /// The sidecar command for a workload.
    pub fn proxy(&self, w: &Workload) -> Command {
        let mut c = Command::new(self.bin("weft-proxy"));
        // xDS over weftd's TLS port, as Istio's sidecars reach istiod on 15012.
        c.arg("--xds-address")
            .arg(format!("https://{}", self.secure_address()))
            .arg("--workload")
            .arg(w.name())
            .arg("--namespace")
            .arg(NAMESPACE)
            .arg("--labels")
            .arg(format!(
                "app={},version={},{TLS_MODE_LABEL}",
                w.service, w.version
            ))
            .arg("--service-account")
            .arg(w.service_account())
            .arg("--ip")
            .arg(self.ip(w))
            // Each sidecar's admin port on its own loopback address (what localhost is to a pod).
            .arg("--admin-ip")
            .arg(self.ip(w))
            .arg("--inbound-ports")
            .arg(format!("{SERVICE_PORT}:{APP_PORT}"))
            // Its identity: a certificate from weftd's CA for its service account.
            .arg("--ca-address")
            .arg(self.secure_address())
            .arg("--ca-root-cert")
            .arg(self.root_cert())
            .arg("--ca-token-file")
            .arg(self.token_file(w));
        c
    }

    /// The ingress gateway command: a proxy with no application, labelled as Istio's, with its own
    /// address (its Gateway servers' ports are bound there) and a certificate from weftd's CA, so it
    /// speaks mutual TLS to the sidecars as Istio's gateway does.
    pub fn gateway(&self) -> Command {
        let ip = self.gateway_ip();
        let mut c = Command::new(self.bin("weft-proxy"));
        c.arg("--gateway")
            .arg("--xds-address")
            .arg(format!("https://{}", self.secure_address()))
            .arg("--workload")
            .arg(GATEWAY_NAME)
            .arg("--namespace")
            .arg(GATEWAY_NAMESPACE)
            .arg("--labels")
            .arg(GATEWAY_LABELS)
            .arg("--service-account")
            .arg(GATEWAY_SERVICE_ACCOUNT)
            .arg("--ip")
            .arg(&ip)
            .arg("--admin-ip")
            .arg(&ip)
            .arg("--ca-address")
            .arg(self.secure_address())
            .arg("--ca-root-cert")
            .arg(self.root_cert())
            .arg("--ca-token-file")
            .arg(self.gateway_token_file());
        c
    }

    /// Builds the binaries missing from `bin_dir` with `cargo` (the one running `cargo run`), in the
    /// release profile this workspace's `weft` was built in.
    pub async fn build_missing(&self, cargo: &Path) -> anyhow::Result<()> {
        let missing: Vec<&str> = ["weftd", "weft-proxy", "bookinfo"]
            .into_iter()
            .filter(|b| !self.bin(b).exists())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
        println!(
            "building {} (cargo build --release --bins -p weft-control -p weft-proxy -p weft-bookinfo)",
            missing.join(", ")
        );
        let status = tokio::process::Command::new(cargo)
            .args(["build", "--release", "--bins", "--manifest-path"])
            .arg(&manifest)
            .args([
                "-p",
                "weft-control",
                "-p",
                "weft-proxy",
                "-p",
                "weft-bookinfo",
            ])
            .status()
            .await
            .with_context(|| format!("cannot run {}", cargo.display()))?;
        if !status.success() {
            bail!("building {} failed ({status})", missing.join(", "));
        }
        Ok(())
    }

    /// Checks that the three binaries exist.
    pub fn check_binaries(&self) -> anyhow::Result<()> {
        for b in ["weftd", "weft-proxy", "bookinfo"] {
            if !self.bin(b).exists() {
                bail!(
                    "{} not found: build everything first with `cargo build --release --workspace --bins`",
                    self.bin(b).display()
                );
            }
        }
        Ok(())
    }
}

/// Writes `bytes` to a new file at `path` (and its directory), readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    std::io::Write::write_all(&mut o.open(path)?, bytes)
}

/// Polls a TCP connect to `addr` until it succeeds or `deadline` passes.
pub async fn wait_listening(addr: &str, deadline: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() > deadline => {
                return Err(anyhow::Error::new(e)
                    .context(format!("{addr} not listening after {deadline:?}")))
            }
            Err(_) => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Polls `GET http://addr/path` until it answers 200 or `deadline` passes.
pub async fn wait_ok(addr: &str, path: &str, deadline: Duration) -> anyhow::Result<String> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        match get(addr, path).await {
            Ok((200, body)) => return Ok(body),
            Ok((s, _)) if start.elapsed() > deadline => {
                bail!("{addr}{path} still answers {s} after {deadline:?}")
            }
            Err(e) if start.elapsed() > deadline => {
                return Err(e.context(format!("{addr}{path} not ready after {deadline:?}")))
            }
            _ => {}
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
}

/// Processes a demo started, stopped together.
#[derive(Default)]
pub struct Processes {
    children: Vec<(String, Child)>,
}

impl Processes {
    /// Starts `cmd` with its output in `log_dir/<name>.log`.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log_dir: &Path) -> anyhow::Result<()> {
        let log = std::fs::File::create(log_dir.join(format!("{name}.log")))
            .with_context(|| format!("cannot create log for {name}"))?;
        let err = log.try_clone().context("cannot duplicate log handle")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        self.children.push((name.to_string(), child));
        Ok(())
    }

    /// Kills one process by name and waits for it.
    pub async fn kill(&mut self, name: &str) {
        if let Some(i) = self.children.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.children.remove(i);
            let _ = c.kill().await;
        }
    }

    /// Names of processes that exited.
    pub fn exited(&mut self) -> Vec<String> {
        self.children
            .iter_mut()
            .filter_map(|(n, c)| matches!(c.try_wait(), Ok(Some(_))).then(|| n.clone()))
            .collect()
    }

    /// Stops everything and waits for each to exit.
    pub async fn stop_all(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.start_kill();
        }
        for (_, c) in &mut self.children {
            let _ = c.wait().await;
        }
        self.children.clear();
    }
}

/// Starts weftd, every app and every sidecar, and the ingress gateway, and waits until productpage
/// answers through its sidecar.
pub async fn start(layout: &Layout, log_dir: &Path, procs: &mut Processes) -> anyhow::Result<()> {
    layout.check_binaries()?;
    std::fs::create_dir_all(log_dir)
        .with_context(|| format!("cannot create {}", log_dir.display()))?;
    layout.write_tokens()?;
    procs.spawn("weftd", layout.weftd(), log_dir)?;
    wait_ok(&layout.debug_address(), "/ready", Duration::from_secs(15)).await?;
    // The CA's port opens once its root is on disk, where the sidecars read it.
    wait_listening(&layout.secure_address(), Duration::from_secs(15)).await?;
    for w in &WORKLOADS {
        procs.spawn(&w.name(), layout.app(w), log_dir)?;
        procs.spawn(&format!("{}-proxy", w.name()), layout.proxy(w), log_dir)?;
    }
    procs.spawn(GATEWAY_NAME, layout.gateway(), log_dir)?;
    for w in &WORKLOADS {
        wait_ok(&layout.admin_address(w), "/ready", Duration::from_secs(20)).await?;
    }
    wait_ok(
        &layout.gateway_admin_address(),
        "/ready",
        Duration::from_secs(20),
    )
    .await?;
    wait_ok(
        &layout.productpage_address(),
        "/productpage",
        Duration::from_secs(20),
    )
    .await?;
    Ok(())
}

/// `weft demo`: runs until SIGINT or SIGTERM.
pub async fn run(layout: Layout, keep_config: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    layout.write_registry()?;
    let log_dir = layout.config_dir.with_extension("logs");
    let mut procs = Processes::default();
    if let Err(e) = start(&layout, &log_dir, &mut procs).await {
        procs.stop_all().await;
        return Err(e.context(format!("demo did not start; logs in {}", log_dir.display())));
    }
    let took = started.elapsed();
    println!(
        "Weft demo is up ({:.1} s to the first productpage answer).",
        took.as_secs_f64()
    );
    println!();
    println!(
        "  productpage:   http://{}/productpage",
        layout.productpage_address()
    );
    println!(
        "  gateway:       http://{}/productpage  (once bookinfo-gateway.yaml is applied)",
        layout.gateway_address()
    );
    println!(
        "  weftd:         xDS {}  debug http://{}/debug/syncz",
        layout.xds_address(),
        layout.debug_address()
    );
    println!(
        "  console:       http://{}/  (weft dashboard)",
        layout.console_address()
    );
    println!(
        "  mTLS:          between every sidecar (PERMISSIVE); CA and xDS over TLS {}, root {}",
        layout.secure_address(),
        layout.root_cert().display()
    );
    println!("  config dir:    {}", layout.config_dir.display());
    println!("  logs:          {}", log_dir.display());
    println!();
    println!("Try:");
    println!("  weft proxy-status");
    println!("  weft apply -f samples/bookinfo/networking/bookinfo-gateway.yaml");
    println!("  curl http://{}/productpage", layout.gateway_address());
    println!("  weft apply -f samples/bookinfo/networking/destination-rule-all.yaml");
    println!("  weft apply -f samples/bookinfo/networking/virtual-service-all-v1.yaml");
    println!("  weft proxy-config routes productpage-v1");
    println!("  weft proxy-config secret productpage-v1");
    println!();
    println!("Ctrl-C stops everything.");
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let stop = crate::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = check.tick() => {
                for name in procs.exited() {
                    eprintln!("warning: {name} exited; see {}/{name}.log", log_dir.display());
                    procs.kill(&name).await;
                }
            }
        }
    }
    println!("stopping");
    procs.stop_all().await;
    if !keep_config {
        let _ = std::fs::remove_dir_all(&layout.config_dir);
        let _ = std::fs::remove_dir_all(&log_dir);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_matches_the_layout() {
        for w in &WORKLOADS {
            let addr = format!("address: {DEFAULT_SUBNET}.{}", w.host);
            assert!(
                BOOKINFO_REGISTRY.contains(&addr),
                "bookinfo.yaml lacks {addr} for {}",
                w.name()
            );
        }
        let p = weft_api::parse_file("bookinfo.yaml", BOOKINFO_REGISTRY);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        assert!(weft_api::analyze(&p.resources)
            .iter()
            .all(|d| !d.is_error()));
        // Each workload has a sidecar and its sidecar's service account, as Istio's bookinfo.yaml
        // and injector give them: what auto mTLS and the certificates' names follow.
        for w in &WORKLOADS {
            let we = p
                .resources
                .iter()
                .find(|r| r.metadata.name == w.name())
                .and_then(|r| r.as_workload_entry())
                .unwrap_or_else(|| panic!("no WorkloadEntry {}", w.name()));
            assert_eq!(
                we.labels
                    .get("security.istio.io/tlsMode")
                    .map(String::as_str),
                Some("istio"),
                "{}",
                w.name()
            );
            assert_eq!(
                we.service_account.as_deref(),
                Some(w.service_account().as_str()),
                "{}",
                w.name()
            );
        }
    }

    #[test]
    fn tokens_name_each_workloads_service_account_and_only_the_owner_reads_them() {
        let dir = std::env::temp_dir().join(format!("weft-demo-tokens-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = Layout {
            subnet: DEFAULT_SUBNET.into(),
            weftd_ip: "127.0.9.1".into(),
            bin_dir: PathBuf::from("/nonexistent"),
            config_dir: dir.join("config"),
        };
        layout.write_tokens().expect("tokens");
        let key = weft_control::ca::token::TokenKey::load_or_create(&layout.state_dir())
            .expect("the key the tokens were made with");
        for w in &WORKLOADS {
            let path = layout.token_file(w);
            let token = std::fs::read_to_string(&path).expect("a token file");
            let id = key
                .verify(&token, std::time::SystemTime::now())
                .expect("a valid token");
            assert_eq!(
                (id.namespace.as_str(), id.service_account.as_str()),
                ("default", w.service_account().as_str())
            );
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{}", path.display());
            }
        }
        let proxy = layout.proxy(&WORKLOADS[2]);
        let args: Vec<String> = proxy
            .as_std()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for want in [
            "--ca-token-file",
            "--ca-root-cert",
            "--ca-address",
            "127.0.9.1:15012",
            "https://127.0.9.1:15012",
            "app=reviews,version=v1,security.istio.io/tlsMode=istio",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} in {args:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(test)]
mod mesh_tests {
    use super::*;

    #[test]
    fn demo_mesh_config_logs_and_traces_everything_to_weftd() {
        let layout = Layout {
            subnet: DEFAULT_SUBNET.into(),
            weftd_ip: "127.0.9.1".into(),
            bin_dir: PathBuf::from("/nonexistent"),
            config_dir: PathBuf::from("/nonexistent"),
        };
        let p = weft_api::parse_file("mesh.yaml", &layout.mesh_config());
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
        let mesh = p.mesh.expect("mesh");
        assert_eq!(mesh.access_log_file.as_deref(), Some("/dev/stdout"));
        let t = mesh.tracing().expect("valid").expect("on");
        assert_eq!(t.sampling, 100.0);
        assert_eq!(
            t.provider,
            weft_api::mesh::TracingProvider::Zipkin {
                address: "127.0.9.1:9411".into()
            }
        );
    }
}
