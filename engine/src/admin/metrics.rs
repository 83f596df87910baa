//! `GET /metrics`: the counters, gauges and latency of a running Volley
//! in the OpenMetrics text format (what Prometheus scrapes), made at
//! scrape time from one snapshot: nothing is kept or written for it
//! between scrapes. Per-domain series are the busiest domains only, the
//! ones the shards publish (ten each), so a million domains do not make a
//! million series.

use std::fmt::Write;

use hdrhistogram::Histogram;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::dlog::Category;
use crate::metrics::{DomainRate, Stats};
use crate::monitor::Monitor;

/// The Content-Type of what [`render`] returns.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds (seconds) of the delivery latency histogram's buckets.
const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Everything one scrape reports, read once.
#[derive(Debug)]
struct Scrape {
    stats: Stats,
    rates: Vec<DomainRate>,
    latency: Option<Histogram<u64>>,
    uptime_seconds: f64,
    budget: u64,
    shards: usize,
    journal: Option<crate::journal::CommitStats>,
}

/// The exposition text of `monitor` now.
pub(super) fn render(monitor: &Monitor) -> String {
    let scrape = Scrape {
        stats: monitor.stats(),
        rates: monitor.rates(),
        latency: monitor.latency_histogram(),
        uptime_seconds: monitor.uptime().as_secs_f64(),
        budget: monitor.memory_budget(),
        shards: monitor.shards(),
        journal: monitor.journal_commits(),
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        out.clear();
        let _ = writeln!(out, "# EOF");
    }
    out
}

