//! The soak: a long run of the simulated internet with faults injected over
//! time and the server under test killed now and then, planned and judged
//! here without I/O (offsets from the start, samples handed in), so the
//! driver that starts processes and sends signals only carries it out.
//!
//! Four faults, one per receiver, in every cycle: a receiver that drops the
//! connection after the data, one whose MX hosts go down, one whose DNS
//! stops answering, one whose capacity halves. Each lasts `fault_for` and
//! starts in its own fifth of the cycle, so one fault's queue has drained
//! (or not: that is what is judged) before the next begins.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::error::ScenarioError;
use crate::ledger::{Accounting, Delivery};
use crate::scenario::{ChangeEntry, Scenario};

/// How long the queue must have been back at its steady level before a
/// memory sample counts: the freed backlog's pages go back to the system
/// at the server's next trim (every 10 s while little is held).
pub const SOAK_SETTLE: Duration = Duration::from_secs(20);

/// How a soak runs.
#[derive(Debug, Clone)]
pub struct SoakSettings {
    /// How long the Composer sends.
    pub duration: Duration,
    /// One round of the four faults.
    pub cycle: Duration,
    /// How long each fault lasts (at most a fifth of the cycle).
    pub fault_for: Duration,
    /// A kill -9 of the server this often; zero: never.
    pub kill_every: Duration,
    /// The Composer's rate as a share of the receivers' total capacity.
    pub load_share: f64,
    /// Samples this soon after a (re)start of the server do not count for
    /// memory flatness (nor do those taken while a fault's backlog is
    /// queued, or within [`SOAK_SETTLE`] after: memory is compared with the
    /// queue settled at its steady level).
    pub warm_up: Duration,
    /// Most a recipient's first acceptance may lie from a kill for its
    /// second delivery to count as within the documented window (the
    /// journal's finish commit, plus the sink's reply delay: a sink stamps
    /// a delivery with the moment its 250 goes out).
    pub duplicate_window: Duration,
    /// Most the server's own heap may spread after warm-up, as a share
    /// of its smallest sample: the anonymous part of the resident set less
    /// what is held for messages. The rest of the resident set is the
    /// executable's pages and mapped files, which a process restarted on a
    /// warm page cache maps in different amounts; the messages' memory
    /// follows the queue (a second more or less of the load is a third of
    /// a small heap) and is bounded by the memory budget on its own. A
    /// leak or growth shows in what is left.
    pub memory_spread: f64,
}

impl Default for SoakSettings {
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(30 * 60),
            cycle: Duration::from_secs(5 * 60),
            fault_for: Duration::from_secs(30),
            kill_every: Duration::from_secs(3 * 60),
            load_share: 0.7,
            warm_up: Duration::from_secs(30),
            duplicate_window: Duration::from_millis(100),
            memory_spread: 0.10,
        }
    }
}

/// What goes wrong in a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// A fifth of the transactions end with a dropped connection after
    /// the data (the message is not kept).
    DropAfterData,
    /// Every connection to the receiver's MX hosts is reset.
    HostsDown,
    /// The DNS server does not answer for the domain.
    DnsTimeout,
    /// The receiver takes half its usual rate.
    CapacityHalved,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FaultKind::DropAfterData => "drops after data",
            FaultKind::HostsDown => "MX hosts down",
            FaultKind::DnsTimeout => "DNS times out",
            FaultKind::CapacityHalved => "capacity halved",
        })
    }
}

/// One fault, from `from` to `until` after the start.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultWindow {
    /// What goes wrong.
    pub kind: FaultKind,
    /// The domain it happens to.
    pub domain: String,
    /// When it starts.
    pub from: Duration,
    /// When it ends.
    pub until: Duration,
    /// When its domain's queue must have drained: by the same fault's
    /// start in the next cycle (or the end of the load).
    pub drain_by: Duration,
    /// Recipients of its domain that may still be queued once drained:
    /// about one second of the domain's load.
    pub drained_at_most: u64,
}

