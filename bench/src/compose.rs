//! The Composer load over real sockets: N connections, each a session of
//! `volley-smtp`'s sans-IO [`Client`], one personalized message per
//! transaction, with optional pacing and retries of transient refusals.
//!
//! With routes (domain -> MX address), the Composer acts as its own MTA:
//! each message goes over a connection to its recipient domain's host, so a
//! direct run can reach many sinks with the same parallelism as a relay.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use volley_smtp::{Client, ClientConfig, ClientEvent, DeliveryStatus, Stage, Transaction};

use crate::error::{BenchError, ScenarioError};
use crate::ledger::SentRecord;
use crate::load::{DomainMix, LoadSpec, Planner, Protocol};
use crate::message::{Composed, compose, unix_micros};
use crate::report::ComposerSummary;

/// Attempts per message when the server answers 4xx (e.g. 452 back-pressure).
const MAX_ATTEMPTS: u32 = 50;
/// Pause before connecting again after a failed session.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
/// How long connection attempts may fail in a row before a connection
/// gives up (the server is gone, not restarting: a server killed and
/// started again, as the soak does, is back well within it).
const RECONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// Where and what to send.
#[derive(Debug, Clone)]
pub struct ComposeConfig {
    /// The server under test (SMTP or LMTP).
    pub target: SocketAddr,
    /// The shape of the load.
    pub load: LoadSpec,
    /// Recipients' domains.
    pub mix: DomainMix,
    /// Seed of recipient and size choices.
    pub seed: u64,
    /// Prefix of every message id, unique per run.
    pub run_id: String,
    /// Give up on what is left after this long (sessions, retries).
    pub timeout: Duration,
    /// Where each recipient domain's mail goes (e.g. the simulated
    /// internet's MX hosts); empty: everything goes to `target`. With routes
    /// the load needs a message count (not a duration), connections are
    /// spread evenly over the distinct addresses, and a domain without a
    /// route is an error.
    pub routes: Vec<(String, SocketAddr)>,
    /// STARTTLS on every session, the server's certificate checked with
    /// this configuration; a server that does not offer it is an error.
    /// `None`: clear text.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Live counters, for a progress line while the load runs.
#[derive(Debug, Default)]
pub struct ComposeProgress {
    /// Messages handed to a session (first attempts).
    pub offered: AtomicU64,
    /// Accepted by the server under test.
    pub accepted: AtomicU64,
    /// 4xx replies (each attempt).
    pub refused_transient: AtomicU64,
    /// 5xx replies.
    pub refused_permanent: AtomicU64,
    /// Sessions that failed.
    pub session_errors: AtomicU64,
    /// Message bytes accepted.
    pub bytes: AtomicU64,
}

/// What the load did, for the ledger and the report.
#[derive(Debug, Clone, Default)]
pub struct ComposeOutcome {
    /// Summary figures.
    pub summary: ComposerSummary,
    /// Every message the server accepted (and those left uncertain).
    pub sent: Vec<SentRecord>,
    /// When each accepted message was accepted, microseconds since the epoch.
    pub injected_micros: Vec<u64>,
}

/// A message waiting to be (re)sent.
#[derive(Debug)]
struct Pending {
    number: u64,
    attempts: u32,
    not_before: Instant,
}

/// The messages for one address: all of them (no routes), or those whose
/// recipient domain routes there.
#[derive(Debug)]
struct Lane {
    addr: SocketAddr,
    /// The message numbers of this lane; `None`: every number in turn.
    numbers: Option<Vec<u64>>,
    /// Next index into `numbers` (or the next number).
    next: AtomicU64,
    in_flight: AtomicU64,
    retries: Mutex<VecDeque<Pending>>,
}

impl Lane {
    fn new(addr: SocketAddr, numbers: Option<Vec<u64>>) -> Self {
        Self {
            addr,
            numbers,
            next: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            retries: Mutex::new(VecDeque::new()),
        }
    }
}

#[derive(Debug)]
struct Ctx {
    config: ComposeConfig,
    planner: Planner,
    progress: Arc<ComposeProgress>,
    start: Instant,
    deadline: Instant,
    stop_new_at: Option<Instant>,
    lanes: Vec<Lane>,
    sent: Mutex<Vec<(SentRecord, u64)>>,
}

enum Next {
    Send(Pending),
    Wait,
    Done,
}

impl Ctx {
    fn next(&self, lane: &Lane) -> Next {
        let now = Instant::now();
        if now >= self.deadline {
            return Next::Done;
        }
        if let Ok(mut q) = lane.retries.lock()
            && q.front().is_some_and(|p| p.not_before <= now)
            && let Some(p) = q.pop_front()
        {
            lane.in_flight.fetch_add(1, Ordering::SeqCst);
            return Next::Send(p);
        }
        let past_duration = self.stop_new_at.is_some_and(|t| now >= t);
        let limit = match &lane.numbers {
            Some(numbers) => numbers.len() as u64,
            None if self.config.load.messages == 0 => u64::MAX,
            None => self.config.load.messages,
        };
        if !past_duration {
            // Reserve the in-flight slot first so no task sees "nothing left"
            // while a number is between the counter and the session.
            lane.in_flight.fetch_add(1, Ordering::SeqCst);
            let i = lane.next.fetch_add(1, Ordering::SeqCst);
            if i < limit {
                self.progress.offered.fetch_add(1, Ordering::Relaxed);
                let number = match &lane.numbers {
                    Some(numbers) => numbers[i as usize],
                    None => i,
                };
                return Next::Send(Pending {
                    number,
                    attempts: 0,
                    not_before: now,
                });
            }
            lane.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let retries_left = lane.retries.lock().map(|q| !q.is_empty()).unwrap_or(false);
        if retries_left || lane.in_flight.load(Ordering::SeqCst) > 0 {
            Next::Wait
        } else {
            Next::Done
        }
    }

    /// When message `number` may go, under a fixed rate.
    fn slot(&self, number: u64) -> Option<Instant> {
        let rate = self.config.load.rate;
        (rate > 0.0).then(|| self.start + Duration::from_secs_f64(number as f64 / rate))
    }

    fn finished(&self, lane: &Lane, outcome: Finish, pending: Pending, message: &Composed) {
        match outcome {
            Finish::Accepted | Finish::Uncertain => {
                let uncertain = matches!(outcome, Finish::Uncertain);
                if !uncertain {
                    self.progress.accepted.fetch_add(1, Ordering::Relaxed);
                    self.progress
                        .bytes
                        .fetch_add(message.data.len() as u64, Ordering::Relaxed);
                }
                if let Ok(mut s) = self.sent.lock() {
                    s.push((
                        SentRecord {
                            id: message.id.clone(),
                            recipient: message.recipient.clone(),
                            digest: message.digest,
                            uncertain,
                        },
                        unix_micros(),
                    ));
                }
            }
            Finish::Transient => {
                self.progress
                    .refused_transient
                    .fetch_add(1, Ordering::Relaxed);
                Self::retry(lane, pending);
            }
            Finish::Permanent => {
                self.progress
                    .refused_permanent
                    .fetch_add(1, Ordering::Relaxed);
            }
            Finish::NotSent => Self::retry_now(lane, pending),
        }
        lane.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    fn retry(lane: &Lane, mut p: Pending) {
        p.attempts += 1;
        if p.attempts >= MAX_ATTEMPTS {
            return;
        }
        let backoff = Duration::from_millis(50 * u64::from(p.attempts)).min(Duration::from_secs(1));
        p.not_before = Instant::now() + backoff;
        if let Ok(mut q) = lane.retries.lock() {
            q.push_back(p);
        }
    }

    fn retry_now(lane: &Lane, mut p: Pending) {
        p.not_before = Instant::now();
        if let Ok(mut q) = lane.retries.lock() {
            q.push_front(p);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Finish {
    Accepted,
    Transient,
    Permanent,
    /// The session broke after the body: the server may have it.
    Uncertain,
    /// The session broke before the body: send again.
    NotSent,
}

/// A Composer load running on its own thread.
#[derive(Debug)]
pub struct ComposeHandle {
    progress: Arc<ComposeProgress>,
    thread: JoinHandle<Result<ComposeOutcome, BenchError>>,
}

impl ComposeHandle {
    /// Live counters.
    pub fn progress(&self) -> &Arc<ComposeProgress> {
        &self.progress
    }

    /// True once every connection has ended.
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Waits for the end and returns what happened.
    pub fn join(self) -> Result<ComposeOutcome, BenchError> {
        self.thread.join().unwrap_or_else(|_| {
            Err(BenchError::Protocol {
                target: "composer".into(),
                detail: "the composer thread panicked".into(),
            })
        })
    }
}

/// Starts the load on a thread of its own (a current-thread tokio runtime).
pub fn spawn_compose(config: ComposeConfig) -> Result<ComposeHandle, BenchError> {
    config.load.validate()?;
    let progress = Arc::new(ComposeProgress::default());
    let p = progress.clone();
    let thread = std::thread::Builder::new()
        .name("volley-composer".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| BenchError::io("starting the composer runtime", e))?;
            rt.block_on(run_compose(config, p))
        })
        .map_err(|e| BenchError::io("starting the composer thread", e))?;
    Ok(ComposeHandle { progress, thread })
}

/// Runs the load to its end inside the caller's tokio runtime.
pub async fn run_compose(
    config: ComposeConfig,
    progress: Arc<ComposeProgress>,
) -> Result<ComposeOutcome, BenchError> {
    config.load.validate()?;
    let planner = Planner::new(config.mix.clone(), &config.load, config.seed);
    let lanes = lanes(&config, &planner)?;
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        planner,
        progress,
        start,
        deadline: start + config.timeout,
        stop_new_at: config.load.duration.map(|d| start + d),
        lanes,
        sent: Mutex::new(Vec::new()),
        config,
    });
    let start_micros = unix_micros();
    let connections = ctx.config.load.connections as usize;
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            tokio::spawn(connection(
                ctx.clone(),
                lanes_of(i, connections, ctx.lanes.len()),
            ))
        })
        .collect();
    let mut first_error = None;
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            first_error.get_or_insert(e);
        }
    }
    let mut sent = ctx.sent.lock().map(|s| s.clone()).unwrap_or_default();
    if sent.is_empty()
        && let Some(e) = first_error
    {
        return Err(e);
    }
    sent.sort_by_key(|(_, t)| *t);
    let last = sent.last().map(|(_, t)| *t).unwrap_or(start_micros);
    let p = &ctx.progress;
    let load = &ctx.config.load;
    let summary = ComposerSummary {
        target: if ctx.config.routes.is_empty() {
            ctx.config.target.to_string()
        } else {
            format!("{} MX hosts (routes)", ctx.lanes.len())
        },
        offered: p.offered.load(Ordering::Relaxed),
        accepted: p.accepted.load(Ordering::Relaxed),
        refused_transient: p.refused_transient.load(Ordering::Relaxed),
        refused_permanent: p.refused_permanent.load(Ordering::Relaxed),
        session_errors: p.session_errors.load(Ordering::Relaxed),
        inject_secs: last.saturating_sub(start_micros) as f64 / 1e6,
        connections: load.connections,
        pipelining: load.pipelining,
        protocol: match load.protocol {
            Protocol::Smtp => "smtp".into(),
            Protocol::Lmtp => "lmtp".into(),
        },
        bytes: p.bytes.load(Ordering::Relaxed),
    };
    Ok(ComposeOutcome {
        summary,
        injected_micros: sent
            .iter()
            .filter(|(s, _)| !s.uncertain)
            .map(|(_, t)| *t)
            .collect(),
        sent: sent.into_iter().map(|(s, _)| s).collect(),
    })
}

