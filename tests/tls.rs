//! TLS on both hops, against peers nobody here wrote: Python's ssl and
//! smtplib, openssl s_client and swaks as Composers; MX sinks that offer
//! STARTTLS with certificates from a CA made for each test, refuse it, or
//! break it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use volley_bench::{SinkTls, TestCa};
use volley_engine::{Config, Engine, Protocol, TlsPolicy};
use volley_smtp::{EnhancedCode, Reply};

use crate::support::composer::{command, read_reply};
use crate::support::sink::Script;
use crate::support::{World, check_config, log_lines, python, temp_path, wait_stats, wait_until};

/// A CA, and ingest's certificate for 127.0.0.1 signed by it, on disk.
struct Certs {
    ca: TestCa,
    ca_file: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Certs {
    fn new() -> Certs {
        let ca = TestCa::new("Volley test CA").unwrap();
        let certs = Certs {
            ca_file: temp_path("ca.pem"),
            cert: temp_path("cert.pem"),
            key: temp_path("key.pem"),
            ca,
        };
        certs.ca.write(&certs.ca_file).unwrap();
        certs.issue("first.test");
        certs
    }

    /// Writes a new ingest certificate named `name` (and 127.0.0.1).
    fn issue(&self, name: &str) {
        let leaf = self.ca.leaf(&[name, "127.0.0.1"], false).unwrap();
        leaf.write(&self.cert, &self.key).unwrap();
    }

    /// `config` with this certificate for ingest.
    fn apply(&self, mut config: Config) -> Config {
        config.tls.cert = Some(self.cert.clone());
        config.tls.key = Some(self.key.clone());
        config
    }

    /// A sink script that offers STARTTLS with a certificate for `names`.
    fn sink(&self, names: &[&str], expired: bool) -> Script {
        let leaf = self.ca.leaf(names, expired).unwrap();
        Script {
            tls: Some(SinkTls::Offer(leaf.server_config().unwrap())),
            ..Script::default()
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        for p in [&self.ca_file, &self.cert, &self.key] {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Waits for the one message of a test at the sink; its Received header.
fn only_trace(world: &World) -> String {
    wait_until("delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    world.received()[0].trace.clone()
}

/// smtplib with STARTTLS, verifying Volley's certificate against the CA:
/// prints the TLS version and whether STARTTLS was offered again.
const SMTPLIB_STARTTLS: &str = r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("composer.test")
assert s.has_extn("starttls"), s.esmtp_features
s.starttls(context=ctx)
s.ehlo("composer.test")
again = s.has_extn("starttls")
version = s.sock.version()
cn = dict(x[0] for x in s.sock.getpeercert()["subject"])["commonName"]
msg = b"From: n@composer.test\r\nSubject: tls\r\n\r\nover TLS\r\n"
assert s.sendmail("n@composer.test", ["u@d0.test"], msg) == {}
s.quit()
print(version, again, cn)
"#;

#[test]
fn smtplib_starttls_verifies_the_certificate_and_the_received_header_says_esmtps() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(certs.apply(world.config())).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(SMTPLIB_STARTTLS, &[&port, &certs.ca_file.display()]);
    assert_eq!(out.trim(), "TLSv1.3 False first.test");
    let trace = &only_trace(&world);
    assert!(
        trace.contains("\r\n\t(using TLSv1.3 with cipher TLS13_"),
        "{trace}"
    );
    assert!(trace.contains(" with ESMTPS"), "{trace}");
    assert_eq!(engine.stats().ingest_tls, 1);
    engine.shutdown();
}

#[test]
fn a_reload_presents_the_renewed_certificate_to_the_next_handshake() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let config = certs.apply(world.config());
    let engine = Engine::start(config.clone()).unwrap();
    let port = engine.listen_addrs()[0].port();
    let args: [&dyn std::fmt::Display; 2] = [&port, &certs.ca_file.display()];
    assert!(python(SMTPLIB_STARTTLS, &args).ends_with("first.test\n"));
    certs.issue("renewed.test");
    engine.reload(config).unwrap();
    assert!(python(SMTPLIB_STARTTLS, &args).ends_with("renewed.test\n"));
    engine.shutdown();
}

#[test]
fn openssl_s_client_starttls_verifies_and_sees_no_second_starttls() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(certs.apply(world.config())).unwrap();
    let addr = engine.listen_addrs()[0];
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-crlf",
            "-brief",
            "-ign_eof",
        ])
        .args(["-connect", &addr.to_string()])
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1"])
        .arg("-CAfile")
        .arg(&certs.ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    // Inside TLS: the session starts over and STARTTLS is not offered.
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"EHLO composer.test\nQUIT\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Verification: OK"), "{stderr}");
    assert!(stderr.contains("Protocol version: TLSv1.3"), "{stderr}");
    assert!(stdout.contains("250-PIPELINING"), "{stdout}");
    assert!(!stdout.contains("STARTTLS"), "{stdout}");
    assert!(stdout.contains("221 2.0.0"), "{stdout}");
    engine.shutdown();
}