/// What the driver does at a point in time (capacity faults are scenario
/// changes that the sinks apply themselves).
#[derive(Debug, Clone, PartialEq)]
pub enum SoakEvent {
    /// Start (`true`) or end a DNS outage of a domain.
    DnsOutage {
        /// The domain.
        domain: String,
        /// Whether it starts.
        on: bool,
    },
    /// kill -9 the server, then start it again on the same journal.
    Kill,
}

/// The faults and kills of one soak, and the Composer's rate.
#[derive(Debug, Clone)]
pub struct SoakPlan {
    /// Every fault, in time order.
    pub faults: Vec<FaultWindow>,
    /// What the driver does, in time order.
    pub events: Vec<(Duration, SoakEvent)>,
    /// The Composer's rate, messages per second.
    pub rate: f64,
}

/// The fault each of the scenario's first four domains gets.
const KINDS: [FaultKind; 4] = [
    FaultKind::DropAfterData,
    FaultKind::HostsDown,
    FaultKind::DnsTimeout,
    FaultKind::CapacityHalved,
];

impl SoakPlan {
    /// Plans a soak of `scenario`: its first four `[[domain]]` entries
    /// get one fault each per cycle.
    pub fn new(scenario: &Scenario, settings: &SoakSettings) -> Result<Self, ScenarioError> {
        if scenario.domain.len() < KINDS.len() {
            return Err(ScenarioError::Invalid(format!(
                "a soak needs at least {} [[domain]] entries (one per fault), not {}",
                KINDS.len(),
                scenario.domain.len()
            )));
        }
        let slot = settings.cycle / 5;
        if settings.fault_for.is_zero() || settings.fault_for > slot {
            return Err(ScenarioError::Invalid(format!(
                "a fault must last more than nothing and at most a fifth of the cycle ({slot:?}), not {:?}",
                settings.fault_for
            )));
        }
        if !(settings.load_share > 0.0 && settings.load_share <= 1.0) {
            return Err(ScenarioError::Invalid(format!(
                "the load share must be in (0, 1], not {}",
                settings.load_share
            )));
        }
        let mut faults = Vec::new();
        let mut start = Duration::ZERO;
        while start + slot <= settings.duration {
            for (i, kind) in KINDS.iter().enumerate() {
                let from = start + slot * (i as u32 + 1) - slot / 2;
                let until = from + settings.fault_for;
                if from + slot > settings.duration {
                    break;
                }
                let domain = &scenario.domain[i];
                faults.push(FaultWindow {
                    kind: *kind,
                    domain: domain.name.to_ascii_lowercase(),
                    from,
                    until,
                    drain_by: (from + settings.cycle).min(settings.duration),
                    // Recipients are spread in proportion to capacity.
                    drained_at_most: (settings.load_share * domain.capacity.max_rate)
                        .ceil()
                        .max(1.0) as u64,
                });
            }
            start += settings.cycle;
        }
        let mut events = Vec::new();
        for f in faults.iter().filter(|f| f.kind == FaultKind::DnsTimeout) {
            for (at, on) in [(f.from, true), (f.until, false)] {
                events.push((
                    at,
                    SoakEvent::DnsOutage {
                        domain: f.domain.clone(),
                        on,
                    },
                ));
            }
        }
        if !settings.kill_every.is_zero() {
            let mut at = settings.kill_every;
            while at < settings.duration {
                events.push((at, SoakEvent::Kill));
                at += settings.kill_every;
            }
        }
        events.sort_by_key(|(at, _)| *at);
        Ok(Self {
            faults,
            events,
            rate: settings.load_share * total_rate(scenario),
        })
    }

