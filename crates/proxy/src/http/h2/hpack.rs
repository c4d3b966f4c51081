//! HPACK (RFC 7541): header blocks decoded straight into the proxy's header types, and encoded straight
//! from them.
//!
//! **Decoding** ([`Decoder`]) is the whole of RFC 7541: the static table, the dynamic table with its
//! size updates and evictions, prefix integers and string literals, plain and Huffman-coded. It is built
//! for a proxy's hot path:
//!
//! - names come out as [`Name`] values: the static table's are built at compile time, so a name taken
//!   from it costs a clone of a constant; a literal name is checked the way HTTP/2 wants (lower case, a
//!   known pseudo-header) and a bad one becomes [`Name::Malformed`] without stopping the block, so the
//!   dynamic table stays in step with the peer's;
//! - a plain literal value is a slice of the block (no copy); the Huffman-coded values of a block are
//!   decoded into one buffer, reserved once per block and split into each value's `Bytes`, so they cost
//!   one allocation per block, not one per value;
//! - the dynamic table owns its bytes (copied on insertion), so it never pins a connection's read
//!   buffers; a field taken from it is a reference-count increment;
//! - Huffman strings are decoded four bits at a time through a state table built at compile time (two
//!   lookups per input byte), and every malformed ending (padding longer than 7 bits, padding that is not
//!   a prefix of EOS, EOS itself) is an error, as RFC 7541 5.2 requires;
//! - every error is a [`DecodeError`] (a COMPRESSION_ERROR for the connection); no input makes it panic.
//!
//! **Encoding** is stateless, as nginx's and HAProxy's encoders are: nothing is ever inserted into the
//! peer's dynamic table, so the encoder needs no state per connection, never sends a table size update
//! and cannot get out of step with the peer. A field is sent as an indexed static entry when the static
//! table holds its exact (name, value) pair, otherwise as a literal without indexing (never indexed for a
//! sensitive value) that names a static entry when it can. Values are sent as plain literals, never
//! Huffman-coded: Huffman coding saves about a fifth of a header's bytes but costs a table lookup and
//! some bit shuffling per byte on every header of every proxied message, while a plain value is one
//! `memcpy`; for a proxy, CPU is the scarcer resource.

#![allow(dead_code)]

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, StatusCode};
use std::collections::VecDeque;

/// A decoded field's name: one of the pseudo-header fields, a regular field, or a name that is not
/// allowed in HTTP/2 (upper case, an unknown pseudo-header, bytes not valid in a field name). A block
/// with such a name is still decoded whole, so the dynamic table stays in step with the peer's; the
/// message it carries is malformed (a stream error, RFC 9113 8.2.1), which the caller decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Authority,
    Method,
    Path,
    Scheme,
    Status,
    /// `:protocol` (RFC 8441).
    Protocol,
    Header(HeaderName),
    Malformed,
}

/// Why a header block could not be decoded: a connection error of type COMPRESSION_ERROR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the header block ends inside a field")]
    Truncated,
    #[error("an integer is larger than 2^28 or has more than 5 continuation bytes")]
    IntegerOverflow,
    #[error("a field refers to table index 0, which is not an entry")]
    IndexZero,
    #[error("a field refers to table index {0}, beyond the static and dynamic tables")]
    IndexOutOfRange(usize),
    #[error("a dynamic table size update to {size} bytes, above the {max} bytes allowed")]
    TableSizeTooLarge { size: usize, max: usize },
    #[error("a dynamic table size update after the first field of the block")]
    TableSizeUpdateAfterField,
    #[error("a Huffman-coded string contains the EOS symbol")]
    HuffmanEos,
    #[error("a Huffman-coded string ends with more than 7 bits of padding")]
    HuffmanPaddingTooLong,
    #[error(
        "a Huffman-coded string ends with padding that is not the high bits of EOS (all ones)"
    )]
    HuffmanPaddingInvalid,
}

/// The largest integer a block may hold (an index, a string's length, a table size): 2^28, far above
/// anything a sane peer sends (a string is bounded by the header list size), and small enough that
/// lengths and sums of lengths cannot overflow a `usize`, even on 32-bit targets.
const MAX_INTEGER: u64 = 1 << 28;

/// What an entry costs in the dynamic table beyond its name and value (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// The decoding side of a connection: its dynamic table.
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The most the peer may set the table's size to: what this side advertised.
    max_table_size: usize,
}

