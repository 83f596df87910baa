//! The event feed against a real HTTP endpoint on loopback: outcomes
//! arrive as JSON arrays, in order per recipient, and none is lost while
//! the endpoint is down for a while.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use volley_engine::Engine;
use volley_smtp::{EnhancedCode, Reply, Transaction};

use crate::support::sink::Script;
use crate::support::{World, composer, wait_until};

/// An HTTP endpoint that keeps every event POSTed to it.
struct Endpoint {
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    posts: Arc<Mutex<usize>>,
}

/// A blocking connection, in clear text or TLS.
trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

impl Endpoint {
    fn start(addr: SocketAddr) -> Endpoint {
        Endpoint::start_with(addr, None)
    }

    /// With `tls`: an https endpoint.
    fn start_with(addr: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) -> Endpoint {
        let listener = TcpListener::bind(addr).unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(0));
        let (kept, counted) = (events.clone(), posts.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(tcp) = stream else { continue };
                let mut s: Box<dyn Io> = match &tls {
                    None => Box::new(tcp),
                    Some(config) => Box::new(rustls::StreamOwned::new(
                        rustls::ServerConnection::new(config.clone()).unwrap(),
                        tcp,
                    )),
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let body_at = loop {
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&request[..body_at]).to_ascii_lowercase();
                assert!(head.starts_with("post /hooks "), "{head}");
                assert!(head.contains("content-type: application/json"), "{head}");
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap();
                while request.len() < body_at + length {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let batch: Vec<serde_json::Value> =
                    serde_json::from_slice(&request[body_at..body_at + length]).unwrap();
                kept.lock().extend(batch);
                *counted.lock() += 1;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        });
        Endpoint { events, posts }
    }

    /// (recipient, status) of every event received, in order.
    fn seen(&self) -> Vec<(String, String)> {
        self.events
            .lock()
            .iter()
            .map(|e| {
                let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                (s("recipient"), s("status"))
            })
            .collect()
    }
}

fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn outcomes_reach_an_endpoint_that_was_down_for_a_while_in_order_and_all_of_them() {
    // later@d0.test is deferred once, then delivered.
    let world = World::generated(2, 2, |_| Script {
        rcpt: Some(Box::new(|rcpt, seen| {
            (rcpt.starts_with("later") && seen == 0)
                .then(|| Reply::new(451, EnhancedCode::new(4, 3, 0), "try again later"))
        })),
        ..Script::default()
    });
    let addr = free_port();
    let mut config = world.config();
    config.events.url = Some(format!("http://{addr}/hooks"));
    config.events.batch = 4;
    let engine = Engine::start(config).unwrap();
    let mut rcpts: Vec<String> = (0..20).map(|i| format!("u{i}@d{}.test", i % 2)).collect();
    rcpts.push("later@d0.test".into());
    for r in &rcpts {
        let tx = Transaction {
            body_type: None,
            reverse_path: "n@composer.test".into(),
            recipients: vec![r.clone()],
            body: Bytes::from_static(
                b"Message-ID: <m@composer.test>\r\nSubject: e\r\n\r\nbody\r\n",
            ),
        };
        let out = composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
        assert_eq!(out[0].delivered(), 1);
    }
    wait_until("all delivered", Duration::from_secs(10), || {
        world.received_count() == rcpts.len()
    });
    // The endpoint has been down all along; it comes up now.
    std::thread::sleep(Duration::from_millis(500));
    let endpoint = Endpoint::start(addr);
    wait_until(
        "every outcome at the endpoint",
        Duration::from_secs(20),
        || {
            let seen = endpoint.seen();
            rcpts
                .iter()
                .all(|r| seen.contains(&(r.clone(), "delivered".to_string())))
        },
    );
    assert_eq!(engine.stats().events_dropped, 0, "within the queue bound");
    engine.shutdown();
    let seen = endpoint.seen();
    let later: Vec<&str> = seen
        .iter()
        .filter(|(r, _)| r == "later@d0.test")
        .map(|(_, s)| s.as_str())
        .collect();
    assert_eq!(later.first(), Some(&"deferred"), "in order: {later:?}");
    assert!(later.contains(&"delivered"));
    assert!(
        *endpoint.posts.lock() >= rcpts.len().div_ceil(4),
        "batches of 4 at most"
    );
    let one = endpoint.events.lock()[0].clone();
    for key in [
        "message_id",
        "message_id_header",
        "recipient",
        "status",
        "category",
    ] {
        assert!(one.get(key).is_some(), "{key} in {one}");
    }
}

#[test]
fn beyond_its_bound_the_queue_drops_and_counts_events_and_delivery_goes_on() {
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    // Nothing listens there; the queue holds 3 events.
    config.events.url = Some(format!("http://{}/hooks", free_port()));
    config.events.queue = 3;
    config.events.batch = 1;
    let engine = Engine::start(config).unwrap();
    let txs: Vec<Transaction> = (0..10)
        .map(|i| Transaction {
            body_type: None,
            reverse_path: "n@composer.test".into(),
            recipients: vec![format!("u{i}@d0.test")],
            body: Bytes::from_static(b"Subject: e\r\n\r\nbody\r\n"),
        })
        .collect();
    composer::send(engine.listen_addrs()[0], false, txs).unwrap();
    wait_until("all delivered", Duration::from_secs(10), || {
        world.received_count() == 10
    });
    crate::support::wait_stats(&engine, "events dropped", |s| s.events_dropped >= 5);
    engine.shutdown();
}

#[test]
fn an_https_endpoint_gets_the_events_over_a_verified_connection() {
    let ca = volley_bench::TestCa::new("events test CA").unwrap();
    let ca_file = crate::support::temp_path("events-ca.pem");
    ca.write(&ca_file).unwrap();
    let leaf = ca.leaf(&["127.0.0.1"], false).unwrap();
    let addr = free_port();
    let endpoint = Endpoint::start_with(addr, Some(leaf.server_config().unwrap()));
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    config.events.url = Some(format!("https://{addr}/hooks"));
    config.events.ca_file = Some(ca_file.clone());
    let engine = Engine::start(config).unwrap();
    let tx = Transaction {
        body_type: None,
        reverse_path: "n@composer.test".into(),
        recipients: vec!["u@d0.test".into()],
        body: Bytes::from_static(b"Subject: e\r\n\r\nbody\r\n"),
    };
    composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
    wait_until("the event over https", Duration::from_secs(10), || {
        endpoint.seen() == [("u@d0.test".to_string(), "delivered".to_string())]
    });
    engine.shutdown();
    let _ = std::fs::remove_file(ca_file);
}
