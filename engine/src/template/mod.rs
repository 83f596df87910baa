//! Templated mailings: the part of a mailing that is the same for every
//! recipient held once, each recipient's own variables held beside its
//! address, and the two merged only when a connection is ready to send
//! the recipient its message.
//!
//! A Composer that renders every subscriber's message itself hands Volley
//! a million whole bodies, and Volley holds them all until they are sent.
//! A mailing handed over as one template and a million small sets of
//! variables costs a million times less body: the template is compiled
//! once (and shared by every request of a campaign that sends the same
//! one), and a queued recipient costs its address and its variables.
//!
//! A templated message is an ordinary [`Message`](crate::message::Message)
//! to queues, journal and retries: its body is the [`Mailing`] (the
//! content, the shared substitutions, the trace header) in JSON, which is
//! what the journal keeps and a restart compiles again; each recipient's
//! line carries its variables ([`vars`]); and a marker before the sender
//! says that the body is a mailing, not a message.

mod compile;
mod mime;
pub(crate) mod request;
pub(crate) mod vars;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use minijinja::Value;
use minijinja::value::{Serde, merge_maps};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::address_line;

pub(crate) use compile::RenderError;
use compile::{Compiled, Stamp};
use request::{Content, Dialect};

/// Put before the sender in a templated message's address text (and so in
/// the journal): its body is a [`Mailing`]. Addresses never hold control
/// characters.
pub(crate) const MAILING_MARKER: char = '\u{5}';

/// What a templated message's body holds: everything its recipients
/// share, in JSON.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Mailing {
    pub(crate) dialect: Dialect,
    pub(crate) content: Content,
    /// Substitutions for every recipient.
    pub(crate) substitutions: Map<String, serde_json::Value>,
    /// The keys recipients' values are kept in the order of ([`vars`]).
    pub(crate) keys: Vec<String>,
    /// The trace header Volley adds on top of each message, CRLF-ended.
    pub(crate) received: String,
    /// The Date of a built message: when the request came.
    pub(crate) date: String,
    /// Unique to the request: Message-IDs and MIME boundaries.
    pub(crate) token: String,
    /// Volley's host name, the right side of built messages' Message-IDs.
    pub(crate) hostname: String,
}

/// A mailing ready to render: its compiled content and shared variables.
pub(crate) struct Personal {
    compiled: Arc<Compiled>,
    globals: Value,
    keys: Vec<String>,
    received: String,
    date: String,
    token: String,
    hostname: String,
}

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Personal")
            .field("token", &self.token)
            .finish()
    }
}

impl Personal {
    /// The mailing of a templated message's `body`, compiled through
    /// `cache`. The error says what is wrong (a request's content that does
    /// not compile, or a damaged journal record).
    pub(crate) fn from_body(body: &[u8], cache: &TemplateCache) -> Result<Personal, String> {
        let mailing: Mailing =
            serde_json::from_slice(body).map_err(|e| format!("the mailing is damaged: {e}"))?;
        let compiled = cache.compiled(mailing.dialect, &mailing.content)?;
        Ok(Personal {
            compiled,
            globals: Value::from(Serde(&mailing.substitutions)),
            keys: mailing.keys,
            received: mailing.received,
            date: mailing.date,
            token: mailing.token,
            hostname: mailing.hostname,
        })
    }

    /// The message for the recipient of address-text line `line` (its
    /// address, then its variables), at most `limit` bytes: the trace
    /// header, then the content rendered with the recipient's
    /// substitutions over the mailing's, `email` and `name` between.
    pub(crate) fn render(&self, line: &str, limit: usize) -> Result<Vec<u8>, RenderError> {
        let room = limit.saturating_sub(self.received.len());
        let mut out = Vec::with_capacity(self.received.len() + self.compiled.size_hint());
        out.extend_from_slice(self.received.as_bytes());
        self.with_recipient(line, |ctx, stamp| {
            self.compiled.render_into(ctx, stamp, room, &mut out)
        })?;
        Ok(out)
    }

