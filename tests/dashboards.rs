//! The Grafana dashboards of `samples/addons/grafana`: each parses and has the shape Grafana imports
//! (panels placed on the 24-column grid, every target on the `$datasource` variable), and every query
//! can be extracted and filled in. Whether Prometheus accepts the queries and finds data is
//! `prometheus.rs`'s. Needs no binaries.

use std::collections::{BTreeMap, BTreeSet};
use weft_e2e::grafana::{self, Dashboard, Source, BUILTINS};

/// The files and what each dashboard's panels read: the control plane only weftd's own metrics,
/// the others only the proxies' standard metrics.
const DASHBOARDS: [(&str, &[&str]); 4] = [
    ("weft-control-plane.json", &["pilot_", "process_", "weftd_"]),
    ("weft-mesh.json", &["istio_"]),
    ("weft-service.json", &["istio_"]),
    ("weft-workload.json", &["istio_"]),
];

fn all() -> Vec<Dashboard> {
    grafana::load_all().expect("the dashboards load")
}

#[test]
fn every_dashboard_is_there_and_parses() {
    let files: Vec<String> = all()
        .iter()
        .map(|d| {
            d.file
                .file_name()
                .expect("a file")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let want: Vec<&str> = DASHBOARDS.iter().map(|(f, _)| *f).collect();
    assert_eq!(files, want);
}

#[test]
fn each_dashboard_has_the_shape_grafana_imports() {
    let mut uids = BTreeSet::new();
    for d in all() {
        let name = d.file.display().to_string();
        let j = &d.json;
        assert!(!d.title().is_empty(), "{name}: title");
        let uid = j["uid"].as_str().unwrap_or_default();
        assert!(
            !uid.is_empty() && uid.len() <= 40,
            "{name}: uid {uid:?} (Grafana allows 40 characters)"
        );
        assert!(uids.insert(uid.to_string()), "{name}: uid {uid} repeated");
        assert!(
            j["schemaVersion"].as_u64().is_some(),
            "{name}: schemaVersion"
        );
        assert!(
            j["tags"]
                .as_array()
                .is_some_and(|t| t.contains(&"weft".into())),
            "{name}: tagged weft (the dashboards link to each other by tag)"
        );

        // The data source is a variable, so the dashboard imports into any Grafana.
        let vars = d.variables();
        let ds = vars
            .iter()
            .find(|v| v.name == "datasource")
            .unwrap_or_else(|| panic!("{name}: a datasource variable"));
        assert_eq!(ds.kind, "datasource", "{name}");
        let raw = j["templating"]["list"].as_array().expect("templating.list");
        for v in raw {
            let vname = v["name"].as_str().unwrap_or_default();
            if v["type"] == "datasource" {
                assert_eq!(v["query"], "prometheus", "{name}: ${vname}");
            } else {
                assert_eq!(
                    v["datasource"]["uid"], "${datasource}",
                    "{name}: ${vname} queries the chosen data source"
                );
                assert!(
                    vars.iter().any(|x| x.name == vname && x.query.is_some()),
                    "{name}: ${vname} has a query"
                );
            }
        }

        // Panels: on the grid, not overlapping, each with targets on the data source variable.
        let mut cells = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for p in j["panels"].as_array().expect("panels") {
            let title = p["title"].as_str().unwrap_or_default();
            let g = &p["gridPos"];
            let (x, y, w, h) = (
                g["x"].as_u64().expect("x"),
                g["y"].as_u64().expect("y"),
                g["w"].as_u64().expect("w"),
                g["h"].as_u64().expect("h"),
            );
            assert!(w > 0 && h > 0 && x + w <= 24, "{name}: {title:?} at {g}");
            for cx in x..x + w {
                for cy in y..y + h {
                    assert!(
                        cells.insert((cx, cy)),
                        "{name}: {title:?} overlaps at {cx},{cy}"
                    );
                }
            }
            assert!(
                ids.insert(p["id"].as_u64().expect("id")),
                "{name}: {title:?} id"
            );
        }
        let panels = d.panels();
        assert!(panels.len() >= 4, "{name}: {} panels", panels.len());
        for p in panels {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: a panel without a title");
            assert!(
                p["description"].as_str().is_some_and(|s| !s.is_empty()),
                "{name}: {title:?} says what it shows"
            );
            assert_eq!(p["datasource"]["uid"], "${datasource}", "{name}: {title:?}");
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: {title:?} has no query");
            let mut refs = BTreeSet::new();
            for t in targets {
                let r = t["refId"].as_str().unwrap_or_default();
                assert!(refs.insert(r), "{name}: {title:?} refId {r:?} repeated");
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{name}: {title:?} {r}"
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{name}: {title:?} {r} has no expression"
                );
            }
        }
    }
}

/// Every query: its brackets balance, it reads only the metrics its dashboard is about, and every
/// variable it uses is defined and used as a regular expression (`=~"$var"`), so that "All" (`.*`)
/// and the tests' `.*` select everything.
#[test]
fn every_query_is_extracted_and_filled_in() {
    for (file, prefixes) in DASHBOARDS {
        let d = grafana::load(file).expect("load");
        let queries = d.queries();
        let panel_queries = queries
            .iter()
            .filter(|q| matches!(q.source, Source::Panel { .. }))
            .count();
        assert!(panel_queries >= 10, "{file}: {panel_queries} panel queries");
        let defined: BTreeSet<String> = d.variables().into_iter().map(|v| v.name).collect();
        let values = d.default_values();
        for q in &queries {
            let e = &q.expr;
            for (open, close) in [('(', ')'), ('{', '}'), ('[', ']')] {
                assert_eq!(
                    e.matches(open).count(),
                    e.matches(close).count(),
                    "{file}: {q}: unbalanced {open}{close}"
                );
            }
            for metric in metric_names(e) {
                assert!(
                    prefixes.iter().any(|p| metric.starts_with(p)),
                    "{file}: {q}: reads {metric}, not one of {prefixes:?}"
                );
            }
            for v in grafana::variables_used(e) {
                if BUILTINS.iter().any(|(b, _)| *b == v) {
                    continue;
                }
                assert!(defined.contains(&v), "{file}: {q}: ${v} is not defined");
                assert!(
                    e.contains(&format!("=~\"${v}\"")),
                    "{file}: {q}: ${v} is not used as =~\"${v}\""
                );
            }
            let filled = grafana::expand(e, &values).unwrap_or_else(|err| panic!("{file}: {err}"));
            assert!(!filled.contains('$'), "{file}: {filled}");
        }
    }
}

#[test]
fn the_control_plane_dashboard_reads_every_pilot_metric_weftd_serves() {
    let d = grafana::load("weft-control-plane.json").expect("load");
    let read: BTreeSet<String> = d
        .queries()
        .iter()
        .flat_map(|q| metric_names(&q.expr))
        .collect();
    for m in [
        "pilot_xds",
        "pilot_xds_pushes",
        "pilot_xds_push_time_bucket",
        "pilot_proxy_convergence_time_bucket",
        "pilot_total_xds_rejects",
        "pilot_xds_cds_reject",
        "pilot_xds_eds_reject",
        "pilot_xds_lds_reject",
        "pilot_xds_rds_reject",
        "pilot_services",
        "pilot_virt_services",
        "weftd_config_diagnostics",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(read.contains(m), "{m} is not on the dashboard: {read:?}");
    }
}

#[test]
fn variables_are_expanded_in_both_spellings_and_a_missing_one_is_named() {
    let vars: BTreeMap<String, String> = [("service", "reviews.*"), ("__rate_interval", "1m")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        grafana::expand(
            "rate(x{s=~\"$service\",t=~\"${service:regex}\"}[$__rate_interval])",
            &vars
        )
        .expect("expand"),
        "rate(x{s=~\"reviews.*\",t=~\"reviews.*\"}[1m])"
    );
    let e = grafana::expand("x{n=~\"$namespace\"}", &vars).expect_err("no value");
    assert!(e.to_string().contains("$namespace"), "{e}");
    assert_eq!(
        grafana::variables_used("a{b=~\"$x\"} / c{d=~\"${y}\"}[$__range]"),
        ["x", "y", "__range"]
    );
    assert_eq!(
        grafana::label_values_promql(
            "label_values(istio_requests_total{destination_service_namespace=~\"$namespace\"}, destination_service)"
        )
        .as_deref(),
        Some("group by (destination_service) (istio_requests_total{destination_service_namespace=~\"$namespace\"})")
    );
}

/// The metric names an expression reads: identifiers followed by a selector, a range or the end of a
/// vector, that are not PromQL's functions, keywords or label names.
fn metric_names(expr: &str) -> Vec<String> {
    const WORDS: &[&str] = &[
        "sum",
        "max",
        "min",
        "avg",
        "count",
        "group",
        "by",
        "without",
        "rate",
        "irate",
        "increase",
        "round",
        "histogram_quantile",
        "or",
        "and",
        "unless",
        "vector",
        "time",
        "on",
        "ignoring",
        "le",
        "bool",
        "topk",
        "bottomk",
        "abs",
        "clamp_min",
        "clamp_max",
    ];
    // Drop label matchers and grouping lists first: `{...}` and `by (...)` hold label names.
    let mut text = String::new();
    let mut depth = 0;
    for c in expr.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ if depth > 0 => {}
            _ => text.push(c),
        }
    }
    let text = drop_groupings(&text);
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| {
            !w.is_empty()
                && !w.starts_with('$')
                && !w.chars().next().is_some_and(|c| c.is_ascii_digit())
                && !WORDS.contains(w)
        })
        .map(str::to_string)
        .collect()
}

/// `sum by (a, b) (x)` → `sum (x)`.
fn drop_groupings(s: &str) -> String {
    let mut out = s.to_string();
    for kw in ["by (", "without ("] {
        while let Some(i) = out.find(kw) {
            let close = out[i..].find(')').map(|j| i + j + 1).unwrap_or(out.len());
            out.replace_range(i..close, "");
        }
    }
    out
}
