//! Adaptive rate control end to end: Volley (in-process engine) delivering
//! into the bench's simulated internet, whose sinks enforce a hidden
//! capacity with `451 4.7.1` replies, and an operator rule that suspends a
//! destination.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_bench::{Counts, Scenario, SimulatedInternet};
use volley_engine::{Config, Engine, ListenerConfig, rate::RuleConfig};
use volley_smtp::Transaction;

use crate::support::{composer, log_lines, temp_path, wait_until};

/// Volley pointed at `internet`: 2 shards, retries after 1 s.
fn config(internet: &SimulatedInternet) -> Config {
    let mut c = Config {
        shards: 2,
        delivery_port: internet.sink_port(),
        delivery_log: Some(temp_path("rate.log")),
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        }],
        resolver: internet.resolver_config(),
        ..Config::default()
    };
    c.admin.enabled = false;
    let q = &mut c.general_queue;
    q.retry_schedule = vec![Duration::from_secs(1)];
    q.host_down_for = Duration::from_millis(300);
    q.idle_timeout = Duration::from_secs(1);
    q.max_connections_per_domain = 20;
    c
}

/// Hands `n` one-recipient messages for `domain` to Volley over 4 sessions.
fn compose(addr: SocketAddr, domain: &str, n: usize) {
    compose_range(addr, domain, 0..n);
}

fn compose_range(addr: SocketAddr, domain: &str, range: std::ops::Range<usize>) {
    let per: Vec<Vec<Transaction>> = (0..4)
        .map(|k| {
            range
                .clone()
                .filter(|i| i % 4 == k)
                .map(|i| Transaction {
                    body_type: None,
                    reverse_path: "news@composer.test".into(),
                    recipients: vec![format!("user{i}@{domain}")],
                    body: Bytes::from(format!("Subject: {i}\r\n\r\nhello {i}\r\n")),
                })
                .collect()
        })
        .collect();
    let threads: Vec<_> = per
        .into_iter()
        .map(|txs| std::thread::spawn(move || composer::send(addr, false, txs).unwrap()))
        .collect();
    for t in threads {
        for o in t.join().unwrap() {
            assert_eq!(o.delivered(), 1, "Volley accepts every message: {o:?}");
        }
    }
}

/// Hands `per_second` messages a second to Volley for `secs` seconds, in
/// tenths of a second: a steady Composer, so that the test measures the
/// remote's limit rather than a burst of our own CPU (the sinks, Volley and
/// the Composer share this machine's cores).
fn compose_steadily(addr: SocketAddr, domain: &str, per_second: usize, secs: u64) {
    let start = Instant::now();
    let step = per_second / 10;
    for tick in 0..secs * 10 {
        let at = start + Duration::from_millis(tick * 100);
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        let first = tick as usize * step;
        compose_range(addr, domain, first..first + step);
    }
}

/// The sink's counts for seconds `from..to` after the internet started.
fn window(internet: &SimulatedInternet, from: usize, to: usize) -> Counts {
    let mut sum = Counts::default();
    for c in internet.counters() {
        for s in c.per_second.iter().take(to).skip(from) {
            sum += s;
        }
    }
    sum
}

