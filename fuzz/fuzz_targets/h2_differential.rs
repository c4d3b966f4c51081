//! The HTTP/2 server against the `h2` crate's (what Weft's replaced), fed the same client bytes: the
//! preface and an empty SETTINGS, then the input in the pieces it gives (see `h2_server`), then the
//! client's side closes.
//!
//! Wherever Weft's handler sees a whole request, the `h2` server must see the same one: the same method,
//! URI and body. The oracle runs one way only: Weft refuses some requests `h2` takes, on purpose (a
//! `host` that differs from `:authority`, floods that `h2` lets through, its stricter counting of
//! resets), and its limits differ (`h2` allows 16 KiB header lists by default too). A request without
//! `:authority` is compared with nothing: the `h2` crate refuses it when it has a `:scheme`.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

/// Requests the `h2` crate's server handed on whole: method, URI, body; and whether its connection
/// ended without an error.
async fn h2_reads(pieces: Vec<Vec<u8>>) -> (Vec<(String, String, Vec<u8>)>, bool) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let seen: Arc<Mutex<Vec<(String, String, Vec<u8>)>>> = Arc::default();
    let record = seen.clone();
    let clean = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ended = clean.clone();
    let serve = async move {
        let Ok(mut conn) = h2::server::handshake(server).await else {
            ended.store(false, std::sync::atomic::Ordering::SeqCst);
            return;
        };
        loop {
            let (req, mut respond) = match conn.accept().await {
                Some(Ok(r)) => r,
                Some(Err(_)) => {
                    ended.store(false, std::sync::atomic::Ordering::SeqCst);
                    break;
                }
                None => break,
            };
            let record = record.clone();
            tokio::spawn(async move {
                let (parts, mut body) = req.into_parts();
                let mut data = Vec::new();
                while let Some(chunk) = body.data().await {
                    match chunk {
                        Ok(c) => {
                            let _ = body.flow_control().release_capacity(c.len());
                            data.extend_from_slice(&c);
                        }
                        Err(_) => return,
                    }
                }
                if let Ok(mut s) = record.lock() {
                    s.push((parts.method.to_string(), parts.uri.to_string(), data));
                }
                let _ = respond.send_response(http::Response::new(()), true);
            });
        }
    };
    let write = async {
        for p in pieces {
            if client.write_all(&p).await.is_err() {
                break;
            }
        }
        // As `h2_serve` does: a moment for the server, then the client's side closes.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let _ = client.shutdown().await;
        let mut sink = [0u8; 16 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut client, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3 * 3600), async {
        tokio::join!(serve, write)
    })
    .await;
    // Let the request tasks finish.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    (seen, clean.load(std::sync::atomic::Ordering::SeqCst))
}

fuzz_target!(|data: &[u8]| {
    let pieces = weft_http::fuzzing::h2_pieces(data);
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    };
    let (weft, clean) = rt().block_on(weft_http::fuzzing::h2_serve(pieces.clone()));
    // A connection error ends both servers' connections, and the `h2` crate's drops the requests it
    // had not handed on yet, where Weft's had already started them (as Envoy does, frame by frame):
    // only a connection that ended cleanly is compared.
    if !clean {
        return;
    }
    let whole: Vec<_> = weft
        .into_iter()
        .filter_map(|r| {
            // Without `:authority`, the `h2` crate refuses a request with `:scheme` as malformed
            // (`http::Uri` has no scheme without an authority); Weft's codec hands it on, with `host`
            // as its authority or none, which the proxy's routing refuses (400).
            if !r.uri.contains("://") {
                return None;
            }
            let (body, _) = r.body.ok()?;
            Some((r.method, r.uri, body))
        })
        .collect();
    if whole.is_empty() {
        return;
    }
    let (h2, h2_clean) = rt().block_on(h2_reads(pieces));
    // Likewise when the `h2` crate's connection ended in an error: it drops what it had not handed
    // on, and its errors differ from Weft's (its limits, its checks); what is compared is what both
    // servers take from a connection both find sound.
    if !h2_clean {
        return;
    }
    for w in &whole {
        assert!(
            h2.contains(w),
            "weft's handler saw {w:?}; the h2 crate's saw {h2:?}"
        );
    }
    std::hint::black_box(Bytes::new());
});
