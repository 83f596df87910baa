//! Our own Composer for the tests: volley-smtp's `Client` over a blocking
//! std socket, several transactions per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use volley_smtp::{Client, ClientConfig, ClientEvent, Transaction, TransactionOutcome};

/// Sends `txs` over one connection (LMTP when `lmtp`), returning each
/// transaction's outcome in order.
pub fn send(
    addr: SocketAddr,
    lmtp: bool,
    txs: Vec<Transaction>,
) -> anyhow::Result<Vec<TransactionOutcome>> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut client = Client::new(ClientConfig {
        helo_name: "composer.test".into(),
        lmtp,
        ..ClientConfig::default()
    });
    let n = txs.len();
    for tx in txs {
        client
            .send(tx)
            .map_err(|e| anyhow::anyhow!("send refused: {e}"))?;
    }
    client.quit();
    let mut outcomes = Vec::with_capacity(n);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while let Some(ev) = client.poll_event() {
            match ev {
                // No STARTTLS asked for.
                ClientEvent::Ready { .. }
                | ClientEvent::StartTls
                | ClientEvent::StartTlsRefused { .. } => {}
                ClientEvent::TransactionDone(o) => outcomes.push(o),
                ClientEvent::Closed => return Ok(outcomes),
                ClientEvent::Failed { error, .. } => {
                    anyhow::bail!("session failed after {} of {n}: {error}", outcomes.len())
                }
            }
        }
        let out: Vec<Bytes> = client.drain_output().collect();
        for b in out {
            stream.write_all(&b)?;
        }
        let got = stream.read(&mut buf)?;
        if got == 0 {
            client.connection_closed();
        } else {
            client.receive(&buf[..got]);
        }
    }
}

/// Reads the server's reply lines until one without a continuation.
pub fn read_reply(stream: &mut TcpStream) -> String {
    let mut all = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) => {
                all.push(byte[0]);
                if all.ends_with(b"\r\n") {
                    let text = String::from_utf8_lossy(&all).to_string();
                    let last = text
                        .trim_end()
                        .rsplit("\r\n")
                        .next()
                        .unwrap_or("")
                        .to_string();
                    if last.len() < 4 || last.as_bytes()[3] == b' ' {
                        return text;
                    }
                }
            }
            _ => return String::from_utf8_lossy(&all).to_string(),
        }
    }
}

/// Sends one line and returns the reply.
pub fn command(stream: &mut TcpStream, line: &str) -> String {
    stream.write_all(line.as_bytes()).unwrap();
    read_reply(stream)
}