    /// Adds the capacity faults to `scenario` as changes at their times
    /// (a fault's end restores the field it changed).
    pub fn apply(&self, scenario: &mut Scenario) {
        let base: HashMap<String, crate::capacity::Capacity> = scenario
            .domain
            .iter()
            .map(|d| (d.name.to_ascii_lowercase(), d.capacity.clone()))
            .collect();
        for f in &self.faults {
            let Some(cap) = base.get(&f.domain) else {
                continue;
            };
            let (on, off): (toml::Value, toml::Value) = match f.kind {
                FaultKind::DropAfterData => (0.2.into(), cap.drop_share.into()),
                FaultKind::HostsDown => (true.into(), false.into()),
                FaultKind::CapacityHalved => ((cap.max_rate / 2.0).into(), cap.max_rate.into()),
                FaultKind::DnsTimeout => continue,
            };
            let field = match f.kind {
                FaultKind::DropAfterData => "drop_share",
                FaultKind::HostsDown => "down",
                _ => "max_rate",
            };
            for (at, value) in [(f.from, on), (f.until, off)] {
                let mut set = toml::Table::new();
                set.insert(field.into(), value);
                scenario.change.push(ChangeEntry {
                    at,
                    domain: f.domain.clone(),
                    set,
                });
            }
        }
    }

    /// The faults in force at `at`.
    pub fn active(&self, at: Duration) -> impl Iterator<Item = &FaultWindow> {
        self.faults
            .iter()
            .filter(move |f| f.from <= at && at < f.until)
    }
}

/// Recipients per second the scenario's receivers take in all (a group's
/// capacity is per domain).
fn total_rate(scenario: &Scenario) -> f64 {
    let domains: f64 = scenario.domain.iter().map(|d| d.capacity.max_rate).sum();
    let groups: f64 = scenario
        .group
        .iter()
        .map(|g| f64::from(g.count) * g.capacity.max_rate)
        .sum();
    let providers: f64 = scenario.provider.iter().map(|p| p.capacity.max_rate).sum();
    domains + groups + providers
}

/// One minute of the soak, as the driver saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MinuteRow {
    /// Minutes since the start (1 for the first).
    pub minute: u32,
    /// Largest resident set sampled in the minute, bytes.
    pub rss_max: u64,
    /// Largest anonymous part of it (the heap) sampled in the minute.
    pub anon_max: u64,
    /// Recipients queued in the server at the minute's end (`None`: it
    /// did not answer, e.g. restarting).
    pub queued: Option<u64>,
    /// Messages the server accepted from the Composer in the minute.
    pub accepted: u64,
    /// Recipients the sinks accepted in the minute.
    pub delivered: u64,
    /// Throttling replies the sinks gave in the minute.
    pub throttled: u64,
    /// Times the server was killed and started in the minute.
    pub restarts: u32,
    /// The faults that were in force during the minute.
    pub faults: Vec<String>,
}

impl MinuteRow {
    /// Throttling replies per delivery.
    pub fn throttling(&self) -> f64 {
        if self.delivered == 0 {
            0.0
        } else {
            self.throttled as f64 / self.delivered as f64
        }
    }

    /// The row as the soak prints it, under [`MinuteRow::HEADER`].
    pub fn line(&self) -> String {
        format!(
            "{:>4} {:>8.1} {:>5.1} {:>8} {:>9} {:>9} {:>9} {:>7.2}% {:>3} {}",
            self.minute,
            self.rss_max as f64 / 1_048_576.0,
            self.anon_max as f64 / 1_048_576.0,
            self.queued.map_or("-".to_string(), |q| q.to_string()),
            self.accepted,
            self.delivered,
            self.throttled,
            100.0 * self.throttling(),
            self.restarts,
            self.faults.join(", ")
        )
    }

    /// The heading of the per-minute table.
    pub const HEADER: &'static str =
        " min  RSS MiB  heap   queued  accepted delivered throttled  share  kill faults";
}

/// A recipient delivered more than once: when its first copy and the
/// copy after it were accepted (microseconds since the epoch), one per
/// extra copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateCopy {
    /// The recipient it was delivered to.
    pub recipient: String,
    /// The first copy's acceptance.
    pub first: u64,
    /// This extra copy's acceptance.
    pub again: u64,
}

/// Every extra copy of a recipient delivered more than once, by the time
/// its first copy was accepted.
pub fn duplicate_copies(deliveries: &[Delivery]) -> Vec<DuplicateCopy> {
    let mut by_key: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for d in deliveries {
        if let Some(id) = &d.id {
            by_key
                .entry((id.as_str(), d.recipient.as_str()))
                .or_default()
                .push(d.accepted_micros);
        }
    }
    let mut out = Vec::new();
    for ((_, recipient), times) in by_key.iter_mut().filter(|(_, t)| t.len() > 1) {
        times.sort_unstable();
        out.extend(times[1..].iter().map(|&again| DuplicateCopy {
            recipient: recipient.to_string(),
            first: times[0],
            again,
        }));
    }
    out.sort_unstable_by_key(|d| (d.first, d.again));
    out
}

