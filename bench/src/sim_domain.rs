//! A domain of the simulated internet as the scenario resolved it, the
//! receiver whose hidden capacity it is served by, and the Zipf weights that
//! share recipients among domains: what the scenario, the sinks, the load
//! plan and the report read.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::capacity::Capacity;

/// One domain of the simulated internet, resolved: its hosts have addresses
/// and it knows which receiver's capacity it is served by.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDomain {
    /// The mail domain.
    pub name: String,
    /// Share of the recipients.
    pub weight: f64,
    /// MX hosts: name and loopback address. A provider's domains name their
    /// own hosts or one shared host, but every address is the provider's.
    pub hosts: Vec<(String, Ipv4Addr)>,
    /// Index of its receiver in the scenario's receiver list.
    pub receiver: usize,
    /// The largest share of unknown mailboxes its receiver has over the run:
    /// a mailbox is unknown when its hash falls below the share in force,
    /// so this share covers every refusal for good the run can see.
    pub unknown_share: f64,
}

/// One hidden capacity of the simulated internet and the domains behind it.
///
/// Large receivers meter the sending IP address, not the recipient domain:
/// a provider that hosts many domains (as Google Workspace and Microsoft 365
/// do) allows so many connections and messages per second from one sender
/// for all of them together. So the capacity lives here, once, and a domain
/// only points at its receiver; an ordinary domain is a receiver of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct SimReceiver {
    /// The domain's name, or the provider's.
    pub name: String,
    /// A provider of many domains rather than a domain of its own.
    pub provider: bool,
    /// Indices of its domains in the scenario's domain list.
    pub domains: Vec<usize>,
    /// Its share of the recipients: its domains' weights together.
    pub weight: f64,
    /// The addresses its MX sinks listen on; one capacity model serves them all.
    pub addrs: Vec<Ipv4Addr>,
    /// Capacity at the start, for all of its domains together.
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
