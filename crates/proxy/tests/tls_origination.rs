//! TLS origination with certificates from files (a DestinationRule's SIMPLE and MUTUAL, as weftd writes
//! them), through the real proxy: a scripted ADS server gives it clusters whose `UpstreamTlsContext`
//! names PEM files that the test wrote (certificates made with rcgen), and HTTPS and TLS-echo upstreams
//! on loopback answer with who they are and which client certificate they saw. Every wait polls with a
//! deadline; nothing asserts on timing.

#[allow(dead_code)]
#[path = "support/fake_ads.rs"]
mod fake_ads;
#[allow(dead_code)]
#[path = "support/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "support/pki.rs"]
mod pki;
#[allow(dead_code)]
#[path = "support/resources.rs"]
mod resources;

use fake_ads::{FakeAds, XdsSet};
use http::{Request, Response};
use net::{eventually, get, start_proxy_with};
use pki::{Ca, Dir, Leaf};
use resources::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use weft_http::server::{serve_with, Connection};
use weft_http::tls::ServerTls;
use weft_http::{full, Body, Limits};
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::cluster::v3::Cluster;
use weft_xds::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TrafficDirection, TransportSocket,
};
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3 as xtls;
use weft_xds::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
use weft_xds::{pack, type_url, Any};

/// The service the DestinationRules are for: clusters are `outbound|443|<case>|api.example.com`.
const HOST: &str = "api.example.com";
const CLIENT_ID: &str = "spiffe://example.com/ns/default/sa/productpage";

// === certificates, in files ===

/// A server's rustls settings: `leaf`, and client certificates from `clients` required when given.
fn server_config(leaf: &Leaf, clients: Option<&Ca>) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(weft_proxy::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("versions");
    let builder = match clients {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).expect("root");
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                weft_proxy::tls::provider(),
            )
            .build()
            .expect("verifier");
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(leaf.chain.clone(), leaf.key.clone_key())
        .expect("server certificate");
    Arc::new(config)
}

// === the upstreams ===

/// An HTTPS server named `name`: each response's body is its name, then `client: <URI SAN of the
/// client's certificate, or none>`, then `sni: <the server name asked for, or none>`.
async fn https_upstream(
    name: &'static str,
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, watch::Sender<bool>) {
    let listener = weft_http::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let make = move |c: Connection| {
        let tls = c.tls.clone().unwrap_or_default();
        let client = tls
            .certificate
            .as_ref()
            .and_then(weft_proxy::tls::uri_san)
            .unwrap_or_else(|| "none".into());
        let sni = tls.sni.as_deref().unwrap_or("none").to_string();
        let body = format!("{name}\nclient: {client}\nsni: {sni}\n");
        move |_req: Request<Body>| {
            let body = body.clone();
            async move { Response::new(full(body)) }
        }
    };
    let (stop, rx) = watch::channel(false);
    tokio::spawn(serve_with(
        "test-upstream",
        listener,
        make,
        Some(ServerTls {
            config,
            allow_plaintext: false,
        }),
        rx,
        Duration::from_secs(1),
        Limits::default(),
    ));
    (addr, stop)
}

/// A TLS server that echoes each connection's bytes until the client's end.
async fn tls_echo_upstream(config: Arc<rustls::ServerConfig>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let (mut r, mut w) = tokio::io::split(tls);
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

// === the proxy and its xDS ===

async fn start_proxy(ads: &FakeAds) -> ProxyHandle {
    start_proxy_with(&ads.url(), &["--xds-protocol", "sotw"]).await
}

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.into())),
        ..Default::default()
    })
}

