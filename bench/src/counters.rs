//! What each simulated domain accepted and refused, in total and per second.

use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Event counts of one domain over some span of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Connections accepted (greeted).
    pub connections: u64,
    /// Recipients whose message was accepted (`250` after the dot).
    pub accepted: u64,
    /// Connections refused with `421 4.7.0` (over the connection limit).
    pub refused_connections: u64,
    /// Recipients refused with `451 4.7.1` (over the rate limit).
    pub rate_limited: u64,
    /// Recipients refused with `451 4.7.1` by greylisting.
    pub greylisted: u64,
    /// Recipients refused with `550 5.1.1` (no such mailbox).
    pub unknown: u64,
    /// Transactions where the sink closed the connection instead of replying.
    pub dropped: u64,
    /// Connections reset at once because the receiver's hosts were down.
    pub reset_connections: u64,
}

impl Counts {
    /// Throttling replies: what a well-paced sender keeps near zero.
    pub fn throttled(&self) -> u64 {
        self.refused_connections + self.rate_limited
    }
}

impl AddAssign<&Counts> for Counts {
    fn add_assign(&mut self, o: &Counts) {
        self.connections += o.connections;
        self.accepted += o.accepted;
        self.refused_connections += o.refused_connections;
        self.rate_limited += o.rate_limited;
        self.greylisted += o.greylisted;
        self.unknown += o.unknown;
        self.dropped += o.dropped;
        self.reset_connections += o.reset_connections;
    }
}

/// A domain's counts: the total, one bucket per second since the start, and
/// the most connections it had open at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainCounters {
    /// Everything so far.
    pub total: Counts,
    /// `per_second[i]`: what happened in second `i` after the start.
    pub per_second: Vec<Counts>,
    /// Highest number of simultaneous accepted connections.
    pub peak_connections: u32,
}

/// Longest series kept (one hour): a bench that runs longer keeps counting
/// in the total and in the last bucket.
const MAX_SECONDS: usize = 3600;

impl DomainCounters {
    /// Applies `f` to the total and to the bucket of `second`.
    pub(crate) fn record(&mut self, second: usize, f: impl Fn(&mut Counts)) {
        f(&mut self.total);
        let second = second.min(MAX_SECONDS - 1);
        if self.per_second.len() <= second {
            self.per_second.resize(second + 1, Counts::default());
        }
        f(&mut self.per_second[second]);
    }
}
