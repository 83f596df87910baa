//! Hostile Composers end to end: every published SMTP smuggling variant,
//! whole and split across packets, and a Composer that disconnects at
//! every point of a pipelined transaction. A sink behind Volley shows what
//! was passed on: never a second, smuggled message, never a message the
//! Composer was not told was accepted, always one it was.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use volley_engine::Engine;

use crate::support::composer::{command, read_reply};
use crate::support::sink::Script;
use crate::support::{World, connect_from, wait_stats};

/// Smuggled after the fake end of data: a second transaction that a
/// receiver fooled by the fake end would take as commands.
const SMUGGLED: &str = "MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<victim@d0.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n";

fn session(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    assert!(read_reply(&mut s).starts_with("220 "));
    assert!(command(&mut s, "EHLO composer.test\r\n").starts_with("250"));
    s
}

/// Sends a message whose body holds `fake_end`, then the smuggled
/// commands, then the real end, in `pieces` writes; returns Volley's reply
/// to the data and then to a NOOP (the session must still be in step).
fn smuggle(addr: SocketAddr, fake_end: &[u8], split: bool) -> (String, String) {
    let mut s = session(addr);
    assert!(command(&mut s, "MAIL FROM:<news@composer.test>\r\n").starts_with("250"));
    assert!(command(&mut s, "RCPT TO:<reader@d0.test>\r\n").starts_with("250"));
    assert!(command(&mut s, "DATA\r\n").starts_with("354"));
    let mut data = b"Subject: hello\r\n\r\nhello".to_vec();
    let cut = data.len() + 1;
    data.extend_from_slice(fake_end);
    data.extend_from_slice(SMUGGLED.as_bytes());
    data.extend_from_slice(b"\r\n.\r\n");
    if split {
        // The fake end split after its first octet, as a smuggler would
        // split it over TCP segments to beat a scanner that looks at one
        // read at a time.
        for piece in [&data[..cut], &data[cut..cut + 2], &data[cut + 2..]] {
            s.write_all(piece).unwrap();
            s.flush().unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
    } else {
        s.write_all(&data).unwrap();
    }
    let reply = read_reply(&mut s);
    let after = command(&mut s, "NOOP\r\n");
    (reply, after)
}

fn refused_and_nothing_passed_on(fake_end: &[u8]) {
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    for split in [false, true] {
        let (reply, after) = smuggle(addr, fake_end, split);
        assert!(
            reply.starts_with("550 5.6.0"),
            "{fake_end:?} (split {split}): {reply}"
        );
        assert!(
            after.starts_with("250"),
            "one reply for the whole data, then in step: {after}"
        );
    }
    // A plain message after them shows the sink is reached; it must be the
    // only one there.
    let mut s = session(addr);
    assert!(command(&mut s, "MAIL FROM:<news@composer.test>\r\n").starts_with("250"));
    assert!(command(&mut s, "RCPT TO:<reader@d0.test>\r\n").starts_with("250"));
    assert!(command(&mut s, "DATA\r\n").starts_with("354"));
    assert!(command(&mut s, "Subject: plain\r\n\r\nplain\r\n.\r\n").starts_with("250"));
    wait_stats(&engine, "the plain message delivered", |s| s.delivered == 1);
    engine.shutdown();
    let got = world.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].body.starts_with(b"Subject: plain"));
    assert!(got.iter().all(|r| r.sender != "evil@attacker.test"));
}

#[test]
fn smuggling_lf_dot_lf_is_refused() {
    refused_and_nothing_passed_on(b"\n.\n");
}

#[test]
fn smuggling_lf_dot_crlf_is_refused() {
    refused_and_nothing_passed_on(b"\n.\r\n");
}

#[test]
fn smuggling_cr_dot_cr_is_refused() {
    refused_and_nothing_passed_on(b"\r.\r");
}

#[test]
fn smuggling_crlf_dot_cr_is_refused() {
    refused_and_nothing_passed_on(b"\r\n.\r");
}

#[test]
fn smuggling_cr_dot_crlf_is_refused() {
    refused_and_nothing_passed_on(b"\r.\r\n");
}

#[test]
fn smuggling_crlf_dot_lf_is_refused() {
    refused_and_nothing_passed_on(b"\r\n.\n");
}

#[test]
fn smuggling_with_a_nul_before_the_dot_is_refused() {
    refused_and_nothing_passed_on(b"\r\n\0.\r\n");
}

/// One pipelined transaction, cut after `cut` octets of what the Composer
/// sends (the socket closed without QUIT, the reply unread).
fn cut_transaction(addr: SocketAddr, rcpt: &str, cut: usize) {
    let mut s = session(addr);
    let all = transaction(rcpt);
    s.write_all(&all[..cut]).unwrap();
    s.flush().unwrap();
    drop(s);
}

fn transaction(rcpt: &str) -> Vec<u8> {
    format!(
        "MAIL FROM:<news@composer.test>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\nSubject: {rcpt}\r\n\r\nbody line one\r\nbody line two\r\n.\r\n"
    )
    .into_bytes()
}

