//! What the big receivers' documented policy replies mean, and the
//! default rules for their throttling codes. Gmail, Yahoo and Microsoft
//! each publish the replies they give to bulk senders; read as plain
//! 4yz/5yz they say only "refused", but they say why: authentication
//! (DKIM, SPF, DMARC, PTR), reputation (complaints, blocks), rate, or TLS.
//! The delivery log's category says which, and the operator rules act on
//! the throttling ones.

use std::time::Duration;

use volley_smtp::{EnhancedCode, Reply};

use crate::rate::RuleConfig;

/// Why a documented policy reply refused the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The message is not authenticated enough: DKIM, SPF, DMARC
    /// alignment, or no PTR record for the sending address.
    Authentication,
    /// The sender's reputation: complaints, a block of the address.
    Reputation,
    /// Too much too fast.
    Rate,
    /// The receiver wants TLS.
    Tls,
}

/// Enhanced codes with one documented meaning at the receivers that use
/// them (Gmail's, and Microsoft's 5.7.515).
const BY_CODE: &[(u16, u16, Reason)] = &[
    // Gmail: "unusual rate of unsolicited mail".
    (7, 28, Reason::Rate),
    // Gmail: unauthenticated, SPF, DKIM, DMARC alignment failures.
    (7, 26, Reason::Authentication),
    (7, 27, Reason::Authentication),
    (7, 30, Reason::Authentication),
    (7, 32, Reason::Authentication),
    // Gmail: the sending address has no PTR record.
    (7, 25, Reason::Authentication),
    // Gmail: TLS required.
    (7, 29, Reason::Tls),
    // Microsoft: "sending domain does not meet the required
    // authentication level".
    (7, 515, Reason::Authentication),
];

/// Tags in the text with one documented meaning: Yahoo's `[TSnn]` and
/// Microsoft's block codes.
const BY_TAG: &[(&str, Reason)] = &[
    // Yahoo: deferred for unexpected volume or user complaints.
    ("[TSS04]", Reason::Reputation),
    // Yahoo: permanently deferred, retrying will not help.
    ("[TSS09]", Reason::Reputation),
    // Yahoo: the sending address is blocked.
    ("[TSS11]", Reason::Reputation),
    // Microsoft: the sending address is on its block list.
    ("S3150", Reason::Reputation),
    ("S3140", Reason::Reputation),
];

/// The documented reason of `reply`, if it is one of the known policy
/// replies.
pub(crate) fn reason(reply: &Reply) -> Option<Reason> {
    let text = reply.text();
    if let Some((_, r)) = BY_TAG.iter().find(|(tag, _)| text.contains(tag)) {
        return Some(*r);
    }
    if let Some(EnhancedCode {
        subject, detail, ..
    }) = reply.enhanced
        && let Some((_, _, r)) = BY_CODE
            .iter()
            .find(|(s, d, _)| *s == subject && *d == detail)
    {
        return Some(*r);
    }
    // "421 4.7.0 TLS required", in the words of several receivers.
    let lower = text.to_ascii_lowercase();
    let tls = [
        "tls required",
        "must issue a starttls",
        "requires tls",
        "encryption required",
    ];
    if reply.enhanced.is_some_and(|e| e.subject == 7) && tls.iter().any(|w| lower.contains(w)) {
        return Some(Reason::Tls);
    }
    None
}

/// The rules Volley adds after the operator's (`default_rules = true`):
/// the operator's own rule for the same reply matches first and wins.
pub(crate) fn default_rules() -> Vec<RuleConfig> {
    let suspend = |pattern: &str, d: Duration| RuleConfig {
        pattern: pattern.into(),
        suspend: Some(d),
        max_connections: None,
        max_rate: None,
        duration: Duration::from_secs(3600),
    };
    vec![
        // Yahoo: sending more while deferred for volume or complaints
        // makes it worse; come back later.
        suspend(r"\[TSS04\]", Duration::from_secs(30 * 60)),
        // Yahoo: "permanently deferred".
        suspend(r"\[TSS09\]", Duration::from_secs(4 * 3600)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::{Action, RuleSet};

    fn reply(code: u16, e: (u8, u16, u16), text: &str) -> Reply {
        Reply::new(code, EnhancedCode::new(e.0, e.1, e.2), text)
    }

    #[test]
    fn the_documented_replies_have_their_reasons() {
        let cases = [
            (
                reply(
                    550,
                    (5, 7, 26),
                    "This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.",
                ),
                Some(Reason::Authentication),
            ),
            (
                reply(
                    421,
                    (4, 7, 28),
                    "Our system has detected an unusual rate of unsolicited mail originating from your IP address.",
                ),
                Some(Reason::Rate),
            ),
            (
                reply(
                    421,
                    (4, 7, 0),
                    "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
                ),
                Some(Reason::Reputation),
            ),
            (
                reply(
                    550,
                    (5, 7, 1),
                    "Unfortunately, messages from [192.0.2.1] weren't sent. Please contact your Internet service provider since part of their network is on our block list (S3150).",
                ),
                Some(Reason::Reputation),
            ),
            (
                reply(
                    550,
                    (5, 7, 5),
                    "Access denied, sending domain example.com does not meet the required authentication level.",
                ),
                None,
            ),
            (
                reply(
                    421,
                    (4, 7, 0),
                    "TLS required for RCPT domain, closing connection.",
                ),
                Some(Reason::Tls),
            ),
            (
                reply(
                    550,
                    (5, 1, 1),
                    "The email account that you tried to reach does not exist.",
                ),
                None,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(reason(&r), want, "{r}");
        }
    }

    #[test]
    fn microsofts_515_is_an_authentication_refusal() {
        let r = reply(
            550,
            (5, 7, 515),
            "Access denied, sending domain example.com does not meet the required authentication level.",
        );
        assert_eq!(reason(&r), Some(Reason::Authentication));
    }

    #[test]
    fn the_default_rules_suspend_yahoos_deferrals_and_the_operators_come_first() {
        let mut rules = default_rules();
        let set = RuleSet::new(&rules).unwrap();
        let tss04 = "[TSS04] Messages from 192.0.2.1 temporarily deferred";
        assert_eq!(
            set.match_reply(421, Some(EnhancedCode::new(4, 7, 0)), tss04),
            Some(Action::Suspend(Duration::from_secs(1800)))
        );
        let mine = RuleConfig {
            pattern: r"\[TSS04\]".into(),
            suspend: Some(Duration::from_secs(60)),
            max_connections: None,
            max_rate: None,
            duration: Duration::from_secs(3600),
        };
        rules.insert(0, mine);
        let set = RuleSet::new(&rules).unwrap();
        assert_eq!(
            set.match_reply(421, Some(EnhancedCode::new(4, 7, 0)), tss04),
            Some(Action::Suspend(Duration::from_secs(60)))
        );
    }
}
