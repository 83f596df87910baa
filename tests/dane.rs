//! DANE (RFC 7672) end to end: a DNSSEC-signed zone served on loopback
//! (signed by hickory-server, validated by Volley's resolver against the
//! zone's own key), TLSA records computed with openssl as an operator
//! computes them, and MX sinks that offer STARTTLS.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use volley_bench::{Leaf, SinkTls, TestCa};
use volley_dns::{SignedZone, TestDnsServer, TlsaRecord};
use volley_engine::{Config, Engine, ListenerConfig};
use volley_smtp::Transaction;

use crate::support::sink::{Script, Sink};
use crate::support::{composer, log_lines, temp_path, wait_until};

/// `3 1 1`: the SHA-256 of the certificate's public key, as
/// `openssl x509 -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256` prints it.
fn dane_ee(leaf: &Leaf) -> TlsaRecord {
    let pem = temp_path("dane-leaf.pem");
    std::fs::write(&pem, &leaf.cert_pem).unwrap();
    let script = format!(
        "openssl x509 -in {} -noout -pubkey | openssl pkey -pubin -outform DER | openssl dgst -sha256 -hex",
        pem.display()
    );
    let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    let _ = std::fs::remove_file(&pem);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let hex = text.rsplit(' ').next().unwrap().trim();
    let data = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>();
    assert_eq!(data.len(), 32, "{text}");
    TlsaRecord {
        usage: 3,
        selector: 1,
        matching: 1,
        data,
    }
}

/// Sinks offering STARTTLS with `leaves` on 127.0.0.2, .3, ... and one port.
fn sinks(leaves: &[&Leaf]) -> Vec<Sink> {
    for _ in 0..50 {
        let script = |leaf: &Leaf| Script {
            tls: Some(SinkTls::Offer(leaf.server_config().unwrap())),
            ..Script::default()
        };
        let first = Sink::start(Ipv4Addr::new(127, 0, 0, 2), 0, script(leaves[0])).unwrap();
        let port = first.addr.port();
        let mut all = vec![first];
        for (i, leaf) in leaves.iter().enumerate().skip(1) {
            match Sink::start(Ipv4Addr::new(127, 0, 0, 2 + i as u8), port, script(leaf)) {
                Ok(s) => all.push(s),
                Err(_) => break,
            }
        }
        if all.len() == leaves.len() {
            return all;
        }
    }
    panic!("no port free on every sink address");
}

#[test]
fn dane_hosts_get_their_tlsa_records_checked_and_the_rest_opportunistic_tls() {
    let ca = TestCa::new("DANE test CA").unwrap();
    // DANE-EE checks neither names nor dates: this certificate names
    // another host and has expired, and still matches its record.
    let a = ca.leaf(&["unrelated.example"], true).unwrap();
    let b = ca.leaf(&["mx.b.dane.test"], false).unwrap();
    let c = ca.leaf(&["mx.c.dane.test"], false).unwrap();
    let someone_else = ca.leaf(&["mx.b.dane.test"], false).unwrap();
    let sinks = sinks(&[&a, &b, &c]);
    let port = sinks[0].addr.port();
    let zone = SignedZone::new("dane.test")
        .and_then(|z| z.mx("a.dane.test", [(10, "mx.a.dane.test")]))
        .and_then(|z| z.host("mx.a.dane.test", ["127.0.0.2".parse().unwrap()]))
        .and_then(|z| z.tlsa("mx.a.dane.test", port, &dane_ee(&a)))
        // b's record names another key than the one its host presents.
        .and_then(|z| z.mx("b.dane.test", [(10, "mx.b.dane.test")]))
        .and_then(|z| z.host("mx.b.dane.test", ["127.0.0.3".parse().unwrap()]))
        .and_then(|z| z.tlsa("mx.b.dane.test", port, &dane_ee(&someone_else)))
        // c has no TLSA record: the queue's own policy applies.
        .and_then(|z| z.mx("c.dane.test", [(10, "mx.c.dane.test")]))
        .and_then(|z| z.host("mx.c.dane.test", ["127.0.0.4".parse().unwrap()]))
        .unwrap();
    let (dns, anchor) = TestDnsServer::start_signed(zone).unwrap();
    let anchor_file = temp_path("dane-anchor");
    std::fs::write(&anchor_file, anchor).unwrap();
    let log = temp_path("dane.log");
    let mut resolver = dns.resolver_config();
    resolver.dnssec = true;
    resolver.trust_anchor = Some(anchor_file.clone());
    let mut config = Config {
        shards: 2,
        delivery_port: port,
        delivery_log: Some(log.clone()),
        listeners: vec![ListenerConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            ..ListenerConfig::default()
        }],
        resolver,
        ..Config::default()
    };
    config.general_queue.retry_schedule = vec![Duration::from_millis(200)];
    config.general_queue.host_down_for = Duration::from_millis(300);
    config.admin.enabled = false;
    let engine = Engine::start(config).unwrap();
    for rcpt in ["u@a.dane.test", "u@b.dane.test", "u@c.dane.test"] {
        let tx = Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec![rcpt.into()],
            body: Bytes::from_static(b"Subject: dane\r\n\r\nbody\r\n"),
        };
        composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
    }
    wait_until(
        "a and c delivered, b deferred",
        Duration::from_secs(15),
        || {
            let lines = log_lines(&log);
            let has = |rcpt: &str, status: &str| {
                lines
                    .iter()
                    .any(|l| l["recipient"] == rcpt && l["status"] == status)
            };
            has("u@a.dane.test", "delivered")
                && has("u@c.dane.test", "delivered")
                && has("u@b.dane.test", "deferred")
        },
    );
    engine.shutdown();
    let lines = log_lines(&log);
    let first = |rcpt: &str| {
        lines
            .iter()
            .find(|l| l["recipient"] == rcpt)
            .unwrap()
            .clone()
    };
    let a_line = first("u@a.dane.test");
    assert_eq!(a_line["tls"]["dane"], true, "{a_line}");
    assert_eq!(a_line["tls"]["verified"], true);
    let c_line = first("u@c.dane.test");
    assert!(
        c_line["tls"].is_object(),
        "STARTTLS as the queue's policy asks"
    );
    assert!(c_line["tls"].get("dane").is_none(), "{c_line}");
    assert_eq!(c_line["tls"]["verified"], false);
    let b_line = first("u@b.dane.test");
    assert_eq!(b_line["category"], "tls");
    let text = b_line["text"].as_str().unwrap();
    assert!(text.contains("DANE"), "{text}");
    assert_eq!(
        sinks[1].count(),
        0,
        "nothing reached the host whose key is not named"
    );
    assert_eq!(sinks[0].count() + sinks[2].count(), 2);
    for f in [&anchor_file, &log] {
        let _ = std::fs::remove_file(f);
    }
}
