//! Scenarios: which domains the simulated internet has, their hidden
//! capacities and how those change over time, and the load to drive at it.
//! Written in TOML; some are built in (see `volley bench scenarios`).

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capacity::{Capacity, is_unknown_mailbox};
use crate::error::ScenarioError;
use crate::load::LoadSpec;
use crate::sim_domain::zipf_weights;
pub use crate::sim_domain::{SimDomain, SimReceiver};
use volley_units::serde::{duration as serde_text, option_duration as serde_opt};

const BUILTINS: [(&str, &str); 6] = [
    ("uniform", include_str!("../scenarios/uniform.toml")),
    ("realistic", include_str!("../scenarios/realistic.toml")),
    ("hostile", include_str!("../scenarios/hostile.toml")),
    (
        "provider-shared",
        include_str!("../scenarios/provider-shared.toml"),
    ),
    (
        "provider-per-domain",
        include_str!("../scenarios/provider-per-domain.toml"),
    ),
    ("soak", include_str!("../scenarios/soak.toml")),
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
    /// Time to live of every DNS answer (default 300 s). A short one makes
    /// a DNS outage reach a sender's cache within a run.
    #[serde(default, with = "serde_opt")]
    pub dns_ttl: Option<Duration>,
    /// The Composer load `bench run` drives.
    #[serde(default)]
    pub load: LoadSpec,
    /// Domains listed one by one.
    #[serde(default)]
    pub domain: Vec<DomainEntry>,
    /// Families of alike domains (`{prefix}{i}.test`), e.g. a long tail.
    #[serde(default)]
    pub group: Vec<GroupEntry>,
    /// Providers hosting many domains behind one shared capacity.
    #[serde(default)]
    pub provider: Vec<ProviderEntry>,
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

/// `count` domains named `{prefix}{i}.{suffix}`, all hosted by one provider
/// whose hidden capacity they share: at most `max_connections` open at once
/// and `max_rate` recipients per second for all of them together, because a
/// provider meters the sending IP address, not the recipient domain. The
/// provider's MX sinks listen on one loopback address, whichever way its
/// domains name their MX host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// The provider, e.g. `workspace`: names its MX hosts and, in changes,
    /// its capacity.
    pub name: String,
    /// Name prefix of its domains, e.g. `ws`.
    pub prefix: String,
    /// Top-level part after the number (also of its MX host names).
    #[serde(default = "default_suffix")]
    pub suffix: String,
    /// How many domains it hosts.
    pub count: u32,
    /// Total weight of its domains, spread over them.
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// Zipf exponent of the spread over its domains: 0 equal, 1 classic long tail.
    #[serde(default)]
    pub zipf: f64,
    /// How its domains' MX records name its host.
    #[serde(default)]
    pub mx_names: MxNames,
    /// Hidden capacity of the provider: for all of its domains together.
    #[serde(default)]
    pub capacity: Capacity,
}

/// How a provider's domains name its MX host. Both send every domain to the
/// same address; they differ in what a sender sees when it groups domains
/// by their MX records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MxNames {
    /// Every domain's MX record names one host, `mx.{name}.{suffix}`, as
    /// Google Workspace's domains all name its `aspmx` hosts.
    #[default]
    Shared,
    /// Each domain has a host name of its own, `{domain with dashes for
    /// dots}.mail.{name}.{suffix}`, as Microsoft 365 gives `contoso.com` the
    /// host `contoso-com.mail.protection.outlook.com`: only their addresses
    /// show the domains share a receiver.
    PerDomain,
}

