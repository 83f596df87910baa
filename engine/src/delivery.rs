//! One delivery connection: resolve, connect to the first MX host that is
//! not marked down, then take batches from the domain's queue until idle for
//! too long, max messages, eviction or shutdown; then QUIT.
//!
//! The SMTP conversation is volley-smtp's sans-IO [`Client`]; this module
//! only moves its bytes over the transport and applies its outcomes.
//!
//! A recipient is delivered twice only when the remote side accepted it and
//! its reply was lost (connection cut or timeout after the final dot): Volley
//! cannot tell that from a failure, so it tries again.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use volley_smtp::{
    Client, ClientConfig, ClientError, ClientEvent, EnhancedCode, Reply, SendError, Stage,
    Transaction,
};

use crate::config::QueueSettings;
use crate::dlog::Category;
use crate::message::Node;
use crate::outcome::{Outcome, settle};
use crate::pace;
use crate::queues::{ConnId, DomainId};
use crate::shard::{ConnCtl, Shard};
use crate::transport::{Conn, TransportError};

/// An MX host address to try, with the host's name for the log.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) host: Rc<str>,
    pub(crate) addr: SocketAddr,
}

/// An open SMTP session over one connection.
struct Session {
    conn: Conn,
    client: Client,
    buf: BytesMut,
    target: Target,
    shard: Rc<Shard>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.conn.shutdown();
        self.shard.shared.counters.connection_closed();
    }
}

fn stage_timeout(s: &QueueSettings, stage: Option<Stage>, deadline: Instant) -> Duration {
    let t = match stage {
        Some(Stage::Greeting) => s.greeting_timeout,
        Some(Stage::Body) => s.data_timeout,
        _ => s.command_timeout,
    };
    t.min(deadline.saturating_duration_since(Instant::now()))
        .max(Duration::from_millis(1))
}

impl Session {
    /// Writes what the client has to say and reads until it has an event.
    async fn next_event(&mut self, s: &QueueSettings, deadline: Instant) -> ClientEvent {
        loop {
            if let Some(ev) = self.client.poll_event() {
                return ev;
            }
            if self.client.is_over() {
                return ClientEvent::Closed;
            }
            let t = stage_timeout(s, self.client.awaiting(), deadline);
            let out: Vec<Bytes> = self.client.drain_output().collect();
            if !out.is_empty()
                && let Err(e) = self.conn.write_all(out, t).await
            {
                self.lost(e);
                continue;
            }
            let buf = std::mem::take(&mut self.buf);
            let (r, mut buf) = self.conn.read(buf, 4096, t).await;
            match r {
                Ok(_) => {
                    self.client.receive(&buf);
                    buf.clear();
                }
                Err(e) => self.lost(e),
            }
            self.buf = buf;
        }
    }

    fn lost(&mut self, e: TransportError) {
        match e {
            TransportError::Timeout { .. } => self.client.timed_out(),
            _ => self.client.connection_closed(),
        }
    }
}

/// Resolves the domain to the addresses to try, in order.
async fn targets(
    shard: &Rc<Shard>,
    name: &str,
    fixed: &[SocketAddr],
    s: &QueueSettings,
    port: u16,
) -> Result<Vec<Target>, volley_dns::ResolveError> {
    if !fixed.is_empty() {
        return Ok(fixed
            .iter()
            .take(s.mx_limit.max(1))
            .map(|a| Target {
                host: a.ip().to_string().into(),
                addr: *a,
            })
            .collect());
    }
    let route = shard.resolver.resolve(name).await?;
    let mut out = Vec::new();
    for h in route.hosts.iter().take(s.mx_limit.max(1)) {
        let host: Rc<str> = h.name.as_str().into();
        for ip in &h.addrs {
            out.push(Target {
                host: host.clone(),
                addr: SocketAddr::new(*ip, port),
            });
        }
    }
    Ok(out)
}

