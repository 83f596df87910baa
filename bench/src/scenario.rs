//! Scenarios: which domains the simulated internet has, their hidden
//! capacities and how those change over time, and the load to drive at it.
//! Written in TOML; three are built in (`uniform`, `realistic`, `hostile`).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capacity::{Capacity, is_unknown_mailbox};
use crate::error::ScenarioError;
use crate::load::LoadSpec;
pub use crate::sim_domain::SimDomain;
use crate::sim_domain::zipf_weights;
use volley_units::serde::{duration as serde_text, option_duration as serde_opt};

const BUILTINS: [(&str, &str); 3] = [
    ("uniform", include_str!("../scenarios/uniform.toml")),
    ("realistic", include_str!("../scenarios/realistic.toml")),
    ("hostile", include_str!("../scenarios/hostile.toml")),
];

/// The scenario `volley bench run` uses when given none.
pub const DEFAULT_SCENARIO: &str = "uniform";

/// Most MX hosts a scenario may have (each takes one loopback address).
const MAX_HOSTS: usize = 60_000;

/// A whole benchmark setting, as read from TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, shown in reports.
    pub name: String,
    /// One line saying what the scenario exercises.
    #[serde(default)]
    pub description: String,
    /// Seed for jitter and drops, so runs are comparable.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Delay of every DNS answer.
    #[serde(default, with = "serde_opt")]
    pub dns_latency: Option<Duration>,
    /// The Composer load `bench run` drives.
    #[serde(default)]
    pub load: LoadSpec,
    /// Domains listed one by one.
    #[serde(default)]
    pub domain: Vec<DomainEntry>,
    /// Families of alike domains (`{prefix}{i}.test`), e.g. a long tail.
    #[serde(default)]
    pub group: Vec<GroupEntry>,
    /// Capacity changes at points in time.
    #[serde(default)]
    pub change: Vec<ChangeEntry>,
}

fn default_seed() -> u64 {
    1
}

fn default_mx() -> u32 {
    1
}

fn default_weight() -> f64 {
    1.0
}

/// One domain of a scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainEntry {
    /// The mail domain, e.g. `bigmail.test`.
    pub name: String,
    /// Number of MX hosts (each its own loopback address).
    #[serde(default = "default_mx")]
    pub mx: u32,
    /// Share of the recipients (relative to the other weights).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Hidden capacity.
    #[serde(default)]
    pub capacity: Capacity,
}

/// `count` alike domains named `{prefix}{i}.{suffix}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// Name prefix, e.g. `tail`.
    pub prefix: String,
    /// Top-level part after the number.
    #[serde(default = "default_suffix")]
    pub suffix: String,
    /// How many domains.
    pub count: u32,
    /// MX hosts per domain.
    #[serde(default = "default_mx")]
    pub mx: u32,
    /// Total weight of the group, spread over its domains.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Zipf exponent of the spread inside the group: 0 equal, 1 classic long tail.
    #[serde(default)]
    pub zipf: f64,
    /// Hidden capacity of each domain of the group.
    #[serde(default)]
    pub capacity: Capacity,
}

fn default_suffix() -> String {
    "test".into()
}

/// From `at` after the start, `domain` (a name, a group prefix followed by
/// `*`, or `*` for all) gets the fields of `set` on top of its capacity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEntry {
    /// Offset from the start of the run.
    #[serde(with = "serde_text")]
    pub at: Duration,
    /// Which domains.
    pub domain: String,
    /// Capacity fields to overwrite, e.g. `{ max_rate = 50 }`.
    pub set: toml::Table,
}

