//! Incremental parsing of SMTP replies (RFC 5321 4.2) as a client reads them.
//!
//! Bytes arrive in whatever pieces the socket hands over; [`ReplyParser`]
//! keeps the unfinished tail and returns a [`Reply`] only once its last line
//! (`250 ...`, after any `250-...` continuation lines) is complete. "Need more
//! data" is `Ok(None)`; errors are kept for input no server should send, and
//! every buffer is bounded so a hostile server cannot make the client grow.

use crate::reply::{EnhancedCode, Reply};

/// Longest reply line accepted by default, CRLF included. RFC 5321 4.5.3.1.5
/// says 512, but real servers send longer texts, so this leaves room.
pub const DEFAULT_MAX_REPLY_LINE: usize = 2048;

/// Most lines one multi-line reply may have (a long EHLO list has ~20).
const MAX_REPLY_LINES: usize = 256;

/// Why the bytes from a server could not be read as replies. Each is corrupt
/// input: the session cannot go on after one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// A line went past the configured limit without a line end.
    #[error("reply line longer than {limit} octets")]
    LineTooLong {
        /// The limit in force.
        limit: usize,
    },
    /// A line does not start with a three-digit code 200..=599 followed by a
    /// space, a hyphen or the line end.
    #[error("malformed reply line {line:?}")]
    Malformed {
        /// The offending line (lossy UTF-8, cut to 80 characters).
        line: String,
    },
    /// A continuation line carries another code than the first line.
    #[error("multi-line reply changes code from {first} to {then}")]
    CodeChanged {
        /// The code of the first line.
        first: u16,
        /// The code of the offending line.
        then: u16,
    },
    /// A multi-line reply went past the line-count limit.
    #[error("multi-line reply longer than {limit} lines")]
    TooManyLines {
        /// The limit in force.
        limit: usize,
    },
}

/// Turns a byte stream from a server into [`Reply`] values.
///
/// Feed it with [`push`](Self::push), then call [`next_reply`](Self::next_reply)
/// until it returns `Ok(None)`. Lines may end in CRLF or, tolerantly, a bare LF.
#[derive(Debug)]
pub struct ReplyParser {
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    pos: usize,
    max_line: usize,
    /// The reply being assembled from continuation lines.
    partial: Option<Reply>,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_REPLY_LINE)
    }
}

impl ReplyParser {
    /// A parser that refuses lines longer than `max_line` octets.
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            max_line: max_line.max(8),
            partial: None,
        }
    }

    /// Appends bytes read from the server.
    pub fn push(&mut self, input: &[u8]) {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(input);
    }

    /// Bytes pushed but not yet part of a returned reply (a partial line).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True when no reply is half-read: nothing buffered, no open multi-line
    /// reply. A connection that ends in this state ended cleanly.
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0 && self.partial.is_none()
    }

    /// The next complete reply, `Ok(None)` when more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let rest = &self.buf[self.pos..];
            let Some(nl) = memchr::memchr(b'\n', rest) else {
                if rest.len() >= self.max_line {
                    return Err(ReplyError::LineTooLong {
                        limit: self.max_line,
                    });
                }
                return Ok(None);
            };
            if nl + 1 > self.max_line {
                return Err(ReplyError::LineTooLong {
                    limit: self.max_line,
                });
            }
            let mut line = &rest[..nl];
            if let [head @ .., b'\r'] = line {
                line = head;
            }
            let parsed = parse_line(line)?;
            self.pos += nl + 1;
            if let Some(reply) = self.add_line(parsed)? {
                return Ok(Some(reply));
            }
        }
    }

    fn add_line(&mut self, line: Line) -> Result<Option<Reply>, ReplyError> {
        let reply = match self.partial.take() {
            None => Reply {
                code: line.code,
                enhanced: line.enhanced,
                lines: vec![line.text],
            },
            Some(mut reply) => {
                if reply.code != line.code {
                    return Err(ReplyError::CodeChanged {
                        first: reply.code,
                        then: line.code,
                    });
                }
                if reply.lines.len() >= MAX_REPLY_LINES {
                    return Err(ReplyError::TooManyLines {
                        limit: MAX_REPLY_LINES,
                    });
                }
                if reply.enhanced.is_none() {
                    reply.enhanced = line.enhanced;
                }
                reply.lines.push(line.text);
                reply
            }
        };
        if line.last {
            Ok(Some(reply))
        } else {
            self.partial = Some(reply);
            Ok(None)
        }
    }
}

/// One reply line, taken apart.
struct Line {
    code: u16,
    last: bool,
    enhanced: Option<EnhancedCode>,
    text: String,
}

