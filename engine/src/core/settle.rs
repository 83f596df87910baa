//! The decision half of an attempt's outcome: delivered, deferred to its
//! retry time, bounced, expired, or handed to the fallback relay. The queue
//! map is updated here; what the drivers must still do (the delivery log
//! line, the counters, the safe-mode reply, the journal's finish record)
//! comes back as a [`Settled`].

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use volley_smtp::{Reply, ReplyClass};

use super::{Core, DomainId};
use crate::dlog::{Category, Status};
use crate::message::{Message, Node};
use crate::rate::RateSnapshot;

/// What became of the recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Final: delivered, bounced or expired; it left the queues.
    Final,
    /// Back in the queues until `due` (counted as an attempt).
    Retry { due: Instant },
    /// Moved to the fallback relay's queue, attempts counted from zero.
    Fallback,
    /// Safe mode: deferred, and the Composer, told so, keeps the
    /// responsibility; it left the queues.
    ReturnedToComposer,
}

/// One recipient's attempt, decided: what the drivers log and report.
pub(crate) struct Settled {
    pub(crate) msg: Arc<Message>,
    pub(crate) rcpt: u32,
    /// This attempt's number, from 1.
    pub(crate) attempt: u32,
    pub(crate) status: Status,
    pub(crate) verdict: Verdict,
    /// Why it was not delivered (`None` when it was).
    pub(crate) category: Option<Category>,
    /// The reply's text, with what Volley did about it when that is not
    /// plain from the status.
    pub(crate) text: String,
    pub(crate) domain: Rc<str>,
    /// The domain's pace at the time, when adaptive.
    pub(crate) rate: Option<RateSnapshot>,
    /// Time since ingest accepted the message.
    pub(crate) age: Duration,
    /// How much longer a deferred recipient is tried before it expires
    /// (its queue's max age less `age`).
    pub(crate) retry_left: Duration,
}

impl Core {
    /// Applies the outcome of one attempt to a recipient taken from `d`:
    /// `reply` is the remote one, or one Volley made up for a local failure
    /// (then `category` says which kind). A deferred recipient's next
    /// attempt comes by its `max_age` at the latest: it expires then, with
    /// the receiver's reply.
    pub(crate) fn settle(
        &mut self,
        d: DomainId,
        mut node: Node,
        reply: &Reply,
        category: Option<Category>,
        now: Instant,
    ) -> Settled {
        let attempt = u32::from(node.attempts) + 1;
        let (q, domain, rate) = {
            let dom = self.queues.domain(d);
            (
                dom.queue,
                dom.name.clone(),
                self.queues.rate_snapshot(d, now),
            )
        };
        let settings = self.queues.queue(q).settings.clone();
        let safe = node.msg.composer_waits();
        let age = now.saturating_duration_since(node.msg.received);
        let mut status = match reply.class() {
            ReplyClass::Positive => Status::Delivered,
            ReplyClass::Transient => Status::Deferred,
            ReplyClass::Intermediate | ReplyClass::Permanent => Status::Bounced,
        };
        let mut text = reply.text();
        let mut fallback = None;
        if status == Status::Deferred
            && !safe
            && (attempt >= settings.max_attempts || age >= settings.max_age)
        {
            match self.queues.fallback_of(q) {
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
            _ => Some(category.unwrap_or_else(|| Category::of_reply(reply))),
        };
        let msg = node.msg.clone();
        let rcpt = node.rcpt;
        let verdict = match status {
            Status::Delivered | Status::Bounced | Status::Expired => {
                self.left(d);
                Verdict::Final
            }
            Status::Deferred if safe => {
                self.left(d);
                Verdict::ReturnedToComposer
            }
            Status::Deferred => match fallback {
                Some(fq) => {
                    self.queues.moved_out(d);
                    let fd = self.queues.domain_id(&domain, Some(fq));
                    node.attempts = 0;
                    self.queues.push(fd, node);
                    self.dispatch(fd, now);
                    self.queues.maybe_remove(d);
                    Verdict::Fallback
                }
                None => {
                    node.attempts = node.attempts.saturating_add(1);
                    // The last attempt comes at its max_age, not after.
                    let expires = node.msg.received + settings.max_age;
                    let due = (now + settings.retry_delay(attempt)).min(expires);
                    self.queues.defer(d, node, due);
                    Verdict::Retry { due }
                }
            },
        };
        Settled {
            msg,
            rcpt,
            attempt,
            status,
            verdict,
            category,
            text,
            domain,
            rate,
            age,
            retry_left: settings.max_age.saturating_sub(age),
        }
    }

    /// A recipient of `d` left the queues for good.
    fn left(&mut self, d: DomainId) {
        self.queues.finished(d);
        self.queues.maybe_remove(d);
    }
}