/// Runs one connection of domain `d` until it has nothing more to do.
pub(crate) async fn run(shard: Rc<Shard>, d: DomainId, id: ConnId, ctl: Rc<ConnCtl>) {
    let (name, settings, fixed) = {
        let qs = shard.queues.borrow();
        let dom = qs.domain(d);
        let queue = qs.queue(dom.queue);
        (
            dom.name.clone(),
            queue.settings.clone(),
            queue.fixed_mx.clone(),
        )
    };
    let reopen = match open(&shard, d, &name, &settings, &fixed).await {
        Ok(mut session) => {
            work(&shard, d, id, &ctl, &mut session, &settings).await;
            if !session.client.is_over() {
                session.client.quit();
                let deadline = Instant::now() + settings.command_timeout;
                let _ = session.next_event(&settings, deadline).await;
            }
            true
        }
        Err(OpenFailed { reopen }) => reopen,
    };
    shard.conn_ended(d, id, reopen);
}

/// No session could be opened. `reopen` is false when other connections of
/// the domain are open and carry its work: opening a replacement at once
/// would only fail again.
struct OpenFailed {
    reopen: bool,
}

/// Finds a route and an MX host that greets. When there is none, the
/// domain's pending recipients are settled (bounced for a permanent DNS
/// answer, deferred otherwise), unless other connections of the domain are
/// open and some MX host is still worth trying: those carry the work.
async fn open(
    shard: &Rc<Shard>,
    d: DomainId,
    name: &str,
    s: &Arc<QueueSettings>,
    fixed: &[SocketAddr],
) -> Result<Session, OpenFailed> {
    let config = shard.shared.config.load_full();
    let targets = match targets(shard, name, fixed, s, config.delivery_port).await {
        Ok(t) => t,
        Err(e) => {
            let permanent = e.is_permanent();
            let code = if permanent { 550 } else { 451 };
            let enhanced = parse_enhanced(e.enhanced_status()).unwrap_or(if permanent {
                EnhancedCode::new(5, 1, 2)
            } else {
                EnhancedCode::new(4, 4, 3)
            });
            let reply = Reply::new(code, enhanced, e.to_string());
            fail_pending(shard, d, &reply, Category::Dns);
            return Err(OpenFailed { reopen: true });
        }
    };
    let mut last_error = format!("all MX hosts of {name} are marked down after recent failures");
    let mut tried = false;
    let session_deadline = Instant::now() + s.session_timeout;
    for t in targets {
        if shard.is_host_down(t.addr, Instant::now()) {
            continue;
        }
        tried = true;
        let source = shard.shared.source_ip(&config);
        let mut throttled = false;
        match Conn::connect(t.addr, source, s.connect_timeout).await {
            Ok(conn) => {
                shard.shared.counters.connection_opened();
                let mut session = Session {
                    conn,
                    client: Client::new(ClientConfig {
                        helo_name: config.hostname.clone(),
                        ..ClientConfig::default()
                    }),
                    buf: BytesMut::with_capacity(4096),
                    target: t.clone(),
                    shard: shard.clone(),
                };
                match session.next_event(s, session_deadline).await {
                    ClientEvent::Ready { .. } => {
                        pace::connected(shard, d);
                        return Ok(session);
                    }
                    ClientEvent::Failed { error, .. } => {
                        throttled = pace::session_failed(shard, d, &error);
                        last_error = format!("{} [{}]: {error}", t.host, t.addr);
                    }
                    _ => {
                        pace::connect_failed(shard, d);
                        last_error = format!("{} [{}]: no greeting", t.host, t.addr);
                    }
                }
            }
            Err(e) => {
                pace::connect_failed(shard, d);
                last_error = format!("{} [{}]: {e}", t.host, t.addr);
            }
        }
        if throttled {
            // "Too many connections" (or slow down) at the greeting: the
            // limit is the domain's, so no other MX host is tried and none
            // is marked down; the controller has cut the connections. The
            // work stays queued: with no other connection open the domain
            // pauses (the queues come back to it), instead of every pending
            // recipient being deferred to the retry schedule.
            if shard.queues.borrow().conns_of(d) <= 1 {
                pace::pause(shard, d);
            }
            return Err(OpenFailed { reopen: true });
        }
        shard.mark_host_down(t.addr, s.host_down_for);
    }
    if tried && shard.queues.borrow().conns_of(d) > 1 {
        return Err(OpenFailed { reopen: false });
    }
    let reply = Reply::new(451, EnhancedCode::new(4, 4, 1), last_error);
    fail_pending(shard, d, &reply, Category::Connection);
    Err(OpenFailed { reopen: true })
}

