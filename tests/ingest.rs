//! Ingest end to end: who may connect, what may be relayed, bad input
//! answered precisely without harming other sessions, LMTP in safe mode,
//! and the `volley serve` / `volley check-config` commands.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use volley_engine::{AckMode, Engine, Protocol};
use volley_smtp::{DeliveryStatus, EnhancedCode, Reply, Transaction};

use crate::support::composer::{command, read_reply};
use crate::support::sink::Script;
use crate::support::{World, check_config, composer, temp_path, wait_stats, wait_until};

fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    crate::support::connect_from(local, to, Duration::from_secs(10)).unwrap()
}

/// A session from 127.0.0.1 that has said EHLO and MAIL FROM.
fn open_transaction(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(read_reply(&mut s).starts_with("220 "));
    assert!(command(&mut s, "EHLO composer.test\r\n").starts_with("250"));
    assert!(command(&mut s, "MAIL FROM:<n@composer.test>\r\n").starts_with("250"));
    s
}

#[test]
fn untrusted_clients_and_relay_attempts_are_refused() {
    let world = World::generated(2, 1, |_| Script::default());
    let mut config = world.config();
    config.ingest.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
    config.ingest.relay_domains = vec!["d0.test".into()];
    let engine = Engine::start(config).unwrap();
    let addr = engine.listen_addrs()[0];

    let mut stranger = connect_from([127, 0, 0, 7], addr);
    let greeting = read_reply(&mut stranger);
    assert!(greeting.starts_with("554 5.7.1 "), "{greeting}");
    // RFC 5321 3.1: after a 554 greeting the server waits for QUIT and
    // answers anything else with 503.
    let r = command(&mut stranger, "EHLO stranger.test\r\n");
    assert!(r.starts_with("503 5.5.1 "), "{r}");
    let r = command(&mut stranger, "MAIL FROM:<s@stranger.test>\r\n");
    assert!(r.starts_with("503 5.5.1 "), "{r}");
    let r = command(&mut stranger, "QUIT\r\n");
    assert!(r.starts_with("221 "), "{r}");
    let mut rest = Vec::new();
    let _ = stranger.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed after QUIT");

    let mut client = connect_from([127, 0, 0, 1], addr);
    assert!(read_reply(&mut client).starts_with("220 "));
    assert!(command(&mut client, "EHLO composer.test\r\n").starts_with("250"));
    assert!(command(&mut client, "MAIL FROM:<n@composer.test>\r\n").starts_with("250"));
    let r = command(&mut client, "RCPT TO:<x@elsewhere.test>\r\n");
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    let r = command(&mut client, "RCPT TO:<x@D0.test>\r\n");
    assert!(r.starts_with("250 "), "{r}");
    engine.shutdown();
}

