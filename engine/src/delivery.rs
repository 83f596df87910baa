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
use volley_dns::Validation;
use volley_smtp::{
    Client, ClientConfig, ClientError, ClientEvent, EnhancedCode, RecipientOutcome, Reply,
    SendError, Stage, Transaction,
};

use crate::config::{QueueSettings, TlsPolicy};
use crate::context::{ConnCtl, ShardCtx};
use crate::core::{ConnId, DomainId, Route, SiteVerdict};
use crate::dlog::Category;
use crate::message::Node;
use crate::metrics::bump;
use crate::mta_sts::Mode;
use crate::outcome::{Target, report};
use crate::queues::SiteHost;
use crate::tls::{TlsUsed, server_name};
use crate::transport::{Conn, TransportError};

/// An open SMTP session over one connection.
struct Session {
    conn: Conn,
    client: Client,
    buf: BytesMut,
    target: Target,
    ctx: Rc<ShardCtx>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.conn.shutdown();
        self.ctx.counters().connection_closed();
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

/// Resolves the domain to the addresses to try, in order, and whether
/// DNSSEC proved its MX records (what lets DANE apply to the hosts).
async fn targets(
    ctx: &ShardCtx,
    route: &Route,
    port: u16,
) -> Result<(Vec<Target>, bool), volley_dns::ResolveError> {
    let s = &route.settings;
    if !route.fixed.is_empty() {
        let fixed = route
            .fixed
            .iter()
            .take(s.mx_limit.max(1))
            .map(|a| Target {
                host: a.ip().to_string().into(),
                addr: *a,
                tls: None,
            })
            .collect();
        return Ok((fixed, false));
    }
    let mx = ctx.resolver().resolve(&route.name).await?;
    let mut out = Vec::new();
    for h in mx.hosts.iter().take(s.mx_limit.max(1)) {
        let host: Rc<str> = h.name.as_str().into();
        for ip in &h.addrs {
            out.push(Target {
                host: host.clone(),
                addr: SocketAddr::new(*ip, port),
                tls: None,
            });
        }
    }
    Ok((out, mx.mx_secure))
}

/// A delivery connection's hold on its domain: the connection slot the
/// queues counted for it, and the recipients it took and has not settled.
/// However the task ends (return, error, panic, cancellation), dropping
/// the slot gives both back: the recipients go to the head of the queue
/// untried and the slot is freed (reopened when the domain has work and
/// `reopen` says so).
struct Slot {
    ctx: Rc<ShardCtx>,
    /// The domain the connection was opened for.
    d: DomainId,
    id: ConnId,
    /// The domain of the held recipients: `d`, or another domain of its
    /// site.
    from: DomainId,
    held: Vec<Node>,
    reopen: bool,
}

impl Slot {
    /// Settles every held recipient: the `i`th with `replies.reply(i)`.
    /// Recipients a throttling reply refused go back to the queue instead
    /// (a few times), and the rest are reported.
    fn settle_held(
        &mut self,
        replies: Replies<'_>,
        category: Option<Category>,
        target: Option<&Target>,
        tx_latency: Option<Duration>,
    ) {
        let held = std::mem::take(&mut self.held);
        let d = self.from;
        let now = Instant::now();
        let ctx = &self.ctx;
        // Reporting touches the log, counters and channels, never the
        // core, so it runs as each recipient is settled: no list of
        // settled recipients per transaction.
        ctx.with_core(|c| {
            for (i, node) in held.into_iter().enumerate() {
                if let Some(node) = c.requeue_throttled(d, node, replies.throttled(i)) {
                    let settled = c.settle(d, node, replies.reply(i), category, now);
                    report(ctx, settled, replies.reply(i), target, tx_latency);
                }
            }
        });
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        let (d, from, id, reopen) = (self.d, self.from, self.id, self.reopen);
        self.ctx.forget_conn(id);
        self.ctx.with_core(|c| {
            c.conn_busy(id);
            for node in held.into_iter().rev() {
                c.requeue(from, node);
            }
            c.conn_ended(d, reopen, Instant::now());
        });
    }
}

/// The replies that settle a batch: one for all, or one per recipient
/// with the controller's reading of each.
#[derive(Clone, Copy)]
enum Replies<'a> {
    All {
        reply: &'a Reply,
        throttled: bool,
    },
    Each {
        outcomes: &'a [RecipientOutcome],
        throttled: &'a crate::core::Throttled,
    },
}