fn parse_enhanced(text: &str) -> Option<EnhancedCode> {
    let mut it = text.split('.');
    let class = it.next()?.parse().ok()?;
    let subject = it.next()?.parse().ok()?;
    let detail = it.next()?.parse().ok()?;
    Some(EnhancedCode::new(class, subject, detail))
}

/// Settles every pending recipient of `d` with `reply`.
fn fail_pending(shard: &Rc<Shard>, d: DomainId, reply: &Reply, category: Category) {
    let nodes = shard.queues.borrow_mut().take_all(d);
    for node in nodes {
        settle(shard, d, node, Outcome::local(reply.clone(), category));
    }
}

/// Takes batches and delivers them until there is a reason to stop.
async fn work(
    shard: &Rc<Shard>,
    d: DomainId,
    id: ConnId,
    ctl: &Rc<ConnCtl>,
    session: &mut Session,
    s: &Arc<QueueSettings>,
) {
    let session_deadline = Instant::now() + s.session_timeout;
    let mut sent = 0usize;
    loop {
        if ctl.evicted.get()
            || shard.draining.get()
            || sent >= s.max_messages_per_connection
            || Instant::now() >= session_deadline
        {
            return;
        }
        // The controller may have cut the domain's connections below those
        // open, and paces transactions: wait for the next slot here, or
        // close when it is further off than an idle connection may wait
        // (the queues come back to the domain then).
        if pace::over_limit(shard, d) {
            return;
        }
        let has_work = shard.queues.borrow().has_pending(d);
        if has_work && let Err(at) = pace::acquire(shard, d) {
            let wait = at.saturating_duration_since(Instant::now());
            if wait > s.idle_timeout {
                return;
            }
            let _ = tokio::time::timeout(wait, ctl.notify.notified()).await;
            continue;
        }
        let batch = shard.queues.borrow_mut().take_batch(d);
        if batch.is_empty() {
            shard.queues.borrow_mut().conn_idle(d, id, Instant::now());
            let woke = tokio::time::timeout(s.idle_timeout, ctl.notify.notified())
                .await
                .is_ok();
            shard.queues.borrow_mut().conn_busy(id);
            if !woke {
                return;
            }
            continue;
        }
        let msg = batch[0].msg.clone();
        let remote_max = session.client.capabilities().and_then(|c| c.max_size);
        let size = msg.body.len() as u64;
        if size > s.max_message_size || remote_max.is_some_and(|m| m > 0 && size > m) {
            let reply = Reply::new(
                552,
                EnhancedCode::new(5, 3, 4),
                format!("message of {size} bytes exceeds the size limit for this destination"),
            );
            for node in batch {
                settle(
                    shard,
                    d,
                    node,
                    Outcome::local(reply.clone(), Category::Other),
                );
            }
            continue;
        }
        let tx = Transaction {
            reverse_path: msg.sender().to_string(),
            recipients: batch.iter().map(|n| n.recipient().to_string()).collect(),
            body: msg.body.clone(),
        };
        let started = Instant::now();
        match session.client.send(tx) {
            Ok(()) => {}
            Err(SendError::InvalidAddress { address, .. }) => {
                let reply = Reply::new(
                    553,
                    EnhancedCode::new(5, 1, 3),
                    format!("address {address:?} cannot be sent in SMTP"),
                );
                let all = address == msg.sender();
                for node in batch {
                    if all || node.recipient() == address {
                        settle(
                            shard,
                            d,
                            node,
                            Outcome::local(reply.clone(), Category::BadMailbox),
                        );
                    } else {
                        shard.queues.borrow_mut().requeue(d, node);
                    }
                }
                continue;
            }
            Err(SendError::SessionOver(_)) => {
                let mut q = shard.queues.borrow_mut();
                for node in batch.into_iter().rev() {
                    q.requeue(d, node);
                }
                return;
            }
        }
        sent += 1;
        let deadline = session_deadline.min(started + s.delivery_timeout);
        match session.next_event(s, deadline).await {
            ClientEvent::TransactionDone(outcome) => {
                let latency = started.elapsed();
                let throttled = pace::transaction(shard, d, &outcome, latency);
                for (i, (node, r)) in batch.into_iter().zip(outcome.recipients).enumerate() {
                    let refused = throttled.get(i).copied().unwrap_or(false);
                    let Some(node) = requeue_throttled(shard, d, node, refused) else {
                        continue;
                    };
                    settle(
                        shard,
                        d,
                        node,
                        Outcome {
                            reply: r.reply,
                            category: None,
                            target: Some(&session.target),
                            tx_latency: Some(latency),
                        },
                    );
                }
                pace::grow(shard, d);
            }
            ClientEvent::Failed { error, .. } => {
                // A reply (421 mid-session) or a timeout is a pace signal;
                // a session the remote cut after the body is a fault of
                // that session (the retry covers it), not a sign of load.
                let throttled = !matches!(error, ClientError::ConnectionClosed { .. })
                    && pace::session_failed(shard, d, &error);
                if matches!(error, ClientError::TimedOut { .. }) {
                    shard.mark_host_down(session.target.addr, s.host_down_for);
                }
                let reply = failure_reply(&error, &session.target);
                for node in batch {
                    let Some(node) = requeue_throttled(shard, d, node, throttled) else {
                        continue;
                    };
                    settle(
                        shard,
                        d,
                        node,
                        Outcome {
                            reply: reply.clone(),
                            category: Some(Category::Connection),
                            target: Some(&session.target),
                            tx_latency: None,
                        },
                    );
                }
                return;
            }
            ClientEvent::Ready { .. } | ClientEvent::Closed => {
                let reply = Reply::new(
                    451,
                    EnhancedCode::new(4, 4, 2),
                    format!("{} closed the session unexpectedly", session.target.host),
                );
                for node in batch {
                    settle(
                        shard,
                        d,
                        node,
                        Outcome::local(reply.clone(), Category::Connection),
                    );
                }
                return;
            }
        }
    }
}

