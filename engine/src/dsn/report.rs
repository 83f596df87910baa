//! The notification itself (RFC 3464, RFC 3462): a `multipart/report`
//! with a part for people, the `message/delivery-status` part for
//! programs, and the returned message or its header section. Built from
//! plain values (times passed in), so every field is tested without a
//! network.

use std::fmt::Write;

use volley_smtp::{EnhancedCode, Orcpt, xtext_encode};

use super::request::Action;
use crate::date::rfc5322_date;

/// One recipient's lines in a notification.
#[derive(Debug, Clone)]
pub(crate) struct RecipientStatus {
    pub(crate) recipient: String,
    /// ORCPT as the Composer gave it.
    pub(crate) original: Option<Orcpt>,
    pub(crate) action: Action,
    pub(crate) status: EnhancedCode,
    /// The MX host that gave `diagnostic`, when one did.
    pub(crate) remote_mta: Option<String>,
    /// The reply: its code and text (from the MX host when `remote_mta`
    /// is set, Volley's own otherwise).
    pub(crate) diagnostic: (u16, String),
    pub(crate) last_attempt_unix: u64,
    /// For a delay: until when Volley goes on trying.
    pub(crate) retry_until_unix: Option<u64>,
}

/// How much of the original message goes back (RET).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Returned {
    Headers,
    Full,
}

/// Everything one notification says.
pub(crate) struct Report<'a> {
    /// Volley's host name: the reporting MTA, and the domain of the
    /// notification's From address.
    pub(crate) reporting_mta: &'a str,
    /// The envelope sender the notification goes to.
    pub(crate) to: &'a str,
    pub(crate) envid: Option<&'a str>,
    pub(crate) arrival_unix: u64,
    pub(crate) now_unix: u64,
    /// The notification's own Message-ID, angle brackets included.
    pub(crate) message_id: &'a str,
    /// Separates the parts: unique per notification.
    pub(crate) boundary: &'a str,
    pub(crate) recipients: &'a [RecipientStatus],
    /// The original message as Volley queued it.
    pub(crate) original: &'a [u8],
    pub(crate) returned: Returned,
}

