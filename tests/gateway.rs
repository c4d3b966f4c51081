//! The ingress gateway end to end, as Istio's getting started does it: the demo mesh's gateway proxy
//! (`weft-proxy --gateway`, labelled `istio: ingressgateway`) serves nothing until
//! `bookinfo-gateway.yaml` is applied unchanged; then `http://<gateway>/productpage` is Bookinfo's
//! page, the other paths the VirtualService lists reach productpage too, and a path it does not list is
//! 404 (`NR`), as from Istio's gateway.

use anyhow::bail;
use std::time::Duration;
use weft_e2e::{eventually, reviews_version_of, sample, Mesh};

/// This test's mesh network (`127.35.x.x`), which no other test uses.
const NET: u8 = 35;
const GATEWAY: &str = "networking/bookinfo-gateway.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_gateway_yaml_serves_productpage_through_the_ingress_gateway() {
    let mesh = Mesh::start(NET).await.expect("mesh starts");
    let gw = mesh.layout.gateway_address();

    // `weft analyze` accepts the file as Istio's users write it, with the registry it routes to.
    let file = sample(GATEWAY);
    let registry = mesh.layout.config_dir.join("bookinfo.yaml");
    let out = mesh.weft(&[
        "analyze",
        registry.to_str().expect("utf-8 path"),
        file.to_str().expect("utf-8 path"),
    ]);
    assert!(
        out.status.success(),
        "weft analyze: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The gateway has no listener until a Gateway selects it.
    assert!(
        weft_cli::http::get(&gw, "/productpage").await.is_err(),
        "nothing listens on {gw} before the Gateway is applied"
    );

    mesh.apply(GATEWAY);
    let page = eventually(
        "productpage through the gateway",
        Duration::from_secs(20),
        || async {
            let (status, page) = weft_cli::http::get(&gw, "/productpage").await?;
            if status != 200 {
                bail!("{status}: {page}");
            }
            Ok(page)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    let served = reviews_version_of(&page);
    assert!(
        served.is_some(),
        "a whole Bookinfo page, with reviews: {page}"
    );

    // Every page of a steady run comes through; the other paths bound to productpage do too.
    for _ in 0..20 {
        let (status, page) = weft_cli::http::get(&gw, "/productpage")
            .await
            .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
        assert_eq!(status, 200, "{page}");
    }
    for path in ["/api/v1/products", "/logout"] {
        let (status, body) = weft_cli::http::get(&gw, path)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e:#}\n{}", mesh.logs()));
        assert!(
            status == 200 || status == 302,
            "{path} reaches productpage: {status} {body}"
        );
    }

    // A path the VirtualService does not route: Envoy's 404 with `NR`, from the gateway itself.
    let (status, _) = weft_cli::http::get(&gw, "/details/0")
        .await
        .expect("the gateway answers");
    assert_eq!(status, 404, "an unrouted path");

    // The gateway is a proxy weftd knows as a router, in sync with what it was sent.
    let v = mesh.syncz().await.expect("syncz");
    let router = v
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["node_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("router~"))
        })
        .unwrap_or_else(|| panic!("no router in {v}"));
    for t in ["LDS", "RDS"] {
        assert_eq!(router["types"][t]["status"], "SYNCED", "{t}: {router}");
    }

    // Removing the file removes the gateway's routes: the listener goes away with its Gateway.
    mesh.delete(GATEWAY);
    eventually(
        "the gateway stops serving",
        Duration::from_secs(20),
        || async {
            match weft_cli::http::get(&gw, "/productpage").await {
                Err(_) => Ok(()),
                Ok((s, _)) => bail!("still answers {s}"),
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
}
