//! Giving memory back to the system after a backlog drains.
//!
//! glibc's allocator keeps the pages of freed memory in its arenas (one
//! per shard thread) for reuse: after a backlog of a million recipients
//! drains, the process would go on holding its high-water mark. A
//! `malloc_trim` returns the free pages; it walks every arena under its
//! lock, so it runs only when it pays: once the memory held for messages
//! has fallen well below its peak, and otherwise now and then to return
//! what connections and buffers freed. The decision is here, without
//! I/O; `volley serve`'s main thread (never a shard) makes the call.

use std::time::{Duration, Instant};

/// How far held memory must fall below its peak before a trim.
const DROP: u64 = 4 << 20;
/// The least time between two trims.
const MIN_GAP: Duration = Duration::from_secs(10);
/// A trim at least this often, whatever the held memory did.
const MAX_GAP: Duration = Duration::from_secs(60);

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
        let since = now.saturating_duration_since(self.last);
        let fell = self.peak.saturating_sub(held) >= DROP;
        if since >= MAX_GAP || (since >= MIN_GAP && fell) {
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
    fn a_trim_follows_a_drained_backlog_and_otherwise_comes_once_a_minute() {
        let t0 = Instant::now();
        let mut p = TrimPolicy::new(t0);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // A backlog builds: no trim.
        assert!(!p.observe(1 << 20, at(1)));
        assert!(!p.observe(100 << 20, at(5)));
        // It drains, but too soon after the start to trim again.
        assert!(!p.observe(1 << 20, at(9)));
        assert!(p.observe(1 << 20, at(11)));
        // Held memory steady: nothing until a minute has passed.
        assert!(!p.observe(2 << 20, at(30)));
        assert!(!p.observe(1 << 20, at(70)));
        assert!(p.observe(1 << 20, at(71)));
        // A small dip is not worth a trim.
        assert!(!p.observe(3 << 20, at(85)));
        assert!(!p.observe(0, at(90)));
    }
}
