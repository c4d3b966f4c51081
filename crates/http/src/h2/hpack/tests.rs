//! HPACK against RFC 7541's examples, the static and Huffman tables, and random input.

use super::huffman::HUFFMAN_CODES;
use super::table::Entry;
use super::*;
use http::header;

/// Bytes from a hex dump (whitespace ignored), as RFC 7541's examples print them.
fn hex(s: &str) -> Bytes {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap();
            u8::from_str_radix(pair, 16).unwrap()
        })
        .collect::<Vec<u8>>()
        .into()
}

fn name(s: &str) -> Name {
    parse_name(s.as_bytes())
}

fn decode(decoder: &mut Decoder, block: &Bytes) -> Result<Vec<(Name, Bytes)>, DecodeError> {
    let mut fields = Vec::new();
    decoder.decode(block, |n, v| fields.push((n, v)))?;
    Ok(fields)
}

/// Decodes `block` and checks its fields, then the dynamic table's entries (newest first) and size.
fn check(
    decoder: &mut Decoder,
    block: &str,
    fields: &[(&str, &str)],
    table: &[(&str, &str)],
    size: usize,
) {
    let got = decode(decoder, &hex(block)).unwrap();
    let want: Vec<(Name, Bytes)> = fields
        .iter()
        .map(|(n, v)| (name(n), Bytes::copy_from_slice(v.as_bytes())))
        .collect();
    assert_eq!(got, want);
    let got_table: Vec<(Name, &[u8])> = decoder
        .table
        .entries
        .iter()
        .map(|e| (e.name.clone(), &e.value[..]))
        .collect();
    let want_table: Vec<(Name, &[u8])> =
        table.iter().map(|(n, v)| (name(n), v.as_bytes())).collect();
    assert_eq!(got_table, want_table);
    assert_eq!(decoder.table.size, size);
    let sum: usize = decoder.table.entries.iter().map(Entry::size).sum();
    assert_eq!(sum, size);
}

// RFC 7541 C.2: one field each.

#[test]
fn c2_1_literal_with_indexing() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        &[("custom-key", "custom-header")],
        55,
    );
}

#[test]
fn c2_2_literal_without_indexing() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "040c 2f73 616d 706c 652f 7061 7468",
        &[(":path", "/sample/path")],
        &[],
        0,
    );
}

#[test]
fn c2_3_literal_never_indexed() {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        "1008 7061 7373 776f 7264 0673 6563 7265 74",
        &[("password", "secret")],
        &[],
        0,
    );
}

#[test]
fn c2_4_indexed() {
    let mut d = Decoder::new(4096);
    check(&mut d, "82", &[(":method", "GET")], &[], 0);
}

// RFC 7541 C.3 and C.4: three requests on one connection, without and with Huffman coding.

const C3: [&str; 3] = [
    "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
    "8286 84be 5808 6e6f 2d63 6163 6865",
    "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
];
const C4: [&str; 3] = [
    "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
    "8286 84be 5886 a8eb 1064 9cbf",
    "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
];

fn check_requests(blocks: [&str; 3]) {
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        blocks[0],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ],
        &[(":authority", "www.example.com")],
        57,
    );
    check(
        &mut d,
        blocks[1],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ],
        &[
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        110,
    );
    check(
        &mut d,
        blocks[2],
        &[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ],
        &[
            ("custom-key", "custom-value"),
            ("cache-control", "no-cache"),
            (":authority", "www.example.com"),
        ],
        164,
    );
}

#[test]
fn c3_requests_without_huffman() {
    check_requests(C3);
}

#[test]
fn c4_requests_with_huffman() {
    check_requests(C4);
}

// RFC 7541 C.5 and C.6: three responses with a 256-byte table, so that entries are evicted.

