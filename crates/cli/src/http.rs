//! A minimal HTTP/1.1 GET for talking to weftd's debug port and proxies' admin ports.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use std::time::Duration;

/// How long any one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// GETs `path` from `addr` (`host:port`) and returns the status and body.
pub async fn get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let work = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .with_context(|| format!("HTTP handshake with {addr} failed"))?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", addr)
            .body(Empty::<Bytes>::new())
            .context("bad request")?;
        let resp = send
            .send_request(req)
            .await
            .with_context(|| format!("GET http://{addr}{path} failed"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("reading http://{addr}{path}"))?
            .to_bytes();
        Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => bail!("GET http://{addr}{path} timed out after {TIMEOUT:?}"),
    }
}

/// GETs JSON, failing on a non-200 status.
pub async fn get_json(addr: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let (status, body) = get(addr, path).await?;
    if status != 200 {
        bail!("GET http://{addr}{path}: status {status}: {}", body.trim());
    }
    serde_json::from_str(&body).with_context(|| format!("http://{addr}{path} did not return JSON"))
}
