//! The run report: throughput over time, end-to-end latency percentiles,
//! deliveries and throttling against capacity per receiver (a domain of its
//! own, or a provider with all of its domains: what one capacity serves),
//! the best rate those capacities allow, the engine's CPU
//! and memory, and the loss and duplicate verdict. Serialized as JSON; also
//! rendered as text ([`Report::summary`]) and HTML ([`Report::html`]).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::counters::{Counts, DomainCounters};
use crate::ledger::{Accounting, Delivery};
use crate::load::LoadSpec;
use crate::scenario::SimReceiver;

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Messages measured.
    pub count: u64,
    /// Mean.
    pub mean_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl LatencySummary {
    /// Percentiles of `samples_micros`.
    pub fn of(samples_micros: impl IntoIterator<Item = u64>) -> Self {
        let mut h = Histogram::<u64>::new_with_bounds(1, 24 * 3600 * 1_000_000, 3)
            .expect("static bounds are valid");
        for s in samples_micros {
            h.saturating_record(s.max(1));
        }
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What the Composer load did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComposerSummary {
    /// Where it sent.
    pub target: String,
    /// Messages attempted.
    pub offered: u64,
    /// Accepted by the server under test.
    pub accepted: u64,
    /// Refused by it with a 4xx (e.g. 452 back-pressure).
    pub refused_transient: u64,
    /// Refused by it with a 5xx.
    pub refused_permanent: u64,
    /// Sessions that broke (connection errors, protocol errors).
    pub session_errors: u64,
    /// Seconds from the first to the last injection.
    pub inject_secs: f64,
    /// Connections used.
    pub connections: u32,
    /// Whether commands were pipelined.
    pub pipelining: bool,
    /// "smtp" or "lmtp".
    pub protocol: String,
    /// Bytes of message data sent.
    pub bytes: u64,
}

/// The server under test's own resource use, read from /proc.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineUsage {
    /// User CPU seconds.
    pub cpu_user_secs: f64,
    /// System CPU seconds.
    pub cpu_system_secs: f64,
    /// Peak resident memory (VmHWM), bytes.
    pub peak_rss_bytes: u64,
}

/// One receiver's line in the report: a domain of its own, or a provider
/// for all of its domains together (they share its capacity, so their
/// deliveries and throttling count against it once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainReport {
    /// The domain, or the provider.
    pub name: String,
    /// A provider of many domains rather than a domain of its own.
    #[serde(default)]
    pub provider: bool,
    /// How many domains share this capacity (1 for a domain of its own).
    #[serde(default = "one")]
    pub domains: usize,
    /// Its connection limit at the start (0: none).
    pub max_connections: u32,
    /// Its rate limit at the start, recipients/s (0: none).
    pub max_rate: f64,
    /// Number of capacity changes during the run.
    pub capacity_changes: usize,
    /// Totals.
    pub counts: Counts,
    /// Most simultaneous connections seen.
    pub peak_connections: u32,
    /// Accepted recipients per second.
    pub accepted_per_second: Vec<u64>,
    /// Throttling replies (421 + 451 rate) per second.
    pub throttled_per_second: Vec<u64>,
    /// The rate limit in force during each second (0: none), so charts show
    /// deliveries against the capacity as it changed.
    #[serde(default)]
    pub max_rate_per_second: Vec<f64>,
}

fn one() -> usize {
    1
}

impl Default for DomainReport {
    fn default() -> Self {
        Self {
            name: String::new(),
            provider: false,
            domains: one(),
            max_connections: 0,
            max_rate: 0.0,
            capacity_changes: 0,
            counts: Counts::default(),
            peak_connections: 0,
            accepted_per_second: Vec::new(),
            throttled_per_second: Vec::new(),
            max_rate_per_second: Vec::new(),
        }
    }
}