/// One sample of the server's memory, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// The resident set.
    pub rss: u64,
    /// Its anonymous part (the heap).
    pub anon: u64,
    /// What was held for messages then (bodies and recipients, as the
    /// memory budget counts them).
    pub held: u64,
}

impl MemorySample {
    /// The server's own heap: the heap less what is held for messages,
    /// the figure the soak judges.
    pub fn own_heap(&self) -> u64 {
        self.anon.saturating_sub(self.held)
    }
}

/// What the driver measured, to be judged.
#[derive(Debug, Clone, Default)]
pub struct SoakMeasures {
    /// The final accounting of every accepted message.
    pub accounting: Accounting,
    /// See [`duplicate_copies`].
    pub duplicates: Vec<DuplicateCopy>,
    /// When each kill was sent, microseconds since the epoch.
    pub kills: Vec<u64>,
    /// Memory samples taken after warm-up with the queue at its steady
    /// level.
    pub memory_after_warm_up: Vec<MemorySample>,
    /// Each fault, with how long after its end its domain's queue was
    /// back to [`FaultWindow::drained_at_most`] (`None`: not by its
    /// [`FaultWindow::drain_by`]).
    pub drains: Vec<(FaultWindow, Option<Duration>)>,
    /// Recipients still queued when the run ended.
    pub queued_at_end: Option<u64>,
}

/// The soak's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakVerdict {
    /// Accepted and never delivered nor expected to bounce.
    pub lost: u64,
    /// Extra copies delivered.
    pub duplicates: u64,
    /// Of those, whose first copy was not accepted near a kill.
    pub duplicates_outside_window: u64,
    /// Farthest a duplicated recipient's first acceptance lay from a kill.
    pub farthest_duplicate: Option<Duration>,
    /// Some of the duplicates outside the window: their copies' times
    /// from the nearest kill.
    pub outside_examples: Vec<String>,
    /// Deliveries nobody sent, or with a changed body.
    pub unexpected_or_corrupted: u64,
    /// Largest resident set after warm-up over the smallest, minus one.
    pub memory_spread: Option<f64>,
    /// The same of its anonymous part (the heap).
    pub heap_spread: Option<f64>,
    /// The same of the heap less what was held for messages: what is
    /// judged.
    pub own_heap_spread: Option<f64>,
    /// Faults whose queue had not drained in time.
    pub undrained: Vec<String>,
    /// Per kind of fault, the longest its domain's queue took to drain
    /// after the fault ended.
    pub slowest_drains: Vec<(FaultKind, Duration)>,
    /// Recipients still queued at the end.
    pub queued_at_end: Option<u64>,
    /// Every check held.
    pub passed: bool,
}