const C5: [&str; 3] = [
    "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133
     2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70
     6c65 2e63 6f6d",
    "4803 3330 37c1 c0bf",
    "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d
     54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049
     5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e
     3d31",
];
const C6: [&str; 3] = [
    "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6
     2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
    "4883 640e ffc1 c0bf",
    "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab
     77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f
     9587 3160 65c0 03ed 4ee5 b106 3d50 07",
];
const COOKIE: &str = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
const DATE1: &str = "Mon, 21 Oct 2013 20:13:21 GMT";
const DATE2: &str = "Mon, 21 Oct 2013 20:13:22 GMT";
const LOCATION: &str = "https://www.example.com";

fn check_responses(blocks: [&str; 3]) {
    let mut d = Decoder::new(256);
    check(
        &mut d,
        blocks[0],
        &[
            (":status", "302"),
            ("cache-control", "private"),
            ("date", DATE1),
            ("location", LOCATION),
        ],
        &[
            ("location", LOCATION),
            ("date", DATE1),
            ("cache-control", "private"),
            (":status", "302"),
        ],
        222,
    );
    check(
        &mut d,
        blocks[1],
        &[
            (":status", "307"),
            ("cache-control", "private"),
            ("date", DATE1),
            ("location", LOCATION),
        ],
        &[
            (":status", "307"),
            ("location", LOCATION),
            ("date", DATE1),
            ("cache-control", "private"),
        ],
        222,
    );
    check(
        &mut d,
        blocks[2],
        &[
            (":status", "200"),
            ("cache-control", "private"),
            ("date", DATE2),
            ("location", LOCATION),
            ("content-encoding", "gzip"),
            ("set-cookie", COOKIE),
        ],
        &[
            ("set-cookie", COOKIE),
            ("content-encoding", "gzip"),
            ("date", DATE2),
        ],
        215,
    );
}

#[test]
fn c5_responses_without_huffman() {
    check_responses(C5);
}

#[test]
fn c6_responses_with_huffman() {
    check_responses(C6);
}

#[test]
fn plain_values_are_slices_of_the_block_and_the_table_owns_copies() {
    let mut d = Decoder::new(4096);
    let block = hex(C3[0]);
    let fields = decode(&mut d, &block).unwrap();
    let range = block.as_ptr_range();
    let authority = &fields[3].1;
    assert!(
        range.contains(&authority.as_ptr()),
        "a plain value is not copied"
    );
    let entry = &d.table.entries[0].value;
    assert_eq!(entry, authority);
    assert!(
        !range.contains(&entry.as_ptr()),
        "the table copies what it keeps"
    );
    // A hit in the dynamic table hands out the table's bytes, not a copy.
    let fields = decode(&mut d, &hex(C3[1])).unwrap();
    assert_eq!(fields[3].1.as_ptr(), d.table.entries[1].value.as_ptr());
}

#[test]
fn huffman_values_of_a_block_share_one_buffer() {
    let mut d = Decoder::new(256);
    decode(&mut d, &hex(C6[0])).unwrap();
    decode(&mut d, &hex(C6[1])).unwrap();
    let fields = decode(&mut d, &hex(C6[2])).unwrap();
    // date, content-encoding and set-cookie are Huffman literals, decoded one after the other.
    let (date, gzip, cookie) = (&fields[2].1, &fields[4].1, &fields[5].1);
    assert_eq!(date.as_ptr().wrapping_add(date.len()), gzip.as_ptr());
    assert_eq!(gzip.as_ptr().wrapping_add(gzip.len()), cookie.as_ptr());
}

// Huffman errors.

/// A literal without indexing of `:path` whose value is the given Huffman code.
fn huffman_value(code: &[u8]) -> Bytes {
    let mut block = vec![0x04, 0x80 | code.len() as u8];
    block.extend_from_slice(code);
    block.into()
}

