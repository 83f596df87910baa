//! A domain of the simulated internet as the scenario resolved it, and the
//! Zipf weights that share recipients among domains: what both the
//! scenario and the load plan read.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::capacity::Capacity;

/// One domain of the simulated internet, resolved: its hosts have addresses
/// and its capacity schedule is complete.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDomain {
    /// The mail domain.
    pub name: String,
    /// Share of the recipients.
    pub weight: f64,
    /// MX hosts: name and loopback address.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Capacity at the start.
    pub capacity: Capacity,
    /// Later capacities: (offset from the start, full capacity from then on).
    pub changes: Vec<(Duration, Capacity)>,
}

/// Weights 1/i^s for i = 1..=n, normalized to sum 1.
pub(crate) fn zipf_weights(n: usize, s: f64) -> Vec<f64> {
    let raw: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powf(s)).collect();
    let sum: f64 = raw.iter().sum();
    raw.into_iter().map(|w| w / sum).collect()
}