/// A complete run report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// What was measured ("volley", "postfix", ... or the target address).
    pub label: String,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Seconds from the start to the last delivery or the end of waiting.
    pub wall_secs: f64,
    /// The load's settings.
    pub load: LoadSpec,
    /// What the Composer did.
    pub composer: ComposerSummary,
    /// Messages the server under test accepted, per second.
    pub injected_per_second: Vec<u64>,
    /// Messages accepted at the sinks, per second.
    pub delivered_per_second: Vec<u64>,
    /// Mean delivery rate over the delivering period (first to last delivery).
    pub delivered_rate: f64,
    /// Highest one-second delivery count.
    pub delivered_peak: u64,
    /// The best mean delivery rate the hidden rate limits at the start allow
    /// for this mix of recipients (see [`best_rate`]); `None` when no
    /// receiver that gets recipients has a rate limit.
    #[serde(default)]
    pub best_rate: Option<f64>,
    /// Injection (Composer) to acceptance at the sink.
    pub latency: LatencySummary,
    /// Per receiver (domain or provider), largest volume first.
    pub domains: Vec<DomainReport>,
    /// All receivers together.
    pub totals: Counts,
    /// CPU and memory of the server under test, when it ran as our child.
    pub engine: Option<EngineUsage>,
    /// CPU and memory of the bench itself (Composer, sinks, DNS), to show
    /// it was not the bottleneck.
    #[serde(default)]
    pub bench: Option<EngineUsage>,
    /// Loss and duplicates.
    pub accounting: Accounting,
    /// Waiting ended before every message reached an end.
    pub timed_out: bool,
}

/// Everything a report is made of.
#[derive(Debug)]
pub struct ReportInput<'a> {
    /// Scenario name.
    pub scenario: &'a str,
    /// What was measured.
    pub label: &'a str,
    /// Start of the run, microseconds since the epoch.
    pub start_micros: u64,
    /// End of the run, microseconds since the epoch.
    pub end_micros: u64,
    /// The load settings.
    pub load: &'a LoadSpec,
    /// The Composer's outcome.
    pub composer: ComposerSummary,
    /// Injection times (microseconds since the epoch) of accepted messages.
    pub injected_micros: &'a [u64],
    /// What the sinks kept.
    pub deliveries: &'a [Delivery],
    /// The scenario's receivers, for capacities and shares of the load.
    pub receivers: &'a [SimReceiver],
    /// The sinks' counters, same order as `receivers`.
    pub counters: &'a [DomainCounters],
    /// The engine's resource use.
    pub engine: Option<EngineUsage>,
    /// The bench process's own resource use.
    pub bench: Option<EngineUsage>,
    /// The accounting verdict.
    pub accounting: Accounting,
    /// Whether waiting gave up.
    pub timed_out: bool,
}

fn per_second(times_micros: impl Iterator<Item = u64>, start_micros: u64) -> Vec<u64> {
    let mut series: Vec<u64> = Vec::new();
    for t in times_micros {
        let s = (t.saturating_sub(start_micros) / 1_000_000) as usize;
        if s >= 24 * 3600 {
            continue;
        }
        if series.len() <= s {
            series.resize(s + 1, 0);
        }
        series[s] += 1;
    }
    series
}