/// From `at` after the start, `domain` gets the fields of `set` on top of its
/// capacity. `domain` names a receiver of a capacity: a domain, a provider
/// (by its name: its domains share one capacity, so a change for one of
/// them alone cannot be), a prefix of such names followed by `*`, or `*`
/// for all.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeEntry {
    /// Offset from the start of the run.
    #[serde(with = "serde_text")]
    pub at: Duration,
    /// Which receivers: a domain, a provider, `prefix*` or `*`.
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

    /// The domains with their MX hosts and addresses, each pointing at its
    /// receiver in [`receivers`](Self::receivers).
    pub fn domains(&self) -> Result<Vec<SimDomain>, ScenarioError> {
        Ok(self.resolve()?.0)
    }

    /// The receivers of a capacity: each ordinary domain (the scenario's
    /// domains and groups, in the order of [`domains`](Self::domains)), then
    /// each provider, with capacity schedules.
    pub fn receivers(&self) -> Result<Vec<SimReceiver>, ScenarioError> {
        Ok(self.resolve()?.1)
    }

    /// The domains and the receivers behind them. MX hosts get 127.0.0.2,
    /// 127.0.0.3, ... in receiver order (skipping .0 and .255 octets): an
    /// ordinary domain one per MX host, a provider one for all its domains.
    pub(crate) fn resolve(&self) -> Result<(Vec<SimDomain>, Vec<SimReceiver>), ScenarioError> {
        let mut planned: Vec<PlannedReceiver> = Vec::new();
        // Every domain: its name, its weight and its receiver in `planned`.
        let mut named: Vec<(String, f64, usize)> = Vec::new();
        for d in &self.domain {
            let name = d.name.to_ascii_lowercase();
            named.push((name.clone(), d.weight, planned.len()));
            planned.push(PlannedReceiver::own(name, d.mx, d.capacity.clone()));
        }
        for g in &self.group {
            let weights = zipf_weights(g.count as usize, g.zipf);
            for (i, w) in weights.into_iter().enumerate() {
                let name = format!("{}{}.{}", g.prefix, i, g.suffix).to_ascii_lowercase();
                named.push((name.clone(), g.weight * w, planned.len()));
                planned.push(PlannedReceiver::own(name, g.mx, g.capacity.clone()));
            }
        }
        for p in &self.provider {
            let name = p.name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(ScenarioError::Invalid(format!(
                    "provider {:?}: a name of letters, digits and hyphens",
                    p.name
                )));
            }
            if p.count == 0 {
                return Err(ScenarioError::Invalid(format!(
                    "provider {name}: count = 0"
                )));
            }
            let weights = zipf_weights(p.count as usize, p.zipf);
            for (i, w) in weights.into_iter().enumerate() {
                let domain = format!("{}{}.{}", p.prefix, i, p.suffix).to_ascii_lowercase();
                named.push((domain, p.weight * w, planned.len()));
            }
            let suffix = p.suffix.to_ascii_lowercase();
            planned.push(PlannedReceiver {
                name: name.clone(),
                hosts: match p.mx_names {
                    MxNames::Shared => Hosts::Shared(format!("mx.{name}.{suffix}")),
                    MxNames::PerDomain => Hosts::PerDomain(format!("mail.{name}.{suffix}")),
                },
                capacity: p.capacity.clone(),
            });
        }
        if named.is_empty() {
            return Err(ScenarioError::Invalid("no domains".into()));
        }
        let mut names: Vec<&str> = named.iter().map(|d| d.0.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ScenarioError::Invalid(format!("domain {} twice", w[0])));
        }
        // A change names a receiver, so no two receivers share a name.
        let mut names: Vec<&str> = planned.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(ScenarioError::Invalid(format!(
                "{} names a provider and another provider or domain",
                w[0]
            )));
        }
        let total_hosts: usize = planned.iter().map(|r| r.hosts.addresses()).sum();
        if total_hosts > MAX_HOSTS {
            return Err(ScenarioError::Invalid(format!(
                "{total_hosts} MX hosts; at most {MAX_HOSTS}"
            )));
        }
        for (name, weight, _) in &named {
            if !(weight.is_finite() && *weight >= 0.0) {
                return Err(ScenarioError::Invalid(format!("{name}: weight {weight}")));
            }
        }
        for c in &self.change {
            if planned.iter().any(|r| change_applies(&c.domain, &r.name)) {
                continue;
            }
            let mut owners = named
                .iter()
                .filter(|d| change_applies(&c.domain, &d.0))
                .map(|d| planned[d.2].name.as_str());
            return Err(ScenarioError::Invalid(match owners.next() {
                Some(provider) => format!(
                    "change at {:?} names domains of provider {provider}, which share its \
                     capacity: name the provider",
                    c.at
                ),
                None => format!("change at {:?} names no domain: {}", c.at, c.domain),
            }));
        }
        let mut changes: Vec<&ChangeEntry> = self.change.iter().collect();
        changes.sort_by_key(|c| c.at);
        let mut addrs = HostAddrs::default();
        let mut receivers = Vec::with_capacity(planned.len());
        for r in planned {
            if let Hosts::Own(0) = r.hosts {
                return Err(ScenarioError::Invalid(format!("{}: mx = 0", r.name)));
            }
            let mut current = r.capacity.clone();
            let mut schedule = Vec::new();
            for c in changes
                .iter()
                .filter(|c| change_applies(&c.domain, &r.name))
            {
                current = overlay(&current, &c.set)
                    .map_err(|e| ScenarioError::Invalid(format!("change at {:?}: {e}", c.at)))?;
                schedule.push((c.at, current.clone()));
            }
            let receiver = SimReceiver {
                addrs: (0..r.hosts.addresses()).map(|_| addrs.next()).collect(),
                provider: !matches!(r.hosts, Hosts::Own(_)),
                domains: Vec::new(),
                weight: 0.0,
                name: r.name,
                capacity: r.capacity,
                changes: schedule,
            };
            receivers.push((receiver, r.hosts));
        }
        let mut domains = Vec::with_capacity(named.len());
        for (name, weight, receiver) in named {
            let (r, naming) = &mut receivers[receiver];
            let hosts = match naming {
                Hosts::Own(_) => r
                    .addrs
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (format!("mx{i}.{name}"), *a))
                    .collect(),
                Hosts::Shared(host) => vec![(host.clone(), r.addrs[0])],
                Hosts::PerDomain(zone) => {
                    vec![(format!("{}.{zone}", name.replace('.', "-")), r.addrs[0])]
                }
            };
            let unknown_share = r
                .changes
                .iter()
                .map(|c| c.1.unknown_share)
                .fold(r.capacity.unknown_share, f64::max);
            r.domains.push(domains.len());
            r.weight += weight;
            domains.push(SimDomain {
                name,
                weight,
                hosts,
                receiver,
                unknown_share,
            });
        }
        Ok((domains, receivers.into_iter().map(|r| r.0).collect()))
    }
}

