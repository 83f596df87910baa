//! Messages held in memory and the small per-recipient nodes that queue them.
//!
//! A message with several recipients becomes one [`Node`] per recipient, all
//! pointing at one [`Message`]: the body and the
//! address text exist once, shared by reference across shards, and are freed
//! when the last node finishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use volley_smtp::{BodyType, Reply};

use crate::address_line::{address_of, params_of};
use crate::template::{MAILING_MARKER, RenderError};

/// Where a safe-mode ingest session waits for its recipients' outcomes:
/// (recipient index, the reply to give the Composer).
pub(crate) type SafeReplies = tokio::sync::mpsc::UnboundedSender<(u32, Reply)>;

/// A safe-mode message's link to the session that waits for it.
pub(crate) struct SafeWait {
    replies: SafeReplies,
    /// Set once the Composer was answered 250 while some recipients were
    /// still deferred: those are Volley's to retry.
    answered: AtomicBool,
}

/// What a journaled message tells its journal: a recipient reached a
/// final outcome (delivered, bounced, expired), so a restart skips it.
/// Called from whichever shard delivered the recipient.
pub(crate) trait FinishRecord: Send + Sync {
    fn finish(&self, rcpt: u32, delivered: bool);
}

/// Bytes of messages held, against the configured budget.
#[derive(Debug, Default)]
pub(crate) struct Budget {
    held: AtomicU64,
}

impl Budget {
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// A message accepted from a Composer.
pub(crate) struct Message {
    /// Unique within this run: shard number in the top bits, then a sequence.
    pub(crate) id: u64,
    /// Sender, then each recipient, separated by '\n' (addresses cannot hold
    /// CR or LF): one allocation for all address text.
    addrs: Box<str>,
    /// The message as received (unstuffed, CRLF line ends).
    pub(crate) body: Bytes,
    /// When ingest accepted it, for max age and oldest-first scheduling.
    pub(crate) received: Instant,
    /// Safe mode: who waits for the outcomes.
    pub(crate) safe: Option<Box<SafeWait>>,
    /// Durable mode: its place in the journal (fast mode only). Boxed:
    /// inline it would make every message's allocation 32 bytes larger,
    /// journal or not. A trait object, so that the message knows nothing of
    /// the journal.
    pub(crate) journal: Option<Box<dyn FinishRecord>>,
    /// A templated message: its compiled mailing, and where each
    /// recipient's line starts (a mailing may have thousands).
    personal: Option<Box<Personalized>>,
    budget: Arc<Budget>,
}

/// What a templated message holds beside its body.
struct Personalized {
    mailing: crate::template::Personal,
    /// Byte offset of each recipient's line in the address text.
    lines: Box<[u32]>,
}

/// The declared BODY is kept as one control character before the sender
/// in the address text: addresses never hold control characters, and a
/// field of its own would make every message's allocation 8 bytes larger
/// for what most messages never declare.
fn body_type_marker(body_type: Option<BodyType>) -> Option<char> {
    match body_type? {
        BodyType::SevenBit => Some('\u{1}'),
        BodyType::EightBitMime => Some('\u{2}'),
        BodyType::BinaryMime => Some('\u{3}'),
    }
}

fn body_type_of(c: char) -> Option<BodyType> {
    match c {
        '\u{1}' => Some(BodyType::SevenBit),
        '\u{2}' => Some(BodyType::EightBitMime),
        '\u{3}' => Some(BodyType::BinaryMime),
        _ => None,
    }
}

/// Whether sender line `line` (as the journal keeps it) is that of a
/// templated mailing, whatever BODY marker stands before it.
pub(crate) fn is_mailing_sender(line: &str) -> bool {
    line.chars()
        .take_while(|&c| is_marker(c))
        .any(|c| c == MAILING_MARKER)
}

/// Whether `c` is one of the markers before the sender: a declared BODY,
/// or that the body is a templated mailing.
fn is_marker(c: char) -> bool {
    body_type_of(c).is_some() || c == MAILING_MARKER
}

/// Estimated bytes per recipient beyond address text and body, for the budget.
const NODE_COST: u64 = 64;

/// What a message is charged against the budget, computed again when it is
/// dropped rather than stored: every byte of `Message` is paid once per
/// queued message. The recipients are counted by their separators.
/// The body type's marker is not charged: it may be added after the
/// message was built.
fn cost(body: &Bytes, addrs: &str) -> u64 {
    let recipients = memchr::memchr_iter(b'\n', addrs.as_bytes()).count() as u64;
    let marker = addrs.starts_with(|c| body_type_of(c).is_some()) as u64;
    body.len() as u64 + addrs.len() as u64 - marker + 128 + NODE_COST * recipients
}

impl Message {
    /// Builds a message accepted at `received` and charges its size to
    /// `budget` until it is dropped. The sender and each recipient may
    /// carry their DSN parameters after [`PARAMS_SEPARATOR`](crate::address_line::PARAMS_SEPARATOR).
    pub(crate) fn new(
        id: u64,
        received: Instant,
        sender: &str,
        recipients: &[String],
        body: Bytes,
        safe: Option<SafeReplies>,
        budget: Arc<Budget>,
    ) -> Message {
        let mut addrs = String::with_capacity(
            sender.len() + recipients.iter().map(|r| r.len() + 1).sum::<usize>(),
        );
        addrs.push_str(sender);
        for r in recipients {
            addrs.push('\n');
            addrs.push_str(r);
        }
        budget
            .held
            .fetch_add(cost(&body, &addrs), Ordering::Relaxed);
        Message {
            id,
            addrs: addrs.into_boxed_str(),
            body,
            received,
            safe: safe.map(|replies| {
                Box::new(SafeWait {
                    replies,
                    answered: AtomicBool::new(false),
                })
            }),
            journal: None,
            personal: None,
            budget,
        }
    }