#[test]
fn a_composer_cut_off_anywhere_before_the_final_dot_delivers_nothing() {
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    let len = transaction("cut@d0.test").len();
    // Every cut short of the whole transaction: after each command, inside
    // each command, inside the data, and between the data and its dot.
    for cut in 1..len {
        cut_transaction(addr, &format!("cut{cut}@d0.test"), cut);
    }
    // One that completes and reads its 250, then vanishes without QUIT:
    // Volley owes it a delivery.
    let mut s = session(addr);
    s.write_all(&transaction("whole@d0.test")).unwrap();
    let replies: Vec<String> = (0..4).map(|_| read_reply(&mut s)).collect();
    assert!(replies[3].starts_with("250"), "{replies:?}");
    drop(s);
    wait_stats(&engine, "the whole one delivered", |s| s.delivered >= 1);
    // Let anything wrongly accepted reach the sink too.
    std::thread::sleep(Duration::from_millis(500));
    let stats = engine.shutdown();
    let got = world.received();
    let rcpts: Vec<&str> = got
        .iter()
        .flat_map(|r| r.recipients.iter())
        .map(|r| r.as_str())
        .collect();
    assert_eq!(rcpts, ["whole@d0.test"], "{got:?}");
    assert_eq!(stats.queued, 0);
}

/// Slowloris, bounded for a test's file descriptors (both ends live in
/// this process): 2,000 connections from 20 untrusted addresses and 800
/// trusted ones that dribble a command one octet a second, while a fresh
/// Composer session is timed every 100 ms.
#[test]
fn slow_and_untrusted_connections_never_keep_a_composer_waiting() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    config.ingest.trusted_networks = vec![
        "127.0.0.1/32".parse().unwrap(),
        "127.0.0.2/32".parse().unwrap(),
    ];
    config.ingest.max_connections = 1000;
    config.ingest.command_timeout = Duration::from_secs(2);
    config.ingest.idle_timeout = Duration::from_secs(3);
    let engine = Engine::start(config).unwrap();
    let addr = engine.listen_addrs()[0];

    // The probe: a fresh session from a trusted address, timed to its
    // EHLO reply, every 100 ms until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let mut s = connect_from([127, 0, 0, 2], addr, Duration::from_secs(5)).unwrap();
                assert!(read_reply(&mut s).starts_with("220 "));
                assert!(command(&mut s, "EHLO probe.test\r\n").starts_with("250"));
                worst = worst.max(started.elapsed());
                probes += 1;
                let _ = command(&mut s, "QUIT\r\n");
                std::thread::sleep(Duration::from_millis(100));
            }
            (probes, worst)
        })
    };

    // Untrusted: a quarter of the total limit answered 554, the rest 421,
    // each at once.
    let mut untrusted = Vec::new();
    let (mut refused_554, mut refused_421, mut slowest) = (0, 0, Duration::ZERO);
    for i in 0..2000u32 {
        let started = Instant::now();
        let Ok(mut s) = connect_from(
            [127, 0, 0, 10 + (i % 20) as u8],
            addr,
            Duration::from_secs(5),
        ) else {
            continue;
        };
        let greeting = read_reply(&mut s);
        slowest = slowest.max(started.elapsed());
        match &greeting[..3.min(greeting.len())] {
            "554" => refused_554 += 1,
            "421" => refused_421 += 1,
            other => panic!("an untrusted client got {other:?}: {greeting}"),
        }
        untrusted.push(s);
    }
    assert!(refused_554 <= 250, "{refused_554} answered 554");
    assert_eq!(refused_554 + refused_421, 2000);
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");

    // Trusted and slow: greeted, then closed by the command timeout.
    let mut slow = Vec::new();
    for _ in 0..800 {
        let mut s = connect_from([127, 0, 0, 1], addr, Duration::from_secs(5)).unwrap();
        assert!(read_reply(&mut s).starts_with("220 "));
        s.write_all(b"E").unwrap();
        slow.push(s);
    }
    let dribble_started = Instant::now();
    let mut open = slow.len();
    for octet in b"HLO slow.test".iter().take(5) {
        std::thread::sleep(Duration::from_secs(1));
        for s in &mut slow {
            // A write to a session already closed fails: that is the point.
            let _ = s.write_all(&[*octet]);
        }
    }
    for s in &mut slow {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let reply = read_reply(s);
        if reply.starts_with("421") || reply.is_empty() {
            open -= 1;
        }
    }
    assert_eq!(open, 0, "every slow session closed by the command timeout");
    assert!(dribble_started.elapsed() < Duration::from_secs(10));

    stop.store(true, Ordering::Relaxed);
    let (probes, worst) = probe.join().unwrap();
    assert!(probes >= 20, "{probes} probes");
    assert!(
        worst < Duration::from_secs(1),
        "a fresh session waited {worst:?} for its EHLO reply"
    );
    drop(untrusted);
    engine.shutdown();
}

/// The command timeout bounds a whole command line from its first octet,
/// not each read: a session that sends one octet every 300 ms, never
/// waiting as long as the timeout between two, is closed with 421 once
/// the timeout has passed since the line began (it found the timeout
/// restarting at every octet, which let a slow client hold a place for
/// as long as it liked).
#[test]
fn a_command_dribbled_an_octet_at_a_time_is_cut_off_at_the_command_timeout() {
    use std::io::Read;
    use std::time::Instant;

    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    config.ingest.command_timeout = Duration::from_secs(2);
    let engine = Engine::start(config).unwrap();
    let addr = engine.listen_addrs()[0];
    let mut s = connect_from([127, 0, 0, 1], addr, Duration::from_secs(5)).unwrap();
    assert!(read_reply(&mut s).starts_with("220 "));
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    let mut got = Vec::new();
    for octet in b"EHLO a-very-slow-client.test\r\n".iter().cycle().take(40) {
        if s.write_all(&[*octet]).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break,
        }
        if got.starts_with(b"421") && got.ends_with(b"\r\n") {
            break;
        }
    }
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("421 4."), "{text:?} after {took:?}");
    assert!(
        !text.contains("250"),
        "the dribbled EHLO was answered: {text:?}"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
    engine.shutdown();
}
