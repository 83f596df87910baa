//! The simulated internet: a test DNS server that maps each scenario domain
//! to its MX hosts, and one MX sink listener per receiver address (all on
//! one port), enforcing the receiver's hidden capacity and recording every
//! accepted message. An ordinary domain is a receiver of its own with an
//! address per MX host; a provider is one receiver, at one address, behind
//! all of its domains, so its capacity holds for them together.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use socket2::{Domain, Socket, Type};
use volley_dns::{TestDnsServer, TestZone};

use crate::capacity::{Capacity, DomainModel};
use crate::counters::DomainCounters;
use crate::error::{BenchError, ScenarioError};
use crate::ledger::{Accounting, Delivery, SentRecord, reconcile};
use crate::message::unix_micros;
use crate::mx::{MxSink, SinkTls};
use crate::scenario::{Scenario, SimDomain, SimReceiver, is_expected_bounce};
use crate::sink::{DomainSink, Shared};

/// How to run the simulated internet.
#[derive(Debug, Clone)]
pub struct InternetOptions {
    /// Port every MX host listens on; 0 picks a free one.
    pub sink_port: u16,
    /// Threads serving the sinks (listeners are spread over them).
    pub sink_threads: usize,
    /// Every sink offers STARTTLS with this configuration; `None`: none.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for InternetOptions {
    fn default() -> Self {
        Self {
            sink_port: 0,
            sink_threads: 1,
            tls: None,
        }
    }
}

/// A running simulated internet; stops (DNS and sinks) when dropped.
pub struct SimulatedInternet {
    dns: TestDnsServer,
    port: u16,
    shared: Arc<Shared>,
    /// The sink threads; they stop when this is dropped.
    _sinks: MxSink,
    start_micros: u64,
    name: String,
}

impl SimulatedInternet {
    /// Starts the DNS server and the sinks of `scenario` with default options.
    pub fn start(scenario: &Scenario) -> Result<Self, BenchError> {
        Self::start_with(scenario, &InternetOptions::default())
    }

    /// Starts the DNS server and the sinks of `scenario`.
    pub fn start_with(scenario: &Scenario, options: &InternetOptions) -> Result<Self, BenchError> {
        let (domains, receivers) = scenario.resolve()?;
        let mut zone = TestZone::new();
        if let Some(latency) = scenario.dns_latency {
            zone = zone.latency(latency);
        }
        if let Some(ttl) = scenario.dns_ttl {
            zone = zone.ttl(u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX).max(1));
        }
        for d in &domains {
            zone = zone.mx(&d.name, d.hosts.iter().map(|(h, _)| (10u16, h.as_str())));
            for (host, addr) in &d.hosts {
                zone = zone.host(host, [IpAddr::V4(*addr)]);
            }
        }
        let dns = TestDnsServer::start(zone)
            .map_err(|e| BenchError::io("starting the test DNS server", e))?;
        let (port, listeners) = bind_all(&receivers, options.sink_port)?;
        let start = Instant::now();
        let start_micros = unix_micros();
        let models = receivers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Mutex::new(DomainModel::new(
                    r.capacity.clone(),
                    r.changes.clone(),
                    start,
                    scenario.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
                ))
            })
            .collect();
        let by_name: HashMap<String, usize> = domains
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.clone(), i))
            .collect();
        let shared = Arc::new(Shared {
            domains,
            by_name,
            receivers,
            models,
            deliveries: Mutex::new(Vec::new()),
        });
        let listeners = listeners
            .into_iter()
            .map(|(receiver, l)| {
                let sink = DomainSink {
                    shared: shared.clone(),
                    receiver,
                    tls: options.tls.clone().map(SinkTls::Offer),
                };
                (l, Arc::new(sink))
            })
            .collect();
        let sinks = MxSink::start(listeners, options.sink_threads)
            .map_err(|e| BenchError::io("starting a sink thread", e))?;
        Ok(Self {
            dns,
            port,
            shared,
            _sinks: sinks,
            start_micros,
            name: scenario.name.clone(),
        })
    }

    /// The scenario's name.
    pub fn scenario_name(&self) -> &str {
        &self.name
    }

    /// The DNS server (UDP and TCP) that knows every simulated domain.
    pub fn dns_addr(&self) -> SocketAddr {
        self.dns.addr()
    }

    /// A resolver configuration asking only this internet's DNS server.
    pub fn resolver_config(&self) -> volley_dns::ResolverConfig {
        self.dns.resolver_config()
    }

    /// DNS queries answered so far.
    pub fn dns_queries(&self) -> u64 {
        self.dns.queries()
    }

    /// The port every MX host listens on.
    pub fn sink_port(&self) -> u16 {
        self.port
    }

    /// When the sinks started, microseconds since the epoch (the origin of
    /// every per-second series).
    pub fn start_micros(&self) -> u64 {
        self.start_micros
    }

    /// The domains, with their hosts and receivers.
    pub fn domains(&self) -> &[SimDomain] {
        &self.shared.domains
    }

    /// The receivers of a capacity (ordinary domains, then providers), in
    /// the order of [`counters`](Self::counters).
    pub fn receivers(&self) -> &[SimReceiver] {
        &self.shared.receivers
    }

    /// Changes the hidden capacity of the receiver `name` now (an incident,
    /// a provider that clamps down): a domain of its own, or a provider by
    /// its name. False when there is no such receiver, also for one domain
    /// of a provider: its domains share the provider's capacity.
    pub fn set_capacity(&self, name: &str, capacity: Capacity) -> bool {
        let Some(i) = self
            .shared
            .receivers
            .iter()
            .position(|r| r.name.eq_ignore_ascii_case(name))
        else {
            return false;
        };
        match self.shared.models[i].lock() {
            Ok(mut m) => {
                m.set_capacity(Instant::now(), capacity);
                true
            }
            Err(_) => false,
        }
    }

    /// Starts (`true`) or ends a DNS outage of `domain`: while it lasts the
    /// DNS server never answers a query for the domain's name (its MX
    /// records), so a sender's lookups time out once its cache expires.
    /// False when the scenario has no such domain.
    pub fn set_dns_outage(&self, domain: &str, on: bool) -> bool {
        let domain = domain.to_ascii_lowercase();
        if !self.shared.by_name.contains_key(&domain) {
            return false;
        }
        self.dns.update(|zone| {
            if on {
                zone.fault(&domain, volley_dns::Fault::NoAnswer)
            } else {
                zone.clear_fault(&domain)
            }
        });
        true
    }

    /// A copy of every receiver's counters, in [`receivers`](Self::receivers)
    /// order: a provider's count once for all of its domains; without
    /// providers, one per domain in [`domains`](Self::domains) order.
    pub fn counters(&self) -> Vec<DomainCounters> {
        self.shared
            .models
            .iter()
            .map(|m| m.lock().map(|m| m.counters().clone()).unwrap_or_default())
            .collect()
    }

    /// Messages accepted so far (one per recipient).
    pub fn delivered(&self) -> usize {
        self.shared.deliveries.lock().map(|d| d.len()).unwrap_or(0)
    }

    /// A copy of every accepted message's record.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.shared
            .deliveries
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default()
    }

    /// Whether this internet refuses `recipient` for good (unknown mailbox):
    /// a bounce is then its correct end.
    pub fn is_expected_bounce(&self, recipient: &str) -> bool {
        is_expected_bounce(&self.shared.domains, recipient)
    }

    /// Loss and duplicate accounting of `sent` against what the sinks kept.
    pub fn accounting(&self, sent: &[SentRecord]) -> Accounting {
        let deliveries = self.deliveries();
        reconcile(sent, &deliveries, |r| self.is_expected_bounce(r))
    }

    /// A `domain smtp:[address]:port` line per domain (first MX host), in the
    /// form of a Postfix transport map, for MTAs that cannot be pointed at
    /// another DNS server.
    pub fn routes(&self) -> String {
        let mut out = String::new();
        for (domain, addr) in self.mx_routes() {
            out.push_str(&format!("{domain} smtp:[{}]:{}\n", addr.ip(), addr.port()));
        }
        out
    }

    /// Each domain with the address of its first MX host: the routes a
    /// Composer needs to deliver straight into the sinks (see
    /// [`ComposeConfig::routes`](crate::ComposeConfig::routes)).
    pub fn mx_routes(&self) -> Vec<(String, SocketAddr)> {
        self.shared
            .domains
            .iter()
            .filter_map(|d| {
                let (_, addr) = d.hosts.first()?;
                Some((
                    d.name.clone(),
                    SocketAddr::V4(SocketAddrV4::new(*addr, self.port)),
                ))
            })
            .collect()
    }
}

