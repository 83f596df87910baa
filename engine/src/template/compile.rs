//! A mailing's content compiled once into MiniJinja templates, and
//! rendered for one recipient at a time.
//!
//! A whole message is one template in two halves: its header section
//! and its body, so that a substitution in the header section can be
//! checked for CR and LF (a value that holds them would add header fields
//! of its sender's choosing, a `Bcc:` for instance) while the body takes
//! any text. A built message has a template per body and per header value.
//!
//! Rendering is bounded: a render may spend [`RENDER_FUEL`] (MiniJinja's
//! count of instructions and allocations; a loop that never ends runs out
//! of it) and write at most the size limit it is given.

use std::io;

use minijinja::{Environment, ErrorKind, Value};

use super::mime;
use super::request::{Content, Dialect, Parts};

/// What one render may spend: some hundred times what an ordinary
/// mailing's template needs, far short of what holds a shard's loop for
/// long (roughly 100,000 instructions, or 6 MB of values).
pub(crate) const RENDER_FUEL: u64 = 100_000;

/// Names of the templates in a compiled mailing's environment.
const HEADERS: &str = "headers";
const BODY: &str = "body";
const SUBJECT: &str = "subject";
const TEXT: &str = "text_body";
/// The extension turns on MiniJinja's HTML escaping of substitutions.
const HTML: &str = "html_body.html";

/// A mailing's content, compiled.
pub(crate) struct Compiled {
    /// The cache key it was compiled from (dialect and content), to tell
    /// a hash collision from a hit.
    pub(crate) key: String,
    env: Environment<'static>,
    form: Form,
}

enum Form {
    /// A whole message: its header section, the text that ends it (the
    /// empty line), and its body.
    Whole {
        headers: Slot,
        separator: String,
        body: Option<Slot>,
    },
    Built(Box<Built>),
}

/// The parts of a built message, each body and header value a slot.
struct Built {
    parts: Parts,
    subject: Option<Slot>,
    headers: Vec<(String, Slot)>,
    text: Option<Slot>,
    html: Option<Slot>,
    /// Each attachment's part, headers and base64 body, ready to send.
    attachments: Vec<String>,
}

/// A piece of text that is the same for everyone (static dialect) or a
/// template of the environment.
enum Slot {
    Text(String),
    Template(&'static str),
    Named(String),
}

/// Why a message could not be rendered for a recipient.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum RenderError {
    /// The template is at fault: it fails to run, or runs past its bound.
    #[error("{0}")]
    Template(String),
    /// The message would be larger than allowed.
    #[error("the rendered message exceeds the size limit of {0} bytes")]
    TooLarge(usize),
    /// This recipient's values would break the header section.
    #[error("{0}")]
    Header(String),
    /// A recipient's kept variables or the mailing could not be read.
    #[error("{0}")]
    Damaged(String),
}

/// The formatter's words for a line end substituted into the header
/// section; how a render error is told to be the recipient's.
const HEADER_LINE_END: &str = "a value substituted into the header section holds CR or LF";

/// What a render needs beyond the variables: made once per request.
pub(crate) struct Stamp<'a> {
    /// The Date of a built message: when the request came.
    pub(crate) date: &'a str,
    /// The Message-ID of a built message, angle brackets included.
    pub(crate) message_id: &'a str,
    /// Unique per request: the MIME boundaries of a built message.
    pub(crate) token: &'a str,
    /// The recipient as the To field of a built message names it.
    pub(crate) to: &'a str,
}

/// Says where in the content an error is, in words a Composer's author
/// can act on: the part, the line within it, and what is wrong.
fn describe(part: &str, line_offset: usize, e: &minijinja::Error) -> String {
    let what = match e.detail() {
        Some(d) => format!("{}: {d}", e.kind()),
        None => e.kind().to_string(),
    };
    match e.line() {
        Some(l) => format!("template error in {part}, line {}: {what}", l + line_offset),
        None => format!("template error in {part}: {what}"),
    }
}

