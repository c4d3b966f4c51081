//! Trace and span identifiers: 128-bit trace ids, 64-bit span ids, never zero (zero means "absent" in
//! every format this crate reads), made from the thread's `fastrand` generator and written as lowercase
//! hex without the formatting machinery.

use std::fmt;
use std::num::{NonZeroU128, NonZeroU64};

/// A trace's id. 128 bits; an id whose upper 64 bits are zero is a 64-bit id (B3's and Zipkin's short
/// form), written with 16 digits in B3 and Zipkin and padded to 32 in W3C `traceparent`, as Envoy does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(NonZeroU128);

/// A span's id: 64 bits, never zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(NonZeroU64);

// === impl TraceId ===

impl TraceId {
    /// The id with this value; `None` for zero, which no format allows.
    pub fn new(v: u128) -> Option<TraceId> {
        NonZeroU128::new(v).map(TraceId)
    }

    /// A random 128-bit id (Istio turns on Envoy's `trace_id_128bit`).
    pub fn random() -> TraceId {
        loop {
            let v = (u128::from(fastrand::u64(..)) << 64) | u128::from(fastrand::u64(..));
            if let Some(id) = TraceId::new(v) {
                return id;
            }
        }
    }

    /// Its value.
    pub fn get(self) -> u128 {
        self.0.get()
    }

    /// Whether it is a 64-bit id (its upper half is zero).
    pub fn is_64bit(self) -> bool {
        self.get() >> 64 == 0
    }

    /// Its hex form as B3 and Zipkin write it: 16 digits for a 64-bit id, else 32. Returns the digits
    /// written at the start of `buf`.
    pub fn write_hex(self, buf: &mut [u8; 32]) -> &[u8] {
        write_hex_u128(self.get(), buf);
        if self.is_64bit() {
            &buf[16..]
        } else {
            &buf[..]
        }
    }

    /// Reads 16 or 32 hex digits (either case), as B3 and Zipkin send them; `None` for anything else and
    /// for zero.
    pub fn parse_hex(s: &[u8]) -> Option<TraceId> {
        match s.len() {
            16 => TraceId::new(u128::from(hex_u64(s, Case::Any)?)),
            32 => TraceId::new(hex_u128(s, Case::Any)?),
            _ => None,
        }
    }

    /// Reads Zipkin's lenient form: 1 to 32 hex digits of either case, left-padded with zeros.
    pub fn parse_lenient(s: &str) -> Option<TraceId> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 32 {
            return None;
        }
        let mut v = 0u128;
        for &c in b {
            v = (v << 4) | u128::from(hex_digit(c, Case::Any)?);
        }
        TraceId::new(v)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 32];
        f.write_str(ascii(self.write_hex(&mut buf)))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

// === impl SpanId ===

impl SpanId {
    /// The id with this value; `None` for zero.
    pub fn new(v: u64) -> Option<SpanId> {
        NonZeroU64::new(v).map(SpanId)
    }

    /// A random id: what each hop calls for its own span.
    pub fn random() -> SpanId {
        loop {
            if let Some(id) = SpanId::new(fastrand::u64(..)) {
                return id;
            }
        }
    }

    /// Its value.
    pub fn get(self) -> u64 {
        self.0.get()
    }

    /// Its 16 lowercase hex digits.
    pub fn write_hex(self, buf: &mut [u8; 16]) -> &[u8] {
        write_hex_u64(self.get(), buf);
        &buf[..]
    }

    /// Reads exactly 16 hex digits (either case); `None` for anything else and for zero.
    pub fn parse_hex(s: &[u8]) -> Option<SpanId> {
        if s.len() != 16 {
            return None;
        }
        SpanId::new(hex_u64(s, Case::Any)?)
    }

    /// Reads Zipkin's lenient form: 1 to 16 hex digits of either case, left-padded with zeros.
    pub fn parse_lenient(s: &str) -> Option<SpanId> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 16 {
            return None;
        }
        let mut v = 0u64;
        for &c in b {
            v = (v << 4) | u64::from(hex_digit(c, Case::Any)?);
        }
        SpanId::new(v)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 16];
        f.write_str(ascii(self.write_hex(&mut buf)))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

// === hex ===

/// Which letters a hex reader takes: W3C Trace Context allows only lowercase.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    Lower,
    Any,
}

/// Each byte's value as a hex digit, or `BAD` when it is not one: a table lookup a digit, with one
/// check at the end, instead of a comparison chain a digit (`hex_u64` was half of `Incoming::extract`'s
/// instructions as a match).
static DIGITS_LOWER: [u8; 256] = digits(false);
static DIGITS_ANY: [u8; 256] = digits(true);
const BAD: u8 = 0x10;

const fn digits(upper: bool) -> [u8; 256] {
    let mut t = [BAD; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        if upper {
            t[b'A' as usize + i] = 10 + i as u8;
        }
        i += 1;
    }
    t
}

fn table(case: Case) -> &'static [u8; 256] {
    match case {
        Case::Lower => &DIGITS_LOWER,
        Case::Any => &DIGITS_ANY,
    }
}

fn hex_digit(c: u8, case: Case) -> Option<u8> {
    let d = table(case)[usize::from(c)];
    (d != BAD).then_some(d)
}

