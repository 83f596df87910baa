//! The client driven with literal server bytes.

use super::*;

const EHLO_FULL: &[u8] = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000000\r\n\
    250-8BITMIME\r\n250-SMTPUTF8\r\n250 ENHANCEDSTATUSCODES\r\n";
const EHLO_PLAIN: &[u8] = b"250 mx.example\r\n";

fn config() -> ClientConfig {
    ClientConfig {
        helo_name: "volley.test".into(),
        ..ClientConfig::default()
    }
}

fn events(c: &mut Client) -> Vec<ClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn output(c: &mut Client) -> String {
    let bytes: Vec<u8> = c.take_output().into_iter().flatten().collect();
    String::from_utf8(bytes).unwrap()
}

/// A client past the greeting and EHLO, with `ehlo` as the EHLO reply.
fn ready_client(config: ClientConfig, ehlo: &[u8]) -> Client {
    let mut c = Client::new(config);
    assert_eq!(output(&mut c), "");
    c.receive(b"220 mx.example ESMTP\r\n");
    let hello = output(&mut c);
    assert!(hello == "EHLO volley.test\r\n" || hello == "LHLO volley.test\r\n");
    c.receive(ehlo);
    assert!(matches!(
        events(&mut c).as_slice(),
        [ClientEvent::Ready { .. }]
    ));
    assert!(c.is_idle());
    c
}

fn tx(recipients: &[&str], body: &'static [u8]) -> Transaction {
    Transaction {
        body_type: None,
        reverse_path: "bounce@volley.test".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        body: Bytes::from_static(body),
    }
}

fn done(events: Vec<ClientEvent>) -> TransactionOutcome {
    match <[ClientEvent; 1]>::try_from(events) {
        Ok([ClientEvent::TransactionDone(outcome)]) => outcome,
        Ok([other]) => panic!("expected TransactionDone, got {other:?}"),
        Err(events) => panic!("expected one event, got {events:?}"),
    }
}

fn failed(events: Vec<ClientEvent>) -> (ClientError, Vec<Transaction>) {
    match <[ClientEvent; 1]>::try_from(events) {
        Ok([ClientEvent::Failed { error, unfinished }]) => (error, unfinished),
        Ok([other]) => panic!("expected Failed, got {other:?}"),
        Err(events) => panic!("expected one event, got {events:?}"),
    }
}

fn statuses(outcome: &TransactionOutcome) -> Vec<(u16, DeliveryStatus)> {
    outcome
        .recipients
        .iter()
        .map(|r| (r.reply.code, r.status))
        .collect()
}

use DeliveryStatus::{Delivered, PermanentFailure, TransientFailure};

#[test]
fn greeting_then_ehlo_then_ready_with_capabilities() {
    let mut c = Client::new(config());
    assert_eq!(c.awaiting(), Some(Stage::Greeting));
    c.receive(b"220-mx.example ESMTP\r\n220 no UCE\r\n");
    assert_eq!(output(&mut c), "EHLO volley.test\r\n");
    assert_eq!(c.awaiting(), Some(Stage::Hello));
    c.receive(b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n");
    let caps = Capabilities {
        esmtp: true,
        pipelining: true,
        size: true,
        max_size: Some(1000),
        chunking: true,
        enhanced_status_codes: true,
        ..Capabilities::default()
    };
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Ready {
            capabilities: caps.clone()
        }]
    );
    assert_eq!(c.capabilities(), Some(&caps));
    assert_eq!(c.awaiting(), None);
    assert!(c.is_idle());
}

#[test]
fn greeting_554_fails_permanently_with_a_courtesy_quit() {
    let mut c = Client::new(config());
    c.send(tx(&["a@b.example"], b"x\r\n")).unwrap();
    c.receive(b"554 5.7.1 No service for you\r\n");
    let (error, unfinished) = failed(events(&mut c));
    assert!(matches!(&error, ClientError::GreetingRejected { reply } if reply.code == 554));
    assert!(error.is_permanent());
    assert_eq!(error.stage(), Stage::Greeting);
    assert_eq!(unfinished, vec![tx(&["a@b.example"], b"x\r\n")]);
    assert_eq!(output(&mut c), "QUIT\r\n");
    assert!(c.is_over());
    // Nothing more happens after the end.
    c.receive(b"221 bye\r\n");
    assert_eq!(events(&mut c), vec![]);
    assert!(matches!(
        c.send(tx(&["a@b.example"], b"")),
        Err(SendError::SessionOver(_))
    ));
}