#[test]
fn swaks_delivers_over_starttls() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(certs.apply(world.config())).unwrap();
    let addr = engine.listen_addrs()[0];
    let out = Command::new("swaks")
        .args(["--server", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--from", "n@composer.test", "--to", "u@d0.test"])
        .args(["--helo", "composer.test", "--tls"])
        .output()
        .expect("swaks is installed: .ci/run installs it");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // swaks marks lines sent and read inside TLS with ~> and <~.
    assert!(text.contains("<~  250 2.0.0 OK queued as"), "{text}");
    wait_until("delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    engine.shutdown();
}

#[test]
fn commands_pipelined_after_starttls_are_dropped_not_run_inside_tls() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(certs.apply(world.config())).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        &format!(
            "{RAW_SESSION}{}",
            r#"
raw.sendall(b"EHLO composer.test\r\n")
reply(f)
# One write: STARTTLS and two commands an attacker slipped in after it.
raw.sendall(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@attacker.test>\r\n")
print(reply(f)[0])
ctx = ssl.create_default_context(cafile=sys.argv[2])
tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
f = tls.makefile("rb")
tls.sendall(b"EHLO composer.test\r\n")
print(reply(f)[0])
tls.sendall(b"RCPT TO:<u@d0.test>\r\n")
print(reply(f)[0])
"#
        ),
        &[&port, &certs.ca_file.display()],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "220 2.0.0 Ready to start TLS",
            // Not the 250 of an injected RSET or MAIL.
            "250-volley.localhost greets composer.test",
            "503 5.5.1 Need MAIL before RCPT",
        ]
    );
    engine.shutdown();
}

/// The start of a Python program that talks SMTP by hand: `reply(f)`
/// reads one (multi-line) reply, and `raw` is a socket to the port in
/// `sys.argv[1]` whose greeting has been read.
const RAW_SESSION: &str = r#"
import socket, ssl, sys
def reply(f):
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.strip())
        if len(line) < 4 or line[3] == " ":
            return lines
raw = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
f = raw.makefile("rb")
reply(f)
"#;

/// Opens an ingest session and asks for STARTTLS; the 220 has been read.
fn after_starttls(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    read_reply(&mut s);
    command(&mut s, "EHLO composer.test\r\n");
    let r = command(&mut s, "STARTTLS\r\n");
    assert!(r.starts_with("220 "), "{r}");
    s
}

/// Waits for Volley to close `s`; how long it took.
fn closed_within(mut s: TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return started.elapsed(),
            Ok(_) => {}
        }
    }
}