/// Exactly 16 hex digits as a number.
pub(crate) fn hex_u64(s: &[u8], case: Case) -> Option<u64> {
    let s: &[u8; 16] = s.try_into().ok()?;
    let (hi, lo) = s.split_at(8);
    let hi = hex8(hi.try_into().ok()?, case)?;
    let lo = hex8(lo.try_into().ok()?, case)?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

/// Eight hex digits as a number, all eight at once in one word: about 25 instructions where a table
/// lookup a digit took 60 (`Incoming::extract` reads four 16-digit ids per request).
fn hex8(s: [u8; 8], case: Case) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The first digit in the top byte.
    let x = u64::from_be_bytes(s);
    // Each byte's high bit is set when the byte lies in lo..=hi. Valid for bytes below 0x80 only
    // (checked below): the additions then never carry from one byte into the next.
    let between = |lo: u8, hi: u8| {
        let ge_lo = x.wrapping_add(ONES * u64::from(0x80 - lo)) & HIGH;
        let gt_hi = x.wrapping_add(ONES * u64::from(0x7f - hi)) & HIGH;
        ge_lo & !gt_hi
    };
    let digit = between(b'0', b'9');
    let mut letter = between(b'a', b'f');
    if case == Case::Any {
        letter |= between(b'A', b'F');
    }
    if x & HIGH != 0 || digit | letter != HIGH {
        return None;
    }
    // '0'..'9' are 0x30..0x39 and 'a'..'f' 0x61..0x66 ('A'..'F' 0x41..0x46): the low nibble, plus 9 for
    // a letter.
    let mut v = (x & (ONES * 0x0f)) + (letter >> 7) * 9;
    // Pack the eight nibbles (one a byte) into 32 bits, pairs, then quads, then all.
    v = (v | (v >> 4)) & 0x00ff_00ff_00ff_00ff;
    v = (v | (v >> 8)) & 0x0000_ffff_0000_ffff;
    v = (v | (v >> 16)) & 0x0000_0000_ffff_ffff;
    Some(v as u32)
}

/// Exactly 32 hex digits as a number.
pub(crate) fn hex_u128(s: &[u8], case: Case) -> Option<u128> {
    if s.len() != 32 {
        return None;
    }
    let hi = hex_u64(&s[..16], case)?;
    let lo = hex_u64(&s[16..], case)?;
    Some((u128::from(hi) << 64) | u128::from(lo))
}

/// Exactly 2 hex digits as a byte.
pub(crate) fn hex_u8(s: &[u8], case: Case) -> Option<u8> {
    match s {
        [a, b] => Some((hex_digit(*a, case)? << 4) | hex_digit(*b, case)?),
        _ => None,
    }
}

/// Each byte's two lowercase hex digits.
static PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    t
};

pub(crate) fn write_hex_u64(v: u64, buf: &mut [u8; 16]) {
    for (pair, b) in buf.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
}

pub(crate) fn write_hex_u128(v: u128, buf: &mut [u8; 32]) {
    for (pair, b) in buf.chunks_exact_mut(2).zip(v.to_be_bytes()) {
        pair.copy_from_slice(&PAIRS[usize::from(b)]);
    }
}

/// Hex digits as text (they are ASCII by construction).
fn ascii(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_b3_and_zipkin_write_them() {
        let long = TraceId::parse_hex(b"80f198ee56343ba864fe8b2a57d3eff7").expect("128-bit");
        assert_eq!(long.to_string(), "80f198ee56343ba864fe8b2a57d3eff7");
        assert!(!long.is_64bit());
        let short = TraceId::parse_hex(b"e457b5a2e4d86bd1").expect("64-bit");
        assert_eq!(short.to_string(), "e457b5a2e4d86bd1");
        assert!(short.is_64bit());
        // Upper case is read (B3 readers are lenient), lower case is written.
        let s = SpanId::parse_hex(b"E457B5A2E4D86BD1").expect("upper case");
        assert_eq!(s.to_string(), "e457b5a2e4d86bd1");
        assert_eq!(SpanId::new(1).expect("1").to_string(), "0000000000000001");
    }

    #[test]
    fn bad_ids_are_refused() {
        for bad in [
            &b""[..],
            b"0000000000000000",
            b"00000000000000000000000000000000",
            b"e457b5a2e4d86bd",
            b"e457b5a2e4d86bd1e",
            b"e457b5a2e4d86bdg",
            b"-457b5a2e4d86bd1",
        ] {
            assert_eq!(TraceId::parse_hex(bad), None, "{:?}", ascii(bad));
            assert_eq!(SpanId::parse_hex(bad), None, "{:?}", ascii(bad));
        }
        assert_eq!(hex_u64(b"ABCDEF0123456789", Case::Lower), None);
        assert_eq!(TraceId::parse_lenient("a"), TraceId::new(10));
        assert_eq!(TraceId::parse_lenient(&"1".repeat(33)), None);
        assert_eq!(SpanId::parse_lenient("0"), None);
    }

    #[test]
    fn eight_digits_at_once_read_as_one_at_a_time() {
        // Every byte value in every position, against the digit-at-a-time reader.
        let slow = |s: &[u8; 8], case: Case| -> Option<u32> {
            s.iter().try_fold(0u32, |v, &c| {
                Some((v << 4) | u32::from(hex_digit(c, case)?))
            })
        };
        for case in [Case::Lower, Case::Any] {
            for pos in 0..8 {
                for b in 0..=255u8 {
                    let mut s = *b"9aF0c3e1";
                    s[pos] = b;
                    assert_eq!(hex8(s, case), slow(&s, case), "{s:?}");
                }
            }
            for _ in 0..10_000 {
                let s: [u8; 8] =
                    std::array::from_fn(|_| b"0123456789abcdefABCDEF"[fastrand::usize(..22)]);
                assert_eq!(hex8(s, case), slow(&s, case), "{s:?}");
            }
        }
    }

    #[test]
    fn random_ids_round_trip() {
        for _ in 0..100 {
            let t = TraceId::random();
            assert_eq!(TraceId::parse_lenient(&t.to_string()), Some(t));
            let s = SpanId::random();
            assert_eq!(SpanId::parse_hex(s.to_string().as_bytes()), Some(s));
        }
    }
}
