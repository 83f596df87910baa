//! One ingest session: bytes from the socket into the smtp [`Server`],
//! its events turned into verdicts and messages, its replies back out.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use volley_smtp::{
    BodyType, EnhancedCode, Extensions, Reply, Server, ServerConfig, ServerEvent, Verdict,
};

use super::admission::Admission;
use super::held::{Held, Pending};
use super::received::{Arrival, received_header, with_keyword};
use super::relay::{Accepted, rcpt_policy};
use crate::address_line::PARAMS_SEPARATOR;
use crate::auth;
use crate::config::{AckMode, Config, ListenerConfig, Protocol};
use crate::context::ShardCtx;
use crate::dkim::{self, Signed};
use crate::message::Message;
use crate::metrics::bump;
use crate::transport::{Conn, TlsSummary, TransportError};

/// Received bytes the server has not taken yet, at most.
const MAX_UNREAD: usize = 1 << 20;

/// Body buffer room a session keeps between messages, at most.
const MAX_KEPT_BODY_ROOM: usize = 256 * 1024;

/// The envelope and body of the transaction in progress.
#[derive(Default)]
struct Txn {
    /// Output position of the transaction's first reply (to MAIL FROM).
    start: u64,
    sender: String,
    /// MAIL's BODY parameter, passed on at delivery.
    body_type: Option<BodyType>,
    rcpts: Vec<String>,
    keys: Vec<Box<str>>,
    /// RET and ENVID in their SMTP form ("" when not given).
    sender_params: String,
    /// NOTIFY and ORCPT of each recipient in their SMTP form.
    rcpt_params: Vec<String>,
}

impl Txn {
    /// The sender and recipients as a message keeps them: each with its
    /// DSN parameters after [`PARAMS_SEPARATOR`] when it has any. Without
    /// any (bulk mail's usual case) the addresses are moved, not copied.
    fn envelope_lines(&mut self) -> (String, Vec<String>) {
        let sender = std::mem::take(&mut self.sender);
        let rcpts = std::mem::take(&mut self.rcpts);
        if self.sender_params.is_empty() && self.rcpt_params.iter().all(String::is_empty) {
            return (sender, rcpts);
        }
        let line = |address: String, params: &str| match params {
            "" => address,
            p => format!("{address}{PARAMS_SEPARATOR}{p}"),
        };
        let rcpts = rcpts
            .into_iter()
            .zip(&self.rcpt_params)
            .map(|(r, p)| line(r, p))
            .collect();
        (line(sender, &self.sender_params), rcpts)
    }
}

/// How a wait on the socket ended.
enum Input {
    Data,
    Closed,
    TimedOut,
    Stop,
}

struct Session {
    shard: Rc<ShardCtx>,
    conn: Conn,
    server: Server,
    lc: ListenerConfig,
    config: Arc<Config>,
    buf: BytesMut,
    txn: Txn,
    /// The body being received. It outlives each transaction: every
    /// message is copied out of it into an allocation of its exact size,
    /// so the buffer grows once per session, not once per message, and a
    /// queued body holds no spare capacity and leaves no split chunks
    /// behind in the allocator.
    body: Vec<u8>,
    /// Durable mode: messages whose 250 waits for the journal.
    held: Held,
    /// STARTTLS was accepted: the handshake runs once its 220 is out.
    handshake: Option<Arc<rustls::ServerConfig>>,
    /// How TLS went, once the session is inside it.
    tls: Option<TlsSummary>,
    /// The client is in the trusted networks; otherwise it must AUTH
    /// before MAIL.
    trusted: bool,
    /// When the first octet of the command line still in progress came:
    /// the command timeout runs from there, however often octets come.
    command_started: Option<Instant>,
}

