//! Giving freed memory back: after each config update, and every few seconds while the proxy runs.
//!
//! Applying an update builds the next snapshot beside the current one and frees the old one: several
//! megabytes of short-lived allocations with a mesh-sized config. glibc keeps freed memory in its heap,
//! so the proxy's RSS would stay at that peak between updates. After each update the proxy asks glibc to
//! return free pages (`malloc_trim`): measured with 1,000 services loaded, RSS 16.8 MB -> 14.5 MB.
//!
//! A trim walks every arena of the heap under its lock, which can take milliseconds with a large or
//! fragmented one, so it never runs where it would hold up requests: [`release_freed`] only asks, and
//! one thread of its own (`weft-trim`) does the trimming. One thread rather than tokio's
//! `spawn_blocking`: the blocking pool's idle threads exit after 10 s, the trim interval, so a
//! periodic trim would often start a thread (and a task per trim); a burst of updates would queue a
//! trim each, where asks that come while one is pending here share it; and asking needs no runtime.
//! The thread is started by the first ask and then waits, parked, for the next; it allocates nothing.
//!
//! Except in a proxy of one worker (`--concurrency 1`), which runs on one thread and has no other. There a
//! thread of any kind costs every request: glibc takes the cancellable path of each `recv`, `writev` and
//! `epoll_wait` once a process has ever had a second thread, about 280 instructions per proxied request
//! (`bench/instructions`: 17,444 without the trim thread, 17,7xx with it, the rest the same). So a
//! one-thread proxy trims on its thread, between two polls ([`trim_on_the_caller`]): a pause of a
//! millisecond or so every 10 s and after each update, against a cost on every request.

/// Asks for free heap pages to be returned to the kernel (glibc's `malloc_trim`; a no-op elsewhere), and
/// returns at once: the `weft-trim` thread trims. Everything freed before the call is covered by a trim
/// that starts after it; asks that come while a trim is waiting to start share it.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if ON_THE_CALLER.load(std::sync::atomic::Ordering::Relaxed) {
        let start = std::time::Instant::now();
        trimmer::trim();
        tracing::debug!(micros = start.elapsed().as_micros() as u64, "heap trimmed");
    } else {
        trimmer::ask();
    }
}

/// Whether [`release_freed`] trims on its caller's thread (see the module's note).
static ON_THE_CALLER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes [`release_freed`] trim on the thread that calls it, rather than on a thread of its own: for a
/// process that runs on one thread, so that it stays one (see the module's note).
pub fn trim_on_the_caller(yes: bool) {
    ON_THE_CALLER.store(yes, std::sync::atomic::Ordering::Relaxed);
}

/// The `weft-trim` thread and how callers hand it work: counts of trims asked for and done, under a lock
/// held for a few instructions (never across a trim).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod trimmer {
    use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};

    struct Counts {
        /// Asks so far.
        asked: u64,
        /// The `asked` that the last finished trim started at: every ask up to it is served.
        done: u64,
    }

    static COUNTS: Mutex<Counts> = Mutex::new(Counts { asked: 0, done: 0 });
    /// Signalled when `asked` or `done` moves.
    static MOVED: Condvar = Condvar::new();
    static START: Once = Once::new();

    fn counts() -> MutexGuard<'static, Counts> {
        // Nothing panics while the lock is held, so a poisoned one holds consistent counts.
        COUNTS.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more ask and wakes the thread (starting it on the first); returns the ask's number.
    pub(super) fn ask() -> u64 {
        START.call_once(|| {
            let started = std::thread::Builder::new()
                .name("weft-trim".into())
                .stack_size(64 * 1024)
                .spawn(run);
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start the weft-trim thread, no memory is trimmed");
            }
        });
        let asked = {
            let mut c = counts();
            c.asked += 1;
            c.asked
        };
        MOVED.notify_all();
        asked
    }

    /// The thread: waits for an ask, trims, records what the trim served, and waits again.
    fn run() {
        loop {
            let serving = {
                let mut c = counts();
                while c.done == c.asked {
                    c = MOVED.wait(c).unwrap_or_else(PoisonError::into_inner);
                }
                c.asked
            };
            let start = std::time::Instant::now();
            trim();
            tracing::debug!(micros = start.elapsed().as_micros() as u64, "heap trimmed");
            counts().done = serving;
            MOVED.notify_all();
        }
    }

    pub(super) fn trim() {
        // SAFETY: `malloc_trim` has no precondition to uphold: it takes a size (how much free memory to
        // leave at the top of the main heap) and no pointer, locks each arena in turn and returns its
        // free pages; glibc documents it MT-Safe, so any thread may call it while others allocate (it
        // is not async-signal-safe, and no signal handler calls it). Run by
        // `a_trim_asked_for_runs_on_the_trim_thread`.
        #[allow(unsafe_code)]
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Waits up to `limit` for a trim that started after ask number `asked` to finish.
    #[cfg(test)]
    pub(super) fn served(asked: u64, limit: std::time::Duration) -> bool {
        let c = counts();
        let (c, _) = MOVED
            .wait_timeout_while(c, limit, |c| c.done < asked)
            .unwrap_or_else(PoisonError::into_inner);
        c.done >= asked
    }
}