#[test]
fn greeting_421_and_450_are_transient() {
    let mut c = Client::new(config());
    c.receive(b"421 4.3.2 busy\r\n");
    let (error, _) = failed(events(&mut c));
    assert!(matches!(
        error,
        ClientError::ServiceClosing {
            stage: Stage::Greeting,
            ..
        }
    ));
    assert!(error.is_transient());
    assert_eq!(output(&mut c), "", "no QUIT to a server that is closing");

    let mut c = Client::new(config());
    c.receive(b"450 busy\r\n");
    let (error, _) = failed(events(&mut c));
    assert!(matches!(error, ClientError::GreetingRejected { .. }));
    assert!(error.is_transient());
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let mut c = Client::new(config());
    c.receive(b"220 old.example\r\n");
    assert_eq!(output(&mut c), "EHLO volley.test\r\n");
    c.receive(b"502 command not implemented\r\n");
    assert_eq!(events(&mut c), vec![]);
    assert_eq!(output(&mut c), "HELO volley.test\r\n");
    c.receive(b"250 old.example\r\n");
    assert_eq!(
        events(&mut c),
        vec![ClientEvent::Ready {
            capabilities: Capabilities::default()
        }]
    );
    // Without PIPELINING, commands go one at a time.
    c.send(tx(&["a@b.example"], b"hi\r\n")).unwrap();
    assert_eq!(output(&mut c), "MAIL FROM:<bounce@volley.test>\r\n");
}

#[test]
fn helo_refused_too_ends_the_session() {
    let mut c = Client::new(config());
    c.receive(b"220 x\r\n500 what\r\n550 go away\r\n");
    let (error, _) = failed(events(&mut c));
    assert!(matches!(&error, ClientError::HelloRejected { reply } if reply.code == 550));
    assert!(error.is_permanent());
}

#[test]
fn ehlo_4xx_is_not_a_reason_for_helo() {
    let mut c = Client::new(config());
    c.receive(b"220 x\r\n");
    output(&mut c);
    c.receive(b"451 4.3.0 later\r\n");
    let (error, _) = failed(events(&mut c));
    assert!(matches!(error, ClientError::HelloRejected { .. }));
    assert!(error.is_transient());
    assert_eq!(output(&mut c), "QUIT\r\n");
}

#[test]
fn pipelined_transaction_sends_envelope_in_one_flight_then_the_body() {
    let mut c = ready_client(config(), EHLO_FULL);
    let body = Bytes::from_static(b"Subject: t\r\n\r\n.dot\r\nend");
    let t = Transaction {
        body_type: None,
        body: body.clone(),
        ..tx(&["a@b.example", "c@b.example"], b"")
    };
    c.send(t).unwrap();
    assert!(!c.is_idle());
    let flight = c.take_output();
    assert_eq!(flight.len(), 1, "one segment for the whole envelope");
    assert_eq!(
        &flight[0][..],
        b"MAIL FROM:<bounce@volley.test> SIZE=23\r\nRCPT TO:<a@b.example>\r\n\
          RCPT TO:<c@b.example>\r\nDATA\r\n"
    );
    assert_eq!(c.awaiting(), Some(Stage::Mail));
    c.receive(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n");
    assert_eq!(c.awaiting(), Some(Stage::Data));
    assert_eq!(output(&mut c), "");
    c.receive(b"354 go ahead\r\n");
    let body_out = c.take_output();
    assert_eq!(
        body_out.iter().flatten().copied().collect::<Vec<u8>>(),
        b"Subject: t\r\n\r\n..dot\r\nend\r\n.\r\n"
    );
    assert_eq!(
        body_out[0].as_ptr(),
        body.as_ptr(),
        "body is sliced, not copied"
    );
    assert_eq!(c.awaiting(), Some(Stage::Body));
    c.receive(b"250 2.0.0 queued as X\r\n");
    let outcome = done(events(&mut c));
    assert_eq!(outcome.reverse_path, "bounce@volley.test");
    assert_eq!(outcome.delivered(), 2);
    assert_eq!(outcome.recipients[1].recipient, "c@b.example");
    assert_eq!(
        outcome.recipients[0].reply,
        Reply::new(250, EnhancedCode::new(2, 0, 0), "queued as X")
    );
    assert!(c.is_idle());
    assert_eq!(output(&mut c), "");
}

#[test]
fn per_recipient_mix_of_250_450_550() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["ok@x", "later@x", "never@x", "ok2@x"], b"m\r\n"))
        .unwrap();
    output(&mut c);
    c.receive(
        b"250 ok\r\n250 ok\r\n450 4.2.1 mailbox busy\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n",
    );
    assert_eq!(output(&mut c), "m\r\n.\r\n");
    c.receive(b"250 2.0.0 done\r\n");
    let outcome = done(events(&mut c));
    assert_eq!(
        statuses(&outcome),
        vec![
            (250, Delivered),
            (450, TransientFailure),
            (550, PermanentFailure),
            (250, Delivered)
        ]
    );
    assert_eq!(
        outcome.recipients[2].reply.enhanced,
        Some(EnhancedCode::new(5, 1, 1))
    );
    assert_eq!(
        (
            outcome.delivered(),
            outcome.transient_failures(),
            outcome.permanent_failures()
        ),
        (2, 1, 1)
    );
    // The transaction completed: no RSET.
    assert_eq!(output(&mut c), "");
    assert!(c.is_idle());
}

