//! The pace half of the core: what delivery saw goes into the domain's rate
//! controller (replies, latencies, failed connections), operator rules are
//! applied first, and the controller's answer (may a transaction start, may
//! another connection open) comes out.
//!
//! Static queues have no controller: every call here then allows
//! everything and learns nothing.

use std::time::{Duration, Instant};

use volley_smtp::{ClientError, DeliveryStatus, Reply, TransactionOutcome};

use super::{Core, DomainId, MAX_THROTTLE_REQUEUES};
use crate::message::Node;
use crate::rate::{Action as RateAction, LatencyKind, ReplyKind};

/// Which recipients of a transaction the controller read as throttled.
/// Empty (no allocation) on the common path where none was.
#[derive(Debug, Default)]
pub(crate) struct Throttled(Vec<bool>);

impl Throttled {
    pub(crate) fn get(&self, i: usize) -> bool {
        self.0.get(i).copied().unwrap_or(false)
    }
}

impl Core {
    /// Asks to start one transaction on `d` now; `Err(at)`: not before `at`.
    pub(crate) fn acquire(&mut self, d: DomainId, now: Instant) -> Result<(), Instant> {
        if let Some(until) = self.queues.held_until(d, now) {
            return Err(until);
        }
        match self.queues.pace_mut(d, now) {
            Some((c, Some(member), open)) => member.try_acquire(c, open, now),
            Some((c, None, _)) => c.try_acquire(now),
            None => Ok(()),
        }
    }

    /// Whether `d` has more connections than its limit allows now (the
    /// controller cut it): the connection asking should close.
    pub(crate) fn over_limit(&self, d: DomainId) -> bool {
        self.queues.conns_of(d) > self.queues.conn_limit(d) || self.queues.queue_over_limit(d)
    }

    /// One reply from the destination that is a pace signal: every 4yz and
    /// 5yz, and the reply that ends a transaction. Operator rules are
    /// matched first, then the controller reads it. `None`: static queue.
    pub(crate) fn pace_reply(
        &mut self,
        d: DomainId,
        reply: &Reply,
        now: Instant,
    ) -> Option<ReplyKind> {
        let c = self.queues.rate_mut(d, now)?;
        let text = reply.text();
        if let Some(action) = self.rules.match_reply(reply.code, reply.enhanced, &text) {
            tracing::info!(
                shard = self.index,
                "rate rule matched \"{} {}\": {action:?}",
                reply.code,
                text
            );
            c.apply(now, &action);
        }
        let kind = c.on_reply(now, reply.code, reply.enhanced, &text);
        if kind.is_throttle() {
            // A cut goes to the other hosts at the next sync, not at the
            // next transaction.
            self.queues.publish_pace(d);
        }
        Some(kind)
    }

    /// A transaction on `d` ended with a reply per recipient after `took`.
    ///
    /// Each refused recipient's reply is fed (a 451 4.7.1 to RCPT is how
    /// receivers meter); an accepted message counts once, with its latency.
    pub(crate) fn transaction_done(
        &mut self,
        d: DomainId,
        outcome: &TransactionOutcome,
        took: Duration,
        now: Instant,
    ) -> Throttled {
        let mut accepted = None;
        let mut throttled = Vec::new();
        for (i, r) in outcome.recipients.iter().enumerate() {
            if r.status == DeliveryStatus::Delivered {
                accepted.get_or_insert(&r.reply);
            } else if self
                .pace_reply(d, &r.reply, now)
                .is_some_and(ReplyKind::is_throttle)
            {
                throttled.resize(outcome.recipients.len(), false);
                throttled[i] = true;
            }
        }
        if let Some(ok) = accepted {
            let _ = self.pace_reply(d, ok, now);
            if let Some(c) = self.queues.rate_mut(d, now) {
                c.on_latency(now, LatencyKind::Transaction, took);
            }
        }
        Throttled(throttled)
    }

    /// A session of `d` ended in error: a reply it carries (421 at greeting
    /// or mid-session, a refused greeting) is a signal; a refused, timed-out
    /// or dropped connection counts as a connection failure. True when the
    /// controller read a throttling reply: the host is up, it only wants us
    /// slower, and the controller has taken care of that.
    pub(crate) fn session_failed(
        &mut self,
        d: DomainId,
        error: &ClientError,
        now: Instant,
    ) -> bool {
        match error {
            ClientError::ServiceClosing { reply: r, .. }
            | ClientError::GreetingRejected { reply: r } => {
                let kind = self.pace_reply(d, r, now);
                if kind == Some(ReplyKind::ConnectionThrottle) {
                    self.queues.hold_growth(d, now);
                    self.queues.connection_refused(d);
                }
                kind.is_some_and(ReplyKind::is_throttle)
            }
            _ => {
                self.connect_failed(d, now);
                false
            }
        }
    }

    /// A connection attempt of `d` was refused with a throttling reply. The
    /// limit is the domain's, so no other MX host is tried and none is
    /// marked down. When it was the only connection, the domain pauses for
    /// the controller's first backoff (the queues come back to it then)
    /// instead of reopening at once into the same refusal, or deferring
    /// every pending recipient to the retry schedule.
    pub(crate) fn open_throttled(&mut self, d: DomainId, now: Instant) {
        if self.queues.conns_of(d) > 1 {
            return;
        }
        let q = self.queues.domain(d).queue;
        let backoff = self.queues.queue(q).settings.rate.backoff_initial;
        if let Some(c) = self.queues.rate_mut(d, now) {
            c.apply(now, &RateAction::Suspend(backoff));
        }
    }

    /// A connection of `d` greeted: the controller learns how many the
    /// destination has accepted at once.
    pub(crate) fn connected(&mut self, d: DomainId, now: Instant) {
        let open = self.queues.conns_of(d) as u32;
        if let Some(c) = self.queues.rate_mut(d, now) {
            c.on_connected(open);
        }
    }

    /// A connection of `d` could not be opened, or was dropped before its
    /// work ended.
    pub(crate) fn connect_failed(&mut self, d: DomainId, now: Instant) {
        if let Some(c) = self.queues.rate_mut(d, now) {
            c.on_connect_failure(now);
            self.queues.hold_growth(d, now);
        }
    }

    /// After a transaction: when `d` (or its site) has work waiting and the controller
    /// now allows more connections than are open, open them.
    pub(crate) fn grow(&mut self, d: DomainId, now: Instant) {
        if !self.queues.is_live(d) || self.queues.conns_of(d) >= self.queues.conn_limit(d) {
            return;
        }
        if let Some(m) = self.queues.member_with_pending(d) {
            self.dispatch(m, now);
        }
    }

    /// A recipient the remote refused with a throttling reply goes back to
    /// the front of its domain's queue without counting an attempt: the
    /// controller has cut the pace (and suspended the domain), so it goes
    /// again when the pace allows, instead of waiting out a retry delay
    /// meant for failures. At most [`MAX_THROTTLE_REQUEUES`] times in a
    /// row, so a remote that throttles one recipient forever still sees it
    /// move down the retry schedule. Returns the node when it is to be
    /// settled as usual.
    pub(crate) fn requeue_throttled(
        &mut self,
        d: DomainId,
        mut node: Node,
        throttled: bool,
    ) -> Option<Node> {
        if !throttled || node.throttled >= MAX_THROTTLE_REQUEUES {
            node.throttled = 0;
            return Some(node);
        }
        node.throttled += 1;
        self.queues.requeue(d, node);
        None
    }
}