#[test]
fn handshakes_that_stall_send_garbage_or_drop_are_closed_and_others_go_on() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = certs.apply(world.config());
    config.ingest.command_timeout = Duration::from_secs(2);
    let engine = Engine::start(config).unwrap();
    let port = engine.listen_addrs()[0].port();
    let stalled = after_starttls(port);
    let mut garbage = after_starttls(port);
    garbage.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut dropped = after_starttls(port);
    // The first bytes of a TLS record header, then nothing more.
    dropped.write_all(&[0x16, 0x03, 0x01, 0x02]).unwrap();
    drop(dropped);
    // Meanwhile a Composer sends over TLS as usual.
    let out = python(SMTPLIB_STARTTLS, &[&port, &certs.ca_file.display()]);
    assert!(out.starts_with("TLSv1.3"), "{out}");
    // Garbage fails the handshake at once; a stall waits for the timeout.
    let t = closed_within(garbage);
    assert!(
        t < Duration::from_millis(1500),
        "garbage closed after {t:?}"
    );
    let t = closed_within(stalled);
    assert!(
        t < Duration::from_secs(6),
        "stalled handshake closed after {t:?}"
    );
    wait_until("delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    wait_stats(&engine, "sessions closed", |s| s.ingest_sessions == 0);
    engine.shutdown();
}

#[test]
fn an_smtps_listener_speaks_tls_from_the_first_byte() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = certs.apply(world.config());
    config.listeners[0].protocol = Protocol::Smtps;
    let engine = Engine::start(config).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
s.ehlo("composer.test")
assert not s.has_extn("starttls"), s.esmtp_features
msg = b"From: n@composer.test\r\nSubject: smtps\r\n\r\nimplicit TLS\r\n"
assert s.sendmail("n@composer.test", ["u@d0.test"], msg) == {}
s.quit()
print(s.sock is None or "ok")
"#,
        &[&port, &certs.ca_file.display()],
    );
    assert!(!out.is_empty());
    assert!(only_trace(&world).contains(" with ESMTPS"));
    engine.shutdown();
}

#[test]
fn require_tls_refuses_mail_before_starttls() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = certs.apply(world.config());
    config.listeners[0].require_tls = true;
    let engine = Engine::start(config).unwrap();
    let mut s = TcpStream::connect(engine.listen_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    read_reply(&mut s);
    command(&mut s, "EHLO composer.test\r\n");
    let r = command(&mut s, "MAIL FROM:<n@composer.test>\r\n");
    assert_eq!(r, "530 5.7.0 Must issue a STARTTLS command first\r\n");
    engine.shutdown();
}

/// Sends one message to each of `rcpts`, each over its own session.
fn send_each(engine: &Engine, rcpts: &[&str]) {
    for rcpt in rcpts {
        let tx = volley_smtp::Transaction {
            reverse_path: "n@composer.test".into(),
            recipients: vec![rcpt.to_string()],
            body: bytes::Bytes::from_static(b"Subject: out\r\n\r\nbody\r\n"),
            body_type: None,
        };
        let o = crate::support::composer::send(engine.listen_addrs()[0], false, vec![tx]).unwrap();
        assert_eq!(o[0].delivered(), 1, "{o:?}");
    }
}

/// The delivery log lines of `rcpt`.
fn lines_of(world: &World, rcpt: &str) -> Vec<serde_json::Value> {
    log_lines(&world.log)
        .into_iter()
        .filter(|l| l["recipient"] == rcpt)
        .collect()
}

#[test]
fn delivery_uses_starttls_and_resumes_the_session_on_the_next_connection() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| certs.sink(&["mx0.test"], false));
    let mut config = world.config();
    // A connection per message: each after the first resumes.
    config.general_queue.max_messages_per_connection = 1;
    let engine = Engine::start(config).unwrap();
    // One at a time: concurrent connections could use up the two tickets
    // a handshake leaves before the next handshake leaves more.
    for (n, rcpt) in ["a@d0.test", "b@d0.test", "c@d0.test", "d@d0.test"]
        .into_iter()
        .enumerate()
    {
        send_each(&engine, &[rcpt]);
        wait_stats(&engine, "delivered", |s| s.delivered == n as u64 + 1);
    }
    let stats = engine.stats();
    assert_eq!(stats.tls_full_handshakes, 1, "{stats:?}");
    assert_eq!(stats.tls_resumed, 3, "{stats:?}");
    engine.shutdown();
    let line = &lines_of(&world, "a@d0.test")[0];
    assert_eq!(line["tls"]["version"], "TLSv1.3", "{line}");
    assert!(
        line["tls"]["cipher"]
            .as_str()
            .unwrap()
            .starts_with("TLS13_")
    );
    assert_eq!(
        line["tls"]["verified"], false,
        "opportunistic checks nothing"
    );
}