impl<'a> Replies<'a> {
    fn all(reply: &'a Reply) -> Replies<'a> {
        Replies::All {
            reply,
            throttled: false,
        }
    }

    fn reply(&self, i: usize) -> &'a Reply {
        match self {
            Replies::All { reply, .. } => reply,
            Replies::Each { outcomes, .. } => &outcomes[i].reply,
        }
    }

    fn throttled(&self, i: usize) -> bool {
        match self {
            Replies::All { throttled, .. } => *throttled,
            Replies::Each { throttled, .. } => throttled.get(i),
        }
    }
}

/// Runs one connection of domain `d` until it has nothing more to do.
pub(crate) async fn run(ctx: Rc<ShardCtx>, d: DomainId, id: ConnId, conn: Rc<ConnCtl>) {
    let mut slot = Slot {
        ctx: ctx.clone(),
        d,
        id,
        from: d,
        held: Vec::new(),
        reopen: true,
    };
    let route = ctx.read_core(|c| c.route(d));
    if let Some(mut session) = open(&mut slot, &route).await {
        work(&mut slot, &conn, &mut session, &route).await;
        if !session.client.is_over() {
            session.client.quit();
            let s = &route.settings;
            let deadline = Instant::now() + s.command_timeout;
            let _ = session.next_event(s, deadline).await;
            session.conn.close_tls(Duration::from_millis(100)).await;
        }
    }
}