impl Report {
    /// Builds the report.
    pub fn build(input: ReportInput<'_>) -> Report {
        let delivered_per_second = per_second(
            input.deliveries.iter().map(|d| d.accepted_micros),
            input.start_micros,
        );
        let first = input.deliveries.iter().map(|d| d.accepted_micros).min();
        let last = input.deliveries.iter().map(|d| d.accepted_micros).max();
        let delivered_rate = match (first, last) {
            (Some(a), Some(b)) if b > a => input.deliveries.len() as f64 / ((b - a) as f64 / 1e6),
            _ => 0.0,
        };
        let latency = LatencySummary::of(
            input
                .deliveries
                .iter()
                .filter_map(|d| d.sent_micros.map(|s| d.accepted_micros.saturating_sub(s))),
        );
        let mut totals = Counts::default();
        let mut domains: Vec<DomainReport> = input
            .receivers
            .iter()
            .zip(input.counters)
            .map(|(d, c)| {
                totals += &c.total;
                DomainReport {
                    name: d.name.clone(),
                    provider: d.provider,
                    domains: d.domains.len(),
                    max_connections: d.capacity.max_connections,
                    max_rate: d.capacity.max_rate,
                    capacity_changes: d.changes.len(),
                    counts: c.total,
                    peak_connections: c.peak_connections,
                    accepted_per_second: c.per_second.iter().map(|s| s.accepted).collect(),
                    throttled_per_second: c.per_second.iter().map(|s| s.throttled()).collect(),
                    max_rate_per_second: (0..c.per_second.len())
                        .map(|second| rate_at(d, second))
                        .collect(),
                }
            })
            .collect();
        domains.sort_by(|a, b| {
            b.counts
                .accepted
                .cmp(&a.counts.accepted)
                .then(a.name.cmp(&b.name))
        });
        Report {
            scenario: input.scenario.to_string(),
            label: input.label.to_string(),
            started_unix: input.start_micros / 1_000_000,
            wall_secs: input.end_micros.saturating_sub(input.start_micros) as f64 / 1e6,
            load: input.load.clone(),
            composer: input.composer,
            injected_per_second: per_second(
                input.injected_micros.iter().copied(),
                input.start_micros,
            ),
            delivered_peak: delivered_per_second.iter().copied().max().unwrap_or(0),
            best_rate: best_rate(input.receivers),
            delivered_per_second,
            delivered_rate,
            latency,
            domains,
            totals,
            engine: input.engine,
            bench: input.bench,
            accounting: input.accounting,
            timed_out: input.timed_out,
        }
    }

    /// Clean accounting and no timeout: the run proved what it measured.
    pub fn passed(&self) -> bool {
        self.accounting.is_clean() && !self.timed_out
    }