/// How often freed memory is handed back while the proxy runs.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks for freed heap to be handed back every [`TRIM_INTERVAL`] until shutdown. Connections that end
/// free memory outside config updates too (an HTTP/2 client's stream buffers, idle upstream connections
/// closed by the pool's sweep); without this the proxy would keep the peak of its busiest minute. The
/// task only asks: the trims run on their own thread (see the module's note).
pub(crate) async fn trim_periodically(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            // Both branches are cancellation-safe: a tick or an observed watch value.
            _ = tick.tick() => release_freed(),
            _ = crate::stopped(&mut shutdown) => return,
        }
    }
}

/// The proxy's global allocator: the system's, except for blocks aligned above what `malloc` gives.
///
/// tokio aligns every task's cell to 128 bytes (a cache-line pair, against false sharing between
/// workers), so each connection's task is an over-aligned allocation. The system allocator serves those
/// through `posix_memalign`, which in glibc carves an aligned block out of a larger one and frees the
/// pieces on either side: about 1,400 instructions per connection with its `free`, where a `malloc` from
/// the per-thread cache is under 100 (`bench/instructions` with `WORKLOAD=http1-new-conn`). Here such a
/// block is a plain allocation `align` bytes longer, handed out from its first aligned address; the
/// distance back to the allocation's start is kept in the word before it. jemalloc and mimalloc make
/// aligned blocks cheap too, but each cost more memory than it saved CPU here (`bench/profiles/
/// 2026-12-01-weft-proxy-new-conn.md`).
pub struct Allocator;

/// The alignment of every `malloc` block (two words), on the 64-bit targets the proxy ships for. Blocks
/// aligned up to this go to the system allocator unchanged.
const MALLOC_ALIGN: usize = 16;
/// Above this, alignment is for pages (rare, and large): left to the system allocator.
const MAX_SHIFTED_ALIGN: usize = 4096;

// What the allocator assumes, checked as the crate compiles. First, 64-bit pointers: `MALLOC_ALIGN` is
// the alignment of malloc's blocks (two words) and of std's `System` for plain layouts only there; on
// 32-bit targets both are 8, and the plain layout `under` a shifted block, aligned to 16, would go to
// `posix_memalign`, the cost this allocator exists to avoid. Then, for soundness on any target: `shift`
// writes the distance as a `usize` just before a shifted block, in the `MALLOC_ALIGN` bytes or more it
// leaves there, so a `usize` must fit in `MALLOC_ALIGN` bytes, and be aligned wherever it lands.
const _: () = assert!(
    cfg!(target_pointer_width = "64"),
    "memory::Allocator assumes 64-bit pointers: malloc aligns to MALLOC_ALIGN (16) only there"
);
const _: () = assert!(
    std::mem::size_of::<usize>() <= MALLOC_ALIGN
        && MALLOC_ALIGN.is_multiple_of(std::mem::align_of::<usize>()),
    "the distance before a shifted block must fit in MALLOC_ALIGN bytes, aligned"
);

impl Allocator {
    /// Whether `layout` is served by a shifted plain allocation.
    #[inline]
    fn shifted(layout: std::alloc::Layout) -> bool {
        layout.align() > MALLOC_ALIGN && layout.align() <= MAX_SHIFTED_ALIGN
    }

    /// The plain layout under a shifted block: `align` bytes more, at the system's own alignment.
    #[inline]
    fn under(layout: std::alloc::Layout) -> Option<std::alloc::Layout> {
        let size = layout.size().checked_add(layout.align())?;
        std::alloc::Layout::from_size_align(size, MALLOC_ALIGN).ok()
    }