/// A receiver before addresses are handed out and changes applied.
struct PlannedReceiver {
    name: String,
    hosts: Hosts,
    capacity: Capacity,
}

impl PlannedReceiver {
    fn own(name: String, mx: u32, capacity: Capacity) -> Self {
        Self {
            name,
            hosts: Hosts::Own(mx),
            capacity,
        }
    }
}

/// How a receiver's domains name its MX hosts.
enum Hosts {
    /// A domain of its own with this many MX hosts `mx{i}.{domain}`, each
    /// at its own address.
    Own(u32),
    /// A provider whose domains all name this one host.
    Shared(String),
    /// A provider whose domains each name `{domain with dashes}.{zone}`.
    PerDomain(String),
}

impl Hosts {
    /// Loopback addresses the receiver takes.
    fn addresses(&self) -> usize {
        match self {
            Hosts::Own(mx) => *mx as usize,
            Hosts::Shared(_) | Hosts::PerDomain(_) => 1,
        }
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
        .is_some_and(|d| is_unknown_mailbox(recipient, d.unknown_share))
}

fn change_applies(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(&prefix.to_ascii_lowercase()),
        None => pattern.eq_ignore_ascii_case(name),
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
        let d = &s.receivers().unwrap()[0];
        assert_eq!(d.changes.len(), 2);
        assert_eq!(d.changes[0].0, Duration::from_secs(10));
        assert_eq!(d.changes[0].1.max_rate, 10.0);
        assert_eq!(d.changes[0].1.max_connections, 5);
        assert_eq!(d.changes[0].1.latency, Duration::from_millis(50));
        assert_eq!(d.changes[1].1.max_connections, 1);
        assert_eq!(d.changes[1].1.max_rate, 10.0);
    }