    /// A one-screen text summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.composer;
        let a = &self.accounting;
        let _ = writeln!(
            s,
            "volley bench: {} -> {} (scenario {}), {} connections, pipelining {}, {}",
            c.target,
            self.label,
            self.scenario,
            c.connections,
            if c.pipelining { "on" } else { "off" },
            c.protocol
        );
        let _ = writeln!(
            s,
            "  injected   {:>8} accepted of {} in {:.1} s ({:.0}/s); refused 4xx {} 5xx {}; session errors {}",
            c.accepted,
            c.offered,
            c.inject_secs,
            rate(c.accepted, c.inject_secs),
            c.refused_transient,
            c.refused_permanent,
            c.session_errors
        );
        let _ = writeln!(
            s,
            "  delivered  {:>8} at the sinks, {:.0}/s mean, {}/s peak, run {:.1} s{}",
            self.totals.accepted,
            self.delivered_rate,
            self.delivered_peak,
            self.wall_secs,
            if self.timed_out { " (TIMED OUT)" } else { "" }
        );
        if let Some(best) = self.best_rate {
            let _ = writeln!(
                s,
                "  capacity   best possible {best:.0}/s for this mix (hidden rate limits); mean delivered {:.0}% of it",
                self.delivered_rate / best * 100.0
            );
        }
        let l = &self.latency;
        let _ = writeln!(
            s,
            "  latency    p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  p99.9 {:.1} ms  max {:.1} ms (injection -> sink)",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        let t = &self.totals;
        let _ = writeln!(
            s,
            "  remote     421 conn-limit {}  451 rate {}  greylisted {}  550 unknown {}  dropped {}",
            t.refused_connections, t.rate_limited, t.greylisted, t.unknown, t.dropped
        );
        match &self.engine {
            Some(e) => {
                let _ = writeln!(
                    s,
                    "  engine     cpu {:.2} s user + {:.2} s system, peak RSS {:.1} MiB",
                    e.cpu_user_secs,
                    e.cpu_system_secs,
                    e.peak_rss_bytes as f64 / (1024.0 * 1024.0)
                );
            }
            None => {
                let _ = writeln!(s, "  engine     (not our child: no CPU/memory figures)");
            }
        }
        if let Some(b) = &self.bench {
            let _ = writeln!(
                s,
                "  bench      cpu {:.2} s user + {:.2} s system (Composer, sinks, DNS together)",
                b.cpu_user_secs, b.cpu_system_secs
            );
        }
        let _ = writeln!(
            s,
            "  accounting sent {} delivered {} expected-bounces {} lost {} duplicates {} unexpected {} corrupted {}  => {}",
            a.sent,
            a.delivered,
            a.expected_bounces,
            a.lost,
            a.duplicates,
            a.unexpected,
            a.corrupted,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        if self.timed_out && a.lost > 0 {
            let _ = writeln!(
                s,
                "  (the run timed out: \"lost\" counts messages not delivered by then, possibly still queued)"
            );
        }
        if !a.lost_examples.is_empty() {
            let _ = writeln!(s, "  lost e.g.  {}", a.lost_examples.join(" "));
        }
        if !a.duplicate_examples.is_empty() {
            let _ = writeln!(s, "  dup e.g.   {}", a.duplicate_examples.join(" "));
        }
        let _ = writeln!(
            s,
            "  {:<24} {:>10} {:>9} {:>5} {:>6} {:>5} {:>5} {:>5} {:>5}",
            "domain", "capacity", "accepted", "421", "451", "grey", "550", "drop", "peak"
        );
        let shown = 10;
        for d in self.domains.iter().take(shown) {
            let _ = writeln!(
                s,
                "  {:<24} {:>10} {:>9} {:>5} {:>6} {:>5} {:>5} {:>5} {:>5}",
                truncate(&receiver_label(d), 24),
                capacity_text(d),
                d.counts.accepted,
                d.counts.refused_connections,
                d.counts.rate_limited,
                d.counts.greylisted,
                d.counts.unknown,
                d.counts.dropped,
                d.peak_connections
            );
        }
        if self.domains.len() > shown {
            let _ = writeln!(
                s,
                "  ... {} more (see the JSON or HTML report)",
                self.domains.len() - shown
            );
        }
        s
    }
}

/// The best mean delivery rate `receivers`' rate limits at the start allow
/// when recipients spread over them by weight: each receiver takes its share
/// of the load at its own limit at most, so the one that needs longest for
/// its share sets the pace of the whole run. A provider is one receiver with
/// one limit for all of its domains; counting its limit once per domain
/// would promise many times the rate it gives. Receivers without a limit do
/// not bound it; `None` when none that gets recipients has one.
pub fn best_rate(receivers: &[SimReceiver]) -> Option<f64> {
    let total: f64 = receivers.iter().map(|r| r.weight).sum();
    receivers
        .iter()
        .filter(|r| r.weight > 0.0 && r.capacity.max_rate > 0.0)
        .map(|r| r.capacity.max_rate / (r.weight / total))
        .min_by(f64::total_cmp)
}

/// A report line's name: a provider's says how many domains it stands for.
pub(crate) fn receiver_label(d: &DomainReport) -> String {
    if d.provider {
        format!("{} ({} domains)", d.name, d.domains)
    } else {
        d.name.clone()
    }
}

/// The rate limit of `d` in force at `second` after the start.
fn rate_at(d: &SimReceiver, second: usize) -> f64 {
    let t = std::time::Duration::from_secs(second as u64);
    d.changes
        .iter()
        .take_while(|(at, _)| *at <= t)
        .last()
        .map(|(_, c)| c.max_rate)
        .unwrap_or(d.capacity.max_rate)
}

pub(crate) fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

pub(crate) fn capacity_text(d: &DomainReport) -> String {
    let conns = if d.max_connections > 0 {
        d.max_connections.to_string()
    } else {
        "-".into()
    };
    let rate = if d.max_rate > 0.0 {
        format!("{:.0}/s", d.max_rate)
    } else {
        "-".into()
    };
    let star = if d.capacity_changes > 0 { "*" } else { "" };
    format!("{conns},{rate}{star}")
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Two reports side by side, with the change from the first to the second.
pub fn compare(a: &Report, b: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<28} {:>16} {:>16} {:>9}",
        "",
        short(&a.label, &a.scenario),
        short(&b.label, &b.scenario),
        "change"
    );
    let rows: [(&str, f64, f64, bool); 13] = [
        (
            "injected/s",
            rate(a.composer.accepted, a.composer.inject_secs),
            rate(b.composer.accepted, b.composer.inject_secs),
            true,
        ),
        (
            "delivered/s (mean)",
            a.delivered_rate,
            b.delivered_rate,
            true,
        ),
        (
            "delivered/s (peak)",
            a.delivered_peak as f64,
            b.delivered_peak as f64,
            true,
        ),
        ("run seconds", a.wall_secs, b.wall_secs, false),
        ("latency p50 ms", a.latency.p50_ms, b.latency.p50_ms, false),
        ("latency p99 ms", a.latency.p99_ms, b.latency.p99_ms, false),
        ("latency max ms", a.latency.max_ms, b.latency.max_ms, false),
        (
            "421 conn-limit replies",
            a.totals.refused_connections as f64,
            b.totals.refused_connections as f64,
            false,
        ),
        (
            "451 rate replies",
            a.totals.rate_limited as f64,
            b.totals.rate_limited as f64,
            false,
        ),
        ("engine CPU s", cpu(a), cpu(b), false),
        ("engine peak RSS MiB", rss(a), rss(b), false),
        (
            "lost",
            a.accounting.lost as f64,
            b.accounting.lost as f64,
            false,
        ),
        (
            "duplicates",
            a.accounting.duplicates as f64,
            b.accounting.duplicates as f64,
            false,
        ),
    ];
    for (name, x, y, higher_better) in rows {
        let change = if x != 0.0 {
            let pct = (y - x) / x * 100.0;
            let better = if higher_better { pct > 0.0 } else { pct < 0.0 };
            format!(
                "{pct:+.0}%{}",
                if pct.abs() < 0.5 {
                    ""
                } else if better {
                    " +"
                } else {
                    " -"
                }
            )
        } else if y == 0.0 {
            "=".into()
        } else {
            "new".into()
        };
        let _ = writeln!(s, "{name:<28} {x:>16.1} {y:>16.1} {change:>9}");
    }
    let _ = writeln!(
        s,
        "{:<28} {:>16} {:>16}",
        "verdict",
        if a.passed() { "PASS" } else { "FAIL" },
        if b.passed() { "PASS" } else { "FAIL" }
    );
    s
}