/// Finds a route and an MX host that greets. When there is none, the
/// domain's pending recipients are settled (bounced for a permanent DNS
/// answer, deferred otherwise), unless other connections of the domain are
/// open and some MX host is still worth trying: those carry the work, and
/// the slot is not reopened.
async fn open(slot: &mut Slot, route: &Route) -> Option<Session> {
    let ctx = slot.ctx.clone();
    let d = slot.d;
    let s = &route.settings;
    let config = ctx.shared.config.load_full();
    let (targets, mx_secure) = match targets(&ctx, route, config.delivery_port).await {
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
            fail_pending(slot, false, &reply, Category::Dns);
            return None;
        }
    };
    let name = &route.name;
    let mut last_error = format!("all MX hosts of {name} are marked down after recent failures");
    let mut last_code = EnhancedCode::new(4, 4, 1);
    let mut last_category = Category::Connection;
    let mut tried = false;
    let session_deadline = Instant::now() + s.session_timeout;
    let (targets, tls_policy, rule) = apply_mta_sts(slot, route, targets).await?;
    let tls = ctx
        .shared
        .tls
        .load()
        .client(tls_policy, s.tls_ca_file.as_deref());
    if tls.is_none() && tls_policy == TlsPolicy::Verify {
        let reply = Reply::new(
            451,
            EnhancedCode::new(4, 7, 5),
            format!(
                "{rule} for {name}: no CA certificates to check MX hosts against (set tls_ca_file)"
            ),
        );
        fail_pending(slot, false, &reply, Category::Tls);
        return None;
    }
    // DANE needs the MX records proved, and a queue that does TLS.
    let dane_applies = config.resolver.dnssec && mx_secure && tls_policy != TlsPolicy::Disabled;
    // A domain whose MTA-STS policy checks its connections stays alone:
    // the policy says nothing of other domains on the same hosts.
    if route.fixed.is_empty() && rule != MTA_STS_ENFORCE {
        let hosts: Vec<SiteHost<'_>> = targets
            .iter()
            .map(|t| SiteHost {
                name: &t.host,
                addr: t.addr.ip(),
            })
            .collect();
        let mut verdict = ctx.with_core(|c| c.find_site(d, dane_applies, &hosts));
        if let SiteVerdict::Claim(key) = verdict {
            let owner = ctx.shared.site_owners.claim(&key, ctx.index);
            verdict = ctx.with_core(|c| c.settle_site(d, key, owner));
        }
        if verdict != SiteVerdict::Go {
            // The site's other connections carry the domain's recipients,
            // here or on the shard that holds the site.
            return None;
        }
    }
    for t in targets {
        if ctx.with_core(|c| c.is_host_down(t.addr, Instant::now())) {
            continue;
        }
        // A host whose TLSA records DNSSEC proved gets TLS checked against
        // them, whatever the queue's policy; one whose lookup failed is
        // not delivered to (RFC 7672 2.2).
        let dane = match dane_applies {
            true => match dane_records(&ctx, &t.host, config.delivery_port).await {
                Ok(found) => found,
                Err(why) => {
                    tried = true;
                    last_error = format!("{} [{}]: {why} (DANE)", t.host, t.addr);
                    last_code = EnhancedCode::new(4, 7, 5);
                    last_category = Category::Tls;
                    continue;
                }
            },
            false => None,
        };
        let (tls_policy, tls, rule, is_dane) = match dane {
            Some(records) => (
                TlsPolicy::Verify,
                Some(crate::tls::dane::client_config(records)),
                "DANE".to_string(),
                true,
            ),
            None => (tls_policy, tls.clone(), rule.clone(), false),
        };
        tried = true;
        let source = ctx.shared.source_ip(&config);
        let mut throttled = false;
        // Opportunistic TLS that failed its handshake tries once more in
        // clear text, and remembers the host.
        let mut clear_text = tls.is_none()
            || (tls_policy == TlsPolicy::Opportunistic
                && ctx.shared.broken_tls.is_broken(t.addr, Instant::now()));
        loop {
            let conn = match Conn::connect(t.addr, source, s.connect_timeout).await {
                Ok(conn) => conn,
                Err(e) => {
                    ctx.with_core(|c| c.connect_failed(d, Instant::now()));
                    last_error = format!("{} [{}]: {e}", t.host, t.addr);
                    break;
                }
            };
            ctx.counters().connection_opened();
            let mut session = Session {
                conn,
                client: Client::new(ClientConfig {
                    helo_name: config.hostname.clone(),
                    starttls: !clear_text,
                    ..ClientConfig::default()
                }),
                buf: BytesMut::with_capacity(4096),
                target: t.clone(),
                ctx: ctx.clone(),
            };
            let policy = Policy {
                tls: tls_policy,
                dane: is_dane,
                config: if clear_text { None } else { tls.clone() },
            };
            match greet(&mut session, s, session_deadline, &policy).await {
                Greeted::Ready => {
                    ctx.with_core(|c| c.connected(d, Instant::now()));
                    return Some(session);
                }
                Greeted::HandshakeFailed(why) if tls_policy == TlsPolicy::Opportunistic => {
                    tracing::info!(
                        "{} [{}]: {why}; delivering in clear text, without STARTTLS for {}",
                        t.host,
                        t.addr,
                        volley_units::format_duration(s.tls_broken_for)
                    );
                    ctx.shared
                        .broken_tls
                        .mark(t.addr, Instant::now(), s.tls_broken_for);
                    clear_text = true;
                    continue;
                }
                Greeted::HandshakeFailed(why) => {
                    last_error = format!("{} [{}]: {why} ({rule})", t.host, t.addr);
                    last_code = EnhancedCode::new(4, 7, 5);
                    last_category = Category::Tls;
                }
                Greeted::NoTls(why) => {
                    last_error = format!("{} [{}]: {why} ({rule})", t.host, t.addr);
                    last_code = EnhancedCode::new(4, 7, 10);
                    last_category = Category::Tls;
                }
                Greeted::Failed(error) => {
                    throttled = ctx.with_core(|c| c.session_failed(d, &error, Instant::now()));
                    last_error = format!("{} [{}]: {error}", t.host, t.addr);
                }
                Greeted::NoGreeting => {
                    ctx.with_core(|c| c.connect_failed(d, Instant::now()));
                    last_error = format!("{} [{}]: no greeting", t.host, t.addr);
                }
            }
            break;
        }
        if throttled {
            // "Too many connections" (or slow down) at the greeting: the
            // work stays queued and the core decides when to come back.
            ctx.with_core(|c| c.open_throttled(d, Instant::now()));
            return None;
        }
        ctx.with_core(|c| c.mark_host_down(d, t.addr, Instant::now()));
    }
    let reply = Reply::new(451, last_code, last_error);
    fail_pending(slot, tried, &reply, last_category);
    None
}