#[test]
fn huffman_padding_and_eos() {
    let mut d = Decoder::new(4096);
    // 'a' is 00011: 3 bits of ones make a valid padding.
    assert_eq!(decode(&mut d, &huffman_value(&[0x1f])).unwrap()[0].1, "a");
    // Then 7 bits of padding: "aa" is 10 bits, padded with 6; '0' (00000) + 'a' + 6 ones.
    assert_eq!(
        decode(&mut d, &huffman_value(&[0x00, 0xff])).unwrap()[0].1,
        "0a"
    );
    assert_eq!(decode(&mut d, &huffman_value(&[])).unwrap()[0].1, "");
    // 11 bits of ones after 'a'.
    assert_eq!(
        decode(&mut d, &huffman_value(&[0x1f, 0xff])),
        Err(DecodeError::HuffmanPaddingTooLong)
    );
    // A whole byte of padding.
    assert_eq!(
        decode(&mut d, &huffman_value(&[0xff])),
        Err(DecodeError::HuffmanPaddingTooLong)
    );
    // 'a' then 000: not a prefix of EOS.
    assert_eq!(
        decode(&mut d, &huffman_value(&[0x18])),
        Err(DecodeError::HuffmanPaddingInvalid)
    );
    // 'a' then 110.
    assert_eq!(
        decode(&mut d, &huffman_value(&[0x1e])),
        Err(DecodeError::HuffmanPaddingInvalid)
    );
    // EOS (30 ones) and two more ones.
    assert_eq!(
        decode(&mut d, &huffman_value(&[0xff; 4])),
        Err(DecodeError::HuffmanEos)
    );
    // 'a', EOS, 'a'.
    let eos_inside = [0x1f, 0xff, 0xff, 0xff, 0xf8, 0xff];
    assert_eq!(
        decode(&mut d, &huffman_value(&eos_inside)),
        Err(DecodeError::HuffmanEos)
    );
}

/// Huffman-codes `s` with the RFC's table, padded with ones (what a peer's encoder sends).
fn huffman_encode(s: &[u8]) -> Vec<u8> {
    let mut code = Vec::new();
    let (mut acc, mut bits) = (0u64, 0u32);
    for &b in s {
        let (c, len) = HUFFMAN_CODES[usize::from(b)];
        acc = acc << len | u64::from(c);
        bits += u32::from(len);
        while bits >= 8 {
            bits -= 8;
            code.push((acc >> bits) as u8);
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        code.push((acc << (8 - bits) | (0xff >> bits)) as u8);
    }
    code
}

#[test]
fn huffman_table_decodes_every_symbol() {
    let all: Vec<u8> = (0..=255u8).collect();
    let code = huffman_encode(&all);
    let mut out = BytesMut::with_capacity(max_huffman_decoded_len(code.len()));
    huffman_decode(&code, &mut out).unwrap();
    assert_eq!(&out[..], &all[..]);
    // The RFC's own examples (C.4.1, C.6.1).
    assert_eq!(
        huffman_encode(b"www.example.com"),
        &hex("f1e3 c2e5 f23a 6ba0 ab90 f4ff")[..]
    );
    assert_eq!(huffman_encode(b"302"), [0x64, 0x02]);
}

// Size updates, indexes, integers.

#[test]
fn table_size_updates() {
    let mut d = Decoder::new(4096);
    // 4097 (31 + 4066) is above the maximum.
    assert_eq!(
        decode(&mut d, &hex("3fe21f 82")),
        Err(DecodeError::TableSizeTooLarge {
            size: 4097,
            max: 4096
        })
    );
    // 4096 is the maximum; two updates at the start are fine.
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &hex("20 3fe11f 82")).unwrap().len(), 1);
    // An update after a field.
    assert_eq!(
        decode(&mut d, &hex("82 20")),
        Err(DecodeError::TableSizeUpdateAfterField)
    );
    // Shrinking evicts; a size of 0 keeps nothing.
    let mut d = Decoder::new(4096);
    check(
        &mut d,
        C3[0],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ],
        &[(":authority", "www.example.com")],
        57,
    );
    check(&mut d, "20", &[], &[], 0);
    check(
        &mut d,
        C3[0],
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ],
        &[],
        0,
    );
    // And growing back is allowed, up to the maximum.
    check(
        &mut d,
        &format!("3f e1 1f {}", C3[0]),
        &[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ],
        &[(":authority", "www.example.com")],
        57,
    );
}

