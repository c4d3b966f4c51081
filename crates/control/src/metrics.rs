//! weftd's own metrics, served in the Prometheus text format at `/metrics` on the debug port: what the
//! ADS server pushes and what the proxies answer, under the names of Istio's `pilot_*` metrics so that
//! dashboards and alerts written for istiod read weftd too; the size of the model; and the process's
//! own (`process_*`, as the Prometheus client libraries name them).
//!
//! The ADS server records per proxy and per push, so that path touches atomics only: every labelled
//! series it moves is made once, here, and kept in an array indexed like [`crate::view::TYPES`]; no
//! family is looked up and no lock is taken. The model's gauges and the process's figures are read
//! when Prometheus scrapes. Serving the endpoint is [`crate::debug`]'s.

use crate::model::Model;
use crate::view::TYPES;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use weft_xds::type_url;

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Bounds of `pilot_xds_push_time`, in seconds: Istio's (`pilot/pkg/xds/monitoring.go`), after 1 and
/// 5 ms. weftd pushes a type to one proxy in well under 10 ms, which Istio's first bucket would hold
/// whole; Istio's bounds are all kept, so a query that names one of them still works.
pub const PUSH_TIME_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0,
];
/// Bounds of `pilot_proxy_convergence_time`, in seconds: Istio's. A change waits out the debounce
/// (100 ms by default) before anything is pushed, so nothing converges faster than the first bound.
pub const CONVERGENCE_BOUNDS: &[f64] = &[0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// Istio's name of each of [`TYPES`] in metric labels and names (`GetMetricType`), in the same order
/// (a test checks).
const TYPE_NAMES: [&str; 4] = ["cds", "eds", "lds", "rds"];

/// The one label of the per-type series.
type TypeLabel = [(&'static str, &'static str); 1];

fn type_label(ti: usize) -> TypeLabel {
    [("type", TYPE_NAMES[ti])]
}

// === impl BareCounter ===

/// A counter exposed under its bare name. Istio's counters have no `_total` suffix
/// (`pilot_xds_pushes`, `pilot_total_xds_rejects`: istiod's exporter drops it), and its dashboards
/// query them so; prometheus-client appends `_total` to everything typed as a counter, so these are
/// typed `untyped`, which PromQL treats the same (`rate` and `increase` work on any series).
#[derive(Clone, Debug, Default)]
pub struct BareCounter(Counter);

impl BareCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0.inc();
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.get()
    }
}

impl TypedMetric for BareCounter {
    const TYPE: MetricType = MetricType::Unknown;
}

impl EncodeMetric for BareCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// === impl Histogram ===

/// A histogram of durations whose observations are atomic adds: prometheus-client's own takes a
/// mutex per observation, and pushes are observed per proxy and per type.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramInner>);

#[derive(Debug)]
struct HistogramInner {
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative; the last counts those above every bound.
    buckets: Box<[AtomicU64]>,
    /// Sum of the observations, in nanoseconds (584 years of them fit).
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// An empty histogram with these upper bounds, in seconds, ascending.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram(Arc::new(HistogramInner {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    /// Counts one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        // The first bound at or above the value: Prometheus's buckets are `le`.
        let i = self.0.bounds.partition_point(|b| *b < secs);
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations were counted.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self
            .0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        // The count is the buckets' sum, read once, so `+Inf` never falls below a finite bucket
        // while observations land during a scrape.
        let count = counts.iter().sum();
        let buckets: Vec<(f64, u64)> = self.0.bounds.iter().copied().zip(counts).collect();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

// === impl XdsMetrics ===

/// What the ADS server records: one handle per series, made at start.
#[derive(Debug)]
pub struct XdsMetrics {
    pushes: [BareCounter; 4],
    push_time: [Histogram; 4],
    convergence: Histogram,
    connected: Gauge,
    rejects: [BareCounter; 4],
    refusing: [Gauge; 4],
}

impl XdsMetrics {
    /// Registers the ADS server's metrics in `registry` and returns their handles.
    pub fn register(registry: &mut Registry) -> XdsMetrics {
        let pushes = Family::<TypeLabel, BareCounter>::default();
        registry.register(
            "pilot_xds_pushes",
            "Responses pushed to proxies, by xDS type (cds, eds, lds, rds); one per proxy per push",
            pushes.clone(),
        );
        let push_time =
            Family::<TypeLabel, Histogram, fn() -> Histogram>::new_with_constructor(|| {
                Histogram::new(PUSH_TIME_BOUNDS)
            });
        registry.register(
            "pilot_xds_push_time",
            "Seconds from building a response of one xDS type for one proxy to queuing its last \
             frame on the proxy's stream",
            push_time.clone(),
        );
        let convergence = Histogram::new(CONVERGENCE_BOUNDS);
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a config change (the first event of its debounce) to a proxy \
             acknowledging everything the change sent it",
            convergence.clone(),
        );
        let connected = Gauge::default();
        registry.register(
            "pilot_xds",
            "Proxies connected to this weftd over ADS",
            connected.clone(),
        );
        let rejects = Family::<TypeLabel, BareCounter>::default();
        registry.register(
            "pilot_total_xds_rejects",
            "Responses refused by proxies (NACK), by xDS type",
            rejects.clone(),
        );
        let refusing: [Gauge; 4] = std::array::from_fn(|ti| {
            let g = Gauge::default();
            registry.register(
                format!("pilot_xds_{}_reject", TYPE_NAMES[ti]),
                format!(
                    "Connected proxies whose last answer to a {} response was a refusal (NACK)",
                    type_url::short(TYPES[ti])
                ),
                g.clone(),
            );
            g
        });
        XdsMetrics {
            pushes: std::array::from_fn(|ti| pushes.get_or_create(&type_label(ti)).clone()),
            push_time: std::array::from_fn(|ti| push_time.get_or_create(&type_label(ti)).clone()),
            convergence,
            connected,
            rejects: std::array::from_fn(|ti| rejects.get_or_create(&type_label(ti)).clone()),
            refusing,
        }
    }