/// The reply logged for recipients whose transaction failed with the session.
/// How many times in a row a throttling reply may send a recipient back to
/// its queue before it is deferred to its retry schedule like any 4yz.
const MAX_THROTTLE_REQUEUES: u8 = 5;

/// A recipient the remote refused with a throttling reply goes back to the
/// front of its domain's queue without counting an attempt: the controller
/// has cut the pace (and suspended the domain), so it goes again when the
/// pace allows, instead of waiting out a retry delay meant for failures.
/// Bounded by [`MAX_THROTTLE_REQUEUES`], so a remote that throttles one
/// recipient forever still sees it move down the retry schedule. Returns
/// the node when it is to be settled as usual.
fn requeue_throttled(
    shard: &Rc<Shard>,
    d: DomainId,
    mut node: Node,
    throttled: bool,
) -> Option<Node> {
    if !throttled || node.throttled >= MAX_THROTTLE_REQUEUES {
        node.throttled = 0;
        return Some(node);
    }
    node.throttled += 1;
    shard.queues.borrow_mut().requeue(d, node);
    None
}

fn failure_reply(error: &ClientError, t: &Target) -> Reply {
    let text = format!("{} [{}]: {error}", t.host, t.addr);
    match error {
        ClientError::ServiceClosing { reply, .. } => Reply {
            code: reply.code,
            enhanced: reply.enhanced,
            lines: vec![text],
        },
        ClientError::TimedOut { .. } => Reply::new(451, EnhancedCode::new(4, 4, 2), text),
        _ => Reply::new(451, EnhancedCode::new(4, 4, 2), text),
    }
}