#[test]
fn mail_4xx_pipelined_defers_every_recipient_without_rset() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x", "b@x"], b"m\r\n")).unwrap();
    c.send(tx(&["c@x"], b"n\r\n")).unwrap();
    output(&mut c);
    c.receive(b"451 4.7.1 greylisted\r\n503 5.5.1 no MAIL\r\n503 5.5.1 no MAIL\r\n");
    assert_eq!(events(&mut c), vec![]);
    c.receive(b"503 5.5.1 no valid recipients\r\n");
    let outcome = done(events(&mut c));
    assert_eq!(
        statuses(&outcome),
        vec![(451, TransientFailure), (451, TransientFailure)]
    );
    // No RSET (MAIL never opened a transaction); the next one starts.
    let next = output(&mut c);
    assert!(next.starts_with("MAIL FROM:"), "{next}");
}

#[test]
fn mail_5xx_lock_step_sends_no_rcpt() {
    let mut c = ready_client(config(), EHLO_PLAIN);
    c.send(tx(&["a@x", "b@x"], b"m\r\n")).unwrap();
    assert_eq!(output(&mut c), "MAIL FROM:<bounce@volley.test>\r\n");
    c.receive(b"553 5.1.8 bad sender\r\n");
    let outcome = done(events(&mut c));
    assert_eq!(
        statuses(&outcome),
        vec![(553, PermanentFailure), (553, PermanentFailure)]
    );
    assert_eq!(output(&mut c), "");
    assert!(c.is_idle());
}

#[test]
fn data_5xx_fails_accepted_recipients_and_rsets() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x", "b@x"], b"m\r\n")).unwrap();
    c.send(tx(&["c@x"], b"n\r\n")).unwrap();
    output(&mut c);
    c.receive(b"250 ok\r\n250 ok\r\n550 no\r\n554 5.6.0 content refused\r\n");
    let outcome = done(events(&mut c));
    assert_eq!(
        statuses(&outcome),
        vec![(554, PermanentFailure), (550, PermanentFailure)]
    );
    assert_eq!(output(&mut c), "RSET\r\n");
    assert_eq!(c.awaiting(), Some(Stage::Rset));
    c.receive(b"250 2.0.0 reset\r\n");
    assert!(output(&mut c).starts_with("MAIL FROM:<bounce@volley.test>"));
}

#[test]
fn end_of_data_4xx_defers_without_rset() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x"], b"m\r\n")).unwrap();
    c.receive(b"250 ok\r\n250 ok\r\n354 go\r\n451 4.3.0 disk full\r\n");
    assert_eq!(
        statuses(&done(events(&mut c))),
        vec![(451, TransientFailure)]
    );
    assert!(!output(&mut c).contains("RSET"));
    assert!(c.is_idle());
}

#[test]
fn pipelined_data_354_after_all_recipients_refused_gets_an_empty_body() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x"], b"secret body\r\n")).unwrap();
    output(&mut c);
    c.receive(b"250 ok\r\n550 no\r\n354 go\r\n");
    assert_eq!(
        output(&mut c),
        ".\r\n",
        "RFC 2920 3.1: the body is not sent"
    );
    assert_eq!(events(&mut c), vec![]);
    c.receive(b"554 no valid recipients\r\n");
    assert_eq!(
        statuses(&done(events(&mut c))),
        vec![(550, PermanentFailure)]
    );
    assert_eq!(output(&mut c), "");
    assert!(c.is_idle());
}

#[test]
fn lock_step_with_no_recipient_accepted_skips_data_and_rsets() {
    let mut c = ready_client(config(), EHLO_PLAIN);
    c.send(tx(&["a@x", "b@x"], b"m\r\n")).unwrap();
    assert_eq!(output(&mut c), "MAIL FROM:<bounce@volley.test>\r\n");
    c.receive(b"250 ok\r\n");
    assert_eq!(output(&mut c), "RCPT TO:<a@x>\r\n");
    c.receive(b"550 no\r\n");
    assert_eq!(output(&mut c), "RCPT TO:<b@x>\r\n");
    c.receive(b"450 later\r\n");
    assert_eq!(
        statuses(&done(events(&mut c))),
        vec![(550, PermanentFailure), (450, TransientFailure)]
    );
    assert_eq!(output(&mut c), "RSET\r\n");
    c.receive(b"250 ok\r\n");
    assert!(c.is_idle());
}

#[test]
fn lock_step_full_transaction() {
    let mut c = ready_client(config(), EHLO_PLAIN);
    c.send(tx(&["a@x", "b@x"], b"..\r\n")).unwrap();
    let mut wire = String::new();
    for reply in [
        &b"250 ok\r\n"[..],
        b"250 ok\r\n",
        b"550 no\r\n",
        b"354 go\r\n",
        b"250 done\r\n",
    ] {
        wire += &output(&mut c);
        c.receive(reply);
    }
    assert_eq!(
        wire,
        "MAIL FROM:<bounce@volley.test>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n...\r\n.\r\n"
    );
    assert_eq!(
        statuses(&done(events(&mut c))),
        vec![(250, Delivered), (550, PermanentFailure)]
    );
}

