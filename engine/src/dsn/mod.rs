//! Delivery status notifications (RFC 3461, 3462, 3464): when Volley gives
//! up on a recipient it accepted, the envelope sender gets a bounce
//! message; a delay or a delivery too, when the Composer asked (NOTIFY).
//!
//! Shards only decide whether an outcome calls for a notification
//! ([`note_for`]) and hand a [`Note`] to one thread of its own, never a
//! shard's, which gathers the notes of one message: it writes one
//! notification per message and batch of outcomes, once the message has
//! no recipient left in the queues or, for one still being tried, a few
//! seconds after its first note. The notification is a message from the
//! null sender `<>` to the original sender, queued through Volley's own
//! queues (and its journal, in durable mode), signed with DKIM when a key
//! matches Volley's host name. A message from the null sender never gets
//! one, so bounces cannot loop.
//!
//! In durable mode a failed recipient's finish record is written only
//! once its notification is in the journal: a crash in between tries the
//! recipient again after the restart (and bounces it again), so no
//! notification is lost.

mod report;
mod request;

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use volley_smtp::{EnhancedCode, Reply};

use crate::core::{Settled, Verdict};
use crate::dlog::{Category, Status, unix_now};
use crate::message::Message;
pub(crate) use report::{RecipientStatus, Report, Returned};
pub(crate) use request::{Action, RecipientRequest, SenderRequest};

/// One recipient outcome a notification reports.
pub(crate) struct Note {
    pub(crate) msg: Arc<Message>,
    pub(crate) rcpt: u32,
    pub(crate) action: Action,
    pub(crate) status: EnhancedCode,
    /// The MX host that gave the reply, if one did.
    pub(crate) remote_mta: Option<String>,
    /// The reply's code, and its enhanced code and text.
    pub(crate) reply: (u16, String),
    pub(crate) category: Option<Category>,
    pub(crate) at_unix: u64,
    /// For a delay: until when the recipient is tried.
    pub(crate) retry_until_unix: Option<u64>,
}

impl Note {
    /// Whether the recipient's finish record waits for the notification
    /// (a failure: so that a crash cannot lose it).
    pub(crate) fn holds_finish(&self) -> bool {
        self.action == Action::Failed
    }
}

/// Decides whether the settled outcome `s` calls for a notification, and
/// what it says. `remote_mta` is the MX host that gave `reply`, if one
/// did; `delay_after` the `[dsn]` setting.
pub(crate) fn note_for(
    s: &Settled,
    reply: &Reply,
    remote_mta: Option<&str>,
    delay_after: Option<Duration>,
) -> Option<Note> {
    let msg = &s.msg;
    if msg.sender().is_empty() || msg.composer_waits() {
        return None;
    }
    let action = match (s.status, &s.verdict) {
        (Status::Bounced | Status::Expired, Verdict::Final) => Action::Failed,
        (Status::Delivered, Verdict::Final) => Action::Relayed,
        (Status::Deferred, Verdict::Retry { .. }) if delay_after.is_some_and(|d| s.age >= d) => {
            Action::Delayed
        }
        _ => return None,
    };
    if !RecipientRequest::parse(msg.recipient_params(s.rcpt)).wants(action) {
        return None;
    }
    let own = |class, fallback: (u8, u16, u16)| match reply.enhanced {
        Some(e) if e.class == class => e,
        _ => EnhancedCode::new(fallback.0, fallback.1, fallback.2),
    };
    let status = match (action, s.status) {
        // RFC 3463 4.4.7: delivery time expired.
        (Action::Failed, Status::Expired) => EnhancedCode::new(4, 4, 7),
        (Action::Failed, _) => own(5, (5, 0, 0)),
        (Action::Delayed, _) => own(4, (4, 0, 0)),
        (Action::Relayed, _) => own(2, (2, 0, 0)),
    };
    let at_unix = unix_now() as u64;
    Some(Note {
        msg: msg.clone(),
        rcpt: s.rcpt,
        action,
        status,
        remote_mta: remote_mta.map(str::to_string),
        reply: (
            reply.code,
            match reply.enhanced {
                Some(e) => format!("{e} {}", reply.text()),
                None => reply.text(),
            },
        ),
        category: s.category,
        at_unix,
        retry_until_unix: (action == Action::Delayed).then(|| at_unix + s.retry_left.as_secs()),
    })
}

/// What the writer's inbox carries.
pub(crate) enum Command {
    Note(Note),
    /// Write every notification gathered, then end.
    Stop,
}

/// Where shards hand their notes, for the thread that writes the
/// notifications.
pub(crate) struct DsnQueue {
    tx: Sender<Command>,
}

impl DsnQueue {
    /// Hands a note to the writer; never waits.
    pub(crate) fn offer(&self, note: Note) {
        if let Err(e) = self.tx.send(Command::Note(note)) {
            // The writer is gone (stopping): the recipient's finish
            // record is written now, as without a notification.
            if let Command::Note(n) = e.0
                && n.holds_finish()
            {
                n.msg.finished(n.rcpt, false);
            }
        }
    }
}

/// What the writer reads its notes from.
pub(crate) struct DsnInbox(pub(crate) Receiver<Command>);