#[test]
fn bad_indexes() {
    let mut d = Decoder::new(4096);
    assert_eq!(decode(&mut d, &hex("80")), Err(DecodeError::IndexZero));
    assert_eq!(
        decode(&mut d, &hex("be")),
        Err(DecodeError::IndexOutOfRange(62))
    );
    assert_eq!(
        decode(&mut d, &hex("ff 00")),
        Err(DecodeError::IndexOutOfRange(127))
    );
    // A literal's name index: 63 with a 6-bit prefix, 62 with a 4-bit one.
    assert_eq!(
        decode(&mut d, &hex("7f 00 01 61")),
        Err(DecodeError::IndexOutOfRange(63))
    );
    assert_eq!(
        decode(&mut d, &hex("0f 2f 01 61")),
        Err(DecodeError::IndexOutOfRange(62))
    );
    // Index 61 is the last static entry; 62 is the dynamic table's first once it has one.
    assert_eq!(
        decode(&mut d, &hex("bd")).unwrap()[0].0,
        name("www-authenticate")
    );
    decode(&mut d, &hex(C3[0])).unwrap();
    assert_eq!(decode(&mut d, &hex("be")).unwrap()[0].0, Name::Authority);
    assert_eq!(
        decode(&mut d, &hex("bf")),
        Err(DecodeError::IndexOutOfRange(63))
    );
}

#[test]
fn integers() {
    let mut d = Decoder::new(4096);
    // 1337 with a 5-bit prefix (C.1.2) as a size update.
    assert_eq!(decode(&mut d, &hex("3f 9a 0a")), Ok(vec![]));
    assert_eq!(d.table.capacity, 1337);
    // Six continuation bytes.
    assert_eq!(
        decode(&mut d, &hex("ff 80 80 80 80 80 00")),
        Err(DecodeError::IntegerOverflow)
    );
    // 127 + 2^28: five bytes, but too large.
    assert_eq!(
        decode(&mut d, &hex("ff 80 80 80 80 01")),
        Err(DecodeError::IntegerOverflow)
    );
    // The largest values a u64 would take in 5 bytes.
    assert_eq!(
        decode(&mut d, &hex("ff ff ff ff ff 7f")),
        Err(DecodeError::IntegerOverflow)
    );
    // 2^28 - 1 + 127 is too large; a string length of 2^27 - 1 + 127 is allowed as an integer,
    // but the block is shorter.
    assert_eq!(
        decode(&mut d, &hex("04 7f ff ff ff 7f")),
        Err(DecodeError::IntegerOverflow)
    );
    assert_eq!(
        decode(&mut d, &hex("04 7f ff ff ff 3f")),
        Err(DecodeError::Truncated)
    );
    // Ends inside an integer.
    assert_eq!(decode(&mut d, &hex("ff 80")), Err(DecodeError::Truncated));
    // Redundant zero continuation bytes are still an integer (62 = 61 + 1).
    assert_eq!(decode(&mut d, &hex("3f 80 00")), Ok(vec![]));
    assert_eq!(d.table.capacity, 31);
}

#[test]
fn malformed_names_do_not_stop_the_block() {
    let mut d = Decoder::new(4096);
    // Without indexing, "Custom: x"; then :method GET.
    let fields = decode(&mut d, &hex("00 06 437573746f6d 01 78 82")).unwrap();
    assert_eq!(
        fields,
        vec![
            (Name::Malformed, Bytes::from("x")),
            (Name::Method, Bytes::from("GET"))
        ]
    );
    // With indexing, ":foo: y" (kept in the table, 4 + 1 + 32 bytes), a space in a name, then the
    // table's entry and :path /.
    let fields = decode(
        &mut d,
        &hex("40 04 3a666f6f 01 79 00 03 612062 01 7a be 84"),
    )
    .unwrap();
    assert_eq!(
        fields,
        vec![
            (Name::Malformed, Bytes::from("y")),
            (Name::Malformed, Bytes::from("z")),
            (Name::Malformed, Bytes::from("y")),
            (Name::Path, Bytes::from("/")),
        ]
    );
    assert_eq!(d.table.size, 37);
    // A Huffman-coded upper-case name: "A" is 100001 (6 bits) + 11 padding.
    let fields = decode(&mut d, &hex("00 81 87 00 82")).unwrap();
    assert_eq!(
        fields,
        vec![
            (Name::Malformed, Bytes::new()),
            (Name::Method, Bytes::from("GET"))
        ]
    );
    // Every known pseudo-header is recognized, and an empty name is malformed.
    for (s, n) in [
        (":authority", Name::Authority),
        (":method", Name::Method),
        (":path", Name::Path),
        (":scheme", Name::Scheme),
        (":status", Name::Status),
        (":protocol", Name::Protocol),
        (":", Name::Malformed),
        ("", Name::Malformed),
        ("x-\u{e9}", Name::Malformed),
        ("x-ok", Name::Header(HeaderName::from_static("x-ok"))),
    ] {
        assert_eq!(parse_name(s.as_bytes()), n, "{s:?}");
    }
}

