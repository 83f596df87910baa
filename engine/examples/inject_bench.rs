//! A templated mailing through the injection API against the same mailing
//! pre-rendered and sent over SMTP, in one run. Not a test: a measurement
//! (see the README).
//!
//!     cargo run --release -p volley-engine --example inject_bench -- [MEMORY_RECIPIENTS] [RATE_RECIPIENTS]
//!
//! 1. Memory: MEMORY_RECIPIENTS recipients of one 2 KB template with three
//!    short variables each, posted in requests of 1,000 to a Volley whose
//!    MX host accepts connections and never greets (so everything stays
//!    queued); the resident set's growth per recipient, template and all.
//! 2. Throughput: RATE_RECIPIENTS recipients to sinks that take everything
//!    (the bench queue is static, `adaptive = false`, so that the rate
//!    controller's ramp does not pace both alike), once through the API
//!    (rendered at send time on the shards) and once as the same messages
//!    rendered by the Composer and sent over SMTP; the time until every
//!    message is at a sink.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_bench::{DataEnd, MxService, MxSession, MxSink};
use volley_engine::{Config, Engine, ListenerConfig, SpecificQueue};
use volley_smtp::{Client, ClientConfig, ClientEvent, Reply, ServerConfig, Transaction};

const DOMAINS: usize = 50;
const PER_REQUEST: usize = 1000;

/// The mailing: about 2 KB once rendered, three variables of its own.
fn template() -> String {
    let mut t = String::from(
        "From: News <news@composer.bench>\nTo: {{ name }} <{{ email }}>\nSubject: Your code {{ code }}, {{ first }}\n\nDear {{ first }} in {{ city }},\n\n",
    );
    while t.len() < 1900 {
        t.push_str("this is the shared text of the campaign, the same for all.\n");
    }
    t.push_str("Your code is {{ code }}.\n");
    t
}

fn vars(i: usize) -> (String, String, String) {
    (
        format!("F{}", i % 9973),
        format!("{:06}", i % 999_983),
        ["Oslo", "Rome", "Lima", "Kyiv"][i % 4].to_string(),
    )
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Posts one request of recipients `from..to`; panics unless all are taken.
fn post(admin: SocketAddr, template: &str, from: usize, to: usize) {
    let recipients: Vec<serde_json::Value> = (from..to)
        .map(|i| {
            let (first, code, city) = vars(i);
            serde_json::json!({
                "email": format!("user{i}@d{}.bench", i % DOMAINS),
                "substitutions": {"first": first, "code": code, "city": city},
            })
        })
        .collect();
    let body = serde_json::json!({
        "envelope_sender": "news@composer.bench",
        "content": template,
        "recipients": recipients,
    })
    .to_string();
    let mut s = TcpStream::connect(admin).expect("the admin server");
    write!(
        s,
        "POST /api/inject/v1 HTTP/1.0\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("answer");
    let want = format!("\"success_count\":{}", to - from);
    assert!(answer.contains(&want), "{answer}");
}

/// Counts what it accepts.
struct Counting(Arc<AtomicU64>);

impl MxService for Counting {
    type Session = Counted;
    fn server_config(&self) -> ServerConfig {
        ServerConfig {
            hostname: "sink.bench".into(),
            ..ServerConfig::default()
        }
    }
    fn connect(&self, _peer: SocketAddr) -> Result<Counted, Reply> {
        Ok(Counted(self.0.clone()))
    }
}

struct Counted(Arc<AtomicU64>);

impl MxSession for Counted {
    fn message_complete(&mut self, _recipients: &[String]) -> DataEnd {
        self.0.fetch_add(1, Ordering::Relaxed);
        DataEnd::Accept {
            delay: Duration::ZERO,
        }
    }
}

/// Sends `txs` over one SMTP session; how many were acknowledged.
fn send(addr: SocketAddr, txs: Vec<Transaction>) -> usize {
    let mut stream = TcpStream::connect(addr).expect("connect to the engine");
    let _ = stream.set_nodelay(true);
    let mut client = Client::new(ClientConfig {
        helo_name: "composer.bench".into(),
        ..ClientConfig::default()
    });
    for tx in txs {
        client.send(tx).expect("send");
    }
    client.quit();
    let mut acked = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::TransactionDone(o) => acked += o.delivered(),
                ClientEvent::Closed | ClientEvent::Failed { .. } => return acked,
                _ => {}
            }
        }
        for b in client.drain_output().collect::<Vec<_>>() {
            stream.write_all(&b).expect("write");
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => client.connection_closed(),
            Ok(n) => client.receive(&buf[..n]),
        }
    }
}

fn base_config(mx: Vec<String>) -> Config {
    let mut c = Config {
        shards: 2,
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:0".parse().expect("literal"),
            ..ListenerConfig::default()
        }],
        memory_budget: 64 << 30,
        queues: vec![SpecificQueue {
            name: "bench".into(),
            domains: (0..DOMAINS).map(|i| format!("d{i}.bench")).collect(),
            mx,
            ..SpecificQueue::default()
        }],
        ..Config::default()
    };
    c.ingest.max_connections_per_ip = 10_000;
    c.admin.enabled = true;
    c.admin.listen = "127.0.0.1:0".parse().expect("literal");
    c
}

