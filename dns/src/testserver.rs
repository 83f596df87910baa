//! A real authoritative DNS server for tests and benchmarks: hickory-server
//! in-process, on UDP and TCP at 127.0.0.1 and one port, serving a zone built
//! from a [`TestZone`] description, with optional latency and injected faults.
//!
//! It runs on a thread of its own with its own tokio runtime, so it works from
//! a plain `#[test]`, a tokio runtime or a tokio-uring shard alike; dropping
//! the [`TestDnsServer`] stops it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::config::ResolverConfig;

/// A fault the test server injects for one name (all record types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Answer NXDOMAIN even though the name has records.
    NxDomain,
    /// Never answer (the client times out).
    NoAnswer,
}

/// The zone a [`TestDnsServer`] serves: mail domains, their MX hosts and the
/// hosts' addresses, TTLs, latency and faults. Built by chained calls.
#[derive(Clone, Debug)]
pub struct TestZone {
    ttl: u32,
    negative_ttl: u32,
    latency: Duration,
    mx: HashMap<String, Vec<(u16, String)>>,
    addrs: HashMap<String, Vec<IpAddr>>,
    txt: HashMap<String, Vec<String>>,
    ttls: HashMap<String, u32>,
    faults: HashMap<String, Fault>,
}

impl Default for TestZone {
    fn default() -> Self {
        Self {
            ttl: 300,
            negative_ttl: 60,
            latency: Duration::ZERO,
            mx: HashMap::new(),
            addrs: HashMap::new(),
            txt: HashMap::new(),
            ttls: HashMap::new(),
            faults: HashMap::new(),
        }
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl TestZone {
    /// An empty zone: TTL 300 s, negative TTL (SOA minimum) 60 s, no latency.
    pub fn new() -> Self {
        Self::default()
    }

    /// `domains` mail domains `d{i}.{suffix}`, each with `mx_per_domain` MX
    /// hosts (preferences 10, 20, ...) drawn in turn from a pool of
    /// `host_pool` hosts `mx{k}.{suffix}` at 127.0.0.2 ... 127.0.0.251.
    pub fn generated(suffix: &str, domains: usize, mx_per_domain: usize, host_pool: usize) -> Self {
        let pool = host_pool.max(1);
        let mut zone = Self::new();
        for k in 0..pool {
            let last = u8::try_from(2 + k % 250).unwrap_or(2);
            zone = zone.host(
                &format!("mx{k}.{suffix}"),
                [IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))],
            );
        }
        for i in 0..domains {
            let hosts: Vec<(u16, String)> = (0..mx_per_domain)
                .map(|j| {
                    let pref = u16::try_from(10 * (j + 1)).unwrap_or(u16::MAX);
                    (pref, format!("mx{}.{suffix}", (i + j) % pool))
                })
                .collect();
            zone.mx.insert(format!("d{i}.{suffix}"), hosts);
        }
        zone
    }

    /// Default TTL of every record, in seconds.
    pub fn ttl(mut self, secs: u32) -> Self {
        self.ttl = secs;
        self
    }

    /// The SOA minimum: how long negative answers may be cached, in seconds.
    pub fn negative_ttl(mut self, secs: u32) -> Self {
        self.negative_ttl = secs;
        self
    }

    /// TTL of the records at one name, in seconds.
    pub fn name_ttl(mut self, name: &str, secs: u32) -> Self {
        self.ttls.insert(key(name), secs);
        self
    }

