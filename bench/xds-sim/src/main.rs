//! `weft-xds-sim`: the control-plane benchmark. Starts weftd on a generated config directory holding S
//! services of E endpoints each (spread over namespaces), connects N proxies' worth of delta ADS
//! streams from this one process (real gRPC, one TCP connection each, subscribing as weft-proxy does:
//! wildcard CDS and LDS, EDS and RDS by name, ACKing every response), then changes one service's
//! endpoints at a time and measures how long until every proxy that watches it has ACKed the push.
//!
//! Prints a JSON array of `control_plane` records (the shape `bench/run` writes) with `--json`, else a
//! table. Each record says how many proxies got their whole first config and how many streams failed
//! (closed by weftd or broken); the process exits with an error when any did, after printing.
//!
//! `--connect-at-once 0` opens every stream at once: the connect storm of a fleet reconnecting after
//! weftd restarts.

use anyhow::{bail, Context};
use clap::Parser;
use prost::Message;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use weft_xds::ads::AggregatedDiscoveryServiceClient;
use weft_xds::node::ProxyIdentity;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use weft_xds::type_url;

#[derive(Parser, Debug)]
#[command(about = "Control-plane benchmark: N delta ADS streams against weftd holding S services")]
struct Args {
    /// The weftd binary (default: beside this one).
    #[arg(long)]
    weftd: Option<PathBuf>,
    /// Proxy counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    proxies: Vec<usize>,
    /// Service counts to run, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    /// Endpoints per service.
    #[arg(long, default_value_t = 3)]
    endpoints: usize,
    /// Namespaces the services and proxies are spread over.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Changes measured per configuration.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Small sizes, for CI: 20 proxies, 200 services, 2 changes.
    #[arg(long)]
    quick: bool,
    /// Print JSON (an array of control_plane records).
    #[arg(long)]
    json: bool,
    /// weftd's address (loopback).
    #[arg(long, default_value = "127.0.60.1")]
    ip: String,
    /// Seconds to wait for the initial sync of all proxies.
    #[arg(long, default_value_t = 600)]
    sync_timeout: u64,
    /// Streams being opened at once, each until its first response (0: every proxy at once, the
    /// connect storm of a fleet reconnecting after weftd restarts).
    #[arg(long, default_value_t = 32)]
    connect_at_once: usize,
}

#[derive(Debug, Clone)]
struct Record {
    proxies: usize,
    services: usize,
    endpoints_per_service: usize,
    scoped: bool,
    push_p50_ms: f64,
    push_p99_ms: f64,
    push_max_ms: f64,
    weftd_rss_mb: f64,
    weftd_peak_rss_mb: f64,
    weftd_cpu_s_per_push: f64,
    bytes_per_proxy: u64,
    initial_sync_s: f64,
    weftd_cpu_s_initial: f64,
    changes: usize,
    connect_at_once: usize,
    /// Proxies that got their whole first config.
    proxies_synced: usize,
    /// Streams that failed (before or after their first config).
    streams_failed: usize,
    /// The distinct failures, most frequent first, with their counts.
    failures: Vec<(String, usize)>,
}

impl Record {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "proxies": self.proxies,
            "services": self.services,
            "endpoints_per_service": self.endpoints_per_service,
            "scoped": self.scoped,
            "push_p50_ms": round(self.push_p50_ms),
            "push_p99_ms": round(self.push_p99_ms),
            "push_max_ms": round(self.push_max_ms),
            "weftd_rss_mb": round(self.weftd_rss_mb),
            "weftd_peak_rss_mb": round(self.weftd_peak_rss_mb),
            "weftd_cpu_s_per_push": round3(self.weftd_cpu_s_per_push),
            "bytes_per_proxy": self.bytes_per_proxy,
            "initial_sync_s": round(self.initial_sync_s),
            "weftd_cpu_s_initial": round(self.weftd_cpu_s_initial),
            "changes": self.changes,
            "connect_at_once": self.connect_at_once,
            "proxies_synced": self.proxies_synced,
            "streams_failed": self.streams_failed,
            "failures": self.failures.iter().map(|(e, n)| serde_json::json!({"error": e, "streams": n})).collect::<Vec<_>>(),
            "protocol": "delta",
            "change": "one service's endpoints",
        })
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}
fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

const PORT: u32 = 8080;
const PER_FILE: usize = 100;