impl Scenario {
    /// Names of the built-in scenarios.
    pub fn builtin_names() -> impl Iterator<Item = &'static str> {
        BUILTINS.iter().map(|(n, _)| *n)
    }

    /// A built-in scenario by name.
    pub fn builtin(name: &str) -> Option<Scenario> {
        let (_, text) = BUILTINS.iter().find(|(n, _)| *n == name)?;
        Some(Self::from_toml(text).expect("built-in scenarios are tested"))
    }

    /// A built-in name or the path of a TOML file.
    pub fn load(name_or_path: &str) -> Result<Scenario, ScenarioError> {
        if let Some(s) = Self::builtin(name_or_path) {
            return Ok(s);
        }
        let text =
            std::fs::read_to_string(name_or_path).map_err(|source| ScenarioError::NotFound {
                name: name_or_path.to_string(),
                source,
            })?;
        Self::from_toml(&text)
    }

    /// The scenario as TOML (e.g. a built-in one, to start a file from).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("scenarios are plain data")
    }

    /// Parses and checks a scenario.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.domains()?;
        Ok(scenario)
    }

    /// The domains with addresses and capacity schedules. MX hosts get
    /// 127.0.0.2, 127.0.0.3, ... in order (skipping .0 and .255 octets).
    pub fn domains(&self) -> Result<Vec<SimDomain>, ScenarioError> {
        let mut out = Vec::new();
        for d in &self.domain {
            out.push((
                d.name.to_ascii_lowercase(),
                d.mx,
                d.weight,
                d.capacity.clone(),
            ));
        }
        for g in &self.group {
            let weights = zipf_weights(g.count as usize, g.zipf);
            for (i, w) in weights.into_iter().enumerate() {
                let name = format!("{}{}.{}", g.prefix, i, g.suffix).to_ascii_lowercase();
                out.push((name, g.mx, g.weight * w, g.capacity.clone()));
            }
        }
        if out.is_empty() {
            return Err(ScenarioError::Invalid("no domains".into()));
        }
        let mut names: Vec<&str> = out.iter().map(|d| d.0.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ScenarioError::Invalid(format!("domain {} twice", w[0])));
        }
        let total_hosts: usize = out.iter().map(|d| d.1 as usize).sum();
        if total_hosts > MAX_HOSTS {
            return Err(ScenarioError::Invalid(format!(
                "{total_hosts} MX hosts; at most {MAX_HOSTS}"
            )));
        }
        for c in &self.change {
            if !out.iter().any(|d| change_applies(&c.domain, &d.0)) {
                return Err(ScenarioError::Invalid(format!(
                    "change at {:?} names no domain: {}",
                    c.at, c.domain
                )));
            }
        }
        let mut changes: Vec<&ChangeEntry> = self.change.iter().collect();
        changes.sort_by_key(|c| c.at);
        let mut addrs = HostAddrs::default();
        let mut domains = Vec::with_capacity(out.len());
        for (name, mx, weight, capacity) in out {
            if mx == 0 {
                return Err(ScenarioError::Invalid(format!("{name}: mx = 0")));
            }
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(ScenarioError::Invalid(format!("{name}: weight {weight}")));
            }
            let hosts = (0..mx)
                .map(|i| (format!("mx{i}.{name}"), addrs.next()))
                .collect();
            let mut current = capacity.clone();
            let mut schedule = Vec::new();
            for c in changes.iter().filter(|c| change_applies(&c.domain, &name)) {
                current = overlay(&current, &c.set)
                    .map_err(|e| ScenarioError::Invalid(format!("change at {:?}: {e}", c.at)))?;
                schedule.push((c.at, current.clone()));
            }
            domains.push(SimDomain {
                name,
                weight,
                hosts,
                capacity,
                changes: schedule,
            });
        }
        Ok(domains)
    }
}

/// Whether the simulated internet of `domains` refuses `recipient` for good
/// (an unknown mailbox at any point of the run): a bounce is its correct end.
pub fn is_expected_bounce(domains: &[SimDomain], recipient: &str) -> bool {
    let Some((_, domain)) = recipient.rsplit_once('@') else {
        return false;
    };
    domains
        .iter()
        .find(|d| d.name.eq_ignore_ascii_case(domain))
        .is_some_and(|d| {
            // A mailbox is unknown when its hash falls below the share, so
            // the largest share over the run covers every refusal.
            let share = d
                .changes
                .iter()
                .map(|c| c.1.unknown_share)
                .fold(d.capacity.unknown_share, f64::max);
            is_unknown_mailbox(recipient, share)
        })
}

fn change_applies(pattern: &str, domain: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => domain.starts_with(&prefix.to_ascii_lowercase()),
        None => pattern.eq_ignore_ascii_case(domain),
    }
}

/// `base` with the fields of `set` written over it.
fn overlay(base: &Capacity, set: &toml::Table) -> Result<Capacity, String> {
    let mut table = toml::Table::try_from(base).map_err(|e| e.to_string())?;
    for (k, v) in set {
        table.insert(k.clone(), v.clone());
    }
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.to_string())
}

