//! What an HTTP/2 client may make the server do without asking it for a request's work: the accounting
//! behind the server's defences against floods. Each limit returns the connection error that ends the
//! connection (GOAWAY `ENHANCE_YOUR_CALM`) when it is passed.
//!
//! | defence | limit | answers |
//! |---|---|---|
//! | streams reset before their answer, refused or malformed | more than half of the last 256 streams | rapid reset (CVE-2023-44487) |
//! | streams the server resets for the client's errors | 1,024 per connection (h2's `max_local_error_reset_streams`) | MadeYouReset (CVE-2025-8671) |
//! | frames with an empty payload in a row | 1 (Envoy's `max_consecutive_inbound_frames_with_empty_payload`) | empty frames (CVE-2019-9518), CONTINUATION flood (CVE-2024-27316, CVE-2024-28182) |
//! | CONTINUATION frames in one header block | 32 | CONTINUATION flood |
//! | PRIORITY frames | 100 per stream opened, plus 100 (Envoy's `max_inbound_priority_frames_per_stream`) | priority flood (CVE-2019-9513) |
//! | WINDOW_UPDATE frames | 5 + 2 × (streams opened + 10 × DATA frames sent) (Envoy's `max_inbound_window_update_frames_per_data_frame_sent`) | window-update flood |
//! | SETTINGS and PING frames | 1,000 a second | settings and ping floods (CVE-2019-9515, CVE-2019-9512) |
//! | DATA frames of under 16 bytes that do not end their stream | 10,000 a second | tiny-frame floods |
//! | control frames queued and not yet written | 1,000 (Envoy's `max_outbound_control_frames`) | a client that floods and does not read the answers |
//!
//! The accounting is a few integer operations per frame; the clock is read only when a per-second budget
//! runs out.

use super::frame::Reason;
use std::time::Duration;
use tokio::time::Instant;

/// Stream outcomes judged for rapid reset: the last this many.
const OUTCOME_WINDOW: u32 = 256;
/// Resets among them beyond which the connection ends: more than half.
const OUTCOME_RESETS_MAX: u32 = OUTCOME_WINDOW / 2;
/// Streams the server may reset for the client's errors over a connection's life (h2's default).
pub(crate) const MAX_LOCAL_ERROR_RESETS: u32 = 1024;
/// Frames with an empty payload in a row (Envoy's default).
const MAX_EMPTY_FRAMES_IN_A_ROW: u32 = 1;
/// CONTINUATION frames one header block may take. A block is at most 64 KiB, which a client sends in
/// four frames of the default size; nghttp2 allows 8.
pub(crate) const MAX_CONTINUATIONS: u32 = 32;
/// Envoy's `max_inbound_priority_frames_per_stream`.
const PRIORITY_FRAMES_PER_STREAM: u64 = 100;
/// Envoy's `max_inbound_window_update_frames_per_data_frame_sent`.
const WINDOW_UPDATES_PER_DATA_FRAME: u64 = 10;
/// SETTINGS and PING frames a second: a client sends a handful in a connection's life (gRPC's keepalive
/// pings at most every few seconds).
const CONTROL_FRAMES_PER_SECOND: u32 = 1_000;
/// DATA frames carrying fewer than `TINY_DATA` bytes (and not ending their stream) a second: enough for a
/// stream of small gRPC messages, not for a client that splits its bodies into bytes.
const TINY_DATA_FRAMES_PER_SECOND: u32 = 10_000;
/// Below this many bytes a DATA frame is tiny.
pub(crate) const TINY_DATA: usize = 16;
/// Envoy's `max_outbound_control_frames`.
const MAX_QUEUED_CONTROL_FRAMES: u32 = 1_000;

/// A frame budget for each second: spent a frame at a time; when it runs out, the clock is read, and
/// the frames came too fast if a second has not passed since it was last filled.
#[derive(Debug)]
struct Budget {
    per_second: u32,
    left: u32,
    filled: Option<Instant>,
}

impl Budget {
    fn new(per_second: u32) -> Budget {
        Budget {
            per_second,
            left: per_second,
            filled: None,
        }
    }

    /// False when the frame is one too many for the second.
    fn spend(&mut self) -> bool {
        if self.left > 0 {
            self.left -= 1;
            return true;
        }
        let now = Instant::now();
        // The first budget ran from the connection's start, which was not timed: it is refilled once.
        if self
            .filled
            .is_some_and(|f| now.duration_since(f) < Duration::from_secs(1))
        {
            return false;
        }
        self.filled = Some(now);
        self.left = self.per_second - 1;
        true
    }
}

/// The connection error a passed limit ends the connection with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flood(pub &'static str);

impl Flood {
    pub(crate) fn reason(self) -> Reason {
        Reason::ENHANCE_YOUR_CALM
    }
}