    /// The first `align`-aligned address past `base` (at least one `MALLOC_ALIGN` past it, so there is
    /// room for the word before it), with the distance written in that word.
    ///
    /// # Safety
    /// `base` is a live block of `under(layout)`.
    #[allow(unsafe_code)]
    #[inline]
    unsafe fn shift(base: *mut u8, layout: std::alloc::Layout) -> *mut u8 {
        if base.is_null() {
            return base;
        }
        let align = layout.align();
        // `base` is MALLOC_ALIGN-aligned and `align` a larger power of two, so the distance is a multiple
        // of MALLOC_ALIGN in [MALLOC_ALIGN, align], and `layout.size()` bytes still fit past it.
        let distance = align - (base as usize & (align - 1));
        // SAFETY: `add` needs the result inside the block: `distance <= align`, and the block is
        // `size + align` bytes. `write` needs a valid, aligned place for a `usize`: the word before the
        // returned address starts `distance - size_of::<usize>() >= 0` bytes into the block (the
        // compile-time check above keeps a usize within `MALLOC_ALIGN <= distance`), and is aligned
        // to a usize because the returned address is aligned to `align > MALLOC_ALIGN`.
        unsafe {
            let shifted = base.add(distance);
            shifted.cast::<usize>().sub(1).write(distance);
            shifted
        }
    }

    /// A block of `layout` from `system` (the system allocator's `alloc` or `alloc_zeroed`): as it is, or
    /// shifted inside a longer one.
    ///
    /// # Safety
    /// `layout` has a non-zero size.
    #[allow(unsafe_code)]
    #[inline]
    unsafe fn alloc_by(
        layout: std::alloc::Layout,
        system: unsafe fn(&std::alloc::System, std::alloc::Layout) -> *mut u8,
    ) -> *mut u8 {
        // SAFETY: `system` needs a non-zero size: `layout`'s is (the caller's promise) and `under`'s is
        // larger. `shift` needs a live block of `under(layout)`, or null, which it passes on: that is
        // what `system` returns for it.
        unsafe {
            if !Self::shifted(layout) {
                return system(&std::alloc::System, layout);
            }
            match Self::under(layout) {
                Some(under) => Self::shift(system(&std::alloc::System, under), layout),
                None => std::ptr::null_mut(),
            }
        }
    }

    /// The block `shift` returned `ptr` from.
    ///
    /// # Safety
    /// `ptr` came from `shift`.
    #[allow(unsafe_code)]
    #[inline]
    unsafe fn unshift(ptr: *mut u8) -> *mut u8 {
        // SAFETY: `shift` wrote the distance in the aligned usize just before `ptr`, inside the same
        // block, and `ptr - distance` is that block's start.
        unsafe {
            let distance = ptr.cast::<usize>().sub(1).read();
            ptr.sub(distance)
        }
    }
}