/// The rule's name when an MTA-STS policy in `enforce` mode checks a
/// domain's connections.
const MTA_STS_ENFORCE: &str = "MTA-STS enforce";

/// The domain's MTA-STS policy applied to its MX hosts: in `enforce`
/// mode only the hosts the policy names, each with its certificate
/// verified; otherwise the queue's own TLS policy. Returns the hosts, the
/// TLS policy and the rule's name for the log, or `None` when no host
/// may be used (the pending recipients are deferred).
async fn apply_mta_sts(
    slot: &mut Slot,
    route: &Route,
    mut targets: Vec<Target>,
) -> Option<(Vec<Target>, TlsPolicy, String)> {
    let s = &route.settings;
    let queue_rule = format!("tls = \"{}\"", s.tls);
    let sts = match &slot.ctx.shared.mta_sts {
        Some(m) if s.tls != TlsPolicy::Disabled && route.fixed.is_empty() => {
            m.policy(&route.name).await
        }
        _ => None,
    };
    let Some(policy) = sts else {
        return Some((targets, s.tls, queue_rule));
    };
    let unnamed: Vec<&str> = targets
        .iter()
        .filter(|t| !policy.allows(&t.host))
        .map(|t| &*t.host)
        .collect();
    match policy.mode {
        Mode::Enforce => {
            if !unnamed.is_empty() {
                tracing::debug!(
                    "MTA-STS policy of {} (enforce) names none of {unnamed:?}: skipped",
                    route.name
                );
            }
            targets.retain(|t| policy.allows(&t.host));
            if targets.is_empty() {
                let reply = Reply::new(
                    451,
                    EnhancedCode::new(4, 7, 5),
                    format!(
                        "no MX host of {} is named by its MTA-STS policy (enforce, mx {:?})",
                        route.name,
                        policy.mx()
                    ),
                );
                fail_pending(slot, false, &reply, Category::Tls);
                return None;
            }
            Some((targets, TlsPolicy::Verify, MTA_STS_ENFORCE.into()))
        }
        Mode::Testing | Mode::None => {
            if policy.mode == Mode::Testing && !unnamed.is_empty() {
                tracing::debug!(
                    "MTA-STS policy of {} (testing) names none of {unnamed:?}: delivered anyway",
                    route.name
                );
            }
            Some((targets, s.tls, queue_rule))
        }
    }
}

/// The usable TLSA records of `host` when DNSSEC proved them (`None`:
/// DANE does not apply to it), or why they could not be had.
async fn dane_records(
    ctx: &ShardCtx,
    host: &str,
    port: u16,
) -> Result<Option<Vec<volley_dns::TlsaRecord>>, String> {
    let answer = ctx
        .resolver()
        .tlsa(host, port)
        .await
        .map_err(|e| format!("TLSA lookup failed: {e}"))?;
    match answer.validation {
        Validation::Bogus => Err("TLSA records do not validate (DNSSEC bogus)".into()),
        Validation::Insecure => Ok(None),
        Validation::Secure => {
            let usable = crate::tls::dane::usable(&answer.records);
            Ok((!usable.is_empty()).then_some(usable))
        }
    }
}