pub(crate) async fn run(
    shard: Rc<ShardCtx>,
    mut conn: Conn,
    lc: ListenerConfig,
    admission: Admission,
) {
    let config = shard.shared.config.load_full();
    let certificate = shard.shared.tls.load().server.clone();
    let implicit = lc.protocol == Protocol::Smtps;
    let mut tls = None;
    if implicit {
        // check-config refuses an smtps listener without a certificate.
        let Some(certificate) = certificate.clone() else {
            return;
        };
        match handshake(
            &mut conn,
            certificate,
            config.ingest.command_timeout,
            &shard,
        )
        .await
        {
            Some(summary) => tls = Some(summary),
            None => return,
        }
    }
    let server = Server::new(ServerConfig {
        hostname: config.hostname.clone(),
        lmtp: lc.protocol == Protocol::Lmtp,
        max_message_size: config.ingest.max_message_size,
        max_recipients: config.ingest.max_recipients,
        extensions: Extensions {
            starttls: certificate.is_some() && !implicit,
            auth: certificate.is_some() && !config.users.is_empty(),
            dsn: config.dsn.enabled,
            ..Extensions::default()
        },
        require_tls: lc.require_tls,
        implicit_tls: implicit,
        ..ServerConfig::default()
    });
    let mut s = Session {
        shard,
        conn,
        server,
        lc,
        config,
        buf: BytesMut::with_capacity(16 * 1024),
        txn: Txn::default(),
        body: Vec::new(),
        held: Held::default(),
        handshake: None,
        tls,
        trusted: admission.trusted(),
        command_started: None,
    };
    s.drive().await;
    s.release_held().await;
    s.conn.close_tls(Duration::from_millis(100)).await;
    s.conn.shutdown();
    drop(admission);
}

/// The server side of a TLS handshake, counted; `None` when it failed (a
/// client that stalls, sends something else than TLS, or drops: the
/// caller closes the connection).
async fn handshake(
    conn: &mut Conn,
    certificate: Arc<rustls::ServerConfig>,
    timeout: Duration,
    shard: &ShardCtx,
) -> Option<TlsSummary> {
    let session = rustls::ServerConnection::new(certificate).ok()?;
    match conn.start_tls(session.into(), timeout).await {
        Ok(summary) => {
            bump(&shard.counters().ingest_tls);
            Some(summary)
        }
        Err(e) => {
            tracing::debug!("TLS handshake with {} failed: {e}", conn.peer());
            None
        }
    }
}

impl Session {
    async fn drive(&mut self) {
        loop {
            while let Some(ev) = self.server.poll_event() {
                self.on_event(ev).await;
            }
            if !self.flush().await {
                return;
            }
            if !self.settle_held(false).await {
                return;
            }
            if self.handshake.is_some() && self.held.is_empty() && self.server.output().is_empty() {
                if !self.start_tls().await {
                    return;
                }
                continue;
            }
            if self.server.is_closed() && self.held.is_empty() {
                return;
            }
            if !self.buf.is_empty() {
                let n = self.server.receive(&self.buf);
                self.buf.advance(n);
                if n > 0 {
                    continue;
                }
                // The server takes nothing more: a client that keeps
                // writing without reading replies. Bound what we hold.
                if self.buf.len() > MAX_UNREAD {
                    return;
                }
            }
            if !self.held.is_empty() {
                // Input taken as far as it goes: wait for the journal
                // rather than the socket (a read cannot be cut short).
                if !self.settle_held(true).await {
                    return;
                }
                continue;
            }
            match self.read().await {
                Input::Data => {}
                Input::Closed => return,
                Input::TimedOut => self.server.timeout(),
                Input::Stop => self.server.shutdown(),
            }
        }
    }

    /// The 220 to STARTTLS is out: whatever the client sent before it saw
    /// that reply is thrown away (it must not run inside TLS), then the
    /// handshake. False when it failed and the session must end.
    async fn start_tls(&mut self) -> bool {
        let Some(certificate) = self.handshake.take() else {
            return true;
        };
        self.buf.clear();
        let t = self.config.ingest.command_timeout;
        match handshake(&mut self.conn, certificate, t, &self.shard).await {
            Some(summary) => {
                self.tls = Some(summary);
                self.server.tls_started().is_ok()
            }
            None => false,
        }
    }

    /// Sends the replies queued so far; false when the socket is gone.
    async fn flush(&mut self) -> bool {
        let out = self.server.output();
        let n = self.held.sendable(out.len());
        if n == 0 {
            return true;
        }
        let bytes = Bytes::copy_from_slice(&out[..n]);
        let t = self.config.ingest.command_timeout;
        match self.conn.write_all(vec![bytes], t).await {
            Ok(()) => {
                self.server.consume_output(n);
                self.held.sent(n);
                true
            }
            Err(_) => false,
        }
    }