// SAFETY: every block is the system allocator's, or inside one of its blocks as `shift` describes; each
// is freed through the path that allocated it, decided by the layout the caller must pass back.
#[allow(unsafe_code)]
unsafe impl std::alloc::GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: forwarding the caller's non-zero layout.
        unsafe {
            Self::alloc_by(
                layout,
                <std::alloc::System as std::alloc::GlobalAlloc>::alloc,
            )
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            Self::alloc_by(
                layout,
                <std::alloc::System as std::alloc::GlobalAlloc>::alloc_zeroed,
            )
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` was allocated here with `layout`, so it took the same path; `under` succeeded
        // when it was allocated.
        unsafe {
            if !Self::shifted(layout) {
                return std::alloc::System.dealloc(ptr, layout);
            }
            if let Some(under) = Self::under(layout) {
                std::alloc::System.dealloc(Self::unshift(ptr), under);
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the system allocator's own blocks keep its `realloc`; a shifted block moves to a new
        // one (its distance would change), as `GlobalAlloc`'s default `realloc` does.
        unsafe {
            if !Self::shifted(layout) {
                return std::alloc::System.realloc(ptr, layout, new_size);
            }
            let Ok(new_layout) = std::alloc::Layout::from_size_align(new_size, layout.align())
            else {
                return std::ptr::null_mut();
            };
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout};

    /// The byte at `i` of a block filled by `fill`.
    fn pattern(i: usize) -> u8 {
        (i % 251) as u8
    }

    /// Blocks of every alignment (the system's below 17 and above 4096, shifted between) and of sizes
    /// below, at and above it: aligned, zeroed when asked, whole (written to the last byte), and moved
    /// by `realloc` growing and then shrinking with their contents kept and their alignment.
    #[test]
    #[allow(unsafe_code)]
    fn over_aligned_blocks_are_aligned_whole_and_survive_realloc() {
        let a = Allocator;
        // Keep several alive at once, so that blocks sit at different offsets from their bases.
        let mut live = Vec::new();
        for align in [1, 8, 16, 32, 64, 128, 256, 4096, 8192] {
            for size in [1, 7, 16, 100, 128, 1000, 5000] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: non-zero size; each block is filled within its size and freed with its layout.
                unsafe {
                    let p = if size % 2 == 0 {
                        a.alloc(layout)
                    } else {
                        a.alloc_zeroed(layout)
                    };
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    if size % 2 == 1 {
                        assert!((0..size).all(|i| *p.add(i) == 0), "zeroed {size} {align}");
                    }
                    for i in 0..size {
                        *p.add(i) = pattern(i);
                    }
                    live.push((p, layout));
                }
            }
        }
        for (p, layout) in live.iter_mut() {
            // SAFETY: each block is live with its layout; the grown block is checked then freed below.
            unsafe {
                let grown = a.realloc(*p, *layout, layout.size() * 3);
                assert!(!grown.is_null());
                assert_eq!(grown as usize % layout.align(), 0);
                let kept = (0..layout.size()).all(|i| *grown.add(i) == pattern(i));
                assert!(kept, "contents kept growing: {layout:?}");
                for i in layout.size()..layout.size() * 3 {
                    *grown.add(i) = pattern(i);
                }
                *p = grown;
                *layout =
                    Layout::from_size_align(layout.size() * 3, layout.align()).expect("layout");
            }
        }
        for (p, layout) in live.iter_mut() {
            let smaller = (layout.size() / 5).max(1);
            // SAFETY: each block is live with its layout; the shrunk one is checked then freed below.
            unsafe {
                let shrunk = a.realloc(*p, *layout, smaller);
                assert!(!shrunk.is_null());
                assert_eq!(shrunk as usize % layout.align(), 0);
                let kept = (0..smaller).all(|i| *shrunk.add(i) == pattern(i));
                assert!(kept, "contents kept shrinking: {layout:?} to {smaller}");
                *p = shrunk;
                *layout = Layout::from_size_align(smaller, layout.align()).expect("layout");
            }
        }
        for (p, layout) in live {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { a.dealloc(p, layout) };
        }
    }

    /// A block the system cannot give is null, never shifted; so is one whose plain layout would be
    /// too large to describe; and a `realloc` that fails leaves the block as it was.
    #[test]
    #[allow(unsafe_code)]
    fn failed_allocations_are_null_and_leave_blocks_alone() {
        let a = Allocator;
        // More than any address space: malloc returns null.
        let huge = Layout::from_size_align(1 << 62, 64).expect("layout");
        // The largest size aligned to 4096: adding the alignment overflows `isize`.
        let edge = Layout::from_size_align(isize::MAX as usize + 1 - 4096, 4096).expect("layout");
        // SAFETY: non-zero sizes; nothing is returned to free.
        unsafe {
            assert!(a.alloc(huge).is_null());
            assert!(a.alloc_zeroed(huge).is_null());
            assert!(a.alloc(edge).is_null());
        }
        let layout = Layout::from_size_align(100, 128).expect("layout");
        // SAFETY: a live block of `layout`, filled within its size; the failed `realloc` leaves it live,
        // and it is freed once with its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            for i in 0..100 {
                *p.add(i) = pattern(i);
            }
            assert!(a.realloc(p, layout, 1 << 62).is_null());
            assert!((0..100).all(|i| *p.add(i) == pattern(i)), "block kept");
            a.dealloc(p, layout);
        }
    }

    /// Each trim asked for is run, by the one `weft-trim` thread, not by the caller (which waits here
    /// only to see it done).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_asked_for_runs_on_the_trim_thread() {
        for _ in 0..3 {
            let asked = trimmer::ask();
            assert!(
                trimmer::served(asked, std::time::Duration::from_secs(30)),
                "trim {asked} never ran"
            );
        }
        let names = std::fs::read_dir("/proc/self/task")
            .expect("threads")
            // A thread of another test may end meanwhile.
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok());
        let trimmers = names.filter(|n| n.trim_end() == "weft-trim").count();
        assert_eq!(trimmers, 1, "one weft-trim thread");
    }
}
