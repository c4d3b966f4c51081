//! An HTTP/1.1 request as the server reads it (its head parse and body framing), and the same bytes
//! served by hyper, the HTTP/1.1 implementation Weft's replaced, as an oracle.
//!
//! Nothing may panic. And wherever Weft reads a whole request, hyper must read the same one: the same
//! method, target and body. Two readers that disagree on where a request ends are how requests are
//! smuggled. The oracle runs one way only: Weft refuses some requests hyper takes (several `Host`
//! fields, a `Host` that is not an authority, none in HTTP/1.1, `transfer-encoding` beside
//! `content-length`), on purpose.
#![no_main]

use bytes::Bytes;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use weft_http::fuzzing::{h1_request, H1Request};

/// What hyper's server handed its service: method, target, whole body (or why it failed).
type Seen = (String, String, Result<Vec<u8>, String>);

fn hyper_reads(input: &[u8]) -> Option<Seen> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let seen: Arc<Mutex<Option<Seen>>> = Arc::default();
        let record = seen.clone();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = record.clone();
            async move {
                let method = req.method().to_string();
                let target = req.uri().to_string();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .map_err(|e| e.to_string());
                let mut r = record.lock().expect("lock");
                if r.is_none() {
                    *r = Some((method, target, body));
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::new(),
                )))
            }
        });
        // The client's side closes once it has written: hyper must not take that for the end of the
        // exchange (`half_close`), as a server does not.
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        let write = async {
            let _ = client.write_all(input).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut client, &mut sink).await;
        };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            tokio::join!(conn, write)
        })
        .await;
        let seen = seen.lock().expect("lock").take();
        seen
    })
}

fuzz_target!(|data: &[u8]| {
    let weft = h1_request(data);
    let H1Request::Request {
        method,
        target,
        headers,
        body: Ok(Some((body, _trailers))),
    } = weft
    else {
        return;
    };
    // The codec builds values unchecked after its own check (`h1::codec`): each must be one `http`
    // itself would build.
    assert!(
        headers
            .iter()
            .all(|(_, v)| http::HeaderValue::from_bytes(v).is_ok()),
        "{headers:?}"
    );
    // A length that was read is the length of the body read (a list of one value repeated counts as
    // that value, RFC 9110 8.6).
    for (_, v) in headers.iter().filter(|(n, _)| n == "content-length") {
        for n in std::str::from_utf8(v).expect("ascii").split(',') {
            let n: usize = n.trim().parse().expect("a length");
            assert_eq!(n, body.len());
        }
    }
    let Some((h_method, h_target, h_body)) = hyper_reads(data) else {
        panic!("weft read {method} {target} with a {}-byte body; hyper read no request", body.len());
    };
    assert_eq!((&method, &target), (&h_method, &h_target));
    match h_body {
        Ok(b) => assert_eq!(b, body, "the two readers disagree on the body"),
        Err(e) => panic!("weft read a {}-byte body; hyper failed: {e}", body.len()),
    }
});