    /// Whether the recipient of `line` can be sent its message: its whole
    /// message is rendered when `whole`, else only its header fields.
    pub(crate) fn check(&self, line: &str, limit: usize, whole: bool) -> Result<(), RenderError> {
        if whole {
            return self.render(line, limit).map(drop);
        }
        self.with_recipient(line, |ctx, stamp| {
            self.compiled.check_headers(ctx, stamp, limit)
        })
    }

    /// Calls `f` with the variables and stamp of the recipient of `line`.
    fn with_recipient<R>(
        &self,
        line: &str,
        f: impl FnOnce(&Value, &Stamp<'_>) -> Result<R, RenderError>,
    ) -> Result<R, RenderError> {
        let address = address_line::address_of(line);
        let part = address_line::personal_of(line).unwrap_or("\u{1d}");
        let own = vars::decode(part, &self.keys).map_err(RenderError::Damaged)?;
        // A name not given stays undefined (it renders as nothing).
        let predefined = match own.name {
            Some(name) => minijinja::context! { email => address, name => name },
            None => minijinja::context! { email => address },
        };
        // The last map that has a key gives its value.
        let ctx = merge_maps([
            self.globals.clone(),
            predefined,
            Value::from(Serde(&own.substitutions)),
        ]);
        let message_id = format!(
            "<{}.{:x}@{}>",
            self.token,
            short_hash(address),
            self.hostname
        );
        let to = mime::mailbox(own.name, address);
        let stamp = Stamp {
            date: &self.date,
            message_id: &message_id,
            token: &self.token,
            to: &to,
        };
        f(&ctx, &stamp)
    }
}

/// What the injection API makes of a request body, short of checking
/// addresses and queueing: the request parsed, its content compiled, and
/// each recipient's message rendered (at most `limit` bytes each), in
/// order; a recipient that cannot be rendered gets its error. The fuzz
/// target of the injection API drives this with arbitrary bytes.
pub fn render_request(body: &[u8], limit: usize) -> Result<Vec<Result<Vec<u8>, String>>, String> {
    let request = request::parse(body)?;
    let keys = vars::key_list(request.recipients.first().map(|r| &r.substitutions));
    let mailing = Mailing {
        dialect: request.template_dialect,
        content: request.content,
        substitutions: request.substitutions,
        keys: keys.clone(),
        received: String::new(),
        date: crate::date::rfc5322_date(0),
        token: "0".into(),
        hostname: "volley.invalid".into(),
    };
    let body = serde_json::to_vec(&mailing).map_err(|e| e.to_string())?;
    let personal = Personal::from_body(&body, &TemplateCache::default())?;
    Ok(request
        .recipients
        .iter()
        .map(|r| {
            if r.name
                .as_deref()
                .is_some_and(|n| n.chars().any(char::is_control))
            {
                return Err("the name holds a control character".to_string());
            }
            let mut line = r.email.replace(['\n', '\u{1e}', '\u{1f}'], " ");
            vars::encode(&mut line, r.name.as_deref(), &r.substitutions, &keys);
            personal.render(&line, limit).map_err(|e| e.to_string())
        })
        .collect())
}

/// A stable 32-bit hash of an address, so that a recipient's Message-ID
/// is the same when its message is rendered again after a restart.
fn short_hash(s: &str) -> u32 {
    // FNV-1a: fixed across builds, unlike the standard library's hasher.
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    })
}

/// Compiled contents, shared by every request (and every recovered
/// message) that sends the same one: a campaign sent in many requests is
/// compiled once. Entries live as long as a message uses them.
#[derive(Default)]
pub(crate) struct TemplateCache {
    entries: Mutex<HashMap<u64, Weak<Compiled>>>,
}

