//! The queries themselves, through hickory-resolver, mapped to Volley's outcomes.
//!
//! hickory's own response cache is kept tiny: caching, refresh and
//! de-duplication happen per shard in [`crate::MxResolver`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig as HickoryConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::dnssec::TrustAnchors;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};

use tokio::sync::Semaphore;

use crate::config::{ConfigError, ResolverConfig};
use crate::error::ResolveError;
use crate::tlsa::{TlsaRecord, Validation};

/// The records of one type at one name, or why there are none.
#[derive(Debug)]
pub(crate) enum Records<T> {
    /// Records found, with the smallest TTL among them (seconds), and what
    /// DNSSEC validation said of them.
    Found(Vec<T>, u32, Validation),
    /// The name exists but has no record of this type; negative TTL from the SOA if any.
    NoData(Option<u32>),
    /// The name does not exist; negative TTL from the SOA if any.
    NxDomain(Option<u32>),
}

pub(crate) struct Upstream {
    resolver: TokioResolver,
    /// Bounds the queries in flight (sockets, and the nameserver's patience).
    permits: Semaphore,
    /// The nameservers asked, as text for error messages.
    nameservers: String,
}

impl Upstream {
    pub(crate) fn new(config: &ResolverConfig) -> Result<Self, ConfigError> {
        let (hickory_config, mut opts) = if config.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| ConfigError::System(e.to_string()))?
        } else {
            let servers = config
                .nameservers
                .iter()
                .map(|addr| name_server(*addr, config.udp))
                .collect();
            (
                HickoryConfig::from_parts(None, vec![], servers),
                ResolverOpts::default(),
            )
        };
        let nameservers = nameserver_text(&hickory_config);
        opts.timeout = config.timeout;
        // hickory counts retries after the first try; ours counts tries.
        opts.attempts = config.attempts.saturating_sub(1);
        // TCP after UDP only on truncation (hickory does that by itself): retrying
        // a timeout over TCP would double the time a dead server costs.
        opts.try_tcp_on_error = false;
        opts.use_hosts_file = ResolveHosts::Never;
        // Our per-shard cache does the caching; hickory's would only cost
        // memory. With DNSSEC it keeps the zones' keys (DNSKEY, DS), which
        // every validated answer needs again.
        opts.cache_size = if config.dnssec { 4096 } else { 0 };
        opts.validate = config.dnssec;
        // Cold starts resolve thousands of domains at once.
        opts.max_active_requests = 8192;
        opts.ndots = 0;
        let mut builder =
            Resolver::builder_with_config(hickory_config, TokioRuntimeProvider::default())
                .with_options(opts);
        if let (true, Some(path)) = (config.dnssec, &config.trust_anchor) {
            let anchors = TrustAnchors::from_file(path).map_err(|e| {
                ConfigError::Invalid(format!("trust_anchor {}: {e}", path.display()))
            })?;
            builder = builder.with_trust_anchor(Arc::new(anchors));
        }
        let resolver = builder
            .build()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Self {
            resolver,
            permits: Semaphore::new(config.max_concurrent_queries),
            nameservers,
        })
    }

    /// The nameservers asked, as `ADDR:PORT, ...`.
    pub(crate) fn nameservers(&self) -> &str {
        &self.nameservers
    }

    /// Whether some nameserver answers at all: asks for the root's NS
    /// records, and any reply, even a refusal, counts.
    pub(crate) async fn answers(&self) -> Result<(), ResolveError> {
        match self.resolver.lookup(Name::root(), RecordType::NS).await {
            Ok(_) => Ok(()),
            Err(e) => match map_error::<()>(".", e, &self.nameservers) {
                Ok(_) | Err(ResolveError::ServerFailure { .. }) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// MX records of `domain` as (preference, exchange) with exchange lower-cased
    /// and without trailing dot ("" for a null MX).
    pub(crate) async fn mx(&self, domain: &str) -> Result<Records<(u16, String)>, ResolveError> {
        self.query(domain, RecordType::MX, |rdata| match rdata {
            RData::MX(mx) => Some((mx.preference, host_text(&mx.exchange))),
            _ => None,
        })
        .await
    }

    /// A or AAAA records of `host`.
    pub(crate) async fn addrs(
        &self,
        host: &str,
        v6: bool,
    ) -> Result<Records<IpAddr>, ResolveError> {
        let rtype = if v6 { RecordType::AAAA } else { RecordType::A };
        self.query(host, rtype, |rdata| match rdata {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .await
    }

    /// TLSA records of `name` (`_25._tcp.HOST`).
    pub(crate) async fn tlsa(&self, name: &str) -> Result<Records<TlsaRecord>, ResolveError> {
        self.query(name, RecordType::TLSA, |rdata| match rdata {
            RData::TLSA(t) => Some(TlsaRecord {
                usage: t.cert_usage.into(),
                selector: t.selector.into(),
                matching: t.matching.into(),
                data: t.cert_data.clone(),
            }),
            _ => None,
        })
        .await
    }

    /// TXT records of `name`, each as its strings joined (RFC 7208 3.3).
    pub(crate) async fn txt(&self, name: &str) -> Result<Records<String>, ResolveError> {
        self.query(name, RecordType::TXT, |rdata| match rdata {
            RData::TXT(txt) => Some(
                txt.txt_data
                    .iter()
                    .map(|part| String::from_utf8_lossy(part))
                    .collect(),
            ),
            _ => None,
        })
        .await
    }

    async fn query<T>(
        &self,
        name: &str,
        rtype: RecordType,
        extract: impl Fn(&RData) -> Option<T>,
    ) -> Result<Records<T>, ResolveError> {
        let mut fqdn = Name::from_ascii(name).map_err(|e| ResolveError::InvalidDomain {
            domain: name.to_string(),
            reason: e.to_string(),
        })?;
        fqdn.set_fqdn(true);
        let Ok(_permit) = self.permits.acquire().await else {
            return Err(ResolveError::Lookup {
                domain: name.to_string(),
                message: "resolver closed".into(),
            });
        };
        match self.resolver.lookup(fqdn, rtype).await {
            Ok(lookup) => {
                let mut ttl = u32::MAX;
                let mut found = Vec::new();
                let mut validation = Validation::Secure;
                for record in lookup.answers() {
                    if record.record_type() != rtype {
                        continue; // CNAMEs on the way
                    }
                    if let Some(v) = extract(&record.data) {
                        ttl = ttl.min(record.ttl);
                        found.push(v);
                        validation = validation.and(proof_of(record));
                    }
                }
                if found.is_empty() {
                    Ok(Records::NoData(None))
                } else {
                    Ok(Records::Found(found, ttl, validation))
                }
            }
            Err(e) => map_error(name, e, &self.nameservers),
        }
    }
}

/// What validation said of one record (insecure when it did not run).
fn proof_of(record: &hickory_resolver::proto::rr::Record) -> Validation {
    use hickory_resolver::proto::dnssec::Proof;
    match record.proof {
        Proof::Secure => Validation::Secure,
        Proof::Bogus => Validation::Bogus,
        Proof::Insecure | Proof::Indeterminate => Validation::Insecure,
    }
}

fn name_server(addr: SocketAddr, udp: bool) -> NameServerConfig {
    let mut conns = Vec::new();
    if udp {
        let mut c = ConnectionConfig::udp();
        c.port = addr.port();
        conns.push(c);
    }
    let mut c = ConnectionConfig::tcp();
    c.port = addr.port();
    conns.push(c);
    NameServerConfig::new(addr.ip(), true, conns)
}

fn host_text(name: &Name) -> String {
    let mut s = name.to_ascii().to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// `ADDR:PORT, ...` of every nameserver in `config`.
fn nameserver_text(config: &HickoryConfig) -> String {
    let servers: Vec<String> = config
        .name_servers()
        .iter()
        .map(|ns| {
            let port = ns.connections.first().map_or(53, |c| c.port);
            SocketAddr::new(ns.ip, port).to_string()
        })
        .collect();
    if servers.is_empty() {
        "no nameserver".into()
    } else {
        servers.join(", ")
    }
}

fn map_error<T>(name: &str, e: NetError, nameservers: &str) -> Result<Records<T>, ResolveError> {
    let domain = name.to_string();
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            if nr.response_code == ResponseCode::NXDomain {
                Ok(Records::NxDomain(nr.negative_ttl))
            } else {
                Ok(Records::NoData(nr.negative_ttl))
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => Err(ResolveError::ServerFailure {
            domain,
            code: code.to_string(),
        }),
        NetError::Timeout => Err(ResolveError::Timeout {
            domain,
            nameservers: nameservers.to_string(),
        }),
        other => Err(ResolveError::Lookup {
            domain,
            message: other.to_string(),
        }),
    }
}