/// What a queue's TLS policy asks of one connection.
struct Policy {
    tls: TlsPolicy,
    /// The certificate is checked against the host's TLSA records.
    dane: bool,
    /// The client configuration to handshake with; `None`: clear text.
    config: Option<Arc<rustls::ClientConfig>>,
}

/// How a new connection's greeting, hello and STARTTLS went.
enum Greeted {
    /// Transactions can flow.
    Ready,
    /// The session failed (a refused greeting, a 421, a timeout).
    Failed(ClientError),
    /// The policy needs TLS and the host does not offer it, or refused it.
    NoTls(String),
    /// The TLS handshake failed (bad certificate, broken TLS).
    HandshakeFailed(String),
    /// The connection closed before a greeting.
    NoGreeting,
}

/// Greets the host, upgrading to TLS on the way when it offers STARTTLS
/// and the policy wants it.
async fn greet(
    session: &mut Session,
    s: &QueueSettings,
    deadline: Instant,
    policy: &Policy,
) -> Greeted {
    let ctx = session.ctx.clone();
    let counters = ctx.counters();
    loop {
        match session.next_event(s, deadline).await {
            ClientEvent::StartTls => {
                let Some(config) = policy.config.clone() else {
                    return Greeted::NoTls("STARTTLS answered though not asked for".into());
                };
                let host = session.target.host.clone();
                let Some(name) = server_name(&host) else {
                    return Greeted::HandshakeFailed(format!(
                        "{host:?} is not a name TLS can check"
                    ));
                };
                let handshake = match rustls::ClientConnection::new(config, name) {
                    Ok(c) => c,
                    Err(e) => return Greeted::HandshakeFailed(format!("TLS setup: {e}")),
                };
                let t = s
                    .command_timeout
                    .min(deadline.saturating_duration_since(Instant::now()));
                match session.conn.start_tls(handshake.into(), t).await {
                    Ok(summary) => {
                        bump(if summary.resumed {
                            &counters.tls_resumed
                        } else {
                            &counters.tls_full_handshakes
                        });
                        session.target.tls = Some(TlsUsed::new(summary, policy.tls, policy.dane));
                        session.client.tls_established();
                    }
                    Err(e) => {
                        bump(&counters.tls_failed);
                        return Greeted::HandshakeFailed(format!("TLS handshake failed: {e}"));
                    }
                }
            }
            ClientEvent::StartTlsRefused { reply } if policy.tls.requires_tls() => {
                return Greeted::NoTls(format!("STARTTLS refused: {reply}"));
            }
            ClientEvent::StartTlsRefused { .. } => {}
            ClientEvent::Ready { .. } if policy.tls.requires_tls() && !session.client.is_tls() => {
                return Greeted::NoTls("STARTTLS not offered".into());
            }
            ClientEvent::Ready { .. } => return Greeted::Ready,
            ClientEvent::Failed { error, .. } => return Greeted::Failed(error),
            ClientEvent::TransactionDone(_) | ClientEvent::Closed => return Greeted::NoGreeting,
        }
    }
}

fn parse_enhanced(text: &str) -> Option<EnhancedCode> {
    let mut it = text.split('.');
    let class = it.next()?.parse().ok()?;
    let subject = it.next()?.parse().ok()?;
    let detail = it.next()?.parse().ok()?;
    Some(EnhancedCode::new(class, subject, detail))
}

/// No session could be opened: the core settles the domain's pending
/// recipients with `reply`, or leaves them to the domain's other
/// connections (then the slot is not reopened).
fn fail_pending(slot: &mut Slot, tried_a_host: bool, reply: &Reply, category: Category) {
    let d = slot.d;
    let (reopen, settled) = slot
        .ctx
        .with_core(|c| c.open_failed(d, tried_a_host, reply, category, Instant::now()));
    slot.reopen = reopen;
    for s in settled {
        report(&slot.ctx, s, reply, None, None);
    }
}

