//! Durable fast mode against in-memory fast mode, in the same run: a
//! Composer hands the engine N one-recipient messages over C pipelining
//! sessions, the engine delivers them to sinks on 127.0.0.2..5, and the
//! time until every message is acknowledged and at a sink is measured.
//! In durable mode the bytes the process wrote to storage (/proc/self/io
//! `write_bytes`) are compared with the body bytes. Not a test: a
//! measurement (see the README).
//!
//!     cargo run --release -p volley-engine --example durable_throughput -- \
//!         [MESSAGES] [SESSIONS] [BODY_BYTES] [JOURNAL_DIR]
//!
//! JOURNAL_DIR must be on a real disk (not tmpfs), else fsync is free.
//!
//! The bench queue is static (`adaptive = false`): the sinks take all they
//! are given, and the rate controller's slow start (10 msg/s per domain,
//! doubling each second, over 50 domains) would otherwise pace both modes
//! alike, so the run would measure the controller's ramp, not the journal.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_bench::{DataEnd, MxService, MxSession, MxSink};
use volley_engine::{Config, Engine, ListenerConfig, SpecificQueue};
use volley_smtp::{Client, ClientConfig, ClientEvent, Reply, ServerConfig, Transaction};

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

/// Sinks on `ips`, all on one free port, one thread each.
fn sinks(ips: &[Ipv4Addr], count: &Arc<AtomicU64>) -> (u16, MxSink) {
    let first = TcpListener::bind((ips[0], 0)).expect("sink");
    let port = first.local_addr().expect("bound").port();
    let mut listeners = vec![(first, Arc::new(Counting(count.clone())))];
    for ip in &ips[1..] {
        let l = TcpListener::bind((*ip, port)).expect("sink on the same port");
        listeners.push((l, Arc::new(Counting(count.clone()))));
    }
    let n = listeners.len();
    (port, MxSink::start(listeners, n).expect("sink threads"))
}

/// Sends `txs` over one session and waits for every reply; returns how
/// many were acknowledged with 250.
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
                ClientEvent::Ready { .. }
                | ClientEvent::StartTls
                | ClientEvent::StartTlsRefused { .. } => {}
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

fn write_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// CPU seconds the whole process (engine, Composer and sinks) used so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

struct Run {
    secs: f64,
    cpu: f64,
    written: u64,
}

fn run(
    mut config: Config,
    messages: usize,
    sessions: usize,
    body: &Bytes,
    count: &AtomicU64,
) -> Run {
    let before_count = count.load(Ordering::Relaxed);
    // A measurement, not a service: no admin port to collide on.
    config.admin.enabled = false;
    let engine = Engine::start(config).expect("engine");
    let addr = engine.listen_addrs()[0];
    let written_before = write_bytes();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let per_session = 200;
    let next = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..sessions)
        .map(|_| {
            let (next, body) = (next.clone(), body.clone());
            std::thread::spawn(move || {
                let mut acked = 0;
                loop {
                    let from = next.fetch_add(per_session, Ordering::Relaxed) as usize;
                    if from >= messages {
                        return acked;
                    }
                    let to = (from + per_session as usize).min(messages);
                    let txs = (from..to)
                        .map(|i| Transaction {
                            body_type: None,
                            reverse_path: "news@composer.bench".into(),
                            recipients: vec![format!("user{i}@d{}.bench", i % 50)],
                            body: body.clone(),
                        })
                        .collect();
                    acked += send(addr, txs);
                }
            })
        })
        .collect();
    let acked: usize = threads
        .into_iter()
        .map(|t| t.join().expect("composer"))
        .sum();
    assert_eq!(acked, messages, "every message acknowledged");
    let deadline = Instant::now() + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) - before_count < messages as u64 {
        assert!(Instant::now() < deadline, "delivery stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_before;
    // Let the last finish records reach the disk before counting bytes.
    std::thread::sleep(Duration::from_millis(50));
    let written = write_bytes() - written_before;
    engine.shutdown();
    Run { secs, cpu, written }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    let messages = arg(1, 100_000);
    let sessions = arg(2, 64);
    let body_bytes = arg(3, 2048);
    let dir = args.get(4).map(PathBuf::from).unwrap_or_else(|| {
        std::env::current_dir()
            .expect("cwd")
            .join("target/durable-bench")
    });
    let _ = std::fs::remove_dir_all(&dir);

    let count = Arc::new(AtomicU64::new(0));
    let ips: Vec<Ipv4Addr> = (2..6).map(|k| Ipv4Addr::new(127, 0, 0, k)).collect();
    let (port, _sinks) = sinks(&ips, &count);
    let mut line = String::from("Subject: durable bench\r\n\r\n");
    while line.len() + 80 < body_bytes {
        line.push_str(&"x".repeat(76));
        line.push_str("\r\n");
    }
    let body = Bytes::from(line);

    let mut base = Config {
        shards: 0,
        delivery_port: port,
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:0".parse().expect("literal"),
            ..ListenerConfig::default()
        }],
        queues: vec![SpecificQueue {
            name: "bench".into(),
            domains: (0..50).map(|i| format!("d{i}.bench")).collect(),
            mx: ips.iter().map(|ip| ip.to_string()).collect(),
            ..SpecificQueue::default()
        }],
        ..Config::default()
    };
    base.queues[0].limits.max_connections_per_domain = 4;
    base.queues[0].limits.initial_connections = 1;
    // No pacing: see the module doc.
    base.queues[0].limits.adaptive = false;
    let mut durable = base.clone();
    durable.journal.dir = Some(dir.clone());

    println!(
        "{messages} messages of {} bytes, {sessions} sessions, journal in {}",
        body.len(),
        dir.display()
    );
    // Warm up both paths once (connections, page cache), then measure.
    run(base.clone(), messages / 10, sessions, &body, &count);
    run(durable.clone(), messages / 10, sessions, &body, &count);
    let mem = run(base, messages, sessions, &body, &count);
    let dur = run(durable, messages, sessions, &body, &count);
    let rate = |r: &Run| messages as f64 / r.secs;
    let body_total = (messages * body.len()) as u64;
    let us = |r: &Run| 1e6 * r.cpu / messages as f64;
    println!(
        "in-memory fast: {:>9.0} msg/s ({:.2} s, {:.0} us CPU/msg)",
        rate(&mem),
        mem.secs,
        us(&mem)
    );
    println!(
        "durable fast:   {:>9.0} msg/s ({:.2} s, {:.0} us CPU/msg) = {:.0}% of in-memory",
        rate(&dur),
        dur.secs,
        us(&dur),
        100.0 * rate(&dur) / rate(&mem)
    );
    println!(
        "durable: {} bytes written to storage for {} body bytes = {:.3}x body; goal <= 1.1x body + 64 B/recipient = {} bytes ({})",
        dur.written,
        body_total,
        dur.written as f64 / body_total as f64,
        body_total * 11 / 10 + 64 * messages as u64,
        if dur.written <= body_total * 11 / 10 + 64 * messages as u64 {
            "met"
        } else {
            "not met"
        }
    );
    let _ = std::fs::remove_dir_all(&dir);
}
