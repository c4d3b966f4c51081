//! The targets: where each listens, the configs generated for it, and how it is started.
//!
//! Every address is in 127.0.50.0/24 (Linux routes all of 127.0.0.0/8 to `lo`), so each process keeps the
//! ports it would have in a pod:
//!
//! | who | address |
//! |---|---|
//! | weftd | xDS `127.0.50.1:15010`, debug `127.0.50.1:15014` |
//! | upstream | `127.0.50.2:8080` (HTTP), `:8081` (HTTP/2, gRPC), `:9000` (TCP); `127.0.50.20:18080`, `:18081`, `:19000` (behind the server sidecar) |
//! | weft client sidecar, 1 hop | `127.0.50.10:15001`, TCP egress `:9000`, admin `:15000` |
//! | weft client sidecar, 2 hops | `127.0.50.11:15001`, TCP egress `:9000`, admin `:15000` |
//! | weft client sidecar, 1 hop, telemetry off | `127.0.50.12:15001`, TCP egress `:9000`, admin `:15000` |
//! | weft server sidecar, 2 hops | `127.0.50.20:8080`, `:8081`, `:9000` (inbound), admin `:15000` |
//! | nginx | `127.0.50.30:8080` (HTTP/1.1), `:8081` (h2c, gRPC) |
//! | nginx, 2 hops | client side `127.0.50.31`, server side `127.0.50.32` (same ports as nginx) |
//! | HAProxy | `127.0.50.40:8080`, `:8081` (h2c), `:9000` (TCP) |
//! | Pingora | `127.0.50.50:8080` (HTTP/1.1 and h2c) |
//! | byte relay, 2 hops | client side `127.0.50.60:8080`, server side `127.0.50.61:8080` |
//! | weftd's TLS port (CA) | `127.0.50.1:15012` |
//! | weft, 2 hops with mTLS | client `127.0.50.13` (ports as the 2-hop client), server `127.0.50.21` (as the 2-hop server; upstream behind it on `127.0.50.21:18080`, `:18081`, `:19000`) |
//! | nginx, 2 hops with mTLS | client side `127.0.50.33`, server side `127.0.50.34` |
//! | HAProxy, 2 hops with mTLS | client side `127.0.50.43`, server side `127.0.50.44` |

use crate::load::Workload;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// weftd's address.
pub const WEFTD_IP: &str = "127.0.50.1";
/// The upstream's address.
pub const UPSTREAM_IP: &str = "127.0.50.2";
/// The 1-hop client sidecar.
pub const WEFT_1HOP_IP: &str = "127.0.50.10";
/// The 2-hop client sidecar.
pub const WEFT_2HOP_IP: &str = "127.0.50.11";
/// The 1-hop client sidecar whose telemetry a Telemetry resource turns off.
pub const WEFT_BARE_IP: &str = "127.0.50.12";
/// The 2-hop server sidecar (and the upstream's second address behind it).
pub const WEFT_SERVER_IP: &str = "127.0.50.20";
/// nginx.
pub const NGINX_IP: &str = "127.0.50.30";
/// The client-side nginx of the 2-hop chain.
pub const NGINX_2HOP_IP: &str = "127.0.50.31";
/// The server-side nginx of the 2-hop chain.
pub const NGINX_2HOP_SERVER_IP: &str = "127.0.50.32";
/// The 2-hop client sidecar speaking mutual TLS to its server sidecar.
pub const WEFT_MTLS_IP: &str = "127.0.50.13";
/// The 2-hop server sidecar with a certificate from weftd's CA (and the upstream's third address behind it).
pub const WEFT_MTLS_SERVER_IP: &str = "127.0.50.21";
/// The client-side nginx of the mutual-TLS chain.
pub const NGINX_TLS_IP: &str = "127.0.50.33";
/// The server-side nginx of the mutual-TLS chain.
pub const NGINX_TLS_SERVER_IP: &str = "127.0.50.34";
/// HAProxy.
pub const HAPROXY_IP: &str = "127.0.50.40";
/// The client-side HAProxy of the mutual-TLS chain.
pub const HAPROXY_TLS_IP: &str = "127.0.50.43";
/// The server-side HAProxy of the mutual-TLS chain.
pub const HAPROXY_TLS_SERVER_IP: &str = "127.0.50.44";
/// weftd's TLS port (its CA), Istio's 15012.
pub const WEFTD_SECURE_PORT: u16 = 15012;
/// Pingora.
pub const PINGORA_IP: &str = "127.0.50.50";
/// The client side of the two-hop byte relay.
pub const RELAY_IP: &str = "127.0.50.60";
/// The server side of the two-hop byte relay.
pub const RELAY_SERVER_IP: &str = "127.0.50.61";
/// Service port for HTTP/1.1 (protocol HTTP).
pub const HTTP_PORT: u16 = 8080;
/// Service port for HTTP/2 and gRPC (protocol GRPC).
pub const GRPC_PORT: u16 = 8081;
/// The upstream's TCP sink.
pub const TCP_PORT: u16 = 9000;
/// Application ports behind the server sidecar (inbound `8080:18080,8081:18081,9000:19000`).
pub const APP_HTTP_PORT: u16 = 18080;
/// See [`APP_HTTP_PORT`].
pub const APP_GRPC_PORT: u16 = 18081;
/// See [`APP_HTTP_PORT`].
pub const APP_TCP_PORT: u16 = 19000;
/// weft-proxy's explicit-proxy (outbound) port.
pub const OUTBOUND_PORT: u16 = 15001;
/// weft-proxy's admin port.
pub const ADMIN_PORT: u16 = 15000;
/// How many extra services weftd holds, so the sidecars' memory is measured with a realistic config.
pub const EXTRA_SERVICES: usize = 1000;

