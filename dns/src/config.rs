//! Resolver configuration, with defaults in one place (`impl Default` and the
//! serde defaults share the same values).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

/// How a shard's [`MxResolver`](crate::MxResolver) finds and caches routes.
///
/// Deserializes from TOML/JSON with durations written as `"30s"`, `"250ms"`,
/// `"5m"`, `"1h"`; every field may be left out.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResolverConfig {
    /// Nameservers to ask, as `ADDR:PORT`. Empty: the system's `/etc/resolv.conf`.
    pub nameservers: Vec<SocketAddr>,
    /// Query over UDP first and retry over TCP when the answer is truncated. When false,
    /// TCP only (useful where UDP is filtered).
    pub udp: bool,
    /// How long one query waits for an answer before it counts as a timeout.
    #[serde(deserialize_with = "volley_units::serde::duration::deserialize")]
    pub timeout: Duration,
    /// How many times a query is sent before the lookup fails transiently.
    pub attempts: usize,
    /// At most this many DNS queries in flight at once for this resolver
    /// (each UDP query holds a socket); further lookups wait their turn.
    pub max_concurrent_queries: usize,
    /// Lower bound on a positive answer's TTL: very short TTLs would make the
    /// cache useless for a mass-mail sender.
    #[serde(deserialize_with = "volley_units::serde::duration::deserialize")]
    pub min_ttl: Duration,
    /// Upper bound on any TTL, so a changed MX is noticed within this time.
    #[serde(deserialize_with = "volley_units::serde::duration::deserialize")]
    pub max_ttl: Duration,
    /// Upper bound on how long a permanent negative answer (NXDOMAIN, null MX,
    /// no address) is cached (RFC 2308); the SOA minimum is used when lower.
    #[serde(deserialize_with = "volley_units::serde::duration::deserialize")]
    pub negative_ttl: Duration,
    /// How long a transient failure (SERVFAIL, timeout) is cached, so a broken
    /// domain is not asked again for every message (RFC 2308 section 7 allows up to 5 minutes).
    #[serde(deserialize_with = "volley_units::serde::duration::deserialize")]
    pub transient_ttl: Duration,
    /// At most this many MX hosts (after ordering) are kept in a route; their
    /// addresses are looked up, the rest ignored.
    pub max_mx_hosts: usize,
    /// Fraction of a TTL after which an entry still wanted is refreshed in the
    /// background (0.8: refresh when 80% of the TTL has passed).
    pub refresh_ahead: f64,
    /// Domains routed to fixed hosts without MX lookup: each host is an IP
    /// address or a host name (looked up as A/AAAA), tried in the order given.
    pub static_routes: HashMap<String, Vec<String>>,
    /// Validate answers with DNSSEC. Needs nameservers that pass DNSSEC
    /// records on (any validating or plain recursive resolver does); what
    /// lets delivery use DANE.
    pub dnssec: bool,
    /// The trust anchors DNSSEC starts from: a file of DNSKEY records in
    /// zone-file form. Unset: the root zone's published keys.
    pub trust_anchor: Option<std::path::PathBuf>,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            nameservers: Vec::new(),
            udp: true,
            timeout: Duration::from_secs(5),
            attempts: 2,
            max_concurrent_queries: 512,
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(86_400),
            negative_ttl: Duration::from_secs(900),
            transient_ttl: Duration::from_secs(5),
            max_mx_hosts: 5,
            refresh_ahead: 0.8,
            static_routes: HashMap::new(),
            dnssec: false,
            trust_anchor: None,
        }
    }
}

impl ResolverConfig {
    /// A configuration that asks only `nameserver` (tests, `volley resolve --nameserver`).
    pub fn with_nameserver(nameserver: SocketAddr) -> Self {
        Self {
            nameservers: vec![nameserver],
            ..Self::default()
        }
    }

