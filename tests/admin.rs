//! The admin HTTP server against clients nobody here wrote: Python's
//! urllib fetches, the Prometheus project's own Python parser reads the
//! metrics, and `volley status` reads the status API.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use volley_engine::Engine;
use volley_smtp::Transaction;

use crate::support::sink::Script;
use crate::support::{World, check_config, composer, python, temp_path, wait_until};

/// Fetches sys.argv[1] (with the bearer token sys.argv[2] unless it is
/// `-`); prints the status, the Content-Type, then the body.
const FETCH: &str = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1])
if sys.argv[2] != "-":
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, ctype, body = r.status, r.headers["Content-Type"], r.read().decode()
except urllib.error.HTTPError as e:
    status, ctype, body = e.code, e.headers["Content-Type"], e.read().decode()
print(status)
print(ctype)
sys.stdout.write(body)
"#;

/// Parses OpenMetrics text from stdin with prometheus_client's parser
/// and prints `name{labels} value` per sample.
const PARSE_METRICS: &str = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        print(f"{s.name}{{{labels}}} {float(s.value)}")
"#;

/// (status, content type, body) of GET `url`.
fn fetch(url: &str, token: Option<&str>) -> (u16, String, String) {
    let out = python(FETCH, &[&url, &token.unwrap_or("-")]);
    let mut lines = out.splitn(3, '\n');
    let status = lines.next().unwrap().parse().unwrap();
    let ctype = lines.next().unwrap().to_string();
    (status, ctype, lines.next().unwrap_or("").to_string())
}

fn metrics_samples(text: &str) -> Vec<String> {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(PARSE_METRICS)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn send(engine: &Engine, n: usize) {
    let txs = (0..n)
        .map(|i| Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec![format!("u{i}@d{}.test", i % 2)],
            body: Bytes::from_static(b"Subject: admin\r\n\r\nbody\r\n"),
        })
        .collect();
    composer::send(engine.listen_addrs()[0], false, txs).unwrap();
}