/// A target under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// Load generator straight to the upstream: the floor.
    Direct,
    /// Through one weft-proxy (the client's sidecar, to the upstream).
    Weft1Hop,
    /// [`Target::Weft1Hop`] with its telemetry off: a workload Telemetry resource disables every
    /// metric and span reporting (access logs are off in both), so the pair gives what telemetry costs.
    Weft1HopBare,
    /// Through two (client sidecar → server sidecar → upstream), as a mesh has.
    Weft2Hop,
    /// nginx, one hop.
    Nginx,
    /// Two nginx processes chained, the mesh's two hops done by the fastest C peer: the floor a
    /// two-hop mesh can reach on this machine.
    Nginx2Hop,
    /// HAProxy, one hop.
    Haproxy,
    /// Minimal Pingora reverse proxy, one hop.
    Pingora,
    /// Two HAProxy processes in TCP mode, chained: each hop relays bytes and parses no HTTP, so this is
    /// the least that any two-hop mesh can add on this machine, the floor under the two-hop latency goal.
    /// Measured on the goal's workload only.
    Relay2Hop,
    /// [`Target::Weft2Hop`] with mutual TLS between the sidecars: both have certificates from weftd's CA,
    /// the server's WorkloadEntry says it has a sidecar (auto mTLS) and a STRICT PeerAuthentication
    /// makes it refuse plaintext, so every request the upstream answers crossed the hop over mTLS.
    Weft2HopMtls,
    /// [`Target::Nginx2Hop`] with mutual TLS between the two nginx processes (client certificate,
    /// verified both ways, kept-alive upstream connections, session reuse).
    Nginx2HopTls,
    /// Two HAProxy processes chained with mutual TLS between them (`verify required` both ways), in HTTP
    /// mode for HTTP and TCP mode for TCP.
    Haproxy2HopTls,
}

impl Target {
    /// Every target, in report order.
    pub const ALL: [Target; 12] = [
        Target::Direct,
        Target::Weft1Hop,
        Target::Weft1HopBare,
        Target::Weft2Hop,
        Target::Weft2HopMtls,
        Target::Nginx,
        Target::Nginx2Hop,
        Target::Nginx2HopTls,
        Target::Haproxy,
        Target::Haproxy2HopTls,
        Target::Pingora,
        Target::Relay2Hop,
    ];

    /// Its name in the results.
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Weft1Hop => "weft-1hop",
            Target::Weft1HopBare => "weft-1hop-bare",
            Target::Weft2Hop => "weft-2hop",
            Target::Nginx => "nginx-1hop",
            Target::Nginx2Hop => "nginx-2hop",
            Target::Haproxy => "haproxy-1hop",
            Target::Pingora => "pingora-1hop",
            Target::Relay2Hop => "relay-2hop",
            Target::Weft2HopMtls => "weft-2hop-mtls",
            Target::Nginx2HopTls => "nginx-2hop-tls",
            Target::Haproxy2HopTls => "haproxy-2hop-tls",
        }
    }

    /// Weft's own targets.
    pub fn is_weft(self) -> bool {
        matches!(
            self,
            Target::Weft1Hop | Target::Weft1HopBare | Target::Weft2Hop | Target::Weft2HopMtls
        )
    }

    /// Whether the hop between its two proxies is mutual TLS (the results' `mtls`).
    pub fn mtls(self) -> bool {
        matches!(
            self,
            Target::Weft2HopMtls | Target::Nginx2HopTls | Target::Haproxy2HopTls
        )
    }

    /// Two proxies chained (the mesh's shape).
    pub fn two_hops(self) -> bool {
        matches!(
            self,
            Target::Weft2Hop
                | Target::Weft2HopMtls
                | Target::Nginx2Hop
                | Target::Nginx2HopTls
                | Target::Haproxy2HopTls
                | Target::Relay2Hop
        )
    }

    /// Whether the target records Istio's metrics and reports sampled spans (the results' `telemetry`).
    pub fn telemetry(self) -> bool {
        matches!(
            self,
            Target::Weft1Hop | Target::Weft2Hop | Target::Weft2HopMtls
        )
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| format!("unknown target {s:?}"))
    }
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    format!("{ip}:{port}")
        .parse()
        .expect("constant addresses parse")
}