/// The length of a whole message's header section (its first empty line
/// excluded) and of the line ends that make that empty line.
fn split_header_section(s: &str) -> Option<(usize, usize)> {
    if s.starts_with("\r\n") {
        return Some((0, 2));
    }
    if s.starts_with('\n') {
        return Some((0, 1));
    }
    let mut at = 0;
    while let Some(i) = s[at..].find('\n') {
        let end = at + i + 1;
        let rest = &s[end..];
        if rest.starts_with("\r\n") {
            return Some((end, 2));
        }
        if rest.starts_with('\n') {
            return Some((end, 1));
        }
        at = end;
    }
    None
}

impl Compiled {
    /// Compiles `content` in `dialect`; the error names the part and line
    /// of the first template that does not compile.
    pub(crate) fn new(
        key: String,
        dialect: Dialect,
        content: &Content,
    ) -> Result<Compiled, String> {
        let mut env = Environment::new();
        env.set_fuel(Some(RENDER_FUEL));
        // A substitution in a whole message's header section may not hold
        // a line end.
        env.set_formatter(|out, state, value| {
            if state.name() == HEADERS {
                let text = value.to_string();
                if text.contains(['\r', '\n']) {
                    return Err(minijinja::Error::new(
                        ErrorKind::InvalidOperation,
                        HEADER_LINE_END,
                    ));
                }
            }
            minijinja::escape_formatter(out, state, value)
        });
        let mut add =
            |name: &'static str, part: &str, text: &str, offset: usize| -> Result<Slot, String> {
                match dialect {
                    Dialect::Static => Ok(Slot::Text(text.to_string())),
                    Dialect::Jinja => {
                        env.add_template_owned(name, text.to_string())
                            .map_err(|e| describe(part, offset, &e))?;
                        Ok(Slot::Template(name))
                    }
                }
            };
        let form = match content {
            Content::Whole(text) => match split_header_section(text) {
                Some((end, sep)) => {
                    // MiniJinja drops one line end at a template's end:
                    // the header section's last one must stay.
                    let head = match dialect {
                        Dialect::Jinja => format!("{}\n", &text[..end]),
                        Dialect::Static => text[..end].to_string(),
                    };
                    let headers = add(HEADERS, "the content", &head, 0)?;
                    let lines = text[..end + sep].matches('\n').count();
                    let body = add(BODY, "the content", &text[end + sep..], lines)?;
                    Form::Whole {
                        headers,
                        separator: text[end..end + sep].to_string(),
                        body: Some(body),
                    }
                }
                None => Form::Whole {
                    headers: add(HEADERS, "the content", text, 0)?,
                    separator: String::new(),
                    body: None,
                },
            },
            Content::Built(parts) => {
                if parts.text_body.is_none() && parts.html_body.is_none() {
                    return Err("the content needs a text_body or an html_body".into());
                }
                let subject = match &parts.subject {
                    Some(s) => Some(add(SUBJECT, "subject", s, 0)?),
                    None => None,
                };
                let text = match &parts.text_body {
                    Some(s) => Some(add(TEXT, "text_body", s, 0)?),
                    None => None,
                };
                let html = match &parts.html_body {
                    Some(s) => Some(add(HTML, "html_body", s, 0)?),
                    None => None,
                };
                let mut headers = Vec::with_capacity(parts.headers.len());
                for (name, value) in &parts.headers {
                    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                        return Err(format!("header name {name:?} is not a field name"));
                    }
                    let slot = match dialect {
                        Dialect::Static => Slot::Text(value.clone()),
                        Dialect::Jinja => {
                            let tname = format!("header:{name}");
                            env.add_template_owned(tname.clone(), value.clone())
                                .map_err(|e| describe(&format!("header {name}"), 0, &e))?;
                            Slot::Named(tname)
                        }
                    };
                    headers.push((name.clone(), slot));
                }
                let attachments = parts
                    .attachments
                    .iter()
                    .map(attachment_part)
                    .collect::<Result<_, _>>()?;
                Form::Built(Box::new(Built {
                    parts: Parts {
                        text_body: None,
                        html_body: None,
                        subject: None,
                        headers: Default::default(),
                        attachments: Vec::new(),
                        ..parts.clone()
                    },
                    subject,
                    headers,
                    text,
                    html,
                    attachments,
                }))
            }
        };
        Ok(Compiled { key, env, form })
    }

    /// Appends the message for one recipient, whose variables are `ctx`,
    /// to `message`: at most `limit` bytes, with CRLF line ends throughout.
    pub(crate) fn render_into(
        &self,
        ctx: &Value,
        stamp: &Stamp<'_>,
        limit: usize,
        message: &mut Vec<u8>,
    ) -> Result<(), RenderError> {
        let mut out = Limited::new(limit);
        match &self.form {
            Form::Whole {
                headers,
                separator,
                body,
            } => {
                self.expand(headers, "the content", ctx, &mut out)?;
                out.push(separator)?;
                if let Some(body) = body {
                    self.expand(body, "the content", ctx, &mut out)?;
                }
            }
            Form::Built(b) => self.build(b, ctx, stamp, &mut out)?,
        }
        // MiniJinja writes text only: the output is UTF-8 already.
        let start = message.len();
        mime::crlf_into(&out.buf, message);
        if !message.ends_with(b"\r\n") {
            message.extend_from_slice(b"\r\n");
        }
        // Line ends made CRLF can grow the text past the limit it met.
        if message.len() - start > limit {
            message.truncate(start);
            return Err(RenderError::TooLarge(limit));
        }
        Ok(())
    }

    /// The message for one recipient, as [`Compiled::render_into`] makes it.
    #[cfg(test)]
    pub(crate) fn render(
        &self,
        ctx: &Value,
        stamp: &Stamp<'_>,
        limit: usize,
    ) -> Result<String, RenderError> {
        let mut message = Vec::new();
        self.render_into(ctx, stamp, limit, &mut message)?;
        Ok(String::from_utf8(message).expect("UTF-8"))
    }

    /// About how large a rendered message is: its template's size and
    /// some room for the values.
    pub(crate) fn size_hint(&self) -> usize {
        self.key.len() + 512
    }

    /// Renders only what becomes header fields, to learn whether this
    /// recipient's values would break one (without making the body).
    pub(crate) fn check_headers(
        &self,
        ctx: &Value,
        stamp: &Stamp<'_>,
        limit: usize,
    ) -> Result<(), RenderError> {
        match &self.form {
            Form::Whole { headers, .. } => {
                self.expand(headers, "the content", ctx, &mut Limited::new(limit))
            }
            Form::Built(b) => {
                let _ = stamp;
                if let Some(s) = &b.subject {
                    self.header_value(s, "subject", ctx, limit)?;
                }
                for (name, slot) in &b.headers {
                    self.header_value(slot, &format!("header {name}"), ctx, limit)?;
                }
                Ok(())
            }
        }
    }

    fn expand(
        &self,
        slot: &Slot,
        part: &str,
        ctx: &Value,
        out: &mut Limited,
    ) -> Result<(), RenderError> {
        let name = match slot {
            Slot::Text(t) => return out.push(t),
            Slot::Template(n) => *n,
            Slot::Named(n) => n.as_str(),
        };
        let template = self
            .env
            .get_template(name)
            .map_err(|e| RenderError::Template(describe(part, 0, &e)))?;
        match template.render_captured_to(ctx, &mut *out) {
            Ok(_) => Ok(()),
            Err(_) if out.over => Err(RenderError::TooLarge(out.limit)),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(RenderError::Template(format!(
                "template error in {part}: rendering took more than its bound of {RENDER_FUEL} steps"
            ))),
            Err(e) if e.detail() == Some(HEADER_LINE_END) => Err(RenderError::Header(format!(
                "{HEADER_LINE_END} ({})",
                describe(part, 0, &e)
            ))),
            Err(e) => Err(RenderError::Template(describe(part, 0, &e))),
        }
    }

    /// A header value rendered alone: one line, RFC 2047 where not ASCII.
    fn header_value(
        &self,
        slot: &Slot,
        part: &str,
        ctx: &Value,
        limit: usize,
    ) -> Result<String, RenderError> {
        let mut one = Limited::new(limit);
        self.expand(slot, part, ctx, &mut one)?;
        let text = String::from_utf8(one.buf)
            .map_err(|_| RenderError::Template(format!("{part} is not UTF-8")))?;
        if text.contains(['\r', '\n']) {
            return Err(RenderError::Header(format!(
                "{part}: the rendered value holds CR or LF"
            )));
        }
        Ok(mime::header_text(&text))
    }

    fn build(
        &self,
        b: &Built,
        ctx: &Value,
        stamp: &Stamp<'_>,
        out: &mut Limited,
    ) -> Result<(), RenderError> {
        let mut head = String::new();
        let field = |head: &mut String, name: &str, value: &str| {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        };
        if let Some(from) = &b.parts.from {
            field(
                &mut head,
                "From",
                &mime::mailbox(from.name.as_deref(), &from.email),
            );
        }
        if let Some(reply_to) = &b.parts.reply_to {
            field(
                &mut head,
                "Reply-To",
                &mime::mailbox(reply_to.name.as_deref(), &reply_to.email),
            );
        }
        field(&mut head, "To", stamp.to);
        if let Some(s) = &b.subject {
            field(
                &mut head,
                "Subject",
                &self.header_value(s, "subject", ctx, out.limit)?,
            );
        }
        let given = |name: &str| b.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        for (name, slot) in &b.headers {
            let value = self.header_value(slot, &format!("header {name}"), ctx, out.limit)?;
            field(&mut head, name, &value);
        }
        if !given("Date") {
            field(&mut head, "Date", stamp.date);
        }
        if !given("Message-ID") {
            field(&mut head, "Message-ID", stamp.message_id);
        }
        field(&mut head, "MIME-Version", "1.0");
        out.push(&head)?;
        let text = match &b.text {
            Some(s) => Some(self.body_part(s, "text_body", "text/plain", ctx, out.limit)?),
            None => None,
        };
        let html = match &b.html {
            Some(s) => Some(self.body_part(s, "html_body", "text/html", ctx, out.limit)?),
            None => None,
        };
        let alternative = match (text, html) {
            (Some(t), Some(h)) => {
                let boundary = format!("=_alt_{}", stamp.token);
                format!(
                    "Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
                     --{boundary}\r\n{t}\r\n--{boundary}\r\n{h}\r\n--{boundary}--\r\n"
                )
            }
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => String::new(),
        };
        if b.attachments.is_empty() {
            return out.push(&alternative);
        }
        let boundary = format!("=_mixed_{}", stamp.token);
        out.push(&format!(
            "Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\n"
        ))?;
        out.push(&alternative)?;
        for a in &b.attachments {
            out.push(&format!("\r\n--{boundary}\r\n"))?;
            out.push(a)?;
        }
        out.push(&format!("\r\n--{boundary}--\r\n"))
    }

    /// One text part: its headers, an empty line, its encoded body.
    fn body_part(
        &self,
        slot: &Slot,
        part: &str,
        content_type: &str,
        ctx: &Value,
        limit: usize,
    ) -> Result<String, RenderError> {
        let mut one = Limited::new(limit);
        self.expand(slot, part, ctx, &mut one)?;
        let text = String::from_utf8(one.buf)
            .map_err(|_| RenderError::Template(format!("{part} is not UTF-8")))?;
        let body = mime::text_body(&text);
        Ok(format!(
            "Content-Type: {content_type}; charset=\"utf-8\"\r\n\
             Content-Transfer-Encoding: {}\r\n\r\n{}",
            body.encoding, body.text
        ))
    }
}

