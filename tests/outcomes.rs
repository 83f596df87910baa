//! Delivery outcomes end to end: retries, bounces, MX failover, cut
//! connections, null MX, and the delivery log lines they leave.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use volley_dns::TestZone;
use volley_engine::Engine;
use volley_smtp::{EnhancedCode, Reply, Transaction};

use crate::support::sink::Script;
use crate::support::{World, composer, log_lines, mx_ip, statuses, wait_stats, wait_until};

fn tx(rcpts: &[&str], body: &str) -> Transaction {
    Transaction {
        body_type: None,
        reverse_path: "news@composer.test".into(),
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        body: Bytes::from(body.to_string()),
    }
}

#[test]
fn transient_then_success_and_permanent_bounce_are_logged() {
    let world = World::generated(2, 1, |_| Script {
        rcpt: Some(Box::new(|addr: &str, seen: usize| {
            if addr.starts_with("later@") && seen == 0 {
                Some(Reply::new(
                    451,
                    EnhancedCode::new(4, 2, 1),
                    "try again later",
                ))
            } else if addr.starts_with("unknown@") {
                Some(Reply::new(
                    550,
                    EnhancedCode::new(5, 1, 1),
                    "no such user here",
                ))
            } else {
                None
            }
        })),
        ..Script::default()
    });
    let engine = Engine::start(world.config()).unwrap();
    let out = composer::send(
        engine.listen_addrs()[0],
        false,
        vec![
            tx(&["later@d0.test"], "Subject: a\r\n\r\nA\r\n"),
            tx(&["unknown@d1.test"], "Subject: b\r\n\r\nB\r\n"),
        ],
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    wait_stats(&engine, "one delivered, one bounced", |s| {
        s.delivered == 1 && s.bounced == 1
    });
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    assert_eq!(report.stats.deferred, 1);
    assert_eq!(world.received_count(), 1);
    let log = log_lines(&world.log);
    assert_eq!(statuses(&log, "later@d0.test"), ["deferred", "delivered"]);
    let deferred = log.iter().find(|l| l["status"] == "deferred").unwrap();
    assert_eq!(deferred["code"], 451);
    assert_eq!(deferred["attempt"], 1);
    assert_eq!(deferred["ip"], "127.0.0.2");
    assert_eq!(deferred["domain"], "d0.test");
    let bounce = log.iter().find(|l| l["status"] == "bounced").unwrap();
    assert_eq!(bounce["code"], 550);
    assert_eq!(bounce["enhanced"], "5.1.1");
    assert_eq!(bounce["category"], "bad_mailbox");
    assert_eq!(bounce["mx"], "mx0.test");
    assert!(bounce["text"].as_str().unwrap().contains("no such user"));
}

#[test]
fn first_mx_down_second_used() {
    // mx1 (127.0.0.2) listens; the preferred mx0 (127.0.0.9) has no sink.
    let zone = TestZone::new()
        .mx("two.test", [(10, "mx0.two.test"), (20, "mx1.two.test")])
        .host("mx0.two.test", [Ipv4Addr::new(127, 0, 0, 9).into()])
        .host("mx1.two.test", [mx_ip(0).into()]);
    let world = World::new(zone, &[mx_ip(0)], |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![tx(&["x@two.test"], "Subject: mx\r\n\r\nX\r\n")],
    )
    .unwrap();
    wait_stats(&engine, "delivered", |s| s.delivered == 1);
    let report = engine.shutdown();
    assert_eq!(report.stats.deferred, 0, "a down MX is not a deferral");
    let log = log_lines(&world.log);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["mx"], "mx1.two.test");
}

#[test]
fn connection_cut_mid_data_is_redelivered() {
    let world = World::generated(1, 1, |_| {
        let s = Script::default();
        s.cut_mid_data_once.store(true, Ordering::SeqCst);
        s
    });
    let engine = Engine::start(world.config()).unwrap();
    let body = format!("Subject: cut\r\n\r\n{}\r\n", "x".repeat(50_000));
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![tx(&["u@d0.test"], &body)],
    )
    .unwrap();
    wait_stats(&engine, "delivered after the cut", |s| s.delivered == 1);
    let report = engine.shutdown();
    assert_eq!(report.stats.deferred, 1);
    let got = world.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, body.as_bytes());
    let log = log_lines(&world.log);
    assert_eq!(statuses(&log, "u@d0.test"), ["deferred", "delivered"]);
    assert_eq!(log[0]["category"], "connection");
}

