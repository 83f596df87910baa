//! What Volley reports of itself while it runs: the counters, delivery
//! latency and the busiest domains' pace, read from what the shards
//! publish without stopping them. The engine's own methods and the admin
//! server read through the same [`Monitor`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::context::Shared;
use crate::control::{MessageView, Steer};
use crate::metrics::{DomainRate, Stats};
use crate::queues::{Listed, Listing};

/// Latency figures of delivered transactions, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Transactions measured.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Slowest.
    pub max_us: u64,
}

/// A read-only view of a running engine; cheap to share with other threads.
#[derive(Clone)]
pub(crate) struct Monitor {
    shared: Arc<Shared>,
    started: Instant,
    shards: usize,
}

impl Monitor {
    pub(crate) fn new(shared: Arc<Shared>, shards: usize) -> Monitor {
        Monitor {
            shared,
            started: Instant::now(),
            shards,
        }
    }

    /// What the engine's threads share (the injection API queues through it).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The counters now.
    pub(crate) fn stats(&self) -> Stats {
        let mut stats = crate::metrics::sum(&self.shared.counters, self.shared.budget.held());
        stats.events_dropped = self.shared.events.as_ref().map_or(0, |e| e.dropped());
        stats
    }

    /// Delivery latency (microseconds) of every domain, merged over the
    /// shards; `None` before the first delivery.
    pub(crate) fn latency_histogram(&self) -> Option<Histogram<u64>> {
        let mut h = crate::metrics::latency_histogram();
        for l in &self.shared.latencies {
            l.merge_into(&mut h);
        }
        (!h.is_empty()).then_some(h)
    }

    /// [`Monitor::latency_histogram`] in three figures.
    pub(crate) fn latency(&self) -> LatencySummary {
        match self.latency_histogram() {
            Some(h) => LatencySummary {
                count: h.len(),
                p50_us: h.value_at_quantile(0.5),
                p99_us: h.value_at_quantile(0.99),
                max_us: h.max(),
            },
            None => LatencySummary::default(),
        }
    }

    /// The adaptive domains with the most recipients held, busiest first:
    /// each shard publishes its own ten every half second.
    pub(crate) fn rates(&self) -> Vec<DomainRate> {
        let mut all: Vec<DomainRate> = self.shared.rates.iter().flat_map(|b| b.read()).collect();
        all.sort_by(|a, b| b.queued.cmp(&a.queued).then(a.domain.cmp(&b.domain)));
        all
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub(crate) fn shards(&self) -> usize {
        self.shards
    }

    /// The memory budget in force.
    pub(crate) fn memory_budget(&self) -> u64 {
        self.shared.config.load().memory_budget
    }

    /// The journal's group commits so far, in durable mode.
    pub(crate) fn journal_commits(&self) -> Option<crate::journal::CommitStats> {
        self.shared.durable.as_ref().map(|d| d.commit_stats())
    }

    /// Whether the journal keeps the queue (durable mode).
    pub(crate) fn durable(&self) -> bool {
        self.shared.durable.is_some()
    }

    /// The domain queues `listing` asks for, asked of each shard over its
    /// channel.
    pub(crate) async fn queues(&self, listing: &Listing) -> Listed {
        self.shared.shard_lines.queues(listing).await
    }

    /// Steers `domain`'s queue on every shard (see [`Steer`]); `None`
    /// when a shard did not answer in time.
    pub(crate) async fn steer(&self, domain: &str, steer: Steer) -> Option<usize> {
        self.shared.shard_lines.steer(domain, steer).await
    }

    /// Message `id` as the shards know it (see [`MessageView`]).
    pub(crate) async fn message(&self, id: u64) -> Option<MessageView> {
        self.shared.shard_lines.message(id).await
    }

    /// Reads the configuration again from the engine's source and applies
    /// it, off the admin thread's loop (binding a listener may wait).
    pub(crate) async fn reload(&self) -> Result<Vec<crate::config::Change>, String> {
        let Some(source) = self.shared.config_source.lock().clone() else {
            return Err("this Volley has no configuration file to read again".into());
        };
        let (shared, shards) = (self.shared.clone(), self.shards);
        let done = tokio::task::spawn_blocking(move || {
            let config = source()?;
            crate::reload::apply(&shared, shards, config).map_err(|e| e.to_string())
        });
        done.await
            .map_err(|e| format!("the reload did not finish: {e}"))?
    }

    /// What a reload to `new` would change, against the configuration in
    /// force.
    pub(crate) fn changes_to(&self, new: &crate::config::Config) -> Vec<crate::config::Change> {
        crate::config::changes(&self.shared.config.load(), new, self.shards)
    }

    /// Asks every shard to stop accepting (a drain); logged once.
    pub(crate) fn request_drain(&self) {
        if !self.shared.drain.send_replace(true) {
            tracing::warn!(
                target: "volley",
                "draining: listeners closed; delivering what is queued, then stopping"
            );
        }
    }

    /// Whether a drain was asked for.
    pub(crate) fn draining(&self) -> bool {
        *self.shared.drain.borrow()
    }

    /// Whether a stop was asked for.
    pub(crate) fn stopping(&self) -> bool {
        *self.shared.stop.borrow()
    }
}
