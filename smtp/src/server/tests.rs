//! Server session tests: every command, extension, limit and reply path,
//! fragmented and pipelined input, smuggling, and property tests.

use super::*;
use proptest::prelude::*;

/// What a test saw: the reply stream, a log of events, and the bodies of
/// completed messages.
#[derive(Debug, Default, PartialEq, Eq)]
struct Seen {
    out: String,
    events: Vec<String>,
    bodies: Vec<Vec<u8>>,
}

/// Default policy: accept everything except recipients whose local part
/// starts with `reject`, and messages whose body contains `REJECTME`.
fn policy(ev: &ServerEvent, body: &[u8]) -> Verdict {
    match ev {
        ServerEvent::Rcpt { forward_path, .. }
            if forward_path.local_part().starts_with("reject") =>
        {
            Verdict::Reject(Reply::new(550, EnhancedCode::new(5, 1, 1), "No such user"))
        }
        ServerEvent::MessageComplete if body.windows(8).any(|w| w == b"REJECTME") => {
            Verdict::Reject(Reply::new(554, EnhancedCode::new(5, 7, 1), "Rejected"))
        }
        _ => Verdict::Accept,
    }
}

/// Drives a server over `chunks`, answering verdicts with [`policy`].
fn drive(config: ServerConfig, chunks: &[&[u8]]) -> Seen {
    let mut s = Server::new(config);
    let mut seen = Seen::default();
    let mut body = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        loop {
            let n = s.receive(rest);
            rest = &rest[n..];
            pump(&mut s, &mut seen, &mut body);
            if rest.is_empty() {
                break;
            }
        }
    }
    pump(&mut s, &mut seen, &mut body);
    if s.is_closed() {
        seen.events.push("closed".into());
    }
    seen
}

fn pump(s: &mut Server, seen: &mut Seen, body: &mut Vec<u8>) {
    loop {
        seen.out.push_str(&String::from_utf8_lossy(s.output()));
        let n = s.output().len();
        s.consume_output(n);
        let Some(ev) = s.poll_event() else {
            seen.out.push_str(&String::from_utf8_lossy(s.output()));
            let n = s.output().len();
            s.consume_output(n);
            return;
        };
        match &ev {
            ServerEvent::BodyChunk(b) => {
                body.extend_from_slice(b);
                continue;
            }
            ServerEvent::Mail { reverse_path, .. } => {
                let from = reverse_path
                    .as_ref()
                    .map(|m| m.to_string())
                    .unwrap_or_default();
                seen.events.push(format!("mail <{from}>"));
                s.mail_verdict(policy(&ev, body)).unwrap();
            }
            ServerEvent::Rcpt { forward_path, .. } => {
                seen.events.push(format!("rcpt <{forward_path}>"));
                s.rcpt_verdict(policy(&ev, body)).unwrap();
            }
            ServerEvent::MessageComplete => {
                seen.events.push("complete".into());
                let Some(Pending::Message { remaining }) = s.pending() else {
                    panic!("no message verdict pending")
                };
                for _ in 0..remaining {
                    s.message_verdict(policy(&ev, body)).unwrap();
                }
                seen.bodies.push(std::mem::take(body));
            }
            ServerEvent::TransactionAborted(why) => {
                seen.events.push(format!("aborted {why:?}"));
                body.clear();
            }
            ServerEvent::Quit => seen.events.push("quit".into()),
            ServerEvent::Closed(why) => seen.events.push(format!("close {why:?}")),
            ServerEvent::StartTls => {
                seen.events.push("starttls".into());
                s.starttls_verdict(Verdict::Accept).unwrap();
            }
            ServerEvent::Auth(c) => {
                seen.events
                    .push(format!("auth {} {}", c.mechanism, c.username));
                let verdict = if c.password == "right" {
                    Verdict::Accept
                } else {
                    let bad = Reply::new(
                        535,
                        EnhancedCode::new(5, 7, 8),
                        "Authentication credentials invalid",
                    );
                    Verdict::Reject(bad)
                };
                s.auth_verdict(verdict).unwrap();
            }
        }
    }
}

fn smtp(input: &str) -> Seen {
    drive(ServerConfig::default(), &[input.as_bytes()])
}

fn lines(out: &str) -> Vec<&str> {
    out.split_terminator("\r\n").collect()
}

const GREETING: &str = "220 localhost ESMTP Volley ready\r\n";

#[test]
fn greeting_and_ehlo_advertise_every_extension() {
    let seen = smtp("EHLO client.example\r\n");
    assert_eq!(
        seen.out,
        format!(
            "{GREETING}250-localhost greets client.example\r\n\
             250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 52428800\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n\
             250 BINARYMIME\r\n"
        )
    );
}

#[test]
fn extensions_follow_the_config() {
    let mut c = ServerConfig {
        extensions: Extensions {
            pipelining: true,
            eight_bit_mime: false,
            size: false,
            enhanced_status_codes: false,
            smtputf8: false,
            chunking: false,
            binarymime: false,
            dsn: true,
            starttls: false,
            auth: false,
        },
        ..ServerConfig::default()
    };
    let seen = drive(
        c.clone(),
        &[b"EHLO c\r\nMAIL FROM:<a@b.c> BODY=8BITMIME\r\nBDAT 3\r\nabcNOOP\r\n"],
    );
    assert_eq!(
        lines(&seen.out)[1..],
        [
            "250-localhost greets c",
            "250-PIPELINING",
            "250 DSN",
            "555 BODY type not supported",
            "500 Command not recognized",
            "250 OK",
        ]
    );
    c.extensions = Extensions {
        pipelining: false,
        eight_bit_mime: false,
        size: false,
        enhanced_status_codes: false,
        smtputf8: false,
        chunking: false,
        binarymime: false,
        dsn: false,
        starttls: false,
        auth: false,
    };
    let seen = drive(c, &[b"EHLO c\r\n"]);
    assert_eq!(lines(&seen.out)[1..], ["250 localhost greets c"]);
}

