//! Server-side throughput: a pipelined stream of one-recipient 2 KB messages
//! through the SMTP state machine on one core, verdicts answered at once and
//! each body assembled with one copy, as the engine does. Prints messages/s.
//!
//! `cargo bench -p volley-smtp --bench server [-- MESSAGES ROUNDS]`

use std::time::Instant;

use volley_smtp::{Server, ServerConfig, ServerEvent, Verdict};

/// A 2048-octet body: a few headers and 76-character lines, some starting
/// with a dot so that unstuffing is exercised.
fn body() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(
        b"From: Composer <news@composer.example>\r\nSubject: Your weekly digest\r\n",
    );
    b.extend_from_slice(b"Message-ID: <1234567890@composer.example>\r\nMIME-Version: 1.0\r\n\r\n");
    let mut i = 0;
    while b.len() < 2048 - 78 {
        if i % 8 == 7 {
            b.extend_from_slice(b"..");
        }
        b.extend_from_slice(&[b'a' + (i % 26) as u8; 74]);
        b.extend_from_slice(b"\r\n");
        i += 1;
    }
    while b.len() < 2046 {
        b.push(b'z');
    }
    b.extend_from_slice(b"\r\n");
    b
}

fn stream(messages: usize) -> Vec<u8> {
    let body = body();
    let mut s = Vec::with_capacity(messages * (body.len() + 100));
    s.extend_from_slice(b"EHLO composer.example\r\n");
    for i in 0..messages {
        s.extend_from_slice(b"MAIL FROM:<news@composer.example> BODY=8BITMIME\r\n");
        s.extend_from_slice(
            format!("RCPT TO:<user{i}@domain{}.example>\r\nDATA\r\n", i % 1000).as_bytes(),
        );
        s.extend_from_slice(&body);
        s.extend_from_slice(b".\r\n");
    }
    s.extend_from_slice(b"QUIT\r\n");
    s
}

/// Runs one session over `input` in `read`-sized pieces; returns the number
/// of messages completed and the body octets assembled.
fn session(input: &[u8], read: usize) -> (usize, usize) {
    let mut server = Server::new(ServerConfig::default());
    let mut done = 0;
    let mut octets = 0;
    let mut assembled: Vec<u8> = Vec::with_capacity(4096);
    let mut sent = 0;
    for piece in input.chunks(read) {
        let mut rest = piece;
        while !rest.is_empty() {
            let n = server.receive(rest);
            rest = &rest[n..];
            while let Some(ev) = server.poll_event() {
                match ev {
                    ServerEvent::Mail { .. } => server.mail_verdict(Verdict::Accept).unwrap(),
                    ServerEvent::Rcpt { .. } => server.rcpt_verdict(Verdict::Accept).unwrap(),
                    ServerEvent::BodyChunk(b) => assembled.extend_from_slice(&b),
                    ServerEvent::MessageComplete => {
                        server.message_verdict(Verdict::Accept).unwrap();
                        octets += assembled.len();
                        assembled.clear();
                        done += 1;
                    }
                    ServerEvent::Quit => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            sent += server.output().len();
            let n = server.output().len();
            server.consume_output(n);
        }
    }
    assert!(server.is_closed() && sent > 0);
    (done, octets)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let messages = args.first().copied().unwrap_or(50_000);
    let rounds = args.get(1).copied().unwrap_or(5);
    let input = stream(messages);
    println!(
        "server: {messages} messages of {} body octets, stream {} MB, 64 KiB reads, {rounds} rounds",
        body().len(),
        input.len() / 1_000_000
    );
    let mut best = f64::MAX;
    for round in 0..rounds {
        let t = Instant::now();
        let (done, octets) = session(&input, 64 * 1024);
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(done, messages);
        assert_eq!(octets, messages * (body().len() - body_dots()));
        best = best.min(secs);
        println!(
            "round {round}: {:.0} messages/s, {:.0} MB/s",
            messages as f64 / secs,
            input.len() as f64 / secs / 1e6
        );
    }
    println!("best: {:.0} messages/s on one core", messages as f64 / best);
}

/// Stuffed dots in [`body`] that unstuffing removes.
fn body_dots() -> usize {
    body().windows(3).filter(|w| w == b"\n..").count()
}
