//! DKIM signing end to end, checked by an independent verifier: Python's
//! dkimpy (from PyPI; .ci/run installs it) with the public keys that
//! `volley dkim-keygen` printed.

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use volley_engine::{DkimAlgorithm, DkimConfig, Engine};
use volley_smtp::{BodyType, Transaction};

use crate::support::sink::Script;
use crate::support::{World, check_config, composer, python, temp_path, wait_until};

/// A key made by `volley dkim-keygen`: its entry and its TXT record.
pub(crate) fn keygen(selector: &str, algorithm: &str) -> (DkimConfig, String) {
    let path = temp_path(&format!("{selector}.pem"));
    let out = Command::new(env!("CARGO_BIN_EXE_volley"))
        .args([
            "dkim-keygen",
            "--domain",
            "composer.test",
            "--selector",
            selector,
        ])
        .args(["--algorithm", algorithm])
        .arg("--out")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let first = stdout.lines().next().unwrap();
    // `NAME IN TXT "part" "part"`: the record is the parts joined.
    let record: String = first
        .split('"')
        .skip(1)
        .step_by(2)
        .collect::<Vec<_>>()
        .concat();
    let entry = DkimConfig {
        domain: "composer.test".into(),
        selector: selector.into(),
        key: path,
        algorithm: if algorithm == "rsa-sha256" {
            DkimAlgorithm::RsaSha256
        } else {
            DkimAlgorithm::Ed25519Sha256
        },
    };
    (entry, record)
}

/// Verifies every DKIM signature of each message file with dkimpy; prints
/// one line per message: the results, and the `d=`/`s=` of each.
pub(crate) const VERIFY: &str = r#"
import dkim, json, sys
records = json.loads(sys.argv[1])
def dns(name, timeout=5):
    return records.get(name.decode().rstrip("."), "").encode()
for path in sys.argv[2:]:
    msg = open(path, "rb").read()
    d = dkim.DKIM(msg)
    sigs = [l for l in msg.split(b"\r\n\r\n")[0].split(b"\r\n") if l.lower().startswith(b"dkim-signature:")]
    results = [d.verify(idx=i, dnsfunc=dns) for i in range(len(sigs))]
    print(len(sigs), all(results), " ".join(s.split(b";")[0].decode() for s in sigs))
"#;

fn tx(rcpts: &[&str], message: &str, body_type: Option<BodyType>) -> Transaction {
    Transaction {
        body_type,
        reverse_path: "bounces@composer.test".into(),
        recipients: rcpts.iter().map(|s| s.to_string()).collect(),
        body: Bytes::from(message.to_string()),
    }
}