#[test]
fn bad_input_is_answered_precisely_while_other_sessions_go_on() {
    let world = World::generated(4, 2, |_| Script::default());
    let mut config = world.config();
    config.ingest.max_message_size = 10_000;
    config.ingest.max_recipients = 2;
    let engine = Engine::start(config).unwrap();
    let addr = engine.listen_addrs()[0];

    // A well-behaved Composer sends 200 messages meanwhile.
    let good = std::thread::spawn(move || {
        let txs = (0..200)
            .map(|i| Transaction {
                body_type: None,
                reverse_path: "n@composer.test".into(),
                recipients: vec![format!("u{i}@d{}.test", i % 4)],
                body: Bytes::from(format!("Subject: {i}\r\n\r\nok\r\n")),
            })
            .collect();
        composer::send(addr, false, txs).unwrap()
    });

    let mut bad = TcpStream::connect(addr).unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(read_reply(&mut bad).starts_with("220 "));
    assert!(command(&mut bad, "EHLO bad.test\r\n").starts_with("250"));
    let long = format!("NOOP {}\r\n", "a".repeat(3000));
    let r = command(&mut bad, &long);
    assert!(r.starts_with("500 5.5.2"), "{r}");
    let r = command(&mut bad, "MAIL FROM:<n@composer.test> FROBNICATE=yes\r\n");
    assert!(r.starts_with("555 5.5.4"), "{r}");
    let r = command(&mut bad, "DATA\r\n");
    assert!(r.starts_with("503 5.5.1"), "{r}");
    assert!(command(&mut bad, "MAIL FROM:<n@composer.test>\r\n").starts_with("250"));
    assert!(command(&mut bad, "RCPT TO:<a@d0.test>\r\n").starts_with("250"));
    assert!(command(&mut bad, "RCPT TO:<b@d1.test>\r\n").starts_with("250"));
    let r = command(&mut bad, "RCPT TO:<c@d2.test>\r\n");
    assert!(r.starts_with("452 4.5.3"), "{r}");
    assert!(command(&mut bad, "DATA\r\n").starts_with("354"));
    let big = format!(
        "Subject: big\r\n\r\n{}.\r\n",
        format!("{}\r\n", "z".repeat(78)).repeat(250)
    );
    bad.write_all(big.as_bytes()).unwrap();
    let r = read_reply(&mut bad);
    assert!(r.starts_with("552 5.3.4"), "{r}");
    // Smuggling attempt: a bare LF before the dot must not end the data.
    assert!(command(&mut bad, "MAIL FROM:<n@composer.test>\r\n").starts_with("250"));
    assert!(command(&mut bad, "RCPT TO:<a@d0.test>\r\n").starts_with("250"));
    assert!(command(&mut bad, "DATA\r\n").starts_with("354"));
    bad.write_all(b"Subject: s\r\n\r\nx\n.\nMAIL FROM:<evil@x>\r\n.\r\n")
        .unwrap();
    let r = read_reply(&mut bad);
    assert!(r.starts_with("550 5.6.0"), "bare LF refused: {r}");

    let outcomes = good.join().unwrap();
    assert_eq!(outcomes.len(), 200);
    assert!(outcomes.iter().all(|o| o.delivered() == 1));
    wait_stats(&engine, "200 delivered", |s| s.delivered == 200);
    assert_eq!(world.received_count(), 200, "nothing from the bad session");
    engine.shutdown();
}

#[test]
fn lmtp_in_safe_mode_answers_each_recipient_with_the_remote_outcome() {
    let world = World::generated(1, 1, |_| Script {
        rcpt: Some(Box::new(|addr: &str, _| {
            if addr.starts_with("bad@") {
                Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user"))
            } else if addr.starts_with("busy@") {
                Some(Reply::new(451, EnhancedCode::new(4, 2, 1), "mailbox busy"))
            } else {
                None
            }
        })),
        ..Script::default()
    });
    let config = world.config_with_listener(Protocol::Lmtp, AckMode::Safe);
    let engine = Engine::start(config).unwrap();
    let out = composer::send(
        engine.listen_addrs()[0],
        true,
        vec![Transaction {
            body_type: None,
            reverse_path: "n@composer.test".into(),
            recipients: vec![
                "ok@d0.test".into(),
                "bad@d0.test".into(),
                "busy@d0.test".into(),
            ],
            body: Bytes::from_static(b"Subject: safe\r\n\r\nsafe\r\n"),
        }],
    )
    .unwrap();
    let r = &out[0].recipients;
    assert_eq!(r[0].status, DeliveryStatus::Delivered);
    assert_eq!(r[1].status, DeliveryStatus::PermanentFailure);
    assert_eq!(r[1].reply.enhanced, Some(EnhancedCode::new(5, 1, 1)));
    assert_eq!(r[2].status, DeliveryStatus::TransientFailure);
    assert!(
        r[2].reply.text().contains("mailbox busy"),
        "{:?}",
        r[2].reply
    );
    // The sink had it before the Composer heard 250.
    assert_eq!(world.received_count(), 1);
    let report = engine.shutdown();
    assert_eq!(
        report.queued, 0,
        "safe mode keeps nothing the Composer was told about"
    );
}

