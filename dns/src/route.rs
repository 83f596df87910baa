//! What a resolution yields: the ordered MX hosts of a domain and their addresses.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::seq::SliceRandom;

/// Where a route came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// From the domain's MX records.
    Mx,
    /// The domain has no MX record: its own A/AAAA records (RFC 5321 section 5.1).
    ImplicitMx,
    /// From a static route in the configuration (no MX lookup).
    Static,
}

/// One mail server of a route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// Host name (lower case, no trailing dot); for a static address, the address as text.
    pub name: String,
    /// MX preference: lower is tried first.
    pub preference: u16,
    /// Its IPv4 and IPv6 addresses, IPv4 first, in the order the DNS gave them.
    pub addrs: Vec<IpAddr>,
}

/// The mail servers of one domain, in the order to try them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The domain (lower case, no trailing dot).
    pub domain: String,
    /// Hosts by ascending preference, equal preferences in random order; every
    /// host has at least one address.
    pub hosts: Vec<MxHost>,
    /// How the hosts were found.
    pub kind: RouteKind,
    /// The MX records were validated by DNSSEC (always false when the
    /// resolver does not validate): what lets DANE apply to the hosts.
    pub mx_secure: bool,
    /// The TTL the route was cached with (smallest of its records, clamped).
    pub ttl: Duration,
    /// When the route stops being valid.
    pub expires: Instant,
}

impl Route {
    /// True when the domain has no MX record and its own addresses are used.
    pub fn is_implicit(&self) -> bool {
        self.kind == RouteKind::ImplicitMx
    }

    /// All addresses of all hosts, in the order to try them.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.hosts.iter().flat_map(|h| h.addrs.iter().copied())
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RouteKind::Mx => "MX",
            RouteKind::ImplicitMx => "implicit MX (no MX record, the domain's own addresses)",
            RouteKind::Static => "static route",
        };
        writeln!(f, "{}: {} (ttl {}s)", self.domain, kind, self.ttl.as_secs())?;
        for h in &self.hosts {
            let addrs: Vec<String> = h.addrs.iter().map(IpAddr::to_string).collect();
            writeln!(f, "  {:>5} {} [{}]", h.preference, h.name, addrs.join(", "))?;
        }
        Ok(())
    }
}

/// Orders MX records for delivery: ascending preference, equal preferences
/// shuffled (RFC 5321 section 5.1 asks senders to spread load among them),
/// duplicates removed, at most `max` kept.
pub(crate) fn order_mx(mut mx: Vec<(u16, String)>, max: usize) -> Vec<(u16, String)> {
    let mut rng = rand::rng();
    mx.shuffle(&mut rng);
    // A stable sort keeps the shuffled order within one preference.
    mx.sort_by_key(|(pref, _)| *pref);
    let mut seen = std::collections::HashSet::new();
    mx.retain(|(_, name)| seen.insert(name.clone()));
    mx.truncate(max);
    mx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_preference_and_limits() {
        let mx = vec![
            (20, "c".to_string()),
            (10, "a".to_string()),
            (30, "d".to_string()),
            (10, "b".to_string()),
            (10, "a".to_string()),
        ];
        let out = order_mx(mx, 3);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].0, 10);
        assert_eq!(out[1].0, 10);
        assert_eq!(out[2], (20, "c".to_string()));
        let firsts: Vec<&str> = out[..2].iter().map(|(_, n)| n.as_str()).collect();
        assert!(firsts.contains(&"a") && firsts.contains(&"b"));
    }

    #[test]
    fn equal_preferences_are_shuffled() {
        let mx: Vec<(u16, String)> = (0..8).map(|i| (10, format!("mx{i}"))).collect();
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            firsts.insert(order_mx(mx.clone(), 8)[0].1.clone());
        }
        // 8 candidates, 200 draws: each missing has probability (7/8)^200.
        assert_eq!(firsts.len(), 8);
    }
}
