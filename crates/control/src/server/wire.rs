//! ADS responses encoded straight into gRPC frames, sharing each resource's bytes with the view.
//!
//! A resource is encoded once per view (as a `google.protobuf.Any`, [`crate::view::Res`]); every proxy's
//! response that carries it refers to those bytes instead of copying them. Only the small parts (the
//! response's own fields, each resource's name and version, and resources under [`SHARE_MIN`]) are
//! written per response. Protobuf lets a message's fields come in any order, so a `Resource` is written as
//! its name and version, then its `resource` field pointing at the shared `Any`.
//!
//! This replaces tonic's encoder on the ADS streams: that one encodes every message into a per-stream
//! buffer that keeps the capacity of the largest message it ever held, so one 4 MB route table per proxy
//! cost weftd 4 to 8 MB per connected proxy for the life of its stream.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};
use prost::Message;
use weft_xds::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};

/// Resources at least this large are sent as a reference to the view's bytes; smaller ones are copied
/// into the response, where a separate buffer would cost more than the copy.
pub const SHARE_MIN: usize = 4096;

/// `resources` is field 2 in both responses; in `Resource`, `version` is 1, `resource` 2 and `name` 3.
const RESOURCES_TAG: u32 = 2;
const RESOURCE_VERSION_TAG: u32 = 1;
const RESOURCE_ANY_TAG: u32 = 2;
const RESOURCE_NAME_TAG: u32 = 3;

/// One resource of a response: its name, version and encoded `Any`.
pub struct Item<'a> {
    /// The resource's name.
    pub name: &'a str,
    /// Its version (delta only), as text.
    pub version: &'a [u8],
    /// The encoded `google.protobuf.Any`.
    pub any: &'a Bytes,
}

/// One gRPC message, as the buffers to send in order.
#[derive(Debug, Default)]
pub struct Frames(pub Vec<Bytes>);

impl Frames {
    /// Bytes on the wire, gRPC prefix included.
    pub fn len(&self) -> usize {
        self.0.iter().map(Bytes::len).sum()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Bytes::is_empty)
    }
}

/// Writes small parts into one buffer and cuts it wherever a shared buffer goes in between.
struct Writer {
    small: BytesMut,
    out: Vec<Bytes>,
}

impl Writer {
    fn new(capacity: usize) -> Writer {
        Writer {
            small: BytesMut::with_capacity(capacity),
            out: Vec::new(),
        }
    }

    fn shared(&mut self, b: &Bytes) {
        if b.len() < SHARE_MIN {
            self.small.put_slice(b);
        } else {
            if !self.small.is_empty() {
                self.out.push(self.small.split().freeze());
            }
            self.out.push(b.clone());
        }
    }

    fn finish(mut self) -> Frames {
        if !self.small.is_empty() {
            self.out.push(self.small.freeze());
        }
        Frames(self.out)
    }
}

