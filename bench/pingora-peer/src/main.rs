//! A minimal reverse proxy on Pingora: the "Rust proxy on a good framework" peer of `bench/run`.
//!
//! It does no mesh work: every request goes to one upstream, over pooled keep-alive connections, on one
//! worker thread. Downstream it speaks HTTP/1.1 and h2c (prior knowledge); a request that arrived over
//! HTTP/2 goes upstream over h2c, so HTTP/2 and gRPC workloads stay HTTP/2 end to end, as they do
//! through nginx's `grpc_pass` and weft-proxy.
//!
//! Usage: `weft-bench-pingora-peer LISTEN_ADDR UPSTREAM_ADDR [THREADS]`

#![forbid(unsafe_code)]

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

/// Forwards everything to one upstream.
struct Forward {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Forward {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream.as_str(), false, String::new());
        if session.is_http2() {
            // Plaintext HTTP/2 upstream (h2c prior knowledge): the upstream serves both on one port.
            peer.options.set_http_version(2, 2);
        }
        Ok(Box::new(peer))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: {} LISTEN_ADDR UPSTREAM_ADDR [THREADS]", args[0]);
        std::process::exit(2);
    }
    let threads = args
        .get(3)
        .map(|t| t.parse().expect("THREADS is a number"))
        .unwrap_or(1);
    let conf = ServerConf {
        threads,
        // Same idea as nginx's `keepalive 64`: idle upstream connections kept for reuse.
        upstream_keepalive_pool_size: 64,
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = http_proxy_service(
        &server.configuration,
        Forward {
            upstream: args[2].clone(),
        },
    );
    let mut options = HttpServerOptions::default();
    options.h2c = true;
    if let Some(logic) = proxy.app_logic_mut() {
        logic.server_options = Some(options);
    }
    proxy.add_tcp(&args[1]);
    server.add_service(proxy);
    server.run_forever();
}
