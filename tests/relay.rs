//! The relay end to end: Composer -> Volley (in-process engine, 2 shards) ->
//! test DNS server -> MX sinks on 127.0.0.x. The bulk run uses the bench's
//! Composer and simulated internet (its sinks check each body's digest);
//! the lettre run uses the scripted sink of `support`, which keeps bodies.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use volley_engine::Engine;

use crate::support::sink::Script;
use crate::support::{World, wait_stats};

/// A body that names its message, so arrival can be checked exactly once.
fn body(i: usize) -> Bytes {
    Bytes::from(format!(
        "Message-ID: <m{i}@composer.test>\r\nSubject: test {i}\r\n\r\nHello {i}\r\n.leading dot\r\n..two dots\r\nend\r\n"
    ))
}

fn message_id(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.lines().next().unwrap_or("").to_string()
}

fn assert_exactly_once(world: &World, sent: &HashMap<String, Bytes>) {
    let got = world.received();
    assert_eq!(got.len(), sent.len(), "every message once");
    let mut seen = HashMap::new();
    for r in &got {
        let id = message_id(&r.body);
        let want = sent
            .get(&id)
            .unwrap_or_else(|| panic!("unknown message {id}"));
        assert_eq!(&r.body[..], &want[..], "byte for byte: {id}");
        assert!(r.trace.starts_with("Received: from "), "{:?}", r.trace);
        assert_eq!(r.sender, "news@composer.test");
        assert_eq!(r.recipients.len(), 1);
        assert!(seen.insert(id, ()).is_none(), "delivered twice");
    }
}

/// The bench's simulated internet: 200 domains, sinks without limits.
const INTERNET: &str = r#"
name = "e2e"
description = "200 domains, unlimited sinks"
seed = 7
domain = []
change = []

[load]
messages = 10000
connections = 8
pipelining = true
protocol = "smtp"
body_min = 500
body_max = 4000
rate = 0.0
sender = "composer@bench.test"
template = "Dear {name},\r\n\r\nmessage {number} for {email}.\r\n.a leading dot\r\n"

[[group]]
prefix = "d"
suffix = "test"
count = 200
mx = 1
weight = 1.0
zipf = 0.0

[group.capacity]
max_connections = 0
max_rate = 0.0
latency = "0s"
"#;

#[test]
fn ten_thousand_messages_to_200_domains_arrive_exactly_once() {
    use volley_bench::{ComposeConfig, DomainMix, Scenario, SimulatedInternet, spawn_compose};

    let _heavy = crate::support::heavy();
    let scenario = Scenario::from_toml(INTERNET).unwrap();
    let internet = SimulatedInternet::start(&scenario).unwrap();
    let log = crate::support::temp_path("bench.log");
    let mut config = volley_engine::Config {
        shards: 2,
        delivery_port: internet.sink_port(),
        resolver: internet.resolver_config(),
        delivery_log: Some(log.clone()),
        listeners: vec![volley_engine::ListenerConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            ..volley_engine::ListenerConfig::default()
        }],
        ..volley_engine::Config::default()
    };
    config.general_queue.idle_timeout = Duration::from_millis(500);
    config.admin.enabled = false;
    let engine = Engine::start(config).unwrap();
    let outcome = spawn_compose(ComposeConfig {
        target: engine.listen_addrs()[0],
        load: scenario.load.clone(),
        mix: DomainMix::of_scenario(internet.domains()).unwrap(),
        seed: scenario.seed,
        run_id: "e2e".into(),
        timeout: Duration::from_secs(60),
        routes: Vec::new(),
        tls: None,
    })
    .unwrap()
    .join()
    .unwrap();
    assert_eq!(outcome.sent.len(), 10_000);
    wait_stats(&engine, "10,000 delivered", |s| s.delivered == 10_000);
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    assert_eq!(report.stats.received, 10_000);
    assert_eq!(report.stats.deferred, 0);
    // Every message once, byte for byte (the sinks check each body's digest).
    let accounting = internet.accounting(&outcome.sent);
    assert!(accounting.is_clean(), "{accounting:?}");
    assert_eq!(accounting.delivered, 10_000);
    // Connections are reused: far fewer than messages.
    let conns: u64 = internet
        .counters()
        .iter()
        .map(|c| c.total.connections)
        .sum();
    assert!(
        (200..2_000).contains(&conns),
        "{conns} connections for 10,000 messages"
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn ten_thousand_messages_from_lettre_arrive_exactly_once() {
    use lettre::Transport;
    use lettre::address::Envelope;

    let world = World::generated(200, 4, |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    let n = 10_000;
    let threads = 8;
    // lettre ends DATA with "\r\n.\r\n" after the body, so a body that
    // already ends in CRLF arrives with one more empty line.
    let mut sent = HashMap::new();
    for i in 0..n {
        let b = body(i);
        let mut framed = b.to_vec();
        framed.extend_from_slice(b"\r\n");
        sent.insert(message_id(&b), Bytes::from(framed));
    }
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                let mailer = lettre::SmtpTransport::builder_dangerous("127.0.0.1")
                    .port(addr.port())
                    .timeout(Some(Duration::from_secs(30)))
                    .build();
                for i in (t..n).step_by(threads) {
                    let envelope = Envelope::new(
                        Some("news@composer.test".parse().unwrap()),
                        vec![format!("user{i}@d{}.test", i % 200).parse().unwrap()],
                    )
                    .unwrap();
                    mailer.send_raw(&envelope, &body(i)).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    wait_stats(&engine, "10,000 delivered", |s| s.delivered == n as u64);
    assert_eq!(engine.shutdown().queued, 0);
    assert_exactly_once(&world, &sent);
    let conns: usize = world
        .sinks
        .iter()
        .map(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    // The 200 domains sit on 4 MX hosts: each shard's 4 sites carry them
    // all, so there are fewer connections than domains, and far fewer
    // than messages.
    assert!((8..2_000).contains(&conns), "{conns} delivery connections");
}