#[test]
fn a_broken_handshake_falls_back_to_clear_text_and_the_host_is_remembered() {
    let world = World::generated(1, 1, |_| Script {
        tls: Some(SinkTls::Break),
        ..Script::default()
    });
    let mut config = world.config();
    config.general_queue.max_messages_per_connection = 1;
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test"]);
    wait_stats(&engine, "first delivered", |s| s.delivered == 1);
    send_each(&engine, &["b@d0.test"]);
    wait_stats(&engine, "second delivered", |s| s.delivered == 2);
    let stats = engine.stats();
    assert_eq!(stats.tls_failed, 1, "the second connection tried no TLS");
    // The failed handshake, its clear-text retry, the second message.
    assert_eq!(
        world.sinks[0]
            .connections
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
    engine.shutdown();
    for rcpt in ["a@d0.test", "b@d0.test"] {
        let line = &lines_of(&world, rcpt)[0];
        assert_eq!(line["status"], "delivered", "{line}");
        assert!(line["tls"].is_null(), "{line}");
    }
}

#[test]
fn required_tls_defers_a_host_that_refuses_or_lacks_starttls() {
    // d0's MX answers STARTTLS with 454; d1's does not offer it.
    let world = World::generated(2, 2, |k| Script {
        tls: (k == 0).then(|| {
            SinkTls::Refuse(Reply::new(
                454,
                EnhancedCode::new(4, 7, 0),
                "TLS not available",
            ))
        }),
        ..Script::default()
    });
    let mut config = world.config();
    config.general_queue.tls = TlsPolicy::Required;
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test", "b@d1.test"]);
    wait_until("both deferred", Duration::from_secs(10), || {
        !lines_of(&world, "a@d0.test").is_empty() && !lines_of(&world, "b@d1.test").is_empty()
    });
    engine.shutdown();
    assert_eq!(world.received_count(), 0, "nothing went out in clear text");
    for (rcpt, why) in [
        ("a@d0.test", "STARTTLS refused: 454 4.7.0 TLS not available"),
        ("b@d1.test", "STARTTLS not offered"),
    ] {
        let line = &lines_of(&world, rcpt)[0];
        assert_eq!(line["status"], "deferred", "{line}");
        assert_eq!(line["enhanced"], "4.7.10", "{line}");
        assert_eq!(line["category"], "tls", "{line}");
        let text = line["text"].as_str().unwrap();
        assert!(
            text.contains(why) && text.contains("tls = \"required\""),
            "{text}"
        );
    }
}

#[test]
fn verify_checks_the_certificate_against_the_ca_and_the_mx_host_name() {
    let certs = Certs::new();
    // mx0 has a good certificate for its name, mx1 an expired one, mx2
    // one for another name.
    let world = World::generated(3, 3, |k| match k {
        0 => certs.sink(&["mx0.test"], false),
        1 => certs.sink(&["mx1.test"], true),
        _ => certs.sink(&["someone-else.test"], false),
    });
    let mut config = world.config();
    config.general_queue.tls = TlsPolicy::Verify;
    config.general_queue.tls_ca_file = Some(certs.ca_file.clone());
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test", "b@d1.test", "c@d2.test"]);
    wait_until("all settled", Duration::from_secs(10), || {
        ["a@d0.test", "b@d1.test", "c@d2.test"]
            .iter()
            .all(|r| !lines_of(&world, r).is_empty())
    });
    engine.shutdown();
    let good = &lines_of(&world, "a@d0.test")[0];
    assert_eq!(good["status"], "delivered", "{good}");
    assert_eq!(good["tls"]["verified"], true, "{good}");
    for (rcpt, why) in [
        ("b@d1.test", "certificate expired"),
        ("c@d2.test", "not valid for name"),
    ] {
        let line = &lines_of(&world, rcpt)[0];
        assert_eq!(line["status"], "deferred", "{line}");
        assert_eq!(line["enhanced"], "4.7.5", "{line}");
        assert_eq!(line["category"], "tls", "{line}");
        let text = line["text"].as_str().unwrap();
        assert!(
            text.contains("TLS handshake failed") && text.contains(why),
            "{text}"
        );
    }
    assert_eq!(world.received_count(), 1);
}

/// `volley hash-password` for `password`, as an operator makes one.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Ingest with a certificate, a user `composer` (password `right`), and
/// loopback no longer a trusted network: only AUTH lets a client relay.
fn auth_config(certs: &Certs, world: &World) -> Config {
    let mut config = certs.apply(world.config());
    config.ingest.trusted_networks = vec!["10.0.0.0/8".parse().unwrap()];
    config.users = vec![volley_engine::UserConfig {
        name: "composer".into(),
        password_hash: hash_password("right"),
    }];
    config
}

#[test]
fn smtplib_authenticates_inside_tls_and_then_relays_from_an_untrusted_address() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(auth_config(&certs, &world)).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("composer.test")
print("auth before tls:", s.has_extn("auth"))
s.starttls(context=ctx)
s.ehlo("composer.test")
print("mechanisms:", s.esmtp_features["auth"].strip())
print("mail before auth:", s.mail("n@composer.test"))
s.rset()
try:
    s.login("composer", "wrong")
except smtplib.SMTPAuthenticationError as e:
    print("wrong:", e.smtp_code, e.smtp_error.decode())
s.login("composer", "right")
msg = b"From: n@composer.test\r\nSubject: auth\r\n\r\nauthenticated\r\n"
assert s.sendmail("n@composer.test", ["u@d0.test"], msg) == {}
s.quit()
print("sent")
"#,
        &[&port, &certs.ca_file.display()],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "auth before tls: False",
            "mechanisms: PLAIN LOGIN",
            "mail before auth: (530, b'5.7.0 Authentication required')",
            "wrong: 535 5.7.8 Authentication credentials invalid",
            "sent",
        ]
    );
    assert!(only_trace(&world).contains(" with ESMTPSA"));
    engine.shutdown();
}

