//! The results: one [`Sample`] per load run, folded into the published JSON rows (median of the runs, added
//! latency over `direct`) and a Markdown table per workload with the spread of every figure.

use crate::load::{LoadResult, Rate, Workload, TCP_CHUNK};
use crate::run::targets::Target;
use crate::stats::{median, round1, spread, Latencies};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One load run against one target.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Round number, from 1.
    pub round: usize,
    /// Target.
    pub target: Target,
    /// Workload.
    pub workload: Workload,
    /// Rate.
    pub rate: Rate,
    /// What the load generator measured.
    pub load: LoadResult,
    /// CPU seconds of the target's proxy processes during the run (none for direct).
    pub proxy_cpu_s: Option<f64>,
    /// Steady resident memory of the proxy processes, KiB.
    pub rss_steady_kb: Option<u64>,
    /// Peak resident memory, KiB.
    pub rss_peak_kb: Option<u64>,
    /// CPU 1 (the proxies' core) busy with processes other than the target's during the run, seconds:
    /// other people's builds on a shared machine show here.
    pub foreign_cpu_s: Option<f64>,
    /// CPU steal time over both CPUs during the run, seconds (the hypervisor running someone else).
    pub steal_s: Option<f64>,
    /// Wall time the CPU and steal figures cover (the load generator's whole life), seconds.
    pub window_s: f64,
}

/// Folds the slices of one round of one step into one sample per target: latency histograms merged (the
/// percentiles are those of all the slices' requests together), counts and CPU summed, steady memory the
/// median of the slices' and peak the highest. Targets keep the order of their first slice. A target with
/// one slice, or whose slices carry no histogram, is returned as measured (without a histogram, only the
/// first slice is kept: percentiles cannot be merged).
pub fn merge_slices(parts: Vec<Sample>) -> Vec<Sample> {
    let mut order: Vec<Target> = Vec::new();
    let mut by_target: BTreeMap<Target, Vec<Sample>> = BTreeMap::new();
    for p in parts {
        if !by_target.contains_key(&p.target) {
            order.push(p.target);
        }
        by_target.entry(p.target).or_default().push(p);
    }
    order
        .into_iter()
        .filter_map(|t| by_target.remove(&t))
        .filter_map(merge_one)
        .collect()
}

fn merge_one(slices: Vec<Sample>) -> Option<Sample> {
    if slices.len() <= 1 || slices.iter().any(|s| s.load.histogram.is_empty()) {
        return slices.into_iter().next();
    }
    let mut hist = Latencies::new();
    for s in &slices {
        hist.merge(&Latencies::from_counts(&s.load.histogram));
    }
    let p = hist.summary();
    let requests: u64 = slices.iter().map(|s| s.load.requests).sum();
    let duration_s: f64 = slices.iter().map(|s| s.load.duration_s).sum();
    let sum_opt = |f: fn(&Sample) -> Option<f64>| -> Option<f64> {
        slices.iter().map(f).sum::<Option<f64>>()
    };
    let steady: Vec<f64> = slices
        .iter()
        .filter_map(|s| s.rss_steady_kb)
        .map(|k| k as f64)
        .collect();
    let merged = Sample {
        round: slices[0].round,
        target: slices[0].target,
        workload: slices[0].workload,
        rate: slices[0].rate,
        load: LoadResult {
            p50_us: p.p50_us,
            p90_us: p.p90_us,
            p99_us: p.p99_us,
            p999_us: p.p999_us,
            rps: round1(requests as f64 / duration_s.max(1e-9)),
            errors: slices.iter().map(|s| s.load.errors).sum(),
            requests,
            bytes: slices.iter().map(|s| s.load.bytes).sum(),
            duration_s,
            histogram: hist.counts(),
        },
        proxy_cpu_s: sum_opt(|s| s.proxy_cpu_s),
        rss_steady_kb: median(&steady).map(|m| m.round() as u64),
        rss_peak_kb: slices.iter().filter_map(|s| s.rss_peak_kb).max(),
        foreign_cpu_s: sum_opt(|s| s.foreign_cpu_s),
        steal_s: sum_opt(|s| s.steal_s),
        window_s: slices.iter().map(|s| s.window_s).sum(),
    };
    Some(merged)
}

