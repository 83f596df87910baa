//! The injection API end to end, driven by HTTP clients nobody here
//! wrote (curl and Python's urllib): templated mailings rendered per
//! recipient at send time, the refusals a Composer must be able to act
//! on, and a kill -9 in durable mode.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use volley_engine::Engine;

use crate::support::sink::Script;
use crate::support::{World, python, temp_path, wait_stats, wait_until};

/// POSTs `body` to `url` with curl (from `source` when given); the
/// status and the parsed JSON answer.
fn curl(url: &str, body: &[u8], source: Option<&str>, token: Option<&str>) -> (u16, Value) {
    let file = temp_path("inject.json");
    std::fs::write(&file, body).unwrap();
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-S", "-m", "30", "-w", "\n%{http_code}"])
        .args(["-H", "Content-Type: application/json", "--data-binary"])
        .arg(format!("@{}", file.display()));
    if let Some(s) = source {
        cmd.args(["--interface", s]);
    }
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    let out = cmd.arg(url).output().expect("curl runs");
    let _ = std::fs::remove_file(&file);
    let text = String::from_utf8(out.stdout).unwrap();
    let (json, status) = text.rsplit_once('\n').expect("status line");
    let parsed = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    (status.trim().parse().unwrap(), parsed)
}

/// POSTs sys.argv[2] to sys.argv[1] with urllib; prints status, then body.
const URLLIB_POST: &str = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(),
                             headers={"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        status, body = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, body = e.code, e.read().decode()
print(status)
sys.stdout.write(body)
"#;

fn urllib(url: &str, body: &Value) -> (u16, Value) {
    let out = python(URLLIB_POST, &[&url, &body.to_string()]);
    let (status, json) = out.split_once('\n').unwrap();
    (status.parse().unwrap(), serde_json::from_str(json).unwrap())
}

const TEMPLATE: &str = "From: News <news@composer.test>\nTo: {{ name }} <{{ email }}>\nSubject: {{ greeting }}, {{ name }}\n\nDear {{ name }} of {{ city }},\n{% for i in items %}* {{ i }}\n{% endfor %}Bye\n";

/// The request of the tests: three good recipients (one with its own
/// greeting), one bad address, one whose name would add a header.
fn request() -> Value {
    json!({
        "envelope_sender": "news@composer.test",
        "content": TEMPLATE,
        "substitutions": {"greeting": "Hello", "items": ["a", "b"]},
        "recipients": [
            {"email": "ann@d0.test", "name": "Ann", "substitutions": {"city": "Oslo"}},
            {"email": "bob@d1.test", "name": "Bob", "substitutions": {"city": "Rome"}},
            {"email": "not an address"},
            {"email": "eve@d0.test", "name": "Eve", "substitutions": {"city": "Lima", "greeting": "Hi\r\nBcc: x@evil.test"}},
            {"email": "cy@d1.test", "substitutions": {"city": "Kyiv", "greeting": "Hi"}}
        ]
    })
}

/// What MiniJinja itself makes of the template for `ctx`, with the CRLF
/// line ends (and the final one) SMTP carries.
fn expected(ctx: Value) -> String {
    let env = minijinja::Environment::new();
    let text = env
        .render_str(
            TEMPLATE,
            minijinja::Value::from(minijinja::value::Serde(&ctx)),
        )
        .unwrap();
    text.replace('\n', "\r\n") + "\r\n"
}

fn check_the_three(world: &World) {
    let mut got: HashMap<String, String> = HashMap::new();
    for r in world.received() {
        assert_eq!(r.recipients.len(), 1, "one message per recipient");
        assert!(r.trace.contains("with HTTP"), "{}", r.trace);
        got.insert(r.recipients[0].clone(), String::from_utf8(r.body).unwrap());
    }
    let items = json!(["a", "b"]);
    let want = [
        (
            "ann@d0.test",
            json!({"greeting": "Hello", "items": items, "email": "ann@d0.test", "name": "Ann", "city": "Oslo"}),
        ),
        (
            "bob@d1.test",
            json!({"greeting": "Hello", "items": items, "email": "bob@d1.test", "name": "Bob", "city": "Rome"}),
        ),
        (
            "cy@d1.test",
            json!({"greeting": "Hi", "items": items, "email": "cy@d1.test", "city": "Kyiv"}),
        ),
    ];
    assert_eq!(got.len(), 3, "{:?}", got.keys());
    for (rcpt, ctx) in want {
        assert_eq!(got[rcpt], expected(ctx), "{rcpt}");
    }
}

fn check_the_answer(answer: &Value, ack: &str) {
    assert_eq!(answer["success_count"], 3, "{answer}");
    assert_eq!(answer["fail_count"], 2, "{answer}");
    assert_eq!(
        answer["failed_recipients"],
        json!(["not an address", "eve@d0.test"])
    );
    let errors = answer["errors"].as_array().unwrap();
    assert!(
        errors[0].as_str().unwrap().contains("bad address"),
        "{answer}"
    );
    assert!(errors[1].as_str().unwrap().contains("CR or LF"), "{answer}");
    assert_eq!(answer["ack"], ack);
}

#[test]
fn each_recipient_gets_its_message_rendered_as_minijinja_renders_it() {
    let world = World::generated(2, 1, |_| Script::default());
    let engine = Engine::start(world.config_with_admin()).unwrap();
    let admin = engine.admin_addr().unwrap();
    let url = format!("http://{admin}/api/inject/v1");
    let (status, answer) = curl(&url, request().to_string().as_bytes(), None, None);
    assert_eq!(status, 200, "{answer}");
    check_the_answer(&answer, "memory");
    wait_until("three delivered", Duration::from_secs(10), || {
        world.received_count() == 3
    });
    check_the_three(&world);
    // Nothing else comes: the refused two were never queued.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(world.received_count(), 3);
}

#[test]
fn safe_mode_answers_with_each_recipients_delivery() {
    // d1's receiver refuses bob.
    let world = World::generated(2, 2, |k| Script {
        rcpt: (k == 1).then(|| {
            Box::new(|rcpt: &str, _seen: usize| {
                (rcpt == "bob@d1.test").then(|| {
                    volley_smtp::Reply::new(
                        550,
                        volley_smtp::EnhancedCode::new(5, 1, 1),
                        "no such user",
                    )
                })
            }) as Box<_>
        }),
        ..Script::default()
    });
    let engine = Engine::start(world.config_with_admin()).unwrap();
    let admin = engine.admin_addr().unwrap();
    let mut r = request();
    r["ack"] = json!("safe");
    let (status, answer) = urllib(&format!("http://{admin}/api/v1/inject"), &r);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["ack"], "delivery", "{answer}");
    assert_eq!(answer["success_count"], 2, "{answer}");
    assert_eq!(
        answer["failed_recipients"],
        json!(["not an address", "eve@d0.test", "bob@d1.test"])
    );
    assert!(
        answer["errors"][2].as_str().unwrap().contains("550"),
        "{answer}"
    );
    // The same request through urllib on KumoMTA's path: fast.
    let (status, answer) = urllib(&format!("http://{admin}/api/inject/v1"), &request());
    assert_eq!(status, 200);
    check_the_answer(&answer, "memory");
}

