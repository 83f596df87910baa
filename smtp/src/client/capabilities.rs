//! The extensions a server lists in its EHLO / LHLO reply (RFC 5321 4.1.1.1).

use crate::reply::Reply;

/// What the server said it supports. All false after a HELO fallback.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// EHLO (or LHLO) was accepted: the server speaks ESMTP.
    pub esmtp: bool,
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870) was offered.
    pub size: bool,
    /// The fixed size limit that SIZE announced; `None` when absent or 0
    /// (0 means no fixed limit).
    pub max_size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// CHUNKING (RFC 3030): BDAT.
    pub chunking: bool,
    /// BINARYMIME (RFC 3030): BODY=BINARYMIME over BDAT.
    pub binarymime: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034).
    pub enhanced_status_codes: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
}

impl Capabilities {
    /// Reads the keywords of a positive EHLO reply: every line after the
    /// first. Unknown keywords are ignored; keywords are case-insensitive.
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Self {
            esmtp: true,
            ..Self::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            let is = |name: &str| keyword.eq_ignore_ascii_case(name);
            if is("PIPELINING") {
                caps.pipelining = true;
            } else if is("SIZE") {
                caps.size = true;
                caps.max_size = words
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|&n| n > 0);
            } else if is("8BITMIME") {
                caps.eight_bit_mime = true;
            } else if is("SMTPUTF8") {
                caps.smtputf8 = true;
            } else if is("CHUNKING") {
                caps.chunking = true;
            } else if is("BINARYMIME") {
                caps.binarymime = true;
            } else if is("ENHANCEDSTATUSCODES") {
                caps.enhanced_status_codes = true;
            } else if is("STARTTLS") {
                caps.starttls = true;
            }
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ehlo(lines: &[&str]) -> Reply {
        Reply {
            code: 250,
            enhanced: None,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn reads_every_known_keyword() {
        let caps = Capabilities::from_ehlo(&ehlo(&[
            "mx.example greets you",
            "pipelining",
            "SIZE 35882577",
            "8BITMIME",
            "SMTPUTF8",
            "CHUNKING",
            "BINARYMIME",
            "ENHANCEDSTATUSCODES",
            "STARTTLS",
            "AUTH PLAIN LOGIN",
        ]));
        assert_eq!(
            caps,
            Capabilities {
                esmtp: true,
                pipelining: true,
                size: true,
                max_size: Some(35882577),
                eight_bit_mime: true,
                smtputf8: true,
                chunking: true,
                binarymime: true,
                enhanced_status_codes: true,
                starttls: true,
            }
        );
    }

    #[test]
    fn first_line_is_the_greeting_not_a_keyword() {
        let caps = Capabilities::from_ehlo(&ehlo(&["PIPELINING"]));
        assert!(!caps.pipelining);
        assert!(caps.esmtp);
    }

    #[test]
    fn size_without_a_limit() {
        for line in ["SIZE", "SIZE 0", "SIZE lots"] {
            let caps = Capabilities::from_ehlo(&ehlo(&["mx", line]));
            assert!(caps.size);
            assert_eq!(caps.max_size, None, "{line}");
        }
    }
}
