//! What the drivers do with an attempt the core has settled: one delivery
//! log line, the counters, the latency histogram, the safe-mode reply and
//! the journal's finish record.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use volley_smtp::{EnhancedCode, Reply};

use crate::context::ShardCtx;
use crate::core::{Settled, Verdict};
use crate::dlog::{Record, Status, unix_now};
use crate::metrics::bump;
use crate::tls::TlsUsed;

/// An MX host address to try, with the host's name for the log, and how
/// TLS went once a session with it is open.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) host: Rc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: Option<TlsUsed>,
}

/// Reports one settled attempt. `reply` is the one the core settled with;
/// `target` the MX host tried, if any; `tx_latency` how long the remote
/// transaction took.
pub(crate) fn report(
    ctx: &ShardCtx,
    s: Settled,
    reply: &Reply,
    target: Option<&Target>,
    tx_latency: Option<Duration>,
) {
    let counters = ctx.counters();
    let dsn = ctx.shared.config.load().dsn;
    let note = match dsn.enabled {
        true => crate::dsn::note_for(&s, reply, target.map(|t| &*t.host), dsn.delay_after),
        false => None,
    };
    let msg = &s.msg;
    let record = Record {
        time: unix_now(),
        message_id: format!("{:016x}", msg.id),
        message_id_header: msg.header_message_id(),
        sender: msg.sender(),
        recipient: msg.recipient(s.rcpt),
        domain: &s.domain,
        mx: target.map(|t| &*t.host),
        ip: target.map(|t| t.addr.ip().to_string()),
        tls: target.and_then(|t| t.tls),
        attempt: s.attempt,
        status: s.status,
        code: Some(reply.code),
        enhanced: reply.enhanced.map(|e| e.to_string()),
        text: s.text,
        latency_ms: s.age.as_millis() as u64,
        category: s.category,
        rate: s.rate,
    };
    // One JSON text serves the delivery log and the event feed.
    let events = ctx.shared.events.as_ref();
    if (events.is_some() || ctx.shared.dlog.is_on())
        && let Ok(line) = serde_json::to_string(&record)
    {
        if let Some(feed) = events {
            feed.offer(line.clone());
        }
        ctx.shared.dlog.write_line(line);
    }
    if msg.composer_waits() {
        msg.reply(s.rcpt, safe_reply(reply, s.status, target));
    }

    // A failure's finish record waits for its notification to be queued.
    let finish_now = note.as_ref().is_none_or(|n| !n.holds_finish());
    if let Some(note) = note {
        ctx.shared.dsn.offer(note);
    }
    match s.status {
        Status::Delivered => {
            bump(&counters.delivered);
            if let Some(l) = tx_latency {
                ctx.latencies.record(l.as_micros() as u64);
            }
        }
        Status::Bounced => counters.given_up(false, s.category),
        Status::Expired => counters.given_up(true, s.category),
        Status::Deferred => bump(&counters.deferred),
    }
    match s.verdict {
        Verdict::Final => {
            if finish_now {
                msg.finished(s.rcpt, s.status == Status::Delivered);
            }
            counters.queued_sub(1);
        }
        Verdict::ReturnedToComposer => counters.queued_sub(1),
        Verdict::Retry { .. } | Verdict::Fallback => {}
    }
}

/// The reply a safe-mode Composer gets for a recipient.
fn safe_reply(reply: &Reply, status: Status, target: Option<&Target>) -> Reply {
    let host = target.map(|t| t.host.to_string()).unwrap_or_default();
    match status {
        Status::Delivered => Reply::new(
            250,
            EnhancedCode::new(2, 0, 0),
            format!("delivered to {host}: {}", reply.text()),
        ),
        _ => {
            let enhanced = reply.enhanced.unwrap_or(if reply.is_transient() {
                EnhancedCode::new(4, 0, 0)
            } else {
                EnhancedCode::new(5, 0, 0)
            });
            let prefix = if host.is_empty() {
                String::new()
            } else {
                format!("{host} said: ")
            };
            Reply::new(reply.code, enhanced, format!("{prefix}{}", reply.text()))
        }
    }
}
