//! The input of the `xds_snapshot` target: a sequence of xDS responses, each a type, a protocol and a
//! list of encoded resources.
//!
//! ```text
//! input    = response*                      (at most MAX_RESPONSES are read)
//! response = flags:u8 count:u8 [removed:u8] resource{count}
//! flags    = bits 0-1: the type, an index into `weft_xds::type_url::ALL` (CDS, EDS, LDS, RDS)
//!            bit 2: delta (set) or state of the world
//! removed  = delta only: bit i removes the i-th held resource of the type, by name order
//! resource = len:u16 (little-endian) bytes[len], the protobuf encoding of the type's message
//! ```
//!
//! A truncated resource takes the bytes that are left. Resources are protobuf bytes rather than
//! `arbitrary` values because prost decodes most byte strings (unknown fields are skipped), and the seeds
//! are real resources that libFuzzer mutates in place.

/// The most responses one input is read as: enough to bring up, change and tear down a configuration,
/// few enough that one input runs in milliseconds.
pub const MAX_RESPONSES: usize = 16;

/// One response as read from an input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    /// Index into `weft_xds::type_url::ALL`.
    pub type_index: usize,
    /// Incremental (delta) rather than state of the world.
    pub delta: bool,
    /// Delta only: which held resources of the type it removes (bit i: the i-th by name).
    pub removed: u8,
    /// The encoded resources.
    pub resources: Vec<&'a [u8]>,
}

/// Reads an input into responses; every byte string is some sequence of responses.
pub fn decode(mut data: &[u8]) -> Vec<Response<'_>> {
    let mut out = Vec::new();
    while out.len() < MAX_RESPONSES {
        let [flags, count, rest @ ..] = data else {
            break;
        };
        data = rest;
        let delta = flags & 0b100 != 0;
        let mut removed = 0;
        if delta {
            if let [r, rest @ ..] = data {
                removed = *r;
                data = rest;
            }
        }
        let mut resources = Vec::with_capacity(usize::from(*count));
        for _ in 0..*count {
            let [lo, hi, rest @ ..] = data else {
                break;
            };
            let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(rest.len());
            let (bytes, rest) = rest.split_at(len);
            resources.push(bytes);
            data = rest;
        }
        out.push(Response {
            type_index: usize::from(flags & 0b11),
            delta,
            removed,
            resources,
        });
    }
    out
}

/// Writes responses in the format [`decode`] reads. Panics if a resource is over 65,535 bytes or a
/// response has over 255 resources: seeds are small.
pub fn encode(responses: &[Response<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in responses {
        assert!(r.type_index < 4, "type index {}", r.type_index);
        out.push(r.type_index as u8 | if r.delta { 0b100 } else { 0 });
        out.push(u8::try_from(r.resources.len()).expect("at most 255 resources"));
        if r.delta {
            out.push(r.removed);
        }
        for bytes in &r.resources {
            let len = u16::try_from(bytes.len()).expect("a resource under 64 KiB");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(bytes);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_decode_gives_the_responses_back() {
        let responses = vec![
            Response {
                type_index: 0,
                delta: false,
                removed: 0,
                resources: vec![b"a".as_slice(), b"".as_slice()],
            },
            Response {
                type_index: 3,
                delta: true,
                removed: 0b101,
                resources: vec![b"route".as_slice()],
            },
        ];
        assert_eq!(decode(&encode(&responses)), responses);
    }

    #[test]
    fn a_truncated_input_is_read_as_far_as_it_goes() {
        // A delta EDS response of two resources whose second length runs past the end.
        let got = decode(&[0b101, 2, 0, 1, 0, b'x', 9, 0, b'y']);
        assert_eq!(
            got,
            vec![Response {
                type_index: 1,
                delta: true,
                removed: 0,
                resources: vec![b"x".as_slice(), b"y".as_slice()],
            }]
        );
        assert_eq!(decode(&[7]), vec![]);
    }
}