    /// Waits for more input, the idle/command timeout, or the engine stopping.
    async fn read(&mut self) -> Input {
        let in_txn = !self.txn.rcpts.is_empty() || !self.body.is_empty();
        let mut t = if in_txn {
            self.config.ingest.command_timeout
        } else {
            self.config.ingest.idle_timeout
        };
        // A command line has the command timeout from its first octet
        // to its end, not per read: one octet every few seconds must not
        // hold the session (slowloris).
        if self.server.command_in_progress() {
            let started = *self.command_started.get_or_insert_with(Instant::now);
            let left = self
                .config
                .ingest
                .command_timeout
                .saturating_sub(started.elapsed());
            if left.is_zero() {
                return Input::TimedOut;
            }
            t = t.min(left);
        } else {
            self.command_started = None;
        }
        let mut stop = self.shard.shared.stop.clone();
        if *stop.borrow_and_update() {
            return Input::Stop;
        }
        let buf = std::mem::take(&mut self.buf);
        // Durable mode waits for the journal between reads: read more at a
        // time, so one fsync covers more of a pipelining Composer's input.
        let want = if self.shard.shared.durable.is_some() {
            64 * 1024
        } else {
            8192
        };
        let read = self.conn.read(buf, want, t);
        tokio::select! {
            (r, buf) = read => {
                self.buf = buf;
                match r {
                    Ok(_) => {
                        self.conn.quick_ack();
                        Input::Data
                    }
                    Err(TransportError::Timeout { .. }) => Input::TimedOut,
                    Err(_) => Input::Closed,
                }
            }
            _ = stop.changed() => Input::Stop,
        }
    }

    async fn on_event(&mut self, ev: ServerEvent) {
        match ev {
            ServerEvent::Mail {
                reverse_path,
                params,
            } => {
                let verdict = if !self.trusted && self.server.authenticated().is_none() {
                    Verdict::Reject(Reply::new(
                        530,
                        EnhancedCode::new(5, 7, 0),
                        "Authentication required",
                    ))
                } else if self.over_budget() {
                    tracing::warn!(
                        "memory budget reached ({} bytes held): ingest answers 452 4.3.1",
                        self.shard.shared.budget.held()
                    );
                    Verdict::Reject(Reply::new(
                        452,
                        EnhancedCode::new(4, 3, 1),
                        "memory budget reached, try again later",
                    ))
                } else if let Some(Err(reply)) =
                    self.shard.shared.durable.as_ref().map(|d| d.check_quota())
                {
                    Verdict::Reject(reply)
                } else {
                    self.clear_body();
                    self.txn = Txn {
                        start: self.held.mark(self.server.output().len()),
                        sender: reverse_path.map(|m| m.to_string()).unwrap_or_default(),
                        body_type: params.body,
                        sender_params: params.dsn_text(),
                        ..Txn::default()
                    };
                    Verdict::Accept
                };
                let _ = self.server.mail_verdict(verdict);
            }
            ServerEvent::Rcpt {
                forward_path,
                params,
            } => {
                // The relay policy as it is now: a reload applies at once.
                let config = self.shard.shared.config.load();
                let verdict = match rcpt_policy(&config.ingest, &forward_path) {
                    Err(reply) => Verdict::Reject(reply),
                    Ok(Accepted { rcpt, key }) => {
                        self.txn.rcpts.push(rcpt);
                        self.txn.keys.push(key.into());
                        self.txn.rcpt_params.push(params.dsn_text());
                        Verdict::Accept
                    }
                };
                let _ = self.server.rcpt_verdict(verdict);
            }
            ServerEvent::BodyChunk(chunk) => self.body.extend_from_slice(&chunk),
            ServerEvent::MessageComplete => self.complete().await,
            ServerEvent::TransactionAborted(_) => {
                self.txn = Txn::default();
                self.clear_body();
            }
            ServerEvent::StartTls => {
                // The certificate as it is now: a reload applies at once.
                let verdict = match self.shard.shared.tls.load().server.clone() {
                    Some(certificate) => {
                        self.handshake = Some(certificate);
                        Verdict::Accept
                    }
                    None => Verdict::Reject(Reply::new(
                        454,
                        EnhancedCode::new(4, 7, 0),
                        "TLS not available",
                    )),
                };
                let _ = self.server.starttls_verdict(verdict);
            }
            ServerEvent::Auth(credentials) => {
                let verdict = self.check_credentials(credentials).await;
                let _ = self.server.auth_verdict(verdict);
            }
            ServerEvent::Quit | ServerEvent::Closed(_) => {}
        }
    }

