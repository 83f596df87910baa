//! Queues reconfigured at run time: `volley serve` reads its file again on
//! SIGHUP and applies the queues, their limits and fixed hosts without
//! dropping a session or a queued recipient.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_engine::Engine;
use volley_smtp::Transaction;

use crate::support::composer::{self, command, read_reply};
use crate::support::sink::{Script, Sink};
use crate::support::{World, check_config, temp_path, wait_until};

/// `volley serve` on a file of its own, with stderr kept in a file.
struct Serve {
    child: Child,
    addr: SocketAddr,
    file: PathBuf,
    log: PathBuf,
}

impl Serve {
    fn start(world: &World, toml: &str) -> Serve {
        Serve::start_with(world, toml, &["--no-admin"])
    }

    /// With `extra` flags (`--admin-listen ADDR`, say) instead of
    /// `--no-admin`.
    fn start_with(world: &World, toml: &str, extra: &[&str]) -> Serve {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let listen = format!("127.0.0.1:{port}");
        let file = temp_path("reload.toml");
        let log = temp_path("reload.stderr");
        std::fs::write(&file, toml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_volley"))
            .args(["serve", "--config", file.to_str().unwrap()])
            .args(extra)
            .args(["--listen", &listen, "--shards", "2"])
            .args(["--delivery-port", &world.port.to_string()])
            .args(["--nameserver", &world.dns.addr().to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = listen.parse().unwrap();
        wait_until("volley serve listening", Duration::from_secs(10), || {
            TcpStream::connect(addr).is_ok()
        });
        Serve {
            child,
            addr,
            file,
            log,
        }
    }

    /// Writes the file anew and sends SIGHUP; returns once the log says
    /// the reload was read.
    fn reload(&self, toml: &str) {
        let before = self.log().matches("configuration reloaded").count();
        std::fs::write(&self.file, toml).unwrap();
        self.signal("-HUP");
        wait_until("the reload", Duration::from_secs(10), || {
            let log = self.log();
            log.matches("configuration reloaded").count() > before || log.contains("reload refused")
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then the whole log.
    fn stop(mut self) -> String {
        self.signal("-TERM");
        assert!(self.child.wait().unwrap().success());
        self.log()
    }
}

/// A test that fails leaves no `volley serve` behind.
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.log);
    }
}

fn message(rcpt: String) -> Transaction {
    Transaction {
        body_type: None,
        reverse_path: "n@composer.test".into(),
        body: Bytes::from(format!("Subject: {rcpt}\r\n\r\nfor {rcpt}\r\n")),
        recipients: vec![rcpt],
    }
}

fn slow_sinks(delay_ms: u64) -> impl Fn(usize) -> Script {
    move |_| Script {
        data_delay: Some(Duration::from_millis(delay_ms)),
        ..Script::default()
    }
}

const RELAY: &str = "[ingest]\nrelay_domains = [\"*\"]\n";

/// POSTs sys.argv[2] to sys.argv[1]; prints the status, then the body.
const POST: &str = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="POST")
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
print(status)
sys.stdout.write(body)
"#;

/// (status, JSON body) of POST `body` to `url`, by Python's urllib.
fn post(url: &str, body: &str) -> (u16, serde_json::Value) {
    let out = crate::support::python(POST, &[&url, &body]);
    let (status, body) = out.split_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(body).unwrap())
}

fn change_lines(json: &serde_json::Value) -> Vec<String> {
    json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["line"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_sighup_adds_a_specific_queue_under_load_and_its_domain_goes_to_the_queues_hosts() {
    // d0.test's MX is 127.0.0.2, d1.test's 127.0.0.3; the new queue sends
    // d0.test's mail to 127.0.0.201 instead.
    let world = World::generated(2, 2, slow_sinks(20));
    let pinned = Sink::start(Ipv4Addr::new(127, 0, 0, 201), world.port, Script::default())
        .expect("the pinned host");
    let serve = Serve::start(&world, RELAY);

    // A session opened before the reload, used after it.
    let mut session = TcpStream::connect(serve.addr).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(read_reply(&mut session).starts_with("220 "));
    assert!(command(&mut session, "EHLO composer.test\r\n").starts_with("250"));

    let txs: Vec<Transaction> = (0..400)
        .map(|i| message(format!("r{i}@d{}.test", i % 2)))
        .collect();
    let addr = serve.addr;
    let load = std::thread::spawn(move || composer::send(addr, false, txs));
    wait_until(
        "d0.test's deliveries under way",
        Duration::from_secs(20),
        || world.sinks[0].count() >= 20,
    );
    serve.reload(&format!(
        "{RELAY}[[queue]]\nname = \"pinned\"\ndomains = [\"d0.test\"]\nmx = [\"127.0.0.201\"]\n"
    ));
    wait_until(
        "the pinned host gets d0.test's mail",
        Duration::from_secs(10),
        || pinned.count() > 0,
    );
    let at_switch = world.sinks[0].count();

    for line in [
        "MAIL FROM:<n@composer.test>\r\n",
        "RCPT TO:<late@d0.test>\r\n",
        "DATA\r\n",
    ] {
        assert!(!command(&mut session, line).starts_with('4'), "{line}");
    }
    let r = command(
        &mut session,
        "Subject: late\r\n\r\nafter the reload\r\n.\r\n",
    );
    assert!(
        r.starts_with("250 "),
        "the session opened before goes on: {r}"
    );
    let outcomes = load.join().unwrap().expect("the loading session");
    assert!(outcomes.iter().all(|o| o.delivered() == 1));

    let total = || world.received_count() + pinned.count();
    wait_until("every message delivered", Duration::from_secs(60), || {
        total() >= 401
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut recipients: Vec<String> = world
        .received()
        .into_iter()
        .chain(pinned.received.lock().clone())
        .flat_map(|r| r.recipients)
        .collect();
    assert_eq!(recipients.len(), 401, "nothing duplicated");
    recipients.sort();
    recipients.dedup();
    assert_eq!(recipients.len(), 401, "nothing lost");

    // Once the queue took d0.test, its old MX host got only the
    // transactions under way (one per connection, 8 at most).
    let late_at_old = world.sinks[0].count() - at_switch;
    assert!(late_at_old <= 8, "{late_at_old} more at the old host");
    let at_pinned: Vec<String> = pinned
        .received
        .lock()
        .iter()
        .flat_map(|r| r.recipients.clone())
        .collect();
    assert!(at_pinned.iter().all(|r| r.ends_with("@d0.test")));
    assert!(at_pinned.contains(&"late@d0.test".to_string()));
    assert!(
        world.sinks[1]
            .received
            .lock()
            .iter()
            .all(|r| r.recipients[0].ends_with("@d1.test"))
    );
    let log = serve.stop();
    assert!(
        log.contains("queue \"pinned\": added for d0.test, fixed MX 127.0.0.201 (applies now)"),
        "{log}"
    );
}

#[test]
fn a_sighup_lowers_a_domains_connection_limit_from_20_to_2_within_a_second() {
    let world = World::generated(1, 1, slow_sinks(100));
    let limits = |n: usize| {
        format!(
            "{RELAY}[general_queue]\nadaptive = false\nqueued_per_connection = 1\n\
             initial_connections = {n}\nmax_connections_per_domain = {n}\n"
        )
    };
    let serve = Serve::start(&world, &limits(20));
    let txs: Vec<Transaction> = (0..80).map(|i| message(format!("r{i}@d0.test"))).collect();
    let outcomes = composer::send(serve.addr, false, txs).unwrap();
    assert!(outcomes.iter().all(|o| o.delivered() == 1));
    let open = &world.sinks[0].open;
    wait_until("many connections open", Duration::from_secs(10), || {
        open.load(Ordering::SeqCst) >= 10
    });
    serve.reload(&limits(2));
    let lowered = Instant::now();
    wait_until("at most 2 connections", Duration::from_secs(1), || {
        open.load(Ordering::SeqCst) <= 2
    });
    let took = lowered.elapsed();
    // And no more than 2 from then on, until everything is delivered.
    let deadline = Instant::now() + Duration::from_secs(30);
    while world.received_count() < 80 {
        let n = open.load(Ordering::SeqCst);
        assert!(
            n <= 2,
            "{n} connections open after the limit went down to 2"
        );
        assert!(Instant::now() < deadline, "not all delivered");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(world.received_count(), 80);
    let log = serve.stop();
    assert!(
        log.contains("[general_queue]: initial_connections 20 -> 2, max_connections_per_domain 20 -> 2 (applies now)"),
        "{log}"
    );
    eprintln!("down to 2 connections {took:?} after the reload was read");
}

#[test]
fn a_reload_adds_and_removes_listeners_and_the_removed_ones_sessions_finish() {
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    config.ingest.relay_domains = vec!["*".into()];
    let engine = Engine::start(config.clone()).unwrap();
    let old = engine.listen_addrs()[0];
    let mut session = TcpStream::connect(old).unwrap();
    session
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(read_reply(&mut session).starts_with("220 "));
    assert!(command(&mut session, "EHLO composer.test\r\n").starts_with("250"));

    let new: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut moved = config.clone();
    moved.listeners[0].address = new;
    moved.listeners[0].protocol = volley_engine::Protocol::Lmtp;
    let changes = engine.reload(moved).unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.to_string()
                == format!("listener {new}: added (lmtp, fast ack) (applies now)"))
    );
    assert_eq!(engine.listen_addrs(), [new]);
    // The new listener speaks LMTP; the old one stops accepting.
    let mut lmtp = TcpStream::connect(new).unwrap();
    lmtp.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(read_reply(&mut lmtp).starts_with("220 "));
    assert!(command(&mut lmtp, "LHLO composer.test\r\n").starts_with("250"));
    wait_until("the old listener closed", Duration::from_secs(5), || {
        TcpStream::connect(old).is_err()
    });
    // The session it accepted before goes on to the end.
    for line in [
        "MAIL FROM:<n@composer.test>\r\n",
        "RCPT TO:<a@d0.test>\r\n",
        "DATA\r\n",
    ] {
        assert!(!command(&mut session, line).starts_with('4'), "{line}");
    }
    let r = command(
        &mut session,
        "Subject: s\r\n\r\nsent after the listener went\r\n.\r\n",
    );
    assert!(r.starts_with("250 "), "{r}");
    wait_until("delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    engine.shutdown();
}

#[test]
fn the_admin_api_reloads_the_file_and_says_what_another_would_change() {
    let world = World::generated(1, 1, |_| Script::default());
    let pinned = Sink::start(Ipv4Addr::new(127, 0, 0, 202), world.port, Script::default())
        .expect("the pinned host");
    let admin = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let serve = Serve::start_with(&world, RELAY, &["--admin-listen", &admin.to_string()]);
    wait_until("the admin API", Duration::from_secs(10), || {
        TcpStream::connect(admin).is_ok()
    });
    let with_queue = format!(
        "{RELAY}[[queue]]\nname = \"pinned\"\ndomains = [\"d0.test\"]\nmx = [\"127.0.0.202\"]\n"
    );
    let added = "queue \"pinned\": added for d0.test, fixed MX 127.0.0.202 (applies now)";
    let (status, json) = post(&format!("http://{admin}/api/v1/config/diff"), &with_queue);
    assert_eq!(status, 200, "{json}");
    assert!(change_lines(&json).contains(&added.to_string()), "{json}");
    let (status, json) = post(
        &format!("http://{admin}/api/v1/config/diff"),
        "[general_queue]\nmax_connections = 0\n",
    );
    assert_eq!(status, 422, "{json}");
    assert!(
        json["problems"][0]
            .as_str()
            .unwrap()
            .contains("max_connections"),
        "{json}"
    );

    std::fs::write(&serve.file, &with_queue).unwrap();
    let (status, json) = post(&format!("http://{admin}/api/v1/reload"), "");
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["reloaded"], true);
    assert_eq!(
        change_lines(&json),
        [added],
        "the command line's flags still apply"
    );
    let out = composer::send(serve.addr, false, vec![message("a@d0.test".into())]).unwrap();
    assert_eq!(out[0].delivered(), 1);
    wait_until(
        "delivered to the pinned host",
        Duration::from_secs(10),
        || pinned.count() == 1,
    );
    assert_eq!(world.received_count(), 0);

    std::fs::write(&serve.file, "[general_queue]\nmax_connections = 0\n").unwrap();
    let (status, json) = post(&format!("http://{admin}/api/v1/reload"), "");
    assert_eq!(status, 422, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .starts_with("reload refused"),
        "{json}"
    );
    serve.stop();
}

#[test]
fn a_reload_with_an_error_anywhere_applies_nothing_and_says_why() {
    let world = World::generated(2, 1, |_| Script::default());
    let mut config = world.config();
    config.ingest.relay_domains = vec!["d0.test".into()];
    let engine = Engine::start(config.clone()).unwrap();
    let mut bad = config.clone();
    bad.ingest.relay_domains = vec!["d1.test".into()];
    let mut queue = volley_engine::SpecificQueue {
        name: "broken".into(),
        domains: vec!["d0.test".into()],
        ..Default::default()
    };
    queue.limits.max_connections = 0;
    bad.queues.push(queue);
    let err = engine.reload(bad).unwrap_err().to_string();
    assert!(err.contains("max_connections"), "{err}");
    // A listener that cannot be bound refuses the whole reload too.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut unbindable = config.clone();
    unbindable.ingest.relay_domains = vec!["d1.test".into()];
    unbindable.listeners.push(volley_engine::ListenerConfig {
        address: held.local_addr().unwrap(),
        ..Default::default()
    });
    let err = engine.reload(unbindable).unwrap_err().to_string();
    assert!(err.contains("cannot listen on"), "{err}");
    assert_eq!(engine.listen_addrs().len(), 1);
    // The running configuration stays: d0.test is still relayed, d1.test not.
    let mut s = TcpStream::connect(engine.listen_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(read_reply(&mut s).starts_with("220 "));
    assert!(command(&mut s, "EHLO composer.test\r\n").starts_with("250"));
    assert!(command(&mut s, "MAIL FROM:<n@composer.test>\r\n").starts_with("250"));
    assert!(command(&mut s, "RCPT TO:<a@d0.test>\r\n").starts_with("250"));
    assert!(command(&mut s, "RCPT TO:<a@d1.test>\r\n").starts_with("550 5.7.1"));
    engine.shutdown();
}

#[test]
fn check_config_says_what_a_reload_would_change() {
    let running = temp_path("running.toml");
    let new = temp_path("new.toml");
    std::fs::write(
        &running,
        "[[listener]]\naddress = \"127.0.0.1:2600\"\n[general_queue]\nmax_connections_per_domain = 20\n",
    )
    .unwrap();
    std::fs::write(
        &new,
        "[[listener]]\naddress = \"127.0.0.1:2601\"\n[general_queue]\nmax_connections_per_domain = 2\n\
         [[queue]]\nname = \"bulk\"\ndomains = [\"big.example\"]\nmx = [\"192.0.2.7\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["check-config", "--diff"])
        .arg(&running)
        .arg(&new)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "[general_queue]: max_connections_per_domain 20 -> 2 (applies now)",
        "queue \"bulk\": added for big.example, fixed MX 192.0.2.7 (applies now)",
        "listener 127.0.0.1:2601: added (smtp, fast ack) (applies now)",
        "listener 127.0.0.1:2600: removed: its sessions finish (applies now)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in {stdout}");
    }
    let same = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["check-config", "--diff"])
        .arg(&new)
        .arg(&new)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&same.stdout).contains("no changes"));
    assert!(check_config(&new).status.success());
    let _ = std::fs::remove_file(running);
    let _ = std::fs::remove_file(new);
}