#[test]
fn bdat_when_chunking_is_offered() {
    let ehlo = b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
    let mut c = ready_client(config(), ehlo);
    let body = Bytes::from_static(b".a\r\nb");
    c.send(Transaction {
        body_type: None,
        body: body.clone(),
        ..tx(&["a@x"], b"")
    })
    .unwrap();
    // The body goes out before any reply: its fate is unknown from now.
    assert!(c.body_handed_out());
    assert_eq!(c.awaiting(), Some(Stage::Mail));
    let out = c.take_output();
    assert_eq!(
        &out[0][..],
        b"MAIL FROM:<bounce@volley.test>\r\nRCPT TO:<a@x>\r\nBDAT 7 LAST\r\n"
    );
    assert_eq!(out[1].as_ptr(), body.as_ptr());
    let rest: Vec<u8> = out.iter().skip(1).flatten().copied().collect();
    assert_eq!(rest, b".a\r\nb\r\n", "no stuffing, final CRLF added");
    c.receive(b"250 ok\r\n250 ok\r\n250 2.0.0 got it\r\n");
    assert_eq!(statuses(&done(events(&mut c))), vec![(250, Delivered)]);
    assert!(c.is_idle());
    assert!(!c.body_handed_out());
}

#[test]
fn bdat_refused_rsets() {
    let ehlo = b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
    let mut c = ready_client(config(), ehlo);
    c.send(tx(&["a@x"], b"x\r\n")).unwrap();
    output(&mut c);
    c.receive(b"250 ok\r\n250 ok\r\n552 5.3.4 too big\r\n");
    assert_eq!(
        statuses(&done(events(&mut c))),
        vec![(552, PermanentFailure)]
    );
    assert_eq!(output(&mut c), "RSET\r\n");
}

#[test]
fn bdat_lock_step_without_pipelining() {
    let ehlo = b"250-mx\r\n250 CHUNKING\r\n";
    let mut c = ready_client(config(), ehlo);
    c.send(tx(&["a@x"], b"x\r\n")).unwrap();
    assert_eq!(output(&mut c), "MAIL FROM:<bounce@volley.test>\r\n");
    c.receive(b"250 ok\r\n");
    assert_eq!(output(&mut c), "RCPT TO:<a@x>\r\n");
    c.receive(b"250 ok\r\n");
    assert_eq!(output(&mut c), "BDAT 3 LAST\r\nx\r\n");
    c.receive(b"250 ok\r\n");
    assert_eq!(statuses(&done(events(&mut c))), vec![(250, Delivered)]);
}

#[test]
fn preferences_turn_off_pipelining_and_chunking() {
    let ehlo = b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n";
    let cfg = ClientConfig {
        pipelining: false,
        chunking: false,
        ..config()
    };
    let mut c = ready_client(cfg, ehlo);
    c.send(tx(&["a@x"], b"x\r\n")).unwrap();
    assert_eq!(output(&mut c), "MAIL FROM:<bounce@volley.test>\r\n");
    c.receive(b"250 ok\r\n250 ok\r\n");
    assert_eq!(output(&mut c), "RCPT TO:<a@x>\r\nDATA\r\n");
}

#[test]
fn several_transactions_then_quit() {
    let mut c = Client::new(config());
    // Queued before the greeting: they start once the session is ready.
    c.send(tx(&["a@x"], b"one\r\n")).unwrap();
    c.send(tx(&["b@x"], b"two\r\n")).unwrap();
    c.send(tx(&["c@x"], b"three\r\n")).unwrap();
    c.quit();
    assert!(matches!(
        c.send(tx(&["d@x"], b"")),
        Err(SendError::SessionOver(_))
    ));
    c.receive(b"220 mx\r\n");
    assert_eq!(output(&mut c), "EHLO volley.test\r\n");
    c.receive(EHLO_PLAIN);
    assert!(matches!(events(&mut c)[..], [ClientEvent::Ready { .. }]));
    let mut wire = String::new();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        for reply in [
            &b"250 ok\r\n"[..],
            b"250 ok\r\n",
            b"354 go\r\n",
            b"250 ok\r\n",
        ] {
            wire += &output(&mut c);
            c.receive(reply);
        }
        outcomes.push(done(events(&mut c)));
    }
    assert_eq!(output(&mut c), "QUIT\r\n");
    assert_eq!(c.awaiting(), Some(Stage::Quit));
    c.receive(b"221 2.0.0 bye\r\n");
    assert_eq!(events(&mut c), vec![ClientEvent::Closed]);
    assert!(c.is_over());
    assert_eq!(wire.matches("MAIL FROM:").count(), 3);
    assert!(!wire.contains("RSET"), "no RSET between good transactions");
    assert!(wire.contains("one\r\n.\r\n") && wire.contains("three\r\n.\r\n"));
    let rcpts: Vec<&str> = outcomes
        .iter()
        .map(|o| o.recipients[0].recipient.as_str())
        .collect();
    assert_eq!(rcpts, ["a@x", "b@x", "c@x"]);
}

