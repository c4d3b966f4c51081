//! The orchestrator (`weft-bench run`): starts the upstream and every target once, runs each planned
//! (workload, rate) against every target in turn, round after round, measures the proxies from `/proc`
//! while the load generator (a pinned `weft-bench load` process) runs, and writes the results.
//!
//! Targets are interleaved at the finest grain: for each (workload, rate) of a round every target runs once,
//! in an order rotated from round to round, so drift on a shared machine spreads over all of them.

pub mod machine;
pub mod procs;
pub mod targets;
pub mod tls;

use crate::load::{LoadResult, Rate, Workload};
use crate::report::{self, Results, Sample, Unavailable, Unsupported};
use anyhow::{bail, Context};
use procs::{Core, Pinning, Proc, RssSamples};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use targets::Target;

/// `weft-bench run` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// One short round of the main workloads: a smoke test of the harness (CI), not figures to quote.
    #[arg(long)]
    pub quick: bool,
    /// Rounds (every target once per round); at least 3 in full mode.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Where latest.json and latest.md go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// Directory holding weftd and weft-proxy (default: this binary's directory).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// The Pingora peer's binary.
    #[arg(long, default_value = "target/pingora/release/weft-bench-pingora-peer")]
    pub pingora: PathBuf,
    /// Why the Pingora peer is missing, when bench/run could not build it.
    #[arg(long)]
    pub pingora_unavailable: Option<String>,
    /// Only these targets (comma-separated names); `direct` is always run.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<Target>,
    /// Only these workloads (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<Workload>,
    /// Seconds per run, overriding the plan (for trying the harness out).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Keep the generated configs and logs (their directory is printed).
    #[arg(long)]
    pub keep: bool,
}

/// One (workload, rate) of the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Workload.
    pub workload: Workload,
    /// Rate.
    pub rate: Rate,
    /// Length of each run.
    pub duration: Duration,
    /// Connections (h2: connections; see `load::LoadConfig`).
    pub connections: usize,
    /// Streams per h2c connection.
    pub streams: usize,
    /// Slices the run is cut into: each target runs `duration / slices` at a time, the targets rotating
    /// after every slice, and the slices' histograms are merged into the round's figure. The machine's
    /// state drifts over tens of seconds (latency at 1,000 req/s moves by a third between minutes, for
    /// every target alike), so shorter turns put every target through the same states.
    pub slices: usize,
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain<R: std::io::Read + Send + 'static>(
    pipe: Option<R>,
) -> Option<std::thread::JoinHandle<Vec<u8>>> {
    let mut pipe = pipe?;
    Some(std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        out
    }))
}

/// What [`drain`] read (the child has exited, so its pipe has ended).
fn collect(reader: Option<std::thread::JoinHandle<Vec<u8>>>) -> Vec<u8> {
    reader.and_then(|h| h.join().ok()).unwrap_or_default()
}

fn step(workload: Workload, rate: Rate, secs: f64) -> Step {
    let (connections, streams) = match workload {
        // PERFORMANCE.md's wrk runs: 16 connections.
        Workload::Http1KeepAlive | Workload::Http1NewConn | Workload::TcpNewConn => (16, 1),
        // Few connections, many streams: what HTTP/2 is for.
        Workload::Http2Streams | Workload::GrpcUnary => (2, 16),
        Workload::TcpStream => (4, 1),
    };
    Step {
        workload,
        rate,
        duration: Duration::from_secs_f64(secs),
        connections,
        streams,
        slices: 1,
    }
}

/// What each round runs. Full mode: 8 s per run for the headline workload (HTTP/1.1 keep-alive, as in
/// PERFORMANCE.md), shorter runs for the others so that three rounds of every target stay within half an
/// hour. Quick mode: the headline workload at 1,000 req/s and at max, and one run of each other workload.
/// Measured on the 2-core machine: about 8 minutes per round in full mode (1.1 s of overhead per run:
/// starting the load generator, connecting, warming up, draining), so about 25 minutes in all.
pub fn plan(quick: bool) -> Vec<Step> {
    use Workload::*;
    let (r1k, r5k) = (Rate::Fixed(1000), Rate::Fixed(5000));
    if quick {
        let d = 1.5;
        return vec![
            step(Http1KeepAlive, r1k, d),
            step(Http1KeepAlive, Rate::Max, d),
            step(Http2Streams, r1k, d),
            step(GrpcUnary, r1k, d),
            step(TcpStream, Rate::Max, d),
            step(Http1NewConn, r1k, d),
            step(TcpNewConn, Rate::Max, d),
        ];
    }
    // The headline latency (the goals' 1,000 req/s) in four turns of 2 s per target and round.
    let mut p = vec![
        Step {
            slices: 4,
            ..step(Http1KeepAlive, r1k, 8.0)
        },
        step(Http1KeepAlive, r5k, 5.0),
        step(Http1KeepAlive, Rate::Max, 8.0),
    ];
    for w in [Http2Streams, GrpcUnary, Http1NewConn] {
        p.push(step(w, r1k, 4.0));
        p.push(step(w, r5k, 3.0));
        p.push(step(w, Rate::Max, 4.0));
    }
    p.push(step(TcpStream, Rate::Max, 5.0));
    // Handshakes per CPU-second: the two-hop targets only.
    p.push(step(TcpNewConn, Rate::Max, 4.0));
    p
}

/// Set by SIGINT/SIGTERM: stop after cleaning up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn check_interrupt() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// A target that is up: its proxy processes (none for direct).
struct Running {
    target: Target,
    procs: Vec<Proc>,
}

impl Running {
    fn pids(&self) -> Vec<u32> {
        procs::with_descendants(&self.procs.iter().map(Proc::pid).collect::<Vec<_>>())
    }