/// Where the load generator sends a workload for a target: address and Host/`:authority`, or why the
/// target cannot carry it.
pub fn endpoint(
    target: Target,
    workload: Workload,
    nginx_stream: bool,
) -> Result<(SocketAddr, Option<String>), String> {
    let h2 = workload.is_h2();
    let port = if h2 { GRPC_PORT } else { HTTP_PORT };
    let tcp = workload.is_tcp();
    if workload == Workload::TcpNewConn && !target.two_hops() && target != Target::Direct {
        return Err(
            "handshakes (a new connection per exchange) are measured on the two-hop targets".into(),
        );
    }
    if target.mtls() && workload == Workload::GrpcUnary {
        return Err("mTLS's cost is measured on HTTP/1.1, HTTP/2, TCP and new connections".into());
    }
    match target {
        Target::Direct if tcp => Ok((addr(UPSTREAM_IP, TCP_PORT), None)),
        Target::Direct => Ok((addr(UPSTREAM_IP, port), None)),
        Target::Weft1HopBare
            if !matches!(workload, Workload::Http1KeepAlive | Workload::GrpcUnary) =>
        {
            Err("telemetry's cost is measured on HTTP/1.1 keep-alive and gRPC only".into())
        }
        Target::Weft1Hop | Target::Weft1HopBare | Target::Weft2Hop | Target::Weft2HopMtls => {
            let (ip, service) = match target {
                Target::Weft1Hop => (WEFT_1HOP_IP, "upstream"),
                Target::Weft1HopBare => (WEFT_BARE_IP, "upstream"),
                Target::Weft2HopMtls => (WEFT_MTLS_IP, "upstream-mtls"),
                _ => (WEFT_2HOP_IP, "upstream-mesh"),
            };
            if tcp {
                // The Sidecar's egress listener on the client sidecar's own address (explicit capture).
                return Ok((addr(ip, TCP_PORT), None));
            }
            Ok((addr(ip, OUTBOUND_PORT), Some(format!("{service}:{port}"))))
        }
        Target::Nginx | Target::Nginx2Hop | Target::Nginx2HopTls if tcp && !nginx_stream => {
            Err("nginx-light has no stream module (TCP proxying)".into())
        }
        Target::Nginx if tcp => Ok((addr(NGINX_IP, TCP_PORT), None)),
        Target::Nginx => Ok((addr(NGINX_IP, port), None)),
        Target::Nginx2Hop if tcp => Ok((addr(NGINX_2HOP_IP, TCP_PORT), None)),
        Target::Nginx2Hop => Ok((addr(NGINX_2HOP_IP, port), None)),
        Target::Nginx2HopTls if tcp => Ok((addr(NGINX_TLS_IP, TCP_PORT), None)),
        Target::Nginx2HopTls => Ok((addr(NGINX_TLS_IP, port), None)),
        Target::Haproxy2HopTls if tcp => Ok((addr(HAPROXY_TLS_IP, TCP_PORT), None)),
        Target::Haproxy2HopTls => Ok((addr(HAPROXY_TLS_IP, port), None)),
        Target::Haproxy if tcp => Ok((addr(HAPROXY_IP, TCP_PORT), None)),
        Target::Haproxy => Ok((addr(HAPROXY_IP, port), None)),
        Target::Pingora if tcp => {
            Err("the Pingora peer is an HTTP reverse proxy (no TCP proxying)".into())
        }
        Target::Pingora => Ok((addr(PINGORA_IP, HTTP_PORT), None)),
        Target::Relay2Hop if workload == Workload::Http1KeepAlive => {
            Ok((addr(RELAY_IP, HTTP_PORT), None))
        }
        Target::Relay2Hop => Err(
            "the byte relay is the floor of the two-hop latency goal, measured on its workload only".into(),
        ),
    }
}

/// [`endpoint`] at a rate: the mTLS targets run at max (requests per CPU-second, what mTLS's cost is
/// measured by) and at 1,000 req/s on HTTP/1.1 keep-alive (the latency goal), so that three rounds of
/// every target stay near half an hour.
pub fn endpoint_at(
    target: Target,
    workload: Workload,
    rate: crate::load::Rate,
    nginx_stream: bool,
) -> Result<(SocketAddr, Option<String>), String> {
    use crate::load::Rate;
    let headline = workload == Workload::Http1KeepAlive && rate == Rate::Fixed(1000);
    if target.mtls() && rate != Rate::Max && !headline {
        return Err(
            "mTLS's cost is measured at max (and HTTP/1.1 keep-alive at 1,000 req/s)".into(),
        );
    }
    endpoint(target, workload, nginx_stream)
}

/// The addresses the HTTP upstream listens on.
pub fn upstream_http_addrs() -> Vec<SocketAddr> {
    vec![
        addr(UPSTREAM_IP, HTTP_PORT),
        addr(UPSTREAM_IP, GRPC_PORT),
        addr(WEFT_SERVER_IP, APP_HTTP_PORT),
        addr(WEFT_SERVER_IP, APP_GRPC_PORT),
        addr(WEFT_MTLS_SERVER_IP, APP_HTTP_PORT),
        addr(WEFT_MTLS_SERVER_IP, APP_GRPC_PORT),
    ]
}

