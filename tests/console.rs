//! weftd's console against the real demo mesh while traffic flows: `/api/graph` shows Bookinfo's six
//! workloads and their calls, then a real browser (Debian's headless Chromium, driven by Playwright
//! from `tests/browser/console.mjs`) loads every page: the graph draws the same, a chart has data, a
//! trace from the sidecars (the demo traces every request to weftd) opens as a waterfall of spans,
//! the config page lists the six proxies in sync.
//! Screenshots go to `target/console-browser/`.
//!
//! `scripts/chromium` installs chromium and playwright-core first (as root; see tests/README.md).

use anyhow::{bail, Context};
use std::process::Stdio;
use std::time::{Duration, Instant};
use weft_e2e::{bin_dir, eventually, workspace, Mesh};

const WORKLOADS: [&str; 6] = [
    "details-v1",
    "productpage-v1",
    "ratings-v1",
    "reviews-v1",
    "reviews-v2",
    "reviews-v3",
];

/// (client workload, service, server workload): the calls a Bookinfo page makes with no routing rule.
const CALLS: [(&str, &str, &str); 6] = [
    ("productpage-v1", "details", "details-v1"),
    ("productpage-v1", "reviews", "reviews-v1"),
    ("productpage-v1", "reviews", "reviews-v2"),
    ("productpage-v1", "reviews", "reviews-v3"),
    ("reviews-v2", "ratings", "ratings-v1"),
    ("reviews-v3", "ratings", "ratings-v1"),
];

/// What is missing from a graph for the checks above; empty when nothing is.
fn missing(g: &serde_json::Value) -> Vec<String> {
    let nodes = g["nodes"].as_array().cloned().unwrap_or_default();
    let edges = g["edges"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    for w in WORKLOADS {
        if !nodes
            .iter()
            .any(|n| n["kind"] == "workload" && n["workload"] == w)
        {
            out.push(format!("workload {w}"));
        }
    }
    let edge = |s: &str, t: &str| {
        edges
            .iter()
            .any(|e| e["source"] == s && e["target"] == t && e["rps"].as_f64() > Some(0.0))
    };
    for (from, svc, to) in CALLS {
        let svc = format!("service:{svc}.default.svc.cluster.local");
        if !edge(&format!("workload:default/{from}"), &svc)
            || !edge(&svc, &format!("workload:default/{to}"))
        {
            out.push(format!("{from} -> {svc} -> {to}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser_shows_the_live_demo() {
    let started = Instant::now();
    // Installs chromium and playwright-core when they are missing (before the mesh: it may take a
    // while on a fresh machine).
    let install = std::process::Command::new(workspace().join("scripts/chromium"))
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/chromium runs");
    assert!(install.status.success(), "scripts/chromium failed");

    let mesh = Mesh::start(30).await.expect("mesh starts");
    mesh.all_synced(Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // Traffic through the whole test: a page every 50 ms.
    let pages = mesh.layout.productpage_address();
    let traffic = tokio::spawn(async move {
        loop {
            let _ = weft_cli::http::get(&pages, "/productpage").await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // The JSON graph, as scripts read it: the demo scrapes every 5 s, so two scrapes within ~10 s.
    let console = mesh.layout.console_address();
    let graph = eventually(
        "the graph shows Bookinfo",
        Duration::from_secs(60),
        || async {
            let g = weft_cli::http::get_json(&console, "/api/graph?window=1m").await?;
            let m = missing(&g);
            if !m.is_empty() {
                bail!("missing {m:?} in {g}");
            }
            Ok(g)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let edges = graph["edges"].as_array().map(Vec::len).unwrap_or(0);
    println!(
        "graph: {} nodes, {edges} edges",
        graph["nodes"].as_array().map(Vec::len).unwrap_or(0)
    );

    // The browser.
    let out_dir = bin_dir()
        .parent()
        .context("target directory")
        .expect("target/")
        .join("console-browser");
    let browser_started = Instant::now();
    let run = tokio::process::Command::new("node")
        .arg(workspace().join("tests/browser/console.mjs"))
        .arg(format!("http://{console}"))
        .arg(&out_dir)
        // The demo samples every request to weftd's collector: no trace listed is a failure.
        .arg("--require-trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test ends within 4 minutes")
        .expect("node runs");
    traffic.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the browser test failed: {}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr),
        mesh.logs()
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    println!("browser saw: {seen:#}");
    println!(
        "browser: {:.1} s; whole test {:.1} s; screenshots in {}",
        browser_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64(),
        out_dir.display()
    );
    let spans = seen["traces"]["opened"]["spans"].as_u64().unwrap_or(0);
    assert!(spans >= 2, "a trace opened with its spans: {seen}");
    for name in ["graph", "metrics", "traces", "trace", "config"] {
        let p = out_dir.join(format!("{name}.png"));
        let size = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        assert!(size > 1000, "{} written", p.display());
    }
}