    fn dead(&mut self) -> Option<String> {
        procs::first_exited(&mut self.procs).map(|why| format!("during the run, {why}"))
    }
}

/// Everything a run started, stopped on drop (targets first, then weftd and the upstream).
struct Lab {
    work: PathBuf,
    pin: Pinning,
    bin_dir: PathBuf,
    self_exe: PathBuf,
    running: Vec<Running>,
    shared: Vec<Proc>,
    unavailable: Vec<Unavailable>,
    nginx_stream: bool,
    notes: Vec<String>,
    /// The TLS peers' certificates, made when the first of them starts.
    tls: Option<tls::Files>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for r in &mut self.running {
            for p in &mut r.procs {
                p.stop();
            }
        }
        for p in &mut self.shared {
            p.stop();
        }
    }
}

/// An error [`eventually`] does not retry.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

/// Polls `check` every few milliseconds (doubling to 200 ms) until it succeeds or `deadline` passes.
fn eventually<T>(
    deadline: Duration,
    mut check: impl FnMut() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        check_interrupt()?;
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if e.is::<Fatal>() => return Err(e),
            Err(e) if start.elapsed() > deadline => {
                return Err(e.context(format!("not ready after {deadline:?}")))
            }
            Err(_) => {}
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// A tiny blocking HTTP/1.0 GET for readiness endpoints.
fn http_get_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status from {addr}{path}"))?;
    Ok(status)
}

fn require_ok(addr: &str, path: &str) -> anyhow::Result<()> {
    match http_get_status(addr, path)? {
        200 => Ok(()),
        s => bail!("{addr}{path} answered {s}"),
    }
}

