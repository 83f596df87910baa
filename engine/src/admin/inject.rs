//! Injection over HTTP: `POST /api/inject/v1` in KumoMTA's shape and
//! `POST /api/v1/inject` with Volley's additions (`ack`). One request is
//! one templated mailing: its content held once, each recipient's
//! variables beside its address, rendered on the owner shard when the
//! recipient is sent.
//!
//! The same limits hold as for SMTP ingest: a client outside the trusted
//! networks needs the admin token; recipients must be in the relay
//! domains (unless the client is trusted); the request may be no larger
//! than the message size limit, with no more recipients than a message may
//! have; a full memory budget answers 503 and a full journal quota 429.
//! A request is accepted whole or, for a recipient that cannot be sent
//! (a bad address, a name with control characters, a header that its
//! substitutions would break), without that recipient; nothing is queued
//! before the whole request was checked.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use volley_smtp::{BodyType, EnhancedCode, ForwardPath, Mailbox, Reply, parse_reverse_path};

use super::{AdminState, error, same};
use crate::context::Shared;
use crate::ingest::received::{Arrival, received_header};
use crate::message::Message;
use crate::metrics::bump;
use crate::template::request::{Ack, InjectRequest, InjectResponse, parse};
use crate::template::{MAILING_MARKER, Mailing, Personal, RenderError, vars};

/// Ids of messages injected over HTTP: their own range, beside the
/// shards' (shard number in the top bits) and the DSN writer's.
const API_ID_BASE: u64 = 0xfffe << 48;

/// How long a safe-mode request waits for its recipients' outcomes.
const SAFE_WAIT: Duration = Duration::from_secs(3600);

/// The next id of an injected message.
pub(super) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// `POST /api/inject/v1`: KumoMTA's request, answered once held.
pub(super) async fn inject_v1(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    inject(&state, peer, &headers, body, false).await
}

/// `POST /api/v1/inject`: the same request, with Volley's `ack`.
pub(super) async fn inject_volley(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    inject(&state, peer, &headers, body, true).await
}

/// A JSON error with a hint of when to come back.
fn busy(status: StatusCode, message: String) -> Response {
    let mut r = error(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
    r
}

async fn inject(
    state: &AdminState,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    own: bool,
) -> Response {
    let shared = state.monitor.shared().clone();
    let config = shared.config.load_full();
    let trusted = config.ingest.is_trusted(peer.ip());
    let token_given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token_ok = matches!((&state.token, token_given), (Some(t), Some(g)) if same(g.as_bytes(), t.as_bytes()));
    if !trusted && !token_ok {
        return error(
            StatusCode::UNAUTHORIZED,
            format!(
                "{} is not a trusted network: injecting needs the admin token (Authorization: Bearer TOKEN)",
                peer.ip()
            ),
        );
    }
    if shared.budget.held() >= config.memory_budget / 100 * 95 {
        return busy(
            StatusCode::SERVICE_UNAVAILABLE,
            "the memory budget for queued messages is reached: try again later".into(),
        );
    }
    if let Some(d) = &shared.durable
        && let Err(reply) = d.check_quota()
    {
        return busy(StatusCode::TOO_MANY_REQUESTS, reply.lines.join(" "));
    }
    let limit = config.ingest.max_message_size;
    let read = axum::body::to_bytes(body, limit.min(usize::MAX as u64) as usize);
    // A client that dribbles its body holds a connection (not the admin
    // thread) for at most the ingest command timeout, as over SMTP.
    let timeout = config.ingest.command_timeout;
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the request is larger than the message size limit of {limit} bytes, or was cut off"
                ),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} ms (ingest.command_timeout)",
                    timeout.as_millis()
                ),
            );
        }
    };
    let request = match parse(&bytes) {
        Ok(r) => r,
        Err(why) => return error(StatusCode::BAD_REQUEST, why),
    };
    drop(bytes);
    let ack = if own {
        request.ack.unwrap_or(Ack::Fast)
    } else {
        Ack::Fast
    };
    let max = config.ingest.max_recipients;
    if request.recipients.is_empty() {
        return error(StatusCode::BAD_REQUEST, "the request has no recipients");
    }
    if request.recipients.len() > max {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "{} recipients: at most {max} per request (ingest.max_recipients)",
                request.recipients.len()
            ),
        );
    }
    let prepared = {
        let shared = shared.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || prepare(&shared, &config, peer, trusted, request))
    };
    let prepared = match prepared.await {
        Ok(Ok(p)) => p,
        Ok(Err(why)) => return error(StatusCode::BAD_REQUEST, why),
        Err(_) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request could not be processed",
            );
        }
    };
    queue(&shared, prepared, ack).await
}