impl Decoder {
    /// A decoder whose dynamic table may grow to `max_table_size` bytes (what this side advertises as
    /// SETTINGS_HEADER_TABLE_SIZE).
    pub fn new(max_table_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                capacity: max_table_size,
            },
            max_table_size,
        }
    }

    /// Decodes one whole header block (HEADERS and its CONTINUATIONs, joined), calling `field` with each
    /// field in order. Values are slices of `block` where the block holds them as plain literals.
    ///
    /// On an error the dynamic table may hold part of the block's insertions: the connection is to be
    /// closed anyway (COMPRESSION_ERROR), so it is not rolled back.
    pub fn decode(
        &mut self,
        block: &Bytes,
        mut field: impl FnMut(Name, HeaderValueBytes),
    ) -> Result<(), DecodeError> {
        let mut src = Reader {
            buf: block.as_ref(),
            pos: 0,
        };
        // Huffman-decoded strings of this block; allocated on the first one (see `Strings::huffman`).
        let mut strings = Strings {
            block,
            huffman: BytesMut::new(),
        };
        let mut first_field = true;
        while let Some(first) = src.peek() {
            if first & 0x80 != 0 {
                // Indexed field (6.1): 1xxxxxxx.
                let index = src.integer::<7>()?;
                let (name, value) = self.field_at(index)?;
                field(name, value);
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update (6.3): 001xxxxx. Only before the block's first field
                // (4.2), and never above what this side allowed.
                if !first_field {
                    return Err(DecodeError::TableSizeUpdateAfterField);
                }
                let size = src.integer::<5>()?;
                if size > self.max_table_size {
                    return Err(DecodeError::TableSizeTooLarge {
                        size,
                        max: self.max_table_size,
                    });
                }
                self.table.set_capacity(size);
                continue;
            } else {
                // Literals (6.2): with incremental indexing 01xxxxxx, without indexing 0000xxxx,
                // never indexed 0001xxxx. Never indexed only matters to an encoder re-encoding the
                // field, and the proxy's encoder never indexes anything.
                let indexing = first & 0x40 != 0;
                let index = if indexing {
                    src.integer::<6>()?
                } else {
                    src.integer::<4>()?
                };
                let (name, name_len) = if index == 0 {
                    strings.name(&mut src)?
                } else {
                    self.name_at(index)?
                };
                let value = strings.value(&mut src)?;
                if indexing {
                    self.table.insert(name.clone(), name_len, &value);
                }
                field(name, value);
            }
            first_field = false;
        }
        Ok(())
    }

    /// The field at `index` of the static table followed by the dynamic table (2.3.3).
    fn field_at(&self, index: usize) -> Result<(Name, Bytes), DecodeError> {
        let Some(i) = index.checked_sub(1) else {
            return Err(DecodeError::IndexZero);
        };
        if let Some(entry) = STATIC_TABLE.get(i) {
            return Ok((
                entry.name.clone(),
                Bytes::from_static(entry.value.as_bytes()),
            ));
        }
        match self.table.entries.get(i - STATIC_TABLE.len()) {
            Some(entry) => Ok((entry.name.clone(), entry.value.clone())),
            None => Err(DecodeError::IndexOutOfRange(index)),
        }
    }

    /// The name at `index`, with its length in bytes (what it costs in the dynamic table).
    fn name_at(&self, index: usize) -> Result<(Name, usize), DecodeError> {
        let Some(i) = index.checked_sub(1) else {
            return Err(DecodeError::IndexZero);
        };
        if let Some(entry) = STATIC_TABLE.get(i) {
            return Ok((entry.name.clone(), entry.name_str.len()));
        }
        match self.table.entries.get(i - STATIC_TABLE.len()) {
            Some(entry) => Ok((entry.name.clone(), entry.name_len)),
            None => Err(DecodeError::IndexOutOfRange(index)),
        }
    }
}

/// A decoded value, not yet checked as a `HeaderValue` (pseudo-header values become a method, URI parts
/// or a status instead).
pub type HeaderValueBytes = Bytes;

/// The dynamic table (2.3.2): newest entry first, so that index 62 is `entries[0]`.
#[derive(Debug)]
struct DynamicTable {
    entries: VecDeque<Entry>,
    /// The sum of the entries' sizes (4.1).
    size: usize,
    /// The size the peer last set (at most the decoder's `max_table_size`).
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    name: Name,
    /// The name's length as received: a `Malformed` name still costs its bytes.
    name_len: usize,
    /// Owned (copied on insertion), so the table never pins a received block.
    value: Bytes,
}

impl Entry {
    fn size(&self) -> usize {
        self.name_len + self.value.len() + ENTRY_OVERHEAD
    }
}