/// An attachment's MIME part (without its boundary line).
fn attachment_part(a: &super::request::Attachment) -> Result<String, String> {
    use base64::Engine as _;
    let safe = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || c == '"');
    if !safe(&a.content_type) || !a.content_type.contains('/') {
        return Err(format!(
            "attachment content_type {:?} is not a media type",
            a.content_type
        ));
    }
    let data = if a.base64 {
        base64::engine::general_purpose::STANDARD
            .decode(a.data.trim())
            .map_err(|e| format!("attachment data is not base64: {e}"))?
    } else {
        a.data.clone().into_bytes()
    };
    let mut part = format!("Content-Type: {}", a.content_type);
    if let Some(name) = &a.file_name {
        if !safe(name) {
            return Err(format!(
                "attachment file_name {name:?} holds control characters or quotes"
            ));
        }
        part.push_str(&format!("; name=\"{name}\""));
    }
    part.push_str("\r\nContent-Transfer-Encoding: base64\r\n");
    let disposition = if a.content_id.is_some() {
        "inline"
    } else {
        "attachment"
    };
    part.push_str("Content-Disposition: ");
    part.push_str(disposition);
    if let Some(name) = &a.file_name {
        part.push_str(&format!("; filename=\"{name}\""));
    }
    part.push_str("\r\n");
    if let Some(id) = &a.content_id {
        if !safe(id) || id.contains(['<', '>']) {
            return Err(format!("attachment content_id {id:?} is not an id"));
        }
        part.push_str(&format!("Content-ID: <{id}>\r\n"));
    }
    part.push_str("\r\n");
    part.push_str(mime::base64_lines(&data).trim_end());
    Ok(part)
}