/// A checked request: the message to queue and what was refused.
struct Prepared {
    msg: Message,
    keys: Vec<Box<str>>,
    /// Each queued recipient's address, in the message's order.
    emails: Vec<String>,
    journal: (String, Vec<String>, Bytes),
    refused: InjectResponse,
}

/// Checks the request and builds its message. Run on tokio's blocking
/// pool: a request of thousands of recipients is milliseconds of work.
fn prepare(
    shared: &Shared,
    config: &crate::config::Config,
    peer: SocketAddr,
    trusted: bool,
    request: InjectRequest,
) -> Result<Prepared, String> {
    let sender = match parse_reverse_path(&format!("<{}>", request.envelope_sender)) {
        Ok(Some(m)) => m.to_string(),
        Ok(None) => String::new(),
        Err(e) => {
            return Err(format!(
                "envelope_sender {:?}: {e}",
                request.envelope_sender
            ));
        }
    };
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let id = API_ID_BASE | NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let keys = vars::key_list(request.recipients.first().map(|r| &r.substitutions));
    let received = received_header(&Arrival {
        helo: None,
        peer: peer.ip(),
        by: &config.hostname,
        with: "HTTP",
        tls: None,
        id: shared.durable.is_none().then_some(id),
        only_recipient: match request.recipients.as_slice() {
            [only] => Some(only.email.as_str()),
            _ => None,
        },
        unix_secs: now_unix,
    });
    let mailing = Mailing {
        dialect: request.template_dialect,
        content: request.content,
        substitutions: request.substitutions,
        keys: keys.clone(),
        received,
        date: crate::date::rfc5322_date(now_unix),
        token: format!("{id:016x}{:08x}", unpredictable() as u32),
        hostname: config.hostname.clone(),
    };
    let body = serde_json::to_vec(&mailing).map_err(|e| e.to_string())?;
    let personal = Personal::from_body(&body, &shared.templates)?;
    let limit = config.ingest.max_message_size.min(usize::MAX as u64) as usize;
    let mut refused = InjectResponse::default();
    let mut lines = Vec::with_capacity(request.recipients.len());
    let mut routing = Vec::with_capacity(request.recipients.len());
    let mut emails = Vec::with_capacity(request.recipients.len());
    let mut tried_whole = false;
    for r in &request.recipients {
        let checked = check_recipient(&config.ingest, trusted, r, &keys).and_then(|(line, key)| {
            // The first recipient's whole message is rendered now: a
            // template that loops or grows without end fails the request
            // here, not at send time. Every other recipient's header
            // section is rendered too (a CR or LF there is its own error).
            personal
                .check(&line, limit, !tried_whole)
                .map_err(|e| match e {
                    RenderError::Header(why) => Refusal::Recipient(why),
                    RenderError::Damaged(why) => Refusal::Recipient(why),
                    e => Refusal::Request(e.to_string()),
                })?;
            Ok((line, key))
        });
        match checked {
            Ok((line, key)) => {
                tried_whole = true;
                emails.push(r.email.clone());
                lines.push(line);
                routing.push(key.into_boxed_str());
            }
            Err(Refusal::Request(why)) => return Err(why),
            Err(Refusal::Recipient(why)) => {
                refused.fail_count += 1;
                refused.failed_recipients.push(r.email.clone());
                refused.errors.push(format!("{}: {why}", r.email));
            }
        }
    }
    let eight_bit = matches!(mailing.content, crate::template::request::Content::Whole(_))
        && (!body.is_ascii() || lines.iter().any(|l| !l.is_ascii()));
    let body = Bytes::from(body);
    let sender_line = format!("{MAILING_MARKER}{sender}");
    let msg = Message::new(
        id,
        Instant::now(),
        &sender_line,
        &lines,
        body.clone(),
        None,
        shared.budget.clone(),
    )
    .declaring(eight_bit.then_some(BodyType::EightBitMime))
    .personalized(personal);
    let journal = (msg.journal_sender().to_string(), lines, body);
    Ok(Prepared {
        msg,
        keys: routing,
        emails,
        journal,
        refused,
    })
}

/// A number no other run draws alike (the standard library's random
/// hasher keys), so that two runs' Message-IDs and MIME boundaries differ.
fn unpredictable() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Why a recipient is not queued.
enum Refusal {
    /// This recipient only: the others go.
    Recipient(String),
    /// The request as a whole (its template fails to run, or makes a
    /// message over the size limit): nothing is queued.
    Request(String),
}

