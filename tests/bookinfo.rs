//! Bookinfo end to end: the user steps of the walking-skeleton issue, automated. Each test runs its own
//! mesh on its own loopback addresses, so they run in parallel.

use anyhow::bail;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use weft_e2e::{bin_dir, eventually, reviews_version_of, sample, Mesh};

const DR: &str = "networking/destination-rule-all.yaml";
const ALL_V1: &str = "networking/virtual-service-all-v1.yaml";
const FIFTY_V3: &str = "networking/virtual-service-reviews-50-v3.yaml";
const JASON_V2: &str = "networking/virtual-service-reviews-test-v2.yaml";
const DELAY: &str = "networking/virtual-service-ratings-test-delay.yaml";
const ABORT: &str = "networking/virtual-service-ratings-test-abort.yaml";

/// Loads the page `n` times and counts the reviews versions seen.
async fn tally(mesh: &Mesh, user: Option<&str>, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let v = mesh
            .reviews_version(user)
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
        *seen.entry(v).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rules_take_effect_without_restart() {
    let mesh = Mesh::start(21).await.expect("mesh starts");

    // No rules: round robin across the three reviews versions.
    let seen = tally(&mesh, None, 30).await;
    for v in ["reviews-v1", "reviews-v2", "reviews-v3"] {
        assert!(
            seen.get(v).copied().unwrap_or(0) >= 5,
            "{v} in rotation: {seen:?}"
        );
    }

    // All to v1, without restarting anything.
    mesh.apply(DR);
    mesh.apply(ALL_V1);
    let took = mesh
        .converge(None, &["reviews-v1"], Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    println!(
        "all-v1 took effect {} ms after weft apply",
        took.as_millis()
    );
    let seen = tally(&mesh, None, 100).await;
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        vec!["reviews-v1"],
        "{seen:?}"
    );

    // Every proxy acknowledged; proxy-status says so and proxy-config shows the route.
    mesh.all_synced(Duration::from_secs(10))
        .await
        .expect("synced");
    let out = mesh.weft(&["proxy-status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    // The six sidecars; the ingress gateway has its own row (no Gateway yet, so no routes).
    let sidecars = table
        .lines()
        .filter(|l| l.contains("SYNCED") && !l.contains(weft_cli::demo::GATEWAY_NAME))
        .count();
    assert_eq!(sidecars, 6, "{table}");
    assert!(
        table.contains(weft_cli::demo::GATEWAY_NAME),
        "the gateway is listed: {table}"
    );
    let out = mesh.weft(&["proxy-config", "routes", "productpage-v1"]);
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        routes.contains("type.googleapis.com/envoy.admin.v3.RoutesConfigDump"),
        "{routes}"
    );
    assert!(
        routes.contains("outbound|9080|v1|reviews.default.svc.cluster.local"),
        "{routes}"
    );
    for what in ["clusters", "listeners", "endpoints"] {
        let out = mesh.weft(&["proxy-config", what, "reviews-v2.default"]);
        assert!(
            out.status.success(),
            "proxy-config {what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Removing the rule brings the rotation back.
    mesh.delete(ALL_V1);
    eventually(
        "the rotation back after delete",
        Duration::from_secs(10),
        || async {
            let back = tally(&mesh, None, 30).await;
            if back.len() != 3 {
                bail!("{back:?}");
            }
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));

    // 50/50 between v1 and v3 over 400 pages, within ±10 points.
    mesh.apply(FIFTY_V3);
    mesh.converge(None, &["reviews-v1", "reviews-v3"], Duration::from_secs(10))
        .await
        .expect("shift applied");
    let seen = tally(&mesh, None, 400).await;
    let v1 = seen.get("reviews-v1").copied().unwrap_or(0);
    let v3 = seen.get("reviews-v3").copied().unwrap_or(0);
    assert_eq!(v1 + v3, 400, "only v1 and v3: {seen:?}");
    assert!(
        (160..=240).contains(&v1),
        "50/50 within ±10 points: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_routing_and_fault_injection() {
    let mesh = Mesh::start(22).await.expect("mesh starts");
    mesh.apply(DR);
    mesh.apply(ALL_V1);
    mesh.apply(JASON_V2);
    mesh.converge(Some("jason"), &["reviews-v2"], Duration::from_secs(10))
        .await
        .expect("jason on v2");
    let jason = tally(&mesh, Some("jason"), 20).await;
    assert_eq!(
        jason.keys().collect::<Vec<_>>(),
        vec!["reviews-v2"],
        "{jason:?}"
    );
    let others = tally(&mesh, None, 20).await;
    assert_eq!(
        others.keys().collect::<Vec<_>>(),
        vec!["reviews-v1"],
        "{others:?}"
    );

    // A 7 s delay on ratings for jason: productpage gives up (3 s timeout, tried twice) and says so.
    mesh.apply(DELAY);
    mesh.all_synced(Duration::from_secs(10))
        .await
        .expect("synced");
    // Poll: the rule reaches the proxies asynchronously after `weft apply` returns. Reviews v2 is
    // answered late, not refused: the same path serves jason the abort's message below, and an abort
    // or a failure of ratings shows as "Ratings service is currently unavailable", not this.
    let took = eventually("the delay applied", Duration::from_secs(40), || async {
        let start = Instant::now();
        let (status, page) = mesh.productpage(Some("jason")).await.expect("page");
        let took = start.elapsed();
        assert_eq!(status, 200);
        if !page.contains("Sorry, product reviews are currently unavailable") {
            bail!("{page}");
        }
        Ok(took)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    println!("delayed page took {} ms", took.as_millis());
    // Others are not delayed.
    let (status, page) = mesh.productpage(None).await.expect("page");
    assert_eq!(status, 200);
    assert_eq!(reviews_version_of(&page).as_deref(), Some("reviews-v1"));

    // An abort of 500 for jason: reviews v2 shows that ratings are unavailable.
    mesh.apply(ABORT);
    eventually("the abort applied", Duration::from_secs(20), || async {
        let (_, page) = mesh.productpage(Some("jason")).await.expect("page");
        if !page.contains("Ratings service is currently unavailable") {
            bail!("{page}");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage_loses_no_request() {
    let mut mesh = Mesh::start(23).await.expect("mesh starts");
    mesh.all_synced(Duration::from_secs(10))
        .await
        .expect("synced");
    // Pages one after another until told to stop, counting them as they are answered.
    let addr = mesh.layout.productpage_address();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (count, answered) = tokio::sync::watch::channel(0usize);
    let traffic = tokio::spawn(async move {
        let mut failures = Vec::new();
        let mut i = 0;
        while !*stopped.borrow() {
            match weft_cli::http::get(&addr, "/productpage").await {
                Ok((200, page)) if reviews_version_of(&page).is_some() => {}
                other => failures.push(format!("request {i}: {other:?}")),
            }
            i += 1;
            count.send_replace(i);
        }
        failures
    });
    let pages = |n: usize, what: &'static str| {
        let mut answered = answered.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), answered.wait_for(|a| *a >= n))
                .await
                .expect(what)
                .expect("the traffic task runs");
        }
    };
    pages(30, "traffic flows before the outage").await;
    mesh.procs.kill("weftd").await;
    let at_kill = *answered.borrow();

    // Config changes while weftd is down, written straight into its directory.
    let dir = mesh.layout.config_dir.to_str().expect("utf-8").to_string();
    for f in [DR, ALL_V1] {
        let p = sample(f);
        let out = mesh.weft(&[
            "apply",
            "--config-dir",
            &dir,
            "-f",
            p.to_str().expect("utf-8"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    pages(at_kill + 100, "traffic flows while weftd is down").await;
    stop.send_replace(true);
    let failures = traffic.await.expect("traffic task");
    assert!(
        failures.is_empty(),
        "requests failed while weftd was down: {failures:?}"
    );

    // weftd comes back: proxies reconnect and converge on what changed meanwhile.
    let cmd = mesh.layout.weftd();
    mesh.procs
        .spawn("weftd-restarted", cmd, &mesh.log_dir)
        .expect("restart");
    mesh.all_synced(Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    mesh.converge(None, &["reviews-v1"], Duration::from_secs(10))
        .await
        .expect("converged on all-v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_is_refused_and_the_last_good_stays() {
    let mesh = Mesh::start(24).await.expect("mesh starts");
    mesh.apply(DR);
    mesh.apply(ALL_V1);
    mesh.converge(None, &["reviews-v1"], Duration::from_secs(10))
        .await
        .expect("v1");

    let dir = mesh.layout.config_dir.clone();
    let file = dir.join("applied/virtualservice-default-reviews.yaml");
    let good = std::fs::read_to_string(&file).expect("applied file");
    let cases = [
        (
            "malformed yaml",
            good.replace("  hosts:\n  - reviews\n", "  hosts: [reviews\n"),
            "VirtualService default/reviews: yaml: [IST0106] did not find expected",
        ),
        (
            "unknown field",
            good.replace("subset: v1", "subset: v1\n      wieght: 50"),
            "VirtualService default/reviews: spec.http[0].route[0].wieght: [IST0106] unknown field",
        ),
        (
            "undefined subset",
            good.replace("subset: v1", "subset: v4"),
            "VirtualService default/reviews: spec.http[0].route[0].destination.subset: [IST0101] subset \"v4\" is not defined by any DestinationRule for host reviews.default.svc.cluster.local",
        ),
    ];
    for (name, text, want) in cases {
        assert_ne!(
            text, good,
            "case {name}: the edit applies to the sample's layout"
        );
        std::fs::write(&file, &text).expect("write");
        // weft analyze names the file, the line, the resource and the field.
        let out = mesh.weft(&["analyze", dir.to_str().expect("utf-8")]);
        let printed = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "case {name}: exit status 1\n{printed}"
        );
        let line = printed
            .lines()
            .find(|l| l.contains(want))
            .unwrap_or_else(|| panic!("case {name}: no {want:?} in\n{printed}"));
        assert!(
            line.starts_with(&format!("{}:", file.display())),
            "case {name}: file named: {line}"
        );
        // weftd reports the same problem and keeps serving the last good rule.
        eventually(
            &format!("case {name}: weftd reports {want}"),
            Duration::from_secs(10),
            || async {
                let v = weft_cli::http::get_json(&mesh.layout.debug_address(), "/debug/configz")
                    .await
                    .expect("configz");
                if !v["diagnostics"]
                    .to_string()
                    .contains(&want.replace('"', "\\\""))
                {
                    bail!("{v}");
                }
                Ok(())
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
        let seen = tally(&mesh, None, 20).await;
        assert_eq!(
            seen.keys().collect::<Vec<_>>(),
            vec!["reviews-v1"],
            "case {name}: last good stays: {seen:?}"
        );
    }
    // A good edit is taken again: weftd never stopped watching.
    std::fs::write(&file, good.replace("subset: v1", "subset: v3")).expect("write");
    mesh.converge(None, &["reviews-v3"], Duration::from_secs(10))
        .await
        .expect("v3 after fix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_demo_starts_serves_and_stops_cleanly() {
    use tokio::io::AsyncBufReadExt;
    let root = std::env::temp_dir().join(format!("weft-e2e-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut child = tokio::process::Command::new(bin_dir().join("weft"))
        .args([
            "demo",
            "--subnet",
            "127.25.1",
            "--weftd-ip",
            "127.25.0.1",
            "--config-dir",
        ])
        .arg(root.join("config"))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("weft demo starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let up = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains("Weft demo is up") {
                return Some(l);
            }
        }
        None
    })
    .await
    .expect("demo up within 60 s")
    .expect("demo printed its banner");
    println!("{up}");
    let (status, page) = weft_cli::http::get("127.25.1.10:9080", "/productpage")
        .await
        .expect("page");
    assert_eq!(status, 200);
    assert!(reviews_version_of(&page).is_some(), "{page}");

    // Ctrl-C: everything it started stops, and nothing is left listening.
    let pid = child.id().expect("pid").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("demo exits after Ctrl-C")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let mut listening = Vec::new();
    // The workloads and the ingress gateway (.20).
    for host in (10..=15).chain([weft_cli::demo::GATEWAY_HOST]) {
        for port in [9080, 15000, 15001, 19080] {
            let addr = format!("127.25.1.{host}:{port}");
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                listening.push(addr);
            }
        }
    }
    for port in [15010, 15014] {
        let addr = format!("127.25.0.1:{port}");
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            listening.push(addr);
        }
    }
    assert!(
        listening.is_empty(),
        "still listening after Ctrl-C: {listening:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(root.join("config").with_extension("logs"));
}
