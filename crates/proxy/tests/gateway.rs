//! The proxy as a gateway (`--gateway`): the listeners weftd writes for Gateway servers, through the real
//! proxy and a scripted ADS server. Plaintext HTTP routed by `Host` to its cluster (404 `NR` for what
//! no route takes); `require_tls` (Istio's `httpsRedirect`) answered with a 301 to `https://`; HTTPS
//! with the server's certificate from files (SIMPLE), and with client certificates required (MUTUAL): a
//! client without one, or with one from another CA, is refused. Certificates are made with rcgen and
//! written to files, as an operator's would be. Every wait polls with a deadline.

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

use bytes::Bytes;
use fake_ads::{FakeAds, XdsSet};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use net::{eventually, send, start_proxy_with, Behaviour, Form, Upstream};
use pki::{Ca, Dir, Leaf};
use resources::*;
use std::net::SocketAddr;
use std::sync::Arc;
use weft_proxy::ProxyHandle;
use weft_xds::pb::envoy::config::core::v3::{
    data_source, transport_socket, DataSource, TransportSocket,
};
use weft_xds::pb::envoy::config::route::v3::virtual_host::TlsRequirementType;
use weft_xds::pb::envoy::extensions::transport_sockets::tls::v3 as xtls;
use weft_xds::pb::google::protobuf::BoolValue;
use weft_xds::{pack, type_url};

const HOST: &str = "bookinfo.com";
const CLUSTER: &str = "outbound|9080||productpage.default.svc.cluster.local";

fn file(path: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::Filename(path.into())),
        ..Default::default()
    })
}

/// What weftd writes for a Gateway server's `tls`: SIMPLE, or MUTUAL with `client_ca`.
fn server_tls(cert: &str, key: &str, client_ca: Option<&str>) -> TransportSocket {
    use xtls::common_tls_context::ValidationContextType;
    let ctx = xtls::DownstreamTlsContext {
        common_tls_context: Some(xtls::CommonTlsContext {
            tls_certificates: vec![xtls::TlsCertificate {
                certificate_chain: file(cert),
                private_key: file(key),
                ..Default::default()
            }],
            validation_context_type: client_ca.map(|ca| {
                ValidationContextType::ValidationContext(xtls::CertificateValidationContext {
                    trusted_ca: file(ca),
                    ..Default::default()
                })
            }),
            alpn_protocols: vec!["h2".into(), "http/1.1".into()],
            ..Default::default()
        }),
        require_client_certificate: Some(BoolValue {
            value: client_ca.is_some(),
        }),
        ..Default::default()
    };
    TransportSocket {
        name: weft_xds::filter_name::TLS_TRANSPORT_SOCKET.into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(pack(
            type_url::DOWNSTREAM_TLS_CONTEXT,
            &ctx,
        ))),
    }
}

async fn start_gateway(ads: &FakeAds) -> ProxyHandle {
    start_proxy_with(
        &ads.url(),
        &[
            "--gateway",
            "--workload",
            "istio-ingressgateway",
            "--namespace",
            "istio-system",
            "--labels",
            "istio=ingressgateway",
            "--xds-protocol",
            "sotw",
        ],
    )
    .await
}

/// The address the proxy bound for listener `name`.
async fn bound(proxy: &ProxyHandle, name: &str) -> SocketAddr {
    eventually(&format!("listener {name} bound"), || async {
        proxy.listener_addr(name)
    })
    .await
}