    /// A response of type `ti` went out; building and queuing it took `took`.
    pub fn pushed(&self, ti: usize, took: Duration) {
        self.pushes[ti].inc();
        self.push_time[ti].observe(took);
    }

    /// A proxy acknowledged everything a config change sent it, `took` after the change.
    pub fn converged(&self, took: Duration) {
        self.convergence.observe(took);
    }

    /// A proxy identified itself on a stream.
    pub fn connected(&self) {
        self.connected.inc();
    }

    /// An identified proxy's stream ended.
    pub fn disconnected(&self) {
        self.connected.dec();
    }

    /// A proxy refused a response of type `ti`; `newly` when its previous answer for the type was
    /// not a refusal.
    pub fn rejected(&self, ti: usize, newly: bool) {
        self.rejects[ti].inc();
        if newly {
            self.refusing[ti].inc();
        }
    }

    /// A proxy that was refusing type `ti` accepted it again, or went away.
    pub fn no_longer_refusing(&self, ti: usize) {
        self.refusing[ti].dec();
    }

    /// Responses of type `ti` pushed so far.
    pub fn pushes(&self, ti: usize) -> u64 {
        self.pushes[ti].get()
    }
}

// === impl Metrics ===

/// Every metric weftd serves.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// The ADS server's, shared with every connection.
    pub xds: Arc<XdsMetrics>,
    services: Gauge,
    virt_services: Gauge,
    /// Current config problems: errors, then warnings.
    diagnostics: [Gauge; 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let xds = Arc::new(XdsMetrics::register(&mut registry));
        let services = Gauge::default();
        registry.register(
            "pilot_services",
            "Services known to weftd (ServiceEntry hosts)",
            services.clone(),
        );
        let virt_services = Gauge::default();
        registry.register(
            "pilot_virt_services",
            "VirtualServices known to weftd (accepted)",
            virt_services.clone(),
        );
        // Istio has no gauge of the config's current problems (`pilot_total_rejected_configs` counts
        // rejections since start, and only of gateways), hence weftd's own name.
        let diagnostics = Family::<[(&'static str, &'static str); 1], Gauge>::default();
        registry.register(
            "weftd_config_diagnostics",
            "Problems in the config directory as last read, by level (error: the resource was \
             refused and its last good version stays in force; warning: accepted)",
            diagnostics.clone(),
        );
        // One statement each: the guard `get_or_create` returns holds the family's lock.
        let errors = diagnostics.get_or_create(&[("level", "error")]).clone();
        let warnings = diagnostics.get_or_create(&[("level", "warning")]).clone();
        let diagnostics = [errors, warnings];
        registry.register_collector(Box::new(Process::new()));
        Metrics {
            registry,
            xds,
            services,
            virt_services,
            diagnostics,
        }
    }

    /// Every metric in the Prometheus text format, the model's gauges read from `model`. Reads
    /// `/proc`: call it off the async runtime.
    pub fn encode(&self, model: &Model) -> String {
        self.services.set(gauge_value(model.services.len()));
        let vs = model
            .resources
            .iter()
            .filter(|r| r.as_virtual_service().is_some())
            .count();
        self.virt_services.set(gauge_value(vs));
        let errors = model.diagnostics.iter().filter(|d| d.is_error()).count();
        self.diagnostics[0].set(gauge_value(errors));
        self.diagnostics[1].set(gauge_value(model.diagnostics.len() - errors));
        let mut out = String::new();
        // Writing to a String cannot fail; an encoder error would leave what was written so far.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

// === impl Process ===

/// The process's own figures, read from `/proc` at each scrape, under the names the Prometheus
/// client libraries give them. Elsewhere than Linux there are none.
#[derive(Debug)]
struct Process {
    /// Seconds since the epoch; read once, it does not change.
    start_time: Option<f64>,
}

/// Linux reports CPU times and start times in clock ticks of USER_HZ, which is 100 on every
/// architecture the kernel exposes to user space (the Go client's procfs assumes the same).
const USER_HZ: f64 = 100.0;

/// What one read of `/proc/self` found.
#[derive(Debug, Default, PartialEq)]
struct ProcessStat {
    /// User and system CPU time, in seconds.
    cpu_seconds: f64,
    /// Virtual memory size, in bytes.
    virtual_bytes: u64,
    /// Start time after boot, in clock ticks.
    start_ticks: u64,
}

impl Process {
    fn new() -> Process {
        let start_time = (|| {
            let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
            let btime = parse_btime(&std::fs::read_to_string("/proc/stat").ok()?)?;
            Some(btime as f64 + stat.start_ticks as f64 / USER_HZ)
        })();
        Process { start_time }
    }
}

/// Reads `/proc/<pid>/stat`: the fields after the command name, which is in parentheses and may hold
/// spaces and parentheses itself (so the last `)` ends it).
fn parse_stat(text: &str) -> Option<ProcessStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbers fields from 1, and the state (field 3) comes first here.
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(ProcessStat {
        cpu_seconds: (field(14)? + field(15)?) as f64 / USER_HZ,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
    })
}

