//! Hands memory the daemon freed back to the operating system.
//!
//! Each refit and each Prometheus answer allocates a working set and frees it. glibc keeps
//! freed pages in its arenas for reuse, and with fits spread over time the arenas stay large:
//! at 500 policies (bench-load) 111 MiB of the process's 140 MiB were anonymous memory, against
//! about 51 MB live. `malloc_trim(0)` returns the free pages of every arena, not only the top of
//! the heap. It walks the free lists, so it runs on a timer, not after every fit.
//!
//! Blocks of 128 KiB and more are mapped on their own and unmapped when freed: glibc would
//! otherwise raise that threshold to the largest block freed so far (up to 32 MiB), and a fit's
//! matrices would then come from the arenas and stay there.

use std::time::Duration;

/// How often freed memory is handed back.
pub const TRIM_PERIOD: Duration = Duration::from_secs(10);

/// Hands freed memory back every `period`, forever.
pub async fn trim_freed_memory(period: Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A walk over the allocator's free lists: off the runtime's worker threads.
        let _ = tokio::task::spawn_blocking(trim).await;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns free pages to the kernel; it takes the allocator's own
    // locks and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Blocks at least this large are mapped on their own, and unmapped when freed.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Fix glibc's mmap threshold at `MMAP_THRESHOLD` (see the module's comment). Call once, at
/// start, before the allocations it is meant for.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn mmap_large_blocks() {
    // SAFETY: mallopt only changes the allocator's parameters, under its own lock.
    let accepted = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) };
    if accepted != 1 {
        tracing::warn!("glibc refused the mmap threshold; large freed blocks may stay resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn mmap_large_blocks() {}