#[test]
fn helo_gets_no_extensions_and_no_parameters() {
    let seen = smtp("HELO client\r\nMAIL FROM:<a@b.c> SIZE=10\r\nMAIL FROM:<a@b.c>\r\n");
    assert_eq!(
        lines(&seen.out)[1..],
        [
            "250 localhost",
            "555 5.5.4 No MAIL parameters after HELO: use EHLO",
            "250 2.1.0 OK",
        ]
    );
}

const TXN: &str = "EHLO c\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.net>\r\nDATA\r\n\
                   Subject: hi\r\n\r\n..dot\r\n.x\r\nend\r\n.\r\nQUIT\r\n";

#[test]
fn one_transaction_with_dot_unstuffing() {
    let seen = smtp(TXN);
    let l = lines(&seen.out);
    assert_eq!(
        l[9..],
        [
            "250 2.1.0 OK",
            "250 2.1.5 OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 OK",
            "221 2.0.0 localhost closing connection",
        ]
    );
    assert_eq!(
        seen.events,
        [
            "mail <s@example.org>",
            "rcpt <r@example.net>",
            "complete",
            "quit",
            "closed"
        ]
    );
    assert_eq!(
        seen.bodies,
        [b"Subject: hi\r\n\r\n.dot\r\nx\r\nend\r\n".to_vec()]
    );
}

#[test]
fn pipelined_input_split_at_every_boundary_gives_the_same_result() {
    let input = TXN.replace("QUIT\r\n", "")
        + "MAIL FROM:<>\r\nRCPT TO:<reject@x.y>\r\nRCPT TO:<u@x.y>\r\nBDAT 5\r\n.\r\n\r\nBDAT 3 LAST\r\nabcRSET\r\nNOOP\r\nQUIT\r\n";
    let whole = smtp(&input);
    assert_eq!(whole.bodies.len(), 2);
    assert_eq!(whole.bodies[1], b".\r\n\r\nabc");
    let b = input.as_bytes();
    for i in 0..=b.len() {
        let split = drive(ServerConfig::default(), &[&b[..i], &b[i..]]);
        assert_eq!(split, whole, "split at {i}");
    }
    let bytes: Vec<&[u8]> = b.chunks(1).collect();
    assert_eq!(drive(ServerConfig::default(), &bytes), whole);
    for size in [2, 3, 5, 7] {
        let chunks: Vec<&[u8]> = b.chunks(size).collect();
        assert_eq!(
            drive(ServerConfig::default(), &chunks),
            whole,
            "chunks of {size}"
        );
    }
}

#[test]
fn lmtp_replies_once_per_accepted_recipient() {
    let c = ServerConfig {
        lmtp: true,
        ..ServerConfig::default()
    };
    let seen = drive(
        c.clone(),
        &[
            b"EHLO x\r\nHELO x\r\nLHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u1@d.e>\r\n\
            RCPT TO:<reject@d.e>\r\nRCPT TO:<u2@d.e>\r\nDATA\r\nhello\r\n.\r\n",
        ],
    );
    let l = lines(&seen.out);
    assert_eq!(l[0], "220 localhost LMTP Volley ready");
    assert_eq!(l[1], "500 5.5.1 This is LMTP: use LHLO");
    assert_eq!(l[2], "500 5.5.1 This is LMTP: use LHLO");
    assert_eq!(l[3], "250-localhost greets x");
    assert_eq!(
        l[l.len() - 7..],
        [
            "250 2.1.0 OK",
            "250 2.1.5 OK",
            "550 5.1.1 No such user",
            "250 2.1.5 OK",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
        ]
    );
    assert_eq!(seen.bodies, [b"hello\r\n".to_vec()]);
    // LHLO is not an SMTP command.
    let seen = smtp("LHLO x\r\n");
    assert_eq!(lines(&seen.out)[1], "500 5.5.2 Command not recognized");
}

#[test]
fn lmtp_refused_data_gets_one_reply_per_recipient() {
    let c = ServerConfig {
        lmtp: true,
        max_message_size: 4,
        ..ServerConfig::default()
    };
    let env = "LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u1@d.e>\r\nRCPT TO:<u2@d.e>\r\n";
    // Within the size limit (a message too large says so instead).
    let roomy = ServerConfig {
        max_message_size: 100,
        ..c.clone()
    };
    let seen = drive(
        roomy,
        &[format!("{env}DATA\r\na\nb\r\n.\r\nNOOP\r\n").as_bytes()],
    );
    assert!(seen.out.ends_with(
        "with CRLF\r\n550 5.6.0 Bare CR or LF not allowed in message data: lines must end with CRLF\r\n\
         250 2.0.0 OK\r\n"
    ));
    assert_eq!(seen.out.matches("550 5.6.0").count(), 2);
    let seen = drive(
        c,
        &[format!("{env}BDAT 2\r\nabBDAT 3 LAST\r\ncdeNOOP\r\n").as_bytes()],
    );
    assert!(seen.out.ends_with(
        "250 2.0.0 2 octets received\r\n552 5.3.4 Message size exceeds fixed maximum of 4 octets\r\n\
         552 5.3.4 Message size exceeds fixed maximum of 4 octets\r\n250 2.0.0 OK\r\n"
    ));
    assert_eq!(seen.events.last().unwrap(), "aborted TooLarge");
}