#[test]
fn auth_in_clear_text_is_refused_and_repeated_failures_are_slowed_down() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(auth_config(&certs, &world)).unwrap();
    let mut s = TcpStream::connect(engine.listen_addrs()[0]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    read_reply(&mut s);
    command(&mut s, "EHLO composer.test\r\n");
    // AGNvbXBvc2VyAHJpZ2h0 is "\0composer\0right".
    let r = command(&mut s, "AUTH PLAIN AGNvbXBvc2VyAHJpZ2h0\r\n");
    assert_eq!(
        r,
        "538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    );
    drop(s);
    let out = python(
        r#"
import smtplib, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.starttls(context=ctx)
s.ehlo("composer.test")
for i in range(3):
    started = time.monotonic()
    try:
        s.login("composer", "guess%d" % i)
    except smtplib.SMTPAuthenticationError as e:
        print(e.smtp_code, time.monotonic() - started)
"#,
        &[&engine.listen_addrs()[0].port(), &certs.ca_file.display()],
    );
    let answers: Vec<(u16, f64)> = out
        .lines()
        .map(|l| {
            let (code, secs) = l.split_once(' ').unwrap();
            (code.parse().unwrap(), secs.parse().unwrap())
        })
        .collect();
    assert!(answers.iter().all(|(code, _)| *code == 535), "{out}");
    // The third wrong guess waits a second longer for its answer than
    // the first (which pays the same password check).
    assert!(answers[2].1 >= answers[0].1 + 0.9, "{out}");
    engine.shutdown();
}

#[test]
fn check_config_reads_the_certificate_files() {
    let certs = Certs::new();
    let file = temp_path("tls.toml");
    let text = |cert: &std::path::Path| {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            certs.key.display()
        )
    };
    let check = || check_config(&file);
    std::fs::write(&file, text(&certs.cert)).unwrap();
    let out = check();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let missing = temp_path("no-such-cert.pem");
    std::fs::write(&file, text(&missing)).unwrap();
    let out = check();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls: ") && stderr.contains("no-such-cert.pem"),
        "{stderr}"
    );
    let _ = std::fs::remove_file(file);
}

