//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`, off in every build that ships): each
//! drives one of the codecs exactly as a server does, over memory, and returns what it made of its input
//! in plain types, so that a target can check properties and compare with another implementation.

use crate::h2::hpack::{self, Name};
use crate::{Body, Limits};
use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Request, Response};
use http_body::Body as _;
use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A decoded header field: its name (`:method` and the like for pseudo-header fields, `!malformed` for a
/// name HTTP/2 does not allow) and its value.
pub type Field = (String, Vec<u8>);

/// Decodes `blocks` in order on one decoder (one connection's dynamic table, of `table_size` bytes), as
/// the HTTP/2 server does; the fields of each block, until the first that fails.
pub fn hpack_decode(table_size: usize, blocks: &[&[u8]]) -> Vec<Result<Vec<Field>, String>> {
    let mut decoder = hpack::Decoder::new(table_size);
    let mut out = Vec::new();
    for block in blocks {
        let mut fields = Vec::new();
        let r = decoder.decode(&Bytes::copy_from_slice(block), |name, value| {
            fields.push((name_text(&name), value.to_vec()));
        });
        match r {
            Ok(()) => out.push(Ok(fields)),
            Err(e) => {
                out.push(Err(e.to_string()));
                break;
            }
        }
    }
    out
}

/// Encodes `fields` as the HTTP/2 codec encodes a message's fields (pseudo-header fields, then the
/// others; those HTTP/2 forbids or a `HeaderValue` refuses are left out), for a round trip through
/// `hpack_decode`.
pub fn hpack_encode(fields: &[Field]) -> Vec<u8> {
    let mut dst = BytesMut::new();
    for (name, value) in fields {
        let pseudo = match name.as_str() {
            ":authority" => Some(Name::Authority),
            ":method" => Some(Name::Method),
            ":path" => Some(Name::Path),
            ":scheme" => Some(Name::Scheme),
            ":protocol" => Some(Name::Protocol),
            _ => None,
        };
        if let Some(p) = pseudo {
            hpack::encode_pseudo(&p, value, &mut dst);
            continue;
        }
        if name == ":status" {
            if let Ok(s) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u16>().ok())
                .and_then(|v| http::StatusCode::from_u16(v).ok())
                .ok_or(())
            {
                hpack::encode_status(s, &mut dst);
            }
            continue;
        }
        // The constructor the decoder uses for a literal name: what it accepted comes back.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_lowercase(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            hpack::encode_field(&n, &v, &mut dst);
        }
    }
    dst.to_vec()
}

fn name_text(name: &Name) -> String {
    match name {
        Name::Authority => ":authority".into(),
        Name::Method => ":method".into(),
        Name::Path => ":path".into(),
        Name::Scheme => ":scheme".into(),
        Name::Status => ":status".into(),
        Name::Protocol => ":protocol".into(),
        Name::Header(h) => h.as_str().to_owned(),
        Name::Malformed => "!malformed".into(),
    }
}

/// A whole body and its trailers.
pub type WholeBody = (Vec<u8>, Vec<Field>);

/// What the HTTP/1.1 server makes of the bytes a client sent first on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H1Request {
    /// The head is not whole yet.
    Incomplete,
    /// Refused with this status.
    Refused(u16),
    /// A request: its head, and its body: whole with its trailers, not whole yet (`None`), or broken.
    Request {
        /// The method.
        method: String,
        /// The request target as read.
        target: String,
        /// The fields, in order.
        headers: Vec<Field>,
        /// The body and its trailers.
        body: Result<Option<WholeBody>, ()>,
    },
}

/// The first request in `input`, read as the HTTP/1.1 server reads it (its parse and body framing).
pub fn h1_request(input: &[u8]) -> H1Request {
    crate::h1::server::read_request(BytesMut::from(input))
}

/// A request an HTTP/2 server handed to its handler: pseudo-header fields and others, the body, its
/// trailers; or how reading the body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct H2Request {
    /// `:method`.
    pub method: String,
    /// The URI from `:scheme`, `:authority` and `:path`.
    pub uri: String,
    /// The regular fields, in order.
    pub headers: Vec<Field>,
    /// The body and trailers, or why reading them failed.
    pub body: Result<WholeBody, String>,
}

/// What the HTTP/2 targets write to a server: the client's preface and an empty SETTINGS (most inputs
/// would fail them otherwise), then `data` in the pieces it gives, each prefixed by its length in two
/// bytes (a short tail is one more piece).
pub fn h2_pieces(data: &[u8]) -> Vec<Vec<u8>> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    const EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let mut pieces = vec![[PREFACE, EMPTY_SETTINGS].concat()];
    let mut at = data;
    while at.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([at[0], at[1]])).min(at.len() - 2);
        pieces.push(at[2..2 + len].to_vec());
        at = &at[2 + len..];
    }
    if !at.is_empty() {
        pieces.push(at.to_vec());
    }
    pieces
}

/// Runs the HTTP/2 server over an in-memory pipe: `input` is written to it in the given pieces (the
/// connection preface is the client's to send, as the first bytes), then the client side closes. The
/// server answers each request with its body (so flow control runs both ways) and runs under the
/// default limits, with a paused clock: every timer that would fire, fires. Returns the requests its
/// handler saw, and whether the connection ended without a connection error of the client's. Call it
/// from a current-thread runtime whose clock is paused.
pub async fn h2_serve(input: Vec<Vec<u8>>) -> (Vec<H2Request>, bool) {
    let (mut client, server_io) = tokio::io::duplex(64 * 1024);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let handler = move |req: Request<Body>| {
        let record = record.clone();
        async move {
            let (parts, mut body) = req.into_parts();
            let mut data = Vec::new();
            let mut trailers = Vec::new();
            let read = loop {
                match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                    None => break Ok(()),
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => data.extend_from_slice(&d),
                        Err(f) => {
                            if let Ok(t) = f.into_trailers() {
                                trailers = t
                                    .iter()
                                    .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                                    .collect();
                            }
                        }
                    },
                    Some(Err(e)) => break Err(e.to_string()),
                }
            };
            let answer = Bytes::from(data.clone());
            if let Ok(mut s) = record.lock() {
                s.push(H2Request {
                    method: parts.method.as_str().to_owned(),
                    uri: parts.uri.to_string(),
                    headers: parts
                        .headers
                        .iter()
                        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
                        .collect(),
                    body: read.map(|()| (data, trailers)),
                });
            }
            Response::new(Body::full(answer))
        }
    };
    let server = tokio::spawn(crate::h2::serve_with(
        server_io,
        handler,
        |_| false,
        Limits::default(),
    ));
    let write = async {
        for piece in input {
            if client.write_all(&piece).await.is_err() {
                break;
            }
        }
        // A moment (of the paused clock) for the server to take it all in, as a client that waits for
        // its answers gives it; then the client's side closes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = client.shutdown().await;
        // Read what the server writes until it closes, so that it never waits on a full pipe.
        let mut sink = [0u8; 16 * 1024];
        loop {
            match tokio::io::AsyncReadExt::read(&mut client, &mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    // The paused clock jumps to the next timer whenever both sides wait: an hour is the idle timeout.
    let _ = tokio::time::timeout(Duration::from_secs(3 * 3600), write).await;
    let ended = tokio::time::timeout(Duration::from_secs(3 * 3600), server).await;
    let clean = !matches!(ended, Ok(Ok(Err(crate::h2::ServerError::Protocol { .. }))));
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    (seen, clean)
}
