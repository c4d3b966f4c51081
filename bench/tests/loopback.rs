//! `weft-bench load` against `weft-bench upstream` on loopback, in process: every workload, open loop and
//! closed loop, about half a second each, must complete requests without errors.

use std::net::SocketAddr;
use std::time::Duration;
use weft_bench::load::{self, LoadConfig, Rate, Workload};
use weft_bench::upstream;

async fn start(kind: upstream::Kind) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind an ephemeral loopback port");
    let addr = l.local_addr().expect("local addr");
    match kind {
        upstream::Kind::Http => tokio::spawn(upstream::serve_http(l)),
        upstream::Kind::Tcp => tokio::spawn(upstream::serve_tcp(l)),
    };
    addr
}

#[tokio::test(flavor = "current_thread")]
async fn every_workload_runs_without_errors() {
    let http = start(upstream::Kind::Http).await;
    let tcp = start(upstream::Kind::Tcp).await;
    for workload in Workload::ALL {
        let rates: &[Rate] = if workload.is_tcp() {
            &[Rate::Max]
        } else {
            &[Rate::Fixed(400), Rate::Max]
        };
        for &rate in rates {
            let cfg = LoadConfig {
                target: if workload.is_tcp() { tcp } else { http },
                host: Some("upstream:8080".into()),
                workload,
                rate,
                duration: Duration::from_millis(500),
                connections: 2,
                streams: 4,
            };
            let r = load::run(&cfg).await.expect("load runs");
            let what = format!("{workload} at {rate}: {r:?}");
            assert!(r.requests > 0, "{what}");
            assert_eq!(r.errors, 0, "{what}");
            assert!(
                r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.p999_us,
                "{what}"
            );
            if let Rate::Fixed(n) = rate {
                // Open loop: the offered rate is kept (200 requests in 0.5 s).
                assert_eq!(r.requests, u64::from(n) / 2, "{what}");
            }
            let per_request = match workload {
                Workload::TcpStream => load::TCP_CHUNK as u64,
                Workload::TcpNewConn => load::TCP_NEW_CONN_SIZE as u64,
                Workload::GrpcUnary => weft_bench::proto::BODY_SIZE as u64 + 5,
                _ => weft_bench::proto::BODY_SIZE as u64,
            };
            assert_eq!(r.bytes, r.requests * per_request, "{what}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_dead_target_is_an_error_not_a_hang() {
    // Bind and drop: nothing listens there any more.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let cfg = LoadConfig {
        target: addr,
        host: None,
        workload: Workload::Http1KeepAlive,
        rate: Rate::Fixed(100),
        duration: Duration::from_millis(200),
        connections: 1,
        streams: 1,
    };
    assert!(load::run(&cfg).await.is_err());
    assert!(load::probe(addr, None, Workload::GrpcUnary).await.is_err());
}