fn memory(recipients: usize, template: &str) {
    let paused = {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let addr: SocketAddr = "127.0.0.2:0".parse().expect("literal");
        s.bind(&addr.into()).expect("bind the paused sink");
        s.listen(4096).expect("listen");
        TcpListener::from(s)
    };
    let mut config = base_config(vec![paused.local_addr().expect("bound").to_string()]);
    config.queues[0].limits.max_connections = 100;
    config.queues[0].limits.greeting_timeout = Duration::from_secs(3600);
    config.queues[0].limits.session_timeout = Duration::from_secs(3600);
    let engine = Engine::start(config).expect("engine");
    let admin = engine.admin_addr().expect("admin");
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib();
    let started = Instant::now();
    let mut i = 0;
    while i < recipients {
        let to = (i + PER_REQUEST).min(recipients);
        post(admin, template, i, to);
        i = to;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while (engine.stats().queued as usize) < recipients && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib();
    let stats = engine.stats();
    println!(
        "memory: {} recipients queued through the API in {:.1} s; RSS {} MiB (before {} MiB): {:.0} bytes per queued recipient in all",
        stats.queued,
        started.elapsed().as_secs_f64(),
        after / 1024,
        before / 1024,
        (after.saturating_sub(before) * 1024) as f64 / recipients as f64
    );
    println!(
        "charged to the memory budget: {:.0} bytes per queued recipient",
        stats.held_bytes as f64 / recipients as f64
    );
    engine.shutdown();
}

/// Seconds until `n` recipients are at the sinks, through the API (`api`)
/// or pre-rendered over SMTP.
fn throughput(n: usize, template: &str, api: bool, mx: &[String], count: &AtomicU64) -> f64 {
    let mut config = base_config(mx.to_vec());
    config.queues[0].limits.max_connections_per_domain = 4;
    config.queues[0].limits.initial_connections = 1;
    config.queues[0].limits.adaptive = false;
    let engine = Engine::start(config).expect("engine");
    let admin = engine.admin_addr().expect("admin");
    let smtp = engine.listen_addrs()[0];
    let before = count.load(Ordering::Relaxed);
    let started = Instant::now();
    let composers = 4;
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..composers)
        .map(|_| {
            let next = next.clone();
            let template = template.to_string();
            std::thread::spawn(move || {
                let env = minijinja::Environment::new();
                loop {
                    let from = next.fetch_add(PER_REQUEST as u64, Ordering::Relaxed) as usize;
                    if from >= n {
                        return;
                    }
                    let to = (from + PER_REQUEST).min(n);
                    if api {
                        post(admin, &template, from, to);
                        continue;
                    }
                    // The Composer renders each message itself.
                    let txs: Vec<Transaction> = (from..to)
                        .map(|i| {
                            let (first, code, city) = vars(i);
                            let email = format!("user{i}@d{}.bench", i % DOMAINS);
                            let text = env
                                .render_str(
                                    &template,
                                    minijinja::context! { email => email.clone(), first => first, code => code, city => city },
                                )
                                .expect("render");
                            Transaction {
                                body_type: None,
                                reverse_path: "news@composer.bench".into(),
                                recipients: vec![email],
                                body: Bytes::from(text.replace('\n', "\r\n") + "\r\n"),
                            }
                        })
                        .collect();
                    assert_eq!(send(smtp, txs), to - from);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("composer");
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) - before < n as u64 {
        assert!(Instant::now() < deadline, "delivery stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    engine.shutdown();
    secs
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let memory_recipients = args.first().copied().unwrap_or(1_000_000);
    let rate_recipients = args.get(1).copied().unwrap_or(100_000);
    let template = template();
    memory(memory_recipients, &template);

    let count = Arc::new(AtomicU64::new(0));
    let ips: Vec<Ipv4Addr> = (3..7).map(|k| Ipv4Addr::new(127, 0, 0, k)).collect();
    let first = TcpListener::bind((ips[0], 25_025))
        .or_else(|_| TcpListener::bind((ips[0], 0)))
        .expect("sink");
    let port = first.local_addr().expect("bound").port();
    let mut listeners = vec![(first, Arc::new(Counting(count.clone())))];
    for ip in &ips[1..] {
        let l = TcpListener::bind((*ip, port)).expect("sink on the same port");
        listeners.push((l, Arc::new(Counting(count.clone()))));
    }
    let n = listeners.len();
    let _sinks = MxSink::start(listeners, n).expect("sink threads");
    let mx: Vec<String> = ips.iter().map(|ip| format!("{ip}:{port}")).collect();
    // Warm up both paths, then measure them side by side.
    throughput(rate_recipients / 10, &template, false, &mx, &count);
    throughput(rate_recipients / 10, &template, true, &mx, &count);
    let smtp = throughput(rate_recipients, &template, false, &mx, &count);
    let api = throughput(rate_recipients, &template, true, &mx, &count);
    let rate = |s: f64| rate_recipients as f64 / s;
    println!(
        "throughput: pre-rendered over SMTP {:.0} msg/s, templated through the API {:.0} msg/s: {:.0}% (goal >= 90%)",
        rate(smtp),
        rate(api),
        100.0 * smtp / api
    );
}