/// One recipient's address-text line and routing key, or why it cannot
/// be sent.
fn check_recipient(
    ingest: &crate::config::IngestConfig,
    trusted: bool,
    r: &crate::template::request::Recipient,
    keys: &[String],
) -> Result<(String, String), Refusal> {
    let bad = |e: volley_smtp::AddressError| Refusal::Recipient(format!("bad address: {e}"));
    let mailbox = Mailbox::parse(&r.email).map_err(bad)?;
    let key = mailbox.domain.routing_key().map_err(bad)?;
    if !trusted {
        crate::ingest::relay::rcpt_policy(ingest, &ForwardPath::Mailbox(mailbox.clone()))
            .map_err(|reply| Refusal::Recipient(reply.lines.join(" ")))?;
    }
    if let Some(name) = &r.name
        && name.chars().any(char::is_control)
    {
        return Err(Refusal::Recipient(
            "the name holds a control character (CR, LF or another)".into(),
        ));
    }
    let mut line = mailbox.to_string();
    vars::encode(&mut line, r.name.as_deref(), &r.substitutions, keys);
    Ok((line, key))
}

/// Journals (durable mode) and queues a checked request, and answers.
async fn queue(shared: &Arc<Shared>, p: Prepared, ack: Ack) -> Response {
    let Prepared {
        mut msg,
        keys,
        emails,
        journal,
        mut refused,
    } = p;
    if keys.is_empty() {
        refused.ack = "none";
        return (StatusCode::OK, axum::Json(refused)).into_response();
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let safe = ack == Ack::Safe;
    if safe {
        msg = msg.waited_for(tx);
    }
    let mut acked = if safe { "delivery" } else { "memory" };
    if let Some(durable) = shared.durable.as_ref().filter(|_| !safe) {
        let writer = (msg.id as usize) % durable.writer_count();
        let Some(ticket) = durable.append_many(writer, vec![journal]).pop() else {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the journal took no message",
            );
        };
        match ticket.await {
            Ok(Ok(seq)) => durable.accepted(writer, &mut msg, seq),
            Ok(Err(e)) => {
                let reply = durable.refused(writer, &e);
                return busy(StatusCode::SERVICE_UNAVAILABLE, reply.lines.join(" "));
            }
            Err(_) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the journal writer stopped",
                );
            }
        }
        acked = "disk";
    }
    let own = shared.counters.last();
    if let Some(c) = own {
        bump(&c.received);
        c.recipients_received
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
    }
    let id = msg.id;
    let msg = Arc::new(msg);
    let n = keys.len();
    let kept = shared.router.hand_off(&msg, (0u32..).zip(keys), None);
    let mut answer = refused;
    answer.id = Some(format!("{id:016x}"));
    answer.ack = acked;
    // Recipients whose shard is stopping stay unqueued; in durable fast
    // mode they are in the journal and go after the restart.
    let unqueued: Vec<u32> = if shared.durable.is_none() || safe {
        kept.iter()
            .flat_map(|h| h.rcpts.iter().map(|(i, _)| *i))
            .collect()
    } else {
        Vec::new()
    };
    drop(kept);
    let stopping = Reply::new(
        451,
        EnhancedCode::new(4, 3, 2),
        "Volley is stopping: send it again",
    );
    let mut replies: Vec<Option<Reply>> = vec![None; n];
    for &i in &unqueued {
        replies[i as usize] = Some(stopping.clone());
    }
    let mut got = unqueued.len();
    if !safe {
        // Fast: every recipient queued counts; the unqueued get their 451.
        for r in replies.iter_mut().filter(|r| r.is_none()) {
            *r = Some(Reply::new(250, EnhancedCode::new(2, 0, 0), "queued"));
        }
        got = n;
    }
    let mut stop = shared.stop.clone();
    let deadline = tokio::time::Instant::now() + SAFE_WAIT;
    while got < n {
        tokio::select! {
            r = rx.recv() => match r {
                Some((i, reply)) => {
                    if let Some(slot) = replies.get_mut(i as usize)
                        && slot.is_none()
                    {
                        got += 1;
                        *slot = Some(reply);
                    }
                }
                None => break,
            },
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    for (i, reply) in replies.into_iter().enumerate() {
        match reply {
            Some(r) if r.code < 300 => answer.success_count += 1,
            Some(r) => {
                answer.fail_count += 1;
                answer.failed_recipients.push(emails[i].clone());
                answer
                    .errors
                    .push(format!("{}: {} {}", emails[i], r.code, r.lines.join(" ")));
            }
            None => {
                // Stopping, or no outcome within the wait: it stays queued.
                let unknown = Reply::new(451, EnhancedCode::new(4, 3, 2), "outcome unknown");
                answer.fail_count += 1;
                answer.failed_recipients.push(emails[i].clone());
                answer.errors.push(format!(
                    "{}: {} {}: it may still be delivered",
                    emails[i],
                    unknown.code,
                    unknown.lines.join(" ")
                ));
            }
        }
    }
    (StatusCode::OK, axum::Json(answer)).into_response()
}