/// Splits the load into lanes: one for `target` without routes, else one
/// per distinct MX address with the numbers of the messages routed there.
fn lanes(config: &ComposeConfig, planner: &Planner) -> Result<Vec<Lane>, BenchError> {
    if config.routes.is_empty() {
        return Ok(vec![Lane::new(config.target, None)]);
    }
    if config.load.messages == 0 || config.load.duration.is_some() {
        return Err(BenchError::Scenario(ScenarioError::Invalid(
            "a routed load needs a message count, not a duration".into(),
        )));
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    let mut route_of: HashMap<String, usize> = HashMap::new();
    for (domain, addr) in &config.routes {
        let lane = match addrs.iter().position(|a| a == addr) {
            Some(i) => i,
            None => {
                addrs.push(*addr);
                addrs.len() - 1
            }
        };
        route_of.insert(domain.to_ascii_lowercase(), lane);
    }
    let mut numbers: Vec<Vec<u64>> = vec![Vec::new(); addrs.len()];
    for n in 0..config.load.messages {
        let recipient = planner.plan(n).recipient;
        let domain = recipient
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let Some(&lane) = route_of.get(&domain) else {
            return Err(BenchError::Scenario(ScenarioError::Invalid(format!(
                "no route for domain {domain:?}"
            ))));
        };
        numbers[lane].push(n);
    }
    Ok(addrs
        .into_iter()
        .zip(numbers)
        .filter(|(_, n)| !n.is_empty())
        .map(|(a, n)| Lane::new(a, Some(n)))
        .collect())
}

/// The lanes connection `i` of `connections` serves, in turn: with at least
/// as many connections as lanes, one lane each, spread evenly; with fewer,
/// every `connections`-th lane.
fn lanes_of(i: usize, connections: usize, lanes: usize) -> Vec<usize> {
    if lanes == 0 {
        Vec::new()
    } else if connections >= lanes {
        vec![i % lanes]
    } else {
        (i..lanes).step_by(connections).collect()
    }
}

/// One connection: for each of its lanes in turn, sessions one after
/// another until that lane's load is done.
async fn connection(ctx: Arc<Ctx>, lanes: Vec<usize>) -> Result<(), BenchError> {
    for lane in lanes {
        connection_to(&ctx, &ctx.lanes[lane]).await?;
    }
    Ok(())
}

async fn connection_to(ctx: &Ctx, lane: &Lane) -> Result<(), BenchError> {
    let target = lane.addr;
    let mut failing_since: Option<Instant> = None;
    loop {
        let mut stream = match TcpStream::connect(target).await {
            Ok(s) => {
                failing_since = None;
                s
            }
            Err(e) => {
                ctx.progress.session_errors.fetch_add(1, Ordering::Relaxed);
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= RECONNECT_PATIENCE
                    || Instant::now() + RECONNECT_PAUSE >= ctx.deadline
                {
                    return Err(BenchError::io(format!("connecting to {target}"), e));
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let client = new_client(ctx);
        let end = match &ctx.config.tls {
            None => session(ctx, lane, &mut stream, client).await,
            Some(tls) => match starttls(ctx, target, stream, client, tls.clone()).await {
                Some((mut stream, client)) => session(ctx, lane, &mut stream, client).await,
                None => SessionEnd::Broken,
            },
        };
        match end {
            SessionEnd::Done => return Ok(()),
            SessionEnd::Broken => {
                ctx.progress.session_errors.fetch_add(1, Ordering::Relaxed);
                if Instant::now() >= ctx.deadline {
                    return Ok(());
                }
                tokio::time::sleep(RECONNECT_PAUSE).await;
            }
        }
    }
}

enum SessionEnd {
    /// QUIT after the last message.
    Done,
    /// The session failed; connect again if work remains.
    Broken,
}

fn new_client(ctx: &Ctx) -> Client {
    let load = &ctx.config.load;
    Client::new(ClientConfig {
        helo_name: "composer.bench.test".into(),
        lmtp: load.protocol == Protocol::Lmtp,
        pipelining: load.pipelining,
        starttls: ctx.config.tls.is_some(),
        ..ClientConfig::default()
    })
}

/// Greets the server at `target` and runs STARTTLS, checking that the
/// certificate names `target`'s address; the session inside TLS, or
/// `None` when the server does not offer it or the handshake fails.
async fn starttls(
    ctx: &Ctx,
    target: SocketAddr,
    mut stream: TcpStream,
    mut client: Client,
    tls: Arc<rustls::ClientConfig>,
) -> Option<(tokio_rustls::client::TlsStream<TcpStream>, Client)> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Some(event) = client.poll_event() {
            if event != ClientEvent::StartTls {
                // Ready in clear text, a refusal or a failure.
                return None;
            }
            let name = rustls::pki_types::ServerName::IpAddress(target.ip().into());
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, stream)
                .await
                .ok()?;
            client.tls_established();
            return Some((stream, client));
        }
        write_out(&mut stream, &mut client).await.ok()?;
        let read = tokio::time::timeout_at(ctx.deadline.into(), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(n)) if n > 0 => client.receive(&buf[..n]),
            _ => return None,
        }
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Ctx,
    lane: &Lane,
    stream: &mut S,
    mut client: Client,
) -> SessionEnd {
    let load = &ctx.config.load;
    let mut buf = vec![0u8; 64 * 1024];
    let mut ready = false;
    let mut current: Option<(Pending, Composed)> = None;
    let mut quitting = false;
    // Whether the body in flight was out when the session last could fail.
    let mut body_was_out = false;
    loop {
        // Events first: they may free the session for the next message.
        while let Some(event) = client.poll_event() {
            match event {
                ClientEvent::Ready { .. } => ready = true,
                // STARTTLS is over before the session starts.
                ClientEvent::StartTls | ClientEvent::StartTlsRefused { .. } => {}
                ClientEvent::TransactionDone(outcome) => {
                    let Some((pending, message)) = current.take() else {
                        continue;
                    };
                    let finish = match outcome.recipients.first().map(|r| r.status) {
                        Some(DeliveryStatus::Delivered) => Finish::Accepted,
                        Some(DeliveryStatus::TransientFailure) => Finish::Transient,
                        Some(DeliveryStatus::PermanentFailure) | None => Finish::Permanent,
                    };
                    ctx.finished(lane, finish, pending, &message);
                }
                ClientEvent::Closed => return SessionEnd::Done,
                ClientEvent::Failed { error, .. } => {
                    if let Some((pending, message)) = current.take() {
                        let finish = if error.stage() == Stage::Body || body_was_out {
                            Finish::Uncertain
                        } else {
                            Finish::NotSent
                        };
                        ctx.finished(lane, finish, pending, &message);
                    }
                    let _ = write_out(stream, &mut client).await;
                    return if quitting {
                        SessionEnd::Done
                    } else {
                        SessionEnd::Broken
                    };
                }
            }
        }
        if ready && current.is_none() && !quitting {
            match ctx.next(lane) {
                Next::Send(pending) => {
                    if let Some(at) = ctx.slot(pending.number).filter(|_| pending.attempts == 0) {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let plan = ctx.planner.plan(pending.number);
                    let message = compose(&ctx.config.run_id, &load.sender, &load.template, &plan);
                    let tx = Transaction {
                        body_type: None,
                        reverse_path: load.sender.clone(),
                        recipients: vec![message.recipient.clone()],
                        body: message.data.clone(),
                    };
                    if client.send(tx).is_err() {
                        ctx.finished(lane, Finish::NotSent, pending, &message);
                        return SessionEnd::Broken;
                    }
                    current = Some((pending, message));
                }
                Next::Wait => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Next::Done => {
                    quitting = true;
                    client.quit();
                }
            }
        }
        // Read before each call that may end the session: once failed,
        // the client no longer knows what it had sent.
        body_was_out = client.body_handed_out();
        if write_out(stream, &mut client).await.is_err() {
            client.connection_closed();
            continue;
        }
        let read = tokio::time::timeout_at(ctx.deadline.into(), stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => client.connection_closed(),
            Ok(Ok(n)) => client.receive(&buf[..n]),
            Err(_) => client.timed_out(),
        }
    }
}

/// Writes the client's pending segments, coalescing small ones.
async fn write_out<S: AsyncWrite + Unpin>(
    stream: &mut S,
    client: &mut Client,
) -> std::io::Result<()> {
    let segments = client.take_output();
    if segments.is_empty() {
        return Ok(());
    }
    let total: usize = segments.iter().map(|s| s.len()).sum();
    if total <= 64 * 1024 {
        let mut joined = BytesMut::with_capacity(total);
        for s in &segments {
            joined.extend_from_slice(s);
        }
        stream.write_all(&joined).await
    } else {
        for s in &segments {
            stream.write_all(s).await?;
        }
        Ok(())
    }
}
