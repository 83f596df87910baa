//! The glue between a domain's connections and its rate controller: what
//! delivery saw goes in (replies, latencies, failed connections), operator
//! rules are applied, and the controller's answer (may a transaction start,
//! may another connection open) comes out.
//!
//! Static queues have no controller: every function here is then a no-op
//! that allows everything.

use std::rc::Rc;
use std::time::{Duration, Instant};

use volley_smtp::{ClientError, DeliveryStatus, Reply, TransactionOutcome};

use crate::queues::DomainId;
use crate::rate::{LatencyKind, ReplyKind};
use crate::shard::Shard;

/// Asks to start one transaction now; `Err(at)`: not before `at`.
pub(crate) fn acquire(shard: &Shard, d: DomainId) -> Result<(), Instant> {
    let now = Instant::now();
    match shard.queues.borrow_mut().rate_mut(d, now) {
        Some(c) => c.try_acquire(now),
        None => Ok(()),
    }
}

/// Whether domain `d` has more connections than its limit allows now (the
/// controller cut it): the connection asking should close.
pub(crate) fn over_limit(shard: &Shard, d: DomainId) -> bool {
    let qs = shard.queues.borrow();
    qs.conns_of(d) > qs.conn_limit(d)
}

/// One reply from the destination that is a pace signal: every 4yz and
/// 5yz, and the reply that ends a transaction. Operator rules are matched
/// first, then the controller reads it.
/// Returns how the controller read it (`None`: static queue).
pub(crate) fn reply(shard: &Shard, d: DomainId, reply: &Reply) -> Option<ReplyKind> {
    let now = Instant::now();
    let mut qs = shard.queues.borrow_mut();
    let c = qs.rate_mut(d, now)?;
    let text = reply.text();
    if let Some(action) = shard.rules.match_reply(reply.code, reply.enhanced, &text) {
        tracing::info!(
            shard = shard.index,
            "rate rule matched \"{} {}\": {action:?}",
            reply.code,
            text
        );
        c.apply(now, &action);
    }
    Some(c.on_reply(now, reply.code, reply.enhanced, &text))
}

/// A transaction ended with a reply per recipient after `took`.
///
/// Each refused recipient's reply is fed (a 451 4.7.1 to RCPT is how
/// receivers meter); an accepted message counts once, with its latency.
/// Returns, per recipient, whether the controller read its reply as
/// throttling: empty (no allocation on the common path) when none was, as
/// always for a static queue.
pub(crate) fn transaction(
    shard: &Shard,
    d: DomainId,
    outcome: &TransactionOutcome,
    took: Duration,
) -> Vec<bool> {
    let mut accepted = None;
    let mut throttled = Vec::new();
    for (i, r) in outcome.recipients.iter().enumerate() {
        if r.status == DeliveryStatus::Delivered {
            accepted.get_or_insert(&r.reply);
        } else if reply(shard, d, &r.reply).is_some_and(ReplyKind::is_throttle) {
            throttled.resize(outcome.recipients.len(), false);
            throttled[i] = true;
        }
    }
    if let Some(ok) = accepted {
        let _ = reply(shard, d, ok);
        let now = Instant::now();
        if let Some(c) = shard.queues.borrow_mut().rate_mut(d, now) {
            c.on_latency(now, LatencyKind::Transaction, took);
        }
    }
    throttled
}

/// A session ended in error: a reply it carries (421 at greeting or
/// mid-session, a refused greeting) is a signal; a refused, timed-out or
/// dropped connection counts as a connection failure. True when the
/// controller read a throttling reply: the host is up, it only wants us
/// slower, and the controller has taken care of that.
pub(crate) fn session_failed(shard: &Shard, d: DomainId, error: &ClientError) -> bool {
    match error {
        ClientError::ServiceClosing { reply: r, .. }
        | ClientError::GreetingRejected { reply: r } => {
            let kind = reply(shard, d, r);
            if kind.is_some_and(|k| k == ReplyKind::ConnectionThrottle) {
                shard.queues.borrow_mut().hold_growth(d, Instant::now());
            }
            kind.is_some_and(ReplyKind::is_throttle)
        }
        _ => {
            connect_failed(shard, d);
            false
        }
    }
}

/// The only connection of `d` was refused with a throttling reply: pause
/// the domain for the controller's first backoff, so that the queues do not
/// reopen at once into the same refusal.
pub(crate) fn pause(shard: &Shard, d: DomainId) {
    let now = Instant::now();
    let mut qs = shard.queues.borrow_mut();
    let q = qs.domain(d).queue;
    let backoff = qs.queue(q).settings.rate.backoff_initial;
    if let Some(c) = qs.rate_mut(d, now) {
        c.apply(now, &crate::rate::Action::Suspend(backoff));
    }
}

/// A connection of `d` greeted: the controller learns how many the
/// destination has accepted at once.
pub(crate) fn connected(shard: &Shard, d: DomainId) {
    let now = Instant::now();
    let mut qs = shard.queues.borrow_mut();
    let open = qs.conns_of(d) as u32;
    if let Some(c) = qs.rate_mut(d, now) {
        c.on_connected(open);
    }
}

/// A connection could not be opened, or was dropped before its work ended.
pub(crate) fn connect_failed(shard: &Shard, d: DomainId) {
    let now = Instant::now();
    let mut qs = shard.queues.borrow_mut();
    if let Some(c) = qs.rate_mut(d, now) {
        c.on_connect_failure(now);
        qs.hold_growth(d, now);
    }
}

/// After a transaction: when the domain has work waiting and the
/// controller now allows more connections than are open, open them.
pub(crate) fn grow(shard: &Rc<Shard>, d: DomainId) {
    let mut acts = Vec::new();
    {
        let mut qs = shard.queues.borrow_mut();
        if !qs.is_live(d) || !qs.has_pending(d) || qs.conns_of(d) >= qs.conn_limit(d) {
            return;
        }
        qs.dispatch(d, Instant::now(), &mut acts);
    }
    shard.act(acts);
}