    /// Delay before every answer (simulates a distant nameserver).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// MX records of `domain`: (preference, host). Replaces earlier ones.
    pub fn mx<'a>(mut self, domain: &str, hosts: impl IntoIterator<Item = (u16, &'a str)>) -> Self {
        let hosts = hosts.into_iter().map(|(p, h)| (p, key(h))).collect();
        self.mx.insert(key(domain), hosts);
        self
    }

    /// A null MX for `domain` (RFC 7505: "0 .").
    pub fn null_mx(mut self, domain: &str) -> Self {
        self.mx.insert(key(domain), vec![(0, String::new())]);
        self
    }

    /// A and AAAA records of `name`. Replaces earlier ones.
    pub fn host(mut self, name: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.addrs.insert(key(name), addrs.into_iter().collect());
        self
    }

    /// TXT records of `name`, one string each. Replaces earlier ones.
    pub fn txt<'a>(mut self, name: &str, texts: impl IntoIterator<Item = &'a str>) -> Self {
        self.txt
            .insert(key(name), texts.into_iter().map(str::to_owned).collect());
        self
    }

    /// Injects `fault` for every query about `name`.
    pub fn fault(mut self, name: &str, fault: Fault) -> Self {
        self.faults.insert(key(name), fault);
        self
    }

    /// Removes the fault for `name`.
    pub fn clear_fault(mut self, name: &str) -> Self {
        self.faults.remove(&key(name));
        self
    }

    /// Removes every record of `name` (it becomes NXDOMAIN).
    pub fn remove(mut self, name: &str) -> Self {
        let k = key(name);
        self.mx.remove(&k);
        self.addrs.remove(&k);
        self.txt.remove(&k);
        self
    }

    fn plan(&self, name: &str, qtype: RecordType) -> Plan {
        match self.faults.get(name) {
            Some(Fault::NoAnswer) => return Plan::Silence,
            Some(Fault::ServFail) => return Plan::answer(ResponseCode::ServFail, vec![], None),
            Some(Fault::Refused) => return Plan::answer(ResponseCode::Refused, vec![], None),
            Some(Fault::NxDomain) => {
                return Plan::answer(ResponseCode::NXDomain, vec![], Some(self.soa(name)));
            }
            None => {}
        }
        let mx = self.mx.get(name);
        let addrs = self.addrs.get(name);
        let txt = self.txt.get(name);
        if mx.is_none() && addrs.is_none() && txt.is_none() {
            return Plan::answer(ResponseCode::NXDomain, vec![], Some(self.soa(name)));
        }
        let Ok(owner) = Name::from_ascii(format!("{name}.")) else {
            return Plan::answer(ResponseCode::FormErr, vec![], None);
        };
        let ttl = self.ttls.get(name).copied().unwrap_or(self.ttl);
        let mut records = Vec::new();
        match qtype {
            RecordType::MX => {
                for (pref, host) in mx.into_iter().flatten() {
                    let exchange = if host.is_empty() {
                        Some(Name::root())
                    } else {
                        Name::from_ascii(format!("{host}.")).ok()
                    };
                    if let Some(exchange) = exchange {
                        let rdata = RData::MX(MX::new(*pref, exchange));
                        records.push(Record::from_rdata(owner.clone(), ttl, rdata));
                    }
                }
            }
            RecordType::A | RecordType::AAAA => {
                for ip in addrs.into_iter().flatten() {
                    let rdata = match (ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                        (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                        _ => continue,
                    };
                    records.push(Record::from_rdata(owner.clone(), ttl, rdata));
                }
            }
            RecordType::TXT => {
                for text in txt.into_iter().flatten() {
                    let rdata = RData::TXT(TXT::new(vec![text.clone()]));
                    records.push(Record::from_rdata(owner.clone(), ttl, rdata));
                }
            }
            _ => {}
        }
        if records.is_empty() {
            Plan::answer(ResponseCode::NoError, vec![], Some(self.soa(name)))
        } else {
            Plan::answer(ResponseCode::NoError, records, None)
        }
    }

    /// An SOA for the negative answer about `name`, owned by its last label.
    fn soa(&self, name: &str) -> Record {
        let apex = name.rsplit('.').next().unwrap_or("test");
        let apex = Name::from_ascii(format!("{apex}.")).unwrap_or_else(|_| Name::root());
        let mname = Name::from_ascii("ns.volley.test.").unwrap_or_else(|_| Name::root());
        let rname = Name::from_ascii("hostmaster.volley.test.").unwrap_or_else(|_| Name::root());
        let soa = SOA::new(mname, rname, 1, 3600, 600, 86_400, self.negative_ttl);
        Record::from_rdata(apex, self.negative_ttl, RData::SOA(soa))
    }
}

enum Plan {
    Answer {
        code: ResponseCode,
        answers: Vec<Record>,
        soa: Option<Box<Record>>,
    },
    Silence,
}

impl Plan {
    fn answer(code: ResponseCode, answers: Vec<Record>, soa: Option<Record>) -> Self {
        Self::Answer {
            code,
            answers,
            soa: soa.map(Box::new),
        }
    }
}

struct Shared {
    zone: RwLock<TestZone>,
    total: AtomicU64,
    per_name: Mutex<HashMap<String, u64>>,
}