impl SoakVerdict {
    /// Judges `m` against `settings`.
    pub fn judge(m: &SoakMeasures, settings: &SoakSettings) -> Self {
        let window = settings.duplicate_window.as_micros() as u64;
        let nearest_kill = |t: u64| m.kills.iter().copied().min_by_key(|&k| k.abs_diff(t));
        let mut outside = 0;
        let mut farthest: Option<u64> = None;
        let mut outside_examples = Vec::new();
        for d in &m.duplicates {
            let kill = nearest_kill(d.first);
            let distance = kill.map(|k| k.abs_diff(d.first));
            if let Some(x) = distance {
                farthest = Some(farthest.map_or(x, |f| f.max(x)));
            }
            if distance.is_none_or(|x| x > window) {
                outside += 1;
                if outside_examples.len() < 5 {
                    let from_kill = |t: u64| {
                        kill.map_or("no kill".into(), |k| {
                            format!("{:+.1} ms", (t as f64 - k as f64) / 1e3)
                        })
                    };
                    outside_examples.push(format!(
                        "{}: first copy {}, again {} from the nearest kill",
                        d.recipient,
                        from_kill(d.first),
                        from_kill(d.again)
                    ));
                }
            }
        }
        let samples = &m.memory_after_warm_up;
        let of = |f: fn(&MemorySample) -> u64| spread(&samples.iter().map(f).collect::<Vec<_>>());
        let memory_spread = of(|s| s.rss);
        let heap_spread = of(|s| s.anon);
        let own_heap_spread = of(MemorySample::own_heap);
        let undrained: Vec<String> = m
            .drains
            .iter()
            .filter(|(_, d)| d.is_none())
            .map(|(f, _)| {
                format!(
                    "{} at {} ({}-{} s): not drained by {} s",
                    f.kind,
                    f.domain,
                    f.from.as_secs(),
                    f.until.as_secs(),
                    f.drain_by.as_secs()
                )
            })
            .collect();
        let mut slowest_drains: Vec<(FaultKind, Duration)> = Vec::new();
        for (f, d) in &m.drains {
            let Some(d) = *d else { continue };
            match slowest_drains.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, worst)) => *worst = (*worst).max(d),
                None => slowest_drains.push((f.kind, d)),
            }
        }
        let a = &m.accounting;
        let passed = a.lost == 0
            && a.unexpected == 0
            && a.corrupted == 0
            && outside == 0
            && own_heap_spread.is_some_and(|s| s <= settings.memory_spread)
            && undrained.is_empty()
            && m.queued_at_end == Some(0);
        Self {
            lost: a.lost,
            duplicates: a.duplicates,
            duplicates_outside_window: outside,
            farthest_duplicate: farthest.map(Duration::from_micros),
            outside_examples,
            unexpected_or_corrupted: a.unexpected + a.corrupted,
            memory_spread,
            heap_spread,
            own_heap_spread,
            undrained,
            slowest_drains,
            queued_at_end: m.queued_at_end,
            passed,
        }
    }
}

impl fmt::Display for SoakVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "lost {}, duplicates {} ({} outside the window{}), unexpected or corrupted {}",
            self.lost,
            self.duplicates,
            self.duplicates_outside_window,
            self.farthest_duplicate.map_or(String::new(), |d| format!(
                "; farthest first copy {:.1} ms from a kill",
                d.as_secs_f64() * 1e3
            )),
            self.unexpected_or_corrupted
        )?;
        for e in &self.outside_examples {
            writeln!(f, "  outside the window: {e}")?;
        }
        let percent =
            |s: Option<f64>| s.map_or("not measured".into(), |s| format!("{:.1}%", 100.0 * s));
        writeln!(
            f,
            "memory after warm-up, queue settled at its steady level: heap beyond the messages' spread {} (heap {}, resident set {})",
            percent(self.own_heap_spread),
            percent(self.heap_spread),
            percent(self.memory_spread)
        )?;
        let drains: Vec<String> = self
            .slowest_drains
            .iter()
            .map(|(k, d)| format!("{k} {:.0} s", d.as_secs_f64()))
            .collect();
        writeln!(
            f,
            "queue after each fault: {}; longest drain after the fault ended: {}",
            if self.undrained.is_empty() {
                "drained every time".to_string()
            } else {
                format!("not drained: {}", self.undrained.join("; "))
            },
            if drains.is_empty() {
                "none measured".to_string()
            } else {
                drains.join(", ")
            }
        )?;
        writeln!(
            f,
            "queued at the end: {}",
            self.queued_at_end
                .map_or("no answer".into(), |q| q.to_string())
        )?;
        write!(f, "{}", if self.passed { "PASSED" } else { "FAILED" })
    }
}