#[test]
fn entry_larger_than_the_table_empties_it() {
    let mut d = Decoder::new(60);
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
        &[("custom-key", "custom-header")],
        &[("custom-key", "custom-header")],
        55,
    );
    // custom-key: custom-header2 is 56 bytes: evicts the first entry.
    check(
        &mut d,
        "400a 6375 7374 6f6d 2d6b 6579 0e63 7573 746f 6d2d 6865 6164 6572 32",
        &[("custom-key", "custom-header2")],
        &[("custom-key", "custom-header2")],
        56,
    );
    // An entry of 61 bytes does not fit at all; the field is still decoded.
    let long = "custom-header-xxxxxx";
    let block = format!(
        "400a 6375 7374 6f6d 2d6b 6579 14{}",
        long.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    );
    check(&mut d, &block, &[("custom-key", long)], &[], 0);
}

#[test]
fn static_table_is_consistent() {
    for (i, entry) in STATIC_TABLE.iter().enumerate() {
        assert_eq!(parse_name(entry.name_str.as_bytes()), entry.name);
        if !entry.name_str.starts_with(':') {
            assert_eq!(
                static_name_index(entry.name_str.as_bytes()),
                Some(i as u8 + 1)
            );
        }
    }
    for other in [
        "",
        "x",
        "x-custom",
        "accept-charsex",
        "agf",
        "content-lengtx",
        "xontent-type",
    ] {
        assert_eq!(static_name_index(other.as_bytes()), None, "{other:?}");
    }
}

// The encoder, through the decoder.

/// Encodes with `encode`, checks the bytes, decodes them and checks the field; the decoder's table
/// stays empty (the encoder never indexes).
fn round_trip(encode: impl FnOnce(&mut BytesMut), bytes: &str, field: (Name, &[u8])) {
    let mut dst = BytesMut::new();
    encode(&mut dst);
    assert_eq!(&dst[..], &hex(bytes)[..], "{field:?}");
    let mut d = Decoder::new(4096);
    let fields = decode(&mut d, &dst.freeze()).unwrap();
    assert_eq!(fields, vec![(field.0, Bytes::copy_from_slice(field.1))]);
    assert_eq!(d.table.entries.len(), 0);
}

#[test]
fn encode_statuses() {
    for (code, byte) in [
        (200, "88"),
        (204, "89"),
        (206, "8a"),
        (304, "8b"),
        (400, "8c"),
        (404, "8d"),
        (500, "8e"),
    ] {
        let status = StatusCode::from_u16(code).unwrap();
        round_trip(
            |dst| encode_status(status, dst),
            byte,
            (Name::Status, status.as_str().as_bytes()),
        );
    }
    round_trip(
        |dst| encode_status(StatusCode::FOUND, dst),
        "08 03 333032",
        (Name::Status, b"302"),
    );
    round_trip(
        |dst| encode_status(StatusCode::from_u16(999).unwrap(), dst),
        "08 03 393939",
        (Name::Status, b"999"),
    );
}