/// A (target, workload, rate) that was not measured, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unsupported {
    /// Target.
    pub target: Target,
    /// Workload.
    pub workload: Workload,
    /// Rate.
    pub rate: Rate,
    /// Why.
    pub note: String,
}

/// A row of `data_plane`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Target name.
    pub target: String,
    /// Workload name.
    pub workload: Workload,
    /// 1000, 5000 or "max".
    pub rate: Rate,
    /// Mutual TLS between the two hops (`weft-2hop-mtls` and the TLS peers).
    pub mtls: bool,
    /// Istio's standard metrics on (not implemented yet).
    pub telemetry: bool,
    /// Runs the figures are the median of.
    pub runs: usize,
    /// Median P50, µs.
    pub p50_us: Option<f64>,
    /// Median P90, µs.
    pub p90_us: Option<f64>,
    /// Median P99, µs.
    pub p99_us: Option<f64>,
    /// Median P99.9, µs.
    pub p999_us: Option<f64>,
    /// P50 minus direct's for the same workload and rate.
    pub added_p50_us: Option<f64>,
    /// P99 minus direct's.
    pub added_p99_us: Option<f64>,
    /// Requests per second (tcp-stream: 16 KiB writes per second).
    pub rps: Option<f64>,
    /// Failed requests.
    pub errors: Option<u64>,
    /// CPU seconds of the proxy processes during the run.
    pub proxy_cpu_s: Option<f64>,
    /// Requests per CPU-second of the proxy processes.
    pub req_per_cpu_s: Option<f64>,
    /// Steady resident memory of the proxy processes, KiB.
    pub proxy_rss_kb: Option<u64>,
    /// Why there are no figures, when there are none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A target that could not be run at all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unavailable {
    /// Target name.
    pub target: String,
    /// Why.
    pub reason: String,
}

/// The machine the run was on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub cpus: usize,
    /// CPU model.
    pub model: String,
    /// Kernel release.
    pub kernel: String,
}

/// `bench/results/latest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// When (UTC, RFC 3339).
    pub date: String,
    /// Where.
    pub machine: Machine,
    /// weft, nginx, haproxy, pingora, rustc.
    pub versions: BTreeMap<String, String>,
    /// "full" or "quick".
    pub mode: String,
    /// Proxy figures.
    pub data_plane: Vec<Row>,
    /// What `weft-xds-sim --json` printed (an array), or empty.
    pub control_plane: serde_json::Value,
    /// Targets that did not run.
    pub unavailable: Vec<Unavailable>,
    /// Anything a reader must know (pinning off, control plane missing, …).
    #[serde(default)]
    pub notes: Vec<String>,
}

type Key = (Workload, Rate, Target);

fn group(samples: &[Sample]) -> BTreeMap<Key, Vec<&Sample>> {
    let mut g: BTreeMap<Key, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        g.entry((s.workload, s.rate, s.target)).or_default().push(s);
    }
    g
}