    /// What the provider built-ins share: `isp.test` first (its two MX
    /// hosts take the first two addresses), then 40 provider domains.
    fn provider_builtin(name: &str) -> (Vec<SimDomain>, Vec<SimReceiver>) {
        let s = Scenario::builtin(name).unwrap();
        let (domains, receivers) = s.resolve().unwrap();
        assert_eq!(domains.len(), 41, "{name}");
        assert_eq!(receivers.len(), 2, "{name}: isp.test and the provider");
        let isp = &domains[0];
        assert_eq!(isp.name, "isp.test");
        assert_eq!(
            isp.hosts,
            vec![
                ("mx0.isp.test".to_string(), Ipv4Addr::new(127, 0, 0, 2)),
                ("mx1.isp.test".to_string(), Ipv4Addr::new(127, 0, 0, 3)),
            ]
        );
        assert!(!receivers[0].provider);
        assert_eq!(receivers[0].domains, vec![0]);
        let provider = &receivers[1];
        assert!(provider.provider);
        assert_eq!(provider.domains, (1..41).collect::<Vec<_>>());
        assert_eq!(provider.addrs, vec![Ipv4Addr::new(127, 0, 0, 4)]);
        assert_eq!(provider.capacity.max_connections, 10);
        assert_eq!(provider.capacity.max_rate, 200.0);
        assert!((provider.weight - 90.0).abs() < 1e-9, "{}", provider.weight);
        for d in &domains[1..] {
            assert_eq!(d.receiver, 1, "{}", d.name);
            assert_eq!(d.hosts.len(), 1, "{}", d.name);
            assert_eq!(d.hosts[0].1, Ipv4Addr::new(127, 0, 0, 4), "{}", d.name);
            assert_eq!(d.unknown_share, 0.01);
        }
        (domains, receivers)
    }

    #[test]
    fn a_shared_provider_names_one_mx_host_for_all_its_domains() {
        let (domains, receivers) = provider_builtin("provider-shared");
        assert_eq!(receivers[1].name, "workspace");
        assert_eq!(domains[1].name, "ws0.test");
        assert_eq!(domains[40].name, "ws39.test");
        for d in &domains[1..] {
            assert_eq!(d.hosts[0].0, "mx.workspace.test", "{}", d.name);
        }
    }

    #[test]
    fn a_per_domain_provider_names_a_host_per_domain_at_one_address() {
        let (domains, receivers) = provider_builtin("provider-per-domain");
        assert_eq!(receivers[1].name, "office");
        assert_eq!(domains[1].name, "corp0.test");
        assert_eq!(domains[1].hosts[0].0, "corp0-test.mail.office.test");
        assert_eq!(domains[40].hosts[0].0, "corp39-test.mail.office.test");
        let mut names: Vec<&str> = domains[1..].iter().map(|d| d.hosts[0].0.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 40);
    }

    #[test]
    fn changes_name_a_provider_not_one_of_its_domains() {
        let text = |target: &str| {
            format!(
                r#"
                name = "t"
                [[domain]]
                name = "own.test"
                [[provider]]
                name = "big"
                prefix = "b"
                count = 3
                capacity = {{ max_rate = 100.0 }}
                [[change]]
                at = "5s"
                domain = "{target}"
                set = {{ max_rate = 10.0 }}
                "#
            )
        };
        let receivers = Scenario::from_toml(&text("big"))
            .unwrap()
            .receivers()
            .unwrap();
        assert!(
            receivers[0].changes.is_empty(),
            "own.test is not the provider"
        );
        assert_eq!(receivers[1].changes.len(), 1);
        assert_eq!(receivers[1].changes[0].1.max_rate, 10.0);
        let all = Scenario::from_toml(&text("*"))
            .unwrap()
            .receivers()
            .unwrap();
        assert!(all.iter().all(|r| r.changes.len() == 1));
        let e = Scenario::from_toml(&text("b1.test"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("provider big"), "{e}");
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
            "name = 't'\n[[provider]]\nname = 'p'\nprefix = 'p'\ncount = 0",
            "name = 't'\n[[provider]]\nname = 'p.test'\nprefix = 'p'\ncount = 2",
            "name = 't'\n[[provider]]\nname = 'p'\nprefix = 'p'\ncount = 2\nmx_names = 'each'",
            "name = 't'\n[[domain]]\nname = 'p'\n[[provider]]\nname = 'p'\nprefix = 'p'\ncount = 2",
            "name = 't'\n[[domain]]\nname = 'p1.test'\n[[provider]]\nname = 'p'\nprefix = 'p'\ncount = 2",
        ];
        for text in bad {
            assert!(Scenario::from_toml(text).is_err(), "accepted: {text}");
        }
    }
}