#[test]
fn lmtp_and_durable_mode_take_starttls_too() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let journal = temp_path("journal");
    let mut config =
        certs.apply(world.config_with_listener(Protocol::Lmtp, volley_engine::AckMode::Fast));
    config.journal.dir = Some(journal.clone());
    let engine = Engine::start(config).unwrap();
    let port = engine.listen_addrs()[0].port();
    // A message, then STARTTLS pipelined behind it: the 250 the journal
    // holds back goes out before the 220, and the handshake after both.
    let out = python(
        &format!(
            "{RAW_SESSION}{}",
            r#"
raw.sendall(b"LHLO composer.test\r\n")
assert "250-STARTTLS" in reply(f)
raw.sendall(b"MAIL FROM:<n@composer.test>\r\nRCPT TO:<u@d0.test>\r\nDATA\r\n")
reply(f); reply(f); reply(f)
raw.sendall(b"Subject: one\r\n\r\nbefore TLS\r\n.\r\nSTARTTLS\r\n")
print(reply(f)[0][:22])
print(reply(f)[0])
ctx = ssl.create_default_context(cafile=sys.argv[2])
tls = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
f = tls.makefile("rb")
tls.sendall(b"LHLO composer.test\r\n")
reply(f)
tls.sendall(b"MAIL FROM:<n@composer.test>\r\nRCPT TO:<v@d0.test>\r\nDATA\r\n")
reply(f); reply(f); reply(f)
tls.sendall(b"Subject: two\r\n\r\ninside TLS\r\n.\r\nQUIT\r\n")
print(reply(f)[0][:22])
"#
        ),
        &[&port, &certs.ca_file.display()],
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "250 2.0.0 OK queued as",
            "220 2.0.0 Ready to start TLS",
            "250 2.0.0 OK queued as",
        ],
        "{out}"
    );
    wait_until("both delivered", Duration::from_secs(10), || {
        world.received_count() == 2
    });
    let traces: Vec<String> = world.received().iter().map(|r| r.trace.clone()).collect();
    assert!(
        traces.iter().any(|t| t.contains(" with LMTP\r\n")),
        "{traces:?}"
    );
    assert!(
        traces.iter().any(|t| t.contains(" with LMTPS\r\n")),
        "{traces:?}"
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(journal);
}

/// A world whose `d0.test` publishes an MTA-STS `policy` (its record and
/// its policy host `mta-sts.d0.test` at 127.0.0.60), with one MX sink per
/// `scripts` entry, and a configuration that trusts the test CA for the
/// policy host and the MX hosts.
fn sts_world(
    certs: &Certs,
    policy: &str,
    scripts: impl Fn(usize) -> Script,
    hosts: usize,
) -> (World, crate::support::policy_server::PolicyServer, Config) {
    use std::net::Ipv4Addr;
    let ip = Ipv4Addr::new(127, 0, 0, 60);
    let leaf = certs.ca.leaf(&["mta-sts.d0.test"], false).unwrap();
    let server = crate::support::policy_server::PolicyServer::start(
        ip,
        leaf.server_config().unwrap(),
        policy,
    );
    let zone = volley_dns::TestZone::generated("test", hosts, 1, hosts)
        .txt("_mta-sts.d0.test", ["v=STSv1; id=20261203T000000;"])
        .host("mta-sts.d0.test", [ip.into()]);
    let ips: Vec<Ipv4Addr> = (0..hosts).map(crate::support::mx_ip).collect();
    let world = World::new(zone, &ips, scripts);
    let mut config = world.config();
    config.mta_sts.https_port = server.addr.port();
    config.mta_sts.ca_file = Some(certs.ca_file.clone());
    config.general_queue.tls_ca_file = Some(certs.ca_file.clone());
    (world, server, config)
}