fn parse_line(line: &[u8]) -> Result<Line, ReplyError> {
    let malformed = || ReplyError::Malformed {
        line: String::from_utf8_lossy(&line[..line.len().min(80)]).into_owned(),
    };
    let [a, b, c, rest @ ..] = line else {
        return Err(malformed());
    };
    if !(b'2'..=b'5').contains(a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return Err(malformed());
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    let (last, mut text) = match rest {
        [] => (true, rest),
        [b' ', text @ ..] => (true, text),
        [b'-', text @ ..] => (false, text),
        _ => return Err(malformed()),
    };
    let enhanced = match parse_enhanced(text, a - b'0') {
        Some((e, len)) => {
            text = &text[len..];
            Some(e)
        }
        None => None,
    };
    Ok(Line {
        code,
        last,
        enhanced,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

/// Reads `class.subject.detail` (RFC 3463: 1-3 digits each) at the start of
/// `text`, followed by a space or the end, when its class equals the reply
/// code's first digit; returns the code and how many bytes to skip (the
/// trailing space included). Anything else is ordinary text.
fn parse_enhanced(text: &[u8], class: u8) -> Option<(EnhancedCode, usize)> {
    let [first, b'.', ..] = text else {
        return None;
    };
    if *first != b'0' + class {
        return None;
    }
    let mut i = 2;
    let subject = digits(text, &mut i)?;
    if text.get(i) != Some(&b'.') {
        return None;
    }
    i += 1;
    let detail = digits(text, &mut i)?;
    match text.get(i) {
        None => {}
        Some(b' ') => i += 1,
        Some(_) => return None,
    }
    Some((EnhancedCode::new(class, subject, detail), i))
}

/// One to three ASCII digits at `text[*i..]`, advancing `i`.
fn digits(text: &[u8], i: &mut usize) -> Option<u16> {
    let start = *i;
    let mut value = 0u16;
    while let Some(d) = text.get(*i).filter(|d| d.is_ascii_digit()) {
        if *i - start == 3 {
            return None;
        }
        value = value * 10 + u16::from(d - b'0');
        *i += 1;
    }
    (*i > start).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut p = ReplyParser::default();
        p.push(input);
        let mut out = Vec::new();
        while let Some(r) = p.next_reply()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let r = parse_all(b"250 2.1.0 Sender ok\r\n").unwrap();
        assert_eq!(
            r,
            vec![Reply::new(250, EnhancedCode::new(2, 1, 0), "Sender ok")]
        );
    }

    #[test]
    fn without_enhanced_code() {
        let r = parse_all(b"220 mx.example ESMTP\r\n").unwrap();
        assert_eq!(r[0].code, 220);
        assert_eq!(r[0].enhanced, None);
        assert_eq!(r[0].lines, vec!["mx.example ESMTP"]);
    }

    #[test]
    fn enhanced_code_of_another_class_stays_text() {
        let r = parse_all(b"550 2.1.0 odd\r\n451 4.7.1 Try later\r\n").unwrap();
        assert_eq!(r[0].enhanced, None);
        assert_eq!(r[0].lines, vec!["2.1.0 odd"]);
        assert_eq!(r[1].enhanced, Some(EnhancedCode::new(4, 7, 1)));
        assert_eq!(r[1].lines, vec!["Try later"]);
    }

    #[test]
    fn text_that_looks_like_a_number_is_not_an_enhanced_code() {
        for line in [
            &b"250 2.0 ok\r\n"[..],
            b"250 2.0.0ok\r\n",
            b"250 2.1000.0 x\r\n",
            b"250 2..0 x\r\n",
            b"250 2.0. x\r\n",
        ] {
            let r = parse_all(line).unwrap();
            assert_eq!(r[0].enhanced, None, "{:?}", String::from_utf8_lossy(line));
        }
        let r = parse_all(b"250 2.0.0\r\n").unwrap();
        assert_eq!(r[0].enhanced, Some(EnhancedCode::new(2, 0, 0)));
        assert_eq!(r[0].lines, vec![""]);
    }

    #[test]
    fn code_alone_is_a_reply() {
        let r = parse_all(b"354\r\n").unwrap();
        assert_eq!(r[0].code, 354);
        assert_eq!(r[0].lines, vec![""]);
    }

    #[test]
    fn multi_line_reply_keeps_every_line() {
        let input = b"250-mx.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 CHUNKING\r\n";
        let r = parse_all(input).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].lines,
            vec!["mx.example Hello", "PIPELINING", "SIZE 1000", "CHUNKING"]
        );
    }

    #[test]
    fn multi_line_enhanced_code_is_stripped_from_every_line() {
        let input = b"550-5.1.1 No such user\r\n550 5.1.1 see https://x\r\n";
        let r = parse_all(input).unwrap();
        assert_eq!(r[0].enhanced, Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(r[0].lines, vec!["No such user", "see https://x"]);
    }

    #[test]
    fn encode_then_parse_is_identity() {
        let reply = Reply {
            code: 452,
            enhanced: Some(EnhancedCode::new(4, 5, 3)),
            lines: vec!["Too many".into(), "recipients".into()],
        };
        let mut wire = Vec::new();
        reply.encode(&mut wire);
        assert_eq!(parse_all(&wire).unwrap(), vec![reply]);
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let r = parse_all(b"250-a\n250 b\n").unwrap();
        assert_eq!(r[0].lines, vec!["a", "b"]);
    }

    #[test]
    fn every_split_point_gives_the_same_replies() {
        let input: &[u8] = b"220 mx ESMTP\r\n250-mx\r\n250-PIPELINING\r\n250 2.0.0 SIZE 10\r\n\
            250 2.1.0 ok\r\n550 5.1.1 no\r\n354 go\r\n250 2.0.0 queued\r\n";
        let whole = parse_all(input).unwrap();
        assert_eq!(whole.len(), 6);
        for split in 0..=input.len() {
            let mut p = ReplyParser::default();
            let mut got = Vec::new();
            p.push(&input[..split]);
            while let Some(r) = p.next_reply().unwrap() {
                got.push(r);
            }
            p.push(&input[split..]);
            while let Some(r) = p.next_reply().unwrap() {
                got.push(r);
            }
            assert_eq!(got, whole, "split at {split}");
            assert!(p.is_empty());
        }
        // And one byte at a time.
        let mut p = ReplyParser::default();
        let mut got = Vec::new();
        for b in input {
            p.push(std::slice::from_ref(b));
            while let Some(r) = p.next_reply().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn partial_line_is_need_more_data() {
        let mut p = ReplyParser::default();
        p.push(b"250-first\r\n250 sec");
        assert_eq!(p.next_reply(), Ok(None));
        assert!(!p.is_empty());
        p.push(b"ond\r\n");
        assert_eq!(
            p.next_reply().unwrap().unwrap().lines,
            vec!["first", "second"]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b"hello\r\n"[..],
            b"25\r\n",
            b"150 one\r\n",
            b"650 six\r\n",
            b"2x0 ok\r\n",
            b"250_ok\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_all(bad), Err(ReplyError::Malformed { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn code_change_inside_a_multi_line_reply_is_an_error() {
        assert_eq!(
            parse_all(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeChanged {
                first: 250,
                then: 251
            })
        );
    }

    #[test]
    fn long_lines_are_refused_with_or_without_line_end() {
        let mut p = ReplyParser::new(64);
        p.push(&[b'2'; 63]);
        assert_eq!(p.next_reply(), Ok(None));
        p.push(b"5");
        assert_eq!(p.next_reply(), Err(ReplyError::LineTooLong { limit: 64 }));

        let mut p = ReplyParser::new(64);
        let mut line = b"250 ".to_vec();
        line.extend_from_slice(&[b'x'; 70]);
        line.extend_from_slice(b"\r\n");
        p.push(&line);
        assert_eq!(p.next_reply(), Err(ReplyError::LineTooLong { limit: 64 }));
    }

    #[test]
    fn endless_multi_line_reply_is_refused() {
        let mut input = Vec::new();
        for _ in 0..=MAX_REPLY_LINES {
            input.extend_from_slice(b"250-x\r\n");
        }
        assert_eq!(
            parse_all(&input),
            Err(ReplyError::TooManyLines {
                limit: MAX_REPLY_LINES
            })
        );
    }

    #[test]
    fn buffer_is_reused_after_consumption() {
        let mut p = ReplyParser::default();
        for _ in 0..1000 {
            p.push(b"250 ok\r\n250 o");
            assert!(p.next_reply().unwrap().is_some());
            assert_eq!(p.next_reply(), Ok(None));
            p.push(b"k\r\n");
            assert!(p.next_reply().unwrap().is_some());
        }
        assert!(p.buf.capacity() < 1024);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn reply() -> impl Strategy<Value = Reply> {
        (
            200u16..600,
            proptest::option::of((0u16..1000, 0u16..1000)),
            proptest::collection::vec("[a-zA-Z][ -~]{0,60}", 1..5),
        )
            .prop_map(|(code, enhanced, lines)| Reply {
                code,
                enhanced: enhanced.map(|(s, d)| EnhancedCode::new((code / 100) as u8, s, d)),
                lines,
            })
    }

    proptest! {
        #[test]
        fn encoded_replies_parse_back_at_any_split(replies in proptest::collection::vec(reply(), 1..6), cut in 0usize..2000) {
            let mut wire = Vec::new();
            for r in &replies {
                r.encode(&mut wire);
            }
            let cut = cut.min(wire.len());
            let mut p = ReplyParser::default();
            let mut got = Vec::new();
            for part in [&wire[..cut], &wire[cut..]] {
                p.push(part);
                while let Some(r) = p.next_reply().unwrap() {
                    got.push(r);
                }
            }
            prop_assert_eq!(got, replies);
            prop_assert!(p.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut p = ReplyParser::new(64);
            for chunk in input.chunks(7) {
                p.push(chunk);
                loop {
                    match p.next_reply() {
                        Ok(Some(r)) => prop_assert!((200..600).contains(&r.code)),
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
                prop_assert!(p.buffered() < 64 + 7);
            }
        }
    }
}
