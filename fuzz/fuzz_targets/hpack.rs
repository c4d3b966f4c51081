//! HPACK decoding (RFC 7541) as the HTTP/2 server and client decode header blocks: a sequence of blocks
//! on one decoder (one connection's dynamic table, of a size the input picks), each field handed on.
//! Nothing may panic; a bad block is a COMPRESSION_ERROR.
//!
//! Oracle, a round trip: every block that decoded into fields HTTP/2 allows is encoded again by the codec's
//! encoder and decoded by a fresh decoder, which must give the same fields in the same order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_http::fuzzing::{hpack_decode, hpack_encode};

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    // Table sizes from 0 to 4,096 bytes (the server's), in steps of 16.
    let table_size = usize::from(size) * 16;
    // Blocks: each prefixed by its length in one byte.
    let mut blocks = Vec::new();
    let mut at = rest;
    while let Some((&len, tail)) = at.split_first() {
        let len = usize::from(len).min(tail.len());
        blocks.push(&tail[..len]);
        at = &tail[len..];
    }
    for decoded in hpack_decode(table_size, &blocks).into_iter().flatten() {
        let allowed = decoded.iter().all(|(name, value)| {
            name != "!malformed"
                && (name.starts_with(':') || http::HeaderValue::from_bytes(value).is_ok())
                && !matches!(name.as_str(), ":status")
        });
        if !allowed {
            continue;
        }
        let again = hpack_encode(&decoded);
        let round = hpack_decode(4096, &[&again]);
        assert_eq!(round.len(), 1);
        let round = round.into_iter().next().and_then(Result::ok);
        assert_eq!(round.as_ref(), Some(&decoded), "re-encoded: {again:02x?}");
    }
});
