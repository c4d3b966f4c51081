//! Sidecar-to-sidecar TLS with identities from one CA: the server learns the client's SPIFFE ID, a client
//! refuses a server that is not the identity it expects or not from the mesh's roots, and a rotated
//! certificate is used by the next handshake.

use super::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use std::time::Duration;
use tokio::sync::watch;
use weft_http::server::{serve_with, Connection};
use weft_http::upstream::{Failure, Upstream};
use weft_http::{full, Body, Limits};

/// A test CA that issues SPIFFE certificates.
struct Ca {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    root: CertificateDer<'static>,
}

impl Ca {
    fn new() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = p.self_signed(&key).expect("root").der().clone();
        Ca {
            issuer: rcgen::Issuer::new(p, key),
            root,
        }
    }

    fn issue(&self, sa: &str, serial: &str) -> Arc<Identity> {
        let id = format!("spiffe://cluster.local/ns/default/sa/{sa}");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = vec![rcgen::SanType::URI(id.clone().try_into().expect("uri"))];
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).expect("leaf");
        Arc::new(Identity {
            spiffe_id: Arc::from(id),
            chain: vec![cert.der().clone()],
            key: rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("der"),
            roots: vec![self.root.clone()],
            not_before: std::time::SystemTime::now(),
            not_after: std::time::SystemTime::now() + Duration::from_secs(3600),
            serial: serial.to_string(),
        })
    }
}

