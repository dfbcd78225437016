//! Giving the heap memory freed by a large userfaultfd's end back to the system.

/// Returns what glibc's malloc holds free, in every arena, to the system (`malloc_trim(0)`). The
/// end of a VM of thousands of regions frees megabytes, much of it in the arenas of the threads
/// that served it (its loop thread, the pool threads of its prefetch); glibc keeps free memory at
/// the top of an arena's heap only, and a long-lived server's RSS would stay near its peak.
pub fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own arenas under their locks.
    unsafe {
        libc::malloc_trim(0);
    }
}