/// Every address a run listens on, to check that none is taken before starting.
pub fn all_listen_addrs() -> Vec<SocketAddr> {
    let mut v = upstream_http_addrs();
    v.extend(upstream_tcp_addrs());
    v.extend([
        addr(WEFTD_IP, 15010),
        addr(WEFTD_IP, 15014),
        addr(WEFTD_IP, WEFTD_SECURE_PORT),
        addr(WEFT_SERVER_IP, HTTP_PORT),
        addr(WEFT_SERVER_IP, GRPC_PORT),
        addr(WEFT_MTLS_SERVER_IP, HTTP_PORT),
        addr(WEFT_MTLS_SERVER_IP, GRPC_PORT),
    ]);
    for ip in [
        WEFT_1HOP_IP,
        WEFT_BARE_IP,
        WEFT_2HOP_IP,
        WEFT_SERVER_IP,
        WEFT_MTLS_IP,
        WEFT_MTLS_SERVER_IP,
    ] {
        v.push(addr(ip, OUTBOUND_PORT));
        v.push(addr(ip, ADMIN_PORT));
        v.push(addr(ip, TCP_PORT));
    }
    for ip in [
        NGINX_IP,
        NGINX_2HOP_IP,
        NGINX_2HOP_SERVER_IP,
        NGINX_TLS_IP,
        NGINX_TLS_SERVER_IP,
        HAPROXY_IP,
        HAPROXY_TLS_IP,
        HAPROXY_TLS_SERVER_IP,
    ] {
        v.extend([addr(ip, HTTP_PORT), addr(ip, GRPC_PORT), addr(ip, TCP_PORT)]);
    }
    v.push(addr(PINGORA_IP, HTTP_PORT));
    v.extend([addr(RELAY_IP, HTTP_PORT), addr(RELAY_SERVER_IP, HTTP_PORT)]);
    v
}

/// The addresses the TCP sink listens on: its own, and the one behind the server sidecar.
pub fn upstream_tcp_addrs() -> [SocketAddr; 3] {
    [
        addr(UPSTREAM_IP, TCP_PORT),
        addr(WEFT_SERVER_IP, APP_TCP_PORT),
        addr(WEFT_MTLS_SERVER_IP, APP_TCP_PORT),
    ]
}

fn service_entry(out: &mut String, name: &str, app: &str) {
    let _ = write!(
        out,
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: default
spec:
  hosts:
  - {name}.default.svc.cluster.local
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {HTTP_PORT}
    name: http
    protocol: HTTP
  - number: {GRPC_PORT}
    name: grpc
    protocol: GRPC
  - number: {TCP_PORT}
    name: tcp
    protocol: TCP
  workloadSelector:
    labels:
      app: {app}
---
"
    );
}

/// A WorkloadEntry; `sidecar` labels it `security.istio.io/tlsMode: istio` (it has a sidecar with a mesh
/// certificate, so clients speak mTLS to it: Istio's auto mTLS).
fn workload_entry(out: &mut String, name: &str, address: &str, sidecar: bool) {
    let tls = if sidecar {
        "\n    security.istio.io/tlsMode: istio"
    } else {
        ""
    };
    let _ = write!(
        out,
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {name}
  namespace: default
spec:
  address: {address}
  labels:
    app: {name}
    version: v1{tls}
  serviceAccount: {name}
  ports:
    http: {HTTP_PORT}
    grpc: {GRPC_PORT}
    tcp: {TCP_PORT}
---
"
    );
}

/// The registry for the Weft targets, in the shape of `samples/bookinfo/platform/local/bookinfo.yaml`:
/// `upstream` (its WorkloadEntry is the upstream itself: one hop), `upstream-mesh` (its WorkloadEntry is the
/// server sidecar, which forwards to the upstream: two hops).
pub fn weft_registry() -> String {
    let mut s =
        String::from("# Generated by weft-bench: the services the Weft targets route to.\n");
    service_entry(&mut s, "upstream", "upstream");
    workload_entry(&mut s, "upstream", UPSTREAM_IP, false);
    service_entry(&mut s, "upstream-mesh", "upstream-mesh");
    workload_entry(&mut s, "upstream-mesh", WEFT_SERVER_IP, false);
    service_entry(&mut s, MTLS_SERVER_APP, MTLS_SERVER_APP);
    workload_entry(&mut s, MTLS_SERVER_APP, WEFT_MTLS_SERVER_IP, true);
    sidecar(&mut s, CLIENT_1HOP_APP, "upstream");
    sidecar(&mut s, CLIENT_BARE_APP, "upstream");
    sidecar(&mut s, CLIENT_2HOP_APP, "upstream-mesh");
    sidecar(&mut s, CLIENT_MTLS_APP, MTLS_SERVER_APP);
    let _ = write!(
        s,
        "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: {MTLS_SERVER_APP}
  namespace: default
spec:
  selector:
    matchLabels:
      app: {MTLS_SERVER_APP}
  mtls:
    mode: STRICT
---
"
    );
    s
}

