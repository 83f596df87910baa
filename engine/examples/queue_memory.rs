//! Memory per queued recipient: a Composer hands the engine N one-recipient
//! messages over D domains whose only MX host accepts TCP connections but
//! never greets (a paused sink), so every recipient stays queued; then the
//! resident set is measured. Not a test: a measurement (see the README).
//!
//!     cargo run --release -p volley-engine --example queue_memory -- [RECIPIENTS] [DOMAINS] [BODY_BYTES]
//!
//! `SHARDS=N` in the environment runs N shards instead of 2. `SCRAPE=1`
//! also runs the admin server (on a free loopback port) and, once every
//! recipient is queued, times its answers with that many domain queues
//! held: `/metrics`, `/api/v1/status` and `/api/v1/queues?limit=100`.
//! `BUDGET=BYTES` sets the memory budget (64 GiB otherwise, so nothing is
//! refused): offer more than it holds, and the example counts the messages
//! ingest refused with 452 4.3.1 and compares the resident set with it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_engine::{Config, Engine, ListenerConfig, SpecificQueue};
use volley_smtp::{Client, ClientConfig, ClientEvent, Transaction};

/// The system allocator, counting the bytes it has handed out and not had
/// back: the heap the program really uses, apart from what the allocator
/// keeps around it (its headers, rounding, free holes between live blocks).
struct Counting;

static LIVE_BYTES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Live blocks by size class: class k holds sizes in (2^(k-1), 2^k].
static LIVE_BLOCKS: [std::sync::atomic::AtomicI64; 40] =
    [const { std::sync::atomic::AtomicI64::new(0) }; 40];

fn class(size: usize) -> usize {
    (usize::BITS - size.saturating_sub(1).leading_zeros()) as usize
}

fn count(size: usize, delta: i64) {
    LIVE_BYTES.fetch_add(delta * size as i64, std::sync::atomic::Ordering::Relaxed);
    LIVE_BLOCKS[class(size).min(39)].fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
}

fn live_blocks() -> Vec<i64> {
    LIVE_BLOCKS
        .iter()
        .map(|c| c.load(std::sync::atomic::Ordering::Relaxed))
        .collect()
}

// SAFETY: every call is passed on to the system allocator unchanged; only
// a counter is updated beside it.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        count(layout.size(), -1);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new, 1);
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> i64 {
    LIVE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Sends `txs` over one session and waits for every reply.
fn send(addr: SocketAddr, txs: impl Iterator<Item = Transaction>) -> usize {
    let mut stream = TcpStream::connect(addr).expect("connect to the engine");
    let mut client = Client::new(ClientConfig {
        helo_name: "composer.test".into(),
        ..ClientConfig::default()
    });
    for tx in txs {
        client.send(tx).expect("send");
    }
    client.quit();
    let mut done = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while let Some(ev) = client.poll_event() {
            match ev {
                // Refused at the memory budget: counted by the caller as
                // offered and not accepted.
                ClientEvent::TransactionDone(o) => done += o.delivered(),
                ClientEvent::Closed => return done,
                // Past the budget, a session that goes on asking is closed
                // (421 4.7.0, too many errors): what it had left is not
                // accepted.
                ClientEvent::Failed { error, .. } if std::env::var_os("BUDGET").is_some() => {
                    let _ = error;
                    return done;
                }
                ClientEvent::Failed { error, .. } => panic!("composer session failed: {error}"),
                ClientEvent::Ready { .. }
                | ClientEvent::StartTls
                | ClientEvent::StartTlsRefused { .. } => {}
            }
        }
        for b in client.drain_output().collect::<Vec<_>>() {
            stream.write_all(&b).expect("write");
        }
        let got = stream.read(&mut buf).expect("read");
        if got == 0 {
            client.connection_closed();
        } else {
            client.receive(&buf[..got]);
        }
    }
}