/// A server over `mesh` answering with the client's identity and its own serial.
async fn server(
    mesh: &Arc<MeshTls>,
    allow_plaintext: bool,
) -> (std::net::SocketAddr, watch::Sender<bool>) {
    let listener = weft_http::net::bind("127.0.0.1:0".parse().expect("addr")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let make = |c: Connection| {
        let peer = c
            .tls
            .as_ref()
            .and_then(|t| t.certificate.as_ref())
            .and_then(uri_san)
            .unwrap_or_default();
        move |_req: Request<Body>| {
            let peer = peer.clone();
            async move { Response::new(full(peer)) }
        }
    };
    let (stop, rx) = watch::channel(false);
    tokio::spawn(serve_with(
        "test",
        listener,
        make,
        Some(mesh.server(allow_plaintext)),
        rx,
        Duration::from_secs(1),
        Limits::default(),
    ));
    (addr, stop)
}

fn get() -> weft_http::h1::Head {
    let req = Request::builder()
        .uri("http://reviews/")
        .header("host", "reviews")
        .body(Body::empty())
        .expect("request");
    weft_http::h1::Head::of(req).0
}

async fn call(
    up: &Upstream,
    addr: std::net::SocketAddr,
    tls: &ClientTls,
) -> Result<String, String> {
    match up
        .send_h1(
            addr,
            Some(tls),
            Duration::from_secs(5),
            0,
            get(),
            Body::empty(),
        )
        .await
    {
        Ok(r) => Ok(String::from_utf8_lossy(
            &r.into_body().collect().await.expect("body").to_bytes(),
        )
        .into_owned()),
        Err(Failure::Connect(e)) => Err(e.to_string()),
        Err(e) => Err(format!("{e:?}")),
    }
}

fn mesh(id: Arc<Identity>) -> (Arc<MeshTls>, watch::Sender<Option<Arc<Identity>>>) {
    let (tx, rx) = watch::channel(Some(id));
    (MeshTls::new(rx), tx)
}

#[tokio::test]
async fn sidecars_of_one_mesh_know_each_other_by_spiffe_id() {
    let ca = Ca::new();
    let (server_mesh, _s) = mesh(ca.issue("reviews", "1"));
    let (client_mesh, _c) = mesh(ca.issue("productpage", "2"));
    let (addr, _stop) = server(&server_mesh, false).await;
    let up = Upstream::new();
    let expected = vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()];
    let tls = client_mesh.client(
        expected.clone(),
        "outbound_.9080_._.reviews.default.svc.cluster.local",
    );
    assert_eq!(
        call(&up, addr, &tls).await.expect("response"),
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
    // Equal settings share an id (and so a pool); other names get another.
    assert_eq!(
        client_mesh
            .client(
                expected,
                "outbound_.9080_._.reviews.default.svc.cluster.local"
            )
            .id,
        tls.id
    );
    assert_ne!(client_mesh.client(vec![], "x").id, tls.id);
}

#[tokio::test]
async fn a_client_refuses_an_unexpected_identity_or_a_foreign_mesh() {
    let ca = Ca::new();
    let (server_mesh, _s) = mesh(ca.issue("ratings", "1"));
    let (client_mesh, _c) = mesh(ca.issue("productpage", "2"));
    let (addr, _stop) = server(&server_mesh, false).await;
    let up = Upstream::new();
    let wrong = client_mesh.client(
        vec!["spiffe://cluster.local/ns/default/sa/reviews".to_string()],
        "reviews",
    );
    let e = call(&up, addr, &wrong).await.expect_err("refused");
    assert!(e.contains("TLS handshake failed"), "{e}");

    let stranger = Ca::new();
    let (foreign, _f) = mesh(stranger.issue("productpage", "3"));
    let e = call(&up, addr, &foreign.client(vec![], "reviews"))
        .await
        .expect_err("refused");
    assert!(e.contains("TLS handshake failed"), "{e}");
}

#[tokio::test]
async fn a_rotated_certificate_serves_the_next_handshake() {
    let ca = Ca::new();
    let (server_mesh, _s) = mesh(ca.issue("reviews", "1"));
    let (client_mesh, rotate) = mesh(ca.issue("productpage", "2"));
    let (addr, _stop) = server(&server_mesh, false).await;
    let first = call(&Upstream::new(), addr, &client_mesh.client(vec![], "r"))
        .await
        .expect("response");
    assert_eq!(first, "spiffe://cluster.local/ns/default/sa/productpage");
    rotate.send_replace(Some(ca.issue("productpage-v2", "4")));
    // A new pool, so a new handshake.
    let second = call(&Upstream::new(), addr, &client_mesh.client(vec![], "r"))
        .await
        .expect("response");
    assert_eq!(
        second,
        "spiffe://cluster.local/ns/default/sa/productpage-v2"
    );
}

#[tokio::test]
async fn without_a_certificate_no_handshake_succeeds() {
    let (tx, rx) = watch::channel(None);
    let server_mesh = MeshTls::new(rx);
    let (addr, _stop) = server(&server_mesh, false).await;
    let ca = Ca::new();
    let (client_mesh, _c) = mesh(ca.issue("productpage", "2"));
    assert!(
        call(&Upstream::new(), addr, &client_mesh.client(vec![], "r"))
            .await
            .is_err()
    );
    drop(tx);
}

mod xds {
    //! Reading Istio's xDS for mutual TLS: listeners' filter chains, clusters' transport sockets and
    //! endpoints' metadata.
    use super::super::*;
    use weft_xds::pb::envoy::config::cluster::v3 as xcluster;
    use weft_xds::pb::envoy::config::core::v3 as xcore;
    use weft_xds::pb::envoy::config::listener::v3 as xlistener;
    use weft_xds::pb::envoy::r#type::matcher::v3::{string_matcher::MatchPattern, StringMatcher};
    use weft_xds::pb::google::protobuf::{value, BoolValue, Struct, Value};

    fn sds(name: &str) -> xtls::SdsSecretConfig {
        xtls::SdsSecretConfig {
            name: name.into(),
            ..Default::default()
        }
    }

    fn common(sans: &[&str]) -> xtls::CommonTlsContext {
        xtls::CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![sds("default")],
            validation_context_type: Some(
                xtls::common_tls_context::ValidationContextType::CombinedValidationContext(
                    xtls::common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(xtls::CertificateValidationContext {
                            match_typed_subject_alt_names: sans
                                .iter()
                                .map(|s| xtls::SubjectAltNameMatcher {
                                    san_type: 3,
                                    matcher: Some(StringMatcher {
                                        match_pattern: Some(MatchPattern::Exact(s.to_string())),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        }),
                        validation_context_sds_secret_config: Some(sds("ROOTCA")),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }
    }

    fn socket(type_url: &str, msg: &impl prost::Message) -> xcore::TransportSocket {
        xcore::TransportSocket {
            name: weft_xds::filter_name::TLS_TRANSPORT_SOCKET.into(),
            config_type: Some(xcore::transport_socket::ConfigType::TypedConfig(
                weft_xds::pb::google::protobuf::Any {
                    type_url: type_url.into(),
                    value: msg.encode_to_vec(),
                },
            )),
        }
    }

    fn downstream(require_client: bool) -> xcore::TransportSocket {
        socket(
            weft_xds::type_url::DOWNSTREAM_TLS_CONTEXT,
            &xtls::DownstreamTlsContext {
                require_client_certificate: Some(BoolValue {
                    value: require_client,
                }),
                common_tls_context: Some(common(&[])),
                ..Default::default()
            },
        )
    }

    fn upstream_socket(sans: &[&str], sni: &str) -> xcore::TransportSocket {
        socket(
            weft_xds::type_url::UPSTREAM_TLS_CONTEXT,
            &xtls::UpstreamTlsContext {
                common_tls_context: Some(common(sans)),
                sni: sni.into(),
                ..Default::default()
            },
        )
    }

    fn listener(chains: Vec<Option<xcore::TransportSocket>>) -> xlistener::Listener {
        xlistener::Listener {
            filter_chains: chains
                .into_iter()
                .map(|t| xlistener::FilterChain {
                    transport_socket: t,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn filter_chains_give_the_peer_authentication_mode() {
        assert_eq!(inbound(&listener(vec![None])), Ok(Inbound::Plaintext));
        assert_eq!(
            inbound(&listener(vec![Some(downstream(true)), None])),
            Ok(Inbound::Permissive)
        );
        assert_eq!(
            inbound(&listener(vec![Some(downstream(true))])),
            Ok(Inbound::Strict)
        );
        let e = inbound(&listener(vec![Some(downstream(false))])).expect_err("refused");
        assert!(
            e.contains("filter_chains[0]") && e.contains("require_client_certificate"),
            "{e}"
        );
    }

    fn tls_mode(mode: &str) -> Struct {
        Struct {
            fields: [(
                "tlsMode".to_string(),
                Value {
                    kind: Some(value::Kind::StringValue(mode.into())),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn clusters_give_their_upstream_tls() {
        let id = "spiffe://cluster.local/ns/default/sa/reviews";
        let always = xcluster::Cluster {
            transport_socket: Some(upstream_socket(&[id], "outbound_.9080_._.reviews")),
            ..Default::default()
        };
        assert_eq!(
            upstream(&always),
            Ok(Upstream::Mesh {
                sans: vec![id.to_string()],
                sni: "outbound_.9080_._.reviews".into(),
                always: true
            })
        );
        let auto = xcluster::Cluster {
            transport_socket_matches: vec![
                xcluster::cluster::TransportSocketMatch {
                    name: "tlsMode-istio".into(),
                    r#match: Some(tls_mode("istio")),
                    transport_socket: Some(upstream_socket(&[], "s")),
                },
                xcluster::cluster::TransportSocketMatch {
                    name: "tlsMode-disabled".into(),
                    r#match: Some(Struct::default()),
                    transport_socket: Some(xcore::TransportSocket {
                        name: weft_xds::filter_name::RAW_BUFFER.into(),
                        config_type: None,
                    }),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            upstream(&auto),
            Ok(Upstream::Mesh {
                sans: vec![],
                sni: "s".into(),
                always: false
            })
        );
        assert_eq!(
            upstream(&xcluster::Cluster::default()),
            Ok(Upstream::Plaintext)
        );
        // Certificates from files (a DestinationRule's SIMPLE or MUTUAL) are read by `files`: one
        // without its chain is refused naming the field.
        let files = xcluster::Cluster {
            transport_socket: Some(socket(
                weft_xds::type_url::UPSTREAM_TLS_CONTEXT,
                &xtls::UpstreamTlsContext {
                    common_tls_context: Some(xtls::CommonTlsContext {
                        tls_certificates: vec![Default::default()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            ..Default::default()
        };
        let e = upstream(&files).expect_err("refused");
        assert!(
            e == "transport_socket: common_tls_context.tls_certificates[0].certificate_chain is missing",
            "{e}"
        );
    }

    #[test]
    fn endpoints_with_a_sidecar_are_told_by_their_metadata() {
        let md = |mode: &str| xcore::Metadata {
            filter_metadata: [(
                weft_xds::filter_name::TRANSPORT_SOCKET_MATCH.to_string(),
                tls_mode(mode),
            )]
            .into(),
            ..Default::default()
        };
        assert!(endpoint_has_sidecar(Some(&md("istio"))));
        assert!(!endpoint_has_sidecar(Some(&md("disabled"))));
        assert!(!endpoint_has_sidecar(None));
    }
}
