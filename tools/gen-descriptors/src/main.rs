//! Compiles the Envoy protos weft puts in config dumps into one FileDescriptorSet.
//! Usage: gen-descriptors <envoy-types proto dir> <output file>
use prost::Message;

const FILES: &[&str] = &[
    "envoy/admin/v3/config_dump.proto",
    "envoy/config/listener/v3/listener.proto",
    "envoy/config/route/v3/route.proto",
    "envoy/config/cluster/v3/cluster.proto",
    "envoy/config/endpoint/v3/endpoint.proto",
    "envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto",
    "envoy/extensions/filters/network/tcp_proxy/v3/tcp_proxy.proto",
    "envoy/extensions/filters/http/fault/v3/fault.proto",
    "envoy/extensions/filters/http/cors/v3/cors.proto",
    "envoy/extensions/filters/http/router/v3/router.proto",
    "envoy/service/discovery/v3/discovery.proto",
    // Issue 23 (security): TLS transport sockets and SDS secrets, the TLS inspector, RBAC and JWT.
    "envoy/extensions/transport_sockets/tls/v3/tls.proto",
    "envoy/extensions/transport_sockets/tls/v3/secret.proto",
    "envoy/extensions/transport_sockets/raw_buffer/v3/raw_buffer.proto",
    "envoy/extensions/filters/listener/tls_inspector/v3/tls_inspector.proto",
    "envoy/extensions/filters/http/rbac/v3/rbac.proto",
    "envoy/extensions/filters/network/rbac/v3/rbac.proto",
    "envoy/extensions/filters/http/jwt_authn/v3/config.proto",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (root, out) = match args.as_slice() {
        [_, root, out] => (std::path::PathBuf::from(root), out.clone()),
        _ => {
            eprintln!("usage: gen-descriptors <envoy-types proto dir> <output file>");
            std::process::exit(2);
        }
    };
    let includes: Vec<_> = [
        "data-plane-api",
        "xds",
        "protoc-gen-validate",
        "googleapis",
        "cel-spec/proto",
        "opentelemetry-proto",
        "client_model",
    ]
    .iter()
    .map(|d| root.join(d))
    .filter(|p| p.exists())
    .collect();
    let mut set = match protox::compile(FILES, &includes) {
        Ok(set) => set,
        Err(e) => {
            eprintln!("compile failed: {e:?}");
            std::process::exit(1);
        }
    };
    // Comments are not needed to render JSON; dropping them halves the file.
    for f in &mut set.file {
        f.source_code_info = None;
    }
    if let Err(e) = std::fs::write(&out, set.encode_to_vec()) {
        eprintln!("cannot write {out}: {e}");
        std::process::exit(1);
    }
    eprintln!("wrote {} files into {out}", set.file.len());
}
