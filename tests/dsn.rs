//! Delivery status notifications end to end: Python's smtplib is the
//! Composer (with RET, ENVID, NOTIFY and ORCPT), the MX sinks refuse or
//! defer, and the notification that reaches the sender's own MX sink is
//! parsed back with Python's `email` package.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use volley_smtp::{EnhancedCode, Reply};

use crate::support::sink::{Received, Script};
use crate::support::{World, log_lines, python, temp_path, wait_stats, wait_until};

/// Sends one message with smtplib: sys.argv = address, sender, MAIL
/// options (space separated), then recipient:options pairs (options
/// separated by `|` inside, `-` for none).
const SEND: &str = r#"
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
sender, mail_opts = sys.argv[2], sys.argv[3].split()
s = smtplib.SMTP(host, int(port), timeout=10)
s.ehlo("composer.test")
assert s.has_extn("dsn"), s.esmtp_features
body = ("From: news@d1.test\r\nTo: list@d0.test\r\nSubject: Winter sale\r\n"
        "Message-ID: <sale.1@d1.test>\r\n\r\nHello.\r\n")
code, _ = s.mail(sender, mail_opts)
assert code == 250, code
for pair in sys.argv[4:]:
    rcpt, opts = pair.split(":", 1)
    code, text = s.rcpt(rcpt, [] if opts == "-" else opts.split("|"))
    assert code == 250, (code, text)
code, text = s.data(body)
assert code == 250, (code, text)
s.quit()
"#;

/// Parses a notification with Python's `email` package and prints what a
/// sender's bounce processor would read, one `key=value` per line.
const PARSE: &str = r#"
import email, email.policy, sys
m = email.message_from_bytes(open(sys.argv[1], "rb").read(), policy=email.policy.compat32)
print("type=" + m.get_content_type())
print("report-type=" + m.get_param("report-type"))
print("subject=" + m["Subject"])
print("from=" + m["From"])
print("auto-submitted=" + m["Auto-Submitted"])
parts = m.get_payload()
print("parts=" + ",".join(p.get_content_type() for p in parts))
status = parts[1].get_payload()
for k, v in status[0].items():
    print("msg." + k.lower() + "=" + v)
for block in status[1:]:
    rcpt = block["Final-Recipient"].split(";", 1)[1].strip()
    for k, v in block.items():
        print(rcpt + "." + k.lower() + "=" + v)
returned = parts[2]
if returned.get_content_type() == "message/rfc822":
    inner = returned.get_payload()[0]
    print("returned.subject=" + inner["Subject"])
    print("returned.body=" + inner.get_payload().strip())
else:
    inner = email.message_from_string(returned.get_payload())
    print("returned.subject=" + inner["Subject"])
"#;

fn send(addr: SocketAddr, sender: &str, mail_opts: &str, rcpts: &[(&str, &str)]) {
    let pairs: Vec<String> = rcpts.iter().map(|(r, o)| format!("{r}:{o}")).collect();
    let mut args: Vec<&dyn std::fmt::Display> = vec![&addr, &sender, &mail_opts];
    for p in &pairs {
        args.push(p);
    }
    python(SEND, &args);
}

/// The notification's fields as [`PARSE`] prints them.
fn parse(dsn: &Received) -> Vec<(String, String)> {
    let path = crate::support::temp_path("dsn.eml");
    std::fs::write(&path, &dsn.body).unwrap();
    let out = python(PARSE, &[&path.display()]);
    let _ = std::fs::remove_file(&path);
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing in {fields:?}"))
}

/// Messages that reached the MX of d1.test (the senders' domain).
fn at_sender_domain(world: &World) -> Vec<Received> {
    world
        .received()
        .into_iter()
        .filter(|r| r.recipients.iter().any(|a| a.ends_with("@d1.test")))
        .collect()
}

/// d0.test refuses every `gone*` recipient and defers every `slow*` one;
/// d1.test (on its own MX host) takes everything.
fn world() -> World {
    World::generated(2, 2, |k| Script {
        rcpt: (k == 0).then(|| {
            Box::new(|rcpt: &str, _seen: usize| {
                if rcpt.starts_with("gone") {
                    Some(Reply::new(
                        550,
                        EnhancedCode::new(5, 1, 1),
                        "no such user here",
                    ))
                } else if rcpt.starts_with("slow") {
                    Some(Reply::new(451, EnhancedCode::new(4, 2, 2), "mailbox busy"))
                } else {
                    None
                }
            }) as Box<_>
        }),
        ..Script::default()
    })
}

