//! HTTP/2 frames (RFC 9113, section 4 and 6): the 9-byte frame header, and frames written straight into a
//! connection's write buffer.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// What a client sends first.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The length of a frame's header.
pub const HEAD_LEN: usize = 9;
/// SETTINGS_MAX_FRAME_SIZE's initial value, and the largest frame this side accepts (it never raises it).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
/// The largest SETTINGS_MAX_FRAME_SIZE a peer may set.
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
/// The initial flow-control window of a stream and of the connection.
pub const DEFAULT_WINDOW: i64 = 65_535;

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const PRIORITY: u8 = 0x2;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// An error code (RFC 9113, section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason(pub u32);

impl Reason {
    pub const NO_ERROR: Reason = Reason(0x0);
    pub const PROTOCOL_ERROR: Reason = Reason(0x1);
    pub const INTERNAL_ERROR: Reason = Reason(0x2);
    pub const FLOW_CONTROL_ERROR: Reason = Reason(0x3);
    pub const STREAM_CLOSED: Reason = Reason(0x5);
    pub const FRAME_SIZE_ERROR: Reason = Reason(0x6);
    pub const REFUSED_STREAM: Reason = Reason(0x7);
    pub const CANCEL: Reason = Reason(0x8);
    pub const COMPRESSION_ERROR: Reason = Reason(0x9);
    pub const ENHANCE_YOUR_CALM: Reason = Reason(0xb);
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.0 {
            0x0 => "NO_ERROR",
            0x1 => "PROTOCOL_ERROR",
            0x2 => "INTERNAL_ERROR",
            0x3 => "FLOW_CONTROL_ERROR",
            0x4 => "SETTINGS_TIMEOUT",
            0x5 => "STREAM_CLOSED",
            0x6 => "FRAME_SIZE_ERROR",
            0x7 => "REFUSED_STREAM",
            0x8 => "CANCEL",
            0x9 => "COMPRESSION_ERROR",
            0xa => "CONNECT_ERROR",
            0xb => "ENHANCE_YOUR_CALM",
            0xc => "INADEQUATE_SECURITY",
            0xd => "HTTP_1_1_REQUIRED",
            n => return write!(f, "error code {n:#x}"),
        };
        f.write_str(name)
    }
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// Reads the header at the start of `b` (at least `HEAD_LEN` bytes).
    pub fn parse(b: &[u8; HEAD_LEN]) -> Head {
        Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A connection error met while reading a frame: the GOAWAY code, and what was wrong (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Broke(pub Reason, pub &'static str);

/// The header of the frame at the front of `rbuf` once the whole frame is there (`None` before), checked
/// as either side checks every frame (RFC 9113 4.2, 3.4, 6.10): no longer than our
/// SETTINGS_MAX_FRAME_SIZE (never raised from the default), SETTINGS first, and nothing but its
/// CONTINUATION inside the header block of stream `continuing`.
pub fn next_head(
    rbuf: &[u8],
    settings_seen: bool,
    continuing: Option<u32>,
) -> Result<Option<Head>, Broke> {
    let Some(h) = rbuf.first_chunk::<HEAD_LEN>() else {
        return Ok(None);
    };
    let head = Head::parse(h);
    if head.len > DEFAULT_MAX_FRAME_SIZE {
        return Err(Broke(
            Reason::FRAME_SIZE_ERROR,
            "a frame larger than SETTINGS_MAX_FRAME_SIZE",
        ));
    }
    if rbuf.len() < HEAD_LEN + head.len {
        return Ok(None);
    }
    if !settings_seen && (head.kind != SETTINGS || head.has(ACK)) {
        return Err(Broke(
            Reason::PROTOCOL_ERROR,
            "the first frame is not SETTINGS",
        ));
    }
    if continuing.is_some_and(|id| head.kind != CONTINUATION || head.stream != id) {
        return Err(Broke(Reason::PROTOCOL_ERROR, "a header block interrupted"));
    }
    Ok(Some(head))
}

/// One setting of a peer's SETTINGS frame, its value checked where RFC 9113 6.5.2 bounds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    EnablePush(u32),
    MaxConcurrentStreams(u32),
    /// At most 2^31-1.
    InitialWindowSize(i64),
    /// Between 2^14 and 2^24-1.
    MaxFrameSize(usize),
    /// The header table and header list sizes, and settings unknown here (ignored, 6.5.2).
    Other,
}

/// The settings a SETTINGS frame carries, in order, or `None` for an acknowledgement (RFC 9113 6.5).
/// The frame's own faults are found here, before any setting: each side then applies the settings it
/// cares about, and fails on the first bad value.
pub fn settings_in<'a>(
    head: &Head,
    payload: &'a [u8],
) -> Result<Option<impl Iterator<Item = Result<Setting, Broke>> + 'a>, Broke> {
    if head.stream != 0 {
        return Err(Broke(Reason::PROTOCOL_ERROR, "SETTINGS on a stream"));
    }
    if head.has(ACK) {
        if head.len != 0 {
            return Err(Broke(
                Reason::FRAME_SIZE_ERROR,
                "SETTINGS ACK with a payload",
            ));
        }
        return Ok(None);
    }
    if !payload.len().is_multiple_of(6) {
        return Err(Broke(
            Reason::FRAME_SIZE_ERROR,
            "SETTINGS not a multiple of 6 bytes",
        ));
    }
    Ok(Some(payload.chunks_exact(6).map(|s| {
        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
        Ok(match u16::from_be_bytes([s[0], s[1]]) {
            SETTINGS_ENABLE_PUSH => Setting::EnablePush(value),
            SETTINGS_MAX_CONCURRENT_STREAMS => Setting::MaxConcurrentStreams(value),
            SETTINGS_INITIAL_WINDOW_SIZE if i64::from(value) > MAX_WINDOW => {
                return Err(Broke(
                    Reason::FLOW_CONTROL_ERROR,
                    "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                ))
            }
            SETTINGS_INITIAL_WINDOW_SIZE => Setting::InitialWindowSize(i64::from(value)),
            SETTINGS_MAX_FRAME_SIZE
                if !(DEFAULT_MAX_FRAME_SIZE as u32..=MAX_MAX_FRAME_SIZE).contains(&value) =>
            {
                return Err(Broke(
                    Reason::PROTOCOL_ERROR,
                    "SETTINGS_MAX_FRAME_SIZE out of range",
                ))
            }
            SETTINGS_MAX_FRAME_SIZE => Setting::MaxFrameSize(value as usize),
            _ => Setting::Other,
        })
    })))
}

/// A WINDOW_UPDATE's increment (RFC 9113 6.9). An increment of 0 is a connection error on the
/// connection's window; on a stream's it is returned, for the caller to reset that stream.
pub fn window_increment(head: &Head, payload: &[u8]) -> Result<i64, Broke> {
    let Ok(&b) = <&[u8; 4]>::try_from(payload) else {
        return Err(Broke(
            Reason::FRAME_SIZE_ERROR,
            "WINDOW_UPDATE not 4 bytes long",
        ));
    };
    let inc = i64::from(u32::from_be_bytes(b) & 0x7fff_ffff);
    if head.stream == 0 && inc == 0 {
        return Err(Broke(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0"));
    }
    Ok(inc)
}

/// A DATA or HEADERS frame's payload without its padding (RFC 9113 6.1, 6.2).
pub fn unpad(head: &Head, mut payload: Bytes) -> Result<Bytes, Broke> {
    if !head.has(PADDED) {
        return Ok(payload);
    }
    let Some(&pad) = payload.first() else {
        return Err(Broke(
            Reason::FRAME_SIZE_ERROR,
            "a padded frame with no pad length",
        ));
    };
    let pad = usize::from(pad);
    if pad >= payload.len() {
        return Err(Broke(
            Reason::PROTOCOL_ERROR,
            "padding as long as the frame",
        ));
    }
    payload.advance(1);
    payload.truncate(payload.len() - pad);
    Ok(payload)
}

/// Writes a frame header.
pub fn put_head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len <= MAX_MAX_FRAME_SIZE as usize);
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    dst.put_slice(&[l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]);
}

/// A SETTINGS frame with these settings.
pub fn settings(dst: &mut BytesMut, settings: &[(u16, u32)]) {
    put_head(dst, settings.len() * 6, SETTINGS, 0, 0);
    for &(id, value) in settings {
        dst.put_u16(id);
        dst.put_u32(value);
    }
}

pub fn settings_ack(dst: &mut BytesMut) {
    put_head(dst, 0, SETTINGS, ACK, 0);
}

/// A PING asking for an acknowledgement (a keepalive).
pub fn ping(dst: &mut BytesMut, payload: &[u8; 8]) {
    put_head(dst, 8, PING, 0, 0);
    dst.put_slice(payload);
}

pub fn ping_ack(dst: &mut BytesMut, payload: &[u8]) {
    put_head(dst, payload.len(), PING, ACK, 0);
    dst.put_slice(payload);
}

pub fn goaway(dst: &mut BytesMut, last_stream: u32, reason: Reason) {
    put_head(dst, 8, GOAWAY, 0, 0);
    dst.put_u32(last_stream);
    dst.put_u32(reason.0);
}

pub fn rst_stream(dst: &mut BytesMut, stream: u32, reason: Reason) {
    put_head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(reason.0);
}

pub fn window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    put_head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

pub fn data(dst: &mut BytesMut, stream: u32, data: &[u8], end: bool) {
    put_head(
        dst,
        data.len(),
        DATA,
        if end { END_STREAM } else { 0 },
        stream,
    );
    dst.put_slice(data);
}

/// Writes a header block as HEADERS (and CONTINUATION frames when it is longer than `max_frame`):
/// `encode` writes the block, which is then framed where it lies, so that the usual block, which fits one
/// frame, is written once and never moved.
pub fn headers(
    dst: &mut BytesMut,
    stream: u32,
    end_stream: bool,
    max_frame: usize,
    encode: impl FnOnce(&mut BytesMut),
) {
    let start = dst.len();
    dst.put_slice(&[0; HEAD_LEN]);
    encode(dst);
    let len = dst.len() - start - HEAD_LEN;
    let flags = if end_stream { END_STREAM } else { 0 };
    if len <= max_frame {
        write_head_at(dst, start, len, HEADERS, flags | END_HEADERS, stream);
        return;
    }
    // Rare (a head over 16 KB): cut the block into frames, moving it once.
    let block = dst.split_off(start + HEAD_LEN);
    dst.truncate(start);
    let mut chunks = block.chunks(max_frame).peekable();
    let mut kind = HEADERS;
    let mut first_flags = flags;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let f = first_flags | if last { END_HEADERS } else { 0 };
        put_head(dst, chunk.len(), kind, f, stream);
        dst.put_slice(chunk);
        kind = CONTINUATION;
        first_flags = 0;
    }
}

fn write_head_at(dst: &mut BytesMut, at: usize, len: usize, kind: u8, flags: u8, stream: u32) {
    let l = (len as u32).to_be_bytes();
    let s = stream.to_be_bytes();
    dst[at..at + HEAD_LEN]
        .copy_from_slice(&[l[1], l[2], l[3], kind, flags, s[0], s[1], s[2], s[3]]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_read_back_what_was_written() {
        let mut b = BytesMut::new();
        put_head(
            &mut b,
            0x012345,
            HEADERS,
            END_HEADERS | END_STREAM,
            0x7fff_fffe,
        );
        let h = Head::parse(b[..HEAD_LEN].try_into().expect("nine bytes"));
        assert_eq!(
            h,
            Head {
                len: 0x012345,
                kind: HEADERS,
                flags: END_HEADERS | END_STREAM,
                stream: 0x7fff_fffe
            }
        );
        // The reserved bit is ignored on reading.
        let mut raw = [0u8; HEAD_LEN];
        raw[5] = 0x80;
        raw[8] = 3;
        assert_eq!(Head::parse(&raw).stream, 3);
    }

    #[test]
    fn long_header_blocks_go_on_in_continuation_frames() {
        let mut b = BytesMut::new();
        headers(&mut b, 5, true, 16, |dst| dst.put_slice(&[7u8; 40]));
        let mut frames = Vec::new();
        let mut rest = &b[..];
        while !rest.is_empty() {
            let h = Head::parse(rest[..HEAD_LEN].try_into().expect("nine bytes"));
            assert!(rest[HEAD_LEN..HEAD_LEN + h.len].iter().all(|&x| x == 7));
            frames.push((h.kind, h.flags, h.len));
            rest = &rest[HEAD_LEN + h.len..];
        }
        assert_eq!(
            frames,
            [
                (HEADERS, END_STREAM, 16),
                (CONTINUATION, 0, 16),
                (CONTINUATION, END_HEADERS, 8)
            ]
        );

        let mut b = BytesMut::new();
        headers(&mut b, 1, false, 16, |dst| dst.put_slice(&[1, 2, 3]));
        assert_eq!(
            &b[..],
            &[0, 0, 3, HEADERS, END_HEADERS, 0, 0, 0, 1, 1, 2, 3]
        );
    }
}
