//! The relay end to end: Composer -> Volley (in-process engine, 2 shards) ->
//! test DNS server -> MX sinks on 127.0.0.x.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use volley_engine::Engine;
use volley_smtp::Transaction;

use crate::support::sink::Script;
use crate::support::{World, composer, wait_stats};

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

/// Sends `n` one-recipient messages over `conns` parallel sessions.
fn compose(addr: SocketAddr, n: usize, domains: usize, conns: usize) -> HashMap<String, Bytes> {
    let mut sent = HashMap::new();
    let mut per_conn: Vec<Vec<Transaction>> = (0..conns).map(|_| Vec::new()).collect();
    for i in 0..n {
        let b = body(i);
        sent.insert(message_id(&b), b.clone());
        per_conn[i % conns].push(Transaction {
            reverse_path: "news@composer.test".into(),
            recipients: vec![format!("user{i}@d{}.test", i % domains)],
            body: b,
        });
    }
    let handles: Vec<_> = per_conn
        .into_iter()
        .map(|txs| std::thread::spawn(move || composer::send(addr, false, txs).unwrap()))
        .collect();
    for h in handles {
        for o in h.join().unwrap() {
            assert_eq!(o.delivered(), 1, "{o:?}");
        }
    }
    sent
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
        assert_eq!(r.sender, "news@composer.test");
        assert_eq!(r.recipients.len(), 1);
        assert!(seen.insert(id, ()).is_none(), "delivered twice");
    }
}

#[test]
fn ten_thousand_messages_to_200_domains_arrive_exactly_once() {
    let world = World::generated(200, 4, |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    let sent = compose(addr, 10_000, 200, 8);
    wait_stats(&engine, "10,000 delivered", |s| s.delivered == 10_000);
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    assert_eq!(report.stats.received, 10_000);
    assert_eq!(report.stats.deferred, 0);
    assert_exactly_once(&world, &sent);
    // Connections are reused: far fewer than messages.
    let conns: usize = world
        .sinks
        .iter()
        .map(|s| s.connections.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    assert!(
        (200..2_000).contains(&conns),
        "{conns} connections for 10,000 messages"
    );
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
}
