//! Counters for the operator: what came in, what went out, what waits.
//!
//! Counters are relaxed atomics, one set per shard (and one for the threads
//! that are not shards), summed when read; the delivery latency
//! histogram is one per shard, of every domain, merged when asked for.

use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::dlog::Category;

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Messages accepted from Composers.
    pub received: u64,
    /// Recipients accepted from Composers.
    pub recipients_received: u64,
    /// Recipients delivered (2xx from the remote side).
    pub delivered: u64,
    /// Deferrals (4xx or connection trouble); a recipient may count several.
    pub deferred: u64,
    /// Recipients bounced (5xx, or a domain that accepts no mail).
    pub bounced: u64,
    /// Recipients given up after max attempts or max age.
    pub expired: u64,
    /// Recipients held now (waiting, retrying or in flight).
    pub queued: u64,
    /// Most recipients held at once.
    pub peak_queued: u64,
    /// Delivery connections open now.
    pub connections_open: u64,
    /// Most delivery connections open at once.
    pub peak_connections: u64,
    /// Ingest sessions open now.
    pub ingest_sessions: u64,
    /// Bytes of messages held.
    pub held_bytes: u64,
    /// Delivery TLS sessions set up with a full handshake.
    pub tls_full_handshakes: u64,
    /// Delivery TLS sessions resumed from an earlier one.
    pub tls_resumed: u64,
    /// Delivery TLS handshakes that failed.
    pub tls_failed: u64,
    /// Ingest sessions that set up TLS (STARTTLS or `smtps`).
    pub ingest_tls: u64,
    /// Delivery status notifications (bounce messages) queued to senders.
    pub dsn_sent: u64,
    /// Events the feed dropped because its queue was full.
    pub events_dropped: u64,
    /// Delivery connections opened so far.
    pub connections_opened: u64,
    /// MX lookups asked of the shards' resolvers and answered from their
    /// caches.
    pub dns_cache_hits: u64,
    /// MX lookups that had to wait for DNS.
    pub dns_cache_misses: u64,
    /// Route lookups sent to DNS (on demand, refresh or prefetch).
    pub dns_lookups: u64,
    /// Recipients bounced, by the category of the reply that bounced them
    /// (in [`Category::ALL`] order).
    #[serde(skip)]
    pub(crate) bounced_by: [u64; Category::COUNT],
    /// Recipients expired, by the category of their last failure.
    #[serde(skip)]
    pub(crate) expired_by: [u64; Category::COUNT],
}

/// One writer's counters: each shard has its own (and the threads that
/// are not shards share one more), so no counter's cache line is written
/// by two cores on the hot path; a snapshot sums them ([`sum`]).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) received: AtomicU64,
    pub(crate) recipients_received: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) bounced: AtomicU64,
    pub(crate) expired: AtomicU64,
    queued: AtomicU64,
    peak_queued: AtomicU64,
    connections_open: AtomicU64,
    peak_connections: AtomicU64,
    pub(crate) ingest_sessions: AtomicU64,
    pub(crate) tls_full_handshakes: AtomicU64,
    pub(crate) tls_resumed: AtomicU64,
    pub(crate) tls_failed: AtomicU64,
    pub(crate) ingest_tls: AtomicU64,
    pub(crate) dsn_sent: AtomicU64,
    connections_opened: AtomicU64,
    /// Copied from the shard's resolver by its housekeeping.
    pub(crate) dns_cache_hits: AtomicU64,
    pub(crate) dns_cache_misses: AtomicU64,
    pub(crate) dns_lookups: AtomicU64,
    bounced_by: [AtomicU64; Category::COUNT],
    expired_by: [AtomicU64; Category::COUNT],
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn queued_add(&self, n: u64) {
        let now = self.queued.fetch_add(n, Ordering::Relaxed) + n;
        self.peak_queued.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn queued_sub(&self, n: u64) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// A recipient bounced (`expired` false) or expired, for `category`.
    pub(crate) fn given_up(&self, expired: bool, category: Option<Category>) {
        let (total, by) = match expired {
            true => (&self.expired, &self.expired_by),
            false => (&self.bounced, &self.bounced_by),
        };
        bump(total);
        bump(&by[category.unwrap_or(Category::Other) as usize]);
    }

    pub(crate) fn connection_opened(&self) {
        bump(&self.connections_opened);
        let now = self.connections_open.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_connections.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, held_bytes: u64) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            received: g(&self.received),
            recipients_received: g(&self.recipients_received),
            delivered: g(&self.delivered),
            deferred: g(&self.deferred),
            bounced: g(&self.bounced),
            expired: g(&self.expired),
            queued: g(&self.queued),
            peak_queued: g(&self.peak_queued),
            connections_open: g(&self.connections_open),
            peak_connections: g(&self.peak_connections),
            ingest_sessions: g(&self.ingest_sessions),
            held_bytes,
            tls_full_handshakes: g(&self.tls_full_handshakes),
            tls_resumed: g(&self.tls_resumed),
            tls_failed: g(&self.tls_failed),
            ingest_tls: g(&self.ingest_tls),
            dsn_sent: g(&self.dsn_sent),
            events_dropped: 0,
            connections_opened: g(&self.connections_opened),
            dns_cache_hits: g(&self.dns_cache_hits),
            dns_cache_misses: g(&self.dns_cache_misses),
            dns_lookups: g(&self.dns_lookups),
            bounced_by: self.bounced_by.each_ref().map(g),
            expired_by: self.expired_by.each_ref().map(g),
        }
    }
}