impl DynamicTable {
    /// Adds an entry, evicting the oldest ones to make room (4.4). An entry larger than the whole table
    /// empties it and is not added.
    fn insert(&mut self, name: Name, name_len: usize, value: &[u8]) {
        // No overflow: both lengths are at most MAX_INTEGER.
        let size = name_len + value.len() + ENTRY_OVERHEAD;
        if size > self.capacity {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.capacity - size);
        self.entries.push_front(Entry {
            name,
            name_len,
            value: Bytes::copy_from_slice(value),
        });
        self.size += size;
    }

    /// A size update (4.3): evicts until the entries fit.
    fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            match self.entries.pop_back() {
                Some(entry) => self.size -= entry.size(),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }
}

/// A cursor over a block. Every read checks the block's end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek().ok_or(DecodeError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// An integer with an `N`-bit prefix (5.1), the flags above the prefix ignored. At most 5
    /// continuation bytes (35 bits), and at most `MAX_INTEGER`.
    #[inline]
    fn integer<const N: u32>(&mut self) -> Result<usize, DecodeError> {
        let max_prefix = (1u8 << N) - 1;
        let prefix = self.byte()? & max_prefix;
        if prefix < max_prefix {
            return Ok(usize::from(prefix));
        }
        let mut value = u64::from(prefix);
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            // At most 127 << 28 here: no overflow of a u64.
            value += u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
            if shift > 28 {
                return Err(DecodeError::IntegerOverflow);
            }
        }
        if value > MAX_INTEGER {
            return Err(DecodeError::IntegerOverflow);
        }
        usize::try_from(value).map_err(|_| DecodeError::IntegerOverflow)
    }

    /// A string literal (5.2): whether it is Huffman-coded, and its bytes as they are in the block.
    fn string(&mut self) -> Result<(bool, &'a [u8]), DecodeError> {
        let huffman = self.peek().ok_or(DecodeError::Truncated)? & 0x80 != 0;
        let len = self.integer::<7>()?;
        let end = self.pos.checked_add(len).ok_or(DecodeError::Truncated)?;
        let bytes = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok((huffman, bytes))
    }
}

/// Turns a block's string literals into names and values.
struct Strings<'b> {
    block: &'b Bytes,
    /// Where the block's Huffman-coded strings are decoded. On the block's first one it reserves room
    /// for every Huffman-coded string left in the block (a Huffman code is at least 5 bits, so at most
    /// 8/5 of their coded length), and each value is split off it: one allocation per block, shared by
    /// its values. Names are decoded here too, checked and dropped, so they take no room.
    huffman: BytesMut,
}

impl Strings<'_> {
    /// A literal name, checked, and its length.
    fn name(&mut self, src: &mut Reader<'_>) -> Result<(Name, usize), DecodeError> {
        let (huffman, raw) = src.string()?;
        if !huffman {
            return Ok((parse_name(raw), raw.len()));
        }
        self.huffman_decode(raw, src.remaining())?;
        let name = parse_name(&self.huffman);
        let len = self.huffman.len();
        self.huffman.clear();
        Ok((name, len))
    }

    /// A literal value.
    fn value(&mut self, src: &mut Reader<'_>) -> Result<Bytes, DecodeError> {
        let (huffman, raw) = src.string()?;
        if !huffman {
            // Zero copy: a view of the block (`raw` is a part of it, so this cannot panic).
            return Ok(self.block.slice_ref(raw));
        }
        self.huffman_decode(raw, src.remaining())?;
        Ok(self.huffman.split().freeze())
    }

    /// Decodes `raw` onto the end of `self.huffman`; `rest` is how much of the block follows it.
    fn huffman_decode(&mut self, raw: &[u8], rest: usize) -> Result<(), DecodeError> {
        let needed = max_huffman_decoded_len(raw.len());
        if self.huffman.capacity().saturating_sub(self.huffman.len()) < needed {
            let room = needed.saturating_add(max_huffman_decoded_len(rest));
            self.huffman.reserve(room);
        }
        huffman_decode(raw, &mut self.huffman)
    }
}

/// At most how many bytes `coded_len` bytes of Huffman code decode to: every code is at least 5 bits.
fn max_huffman_decoded_len(coded_len: usize) -> usize {
    coded_len.saturating_mul(8) / 5 + 1
}

/// A literal name as HTTP/2 allows it (RFC 9113 8.2.1, 8.3): a known pseudo-header, or a valid field
/// name in lower case; anything else is `Malformed`.
fn parse_name(name: &[u8]) -> Name {
    match name.strip_prefix(b":") {
        Some(b"authority") => Name::Authority,
        Some(b"method") => Name::Method,
        Some(b"path") => Name::Path,
        Some(b"scheme") => Name::Scheme,
        Some(b"status") => Name::Status,
        Some(b"protocol") => Name::Protocol,
        Some(_) => Name::Malformed,
        // Rejects upper case and bytes that are not token characters (so also empty names).
        None => HeaderName::from_lowercase(name).map_or(Name::Malformed, Name::Header),
    }
}