/// One HTTP/1.0 GET: how long until the whole answer was read, and its
/// size (headers included).
fn http_get(addr: SocketAddr, path: &str) -> (Duration, usize) {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("the admin server");
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("answer");
    (started.elapsed(), answer.len())
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let recipients = args.first().copied().unwrap_or(1_000_000);
    let domains = args.get(1).copied().unwrap_or(1_000);
    let body_len = args.get(2).copied().unwrap_or(2048);

    // The paused sink: the kernel completes connections, nobody answers.
    // Its backlog holds every connection the shards open (100 each): with
    // the usual 128, the connections beyond it time out after 30 s and
    // their recipients move to the retry timers, which is not what this
    // example measures.
    let paused = {
        use socket2::{Domain, Socket, Type};
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let addr: SocketAddr = "127.0.0.2:0".parse().unwrap();
        s.bind(&addr.into()).expect("bind the paused sink");
        s.listen(4096).expect("listen");
        TcpListener::from(s)
    };
    let mut config = Config {
        shards: std::env::var("SHARDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2),
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        }],
        memory_budget: std::env::var("BUDGET")
            .ok()
            .and_then(|b| b.parse().ok())
            .unwrap_or(64 << 30),
        ..Config::default()
    };
    config.ingest.max_connections_per_ip = 10_000;
    // A measurement, not a service: no admin port to collide on, unless
    // the admin server is what is measured.
    let scrape = std::env::var_os("SCRAPE").is_some();
    config.admin.enabled = scrape;
    config.admin.listen = "127.0.0.1:0".parse().unwrap();
    let mut q = SpecificQueue {
        name: "paused".into(),
        domains: (0..domains).map(|d| format!("d{d}.test")).collect(),
        mx: vec![paused.local_addr().unwrap().to_string()],
        ..SpecificQueue::default()
    };
    q.limits.max_connections = 100;
    q.limits.greeting_timeout = Duration::from_secs(3600);
    q.limits.session_timeout = Duration::from_secs(3600);
    config.queues.push(q);
    let engine_budget = config.memory_budget;
    let engine = Engine::start(config).expect("engine");
    let addr = engine.listen_addrs()[0];
    std::thread::sleep(Duration::from_millis(200));
    let base = rss_kib("VmRSS:");
    let live_base = live_bytes();
    let blocks_base = live_blocks();

    let line = format!("{}\r\n", "x".repeat(98));
    let mut text = String::from("Subject: memory\r\n\r\n");
    while text.len() + line.len() <= body_len {
        text.push_str(&line);
    }
    let body = Bytes::from(text);
    let body_bytes = body.len();
    let started = Instant::now();
    let threads = 8;
    let per = recipients / threads;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut sent = 0;
                // Sessions of 10,000 messages, built lazily.
                let mut i = t * per;
                let end = (t + 1) * per;
                while i < end {
                    let stop = (i + 10_000).min(end);
                    let txs = (i..stop).map(|k| Transaction {
                        body_type: None,
                        reverse_path: "news@composer.test".into(),
                        recipients: vec![format!("user{k}@d{}.test", k % domains)],
                        body: body.clone(),
                    });
                    sent += send(addr, txs);
                    i = stop;
                }
                sent
            })
        })
        .collect();
    let sent: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let elapsed = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (engine.stats().queued as usize) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let stats = engine.stats();
    let rss = rss_kib("VmRSS:");
    let hwm = rss_kib("VmHWM:");
    let grown = (rss.saturating_sub(base)) * 1024;
    let beyond = grown as f64 - (sent * body_bytes) as f64;
    println!(
        "queued {} recipients over {domains} domains ({} bytes each body) in {:.1}s",
        stats.queued,
        body_bytes,
        elapsed.as_secs_f64()
    );
    println!(
        "RSS {} MiB (before {} MiB, peak {} MiB); bodies {} MiB; beyond bodies: {:.0} bytes per queued recipient",
        rss / 1024,
        base / 1024,
        hwm / 1024,
        sent * body_bytes / (1 << 20),
        beyond / sent as f64
    );
    // What of that the allocator holds free (freed after ingest: session
    // buffers, drained channel blocks) rather than what the queue keeps.
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    let trimmed = rss_kib("VmRSS:");
    let trimmed_beyond = (trimmed.saturating_sub(base) * 1024) as f64 - (sent * body_bytes) as f64;
    println!(
        "after malloc_trim: RSS {} MiB; beyond bodies: {:.0} bytes per queued recipient",
        trimmed / 1024,
        trimmed_beyond / sent as f64
    );
    println!(
        "charged to the memory budget: {:.0} bytes per queued recipient (body with its Received header, addresses, fixed costs)",
        stats.held_bytes as f64 / sent as f64
    );
    let live = (live_bytes() - live_base) as f64;
    println!(
        "heap in use (asked of the allocator, live): {:.0} bytes per queued recipient, of which {:.0} beyond the bodies",
        live / sent as f64,
        (live - (sent * body_bytes) as f64) / sent as f64
    );
    let classes: Vec<String> = live_blocks()
        .iter()
        .zip(&blocks_base)
        .enumerate()
        .filter(|(_, (now, before))| (**now - **before).abs() >= (sent as i64) / 100)
        .map(|(k, (now, before))| {
            let low = if k == 0 { 0 } else { (1usize << (k - 1)) + 1 };
            format!("{low}-{} B: {}", 1usize << k, now - before)
        })
        .collect();
    println!("live blocks added, by size: {}", classes.join(", "));
    println!("peak connections {} (paused sink)", stats.peak_connections);
    if std::env::var_os("BUDGET").is_some() {
        println!(
            "budget {} MiB: offered {recipients}, accepted {sent}, not accepted {} (452 4.3.1, then 421 for sessions that kept asking); held {} MiB; RSS {} MiB, peak {} MiB, {} MiB before: peak growth {:.0}% of the budget",
            engine_budget >> 20,
            recipients - sent,
            stats.held_bytes >> 20,
            rss / 1024,
            hwm / 1024,
            base / 1024,
            100.0 * ((hwm - base) * 1024) as f64 / engine_budget as f64
        );
    }
    if let Some(admin) = engine.admin_addr() {
        for path in ["/metrics", "/api/v1/status", "/api/v1/queues?limit=100"] {
            // The first request warms up; the median of five counts.
            let _ = http_get(admin, path);
            let mut runs: Vec<(Duration, usize)> = (0..5).map(|_| http_get(admin, path)).collect();
            runs.sort();
            let (took, bytes) = runs[2];
            println!(
                "GET {path} with {} domain queues held: {bytes} bytes in {:.1} ms (median of 5)",
                domains.min(sent),
                took.as_secs_f64() * 1e3
            );
        }
    }
    drop(paused);
    std::process::exit(0);
}
