//! Certificate rotation under steady traffic: weftd's CA issues one-minute workload certificates, the
//! sidecars renew them at half their lifetime, and Bookinfo is loaded the whole time over mutual TLS.
//! Not one request may fail across several rotations of every sidecar's certificate.
//!
//! Its own test binary: the certificate lifetime is weftd's `DEFAULT_WORKLOAD_CERT_TTL` environment
//! variable, set here for the processes this binary starts.

use anyhow::bail;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use weft_cli::demo::WORKLOADS;
use weft_e2e::Mesh;

/// Rotations each sidecar must go through while the load runs.
const ROTATIONS: usize = 3;
/// The load's bound: this long at most (a rotation every ~30 s; 3 take ~95 s).
const MAX_LOAD: Duration = Duration::from_secs(150);
/// And this many pages at most.
const MAX_PAGES: usize = 6_000;

/// The serial number of the workload certificate a sidecar holds (its admin `/certs`).
async fn serial(admin: &str) -> anyhow::Result<String> {
    let v = weft_cli::http::get_json(admin, "/certs").await?;
    let s = v["certificates"][0]["cert_chain"][0]["serial_number"]
        .as_str()
        .map(str::to_string);
    match s {
        Some(s) if !s.is_empty() => Ok(s),
        _ => bail!("no certificate in {v}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_a_failed_request() {
    // SAFETY (edition 2021: not unsafe): set before any process or thread of this binary reads it;
    // this binary has this one test.
    std::env::set_var("DEFAULT_WORKLOAD_CERT_TTL", "1m");
    let mesh = Mesh::start(33).await.expect("mesh starts");

    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let (mut pages, mut failures) = (0usize, Vec::new());
    let start = Instant::now();
    let mut next_look = Instant::now();
    loop {
        // Every sidecar's serial, every second.
        if Instant::now() >= next_look {
            for w in &WORKLOADS {
                if let Ok(s) = serial(&mesh.layout.admin_address(w)).await {
                    seen.entry(w.name()).or_default().insert(s);
                }
            }
            next_look = Instant::now() + Duration::from_secs(1);
        }
        let rotated = seen.len() == WORKLOADS.len() && seen.values().all(|s| s.len() > ROTATIONS);
        if rotated || start.elapsed() > MAX_LOAD || pages >= MAX_PAGES {
            break;
        }
        // A page touches four sidecars and three mTLS hops (productpage to details, reviews, ratings).
        pages += 1;
        match mesh.reviews_version(None).await {
            Ok(_) => {}
            Err(e) => failures.push(format!("page {pages} at {:?}: {e:#}", start.elapsed())),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{pages} pages in {:.0} s; serials per sidecar: {:?}",
        start.elapsed().as_secs_f64(),
        seen.iter().map(|(k, v)| (k, v.len())).collect::<Vec<_>>()
    );
    assert!(
        failures.is_empty(),
        "{} of {pages} pages failed: {:?}\n{}",
        failures.len(),
        &failures[..failures.len().min(5)],
        mesh.logs()
    );
    for w in &WORKLOADS {
        let n = seen.get(&w.name()).map_or(0, BTreeSet::len);
        assert!(
            n > ROTATIONS,
            "{}: {} certificates seen, want {} rotations in {MAX_LOAD:?}\n{}",
            w.name(),
            n,
            ROTATIONS,
            mesh.logs()
        );
    }
}