impl Report<'_> {
    /// The notification's bytes (CRLF line ends, ready to queue), and
    /// whether they hold 8-bit octets (the returned message's), so that
    /// it is sent with BODY=8BITMIME.
    pub(crate) fn render(&self) -> (Vec<u8>, bool) {
        let any = |a: Action| self.recipients.iter().any(|r| r.action == a);
        let subject = if any(Action::Failed) {
            "Undelivered Mail Returned to Sender"
        } else if any(Action::Delayed) {
            "Delayed Mail (still being retried)"
        } else {
            "Successful Mail Delivery Report"
        };
        let mut out = String::with_capacity(2048);
        let date = rfc5322_date(self.now_unix);
        let _ = write!(
            out,
            "From: Mail Delivery System <MAILER-DAEMON@{host}>\r\n\
             To: <{to}>\r\n\
             Subject: {subject}\r\n\
             Date: {date}\r\n\
             Message-ID: {id}\r\n\
             Auto-Submitted: auto-replied\r\n\
             MIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status;\r\n\
             \tboundary=\"{b}\"\r\n\
             \r\n\
             This is a MIME-encapsulated message.\r\n\
             \r\n",
            host = self.reporting_mta,
            to = self.to,
            id = self.message_id,
            b = self.boundary,
        );
        self.human_part(&mut out);
        self.status_part(&mut out);
        let headers = header_section(self.original);
        let (content_type, description, returned) = match self.returned {
            Returned::Full if any(Action::Failed) => {
                ("message/rfc822", "Undelivered Message", self.original)
            }
            _ => ("text/rfc822-headers", "Message Headers", headers),
        };
        let _ = write!(
            out,
            "--{b}\r\nContent-Type: {content_type}\r\nContent-Description: {description}\r\n\r\n",
            b = self.boundary
        );
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(returned);
        if !returned.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(format!("\r\n--{}--\r\n", self.boundary).as_bytes());
        let eight_bit = !returned.is_ascii();
        (bytes, eight_bit)
    }

    fn human_part(&self, out: &mut String) {
        let _ = write!(
            out,
            "--{}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Description: Notification\r\n\r\n\
             This is the mail system at host {}.\r\n\r\n",
            self.boundary, self.reporting_mta
        );
        for (action, words) in [
            (
                Action::Failed,
                "Your message could not be delivered to the recipients below; it will not be tried again:",
            ),
            (
                Action::Delayed,
                "Your message has not been delivered yet to the recipients below; it is still being tried:",
            ),
            (
                Action::Relayed,
                "Your message was delivered to the mail servers of the recipients below:",
            ),
        ] {
            let mut listed = self
                .recipients
                .iter()
                .filter(|r| r.action == action)
                .peekable();
            if listed.peek().is_none() {
                continue;
            }
            let _ = write!(out, "{words}\r\n\r\n");
            for r in listed {
                let (code, text) = &r.diagnostic;
                let said = match &r.remote_mta {
                    Some(host) => format!("host {host} said: {code} {text}"),
                    None => format!("{code} {text}"),
                };
                let _ = write!(out, "<{}>: {}\r\n", r.recipient, one_line(&said));
            }
            out.push_str("\r\n");
        }
    }

    fn status_part(&self, out: &mut String) {
        let _ = write!(
            out,
            "--{}\r\nContent-Type: message/delivery-status\r\nContent-Description: Delivery report\r\n\r\n\
             Reporting-MTA: dns; {}\r\n",
            self.boundary, self.reporting_mta
        );
        if let Some(envid) = self.envid {
            let _ = write!(out, "Original-Envelope-Id: {}\r\n", field_text(envid));
        }
        let _ = write!(out, "Arrival-Date: {}\r\n", rfc5322_date(self.arrival_unix));
        for r in self.recipients {
            out.push_str("\r\n");
            if let Some(o) = &r.original {
                let _ = write!(
                    out,
                    "Original-Recipient: {}; {}\r\n",
                    o.addr_type,
                    field_text(&o.addr)
                );
            }
            let _ = write!(
                out,
                "Final-Recipient: rfc822; {}\r\nAction: {}\r\nStatus: {}\r\n",
                field_text(&r.recipient),
                r.action.as_str(),
                r.status
            );
            let (code, text) = &r.diagnostic;
            if let Some(host) = &r.remote_mta {
                let _ = write!(
                    out,
                    "Remote-MTA: dns; {host}\r\nDiagnostic-Code: smtp; {code} {}\r\n",
                    one_line(text)
                );
            }
            let _ = write!(
                out,
                "Last-Attempt-Date: {}\r\n",
                rfc5322_date(r.last_attempt_unix)
            );
            if let Some(until) = r.retry_until_unix {
                let _ = write!(out, "Will-Retry-Until: {}\r\n", rfc5322_date(until));
            }
        }
        out.push_str("\r\n");
    }
}

/// The header section of `message`, through the line that ends it.
fn header_section(message: &[u8]) -> &[u8] {
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        None => message,
    }
}

/// A value as a delivery-status field may hold it: printable ASCII as is,
/// anything else as xtext (RFC 3464 2.2.1 and 2.3.1).
fn field_text(value: &str) -> String {
    if value.bytes().all(|b| b.is_ascii_graphic()) {
        value.to_string()
    } else {
        xtext_encode(value)
    }
}

