//! What a remote reply says about pace: success, throttling, or neither.

use serde::Serialize;
use volley_smtp::EnhancedCode;

/// How the rate controller read one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyKind {
    /// 2yz: the remote accepted.
    Success,
    /// 3yz: an intermediate reply; says nothing about pace.
    Intermediate,
    /// A 4yz that asks us to send slower: 421 or 4.7.x (a text such as
    /// "rate limit" alone is not enough; operator rules can add more).
    RateThrottle,
    /// A 421 or 4.7.x that asks for fewer connections: "too many
    /// connections", "too many concurrent sessions".
    ConnectionThrottle,
    /// Any other 4yz (greylisting, mailbox full, too many recipients, an
    /// X.1 or X.2 status, local errors): a retry matter for that
    /// recipient, not a pace signal.
    Deferral,
    /// 5yz: a permanent failure; not a pace signal.
    Failure,
}

impl ReplyKind {
    /// True for both kinds of throttling.
    pub fn is_throttle(self) -> bool {
        matches!(self, Self::RateThrottle | Self::ConnectionThrottle)
    }
}

/// Per-recipient or per-transaction limits that look like throttling by
/// their words but are not about our pace.
const NOT_PACE: &[&str] = &[
    "greylist",
    "graylist",
    "too many recipients",
    "over quota",
    "mailbox full",
];

const CONNECTION: &[&str] = &[
    "too many connections",
    "too many concurrent",
    "too many sessions",
    "too many simultaneous",
    "connection limit",
    "connections from your",
    "connection rate",
];

/// Classifies one reply. Allocation-free: the text is scanned in place,
/// ASCII case-insensitively.
pub fn classify_reply(code: u16, enhanced: Option<EnhancedCode>, text: &str) -> ReplyKind {
    match code / 100 {
        2 => return ReplyKind::Success,
        3 => return ReplyKind::Intermediate,
        4 => {}
        _ => return ReplyKind::Failure,
    }
    // Throttling needs a code that says so: 421 (the server gives up on
    // the session) or a 4.7.x security/policy status. A plain 4yz is the
    // recipient's matter whatever its words ("451 4.3.0 try later please"
    // is a retry for that recipient, not a request to slow down); an
    // operator rule can still read such a text as throttling.
    let throttle_code = code == 421 || enhanced.is_some_and(|e| e.subject == 7);
    if !throttle_code {
        return ReplyKind::Deferral;
    }
    let has = |words: &[&str]| words.iter().any(|w| contains_ignore_case(text, w));
    // X.1 (address) and X.2 (mailbox) statuses are about the recipient,
    // whatever the text says ("4.2.1 mailbox busy, try again later").
    let about_recipient = enhanced.is_some_and(|e| e.subject == 1 || e.subject == 2);
    if has(NOT_PACE) || (about_recipient && !has(CONNECTION)) {
        ReplyKind::Deferral
    } else if has(CONNECTION) {
        ReplyKind::ConnectionThrottle
    } else {
        ReplyKind::RateThrottle
    }
}

/// `needle` must be lower-case ASCII.
fn contains_ignore_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(c: u8, s: u16, d: u16) -> Option<EnhancedCode> {
        Some(EnhancedCode::new(c, s, d))
    }

    #[test]
    fn real_world_replies_are_read_as_intended() {
        use ReplyKind::*;
        let cases: &[(u16, Option<EnhancedCode>, &str, ReplyKind)] = &[
            (250, e(2, 0, 0), "OK queued", Success),
            (354, None, "End data with <CR><LF>.<CR><LF>", Intermediate),
            (550, e(5, 1, 1), "No such user", Failure),
            (
                421,
                e(4, 7, 0),
                "[TSS04] Messages from 192.0.2.1 temporarily deferred",
                RateThrottle,
            ),
            (
                421,
                e(4, 7, 28),
                "Our system has detected an unusual rate of unsolicited mail",
                RateThrottle,
            ),
            (451, e(4, 7, 1), "Sender rate limit exceeded", RateThrottle),
            (450, None, "Too many messages, slow down", Deferral),
            (451, None, "Please try again later", Deferral),
            (421, None, "Too many messages, slow down", RateThrottle),
            (451, e(4, 2, 1), "Mailbox busy, try again later", Deferral),
            (452, e(4, 2, 2), "Mailbox full, try again later", Deferral),
            (
                421,
                e(4, 7, 0),
                "Too many connections from your IP",
                ConnectionThrottle,
            ),
            (
                421,
                None,
                "too many concurrent SMTP connections",
                ConnectionThrottle,
            ),
            (451, e(4, 7, 1), "Greylisted, please come back", Deferral),
            (452, e(4, 5, 3), "Too many recipients", Deferral),
            (452, e(4, 2, 2), "Mailbox full", Deferral),
            (451, e(4, 3, 0), "Local error in processing", Deferral),
            (
                450,
                e(4, 2, 1),
                "The user is receiving mail at a rate that prevents additional messages",
                Deferral,
            ),
        ];
        for &(code, enh, text, want) in cases {
            assert_eq!(classify_reply(code, enh, text), want, "{code} {text}");
        }
    }

    #[test]
    fn words_without_a_throttling_code_are_a_deferral() {
        // A sink answered one recipient this way and got 18 RCPTs in 10 s
        // while the summary counted throttles: it is that recipient's retry.
        for (code, enh) in [(451, e(4, 3, 0)), (450, None), (452, e(4, 4, 5))] {
            for text in [
                "try later please",
                "rate limit exceeded",
                "too many connections",
            ] {
                assert_eq!(
                    classify_reply(code, enh, text),
                    ReplyKind::Deferral,
                    "{code} {enh:?} {text}"
                );
            }
        }
        assert_eq!(
            classify_reply(451, e(4, 7, 0), "try later please"),
            ReplyKind::RateThrottle
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        assert_eq!(classify_reply(0, None, ""), ReplyKind::Failure);
        assert_eq!(classify_reply(999, None, "é"), ReplyKind::Failure);
        assert_eq!(classify_reply(421, None, ""), ReplyKind::RateThrottle);
        assert!(ReplyKind::ConnectionThrottle.is_throttle());
        assert!(!ReplyKind::Deferral.is_throttle());
    }
}
