//! The Composer load: how many messages, how fast, over how many
//! connections, and to which recipients (spread over domains by weight).

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::ScenarioError;
use crate::sim_domain::{SimDomain, zipf_weights};
use volley_units::serde::option_duration as serde_opt;

/// Which protocol the Composer speaks to the server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SMTP (EHLO).
    #[default]
    Smtp,
    /// LMTP (LHLO; one reply per recipient after the dot).
    Lmtp,
}

/// Shape of the Composer load, independent of where it is sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadSpec {
    /// Messages to send (one recipient each: every body is personalized).
    pub messages: u64,
    /// Stop after this long even if messages remain.
    #[serde(with = "serde_opt")]
    pub duration: Option<Duration>,
    /// Concurrent connections to the server under test.
    pub connections: u32,
    /// Pipeline MAIL, RCPT and DATA (RFC 2920) when the server offers it.
    pub pipelining: bool,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// Smallest body, in bytes (sizes are uniform between min and max).
    pub body_min: usize,
    /// Largest body, in bytes.
    pub body_max: usize,
    /// Fixed rate in messages per second over all connections; 0: as fast
    /// as the server takes them.
    pub rate: f64,
    /// Envelope sender.
    pub sender: String,
    /// Body template: `{name}`, `{number}`, `{email}` and `{id}` are filled
    /// per recipient; padded with text up to the chosen size.
    pub template: String,
}

/// The body template used unless another is given. The line starting with a
/// dot checks that both sides do dot-stuffing.
pub const DEFAULT_TEMPLATE: &str = "Dear {name},\r\n\r\nthis is message {number} of the Volley bench, for {email}.\r\n.signature line: a leading dot must survive dot-stuffing.\r\n";

impl Default for LoadSpec {
    fn default() -> Self {
        Self {
            messages: 10_000,
            duration: None,
            connections: 16,
            pipelining: true,
            protocol: Protocol::Smtp,
            body_min: 1_000,
            body_max: 4_000,
            rate: 0.0,
            sender: "composer@bench.test".into(),
            template: DEFAULT_TEMPLATE.into(),
        }
    }
}

impl LoadSpec {
    /// Checks the numbers make sense.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(format!("load: {m}")));
        if self.connections == 0 {
            return bad("connections = 0");
        }
        if self.body_min > self.body_max {
            return bad("body_min > body_max");
        }
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            return bad("rate must be >= 0");
        }
        if self.messages == 0 && self.duration.is_none() {
            return bad("neither messages nor duration");
        }
        Ok(())
    }
}

/// How recipients spread over domains.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainMix {
    names: Vec<String>,
    /// Cumulative weights, last = 1.0.
    cumulative: Vec<f64>,
}

impl DomainMix {
    /// Domains with relative weights, e.g. from `--domain big.test:40`.
    pub fn weighted(domains: Vec<(String, f64)>) -> Result<Self, ScenarioError> {
        let total: f64 = domains.iter().map(|d| d.1).sum();
        if domains.is_empty() || !(total.is_finite() && total > 0.0) {
            return Err(ScenarioError::Invalid(
                "domain mix: no domain with a positive weight".into(),
            ));
        }
        if domains.iter().any(|d| d.1.is_nan() || d.1 < 0.0) {
            return Err(ScenarioError::Invalid("domain mix: negative weight".into()));
        }
        let mut acc = 0.0;
        let mut cumulative = Vec::with_capacity(domains.len());
        let mut names = Vec::with_capacity(domains.len());
        for (name, w) in domains {
            acc += w / total;
            cumulative.push(acc);
            names.push(name.to_ascii_lowercase());
        }
        *cumulative.last_mut().expect("not empty") = 1.0;
        Ok(Self { names, cumulative })
    }

    /// `n` domains `d0.{suffix}` ... with Zipf weights of exponent `s`.
    pub fn zipf(n: usize, s: f64, suffix: &str) -> Result<Self, ScenarioError> {
        let weights = zipf_weights(n, s);
        Self::weighted(
            weights
                .into_iter()
                .enumerate()
                .map(|(i, w)| (format!("d{i}.{suffix}"), w))
                .collect(),
        )
    }