#[test]
fn messages_are_signed_with_rsa_and_ed25519_and_an_independent_verifier_agrees() {
    let world = World::generated(3, 3, |_| Script::default());
    let (rsa, rsa_record) = keygen("rsa1", "rsa-sha256");
    let (ed, ed_record) = keygen("ed1", "ed25519-sha256");
    let mut config = world.config();
    config.dkim = vec![rsa.clone(), ed.clone()];
    let engine = Engine::start(config).unwrap();
    let subject = format!("Subject: {}\r\n", ["a long subject"; 12].join("\r\n "));
    let messages = [
        // To three domains: the same signatures reach each.
        tx(
            &["a@d0.test", "b@d1.test", "c@d2.test"],
            "From: \"News\" <news@composer.test>\r\nTo: list@composer.test\r\nSubject: three\r\nMessage-ID: <1@composer.test>\r\nList-Unsubscribe: <https://composer.test/u/1>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\nhello\r\n",
            None,
        ),
        // From a subdomain (the parent's keys align), a long folded
        // header, and a body ending in blank and whitespace-only lines.
        tx(
            &["d@d0.test"],
            &format!("From: news@mail.composer.test\r\n{subject}\r\ntext\r\n \r\n\t\r\n\r\n"),
            None,
        ),
        // 8-bit content.
        tx(
            &["e@d1.test"],
            "From: news@composer.test\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\u{fc}\u{df}e aus K\u{f6}ln\r\n",
            Some(BodyType::EightBitMime),
        ),
        // No key for this domain: sent unsigned.
        tx(
            &["f@d2.test"],
            "From: x@unsigned.test\r\nSubject: plain\r\n\r\nno key\r\n",
            None,
        ),
    ];
    for m in messages {
        let out = composer::send(engine.listen_addrs()[0], false, vec![m]).unwrap();
        assert_eq!(out[0].delivered(), out[0].recipients.len(), "{out:?}");
    }
    wait_until("all delivered", Duration::from_secs(10), || {
        world.received_count() == 6
    });
    engine.shutdown();
    let mut received = world.received();
    received.sort_by_key(|r| r.recipients[0].clone());
    let files: Vec<String> = received
        .iter()
        .map(|r| {
            let path = temp_path(&format!("{}.eml", r.recipients[0]));
            let mut whole = r.trace.clone().into_bytes();
            whole.extend_from_slice(&r.body);
            std::fs::write(&path, whole).unwrap();
            path.display().to_string()
        })
        .collect();
    let records = serde_json::json!({
        "rsa1._domainkey.composer.test": rsa_record,
        "ed1._domainkey.composer.test": ed_record,
    })
    .to_string();
    let mut args: Vec<&dyn std::fmt::Display> = vec![&records];
    args.extend(files.iter().map(|f| f as &dyn std::fmt::Display));
    let out = python(VERIFY, &args);
    let lines: Vec<&str> = out.lines().collect();
    let signed = "2 True DKIM-Signature: v=1 DKIM-Signature: v=1";
    assert_eq!(
        lines,
        [signed, signed, signed, signed, signed, "0 True "],
        "{out}"
    );
    // One signature for the three domains' copies: the same bytes.
    let heads: Vec<&[u8]> = received[..3].iter().map(|r| &r.body[..300]).collect();
    assert!(heads.iter().all(|h| *h == heads[0]));
    for f in files
        .iter()
        .map(std::path::Path::new)
        .chain([rsa.key.as_path(), ed.key.as_path()])
    {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn a_reload_signs_with_the_new_key_and_check_config_reads_the_keys() {
    let world = World::generated(1, 1, |_| Script::default());
    let (first, _) = keygen("one", "ed25519-sha256");
    let (second, _) = keygen("two", "ed25519-sha256");
    let mut config = world.config();
    config.dkim = vec![first.clone()];
    let engine = Engine::start(config.clone()).unwrap();
    let message = "From: news@composer.test\r\nSubject: s\r\n\r\nbody\r\n";
    let send = |rcpt: &str| {
        let out = composer::send(
            engine.listen_addrs()[0],
            false,
            vec![tx(&[rcpt], message, None)],
        )
        .unwrap();
        assert_eq!(out[0].delivered(), 1);
    };
    send("a@d0.test");
    wait_until("first delivered", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    config.dkim = vec![second.clone()];
    engine.reload(config).unwrap();
    send("b@d0.test");
    wait_until("second delivered", Duration::from_secs(10), || {
        world.received_count() == 2
    });
    engine.shutdown();
    let mut received = world.received();
    received.sort_by_key(|r| r.recipients[0].clone());
    let selectors: Vec<bool> = received
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).contains("s=two;"))
        .collect();
    assert_eq!(
        selectors,
        [false, true],
        "the reload's key signs the next message"
    );

    // check-config reads the key file as serve does.
    let file = temp_path("dkim.toml");
    let missing = temp_path("missing.pem");
    std::fs::write(
        &file,
        format!(
            "[[dkim]]\ndomain = \"composer.test\"\nselector = \"x\"\nkey = \"{}\"\nalgorithm = \"rsa-sha256\"\n",
            missing.display()
        ),
    )
    .unwrap();
    let out = check_config(&file);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dkim key") && stderr.contains("missing.pem"),
        "{stderr}"
    );
    for f in [file, first.key, second.key] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn a_bounce_message_is_signed_with_the_key_of_volleys_own_domain() {
    // d0.test refuses everyone; the notification goes to the sender at
    // d1.test, from MAILER-DAEMON at Volley's host name under composer.test.
    let world = World::generated(2, 2, |k| Script {
        rcpt: (k == 0).then(|| {
            Box::new(|_: &str, _: usize| {
                Some(volley_smtp::Reply::new(
                    550,
                    volley_smtp::EnhancedCode::new(5, 1, 1),
                    "no such user",
                ))
            }) as Box<_>
        }),
        ..Script::default()
    });
    let (ed, ed_record) = keygen("dsn1", "ed25519-sha256");
    let mut config = world.config();
    config.hostname = "mta.composer.test".into();
    config.dkim = vec![ed.clone()];
    let engine = Engine::start(config).unwrap();
    let mut m = tx(
        &["gone@d0.test"],
        "From: news@composer.test\r\nSubject: s\r\n\r\nbody\r\n",
        None,
    );
    m.reverse_path = "bounces@d1.test".into();
    composer::send(engine.listen_addrs()[0], false, vec![m]).unwrap();
    wait_until("the notification", Duration::from_secs(10), || {
        world.received_count() == 1
    });
    engine.shutdown();
    let dsn = &world.received()[0];
    assert_eq!(dsn.sender, "");
    let path = temp_path("dsn-signed.eml");
    let mut whole = dsn.trace.clone().into_bytes();
    whole.extend_from_slice(&dsn.body);
    std::fs::write(&path, whole).unwrap();
    let records = serde_json::json!({ "dsn1._domainkey.composer.test": ed_record }).to_string();
    let out = python(VERIFY, &[&records, &path.display()]);
    assert_eq!(out.trim(), "1 True DKIM-Signature: v=1", "{out}");
    for f in [path.as_path(), ed.key.as_path()] {
        let _ = std::fs::remove_file(f);
    }
}