#[test]
fn volley_serve_relays_and_stops_on_sigterm() {
    let world = World::generated(1, 1, |_| Script::default());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let file = temp_path("serve.toml");
    std::fs::write(&file, "[ingest]\nrelay_domains = [\"*\"]\n").unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["serve", "--no-admin", "--config", file.to_str().unwrap()])
        .args(["--listen", &listen, "--shards", "2"])
        .args(["--delivery-port", &world.port.to_string()])
        .args(["--nameserver", &world.dns.addr().to_string()])
        .args(["--summary-interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr: SocketAddr = listen.parse().unwrap();
    wait_until("volley serve listening", Duration::from_secs(10), || {
        TcpStream::connect(addr).is_ok()
    });
    let out = composer::send(
        addr,
        false,
        vec![Transaction {
            body_type: None,
            reverse_path: "n@composer.test".into(),
            recipients: vec!["u@d0.test".into()],
            body: Bytes::from_static(b"Subject: serve\r\n\r\nserve\r\n"),
        }],
    )
    .unwrap();
    assert_eq!(out[0].delivered(), 1);
    wait_until("delivered to the sink", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    // A second Volley on the same address is refused (SO_REUSEPORT would
    // let it share the connections), and told who holds the address.
    let second = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["serve", "--no-admin", "--config", file.to_str().unwrap()])
        .args(["--listen", &listen, "--shards", "1"])
        .args(["--nameserver", &world.dns.addr().to_string()])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!(
            "cannot listen on {listen}: already in use by pid {} (volley)",
            child.id()
        )),
        "{err}"
    );
    // SIGHUP: reload the file; the engine carries on.
    let signal = |sig: &str| {
        let _ = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status();
    };
    signal("-HUP");
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: stop accepting, finish, report.
    signal("-TERM");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.is_empty(), "every line goes to the log: {stdout}");
    assert!(stderr.contains("delivered 1"), "{stderr}");
    assert!(stderr.contains("0 recipients still queued"), "{stderr}");
    assert!(stderr.contains("configuration reloaded"), "{stderr}");
    assert!(!stderr.contains("after a restart"), "{stderr}");
    // One format: each line starts with its UTC timestamp; no colour codes
    // when stderr is not a terminal; plain names, not Rust's.
    for line in stderr.lines() {
        let stamp = line.split_whitespace().next().unwrap_or("");
        assert!(
            stamp.len() >= 20 && stamp.starts_with("20") && stamp.ends_with('Z'),
            "{line}"
        );
    }
    assert!(!stderr.contains('\u{1b}'), "{stderr}");
    assert!(stderr.contains("(smtp, fast ack)"), "{stderr}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn check_config_explains_errors_with_their_line() {
    let bad = temp_path("bad.toml");
    std::fs::write(
        &bad,
        "shards = 2\n\n[general_queue]\nidle_timeout = \"5 fortnights\"\n\
         [ingest]\nmax_recipients = 0\ntrusted_networks = [\"127.0.0.1/33\"]\n",
    )
    .unwrap();
    let out = check_config(&bad);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bad.toml:4: general_queue.idle_timeout: \"5 fortnights\": invalid duration",
        "bad.toml:6: ingest.max_recipients = 0: must be at least 1",
        "bad.toml:7: ingest.trusted_networks: \"127.0.0.1/33\": invalid IP address syntax",
        "bad.toml: 3 problem(s)",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }
    let good = temp_path("good.toml");
    std::fs::write(
        &good,
        "shards = 1\n[[listener]]\naddress = \"127.0.0.1:2600\"\nack = \"safe\"\n",
    )
    .unwrap();
    let out = check_config(&good);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(bad);
    let _ = std::fs::remove_file(good);
}