/// A static table entry: its name as a `Name` (so a static name costs no parsing) and as text.
struct StaticEntry {
    name: Name,
    name_str: &'static str,
    value: &'static str,
}

const fn pseudo(name: Name, name_str: &'static str, value: &'static str) -> StaticEntry {
    StaticEntry {
        name,
        name_str,
        value,
    }
}

const fn header(name_str: &'static str, value: &'static str) -> StaticEntry {
    StaticEntry {
        name: Name::Header(HeaderName::from_static(name_str)),
        name_str,
        value,
    }
}

/// The static table (RFC 7541 Appendix A); index `i` is `STATIC_TABLE[i - 1]`.
static STATIC_TABLE: [StaticEntry; 61] = [
    pseudo(Name::Authority, ":authority", ""),
    pseudo(Name::Method, ":method", "GET"),
    pseudo(Name::Method, ":method", "POST"),
    pseudo(Name::Path, ":path", "/"),
    pseudo(Name::Path, ":path", "/index.html"),
    pseudo(Name::Scheme, ":scheme", "http"),
    pseudo(Name::Scheme, ":scheme", "https"),
    pseudo(Name::Status, ":status", "200"),
    pseudo(Name::Status, ":status", "204"),
    pseudo(Name::Status, ":status", "206"),
    pseudo(Name::Status, ":status", "304"),
    pseudo(Name::Status, ":status", "400"),
    pseudo(Name::Status, ":status", "404"),
    pseudo(Name::Status, ":status", "500"),
    header("accept-charset", ""),
    header("accept-encoding", "gzip, deflate"),
    header("accept-language", ""),
    header("accept-ranges", ""),
    header("accept", ""),
    header("access-control-allow-origin", ""),
    header("age", ""),
    header("allow", ""),
    header("authorization", ""),
    header("cache-control", ""),
    header("content-disposition", ""),
    header("content-encoding", ""),
    header("content-language", ""),
    header("content-length", ""),
    header("content-location", ""),
    header("content-range", ""),
    header("content-type", ""),
    header("cookie", ""),
    header("date", ""),
    header("etag", ""),
    header("expect", ""),
    header("expires", ""),
    header("from", ""),
    header("host", ""),
    header("if-match", ""),
    header("if-modified-since", ""),
    header("if-none-match", ""),
    header("if-range", ""),
    header("if-unmodified-since", ""),
    header("last-modified", ""),
    header("link", ""),
    header("location", ""),
    header("max-forwards", ""),
    header("proxy-authenticate", ""),
    header("proxy-authorization", ""),
    header("range", ""),
    header("referer", ""),
    header("refresh", ""),
    header("retry-after", ""),
    header("server", ""),
    header("set-cookie", ""),
    header("strict-transport-security", ""),
    header("transfer-encoding", ""),
    header("user-agent", ""),
    header("vary", ""),
    header("via", ""),
    header("www-authenticate", ""),
];