    /// The message as a templated mailing: its body is `mailing`'s JSON
    /// and its recipients' lines carry their variables.
    pub(crate) fn personalized(mut self, mailing: crate::template::Personal) -> Message {
        let mut lines = Vec::new();
        let mut at = 0u32;
        for (i, line) in self.addrs.split('\n').enumerate() {
            if i > 0 {
                lines.push(at);
            }
            at += line.len() as u32 + 1;
        }
        self.personal = Some(Box::new(Personalized {
            mailing,
            lines: lines.into_boxed_slice(),
        }));
        self
    }

    /// Whether each recipient gets a message of its own, rendered from a
    /// template when it is sent (and so a transaction of its own).
    pub(crate) fn is_templated(&self) -> bool {
        self.personal.is_some()
    }

    /// What recipient `i` is sent: the body as it came, or, for a
    /// templated message, the recipient's own rendered message of at most
    /// `limit` bytes (the error says why it cannot be made).
    pub(crate) fn content_for(&self, i: u32, limit: u64) -> Result<Bytes, RenderError> {
        match &self.personal {
            None => Ok(self.body.clone()),
            Some(p) => p
                .mailing
                .render(
                    self.recipient_line(i),
                    limit.min(usize::MAX as u64) as usize,
                )
                .map(Bytes::from),
        }
    }

    /// The message with a safe-mode waiter: `replies` hears each
    /// recipient's outcome.
    pub(crate) fn waited_for(mut self, replies: SafeReplies) -> Message {
        self.safe = Some(Box::new(SafeWait {
            replies,
            answered: AtomicBool::new(false),
        }));
        self
    }

    /// The message with the BODY its Composer declared at MAIL, to pass
    /// on at delivery.
    pub(crate) fn declaring(mut self, body_type: Option<BodyType>) -> Message {
        if let Some(marker) = body_type_marker(body_type) {
            let mut addrs = String::with_capacity(self.addrs.len() + 1);
            addrs.push(marker);
            addrs.push_str(&self.addrs);
            self.addrs = addrs.into_boxed_str();
        }
        self
    }

    /// The reverse path (empty for the null sender).
    pub(crate) fn sender(&self) -> &str {
        address_of(self.journal_sender().trim_start_matches(is_marker))
    }

    /// RET and ENVID as MAIL gave them ("" when neither was given).
    pub(crate) fn sender_params(&self) -> &str {
        params_of(self.journal_sender())
    }

    /// The sender as the journal keeps it: with the declared BODY's marker
    /// before it and its DSN parameters after it, so a message recovered from the journal (built from this
    /// text by [`Message::new`]) declares the same BODY.
    pub(crate) fn journal_sender(&self) -> &str {
        self.addrs.split('\n').next().unwrap_or("")
    }

    /// The BODY the Composer declared at MAIL, to pass on (None: none).
    pub(crate) fn body_type(&self) -> Option<BodyType> {
        self.addrs
            .chars()
            .take_while(|&c| is_marker(c))
            .find_map(body_type_of)
    }