    /// The weights of a scenario's domains.
    pub fn of_scenario(domains: &[SimDomain]) -> Result<Self, ScenarioError> {
        Self::weighted(domains.iter().map(|d| (d.name.clone(), d.weight)).collect())
    }

    /// Parses `name:weight` (weight defaults to 1).
    pub fn parse_entry(text: &str) -> Result<(String, f64), ScenarioError> {
        match text.rsplit_once(':') {
            Some((name, w)) => w
                .parse::<f64>()
                .map(|w| (name.to_string(), w))
                .map_err(|_| ScenarioError::Invalid(format!("--domain {text}: weight"))),
            None => Ok((text.to_string(), 1.0)),
        }
    }

    /// The domains, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    fn pick(&self, x: f64) -> &str {
        let i = self.cumulative.partition_point(|&c| c < x);
        &self.names[i.min(self.names.len() - 1)]
    }
}

/// One message to send: who to, what id, how big.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    /// Sequence number in this run, from 0.
    pub number: u64,
    /// The single recipient.
    pub recipient: String,
    /// Body size in bytes (approximate: at least this).
    pub size: usize,
}

/// Draws recipients and sizes, reproducibly: message `n` of a seed is the
/// same whichever connection sends it, so runs are comparable.
#[derive(Debug, Clone)]
pub struct Planner {
    mix: DomainMix,
    body_min: usize,
    body_max: usize,
    seed: u64,
}

impl Planner {
    /// A planner over `mix` with the body sizes of `spec`.
    pub fn new(mix: DomainMix, spec: &LoadSpec, seed: u64) -> Self {
        Self {
            mix,
            body_min: spec.body_min,
            body_max: spec.body_max,
            seed,
        }
    }

    /// Message `number`: recipient `user{number}@{domain}` so every
    /// recipient of a run is distinct.
    pub fn plan(&self, number: u64) -> Planned {
        let mut rng =
            SmallRng::seed_from_u64(self.seed ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let domain = self.mix.pick(rng.random::<f64>());
        let size = if self.body_max > self.body_min {
            rng.random_range(self.body_min..=self.body_max)
        } else {
            self.body_min
        };
        Planned {
            number,
            recipient: format!("user{number}@{domain}"),
            size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_steer_the_domain_choice() {
        let mix = DomainMix::weighted(vec![("big.test".into(), 3.0), ("small.test".into(), 1.0)])
            .unwrap();
        let p = Planner::new(mix, &LoadSpec::default(), 3);
        let big = (0..10_000)
            .filter(|&i| p.plan(i).recipient.ends_with("@big.test"))
            .count();
        assert!((7_200..7_800).contains(&big), "{big}");
    }

    #[test]
    fn zipf_favors_the_first_domains_and_sizes_stay_in_range() {
        let mix = DomainMix::zipf(10, 1.0, "test").unwrap();
        let spec = LoadSpec {
            body_min: 100,
            body_max: 200,
            ..LoadSpec::default()
        };
        let p = Planner::new(mix, &spec, 1);
        let plans: Vec<Planned> = (0..5_000).map(|i| p.plan(i)).collect();
        let first = plans
            .iter()
            .filter(|m| m.recipient.ends_with("@d0.test"))
            .count();
        let last = plans
            .iter()
            .filter(|m| m.recipient.ends_with("@d9.test"))
            .count();
        assert!(first > 5 * last, "{first} vs {last}");
        assert!(plans.iter().all(|m| (100..=200).contains(&m.size)));
        assert_eq!(plans[42].recipient.split('@').next(), Some("user42"));
    }

    #[test]
    fn parses_domain_entries() {
        assert_eq!(
            DomainMix::parse_entry("big.test:40").unwrap(),
            ("big.test".into(), 40.0)
        );
        assert_eq!(
            DomainMix::parse_entry("a.test").unwrap(),
            ("a.test".into(), 1.0)
        );
        assert!(DomainMix::parse_entry("a.test:lots").is_err());
        assert!(DomainMix::weighted(vec![("a".into(), 0.0)]).is_err());
    }
}
