//! A bounded backlog: with the MX host refusing everything for now, a
//! Composer offers five times the memory budget. Ingest answers 452 4.3.1
//! once the budget is held, what it accepted stays queued (nothing lost),
//! and when the host takes mail again everything drains and ingest accepts
//! again; in memory and in durable mode.

use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use volley_engine::Engine;
use volley_smtp::{EnhancedCode, Reply};

use crate::support::composer::{command, read_reply};
use crate::support::sink::Script;
use crate::support::{World, temp_path, wait_stats};

const BUDGET: u64 = 1 << 20;
const BODY: usize = 32 << 10;
const OFFERED: usize = 5 * (BUDGET as usize) / BODY;

fn body(i: usize) -> String {
    let mut text = format!("Subject: m{i}\r\n\r\n");
    let line = format!("{}\r\n", "x".repeat(98));
    while text.len() + line.len() <= BODY {
        text.push_str(&line);
    }
    text
}

/// One transaction on an open session: `Ok` when accepted, `Err` with the
/// refusal of MAIL.
fn offer(s: &mut TcpStream, i: usize) -> Result<(), String> {
    let r = command(s, "MAIL FROM:<news@composer.test>\r\n");
    if !r.starts_with("250") {
        return Err(r);
    }
    assert!(command(s, &format!("RCPT TO:<u{i}@d0.test>\r\n")).starts_with("250"));
    assert!(command(s, "DATA\r\n").starts_with("354"));
    let r = command(s, &format!("{}.\r\n", body(i)));
    assert!(r.starts_with("250 "), "{r}");
    Ok(())
}

fn backlog_five_times_the_budget(durable: bool) {
    let refusing = Arc::new(AtomicBool::new(true));
    let flag = refusing.clone();
    let world = World::generated(1, 1, move |_| {
        let flag = flag.clone();
        Script {
            rcpt: Some(Box::new(move |_: &str, _| {
                flag.load(Ordering::SeqCst)
                    .then(|| Reply::new(451, EnhancedCode::new(4, 3, 2), "not accepting mail now"))
            })),
            ..Script::default()
        }
    });
    let dir = temp_path("backlog-journal");
    let mut config = world.config();
    config.memory_budget = BUDGET;
    config.general_queue.max_attempts = 10_000;
    config.general_queue.max_age = Duration::from_secs(3600);
    config.dsn.enabled = false;
    if durable {
        config.journal.dir = Some(dir.clone());
    }
    let engine = Engine::start(config).unwrap();
    let mut s = TcpStream::connect(engine.listen_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert!(read_reply(&mut s).starts_with("220 "));
    assert!(command(&mut s, "EHLO composer.test\r\n").starts_with("250"));

    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    let mut most_held = 0;
    for i in 0..OFFERED {
        match offer(&mut s, i) {
            Ok(()) => accepted.push(i),
            Err(r) => {
                assert!(r.starts_with("452 4.3.1"), "{r}");
                refused.push(i);
            }
        }
        most_held = most_held.max(engine.stats().held_bytes);
    }
    eprintln!(
        "backlog: {} accepted, {} refused, {most_held} bytes held at most",
        accepted.len(),
        refused.len()
    );
    assert!(accepted.len() >= 20, "{} accepted", accepted.len());
    assert!(refused.len() >= OFFERED / 2, "{} refused", refused.len());
    // The check is at MAIL: one message of this session may pass it just
    // under the budget.
    assert!(
        most_held <= BUDGET + 2 * BODY as u64,
        "{most_held} bytes held against a budget of {BUDGET}"
    );
    assert_eq!(engine.stats().queued, accepted.len() as u64);
    assert!(world.received_count() == 0, "the host refuses for now");

    // The host takes mail again: the backlog drains, and the session that
    // was refused is accepted now.
    refusing.store(false, Ordering::SeqCst);
    let first = accepted.len() as u64;
    wait_stats(&engine, "the backlog delivered", |st| st.delivered == first);
    // A delivered message's bytes are given back once the last task
    // holding it lets go (its connection's next turn): then ingest has
    // room again.
    wait_stats(&engine, "the budget given back", |st| {
        st.held_bytes < BUDGET / 2
    });
    // Offered again as a Composer does: four times the budget in all, so
    // a 452 now and then means "wait for the sinks", and each is accepted
    // within the deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for &i in &refused {
        while let Err(r) = offer(&mut s, i) {
            assert!(
                r.starts_with("452") && std::time::Instant::now() < deadline,
                "accepted once the backlog drained: {r}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    wait_stats(&engine, "everything delivered", |st| {
        st.delivered == OFFERED as u64
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for r in world.received() {
        let subject = String::from_utf8_lossy(&r.body)
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        *seen.entry(subject).or_default() += 1;
    }
    assert_eq!(seen.len(), OFFERED, "every message arrived");
    assert!(seen.values().all(|n| *n == 1), "none twice");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_backlog_five_times_the_memory_budget_is_held_at_the_budget_and_drains() {
    backlog_five_times_the_budget(false);
}

#[test]
fn in_durable_mode_a_backlog_five_times_the_budget_is_held_at_the_budget_and_drains() {
    backlog_five_times_the_budget(true);
}