#[test]
fn server_closing_after_quit_is_a_clean_close() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.quit();
    assert_eq!(output(&mut c), "QUIT\r\n");
    c.connection_closed();
    assert_eq!(events(&mut c), vec![ClientEvent::Closed]);
}

#[test]
fn lmtp_gets_one_reply_per_accepted_recipient() {
    let cfg = ClientConfig {
        lmtp: true,
        ..config()
    };
    let mut c = ready_client(
        cfg,
        b"250-lmtp.example\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
    );
    c.send(tx(&["a@x", "b@x", "c@x", "d@x"], b"m\r\n")).unwrap();
    assert_eq!(
        output(&mut c),
        "MAIL FROM:<bounce@volley.test>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\n\
         RCPT TO:<c@x>\r\nRCPT TO:<d@x>\r\nDATA\r\n"
    );
    c.receive(b"250 ok\r\n250 ok\r\n550 5.1.1 no\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(output(&mut c), "m\r\n.\r\n");
    c.receive(b"250 2.0.0 a delivered\r\n452 4.2.2 c over quota\r\n");
    assert_eq!(events(&mut c), vec![]);
    c.receive(b"552 5.2.2 d over quota for good\r\n");
    let outcome = done(events(&mut c));
    assert_eq!(
        statuses(&outcome),
        vec![
            (250, Delivered),
            (550, PermanentFailure),
            (452, TransientFailure),
            (552, PermanentFailure)
        ]
    );
    assert_eq!(outcome.recipients[0].reply.text(), "a delivered");
    assert!(c.is_idle());
}

#[test]
fn lmtp_with_bdat() {
    let cfg = ClientConfig {
        lmtp: true,
        ..config()
    };
    let mut c = ready_client(cfg, b"250-lmtp\r\n250-PIPELINING\r\n250 CHUNKING\r\n");
    c.send(tx(&["a@x", "b@x"], b"m\r\n")).unwrap();
    assert!(output(&mut c).ends_with("BDAT 3 LAST\r\nm\r\n"));
    c.receive(b"250 ok\r\n250 ok\r\n250 ok\r\n250 a\r\n450 b\r\n");
    assert_eq!(
        statuses(&done(events(&mut c))),
        vec![(250, Delivered), (450, TransientFailure)]
    );
}

#[test]
fn lhlo_refused_has_no_helo_fallback() {
    let cfg = ClientConfig {
        lmtp: true,
        ..config()
    };
    let mut c = Client::new(cfg);
    c.receive(b"220 lmtp\r\n");
    assert_eq!(output(&mut c), "LHLO volley.test\r\n");
    c.receive(b"500 unknown\r\n");
    let (error, _) = failed(events(&mut c));
    assert!(matches!(error, ClientError::HelloRejected { .. }));
}

#[test]
fn garbage_from_the_server_is_a_typed_failure_returning_the_work() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x"], b"m\r\n")).unwrap();
    c.send(tx(&["b@x"], b"n\r\n")).unwrap();
    c.receive(b"250 ok\r\nHTTP/1.1 400 Bad Request\r\n");
    let (error, unfinished) = failed(events(&mut c));
    assert!(matches!(
        error,
        ClientError::MalformedReply {
            stage: Stage::Rcpt,
            ..
        }
    ));
    assert!(error.is_transient());
    assert_eq!(unfinished.len(), 2);
    assert_eq!(unfinished[0].recipients, ["a@x"]);
    assert_eq!(unfinished[1].recipients, ["b@x"]);
    assert_eq!(output(&mut c), "", "nothing more is written");
}

#[test]
fn replies_out_of_sequence_are_typed_failures() {
    // A reply when none is due.
    let mut c = ready_client(config(), EHLO_FULL);
    c.receive(b"250 surprise\r\n");
    let (error, _) = failed(events(&mut c));
    assert!(matches!(
        error,
        ClientError::UnexpectedReply {
            stage: Stage::Idle,
            ..
        }
    ));

    // 354 to RCPT, 250 to DATA, 354 to the end of data, 354 as greeting.
    for (replies, stage) in [
        (&b"250 ok\r\n354 what\r\n"[..], Stage::Rcpt),
        (b"250 ok\r\n250 ok\r\n250 what\r\n", Stage::Data),
        (b"250 ok\r\n250 ok\r\n354 go\r\n354 again\r\n", Stage::Body),
    ] {
        let mut c = ready_client(config(), EHLO_FULL);
        c.send(tx(&["a@x"], b"m\r\n")).unwrap();
        c.receive(replies);
        let (error, unfinished) = failed(events(&mut c));
        assert_eq!(error.stage(), stage, "{error}");
        assert!(matches!(error, ClientError::UnexpectedReply { .. }));
        assert_eq!(unfinished.len(), 1);
    }
    let mut c = Client::new(config());
    c.receive(b"354 hi\r\n");
    assert!(matches!(
        failed(events(&mut c)).0,
        ClientError::UnexpectedReply {
            stage: Stage::Greeting,
            ..
        }
    ));
}