/// `GET https://bookinfo.com/productpage` on `addr`, trusting `root`, presenting `client` if given.
/// `Err` when the handshake or the exchange fails (a refused client certificate shows on the first
/// read under TLS 1.3).
async fn https_get(
    addr: SocketAddr,
    root: &rustls::pki_types::CertificateDer<'static>,
    client: Option<&Leaf>,
) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(weft_proxy::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .map_err(|e| e.to_string())?,
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(HOST).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/productpage")
        .header("host", HOST)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn xds(
    upstream: SocketAddr,
    listeners: Vec<weft_xds::Any>,
    routes: Vec<(String, weft_xds::Any)>,
) -> XdsSet {
    XdsSet {
        version: "1".into(),
        clusters: vec![static_cluster(CLUSTER, &[upstream])],
        endpoints: vec![],
        listeners,
        routes,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_servers_route_by_host_and_redirect_to_https() {
    let app = Upstream::start("productpage", Behaviour::Ok).await;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut redirect = vhost(HOST, &[HOST], vec![route_to("/", CLUSTER)]);
    redirect.require_tls = TlsRequirementType::All as i32;
    let set = xds(
        app.addr,
        vec![
            gateway_listener("0.0.0.0_8080", any, "http.8080", None),
            gateway_listener("0.0.0.0_80", any, "http.80", None),
        ],
        vec![
            route_config(
                "http.8080",
                vec![vhost(
                    "bookinfo.com:8080",
                    &[HOST, "bookinfo.com:8080"],
                    vec![route_to("/productpage", CLUSTER)],
                )],
            ),
            route_config("http.80", vec![redirect]),
        ],
    );
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_gateway(&ads).await;
    let http = bound(&proxy, "0.0.0.0_8080").await;
    let redirecting = bound(&proxy, "0.0.0.0_80").await;

    // Routed by Host, as the outbound proxy routes, to the cluster of the route.
    let r = eventually("a routed answer", || async {
        let r = send(http, Form::Host, HOST, "/productpage", &[])
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.upstream(), "productpage", "{r:?}");
    // HTTP/2 with prior knowledge too.
    let r = send(http, Form::H2, HOST, "/productpage", &[])
        .await
        .expect("h2");
    assert_eq!((r.status, r.upstream()), (200, "productpage"), "{r:?}");
    // No route for the path, or no virtual host for the host: 404 `NR`.
    for (host, path) in [(HOST, "/details/0"), ("other.com", "/productpage")] {
        let r = send(http, Form::Host, host, path, &[])
            .await
            .expect("answer");
        assert_eq!((r.status, r.flags().as_str()), (404, "NR"), "{host}{path}");
    }

    // httpsRedirect: a 301 to the same host and path over https, nothing forwarded.
    let hits = app.hits();
    let r = send(
        redirecting,
        Form::Host,
        "bookinfo.com:80",
        "/productpage?u=jason",
        &[],
    )
    .await
    .expect("answer");
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(
        r.headers.get("location").and_then(|v| v.to_str().ok()),
        Some("https://bookinfo.com/productpage?u=jason")
    );
    assert_eq!(app.hits(), hits, "a redirect is not forwarded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_servers_terminate_tls_and_mutual_ones_require_a_client_certificate() {
    let dir = Dir::new("https");
    let ca = Ca::new("gateway-root");
    let client_ca = Ca::new("client-root");
    let other_ca = Ca::new("someone-else");
    let server = ca.leaf(&[HOST]);
    let cert = dir.write("cert.pem", &server.cert_pem);
    let key = dir.write("key.pem", &server.key_pem);
    let client_ca_path = dir.write("client-ca.pem", &client_ca.pem);
    let client = client_ca.leaf(&["client.example.com"]);
    let stranger = other_ca.leaf(&["client.example.com"]);

    let app = Upstream::start("productpage", Behaviour::Ok).await;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let table = |name: &str| {
        route_config(
            name,
            vec![vhost(
                HOST,
                &[HOST, "bookinfo.com:443"],
                vec![route_to("/", CLUSTER)],
            )],
        )
    };
    let set = xds(
        app.addr,
        vec![
            gateway_listener(
                "0.0.0.0_443",
                any,
                "https.443.https.gw.default",
                Some(server_tls(&cert, &key, None)),
            ),
            gateway_listener(
                "0.0.0.0_8443",
                any,
                "https.8443.mtls.gw.default",
                Some(server_tls(&cert, &key, Some(&client_ca_path))),
            ),
        ],
        vec![
            table("https.443.https.gw.default"),
            table("https.8443.mtls.gw.default"),
        ],
    );
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_gateway(&ads).await;
    let simple = bound(&proxy, "0.0.0.0_443").await;
    let mutual = bound(&proxy, "0.0.0.0_8443").await;

    // SIMPLE: the gateway's certificate, verified by the client; routed as plaintext is.
    let (status, body) = eventually("an HTTPS answer", || async {
        https_get(simple, &ca.der, None).await.ok()
    })
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("productpage"), "{body}");
    // A plaintext request to the TLS port gets no HTTP answer.
    assert!(
        send(simple, Form::Host, HOST, "/productpage", &[])
            .await
            .is_err(),
        "plaintext refused on an HTTPS server"
    );

    // MUTUAL: a client certificate from the configured CA is required.
    let (status, body) = https_get(mutual, &ca.der, Some(&client))
        .await
        .expect("a client with a certificate from the CA");
    assert_eq!(status, 200, "{body}");
    let hits = app.hits();
    let refused = https_get(mutual, &ca.der, None).await;
    assert!(refused.is_err(), "no client certificate: {refused:?}");
    let refused = https_get(mutual, &ca.der, Some(&stranger)).await;
    assert!(
        refused.is_err(),
        "a certificate from another CA: {refused:?}"
    );
    assert_eq!(app.hits(), hits, "refused clients reach nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_files_cannot_be_read_is_refused_and_the_rest_serve() {
    let app = Upstream::start("productpage", Behaviour::Ok).await;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let good = xds(
        app.addr,
        vec![gateway_listener("0.0.0.0_8080", any, "http.8080", None)],
        vec![route_config(
            "http.8080",
            vec![vhost("all", &["*"], vec![route_to("/", CLUSTER)])],
        )],
    );
    let mut ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), good.clone()).await;
    let proxy = start_gateway(&ads).await;
    let http = bound(&proxy, "0.0.0.0_8080").await;
    eventually("a routed answer", || async {
        let r = send(http, Form::Host, HOST, "/", &[]).await.ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    // A new version with a TLS server whose files do not exist: NACKed whole, the old one serves.
    let mut bad = good.clone();
    bad.version = "2".into();
    bad.listeners.push(gateway_listener(
        "0.0.0.0_443",
        any,
        "http.8080",
        Some(server_tls(
            "/nonexistent/cert.pem",
            "/nonexistent/key.pem",
            None,
        )),
    ));
    ads.update(bad);
    let nack = eventually("a NACK of the listener", || {
        let mut got = None;
        while let Ok(r) = ads.requests.try_recv() {
            if let (true, Some(e)) = (r.type_url == type_url::LISTENER, r.error_detail) {
                got = Some(e.message);
            }
        }
        async move { got }
    })
    .await;
    assert!(
        nack.contains("common_tls_context.tls_certificates[0].certificate_chain: cannot read /nonexistent/cert.pem"),
        "the rejection names the field and the path: {nack}"
    );
    assert!(proxy.listener_addr("0.0.0.0_443").is_none());
    let r = send(http, Form::Host, HOST, "/", &[])
        .await
        .expect("answer");
    assert_eq!(r.status, 200);
}

/// `l` (a gateway listener) with an RBAC filter first in its connection manager: what weftd adds for an
/// AuthorizationPolicy that selects the gateway.
fn with_http_filter(l: weft_xds::Any, filter: weft_xds::Any) -> weft_xds::Any {
    use weft_xds::pb::envoy::config::listener::v3::{filter, Listener};
    use weft_xds::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        http_filter, HttpConnectionManager, HttpFilter,
    };
    let mut l: Listener = weft_xds::unpack(&l).expect("listener");
    let f = &mut l.filter_chains[0].filters[0];
    let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type else {
        panic!("no connection manager");
    };
    let mut hcm: HttpConnectionManager = weft_xds::unpack(any).expect("hcm");
    hcm.http_filters.insert(
        0,
        HttpFilter {
            name: "envoy.filters.http.rbac".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(filter)),
            ..Default::default()
        },
    );
    *any = pack(type_url::HTTP_CONNECTION_MANAGER, &hcm);
    pack(type_url::LISTENER, &l)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_policies_hold_at_the_gateway() {
    use weft_xds::pb::envoy::config::core::v3::CidrRange;
    use weft_xds::pb::envoy::config::rbac::v3::{
        permission, principal, rbac::Action, Permission, Policy, Principal, Rbac as Rules,
    };
    use weft_xds::pb::envoy::extensions::filters::http::rbac::v3::Rbac;
    use weft_xds::pb::envoy::r#type::matcher::v3::{path_matcher, PathMatcher};
    use weft_xds::pb::google::protobuf::UInt32Value;
    // `action: DENY, rules: [{from: [{source: {remoteIpBlocks: [127.0.0.1/32]}}], to: [{operation:
    // {paths: ["/admin*"]}}]}]`: it can only match when the gateway knows its client's address.
    let deny = Policy {
        permissions: vec![Permission {
            rule: Some(permission::Rule::UrlPath(PathMatcher {
                rule: Some(path_matcher::Rule::Path(prefix("/admin"))),
            })),
        }],
        principals: vec![Principal {
            identifier: Some(principal::Identifier::RemoteIp(CidrRange {
                address_prefix: "127.0.0.1".into(),
                prefix_len: Some(UInt32Value { value: 32 }),
            })),
        }],
        ..Default::default()
    };
    let rbac = pack(
        "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        &Rbac {
            rules: Some(Rules {
                action: Action::Deny as i32,
                policies: [(
                    "ns[istio-system]-policy[no-admin]-rule[0]".to_string(),
                    deny,
                )]
                .into_iter()
                .collect(),
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    let app = Upstream::start("productpage", Behaviour::Ok).await;
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let set = xds(
        app.addr,
        vec![with_http_filter(
            gateway_listener("0.0.0.0_8080", any, "http.8080", None),
            rbac,
        )],
        vec![route_config(
            "http.8080",
            vec![vhost(HOST, &[HOST], vec![route_to("/", CLUSTER)])],
        )],
    );
    let ads = FakeAds::start("127.0.0.1:0".parse().expect("addr"), set).await;
    let proxy = start_gateway(&ads).await;
    let http = bound(&proxy, "0.0.0.0_8080").await;
    let r = eventually("a routed answer", || async {
        let r = send(http, Form::Host, HOST, "/productpage", &[])
            .await
            .ok()?;
        (r.status == 200).then_some(r)
    })
    .await;
    assert_eq!(r.upstream(), "productpage", "{r:?}");
    let r = send(http, Form::Host, HOST, "/admin/users", &[])
        .await
        .expect("answer");
    assert_eq!(
        (r.status, r.body.as_str()),
        (403, "RBAC: access denied"),
        "{r:?}"
    );
}