#[test]
fn bad_requests_get_json_errors_and_queue_nothing() {
    let world = World::generated(2, 1, |_| Script::default());
    let mut config = world.config_with_admin();
    config.ingest.max_message_size = 64 * 1024;
    config.ingest.command_timeout = Duration::from_millis(500);
    config.ingest.trusted_networks = vec!["127.0.0.1/32".parse().unwrap()];
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().unwrap();
    let url = format!("http://{admin}/api/inject/v1");
    let with_content = |content: Value| {
        let mut r = request();
        r["content"] = content;
        r.to_string()
    };
    let huge_recipients = json!({
        "envelope_sender": "a@composer.test", "content": "Subject: x\n\nx",
        "recipients": (0..1001).map(|i| json!({"email": format!("u{i}@d0.test")})).collect::<Vec<_>>()
    });
    let cases: Vec<(String, u16, &str)> = vec![
        ("{\"envelope_sender\": \"a@b\", ".into(), 400, "malformed JSON"),
        (r#"{"envelope_sender": 7, "content": "x", "recipients": []}"#.into(), 400, "invalid request"),
        (r#"{"envelope_sender": "a@b.test", "content": "x", "recipients": []}"#.into(), 400, "no recipients"),
        (huge_recipients.to_string(), 400, "at most 1000"),
        (r#"{"envelope_sender": "not@@x", "content": "x", "recipients": [{"email": "a@d0.test"}]}"#.into(), 400, "envelope_sender"),
        (with_content(json!("Subject: {{ name }\n\nbody")), 400, "line 1"),
        (with_content(json!("Subject: x\n\nline 3\n{% for %}")), 400, "line 4"),
        (
            with_content(json!("Subject: x\n\n{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}")),
            400,
            "bound",
        ),
        (with_content(json!("Subject: x\n\n{{ 'x' * 60000 }}{{ 'x' * 60000 }}")), 400, "size limit"),
        (with_content(json!({"subject": "no body"})), 400, "text_body"),
        ("x".repeat(70 * 1024), 413, "size limit"),
    ];
    for (body, want_status, want_text) in &cases {
        let (status, answer) = curl(&url, body.as_bytes(), None, None);
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(
            status,
            *want_status,
            "{answer} for {}",
            &body[..body.len().min(80)]
        );
        assert!(error.contains(want_text), "{error:?} lacks {want_text:?}");
    }
    // Outside the trusted networks: the token is needed (none is set).
    let (status, answer) = curl(
        &url,
        request().to_string().as_bytes(),
        Some("127.0.0.9"),
        None,
    );
    assert_eq!(status, 401, "{answer}");
    // A client that sends half its body and stops: a timeout, in time.
    let mut slow = TcpStream::connect(admin).unwrap();
    write!(
        slow,
        "POST /api/inject/v1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"envelope"
    )
    .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut slow, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // None of it was half accepted.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(world.received_count(), 0);
    assert_eq!(engine.stats().received, 0);
}

/// A `volley serve` child in durable mode with its admin API.
fn serve(world: &World, journal: &std::path::Path, admin: SocketAddr) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args(["serve", "--listen", "127.0.0.1:0", "--shards", "2"])
        .args(["--admin-listen", &admin.to_string()])
        .args(["--delivery-port", &world.port.to_string()])
        .args(["--nameserver", &world.dns.addr().to_string()])
        .arg("--journal")
        .arg(journal)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the admin API listens", Duration::from_secs(20), || {
        TcpStream::connect(admin).is_ok()
    });
    child
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn kill_9_in_durable_mode_delivers_every_accepted_recipient_rendered_the_same() {
    // Slow receivers, so that most recipients are still queued at the kill.
    let world = World::generated(4, 2, |_| Script {
        data_delay: Some(Duration::from_millis(30)),
        ..Script::default()
    });
    let journal = temp_path("journal-inject");
    let admin = free_port();
    let mut child = serve(&world, &journal, admin);
    let url = format!("http://{admin}/api/inject/v1");
    let mut accepted = Vec::new();
    for batch in 0..4 {
        let recipients: Vec<Value> = (0..40)
            .map(|i| json!({"email": format!("u{batch}-{i}@d{}.test", i % 4), "substitutions": {"n": format!("{batch}/{i}")}}))
            .collect();
        // Built messages, and whole ones with 8-bit text (BODY=8BITMIME).
        let content = if batch % 2 == 0 {
            json!({"subject": "Number {{ n }}", "text_body": "You are {{ n }}.", "from": {"email": "news@composer.test"}})
        } else {
            json!("From: news@composer.test\nSubject: Number {{ n }}\n\nGrüße, {{ n }}.\n")
        };
        let r = json!({
            "envelope_sender": "news@composer.test",
            "content": content,
            "recipients": recipients,
        });
        let (status, answer) = curl(&url, r.to_string().as_bytes(), None, None);
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["ack"], "disk");
        assert_eq!(answer["success_count"], 40);
        accepted.extend((0..40).map(|i| format!("u{batch}-{i}@d{}.test", i % 4)));
    }
    let before_kill = world.received_count();
    std::thread::sleep(Duration::from_millis(200));
    let window_start = world.received_count();
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = world.received_count();
    assert!(
        at_kill < accepted.len(),
        "the kill came after everything went"
    );
    let mut child = serve(&world, &journal, admin);
    wait_until(
        "every accepted recipient delivered",
        Duration::from_secs(60),
        || {
            let got: std::collections::HashSet<String> = world
                .received()
                .into_iter()
                .flat_map(|r| r.recipients)
                .collect();
            accepted.iter().all(|a| got.contains(a))
        },
    );
    let mut copies: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
    for r in world.received() {
        copies
            .entry(r.recipients[0].clone())
            .or_default()
            .push(r.body);
    }
    let duplicates: usize = copies.values().map(|c| c.len() - 1).sum();
    for (rcpt, c) in &copies {
        assert!(
            c.windows(2).all(|w| w[0] == w[1]),
            "{rcpt} rendered differently"
        );
        let text = String::from_utf8_lossy(&c[0]);
        let n = rcpt
            .trim_start_matches('u')
            .split('@')
            .next()
            .unwrap()
            .replace('-', "/");
        assert!(text.contains(&format!("Subject: Number {n}\r\n")), "{text}");
    }
    // Duplicates only within the journal's window: recipients delivered in
    // the last moments before the kill, whose finish was not yet on disk.
    assert!(
        duplicates <= at_kill - window_start.min(before_kill) + 4,
        "{duplicates} duplicates, {} delivered in the window",
        at_kill - window_start
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(&journal);
}

#[test]
fn the_stats_count_injected_messages() {
    let world = World::generated(2, 1, |_| Script::default());
    let engine = Engine::start(world.config_with_admin()).unwrap();
    let admin = engine.admin_addr().unwrap();
    let (status, _) = curl(
        &format!("http://{admin}/api/inject/v1"),
        request().to_string().as_bytes(),
        None,
        None,
    );
    assert_eq!(status, 200);
    wait_stats(&engine, "three delivered", |s| {
        s.delivered == 3 && s.received == 1
    });
}

#[test]
fn each_rendered_message_is_dkim_signed_and_an_independent_verifier_agrees() {
    let world = World::generated(2, 1, |_| Script::default());
    let (key, record) = crate::dkim::keygen("inject1", "ed25519-sha256");
    let mut config = world.config_with_admin();
    config.dkim = vec![key.clone()];
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().unwrap();
    let (status, answer) = curl(
        &format!("http://{admin}/api/inject/v1"),
        request().to_string().as_bytes(),
        None,
        None,
    );
    assert_eq!(status, 200, "{answer}");
    wait_until("three delivered", Duration::from_secs(10), || {
        world.received_count() == 3
    });
    let mut paths = Vec::new();
    for (i, r) in world.received().into_iter().enumerate() {
        let path = temp_path(&format!("inject-signed-{i}.eml"));
        let mut whole = r.trace.into_bytes();
        whole.extend_from_slice(&r.body);
        std::fs::write(&path, whole).unwrap();
        paths.push(path);
    }
    let records = json!({ "inject1._domainkey.composer.test": record }).to_string();
    let mut args: Vec<&dyn std::fmt::Display> = vec![&records];
    let shown: Vec<std::path::Display<'_>> = paths.iter().map(|p| p.display()).collect();
    args.extend(shown.iter().map(|d| d as &dyn std::fmt::Display));
    let out = python(crate::dkim::VERIFY, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for line in lines {
        assert_eq!(line, "1 True DKIM-Signature: v=1", "{out}");
    }
    for p in paths.iter().chain([&key.key]) {
        let _ = std::fs::remove_file(p);
    }
}

#[test]
fn a_full_memory_budget_answers_503_with_a_json_error() {
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config_with_admin();
    config.memory_budget = 1;
    let engine = Engine::start(config).unwrap();
    let admin = engine.admin_addr().unwrap();
    let (status, answer) = curl(
        &format!("http://{admin}/api/inject/v1"),
        request().to_string().as_bytes(),
        None,
        None,
    );
    assert_eq!(status, 503, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("memory budget"));
    assert_eq!(engine.stats().received, 0);
}