#[test]
fn overlong_reply_line_is_a_failure() {
    let cfg = ClientConfig {
        max_reply_line: 100,
        ..config()
    };
    let mut c = Client::new(cfg);
    c.receive(&[b'2'; 200]);
    let (error, _) = failed(events(&mut c));
    assert!(matches!(
        error,
        ClientError::MalformedReply {
            source: crate::ReplyError::LineTooLong { limit: 100 },
            ..
        }
    ));
}

#[test]
fn service_closing_mid_transaction_returns_it() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x"], b"m\r\n")).unwrap();
    c.receive(b"250 ok\r\n421 4.4.2 timeout\r\n");
    let (error, unfinished) = failed(events(&mut c));
    assert!(matches!(
        error,
        ClientError::ServiceClosing {
            stage: Stage::Rcpt,
            ..
        }
    ));
    assert!(error.is_transient());
    assert_eq!(unfinished.len(), 1);
}

#[test]
fn connection_lost_or_timed_out_mid_transaction() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x"], b"m\r\n")).unwrap();
    // With DATA the body waits for the 354.
    assert!(!c.body_handed_out());
    c.receive(b"250 ok\r\n250 ok\r\n354 go\r\n");
    assert_eq!(c.awaiting(), Some(Stage::Body));
    assert!(c.body_handed_out());
    c.connection_closed();
    assert!(!c.body_handed_out());
    let (error, unfinished) = failed(events(&mut c));
    assert_eq!(error, ClientError::ConnectionClosed { stage: Stage::Body });
    assert_eq!(unfinished.len(), 1);

    let mut c = Client::new(config());
    c.timed_out();
    let (error, _) = failed(events(&mut c));
    assert_eq!(
        error,
        ClientError::TimedOut {
            stage: Stage::Greeting
        }
    );
    assert_eq!(c.awaiting(), None);
}

#[test]
fn rset_refused_ends_the_session() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["a@x"], b"m\r\n")).unwrap();
    c.receive(b"250 ok\r\n550 no\r\n554 no recipients\r\n");
    done(events(&mut c));
    c.receive(b"500 what\r\n");
    assert!(matches!(
        failed(events(&mut c)).0,
        ClientError::RsetRejected { .. }
    ));
}

#[test]
fn addresses_that_would_inject_commands_are_refused() {
    let mut c = ready_client(config(), EHLO_FULL);
    let err = c
        .send(tx(&["a@x>\r\nRCPT TO:<evil@y"], b"m\r\n"))
        .unwrap_err();
    assert!(matches!(err, SendError::InvalidAddress { .. }));
    assert_eq!(err.into_transaction().body, Bytes::from_static(b"m\r\n"));
    assert_eq!(output(&mut c), "");
    assert!(c.is_idle());
    // A quoted local part with a space is fine.
    c.send(tx(&["\"john doe\"@x"], b"m\r\n")).unwrap();
    assert!(output(&mut c).contains("RCPT TO:<\"john doe\"@x>\r\n"));
}

#[test]
fn smtputf8_is_asked_for_when_offered_and_needed() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&["jörg@bücher.example"], b"m\r\n")).unwrap();
    assert!(output(&mut c).starts_with("MAIL FROM:<bounce@volley.test> SIZE=3 SMTPUTF8\r\n"));
}

#[test]
fn transaction_without_recipients_completes_at_once() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(tx(&[], b"m\r\n")).unwrap();
    assert_eq!(done(events(&mut c)).recipients, vec![]);
    assert_eq!(output(&mut c), "");
    assert!(c.is_idle());
}

/// A whole pipelined session as the server wrote it, and the transactions
/// the client had to send.
fn scripted_session() -> (Vec<Transaction>, Vec<u8>) {
    let txs = vec![
        tx(&["a@x", "b@x", "c@x"], b"first\r\n"),
        tx(&["d@x"], b".second"),
        tx(&["e@x"], b"third\r\n"),
    ];
    let server = [
        &b"220-mx.example ESMTP\r\n220 hi\r\n"[..],
        EHLO_FULL,
        // 1: mixed recipients, delivered.
        b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n451 4.7.1 later\r\n550 5.1.1 no\r\n354 go\r\n",
        b"250-2.0.0 queued\r\n250 2.0.0 as 1\r\n",
        // 2: refused at DATA, RSET.
        b"250 ok\r\n250 ok\r\n554 5.7.1 no thanks\r\n250 reset\r\n",
        // 3: delivered, then QUIT.
        b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n",
    ]
    .concat();
    (txs, server)
}

fn run_split(split: usize) -> (Vec<ClientEvent>, String) {
    let (txs, server) = scripted_session();
    let mut c = Client::new(config());
    for t in txs {
        c.send(t).unwrap();
    }
    c.quit();
    let mut all_events = Vec::new();
    let mut wire = String::new();
    for part in [&server[..split], &server[split..]] {
        c.receive(part);
        all_events.extend(events(&mut c));
        wire += &output(&mut c);
    }
    (all_events, wire)
}