#[test]
fn connection_limits_idle_timeout_and_memory_budget_are_answered() {
    let world = World::generated(1, 1, |_| Script {
        // Hold messages at the sink so they stay in memory.
        data_delay: Some(Duration::from_millis(800)),
        ..Script::default()
    });
    let mut config = world.config();
    config.ingest.trusted_networks = vec!["127.0.0.0/29".parse().unwrap()];
    config.ingest.max_connections_per_ip = 2;
    config.ingest.idle_timeout = Duration::from_millis(300);
    config.memory_budget = 100_000;
    let engine = Engine::start(config).unwrap();
    let addr = engine.listen_addrs()[0];

    // The per-address limit holds clients outside the trusted networks:
    // each is kept a while waiting for QUIT after its 554, so the third
    // from one address is turned away at once.
    let mut strangers: Vec<_> = (0..2).map(|_| connect_from([127, 0, 0, 9], addr)).collect();
    for s in &mut strangers {
        assert!(read_reply(s).starts_with("554 5.7.1 "));
    }
    let mut third = connect_from([127, 0, 0, 9], addr);
    let r = read_reply(&mut third);
    assert!(
        r.starts_with("421 4.7.0 ") && r.contains("from 127.0.0.9"),
        "{r}"
    );
    // A trusted Composer is not: three sessions from one address get in.
    let mut a = connect_from([127, 0, 0, 1], addr);
    let mut b = connect_from([127, 0, 0, 1], addr);
    let mut c = connect_from([127, 0, 0, 1], addr);
    assert!(read_reply(&mut a).starts_with("220 "));
    assert!(read_reply(&mut b).starts_with("220 "));
    assert!(read_reply(&mut c).starts_with("220 "));
    drop(c);
    drop(strangers);

    // Idle sessions are closed with 421 4.4.2.
    let r = read_reply(&mut b);
    assert!(r.starts_with("421 4.4.2"), "{r}");

    // A 120 kB message fills the 100 kB budget; the next MAIL gets 452 4.3.1.
    drop(a);
    let mut e = connect_from([127, 0, 0, 4], addr);
    assert!(read_reply(&mut e).starts_with("220 "));
    assert!(command(&mut e, "EHLO composer.test\r\n").starts_with("250"));
    assert!(command(&mut e, "MAIL FROM:<n@composer.test>\r\n").starts_with("250"));
    assert!(command(&mut e, "RCPT TO:<u@d0.test>\r\n").starts_with("250"));
    assert!(command(&mut e, "DATA\r\n").starts_with("354"));
    let line = format!("{}\r\n", "q".repeat(98));
    let body = format!("Subject: big\r\n\r\n{}.\r\n", line.repeat(1200));
    e.write_all(body.as_bytes()).unwrap();
    assert!(read_reply(&mut e).starts_with("250"));
    let r = command(&mut e, "MAIL FROM:<n@composer.test>\r\n");
    assert!(r.starts_with("452 4.3.1"), "{r}");
    // Once delivered, the memory is free and mail is taken again.
    wait_stats(&engine, "delivered", |s| {
        s.delivered == 1 && s.held_bytes == 0
    });
    let mut f = connect_from([127, 0, 0, 5], addr);
    assert!(read_reply(&mut f).starts_with("220 "));
    assert!(command(&mut f, "EHLO composer.test\r\n").starts_with("250"));
    let r = command(&mut f, "MAIL FROM:<n@composer.test>\r\n");
    assert!(r.starts_with("250"), "{r}");
    engine.shutdown();
}

#[test]
fn a_reload_changes_the_relay_policy_without_dropping_sessions() {
    let world = World::generated(2, 1, |_| Script::default());
    let config = world.config();
    let engine = Engine::start(config.clone()).unwrap();
    let addr = engine.listen_addrs()[0];
    let mut s = open_transaction(addr);
    assert!(command(&mut s, "RCPT TO:<x@d1.test>\r\n").starts_with("250"));
    let mut narrower = config;
    narrower.ingest.relay_domains = vec!["d0.test".into()];
    assert!(applied_now(&engine.reload(narrower).unwrap()));
    let r = command(&mut s, "RCPT TO:<y@d1.test>\r\n");
    assert!(r.starts_with("550 5.7.1"), "{r}");
    assert!(command(&mut s, "RCPT TO:<z@d0.test>\r\n").starts_with("250"));
    engine.shutdown();
}

#[test]
fn bare_postmaster_is_refused_until_an_address_is_configured_then_relayed_there() {
    let world = World::generated(1, 1, |_| Script::default());
    let config = world.config();
    let engine = Engine::start(config.clone()).unwrap();
    let addr = engine.listen_addrs()[0];
    let mut s = open_transaction(addr);
    // RFC 5321 4.5.1: parsed (no 501), but Volley has nowhere to put it.
    let r = command(&mut s, "RCPT TO:<Postmaster>\r\n");
    assert!(r.starts_with("550 5.7.1 "), "{r}");
    assert!(r.contains("ingest.postmaster"), "{r}");

    let mut with_postmaster = config;
    with_postmaster.ingest.postmaster =
        Some(volley_smtp::Mailbox::parse("hostmaster@d0.test").unwrap());
    assert!(applied_now(&engine.reload(with_postmaster).unwrap()));
    let r = command(&mut s, "RCPT TO:<postmaster>\r\n");
    assert!(r.starts_with("250 "), "{r}");
    assert!(command(&mut s, "DATA\r\n").starts_with("354"));
    let r = command(&mut s, "Subject: hi\r\n\r\nhello postmaster\r\n.\r\n");
    assert!(r.starts_with("250 "), "{r}");
    wait_until("the postmaster copy", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    assert_eq!(world.received()[0].recipients, ["hostmaster@d0.test"]);
    engine.shutdown();
}

/// Whether every change of a reload applied at once (none waits for a
/// restart).
fn applied_now(changes: &[volley_engine::Change]) -> bool {
    !changes.is_empty()
        && changes
            .iter()
            .all(|c| c.applies == volley_engine::Applies::Now)
}