#[test]
fn null_mx_bounces_at_once() {
    let zone = TestZone::new().null_mx("nullmx.test");
    let world = World::new(zone, &[mx_ip(0)], |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![tx(&["x@nullmx.test"], "Subject: n\r\n\r\nN\r\n")],
    )
    .unwrap();
    wait_stats(&engine, "bounced", |s| s.bounced == 1);
    let report = engine.shutdown();
    assert_eq!(report.stats.deferred, 0);
    let log = log_lines(&world.log);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["status"], "bounced");
    assert_eq!(log[0]["category"], "dns");
    assert_eq!(log[0]["attempt"], 1);
    assert_eq!(log[0]["enhanced"], "5.1.10");
}

#[test]
fn one_message_to_three_domains_keeps_one_body() {
    let world = World::generated(3, 3, |_| Script {
        data_delay: Some(Duration::from_millis(400)),
        ..Script::default()
    });
    let engine = Engine::start(world.config()).unwrap();
    let body = format!("Subject: three\r\n\r\n{}\r\n", "y".repeat(200_000));
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![tx(&["a@d0.test", "b@d1.test", "c@d2.test"], &body)],
    )
    .unwrap();
    // While the sinks sit on the data, the message is held once.
    let held = engine.stats().held_bytes as usize;
    assert!(held >= body.len() && held < 2 * body.len(), "held {held}");
    wait_stats(&engine, "three delivered", |s| s.delivered == 3);
    let got = world.received();
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.body, body.as_bytes());
    }
    wait_until("body freed", Duration::from_secs(5), || {
        engine.stats().held_bytes == 0
    });
    engine.shutdown();
}

#[test]
fn given_up_recipients_go_to_the_fallback_relay_and_delivery_uses_the_source_ip() {
    // d0.test's MX (127.0.0.9) is dead; the fallback relay is the sink on
    // 127.0.0.2, reached from the configured source address 127.0.0.77.
    let zone = TestZone::new()
        .mx("d0.test", [(10, "mx.d0.test")])
        .host("mx.d0.test", [Ipv4Addr::new(127, 0, 0, 9).into()]);
    let world = World::new(zone, &[mx_ip(0)], |_| Script::default());
    let mut config = world.config();
    config.general_queue.max_attempts = 2;
    config.general_queue.retry_schedule = vec![Duration::from_millis(100)];
    config.general_queue.fallback_relay = Some(world.sinks[0].addr);
    config.source_ips = vec!["127.0.0.77".parse().unwrap()];
    let engine = Engine::start(config).unwrap();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![tx(&["x@d0.test"], "Subject: fb\r\n\r\nfallback\r\n")],
    )
    .unwrap();
    wait_stats(&engine, "delivered through the fallback", |s| {
        s.delivered == 1
    });
    let report = engine.shutdown();
    assert_eq!(report.stats.expired, 0);
    let got = world.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].recipients, ["x@d0.test"]);
    assert_eq!(
        got[0].peer,
        "127.0.0.77".parse::<std::net::IpAddr>().unwrap()
    );
    let log = log_lines(&world.log);
    assert_eq!(
        statuses(&log, "x@d0.test"),
        ["deferred", "deferred", "delivered"]
    );
    assert!(
        log[1]["text"].as_str().unwrap().contains("fallback relay"),
        "{:?}",
        log[1]
    );
}

#[test]
fn specific_queues_use_fixed_mx_hosts_and_unreachable_ones_expire() {
    use volley_engine::SpecificQueue;
    // No DNS records at all: the specific queues name their MX hosts.
    let world = World::new(TestZone::new(), &[mx_ip(0)], |_| Script::default());
    let dead: std::net::SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = world.config();
    for (domain, mx) in [
        (
            "two.test",
            vec![dead.to_string(), world.sinks[0].addr.to_string()],
        ),
        ("none.test", vec![dead.to_string()]),
    ] {
        let mut q = SpecificQueue {
            name: domain.into(),
            domains: vec![domain.into()],
            mx,
            ..SpecificQueue::default()
        };
        q.limits.retry_schedule = vec![Duration::from_millis(100)];
        q.limits.host_down_for = Duration::from_millis(150);
        q.limits.max_attempts = 3;
        config.queues.push(q);
    }
    let engine = Engine::start(config).unwrap();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![
            tx(&["x@two.test"], "Subject: 1\r\n\r\none\r\n"),
            tx(&["y@none.test"], "Subject: 2\r\n\r\ntwo\r\n"),
        ],
    )
    .unwrap();
    wait_stats(&engine, "one delivered, one expired", |s| {
        s.delivered == 1 && s.expired == 1
    });
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    assert_eq!(world.dns.queries(), 0, "fixed MX hosts need no DNS");
    assert_eq!(world.received_count(), 1);
    let log = log_lines(&world.log);
    assert_eq!(statuses(&log, "x@two.test"), ["delivered"]);
    let y: Vec<_> = log
        .iter()
        .filter(|l| l["recipient"] == "y@none.test")
        .collect();
    assert_eq!(y.len(), 3, "max_attempts = 3: {y:?}");
    assert_eq!(y[2]["status"], "expired");
    assert_eq!(y[2]["category"], "connection");
}