fn namespace(i: usize, namespaces: usize) -> String {
    format!("ns-{}", i % namespaces)
}

fn endpoint_ip(svc: usize, e: usize, salt: usize) -> String {
    // Never dialled: weftd only hands them out. Loopback anyway.
    let n = svc * 8 + e + salt * 3;
    format!(
        "127.{}.{}.{}",
        100 + (n >> 16) % 100,
        (n >> 8) & 255,
        (n & 255).max(1)
    )
}

fn service_yaml(i: usize, namespaces: usize, endpoints: usize, salt: usize) -> String {
    let ns = namespace(i, namespaces);
    let eps: Vec<String> = (0..endpoints)
        .map(|e| format!("{{address: {}}}", endpoint_ip(i, e, salt)))
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i}, namespace: {ns}}}\nspec:\n  hosts: [svc-{i}.{ns}.svc.cluster.local]\n  location: MESH_INTERNAL\n  resolution: STATIC\n  ports: [{{number: {PORT}, name: http, protocol: HTTP}}]\n  endpoints: [{}]\n",
        eps.join(", ")
    )
}

fn write_file(dir: &Path, file: usize, a: &Args, services: usize, salts: &HashMap<usize, usize>) {
    let docs: Vec<String> = (file * PER_FILE..((file + 1) * PER_FILE).min(services))
        .map(|i| {
            service_yaml(
                i,
                a.namespaces,
                a.endpoints,
                salts.get(&i).copied().unwrap_or(0),
            )
        })
        .collect();
    let tmp = dir.join(format!(".svc-{file}.tmp"));
    std::fs::write(&tmp, docs.join("---\n")).expect("write config");
    std::fs::rename(&tmp, dir.join(format!("services-{file:04}.yaml"))).expect("rename config");
}

fn write_config(dir: &Path, a: &Args, services: usize, scoped: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for f in 0..services.div_ceil(PER_FILE) {
        write_file(dir, f, a, services, &HashMap::new());
    }
    if scoped {
        // The mesh-wide default Istio recommends for large meshes: each proxy sees its own namespace.
        std::fs::write(
            dir.join("sidecar.yaml"),
            "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: istio-system}\nspec:\n  egress: [{hosts: [./*]}]\n",
        )?;
    }
    Ok(())
}

/// CPU seconds (user + system) of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after the command: state is index 0, utime 11, stime 12.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz.max(1.0)
}