struct Handler(Arc<Shared>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let Ok(info) = request.request_info() else {
            metadata.response_code = ResponseCode::FormErr;
            return info_of(metadata);
        };
        let name = key(&info.query.name().to_string());
        let qtype = info.query.query_type();
        self.0.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut per_name) = self.0.per_name.lock() {
            *per_name.entry(name.clone()).or_default() += 1;
        }
        let (latency, plan) = match self.0.zone.read() {
            Ok(zone) => (zone.latency, zone.plan(&name, qtype)),
            Err(_) => (
                Duration::ZERO,
                Plan::answer(ResponseCode::ServFail, vec![], None),
            ),
        };
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let Plan::Answer { code, answers, soa } = plan else {
            return info_of(metadata);
        };
        metadata.response_code = code;
        let message = MessageResponseBuilder::from_message_request(request).build(
            metadata,
            answers.iter(),
            std::iter::empty(),
            soa.as_deref(),
            std::iter::empty(),
        );
        match response.send_response(message).await {
            Ok(info) => info,
            Err(_) => info_of(metadata),
        }
    }
}

fn info_of(metadata: Metadata) -> ResponseInfo {
    ResponseInfo::from(Header {
        metadata,
        counts: HeaderCounts::default(),
    })
}

/// A running test DNS server; stops when dropped.
pub struct TestDnsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestDnsServer {
    /// Binds UDP and TCP on 127.0.0.1 (one free port for both) and serves `zone`.
    pub fn start(zone: TestZone) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            zone: RwLock::new(zone),
            total: AtomicU64::new(0),
            per_name: Mutex::new(HashMap::new()),
        });
        let mut server = TestDnsServer::serving(Handler(shared.clone()))?;
        server.shared = shared;
        Ok(server)
    }

    /// Serves whatever `handler` answers (a [`TestZone`], or a signed
    /// zone's catalog); the query counters count only a [`TestZone`]'s.
    pub(crate) fn serving<H: RequestHandler>(handler: H) -> io::Result<Self> {
        let (udp, tcp) = bind_pair()?;
        let addr = udp.local_addr()?;
        let shared = Arc::new(Shared {
            zone: RwLock::new(TestZone::new()),
            total: AtomicU64::new(0),
            per_name: Mutex::new(HashMap::new()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name("volley-test-dns".into())
            .spawn(move || serve(handler, udp, tcp, stopped, ready_tx))?;
        ready_rx
            .recv()
            .map_err(|_| io::Error::other("test DNS server thread died"))??;
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A resolver configuration that asks only this server, with a short
    /// timeout and no TTL floor so tests see the zone's own TTLs.
    pub fn resolver_config(&self) -> ResolverConfig {
        ResolverConfig {
            timeout: Duration::from_millis(500),
            attempts: 1,
            min_ttl: Duration::ZERO,
            ..ResolverConfig::with_nameserver(self.addr)
        }
    }

    /// Queries received so far (all names and types, faults included).
    pub fn queries(&self) -> u64 {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Queries received so far about `name` (all types).
    pub fn queries_for(&self, name: &str) -> u64 {
        self.shared
            .per_name
            .lock()
            .map(|m| m.get(&key(name)).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Changes the zone while the server runs, e.g.
    /// `server.update(|z| z.mx("a.test", [(5, "new.a.test")]))`.
    pub fn update(&self, change: impl FnOnce(TestZone) -> TestZone) {
        if let Ok(mut zone) = self.shared.zone.write() {
            let current = std::mem::take(&mut *zone);
            *zone = change(current);
        }
    }
}

impl Drop for TestDnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind_pair() -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..32 {
        let udp = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = udp.local_addr()?.port();
        match std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(tcp) => {
                udp.set_nonblocking(true)?;
                tcp.set_nonblocking(true)?;
                return Ok((udp, tcp));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

fn serve<H: RequestHandler>(
    handler: H,
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
    stopped: tokio::sync::oneshot::Receiver<()>,
    ready: mpsc::Sender<io::Result<()>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    runtime.block_on(async move {
        let sockets = tokio::net::UdpSocket::from_std(udp)
            .and_then(|u| Ok((u, tokio::net::TcpListener::from_std(tcp)?)));
        let (udp, tcp) = match sockets {
            Ok(pair) => pair,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let mut server = Server::new(handler);
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 64 * 1024);
        let _ = ready.send(Ok(()));
        let _ = stopped.await;
        let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown_gracefully()).await;
    });
}