#[test]
fn replies_split_at_every_byte_boundary_give_the_same_session() {
    let (events, wire) = run_split(0);
    let outcomes: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::TransactionDone(o) => Some(statuses(o)),
            _ => None,
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            vec![
                (250, Delivered),
                (451, TransientFailure),
                (550, PermanentFailure)
            ],
            vec![(554, PermanentFailure)],
            vec![(250, Delivered)],
        ]
    );
    assert!(matches!(events.first(), Some(ClientEvent::Ready { .. })));
    assert_eq!(events.last(), Some(&ClientEvent::Closed));
    assert_eq!(wire.matches("RSET\r\n").count(), 1);
    assert!(wire.ends_with("third\r\n.\r\nQUIT\r\n"));
    let (_, server) = scripted_session();
    for split in 1..=server.len() {
        assert_eq!(
            run_split(split),
            (events.clone(), wire.clone()),
            "split at {split}"
        );
    }
}

#[test]
fn one_byte_at_a_time() {
    let (txs, server) = scripted_session();
    let (want_events, want_wire) = run_split(0);
    let mut c = Client::new(config());
    for t in txs {
        c.send(t).unwrap();
    }
    c.quit();
    let mut got_events = Vec::new();
    let mut wire = String::new();
    for b in &server {
        c.receive(std::slice::from_ref(b));
        got_events.extend(events(&mut c));
        wire += &output(&mut c);
    }
    assert_eq!((got_events, wire), (want_events, want_wire));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Plausible reply lines, garbage included, so random sequences reach
    /// deep into the state machine.
    fn reply_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"220 mx\r\n".to_vec()),
            Just(b"250 2.0.0 ok\r\n".to_vec()),
            Just(b"250-mx\r\n250-PIPELINING\r\n250 CHUNKING\r\n".to_vec()),
            Just(b"250-mx\r\n".to_vec()),
            Just(b"354 go\r\n".to_vec()),
            Just(b"450 4.2.1 later\r\n".to_vec()),
            Just(b"550 5.1.1 no\r\n".to_vec()),
            Just(b"502 no\r\n".to_vec()),
            Just(b"421 bye\r\n".to_vec()),
            Just(b"221 bye\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    /// Runs a session over `server` bytes cut into `cuts`; checks that each
    /// transaction is accounted for exactly once and nothing follows the end.
    fn check_session(
        lmtp: bool,
        server: &[u8],
        cut: usize,
        quit: bool,
    ) -> Result<(), TestCaseError> {
        let mut c = Client::new(ClientConfig { lmtp, ..config() });
        c.send(tx(&["a@x", "b@x"], b".x\r\n")).unwrap();
        c.send(tx(&["c@x"], b"y")).unwrap();
        if quit {
            c.quit();
        }
        let mut done_count = 0;
        let mut end: Option<Option<usize>> = None;
        let cut = cut.min(server.len());
        for part in [&server[..cut], &server[cut..]] {
            c.receive(part);
            drop(c.take_output());
            while let Some(event) = c.poll_event() {
                prop_assert!(end.is_none(), "event after the end: {:?}", event);
                match event {
                    ClientEvent::Ready { .. }
                    | ClientEvent::StartTls
                    | ClientEvent::StartTlsRefused { .. } => {}
                    ClientEvent::TransactionDone(o) => {
                        prop_assert!(o.recipients.len() <= 2);
                        done_count += 1;
                    }
                    ClientEvent::Closed => end = Some(None),
                    ClientEvent::Failed { unfinished, .. } => end = Some(Some(unfinished.len())),
                }
            }
        }
        prop_assert_eq!(end.is_some(), c.is_over());
        match end {
            // Unended: some transactions may still be in flight.
            None => prop_assert!(done_count <= 2),
            // QUIT goes out only after every transaction is done.
            Some(None) => prop_assert_eq!(done_count, 2),
            // A failure hands back exactly the transactions not reported.
            Some(Some(returned)) => prop_assert_eq!(done_count + returned, 2),
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(server in proptest::collection::vec(any::<u8>(), 0..400), cut in 0usize..400, lmtp: bool) {
            check_session(lmtp, &server, cut, true)?;
        }

        #[test]
        fn plausible_reply_sequences_keep_the_books(lines in proptest::collection::vec(reply_line(), 0..24), cut in 0usize..400, lmtp: bool, quit: bool) {
            check_session(lmtp, &lines.concat(), cut, quit)?;
        }
    }
}

fn typed(body_type: BodyType, body: &'static [u8]) -> Transaction {
    Transaction {
        body_type: Some(body_type),
        ..tx(&["a@b.example"], body)
    }
}

#[test]
fn body_8bitmime_is_passed_on_to_a_server_that_offers_it() {
    let mut c = ready_client(config(), EHLO_FULL);
    c.send(typed(BodyType::EightBitMime, b"caf\xc3\xa9\r\n"))
        .unwrap();
    let out = output(&mut c);
    assert!(
        out.starts_with("MAIL FROM:<bounce@volley.test> SIZE=7 BODY=8BITMIME\r\n"),
        "{out}"
    );
}

#[test]
fn eight_bit_content_for_a_server_without_8bitmime_fails_at_once_unsent() {
    let mut c = ready_client(config(), EHLO_PLAIN);
    c.send(typed(BodyType::EightBitMime, b"caf\xc3\xa9\r\n"))
        .unwrap();
    assert_eq!(output(&mut c), "", "nothing reaches the server");
    let outcome = done(events(&mut c));
    assert_eq!(statuses(&outcome), [(554, PermanentFailure)]);
    assert_eq!(
        outcome.recipients[0].reply.enhanced,
        Some(EnhancedCode::new(5, 6, 3))
    );
    assert!(c.is_idle(), "the session goes on");
}

#[test]
fn binary_content_goes_unchanged_over_bdat_to_a_binarymime_server() {
    let ehlo = b"250-mx.example\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME\r\n";
    let mut c = ready_client(config(), ehlo);
    // No final CRLF, a NUL and a bare LF: sent exactly as they are.
    c.send(typed(BodyType::BinaryMime, b"\x00ab\ncd\xff"))
        .unwrap();
    let bytes: Vec<u8> = c.take_output().into_iter().flatten().collect();
    let expected: &[u8] = b"MAIL FROM:<bounce@volley.test> BODY=BINARYMIME\r\n\
        RCPT TO:<a@b.example>\r\nBDAT 7 LAST\r\n\x00ab\ncd\xff";
    assert_eq!(bytes, expected, "{}", String::from_utf8_lossy(&bytes));
}

#[test]
fn binary_content_for_a_server_without_binarymime_fails_at_once_unsent() {
    for ehlo in [
        &b"250-mx.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n"[..],
        b"250-mx.example\r\n250-PIPELINING\r\n250 BINARYMIME\r\n",
        EHLO_FULL,
    ] {
        let mut c = ready_client(config(), ehlo);
        c.send(typed(BodyType::BinaryMime, b"\x00\xff")).unwrap();
        assert_eq!(output(&mut c), "", "nothing reaches the server");
        let outcome = done(events(&mut c));
        assert_eq!(statuses(&outcome), [(554, PermanentFailure)]);
        assert!(outcome.recipients[0].reply.text().contains("BINARYMIME"));
    }
}

const EHLO_TLS: &[u8] = b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n";

fn tls_config() -> ClientConfig {
    ClientConfig {
        starttls: true,
        ..config()
    }
}

#[test]
fn starttls_waits_for_the_handshake_then_greets_again() {
    let mut c = Client::new(tls_config());
    c.receive(b"220 mx.example ESMTP\r\n");
    assert_eq!(output(&mut c), "EHLO volley.test\r\n");
    c.receive(EHLO_TLS);
    assert_eq!(output(&mut c), "STARTTLS\r\n");
    assert!(events(&mut c).is_empty(), "not ready before TLS");
    c.receive(b"220 2.0.0 Ready to start TLS\r\n");
    assert_eq!(events(&mut c), [ClientEvent::StartTls]);
    assert_eq!(output(&mut c), "", "nothing is written in clear after 220");
    assert!(!c.is_idle());
    c.tls_established();
    assert!(c.is_tls());
    assert_eq!(output(&mut c), "EHLO volley.test\r\n");
    c.receive(b"250-mx.example\r\n250 PIPELINING\r\n");
    match events(&mut c).as_slice() {
        [ClientEvent::Ready { capabilities }] => {
            assert!(capabilities.pipelining && !capabilities.starttls)
        }
        other => panic!("{other:?}"),
    }
    assert!(c.is_idle());
}

#[test]
fn a_refused_starttls_goes_on_in_clear_text_with_what_was_offered() {
    let mut c = Client::new(tls_config());
    c.receive(b"220 mx.example ESMTP\r\n");
    let _ = output(&mut c);
    c.receive(EHLO_TLS);
    let _ = output(&mut c);
    c.receive(b"454 4.7.0 TLS not available due to local problem\r\n");
    match events(&mut c).as_slice() {
        [
            ClientEvent::StartTlsRefused { reply },
            ClientEvent::Ready { capabilities },
        ] => {
            assert_eq!(reply.code, 454);
            assert!(capabilities.pipelining && capabilities.starttls);
        }
        other => panic!("{other:?}"),
    }
    assert!(!c.is_tls());
    assert!(c.is_idle());
}

#[test]
fn starttls_is_not_sent_unless_configured_or_offered() {
    // Offered, not configured.
    ready_client(config(), EHLO_TLS);
    // Configured, not offered.
    ready_client(tls_config(), EHLO_FULL);
}

#[test]
fn a_connection_lost_during_the_handshake_fails_at_the_starttls_stage() {
    let mut c = Client::new(tls_config());
    c.receive(b"220 mx.example ESMTP\r\n");
    c.receive(EHLO_TLS);
    c.receive(b"220 go ahead\r\n");
    let _ = events(&mut c);
    c.connection_closed();
    let (error, unfinished) = failed(events(&mut c));
    assert_eq!(error.stage(), Stage::StartTls);
    assert!(unfinished.is_empty());
}
