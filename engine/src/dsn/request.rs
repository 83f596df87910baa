//! What a Composer asked of delivery status notifications for one message
//! (RFC 3461): RET and ENVID at MAIL, NOTIFY and ORCPT at each RCPT, read
//! back from the SMTP form the message keeps them in.

use volley_smtp::{Notify, Orcpt, Ret, parse_mail_params, parse_rcpt_params};

/// What a notification says happened to a recipient (RFC 3464 2.3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Given up on: bounced, or expired in the queue.
    Failed,
    /// Still being retried after the configured delay.
    Delayed,
    /// Handed to a next hop that was not asked to send notifications
    /// itself (Volley does not pass NOTIFY on): the last one Volley sends.
    Relayed,
}

impl Action {
    /// The field's value in the report.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Relayed => "relayed",
        }
    }
}

/// RET and ENVID of one message.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SenderRequest {
    pub(crate) ret: Option<Ret>,
    pub(crate) envid: Option<String>,
}

impl SenderRequest {
    /// From the SMTP form ("" when none was given). Ingest parsed the same
    /// text before, so anything unreadable is taken as not given.
    pub(crate) fn parse(params: &str) -> SenderRequest {
        if params.is_empty() {
            return SenderRequest::default();
        }
        parse_mail_params(params).map_or_else(
            |_| SenderRequest::default(),
            |p| SenderRequest {
                ret: p.ret,
                envid: p.envid,
            },
        )
    }
}

/// NOTIFY and ORCPT of one recipient.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RecipientRequest {
    pub(crate) notify: Option<Notify>,
    pub(crate) orcpt: Option<Orcpt>,
}

impl RecipientRequest {
    /// From the SMTP form ("" when none was given).
    pub(crate) fn parse(params: &str) -> RecipientRequest {
        if params.is_empty() {
            return RecipientRequest::default();
        }
        parse_rcpt_params(params).map_or_else(
            |_| RecipientRequest::default(),
            |p| RecipientRequest {
                notify: p.notify,
                orcpt: p.orcpt,
            },
        )
    }

    /// Whether the Composer wants a notification for `action`. Without
    /// NOTIFY, failures only (RFC 3461 4.1 leaves delays to the MTA, and
    /// a bulk sender does not want them unasked).
    pub(crate) fn wants(&self, action: Action) -> bool {
        match self.notify {
            None => action == Action::Failed,
            Some(n) => match action {
                Action::Failed => n.failure,
                Action::Delayed => n.delay,
                Action::Relayed => n.success,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_notify_only_failures_are_reported() {
        let r = RecipientRequest::parse("");
        assert!(r.wants(Action::Failed));
        assert!(!r.wants(Action::Delayed));
        assert!(!r.wants(Action::Relayed));
    }

    #[test]
    fn notify_picks_the_actions_and_never_picks_none() {
        let never = RecipientRequest::parse("NOTIFY=NEVER");
        for a in [Action::Failed, Action::Delayed, Action::Relayed] {
            assert!(!never.wants(a), "{a:?}");
        }
        let some = RecipientRequest::parse("NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+2Bb@x.example");
        assert!(!some.wants(Action::Failed));
        assert!(some.wants(Action::Delayed));
        assert!(some.wants(Action::Relayed));
        assert_eq!(some.orcpt.unwrap().addr, "a+b@x.example");
    }

    #[test]
    fn ret_and_envid_are_read_back() {
        let s = SenderRequest::parse("RET=FULL ENVID=batch+2B7");
        assert_eq!(s.ret, Some(Ret::Full));
        assert_eq!(s.envid.as_deref(), Some("batch+7"));
        assert_eq!(SenderRequest::parse(""), SenderRequest::default());
    }
}
