//! MX sinks over real sockets: one accept loop per MX host address, each
//! connection a session of `volley-smtp`'s sans-IO server, with every policy
//! decision (connection limit, rate, unknown mailboxes, greylisting, drops,
//! delays) asked of the domain's [`DomainModel`].

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use volley_smtp::{Extensions, Server, ServerConfig, ServerEvent, UnexpectedVerdict, Verdict};

use crate::capacity::{ConnectVerdict, DataVerdict, DomainModel, RcptVerdict};
use crate::ledger::Delivery;
use crate::message::{Inspector, unix_micros};
use crate::scenario::SimDomain;

/// State the sink threads share: one capacity model per domain and the
/// record of accepted messages.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) domains: Vec<SimDomain>,
    pub(crate) models: Vec<Mutex<DomainModel>>,
    pub(crate) deliveries: Mutex<Vec<Delivery>>,
}

impl Shared {
    pub(crate) fn record(&self, delivery: Delivery) {
        if let Ok(mut d) = self.deliveries.lock() {
            d.push(delivery);
        }
    }
}

/// Idle time after which a sink closes a silent connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `listeners` (domain index, socket) until `stopped` turns true.
pub(crate) fn run_thread(
    listeners: Vec<(usize, std::net::TcpListener)>,
    shared: Arc<Shared>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async move {
        for (domain, listener) in listeners {
            match TcpListener::from_std(listener) {
                Ok(l) => {
                    tokio::spawn(accept_loop(l, domain, shared.clone()));
                }
                Err(_) => continue,
            }
        }
        let _ = stopped.wait_for(|s| *s).await;
    });
    // Dropping the runtime cancels every accept loop and session.
}

async fn accept_loop(listener: TcpListener, domain: usize, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream, domain, shared.clone()));
            }
            // Out of descriptors or similar: pause rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Releases the domain's connection slot however the session ends.
struct Slot {
    shared: Arc<Shared>,
    domain: usize,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.shared.models[self.domain].lock() {
            m.disconnect();
        }
    }
}

async fn serve(mut stream: TcpStream, domain: usize, shared: Arc<Shared>) {
    let _ = stream.set_nodelay(true);
    let verdict = match shared.models[domain].lock() {
        Ok(mut m) => m.connect(Instant::now()),
        Err(_) => return,
    };
    if let ConnectVerdict::Refuse(reply) = verdict {
        let mut out = Vec::new();
        reply.encode(&mut out);
        let _ = stream.write_all(&out).await;
        let _ = stream.shutdown().await;
        return;
    }
    let _slot = Slot {
        shared: shared.clone(),
        domain,
    };
    let _ = session(&mut stream, domain, &shared).await;
}

/// One SMTP session on an accepted connection.
async fn session(stream: &mut TcpStream, domain: usize, shared: &Shared) -> std::io::Result<()> {
    let model = &shared.models[domain];
    let name = &shared.domains[domain].name;
    let mut server = Server::new(ServerConfig {
        hostname: format!("mx.{name}"),
        extensions: Extensions {
            // DATA rather than BDAT, so slow DATA (a delayed 354) applies to
            // every sender.
            chunking: false,
            binarymime: false,
            ..Extensions::default()
        },
        ..ServerConfig::default()
    });
    let mut buf = vec![0u8; 64 * 1024];
    let (mut start, mut end) = (0usize, 0usize);
    let mut rcpts: Vec<String> = Vec::new();
    let mut inspector = Inspector::default();
    loop {
        while let Some(event) = server.poll_event() {
            match event {
                ServerEvent::Mail { .. } => {
                    rcpts.clear();
                    inspector = Inspector::default();
                    accept(server.mail_verdict(Verdict::Accept))?;
                }
                ServerEvent::Rcpt { forward_path, .. } => {
                    let address = forward_path.to_string();
                    let verdict = lock(model)?.rcpt(Instant::now(), &address);
                    let verdict = match verdict {
                        RcptVerdict::Accept => {
                            rcpts.push(address);
                            Verdict::Accept
                        }
                        RcptVerdict::Refuse(reply) => Verdict::Reject(reply),
                    };
                    accept(server.rcpt_verdict(verdict))?;
                }
                ServerEvent::BodyChunk(chunk) => inspector.feed(&chunk),
                ServerEvent::MessageComplete => {
                    // Replies to the commands before the body go out first.
                    flush(stream, &mut server).await?;
                    let n = u32::try_from(rcpts.len()).unwrap_or(u32::MAX);
                    let verdict = lock(model)?.data_end(Instant::now(), n);
                    match verdict {
                        DataVerdict::Accept { delay } => {
                            // Recorded now, stamped with the moment the 250
                            // goes out, so the record always agrees with the
                            // counters even if the run ends during the delay.
                            let seen = std::mem::take(&mut inspector).finish();
                            let accepted_micros = unix_micros() + delay.as_micros() as u64;
                            for rcpt in rcpts.drain(..) {
                                shared.record(Delivery {
                                    id: seen.id.clone(),
                                    recipient: rcpt,
                                    domain: name.clone(),
                                    digest: seen.digest,
                                    size: seen.size,
                                    sent_micros: seen.sent_micros,
                                    accepted_micros,
                                });
                            }
                            tokio::time::sleep(delay).await;
                            accept(server.message_verdict(Verdict::Accept))?;
                        }
                        DataVerdict::Drop { delay } => {
                            tokio::time::sleep(delay).await;
                            return Ok(());
                        }
                    }
                }
                ServerEvent::TransactionAborted(_) => {
                    rcpts.clear();
                    inspector = Inspector::default();
                }
                ServerEvent::Quit | ServerEvent::Closed(_) => {
                    flush(stream, &mut server).await?;
                    let _ = stream.shutdown().await;
                    return Ok(());
                }
            }
        }
        if has_354(server.output()) {
            let delay = lock(model)?.data_delay(Instant::now());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
        flush(stream, &mut server).await?;
        if server.is_closed() {
            let _ = stream.shutdown().await;
            return Ok(());
        }
        if start < end {
            let taken = server.receive(&buf[start..end]);
            if taken == 0 {
                // Every verdict is given at once and output is flushed, so
                // the server always has room: this would be a bug here.
                return Err(std::io::Error::other("sink session stalled"));
            }
            start += taken;
            continue;
        }
        match tokio::time::timeout(IDLE_TIMEOUT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(n)) => {
                start = 0;
                end = n;
            }
            Err(_) => server.timeout(),
        }
    }
}

fn lock(model: &Mutex<DomainModel>) -> std::io::Result<MutexGuard<'_, DomainModel>> {
    model
        .lock()
        .map_err(|_| std::io::Error::other("domain model poisoned"))
}

/// A verdict out of turn is a bug in this file; end the session over it.
fn accept(r: Result<(), UnexpectedVerdict>) -> std::io::Result<()> {
    r.map_err(std::io::Error::other)
}

async fn flush(stream: &mut TcpStream, server: &mut Server) -> std::io::Result<()> {
    let out = server.output();
    if out.is_empty() {
        return Ok(());
    }
    stream.write_all(out).await?;
    let n = out.len();
    server.consume_output(n);
    Ok(())
}

/// Whether a `354` reply (go ahead with DATA) is about to be sent.
fn has_354(out: &[u8]) -> bool {
    out.split(|&b| b == b'\n')
        .any(|line| line.starts_with(b"354"))
}
