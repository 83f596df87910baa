//! Giving memory back to the system after a backlog drains.
//!
//! glibc's allocator keeps the pages of freed memory in its arenas (one
//! per shard thread) for reuse: after a backlog of a million recipients
//! drains, the process would go on holding its high-water mark, and even
//! a quiet process drifts up by what connections and buffers freed. A
//! `malloc_trim` returns the free pages, but it walks each arena's free
//! chunks with that arena's lock held, so a shard that allocates meanwhile
//! waits: half a millisecond to a millisecond per MiB of fragmented heap
//! on the development machine (`scripts/trim-cost.sh`: 3 MiB 0.1 ms,
//! 27 MiB 8-15 ms, 55 MiB 21-31 ms, 546 MiB 284-573 ms). Hence two rules:
//!
//! - after a backlog drains (the memory held for messages fell well below
//!   its peak), one trim: it returns the backlog's pages, whatever it costs;
//! - otherwise a trim every 10 s, only while little is held for
//!   messages: the heap is then small and a trim costs a few milliseconds
//!   at most; a large queue is left alone, its free chunks are reused by
//!   the next messages.
//!
//! The decision is here, without I/O; `volley serve`'s main thread (never
//! a shard) makes the call.

use std::time::{Duration, Instant};

/// How far held memory must fall below its peak before a trim.
const DROP: u64 = 4 << 20;
/// The least time between two trims, and the period of the small ones.
const GAP: Duration = Duration::from_secs(10);
/// Held memory up to which a trim every [`GAP`] is cheap enough.
const SMALL: u64 = 8 << 20;

/// When to trim, from the memory held for messages over time.
#[derive(Debug)]
pub(crate) struct TrimPolicy {
    peak: u64,
    last: Instant,
}

impl TrimPolicy {
    pub(crate) fn new(now: Instant) -> Self {
        Self { peak: 0, last: now }
    }

    /// Whether to trim now, with `held` bytes held for messages.
    pub(crate) fn observe(&mut self, held: u64, now: Instant) -> bool {
        self.peak = self.peak.max(held);
        if now.saturating_duration_since(self.last) < GAP {
            return false;
        }
        let drained = self.peak.saturating_sub(held) >= DROP;
        if drained || held <= SMALL {
            self.peak = held;
            self.last = now;
            return true;
        }
        false
    }
}

/// Returns the allocator's free pages to the system.
pub(crate) fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it
    // takes no pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_heap_is_trimmed_every_gap_and_a_large_one_only_once_it_drains() {
        let t0 = Instant::now();
        let mut p = TrimPolicy::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Little held: a trim every 10 s, not sooner.
        assert!(!p.observe(1 << 20, at(5)));
        assert!(p.observe(1 << 20, at(10)));
        assert!(!p.observe(2 << 20, at(15)));
        assert!(p.observe(2 << 20, at(20)));
        // A backlog builds: held is large, no trim however long it stays.
        assert!(!p.observe(9 << 20, at(30)));
        assert!(!p.observe(100 << 20, at(35)));
        assert!(!p.observe(400 << 20, at(40)));
        assert!(!p.observe(400 << 20, at(200)));
        // It drains part way: the drop is worth a trim, though still large.
        assert!(p.observe(300 << 20, at(201)));
        // Steady at that level: nothing more.
        assert!(!p.observe(300 << 20, at(260)));
        // It drains: at once, the last trim being long ago.
        assert!(p.observe(1 << 20, at(261)));
        // A backlog that comes and goes within the gap waits for it.
        assert!(!p.observe(100 << 20, at(263)));
        assert!(!p.observe(1 << 20, at(265)));
        assert!(p.observe(1 << 20, at(271)));
    }
}