/// A buffer that refuses to grow past a limit, so that a render cannot
/// make a message larger than a receiver would take.
struct Limited {
    buf: Vec<u8>,
    limit: usize,
    over: bool,
}

impl Limited {
    fn new(limit: usize) -> Limited {
        Limited {
            buf: Vec::with_capacity(limit.min(4096)),
            limit,
            over: false,
        }
    }

    fn push(&mut self, s: &str) -> Result<(), RenderError> {
        io::Write::write_all(self, s.as_bytes()).map_err(|_| RenderError::TooLarge(self.limit))
    }
}

impl io::Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.limit {
            self.over = true;
            return Err(io::Error::other("size limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn stamp() -> Stamp<'static> {
        Stamp {
            date: "Thu, 03 Dec 2026 18:00:00 +0000",
            message_id: "<t.0@volley.example>",
            token: "t",
            to: "\"Ann\" <ann@x.example>",
        }
    }

    fn whole(text: &str) -> Compiled {
        Compiled::new(String::new(), Dialect::Jinja, &Content::Whole(text.into())).unwrap()
    }

    #[test]
    fn a_whole_message_renders_as_minijinja_renders_it_with_crlf() {
        let src = "Subject: Hi {{ name }}\nTo: {{ email }}\n\nDear {{ name }},\n{% for i in items %}{{ i }} {% endfor %}\n";
        let c = whole(src);
        let ctx = context! { name => "Ann", email => "ann@x.example", items => vec![1, 2] };
        // Volley ends the message with a line end, as SMTP needs.
        let expected = Environment::new()
            .render_str(src, ctx.clone())
            .unwrap()
            .replace('\n', "\r\n")
            + "\r\n";
        assert_eq!(c.render(&ctx, &stamp(), 10_000).unwrap(), expected);
    }

    #[test]
    fn a_line_end_substituted_into_the_header_section_is_refused_but_not_in_the_body() {
        let c = whole("Subject: {{ s }}\n\n{{ s }}\n");
        let bad = context! { s => "x\r\nBcc: evil@y.example" };
        let e = c.render(&bad, &stamp(), 10_000).unwrap_err();
        assert!(
            matches!(&e, RenderError::Header(w) if w.contains("CR or LF")),
            "{e}"
        );
        let c = whole("Subject: fixed\n\n{{ s }}\n");
        assert!(
            c.render(&bad, &stamp(), 10_000)
                .unwrap()
                .contains("Bcc: evil")
        );
    }

    #[test]
    fn compile_errors_name_the_part_and_the_line_of_the_whole_content() {
        let e = Compiled::new(
            String::new(),
            Dialect::Jinja,
            &Content::Whole("Subject: x\n\nline 3\n{% if %}\n".into()),
        )
        .err()
        .unwrap();
        assert!(e.contains("line 4"), "{e}");
        let e = whole_err("Subject: {{ x \n\nbody");
        assert!(e.contains("line 1") && e.contains("syntax error"), "{e}");
    }

    fn whole_err(s: &str) -> String {
        Compiled::new(String::new(), Dialect::Jinja, &Content::Whole(s.into()))
            .err()
            .unwrap()
    }

    #[test]
    fn loops_and_huge_output_are_bounded() {
        let c = whole(
            "Subject: x\n\n{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        );
        let e = c.render(&context! {}, &stamp(), 1 << 20).unwrap_err();
        assert!(
            matches!(&e, RenderError::Template(w) if w.contains("bound")),
            "{e}"
        );
        let c = whole("Subject: x\n\n{{ 'x' * 10000 }}{{ 'x' * 10000 }}");
        let e = c.render(&context! {}, &stamp(), 15_000).unwrap_err();
        assert_eq!(e, RenderError::TooLarge(15_000));
    }

    /// Found by the `inject_request` fuzz target: text within the limit
    /// whose bare LFs, made CRLF, took the message past it (66,384 bytes
    /// for a limit of 65,536).
    #[test]
    fn line_ends_made_crlf_count_against_the_limit() {
        let c = whole("Subject: x\n\n{{ 'a\n' * 4000 }}");
        // 8,000 octets of text, 12,000 once every line ends in CRLF.
        let e = c.render(&context! {}, &stamp(), 10_000).unwrap_err();
        assert_eq!(e, RenderError::TooLarge(10_000));
        let fits = c.render(&context! {}, &stamp(), 13_000).unwrap();
        assert!(
            fits.len() <= 13_000 && fits.ends_with("\r\n"),
            "{}",
            fits.len()
        );
    }

    #[test]
    fn the_static_dialect_expands_nothing() {
        let c = Compiled::new(
            String::new(),
            Dialect::Static,
            &Content::Whole("Subject: {{ x }}\n\n{% nothing %}".into()),
        )
        .unwrap();
        assert_eq!(
            c.render(&context! { x => 1 }, &stamp(), 1000).unwrap(),
            "Subject: {{ x }}\r\n\r\n{% nothing %}\r\n"
        );
    }

    #[test]
    fn a_built_message_has_its_fields_and_parts() {
        let parts: Parts = serde_json::from_value(serde_json::json!({
            "from": {"email": "news@s.example", "name": "News"},
            "subject": "Hello {{ name }}",
            "headers": {"X-Campaign": "c-{{ id }}"},
            "text_body": "Hi {{ name }}",
            "html_body": "<p>Hi {{ name }}</p>",
            "attachments": [{"data": "aGVsbG8=", "base64": true, "content_type": "text/plain", "file_name": "a.txt"}]
        }))
        .unwrap();
        let c = Compiled::new(String::new(), Dialect::Jinja, &Content::Built(parts)).unwrap();
        let out = c
            .render(&context! { name => "<Zoë>", id => 7 }, &stamp(), 100_000)
            .unwrap();
        for expected in [
            "From: \"News\" <news@s.example>\r\n",
            "To: \"Ann\" <ann@x.example>\r\n",
            "Subject: =?utf-8?b?SGVsbG8gPFpvw6s+?=\r\n",
            "X-Campaign: c-7\r\n",
            "Date: Thu, 03 Dec 2026 18:00:00 +0000\r\n",
            "Message-ID: <t.0@volley.example>\r\n",
            "multipart/mixed; boundary=\"=_mixed_t\"",
            "multipart/alternative; boundary=\"=_alt_t\"",
            "Hi &lt;Zo=C3=AB&gt;",
            "Content-Disposition: attachment; filename=\"a.txt\"\r\n\r\naGVsbG8=\r\n",
        ] {
            assert!(out.contains(expected), "{expected:?} not in\n{out}");
        }
        assert!(out.is_ascii());
        let e = c
            .render(&context! { name => "x\nBcc: y" }, &stamp(), 100_000)
            .unwrap_err();
        assert!(
            matches!(&e, RenderError::Header(w) if w.contains("subject")),
            "{e}"
        );
        assert!(
            c.check_headers(&context! { name => "x\nBcc: y" }, &stamp(), 1000)
                .is_err()
        );
        assert!(
            c.check_headers(&context! { name => "fine" }, &stamp(), 1000)
                .is_ok()
        );
    }
}