    /// AUTH: the guard first, then the password, checked on tokio's
    /// blocking pool (argon2 takes milliseconds of CPU on purpose, which
    /// would stall every session and delivery of this shard).
    async fn check_credentials(&mut self, c: volley_smtp::Credentials) -> Verdict {
        let ip = self.conn.peer().ip();
        let shared = self.shard.shared.clone();
        let delay = match shared.auth_guard.attempt(ip, Instant::now()) {
            auth::Attempt::LockedOut => {
                return Verdict::Reject(Reply::new(
                    454,
                    EnhancedCode::new(4, 7, 0),
                    "too many failed authentication attempts, try again later",
                ));
            }
            auth::Attempt::Allowed { delay_refusal } => delay_refusal,
        };
        let users = shared.config.load().users.clone();
        let name = c.username.clone();
        let ok = tokio::task::spawn_blocking(move || {
            auth::verify(&users, &c.authzid, &c.username, &c.password)
        })
        .await
        .unwrap_or(false);
        if ok {
            shared.auth_guard.succeeded(ip);
            tracing::info!(target: "volley", "{ip} authenticated as {name:?}");
            return Verdict::Accept;
        }
        if shared.auth_guard.failed(ip, Instant::now()) {
            tracing::warn!(
                target: "volley",
                "{ip}: too many failed AUTH attempts (last as {name:?}): refused AUTH for {}",
                volley_units::format_duration(auth::LOCKOUT)
            );
        }
        tokio::time::sleep(delay).await;
        Verdict::Reject(Reply::new(
            535,
            EnhancedCode::new(5, 7, 8),
            "Authentication credentials invalid",
        ))
    }

    /// Routes the held messages the journal has on disk (their 250s may
    /// go out now). `wait`: wait for the oldest. If one could not be
    /// written, its Composer gets 452 4.3.1 and the session closes: the
    /// replies after it are already queued as 250s. False when the
    /// session must end.
    async fn settle_held(&mut self, wait: bool) -> bool {
        if let Some(d) = &self.shard.shared.durable {
            self.held.send(d, self.shard.index);
        }
        let mut wait = wait;
        while let Some((mut p, result)) = self.held.next(wait).await {
            wait = false;
            let Some(d) = self.shard.shared.durable.clone() else {
                return false;
            };
            match result {
                Ok(seq) => {
                    d.accepted(self.shard.index, &mut p.msg, seq);
                    self.name_journal_id(&p);
                    self.shard.route_message(Arc::new(p.msg), p.keys);
                }
                Err(e) => {
                    let reply = d.refused(self.shard.index, &e);
                    // Replies before this message, then its refusal (one per
                    // recipient in LMTP), then 421 for what follows.
                    let unsent = self.server.output();
                    let before = self.held.up_to(p.before, unsent.len());
                    let mut out = unsent[..before].to_vec();
                    let n = if self.lc.protocol == Protocol::Lmtp {
                        p.keys.len()
                    } else {
                        1
                    };
                    for _ in 0..n {
                        reply.encode(&mut out);
                    }
                    Reply::new(
                        421,
                        EnhancedCode::new(4, 3, 0),
                        format!("{} closing: journal cannot write", self.config.hostname),
                    )
                    .encode(&mut out);
                    let t = self.config.ingest.command_timeout;
                    let _ = self.conn.write_all(vec![Bytes::from(out)], t).await;
                    self.release_held().await;
                    return false;
                }
            }
        }
        self.flush().await
    }