/// The telemetry of the Weft targets, as a mesh running Istio's defaults has it: metrics on, access
/// logs off, 1 % of requests traced to weftd's Zipkin collector (MeshConfig); and a workload Telemetry
/// that turns metrics and span reporting off for [`CLIENT_BARE_APP`] (the trace headers still pass).
pub fn weft_telemetry() -> (String, String) {
    let mesh = format!(
        "# Generated by weft-bench: Istio's default tracing, to weftd's collector.
defaultConfig:
  tracing:
    sampling: 1.0
    zipkin:
      address: {WEFTD_IP}:9411
"
    );
    let bare = format!(
        "# Generated by weft-bench: the 1-hop client without telemetry, to measure what it costs.
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: {CLIENT_BARE_APP}
  namespace: default
spec:
  selector:
    matchLabels:
      app: {CLIENT_BARE_APP}
  metrics:
  - overrides:
    - match:
        metric: ALL_METRICS
      disabled: true
  tracing:
  - disableSpanReporting: true
"
    );
    (mesh, bare)
}

/// The `app` label of the 1-hop client sidecar.
pub const CLIENT_1HOP_APP: &str = "bench-client";
/// The `app` label of the 1-hop client sidecar with telemetry off.
pub const CLIENT_BARE_APP: &str = "bench-client-bare";
/// The `app` label of the 2-hop client sidecar.
pub const CLIENT_2HOP_APP: &str = "bench-client-2hop";
/// The `app` label (and service account) of the 2-hop client sidecar with mTLS.
pub const CLIENT_MTLS_APP: &str = "bench-client-2hop-mtls";
/// The `app` label, service account and service name of the server sidecar with mTLS.
pub const MTLS_SERVER_APP: &str = "upstream-mtls";

/// A client's Sidecar: a TCP egress listener on its own address, port [`TCP_PORT`], to `service`'s TCP
/// port (Istio's explicit capture), and every service visible as without a Sidecar.
fn sidecar(out: &mut String, app: &str, service: &str) {
    let _ = write!(
        out,
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: {app}
  namespace: default
spec:
  workloadSelector:
    labels:
      app: {app}
  egress:
  - port:
      number: {TCP_PORT}
      protocol: TCP
      name: tcp
    captureMode: NONE
    hosts:
    - ./{service}.default.svc.cluster.local
  - hosts:
    - \"*/*\"
---
"
    );
}

/// [`EXTRA_SERVICES`] more services, each with two inline endpoints that nothing ever calls: the config a
/// sidecar in a mesh of a thousand services holds.
pub fn extra_services(n: usize) -> String {
    let mut s = String::with_capacity(n * 400);
    for i in 0..n {
        let (a, b) = (i / 250, i % 250 + 1);
        let _ = write!(
            s,
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc-{i:04}
  namespace: default
spec:
  hosts:
  - svc-{i:04}.default.svc.cluster.local
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {HTTP_PORT}
    name: http
    protocol: HTTP
  endpoints:
  - address: 127.0.{}.{b}
  - address: 127.0.{}.{b}
---
",
            60 + a,
            70 + a,
        );
    }
    s
}

/// nginx's config: one worker, upstream keep-alive, HTTP/1.1 on 8080, h2c (and `grpc_pass`) on 8081.
pub fn nginx_conf(dir: &Path, stream_module: Option<&Path>) -> String {
    nginx_conf_for("nginx", NGINX_IP, UPSTREAM_IP, dir, stream_module)
}

/// nginx's config for the 2-hop chain: the client side forwards to the server side, which forwards to
/// the upstream. Returns (client, server).
pub fn nginx_2hop_confs(dir: &Path, stream_module: Option<&Path>) -> (String, String) {
    (
        nginx_conf_for(
            "nginx-2hop-client",
            NGINX_2HOP_IP,
            NGINX_2HOP_SERVER_IP,
            dir,
            stream_module,
        ),
        nginx_conf_for(
            "nginx-2hop-server",
            NGINX_2HOP_SERVER_IP,
            UPSTREAM_IP,
            dir,
            stream_module,
        ),
    )
}

