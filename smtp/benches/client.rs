//! Client-side throughput: the client state machine over canned pipelined
//! replies for one-recipient 2 KB messages, on one core, no I/O.
//!
//! Run: `cargo bench -p volley-smtp --bench client` (release build). Each
//! round queues a batch of transactions on one session and feeds the server's
//! replies for all of them in 16 KiB reads, as a pipelining server would send
//! them; the output segments are drained (not copied) as a writev would.
//! Goal (issue 2): at least 300,000 messages/s.

use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_smtp::{Client, ClientConfig, ClientEvent, Transaction};

const BATCH: usize = 100;
const READ: usize = 16 * 1024;

fn body() -> Bytes {
    let mut body = Vec::with_capacity(2048);
    body.extend_from_slice(
        b"From: news@volley.test\r\nTo: someone@example.com\r\nSubject: bench\r\n\r\n",
    );
    let mut n = 0;
    while body.len() < 2000 {
        if n % 10 == 5 {
            body.extend_from_slice(b".a line that starts with a dot\r\n");
        } else {
            body.extend_from_slice(
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n",
            );
        }
        n += 1;
    }
    Bytes::from(body)
}

/// Runs `rounds` batches on one session; returns messages delivered and
/// output octets produced.
fn run(
    rounds: usize,
    body: &Bytes,
    replies: &[u8],
    config: &ClientConfig,
    ehlo: &[u8],
) -> (usize, usize) {
    let mut client = Client::new(config.clone());
    client.receive(b"220 mx.example ESMTP\r\n");
    client.receive(ehlo);
    let mut delivered = 0;
    let mut octets = 0;
    for _ in 0..rounds {
        for i in 0..BATCH {
            let tx = Transaction {
                body_type: None,
                reverse_path: "bounce@volley.test".to_owned(),
                recipients: vec![format!("user{i}@example.com")],
                body: body.clone(),
            };
            client.send(tx).expect("session open");
        }
        for read in replies.chunks(READ) {
            client.receive(read);
            octets += client.drain_output().map(|b| b.len()).sum::<usize>();
            while let Some(event) = client.poll_event() {
                match event {
                    ClientEvent::TransactionDone(o) => delivered += o.delivered(),
                    ClientEvent::Ready { .. }
                    | ClientEvent::StartTls
                    | ClientEvent::StartTlsRefused { .. } => {}
                    other => panic!("unexpected event {other:?}"),
                }
            }
        }
    }
    (delivered, octets)
}

fn bench(name: &str, ehlo: &[u8], per_message: &[u8]) {
    let body = body();
    let config = ClientConfig::default();
    let replies = per_message.repeat(BATCH);
    // Warm up, and check every message is delivered.
    let (delivered, _) = run(100, &body, &replies, &config, ehlo);
    assert_eq!(delivered, 100 * BATCH);
    let mut best = Duration::MAX;
    let rounds = 2000;
    let mut octets = 0;
    for _ in 0..5 {
        let start = Instant::now();
        let (delivered, o) = run(rounds, &body, &replies, &config, ehlo);
        best = best.min(start.elapsed());
        assert_eq!(delivered, rounds * BATCH);
        octets = o;
    }
    let msgs = (rounds * BATCH) as f64;
    println!(
        "{name}: {} messages of {} B in {:.3} s (best of 5): {:.0} msgs/s, {:.0} MB/s out",
        rounds * BATCH,
        body.len(),
        best.as_secs_f64(),
        msgs / best.as_secs_f64(),
        octets as f64 / best.as_secs_f64() / 1e6,
    );
}

fn main() {
    bench(
        "client DATA (PIPELINING, dot-stuffing)",
        b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n",
        b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 Go ahead\r\n250 2.0.0 Ok: queued as 4BCD3F2A1\r\n",
    );
    bench(
        "client BDAT (PIPELINING, CHUNKING)",
        b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10000000\r\n250-CHUNKING\r\n250 ENHANCEDSTATUSCODES\r\n",
        b"250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n250 2.0.0 Ok: queued as 4BCD3F2A1\r\n",
    );
}
