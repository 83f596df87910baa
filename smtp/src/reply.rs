//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 3463, RFC 2034).
//!
//! Both sides use these types: the server encodes them, the client parses
//! them (see [`ReplyParser`](crate::ReplyParser)).

use std::fmt;

/// An enhanced status code, `class.subject.detail` (RFC 3463), e.g. `5.1.1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    pub class: u8,
    /// The subject: 0 other, 1 addressing, 2 mailbox, 3 mail system, 4 network
    /// and routing, 5 mail delivery protocol, 6 content, 7 security or policy.
    pub subject: u16,
    /// The detail within the subject.
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code from its three parts.
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// What a reply code means for the command it answers (RFC 5321 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplyClass {
    /// 2yz: the command succeeded.
    Positive,
    /// 3yz: go on (the answer to DATA, or to a BDAT that is not last).
    Intermediate,
    /// 4yz: failed for now; the same command may succeed later.
    Transient,
    /// 5yz: failed for good.
    Permanent,
}

/// One SMTP reply: a three-digit code, an optional enhanced code, and one or
/// more lines of text (a multi-line reply keeps each line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code, 200..=599.
    pub code: u16,
    /// The enhanced status code, when the server sent one.
    pub enhanced: Option<EnhancedCode>,
    /// The text of each line, without the code, enhanced code or CRLF.
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply with an enhanced code.
    pub fn new(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// What the code means: positive, intermediate, transient or permanent.
    pub fn class(&self) -> ReplyClass {
        match self.code / 100 {
            2 => ReplyClass::Positive,
            3 => ReplyClass::Intermediate,
            4 => ReplyClass::Transient,
            _ => ReplyClass::Permanent,
        }
    }

    /// True for 4yz replies: the command may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        self.class() == ReplyClass::Transient
    }

    /// True for 5yz replies.
    pub fn is_permanent(&self) -> bool {
        self.class() == ReplyClass::Permanent
    }

    /// All lines joined with a space: what a log line shows.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// Appends the wire form (`250-...` continuation lines, `250 ...` last)
    /// with the enhanced code on every line, as RFC 2034 asks.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let head = match self.enhanced {
                Some(e) => format!("{}{}{} ", self.code, sep, e),
                None => format!("{}{}", self.code, sep),
            };
            out.extend_from_slice(head.as_bytes());
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(e) => write!(f, "{} {} {}", self.code, e, self.text()),
            None => write!(f, "{} {}", self.code, self.text()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_multiline_with_enhanced_code_on_every_line() {
        let reply = Reply {
            code: 250,
            enhanced: Some(EnhancedCode::new(2, 0, 0)),
            lines: vec!["mx.example".into(), "PIPELINING".into(), "SIZE 100".into()],
        };
        let mut out = Vec::new();
        reply.encode(&mut out);
        assert_eq!(
            out,
            b"250-2.0.0 mx.example\r\n250-2.0.0 PIPELINING\r\n250 2.0.0 SIZE 100\r\n"
        );
    }

    #[test]
    fn classes_follow_the_first_digit() {
        let r = |code| Reply::new(code, EnhancedCode::new(2, 0, 0), "x");
        assert_eq!(r(250).class(), ReplyClass::Positive);
        assert_eq!(r(354).class(), ReplyClass::Intermediate);
        assert!(r(451).is_transient());
        assert!(r(550).is_permanent());
    }
}