/// A tiny blocking HTTP/1.0 GET: status and body.
fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("no status from {addr}{path}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Where the token of service account `sa` (namespace `default`) is kept in weftd's state directory.
fn token_path(state: &Path, sa: &str) -> PathBuf {
    state.join("tokens").join(format!("{sa}.token"))
}

/// Writes the token of service account `sa` (namespace `default`) for weftd's CA, with `weftd token`
/// (which makes the state directory's token key when it is missing), readable by the owner only.
fn write_token(weftd: &Path, state: &Path, sa: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let out = std::process::Command::new(weftd)
        .arg("token")
        .arg("--state-dir")
        .arg(state)
        .args(["--namespace", "default", "--service-account", sa])
        .output()
        .with_context(|| format!("cannot run {} token", weftd.display()))?;
    if !out.status.success() {
        bail!(
            "weftd token --service-account {sa} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let path = token_path(state, sa);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(
        &mut f,
        String::from_utf8_lossy(&out.stdout).trim().as_bytes(),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Checks that the hop of `weft-2hop-mtls` really is mutual TLS, once it serves, and says how: both
/// sidecars hold their SPIFFE certificate from weftd's CA (admin `/certs`), the server sidecar refuses a
/// plaintext request (its PeerAuthentication is STRICT, so what it served came over mTLS), and, when the
/// proxy fills it in, its metrics say `connection_security_policy="mutual_tls"` and never `none`.
fn verify_mtls() -> anyhow::Result<String> {
    for (ip, sa) in [
        (targets::WEFT_MTLS_IP, targets::CLIENT_MTLS_APP),
        (targets::WEFT_MTLS_SERVER_IP, targets::MTLS_SERVER_APP),
    ] {
        let admin = format!("{ip}:{}", targets::ADMIN_PORT);
        let spiffe = format!("spiffe://cluster.local/ns/default/sa/{sa}");
        // The certificate may still be on its way from the CA when the sidecar first serves.
        eventually(Duration::from_secs(15), || {
            let (status, body) = http_get(&admin, "/certs")?;
            if status != 200 || !body.contains(&spiffe) {
                bail!("{admin}/certs has no certificate for {spiffe} ({status}): {body}");
            }
            Ok(())
        })?;
    }
    // Metrics before the plaintext probe, which must not be what they count.
    let admin = format!("{}:{}", targets::WEFT_MTLS_SERVER_IP, targets::ADMIN_PORT);
    let (_, metrics) = http_get(&admin, "/stats/prometheus")?;
    let destination_none = metrics.lines().any(|l| {
        l.contains("reporter=\"destination\"") && l.contains("connection_security_policy=\"none\"")
    });
    if destination_none {
        bail!("the server sidecar's metrics report plaintext requests (connection_security_policy=\"none\")");
    }
    let labelled = metrics.contains("connection_security_policy=\"mutual_tls\"");
    let inbound = format!("{}:{}", targets::WEFT_MTLS_SERVER_IP, targets::HTTP_PORT);
    if let Ok((200, _)) = http_get(&inbound, "/") {
        bail!(
            "the server sidecar {inbound} answered a plaintext request: its inbound is not STRICT"
        );
    }
    Ok(format!(
        "mutual TLS checked: both sidecars hold SPIFFE certificates from weftd's CA, the server sidecar \
         (STRICT) refused a plaintext request, {}",
        if labelled {
            "and its metrics say connection_security_policy=\"mutual_tls\""
        } else {
            "and its metrics do not label connection_security_policy yet"
        }
    ))
}

impl Lab {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn spawn(
        &self,
        name: &str,
        core: Core,
        program: &Path,
        args: &[String],
    ) -> anyhow::Result<Proc> {
        let mut cmd = self.pin.command(core, program);
        cmd.args(args);
        Proc::spawn(name, cmd, &self.work.join("logs"))
    }

    /// One request of each workload the target carries must succeed (the first ones may meet a
    /// sidecar that is ready but still receiving its routes). Gives up at once if a process exits.
    fn wait_serving(&self, target: Target, procs: &mut [Proc]) -> anyhow::Result<()> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        for w in [
            Workload::Http1KeepAlive,
            Workload::Http2Streams,
            Workload::GrpcUnary,
            Workload::TcpStream,
            Workload::TcpNewConn,
        ] {
            let Ok((addr, host)) = targets::endpoint(target, w, self.nginx_stream) else {
                continue;
            };
            eventually(Duration::from_secs(30), || {
                if let Some(why) = procs::first_exited(procs) {
                    return Err(Fatal(why).into());
                }
                rt.block_on(crate::load::probe(addr, host.clone(), w))
            })
            .with_context(|| format!("{} does not serve {w}", target.name()))?;
        }
        Ok(())
    }

    fn start_upstream(&mut self) -> anyhow::Result<()> {
        let mut args = vec!["upstream".to_string(), "--kind".into(), "http".into()];
        for a in targets::upstream_http_addrs() {
            args.push("--listen".into());
            args.push(a.to_string());
        }
        let exe = self.self_exe.clone();
        let p = self.spawn("upstream-http", Core::Load, &exe, &args)?;
        self.shared.push(p);
        let mut args = vec!["upstream".to_string(), "--kind".into(), "tcp".into()];
        for a in targets::upstream_tcp_addrs() {
            args.push("--listen".into());
            args.push(a.to_string());
        }
        let p = self.spawn("upstream-tcp", Core::Load, &exe, &args)?;
        self.shared.push(p);
        for a in targets::upstream_http_addrs() {
            eventually(Duration::from_secs(10), || {
                std::net::TcpStream::connect(a)
                    .map(drop)
                    .map_err(Into::into)
            })
            .with_context(|| format!("upstream on {a}"))?;
        }
        for a in targets::upstream_tcp_addrs() {
            eventually(Duration::from_secs(10), || {
                std::net::TcpStream::connect(a)
                    .map(drop)
                    .map_err(Into::into)
            })
            .with_context(|| format!("TCP sink on {a}"))?;
        }
        self.running.push(Running {
            target: Target::Direct,
            procs: Vec::new(),
        });
        let mut shared = std::mem::take(&mut self.shared);
        let r = self.wait_serving(Target::Direct, &mut shared);
        self.shared = shared;
        r
    }

    fn start_weft(&mut self, wanted: &[Target]) -> anyhow::Result<()> {
        for b in ["weftd", "weft-proxy"] {
            if !self.bin(b).exists() {
                bail!(
                    "{} not found (cargo build --release -p weft-control -p weft-proxy)",
                    self.bin(b).display()
                );
            }
        }
        let config = self.work.join("weft-config");
        std::fs::create_dir_all(&config)?;
        std::fs::write(config.join("bench.yaml"), targets::weft_registry())?;
        std::fs::write(
            config.join("extra-services.yaml"),
            targets::extra_services(targets::EXTRA_SERVICES),
        )?;
        let (mesh, bare) = targets::weft_telemetry();
        std::fs::write(config.join("mesh.yaml"), mesh)?;
        std::fs::write(config.join("telemetry.yaml"), bare)?;
        let xds = format!("{}:15010", targets::WEFTD_IP);
        let debug = format!("{}:15014", targets::WEFTD_IP);
        let secure = format!("{}:{}", targets::WEFTD_IP, targets::WEFTD_SECURE_PORT);
        let weftd = self.bin("weftd");
        // weftd's CA: its root, key and token key in the run's state directory; the mTLS sidecars'
        // tokens made with that key before weftd starts (as `weft demo` does).
        let state = self.work.join("weftd-state");
        let mtls = wanted.contains(&Target::Weft2HopMtls);
        if mtls {
            for sa in [targets::CLIENT_MTLS_APP, targets::MTLS_SERVER_APP] {
                write_token(&weftd, &state, sa)?;
            }
        }
        // weftd shares CPU 0 with the load generator: it is not what is measured, and its periodic
        // rescan of the config directory must not land on the proxies' core.
        let p = self.spawn(
            "weftd",
            Core::Load,
            &weftd,
            &[
                "--config-dir".into(),
                config.display().to_string(),
                "--xds-address".into(),
                xds.clone(),
                "--debug-address".into(),
                debug.clone(),
                "--state-dir".into(),
                state.display().to_string(),
                "--secure-address".into(),
                secure.clone(),
            ],
        )?;
        self.shared.push(p);
        eventually(Duration::from_secs(30), || require_ok(&debug, "/ready"))
            .context("weftd /ready")?;
        let proxy = |name: &str, app: &str, ip: &str, inbound: Option<String>| -> Vec<String> {
            // The mTLS pair: an identity from weftd's CA, and the label that says it has a sidecar.
            let mtls = app == targets::CLIENT_MTLS_APP || app == targets::MTLS_SERVER_APP;
            let tls_label = if mtls {
                ",security.istio.io/tlsMode=istio"
            } else {
                ""
            };
            let mut a = vec![
                "--xds-address".to_string(),
                format!("http://{xds}"),
                "--workload".into(),
                name.into(),
                "--namespace".into(),
                "default".into(),
                "--labels".into(),
                format!("app={app},version=v1{tls_label}"),
                "--service-account".into(),
                app.into(),
                "--ip".into(),
                ip.into(),
                "--admin-ip".into(),
                ip.into(),
                "--concurrency".into(),
                "1".into(),
            ];
            if let Some(i) = inbound {
                a.push("--inbound-ports".into());
                a.push(i);
            }
            if mtls {
                a.extend([
                    "--ca-address".into(),
                    secure.clone(),
                    "--ca-root-cert".into(),
                    state.join("root-cert.pem").display().to_string(),
                    "--ca-token-file".into(),
                    token_path(&state, app).display().to_string(),
                ]);
            }
            a
        };
        let inbound = format!(
            "{}:{},{}:{},{}:{}",
            targets::HTTP_PORT,
            targets::APP_HTTP_PORT,
            targets::GRPC_PORT,
            targets::APP_GRPC_PORT,
            targets::TCP_PORT,
            targets::APP_TCP_PORT
        );
        let wp = self.bin("weft-proxy");
        for &t in wanted {
            let (specs, ips): (Vec<(String, Vec<String>)>, Vec<&str>) = match t {
                Target::Weft1Hop => (
                    vec![(
                        "weft-1hop-client".into(),
                        proxy(
                            "bench-client-1hop",
                            targets::CLIENT_1HOP_APP,
                            targets::WEFT_1HOP_IP,
                            None,
                        ),
                    )],
                    vec![targets::WEFT_1HOP_IP],
                ),
                Target::Weft1HopBare => (
                    vec![(
                        "weft-1hop-bare-client".into(),
                        proxy(
                            "bench-client-bare",
                            targets::CLIENT_BARE_APP,
                            targets::WEFT_BARE_IP,
                            None,
                        ),
                    )],
                    vec![targets::WEFT_BARE_IP],
                ),
                Target::Weft2Hop => (
                    vec![
                        (
                            "weft-2hop-client".into(),
                            proxy(
                                "bench-client-2hop",
                                targets::CLIENT_2HOP_APP,
                                targets::WEFT_2HOP_IP,
                                None,
                            ),
                        ),
                        (
                            "weft-2hop-server".into(),
                            proxy(
                                "upstream-mesh",
                                "upstream-mesh",
                                targets::WEFT_SERVER_IP,
                                Some(inbound.clone()),
                            ),
                        ),
                    ],
                    vec![targets::WEFT_2HOP_IP, targets::WEFT_SERVER_IP],
                ),
                Target::Weft2HopMtls => (
                    vec![
                        (
                            "weft-2hop-mtls-client".into(),
                            proxy(
                                "bench-client-2hop-mtls",
                                targets::CLIENT_MTLS_APP,
                                targets::WEFT_MTLS_IP,
                                None,
                            ),
                        ),
                        (
                            "weft-2hop-mtls-server".into(),
                            proxy(
                                targets::MTLS_SERVER_APP,
                                targets::MTLS_SERVER_APP,
                                targets::WEFT_MTLS_SERVER_IP,
                                Some(inbound.clone()),
                            ),
                        ),
                    ],
                    vec![targets::WEFT_MTLS_IP, targets::WEFT_MTLS_SERVER_IP],
                ),
                _ => continue,
            };
            let mut procs = Vec::new();
            let started: anyhow::Result<Option<String>> = (|| {
                for (name, args) in specs {
                    procs.push(self.spawn(&name, Core::Proxy, &wp, &args)?);
                }
                for ip in &ips {
                    let admin = format!("{ip}:{}", targets::ADMIN_PORT);
                    eventually(Duration::from_secs(30), || {
                        if let Some(why) = procs::first_exited(&mut procs) {
                            return Err(Fatal(why).into());
                        }
                        require_ok(&admin, "/ready")
                    })
                    .with_context(|| format!("weft-proxy {admin}/ready"))?;
                }
                self.wait_serving(t, &mut procs)?;
                if t == Target::Weft2HopMtls {
                    let evidence = verify_mtls().context("weft-2hop-mtls is not mutual TLS")?;
                    return Ok(Some(format!("weft-2hop-mtls: {evidence}")));
                }
                Ok(None)
            })();
            match started {
                Ok(note) => {
                    self.notes.extend(note);
                    self.running.push(Running { target: t, procs });
                }
                Err(e) => {
                    let tails: Vec<String> = procs
                        .iter()
                        .map(|p| format!("{}: {}", p.name, p.log_tail()))
                        .collect();
                    self.unavailable.push(Unavailable {
                        target: t.name().into(),
                        reason: format!("{e:#}; logs: {}", tails.join(" | ")),
                    });
                }
            }
        }
        Ok(())
    }

    /// The TLS peers' certificates, made on first use in the work directory.
    fn tls_files(&mut self) -> anyhow::Result<tls::Files> {
        if let Some(f) = &self.tls {
            return Ok(f.clone());
        }
        let f =
            tls::make(&self.work.join("tls")).context("cannot make the TLS peers' certificates")?;
        self.tls = Some(f.clone());
        Ok(f)
    }

    fn start_peer(&mut self, t: Target, pingora: &Path, pingora_missing: Option<&str>) {
        let r: anyhow::Result<Vec<Proc>> = (|| {
            let procs = match t {
                Target::Nginx | Target::Nginx2Hop => {
                    let nginx = which("nginx")
                        .context("nginx is not installed (apt-get install nginx-light)")?;
                    let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
                    let module = module.exists().then_some(module);
                    self.nginx_stream = module.is_some();
                    // The server side of the chain starts first.
                    let confs = if t == Target::Nginx {
                        vec![("nginx", targets::nginx_conf(&self.work, module))]
                    } else {
                        let (client, server) = targets::nginx_2hop_confs(&self.work, module);
                        vec![("nginx-2hop-server", server), ("nginx-2hop-client", client)]
                    };
                    let mut procs = Vec::new();
                    for (name, conf) in confs {
                        let path = self.work.join(format!("{name}.conf"));
                        std::fs::write(&path, conf)?;
                        let error_log = self.work.join(format!("{name}-error.log"));
                        let args = [
                            "-e".into(),
                            error_log.display().to_string(),
                            "-p".into(),
                            self.work.display().to_string(),
                            "-c".into(),
                            path.display().to_string(),
                        ];
                        procs.push(self.spawn(name, Core::Proxy, &nginx, &args)?);
                    }
                    procs
                }
                Target::Nginx2HopTls => {
                    let nginx = which("nginx")
                        .context("nginx is not installed (apt-get install nginx-light)")?;
                    let module = Path::new("/usr/lib/nginx/modules/ngx_stream_module.so");
                    let module = module.exists().then_some(module);
                    self.nginx_stream = module.is_some();
                    let tls = self.tls_files()?;
                    let (client, server) = targets::nginx_tls_confs(&self.work, &tls, module);
                    let mut procs = Vec::new();
                    // The server side of the chain starts first.
                    for (name, conf) in [("nginx-tls-server", server), ("nginx-tls-client", client)]
                    {
                        let path = self.work.join(format!("{name}.conf"));
                        std::fs::write(&path, conf)?;
                        let error_log = self.work.join(format!("{name}-error.log"));
                        let args = [
                            "-e".into(),
                            error_log.display().to_string(),
                            "-p".into(),
                            self.work.display().to_string(),
                            "-c".into(),
                            path.display().to_string(),
                        ];
                        procs.push(self.spawn(name, Core::Proxy, &nginx, &args)?);
                    }
                    procs
                }
                Target::Haproxy2HopTls => {
                    let haproxy = which("haproxy")
                        .context("haproxy is not installed (apt-get install haproxy)")?;
                    let tls = self.tls_files()?;
                    let (client, server) = targets::haproxy_tls_cfgs(&tls);
                    let mut procs = Vec::new();
                    for (name, cfg) in [
                        ("haproxy-tls-server", server),
                        ("haproxy-tls-client", client),
                    ] {
                        let path = self.work.join(format!("{name}.cfg"));
                        std::fs::write(&path, cfg)?;
                        procs.push(self.spawn(
                            name,
                            Core::Proxy,
                            &haproxy,
                            &["-db".into(), "-f".into(), path.display().to_string()],
                        )?);
                    }
                    procs
                }
                Target::Haproxy => {
                    let haproxy = which("haproxy")
                        .context("haproxy is not installed (apt-get install haproxy)")?;
                    let cfg = self.work.join("haproxy.cfg");
                    std::fs::write(&cfg, targets::haproxy_cfg())?;
                    vec![self.spawn(
                        "haproxy",
                        Core::Proxy,
                        &haproxy,
                        &["-db".into(), "-f".into(), cfg.display().to_string()],
                    )?]
                }
                Target::Relay2Hop => {
                    let haproxy = which("haproxy")
                        .context("haproxy is not installed (apt-get install haproxy)")?;
                    // The server side of the chain starts first.
                    let (client, server) = targets::relay_2hop_cfgs();
                    let mut procs = Vec::new();
                    for (name, cfg) in [("relay-server", server), ("relay-client", client)] {
                        let path = self.work.join(format!("{name}.cfg"));
                        std::fs::write(&path, cfg)?;
                        procs.push(self.spawn(
                            name,
                            Core::Proxy,
                            &haproxy,
                            &["-db".into(), "-f".into(), path.display().to_string()],
                        )?);
                    }
                    procs
                }
                Target::Pingora => {
                    if let Some(why) = pingora_missing {
                        bail!("{why}");
                    }
                    if !pingora.exists() {
                        bail!("{} not built (bench/run builds it)", pingora.display());
                    }
                    vec![self.spawn(
                        "pingora",
                        Core::Proxy,
                        pingora,
                        &[
                            format!("{}:{}", targets::PINGORA_IP, targets::HTTP_PORT),
                            format!("{}:{}", targets::UPSTREAM_IP, targets::HTTP_PORT),
                            "1".into(),
                        ],
                    )?]
                }
                _ => return Ok(Vec::new()),
            };
            Ok(procs)
        })();
        let mut procs = match r {
            Ok(p) => p,
            Err(e) => {
                self.unavailable.push(Unavailable {
                    target: t.name().into(),
                    reason: format!("{e:#}"),
                });
                return;
            }
        };
        match self.wait_serving(t, &mut procs) {
            Ok(()) => self.running.push(Running { target: t, procs }),
            Err(e) => {
                let tails: Vec<String> = procs
                    .iter()
                    .map(|p| format!("{}: {}", p.name, p.log_tail()))
                    .collect();
                for p in &mut procs {
                    p.stop();
                }
                self.unavailable.push(Unavailable {
                    target: t.name().into(),
                    reason: format!("{e:#}; logs: {}", tails.join(" | ")),
                });
            }
        }
    }

    /// Runs the load generator once against a running target, measuring its proxies meanwhile.
    fn measure(&mut self, idx: usize, s: &Step, round: usize) -> anyhow::Result<Option<Sample>> {
        let target = self.running[idx].target;
        let Ok((addr, host)) = targets::endpoint_at(target, s.workload, s.rate, self.nginx_stream)
        else {
            return Ok(None);
        };
        let mut args = vec![
            "load".to_string(),
            "--target".into(),
            addr.to_string(),
            "--workload".into(),
            s.workload.name().into(),
            "--rate".into(),
            s.rate.to_string(),
            "--duration".into(),
            format!("{}", s.duration.as_secs_f64()),
            "--connections".into(),
            s.connections.to_string(),
            "--streams".into(),
            s.streams.to_string(),
            "--json".into(),
            "--histogram".into(),
        ];
        if let Some(h) = host {
            args.push("--host".into());
            args.push(h);
        }
        let ticks = procs::clock_ticks();
        let pids = self.running[idx].pids();
        let measured = !pids.is_empty();
        let window = Instant::now();
        let cpu0 = procs::cpu_seconds(&pids, ticks);
        let core0 = self
            .pin
            .enabled
            .then(|| (procs::cpu_times(0), procs::cpu_times(1)));
        let mut cmd = self.pin.command(Core::Load, &self.self_exe);
        cmd.args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(Stdio::null());
        let mut child = cmd.spawn().context("cannot start the load generator")?;
        // Read its output while it runs: a histogram can outgrow the pipe's 64 KiB, and a child blocked
        // on a full pipe never exits.
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        let mut rss = RssSamples::default();
        let limit = Instant::now() + s.duration + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if INTERRUPTED.load(Ordering::Relaxed) || Instant::now() > limit {
                let _ = child.kill();
                let _ = child.wait();
                check_interrupt()?;
                bail!("load generator did not finish in time");
            }
            if measured {
                rss.samples.push(procs::rss_kb(&pids));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let cpu1 = procs::cpu_seconds(&procs::with_descendants(&pids), ticks);
        let core1 = self
            .pin
            .enabled
            .then(|| (procs::cpu_times(0), procs::cpu_times(1)));
        let (foreign_cpu_s, steal_s) = match (core0, core1) {
            (Some((Some(a0), Some(a1))), Some((Some(b0), Some(b1)))) => {
                let busy1 = b1.busy.saturating_sub(a1.busy) as f64 / ticks;
                let steal = (b0.steal.saturating_sub(a0.steal) + b1.steal.saturating_sub(a1.steal))
                    as f64
                    / ticks;
                let proxies = if measured { cpu1 - cpu0 } else { 0.0 };
                (Some((busy1 - proxies).max(0.0)), Some(steal))
            }
            _ => (None, None),
        };
        let (stdout, stderr) = (collect(stdout), collect(stderr));
        let stderr = String::from_utf8_lossy(&stderr);
        if !status.success() {
            bail!("load generator failed ({status}): {stderr}");
        }
        let load: LoadResult = serde_json::from_slice(&stdout).with_context(|| {
            format!(
                "load generator printed {:?}",
                String::from_utf8_lossy(&stdout)
            )
        })?;
        if !stderr.trim().is_empty() {
            eprintln!("  {}", stderr.trim());
        }
        Ok(Some(Sample {
            round,
            target,
            workload: s.workload,
            rate: s.rate,
            load,
            proxy_cpu_s: measured.then_some(cpu1 - cpu0),
            rss_steady_kb: rss.steady(),
            rss_peak_kb: rss.peak(),
            foreign_cpu_s,
            steal_s,
            window_s: window.elapsed().as_secs_f64(),
        }))
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Runs the suite and writes the results; returns the path of latest.md.
pub fn run(args: RunArgs) -> anyhow::Result<PathBuf> {
    let quick = args.quick;
    let rounds = match (args.rounds, quick) {
        (Some(r), _) => r.max(1),
        (None, true) => 1,
        (None, false) => 3,
    };
    if !quick && rounds < 3 {
        eprintln!("warning: {rounds} round(s); PERFORMANCE.md asks for 3 or more in full mode");
    }
    let self_exe = std::env::current_exe().context("cannot find this binary")?;
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => self_exe
            .parent()
            .map(Path::to_path_buf)
            .context("this binary has no directory")?,
    };
    let work = std::env::temp_dir().join(format!("weft-bench-{}", std::process::id()));
    std::fs::create_dir_all(work.join("logs"))
        .with_context(|| format!("cannot create {}", work.display()))?;
    let wanted: Vec<Target> = if args.targets.is_empty() {
        Target::ALL.to_vec()
    } else {
        let mut t = args.targets.clone();
        t.push(Target::Direct);
        t.sort();
        t.dedup();
        t
    };
    let mut steps = plan(quick);
    if !args.workloads.is_empty() {
        steps.retain(|s| args.workloads.contains(&s.workload));
    }
    if let Some(d) = args.duration {
        for s in &mut steps {
            s.duration = Duration::from_secs_f64(d);
        }
    }
    let started = Instant::now();
    let mut lab = Lab {
        work: work.clone(),
        pin: Pinning::detect(),
        bin_dir,
        self_exe,
        running: Vec::new(),
        shared: Vec::new(),
        unavailable: Vec::new(),
        nginx_stream: false,
        notes: Vec::new(),
        tls: None,
    };
    if !lab.pin.enabled {
        lab.notes.push("not pinned (taskset missing or fewer than 2 CPUs): figures are not comparable with pinned runs".into());
    }
    eprintln!("weft-bench: work directory {}", work.display());
    // A second run (or a leftover process) on the same addresses would answer for our targets.
    for a in targets::all_listen_addrs() {
        if let Err(e) = std::net::TcpListener::bind(a) {
            bail!("{a} is taken ({e}): is another weft-bench run, or a process it left, still running?");
        }
    }
    lab.start_upstream()
        .context("the upstream does not serve")?;
    let weft_wanted: Vec<Target> = wanted.iter().copied().filter(|t| t.is_weft()).collect();
    if !weft_wanted.is_empty() {
        if let Err(e) = lab.start_weft(&weft_wanted) {
            for t in &weft_wanted {
                lab.unavailable.push(Unavailable {
                    target: t.name().into(),
                    reason: format!("{e:#}"),
                });
            }
        }
    }
    for t in [
        Target::Nginx,
        Target::Nginx2Hop,
        Target::Haproxy,
        Target::Pingora,
        Target::Relay2Hop,
        Target::Nginx2HopTls,
        Target::Haproxy2HopTls,
    ] {
        if wanted.contains(&t) {
            lab.start_peer(t, &args.pingora, args.pingora_unavailable.as_deref());
        }
    }
    let up: Vec<&str> = lab.running.iter().map(|r| r.target.name()).collect();
    eprintln!(
        "weft-bench: running {} ({:.1} s to start)",
        up.join(", "),
        started.elapsed().as_secs_f64()
    );
    for u in &lab.unavailable {
        eprintln!("weft-bench: unavailable {}: {}", u.target, u.reason);
    }

    let mut unsupported = Vec::new();
    for s in &steps {
        for r in &lab.running {
            if let Err(note) = targets::endpoint_at(r.target, s.workload, s.rate, lab.nginx_stream)
            {
                unsupported.push(Unsupported {
                    target: r.target,
                    workload: s.workload,
                    rate: s.rate,
                    note,
                });
            }
        }
    }
    let mut samples: Vec<Sample> = Vec::new();
    for round in 1..=rounds {
        for s in &steps {
            let slices = s.slices.max(1);
            let turn = Step {
                duration: s.duration / u32::try_from(slices).unwrap_or(1),
                ..*s
            };
            let mut parts: Vec<Sample> = Vec::new();
            for slice in 0..slices {
                let n = lab.running.len();
                for k in 0..n {
                    check_interrupt()?;
                    // Rotate the order every round and every slice.
                    let idx = (k + round - 1 + slice) % n;
                    if let Some(why) = lab.running[idx].dead() {
                        let t = lab.running.remove(idx);
                        lab.unavailable.push(Unavailable {
                            target: t.target.name().into(),
                            reason: why,
                        });
                        break;
                    }
                    let name = lab.running[idx].target.name();
                    match lab.measure(idx, &turn, round) {
                        Ok(Some(sample)) => {
                            let round_label = if slices > 1 {
                                format!("{round}.{}", slice + 1)
                            } else {
                                round.to_string()
                            };
                            eprintln!(
                            "round {round_label} {:<18} {:>5} {:<13} p50 {:>7.0} µs  p99 {:>7.0} µs  {:>9.0} req/s  errors {}{}",
                            s.workload.name(),
                            s.rate.to_string(),
                            name,
                            sample.load.p50_us,
                            sample.load.p99_us,
                            sample.load.rps,
                            sample.load.errors,
                            sample
                                .proxy_cpu_s
                                .map(|c| format!("  cpu {c:.2} s  rss {} KiB", sample.rss_steady_kb.unwrap_or(0)))
                                .unwrap_or_default(),
                        );
                            parts.push(sample);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            check_interrupt()?;
                            eprintln!(
                                "round {round} {} {} {name}: {e:#}",
                                s.workload.name(),
                                s.rate
                            );
                        }
                    }
                }
            }
            samples.extend(report::merge_slices(parts));
        }
    }
    if !samples.iter().any(|s| s.target == Target::Direct) {
        bail!(
            "no run against direct succeeded: the harness is broken (logs in {})",
            work.display()
        );
    }
    // Stop the data plane before the control-plane simulation, so neither disturbs the other.
    let bin_dir = lab.bin_dir.clone();
    let unavailable = lab.unavailable.clone();
    let mut notes = lab.notes.clone();
    drop(lab);
    notes.extend(disturbance_note(&samples));
    let mut results = Results {
        date: machine::now_rfc3339(),
        machine: machine::machine(),
        versions: machine::versions(&args.pingora),
        mode: if quick { "quick" } else { "full" }.into(),
        data_plane: report::rows(&samples, &unsupported),
        control_plane: serde_json::json!([]),
        unavailable,
        notes: notes.clone(),
    };
    std::fs::create_dir_all(&args.out)?;
    // Written twice: the data-plane figures survive a control-plane simulation that fails or is stopped.
    let write = |results: &Results| -> anyhow::Result<()> {
        let md = report::markdown(results, &samples, &unsupported);
        let json = serde_json::to_string_pretty(results)? + "\n";
        std::fs::write(args.out.join("latest.json"), &json)?;
        std::fs::write(args.out.join("latest.md"), &md)?;
        if !quick {
            // Named by the minute in its `date` (`2026-12-02T1925`), so a second full run on one day (on
            // another machine, say) is kept beside the first rather than written over it.
            let name = dated_name(&results.date);
            std::fs::write(args.out.join(format!("{name}.json")), &json)?;
            std::fs::write(args.out.join(format!("{name}.md")), &md)?;
        }
        Ok(())
    };
    results
        .notes
        .push("control plane: weft-xds-sim still running when this was written".into());
    write(&results)?;
    eprintln!(
        "weft-bench: {} data-plane runs in {:.0} s",
        samples.len(),
        started.elapsed().as_secs_f64()
    );
    let (control_plane, cp_note) = control_plane(&bin_dir, quick);
    notes.extend(cp_note);
    results.control_plane = control_plane;
    results.notes = notes;
    write(&results)?;
    if args.keep {
        eprintln!("weft-bench: configs and logs kept in {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    eprintln!(
        "weft-bench: done in {:.0} s; results in {}",
        started.elapsed().as_secs_f64(),
        args.out.join("latest.md").display()
    );
    // Peers may be missing on a machine (no root, no package); Weft's own targets must run, or the
    // harness (or Weft) is broken, and CI should say so.
    let weft_down: Vec<String> = results
        .unavailable
        .iter()
        .filter(|u| u.target.starts_with("weft-"))
        .map(|u| format!("{}: {}", u.target, u.reason))
        .collect();
    if !weft_down.is_empty() {
        bail!(
            "Weft targets did not run (results written all the same):\n{}",
            weft_down.join("\n")
        );
    }
    Ok(args.out.join("latest.md"))
}

/// A note when the proxies' core was not the proxies' alone: another process's CPU time on CPU 1, or the
/// hypervisor's steal time, as a share of each run's length.
fn disturbance_note(samples: &[Sample]) -> Option<String> {
    let share = |f: fn(&Sample) -> Option<f64>| -> Vec<f64> {
        samples
            .iter()
            .filter_map(|s| Some(f(s)? / s.window_s.max(1e-9) * 100.0))
            .collect()
    };
    let foreign = share(|s| s.foreign_cpu_s);
    let steal = share(|s| s.steal_s);
    let (_, foreign_max) = crate::stats::spread(&foreign)?;
    let steal_max = crate::stats::spread(&steal).map_or(0.0, |(_, hi)| hi);
    // A few percent is the orchestrator's sampling, kernel threads and interrupts.
    (foreign_max > 5.0 || steal_max > 5.0).then(|| {
        format!(
            "the machine was not quiet: CPU 1 ran other processes for {:.0}% of a run at the median \
             ({:.0}% at worst), CPU steal {:.0}% at worst; tails (P99, P99.9) are the first figures \
             this disturbs",
            crate::stats::median(&foreign).unwrap_or(0.0),
            foreign_max,
            steal_max
        )
    })
}

/// Runs `weft-xds-sim --json [--quick]` when it has been built; its stdout is the control-plane array.
fn control_plane(bin_dir: &Path, quick: bool) -> (serde_json::Value, Option<String>) {
    let sim = bin_dir.join("weft-xds-sim");
    if !sim.exists() {
        return (
            serde_json::json!([]),
            Some(format!(
                "control plane not measured: {} not built",
                sim.display()
            )),
        );
    }
    let mut cmd = std::process::Command::new(&sim);
    cmd.arg("--json");
    if quick {
        cmd.arg("--quick");
    }
    eprintln!("weft-bench: running {cmd:?}");
    // Bounded: a control-plane simulation that hangs must not hold the data-plane results hostage.
    // Quick mode is CI's: three minutes at most, so a stuck simulation cannot eat CI's budget.
    let limit = if quick {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(1800)
    };
    match run_bounded(cmd, limit) {
        Ok(o) if o.status.success() => match serde_json::from_slice::<serde_json::Value>(&o.stdout)
        {
            Ok(v @ serde_json::Value::Array(_)) => (v, None),
            Ok(_) | Err(_) => (
                serde_json::json!([]),
                Some("control plane not measured: weft-xds-sim did not print a JSON array".into()),
            ),
        },
        Ok(o) => (
            serde_json::json!([]),
            Some(format!(
                "control plane not measured: weft-xds-sim failed ({})",
                o.status
            )),
        ),
        Err(e) => (
            serde_json::json!([]),
            Some(format!(
                "control plane not measured: cannot run weft-xds-sim: {e}"
            )),
        ),
    }
}

/// Runs a command with stdout captured, killing it after `limit` or on interrupt.
fn run_bounded(
    mut cmd: std::process::Command,
    limit: Duration,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline || INTERRUPTED.load(Ordering::Relaxed) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other(format!("stopped after {limit:?}")));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    Ok(std::process::Output {
        status,
        stdout,
        stderr: Vec::new(),
    })
}

/// Installs the SIGINT/SIGTERM handler that makes a run stop and clean up.
pub fn install_interrupt_handler() -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                eprintln!("weft-bench: stopping (cleaning up)");
                INTERRUPTED.store(true, Ordering::Relaxed);
            });
        })?;
    Ok(())
}