    /// A held message is on disk and took its journal id: its 250s, still
    /// unsent, were queued with the id it had before, so the id in their
    /// text is replaced (same width) and the Composer reads the id of the
    /// delivery log.
    fn name_journal_id(&mut self, p: &Pending) {
        let replies = if self.lc.protocol == Protocol::Lmtp {
            p.keys.len()
        } else {
            1
        };
        let Some(at) = self.held.offset_of(p.before) else {
            return;
        };
        let id = format!("{:016x}", p.msg.id);
        for k in 0..replies {
            let offset = at + k * QUEUED_AS_LINE + QUEUED_AS_ID_AT;
            let _ = self.server.overwrite_output(offset, id.as_bytes());
        }
    }

    /// The session ends with messages whose 250 never went out: the
    /// Composer was not told they were accepted and will send them again,
    /// so they are dropped, and those already on disk recorded as finished
    /// (a restart must not deliver them either).
    async fn release_held(&mut self) {
        if let Some(d) = &self.shard.shared.durable {
            self.held.send(d, self.shard.index);
        }
        while let Some((mut p, result)) = self.held.next(true).await {
            let Some(d) = self.shard.shared.durable.clone() else {
                return;
            };
            match result {
                Ok(seq) => {
                    d.accepted(self.shard.index, &mut p.msg, seq);
                    for i in 0..p.keys.len() as u32 {
                        p.msg.finished(i, false);
                    }
                }
                Err(e) => drop(d.refused(self.shard.index, &e)),
            }
        }
    }

    /// The message as it is queued: its DKIM signatures (if any), a
    /// `Received:` header, then the body as it came, in one allocation of
    /// the exact size. In durable fast
    /// mode the header carries no id: the journal assigns the message's id
    /// only once this very buffer is on disk.
    fn trace_and_body(&self, txn: &Txn, id: u64, signatures: &[u8]) -> Bytes {
        let durable_fast = self.shard.shared.durable.is_some() && self.lc.ack == AckMode::Fast;
        let with = with_keyword(
            self.lc.protocol == Protocol::Lmtp,
            self.server.extended(),
            self.tls.is_some(),
            self.server.authenticated().is_some(),
        );
        let header = received_header(&Arrival {
            helo: self.server.client_name(),
            peer: self.conn.peer().ip(),
            by: &self.config.hostname,
            with,
            tls: self.tls,
            id: (!durable_fast).then_some(id),
            only_recipient: match txn.rcpts.as_slice() {
                [only] => Some(only),
                _ => None,
            },
            unix_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        });
        let mut queued = Vec::with_capacity(signatures.len() + header.len() + self.body.len());
        queued.extend_from_slice(signatures);
        queued.extend_from_slice(header.as_bytes());
        queued.extend_from_slice(&self.body);
        Bytes::from(queued)
    }