#[test]
fn a_throttled_recipient_goes_again_at_the_pace_not_after_a_retry_delay() {
    // "fast@" is refused with a rate limit twice, then accepted; "stuck@"
    // is refused every time. Retries are an hour apart, so only the
    // requeue on a throttle (no attempt counted) can deliver "fast@" soon.
    let stuck_tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let tries = stuck_tries.clone();
    let world = World::generated(1, 1, move |_| {
        let tries = tries.clone();
        Script {
            rcpt: Some(Box::new(move |addr: &str, seen: usize| {
                let limited = Reply::new(
                    451,
                    EnhancedCode::new(4, 7, 1),
                    "Rate limit exceeded, try again later",
                );
                if addr.starts_with("stuck@") {
                    tries.fetch_add(1, Ordering::SeqCst);
                    Some(limited)
                } else if addr.starts_with("fast@") && seen < 2 {
                    Some(limited)
                } else {
                    None
                }
            })),
            ..Script::default()
        }
    });
    let mut config = world.config();
    config.general_queue.retry_schedule = vec![Duration::from_secs(3600)];
    let engine = Engine::start(config).unwrap();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![
            tx(&["fast@d0.test"], "Subject: f\r\n\r\nF\r\n"),
            tx(&["stuck@d0.test"], "Subject: s\r\n\r\nS\r\n"),
        ],
    )
    .unwrap();
    wait_stats(&engine, "fast delivered, stuck deferred", |s| {
        s.delivered == 1 && s.deferred == 1
    });
    let report = engine.shutdown();
    assert_eq!(report.queued, 1, "stuck@ waits for its retry");
    // Five throttles sent it back to the queue; the sixth counts as an
    // attempt and defers it to the retry schedule like any 4yz.
    assert_eq!(stuck_tries.load(Ordering::SeqCst), 6);
    let log = log_lines(&world.log);
    assert_eq!(statuses(&log, "fast@d0.test"), ["delivered"]);
    assert_eq!(statuses(&log, "stuck@d0.test"), ["deferred"]);
    let deferred = log.iter().find(|l| l["status"] == "deferred").unwrap();
    assert_eq!(
        (deferred["code"].as_u64(), deferred["attempt"].as_u64()),
        (Some(451), Some(1))
    );
    assert!(deferred["rate"]["throttles"].as_u64().unwrap() >= 8);
}

#[test]
fn a_delivery_task_that_panics_gives_back_its_slot_and_its_recipients() {
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    // One connection for the domain: a slot that was not given back would
    // leave the rest of its mail stuck.
    config.general_queue.max_connections_per_domain = 1;
    config.general_queue.initial_connections = 1;
    volley_engine::test_hooks::panic_once_holding_a_batch("d0.test");
    let engine = Engine::start(config).unwrap();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![
            tx(&["a@d0.test", "b@d0.test"], "Subject: a\r\n\r\nA\r\n"),
            tx(&["c@d0.test"], "Subject: c\r\n\r\nC\r\n"),
        ],
    )
    .unwrap();
    wait_stats(&engine, "all three delivered after the panic", |s| {
        s.delivered == 3
    });
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    assert_eq!(report.stats.deferred, 0, "the held batch went back untried");
    assert_eq!(world.received_count(), 2, "each message once");
    let log = log_lines(&world.log);
    for rcpt in ["a@d0.test", "b@d0.test", "c@d0.test"] {
        assert_eq!(statuses(&log, rcpt), ["delivered"], "{rcpt}");
    }
}