/// What weftd writes for a DestinationRule `tls`: SIMPLE (no `client`) or MUTUAL, roots from `ca`,
/// `subjectAltNames` as `sans`, `sni`.
#[allow(deprecated)] // match_subject_alt_names: what Istio and weftd write
fn files_tls(
    ca: &str,
    client: Option<(&str, &str)>,
    sans: &[&str],
    sni: &str,
) -> xtls::UpstreamTlsContext {
    use xtls::common_tls_context::ValidationContextType;
    xtls::UpstreamTlsContext {
        common_tls_context: Some(xtls::CommonTlsContext {
            tls_certificates: client
                .map(|(chain, key)| xtls::TlsCertificate {
                    certificate_chain: file(chain),
                    private_key: file(key),
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            validation_context_type: Some(ValidationContextType::ValidationContext(
                xtls::CertificateValidationContext {
                    trusted_ca: file(ca),
                    match_subject_alt_names: sans
                        .iter()
                        .map(|s| StringMatcher {
                            match_pattern: Some(MatchPattern::Exact(s.to_string())),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        sni: sni.into(),
        ..Default::default()
    }
}

/// The static cluster `outbound|443|<subset>|api.example.com` to `ep`, originating `tls`.
fn tls_cluster(subset: &str, ep: SocketAddr, tls: &xtls::UpstreamTlsContext) -> Any {
    let name = cluster_name(subset);
    let mut c: Cluster = weft_xds::unpack(&static_cluster(&name, &[ep])).expect("cluster");
    c.transport_socket = Some(TransportSocket {
        name: weft_xds::filter_name::TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::UPSTREAM_TLS_CONTEXT,
            tls,
        ))),
    });
    pack(type_url::CLUSTER, &c)
}

fn cluster_name(subset: &str) -> String {
    format!("outbound|443|{subset}|{HOST}")
}

/// Version `version`: the outbound listener 9080 routing each `<subset>.example:9080` authority to the
/// cluster of that subset, and `extra` listeners.
fn xds(version: &str, clusters: Vec<(&str, Any)>, extra: Vec<Any>) -> XdsSet {
    let vhosts = clusters
        .iter()
        .map(|(subset, _)| {
            let name = cluster_name(subset);
            vhost(
                subset,
                &[&format!("{subset}.example:9080")],
                vec![route_to("/", &name)],
            )
        })
        .collect();
    let mut listeners = vec![outbound_listener(9080)];
    listeners.extend(extra);
    XdsSet {
        version: version.into(),
        clusters: clusters.into_iter().map(|(_, c)| c).collect(),
        endpoints: vec![],
        listeners,
        routes: vec![route_config("9080", vhosts)],
    }
}

/// Waits for the first response through the proxy to `<subset>.example:9080` that is not a 404 (the route
/// table arrived), and returns it.
async fn first(proxy: &ProxyHandle, subset: &str) -> net::Resp {
    let authority = format!("{subset}.example:9080");
    eventually(&format!("a routed answer for {authority}"), || async {
        let r = get(proxy.outbound_addr(), &authority, "/").await;
        (r.status != 404).then_some(r)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_mutual_over_http_check_roots_names_and_present_the_certificate() {
    let dir = Dir::new("http");
    let ca = Ca::new("upstream-root");
    let other_ca = Ca::new("someone-else");
    let client_ca = Ca::new("client-root");
    let server = ca.leaf(&[HOST]);
    let client = client_ca.leaf(&[CLIENT_ID]);
    let ca_path = dir.write("ca.pem", &ca.pem);
    let other_ca_path = dir.write("other-ca.pem", &other_ca.pem);
    let cert_path = dir.write("client.pem", &client.cert_pem);
    let key_path = dir.write("client-key.pem", &client.key_pem);

    let (plain_tls, _s1) = https_upstream("api", server_config(&server, None)).await;
    let (mutual_tls, _s2) =
        https_upstream("api-mutual", server_config(&server, Some(&client_ca))).await;

    let clusters = |good_ca: &str| {
        vec![
            // SIMPLE, right CA, no names: Istio's auto SNI and SAN check against the host.
            (
                "good",
                tls_cluster("good", plain_tls, &files_tls(good_ca, None, &[], "")),
            ),
            (
                "wrongca",
                tls_cluster(
                    "wrongca",
                    plain_tls,
                    &files_tls(&other_ca_path, None, &[], ""),
                ),
            ),
            (
                "badsan",
                tls_cluster(
                    "badsan",
                    plain_tls,
                    &files_tls(&ca_path, None, &["db.example.com"], ""),
                ),
            ),
            (
                "goodsan",
                tls_cluster(
                    "goodsan",
                    plain_tls,
                    &files_tls(&ca_path, None, &[HOST], "sni.example.com"),
                ),
            ),
            (
                "mutual",
                tls_cluster(
                    "mutual",
                    mutual_tls,
                    &files_tls(&ca_path, Some((&cert_path, &key_path)), &[], ""),
                ),
            ),
            // SIMPLE to a server that requires a client certificate: refused.
            (
                "nocert",
                tls_cluster("nocert", mutual_tls, &files_tls(&ca_path, None, &[], "")),
            ),
        ]
    };
    let mut ads = FakeAds::start(
        "127.0.0.1:0".parse().expect("addr"),
        xds("1", clusters(&ca_path), vec![]),
    )
    .await;
    let proxy = start_proxy(&ads).await;

    let good = first(&proxy, "good").await;
    assert_eq!(good.status, 200, "{good:?}");
    assert_eq!(good.upstream(), "api");
    assert!(good.upstream_saw("client: none"), "{}", good.body);
    assert!(good.upstream_saw(&format!("sni: {HOST}")), "{}", good.body);

    for subset in ["wrongca", "badsan"] {
        let r = first(&proxy, subset).await;
        assert_eq!(
            (r.status, r.flags().as_str()),
            (503, "UF"),
            "{subset}: {r:?}"
        );
    }
    // A server that wants a client certificate and gets none says so after the client's side of a
    // TLS 1.3 handshake has finished: the request is sent and the connection ends before a response
    // (`UC`; `UF` when the alert is read before the request goes).
    let r = first(&proxy, "nocert").await;
    assert!(
        r.status == 503 && ["UC", "UF"].contains(&r.flags().as_str()),
        "nocert: {r:?}"
    );

    let named = first(&proxy, "goodsan").await;
    assert_eq!(named.status, 200, "{named:?}");
    assert!(named.upstream_saw("sni: sni.example.com"), "{}", named.body);

    let mutual = first(&proxy, "mutual").await;
    assert_eq!(mutual.status, 200, "{mutual:?}");
    assert_eq!(mutual.upstream(), "api-mutual");
    assert!(
        mutual.upstream_saw(&format!("client: {CLIENT_ID}")),
        "{}",
        mutual.body
    );

    // Version 2 names a CA file that is not there: the CDS update is NACKed naming the cluster, the
    // field and the path, and version 1 keeps serving.
    let missing = dir.path("missing-ca.pem");
    ads.update(xds("2", clusters(&missing), vec![]));
    let nack = eventually("a CDS NACK", || {
        let got = loop {
            match ads.requests.try_recv() {
                Ok(r) if r.type_url == type_url::CLUSTER && r.error_detail.is_some() => {
                    break Some(r)
                }
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        async move { got }
    })
    .await;
    assert_eq!(
        nack.version_info, "1",
        "the NACK carries the last good version"
    );
    let message = nack.error_detail.expect("detail").message;
    let expected = format!(
        "cluster \"{}\": transport_socket: common_tls_context.validation_context.trusted_ca: cannot read {missing}",
        cluster_name("good")
    );
    assert!(message.starts_with(&expected), "{message}");
    for _ in 0..3 {
        let r = get(proxy.outbound_addr(), "good.example:9080", "/").await;
        assert_eq!((r.status, r.upstream()), (200, "api"), "{r:?}");
        let r = get(proxy.outbound_addr(), "mutual.example:9080", "/").await;
        assert_eq!((r.status, r.upstream()), (200, "api-mutual"), "{r:?}");
    }
    proxy.shutdown().await;
}

/// What comes back for `msg` over plaintext TCP to `to`.
async fn echo(to: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let Ok(mut s) = TcpStream::connect(to).await else {
        return Vec::new();
    };
    if s.write_all(msg).await.is_err() || s.shutdown().await.is_err() {
        return Vec::new();
    }
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got).await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_originates_mutual_tls_from_files() {
    let dir = Dir::new("tcp");
    let ca = Ca::new("upstream-root");
    let client_ca = Ca::new("client-root");
    let server = ca.leaf(&[HOST]);
    let client = client_ca.leaf(&[CLIENT_ID]);
    let ca_path = dir.write("ca.pem", &ca.pem);
    let cert_path = dir.write("client.pem", &client.cert_pem);
    let key_path = dir.write("client-key.pem", &client.key_pem);
    let upstream = tls_echo_upstream(server_config(&server, Some(&client_ca))).await;

    let with_cert = files_tls(&ca_path, Some((&cert_path, &key_path)), &[HOST], "");
    let without = files_tls(&ca_path, None, &[HOST], "");
    let listener = |name: &str, subset: &str| {
        tcp_listener(
            name,
            "127.0.0.1:0".parse().expect("addr"),
            TrafficDirection::Outbound,
            &cluster_name(subset),
        )
    };
    let set = xds(
        "1",
        vec![
            ("tcpmutual", tls_cluster("tcpmutual", upstream, &with_cert)),
            ("tcpsimple", tls_cluster("tcpsimple", upstream, &without)),
        ],
        vec![
            listener("egress-mutual", "tcpmutual"),
            listener("egress-simple", "tcpsimple"),
        ],
    );
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_proxy(&ads).await;
    let mutual = eventually("egress TCP bound", || async {
        proxy.listener_addr("egress-mutual")
    })
    .await;
    let simple = eventually("egress TCP bound", || async {
        proxy.listener_addr("egress-simple")
    })
    .await;

    let msg = b"hello over TLS from files";
    eventually("an echo through MUTUAL", || async {
        (echo(mutual, msg).await == msg).then_some(())
    })
    .await;
    // Without the client certificate the upstream refuses the handshake: nothing comes back.
    assert_eq!(echo(simple, msg).await, b"");
    proxy.shutdown().await;
    drop(ads);
}