/// A reply's text on one line: a multi-line reply's lines joined.
fn one_line(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] =
        b"From: news@shop.example\r\nSubject: Sale\r\nMessage-ID: <m1@shop.example>\r\n\r\nBody line\r\n";

    fn failed(recipient: &str) -> RecipientStatus {
        RecipientStatus {
            recipient: recipient.into(),
            original: None,
            action: Action::Failed,
            status: EnhancedCode::new(5, 1, 1),
            remote_mta: Some("mx.dest.example".into()),
            diagnostic: (550, "5.1.1 no such user".into()),
            last_attempt_unix: 1_796_243_305,
            retry_until_unix: None,
        }
    }

    fn report<'a>(recipients: &'a [RecipientStatus], returned: Returned) -> Report<'a> {
        Report {
            reporting_mta: "volley.shop.example",
            to: "bounces@shop.example",
            envid: Some("batch 7"),
            arrival_unix: 1_796_243_000,
            now_unix: 1_796_243_305,
            message_id: "<dsn.1@volley.shop.example>",
            boundary: "b-1",
            recipients,
            original: ORIGINAL,
            returned,
        }
    }

    fn text(r: &Report<'_>) -> String {
        String::from_utf8(r.render().0).unwrap()
    }

    #[test]
    fn a_failure_report_has_the_three_parts_and_the_fields_of_rfc_3464() {
        let mut with_orcpt = failed("b@dest.example");
        with_orcpt.original = Some(Orcpt {
            addr_type: "rfc822".into(),
            addr: "old@dest.example".into(),
        });
        let recipients = [failed("a@dest.example"), with_orcpt];
        let t = text(&report(&recipients, Returned::Headers));
        assert!(
            t.starts_with("From: Mail Delivery System <MAILER-DAEMON@volley.shop.example>\r\n")
        );
        assert!(t.contains("Subject: Undelivered Mail Returned to Sender\r\n"));
        assert!(t.contains("report-type=delivery-status;\r\n\tboundary=\"b-1\"\r\n"));
        assert!(t.contains("Reporting-MTA: dns; volley.shop.example\r\n"));
        assert!(t.contains("Original-Envelope-Id: batch+207\r\n"), "{t}");
        assert!(t.contains("Arrival-Date: Wed, 02 Dec 2026 20:23:20 +0000\r\n"));
        assert!(t.contains(
            "\r\nFinal-Recipient: rfc822; a@dest.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Remote-MTA: dns; mx.dest.example\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\n"
        ));
        assert!(t.contains("Original-Recipient: rfc822; old@dest.example\r\nFinal-Recipient: rfc822; b@dest.example\r\n"));
        assert!(
            t.contains("<a@dest.example>: host mx.dest.example said: 550 5.1.1 no such user\r\n")
        );
        // Headers only: the body stays behind.
        assert!(t.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(t.contains("Message-ID: <m1@shop.example>\r\n"));
        assert!(!t.contains("Body line"));
        assert!(t.ends_with("\r\n--b-1--\r\n"));
        assert_eq!(t.matches("--b-1\r\n").count(), 3);
    }

    #[test]
    fn ret_full_returns_the_whole_message_and_only_for_failures() {
        let recipients = [failed("a@dest.example")];
        let t = text(&report(&recipients, Returned::Full));
        assert!(t.contains("Content-Type: message/rfc822\r\n"));
        assert!(t.contains("Body line\r\n"));
        let mut delayed = failed("a@dest.example");
        delayed.action = Action::Delayed;
        delayed.status = EnhancedCode::new(4, 2, 2);
        delayed.retry_until_unix = Some(1_796_329_705);
        let recipients = [delayed];
        let t = text(&report(&recipients, Returned::Full));
        assert!(t.contains("Subject: Delayed Mail (still being retried)\r\n"));
        assert!(t.contains("Action: delayed\r\nStatus: 4.2.2\r\n"));
        assert!(t.contains("Will-Retry-Until: Thu, 03 Dec 2026 20:28:25 +0000\r\n"));
        assert!(t.contains("Content-Type: text/rfc822-headers\r\n"));
        assert!(!t.contains("Body line"));
    }

    #[test]
    fn a_local_failure_names_no_remote_mta_and_eight_bit_originals_say_so() {
        let mut local = failed("a@nowhere.example");
        local.remote_mta = None;
        local.diagnostic = (550, "5.1.2 no MX or address\r\nfor the domain".into());
        let recipients = [local];
        let mut r = report(&recipients, Returned::Full);
        let (bytes, eight_bit) = r.render();
        let t = String::from_utf8(bytes).unwrap();
        assert!(!t.contains("Remote-MTA"));
        assert!(!t.contains("Diagnostic-Code"));
        assert!(t.contains("<a@nowhere.example>: 550 5.1.2 no MX or address for the domain\r\n"));
        assert!(!eight_bit);
        let original = "Subject: Größe\r\n\r\nÄ\r\n".as_bytes();
        r.original = original;
        assert!(r.render().1);
    }
}