/// The static table index of a regular field name (15..=61), without scanning the table: one match on
/// (length, first byte, last byte), which tells all 47 names apart, then one comparison of the whole
/// name against a constant of known length (a few word compares, inlined).
fn static_name_index(name: &[u8]) -> Option<u8> {
    let (&first, &last) = (name.first()?, name.last()?);
    let (index, equal) = match (name.len(), first, last) {
        (3, b'a', b'e') => (21, name == b"age"),
        (3, b'v', b'a') => (60, name == b"via"),
        (4, b'd', b'e') => (33, name == b"date"),
        (4, b'e', b'g') => (34, name == b"etag"),
        (4, b'f', b'm') => (37, name == b"from"),
        (4, b'h', b't') => (38, name == b"host"),
        (4, b'l', b'k') => (45, name == b"link"),
        (4, b'v', b'y') => (59, name == b"vary"),
        (5, b'a', b'w') => (22, name == b"allow"),
        (5, b'r', b'e') => (50, name == b"range"),
        (6, b'a', b't') => (19, name == b"accept"),
        (6, b'c', b'e') => (32, name == b"cookie"),
        (6, b'e', b't') => (35, name == b"expect"),
        (6, b's', b'r') => (54, name == b"server"),
        (7, b'e', b's') => (36, name == b"expires"),
        (7, b'r', b'h') => (52, name == b"refresh"),
        (7, b'r', b'r') => (51, name == b"referer"),
        (8, b'i', b'e') => (42, name == b"if-range"),
        (8, b'i', b'h') => (39, name == b"if-match"),
        (8, b'l', b'n') => (46, name == b"location"),
        (10, b's', b'e') => (55, name == b"set-cookie"),
        (10, b'u', b't') => (58, name == b"user-agent"),
        (11, b'r', b'r') => (53, name == b"retry-after"),
        (12, b'c', b'e') => (31, name == b"content-type"),
        (12, b'm', b's') => (47, name == b"max-forwards"),
        (13, b'a', b'n') => (23, name == b"authorization"),
        (13, b'a', b's') => (18, name == b"accept-ranges"),
        (13, b'c', b'e') => (30, name == b"content-range"),
        (13, b'c', b'l') => (24, name == b"cache-control"),
        (13, b'i', b'h') => (41, name == b"if-none-match"),
        (13, b'l', b'd') => (44, name == b"last-modified"),
        (14, b'a', b't') => (15, name == b"accept-charset"),
        (14, b'c', b'h') => (28, name == b"content-length"),
        (15, b'a', b'e') => (17, name == b"accept-language"),
        (15, b'a', b'g') => (16, name == b"accept-encoding"),
        (16, b'c', b'e') => (27, name == b"content-language"),
        (16, b'c', b'g') => (26, name == b"content-encoding"),
        (16, b'c', b'n') => (29, name == b"content-location"),
        (16, b'w', b'e') => (61, name == b"www-authenticate"),
        (17, b'i', b'e') => (40, name == b"if-modified-since"),
        (17, b't', b'g') => (57, name == b"transfer-encoding"),
        (18, b'p', b'e') => (48, name == b"proxy-authenticate"),
        (19, b'c', b'n') => (25, name == b"content-disposition"),
        (19, b'i', b'e') => (43, name == b"if-unmodified-since"),
        (19, b'p', b'n') => (49, name == b"proxy-authorization"),
        (25, b's', b'y') => (56, name == b"strict-transport-security"),
        (27, b'a', b'n') => (20, name == b"access-control-allow-origin"),
        _ => return None,
    };
    equal.then_some(index)
}

// ---------------------------------------------------------------------------------------------------
// Huffman decoding (RFC 7541 5.2, Appendix B).

/// The Huffman code (RFC 7541 Appendix B): for each symbol (the 256 byte values, then EOS), its code,
/// right-aligned, and its length in bits.
const HUFFMAN_CODES: [(u32, u8); 257] = [
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28), // 0..=5
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28), // 6..=11
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28), // 12..=17
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28), // 18..=23
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28), // 24..=29
    (0xffffffa, 28),
    (0xffffffb, 28),
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12), // 30..=35
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10), // 36..=41
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6), // 42..=47
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6), // 48..=53
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8), // 54..=59
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    (0x1ffa, 13),
    (0x21, 6), // 60..=65
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7), // 66..=71
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7), // 72..=77
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7), // 78..=83
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7), // 84..=89
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6), // 90..=95
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5), // 96..=101
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7), // 102..=107
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7), // 108..=113
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7), // 114..=119
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14), // 120..=125
    (0x1ffd, 13),
    (0xffffffc, 28),
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20), // 126..=131
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23), // 132..=137
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23), // 138..=143
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23), // 144..=149
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23), // 150..=155
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21), // 156..=161
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21), // 162..=167
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22), // 168..=173
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21), // 174..=179
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22), // 180..=185
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23), // 186..=191
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23), // 192..=197
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27), // 198..=203
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21), // 204..=209
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24), // 210..=215
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27), // 216..=221
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21), // 222..=227
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22), // 228..=233
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23), // 234..=239
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27), // 240..=245
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27), // 246..=251
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    (0x3fffffff, 30), // 252..=256
];

/// The Huffman decoder's state table. A state is an internal node of the code's tree (257 leaves, so
/// 256 internal nodes, numbered in a `u8`; the root is 0): the bits read since the last whole symbol.
/// Input is consumed a nibble at a time (a code is at least 5 bits, so a nibble completes at most one
/// symbol): two lookups per input byte, instead of a branch per bit when walking the tree.
struct HuffmanTable {
    /// `next[state][nibble]`: the state after the nibble in bits 8..16, and either `EMIT` with the
    /// symbol completed in bits 0..8, or `EOS` when the nibble completes the EOS code.
    next: [[u32; 16]; 256],
    /// How a string may end in each state (5.2): `PAD_OK` when the bits since the last symbol are at
    /// most 7 and all ones (a prefix of EOS, whose code is 30 ones).
    end: [u8; 256],
}

