//! HPACK's tables: the static table (RFC 7541 Appendix A) and a connection's dynamic table (2.3.2, 4).

use super::*;

/// The dynamic table (2.3.2): newest entry first, so that index 62 is `entries[0]`.
#[derive(Debug)]
pub(super) struct DynamicTable {
    pub(super) entries: VecDeque<Entry>,
    /// The sum of the entries' sizes (4.1).
    pub(super) size: usize,
    /// The size the peer last set (at most the decoder's `max_table_size`).
    pub(super) capacity: usize,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) name: Name,
    /// The name's length as received: a `Malformed` name still costs its bytes.
    pub(super) name_len: usize,
    /// Owned (copied on insertion), so the table never pins a received block.
    pub(super) value: Bytes,
}

impl Entry {
    pub(super) fn size(&self) -> usize {
        self.name_len + self.value.len() + ENTRY_OVERHEAD
    }
}

impl DynamicTable {
    /// Adds an entry, evicting the oldest ones to make room (4.4). An entry larger than the whole table
    /// empties it and is not added.
    pub(super) fn insert(&mut self, name: Name, name_len: usize, value: &[u8]) {
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
    pub(super) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
        self.evict_to(capacity);
    }

    pub(super) fn evict_to(&mut self, size: usize) {
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

/// A static table entry: its name as a `Name` (so a static name costs no parsing) and as text.
pub(super) struct StaticEntry {
    pub(super) name: Name,
    pub(super) name_str: &'static str,
    pub(super) value: &'static str,
}

pub(super) const fn pseudo(name: Name, name_str: &'static str, value: &'static str) -> StaticEntry {
    StaticEntry {
        name,
        name_str,
        value,
    }
}

pub(super) const fn header(name_str: &'static str, value: &'static str) -> StaticEntry {
    StaticEntry {
        name: Name::Header(HeaderName::from_static(name_str)),
        name_str,
        value,
    }
}

/// The static table (RFC 7541 Appendix A); index `i` is `STATIC_TABLE[i - 1]`.
pub(super) static STATIC_TABLE: [StaticEntry; 61] = [
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
pub(super) fn static_name_index(name: &[u8]) -> Option<u8> {
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