    /// Recipient number `i`, as the Composer gave it.
    pub(crate) fn recipient(&self, i: u32) -> &str {
        address_of(self.recipient_line(i))
    }

    /// NOTIFY and ORCPT as RCPT gave them for recipient `i` ("" when
    /// neither was given).
    pub(crate) fn recipient_params(&self, i: u32) -> &str {
        params_of(self.recipient_line(i))
    }

    fn recipient_line(&self, i: u32) -> &str {
        if let Some(p) = &self.personal {
            let Some(&start) = p.lines.get(i as usize) else {
                return "";
            };
            let rest = &self.addrs[start as usize..];
            return rest.split('\n').next().unwrap_or("");
        }
        self.addrs.split('\n').nth(i as usize + 1).unwrap_or("")
    }

    /// The message's own `Message-ID` header as the Composer wrote it
    /// (angle brackets included), so log lines can be matched to the
    /// Composer's records. Only the header section is read; a value folded
    /// onto the next line is found there.
    pub(crate) fn header_message_id(&self) -> Option<&str> {
        header_value(&self.body, b"message-id")
    }

    /// Tells a safe-mode session the outcome for recipient `i`.
    pub(crate) fn reply(&self, i: u32, reply: Reply) {
        if let Some(s) = &self.safe {
            let _ = s.replies.send((i, reply));
        }
    }

    /// Whether a safe-mode Composer still waits for this message's reply
    /// and so keeps the responsibility for a deferred recipient.
    pub(crate) fn composer_waits(&self) -> bool {
        self.safe
            .as_ref()
            .is_some_and(|s| !s.answered.load(Ordering::Relaxed))
    }

    /// The safe-mode Composer got its answer (250) and Volley keeps the
    /// responsibility for every recipient from now on, as in fast mode.
    pub(crate) fn composer_answered(&self) {
        if let Some(s) = &self.safe {
            s.answered.store(true, Ordering::Relaxed);
        }
    }
}

impl Message {
    /// Recipient `i` reached a final outcome (delivered, bounced, expired):
    /// in durable mode the journal records it, so a restart skips it.
    pub(crate) fn finished(&self, i: u32, delivered: bool) {
        if let Some(j) = &self.journal {
            j.finish(i, delivered);
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        let cost = cost(&self.body, &self.addrs);
        self.budget.held.fetch_sub(cost, Ordering::Relaxed);
    }
}

/// The first value of header `name` (lower case) in the header section of
/// `body`, trimmed; `None` when absent, empty or not UTF-8.
fn header_value<'a>(body: &'a [u8], name: &[u8]) -> Option<&'a str> {
    let end = memchr::memmem::find(body, b"\r\n\r\n").map_or(body.len(), |e| e + 2);
    let mut lines = body[..end].split(|&b| b == b'\n');
    while let Some(line) = lines.next() {
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        if !line[..colon].eq_ignore_ascii_case(name) {
            continue;
        }
        let mut value = line[colon + 1..].trim_ascii();
        if value.is_empty() {
            value = lines
                .next()
                .filter(|l| l.first().is_some_and(|&b| b == b' ' || b == b'\t'))?
                .trim_ascii();
        }
        return std::str::from_utf8(value).ok().filter(|v| !v.is_empty());
    }
    None
}

/// One queued recipient: 24 bytes plus its share of the message.
pub(crate) struct Node {
    pub(crate) msg: Arc<Message>,
    pub(crate) rcpt: u32,
    pub(crate) attempts: u16,
    /// Times a throttling reply sent it back to its queue without counting
    /// an attempt (at most `core::MAX_THROTTLE_REQUEUES` times in a row).
    pub(crate) throttled: u8,
}

impl Node {
    /// Recipient `rcpt` of `msg`, queued for its first attempt.
    pub(crate) fn new(msg: Arc<Message>, rcpt: u32) -> Node {
        Node {
            msg,
            rcpt,
            attempts: 0,
            throttled: 0,
        }
    }