/// The queue shards hand notes to, and the inbox the writer reads them
/// from.
pub(crate) fn queue() -> (DsnQueue, DsnInbox) {
    let (tx, rx) = channel();
    (DsnQueue { tx }, DsnInbox(rx))
}

impl DsnQueue {
    /// Asks the writer to write what it gathered and end.
    pub(crate) fn stop_writer(&self) {
        let _ = self.tx.send(Command::Stop);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::message::Budget;

    fn settled(sender: &str, rcpt: &str, status: Status, verdict: Verdict, age: u64) -> Settled {
        let msg = Message::new(
            1,
            Instant::now(),
            sender,
            &[rcpt.to_string()],
            Bytes::from_static(b"Subject: s\r\n\r\nb\r\n"),
            None,
            Arc::new(Budget::default()),
        );
        Settled {
            msg: Arc::new(msg),
            rcpt: 0,
            attempt: 1,
            status,
            verdict,
            category: None,
            text: String::new(),
            domain: "d.example".into(),
            rate: None,
            age: Duration::from_secs(age),
            retry_left: Duration::from_secs(3600),
        }
    }

    fn reply(code: u16, e: (u8, u16, u16)) -> Reply {
        Reply::new(code, EnhancedCode::new(e.0, e.1, e.2), "said so")
    }

    /// A reply without an enhanced code, as some servers give.
    fn bare(code: u16) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: vec!["said so".into()],
        }
    }

    fn retry() -> Verdict {
        Verdict::Retry {
            due: Instant::now(),
        }
    }

    #[test]
    fn failures_are_noted_unless_the_sender_is_null_or_asked_for_none() {
        let bounced = |sender, rcpt| {
            let s = settled(sender, rcpt, Status::Bounced, Verdict::Final, 1);
            note_for(&s, &reply(550, (5, 1, 1)), Some("mx.d.example"), None)
        };
        let n = bounced("s@x.example", "r@d.example").expect("a failure is noted");
        assert_eq!(n.action, Action::Failed);
        assert!(n.holds_finish());
        assert_eq!(n.status, EnhancedCode::new(5, 1, 1));
        assert_eq!(n.reply, (550, "5.1.1 said so".to_string()));
        assert_eq!(n.remote_mta.as_deref(), Some("mx.d.example"));
        assert!(
            bounced("", "r@d.example").is_none(),
            "no bounce of a bounce"
        );
        assert!(bounced("s@x.example", "r@d.example\u{1f}NOTIFY=NEVER").is_none());
        assert!(bounced("s@x.example", "r@d.example\u{1f}NOTIFY=SUCCESS").is_none());
    }

    #[test]
    fn an_expiry_says_4_4_7_and_a_reply_without_a_fitting_code_gets_the_class_default() {
        let s = settled(
            "s@x.example",
            "r@d.example",
            Status::Expired,
            Verdict::Final,
            9,
        );
        let n = note_for(&s, &reply(451, (4, 2, 2)), None, None).unwrap();
        assert_eq!(n.status, EnhancedCode::new(4, 4, 7));
        let s = settled(
            "s@x.example",
            "r@d.example",
            Status::Bounced,
            Verdict::Final,
            1,
        );
        let n = note_for(&s, &bare(554), None, None).unwrap();
        assert_eq!(n.status, EnhancedCode::new(5, 0, 0));
    }

    #[test]
    fn delays_are_noted_only_when_asked_and_late_enough() {
        let rcpt = "r@d.example\u{1f}NOTIFY=DELAY";
        let after = Some(Duration::from_secs(60));
        let early = settled("s@x.example", rcpt, Status::Deferred, retry(), 30);
        assert!(note_for(&early, &reply(451, (4, 2, 2)), None, after).is_none());
        let late = settled("s@x.example", rcpt, Status::Deferred, retry(), 90);
        let n = note_for(&late, &reply(451, (4, 2, 2)), None, after).unwrap();
        assert_eq!(n.action, Action::Delayed);
        assert!(!n.holds_finish());
        assert_eq!(n.retry_until_unix, Some(n.at_unix + 3600));
        assert!(note_for(&late, &reply(451, (4, 2, 2)), None, None).is_none());
        let unasked = settled("s@x.example", "r@d.example", Status::Deferred, retry(), 90);
        assert!(note_for(&unasked, &reply(451, (4, 2, 2)), None, after).is_none());
    }

    #[test]
    fn a_delivery_is_noted_as_relayed_only_for_notify_success() {
        let asked = settled(
            "s@x.example",
            "r@d.example\u{1f}NOTIFY=SUCCESS,FAILURE",
            Status::Delivered,
            Verdict::Final,
            1,
        );
        let n = note_for(&asked, &bare(250), Some("mx"), None).unwrap();
        assert_eq!(n.action, Action::Relayed);
        assert_eq!(n.status, EnhancedCode::new(2, 0, 0));
        let plain = settled(
            "s@x.example",
            "r@d.example",
            Status::Delivered,
            Verdict::Final,
            1,
        );
        assert!(note_for(&plain, &bare(250), Some("mx"), None).is_none());
    }
}