#[test]
fn the_big_receivers_documented_replies_get_their_categories_and_yahoos_tss04_suspends() {
    // d0 answers as Gmail does to unauthenticated mail, d1 as Yahoo does
    // to a sender it defers for volume or complaints.
    let world = World::generated(2, 2, |k| Script {
        rcpt: Some(Box::new(move |_, _| {
            Some(if k == 0 {
                Reply::new(
                    550,
                    EnhancedCode::new(5, 7, 26),
                    "This mail has been blocked because the sender is unauthenticated.",
                )
            } else {
                Reply::new(
                    451,
                    EnhancedCode::new(4, 7, 0),
                    "[TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints",
                )
            })
        })),
        ..Script::default()
    });
    let engine = Engine::start(world.config()).unwrap();
    let out = composer::send(
        engine.listen_addrs()[0],
        false,
        vec![
            tx(&["a@d0.test"], "Subject: a\r\n\r\nA\r\n"),
            tx(&["b@d1.test"], "Subject: b\r\n\r\nB\r\n"),
        ],
    )
    .unwrap();
    assert_eq!(out.len(), 2);
    wait_stats(&engine, "the Gmail one bounced", |s| s.bounced == 1);
    wait_until("d1's MX asked once", Duration::from_secs(10), || {
        world.sinks[1].connections.load(Ordering::Relaxed) == 1
    });
    // A throttling reply puts the recipient back in the queue, and the
    // pace controller alone would back off for a fraction of a second;
    // the default rule for TSS04 suspends d1 for 30 minutes.
    wait_until(
        "d1 suspended by the TSS04 rule",
        Duration::from_secs(5),
        || {
            engine.rates().iter().any(|r| {
                r.domain == "d1.test"
                    && r.rate
                        .suspended_for
                        .is_some_and(|d| d > Duration::from_secs(20 * 60))
            })
        },
    );
    assert_eq!(world.sinks[1].connections.load(Ordering::Relaxed), 1);
    assert_eq!(engine.stats().queued, 1, "held, not dropped");
    engine.shutdown();
    let log = log_lines(&world.log);
    let gmail = log.iter().find(|l| l["recipient"] == "a@d0.test").unwrap();
    assert_eq!(gmail["status"], "bounced");
    assert_eq!(gmail["category"], "authentication", "{gmail}");
}

/// A recipient deferred with its next attempt an hour away gets its last
/// attempt at its `max_age` (here 2 s) instead, and expires with the
/// receiver's reply; one whose transaction hangs expires when the
/// transaction's timeout ends it.
#[test]
fn a_recipient_expires_at_its_max_age_whether_it_waits_for_a_retry_or_in_a_hung_transaction() {
    let world = World::generated(2, 2, |i| Script {
        rcpt: Some(Box::new(|addr: &str, _| {
            addr.starts_with("later@")
                .then(|| Reply::new(451, EnhancedCode::new(4, 2, 1), "mailbox busy, try later"))
        })),
        // d1.test's host never answers the end of data.
        data_delay: (i == 1).then_some(Duration::from_secs(60)),
        ..Script::default()
    });
    let mut config = world.config();
    let q = &mut config.general_queue;
    q.retry_schedule = vec![Duration::from_secs(3600)];
    q.max_age = Duration::from_secs(2);
    q.data_timeout = Duration::from_secs(3);
    let engine = Engine::start(config).unwrap();
    let started = std::time::Instant::now();
    composer::send(
        engine.listen_addrs()[0],
        false,
        vec![
            tx(&["later@d0.test"], "Subject: 1\r\n\r\none\r\n"),
            tx(&["hung@d1.test"], "Subject: 2\r\n\r\ntwo\r\n"),
        ],
    )
    .unwrap();
    wait_stats(&engine, "both expired", |s| s.expired == 2);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "expired after {took:?}, not at the next attempt an hour away"
    );
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    let log = log_lines(&world.log);
    assert_eq!(statuses(&log, "later@d0.test"), ["deferred", "expired"]);
    assert_eq!(statuses(&log, "hung@d1.test"), ["expired"]);
    let swept = log
        .iter()
        .find(|l| l["recipient"] == "later@d0.test" && l["status"] == "expired")
        .unwrap();
    assert_eq!(
        swept["enhanced"], "4.2.1",
        "its last attempt came at its max_age, with the receiver's reply: {swept}"
    );
}