/// The accounting of one connection.
#[derive(Debug)]
pub(crate) struct Guard {
    /// The last `OUTCOME_WINDOW` stream outcomes, a bit each (1: reset, refused or malformed).
    outcomes: [u64; (OUTCOME_WINDOW / 64) as usize],
    /// Where the next outcome goes.
    next: u32,
    /// Set bits in `outcomes`.
    resets: u32,
    local_error_resets: u32,
    /// Streams whose request reached the handler.
    opened: u64,
    empty_in_a_row: u32,
    priority_frames: u64,
    window_updates: u64,
    data_frames_sent: u64,
    control: Budget,
    tiny_data: Budget,
    /// Control frames written into the write buffer since it was last empty.
    queued_control: u32,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard {
            outcomes: [0; (OUTCOME_WINDOW / 64) as usize],
            next: 0,
            resets: 0,
            local_error_resets: 0,
            opened: 0,
            empty_in_a_row: 0,
            priority_frames: 0,
            window_updates: 0,
            data_frames_sent: 0,
            control: Budget::new(CONTROL_FRAMES_PER_SECOND),
            tiny_data: Budget::new(TINY_DATA_FRAMES_PER_SECOND),
            queued_control: 0,
        }
    }
}

impl Guard {
    /// A stream's request reached the handler.
    pub(crate) fn opened(&mut self) {
        self.opened += 1;
    }

    /// A stream was answered (its response head written).
    pub(crate) fn answered(&mut self) {
        self.outcome(false);
    }

    /// A stream ended without an answer because of the client: it reset it before the answer, it was
    /// refused (over the concurrency limit), or its request was malformed. Judged over the last 256
    /// streams, so that a client cannot hide resets among an early run of good streams, nor among
    /// malformed ones.
    pub(crate) fn unanswered(&mut self) -> Result<(), Flood> {
        self.outcome(true);
        if self.resets > OUTCOME_RESETS_MAX {
            return Err(Flood("most recent streams reset before their answer"));
        }
        Ok(())
    }

    /// The server reset a stream (or answered a frame on a closed one) for the client's error: counted
    /// over the connection's life, as h2 does, and, when the stream had not been answered, as an
    /// unanswered stream.
    pub(crate) fn local_error_reset(&mut self, unanswered: bool) -> Result<(), Flood> {
        self.local_error_resets += 1;
        if self.local_error_resets > MAX_LOCAL_ERROR_RESETS {
            return Err(Flood("too many streams reset for the client's errors"));
        }
        if unanswered {
            self.unanswered()?;
        }
        Ok(())
    }

    fn outcome(&mut self, reset: bool) {
        let (word, bit) = ((self.next / 64) as usize, self.next % 64);
        let was = self.outcomes[word] >> bit & 1 == 1;
        if was != reset {
            self.outcomes[word] ^= 1 << bit;
            if reset {
                self.resets += 1;
            } else {
                self.resets -= 1;
            }
        }
        self.next = (self.next + 1) % OUTCOME_WINDOW;
    }

    /// A HEADERS, CONTINUATION or DATA frame: `empty` when its payload (less padding) is empty and it
    /// ends neither its stream nor its header block.
    pub(crate) fn payload(&mut self, empty: bool) -> Result<(), Flood> {
        if !empty {
            self.empty_in_a_row = 0;
            return Ok(());
        }
        self.empty_in_a_row += 1;
        if self.empty_in_a_row > MAX_EMPTY_FRAMES_IN_A_ROW {
            return Err(Flood("frames with an empty payload in a row"));
        }
        Ok(())
    }

    /// A DATA frame carrying `len` bytes that does not end its stream.
    pub(crate) fn data(&mut self, len: usize) -> Result<(), Flood> {
        if len < TINY_DATA && !self.tiny_data.spend() {
            return Err(Flood("too many tiny DATA frames a second"));
        }
        Ok(())
    }

    pub(crate) fn priority(&mut self) -> Result<(), Flood> {
        self.priority_frames += 1;
        if self.priority_frames > PRIORITY_FRAMES_PER_STREAM * (1 + self.opened) {
            return Err(Flood("too many PRIORITY frames"));
        }
        Ok(())
    }

    pub(crate) fn window_update(&mut self) -> Result<(), Flood> {
        self.window_updates += 1;
        let allowed = 5 + 2 * (self.opened + WINDOW_UPDATES_PER_DATA_FRAME * self.data_frames_sent);
        if self.window_updates > allowed {
            return Err(Flood("too many WINDOW_UPDATE frames"));
        }
        Ok(())
    }

    /// A DATA frame the server sent (what a client's WINDOW_UPDATEs answer).
    pub(crate) fn data_sent(&mut self) {
        self.data_frames_sent += 1;
    }

