//! Gives the heap's free pages back to the OS once many instance actors have stopped.
//!
//! The operator runs with one malloc arena (`MALLOC_ARENA_MAX=1`, set by the Deployment, the
//! chart and the scale benchmark): memory an actor frees when it hibernates is reused by the
//! next actors and steps, but glibc returns to the OS only what lies at the top of the heap, so
//! the RSS of a fleet that went to rest stays near its peak. `malloc_trim` releases every free
//! page, wherever it lies.

use std::time::Duration;

/// How long after an actor hibernates the heap is trimmed: the actors of a fleet at rest
/// hibernate in bursts, and one trim after a burst covers all of it.
pub const TRIM_AFTER: Duration = Duration::from_secs(5);

/// Releases the heap's free pages to the OS, off the async threads (it walks the whole heap).
pub async fn give_back() {
    let _ = tokio::task::spawn_blocking(trim).await;
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only reads and changes the allocator's own bookkeeping, under its
    // lock; it takes no pointer from us.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
