//! Interoperability with SMTP clients nobody on the project wrote: Python's
//! smtplib (installed on every machine the suite runs on) and swaks.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use volley_engine::Engine;
use volley_smtp::{BodyType, Extensions};

use crate::support::composer::{command, read_reply};
use crate::support::sink::Script;
use crate::support::{World, log_lines, python, wait_stats, wait_until};

#[test]
fn smtplib_sees_every_extension_and_sends_smtputf8() {
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("composer.test")
f = s.esmtp_features
for k in ["pipelining", "8bitmime", "smtputf8", "chunking", "size", "enhancedstatuscodes"]:
    assert k in f, (k, f)
msg = "From: j\u00f6rg@composer.test\r\nSubject: gr\u00fc\u00dfe\r\n\r\nhallo\r\n".encode()
refused = s.sendmail("j\u00f6rg@composer.test", ["u\u00e9@d0.test"], msg,
                     mail_options=["SMTPUTF8", "BODY=8BITMIME"])
assert refused == {}, refused
s.quit()
print("ok", sorted(f))
"#,
        &[&port],
    );
    assert!(out.starts_with("ok"), "{out}");
    wait_until("delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    let got = world.received();
    assert_eq!(got[0].recipients, ["u\u{e9}@d0.test"]);
    assert_eq!(got[0].sender, "j\u{f6}rg@composer.test");
    // BODY=8BITMIME is passed on to an MX that offers 8BITMIME.
    assert_eq!(got[0].body_type, Some(BodyType::EightBitMime));
    engine.shutdown();
}

#[test]
fn eight_bit_mail_to_an_mx_without_8bitmime_bounces_with_5_6_3_unchanged_never() {
    let world = World::generated(1, 1, |_| Script {
        extensions: Some(Extensions {
            eight_bit_mime: false,
            ..Extensions::default()
        }),
        ..Script::default()
    });
    let engine = Engine::start(world.config()).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
msg = "Subject: gr\u00fc\u00dfe\r\n\r\nhall\u00f6\r\n".encode()
s.sendmail("n@composer.test", ["u@d0.test"], msg, mail_options=["BODY=8BITMIME"])
s.quit()
print("ok")
"#,
        &[&port],
    );
    assert!(out.starts_with("ok"), "{out}");
    wait_stats(&engine, "bounced", |s| s.bounced == 1);
    assert_eq!(world.received_count(), 0, "nothing 8-bit reached the MX");
    engine.shutdown(); // flushes the delivery log
    let log = log_lines(&world.log);
    let line = log.iter().find(|l| l["status"] == "bounced").unwrap();
    assert_eq!(line["enhanced"], "5.6.3", "{line}");
    assert!(
        line["text"].as_str().unwrap().contains("8BITMIME"),
        "{line}"
    );
}

#[test]
fn binary_mail_arrives_byte_for_byte_over_bdat_or_bounces() {
    // One MX with BINARYMIME and CHUNKING (the defaults), one without.
    let world = World::generated(2, 2, |k| Script {
        extensions: (k == 1).then(|| Extensions {
            binarymime: false,
            ..Extensions::default()
        }),
        ..Script::default()
    });
    let engine = Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    let body: &[u8] = b"\x00\xffbinary\nno final line end";
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    assert!(read_reply(&mut s).starts_with("220"));
    assert!(command(&mut s, "EHLO composer.test\r\n").contains("BINARYMIME"));
    for rcpt in ["u@d0.test", "u@d1.test"] {
        let r = command(&mut s, "MAIL FROM:<n@composer.test> BODY=BINARYMIME\r\n");
        assert!(r.starts_with("250"), "{r}");
        assert!(command(&mut s, &format!("RCPT TO:<{rcpt}>\r\n")).starts_with("250"));
        s.write_all(format!("BDAT {} LAST\r\n", body.len()).as_bytes())
            .unwrap();
        s.write_all(body).unwrap();
        let r = read_reply(&mut s);
        assert!(r.starts_with("250"), "{r}");
    }
    wait_stats(&engine, "delivered and bounced", |s| {
        s.delivered == 1 && s.bounced == 1
    });
    let got = world.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body_type, Some(BodyType::BinaryMime));
    assert!(
        got[0].body.ends_with(body) && !got[0].body.ends_with(b"\r\n"),
        "the body arrived changed: {:?}",
        String::from_utf8_lossy(&got[0].body)
    );
    engine.shutdown(); // flushes the delivery log
    let log = log_lines(&world.log);
    let bounced = log.iter().find(|l| l["status"] == "bounced").unwrap();
    assert_eq!(bounced["recipient"], "u@d1.test");
    assert_eq!(bounced["enhanced"], "5.6.3", "{bounced}");
}

