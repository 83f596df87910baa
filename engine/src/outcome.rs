//! What happens to a recipient after an attempt: delivered, deferred to the
//! retry timers, bounced, expired (or handed to the fallback relay); one
//! delivery log line, the counters, and the safe-mode reply.

use std::rc::Rc;
use std::time::{Duration, Instant};

use volley_smtp::{EnhancedCode, Reply, ReplyClass};

use crate::delivery::Target;
use crate::dlog::{Category, Record, Status, unix_now};
use crate::message::Node;
use crate::metrics::bump;
use crate::queues::DomainId;
use crate::shard::Shard;

/// The result of one attempt for one recipient.
pub(crate) struct Outcome<'a> {
    /// The deciding reply: the remote one, or one Volley made up for a local
    /// failure (DNS, connection, size).
    pub(crate) reply: Reply,
    /// Set for local failures; remote replies are classified from the reply.
    pub(crate) category: Option<Category>,
    /// The MX host tried, if any.
    pub(crate) target: Option<&'a Target>,
    /// How long the remote transaction took (for the latency histograms).
    pub(crate) tx_latency: Option<Duration>,
}

impl Outcome<'_> {
    pub(crate) fn local(reply: Reply, category: Category) -> Outcome<'static> {
        Outcome {
            reply,
            category: Some(category),
            target: None,
            tx_latency: None,
        }
    }
}

/// Applies an outcome to a recipient taken from domain `d`'s queue.
pub(crate) fn settle(shard: &Rc<Shard>, d: DomainId, mut node: Node, out: Outcome<'_>) {
    let now = Instant::now();
    let attempt = u32::from(node.attempts) + 1;
    let (q, name, rate) = {
        let qs = shard.queues.borrow();
        let dom = qs.domain(d);
        (
            dom.queue,
            dom.name.clone(),
            dom.rate.as_ref().map(|c| c.snapshot(now)),
        )
    };
    let settings = shard.queues.borrow().queue(q).settings.clone();
    let counters = &shard.shared.counters;
    let safe = node.msg.safe.is_some();
    let age = now.duration_since(node.msg.received);
    let mut status = match out.reply.class() {
        ReplyClass::Positive => Status::Delivered,
        ReplyClass::Transient => Status::Deferred,
        ReplyClass::Intermediate | ReplyClass::Permanent => Status::Bounced,
    };
    let mut text = out.reply.text();
    let mut fallback = None;
    if status == Status::Deferred
        && !safe
        && (attempt >= settings.max_attempts || age >= settings.max_age)
    {
        match shard.fallback_of(q) {
            Some(fq) => {
                fallback = Some(fq);
                text = format!(
                    "{text} (given up after {attempt} attempts: handed to the fallback relay)"
                );
            }
            None => status = Status::Expired,
        }
    }
    let category = match status {
        Status::Delivered => None,
        _ => Some(
            out.category
                .unwrap_or_else(|| Category::of_reply(&out.reply)),
        ),
    };
    let message_id = format!("{:016x}", node.msg.id);
    shard.shared.dlog.write(&Record {
        time: unix_now(),
        message_id,
        sender: node.msg.sender(),
        recipient: node.recipient(),
        domain: &name,
        mx: out.target.map(|t| &*t.host),
        ip: out.target.map(|t| t.addr.ip().to_string()),
        attempt,
        status,
        code: Some(out.reply.code),
        enhanced: out.reply.enhanced.map(|e| e.to_string()),
        text,
        latency_ms: age.as_millis() as u64,
        category,
        rate,
    });
    if safe {
        node.msg.reply(node.rcpt, safe_reply(&out, status));
    }
    match status {
        Status::Delivered => {
            node.msg.finished(node.rcpt, true);
            bump(&counters.delivered);
            if let Some(l) = out.tx_latency {
                shard.latencies.record(&name, l.as_micros() as u64);
            }
            finish(shard, d);
        }
        Status::Bounced => {
            node.msg.finished(node.rcpt, false);
            bump(&counters.bounced);
            finish(shard, d);
        }
        Status::Expired => {
            node.msg.finished(node.rcpt, false);
            bump(&counters.expired);
            finish(shard, d);
        }
        Status::Deferred if safe => {
            // Safe mode: the Composer got the 4xx and keeps responsibility.
            bump(&counters.deferred);
            finish(shard, d);
        }
        Status::Deferred => {
            bump(&counters.deferred);
            if let Some(fq) = fallback {
                let mut acts = Vec::new();
                {
                    let mut qs = shard.queues.borrow_mut();
                    qs.moved_out(d);
                    let fd = qs.domain_id(&name, Some(fq));
                    node.attempts = 0;
                    qs.push(fd, node);
                    qs.dispatch(fd, now, &mut acts);
                    qs.maybe_remove(d);
                }
                shard.act(acts);
            } else {
                node.attempts = node.attempts.saturating_add(1);
                let due = now + settings.retry_delay(attempt);
                shard.queues.borrow_mut().defer(d, node, due);
                shard.retry_scheduled();
            }
        }
    }
}

fn finish(shard: &Rc<Shard>, d: DomainId) {
    shard.shared.counters.queued_sub(1);
    let mut qs = shard.queues.borrow_mut();
    qs.finished(d);
    qs.maybe_remove(d);
}

/// The reply a safe-mode Composer gets for a recipient.
fn safe_reply(out: &Outcome<'_>, status: Status) -> Reply {
    let host = out.target.map(|t| t.host.to_string()).unwrap_or_default();
    match status {
        Status::Delivered => Reply::new(
            250,
            EnhancedCode::new(2, 0, 0),
            format!("delivered to {host}: {}", out.reply.text()),
        ),
        _ => {
            let enhanced = out.reply.enhanced.unwrap_or(if out.reply.is_transient() {
                EnhancedCode::new(4, 0, 0)
            } else {
                EnhancedCode::new(5, 0, 0)
            });
            let prefix = if host.is_empty() {
                String::new()
            } else {
                format!("{host} said: ")
            };
            Reply::new(
                out.reply.code,
                enhanced,
                format!("{prefix}{}", out.reply.text()),
            )
        }
    }
}