    /// A SETTINGS or PING frame (not an acknowledgement).
    pub(crate) fn control(&mut self) -> Result<(), Flood> {
        if !self.control.spend() {
            return Err(Flood("too many SETTINGS and PING frames a second"));
        }
        Ok(())
    }

    /// A control frame (an acknowledgement, RST_STREAM) written into the write buffer.
    pub(crate) fn queued_control(&mut self) -> Result<(), Flood> {
        self.queued_control += 1;
        if self.queued_control > MAX_QUEUED_CONTROL_FRAMES {
            return Err(Flood(
                "too many control frames queued for a client that does not read",
            ));
        }
        Ok(())
    }

    /// The write buffer was written out whole.
    pub(crate) fn flushed(&mut self) {
        self.queued_control = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_are_judged_over_the_last_256_streams() {
        // A long run of good streams does not buy a run of resets later.
        let mut g = Guard::default();
        for _ in 0..100_000 {
            g.answered();
        }
        let mut passed = 0;
        let err = loop {
            if let Err(e) = g.unanswered() {
                break e;
            }
            passed += 1;
        };
        assert_eq!(passed, 128, "{err:?}");

        // One good stream for each reset stays below the limit forever.
        let mut g = Guard::default();
        for _ in 0..100_000 {
            g.answered();
            assert_eq!(g.unanswered(), Ok(()));
        }
        // Two resets for each good one do not.
        let mut g = Guard::default();
        let mut n = 0;
        let err = loop {
            n += 1;
            g.answered();
            if let Err(e) = g.unanswered().and_then(|()| g.unanswered()) {
                break e;
            }
        };
        assert!(n < 200, "{n}: {err:?}");
    }

    #[test]
    fn local_error_resets_are_capped_over_the_connection_life() {
        let mut g = Guard::default();
        for _ in 0..MAX_LOCAL_ERROR_RESETS {
            // Answered streams: the window does not stop them, the life count does.
            g.answered();
            assert_eq!(g.local_error_reset(false), Ok(()));
        }
        assert!(g.local_error_reset(false).is_err());
    }

    #[test]
    fn one_empty_frame_in_a_row_is_allowed() {
        let mut g = Guard::default();
        assert_eq!(g.payload(true), Ok(()));
        assert_eq!(g.payload(false), Ok(()));
        assert_eq!(g.payload(true), Ok(()));
        assert!(g.payload(true).is_err());
    }

    #[test]
    fn priority_and_window_update_frames_are_bounded_by_the_work_done() {
        let mut g = Guard::default();
        for _ in 0..100 {
            assert_eq!(g.priority(), Ok(()));
        }
        assert!(g.priority().is_err());
        let mut g = Guard::default();
        g.opened();
        for _ in 0..200 {
            assert_eq!(g.priority(), Ok(()));
        }
        assert!(g.priority().is_err());

        let mut g = Guard::default();
        for _ in 0..5 {
            assert_eq!(g.window_update(), Ok(()));
        }
        assert!(g.window_update().is_err());
        let mut g = Guard::default();
        g.data_sent();
        for _ in 0..25 {
            assert_eq!(g.window_update(), Ok(()));
        }
        assert!(g.window_update().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn control_frames_are_limited_per_second() {
        let mut g = Guard::default();
        // The first budget, and its one refill.
        for _ in 0..2 * CONTROL_FRAMES_PER_SECOND {
            assert_eq!(g.control(), Ok(()));
        }
        assert!(g.control().is_err());
        // A second later the budget is back.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..CONTROL_FRAMES_PER_SECOND {
            assert_eq!(g.control(), Ok(()));
        }
        assert!(g.control().is_err());
        // At a steady rate under the budget, nothing is ever refused.
        let mut g = Guard::default();
        for _ in 0..10 {
            for _ in 0..CONTROL_FRAMES_PER_SECOND / 2 {
                assert_eq!(g.control(), Ok(()));
            }
            tokio::time::advance(Duration::from_millis(500)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn only_tiny_data_frames_spend_their_budget() {
        let mut g = Guard::default();
        for _ in 0..100_000 {
            assert_eq!(g.data(TINY_DATA), Ok(()));
        }
        for _ in 0..2 * TINY_DATA_FRAMES_PER_SECOND {
            assert_eq!(g.data(1), Ok(()));
        }
        assert!(g.data(0).is_err());
    }

    #[test]
    fn queued_control_frames_are_bounded_until_written() {
        let mut g = Guard::default();
        for _ in 0..MAX_QUEUED_CONTROL_FRAMES {
            assert_eq!(g.queued_control(), Ok(()));
        }
        assert!(g.queued_control().is_err());
        g.flushed();
        assert_eq!(g.queued_control(), Ok(()));
    }
}
