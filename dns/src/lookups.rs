//! Uncached lookups for work that is not delivery's: the TXT record and
//! the policy host's addresses of MTA-STS, looked up once per policy
//! refresh on a thread of their own, where the shards' MX cache and its
//! de-duplication would be of no use.

use std::net::IpAddr;

use crate::config::{ConfigError, ResolverConfig};
use crate::error::ResolveError;
use crate::upstream::{Records, Upstream};

/// TXT and address lookups with the resolver's nameservers and limits.
pub struct Lookups {
    upstream: Upstream,
}

impl Lookups {
    /// Lookups through the nameservers of `config` (or the system's); needs
    /// a tokio runtime to run on.
    pub fn new(config: &ResolverConfig) -> Result<Lookups, ConfigError> {
        Ok(Lookups {
            upstream: Upstream::new(config)?,
        })
    }

    /// The TXT records of `name` (each record's strings joined); empty
    /// when the name has none or does not exist.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, ResolveError> {
        Ok(found(self.upstream.txt(name).await?))
    }

    /// The addresses of `host`: IPv4 first, then IPv6; empty when none.
    pub async fn addrs(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let mut out = found(self.upstream.addrs(host, false).await?);
        out.extend(found(self.upstream.addrs(host, true).await?));
        Ok(out)
    }
}

fn found<T>(r: Records<T>) -> Vec<T> {
    match r {
        Records::Found(v, _, _) => v,
        Records::NoData(_) | Records::NxDomain(_) => Vec::new(),
    }
}