/// The counters of every writer added up. A peak is the sum of each
/// writer's peak: at least the true peak, and what a shard held at most.
pub(crate) fn sum(parts: &[Counters], held_bytes: u64) -> Stats {
    let mut total = Stats {
        held_bytes,
        ..Stats::default()
    };
    for p in parts {
        let s = p.snapshot(0);
        total.received += s.received;
        total.recipients_received += s.recipients_received;
        total.delivered += s.delivered;
        total.deferred += s.deferred;
        total.bounced += s.bounced;
        total.expired += s.expired;
        total.queued += s.queued;
        total.peak_queued += s.peak_queued;
        total.connections_open += s.connections_open;
        total.peak_connections += s.peak_connections;
        total.ingest_sessions += s.ingest_sessions;
        total.tls_full_handshakes += s.tls_full_handshakes;
        total.tls_resumed += s.tls_resumed;
        total.tls_failed += s.tls_failed;
        total.ingest_tls += s.ingest_tls;
        total.dsn_sent += s.dsn_sent;
        total.connections_opened += s.connections_opened;
        total.dns_cache_hits += s.dns_cache_hits;
        total.dns_cache_misses += s.dns_cache_misses;
        total.dns_lookups += s.dns_lookups;
        for c in 0..Category::COUNT {
            total.bounced_by[c] += s.bounced_by[c];
            total.expired_by[c] += s.expired_by[c];
        }
    }
    total
}

/// One destination's pace as its shard last published it (every half
/// second): what the periodic summary lists for the busiest domains.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DomainRate {
    /// The domain.
    pub domain: String,
    /// Recipients held for it (waiting, retrying or in flight).
    pub queued: usize,
    /// Its connections open or opening.
    pub connections: usize,
    /// Its controller's limits, rate and latencies.
    pub rate: crate::rate::RateSnapshot,
}

impl std::fmt::Display for DomainRate {
    /// `bigmail.test q=120 open=6 steady conns=8 rate=400.0/s ...`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} q={} open={} {}",
            self.domain, self.queued, self.connections, self.rate
        )
    }
}

/// The busiest adaptive domains of one shard, replaced on each publish.
#[derive(Debug, Default)]
pub(crate) struct RateBoard {
    top: Mutex<Vec<DomainRate>>,
}

impl RateBoard {
    pub(crate) fn publish(&self, top: Vec<DomainRate>) {
        *self.top.lock() = top;
    }

    pub(crate) fn read(&self) -> Vec<DomainRate> {
        self.top.lock().clone()
    }
}

/// Delivery latency (microseconds) of every domain together, one per
/// shard. Not one per domain: a histogram of this range and precision is
/// 26 KiB, and a bulk sender meets hundreds of thousands of domains a day,
/// so a map of them would grow without bound; a domain's own latency is
/// its rate controller's (floor and recent, in the admin API's rates).
#[derive(Debug)]
pub(crate) struct Latencies {
    all: Mutex<Histogram<u64>>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            all: Mutex::new(latency_histogram()),
        }
    }
}

/// An empty histogram of delivery latencies: 1 µs to an hour, two
/// significant figures.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant bounds are valid")
}

impl Latencies {
    pub(crate) fn record(&self, micros: u64) {
        self.all.lock().saturating_record(micros.max(1));
    }

    /// Adds this shard's histogram into `into`.
    pub(crate) fn merge_into(&self, into: &mut Histogram<u64>) {
        let _ = into.add(&*self.all.lock());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sums_every_writers_counters() {
        let parts: Vec<Counters> = (0..3).map(|_| Counters::default()).collect();
        bump(&parts[0].delivered);
        bump(&parts[2].delivered);
        bump(&parts[1].dsn_sent);
        parts[0].queued_add(4);
        parts[1].queued_add(2);
        parts[0].queued_sub(1);
        let s = sum(&parts, 99);
        assert_eq!(s.delivered, 2);
        assert_eq!(s.dsn_sent, 1);
        assert_eq!(s.queued, 5);
        assert_eq!(s.peak_queued, 6, "the sum of each writer's peak");
        assert_eq!(s.held_bytes, 99);
    }

    #[test]
    fn peaks_follow_the_highest_level_seen() {
        let c = Counters::default();
        c.queued_add(5);
        c.queued_sub(3);
        c.queued_add(1);
        let s = c.snapshot(0);
        assert_eq!((s.queued, s.peak_queued), (3, 5));
        c.connection_opened();
        c.connection_opened();
        c.connection_closed();
        let s = c.snapshot(0);
        assert_eq!((s.connections_open, s.peak_connections), (1, 2));
    }

    #[test]
    fn latencies_merge_over_shards_in_a_histogram_of_fixed_size() {
        let shards = [Latencies::default(), Latencies::default()];
        shards[0].record(1000);
        shards[0].record(3000);
        shards[1].record(0);
        let before = shards[1].all.lock().distinct_values();
        for micros in (0..10_000u64).map(|i| i * 360_000) {
            shards[1].record(micros);
        }
        let mut h = latency_histogram();
        for l in &shards {
            l.merge_into(&mut h);
        }
        assert_eq!(h.len(), 10_003);
        assert_eq!(h.min(), 1, "a zero is recorded as the least value");
        assert_eq!(shards[1].all.lock().distinct_values(), before);
    }
}