/// One nginx named `name` (its pid and log files) listening on `ip` and proxying to `upstream_ip`.
fn nginx_conf_for(
    name: &str,
    ip: &str,
    upstream_ip: &str,
    dir: &Path,
    stream_module: Option<&Path>,
) -> String {
    let d = dir.display();
    let (load, stream) = match stream_module {
        Some(m) => (
            format!("load_module {};\n", m.display()),
            format!(
                "stream {{\n  server {{ listen {ip}:{TCP_PORT}; proxy_pass {upstream_ip}:{TCP_PORT}; }}\n}}\n"
            ),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        "# Generated by weft-bench.
{load}worker_processes 1;
daemon off;
master_process on;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 8192; }}
{stream}http {{
  access_log off;
  # nginx closes a connection after 1,000 requests by default; the other targets do not.
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream up_http {{ server {upstream_ip}:{HTTP_PORT}; keepalive 64; keepalive_requests 1000000; }}
  upstream up_grpc {{ server {upstream_ip}:{GRPC_PORT}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen {ip}:{HTTP_PORT};
    location / {{
      proxy_pass http://up_http;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
  server {{
    listen {ip}:{GRPC_PORT} http2;
    location / {{
      proxy_pass http://up_http;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
    location /weft.bench.Echo/ {{
      grpc_pass grpc://up_grpc;
    }}
  }}
}}
"
    )
}

/// The name the server side of the TLS chains has in its certificate, and the client sides verify.
pub const TLS_SERVER_NAME: &str = "server.bench";

/// nginx's configs for the mutual-TLS chain, the certificates in `tls` ([`super::tls::Files`]): the client
/// side takes plaintext as [`nginx_2hop_confs`]'s does and originates TLS with a client certificate,
/// verifying the server's (kept-alive upstream connections, session reuse); the server side terminates TLS
/// and requires a client certificate from the same root. Returns (client, server).
pub fn nginx_tls_confs(
    dir: &Path,
    tls: &super::tls::Files,
    stream_module: Option<&Path>,
) -> (String, String) {
    let d = dir.display();
    let (ca, ccrt, ckey, scrt, skey) = (
        tls.ca.display(),
        tls.client_cert.display(),
        tls.client_key.display(),
        tls.server_cert.display(),
        tls.server_key.display(),
    );
    let origin = format!(
        "proxy_ssl_certificate {ccrt};
      proxy_ssl_certificate_key {ckey};
      proxy_ssl_trusted_certificate {ca};
      proxy_ssl_verify on;
      proxy_ssl_name {TLS_SERVER_NAME};
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;"
    );
    let terminate = format!(
        "ssl_certificate {scrt};
    ssl_certificate_key {skey};
    ssl_client_certificate {ca};
    ssl_verify_client on;"
    );
    let head = |name: &str| {
        let load = stream_module
            .map(|m| format!("load_module {};\n", m.display()))
            .unwrap_or_default();
        format!(
            "# Generated by weft-bench: {name}, mutual TLS between the two hops.
{load}worker_processes 1;
daemon off;
master_process on;
pid {d}/{name}.pid;
error_log {d}/{name}-error.log warn;
events {{ worker_connections 8192; }}
"
        )
    };
    let http_common = "access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;";
    let (ip, sip, up) = (NGINX_TLS_IP, NGINX_TLS_SERVER_IP, UPSTREAM_IP);
    let client_stream = if stream_module.is_some() {
        format!(
            "stream {{
  server {{
    listen {ip}:{TCP_PORT};
    proxy_pass {sip}:{TCP_PORT};
    proxy_ssl on;
    {}
  }}
}}
",
            origin.replace("\n      ", "\n    ")
        )
    } else {
        String::new()
    };
    let location = format!(
        "location / {{
      proxy_pass https://up_tls;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      {origin}
    }}"
    );
    let client = format!(
        "{}{client_stream}http {{
  {http_common}
  upstream up_tls {{ server {sip}:{HTTP_PORT}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen {ip}:{HTTP_PORT};
    {location}
  }}
  server {{
    listen {ip}:{GRPC_PORT} http2;
    {location}
  }}
}}
",
        head("nginx-tls-client")
    );
    let server_stream = if stream_module.is_some() {
        format!(
            "stream {{
  server {{
    listen {sip}:{TCP_PORT} ssl;
    {terminate}
    proxy_pass {up}:{TCP_PORT};
  }}
}}
"
        )
    } else {
        String::new()
    };
    let server = format!(
        "{}{server_stream}http {{
  {http_common}
  upstream up_http {{ server {up}:{HTTP_PORT}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen {sip}:{HTTP_PORT} ssl;
    {terminate}
    location / {{
      proxy_pass http://up_http;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
  }}
}}
",
        head("nginx-tls-server")
    );
    (client, server)
}

/// HAProxy's configs for the mutual-TLS chain (one thread each): the client side takes plaintext
/// HTTP/1.1, h2c and TCP and originates TLS with a client certificate, verifying the server's name and
/// chain (`verify required`); the server side terminates it, requiring a client certificate from the same
/// root, and forwards to the upstream. HTTP/2 stays HTTP/2 over TLS (ALPN h2). Returns (client, server).
pub fn haproxy_tls_cfgs(tls: &super::tls::Files) -> (String, String) {
    let (ca, cfull, sfull) = (
        tls.ca.display(),
        tls.client_full.display(),
        tls.server_full.display(),
    );
    let (ip, sip, up) = (HAPROXY_TLS_IP, HAPROXY_TLS_SERVER_IP, UPSTREAM_IP);
    let head = |name: &str| {
        format!(
            "# Generated by weft-bench: {name}, mutual TLS between the two hops.
global
  nbthread 1
  maxconn 8000

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s
"
        )
    };
    let origin = format!(
        "ssl crt {cfull} ca-file {ca} verify required verifyhost {TLS_SERVER_NAME} sni str({TLS_SERVER_NAME})"
    );
    let terminate = format!("ssl crt {sfull} ca-file {ca} verify required");
    let client = format!(
        "{}
frontend fe_http
  bind {ip}:{HTTP_PORT}
  default_backend be_http

frontend fe_h2
  bind {ip}:{GRPC_PORT} proto h2
  default_backend be_h2

backend be_http
  http-reuse always
  server s {sip}:{HTTP_PORT} {origin}

backend be_h2
  http-reuse always
  server s {sip}:{GRPC_PORT} {origin} alpn h2

frontend fe_tcp
  mode tcp
  bind {ip}:{TCP_PORT}
  default_backend be_tcp

backend be_tcp
  mode tcp
  server s {sip}:{TCP_PORT} {origin}
",
        head("haproxy-tls-client")
    );
    let server = format!(
        "{}
frontend fe_http
  bind {sip}:{HTTP_PORT} {terminate}
  default_backend be_http

frontend fe_h2
  bind {sip}:{GRPC_PORT} {terminate} alpn h2
  default_backend be_h2

backend be_http
  http-reuse always
  server up {up}:{HTTP_PORT}

backend be_h2
  http-reuse always
  server up {up}:{GRPC_PORT} proto h2

frontend fe_tcp
  mode tcp
  bind {sip}:{TCP_PORT} {terminate}
  default_backend be_tcp

backend be_tcp
  mode tcp
  server up {up}:{TCP_PORT}
",
        head("haproxy-tls-server")
    );
    (client, server)
}