#[test]
fn a_refusal_gives_one_notification_for_all_failed_recipients_of_the_message() {
    let world = world();
    let engine = volley_engine::Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    send(
        addr,
        "bounces@d1.test",
        "RET=HDRS ENVID=sale-2026-12",
        &[
            ("gone1@d0.test", "ORCPT=rfc822;old-gone1@d0.test"),
            ("gone2@d0.test", "-"),
            ("fine@d0.test", "-"),
        ],
    );
    wait_until("the notification", Duration::from_secs(10), || {
        !at_sender_domain(&world).is_empty()
    });
    wait_stats(&engine, "one DSN", |s| s.dsn_sent == 1 && s.delivered == 2);
    let dsns = at_sender_domain(&world);
    assert_eq!(dsns.len(), 1, "one notification for the message");
    let dsn = &dsns[0];
    assert_eq!(dsn.sender, "", "from the null sender");
    assert_eq!(dsn.recipients, vec!["bounces@d1.test".to_string()]);
    let f = parse(dsn);
    assert_eq!(field(&f, "type"), "multipart/report");
    assert_eq!(field(&f, "report-type"), "delivery-status");
    assert_eq!(field(&f, "subject"), "Undelivered Mail Returned to Sender");
    assert_eq!(field(&f, "auto-submitted"), "auto-replied");
    assert_eq!(
        field(&f, "parts"),
        "text/plain,message/delivery-status,text/rfc822-headers"
    );
    assert_eq!(field(&f, "msg.reporting-mta"), "dns; volley.localhost");
    assert_eq!(field(&f, "msg.original-envelope-id"), "sale-2026-12");
    assert!(f.iter().any(|(k, _)| k == "msg.arrival-date"));
    for rcpt in ["gone1@d0.test", "gone2@d0.test"] {
        assert_eq!(field(&f, &format!("{rcpt}.action")), "failed");
        assert_eq!(field(&f, &format!("{rcpt}.status")), "5.1.1");
        assert_eq!(field(&f, &format!("{rcpt}.remote-mta")), "dns; mx0.test");
        assert_eq!(
            field(&f, &format!("{rcpt}.diagnostic-code")),
            "smtp; 550 5.1.1 no such user here"
        );
    }
    assert_eq!(
        field(&f, "gone1@d0.test.original-recipient"),
        "rfc822; old-gone1@d0.test"
    );
    assert!(
        !f.iter()
            .any(|(k, _)| k.starts_with("gone2@d0.test.original"))
    );
    assert!(!f.iter().any(|(k, _)| k.starts_with("fine@")), "{f:?}");
    assert_eq!(field(&f, "returned.subject"), "Winter sale");
    engine.shutdown();
    let log = log_lines(&world.log);
    let sent: Vec<&str> = log
        .iter()
        .filter(|l| l["status"] == "dsn_sent")
        .map(|l| l["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent.contains(&"gone1@d0.test") && sent.contains(&"gone2@d0.test"));
    // The notification itself is delivered like any message.
    assert!(log.iter().any(|l| l["recipient"] == "bounces@d1.test"
        && l["status"] == "delivered"
        && l["sender"] == ""));
}

#[test]
fn an_expired_recipient_gives_a_notification_with_the_whole_message_when_asked() {
    let world = world();
    let mut config = world.config();
    config.general_queue.max_age = Duration::from_secs(1);
    let engine = volley_engine::Engine::start(config).unwrap();
    send(
        engine.listen_addrs()[0],
        "bounces@d1.test",
        "RET=FULL",
        &[("slow1@d0.test", "NOTIFY=FAILURE")],
    );
    wait_until("the notification", Duration::from_secs(15), || {
        !at_sender_domain(&world).is_empty()
    });
    let f = parse(&at_sender_domain(&world)[0]);
    assert_eq!(field(&f, "slow1@d0.test.action"), "failed");
    assert_eq!(field(&f, "slow1@d0.test.status"), "4.4.7");
    assert_eq!(
        field(&f, "slow1@d0.test.diagnostic-code"),
        "smtp; 451 4.2.2 mailbox busy"
    );
    assert_eq!(
        field(&f, "parts"),
        "text/plain,message/delivery-status,message/rfc822"
    );
    assert_eq!(field(&f, "returned.body"), "Hello.");
    assert_eq!(engine.stats().expired, 1);
    engine.shutdown();
}

#[test]
fn notify_never_and_the_null_sender_get_no_notification() {
    let world = world();
    let engine = volley_engine::Engine::start(world.config()).unwrap();
    let addr = engine.listen_addrs()[0];
    send(
        addr,
        "bounces@d1.test",
        "",
        &[("gone1@d0.test", "NOTIFY=NEVER")],
    );
    send(addr, "", "", &[("gone2@d0.test", "-")]);
    wait_stats(&engine, "both bounced", |s| s.bounced == 2);
    // A third message that does get one: once it is there, the first two
    // had all the time they would have needed.
    send(addr, "bounces@d1.test", "", &[("gone3@d0.test", "-")]);
    wait_until("the notification", Duration::from_secs(10), || {
        !at_sender_domain(&world).is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let dsns = at_sender_domain(&world);
    assert_eq!(dsns.len(), 1);
    let f = parse(&dsns[0]);
    assert!(f.iter().any(|(k, _)| k.starts_with("gone3@d0.test.")));
    assert!(
        !f.iter()
            .any(|(k, _)| k.starts_with("gone1@") || k.starts_with("gone2@"))
    );
    assert_eq!(engine.stats().dsn_sent, 1);
    engine.shutdown();
}

#[test]
fn delays_and_successes_are_reported_once_each_when_the_composer_asks() {
    // slow1 is deferred on every attempt; fine1 is delivered.
    let world = world();
    let mut config = world.config();
    config.dsn.delay_after = Some(Duration::from_millis(500));
    config.general_queue.max_attempts = 1000;
    let engine = volley_engine::Engine::start(config).unwrap();
    send(
        engine.listen_addrs()[0],
        "bounces@d1.test",
        "",
        &[
            ("slow1@d0.test", "NOTIFY=DELAY,FAILURE"),
            ("fine1@d0.test", "NOTIFY=SUCCESS"),
            ("fine2@d0.test", "-"),
        ],
    );
    wait_until("the notification", Duration::from_secs(20), || {
        !at_sender_domain(&world).is_empty()
    });
    // Several more attempts of slow1 go by: no second delay notice.
    std::thread::sleep(Duration::from_secs(2));
    let dsns = at_sender_domain(&world);
    assert_eq!(dsns.len(), 1, "one for the message's batch of outcomes");
    let f = parse(&dsns[0]);
    assert_eq!(field(&f, "subject"), "Delayed Mail (still being retried)");
    assert_eq!(field(&f, "fine1@d0.test.action"), "relayed");
    assert_eq!(field(&f, "fine1@d0.test.status"), "2.0.0");
    assert_eq!(field(&f, "slow1@d0.test.action"), "delayed");
    assert_eq!(field(&f, "slow1@d0.test.status"), "4.2.2");
    assert!(f.iter().any(|(k, _)| k == "slow1@d0.test.will-retry-until"));
    assert!(
        !f.iter().any(|(k, _)| k.starts_with("fine2@")),
        "not asked for"
    );
    assert_eq!(
        field(&f, "parts"),
        "text/plain,message/delivery-status,text/rfc822-headers"
    );
    engine.shutdown();
}

#[test]
fn in_durable_mode_a_notification_not_yet_delivered_survives_a_restart() {
    let open = Arc::new(AtomicBool::new(false));
    let o = open.clone();
    // d0.test refuses gone*; d1.test defers the notification until `open`.
    let world = World::generated(2, 2, move |k| Script {
        rcpt: Some(Box::new({
            let o = o.clone();
            move |rcpt: &str, _| {
                if k == 0 && rcpt.starts_with("gone") {
                    Some(Reply::new(
                        550,
                        EnhancedCode::new(5, 1, 1),
                        "no such user here",
                    ))
                } else if k == 1 && !o.load(Ordering::SeqCst) {
                    Some(Reply::new(451, EnhancedCode::new(4, 3, 0), "not now"))
                } else {
                    None
                }
            }
        })),
        ..Script::default()
    });
    let dir = temp_path("journal-dsn");
    let config = || {
        let mut c = world.config();
        c.journal.dir = Some(dir.clone());
        c.general_queue.max_attempts = 1000;
        c
    };
    let engine = volley_engine::Engine::start(config()).unwrap();
    send(
        engine.listen_addrs()[0],
        "bounces@d1.test",
        "ENVID=restart-1",
        &[("gone1@d0.test", "-"), ("fine@d0.test", "-")],
    );
    wait_stats(&engine, "the notification queued and deferred", |s| {
        s.dsn_sent == 1 && s.delivered == 1 && s.deferred >= 1
    });
    engine.shutdown();

    open.store(true, Ordering::SeqCst);
    let engine = volley_engine::Engine::start(config()).unwrap();
    let recovered: u64 = engine.recovery().iter().map(|r| r.recipients).sum();
    assert_eq!(recovered, 1, "only the notification comes back");
    wait_until("the notification", Duration::from_secs(10), || {
        !at_sender_domain(&world).is_empty()
    });
    let f = parse(&at_sender_domain(&world)[0]);
    assert_eq!(field(&f, "msg.original-envelope-id"), "restart-1");
    assert_eq!(field(&f, "gone1@d0.test.action"), "failed");
    let stats = engine.stats();
    assert_eq!(stats.bounced, 0, "the refused recipient is not tried again");
    assert_eq!(stats.dsn_sent, 0, "nor reported again");
    engine.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