#[test]
fn encode_pseudo_fields() {
    let cases: [(Name, &str, &str); 12] = [
        (Name::Method, "GET", "82"),
        (Name::Method, "POST", "83"),
        (Name::Method, "PUT", "02 03 505554"),
        (Name::Path, "/", "84"),
        (Name::Path, "/index.html", "85"),
        (Name::Path, "/a", "04 02 2f61"),
        (Name::Scheme, "http", "86"),
        (Name::Scheme, "https", "87"),
        (Name::Authority, "a.b", "01 03 612e62"),
        (Name::Status, "200", "88"),
        (Name::Status, "302", "08 03 333032"),
        (
            Name::Protocol,
            "websocket",
            "00 09 3a70726f746f636f6c 09 776562736f636b6574",
        ),
    ];
    for (n, value, bytes) in cases {
        round_trip(
            |dst| encode_pseudo(&n, value.as_bytes(), dst),
            bytes,
            (n.clone(), value.as_bytes()),
        );
    }
    let mut dst = BytesMut::new();
    encode_pseudo(&Name::Malformed, b"x", &mut dst);
    assert!(dst.is_empty());
}

#[test]
fn encode_fields() {
    let field = |n: HeaderName, v: &'static str| (HeaderValue::from_static(v), n);
    let cases = [
        // The exact pair in the static table.
        (field(header::ACCEPT_ENCODING, "gzip, deflate"), "90"),
        (field(header::ACCEPT, ""), "93"),
        // Static names: 4-bit index 15 + 16 for content-type (31), user-agent (58).
        (field(header::ACCEPT_ENCODING, "br"), "0f 01 02 6272"),
        (
            field(header::CONTENT_TYPE, "application/json"),
            "0f 10 10 6170706c69636174696f6e2f6a736f6e",
        ),
        (field(header::USER_AGENT, "curl"), "0f 2b 04 6375726c"),
        (field(header::CONTENT_LENGTH, "0"), "0f 0d 01 30"),
        (field(header::AGE, "1"), "0f 06 01 31"),
        // A name outside the static table.
        (
            field(HeaderName::from_static("x-request-id"), "abc"),
            "00 0c 782d726571756573742d6964 03 616263",
        ),
    ];
    for ((value, n), bytes) in cases {
        round_trip(
            |dst| encode_field(&n, &value, dst),
            bytes,
            (Name::Header(n.clone()), value.as_bytes()),
        );
    }
    // encode_pseudo passes a regular name on.
    round_trip(
        |dst| {
            encode_pseudo(
                &Name::Header(header::ACCEPT_ENCODING),
                b"gzip, deflate",
                dst,
            )
        },
        "90",
        (Name::Header(header::ACCEPT_ENCODING), b"gzip, deflate"),
    );
}

#[test]
fn encode_sensitive_values_never_indexed() {
    let mut secret = HeaderValue::from_static("Bearer x");
    secret.set_sensitive(true);
    // authorization is static entry 23 = 15 + 8: 0001 1111, then 8.
    round_trip(
        |dst| encode_field(&header::AUTHORIZATION, &secret, dst),
        "1f 08 08 4265617265722078",
        (Name::Header(header::AUTHORIZATION), b"Bearer x"),
    );
    let mut dst = BytesMut::new();
    encode_field(&header::AUTHORIZATION, &secret, &mut dst);
    assert_eq!(dst[0] & 0xf0, 0x10, "never indexed");
    // A custom name, and an empty value that would otherwise match the static table exactly.
    let n = HeaderName::from_static("x-token");
    round_trip(
        |dst| encode_field(&n, &secret, dst),
        "10 07 782d746f6b656e 08 4265617265722078",
        (Name::Header(n.clone()), b"Bearer x"),
    );
    let mut empty = HeaderValue::from_static("");
    empty.set_sensitive(true);
    round_trip(
        |dst| encode_field(&header::COOKIE, &empty, dst),
        "1f 11 00",
        (Name::Header(header::COOKIE), b""),
    );
}