#[test]
fn the_controller_finds_a_hidden_capacity_and_stops_provoking_throttling() {
    // 200 recipients/s, unknown to Volley; without pacing, Volley's first
    // connections alone would send several times that.
    let scenario = Scenario::from_toml(
        r#"
        name = "rate-e2e"
        [[domain]]
        name = "cap.test"
        mx = 2
        capacity = { max_rate = 200.0, max_connections = 10, latency = "10ms", jitter = "5ms" }
        "#,
    )
    .unwrap();
    let internet = SimulatedInternet::start(&scenario).unwrap();
    let c = config(&internet);
    let log_path = c.delivery_log.clone().unwrap();
    let engine = Engine::start(c).unwrap();
    let started = Instant::now();
    let addr = engine.listen_addrs()[0];
    let composer = std::thread::spawn(move || compose_steadily(addr, "cap.test", 300, 22));

    // Slow start overshoots 200/s at about 6 s; a few cuts bring the rate
    // under the limit (a full bucket at the sink lets bursts through, so
    // the first readings are high). Judge seconds 14 to 22.
    let (from, to) = (14, 22);
    // What the controller said each half second, for a failure message.
    let mut timeline = String::new();
    // The ceilings it learned (it forgets one to probe above it).
    let mut ceilings = Vec::new();
    while started.elapsed() < Duration::from_secs(to as u64 + 1) {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(r) = engine.rates().into_iter().find(|r| r.domain == "cap.test") {
            timeline.push_str(&format!("\n{:>5.1}s {r}", started.elapsed().as_secs_f64()));
            ceilings.extend(r.rate.ceiling);
        }
    }
    composer.join().unwrap();
    let w = window(&internet, from, to);
    let seconds: Vec<String> = internet.counters()[0]
        .per_second
        .iter()
        .map(|c| format!("{}/{}", c.accepted, c.throttled()))
        .collect();
    timeline.push_str(&format!(
        "\naccepted/throttled per second: {}",
        seconds.join(" ")
    ));
    let secs = (to - from) as f64;
    let throughput = w.accepted as f64 / secs;
    let throttled = w.throttled() as f64 / w.accepted.max(1) as f64;
    let pace = engine
        .rates()
        .into_iter()
        .find(|r| r.domain == "cap.test")
        .expect("cap.test is published");
    eprintln!(
        "cap.test, seconds {from}-{to}: {throughput:.0} accepted/s of 200, throttling replies {:.2}% of them; {pace}",
        throttled * 100.0
    );
    assert!(
        throughput > 0.7 * 200.0,
        "throughput {throughput:.0}/s of 200; {w:?}; {timeline}"
    );
    assert!(
        throttled < 0.02,
        "throttling replies {:.1}% of deliveries; {w:?}; {timeline}",
        throttled * 100.0
    );
    assert!(pace.rate.throttles > 0, "it did find the limit: {timeline}");
    let ceiling = *ceilings.last().expect("a learned ceiling");
    assert!((120.0..=300.0).contains(&ceiling), "{timeline}");
    assert!(pace.rate.latency_floor.is_some(), "{pace}");
    // The delivery log shows the pace beside each outcome.
    let log = engine_log(engine, &log_path);
    let line = log
        .iter()
        .rev()
        .find(|l| l["status"] == "delivered")
        .expect("delivered lines");
    assert!(line["rate"]["rate"].as_f64().unwrap() > 0.0, "{line}");
    assert!(line["rate"]["connection_limit"].as_u64().unwrap() >= 1);
    assert!(
        line["rate"]["latency_floor_ms"].as_f64().is_some(),
        "{line}"
    );
}

/// Stops the engine and reads its delivery log.
fn engine_log(engine: Engine, path: &std::path::Path) -> Vec<serde_json::Value> {
    let _ = engine.shutdown();
    let lines = log_lines(path);
    let _ = std::fs::remove_file(path);
    lines
}

#[test]
fn an_operator_rule_suspends_a_destination() {
    // Both domains greylist (the first attempt per recipient gets 451 4.7.1,
    // the retry 1 s later is accepted); a rule suspends the domain whose
    // MX says "Greylisted" for an hour. The other's replies do not match.
    let scenario = Scenario::from_toml(
        r#"
        name = "rule-e2e"
        [[domain]]
        name = "grey.test"
        capacity = { greylist = true }
        [[domain]]
        name = "ok.test"
        capacity = { latency = "5ms" }
        "#,
    )
    .unwrap();
    let internet = SimulatedInternet::start(&scenario).unwrap();
    let mut c = config(&internet);
    c.rules = vec![RuleConfig {
        pattern: "^451 4\\.7\\.1 (?i)greylisted".into(),
        suspend: Some(Duration::from_secs(3600)),
        max_connections: None,
        max_rate: None,
        duration: Duration::from_secs(3600),
    }];
    let engine = Engine::start(c).unwrap();
    compose(engine.listen_addrs()[0], "grey.test", 20);
    compose(engine.listen_addrs()[0], "ok.test", 20);
    wait_until("ok.test delivered", Duration::from_secs(10), || {
        internet.counters()[1].total.accepted == 20
    });
    // Three retry periods: without the rule grey.test would be delivered.
    std::thread::sleep(Duration::from_secs(3));
    let grey = &internet.counters()[0].total;
    assert_eq!(grey.accepted, 0, "suspended: nothing delivered {grey:?}");
    assert!(
        (1..=2).contains(&grey.greylisted),
        "one transaction (per connection) tried, then nothing: {grey:?}"
    );
    let pace = engine
        .rates()
        .into_iter()
        .find(|r| r.domain == "grey.test")
        .expect("grey.test is published");
    assert_eq!(pace.rate.state.as_str(), "suspended", "{pace}");
    assert!(
        pace.rate.suspended_for.unwrap() > Duration::from_secs(3500),
        "{pace}"
    );
    assert_eq!(pace.queued, 20, "the work waits, none lost: {pace}");
    assert!(
        engine.summary().contains("grey.test q=20"),
        "{}",
        engine.summary()
    );
}