const HUFFMAN_EMIT: u32 = 1 << 16;
const HUFFMAN_EOS: u32 = 1 << 17;
const PAD_OK: u8 = 0;
const PAD_TOO_LONG: u8 = 1;
const PAD_NOT_EOS: u8 = 2;

/// Built at compile time: no initialisation at run time, and a table the compiler checked (the
/// asserts below fail the build, not a connection).
static HUFFMAN: HuffmanTable = build_huffman_table();

const fn build_huffman_table() -> HuffmanTable {
    // The tree: each internal node's two children, 0 while not yet made, `LEAF | symbol` for a leaf,
    // else the child node's number (the root, 0, is no node's child).
    const LEAF: u16 = 1 << 15;
    let mut children = [[0u16; 2]; 256];
    let mut depth = [0u8; 256];
    let mut all_ones = [false; 256];
    all_ones[0] = true;
    let mut nodes = 1;
    let mut symbol = 0;
    while symbol < HUFFMAN_CODES.len() {
        let (code, len) = HUFFMAN_CODES[symbol];
        let mut node = 0;
        let mut bit = len;
        while bit > 0 {
            bit -= 1;
            let b = ((code >> bit) & 1) as usize;
            if bit == 0 {
                assert!(
                    children[node][b] == 0,
                    "the Huffman code is not prefix-free"
                );
                children[node][b] = LEAF | symbol as u16;
            } else {
                if children[node][b] == 0 {
                    assert!(nodes < 256, "the Huffman code has too many nodes");
                    children[node][b] = nodes as u16;
                    depth[nodes] = depth[node] + 1;
                    all_ones[nodes] = all_ones[node] && b == 1;
                    nodes += 1;
                }
                assert!(
                    children[node][b] & LEAF == 0,
                    "the Huffman code is not prefix-free"
                );
                node = children[node][b] as usize;
            }
        }
        symbol += 1;
    }
    assert!(nodes == 256, "the Huffman code is not complete");

    let mut next = [[0u32; 16]; 256];
    let mut end = [PAD_OK; 256];
    let mut state = 0;
    while state < 256 {
        end[state] = if !all_ones[state] {
            PAD_NOT_EOS
        } else if depth[state] > 7 {
            PAD_TOO_LONG
        } else {
            PAD_OK
        };
        let mut nibble = 0;
        while nibble < 16 {
            let mut node = state;
            let mut entry = 0u32;
            let mut bit = 4;
            while bit > 0 {
                bit -= 1;
                let child = children[node][(nibble >> bit) & 1];
                if child & LEAF == 0 {
                    node = child as usize;
                } else if child & !LEAF == 256 {
                    entry |= HUFFMAN_EOS;
                    break;
                } else {
                    assert!(entry & HUFFMAN_EMIT == 0, "two symbols in a nibble");
                    entry |= HUFFMAN_EMIT | (child & !LEAF) as u32;
                    node = 0;
                }
            }
            next[state][nibble] = entry | (node as u32) << 8;
            nibble += 1;
        }
        state += 1;
    }
    HuffmanTable { next, end }
}

/// Decodes a Huffman-coded string onto the end of `dst`.
///
/// The hot loop is branch-free: a nibble's symbol is stored whether or not it completes one (the count
/// only moves when it does), and EOS is checked once per chunk (what is decoded after it is thrown
/// away). About 2 instructions per input bit.
fn huffman_decode(src: &[u8], dst: &mut BytesMut) -> Result<(), DecodeError> {
    /// Input bytes per chunk: at most one symbol per nibble, so at most 128 symbols, which a `u8`
    /// counts and a 256-byte buffer indexed by it holds, without bounds checks.
    const CHUNK: usize = 64;
    let mut out = [0u8; 256];
    let mut state = 0u8;
    let mut seen = 0u32;
    for chunk in src.chunks(CHUNK) {
        let mut n = 0u8;
        for &byte in chunk {
            for nibble in [byte >> 4, byte & 0x0f] {
                // In bounds by their types: a `u8` state of 256, a nibble of 16.
                let entry = HUFFMAN.next[usize::from(state)][usize::from(nibble & 0x0f)];
                out[usize::from(n)] = entry as u8;
                n += ((entry & HUFFMAN_EMIT) >> 16) as u8;
                state = (entry >> 8) as u8;
                seen |= entry;
            }
        }
        if seen & HUFFMAN_EOS != 0 {
            return Err(DecodeError::HuffmanEos);
        }
        dst.extend_from_slice(&out[..usize::from(n)]);
    }
    match HUFFMAN.end[usize::from(state)] {
        PAD_OK => Ok(()),
        PAD_TOO_LONG => Err(DecodeError::HuffmanPaddingTooLong),
        _ => Err(DecodeError::HuffmanPaddingInvalid),
    }
}