fn short(label: &str, scenario: &str) -> String {
    let t = format!("{label}/{scenario}");
    truncate(&t, 16).to_string()
}

fn cpu(r: &Report) -> f64 {
    r.engine
        .map(|e| e.cpu_user_secs + e.cpu_system_secs)
        .unwrap_or(0.0)
}

fn rss(r: &Report) -> f64 {
    r.engine
        .map(|e| e.peak_rss_bytes as f64 / 1048576.0)
        .unwrap_or(0.0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::capacity::Capacity;

    pub(crate) fn sample() -> Report {
        let receivers = vec![SimReceiver {
            name: "a.test".into(),
            provider: false,
            domains: vec![0],
            weight: 1.0,
            addrs: vec![std::net::Ipv4Addr::new(127, 0, 0, 2)],
            capacity: Capacity {
                max_connections: 5,
                max_rate: 100.0,
                ..Capacity::default()
            },
            changes: Vec::new(),
        }];
        let mut counters = DomainCounters::default();
        counters.record(0, |c| c.accepted += 2);
        counters.record(1, |c| c.rate_limited += 1);
        let start = 1_000_000_000;
        let deliveries: Vec<Delivery> = [(10_000u64, 1_000_000u64), (20_000, 2_500_000)]
            .iter()
            .enumerate()
            .map(|(i, (lat, at))| Delivery {
                id: Some(format!("r.{i}")),
                recipient: format!("user{i}@a.test"),
                domain: "a.test".into(),
                digest: 0,
                size: 10,
                sent_micros: Some(start + at - lat),
                accepted_micros: start + at,
            })
            .collect();
        Report::build(ReportInput {
            scenario: "t",
            label: "volley",
            start_micros: start,
            end_micros: start + 3_000_000,
            load: &LoadSpec::default(),
            composer: ComposerSummary {
                offered: 2,
                accepted: 2,
                inject_secs: 1.0,
                ..ComposerSummary::default()
            },
            injected_micros: &[start, start + 10],
            deliveries: &deliveries,
            receivers: &receivers,
            counters: &[counters],
            engine: None,
            bench: None,
            accounting: Accounting {
                sent: 2,
                delivered: 2,
                ..Accounting::default()
            },
            timed_out: false,
        })
    }

    #[test]
    fn builds_series_percentiles_and_totals() {
        let r = sample();
        assert_eq!(r.delivered_per_second, vec![0, 1, 1]);
        assert_eq!(r.injected_per_second, vec![2]);
        assert_eq!(r.latency.count, 2);
        assert!((r.latency.max_ms - 20.0).abs() < 0.1, "{:?}", r.latency);
        assert!((r.latency.p50_ms - 10.0).abs() < 0.1);
        assert_eq!(r.totals.accepted, 2);
        assert_eq!(r.domains[0].throttled_per_second, vec![0, 1]);
        assert_eq!(r.domains[0].max_rate_per_second, vec![100.0, 100.0]);
        assert!(r.passed());
        let text = r.summary();
        assert!(text.contains("PASS"), "{text}");
        assert!(text.contains("5,100/s"), "{text}");
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn a_provider_is_one_line_and_its_rate_limit_counts_once() {
        let scenario = crate::Scenario::builtin("provider-shared").unwrap();
        let receivers = scenario.receivers().unwrap();
        // isp.test: 10% of the load at 50/s; the provider: 90% at 200/s for
        // its 40 domains together, the slower: 200 / 0.9. Were its limit
        // counted once per domain, isp.test would set the pace at 500/s.
        let best = best_rate(&receivers).unwrap();
        assert!((best - 2000.0 / 9.0).abs() < 1e-6, "{best}");

        let mut isp = DomainCounters::default();
        isp.record(0, |c| c.accepted += 30);
        let mut provider = DomainCounters::default();
        provider.record(0, |c| {
            c.accepted += 200;
            c.refused_connections += 3;
            c.rate_limited += 7;
        });
        let r = Report::build(ReportInput {
            scenario: "provider-shared",
            label: "volley",
            start_micros: 0,
            end_micros: 1_000_000,
            load: &scenario.load,
            composer: ComposerSummary::default(),
            injected_micros: &[],
            deliveries: &[],
            receivers: &receivers,
            counters: &[isp, provider],
            engine: None,
            bench: None,
            accounting: Accounting::default(),
            timed_out: false,
        });
        assert_eq!(r.best_rate, Some(best));
        assert_eq!(r.domains.len(), 2);
        let line = &r.domains[0];
        assert_eq!(
            (line.name.as_str(), line.provider, line.domains),
            ("workspace", true, 40)
        );
        assert_eq!((line.max_connections, line.max_rate), (10, 200.0));
        assert_eq!(r.totals.accepted, 230);
        assert_eq!(r.totals.throttled(), 10);
        let text = r.summary();
        assert!(text.contains("workspace (40 domains)"), "{text}");
        assert!(text.contains("best possible 222/s"), "{text}");
        // No limit at all: no best rate to speak of.
        let mut unlimited = receivers.clone();
        unlimited.iter_mut().for_each(|r| r.capacity.max_rate = 0.0);
        assert_eq!(best_rate(&unlimited), None);
    }

    #[test]
    fn compare_shows_both_and_the_change() {
        let a = sample();
        let mut b = sample();
        b.accounting.lost = 3;
        b.delivered_rate = a.delivered_rate * 2.0;
        let text = compare(&a, &b);
        assert!(text.contains("+100% +"), "{text}");
        assert!(text.contains("FAIL"), "{text}");
    }
}