fn volley_status(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_volley"))
        .arg("status")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn metrics_and_status_describe_the_running_engine() {
    let world = World::generated(2, 1, |_| Script::default());
    let config = world.config_with_admin();
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().expect("the admin server runs");
    send(&engine, 6);
    wait_until("all delivered", Duration::from_secs(10), || {
        world.received_count() == 6
    });
    crate::support::wait_stats(&engine, "counted", |s| s.delivered == 6);

    let (status, ctype, text) = fetch(&format!("http://{admin}/metrics"), None);
    assert_eq!(status, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let samples = metrics_samples(&text);
    for want in [
        "volley_delivered_total{} 6.0",
        "volley_messages_received_total{} 6.0",
        "volley_bounced_total{} 0.0",
        "volley_shards{} 2.0",
        "volley_queued_recipients{} 0.0",
        "volley_delivery_latency_seconds_count{} 6.0",
    ] {
        assert!(samples.iter().any(|s| s == want), "{want} in {samples:#?}");
    }
    assert!(
        samples
            .iter()
            .any(|s| s.starts_with("volley_delivery_latency_seconds_bucket{le=+Inf}")),
        "{samples:#?}"
    );

    let (status, ctype, body) = fetch(&format!("http://{admin}/api/v1/status"), None);
    assert_eq!(status, 200);
    assert_eq!(ctype, "application/json");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["totals"]["delivered"], 6);
    assert_eq!(v["shards"], 2);
    assert_eq!(v["stopping"], false);
    assert!(v["memory"]["budget_bytes"].as_u64().unwrap() > 0);

    let (status, _, body) = fetch(&format!("http://{admin}/api/v1/nothing"), None);
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("/api/v1/nothing"));

    let out = volley_status(&["--admin", &format!("http://{admin}")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("delivered 6"), "{table}");
    assert!(table.contains("2 shards"), "{table}");
    let out = volley_status(&["--admin", &format!("http://{admin}"), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["totals"]["delivered"], 6);
    engine.shutdown();
    // Stopped with the engine: nothing listens any more.
    assert!(std::net::TcpStream::connect(admin).is_err());
}

#[test]
fn metrics_count_connections_lookups_journal_commits_and_failures_by_category() {
    use volley_smtp::{EnhancedCode, Reply};
    let world = World::generated(1, 1, |_| Script {
        rcpt: Some(Box::new(|addr: &str, _| {
            if addr.starts_with("gone@") {
                Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user"))
            } else if addr.starts_with("full@") {
                Some(Reply::new(452, EnhancedCode::new(4, 2, 2), "mailbox full"))
            } else {
                None
            }
        })),
        ..Script::default()
    });
    let dir = temp_path("metrics-journal");
    let mut config = world.config_with_admin();
    config.journal.dir = Some(dir.clone());
    config.general_queue.max_attempts = 1;
    config.dsn.enabled = false;
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().expect("the admin server runs");
    let txs = ["ok", "gone", "full"]
        .iter()
        .map(|who| Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec![format!("{who}@d0.test")],
            body: Bytes::from_static(b"Subject: metrics\r\n\r\nbody\r\n"),
        })
        .collect();
    composer::send(engine.listen_addrs()[0], false, txs).unwrap();
    crate::support::wait_stats(&engine, "each outcome", |s| {
        s.delivered == 1 && s.bounced == 1 && s.expired == 1
    });
    let value = |samples: &[String], name: &str| -> f64 {
        samples
            .iter()
            .find_map(|s| s.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {samples:#?}"))
    };
    let mut samples = Vec::new();
    // The resolver's counters are copied twice a second.
    wait_until("the lookups counted", Duration::from_secs(5), || {
        samples = metrics_samples(&fetch(&format!("http://{admin}/metrics"), None).2);
        samples.iter().any(|s| {
            s.strip_prefix("volley_dns_lookups_total{} ")
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(|v| v >= 1.0)
        })
    });
    for want in [
        "volley_bounced_by_category_total{category=bad_mailbox} 1.0",
        "volley_bounced_by_category_total{category=policy} 0.0",
        "volley_expired_by_category_total{category=mailbox_full} 1.0",
        "volley_journal_commit_failures_total{} 0.0",
    ] {
        assert!(samples.iter().any(|s| s == want), "{want} in {samples:#?}");
    }
    assert!(value(&samples, "volley_connections_opened_total{}") >= 1.0);
    assert!(value(&samples, "volley_dns_cache_misses_total{}") >= 1.0);
    assert!(value(&samples, "volley_dns_cache_hits_total{}") >= 0.0);
    let commits = value(&samples, "volley_journal_commits_total{}");
    assert!(commits >= 1.0);
    assert_eq!(
        value(&samples, "volley_journal_commit_seconds_count{}"),
        commits
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn with_a_token_every_request_must_carry_it() {
    let world = World::generated(1, 1, |_| Script::default());
    let token_file = temp_path("admin-token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut config = world.config_with_admin();
    config.admin.token_file = Some(token_file.clone());
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().unwrap();
    let url = format!("http://{admin}/api/v1/status");
    let (status, ctype, body) = fetch(&url, None);
    assert_eq!(status, 401);
    assert_eq!(ctype, "application/json");
    assert!(body.contains("bearer token"), "{body}");
    assert_eq!(fetch(&url, Some("wrong-token!")).0, 401);
    assert_eq!(fetch(&format!("http://{admin}/metrics"), None).0, 401);
    assert_eq!(fetch(&url, Some("s3cret-token")).0, 200);
    let base = format!("http://{admin}");
    let refused = volley_status(&["--admin", &base]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("401"));
    let token_arg = token_file.display().to_string();
    let allowed = volley_status(&["--admin", &base, "--token-file", &token_arg]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    engine.shutdown();
    let _ = std::fs::remove_file(&token_file);
}

#[test]
fn beyond_loopback_the_admin_api_needs_a_token() {
    let file = temp_path("admin-open.toml");
    std::fs::write(&file, "[admin]\nlisten = \"0.0.0.0:8025\"\n").unwrap();
    let out = check_config(&file);
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("admin.listen"), "{text}");
    assert!(text.contains("token_file"), "{text}");
    std::fs::write(
        &file,
        "[admin]\nlisten = \"0.0.0.0:8025\"\ntoken_file = \"/etc/volley/admin-token\"\n",
    )
    .unwrap();
    let out = check_config(&file);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("admin.listen"), "{text}");
    let _ = std::fs::remove_file(&file);
}

#[test]
fn the_queues_are_listed_by_each_shard_and_shown_one_by_one() {
    // d0.test defers everyone: its recipients stay queued.
    let world = World::generated(2, 2, |k| Script {
        rcpt: (k == 0).then(|| {
            Box::new(|_: &str, _: usize| {
                Some(volley_smtp::Reply::new(
                    451,
                    volley_smtp::EnhancedCode::new(4, 3, 0),
                    "not now",
                ))
            }) as Box<_>
        }),
        ..Script::default()
    });
    let mut config = world.config_with_admin();
    config.general_queue.retry_schedule = vec![Duration::from_secs(60)];
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().unwrap();
    let txs = ["a@d0.test", "b@d0.test", "c@d0.test", "x@d1.test"]
        .iter()
        .map(|r| Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec![r.to_string()],
            body: Bytes::from_static(b"Subject: q\r\n\r\nbody\r\n"),
        })
        .collect();
    composer::send(engine.listen_addrs()[0], false, txs).unwrap();
    crate::support::wait_stats(&engine, "d0 deferred, d1 delivered", |s| {
        s.deferred >= 3 && s.delivered == 1
    });
    let (status, _, body) = fetch(&format!("http://{admin}/api/v1/queues"), None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let queues = v["queues"].as_array().unwrap();
    let d0 = queues
        .iter()
        .find(|q| q["domain"] == "d0.test")
        .expect("d0.test listed");
    assert_eq!(d0["queue"], "general");
    let held = |q: &serde_json::Value| {
        ["waiting", "retrying", "in_flight"]
            .iter()
            .map(|k| q[*k].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(held(d0), 3, "{d0}");
    assert_eq!(queues[0]["domain"], "d0.test", "the deepest first");

    let (status, _, body) = fetch(&format!("http://{admin}/api/v1/queues/D0.test"), None);
    assert_eq!(status, 200);
    let one: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(held(&one), 3);
    let (status, _, body) = fetch(&format!("http://{admin}/api/v1/queues/none.test"), None);
    assert_eq!(status, 404);
    assert!(body.contains("none.test"), "{body}");
    let (status, _, body) = fetch(&format!("http://{admin}/api/v1/queues?sort=size"), None);
    assert_eq!(status, 400);
    assert!(body.contains("depth or age"), "{body}");

    let base = format!("http://{admin}");
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["queue", "list", "--admin", &base, "--domain", "d0"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("d0.test")), "{table}");
    assert!(table.ends_with("1 of 1 domain queues\n"), "{table}");
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["queue", "show", "d0.test", "--admin", &base, "--json"])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["domain"], "d0.test");
    engine.shutdown();
}

#[test]
fn an_operator_suspends_resumes_and_flushes_a_domain() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    // d0.test defers `slow@` until `open`; d1.test takes everything.
    let open = Arc::new(AtomicBool::new(false));
    let o = open.clone();
    let world = World::generated(2, 2, move |k| Script {
        rcpt: (k == 0).then(|| {
            let o = o.clone();
            Box::new(move |rcpt: &str, _: usize| {
                (rcpt.starts_with("slow") && !o.load(Ordering::SeqCst)).then(|| {
                    volley_smtp::Reply::new(451, volley_smtp::EnhancedCode::new(4, 3, 0), "not now")
                })
            }) as Box<_>
        }),
        ..Script::default()
    });
    let mut config = world.config_with_admin();
    // Deferred recipients would wait a minute: only a flush brings them back.
    config.general_queue.retry_schedule = vec![Duration::from_secs(60)];
    let engine = Engine::start(config).unwrap();
    let base = format!("http://{}", engine.admin_addr().unwrap());
    let queue = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_volley"))
            .arg("queue")
            .args(args)
            .args(["--admin", &base])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let said = queue(&[
        "suspend",
        "D1.test",
        "--for",
        "1h",
        "--reason",
        "provider asked us to",
    ]);
    assert!(said.contains("d1.test: suspended for 3600 s"), "{said}");
    let send_to = |rcpts: &[&str]| {
        let txs = rcpts
            .iter()
            .map(|r| Transaction {
                body_type: None,
                reverse_path: "news@composer.test".into(),
                recipients: vec![r.to_string()],
                body: Bytes::from_static(b"Subject: steer\r\n\r\nbody\r\n"),
            })
            .collect();
        composer::send(engine.listen_addrs()[0], false, txs).unwrap();
    };
    send_to(&["a@d1.test", "b@d1.test", "slow@d0.test"]);
    crate::support::wait_stats(&engine, "slow deferred", |s| s.deferred >= 1);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        world.sinks[1].count(),
        0,
        "nothing reaches a suspended domain"
    );
    let listed = queue(&["list", "--domain", "d1.test"]);
    assert!(
        listed.contains("suspended: provider asked us to"),
        "{listed}"
    );
    let (status, _, body) = fetch(&format!("{base}/api/v1/queues/d1.test"), None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["waiting"], 2, "{v}");
    assert!(v["suspended"]["for_secs"].as_f64().unwrap() > 3500.0);

    assert!(queue(&["resume", "d1.test"]).contains("d1.test: resumed"));
    wait_until(
        "d1 delivered after the resume",
        Duration::from_secs(10),
        || world.sinks[1].count() == 2,
    );
    assert!(queue(&["resume", "d1.test"]).contains("was not suspended"));

    open.store(true, Ordering::SeqCst);
    let flushed = queue(&["flush", "d0.test"]);
    assert!(
        flushed.contains("d0.test: 1 deferred recipients retried now"),
        "{flushed}"
    );
    wait_until(
        "slow delivered after the flush",
        Duration::from_secs(10),
        || world.sinks[0].count() == 1,
    );

    // Bad requests get a JSON error.
    let bad = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args([
            "queue", "suspend", "d1.test", "--for", "soon", "--admin", &base,
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("400"),
        "{bad:?}"
    );
    engine.shutdown();
}

#[test]
fn an_operator_bounces_a_domains_queue_and_the_sender_hears_of_it() {
    // d0.test defers everyone; the sender's domain d1.test takes the DSN.
    let world = World::generated(2, 2, |k| Script {
        rcpt: (k == 0).then(|| {
            Box::new(|_: &str, _: usize| {
                Some(volley_smtp::Reply::new(
                    451,
                    volley_smtp::EnhancedCode::new(4, 3, 0),
                    "not now",
                ))
            }) as Box<_>
        }),
        ..Script::default()
    });
    let mut config = world.config_with_admin();
    config.general_queue.retry_schedule = vec![Duration::from_secs(60)];
    let engine = Engine::start(config).unwrap();
    let base = format!("http://{}", engine.admin_addr().unwrap());
    let tx = Transaction {
        body_type: None,
        reverse_path: "bounces@d1.test".into(),
        recipients: vec!["a@d0.test".into(), "b@d0.test".into()],
        body: Bytes::from_static(b"Subject: closing\r\n\r\nbody\r\n"),
    };
    composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
    crate::support::wait_stats(&engine, "both deferred", |s| s.deferred >= 2);
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args([
            "queue",
            "bounce",
            "d0.test",
            "--reason",
            "the domain closed",
        ])
        .args(["--admin", &base])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8(out.stdout).unwrap();
    assert!(
        said.contains("d0.test: 2 queued recipients bounced"),
        "{said}"
    );
    crate::support::wait_stats(&engine, "bounced, none queued", |s| {
        s.bounced == 2 && s.queued == 0 && s.dsn_sent == 1
    });
    wait_until(
        "the DSN at the sender's domain",
        Duration::from_secs(10),
        || world.sinks[1].count() == 1,
    );
    let dsn = world.sinks[1].received.lock()[0].clone();
    assert_eq!(dsn.sender, "");
    let text = String::from_utf8_lossy(&dsn.body);
    assert!(
        text.contains("given up by the operator: the domain closed"),
        "{text}"
    );
    assert!(text.contains("Final-Recipient: rfc822; a@d0.test"));
    assert!(text.contains("Final-Recipient: rfc822; b@d0.test"));
    engine.shutdown();
}

#[test]
fn a_drain_closes_the_listeners_delivers_what_is_queued_and_ends_volley_serve() {
    // A slow MX host: the messages are still queued when the drain comes.
    let world = World::generated(2, 1, |_| Script {
        data_delay: Some(Duration::from_millis(300)),
        ..Script::default()
    });
    let free = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (listen, admin) = (free(), free());
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["serve", "--listen", &listen.to_string(), "--shards", "2"])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--delivery-port", &world.port.to_string()])
        .args(["--nameserver", &world.dns.addr().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("volley listens", Duration::from_secs(10), || {
        std::net::TcpStream::connect(listen).is_ok() && std::net::TcpStream::connect(admin).is_ok()
    });
    let txs = (0..10)
        .map(|i| Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec![format!("u{i}@d{}.test", i % 2)],
            body: Bytes::from_static(b"Subject: drain\r\n\r\nbody\r\n"),
        })
        .collect();
    composer::send(listen, false, txs).unwrap();
    let out = volley_status(&["--admin", &format!("http://{admin}")]);
    assert!(out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["drain", "--admin", &format!("http://{admin}"), "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["draining"], true);
    // Five messages per domain, 300 ms each at the MX host: most are
    // still queued when the drain comes.
    assert!(answer["queued"].as_u64().unwrap() > 0, "{answer}");
    wait_until("the listener closed", Duration::from_secs(5), || {
        std::net::TcpStream::connect(listen).is_err()
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "volley did not stop after the drain"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert_eq!(
        world.received_count(),
        10,
        "everything queued was delivered first"
    );
}

/// Headless Chromium (the Debian `chromium` package; .ci/run installs it)
/// loading `url` with `args`, given five seconds of page time.
fn chromium(url: &str, args: &[&str]) -> std::process::Output {
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
        ])
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs")
}

#[test]
fn the_status_page_shows_counters_and_domains_in_a_real_browser() {
    // d0.test defers everyone (its queue stays), d1.test takes everything.
    let world = World::generated(2, 2, |k| Script {
        rcpt: (k == 0).then(|| {
            Box::new(|_: &str, _: usize| {
                Some(volley_smtp::Reply::new(
                    451,
                    volley_smtp::EnhancedCode::new(4, 3, 0),
                    "not now",
                ))
            }) as Box<_>
        }),
        ..Script::default()
    });
    let mut config = world.config_with_admin();
    config.general_queue.retry_schedule = vec![Duration::from_secs(60)];
    let engine = Engine::start(config).unwrap();
    let url = format!("http://{}/", engine.admin_addr().unwrap());
    let txs = (0..7)
        .map(|i| Transaction {
            body_type: None,
            reverse_path: "news@composer.test".into(),
            recipients: vec![format!("u{i}@d{}.test", usize::from(i >= 3))],
            body: Bytes::from_static(b"Subject: page\r\n\r\nbody\r\n"),
        })
        .collect();
    composer::send(engine.listen_addrs()[0], false, txs).unwrap();
    crate::support::wait_stats(&engine, "4 delivered, 3 deferred", |s| {
        s.delivered == 4 && s.deferred >= 3
    });
    let out = chromium(&url, &["--dump-dom"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    // The page's script filled these in from the API.
    assert!(dom.contains(r#"<td id="received">7</td>"#), "{dom}");
    assert!(dom.contains(r#"<td id="delivered">4</td>"#), "{dom}");
    assert!(dom.contains(r#"<td id="queued">3</td>"#), "{dom}");
    assert!(!dom.contains(r#"<b id="updated">never</b>"#), "{dom}");
    assert!(
        dom.contains("<td>d0.test</td><td>general</td><td>3</td>"),
        "{dom}"
    );
    assert!(dom.contains("<button>suspend</button>"), "{dom}");
    // A screenshot as the test's artifact.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = chromium(
        &url,
        &[
            "--window-size=1280,900",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    engine.shutdown();
}

#[test]
fn in_durable_mode_a_suspension_survives_a_restart() {
    let world = World::generated(2, 2, |_| Script::default());
    let dir = temp_path("journal-holds");
    let config = || {
        let mut c = world.config_with_admin();
        c.journal.dir = Some(dir.clone());
        c
    };
    // `volley queue ARGS` against the admin API at `base`.
    let queue = |base: &str, args: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_volley"))
            .arg("queue")
            .args(args.split(' '))
            .args(["--admin", base])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let engine = Engine::start(config()).unwrap();
    let base = format!("http://{}", engine.admin_addr().unwrap());
    queue(&base, "suspend d1.test --for 2h --reason maintenance");
    engine.shutdown();

    let engine = Engine::start(config()).unwrap();
    let base = format!("http://{}", engine.admin_addr().unwrap());
    let tx = Transaction {
        body_type: None,
        reverse_path: "news@composer.test".into(),
        recipients: vec!["a@d1.test".into()],
        body: Bytes::from_static(b"Subject: held\r\n\r\nbody\r\n"),
    };
    composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        world.received_count(),
        0,
        "still suspended after the restart"
    );
    let (status, _, body) = fetch(&format!("{base}/api/v1/queues/d1.test"), None);
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["suspended"]["reason"], "maintenance", "{v}");
    assert!(v["suspended"]["for_secs"].as_f64().unwrap() > 7000.0);
    queue(&base, "resume d1.test");
    wait_until(
        "delivered after the resume",
        Duration::from_secs(10),
        || world.received_count() == 1,
    );
    engine.shutdown();
    // Resumed: the next start holds nothing.
    let engine = Engine::start(config()).unwrap();
    let tx = Transaction {
        body_type: None,
        reverse_path: "news@composer.test".into(),
        recipients: vec!["b@d1.test".into()],
        body: Bytes::from_static(b"Subject: free\r\n\r\nbody\r\n"),
    };
    composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
    wait_until("delivered at once", Duration::from_secs(10), || {
        world.received_count() == 2
    });
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_message_shows_its_envelope_and_where_its_queued_recipients_are() {
    // d0.test defers everyone; d1.test takes everything.
    let world = World::generated(2, 2, |k| Script {
        rcpt: (k == 0).then(|| {
            Box::new(|_: &str, _: usize| {
                Some(volley_smtp::Reply::new(
                    451,
                    volley_smtp::EnhancedCode::new(4, 3, 0),
                    "not now",
                ))
            }) as Box<_>
        }),
        ..Script::default()
    });
    let mut config = world.config_with_admin();
    config.general_queue.retry_schedule = vec![Duration::from_secs(60)];
    let engine = Engine::start(config).unwrap();
    let base = format!("http://{}", engine.admin_addr().unwrap());
    let tx = Transaction {
        body_type: None,
        reverse_path: "news@composer.test".into(),
        recipients: vec!["a@d0.test".into(), "x@d1.test".into(), "b@d0.test".into()],
        body: Bytes::from_static(
            b"Message-ID: <m7@composer.test>\r\nSubject: where\r\n\r\nbody\r\n",
        ),
    };
    composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
    crate::support::wait_stats(&engine, "one delivered, two deferred", |s| {
        s.delivered == 1 && s.deferred >= 2
    });
    let log = crate::support::log_lines(&world.log);
    let id = log
        .iter()
        .find(|l| l["recipient"] == "x@d1.test")
        .and_then(|l| l["message_id"].as_str())
        .unwrap()
        .to_string();
    let (status, _, body) = fetch(&format!("{base}/api/v1/messages/{id}"), None);
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["sender"], "news@composer.test");
    assert_eq!(v["message_id_header"], "<m7@composer.test>");
    assert_eq!(
        v["envelope"],
        serde_json::json!(["a@d0.test", "x@d1.test", "b@d0.test"])
    );
    let queued = v["queued"].as_array().unwrap();
    assert_eq!(queued.len(), 2, "the delivered one is not queued: {v}");
    for (q, (index, rcpt)) in queued.iter().zip([(0, "a@d0.test"), (2, "b@d0.test")]) {
        assert_eq!(q["index"], index);
        assert_eq!(q["recipient"], rcpt);
        assert_eq!(q["state"], "retrying");
        assert_eq!(q["attempts"], 1);
        assert!(q["next_attempt_secs"].as_f64().unwrap() > 50.0, "{q}");
    }
    let (status, _, body) = fetch(&format!("{base}/api/v1/messages/00000000000000ff"), None);
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = fetch(&format!("{base}/api/v1/messages/not-hex"), None);
    assert_eq!(status, 400);
    engine.shutdown();
}