fn counter(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One counter per category of failure, labelled with its name.
fn by_category(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    counts: &[u64; Category::COUNT],
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for c in Category::ALL {
        let labels = [("category", c.name())];
        ConstCounter::new(counts[c as usize]).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram from per-bucket counts (not cumulative; the last is the
/// overflow) under `bounds`.
fn histogram(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    bounds: &[f64],
    counts: &[u64],
    sum: f64,
) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain([f64::INFINITY])
        .zip(counts.iter().copied())
        .collect();
    let total = counts.iter().sum();
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<[(&str, &str); 0]>(sum, total, &buckets, None)
}

/// One gauge per busy domain, labelled with its name.
fn per_domain(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rates: &[DomainRate],
    value: impl Fn(&DomainRate) -> Option<f64>,
) -> std::fmt::Result {
    let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for r in rates {
        if let Some(v) = value(r) {
            let labels = [("domain", r.domain.as_str())];
            ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = &self.stats;
        counter(
            &mut e,
            "volley_messages_received",
            "Messages accepted from Composers",
            s.received,
        )?;
        counter(
            &mut e,
            "volley_recipients_received",
            "Recipients accepted from Composers",
            s.recipients_received,
        )?;
        counter(
            &mut e,
            "volley_delivered",
            "Recipients delivered (2xx from the MX host)",
            s.delivered,
        )?;
        counter(
            &mut e,
            "volley_deferred",
            "Deferrals (4xx or connection trouble)",
            s.deferred,
        )?;
        counter(
            &mut e,
            "volley_bounced",
            "Recipients bounced (5xx)",
            s.bounced,
        )?;
        counter(
            &mut e,
            "volley_expired",
            "Recipients given up after max attempts or max age",
            s.expired,
        )?;
        by_category(
            &mut e,
            "volley_bounced_by_category",
            "Recipients bounced, by the category of the reply",
            &s.bounced_by,
        )?;
        by_category(
            &mut e,
            "volley_expired_by_category",
            "Recipients expired, by the category of their last failure",
            &s.expired_by,
        )?;
        counter(
            &mut e,
            "volley_connections_opened",
            "Delivery connections opened",
            s.connections_opened,
        )?;
        counter(
            &mut e,
            "volley_dns_cache_hits",
            "MX lookups answered from a shard's cache",
            s.dns_cache_hits,
        )?;
        counter(
            &mut e,
            "volley_dns_cache_misses",
            "MX lookups that waited for DNS",
            s.dns_cache_misses,
        )?;
        counter(
            &mut e,
            "volley_dns_lookups",
            "Route lookups sent to DNS (on demand, refresh, prefetch)",
            s.dns_lookups,
        )?;
        if let Some(j) = &self.journal {
            counter(
                &mut e,
                "volley_journal_commits",
                "Group commits of the journal (write and fsync)",
                j.commits,
            )?;
            counter(
                &mut e,
                "volley_journal_commit_failures",
                "Group commits that failed (their messages refused)",
                j.failed,
            )?;
            histogram(
                &mut e,
                "volley_journal_commit_seconds",
                "Time of one group commit: its writes and its fsync",
                &crate::journal::COMMIT_BUCKETS,
                &j.buckets,
                j.seconds,
            )?;
        }
        counter(
            &mut e,
            "volley_dsn_sent",
            "Delivery status notifications queued to senders",
            s.dsn_sent,
        )?;
        counter(
            &mut e,
            "volley_tls_full_handshakes",
            "Delivery TLS sessions set up with a full handshake",
            s.tls_full_handshakes,
        )?;
        counter(
            &mut e,
            "volley_tls_resumed",
            "Delivery TLS sessions resumed",
            s.tls_resumed,
        )?;
        counter(
            &mut e,
            "volley_tls_failed",
            "Delivery TLS handshakes that failed",
            s.tls_failed,
        )?;
        counter(
            &mut e,
            "volley_ingest_tls_sessions",
            "Ingest sessions that set up TLS",
            s.ingest_tls,
        )?;
        counter(
            &mut e,
            "volley_events_dropped",
            "Event feed events dropped on a full queue",
            s.events_dropped,
        )?;
        let g = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        gauge(
            &mut e,
            "volley_queued_recipients",
            "Recipients held (waiting, retrying or in flight)",
            g(s.queued),
        )?;
        gauge(
            &mut e,
            "volley_connections_open",
            "Delivery connections open",
            g(s.connections_open),
        )?;
        gauge(
            &mut e,
            "volley_ingest_sessions",
            "Ingest sessions open",
            g(s.ingest_sessions),
        )?;
        gauge(
            &mut e,
            "volley_memory_held_bytes",
            "Bytes of messages held",
            g(s.held_bytes),
        )?;
        gauge(
            &mut e,
            "volley_memory_budget_bytes",
            "The memory budget",
            g(self.budget),
        )?;
        gauge(
            &mut e,
            "volley_shards",
            "Shards (one per core)",
            self.shards as i64,
        )?;
        let up = ConstGauge::new(self.uptime_seconds);
        up.encode(e.encode_descriptor(
            "volley_uptime_seconds",
            "Seconds since start",
            None,
            up.metric_type(),
        )?)?;
        let rates = &self.rates;
        per_domain(
            &mut e,
            "volley_domain_queued",
            "Recipients held for the domain",
            rates,
            |r| Some(r.queued as f64),
        )?;
        per_domain(
            &mut e,
            "volley_domain_connections",
            "Connections open or opening to the domain",
            rates,
            |r| Some(r.connections as f64),
        )?;
        per_domain(
            &mut e,
            "volley_domain_rate",
            "Messages per second the domain's pace allows",
            rates,
            |r| Some(r.rate.rate),
        )?;
        per_domain(
            &mut e,
            "volley_domain_ceiling",
            "Delivered rate at which the domain last pushed back",
            rates,
            |r| r.rate.ceiling,
        )?;
        per_domain(
            &mut e,
            "volley_domain_connection_limit",
            "Connections the domain's pace allows",
            rates,
            |r| Some(f64::from(r.rate.connection_limit)),
        )?;
        per_domain(
            &mut e,
            "volley_domain_latency_floor_seconds",
            "Lowest recent transaction latency",
            rates,
            |r| r.rate.latency_floor.map(|d| d.as_secs_f64()),
        )?;
        per_domain(
            &mut e,
            "volley_domain_suspended_seconds",
            "Time left in the domain's suspension",
            rates,
            |r| r.rate.suspended_for.map(|d| d.as_secs_f64()),
        )?;
        if let Some(h) = &self.latency {
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
            let mut below = 0u64;
            for bound in LATENCY_BUCKETS {
                let upto = h.count_between(0, (bound * 1e6) as u64);
                buckets.push((bound, upto.saturating_sub(below)));
                below = upto;
            }
            buckets.push((f64::INFINITY, h.len().saturating_sub(below)));
            let sum = h.mean() * h.len() as f64 / 1e6;
            let mut m = e.encode_descriptor(
                "volley_delivery_latency_seconds",
                "Remote transaction time of delivered messages",
                None,
                MetricType::Histogram,
            )?;
            m.encode_histogram::<[(&str, &str); 0]>(sum, h.len(), &buckets, None)?;
        }
        Ok(())
    }
}