fn len_delimited(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The gRPC length prefix: not compressed, then the length, big-endian.
fn grpc_prefix(w: &mut BytesMut, len: usize) {
    w.put_u8(0);
    w.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// A string field as prost writes it: nothing when empty (proto3's default).
fn string_field_len(tag: u32, s: &[u8]) -> usize {
    if s.is_empty() {
        0
    } else {
        len_delimited(tag, s.len())
    }
}

fn put_string_field(tag: u32, s: &[u8], w: &mut BytesMut) {
    if !s.is_empty() {
        encode_key(tag, WireType::LengthDelimited, w);
        encode_varint(s.len() as u64, w);
        w.put_slice(s);
    }
}

/// The length of a `Resource`'s fields before its `Any`: its version and name.
fn resource_head_len(it: &Item<'_>) -> usize {
    string_field_len(RESOURCE_VERSION_TAG, it.version)
        + string_field_len(RESOURCE_NAME_TAG, it.name.as_bytes())
}

/// The length of one entry of `resources`: a wrapped `Resource` (delta) or the bare `Any`.
fn entry_len(it: &Item<'_>, wrap: bool) -> usize {
    if wrap {
        resource_head_len(it) + len_delimited(RESOURCE_ANY_TAG, it.any.len())
    } else {
        it.any.len()
    }
}

/// A response: `head` is the message without its resources (field 2 in both protocols). Delta wraps each
/// `Any` in a `Resource` carrying its name and version; state of the world sends the bare `Any`. Nothing
/// is allocated per resource: the fields around each `Any` are written straight into the frame.
fn encode<M: Message>(head: &M, items: &[Item<'_>], wrap: bool) -> Frames {
    let head_len = head.encoded_len();
    let mut total = head_len;
    let mut small = 0;
    for it in items {
        total += len_delimited(RESOURCES_TAG, entry_len(it, wrap));
        small += 20 + if wrap { resource_head_len(it) } else { 0 };
        if it.any.len() < SHARE_MIN {
            small += it.any.len();
        }
    }
    let mut w = Writer::new(5 + head_len + small);
    grpc_prefix(&mut w.small, total);
    // Encoding into a BytesMut cannot run out of space: it grows.
    let _ = head.encode(&mut w.small);
    for it in items {
        encode_key(RESOURCES_TAG, WireType::LengthDelimited, &mut w.small);
        encode_varint(entry_len(it, wrap) as u64, &mut w.small);
        if wrap {
            put_string_field(RESOURCE_VERSION_TAG, it.version, &mut w.small);
            put_string_field(RESOURCE_NAME_TAG, it.name.as_bytes(), &mut w.small);
            encode_key(RESOURCE_ANY_TAG, WireType::LengthDelimited, &mut w.small);
            encode_varint(it.any.len() as u64, &mut w.small);
        }
        w.shared(it.any);
    }
    w.finish()
}

/// A delta response: `head` carries everything but `resources`.
pub fn delta(head: &DeltaDiscoveryResponse, items: &[Item<'_>]) -> Frames {
    debug_assert!(head.resources.is_empty());
    encode(head, items, true)
}

/// A state-of-the-world response: `head` carries everything but `resources`.
pub fn sotw(head: &DiscoveryResponse, items: &[Item<'_>]) -> Frames {
    debug_assert!(head.resources.is_empty());
    encode(head, items, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_xds::pb::envoy::service::discovery::v3::Resource;
    use weft_xds::Any;

    fn any(type_url: &str, n: usize, fill: u8) -> Any {
        Any {
            type_url: type_url.into(),
            value: vec![fill; n],
        }
    }

    fn unframe(f: &Frames) -> Vec<u8> {
        let mut all = Vec::new();
        for b in &f.0 {
            all.extend_from_slice(b);
        }
        assert_eq!(all[0], 0, "not compressed");
        let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
        assert_eq!(len, all.len() - 5, "prefix length");
        all.split_off(5)
    }

    /// The hand-assembled messages decode to exactly what prost would have encoded.
    #[test]
    fn delta_and_sotw_decode_as_prost_messages() {
        let anys = [
            any("t/a", 10, 1),
            any("t/b", SHARE_MIN + 7, 2),
            any("t/c", 0, 0),
        ];
        let encoded: Vec<Bytes> = anys
            .iter()
            .map(|a| Bytes::from(a.encode_to_vec()))
            .collect();
        // A name longer than 127 bytes takes a two-byte length; an empty one is omitted, as prost does.
        let long = "n".repeat(200);
        let names = ["a", long.as_str(), ""];
        let versions: [&[u8]; 3] = [b"v1", b"", b"0123456789abcdef"];
        let items: Vec<Item<'_>> = (0..3)
            .map(|i| Item {
                name: names[i],
                version: versions[i],
                any: &encoded[i],
            })
            .collect();

        let head = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            type_url: "t".into(),
            nonce: "1-2".into(),
            removed_resources: vec!["gone".into()],
            ..Default::default()
        };
        let frames = delta(&head, &items);
        assert!(
            frames.0.len() >= 3,
            "the large resource is shared, not copied"
        );
        assert!(frames.0.iter().any(|b| b.as_ptr() == encoded[1].as_ptr()));
        let got = DeltaDiscoveryResponse::decode(&unframe(&frames)[..]).expect("decodes");
        let mut want = head.clone();
        want.resources = (0..3)
            .map(|i| Resource {
                name: names[i].into(),
                version: String::from_utf8(versions[i].to_vec()).expect("ascii"),
                resource: Some(anys[i].clone()),
                ..Default::default()
            })
            .collect();
        assert_eq!(got, want);

        let head = DiscoveryResponse {
            version_info: "7".into(),
            type_url: "t".into(),
            nonce: "3".into(),
            ..Default::default()
        };
        let got = DiscoveryResponse::decode(&unframe(&sotw(&head, &items))[..]).expect("decodes");
        let mut want = head.clone();
        want.resources = anys.to_vec();
        assert_eq!(got, want);
    }

    #[test]
    fn empty_responses_are_one_buffer() {
        let f = delta(&DeltaDiscoveryResponse::default(), &[]);
        assert_eq!(f.0.len(), 1);
        assert_eq!(unframe(&f), Vec::<u8>::new());
    }
}
