//! Client and server state machines wired back to back: random envelopes and
//! bodies (lines starting with dots, bodies without a final CRLF) arrive
//! exactly, with DATA and with BDAT, over SMTP and LMTP.

use bytes::Bytes;
use proptest::prelude::*;
use volley_smtp::{
    AbortReason, Client, ClientConfig, ClientEvent, DeliveryStatus, EnhancedCode, Reply, Server,
    ServerConfig, ServerEvent, Transaction, TransactionOutcome, Verdict,
};

/// What the server side received per completed message.
#[derive(Debug, Default)]
struct Received {
    bodies: Vec<Vec<u8>>,
    recipients: Vec<Vec<String>>,
}

/// Runs `txs` through a client into a server; returns the client's outcomes
/// and what the server's "engine" saw. Recipients whose local part starts
/// with `reject` are refused at RCPT.
fn run(txs: Vec<Transaction>, lmtp: bool, chunking: bool) -> (Vec<TransactionOutcome>, Received) {
    // STARTTLS on both sides: the in-memory "handshake" below checks that
    // the session starts over cleanly inside TLS.
    let mut server = Server::new(ServerConfig {
        lmtp,
        extensions: volley_smtp::Extensions {
            starttls: true,
            ..Default::default()
        },
        ..ServerConfig::default()
    });
    let mut client = Client::new(ClientConfig {
        lmtp,
        chunking,
        starttls: true,
        ..ClientConfig::default()
    });
    for tx in txs {
        client.send(tx).unwrap();
    }
    client.quit();
    let mut outcomes = Vec::new();
    let mut got = Received::default();
    let mut body = Vec::new();
    let mut rcpts = Vec::new();
    let mut to_server: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        // Server -> client.
        let out = server.output().to_vec();
        server.consume_output(out.len());
        client.receive(&out);
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Ready { .. } | ClientEvent::StartTlsRefused { .. } => {}
                // No TLS in memory: the handshake is a no-op on both sides.
                ClientEvent::StartTls => client.tls_established(),
                ClientEvent::TransactionDone(o) => outcomes.push(o),
                ClientEvent::Closed => return (outcomes, got),
                ClientEvent::Failed { error, .. } => panic!("client failed: {error}"),
            }
        }
        // Client -> server.
        for seg in client.drain_output() {
            to_server.extend_from_slice(&seg);
        }
        let n = server.receive(&to_server);
        to_server.drain(..n);
        while let Some(ev) = server.poll_event() {
            match ev {
                // The client never sends AUTH.
                ServerEvent::Auth(_) => server.auth_verdict(Verdict::Accept).unwrap(),
                ServerEvent::StartTls => {
                    server.starttls_verdict(Verdict::Accept).unwrap();
                    server.tls_started().unwrap();
                }
                ServerEvent::Mail { .. } => server.mail_verdict(Verdict::Accept).unwrap(),
                ServerEvent::Rcpt { forward_path, .. } => {
                    let v = if forward_path.local_part().starts_with("reject") {
                        Verdict::Reject(Reply::new(550, EnhancedCode::new(5, 1, 1), "no such user"))
                    } else {
                        rcpts.push(forward_path.to_string());
                        Verdict::Accept
                    };
                    server.rcpt_verdict(v).unwrap();
                }
                ServerEvent::BodyChunk(b) => body.extend_from_slice(&b),
                ServerEvent::MessageComplete => {
                    server.accept_message().unwrap();
                    got.bodies.push(std::mem::take(&mut body));
                    got.recipients.push(std::mem::take(&mut rcpts));
                }
                // The client resets a transaction whose recipients all failed.
                ServerEvent::TransactionAborted(AbortReason::Reset) => {
                    body.clear();
                    rcpts.clear();
                }
                ServerEvent::TransactionAborted(why) => panic!("aborted: {why:?}"),
                ServerEvent::Quit => {}
                ServerEvent::Closed(why) => panic!("server closed: {why:?}"),
            }
        }
        if server.is_closed() && server.output().is_empty() && to_server.is_empty() {
            client.connection_closed();
        }
    }
    panic!("no progress after 10,000 exchanges");
}

/// What a body looks like after the client normalized it: a final CRLF
/// unless it is empty.
fn on_the_wire(body: &[u8]) -> Vec<u8> {
    let mut b = body.to_vec();
    if !b.is_empty() && !b.ends_with(b"\r\n") {
        b.extend_from_slice(b"\r\n");
    }
    b
}

fn envelope() -> impl Strategy<Value = (Vec<String>, Vec<u8>)> {
    let rcpt = prop_oneof![
        "[a-z]{1,8}@[a-z]{1,8}\\.example",
        "reject[a-z]{0,3}@[a-z]{1,8}\\.example",
    ];
    let lines = proptest::collection::vec("[.a-z ]{0,30}", 1..20);
    (proptest::collection::vec(rcpt, 1..5), lines, any::<bool>()).prop_map(
        |(rcpts, lines, crlf)| {
            let mut body = lines.join("\r\n");
            if crlf {
                body.push_str("\r\n");
            }
            (rcpts, body.into_bytes())
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_envelopes_and_bodies_arrive_exactly(
        envs in proptest::collection::vec(envelope(), 1..4),
        lmtp in any::<bool>(),
        chunking in any::<bool>(),
    ) {
        let txs: Vec<Transaction> = envs
            .iter()
            .map(|(rcpts, body)| Transaction {
                    body_type: None,
reverse_path: "sender@composer.example".into(),
                recipients: rcpts.clone(),
                body: Bytes::from(body.clone()),
            })
            .collect();
        let (outcomes, got) = run(txs, lmtp, chunking);
        prop_assert_eq!(outcomes.len(), envs.len());
        let mut delivered_msgs = 0;
        for ((rcpts, body), outcome) in envs.iter().zip(&outcomes) {
            let accepted: Vec<&String> = rcpts.iter().filter(|r| !r.starts_with("reject")).collect();
            for (r, o) in rcpts.iter().zip(&outcome.recipients) {
                let want = if r.starts_with("reject") {
                    DeliveryStatus::PermanentFailure
                } else {
                    DeliveryStatus::Delivered
                };
                prop_assert_eq!(o.status, want, "{}", r);
            }
            if !accepted.is_empty() {
                prop_assert_eq!(&got.bodies[delivered_msgs], &on_the_wire(body));
                prop_assert_eq!(
                    got.recipients[delivered_msgs].iter().collect::<Vec<_>>(),
                    accepted
                );
                delivered_msgs += 1;
            }
        }
        prop_assert_eq!(got.bodies.len(), delivered_msgs);
    }
}