    pub(crate) fn recipient(&self) -> &str {
        self.msg.recipient(self.rcpt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_live_once_and_the_budget_is_released_on_drop() {
        let budget = Arc::new(Budget::default());
        let m = Message::new(
            7,
            Instant::now(),
            "a@x.example",
            &["b@y.example".into(), "c@z.example".into()],
            Bytes::from_static(b"Subject: t\r\n\r\nhi\r\n"),
            None,
            budget.clone(),
        );
        assert_eq!(m.sender(), "a@x.example");
        assert_eq!(m.recipient(0), "b@y.example");
        assert_eq!(m.recipient(1), "c@z.example");
        assert!(budget.held() > 0);
        drop(m);
        assert_eq!(budget.held(), 0);
        assert!(std::mem::size_of::<Node>() <= 24);
        // With the Arc's two counts, 128 bytes: the 128-byte size class.
        assert!(std::mem::size_of::<Message>() <= 112);
    }

    #[test]
    fn the_declared_body_type_is_kept_beside_the_addresses() {
        let budget = Arc::new(Budget::default());
        for t in [
            None,
            Some(BodyType::SevenBit),
            Some(BodyType::EightBitMime),
            Some(BodyType::BinaryMime),
        ] {
            let m = Message::new(
                1,
                Instant::now(),
                "a@x.example",
                &["b@y.example".into()],
                Bytes::from_static(b"\x00\xff"),
                None,
                budget.clone(),
            )
            .declaring(t);
            assert_eq!(m.body_type(), t);
            assert_eq!(m.sender(), "a@x.example");
            assert_eq!(m.recipient(0), "b@y.example");
            drop(m);
            assert_eq!(budget.held(), 0, "the marker is charged and released alike");
        }
        let null_sender = Message::new(
            2,
            Instant::now(),
            "",
            &["b@y.example".into()],
            Bytes::new(),
            None,
            budget.clone(),
        )
        .declaring(Some(BodyType::EightBitMime));
        assert_eq!(null_sender.sender(), "");
        assert_eq!(null_sender.body_type(), Some(BodyType::EightBitMime));
        // A templated mailing's marker, with or without a BODY before it.
        let mailing = Message::new(
            3,
            Instant::now(),
            "\u{5}news@x.example",
            &["b@y.example".into()],
            Bytes::new(),
            None,
            budget.clone(),
        )
        .declaring(Some(BodyType::EightBitMime));
        assert_eq!(mailing.sender(), "news@x.example");
        assert_eq!(mailing.body_type(), Some(BodyType::EightBitMime));
        assert!(is_mailing_sender(mailing.journal_sender()));
        assert!(is_mailing_sender("\u{5}a@b"));
        assert!(!is_mailing_sender("\u{2}a@b"));
    }

    #[test]
    fn dsn_parameters_ride_after_their_addresses() {
        let budget = Arc::new(Budget::default());
        let m = Message::new(
            3,
            Instant::now(),
            "a@x.example\u{1f}RET=HDRS ENVID=q1",
            &["b@y.example\u{1f}NOTIFY=NEVER".into(), "c@z.example".into()],
            Bytes::new(),
            None,
            budget.clone(),
        )
        .declaring(Some(BodyType::EightBitMime));
        assert_eq!(m.sender(), "a@x.example");
        assert_eq!(m.sender_params(), "RET=HDRS ENVID=q1");
        assert_eq!(
            m.journal_sender(),
            "\u{2}a@x.example\u{1f}RET=HDRS ENVID=q1"
        );
        assert_eq!(m.recipient(0), "b@y.example");
        assert_eq!(m.recipient_params(0), "NOTIFY=NEVER");
        assert_eq!(m.recipient(1), "c@z.example");
        assert_eq!(m.recipient_params(1), "");
        assert_eq!(
            address_of("d@w.example\u{1f}ORCPT=rfc822;d@w.example"),
            "d@w.example"
        );
    }

    #[test]
    fn the_message_id_header_is_found_in_the_header_section_only() {
        let id = |body: &'static [u8]| header_value(body, b"message-id");
        assert_eq!(
            id(b"Subject: s\r\nMESSAGE-ID:  <a.1@c.example> \r\n\r\nbody\r\n"),
            Some("<a.1@c.example>")
        );
        assert_eq!(
            id(b"Message-Id:\r\n <folded@c.example>\r\n\r\n"),
            Some("<folded@c.example>")
        );
        assert_eq!(id(b"Subject: s\r\n\r\nMessage-ID: <in-body@c>\r\n"), None);
        assert_eq!(id(b"X-Message-ID: <other@c>\r\n\r\n"), None);
        assert_eq!(id(b"Message-ID:\r\n\r\n"), None);
    }
}
