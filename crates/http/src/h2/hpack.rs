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

mod huffman;
mod table;

use huffman::huffman_decode;
use table::{static_name_index, DynamicTable, STATIC_TABLE};
#[cfg(test)]
mod tests;