#[test]
fn swaks_pipelines_against_volley() {
    if Command::new("swaks").arg("--version").output().is_err() {
        panic!("swaks is not installed: .ci/run installs it (apt-get install swaks)");
    }
    let world = World::generated(1, 1, |_| Script::default());
    let engine = Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    let out = Command::new("swaks")
        .args(["--server", &addr.ip().to_string()])
        .args(["--port", &addr.port().to_string()])
        .args(["--from", "n@composer.test", "--to", "u@d0.test"])
        .args(["--helo", "composer.test", "--pipeline"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    // Pipelined: the three commands go out before their replies come back
    // (without PIPELINING in the EHLO reply swaks sends one at a time).
    assert!(
        text.contains(" -> MAIL FROM:<n@composer.test>\n -> RCPT TO:<u@d0.test>\n -> DATA\n"),
        "{text}"
    );
    assert!(text.contains("<-  250 2.0.0 OK"), "{text}");
    wait_until("delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    engine.shutdown();
}

#[test]
fn the_250_after_data_names_the_message_id_of_the_delivery_log() {
    the_250_names_the_logged_id(false);
}

/// In durable mode the message takes its journal id once on disk, after
/// its 250 was queued: the reply must still name the id the log uses.
#[test]
fn the_250_names_the_logged_id_in_durable_mode_too() {
    the_250_names_the_logged_id(true);
}

fn the_250_names_the_logged_id(durable: bool) {
    let world = World::generated(1, 1, |_| Script::default());
    let mut config = world.config();
    let log = crate::support::temp_path(if durable {
        "queued-as-durable.jsonl"
    } else {
        "queued-as.jsonl"
    });
    config.delivery_log = Some(log.clone());
    let journal = crate::support::temp_path("queued-as-journal");
    if durable {
        let _ = std::fs::remove_dir_all(&journal);
        config.journal.dir = Some(journal.clone());
    }
    let engine = Engine::start(config).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=10)
s.ehlo("composer.test")
s.mail("n@composer.test")
s.rcpt("u@d0.test")
code, text = s.data(b"Message-ID: <m1@composer.test>\r\nSubject: t\r\n\r\nhi\r\n")
s.quit()
print(code, text.decode())
"#,
        &[&port],
    );
    let (code, text) = out.trim().split_once(' ').unwrap();
    assert_eq!(code, "250", "{out}");
    let id = text
        .strip_prefix("2.0.0 OK queued as ")
        .unwrap_or_else(|| panic!("no queue id in {text:?}"));
    assert_eq!(id.len(), 16, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    wait_until("logged", Duration::from_secs(10), || {
        crate::support::log_lines(&log).iter().any(|l| {
            l["message_id"] == id
                && l["status"] == "delivered"
                && l["message_id_header"] == "<m1@composer.test>"
        })
    });
    // One Received header, first, naming client, Volley, protocol, the
    // id (known at ingest only in memory mode) and the one recipient.
    let got = world.received();
    let trace = &got[0].trace;
    assert!(
        trace.starts_with("Received: from composer.test ([127.0.0.1])\r\n\tby "),
        "{trace}"
    );
    let with = if durable {
        "(Volley) with ESMTP\r\n".to_string()
    } else {
        format!("(Volley) with ESMTP id {id}\r\n")
    };
    assert!(trace.contains(&with), "{trace}");
    assert!(trace.contains("\tfor <u@d0.test>;\r\n\t"), "{trace}");
    assert!(trace.ends_with(" +0000\r\n"), "{trace}");
    assert!(
        got[0]
            .body
            .starts_with(b"Message-ID: <m1@composer.test>\r\n")
    );
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&journal);
}

/// Safe mode over SMTP, one message to three recipients: one delivered,
/// one refused for good, one deferred once. A 4xx would make the Composer
/// send it again and the first recipient would get it twice, so Volley
/// answers 250 and retries the deferred one itself.
#[test]
fn safe_mode_smtp_with_one_delivered_answers_250_and_keeps_the_deferred() {
    use volley_engine::{AckMode, Protocol};
    use volley_smtp::{EnhancedCode, Reply};
    let world = World::generated(1, 1, |_| Script {
        rcpt: Some(Box::new(|addr: &str, seen: usize| {
            if addr.starts_with("bad@") {
                Some(Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user"))
            } else if addr.starts_with("busy@") && seen == 0 {
                Some(Reply::new(451, EnhancedCode::new(4, 2, 1), "mailbox busy"))
            } else {
                None
            }
        })),
        ..Script::default()
    });
    let config = world.config_with_listener(Protocol::Smtp, AckMode::Safe);
    let engine = Engine::start(config).unwrap();
    let port = engine.listen_addrs()[0].port();
    let out = python(
        r#"
import smtplib, sys
s = smtplib.SMTP("127.0.0.1", int(sys.argv[1]), timeout=20)
s.ehlo("composer.test")
s.mail("n@composer.test")
for r in ("ok@d0.test", "bad@d0.test", "busy@d0.test"):
    s.rcpt(r)
code, text = s.data(b"Subject: safe\r\n\r\nsafe\r\n")
s.quit()
print(code, text.decode())
"#,
        &[&port],
    );
    assert!(out.starts_with("250 2.0.0 OK queued as "), "{out}");
    wait_until(
        "the deferred one delivered",
        Duration::from_secs(10),
        || world.received_count() == 2,
    );
    let report = engine.shutdown();
    assert_eq!(report.queued, 0);
    let mut got: Vec<String> = world
        .received()
        .into_iter()
        .flat_map(|r| r.recipients)
        .collect();
    got.sort();
    assert_eq!(got, ["busy@d0.test", "ok@d0.test"], "each once");
    let log = crate::support::log_lines(&world.log);
    use crate::support::statuses;
    assert_eq!(statuses(&log, "ok@d0.test"), ["delivered"]);
    assert_eq!(statuses(&log, "bad@d0.test"), ["bounced"]);
    assert_eq!(statuses(&log, "busy@d0.test"), ["deferred", "delivered"]);
}