/// Hands out 127.0.0.2, 127.0.0.3, ... skipping addresses ending in .0 or .255.
#[derive(Default)]
struct HostAddrs {
    next: u32,
}

impl HostAddrs {
    fn next(&mut self) -> Ipv4Addr {
        loop {
            let addr = u32::from(Ipv4Addr::new(127, 0, 0, 2)) + self.next;
            self.next += 1;
            let last = addr & 0xff;
            if last != 0 && last != 255 {
                return Ipv4Addr::from(addr);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse_and_expand() {
        for name in Scenario::builtin_names() {
            let s = Scenario::builtin(name).unwrap();
            let domains = s.domains().unwrap();
            assert!(!domains.is_empty(), "{name}");
            assert!(s.load.messages > 0, "{name}");
        }
        let uniform = Scenario::builtin("uniform").unwrap().domains().unwrap();
        assert_eq!(uniform.len(), 100);
        assert!(uniform.iter().all(|d| d.weight == uniform[0].weight));
    }

    #[test]
    fn builtins_round_trip_through_toml() {
        for name in Scenario::builtin_names() {
            let s = Scenario::builtin(name).unwrap();
            let back = Scenario::from_toml(&s.to_toml()).unwrap();
            assert_eq!(back.domains().unwrap(), s.domains().unwrap(), "{name}");
            assert_eq!(back.load, s.load, "{name}");
        }
    }

    #[test]
    fn hosts_get_distinct_loopback_addresses() {
        let s = Scenario::from_toml(
            r#"
            name = "t"
            [[group]]
            prefix = "g"
            count = 300
            mx = 2
            "#,
        )
        .unwrap();
        let domains = s.domains().unwrap();
        let mut addrs: Vec<Ipv4Addr> = domains
            .iter()
            .flat_map(|d| d.hosts.iter().map(|h| h.1))
            .collect();
        assert_eq!(addrs[0], Ipv4Addr::new(127, 0, 0, 2));
        assert!(
            addrs
                .iter()
                .all(|a| a.octets()[3] != 0 && a.octets()[3] != 255)
        );
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), 600);
        assert_eq!(domains[0].hosts[1].0, "mx1.g0.test");
    }

    #[test]
    fn changes_overlay_capacity_in_time_order() {
        let s = Scenario::from_toml(
            r#"
            name = "t"
            [[domain]]
            name = "big.test"
            capacity = { max_rate = 100.0, max_connections = 5 }
            [[change]]
            at = "20s"
            domain = "big.test"
            set = { max_connections = 1 }
            [[change]]
            at = "10s"
            domain = "*"
            set = { max_rate = 10.0, latency = "50ms" }
            "#,
        )
        .unwrap();
        let d = &s.domains().unwrap()[0];
        assert_eq!(d.changes.len(), 2);
        assert_eq!(d.changes[0].0, Duration::from_secs(10));
        assert_eq!(d.changes[0].1.max_rate, 10.0);
        assert_eq!(d.changes[0].1.max_connections, 5);
        assert_eq!(d.changes[0].1.latency, Duration::from_millis(50));
        assert_eq!(d.changes[1].1.max_connections, 1);
        assert_eq!(d.changes[1].1.max_rate, 10.0);
    }

    #[test]
    fn rejects_nonsense() {
        let bad = [
            "name = 't'",
            "name = 't'\n[[domain]]\nname = 'a.test'\n[[domain]]\nname = 'A.test'",
            "name = 't'\n[[domain]]\nname = 'a.test'\ncapacity = { max_rat = 1.0 }",
            "name = 't'\n[[domain]]\nname = 'a.test'\n[[change]]\nat = '1s'\ndomain = 'b.test'\nset = {}",
            "name = 't'\n[[domain]]\nname = 'a.test'\n[[change]]\nat = '1s'\ndomain = 'a.test'\nset = { max_rate = 'fast' }",
            "name = 't'\n[[domain]]\nname = 'a.test'\nmx = 0",
        ];
        for text in bad {
            assert!(Scenario::from_toml(text).is_err(), "accepted: {text}");
        }
    }
}