/// Reads a transport map as [`SimulatedInternet::routes`] writes it
/// (`domain smtp:[address]:port` per line; blank lines and `#` comments
/// skipped).
pub fn parse_routes(text: &str) -> Result<Vec<(String, SocketAddr)>, ScenarioError> {
    let mut routes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            ScenarioError::Invalid(format!(
                "routes line {}: expected `domain smtp:[address]:port`, got {line:?}",
                i + 1
            ))
        };
        let (domain, next) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let next = next.trim();
        let rest = next.strip_prefix("smtp:[").ok_or_else(bad)?;
        let (ip, port) = rest.split_once("]:").ok_or_else(bad)?;
        let ip: IpAddr = ip.parse().map_err(|_| bad())?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        routes.push((domain.to_ascii_lowercase(), SocketAddr::new(ip, port)));
    }
    Ok(routes)
}

/// Binds every address of every receiver on one port; retries with another
/// port when one address has it taken already.
fn bind_all(
    receivers: &[SimReceiver],
    port: u16,
) -> Result<(u16, Vec<(usize, std::net::TcpListener)>), BenchError> {
    let mut last = None;
    for _ in 0..if port == 0 { 16 } else { 1 } {
        let mut listeners = Vec::new();
        let mut chosen = port;
        let mut failed = None;
        'all: for (i, r) in receivers.iter().enumerate() {
            for addr in &r.addrs {
                match listen(SocketAddrV4::new(*addr, chosen)) {
                    Ok(l) => {
                        if chosen == 0 {
                            chosen = l.local_addr().map(|a| a.port()).unwrap_or(0);
                        }
                        listeners.push((i, l));
                    }
                    Err(e) => {
                        failed = Some(BenchError::io(
                            format!("binding the sink of {} at {addr}:{chosen}", r.name),
                            e,
                        ));
                        break 'all;
                    }
                }
            }
        }
        match failed {
            None => return Ok((chosen, listeners)),
            Some(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| BenchError::io("binding sinks", io::Error::other("no domains"))))
}

fn listen(addr: SocketAddrV4) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_refuse_bad_lines() {
        let r =
            parse_routes("# map\n\nA.test smtp:[127.0.0.5]:2526\nb.test  smtp:[::1]:25\n").unwrap();
        assert_eq!(
            r,
            vec![
                ("a.test".to_string(), "127.0.0.5:2526".parse().unwrap()),
                ("b.test".to_string(), "[::1]:25".parse().unwrap()),
            ]
        );
        for bad in [
            "a.test",
            "a.test smtp:127.0.0.5:25",
            "a.test smtp:[x]:25",
            "a.test smtp:[127.0.0.1]:99999",
        ] {
            let e = parse_routes(bad).unwrap_err().to_string();
            assert!(e.contains("routes line 1"), "{bad}: {e}");
        }
    }
}