// ---------------------------------------------------------------------------------------------------
// Encoding: stateless (see the module's doc).

/// Literal without indexing (6.2.2): 0000xxxx, with a 4-bit name index.
const NOT_INDEXED: u8 = 0x00;
/// Literal never indexed (6.2.3): 0001xxxx, with a 4-bit name index.
const NEVER_INDEXED: u8 = 0x10;
/// Indexed field (6.1): 1xxxxxxx, with a 7-bit index.
const INDEXED: u8 = 0x80;
/// The most bytes an integer takes beyond its prefix byte (a 64-bit `usize`: 10 bytes of 7 bits).
const MAX_INTEGER_TAIL: usize = 10;

/// Encodes `:status`.
pub fn encode_status(status: StatusCode, dst: &mut BytesMut) {
    let index = match status.as_u16() {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        // A status is always three digits.
        _ => return put_literal(dst, NOT_INDEXED, 8, status.as_str().as_bytes()),
    };
    dst.put_u8(INDEXED | index);
}

/// Encodes a pseudo-header field of a request (`:method`, `:scheme`, `:authority`, `:path`,
/// `:protocol`). `name` must be one of those.
///
/// Also takes `:status` (as `encode_status` would send it) and a regular name (as `encode_field` would,
/// not sensitive); `Name::Malformed` has no name to send, and writes nothing.
pub fn encode_pseudo(name: &Name, value: &[u8], dst: &mut BytesMut) {
    let (name_index, exact) = match name {
        Name::Authority => (1, None),
        Name::Method => (
            2,
            match value {
                b"GET" => Some(2),
                b"POST" => Some(3),
                _ => None,
            },
        ),
        Name::Path => (
            4,
            match value {
                b"/" => Some(4),
                b"/index.html" => Some(5),
                _ => None,
            },
        ),
        Name::Scheme => (
            6,
            match value {
                b"http" => Some(6),
                b"https" => Some(7),
                _ => None,
            },
        ),
        Name::Status => (
            8,
            match value {
                b"200" => Some(8),
                b"204" => Some(9),
                b"206" => Some(10),
                b"304" => Some(11),
                b"400" => Some(12),
                b"404" => Some(13),
                b"500" => Some(14),
                _ => None,
            },
        ),
        // RFC 8441 came after the static table: the name goes as a literal.
        Name::Protocol => return put_literal_name(dst, NOT_INDEXED, b":protocol", value),
        Name::Header(name) => return put_field(name, value, false, dst),
        Name::Malformed => return,
    };
    match exact {
        Some(index) => dst.put_u8(INDEXED | index),
        None => put_literal(dst, NOT_INDEXED, name_index, value),
    }
}

/// Encodes a regular field. A sensitive value (`HeaderValue::is_sensitive`) is sent as never indexed.
pub fn encode_field(name: &HeaderName, value: &HeaderValue, dst: &mut BytesMut) {
    put_field(name, value.as_bytes(), value.is_sensitive(), dst);
}

fn put_field(name: &HeaderName, value: &[u8], sensitive: bool, dst: &mut BytesMut) {
    let name = name.as_str().as_bytes();
    let flags = if sensitive {
        NEVER_INDEXED
    } else {
        NOT_INDEXED
    };
    let Some(index) = static_name_index(name) else {
        return put_literal_name(dst, flags, name, value);
    };
    // The exact pair in the static table: `accept-encoding: gzip, deflate`, or an empty value of a
    // name whose entry has none. A sensitive value is never sent indexed: the peer is told it is one.
    let exact = !sensitive
        && STATIC_TABLE
            .get(usize::from(index) - 1)
            .is_some_and(|entry| entry.value.as_bytes() == value);
    if exact {
        dst.put_u8(INDEXED | index);
    } else {
        put_literal(dst, flags, index, value);
    }
}

/// A literal field (without or never indexed, as `flags` says) naming static entry `name_index`.
fn put_literal(dst: &mut BytesMut, flags: u8, name_index: u8, value: &[u8]) {
    // The head (name index, value length) is built on the stack and copied once: a `put_u8` per
    // byte would check the buffer's capacity each time.
    let mut head = [0u8; 2 + 1 + MAX_INTEGER_TAIL];
    let n = integer_into::<4>(&mut head, 0, flags, usize::from(name_index));
    let n = integer_into::<7>(&mut head, n, 0, value.len());
    put_head_and(dst, head.get(..n).unwrap_or_default(), value);
}