#[test]
fn an_enforced_mta_sts_policy_verifies_the_mx_certificate_and_is_fetched_once() {
    let certs = Certs::new();
    let policy = "version: STSv1\nmode: enforce\nmx: mx0.test\nmax_age: 86400\n";
    let (world, server, config) =
        sts_world(&certs, policy, |_| certs.sink(&["mx0.test"], false), 1);
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test"]);
    wait_stats(&engine, "first delivered", |s| s.delivered == 1);
    send_each(&engine, &["b@d0.test"]);
    wait_stats(&engine, "second delivered", |s| s.delivered == 2);
    engine.shutdown();
    assert_eq!(server.requests(), 1, "the policy is cached for its max_age");
    for rcpt in ["a@d0.test", "b@d0.test"] {
        let line = &lines_of(&world, rcpt)[0];
        assert_eq!(line["status"], "delivered", "{line}");
        // The queue is opportunistic; the policy made it verify.
        assert_eq!(line["tls"]["verified"], true, "{line}");
    }
}

#[test]
fn an_enforced_policy_defers_mx_hosts_it_does_not_name_or_whose_certificate_is_wrong() {
    let certs = Certs::new();
    // d0's MX is mx0.test, but the policy names only mx.elsewhere.test.
    let policy = "version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 86400\n";
    let (world, _server, config) =
        sts_world(&certs, policy, |_| certs.sink(&["mx0.test"], false), 1);
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test"]);
    wait_until("deferred", Duration::from_secs(10), || {
        !lines_of(&world, "a@d0.test").is_empty()
    });
    engine.shutdown();
    let line = &lines_of(&world, "a@d0.test")[0];
    assert_eq!(line["status"], "deferred", "{line}");
    assert_eq!(line["enhanced"], "4.7.5", "{line}");
    assert!(
        line["text"]
            .as_str()
            .unwrap()
            .contains("named by its MTA-STS policy"),
        "{line}"
    );
    assert_eq!(world.received_count(), 0);

    // Named, but its certificate is for another name.
    let policy = "version: STSv1\nmode: enforce\nmx: mx0.test\nmax_age: 86400\n";
    let (world, _server, config) = sts_world(
        &certs,
        policy,
        |_| certs.sink(&["someone-else.test"], false),
        1,
    );
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test"]);
    wait_until("deferred", Duration::from_secs(10), || {
        !lines_of(&world, "a@d0.test").is_empty()
    });
    engine.shutdown();
    let line = &lines_of(&world, "a@d0.test")[0];
    assert_eq!(line["status"], "deferred", "{line}");
    let text = line["text"].as_str().unwrap();
    assert!(
        text.contains("not valid for name") && text.contains("MTA-STS enforce"),
        "{text}"
    );
}

#[test]
fn a_testing_policy_and_a_domain_without_one_deliver_as_the_queue_says() {
    let certs = Certs::new();
    // d0: testing, and its MX's certificate is wrong; d1: no policy.
    let policy = "version: STSv1\nmode: testing\nmx: mx0.test\nmax_age: 86400\n";
    let (world, server, config) = sts_world(
        &certs,
        policy,
        |_| certs.sink(&["someone-else.test"], false),
        2,
    );
    let engine = Engine::start(config).unwrap();
    send_each(&engine, &["a@d0.test", "b@d1.test"]);
    wait_stats(&engine, "both delivered", |s| s.delivered == 2);
    engine.shutdown();
    assert_eq!(server.requests(), 1);
    for rcpt in ["a@d0.test", "b@d1.test"] {
        let line = &lines_of(&world, rcpt)[0];
        assert_eq!(line["status"], "delivered", "{line}");
        assert_eq!(line["tls"]["verified"], false, "{line}");
    }
}