impl TemplateCache {
    /// `content` in `dialect`, compiled now or found compiled.
    fn compiled(&self, dialect: Dialect, content: &Content) -> Result<Arc<Compiled>, String> {
        let key = serde_json::to_string(&(dialect, content)).map_err(|e| e.to_string())?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let hash = h.finish();
        if let Some(found) = self.entries.lock().get(&hash).and_then(Weak::upgrade)
            && found.key == key
        {
            return Ok(found);
        }
        let compiled = Arc::new(Compiled::new(key, dialect, content)?);
        let mut entries = self.entries.lock();
        if entries.len() >= 1024 {
            entries.retain(|_, w| w.strong_count() > 0);
        }
        entries.insert(hash, Arc::downgrade(&compiled));
        Ok(compiled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(content: Content, subs: serde_json::Value, keys: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&Mailing {
            dialect: Dialect::Jinja,
            content,
            substitutions: subs.as_object().cloned().unwrap(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
            received: "Received: from x\r\n".into(),
            date: "Thu, 03 Dec 2026 18:00:00 +0000".into(),
            token: "tok".into(),
            hostname: "volley.example".into(),
        })
        .unwrap()
    }

    fn line(address: &str, name: Option<&str>, subs: serde_json::Value, keys: &[&str]) -> String {
        let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        let mut l = address.to_string();
        vars::encode(&mut l, name, subs.as_object().unwrap(), &keys);
        l
    }

    #[test]
    fn a_recipients_substitutions_overlay_the_mailings_and_name_and_email_are_set() {
        let cache = TemplateCache::default();
        let content = Content::Whole(
            "Subject: {{ greeting }} {{ name }}\n\n{{ email }} {{ city }} {{ greeting }}".into(),
        );
        let b = body(
            content,
            json!({"greeting": "Hello", "city": "Nowhere"}),
            &["city"],
        );
        let p = Personal::from_body(&b, &cache).unwrap();
        let l = line(
            "ann@x.example",
            Some("Ann"),
            json!({"city": "Oslo"}),
            &["city"],
        );
        let out = String::from_utf8(p.render(&l, 10_000).unwrap()).unwrap();
        assert_eq!(
            out,
            "Received: from x\r\nSubject: Hello Ann\r\n\r\nann@x.example Oslo Hello\r\n"
        );
        let l = line("bob@x.example", None, json!({}), &["city"]);
        let out = String::from_utf8(p.render(&l, 10_000).unwrap()).unwrap();
        assert!(
            out.ends_with("Subject: Hello \r\n\r\nbob@x.example Nowhere Hello\r\n"),
            "{out}"
        );
    }

    #[test]
    fn one_content_is_compiled_once_while_messages_use_it() {
        let cache = TemplateCache::default();
        let b = body(Content::Whole("Subject: s\n\nx".into()), json!({}), &[]);
        let first = Personal::from_body(&b, &cache).unwrap();
        let second = Personal::from_body(&b, &cache).unwrap();
        assert!(Arc::ptr_eq(&first.compiled, &second.compiled));
        let other = body(Content::Whole("Subject: t\n\nx".into()), json!({}), &[]);
        let third = Personal::from_body(&other, &cache).unwrap();
        assert!(!Arc::ptr_eq(&first.compiled, &third.compiled));
    }

    #[test]
    fn the_message_id_of_a_built_message_is_the_same_when_rendered_again() {
        let cache = TemplateCache::default();
        let parts = serde_json::from_value(json!({"subject": "s", "text_body": "t"})).unwrap();
        let b = body(Content::Built(parts), json!({}), &[]);
        let l = line("ann@x.example", None, json!({}), &[]);
        let once = Personal::from_body(&b, &cache)
            .unwrap()
            .render(&l, 10_000)
            .unwrap();
        let again = Personal::from_body(&b, &TemplateCache::default())
            .unwrap()
            .render(&l, 10_000)
            .unwrap();
        assert_eq!(once, again);
        assert!(
            String::from_utf8(once)
                .unwrap()
                .contains("Message-ID: <tok.")
        );
    }

    #[test]
    fn a_damaged_mailing_is_an_error() {
        let cache = TemplateCache::default();
        assert!(Personal::from_body(b"{not json", &cache).is_err());
        assert!(Personal::from_body(b"{}", &cache).is_err());
    }
}