    /// The DKIM-Signature fields for the message in the body buffer, empty
    /// when no key matches its From domain. Signed on tokio's blocking
    /// pool (an RSA signature would hold the shard's loop for a quarter of
    /// a millisecond); the buffer goes there and comes back, uncopied.
    /// The Received header is not signed, so it need not be there yet.
    /// `None` only if the buffer did not come back.
    async fn dkim_signatures(&mut self) -> Option<Vec<u8>> {
        let shared = self.shard.shared.clone();
        let keys = shared.dkim.load_full();
        if keys.is_empty() {
            return Some(Vec::new());
        }
        let body = std::mem::take(&mut self.body);
        let work = tokio::task::spawn_blocking(move || {
            let signed =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dkim::sign(&keys, &body)));
            (body, signed)
        });
        // The closure cannot panic past catch_unwind, and a blocking task
        // that has started is never cancelled: the buffer comes back.
        let Ok((body, signed)) = work.await else {
            tracing::error!(target: "volley", "DKIM: the signing task was lost");
            return None;
        };
        self.body = body;
        Some(match signed {
            Ok(Ok(Signed::Headers(headers))) => headers,
            Ok(Ok(Signed::NoKey { domain })) => {
                let domain = domain.unwrap_or_else(|| "(no From field)".into());
                let mut seen = shared.dkim_unsigned.lock();
                if seen.len() < 10_000 && seen.insert(domain.clone()) {
                    tracing::info!(
                        target: "volley",
                        "no DKIM key for mail from {domain}: sent unsigned (said once per domain)"
                    );
                }
                Vec::new()
            }
            Ok(Err(why)) => {
                tracing::warn!(target: "volley", "DKIM: {why}: sent unsigned");
                Vec::new()
            }
            Err(_) => {
                tracing::error!(target: "volley", "DKIM: signing panicked: sent unsigned");
                Vec::new()
            }
        })
    }

    /// Empties the body buffer, keeping its room unless a large message
    /// left more than a session should hold while idle.
    fn clear_body(&mut self) {
        self.body.clear();
        if self.body.capacity() > MAX_KEPT_BODY_ROOM {
            self.body = Vec::new();
        }
    }

    fn over_budget(&self) -> bool {
        let budget = self.shard.shared.config.load().memory_budget;
        self.shard.shared.budget.held() >= budget / 100 * 95
    }

    /// The body is complete: make the message, route its recipients, and
    /// answer now (fast) or once the remote outcomes are in (safe).
    async fn complete(&mut self) {
        let mut txn = std::mem::take(&mut self.txn);
        let shard = self.shard.clone();
        let id = shard.next_message_id();
        let Some(signatures) = self.dkim_signatures().await else {
            // The body is gone: the Composer sends the message again.
            self.clear_body();
            let reply = Reply::new(
                451,
                EnhancedCode::new(4, 3, 0),
                "local error in processing, try again",
            );
            let _ = self.server.message_verdict_all(Verdict::Reject(reply));
            return;
        };
        let body = self.trace_and_body(&txn, id, &signatures);
        self.clear_body();
        let n = txn.rcpts.len();
        let (sender, rcpts) = txn.envelope_lines();
        match self.lc.ack {
            AckMode::Fast => {
                let durable = shard.shared.durable.is_some();
                // Only the journal needs a second handle on the body: a clone
                // costs a shared-count allocation per queued message.
                let (msg_body, journal_body) = if durable {
                    (body.clone(), body)
                } else {
                    (body, Bytes::new())
                };
                let msg = Message::new(
                    id,
                    Instant::now(),
                    &sender,
                    &rcpts,
                    msg_body,
                    None,
                    shard.shared.budget.clone(),
                )
                .declaring(txn.body_type);
                // Durable mode: the 250 is held until the journal has it.
                let before = self.held.mark(self.server.output().len());
                if durable {
                    let p = Pending {
                        start: txn.start,
                        before,
                        ticket: None,
                        msg,
                        keys: txn.keys,
                    };
                    // The journal's sender carries the declared BODY.
                    let sender = match p.msg.body_type() {
                        Some(_) => p.msg.journal_sender().to_string(),
                        None => sender,
                    };
                    self.held.push(p, (sender, rcpts, journal_body));
                } else {
                    shard.route_message(Arc::new(msg), txn.keys);
                }
                let _ = self.server.message_verdict_all(queued_as(id));
            }
            AckMode::Safe => {
                let (tx, mut rx) = mpsc::unbounded_channel();
                let msg = Message::new(
                    id,
                    Instant::now(),
                    &sender,
                    &rcpts,
                    body,
                    Some(tx),
                    shard.shared.budget.clone(),
                )
                .declaring(txn.body_type);
                let msg = Arc::new(msg);
                // SMTP gives one reply for all recipients: keep what it takes
                // to queue the deferred ones again if Volley must keep them.
                let keys = if self.lc.protocol == Protocol::Smtp && n > 1 {
                    txn.keys.clone()
                } else {
                    Vec::new()
                };
                shard.route_message(msg.clone(), txn.keys);
                let mut replies: Vec<Option<Reply>> = vec![None; n];
                let mut got = 0;
                let mut stop = shard.shared.stop.clone();
                let deadline = Instant::now() + Duration::from_secs(24 * 3600);
                while got < n {
                    tokio::select! {
                        r = rx.recv() => match r {
                            Some((i, reply)) => {
                                if let Some(slot) = replies.get_mut(i as usize) {
                                    if slot.is_none() {
                                        got += 1;
                                    }
                                    *slot = Some(reply);
                                }
                            }
                            None => break,
                        },
                        _ = stop.changed() => break,
                        _ = tokio::time::sleep_until(deadline.into()) => break,
                    }
                }
                let unknown = || {
                    Reply::new(
                        451,
                        EnhancedCode::new(4, 3, 2),
                        "outcome unknown: Volley is stopping",
                    )
                };
                // Recipients the core gave back to the Composer; those whose
                // outcome never came (Volley is stopping) are still queued.
                let returned: Vec<bool> = replies
                    .iter()
                    .map(|r| r.as_ref().is_some_and(|r| r.is_transient()))
                    .collect();
                let replies: Vec<Reply> = replies
                    .into_iter()
                    .map(|r| r.unwrap_or_else(unknown))
                    .collect();
                if self.lc.protocol == Protocol::Lmtp {
                    for r in replies {
                        let _ = self.server.message_verdict(verdict_of(r, id));
                    }
                } else if replies.iter().any(|r| r.code < 300) {
                    // One recipient is delivered: a 4xx now would make the
                    // Composer send it again. Volley answers 250 and keeps
                    // the deferred ones (the permanent ones stay bounced).
                    msg.composer_answered();
                    let deferred: Vec<(u32, Box<str>)> = (0u32..)
                        .zip(keys)
                        .zip(returned)
                        .filter(|(_, returned)| *returned)
                        .map(|(k, _)| k)
                        .collect();
                    shard.requeue_recipients(&msg, deferred);
                    let _ = self.server.message_verdict(queued_as(id));
                } else {
                    let _ = self
                        .server
                        .message_verdict(verdict_of(summarize(replies), id));
                }
            }
        }
    }
}