/// The rates a plan runs each workload at.
pub fn plan_targets(steps: &[Step]) -> BTreeMap<Workload, Vec<Rate>> {
    let mut m: BTreeMap<Workload, Vec<Rate>> = BTreeMap::new();
    for s in steps {
        m.entry(s.workload).or_default().push(s.rate);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_plan_covers_every_workload_at_every_rate() {
        let p = plan_targets(&plan(false));
        for w in Workload::ALL {
            let want = if w.is_tcp() {
                vec![Rate::Max]
            } else {
                vec![Rate::Fixed(1000), Rate::Fixed(5000), Rate::Max]
            };
            assert_eq!(p.get(&w), Some(&want), "{w}");
        }
        let headline: Vec<_> = plan(false)
            .into_iter()
            .filter(|s| s.workload == Workload::Http1KeepAlive)
            .collect();
        assert!(headline
            .iter()
            .all(|s| s.rate == Rate::Fixed(5000) || s.duration == Duration::from_secs(8)));
    }

    #[test]
    fn full_run_fits_in_forty_minutes() {
        // Every target that carries a workload runs it (nginx with its stream module), three rounds;
        // ~1.1 s of overhead per run.
        let per_round: f64 = plan(false)
            .iter()
            .map(|s| {
                let n = Target::ALL
                    .into_iter()
                    .filter(|&t| targets::endpoint_at(t, s.workload, s.rate, true).is_ok())
                    .count() as f64;
                n * (s.duration.as_secs_f64() + 1.1 * s.slices as f64)
            })
            .sum();
        // 30 minutes before the mTLS targets; they add about 7 minutes (at max only, and HTTP/1.1
        // keep-alive at 1,000 req/s).
        assert!(per_round * 3.0 < 40.0 * 60.0, "{per_round} s per round");
    }

    #[test]
    fn quick_plan_is_short() {
        let p = plan(true);
        assert_eq!(
            p.iter()
                .filter(|s| s.workload == Workload::Http1KeepAlive)
                .count(),
            2
        );
        for w in Workload::ALL {
            assert!(p.iter().any(|s| s.workload == w), "{w}");
        }
        let total: f64 = p.iter().map(|s| s.duration.as_secs_f64()).sum();
        assert!(total * 6.0 < 120.0);
    }
}

/// The dated copy's name for a run dated `date` (RFC 3339, `2026-12-02T19:05:12Z`, taken when the data
/// plane's rounds end): the date, the hour and the minute, without the colon some file systems refuse.
fn dated_name(date: &str) -> String {
    date.get(..16).unwrap_or(date).replace(':', "")
}

#[cfg(test)]
mod dated_tests {
    #[test]
    fn dated_copies_are_named_by_the_minute() {
        assert_eq!(super::dated_name("2026-12-02T19:05:12Z"), "2026-12-02T1905");
        assert_eq!(super::dated_name("2026-12-02"), "2026-12-02");
    }
}
