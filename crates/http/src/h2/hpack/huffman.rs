//! Huffman decoding (RFC 7541 5.2, Appendix B).

use super::*;

/// The Huffman code (RFC 7541 Appendix B): for each symbol (the 256 byte values, then EOS), its code,
/// right-aligned, and its length in bits.
pub(super) const HUFFMAN_CODES: [(u32, u8); 257] = [
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
pub(super) struct HuffmanTable {
    /// `next[state][nibble]`: the state after the nibble in bits 8..16, and either `EMIT` with the
    /// symbol completed in bits 0..8, or `EOS` when the nibble completes the EOS code.
    pub(super) next: [[u32; 16]; 256],
    /// How a string may end in each state (5.2): `PAD_OK` when the bits since the last symbol are at
    /// most 7 and all ones (a prefix of EOS, whose code is 30 ones).
    pub(super) end: [u8; 256],
}

pub(super) const HUFFMAN_EMIT: u32 = 1 << 16;
pub(super) const HUFFMAN_EOS: u32 = 1 << 17;
pub(super) const PAD_OK: u8 = 0;
pub(super) const PAD_TOO_LONG: u8 = 1;
pub(super) const PAD_NOT_EOS: u8 = 2;

/// Built at compile time: no initialisation at run time, and a table the compiler checked (the
/// asserts below fail the build, not a connection).
pub(super) static HUFFMAN: HuffmanTable = build_huffman_table();

pub(super) const fn build_huffman_table() -> HuffmanTable {
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
pub(super) fn huffman_decode(src: &[u8], dst: &mut BytesMut) -> Result<(), DecodeError> {
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