/// Boot time, in seconds since the epoch, from `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Resident memory, in bytes, from `/proc/<pid>/status` (`VmRSS`, in kB).
fn parse_rss(text: &str) -> Option<u64> {
    let v = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = v.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

/// The soft limit on open files, from `/proc/<pid>/limits`.
fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|t| parse_stat(&t))
        {
            let cpu = ConstCounter::new(stat.cpu_seconds);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                stat.virtual_bytes,
            )?;
        }
        if let Some(rss) = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| parse_rss(&t))
        {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors",
                dir.count() as u64,
            )?;
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| parse_max_fds(&t))
        {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors",
                max,
            )?;
        }
        if let Some(start) = self.start_time {
            let g = ConstGauge::new(start);
            g.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                None,
                g.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value as f64);
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of one series (`name{labels}` exactly as written) in `/metrics` text.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn type_names_follow_the_order_of_types() {
        for (ti, t) in TYPES.iter().enumerate() {
            assert_eq!(
                TYPE_NAMES[ti],
                type_url::short(t).to_ascii_lowercase(),
                "type {t}"
            );
        }
    }

    #[test]
    fn istio_counters_keep_their_bare_names_and_every_type_is_there_from_the_start() {
        let m = Metrics::new();
        let text = m.encode(&Model::default());
        for t in TYPE_NAMES {
            for series in [
                format!("pilot_xds_pushes{{type=\"{t}\"}}"),
                format!("pilot_total_xds_rejects{{type=\"{t}\"}}"),
                format!("pilot_xds_push_time_count{{type=\"{t}\"}}"),
                format!("pilot_xds_{t}_reject"),
            ] {
                assert_eq!(value(&text, &series), Some(0.0), "{series} in:\n{text}");
            }
        }
        for series in [
            "pilot_xds",
            "pilot_proxy_convergence_time_count",
            "pilot_services",
            "pilot_virt_services",
            "weftd_config_diagnostics{level=\"error\"}",
            "weftd_config_diagnostics{level=\"warning\"}",
        ] {
            assert_eq!(value(&text, series), Some(0.0), "{series} in:\n{text}");
        }
        assert!(
            !text.contains("pilot_xds_pushes_total") && !text.contains("rejects_total"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pilot_xds_push_time histogram\n"),
            "{text}"
        );
    }

    #[test]
    fn a_histogram_counts_each_observation_in_its_le_bucket() {
        let mut registry = Registry::default();
        let h = Histogram::new(&[0.1, 1.0]);
        registry.register("h", "help", h.clone());
        for ms in [50, 100, 101, 5000] {
            h.observe(Duration::from_millis(ms));
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).expect("encode");
        // 100 ms is in the 0.1 bucket (le); 5 s only in +Inf.
        for (series, want) in [
            ("h_bucket{le=\"0.1\"}", 2.0),
            ("h_bucket{le=\"1\"}", 3.0),
            ("h_bucket{le=\"+Inf\"}", 4.0),
            ("h_count", 4.0),
            ("h_sum", 5.251),
        ] {
            let got = value(&text, series).unwrap_or_else(|| panic!("{series} in:\n{text}"));
            assert!((got - want).abs() < 1e-9, "{series}: {got} != {want}");
        }
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn each_xds_metric_moves_with_its_event() {
        let m = Metrics::new();
        let x = &m.xds;
        x.connected();
        x.connected();
        x.disconnected();
        x.pushed(1, Duration::from_millis(2));
        x.rejected(3, true);
        x.rejected(3, false);
        x.converged(Duration::from_millis(300));
        let text = m.encode(&Model::default());
        for (series, want) in [
            ("pilot_xds", 1.0),
            ("pilot_xds_pushes{type=\"eds\"}", 1.0),
            ("pilot_xds_pushes{type=\"cds\"}", 0.0),
            ("pilot_xds_push_time_bucket{type=\"eds\",le=\"0.005\"}", 1.0),
            ("pilot_xds_push_time_bucket{type=\"eds\",le=\"0.001\"}", 0.0),
            ("pilot_total_xds_rejects{type=\"rds\"}", 2.0),
            ("pilot_xds_rds_reject", 1.0),
            ("pilot_proxy_convergence_time_bucket{le=\"0.5\"}", 1.0),
            ("pilot_proxy_convergence_time_bucket{le=\"0.1\"}", 0.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
        }
        x.no_longer_refusing(3);
        let text = m.encode(&Model::default());
        assert_eq!(value(&text, "pilot_xds_rds_reject"), Some(0.0), "{text}");
    }

    #[test]
    fn the_model_gauges_count_services_virtual_services_and_problems() {
        let yaml = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [reviews]
  http: [{timeout: soon, route: [{destination: {host: reviews}}]}]
";
        let parsed = weft_api::parse_file("m.yaml", yaml);
        let errors = parsed.diagnostics.iter().filter(|d| d.is_error()).count();
        assert_eq!(errors, 1, "{:?}", parsed.diagnostics);
        let res: Vec<_> = parsed.resources.into_iter().map(Arc::new).collect();
        let model = Model::build_with(1, &res, weft_api::MeshConfig::default(), parsed.diagnostics);
        let text = Metrics::new().encode(&model);
        for (series, want) in [
            ("pilot_services", 1.0),
            ("pilot_virt_services", 1.0),
            ("weftd_config_diagnostics{level=\"error\"}", 1.0),
        ] {
            assert_eq!(value(&text, series), Some(want), "{series} in:\n{text}");
        }
    }

    #[test]
    fn proc_files_are_read_as_the_prometheus_clients_read_them() {
        // A command name with a space and a parenthesis, as a thread may name itself.
        let stat = "4242 (weft d) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 3 0 \
                    123456 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcessStat {
                cpu_seconds: 3.0,
                virtual_bytes: 104_857_600,
                start_ticks: 123_456,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_rss("Name:\tweftd\nVmRSS:\t   10240 kB\nThreads:\t3\n"),
            Some(10_485_760)
        );
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             127331               127331               processes \n\
                      Max open files            1024                 1048576              files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reports_its_own_figures() {
        let text = Metrics::new().encode(&Model::default());
        let get = |s: &str| value(&text, s).unwrap_or_else(|| panic!("{s} in:\n{text}"));
        assert!(get("process_resident_memory_bytes") > 0.0);
        assert!(get("process_virtual_memory_bytes") > 0.0);
        assert!(get("process_open_fds") >= 3.0);
        assert!(get("process_max_fds") >= get("process_open_fds"));
        assert!(get("process_cpu_seconds_total") >= 0.0);
        // After 2023-11-14, before 2100.
        let start = get("process_start_time_seconds");
        assert!((1.7e9..4.1e9).contains(&start), "{start}");
    }
}