/// Largest of `samples` over the smallest, minus one.
fn spread(samples: &[u64]) -> Option<f64> {
    match (samples.iter().min(), samples.iter().max()) {
        (Some(&lo), Some(&hi)) if lo > 0 => Some(hi as f64 / lo as f64 - 1.0),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soak() -> Scenario {
        Scenario::builtin("soak").unwrap()
    }

    #[test]
    fn each_cycle_has_one_fault_per_receiver_in_its_own_slot() {
        let settings = SoakSettings::default();
        let plan = SoakPlan::new(&soak(), &settings).unwrap();
        // 30 minutes of 5-minute cycles: 6 x 4 faults.
        assert_eq!(plan.faults.len(), 24);
        let first: Vec<_> = plan.faults[..4]
            .iter()
            .map(|f| {
                (
                    f.kind,
                    f.from.as_secs(),
                    f.until.as_secs(),
                    f.drain_by.as_secs(),
                    f.drained_at_most,
                )
            })
            .collect();
        assert_eq!(
            first,
            [
                (FaultKind::DropAfterData, 30, 60, 330, 105),
                (FaultKind::HostsDown, 90, 120, 390, 70),
                (FaultKind::DnsTimeout, 150, 180, 450, 56),
                (FaultKind::CapacityHalved, 210, 240, 510, 49),
            ]
        );
        assert_eq!(plan.faults[4].from, Duration::from_secs(330));
        // The last cycle's faults must drain by the end of the load.
        assert_eq!(plan.faults[23].drain_by, Duration::from_secs(1800));
        // Kills at 3, 6, ... 27 minutes; DNS on and off six times.
        let kills = plan
            .events
            .iter()
            .filter(|(_, e)| *e == SoakEvent::Kill)
            .count();
        assert_eq!(kills, 9);
        assert_eq!(plan.events.len(), 9 + 12);
        assert!(plan.events.windows(2).all(|w| w[0].0 <= w[1].0));
        // 70% of 150 + 100 + 80 + 70 + 50 x 2.
        assert!((plan.rate - 350.0).abs() < 1e-9, "{}", plan.rate);
        assert_eq!(plan.active(Duration::from_secs(100)).count(), 1);
        assert_eq!(plan.active(Duration::from_secs(65)).count(), 0);
    }

    #[test]
    fn capacity_faults_become_changes_that_restore_the_field() {
        let mut scenario = soak();
        let settings = SoakSettings {
            duration: Duration::from_secs(300),
            ..SoakSettings::default()
        };
        SoakPlan::new(&scenario, &settings)
            .unwrap()
            .apply(&mut scenario);
        assert_eq!(scenario.change.len(), 6);
        let receivers = scenario.receivers().unwrap();
        let corp = receivers.iter().find(|r| r.name == "corp.test").unwrap();
        let rates: Vec<_> = corp
            .changes
            .iter()
            .map(|(at, c)| (at.as_secs(), c.max_rate))
            .collect();
        assert_eq!(rates, [(210, 35.0), (240, 70.0)]);
        let web = receivers.iter().find(|r| r.name == "webmail.test").unwrap();
        assert!(web.changes[0].1.down && !web.changes[1].1.down);
        let big = receivers.iter().find(|r| r.name == "bigmail.test").unwrap();
        assert_eq!(big.changes[0].1.drop_share, 0.2);
        assert_eq!(big.changes[1].1.drop_share, 0.0);
    }

    #[test]
    fn a_plan_refuses_faults_that_overlap_and_scenarios_too_small() {
        let long = SoakSettings {
            fault_for: Duration::from_secs(61),
            ..SoakSettings::default()
        };
        assert!(SoakPlan::new(&soak(), &long).is_err());
        let mut small = soak();
        small.domain.truncate(3);
        assert!(SoakPlan::new(&small, &SoakSettings::default()).is_err());
    }

    fn delivery(id: &str, at: u64) -> Delivery {
        Delivery {
            id: Some(id.into()),
            recipient: "a@x.test".into(),
            domain: "x.test".into(),
            digest: 0,
            size: 0,
            sent_micros: None,
            accepted_micros: at,
        }
    }

    #[test]
    fn duplicates_are_judged_by_their_first_copys_distance_from_a_kill() {
        let deliveries = [
            delivery("1", 1_000_000),
            delivery("1", 1_500_000),
            delivery("2", 5_000_000),
            delivery("3", 9_000_000),
            delivery("3", 9_100_000),
        ];
        let copies = duplicate_copies(&deliveries);
        assert_eq!(
            copies,
            [
                DuplicateCopy {
                    recipient: "a@x.test".into(),
                    first: 1_000_000,
                    again: 1_500_000
                },
                DuplicateCopy {
                    recipient: "a@x.test".into(),
                    first: 9_000_000,
                    again: 9_100_000
                }
            ]
        );
        let settings = SoakSettings::default();
        let mut m = SoakMeasures {
            duplicates: copies,
            kills: vec![1_020_000],
            memory_after_warm_up: samples(&[(100, 100, 0), (100, 105, 0)]),
            queued_at_end: Some(0),
            ..SoakMeasures::default()
        };
        let v = SoakVerdict::judge(&m, &settings);
        assert_eq!(v.duplicates_outside_window, 1);
        assert_eq!(
            v.outside_examples,
            ["a@x.test: first copy +7980.0 ms, again +8080.0 ms from the nearest kill"]
        );
        assert!(!v.passed);
        m.kills.push(9_050_000);
        let v = SoakVerdict::judge(&m, &settings);
        assert_eq!(v.duplicates_outside_window, 0);
        assert_eq!(v.farthest_duplicate, Some(Duration::from_millis(50)));
        assert!(v.passed, "{v}");
    }

    /// Memory samples from (resident set, heap, held) triples.
    fn samples(of: &[(u64, u64, u64)]) -> Vec<MemorySample> {
        of.iter()
            .map(|&(rss, anon, held)| MemorySample { rss, anon, held })
            .collect()
    }

    #[test]
    fn memory_growth_an_undrained_queue_or_a_loss_fails_the_soak() {
        let settings = SoakSettings::default();
        let good = SoakMeasures {
            memory_after_warm_up: samples(&[(100, 100, 0), (150, 109, 0)]),
            queued_at_end: Some(0),
            ..SoakMeasures::default()
        };
        assert!(SoakVerdict::judge(&good, &settings).passed);
        let grown = SoakMeasures {
            memory_after_warm_up: samples(&[(100, 100, 0), (150, 111, 0)]),
            ..good.clone()
        };
        assert!(!SoakVerdict::judge(&grown, &settings).passed);
        // What is held for messages follows the queue and is not judged;
        // what the server holds beyond it is.
        let queue_grew = SoakMeasures {
            memory_after_warm_up: samples(&[(100, 100, 0), (150, 150, 45)]),
            ..good.clone()
        };
        let v = SoakVerdict::judge(&queue_grew, &settings);
        assert!(v.passed, "{v}");
        assert_eq!(v.heap_spread, Some(0.5));
        let own_grew = SoakMeasures {
            memory_after_warm_up: samples(&[(100, 100, 0), (150, 150, 5)]),
            ..queue_grew.clone()
        };
        assert!(!SoakVerdict::judge(&own_grew, &settings).passed);
        let fault = FaultWindow {
            kind: FaultKind::HostsDown,
            domain: "webmail.test".into(),
            from: Duration::from_secs(90),
            until: Duration::from_secs(120),
            drain_by: Duration::from_secs(390),
            drained_at_most: 70,
        };
        let drained = SoakMeasures {
            drains: vec![(fault.clone(), Some(Duration::from_secs(40)))],
            ..good.clone()
        };
        let v = SoakVerdict::judge(&drained, &settings);
        assert!(v.passed);
        assert_eq!(
            v.slowest_drains,
            [(FaultKind::HostsDown, Duration::from_secs(40))]
        );
        let undrained = SoakMeasures {
            drains: vec![(fault, None)],
            ..good.clone()
        };
        let v = SoakVerdict::judge(&undrained, &settings);
        assert!(!v.passed);
        assert_eq!(
            v.undrained,
            ["MX hosts down at webmail.test (90-120 s): not drained by 390 s"]
        );
        let mut lost = good.clone();
        lost.accounting.lost = 1;
        assert!(!SoakVerdict::judge(&lost, &settings).passed);
        let mut left = good;
        left.queued_at_end = Some(3);
        assert!(!SoakVerdict::judge(&left, &settings).passed);
    }
}