fn rss_mb(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// What a stream tells the coordinator.
enum Event {
    /// Initial config complete (CDS, EDS for every cluster, LDS, RDS), with the bytes it took.
    Synced { proxy: usize, bytes: u64 },
    /// A response of this generation was ACKed.
    Acked {
        proxy: usize,
        generation: u64,
        at: Instant,
    },
    /// The stream failed.
    Failed { proxy: usize, error: String },
}

/// The streams that failed, by proxy, and their errors grouped.
#[derive(Default)]
struct Failures {
    dead: Vec<bool>,
    count: usize,
    by_error: HashMap<String, usize>,
}

impl Failures {
    fn new(proxies: usize) -> Failures {
        Failures {
            dead: vec![false; proxies],
            ..Default::default()
        }
    }

    /// Records a failure; false if that proxy had already failed.
    fn record(&mut self, proxy: usize, error: String) -> bool {
        if std::mem::replace(&mut self.dead[proxy], true) {
            return false;
        }
        self.count += 1;
        *self.by_error.entry(error).or_default() += 1;
        true
    }

    /// The distinct errors, most frequent first.
    fn summary(&self) -> Vec<(String, usize)> {
        let mut v: Vec<(String, usize)> =
            self.by_error.iter().map(|(e, n)| (e.clone(), *n)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

async fn proxy_stream(
    idx: usize,
    addr: String,
    ns: String,
    events: mpsc::UnboundedSender<Event>,
    connecting: Arc<tokio::sync::Semaphore>,
) -> anyhow::Result<()> {
    // Connections are opened a few dozen at a time, as proxies of a real fleet start.
    let permit = connecting.acquire_owned().await?;
    let mut client = AggregatedDiscoveryServiceClient::connect(addr)
        .await
        .context("connect")?
        .max_decoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::unbounded_channel::<DeltaDiscoveryRequest>();
    let identity = ProxyIdentity {
        workload: format!("sim-{idx}"),
        namespace: ns,
        ip: format!("127.0.61.{}", idx % 250 + 1),
        ..Default::default()
    };
    tx.send(DeltaDiscoveryRequest {
        node: Some(identity.to_node()),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })?;
    tx.send(DeltaDiscoveryRequest {
        type_url: type_url::LISTENER.into(),
        ..Default::default()
    })?;
    let mut inbound = client
        .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .context("open delta stream")?
        .into_inner();
    let mut clusters: BTreeSet<String> = BTreeSet::new();
    let mut routes: BTreeSet<String> = BTreeSet::new();
    let mut have_eds: BTreeSet<String> = BTreeSet::new();
    let mut have_rds: BTreeSet<String> = BTreeSet::new();
    let (mut got_cds, mut got_lds, mut synced) = (false, false, false);
    let mut bytes = 0u64;
    let mut permit = Some(permit);
    while let Some(resp) = inbound.message().await.context("stream")? {
        permit.take();
        let resp: DeltaDiscoveryResponse = resp;
        bytes += resp.encoded_len() as u64;
        let t = resp.type_url.as_str();
        let mut subscribe = Vec::new();
        let mut unsubscribe = Vec::new();
        if t == type_url::CLUSTER {
            got_cds = true;
            for r in &resp.resources {
                if r.name.starts_with("outbound|") && clusters.insert(r.name.clone()) {
                    subscribe.push(r.name.clone());
                }
            }
            for n in &resp.removed_resources {
                if clusters.remove(n) {
                    unsubscribe.push(n.clone());
                }
            }
        } else if t == type_url::LISTENER {
            got_lds = true;
            for r in &resp.resources {
                if let Some(port) = r.name.strip_prefix("0.0.0.0_") {
                    if routes.insert(port.to_string()) {
                        subscribe.push(port.to_string());
                    }
                }
            }
        } else if t == type_url::ENDPOINT {
            have_eds.extend(resp.resources.iter().map(|r| r.name.clone()));
        } else if t == type_url::ROUTE {
            have_rds.extend(resp.resources.iter().map(|r| r.name.clone()));
        }
        // ACK first (as a proxy does after applying), then subscribe to what the update referenced.
        tx.send(DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        })?;
        let generation = resp.system_version_info.parse().unwrap_or(0);
        let _ = events.send(Event::Acked {
            proxy: idx,
            generation,
            at: Instant::now(),
        });
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            let sub_type = if t == type_url::CLUSTER {
                type_url::ENDPOINT
            } else {
                type_url::ROUTE
            };
            tx.send(DeltaDiscoveryRequest {
                type_url: sub_type.into(),
                resource_names_subscribe: subscribe,
                resource_names_unsubscribe: unsubscribe,
                ..Default::default()
            })?;
        }
        if !synced
            && got_cds
            && got_lds
            && clusters.iter().all(|c| have_eds.contains(c))
            && routes.iter().all(|r| have_rds.contains(r))
        {
            synced = true;
            let _ = events.send(Event::Synced { proxy: idx, bytes });
        }
    }
    bail!("weftd closed the stream")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Weftd(Child);

impl Drop for Weftd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next event, or `None` at `deadline`; an error as soon as weftd has exited.
async fn next_event(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    weftd: &mut Weftd,
    deadline: Instant,
) -> anyhow::Result<Option<Event>> {
    loop {
        if let Some(status) = weftd.0.try_wait()? {
            bail!("weftd exited ({status}); see its log beside the config directory");
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        let tick = (deadline - now).min(Duration::from_secs(1));
        match tokio::time::timeout(tick, rx.recv()).await {
            Ok(Some(ev)) => return Ok(Some(ev)),
            Ok(None) => bail!("every stream ended"),
            Err(_) => continue,
        }
    }
}

async fn wait_ready(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = Instant::now();
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nhost: weftd\r\nconnection: close\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("weftd not ready at {addr} after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_one(
    a: &Args,
    weftd: &Path,
    proxies: usize,
    services: usize,
    scoped: bool,
) -> anyhow::Result<Record> {
    let dir = std::env::temp_dir().join(format!(
        "weft-xds-sim-{}-{proxies}-{services}-{scoped}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    write_config(&dir, a, services, scoped)?;
    let xds = format!("{}:15010", a.ip);
    let debug = format!("{}:15014", a.ip);
    // Another weftd on these addresses would answer for ours (and ours would exit): refuse up front.
    for addr in [&xds, &debug] {
        std::net::TcpListener::bind(addr.as_str()).with_context(|| {
            format!("{addr} is taken: is another weft-xds-sim or weftd running?")
        })?;
    }
    let log = std::fs::File::create(dir.with_extension("log"))?;
    let child = Command::new(weftd)
        .arg("--config-dir")
        .arg(&dir)
        .arg("--xds-address")
        .arg(&xds)
        .arg("--debug-address")
        .arg(&debug)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .with_context(|| format!("cannot start {}", weftd.display()))?;
    let mut weftd_proc = Weftd(child);
    let pid = weftd_proc.0.id();
    wait_ready(&debug).await?;
    // weftd is ready once its first model is built; the CPU spent so far is loading, not serving.
    let cpu_loaded = cpu_seconds(pid);

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let started = Instant::now();
    let mut tasks = Vec::new();
    let at_once = match a.connect_at_once {
        0 => proxies.max(1),
        n => n,
    };
    let connecting = Arc::new(tokio::sync::Semaphore::new(at_once));
    for i in 0..proxies {
        let connecting = connecting.clone();
        let tx = ev_tx.clone();
        let addr = format!("http://{xds}");
        let ns = namespace(i, a.namespaces);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = proxy_stream(i, addr, ns, tx.clone(), connecting).await {
                let _ = tx.send(Event::Failed {
                    proxy: i,
                    error: format!("{e:#}"),
                });
            }
        }));
    }
    drop(ev_tx);
    // Every stream either syncs or fails; a failure does not end the run, so the record says how many
    // proxies of a storm got their config.
    let mut synced = vec![false; proxies];
    let mut synced_count = 0usize;
    let mut failures = Failures::new(proxies);
    let mut bytes_total = 0u64;
    let mut acked: Vec<u64> = vec![0; proxies];
    let deadline = started + Duration::from_secs(a.sync_timeout);
    let settled = |synced: &[bool], failures: &Failures| {
        synced
            .iter()
            .zip(&failures.dead)
            .filter(|(s, d)| **s || **d)
            .count()
    };
    while settled(&synced, &failures) < proxies {
        let Some(ev) = next_event(&mut ev_rx, &mut weftd_proc, deadline).await? else {
            eprintln!(
                "{synced_count} of {proxies} proxies synced after {} s",
                a.sync_timeout
            );
            break;
        };
        match ev {
            Event::Synced { proxy, bytes } => {
                synced[proxy] = true;
                synced_count += 1;
                bytes_total += bytes;
            }
            Event::Acked {
                proxy, generation, ..
            } => acked[proxy] = acked[proxy].max(generation),
            Event::Failed { proxy, error } => {
                failures.record(proxy, error);
            }
        }
    }
    if synced_count == 0 {
        bail!(
            "no proxy synced; {} streams failed: {:?}",
            failures.count,
            failures.summary()
        );
    }
    let initial_sync_s = started.elapsed().as_secs_f64();
    let weftd_cpu_s_initial = cpu_seconds(pid) - cpu_loaded;
    let mut generation = acked.iter().copied().max().unwrap_or(1);

    let mut latencies = Vec::new();
    let mut cpu_per_push = Vec::new();
    let mut salts: HashMap<usize, usize> = HashMap::new();
    let changes = if a.quick { 2 } else { a.changes };
    for k in 0..changes {
        // Let the previous push settle, so the debounce doesn't merge two changes.
        tokio::time::sleep(Duration::from_millis(300)).await;
        while let Ok(ev) = ev_rx.try_recv() {
            if let Event::Failed { proxy, error } = ev {
                failures.record(proxy, error);
            }
        }
        // Service k * 7 (spread over namespaces); the synced proxies that watch it and still have
        // their stream must all ACK.
        let svc = (k * 7) % services;
        let svc_ns = svc % a.namespaces;
        let expected: Vec<usize> = (0..proxies)
            .filter(|p| !scoped || p % a.namespaces == svc_ns)
            .filter(|p| synced[*p] && !failures.dead[*p])
            .collect();
        *salts.entry(svc).or_default() += 1;
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        write_file(&dir, svc / PER_FILE, a, services, &salts);
        generation += 1;
        let mut done = vec![false; proxies];
        let mut remaining = expected.len();
        let deadline = t0 + Duration::from_secs(120);
        while remaining > 0 {
            let Some(ev) = next_event(&mut ev_rx, &mut weftd_proc, deadline).await? else {
                bail!("change {k}: {remaining} proxies did not ACK within 120 s");
            };
            match ev {
                Event::Acked {
                    proxy,
                    generation: g,
                    at,
                } => {
                    if g >= generation && !done[proxy] && expected.binary_search(&proxy).is_ok() {
                        done[proxy] = true;
                        remaining -= 1;
                        latencies.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                    }
                }
                Event::Synced { .. } => {}
                Event::Failed { proxy, error } => {
                    // A proxy that lost its stream will not ACK: stop waiting for it.
                    if failures.record(proxy, error)
                        && !done[proxy]
                        && expected.binary_search(&proxy).is_ok()
                    {
                        done[proxy] = true;
                        remaining -= 1;
                    }
                }
            }
        }
        // weftd's CPU for this push: let it finish the last sends before reading.
        tokio::time::sleep(Duration::from_millis(50)).await;
        cpu_per_push.push(cpu_seconds(pid) - cpu0);
    }
    let rss = rss_mb(pid, "VmRSS:");
    let peak_rss = rss_mb(pid, "VmHWM:");
    for t in tasks {
        t.abort();
    }
    drop(weftd_proc);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort_by(|a, b| a.total_cmp(b));
    cpu_per_push.sort_by(|a, b| a.total_cmp(b));
    Ok(Record {
        proxies,
        services,
        endpoints_per_service: a.endpoints,
        scoped,
        push_p50_ms: percentile(&latencies, 50.0),
        push_p99_ms: percentile(&latencies, 99.0),
        push_max_ms: latencies.last().copied().unwrap_or(0.0),
        weftd_rss_mb: rss,
        weftd_peak_rss_mb: peak_rss,
        weftd_cpu_s_per_push: percentile(&cpu_per_push, 50.0),
        bytes_per_proxy: bytes_total / synced_count.max(1) as u64,
        initial_sync_s,
        weftd_cpu_s_initial,
        changes,
        connect_at_once: at_once,
        proxies_synced: synced_count,
        streams_failed: failures.count,
        failures: failures.summary(),
    })
}

fn main() -> anyhow::Result<()> {
    let mut a = Args::parse();
    if a.quick {
        a.proxies = vec![20];
        a.services = vec![200];
    }
    raise_fd_limit();
    let weftd = match &a.weftd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("no parent directory")?
            .join("weftd"),
    };
    if !weftd.exists() {
        bail!(
            "{} not found: build it with `cargo build --release -p weft-control`",
            weftd.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut out = Vec::new();
    let mut incomplete = 0;
    for &services in &a.services {
        for &proxies in &a.proxies {
            for scoped in [false, true] {
                let r = rt.block_on(run_one(&a, &weftd, proxies, services, scoped));
                match r {
                    Ok(r) => {
                        eprintln!(
                            "proxies {:>5} services {:>6} scoped {:<5} push p50 {:>7.1} ms p99 {:>7.1} ms max {:>7.1} ms  weftd {:>6.1} MB (peak {:>6.1})  {:.3} cpu-s/push  {:>9} B/proxy  initial sync {:.1} s  synced {}/{}  failed {}",
                            r.proxies, r.services, r.scoped, r.push_p50_ms, r.push_p99_ms, r.push_max_ms,
                            r.weftd_rss_mb, r.weftd_peak_rss_mb, r.weftd_cpu_s_per_push, r.bytes_per_proxy, r.initial_sync_s,
                            r.proxies_synced, r.proxies, r.streams_failed
                        );
                        for (error, n) in &r.failures {
                            eprintln!("  {n} streams: {error}");
                        }
                        if r.proxies_synced < r.proxies || r.streams_failed > 0 {
                            incomplete += 1;
                        }
                        out.push(r.json());
                    }
                    Err(e) => {
                        incomplete += 1;
                        eprintln!("proxies {proxies} services {services} scoped {scoped}: {e:#}");
                        out.push(serde_json::json!({
                            "proxies": proxies, "services": services, "scoped": scoped,
                            "endpoints_per_service": a.endpoints, "error": format!("{e:#}"),
                        }));
                    }
                }
            }
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    if incomplete > 0 {
        bail!("{incomplete} configurations did not sync every proxy or lost streams");
    }
    Ok(())
}