/// Takes batches and delivers them until there is a reason to stop.
async fn work(slot: &mut Slot, conn: &ConnCtl, session: &mut Session, route: &Route) {
    let ctx = slot.ctx.clone();
    let (d, id) = (slot.d, slot.id);
    let s: &Arc<QueueSettings> = &route.settings;
    let session_deadline = Instant::now() + s.session_timeout;
    let mut sent = 0usize;
    loop {
        if conn.evicted.get()
            || ctx.is_draining()
            || sent >= s.max_messages_per_connection
            || Instant::now() >= session_deadline
        {
            return;
        }
        // The controller may have cut the domain's connections below those
        // open, and paces transactions: wait for the next slot here, or
        // close when it is further off than an idle connection may wait
        // (the queues come back to the domain then).
        let pace = ctx.with_core(|c| {
            if c.over_limit(d) || !c.route_is_current(d, route) {
                Err(None)
            } else if c.pool_has_pending(d) {
                c.acquire(d, Instant::now()).map_err(Some)
            } else {
                Ok(())
            }
        });
        match pace {
            Ok(()) => {}
            Err(None) => return,
            Err(Some(at)) => {
                let wait = at.saturating_duration_since(Instant::now());
                if wait > s.idle_timeout {
                    return;
                }
                let _ = tokio::time::timeout(wait, conn.notify.notified()).await;
                continue;
            }
        }
        let (from, held) = ctx.with_core(|c| c.take_batch(d, Instant::now()));
        (slot.from, slot.held) = (from, held);
        if slot.held.is_empty() {
            ctx.with_core(|c| c.conn_idle(d, id, Instant::now()));
            let woke = tokio::time::timeout(s.idle_timeout, conn.notify.notified())
                .await
                .is_ok();
            ctx.with_core(|c| c.conn_busy(id));
            if !woke {
                return;
            }
            continue;
        }
        #[cfg(feature = "test-hooks")]
        crate::test_hooks::on_batch_taken(&route.name);
        let msg = slot.held[0].msg.clone();
        let remote_max = session.client.capabilities().and_then(|c| c.max_size);
        let body = match content_of(&ctx, &slot.held[0], s.max_message_size).await {
            Ok(body) => body,
            Err(why) => {
                let reply = Reply::new(
                    554,
                    EnhancedCode::new(5, 6, 0),
                    format!("the message could not be made from its template: {why}"),
                );
                slot.settle_held(Replies::all(&reply), Some(Category::Other), None, None);
                continue;
            }
        };
        let size = body.len() as u64;
        if size > s.max_message_size || remote_max.is_some_and(|m| m > 0 && size > m) {
            let reply = Reply::new(
                552,
                EnhancedCode::new(5, 3, 4),
                format!("message of {size} bytes exceeds the size limit for this destination"),
            );
            slot.settle_held(Replies::all(&reply), Some(Category::Other), None, None);
            continue;
        }
        let tx = Transaction {
            body_type: msg.body_type(),
            reverse_path: msg.sender().to_string(),
            recipients: slot
                .held
                .iter()
                .map(|n| n.recipient().to_string())
                .collect(),
            body,
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
                if address != msg.sender() {
                    // Only that recipient is refused; the others go back.
                    let (bad, good): (Vec<Node>, Vec<Node>) = std::mem::take(&mut slot.held)
                        .into_iter()
                        .partition(|n| n.recipient() == address);
                    ctx.with_core(|c| {
                        for node in good.into_iter().rev() {
                            c.requeue(from, node);
                        }
                    });
                    slot.held = bad;
                }
                slot.settle_held(Replies::all(&reply), Some(Category::BadMailbox), None, None);
                continue;
            }
            // The held recipients go back untried as the slot is dropped.
            Err(SendError::SessionOver(_)) => return,
        }
        sent += 1;
        let deadline = session_deadline.min(started + s.delivery_timeout);
        let target = session.target.clone();
        match session.next_event(s, deadline).await {
            ClientEvent::TransactionDone(outcome) => {
                let latency = started.elapsed();
                let throttled =
                    ctx.with_core(|c| c.transaction_done(d, &outcome, latency, Instant::now()));
                let replies = Replies::Each {
                    outcomes: &outcome.recipients,
                    throttled: &throttled,
                };
                slot.settle_held(replies, None, Some(&target), Some(latency));
                ctx.with_core(|c| c.grow(d, Instant::now()));
            }
            ClientEvent::Failed { error, .. } => {
                // A reply (421 mid-session) or a timeout is a pace signal;
                // a session the remote cut after the body is a fault of
                // that session (the retry covers it), not a sign of load.
                let throttled = ctx.with_core(|c| {
                    let now = Instant::now();
                    if matches!(error, ClientError::TimedOut { .. }) {
                        c.mark_host_down(d, target.addr, now);
                    }
                    !matches!(error, ClientError::ConnectionClosed { .. })
                        && c.session_failed(d, &error, now)
                });
                let reply = failure_reply(&error, &target);
                let replies = Replies::All {
                    reply: &reply,
                    throttled,
                };
                slot.settle_held(replies, Some(Category::Connection), Some(&target), None);
                return;
            }
            ClientEvent::Ready { .. }
            | ClientEvent::StartTls
            | ClientEvent::StartTlsRefused { .. }
            | ClientEvent::Closed => {
                let reply = Reply::new(
                    451,
                    EnhancedCode::new(4, 4, 2),
                    format!("{} closed the session unexpectedly", target.host),
                );
                slot.settle_held(Replies::all(&reply), Some(Category::Connection), None, None);
                return;
            }
        }
    }
}