/// HAProxy's config: one thread, server-side connection reuse, HTTP/1.1, h2c (h2 to the upstream) and TCP.
pub fn haproxy_cfg() -> String {
    format!(
        "# Generated by weft-bench.
global
  nbthread 1
  # Within the usual hard limit of open files (haproxy needs about two per connection).
  maxconn 8000

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout http-keep-alive 60s

frontend fe_http
  bind {HAPROXY_IP}:{HTTP_PORT}
  default_backend be_http

frontend fe_h2
  bind {HAPROXY_IP}:{GRPC_PORT} proto h2
  default_backend be_h2

backend be_http
  # Reuse idle upstream connections across client connections, as nginx's keepalive pool does.
  http-reuse always
  server up {UPSTREAM_IP}:{HTTP_PORT}

backend be_h2
  http-reuse always
  server up {UPSTREAM_IP}:{GRPC_PORT} proto h2

frontend fe_tcp
  mode tcp
  bind {HAPROXY_IP}:{TCP_PORT}
  default_backend be_tcp

backend be_tcp
  mode tcp
  server up {UPSTREAM_IP}:{TCP_PORT}
"
    )
}

/// The two HAProxy configs of the byte relay (TCP mode, one thread each): the client side forwards to the
/// server side, which forwards to the upstream's HTTP port. Returns (client, server).
pub fn relay_2hop_cfgs() -> (String, String) {
    let cfg = |name: &str, ip: &str, to: &str| {
        format!(
            "# Generated by weft-bench: {name}, bytes relayed, no HTTP parsed.
global
  nbthread 1
  maxconn 8000

defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s

listen {name}
  bind {ip}:{HTTP_PORT}
  server up {to}:{HTTP_PORT}
"
        )
    };
    (
        cfg("relay-client", RELAY_IP, RELAY_SERVER_IP),
        cfg("relay-server", RELAY_SERVER_IP, UPSTREAM_IP),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_cover_every_target_and_workload() {
        for t in Target::ALL {
            for w in Workload::ALL {
                let r = endpoint(t, w, false);
                let want_unsupported = (w.is_tcp()
                    && matches!(
                        t,
                        Target::Nginx | Target::Nginx2Hop | Target::Nginx2HopTls | Target::Pingora
                    ))
                    || (t == Target::Relay2Hop && w != Workload::Http1KeepAlive)
                    || (t == Target::Weft1HopBare
                        && !matches!(w, Workload::Http1KeepAlive | Workload::GrpcUnary))
                    || (w == Workload::TcpNewConn && !t.two_hops() && t != Target::Direct)
                    || (t.mtls() && w == Workload::GrpcUnary);
                assert_eq!(r.is_err(), want_unsupported, "{} {}", t.name(), w);
            }
        }
        let (a, host) = endpoint(Target::Weft2Hop, Workload::GrpcUnary, false).expect("ok");
        assert_eq!(a.to_string(), "127.0.50.11:15001");
        assert_eq!(host.as_deref(), Some("upstream-mesh:8081"));
        assert!(endpoint(Target::Nginx, Workload::TcpStream, true).is_ok());
        // Weft's TCP goes to the client sidecar's egress listener, with no authority.
        let (a, host) = endpoint(Target::Weft1Hop, Workload::TcpStream, false).expect("ok");
        assert_eq!(
            (a.to_string(), host),
            ("127.0.50.10:9000".to_string(), None)
        );
    }

    #[test]
    fn generated_configs_name_their_addresses() {
        let reg = weft_registry();
        assert!(reg.contains("address: 127.0.50.2\n"));
        assert!(reg.contains("address: 127.0.50.20\n"));
        assert!(reg.contains("protocol: GRPC"));
        assert_eq!(reg.matches("protocol: TCP").count(), 7, "{reg}");
        assert_eq!(reg.matches("kind: Sidecar").count(), 4, "{reg}");
        // Only the mTLS server's endpoint says it has a sidecar, and only it is STRICT.
        assert_eq!(
            reg.matches("security.istio.io/tlsMode: istio").count(),
            1,
            "{reg}"
        );
        assert!(reg.contains("address: 127.0.50.21\n  labels:\n    app: upstream-mtls\n    version: v1\n    security.istio.io/tlsMode: istio\n"), "{reg}");
        assert_eq!(reg.matches("mode: STRICT").count(), 1, "{reg}");
        assert!(reg.contains("- ./upstream-mesh.default.svc.cluster.local\n"));
        let extra = extra_services(1000);
        assert_eq!(extra.matches("kind: ServiceEntry").count(), 1000);
        assert!(extra.contains("svc-0999.default.svc.cluster.local"));
        let nginx = nginx_conf(Path::new("/tmp/x"), None);
        assert!(nginx.contains("keepalive 64;"));
        assert!(nginx.contains("worker_processes 1;"));
        assert!(!nginx.contains("stream {"));
        let (client, server) = nginx_2hop_confs(Path::new("/tmp/x"), None);
        assert!(client.contains("listen 127.0.50.31:8080;"));
        assert!(client.contains("server 127.0.50.32:8080;"));
        assert!(server.contains("listen 127.0.50.32:8080;"));
        assert!(server.contains("server 127.0.50.2:8080;"));
        assert!(client.contains("pid /tmp/x/nginx-2hop-client.pid;"));
        assert!(haproxy_cfg().contains("nbthread 1"));
        let (client, server) = relay_2hop_cfgs();
        assert!(client.contains("mode tcp") && client.contains("bind 127.0.50.60:8080"));
        assert!(client.contains("server up 127.0.50.61:8080"));
        assert!(
            server.contains("bind 127.0.50.61:8080")
                && server.contains("server up 127.0.50.2:8080")
        );
    }

    #[test]
    fn tls_peers_verify_both_ways() {
        let tls = super::super::tls::Files {
            ca: "/t/ca.pem".into(),
            server_cert: "/t/server.pem".into(),
            server_key: "/t/server-key.pem".into(),
            server_full: "/t/server-full.pem".into(),
            client_cert: "/t/client.pem".into(),
            client_key: "/t/client-key.pem".into(),
            client_full: "/t/client-full.pem".into(),
        };
        let stream = Path::new("/m/ngx_stream_module.so");
        let (client, server) = nginx_tls_confs(Path::new("/tmp/x"), &tls, Some(stream));
        assert!(client.contains("proxy_pass https://up_tls;"), "{client}");
        assert!(
            client.contains("proxy_ssl_verify on;")
                && client.contains("proxy_ssl_session_reuse on;")
        );
        assert!(client.contains("proxy_ssl_certificate /t/client.pem;"));
        assert!(client.contains("keepalive 64;") && client.contains("server 127.0.50.34:8080;"));
        assert!(
            client.contains("proxy_ssl on;") && client.contains("proxy_pass 127.0.50.34:9000;")
        );
        assert!(
            server.contains("listen 127.0.50.34:8080 ssl;")
                && server.contains("listen 127.0.50.34:9000 ssl;")
        );
        assert_eq!(
            server.matches("ssl_verify_client on;").count(),
            2,
            "{server}"
        );
        let (client, _) = nginx_tls_confs(Path::new("/tmp/x"), &tls, None);
        assert!(!client.contains("stream {"));
        let (client, server) = haproxy_tls_cfgs(&tls);
        assert_eq!(client.matches("ssl crt /t/client-full.pem ca-file /t/ca.pem verify required verifyhost server.bench").count(), 3, "{client}");
        assert_eq!(
            server
                .matches("ssl crt /t/server-full.pem ca-file /t/ca.pem verify required")
                .count(),
            3,
            "{server}"
        );
        assert!(
            client.contains("bind 127.0.50.43:8080") && server.contains("bind 127.0.50.44:9000")
        );
        for t in Target::ALL {
            assert_eq!(
                t.mtls(),
                t.name().ends_with("-tls") || t.name().ends_with("-mtls"),
                "{}",
                t.name()
            );
        }
    }

    #[test]
    fn the_weft_configs_are_what_weftd_accepts() {
        let (mesh, bare) = weft_telemetry();
        for (file, text) in [
            ("bench.yaml", weft_registry()),
            ("mesh.yaml", mesh),
            ("telemetry.yaml", bare),
        ] {
            let p = weft_api::parse_file(file, &text);
            assert!(p.diagnostics.is_empty(), "{file}: {:?}", p.diagnostics);
        }
        let p = weft_api::parse_file("mesh.yaml", &weft_telemetry().0);
        let t = p.mesh.expect("a mesh file").tracing().expect("valid");
        assert_eq!(t.expect("on").sampling, 1.0);
        let p = weft_api::parse_file("telemetry.yaml", &weft_telemetry().1);
        assert_eq!(p.resources.len(), 1);
    }
}