/// The 250 after the data names Volley's id for the message, the
/// `message_id` of its delivery log lines, so a Composer can match them.
fn queued_as(id: u64) -> Verdict {
    Verdict::AcceptWith(format!("OK queued as {id:016x}"))
}

/// Where the id starts in the reply line [`queued_as`] makes
/// (`250 2.0.0 OK queued as ` then 16 hex digits).
const QUEUED_AS_ID_AT: usize = "250 2.0.0 OK queued as ".len();
/// The whole line, CRLF included.
const QUEUED_AS_LINE: usize = QUEUED_AS_ID_AT + 16 + 2;

fn verdict_of(r: Reply, id: u64) -> Verdict {
    if r.code < 300 {
        queued_as(id)
    } else {
        Verdict::Reject(r)
    }
}

/// One SMTP reply for a safe-mode message none of whose recipients was
/// delivered: a transient failure if any (the Composer tries again and no
/// one gets a copy twice), else the first permanent one.
fn summarize(replies: Vec<Reply>) -> Reply {
    if let Some(r) = replies.iter().find(|r| r.is_transient()) {
        return r.clone();
    }
    if let Some(r) = replies.iter().find(|r| r.is_permanent()) {
        return r.clone();
    }
    replies
        .into_iter()
        .next()
        .unwrap_or_else(|| Reply::new(250, EnhancedCode::new(2, 0, 0), "delivered"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queued_as_line_has_the_id_where_it_is_overwritten() {
        let mut server = Server::new(ServerConfig {
            lmtp: true,
            ..ServerConfig::default()
        });
        let input = b"LHLO c\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<u@d.e>\r\nRCPT TO:<v@d.e>\r\nDATA\r\nx\r\n.\r\n";
        assert_eq!(server.receive(input), input.len());
        let mut at = 0;
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Mail { .. } => server.mail_verdict(Verdict::Accept).unwrap(),
                ServerEvent::Rcpt { .. } => server.rcpt_verdict(Verdict::Accept).unwrap(),
                ServerEvent::MessageComplete => {
                    at = server.output().len();
                    server.message_verdict_all(queued_as(7)).unwrap();
                }
                _ => {}
            }
        }
        for k in 0..2 {
            let offset = at + k * QUEUED_AS_LINE + QUEUED_AS_ID_AT;
            assert!(server.overwrite_output(offset, b"00000000000000ab"));
        }
        let out = String::from_utf8_lossy(&server.output()[at..]).to_string();
        assert_eq!(
            out,
            "250 2.0.0 OK queued as 00000000000000ab\r\n".repeat(2),
            "{out}"
        );
    }
}
