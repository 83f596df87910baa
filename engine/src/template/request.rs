//! The injection request, in the shape of KumoMTA's `POST /api/inject/v1`
//! so that a Composer written for it works unchanged: the envelope sender,
//! the content (a whole RFC 5322 message, or parts to build one from), the
//! recipients with their own substitutions, and substitutions for all.
//!
//! As with KumoMTA, fields it does not know are ignored (KumoMTA's own
//! later additions among them); a known field of the wrong type is an
//! error that names it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One request.
#[derive(Debug, Deserialize)]
pub(crate) struct InjectRequest {
    pub(crate) envelope_sender: String,
    pub(crate) content: Content,
    pub(crate) recipients: Vec<Recipient>,
    /// Substitutions for every recipient; a recipient's own win.
    #[serde(default)]
    pub(crate) substitutions: Map<String, Value>,
    #[serde(default)]
    pub(crate) template_dialect: Dialect,
    /// Volley's own: answer once each recipient's delivery is known
    /// (`safe`) rather than once the request is held (`fast`, the
    /// default). Only `POST /api/v1/inject` reads it.
    #[serde(default)]
    pub(crate) ack: Option<Ack>,
}

/// How the request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Ack {
    /// Once held (and in durable mode, on disk).
    Fast,
    /// Once each recipient was delivered or refused by its receiver.
    Safe,
}

/// How the content's text is expanded per recipient.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Dialect {
    /// MiniJinja templates (Jinja2 syntax), KumoMTA's default.
    #[default]
    Jinja,
    /// No expansion: every recipient gets the same text.
    Static,
}

/// One recipient.
#[derive(Debug, Deserialize)]
pub(crate) struct Recipient {
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) substitutions: Map<String, Value>,
}

/// The message content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Content {
    /// A whole RFC 5322 message, expanded as one template.
    Whole(String),
    /// Parts to build a MIME message from.
    Built(Parts),
}

/// The parts of a built message. The bodies and the header values
/// (subject included) are templates; From and Reply-To are not, as in
/// KumoMTA.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Parts {
    #[serde(default)]
    pub(crate) from: Option<Address>,
    #[serde(default)]
    pub(crate) reply_to: Option<Address>,
    #[serde(default)]
    pub(crate) subject: Option<String>,
    /// Further header fields, name to value (sorted by name, as KumoMTA
    /// writes them).
    #[serde(default)]
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) text_body: Option<String>,
    #[serde(default)]
    pub(crate) html_body: Option<String>,
    #[serde(default)]
    pub(crate) attachments: Vec<Attachment>,
}

/// A From or Reply-To mailbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Address {
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
}

/// A file sent with a built message (not a template).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Attachment {
    /// The content: text as it is, or base64 when `base64` is set.
    pub(crate) data: String,
    pub(crate) content_type: String,
    /// Makes it an inline part that HTML can refer to (`cid:`).
    #[serde(default)]
    pub(crate) content_id: Option<String>,
    #[serde(default)]
    pub(crate) file_name: Option<String>,
    #[serde(default)]
    pub(crate) base64: bool,
}

/// The answer, with KumoMTA's four fields first.
#[derive(Debug, Default, Serialize)]
pub(crate) struct InjectResponse {
    pub(crate) success_count: usize,
    pub(crate) fail_count: usize,
    pub(crate) failed_recipients: Vec<String>,
    pub(crate) errors: Vec<String>,
    /// Volley's id of the message the accepted recipients are queued in
    /// (the `message_id` of their delivery log lines), in hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// What the answer waited for: `memory` (held in memory), `disk`
    /// (durable mode: in the journal), or `delivery` (safe mode).
    pub(crate) ack: &'static str,
}

/// Parses a request body, with an error that says where it went wrong.
pub(crate) fn parse(body: &[u8]) -> Result<InjectRequest, String> {
    serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            format!("malformed JSON: {e}")
        } else {
            format!("invalid request: {e}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kumomtas_example_requests_parse() {
        let r = parse(
            br#"{"envelope_sender": "noreply@example.com",
                "content": "Subject: hello\n\nHello there",
                "recipients": [{"email": "recipient@example.com"}]}"#,
        )
        .unwrap();
        assert_eq!(
            r.content,
            Content::Whole("Subject: hello\n\nHello there".into())
        );
        assert_eq!(r.template_dialect, Dialect::Jinja);
        let r = parse(
            br#"{"envelope_sender": "noreply@example.com",
                "content": {"text_body": "hi {{ name }}", "subject": "s",
                            "from": {"email": "a@example.com", "name": "A"},
                            "headers": {"X-Campaign": "c1"}},
                "recipients": [{"email": "r@example.com", "name": "R",
                                "substitutions": {"k": 1}}],
                "substitutions": {"g": "x"},
                "template_dialect": "Static",
                "deferred_spool": false}"#,
        )
        .unwrap();
        let Content::Built(p) = &r.content else {
            panic!("{:?}", r.content)
        };
        assert_eq!(p.from.as_ref().unwrap().name.as_deref(), Some("A"));
        assert_eq!(r.template_dialect, Dialect::Static);
        assert_eq!(r.recipients[0].substitutions["k"], 1);
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = parse(b"{\"envelope_sender\": ").unwrap_err();
        assert!(e.starts_with("malformed JSON"), "{e}");
        let e = parse(br#"{"envelope_sender": 5, "content": "x", "recipients": []}"#).unwrap_err();
        assert!(
            e.starts_with("invalid request") && e.contains("line 1"),
            "{e}"
        );
        let e = parse(br#"{"envelope_sender": "a@b", "content": "x"}"#).unwrap_err();
        assert!(e.contains("recipients"), "{e}");
    }
}