#[test]
fn lmtp_verdicts_can_arrive_one_by_one_much_later() {
    let mut s = Server::new(ServerConfig {
        lmtp: true,
        ..ServerConfig::default()
    });
    let input = b"LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u1@d.e>\r\nRCPT TO:<u2@d.e>\r\nDATA\r\nhi\r\n.\r\nNOOP\r\n";
    assert_eq!(s.receive(input), input.len());
    let mut events = 0;
    while let Some(ev) = s.poll_event() {
        events += 1;
        match ev {
            ServerEvent::Mail { .. } => s.mail_verdict(Verdict::Accept).unwrap(),
            ServerEvent::Rcpt { .. } => s.rcpt_verdict(Verdict::Accept).unwrap(),
            ServerEvent::BodyChunk(b) => assert_eq!(&b[..], b"hi\r\n"),
            ServerEvent::MessageComplete => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(events, 5);
    assert_eq!(s.pending(), Some(Pending::Message { remaining: 2 }));
    let before = s.output().len();
    // Paused: nothing more happens, NOOP stays unanswered.
    assert_eq!(s.poll_event(), None);
    assert_eq!(s.output().len(), before);
    s.message_verdict(Verdict::Reject(Reply::new(
        452,
        EnhancedCode::new(4, 2, 2),
        "Mailbox full",
    )))
    .unwrap();
    assert_eq!(s.poll_event(), None);
    assert!(s.output().ends_with(b"452 4.2.2 Mailbox full\r\n"));
    s.message_verdict(Verdict::Accept).unwrap();
    assert_eq!(s.poll_event(), None);
    assert!(
        s.output()
            .ends_with(b"452 4.2.2 Mailbox full\r\n250 2.0.0 OK\r\n250 2.0.0 OK\r\n")
    );
    assert_eq!(s.pending(), None);
}

#[test]
fn unexpected_verdicts_are_errors_not_panics() {
    let mut s = Server::new(ServerConfig::default());
    let e = s.mail_verdict(Verdict::Accept).unwrap_err();
    assert_eq!(
        e,
        UnexpectedVerdict {
            got: "mail",
            waiting: None
        }
    );
    assert!(!e.is_transient());
    assert!(s.message_verdict(Verdict::Accept).is_err());
    assert_eq!(s.receive(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n"), 27);
    while let Some(ev) = s.poll_event() {
        if matches!(ev, ServerEvent::Mail { .. }) {
            break;
        }
    }
    let e = s.rcpt_verdict(Verdict::Accept).unwrap_err();
    assert_eq!(e.waiting, Some(Pending::Mail));
}

#[test]
fn commands_out_of_order_get_503() {
    let seen = smtp(
        "MAIL FROM:<a@b.c>\r\nEHLO x\r\nRCPT TO:<a@b.c>\r\nDATA\r\nMAIL FROM:<a@b.c>\r\n\
         MAIL FROM:<a@b.c>\r\nDATA\r\nRCPT TO:<reject@b.c>\r\nDATA\r\n",
    );
    let l = lines(&seen.out);
    assert_eq!(l[1], "503 5.5.1 Send EHLO or HELO first");
    assert_eq!(
        l[10..],
        [
            "503 5.5.1 Need MAIL before RCPT",
            "503 5.5.1 Need MAIL before DATA",
            "250 2.1.0 OK",
            "503 5.5.1 Nested MAIL command",
            "554 5.5.1 No valid recipients",
            "550 5.1.1 No such user",
            "554 5.5.1 No valid recipients",
        ]
    );
}

#[test]
fn syntax_errors_and_unknown_parameters() {
    let seen = smtp(
        "EHLO x\r\nFOO\r\nMAIL FROM:<a@b.c> FOO=1\r\nMAIL FROM:a@b.c\r\nMAIL FROM:<a@b.c> SIZE=x\r\n\
         EHLO\r\nNOOP\n\r\nNOOP \x01\r\n",
    );
    assert_eq!(
        lines(&seen.out)[9..],
        [
            "500 5.5.2 command not recognized",
            "555 5.5.4 unsupported parameter FOO",
            "501 5.1.3 bad address: path must be enclosed in <>",
            "501 5.5.4 bad value for parameter SIZE",
            "501 5.5.4 expected one domain argument",
            "500 5.5.2 Syntax error: line must end with CRLF",
            "500 5.5.2 command not recognized",
            "500 5.5.2 syntax error",
        ]
    );
}

#[test]
fn vrfy_help_noop_rset_quit() {
    let seen = smtp(
        "VRFY bob\r\nHELP\r\nNOOP\r\nEHLO x\r\nMAIL FROM:<a@b.c>\r\nRSET\r\nRSET\r\nQUIT\r\nNOOP\r\n",
    );
    let l = lines(&seen.out);
    assert_eq!(
        l[1..4],
        [
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            "214 2.0.0 See RFC 5321 and RFC 2033",
            "250 2.0.0 OK",
        ]
    );
    assert_eq!(
        l[l.len() - 4..],
        [
            "250 2.1.0 OK",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
            "221 2.0.0 localhost closing connection"
        ]
    );
    assert_eq!(
        seen.events,
        ["mail <a@b.c>", "aborted Reset", "quit", "closed"]
    );
}

#[test]
fn parameters_and_client_name_reach_the_engine() {
    let mut s = Server::new(ServerConfig::default());
    let input = b"EHLO client.example\r\nMAIL FROM:<a@b.c> RET=HDRS ENVID=e1 SIZE=99\r\n\
                  RCPT TO:<d@e.f> NOTIFY=FAILURE ORCPT=rfc822;d+40e.f\r\n";
    assert_eq!(s.receive(input), input.len());
    let Some(ServerEvent::Mail { params, .. }) = s.poll_event() else {
        panic!("no MAIL event")
    };
    assert_eq!(s.client_name(), Some("client.example"));
    assert_eq!(params.size, Some(99));
    assert_eq!(params.envid.as_deref(), Some("e1"));
    s.mail_verdict(Verdict::Accept).unwrap();
    let Some(ServerEvent::Rcpt { params, .. }) = s.poll_event() else {
        panic!("no RCPT event")
    };
    assert!(params.notify.unwrap().failure);
    assert_eq!(params.orcpt.unwrap().addr, "d@e.f");
}

#[test]
fn bare_postmaster_reaches_the_engine_and_gets_its_verdict() {
    let mut s = Server::new(ServerConfig::default());
    let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<postmaster>\r\n";
    assert_eq!(s.receive(input), input.len());
    let Some(ServerEvent::Mail { .. }) = s.poll_event() else {
        panic!("no MAIL event")
    };
    s.mail_verdict(Verdict::Accept).unwrap();
    let Some(ServerEvent::Rcpt { forward_path, .. }) = s.poll_event() else {
        panic!("no RCPT event")
    };
    assert_eq!(forward_path, ForwardPath::Postmaster);
    let refusal = Reply::new(550, EnhancedCode::new(5, 7, 1), "no postmaster here");
    s.rcpt_verdict(Verdict::Reject(refusal)).unwrap();
    let out = String::from_utf8(s.output().to_vec()).unwrap();
    assert!(
        out.ends_with("250 2.1.0 OK\r\n550 5.7.1 no postmaster here\r\n"),
        "{out}"
    );
}

#[test]
fn ehlo_resets_a_transaction() {
    let seen = smtp("EHLO x\r\nMAIL FROM:<a@b.c>\r\nEHLO y\r\nRCPT TO:<a@b.c>\r\n");
    assert_eq!(seen.events, ["mail <a@b.c>", "aborted Reset"]);
    assert!(seen.out.ends_with("503 5.5.1 Need MAIL before RCPT\r\n"));
}

#[test]
fn command_line_length_limit() {
    let ok = format!("NOOP {}\r\n", "x".repeat(512 - 7));
    let long = format!("NOOP {}\r\n", "x".repeat(512 - 6));
    let huge = format!("NOOP {}\r\n", "x".repeat(100_000));
    let seen = smtp(&format!("{ok}{long}{huge}NOOP\r\n"));
    assert_eq!(
        lines(&seen.out)[1..],
        [
            "250 2.0.0 OK",
            "500 5.5.2 Line too long (max 512 octets)",
            "500 5.5.2 Line too long (max 512 octets)",
            "250 2.0.0 OK",
        ]
    );
}

#[test]
fn over_long_line_never_grows_the_buffer() {
    let mut s = Server::new(ServerConfig::default());
    let junk = vec![b'x'; 4096];
    for _ in 0..1000 {
        let mut rest = &junk[..];
        while !rest.is_empty() {
            let n = s.receive(rest);
            rest = &rest[n..];
            assert_eq!(s.poll_event(), None);
        }
        assert!(s.input.len() < 8192);
    }
    assert_eq!(s.receive(b"\r\nNOOP\r\n"), 8);
    assert_eq!(s.poll_event(), None);
    assert!(
        s.output()
            .ends_with(b"500 5.5.2 Line too long (max 512 octets)\r\n250 2.0.0 OK\r\n")
    );
}

const ENVELOPE: &str = "EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n";

#[test]
fn text_line_length_limit() {
    let c = ServerConfig {
        max_text_line: 20,
        ..ServerConfig::default()
    };
    let ok = "x".repeat(18);
    let seen = drive(c.clone(), &[format!("{ENVELOPE}{ok}\r\n.\r\n").as_bytes()]);
    assert!(
        seen.out
            .ends_with("354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 OK\r\n")
    );
    let seen = drive(c, &[format!("{ENVELOPE}{ok}x\r\n.\r\nNOOP\r\n").as_bytes()]);
    assert!(
        seen.out
            .ends_with("500 5.5.2 Line too long (max 20 octets)\r\n250 2.0.0 OK\r\n")
    );
    assert_eq!(seen.events.last().unwrap(), "aborted LineTooLong");
    assert!(seen.bodies.is_empty());
}

#[test]
fn message_size_limit_drains_without_buffering() {
    let c = ServerConfig {
        max_message_size: 1000,
        ..ServerConfig::default()
    };
    let seen = drive(c.clone(), &[b"EHLO x\r\nMAIL FROM:<a@b.c> SIZE=1001\r\n"]);
    assert!(
        seen.out
            .ends_with("552 5.3.4 Message size exceeds fixed maximum of 1000 octets\r\n")
    );
    assert!(seen.events.is_empty());

    let mut s = Server::new(c);
    assert_eq!(s.receive(ENVELOPE.as_bytes()), ENVELOPE.len());
    let mut delivered = 0;
    let line = format!("{}\r\n", "y".repeat(98));
    let mut step = |s: &mut Server, input: &[u8]| {
        assert_eq!(s.receive(input), input.len());
        let mut evs = Vec::new();
        while let Some(ev) = s.poll_event() {
            match ev {
                ServerEvent::Mail { .. } => s.mail_verdict(Verdict::Accept).unwrap(),
                ServerEvent::Rcpt { .. } => s.rcpt_verdict(Verdict::Accept).unwrap(),
                ServerEvent::BodyChunk(b) => delivered += b.len(),
                other => evs.push(other),
            }
        }
        evs
    };
    step(&mut s, b"");
    for _ in 0..10_000 {
        assert!(step(&mut s, line.as_bytes()).is_empty());
        assert!(s.input.len() < 200);
    }
    assert_eq!(
        step(&mut s, b".\r\n"),
        [ServerEvent::TransactionAborted(AbortReason::TooLarge)]
    );
    assert!(delivered <= 1000);
    assert!(
        s.output()
            .ends_with(b"552 5.3.4 Message size exceeds fixed maximum of 1000 octets\r\n")
    );
}

#[test]
fn recipient_limit() {
    let c = ServerConfig {
        max_recipients: 2,
        ..ServerConfig::default()
    };
    let seen = drive(
        c,
        &[b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<reject@b.c>\r\nRCPT TO:<1@b.c>\r\nRCPT TO:<2@b.c>\r\nRCPT TO:<3@b.c>\r\n"],
    );
    assert!(seen.out.ends_with(
        "550 5.1.1 No such user\r\n250 2.1.5 OK\r\n250 2.1.5 OK\r\n452 4.5.3 Too many recipients\r\n"
    ));
}

#[test]
fn too_many_errors_close_the_session() {
    let c = ServerConfig {
        max_errors: 3,
        ..ServerConfig::default()
    };
    let seen = drive(c, &[b"FOO\r\nNOOP\r\nBAR\r\nBAZ\r\nNOOP\r\n"]);
    assert_eq!(
        lines(&seen.out)[1..],
        [
            "500 5.5.2 command not recognized",
            "250 2.0.0 OK",
            "500 5.5.2 command not recognized",
            "500 5.5.2 command not recognized",
            "421 4.7.0 localhost too many errors, closing connection",
        ]
    );
    assert_eq!(seen.events, ["close TooManyErrors", "closed"]);
}

#[test]
fn timeout_and_shutdown_close_with_421() {
    let mut s = Server::new(ServerConfig::default());
    s.timeout();
    assert!(s.is_closed());
    assert!(
        s.output()
            .ends_with(b"421 4.4.2 localhost timeout, closing connection\r\n")
    );
    s.timeout();
    assert_eq!(s.output().windows(3).filter(|w| w == b"421").count(), 1);
    assert_eq!(s.receive(b"NOOP\r\n"), 6);
    assert_eq!(s.poll_event(), None);
    let mut s = Server::new(ServerConfig::default());
    s.shutdown();
    assert!(
        s.output()
            .ends_with(b"421 4.3.2 localhost shutting down, try again later\r\n")
    );
}

#[test]
fn bare_line_endings_in_data_are_refused() {
    for body in ["a\nb\r\n", "a\rb\r\n", "a\r\n.\nb\r\n", "x\r\r\n"] {
        let seen = smtp(&format!("{ENVELOPE}{body}.\r\nNOOP\r\n"));
        assert!(
            seen.out.ends_with(
                "550 5.6.0 Bare CR or LF not allowed in message data: lines must end with CRLF\r\n\
                 250 2.0.0 OK\r\n"
            ),
            "{body:?}: {}",
            seen.out
        );
        assert_eq!(seen.events.last().unwrap(), "aborted BareLineEnding");
        assert!(seen.bodies.is_empty());
    }
}

#[test]
fn smuggled_commands_stay_inside_the_rejected_message() {
    for end in ["\n.\r\n", "\r.\r\n", "\r\n.\n", "\n.\n", "\r\n.\r"] {
        let input = format!(
            "{ENVELOPE}a{end}MAIL FROM:<evil@x.y>\r\nRCPT TO:<victim@x.y>\r\nDATA\r\nforged\r\n.\r\nNOOP\r\n"
        );
        let seen = smtp(&input);
        assert_eq!(
            seen.events,
            ["mail <a@b.c>", "rcpt <d@e.f>", "aborted BareLineEnding"],
            "{end:?}"
        );
        assert!(
            seen.out
                .ends_with("lines must end with CRLF\r\n250 2.0.0 OK\r\n"),
            "{end:?}"
        );
    }
}

#[test]
fn bdat_chunks_and_errors() {
    let seen = smtp(
        "EHLO x\r\nBDAT 4\r\nabcdMAIL FROM:<a@b.c>\r\nBDAT 3\r\nxyzRCPT TO:<d@e.f>\r\n\
         BDAT 2\r\nhiBDAT 0\r\nRCPT TO:<g@e.f>\r\nDATA\r\nBDAT 3 LAST\r\n\r\n.NOOP\r\n",
    );
    assert_eq!(
        lines(&seen.out)[9..],
        [
            "503 5.5.1 Need MAIL before BDAT",
            "250 2.1.0 OK",
            "554 5.5.1 No valid recipients",
            "250 2.1.5 OK",
            "250 2.0.0 2 octets received",
            "250 2.0.0 2 octets received",
            "503 5.5.1 RCPT not allowed during BDAT",
            "503 5.5.1 DATA not allowed after BDAT",
            "250 2.0.0 OK",
            "250 2.0.0 OK",
        ]
    );
    assert_eq!(seen.bodies, [b"hi\r\n.".to_vec()]);
}

#[test]
fn bdat_over_the_size_limit_is_drained_and_aborts() {
    let c = ServerConfig {
        max_message_size: 5,
        ..ServerConfig::default()
    };
    let seen = drive(
        c,
        &[b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 3\r\nabcBDAT 3 LAST\r\ndefBDAT 1 LAST\r\nxNOOP\r\n"],
    );
    assert!(seen.out.ends_with(
        "250 2.0.0 3 octets received\r\n552 5.3.4 Message size exceeds fixed maximum of 5 octets\r\n\
         503 5.5.1 Need MAIL before BDAT\r\n250 2.0.0 OK\r\n"
    ));
    assert_eq!(
        seen.events,
        ["mail <a@b.c>", "rcpt <d@e.f>", "aborted TooLarge"]
    );
}

#[test]
fn binarymime_needs_bdat() {
    let seen = drive(
        ServerConfig::default(),
        &[b"EHLO x\r\nMAIL FROM:<a@b.c> BODY=BINARYMIME\r\nRCPT TO:<d@e.f>\r\nDATA\r\nBDAT 2 LAST\r\n\x00\xffQUIT\r\n"],
    );
    assert!(
        seen.out
            .contains("503 5.5.1 BODY=BINARYMIME requires BDAT\r\n250 2.0.0 OK\r\n221")
    );
    assert_eq!(seen.bodies, [vec![0u8, 0xff]]);
}

#[test]
fn smtputf8_addresses() {
    let seen = smtp(
        "EHLO x\r\nMAIL FROM:<josé@bücher.example>\r\nMAIL FROM:<josé@bücher.example> SMTPUTF8\r\n\
         RCPT TO:<ü@bücher.example>\r\nRSET\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<ü@b.c>\r\n",
    );
    let l = lines(&seen.out);
    assert_eq!(
        l[9..],
        [
            "553 5.6.7 Non-ASCII address requires SMTPUTF8",
            "250 2.1.0 OK",
            "250 2.1.5 OK",
            "250 2.0.0 OK",
            "250 2.1.0 OK",
            "553 5.6.7 Non-ASCII address requires SMTPUTF8",
        ]
    );
}

#[test]
fn engine_rejections_are_sent_sanitized() {
    let mut s = Server::new(ServerConfig::default());
    let _ = s.receive(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nMAIL FROM:<a@b.c>\r\n");
    let mut n = 0;
    while let Some(ev) = s.poll_event() {
        if let ServerEvent::Mail { .. } = ev {
            n += 1;
            let r = if n == 1 {
                Reply {
                    code: 451,
                    enhanced: Some(EnhancedCode::new(4, 3, 1)),
                    lines: vec!["memory\r\nfull".into(), "try later".into()],
                }
            } else {
                Reply {
                    code: 42,
                    enhanced: None,
                    lines: vec![],
                }
            };
            s.mail_verdict(Verdict::Reject(r)).unwrap();
        }
    }
    assert!(
        s.output()
            .ends_with(b"451-4.3.1 memory  full\r\n451 4.3.1 try later\r\n451 4.0.0 \r\n")
    );
}

#[test]
fn input_is_bounded_while_a_verdict_is_pending() {
    let mut s = Server::new(ServerConfig {
        max_input_buffer: 2048,
        ..ServerConfig::default()
    });
    let _ = s.receive(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\n");
    while !matches!(s.poll_event(), Some(ServerEvent::Mail { .. }) | None) {}
    assert_eq!(s.pending(), Some(Pending::Mail));
    let noops = b"NOOP\r\n".repeat(1000);
    let taken = s.receive(&noops);
    assert_eq!(taken, 2048);
    assert_eq!(s.receive(&noops[taken..]), 0);
    assert_eq!(s.input_room(), 0);
    s.mail_verdict(Verdict::Accept).unwrap();
    assert_eq!(s.poll_event(), None);
    assert!(s.input_room() > 0);
}

#[test]
fn output_back_pressure_pauses_processing() {
    let mut s = Server::new(ServerConfig {
        max_output_buffer: 100,
        ..ServerConfig::default()
    });
    let noops = b"NOOP\r\n".repeat(100);
    assert_eq!(s.receive(&noops), noops.len());
    assert_eq!(s.poll_event(), None);
    let first = s.output().len();
    assert!(first < 100 + 20, "{first}");
    let mut total = 0;
    while !s.output().is_empty() {
        total += s.output().matches_ok();
        let n = s.output().len();
        s.consume_output(n);
        assert_eq!(s.poll_event(), None);
    }
    assert_eq!(total, 100);
}

trait CountOk {
    fn matches_ok(&self) -> usize;
}

impl CountOk for [u8] {
    fn matches_ok(&self) -> usize {
        self.windows(12).filter(|w| w == b"250 2.0.0 OK").count()
    }
}

/// Every reply line is `ddd[ -]text\r\n` with a code in 200..=599.
fn assert_well_formed(out: &[u8]) {
    assert!(out.is_empty() || out.ends_with(b"\r\n"), "{out:?}");
    let mut rest = out;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let line = &rest[..end];
        assert!(!line.contains(&b'\r') && !line.contains(&b'\n'), "{line:?}");
        assert!(line.len() >= 4, "{line:?}");
        let code: u16 = std::str::from_utf8(&line[..3]).unwrap().parse().unwrap();
        assert!((200..=599).contains(&code), "{line:?}");
        assert!(line[3] == b' ' || line[3] == b'-', "{line:?}");
        rest = &rest[end + 2..];
    }
}

fn fuzz(prefix: &[u8], data: &[u8], cut: usize) {
    let mut all = prefix.to_vec();
    all.extend_from_slice(data);
    let cut = cut % (all.len() + 1);
    let mut s = Server::new(ServerConfig {
        max_errors: 1000,
        max_input_buffer: 1024,
        ..ServerConfig::default()
    });
    let mut out = Vec::new();
    for part in [&all[..cut], &all[cut..]] {
        let mut rest = part;
        let mut spins = 0;
        loop {
            let n = s.receive(rest);
            rest = &rest[n..];
            while let Some(ev) = s.poll_event() {
                let v = if data.first().is_some_and(|b| b % 2 == 0) {
                    Verdict::Accept
                } else {
                    Verdict::Reject(Reply::new(450, EnhancedCode::new(4, 2, 0), "busy"))
                };
                match ev {
                    ServerEvent::Mail { .. } => s.mail_verdict(v).unwrap(),
                    ServerEvent::Rcpt { .. } => s.rcpt_verdict(v).unwrap(),
                    ServerEvent::MessageComplete => {
                        s.message_verdict_all(v.clone()).unwrap();
                    }
                    _ => {}
                }
            }
            out.extend_from_slice(s.output());
            let n = s.output().len();
            s.consume_output(n);
            if rest.is_empty() {
                break;
            }
            spins += 1;
            assert!(spins < 100_000, "no progress");
        }
    }
    assert_well_formed(&out);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), cut in any::<usize>()) {
        fuzz(b"", &data, cut);
        fuzz(ENVELOPE.as_bytes(), &data, cut);
        fuzz(b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nBDAT 20\r\n", &data, cut);
    }

    #[test]
    fn arbitrary_command_lines_never_panic(
        lines in proptest::collection::vec("[A-Za-z :<>@.=\"\\\\\\[\\]0-9+-]{0,40}", 0..30),
        cut in any::<usize>(),
    ) {
        let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        fuzz(b"EHLO x\r\n", text.as_bytes(), cut);
    }

    #[test]
    fn arbitrary_text_lines_never_panic(
        lines in proptest::collection::vec("(MAIL FROM:<|RCPT TO:<|BDAT |)\\PC{0,40}", 0..20),
        cut in any::<usize>(),
    ) {
        let text: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
        fuzz(b"EHLO x\r\nMAIL FROM:<a@b.c> SMTPUTF8\r\n", text.as_bytes(), cut);
    }

    #[test]
    fn stuffed_bodies_come_back_exactly(
        body_lines in proptest::collection::vec("[.a-z \t]{0,20}", 0..30),
        cut in any::<usize>(),
    ) {
        let body: String = body_lines.iter().map(|l| format!("{l}\r\n")).collect();
        let stuffed: String = body_lines
            .iter()
            .map(|l| if l.starts_with('.') { format!(".{l}\r\n") } else { format!("{l}\r\n") })
            .collect();
        let input = format!("{ENVELOPE}{stuffed}.\r\n");
        let b = input.as_bytes();
        let cut = cut % (b.len() + 1);
        let seen = drive(ServerConfig::default(), &[&b[..cut], &b[cut..]]);
        prop_assert_eq!(seen.bodies, vec![body.into_bytes()]);
    }
}

#[test]
fn accept_message_answers_every_waiting_lmtp_recipient_once() {
    let mut s = Server::new(ServerConfig {
        lmtp: true,
        ..ServerConfig::default()
    });
    let input = b"LHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u1@d.e>\r\nRCPT TO:<u2@d.e>\r\nDATA\r\nhi\r\n.\r\n";
    assert_eq!(s.receive(input), input.len());
    let mut completes = 0;
    while let Some(ev) = s.poll_event() {
        match ev {
            ServerEvent::Mail { .. } => s.mail_verdict(Verdict::Accept).unwrap(),
            ServerEvent::Rcpt { .. } => s.rcpt_verdict(Verdict::Accept).unwrap(),
            ServerEvent::MessageComplete => {
                completes += 1;
                s.accept_message().unwrap();
                assert_eq!(s.pending(), None);
            }
            _ => {}
        }
    }
    assert_eq!(completes, 1);
    let out = String::from_utf8_lossy(s.output()).to_string();
    assert_eq!(out.matches("250 2.0.0 OK").count(), 2, "{out}");
    // Nothing waits any more: a further verdict is out of turn.
    assert!(s.accept_message().is_err());
}

#[test]
fn unsent_output_can_be_overwritten_in_place_but_not_beyond_it() {
    let mut s = Server::new(ServerConfig::default());
    let greeting = s.output().len();
    assert!(s.overwrite_output(0, b"220"));
    assert!(!s.overwrite_output(greeting - 1, b"xy"), "past the end");
    s.consume_output(4);
    assert!(s.overwrite_output(0, b"LOCAL"));
    assert!(s.output().starts_with(b"LOCAL"));
}

fn with_starttls() -> ServerConfig {
    ServerConfig {
        extensions: Extensions {
            starttls: true,
            ..Extensions::default()
        },
        ..ServerConfig::default()
    }
}

#[test]
fn starttls_is_refused_unless_offered() {
    let seen = smtp("EHLO c\r\nSTARTTLS\r\n");
    assert!(!seen.out.contains("250-STARTTLS"), "{}", seen.out);
    assert!(
        seen.out.ends_with("502 5.5.1 STARTTLS not available\r\n"),
        "{}",
        seen.out
    );
}

#[test]
fn commands_pipelined_after_starttls_are_dropped_not_run_inside_tls() {
    let mut s = Server::new(with_starttls());
    let mut seen = Seen::default();
    let mut body = Vec::new();
    let input = b"EHLO c\r\nSTARTTLS\r\nRSET\r\nMAIL FROM:<a@b.c>\r\n";
    assert_eq!(s.receive(input), input.len());
    pump(&mut s, &mut seen, &mut body);
    assert!(seen.out.contains("250-STARTTLS\r\n"), "{}", seen.out);
    assert!(
        seen.out.ends_with("220 2.0.0 Ready to start TLS\r\n"),
        "{}",
        seen.out
    );
    assert_eq!(seen.events, ["starttls"]);
    assert_eq!(s.pending(), Some(Pending::Tls));
    // What arrives before the handshake is taken and dropped.
    assert_eq!(s.receive(b"NOOP\r\n"), 6);
    s.tls_started().unwrap();
    assert!(s.is_tls());
    pump(&mut s, &mut seen, &mut body);
    assert!(
        seen.out.ends_with("Ready to start TLS\r\n"),
        "nothing ran: {}",
        seen.out
    );
    // The session starts over: a greeting is needed again, and STARTTLS
    // is neither offered nor accepted twice.
    let after = b"MAIL FROM:<a@b.c>\r\nEHLO c\r\nSTARTTLS\r\n";
    assert_eq!(s.receive(after), after.len());
    seen.out.clear();
    pump(&mut s, &mut seen, &mut body);
    let out = lines(&seen.out);
    assert_eq!(out[0], "503 5.5.1 Send EHLO or HELO first");
    assert!(!seen.out.contains("STARTTLS\r\n250"), "{}", seen.out);
    assert!(!out.contains(&"250-STARTTLS"), "{}", seen.out);
    assert_eq!(out.last(), Some(&"503 5.5.1 TLS already active"));
}

#[test]
fn a_refused_starttls_leaves_the_session_in_clear_text() {
    let mut s = Server::new(with_starttls());
    let input = b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n";
    assert_eq!(s.receive(input), input.len());
    while let Some(ev) = s.poll_event() {
        assert_eq!(ev, ServerEvent::StartTls);
        let reply = Reply::new(454, EnhancedCode::new(4, 7, 0), "TLS not available");
        s.starttls_verdict(Verdict::Reject(reply)).unwrap();
    }
    let out = String::from_utf8_lossy(s.output()).to_string();
    assert!(
        out.ends_with("454 4.7.0 TLS not available\r\n250 2.0.0 OK\r\n"),
        "{out}"
    );
    assert!(!s.is_tls());
}

#[test]
fn starttls_inside_a_transaction_is_refused() {
    let seen = drive(
        with_starttls(),
        &[b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nSTARTTLS\r\n"],
    );
    assert!(
        seen.out
            .ends_with("503 5.5.1 MAIL transaction in progress\r\n"),
        "{}",
        seen.out
    );
}

#[test]
fn require_tls_refuses_mail_until_tls_is_active() {
    let mut config = with_starttls();
    config.require_tls = true;
    let mut s = Server::new(config);
    let mut seen = Seen::default();
    let mut body = Vec::new();
    let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\nSTARTTLS\r\n";
    assert_eq!(s.receive(input), input.len());
    pump(&mut s, &mut seen, &mut body);
    assert!(
        seen.out
            .contains("530 5.7.0 Must issue a STARTTLS command first\r\n"),
        "{}",
        seen.out
    );
    s.tls_started().unwrap();
    let input = b"EHLO c\r\nMAIL FROM:<a@b.c>\r\n";
    assert_eq!(s.receive(input), input.len());
    pump(&mut s, &mut seen, &mut body);
    assert_eq!(seen.events, ["starttls", "mail <a@b.c>"]);
}

/// A server inside TLS that offers AUTH, after `input`.
fn auth_session(input: &[u8]) -> (Server, Seen) {
    let mut config = with_starttls();
    config.extensions.auth = true;
    let mut s = Server::new(config);
    let mut seen = Seen::default();
    let mut body = Vec::new();
    let start = b"EHLO c\r\nAUTH PLAIN AGNvbXBvc2VyAHJpZ2h0\r\nSTARTTLS\r\n";
    assert_eq!(s.receive(start), start.len());
    pump(&mut s, &mut seen, &mut body);
    s.tls_started().unwrap();
    assert_eq!(s.receive(input), input.len());
    pump(&mut s, &mut seen, &mut body);
    (s, seen)
}

#[test]
fn auth_is_offered_and_accepted_only_inside_tls() {
    let (s, seen) =
        auth_session(b"EHLO c\r\nAUTH PLAIN AGNvbXBvc2VyAHJpZ2h0\r\nMAIL FROM:<a@b.c>\r\n");
    let out = lines(&seen.out);
    assert!(
        !out[..4].contains(&"250-AUTH PLAIN LOGIN"),
        "not before TLS: {out:?}"
    );
    assert!(out.contains(&"538 5.7.11 Encryption required for requested authentication mechanism"));
    assert!(out.contains(&"250-AUTH PLAIN LOGIN"), "{out:?}");
    assert!(
        out.contains(&"235 2.7.0 Authentication successful"),
        "{out:?}"
    );
    assert_eq!(s.authenticated(), Some("composer"));
    assert_eq!(
        seen.events,
        ["starttls", "auth PLAIN composer", "mail <a@b.c>"]
    );
}

#[test]
fn auth_login_challenges_refusals_and_cancel() {
    // LOGIN with a wrong password, PLAIN cancelled, then LOGIN right.
    let (s, seen) = auth_session(
        b"EHLO c\r\nAUTH LOGIN\r\nY29tcG9zZXI=\r\nd3Jvbmc=\r\nAUTH PLAIN\r\n*\r\n\
          AUTH LOGIN Y29tcG9zZXI=\r\ncmlnaHQ=\r\nAUTH PLAIN AGNvbXBvc2VyAHJpZ2h0\r\n",
    );
    let out = lines(&seen.out);
    let ehlo_end = out.iter().rposition(|l| *l == "250 BINARYMIME").unwrap();
    assert!(out[..ehlo_end].contains(&"250-AUTH PLAIN LOGIN"));
    let after_tls = &out[ehlo_end + 1..];
    assert_eq!(
        after_tls,
        [
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "535 5.7.8 Authentication credentials invalid",
            "334 ",
            "501 5.0.0 Authentication cancelled",
            "334 UGFzc3dvcmQ6",
            "235 2.7.0 Authentication successful",
            "503 5.5.1 Already authenticated",
        ]
    );
    assert_eq!(s.authenticated(), Some("composer"));
}

/// Found by the `smtp_server` fuzz target: a body with a NUL octet that
/// is also over the size limit was refused as too large when it came in
/// pieces and for its NUL when it came whole (the scan meets the NUL
/// before the octets are counted). The size now wins however it is split.
#[test]
fn a_body_too_large_and_with_a_nul_is_refused_as_too_large_however_split() {
    let config = || ServerConfig {
        max_message_size: 8,
        ..ServerConfig::default()
    };
    let input: &[u8] = b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n\
        0123456789\r\nab\0c\r\n.\r\nNOOP\r\n";
    let whole = drive(config(), &[input]);
    assert_eq!(
        whole.events,
        ["mail <a@b.c>", "rcpt <d@e.f>", "aborted TooLarge"]
    );
    assert!(whole.out.contains("552 5.3.4"), "{}", whole.out);
    for cut in 1..input.len() {
        let split = drive(config(), &[&input[..cut], &input[cut..]]);
        assert_eq!(split.events, whole.events, "cut at {cut}");
        assert_eq!(split.out, whole.out, "cut at {cut}");
    }
}

#[test]
fn a_command_line_is_in_progress_from_its_first_octet_to_its_line_end() {
    let mut s = Server::new(ServerConfig::default());
    let mut seen = Seen::default();
    let mut body = Vec::new();
    pump(&mut s, &mut seen, &mut body);
    assert!(!s.command_in_progress());
    assert_eq!(s.receive(b"EH"), 2);
    pump(&mut s, &mut seen, &mut body);
    assert!(s.command_in_progress());
    assert_eq!(s.receive(b"LO x\r\n"), 6);
    pump(&mut s, &mut seen, &mut body);
    assert!(!s.command_in_progress());
    assert_eq!(s.receive(b"NOOP\r\nNO"), 8);
    pump(&mut s, &mut seen, &mut body);
    assert!(s.command_in_progress());
}
