//! The DATA body scanner: dot-unstuffing, end of data at CRLF.CRLF only, and
//! detection of bare CR / bare LF and over-long text lines.
//!
//! Smuggling (CVE-2023-51764 class): a line starts only after CRLF, so
//! `\n.\r\n`, `\r.\r\n` and `\r\n.\n` never end the data; any bare CR or LF
//! also dooms the message, so smuggled "commands" stay inside a body that is
//! rejected. So does a NUL octet: some receivers drop NULs before they look
//! for the end of data, so `\r\n\0.\r\n` passed on would end a message
//! there.

/// Why a message in progress was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortReason {
    /// RSET, or EHLO/HELO/LHLO, ended the transaction.
    Reset,
    /// The message grew past `max_message_size` (552 5.3.4).
    TooLarge,
    /// DATA held a CR or LF that was not part of a CRLF pair (550 5.6.0).
    BareLineEnding,
    /// DATA held a text line longer than `max_text_line` (500 5.5.2).
    LineTooLong,
    /// DATA held a NUL octet (550 5.6.0).
    NulOctet,
}

/// What one scan step found, in octets from the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// `buf[..len]` is body; then drop `skip` octets (a stuffed dot).
    Chunk { len: usize, skip: usize },
    /// `buf[..len]` is body, then `.\r\n` (3 octets) ends the data.
    End { len: usize },
    /// `buf[..len]` is body; the rest is a partial token that needs more input.
    More { len: usize },
}

/// Scanner state carried across input buffers.
#[derive(Debug)]
pub(crate) struct DataScan {
    at_line_start: bool,
    line_len: usize,
    max_line: usize,
    /// The first fault found (a message too large says so instead,
    /// whatever came first); the message is doomed once set.
    pub(crate) fault: Option<AbortReason>,
}

impl DataScan {
    pub(crate) fn new(max_line: usize) -> Self {
        Self {
            at_line_start: true,
            line_len: 0,
            max_line,
            fault: None,
        }
    }

    fn fail(&mut self, why: AbortReason) {
        self.fault.get_or_insert(why);
    }

    fn grow_line(&mut self, n: usize) {
        self.line_len += n;
        // The line has at least its CRLF still to come.
        if self.line_len + 2 > self.max_line {
            self.fail(AbortReason::LineTooLong);
        }
    }

    /// Scans `buf` from its start.
    pub(crate) fn scan(&mut self, buf: &[u8]) -> Scan {
        let mut i = 0;
        loop {
            if self.at_line_start {
                let Some(&first) = buf.get(i) else {
                    return Scan::More { len: i };
                };
                if first == b'.' {
                    let tail = &buf[i..buf.len().min(i + 3)];
                    if tail == b".\r\n" {
                        return Scan::End { len: i };
                    }
                    if tail.len() < 3 && b".\r\n".starts_with(tail) {
                        return Scan::More { len: i };
                    }
                    // A stuffed dot (RFC 5321 4.5.2): drop it.
                    self.at_line_start = false;
                    self.grow_line(1);
                    return Scan::Chunk { len: i, skip: 1 };
                }
                self.at_line_start = false;
            }
            let Some(off) = memchr::memchr3(b'\r', b'\n', 0, &buf[i..]) else {
                self.grow_line(buf.len() - i);
                return Scan::More { len: buf.len() };
            };
            let j = i + off;
            self.grow_line(off);
            if buf[j] == 0 {
                self.fail(AbortReason::NulOctet);
                self.grow_line(1);
                i = j + 1;
                continue;
            }
            if buf[j] == b'\n' {
                self.fail(AbortReason::BareLineEnding);
                self.grow_line(1);
                i = j + 1;
                continue;
            }
            match buf.get(j + 1) {
                None => return Scan::More { len: j },
                Some(b'\n') => {
                    self.line_len = 0;
                    self.at_line_start = true;
                    i = j + 2;
                }
                Some(_) => {
                    self.fail(AbortReason::BareLineEnding);
                    self.grow_line(1);
                    i = j + 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the scanner over `input` as one buffer; returns the body and
    /// whether the end was found.
    fn run(input: &[u8]) -> (Vec<u8>, bool, Option<AbortReason>) {
        let mut s = DataScan::new(1000);
        let mut buf = input;
        let mut body = Vec::new();
        loop {
            match s.scan(buf) {
                Scan::Chunk { len, skip } => {
                    body.extend_from_slice(&buf[..len]);
                    buf = &buf[len + skip..];
                }
                Scan::End { len } => {
                    body.extend_from_slice(&buf[..len]);
                    return (body, true, s.fault);
                }
                Scan::More { len } => {
                    body.extend_from_slice(&buf[..len]);
                    return (body, false, s.fault);
                }
            }
        }
    }

    #[test]
    fn unstuffs_and_ends_at_crlf_dot_crlf() {
        let (body, end, fault) = run(b"a\r\n..b\r\n.c\r\n\r\n.\r\nMAIL");
        assert_eq!(body, b"a\r\n.b\r\nc\r\n\r\n");
        assert!(end);
        assert_eq!(fault, None);
        assert_eq!(run(b".\r\n"), (Vec::new(), true, None));
    }

    #[test]
    fn smuggling_sequences_never_end_the_data() {
        for input in [
            &b"a\n.\r\nMAIL FROM:<x@y.z>\r\n"[..],
            b"a\r.\r\nMAIL FROM:<x@y.z>\r\n",
            b"a\r\n.\nMAIL FROM:<x@y.z>\r\n",
            b"a\n.\nMAIL FROM:<x@y.z>\r\n",
            b"a\r\n.\rMAIL FROM:<x@y.z>\r\n",
        ] {
            let (_, end, fault) = run(input);
            assert!(!end, "{input:?}");
            assert_eq!(fault, Some(AbortReason::BareLineEnding), "{input:?}");
        }
        // A NUL before the dot: the data goes on, and the message is doomed.
        let (_, end, fault) = run(b"a\r\n\0.\r\nMAIL FROM:<x@y.z>\r\n");
        assert!(!end);
        assert_eq!(fault, Some(AbortReason::NulOctet));
        let (_, end, fault) = run(b"a\0b\r\n.\r\n");
        assert!(end, "a NUL mid-line does not hide the real end");
        assert_eq!(fault, Some(AbortReason::NulOctet));
    }

    #[test]
    fn waits_on_partial_tokens() {
        let mut s = DataScan::new(1000);
        assert_eq!(s.scan(b"ab\r"), Scan::More { len: 2 });
        assert_eq!(s.scan(b"\r\n."), Scan::More { len: 2 });
        let mut s = DataScan::new(1000);
        assert_eq!(s.scan(b".\r"), Scan::More { len: 0 });
    }

    #[test]
    fn long_lines_fault() {
        let mut s = DataScan::new(10);
        assert_eq!(s.scan(b"12345678\r\n"), Scan::More { len: 10 });
        assert_eq!(s.fault, None);
        s.scan(b"123456789\r\n");
        assert_eq!(s.fault, Some(AbortReason::LineTooLong));
    }
}