/// What `node`'s recipient is sent: the body as it came, or its templated
/// message rendered now, just before the transaction (and signed, when a
/// DKIM key matches its From domain). The rendered buffer is freed once
/// the transaction is done.
async fn content_of(
    ctx: &ShardCtx,
    node: &Node,
    limit: u64,
) -> Result<Bytes, crate::template::RenderError> {
    if !node.msg.is_templated() {
        return Ok(node.msg.body.clone());
    }
    let rendered = node.msg.content_for(node.rcpt, limit)?;
    let keys = ctx.shared.dkim.load_full();
    if keys.is_empty() {
        return Ok(rendered);
    }
    // On tokio's blocking pool, as at ingest: an RSA signature would hold
    // the shard's loop for a quarter of a millisecond.
    let signing = tokio::task::spawn_blocking(move || {
        let signed = crate::dkim::sign(&keys, &rendered);
        (rendered, signed)
    });
    let Ok((rendered, signed)) = signing.await else {
        // A blocking task that started is never cancelled; it panicked.
        tracing::error!(target: "volley", "DKIM: the signing task was lost");
        return node.msg.content_for(node.rcpt, limit);
    };
    match signed {
        Ok(crate::dkim::Signed::Headers(mut signatures)) => {
            signatures.extend_from_slice(&rendered);
            Ok(Bytes::from(signatures))
        }
        Ok(crate::dkim::Signed::NoKey { .. }) => Ok(rendered),
        Err(why) => {
            tracing::warn!(target: "volley", "DKIM: {why}: sent unsigned");
            Ok(rendered)
        }
    }
}

/// The reply logged for recipients whose transaction failed with the
/// session.
fn failure_reply(error: &ClientError, t: &Target) -> Reply {
    let text = format!("{} [{}]: {error}", t.host, t.addr);
    match error {
        ClientError::ServiceClosing { reply, .. } => Reply {
            code: reply.code,
            enhanced: reply.enhanced,
            lines: vec![text],
        },
        _ => Reply::new(451, EnhancedCode::new(4, 4, 2), text),
    }
}
