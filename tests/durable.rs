//! Durable mode end to end: kill -9 under load, a damaged journal at
//! start-up, a full disk during ingest, restarts that resend only the
//! unfinished recipients, and the sending quota across restarts and days.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use volley_engine::Engine;
use volley_engine::journal::{JournalConfig, JournalWriter, shard_dir};
use volley_smtp::{Client, ClientConfig, ClientEvent, Reply, Transaction};

use crate::support::composer::{command, read_reply};
use crate::support::sink::Script;
use crate::support::{World, composer, temp_path, wait_stats, wait_until};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The first line of a body names its message.
fn message_id(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

fn body(id: &str) -> Bytes {
    Bytes::from(format!(
        "{id}\r\nSubject: durable\r\n\r\n{}\r\n",
        "durable mode test line\r\n".repeat(20)
    ))
}

/// Message ids the sinks received, with how many times each.
fn arrivals(world: &World) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in world.received() {
        for _ in &r.recipients {
            *m.entry(message_id(&r.body)).or_insert(0) += 1;
        }
    }
    m
}

/// A `volley serve` child with a journal; its stderr is collected.
struct Volley {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
    /// Reads the child's stderr until it closes.
    reader: std::thread::JoinHandle<()>,
}

impl Volley {
    fn spawn(world: &World, journal: &Path, port: u16, fsize_limit: Option<u64>) -> Volley {
        let listen = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_volley"));
        cmd.args(["serve", "--no-admin", "--listen", &listen, "--shards", "2"])
            .args(["--delivery-port", &world.port.to_string()])
            .args(["--nameserver", &world.dns.addr().to_string()])
            .arg("--journal")
            .arg(journal)
            .env("RUST_LOG", "warn,volley=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(limit) = fsize_limit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only async-signal-safe libc calls between fork and
            // exec. SIGXFSZ is ignored so a write past the limit fails with
            // EFBIG (a full disk) instead of killing the child.
            unsafe {
                cmd.pre_exec(move || {
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    let lim = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (pipe, lines) = (child.stderr.take().unwrap(), stderr.clone());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                lines.lock().push(line);
            }
        });
        let addr: SocketAddr = listen.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("volley serve exited ({status}): {:?}", stderr.lock());
            }
            assert!(Instant::now() < deadline, "volley serve never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Volley {
            child,
            addr,
            stderr,
            reader,
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        // Everything it said, to the end, before judging.
        let _ = self.reader.join();
        assert!(status.success(), "{status}: {:?}", self.stderr.lock());
    }

    fn recovery_lines(&self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let lines: Vec<String> = self
                .stderr
                .lock()
                .iter()
                .filter(|l| l.contains("volley: journal "))
                .cloned()
                .collect();
            if lines.len() >= 2 || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// What a Composer saw: ids it got 250 for, and the refusals.
#[derive(Default)]
struct Seen {
    acked: Mutex<Vec<String>>,
    refused: Mutex<Vec<(String, Reply)>>,
}

/// Sends pipelined batches of `batch` messages, one session after another,
/// `sessions` times or until `stop` is set or the server is gone; records
/// each reply as it arrives, so a kill mid-session keeps what was
/// acknowledged before it.
fn load(
    addr: SocketAddr,
    tag: String,
    (batch, sessions, domains): (usize, usize, usize),
    stop: &AtomicBool,
    seen: &Seen,
) {
    let mut n = 0usize;
    for _ in 0..sessions {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut client = Client::new(ClientConfig {
            helo_name: "composer.test".into(),
            ..ClientConfig::default()
        });
        let mut ids = std::collections::VecDeque::new();
        for _ in 0..batch {
            let id = format!("Message-ID: <{tag}-{n}@composer.test>");
            let tx = Transaction {
                body_type: None,
                reverse_path: "news@composer.test".into(),
                recipients: vec![format!("user{n}@d{}.test", n % domains)],
                body: body(&id),
            };
            n += 1;
            client.send(tx).unwrap();
            ids.push_back(id);
        }
        client.quit();
        let mut buf = vec![0u8; 16 * 1024];
        'session: loop {
            while let Some(ev) = client.poll_event() {
                match ev {
                    ClientEvent::TransactionDone(o) => {
                        let id = ids.pop_front().unwrap();
                        if o.delivered() == 1 {
                            seen.acked.lock().push(id);
                        } else {
                            seen.refused
                                .lock()
                                .push((id, o.recipients[0].reply.clone()));
                        }
                    }
                    ClientEvent::Ready { .. }
                    | ClientEvent::StartTls
                    | ClientEvent::StartTlsRefused { .. } => {}
                    ClientEvent::Closed => break 'session,
                    ClientEvent::Failed { .. } => return,
                }
            }
            for b in client.drain_output().collect::<Vec<_>>() {
                if stream.write_all(&b).is_err() {
                    return;
                }
            }
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(k) => client.receive(&buf[..k]),
            }
        }
    }
}

/// A small xorshift, seeded from the clock and printed, for the kill points.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("kill points seed {seed}");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    let world = World::generated(20, 4, |_| Script::default());
    let journal = temp_path("journal-kill");
    let port = free_port();
    let seen = Arc::new(Seen::default());
    let mut rng = Rng::new();
    let mut in_flight_bound = 0usize;
    let rounds = 4;
    for round in 0..rounds {
        let v = Volley::spawn(&world, &journal, port, None);
        if round > 0 {
            let lines = v.recovery_lines();
            assert!(
                lines.iter().any(|l| l.contains("recovered ")),
                "restart {round} reports its recovery: {lines:?}"
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let loaders: Vec<_> = (0..4)
            .map(|c| {
                let (stop, seen, addr) = (stop.clone(), seen.clone(), v.addr);
                std::thread::spawn(move || {
                    load(
                        addr,
                        format!("r{round}c{c}"),
                        (25, usize::MAX, 20),
                        &stop,
                        &seen,
                    )
                })
            })
            .collect();
        // Kill at a random point 200..1400 ms in, sampling the sinks'
        // count meanwhile to know what they took just before the crash.
        let kill_at = Instant::now() + Duration::from_millis(200 + rng.below(1200));
        let mut samples: Vec<(Instant, usize)> = Vec::new();
        while Instant::now() < kill_at {
            samples.push((Instant::now(), world.received_count()));
            std::thread::sleep(Duration::from_millis(5));
        }
        v.kill9();
        let killed = Instant::now();
        let at_kill = world.received_count();
        stop.store(true, Ordering::Relaxed);
        for l in loaders {
            l.join().unwrap();
        }
        // Recipients in flight at the crash: whatever the sinks took in the
        // last 200 ms, which covers the transactions open at the kill and
        // the outcomes whose finish record had not reached disk yet (one
        // 2 ms group commit plus the fsync).
        let before = samples
            .iter()
            .rev()
            .find(|(t, _)| killed.duration_since(*t) >= Duration::from_millis(200))
            .map_or(0, |(_, n)| *n);
        in_flight_bound += at_kill - before;
    }
    // The last restart drains everything.
    let v = Volley::spawn(&world, &journal, port, None);
    let acked: Vec<String> = seen.acked.lock().clone();
    assert!(
        acked.len() > 100,
        "the load was real: {} acknowledged",
        acked.len()
    );
    wait_until(
        "every acknowledged message at the sinks",
        Duration::from_secs(60),
        || {
            let got = arrivals(&world);
            acked.iter().all(|id| got.contains_key(id))
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    v.stop();
    let got = arrivals(&world);
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    eprintln!(
        "{} acknowledged, {} distinct arrived, {duplicates} duplicates, bound {in_flight_bound}",
        acked.len(),
        got.len()
    );
    assert!(
        duplicates <= in_flight_bound,
        "{duplicates} duplicates, more than the {in_flight_bound} recipients in flight at the crashes"
    );
    let _ = std::fs::remove_dir_all(&journal);
}

#[test]
fn a_full_disk_answers_452_and_loses_no_acknowledged_message() {
    let world = World::generated(4, 2, |_| Script::default());
    let journal = temp_path("journal-full");
    let port = free_port();
    // Every file the child writes stops at 128 KiB: each shard's first
    // body-log segment fills after about 200 messages.
    let v = Volley::spawn(&world, &journal, port, Some(128 << 10));
    let seen = Seen::default();
    let stop = AtomicBool::new(false);
    load(v.addr, "full".into(), (200, 4, 4), &stop, &seen);
    let acked = seen.acked.lock().clone();
    let refused = seen.refused.lock().clone();
    assert!(
        acked.len() > 50,
        "some accepted before the disk filled: {}",
        acked.len()
    );
    assert!(!refused.is_empty(), "the full disk was noticed");
    for (_, r) in &refused {
        assert_eq!(
            (r.code, r.enhanced.map(|e| e.to_string())),
            (452, Some("4.3.1".into())),
            "{r}"
        );
        assert!(r.text().contains("journal"), "{r}");
    }
    wait_until(
        "every acknowledged message at the sinks",
        Duration::from_secs(30),
        || {
            let got = arrivals(&world);
            acked.iter().all(|id| got.contains_key(id))
        },
    );
    let got = arrivals(&world);
    for (id, _) in &refused {
        assert!(
            !got.contains_key(id),
            "a refused message was delivered: {id}"
        );
    }
    // The child's stderr is read by a thread of ours: give it a moment on
    // a loaded machine.
    wait_until(
        "the log to say why (a line with 452 4.3.1)",
        Duration::from_secs(5),
        || v.stderr.lock().iter().any(|l| l.contains("452 4.3.1")),
    );
    v.stop();
    let _ = std::fs::remove_dir_all(&journal);
}

fn journal_config(world: &World, dir: &Path) -> volley_engine::Config {
    let mut c = world.config();
    c.journal.dir = Some(dir.to_path_buf());
    c.general_queue.max_attempts = 1000;
    c
}

#[test]
fn a_restart_resends_only_unfinished_recipients() {
    let open = Arc::new(AtomicBool::new(false));
    let o = open.clone();
    let world = World::generated(2, 1, move |_| Script {
        rcpt: Some(Box::new({
            let o = o.clone();
            move |addr: &str, _| {
                (addr.starts_with("later@") && !o.load(Ordering::SeqCst))
                    .then(|| Reply::new(451, volley_smtp::EnhancedCode::new(4, 2, 1), "later"))
            }
        })),
        ..Script::default()
    });
    let dir = temp_path("journal-restart");
    let engine = Engine::start(journal_config(&world, &dir)).unwrap();
    let out = composer::send(
        engine.listen_addrs()[0],
        false,
        vec![Transaction {
            // The declared BODY survives the restart with the message.
            body_type: Some(volley_smtp::BodyType::EightBitMime),
            reverse_path: "news@composer.test".into(),
            recipients: vec![
                "a@d0.test".into(),
                "later@d0.test".into(),
                "b@d1.test".into(),
            ],
            body: body("Message-ID: <three@composer.test>"),
        }],
    )
    .unwrap();
    assert_eq!(out[0].delivered(), 3);
    wait_stats(&engine, "two delivered, one deferred", |s| {
        s.delivered == 2 && s.deferred >= 1
    });
    engine.shutdown();

    open.store(true, Ordering::SeqCst);
    let engine = Engine::start(journal_config(&world, &dir)).unwrap();
    let r = &engine.recovery()[0];
    assert!(r.is_clean(), "{r}");
    let recovered: u64 = engine.recovery().iter().map(|r| r.recipients).sum();
    assert_eq!(recovered, 1, "only the deferred recipient comes back");
    wait_stats(&engine, "the deferred one delivered", |s| s.delivered == 1);
    engine.shutdown();

    // Its finish record (index 1 of the original envelope) holds: nothing
    // comes back a second time.
    let engine = Engine::start(journal_config(&world, &dir)).unwrap();
    let recovered: u64 = engine.recovery().iter().map(|r| r.recipients).sum();
    assert_eq!(recovered, 0);
    engine.shutdown();
    let rcpts: Vec<String> = world
        .received()
        .into_iter()
        .flat_map(|r| r.recipients)
        .collect();
    let mut sorted = rcpts.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        vec!["a@d0.test", "b@d1.test", "later@d0.test"],
        "each once"
    );
    assert!(
        world
            .received()
            .iter()
            .all(|r| r.body_type == Some(volley_smtp::BodyType::EightBitMime)),
        "the recovered copy declares BODY=8BITMIME too"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_damaged_journal_is_reported_at_start_up_and_volley_goes_on() {
    let world = World::generated(1, 1, |_| Script::default());
    let dir = temp_path("journal-damaged");
    // A previous run left four acknowledged messages, none finished.
    {
        let (w, _) = JournalWriter::spawn(&shard_dir(&dir, 0), JournalConfig::default()).unwrap();
        let tickets: Vec<_> = (0..4)
            .map(|i| {
                w.append(
                    "news@composer.test".into(),
                    vec![format!("u{i}@d0.test")],
                    body(&format!("Message-ID: <damaged{i}@composer.test>")),
                )
            })
            .collect();
        for t in tickets {
            t.blocking_recv().unwrap().unwrap();
        }
    }
    // Flip a byte in the second message's body; cut the fourth mid-record.
    let shard0 = shard_dir(&dir, 0);
    let segment: PathBuf = std::fs::read_dir(&shard0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name != "lock" && !name.starts_with("journal-")
        })
        .expect("a body segment");
    let mut data = std::fs::read(&segment).unwrap();
    let at = data
        .windows(8)
        .position(|w| w == b"damaged1")
        .expect("second message in the segment");
    data[at + 3] ^= 0x20;
    data.truncate(data.len() - 10);
    std::fs::write(&segment, &data).unwrap();

    let engine = Engine::start(journal_config(&world, &dir)).unwrap();
    let report = engine.recovery()[0].clone();
    assert!(!report.is_clean(), "{report}");
    assert_eq!(report.messages, 2, "{report}");
    assert_eq!(report.damage.len(), 2, "{report}");
    assert!(!report.damage[0].truncated, "{report}");
    assert!(report.damage[1].truncated, "{report}");
    wait_stats(&engine, "the intact messages delivered", |s| {
        s.delivered == 2
    });
    // And it goes on accepting.
    let out = composer::send(
        engine.listen_addrs()[0],
        false,
        vec![Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec!["new@d0.test".into()],
            body: body("Message-ID: <after@composer.test>"),
        }],
    )
    .unwrap();
    assert_eq!(out[0].delivered(), 1);
    wait_stats(&engine, "the new message delivered", |s| s.delivered == 3);
    engine.shutdown();
    let got = arrivals(&world);
    assert_eq!(got.get("Message-ID: <damaged0@composer.test>"), Some(&1));
    assert_eq!(got.get("Message-ID: <damaged2@composer.test>"), Some(&1));
    assert_eq!(got.get("Message-ID: <after@composer.test>"), Some(&1));
    assert_eq!(got.len(), 3, "{got:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

const DAY: u64 = 86_400;

#[test]
fn the_quota_refuses_at_the_limit_after_a_restart_and_allows_the_next_day() {
    let world = World::generated(1, 1, |_| Script::default());
    let dir = temp_path("journal-quota");
    let secs = Arc::new(AtomicU64::new(20_000 * DAY + 3_600));
    let clock: volley_engine::WallClock = {
        let secs = secs.clone();
        Arc::new(move || UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst)))
    };
    let config = || {
        let mut c = journal_config(&world, &dir);
        c.quota.per_day = Some(3);
        c
    };
    let send = |engine: &Engine, i: usize| {
        composer::send(
            engine.listen_addrs()[0],
            false,
            vec![Transaction {
                body_type: None,
                reverse_path: "news@composer.test".into(),
                recipients: vec![format!("u{i}@d0.test")],
                body: body(&format!("Message-ID: <q{i}@composer.test>")),
            }],
        )
        .unwrap()
        .remove(0)
    };
    let mail_reply = |engine: &Engine| {
        let mut s = TcpStream::connect(engine.listen_addrs()[0]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        read_reply(&mut s);
        command(&mut s, "EHLO composer.test\r\n");
        command(&mut s, "MAIL FROM:<news@composer.test>\r\n")
    };

    let engine = Engine::start_with_clock(config(), clock.clone()).unwrap();
    for i in 0..3 {
        assert_eq!(send(&engine, i).delivered(), 1);
    }
    let r = mail_reply(&engine);
    assert!(
        r.starts_with("452 4.7.0 daily sending quota reached: 3 of 3"),
        "{r}"
    );
    wait_stats(&engine, "3 delivered", |s| s.delivered == 3);
    engine.shutdown();

    // Same day, after a restart: still refused (the count was stored).
    secs.fetch_add(3_600, Ordering::SeqCst);
    let engine = Engine::start_with_clock(config(), clock.clone()).unwrap();
    let r = mail_reply(&engine);
    assert!(r.starts_with("452 4.7.0 "), "{r}");
    engine.shutdown();

    // The next day (UTC): accepted again.
    secs.fetch_add(DAY, Ordering::SeqCst);
    let engine = Engine::start_with_clock(config(), clock.clone()).unwrap();
    assert_eq!(send(&engine, 3).delivered(), 1);
    wait_stats(&engine, "delivered the next day", |s| s.delivered == 1);
    engine.shutdown();

    // A lifetime limit counts every day: 4 so far.
    let mut c = config();
    c.quota.total = Some(4);
    let engine = Engine::start_with_clock(c, clock).unwrap();
    let r = mail_reply(&engine);
    assert!(
        r.starts_with("452 4.7.0 sending quota reached: 4 of 4 messages in total"),
        "{r}"
    );
    engine.shutdown();
    assert_eq!(world.received_count(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}