#[test]
fn encode_long_values() {
    // 127 is the 7-bit prefix's largest: 7f 00; 300 = 127 + 173: 7f ad 01.
    for (len, prefix) in [
        (126, "7e"),
        (127, "7f 00"),
        (300, "7f ad 01"),
        (20_000, "7f a1 9b 01"),
    ] {
        let value = HeaderValue::from_str(&"v".repeat(len)).unwrap();
        let bytes = format!("00 03 782d76 {prefix} {}", "76".repeat(len));
        let n = HeaderName::from_static("x-v");
        round_trip(
            |dst| encode_field(&n, &value, dst),
            &bytes,
            (Name::Header(n.clone()), value.as_bytes()),
        );
    }
}

// No input makes the decoder panic.

#[test]
fn truncated_blocks_fail_cleanly() {
    for blocks in [C3, C4, C5, C6] {
        for (i, block) in blocks.iter().enumerate() {
            let block = hex(block);
            for end in 0..block.len() {
                let mut d = Decoder::new(256);
                for earlier in &blocks[..i] {
                    decode(&mut d, &hex(earlier)).unwrap();
                }
                // A prefix may end between fields (then it decodes), never otherwise.
                let _ = decode(&mut d, &block.slice(..end));
            }
        }
    }
    // A field cut inside: an error, not a partial field.
    assert_eq!(
        decode(&mut Decoder::new(4096), &hex(C4[0]).slice(..6)),
        Err(DecodeError::Truncated)
    );
}

#[test]
fn random_input_never_panics() {
    let mut rng = fastrand::Rng::with_seed(7541);
    let mut persistent = Decoder::new(4096);
    let mut small = Decoder::new(64);
    for i in 0..20_000 {
        let len = rng.usize(0..80);
        let mut block: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Half the time, start like a real block: indexed fields and literals with small lengths.
        if i % 2 == 0 {
            for b in block.iter_mut().skip(1).step_by(3) {
                *b &= 0x8f;
            }
        }
        let block = Bytes::from(block);
        let mut fresh = Decoder::new(4096);
        let _ = fresh.decode(&block, |_, _| {});
        let _ = persistent.decode(&block, |_, _| {});
        let _ = small.decode(&block, |_, _| {});
        // The table's bookkeeping stays right whatever happened.
        for d in [&persistent, &small] {
            let sum: usize = d.table.entries.iter().map(Entry::size).sum();
            assert_eq!(sum, d.table.size);
            assert!(d.table.size <= d.table.capacity);
        }
    }
}

/// A 10-field request block as a browser sends it first on a connection: C.4.1's four fields,
/// then six literals with incremental indexing and Huffman-coded values (and one name).
fn typical_request() -> Bytes {
    let mut block = hex(C4[0]).to_vec();
    let mut literal = |index: u8, name: Option<&str>, value: &str| {
        block.push(0x40 | index);
        if let Some(name) = name {
            let code = huffman_encode(name.as_bytes());
            block.push(0x80 | code.len() as u8);
            block.extend_from_slice(&code);
        }
        let code = huffman_encode(value.as_bytes());
        assert!(code.len() < 127);
        block.push(0x80 | code.len() as u8);
        block.extend_from_slice(&code);
    };
    literal(
        58,
        None,
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    );
    literal(
        19,
        None,
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    );
    literal(17, None, "en-US,en;q=0.5");
    literal(16, None, "gzip, deflate, br, zstd");
    literal(
        0,
        Some("x-request-id"),
        "3f2a9c1e-8b4d-4e6f-a1b2-c3d4e5f60718",
    );
    literal(24, None, "no-cache");
    block.into()
}

#[test]
fn typical_request_decodes() {
    let mut d = Decoder::new(4096);
    let fields = decode(&mut d, &typical_request()).unwrap();
    assert_eq!(fields.len(), 10);
    assert_eq!(
        fields[8],
        (
            name("x-request-id"),
            Bytes::from("3f2a9c1e-8b4d-4e6f-a1b2-c3d4e5f60718")
        )
    );
    assert_eq!(d.table.entries.len(), 7);
    // The same request again on the connection: every field indexed (10 bytes), the same fields.
    let again = decode(&mut d, &hex("8286 84 c4 c3 c2 c1 c0 bf be")).unwrap();
    assert_eq!(again, fields);
}
