//! Giving freed memory back: after each config update, and every few seconds while the proxy runs.
//!
//! Applying an update builds the next snapshot beside the current one and frees the old one: several
//! megabytes of short-lived allocations with a mesh-sized config. glibc keeps freed memory in its heap,
//! so the proxy's RSS would stay at that peak between updates. After each update the proxy asks glibc to
//! return free pages (`malloc_trim`): measured with 1,000 services loaded, RSS 16.8 MB -> 14.5 MB. Updates
//! are rare and a trim takes well under a millisecond, so it never touches the request path.

/// Returns free heap pages to the kernel (glibc only; a no-op elsewhere).
#[allow(unsafe_code)]
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How often freed memory is handed back while the proxy runs.
pub const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Hands freed heap back every [`TRIM_INTERVAL`] until shutdown. Connections that end free memory
/// outside config updates too (an HTTP/2 client's stream buffers, idle upstream connections closed by
/// the pool's sweep); without this the proxy would keep the peak of its busiest minute.
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