fn med(v: &[&Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let xs: Vec<f64> = v.iter().filter_map(|s| f(s)).collect();
    median(&xs).map(round1)
}

fn req_per_cpu(s: &Sample) -> Option<f64> {
    let cpu = s.proxy_cpu_s?;
    (cpu > 0.0).then(|| s.load.requests as f64 / cpu)
}

/// Folds the samples into rows: every measured key plus every unsupported one, in report order
/// (workload, rate, target).
pub fn rows(samples: &[Sample], unsupported: &[Unsupported]) -> Vec<Row> {
    let g = group(samples);
    let mut out: BTreeMap<Key, Row> = BTreeMap::new();
    for (&(workload, rate, target), v) in &g {
        let p50 = med(v, |s| Some(s.load.p50_us));
        let p99 = med(v, |s| Some(s.load.p99_us));
        let direct = g.get(&(workload, rate, Target::Direct));
        let added = |mine: Option<f64>, f: fn(&Sample) -> Option<f64>| {
            let d = med(direct?, f)?;
            let mine = mine?;
            (target != Target::Direct).then(|| round1(mine - d))
        };
        let errors: Vec<f64> = v.iter().map(|s| s.load.errors as f64).collect();
        out.insert(
            (workload, rate, target),
            Row {
                target: target.name().into(),
                workload,
                rate,
                mtls: target.mtls(),
                telemetry: target.telemetry(),
                runs: v.len(),
                p50_us: p50,
                p90_us: med(v, |s| Some(s.load.p90_us)),
                p99_us: p99,
                p999_us: med(v, |s| Some(s.load.p999_us)),
                added_p50_us: added(p50, |s| Some(s.load.p50_us)),
                added_p99_us: added(p99, |s| Some(s.load.p99_us)),
                rps: med(v, |s| Some(s.load.rps)),
                errors: median(&errors).map(|e| e.ceil() as u64),
                proxy_cpu_s: median(&v.iter().filter_map(|s| s.proxy_cpu_s).collect::<Vec<_>>())
                    .map(|c| (c * 1000.0).round() / 1000.0),
                req_per_cpu_s: med(v, req_per_cpu).map(f64::round),
                proxy_rss_kb: med(v, |s| s.rss_steady_kb.map(|k| k as f64)).map(|k| k as u64),
                note: None,
            },
        );
    }
    for u in unsupported {
        out.entry((u.workload, u.rate, u.target)).or_insert(Row {
            target: u.target.name().into(),
            workload: u.workload,
            rate: u.rate,
            mtls: u.target.mtls(),
            telemetry: u.target.telemetry(),
            runs: 0,
            p50_us: None,
            p90_us: None,
            p99_us: None,
            p999_us: None,
            added_p50_us: None,
            added_p99_us: None,
            rps: None,
            errors: None,
            proxy_cpu_s: None,
            req_per_cpu_s: None,
            proxy_rss_kb: None,
            note: Some(u.note.clone()),
        });
    }
    out.into_values().collect()
}

/// "median (min–max)", or just the median when the runs agree or there is one.
fn cell(values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    match (median(values), spread(values)) {
        (Some(m), Some((lo, hi))) if values.len() > 1 && fmt(lo) != fmt(hi) => {
            format!("{} ({}–{})", fmt(m), fmt(lo), fmt(hi))
        }
        (Some(m), _) => fmt(m),
        _ => "—".into(),
    }
}

fn us(x: f64) -> String {
    format!("{x:.0}")
}

fn signed(x: f64) -> String {
    format!("{x:+.0}")
}

fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// The Markdown report: machine, versions, date, then one table per workload.
pub fn markdown(results: &Results, samples: &[Sample], unsupported: &[Unsupported]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Weft benchmark ({} mode)\n", results.mode);
    let _ = writeln!(md, "- date: {}", results.date);
    let _ = writeln!(
        md,
        "- machine: {} CPUs, {}, Linux {}",
        results.machine.cpus, results.machine.model, results.machine.kernel
    );
    let versions: Vec<String> = results
        .versions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(md, "- versions: {}", versions.join("; "));
    let rounds = samples.iter().map(|s| s.round).max().unwrap_or(0);
    let _ = writeln!(
        md,
        "- method: `bench/run` (shared/design/PERFORMANCE.md); {rounds} round(s), targets interleaved in each; \
         load generator and upstream on CPU 0, proxies on CPU 1; open-loop latency corrected for coordinated \
         omission; each cell is the median of the rounds with the spread (min–max) in brackets"
    );
    for n in &results.notes {
        let _ = writeln!(md, "- note: {n}");
    }
    if !results.unavailable.is_empty() {
        let _ = writeln!(md, "\nUnavailable targets:\n");
        for u in &results.unavailable {
            let _ = writeln!(md, "- {}: {}", u.target, u.reason);
        }
    }
    let g = group(samples);
    for w in Workload::ALL {
        let keys: Vec<&Key> = g.keys().filter(|k| k.0 == w).collect();
        let unsup: Vec<&Unsupported> = unsupported.iter().filter(|u| u.workload == w).collect();
        if keys.is_empty() && unsup.is_empty() {
            continue;
        }
        let _ = writeln!(md, "\n## {w}\n");
        if w == Workload::TcpStream {
            let _ = writeln!(
                md,
                "Closed loop, {} KiB writes; throughput in MB/s (10^6 bytes); latency is the time of one write.\n",
                TCP_CHUNK / 1024
            );
            let _ = writeln!(
                md,
                "| target | rate | MB/s | errors | proxy vCPU | MB per CPU-s | RSS steady / peak (MB) |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        } else {
            if w == Workload::TcpNewConn {
                let _ = writeln!(
                    md,
                    "A new TCP connection per exchange ({} bytes written, half-closed, until the far end \
                     closes): between two TLS hops each is one handshake, so req per CPU-s is handshakes \
                     per CPU-second.\n",
                    crate::load::TCP_NEW_CONN_SIZE
                );
            }
            let _ = writeln!(
                md,
                "| target | rate | P50 µs | P99 µs | P99.9 µs | added P50 / P99 µs | req/s | errors | proxy vCPU | req per CPU-s | RSS steady / peak (MB) |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
        }
        let rows_for_rate =
            |rate: Rate| -> Vec<&Key> { keys.iter().copied().filter(|k| k.1 == rate).collect() };
        let mut rates: Vec<Rate> = keys.iter().map(|k| k.1).collect();
        rates.extend(unsup.iter().map(|u| u.rate));
        rates.sort();
        rates.dedup();
        for rate in rates {
            let direct = g.get(&(w, rate, Target::Direct));
            for t in Target::ALL {
                let key = (w, rate, t);
                let Some(v) = rows_for_rate(rate)
                    .into_iter()
                    .find(|k| **k == key)
                    .and_then(|k| g.get(k))
                else {
                    if let Some(u) = unsup.iter().find(|u| u.rate == rate && u.target == t) {
                        let cols = if w == Workload::TcpStream { 5 } else { 9 };
                        let _ = writeln!(
                            md,
                            "| {} | {rate} | {}{} |",
                            t.name(),
                            format_args!("unsupported: {}", u.note),
                            " |".repeat(cols - 1)
                        );
                    }
                    continue;
                };
                let f = |get: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
                    v.iter().filter_map(|s| get(s)).collect()
                };
                let vcpu = f(&|s| Some(s.proxy_cpu_s? / s.load.duration_s.max(1e-9)));
                let rss = {
                    let steady = f(&|s| s.rss_steady_kb.map(|k| k as f64 / 1024.0));
                    let peak = f(&|s| s.rss_peak_kb.map(|k| k as f64 / 1024.0));
                    if steady.is_empty() {
                        "—".to_string()
                    } else {
                        format!(
                            "{} / {}",
                            cell(&steady, |x| format!("{x:.1}")),
                            cell(&peak, |x| format!("{x:.1}"))
                        )
                    }
                };
                let errors = cell(&f(&|s| Some(s.load.errors as f64)), thousands);
                let vcpu_cell = cell(&vcpu, |x| format!("{x:.2}"));
                if w == Workload::TcpStream {
                    let mbs = f(&|s| Some(s.load.bytes as f64 / s.load.duration_s.max(1e-9) / 1e6));
                    let per_cpu = f(&|s| {
                        let c = s.proxy_cpu_s?;
                        (c > 0.0).then(|| s.load.bytes as f64 / 1e6 / c)
                    });
                    let _ = writeln!(
                        md,
                        "| {} | {rate} | {} | {errors} | {vcpu_cell} | {} | {rss} |",
                        t.name(),
                        cell(&mbs, |x| format!("{x:.0}")),
                        cell(&per_cpu, |x| format!("{x:.0}")),
                    );
                    continue;
                }
                let added = match direct {
                    Some(d) if t != Target::Direct => {
                        let dm = |get: fn(&Sample) -> f64| {
                            median(&d.iter().map(|s| get(s)).collect::<Vec<_>>())
                        };
                        let mine = |get: fn(&Sample) -> f64| {
                            median(&v.iter().map(|s| get(s)).collect::<Vec<_>>())
                        };
                        match (
                            mine(|s| s.load.p50_us),
                            dm(|s| s.load.p50_us),
                            mine(|s| s.load.p99_us),
                            dm(|s| s.load.p99_us),
                        ) {
                            (Some(a), Some(b), Some(c), Some(e)) => {
                                format!("{} / {}", signed(a - b), signed(c - e))
                            }
                            _ => "—".into(),
                        }
                    }
                    _ => "—".into(),
                };
                let _ = writeln!(
                    md,
                    "| {} | {rate} | {} | {} | {} | {added} | {} | {errors} | {vcpu_cell} | {} | {rss} |",
                    t.name(),
                    cell(&f(&|s| Some(s.load.p50_us)), us),
                    cell(&f(&|s| Some(s.load.p99_us)), us),
                    cell(&f(&|s| Some(s.load.p999_us)), us),
                    cell(&f(&|s| Some(s.load.rps)), thousands),
                    cell(&f(&req_per_cpu), thousands),
                );
            }
        }
    }
    if let Some(arr) = results.control_plane.as_array() {
        let _ = writeln!(md, "\n## Control plane\n");
        if arr.is_empty() {
            let _ = writeln!(md, "No figures (see the notes above).");
        } else {
            md.push_str(&json_table(arr));
        }
    }
    md
}

/// An array of JSON objects (what `weft-xds-sim --json` prints) as a Markdown table: one column per key,
/// in the order keys first appear.
pub fn json_table(rows: &[serde_json::Value]) -> String {
    let mut keys: Vec<&str> = Vec::new();
    for r in rows {
        for k in r.as_object().into_iter().flat_map(|o| o.keys()) {
            if !keys.contains(&k.as_str()) {
                keys.push(k);
            }
        }
    }
    let mut t = format!("| {} |\n|{}\n", keys.join(" | "), "---|".repeat(keys.len()));
    for r in rows {
        let cells: Vec<String> = keys
            .iter()
            .map(|k| match r.get(*k) {
                None | Some(serde_json::Value::Null) => "—".into(),
                Some(serde_json::Value::String(s)) => s.replace('|', "\\|"),
                Some(v) => v.to_string(),
            })
            .collect();
        let _ = writeln!(t, "| {} |", cells.join(" | "));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        round: usize,
        target: Target,
        rate: Rate,
        p50: f64,
        p99: f64,
        cpu: Option<f64>,
    ) -> Sample {
        Sample {
            round,
            target,
            workload: Workload::Http1KeepAlive,
            rate,
            load: LoadResult {
                p50_us: p50,
                p90_us: p50 + 10.0,
                p99_us: p99,
                p999_us: p99 + 100.0,
                rps: 1000.0,
                errors: 0,
                requests: 8000,
                bytes: 8000 * 1024,
                duration_s: 8.0,
                histogram: Vec::new(),
            },
            proxy_cpu_s: cpu,
            rss_steady_kb: cpu.map(|_| 6000),
            rss_peak_kb: cpu.map(|_| 6500),
            foreign_cpu_s: None,
            steal_s: None,
            window_s: 8.5,
        }
    }

    fn three_rounds() -> Vec<Sample> {
        let r = Rate::Fixed(1000);
        vec![
            sample(1, Target::Direct, r, 130.0, 300.0, None),
            sample(1, Target::Nginx, r, 230.0, 420.0, Some(0.6)),
            sample(2, Target::Direct, r, 120.0, 310.0, None),
            sample(2, Target::Nginx, r, 250.0, 440.0, Some(0.7)),
            sample(3, Target::Direct, r, 140.0, 290.0, None),
            sample(3, Target::Nginx, r, 220.0, 426.0, Some(0.64)),
        ]
    }

    #[test]
    fn slices_merge_into_one_sample_per_target() {
        use std::time::Duration;
        let sliced = |target, lo_us: u64, cpu: Option<f64>, rss: u64| {
            let mut l = Latencies::new();
            for us in lo_us..lo_us + 100 {
                l.record(Duration::from_micros(us));
            }
            let mut s = sample(1, target, Rate::Fixed(1000), 0.0, 0.0, cpu);
            s.load.requests = 100;
            s.load.duration_s = 2.0;
            s.load.histogram = l.counts();
            s.rss_steady_kb = cpu.map(|_| rss);
            s.rss_peak_kb = cpu.map(|_| rss + 10);
            s
        };
        let parts = vec![
            sliced(Target::Weft1Hop, 100, Some(0.5), 6000),
            sliced(Target::Direct, 10, None, 0),
            sliced(Target::Weft1Hop, 300, Some(0.25), 7000),
            sliced(Target::Direct, 30, None, 0),
            sliced(Target::Weft1Hop, 200, Some(0.25), 6500),
        ];
        let merged = merge_slices(parts);
        let targets: Vec<Target> = merged.iter().map(|s| s.target).collect();
        assert_eq!(targets, vec![Target::Weft1Hop, Target::Direct]);
        let w = &merged[0];
        // 100..400 µs, one request each: the median of all the slices together, not of one slice.
        assert_eq!(w.load.requests, 300);
        assert!((w.load.p50_us - 250.0).abs() <= 1.0, "{}", w.load.p50_us);
        assert!((w.load.p99_us - 397.0).abs() <= 1.0, "{}", w.load.p99_us);
        assert_eq!(w.load.rps, 50.0);
        assert_eq!(w.proxy_cpu_s, Some(1.0));
        assert_eq!(w.rss_steady_kb, Some(6500));
        assert_eq!(w.rss_peak_kb, Some(7010));
        let d = &merged[1];
        assert_eq!(d.load.requests, 200);
        assert_eq!(d.proxy_cpu_s, None);

        // Without histograms nothing can be merged: the first slice stands.
        let mut bare = sample(1, Target::Nginx, Rate::Fixed(1000), 150.0, 400.0, Some(0.1));
        bare.load.histogram.clear();
        let mut second = bare.clone();
        second.load.p50_us = 999.0;
        let kept = merge_slices(vec![bare, second]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].load.p50_us, 150.0);
    }

    #[test]
    fn rows_are_medians_and_added_is_against_direct() {
        let unsupported = vec![Unsupported {
            target: Target::Weft1Hop,
            workload: Workload::TcpStream,
            rate: Rate::Max,
            note: "weft-proxy has no opaque TCP proxying yet".into(),
        }];
        let rows = rows(&three_rounds(), &unsupported);
        assert_eq!(rows.len(), 3);
        let direct = &rows[0];
        assert_eq!(direct.target, "direct");
        assert_eq!(direct.p50_us, Some(130.0));
        assert_eq!(direct.added_p50_us, None);
        assert_eq!(direct.proxy_cpu_s, None);
        let nginx = &rows[1];
        assert_eq!(nginx.target, "nginx-1hop");
        assert_eq!(nginx.runs, 3);
        assert_eq!(nginx.p50_us, Some(230.0));
        assert_eq!(nginx.added_p50_us, Some(100.0));
        assert_eq!(nginx.added_p99_us, Some(126.0));
        assert_eq!(nginx.proxy_cpu_s, Some(0.64));
        assert_eq!(nginx.req_per_cpu_s, Some(12500.0));
        assert_eq!(nginx.proxy_rss_kb, Some(6000));
        let tcp = &rows[2];
        assert_eq!(tcp.runs, 0);
        assert!(tcp.note.as_deref().is_some_and(|n| n.contains("TCP")));
    }

    #[test]
    fn json_has_exactly_the_published_shape() {
        let samples = three_rounds();
        let results = Results {
            date: "2026-01-01T00:00:00Z".into(),
            machine: Machine {
                cpus: 2,
                model: "x".into(),
                kernel: "6.1".into(),
            },
            versions: BTreeMap::from([("weft".to_string(), "0.1.0".to_string())]),
            mode: "quick".into(),
            data_plane: rows(&samples, &[]),
            control_plane: serde_json::json!([]),
            unavailable: vec![Unavailable {
                target: "pingora-1hop".into(),
                reason: "did not build".into(),
            }],
            notes: vec![],
        };
        let v = serde_json::to_value(&results).expect("ser");
        for k in [
            "date",
            "machine",
            "versions",
            "mode",
            "data_plane",
            "control_plane",
            "unavailable",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        for k in ["cpus", "model", "kernel"] {
            assert!(v["machine"].get(k).is_some(), "missing machine.{k}");
        }
        let row = &v["data_plane"][1];
        let keys: Vec<&str> = row
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut want = vec![
            "target",
            "workload",
            "rate",
            "mtls",
            "telemetry",
            "runs",
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "added_p50_us",
            "added_p99_us",
            "rps",
            "errors",
            "proxy_cpu_s",
            "req_per_cpu_s",
            "proxy_rss_kb",
        ];
        let mut got = keys.clone();
        got.sort();
        want.sort();
        assert_eq!(got, want);
        assert_eq!(row["rate"], serde_json::json!(1000));
        assert_eq!(row["workload"], serde_json::json!("http1-keepalive-1k"));
        assert_eq!(row["mtls"], serde_json::json!(false));
        assert_eq!(
            v["unavailable"][0]["reason"],
            serde_json::json!("did not build")
        );
        let back: Results = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, results);
    }

    #[test]
    fn mtls_rows_say_so() {
        let r = Rate::Max;
        let samples = vec![
            sample(1, Target::Weft2Hop, r, 100.0, 200.0, Some(0.5)),
            sample(1, Target::Weft2HopMtls, r, 110.0, 220.0, Some(0.6)),
            sample(1, Target::Nginx2HopTls, r, 120.0, 230.0, Some(0.6)),
        ];
        let mtls: Vec<(String, bool)> = rows(&samples, &[])
            .into_iter()
            .map(|row| (row.target, row.mtls))
            .collect();
        assert_eq!(
            mtls,
            vec![
                ("weft-2hop".to_string(), false),
                ("weft-2hop-mtls".to_string(), true),
                ("nginx-2hop-tls".to_string(), true),
            ]
        );
    }

    #[test]
    fn markdown_shows_spread_and_unsupported() {
        let samples = three_rounds();
        let unsupported = vec![Unsupported {
            target: Target::Pingora,
            workload: Workload::TcpStream,
            rate: Rate::Max,
            note: "HTTP only".into(),
        }];
        let results = Results {
            date: "d".into(),
            machine: Machine {
                cpus: 2,
                model: "m".into(),
                kernel: "k".into(),
            },
            versions: BTreeMap::new(),
            mode: "full".into(),
            data_plane: rows(&samples, &unsupported),
            control_plane: serde_json::json!([]),
            unavailable: vec![],
            notes: vec![],
        };
        let md = markdown(&results, &samples, &unsupported);
        assert!(
            md.contains("| nginx-1hop | 1000 | 230 (220–250) | 426 (420–440) |"),
            "{md}"
        );
        assert!(md.contains("+100 / +126"), "{md}");
        assert!(md.contains("12,500 (11,429–13,333)"), "{md}");
        assert!(md.contains("## tcp-stream"), "{md}");
        assert!(md.contains("unsupported: HTTP only"), "{md}");
    }

    #[test]
    fn control_plane_table() {
        let rows = vec![
            serde_json::json!({"proxies": 100, "push_p99_ms": 164.0}),
            serde_json::json!({"proxies": 1000, "error": "a|b"}),
        ];
        let t = json_table(&rows);
        assert_eq!(
            t,
            "| proxies | push_p99_ms | error |\n|---|---|---|\n| 100 | 164.0 | — |\n| 1000 | — | a\\|b |\n"
        );
    }

    #[test]
    fn thousands_separators() {
        for (x, s) in [
            (0.0, "0"),
            (999.0, "999"),
            (1000.0, "1,000"),
            (1234567.4, "1,234,567"),
            (-2500.0, "-2,500"),
        ] {
            assert_eq!(thousands(x), s);
        }
    }
}
