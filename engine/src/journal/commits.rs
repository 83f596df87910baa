//! What a journal writer's group commits cost: how many, how many failed,
//! and how long each took (its writes and its fsync), in fixed buckets.
//! The writer thread records; the metrics read from any thread.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the commit time buckets; one more bucket
/// holds the rest.
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Counters written by one writer thread.
#[derive(Debug, Default)]
pub(crate) struct CommitCounters {
    commits: AtomicU64,
    failed: AtomicU64,
    micros: AtomicU64,
    buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
}

/// A reading of the commit counters, or the sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CommitStats {
    /// Group commits (of bodies or of finished recipients), failed ones
    /// included.
    pub commits: u64,
    /// Commits that failed (their messages were refused with 452 4.3.1).
    pub failed: u64,
    /// Seconds spent in commits, in all.
    pub seconds: f64,
    /// Commits per bucket of [`COMMIT_BUCKETS`] (not cumulative), then
    /// those slower than the last bound.
    pub buckets: [u64; COMMIT_BUCKETS.len() + 1],
}

impl CommitCounters {
    /// One commit that took `took`.
    pub(crate) fn record(&self, took: Duration, ok: bool) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.micros.fetch_add(micros, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let i = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read(&self) -> CommitStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CommitStats {
            commits: g(&self.commits),
            failed: g(&self.failed),
            seconds: g(&self.micros) as f64 / 1e6,
            buckets: self.buckets.each_ref().map(g),
        }
    }
}

impl CommitStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &CommitStats) {
        self.commits += other.commits;
        self.failed += other.failed;
        self.seconds += other.seconds;
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_lands_in_the_first_bucket_that_holds_it() {
        let c = CommitCounters::default();
        c.record(Duration::from_micros(80), true);
        c.record(Duration::from_micros(600), true);
        c.record(Duration::from_secs(3), false);
        let s = c.read();
        assert_eq!((s.commits, s.failed), (3, 1));
        assert_eq!(s.buckets[0], 1);
        assert_eq!(s.buckets[3], 1, "600 us is under 1 ms");
        assert_eq!(
            s.buckets[COMMIT_BUCKETS.len()],
            1,
            "slower than the last bound"
        );
        assert!((s.seconds - 3.00068).abs() < 1e-9);
        let mut sum = s;
        sum.add(&s);
        assert_eq!(sum.commits, 6);
    }
}
