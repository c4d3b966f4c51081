//! Opaque TCP through the real binaries: a Sidecar egress port on productpage's sidecar carries bytes to a
//! TCP ServiceEntry, both ways, and goes away when the Sidecar does.

use anyhow::bail;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_e2e::{eventually, Mesh};

/// A TCP server that reads to the client's FIN, then answers `echo got <bytes>` and closes.
async fn answering(addr: &str) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the TCP app");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let reply = format!("echo got {}", String::from_utf8_lossy(&got));
                    let _ = s.write_all(reply.as_bytes()).await;
                }
            });
        }
    })
}

/// Writes `data`, closes the write side, reads the answer to its end.
async fn exchange(to: &str, data: &[u8]) -> std::io::Result<String> {
    let mut s = tokio::net::TcpStream::connect(to).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .map_err(|_| std::io::Error::other("no answer in 10 s"))??;
    Ok(String::from_utf8_lossy(&back).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_egress_port_carries_tcp_to_a_service() {
    let mesh = Mesh::start(25).await.expect("mesh starts");
    let subnet = &mesh.layout.subnet;
    let app = format!("{subnet}.60:9000");
    let _app = answering(&app).await;
    let yaml = format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: tcp-echo
  namespace: default
spec:
  hosts: [tcp-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  endpoints:
  - address: {subnet}.60
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: productpage
  namespace: default
spec:
  workloadSelector:
    labels:
      app: productpage
  egress:
  - port:
      number: 9000
      protocol: TCP
      name: tcp
    captureMode: NONE
    hosts:
    - ./tcp-echo.default.svc.cluster.local
  - hosts:
    - \"*/*\"
"
    );
    let file = mesh.log_dir.with_file_name("tcp-echo.yaml");
    std::fs::write(&file, yaml).expect("write the YAML");
    let path = file.to_str().expect("utf-8 path");
    let out = mesh.weft(&["apply", "-f", path]);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // productpage's sidecar binds its own address, port 9000, and carries bytes both ways.
    let listener = format!("{subnet}.10:9000");
    let payload = "x".repeat(100_000);
    let back = eventually(
        "TCP through the sidecar",
        Duration::from_secs(20),
        || async {
            let back = exchange(&listener, payload.as_bytes()).await?;
            if back.is_empty() {
                bail!("nothing came back");
            }
            Ok(back)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
    assert_eq!(back, format!("echo got {payload}"));

    // The Sidecar's `*/*` entry keeps every HTTP service reachable.
    let (status, _) = mesh.productpage(None).await.expect("productpage");
    assert_eq!(status, 200);

    // Deleting the Sidecar removes the listener.
    let out = mesh.weft(&["delete", "-f", path]);
    assert!(
        out.status.success(),
        "delete: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        "the listener unbound after the Sidecar was deleted",
        Duration::from_secs(20),
        || async {
            if tokio::net::TcpStream::connect(&listener).await.is_ok() {
                bail!("still bound");
            }
            Ok(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", mesh.logs()));
}