/// A literal field with a literal name (new name: the first byte's index is 0).
fn put_literal_name(dst: &mut BytesMut, flags: u8, name: &[u8], value: &[u8]) {
    let mut head = [0u8; 1 + 1 + MAX_INTEGER_TAIL];
    let n = integer_into::<4>(&mut head, 0, flags, 0);
    let n = integer_into::<7>(&mut head, n, 0, name.len());
    put_head_and(dst, head.get(..n).unwrap_or_default(), name);
    let n = integer_into::<7>(&mut head, 0, 0, value.len());
    put_head_and(dst, head.get(..n).unwrap_or_default(), value);
}

/// `head` then the plain string bytes `s`, with one capacity check.
#[inline]
fn put_head_and(dst: &mut BytesMut, head: &[u8], s: &[u8]) {
    dst.reserve(head.len() + s.len());
    dst.extend_from_slice(head);
    dst.extend_from_slice(s);
}

/// Writes an integer with an `N`-bit prefix (5.1), below `flags`, into `buf` at `at`; returns where it
/// ends. `buf` has room for it (at most `1 + MAX_INTEGER_TAIL` bytes); if it had not, the integer
/// would be cut short rather than panic.
#[inline]
fn integer_into<const N: u32>(buf: &mut [u8], mut at: usize, flags: u8, value: usize) -> usize {
    let mut put = |at: &mut usize, b: u8| {
        if let Some(slot) = buf.get_mut(*at) {
            *slot = b;
            *at += 1;
        }
    };
    let max_prefix = (1u8 << N) - 1;
    if value < usize::from(max_prefix) {
        put(&mut at, flags | value as u8);
        return at;
    }
    put(&mut at, flags | max_prefix);
    let mut rest = value - usize::from(max_prefix);
    while rest >= 0x80 {
        put(&mut at, 0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    put(&mut at, rest as u8);
    at
}

#[cfg(test)]
mod tests {
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
    }

    /// Decoding speed: `cargo test --release -- --ignored --nocapture decode_speed`. A fresh decoder
    /// per block, so every round inserts the 7 entries (and copies their values).
    #[test]
    #[ignore]
    fn decode_speed() {
        let block = typical_request();
        let rounds: u32 = std::env::var("ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1_000_000);
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let mut d = Decoder::new(4096);
            let _ = d.decode(std::hint::black_box(&block), |n, v| {
                std::hint::black_box((n, v));
            });
        }
        eprintln!(
            "first request: {} bytes, {:?} per block",
            block.len(),
            start.elapsed() / rounds
        );
        // The same request again on the connection: every field indexed (10 bytes), the values
        // shared with the table.
        let mut d = Decoder::new(4096);
        decode(&mut d, &block).unwrap();
        let again = hex("8286 84 c4 c3 c2 c1 c0 bf be");
        assert_eq!(decode(&mut d, &again).unwrap().len(), 10);
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            let _ = d.decode(std::hint::black_box(&again), |n, v| {
                std::hint::black_box((n, v));
            });
        }
        eprintln!("repeated request: {:?} per block", start.elapsed() / rounds);
    }

    /// Encoding speed: the same request's fields, stateless.
    #[test]
    #[ignore]
    fn encode_speed() {
        let mut fields = Vec::new();
        decode(&mut Decoder::new(4096), &typical_request())
            .unwrap()
            .into_iter()
            .for_each(|f| fields.push(f));
        let headers: Vec<(HeaderName, HeaderValue)> = fields
            .iter()
            .filter_map(|(n, v)| match n {
                Name::Header(h) => Some((
                    h.clone(),
                    HeaderValue::from_maybe_shared(v.clone()).unwrap(),
                )),
                _ => None,
            })
            .collect();
        let rounds: u32 = std::env::var("ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(1_000_000);
        let mut dst = BytesMut::with_capacity(4096);
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            dst.clear();
            encode_pseudo(&Name::Method, b"GET", &mut dst);
            encode_pseudo(&Name::Scheme, b"http", &mut dst);
            encode_pseudo(&Name::Path, b"/", &mut dst);
            encode_pseudo(&Name::Authority, b"www.example.com", &mut dst);
            for (n, v) in std::hint::black_box(&headers) {
                encode_field(n, v, &mut dst);
            }
            std::hint::black_box(&dst);
        }
        eprintln!(
            "{} bytes, {:?} per block",
            dst.len(),
            start.elapsed() / rounds
        );
    }
}