#[test]
fn each_policy_meets_a_broken_untrusted_or_expired_mx_as_it_says() {
    let certs = Certs::new();
    let stranger = TestCa::new("someone else's CA").unwrap();
    // d0: broken TLS, required; d1: a certificate from another CA, verify;
    // d2: an expired certificate, opportunistic; d3: good TLS, disabled.
    let world = World::generated(4, 4, |k| match k {
        0 => Script {
            tls: Some(SinkTls::Break),
            ..Script::default()
        },
        1 => Script {
            tls: Some(SinkTls::Offer(
                stranger
                    .leaf(&["mx1.test"], false)
                    .unwrap()
                    .server_config()
                    .unwrap(),
            )),
            ..Script::default()
        },
        2 => certs.sink(&["mx2.test"], true),
        _ => certs.sink(&["mx3.test"], false),
    });
    let mut config = world.config();
    let queue = |name: &str, domain: &str, tls: TlsPolicy| {
        let mut limits = config.general_queue.clone();
        limits.tls = tls;
        limits.tls_ca_file = Some(certs.ca_file.clone());
        volley_engine::SpecificQueue {
            name: name.into(),
            domains: vec![domain.into()],
            mx: Vec::new(),
            limits,
        }
    };
    let queues = vec![
        queue("required", "d0.test", TlsPolicy::Required),
        queue("verify", "d1.test", TlsPolicy::Verify),
        queue("disabled", "d3.test", TlsPolicy::Disabled),
    ];
    config.queues = queues;
    let engine = Engine::start(config).unwrap();
    let rcpts = ["a@d0.test", "b@d1.test", "c@d2.test", "d@d3.test"];
    send_each(&engine, &rcpts);
    wait_until("all settled", Duration::from_secs(10), || {
        rcpts.iter().all(|r| !lines_of(&world, r).is_empty())
    });
    engine.shutdown();
    let line = |rcpt| lines_of(&world, rcpt).remove(0);
    for (rcpt, why) in [
        ("a@d0.test", "TLS handshake failed"),
        ("b@d1.test", "invalid peer certificate: UnknownIssuer"),
    ] {
        let l = line(rcpt);
        assert_eq!(l["status"], "deferred", "{l}");
        assert_eq!(l["enhanced"], "4.7.5", "{l}");
        assert!(l["text"].as_str().unwrap().contains(why), "{l}");
    }
    let expired = line("c@d2.test");
    assert_eq!(expired["status"], "delivered", "{expired}");
    assert_eq!(
        expired["tls"]["verified"], false,
        "opportunistic checks nothing"
    );
    let disabled = line("d@d3.test");
    assert_eq!(disabled["status"], "delivered", "{disabled}");
    assert!(disabled["tls"].is_null(), "{disabled}");
    assert_eq!(world.received_count(), 2);
}

#[test]
fn volley_serve_takes_the_certificate_and_an_smtps_listener_from_its_flags() {
    let certs = Certs::new();
    let world = World::generated(1, 1, |_| Script::default());
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args([
            "serve",
            "--no-admin",
            "--smtps-listen",
            &listen,
            "--shards",
            "1",
        ])
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .args(["--delivery-port", &world.port.to_string()])
        .args(["--nameserver", &world.dns.addr().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("volley serve listening", Duration::from_secs(10), || {
        TcpStream::connect(&listen).is_ok()
    });
    let out = python(
        r#"
import smtplib, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
s = smtplib.SMTP_SSL("127.0.0.1", int(sys.argv[1]), context=ctx, timeout=10)
msg = b"From: n@composer.test\r\nSubject: flags\r\n\r\nsmtps from the command line\r\n"
assert s.sendmail("n@composer.test", ["u@d0.test"], msg) == {}
s.quit()
print(s.sock is None)
"#,
        &[&port, &certs.ca_file.display()],
    );
    assert_eq!(out.trim(), "True");
    assert!(only_trace(&world).contains(" with ESMTPS"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