    /// Checks values that would make the resolver misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.attempts == 0 {
            return Err(ConfigError::Invalid("attempts must be at least 1".into()));
        }
        if self.max_concurrent_queries == 0 {
            return Err(ConfigError::Invalid(
                "max_concurrent_queries must be at least 1".into(),
            ));
        }
        if self.max_mx_hosts == 0 {
            return Err(ConfigError::Invalid(
                "max_mx_hosts must be at least 1".into(),
            ));
        }
        if self.min_ttl > self.max_ttl {
            return Err(ConfigError::Invalid("min_ttl is above max_ttl".into()));
        }
        if !(self.refresh_ahead > 0.0 && self.refresh_ahead <= 1.0) {
            return Err(ConfigError::Invalid(
                "refresh_ahead must be in (0, 1]".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Invalid("timeout must not be zero".into()));
        }
        if self.trust_anchor.is_some() && !self.dnssec {
            return Err(ConfigError::Invalid(
                "trust_anchor is set but dnssec is off".into(),
            ));
        }
        for (domain, hosts) in &self.static_routes {
            if hosts.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "static route {domain} has no hosts"
                )));
            }
        }
        Ok(())
    }

    /// The static route for `domain` (already lower-cased, no trailing dot), if any.
    pub(crate) fn static_route(&self, domain: &str) -> Option<Vec<StaticHost>> {
        let hosts = self.static_routes.iter().find_map(|(d, hosts)| {
            let d = d.trim_end_matches('.');
            d.eq_ignore_ascii_case(domain).then_some(hosts)
        })?;
        Some(hosts.iter().map(|h| StaticHost::parse(h)).collect())
    }
}

/// One host of a static route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StaticHost {
    Addr(IpAddr),
    Name(String),
}

impl StaticHost {
    fn parse(text: &str) -> Self {
        let t = text.trim().trim_start_matches('[').trim_end_matches(']');
        match t.parse::<IpAddr>() {
            Ok(ip) => Self::Addr(ip),
            Err(_) => Self::Name(t.trim_end_matches('.').to_ascii_lowercase()),
        }
    }
}

/// A configuration value the resolver cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field is out of its range; the text says which and why.
    #[error("invalid resolver configuration: {0}")]
    Invalid(String),
    /// The system resolver configuration (`/etc/resolv.conf`) could not be read.
    #[error("cannot read the system resolver configuration: {0}")]
    System(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_hosts_parse_addresses_and_names() {
        assert_eq!(
            StaticHost::parse("10.0.0.1"),
            StaticHost::Addr("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            StaticHost::parse("[::1]"),
            StaticHost::Addr("::1".parse().unwrap())
        );
        assert_eq!(
            StaticHost::parse("Relay.Example."),
            StaticHost::Name("relay.example".into())
        );
    }

    #[test]
    fn deserializes_with_human_durations_and_defaults() {
        let text = r#"
            nameservers = ["127.0.0.1:5353"]
            timeout = "250ms"
            max_ttl = "1h"
            negative_ttl = 120
            [static_routes]
            "example.test" = ["192.0.2.1", "relay.example.test"]
        "#;
        let c: ResolverConfig = toml::from_str(text).unwrap();
        assert_eq!(
            c.nameservers,
            ["127.0.0.1:5353".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.max_ttl, Duration::from_secs(3600));
        assert_eq!(c.negative_ttl, Duration::from_secs(120));
        assert_eq!(c.attempts, ResolverConfig::default().attempts);
        assert_eq!(
            c.static_route("example.test").unwrap()[0],
            StaticHost::Addr("192.0.2.1".parse().unwrap())
        );
        assert!(toml::from_str::<ResolverConfig>("timeout = \"soon\"").is_err());
        assert!(toml::from_str::<ResolverConfig>("tiemout = \"1s\"").is_err());
    }

    #[test]
    fn defaults_validate_and_bad_values_do_not() {
        assert!(ResolverConfig::default().validate().is_ok());
        let bad = ResolverConfig {
            refresh_ahead: 0.0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        let bad = ResolverConfig {
            attempts: 0,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }
}
