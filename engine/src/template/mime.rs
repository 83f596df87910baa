//! The MIME a built message (content given as parts, not as a whole
//! message) is written in: 7-bit throughout, so it travels to receivers
//! with or without 8BITMIME. Header text outside ASCII becomes RFC 2047
//! encoded words, body text quoted-printable (RFC 2045) when a line is not
//! short ASCII, attachments base64.

use base64::Engine as _;

/// A part's body as it travels, with its transfer encoding.
pub(crate) struct Encoded {
    pub(crate) encoding: &'static str,
    pub(crate) text: String,
}

/// The longest line RFC 5322 allows, less its CRLF.
const MAX_LINE: usize = 998;

/// Text as a MIME part body: as it is (7bit) when every line is short
/// ASCII, quoted-printable otherwise. Line ends become CRLF.
pub(crate) fn text_body(text: &str) -> Encoded {
    let text = crlf(text);
    let seven_bit = text.is_ascii()
        && text
            .split("\r\n")
            .all(|l| l.len() <= MAX_LINE && !l.contains('\r') && !l.contains('\0'));
    if seven_bit {
        return Encoded {
            encoding: "7bit",
            text,
        };
    }
    Encoded {
        encoding: "quoted-printable",
        text: quoted_printable(&text),
    }
}

/// Every line end (CRLF, bare LF, bare CR) as CRLF, as SMTP carries them.
pub(crate) fn crlf(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + s.len() / 32);
    crlf_into(s.as_bytes(), &mut out);
    // Only ASCII line ends were replaced by ASCII line ends.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `src` to `out` with every line end as CRLF: one pass that
/// copies the text between line ends whole.
pub(crate) fn crlf_into(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(src.len() + src.len() / 32);
    let mut at = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', src) {
        if i < at {
            // The LF of a CRLF already copied.
            continue;
        }
        out.extend_from_slice(&src[at..i]);
        out.extend_from_slice(b"\r\n");
        at = if src[i] == b'\r' && src.get(i + 1) == Some(&b'\n') {
            i + 2
        } else {
            i + 1
        };
    }
    out.extend_from_slice(&src[at..]);
}

/// Quoted-printable of CRLF-delimited `text`: lines of at most 76
/// characters, soft breaks (`=` CRLF) where longer.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let lines: Vec<&str> = text.split("\r\n").collect();
    for (n, line) in lines.iter().enumerate() {
        let bytes = line.as_bytes();
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal =
                (b == b' ' || b == b'\t') && !last || (33..=126).contains(&b) && b != b'=';
            let piece_len = if literal { 1 } else { 3 };
            if width + piece_len > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            if literal {
                out.push(b as char);
            } else {
                out.push_str(&format!("={b:02X}"));
            }
            width += piece_len;
        }
        if n + 1 < lines.len() {
            out.push_str("\r\n");
        }
    }
    out
}

/// A header value: as it is when printable ASCII, else RFC 2047 encoded
/// words (UTF-8, base64), at most 75 characters each, folded between.
pub(crate) fn header_text(value: &str) -> String {
    if value.bytes().all(|b| (32..127).contains(&b) || b == b'\t') {
        return value.to_string();
    }
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in value.chars() {
        // 45 bytes of UTF-8 make 60 of base64: a word of 72 characters.
        if chunk.len() + c.len_utf8() > 45 {
            words.push(encoded_word(&chunk));
            chunk.clear();
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(encoded_word(&chunk));
    }
    words.join("\r\n ")
}

fn encoded_word(s: &str) -> String {
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s)
    )
}

/// A mailbox for From, Reply-To or To: `name <address>` with the name
/// quoted (or encoded when not ASCII), or the address alone.
pub(crate) fn mailbox(name: Option<&str>, address: &str) -> String {
    match name.filter(|n| !n.is_empty()) {
        None => address.to_string(),
        Some(n) if n.is_ascii() => {
            let escaped = n.replace('\\', "\\\\").replace('"', "\\\"");
            format!("\"{escaped}\" <{address}>")
        }
        Some(n) => format!("{} <{address}>", header_text(n)),
    }
}

/// Bytes as base64 in lines of 76 characters, CRLF after each.
pub(crate) fn base64_lines(data: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 38 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or(""));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_end_becomes_crlf() {
        assert_eq!(
            crlf("a\nb\r\nc\rd\n\n\r\r\ne"),
            "a\r\nb\r\nc\r\nd\r\n\r\n\r\n\r\ne"
        );
        assert_eq!(crlf("ünï\ncödé"), "ünï\r\ncödé");
        assert_eq!(crlf(""), "");
    }

    #[test]
    fn short_ascii_text_is_sent_as_it_is_with_crlf_line_ends() {
        let e = text_body("Hello\nthere\r\nend");
        assert_eq!(e.encoding, "7bit");
        assert_eq!(e.text, "Hello\r\nthere\r\nend");
    }

    #[test]
    fn other_text_is_quoted_printable_in_short_lines() {
        let e = text_body("Grüße = 1 \nnext");
        assert_eq!(e.encoding, "quoted-printable");
        assert_eq!(e.text, "Gr=C3=BC=C3=9Fe =3D 1=20\r\nnext");
        let long = "é".repeat(100);
        let e = text_body(&long);
        assert!(e.text.split("\r\n").all(|l| l.len() <= 76), "{}", e.text);
        assert!(e.text.contains("=\r\n"));
    }

    #[test]
    fn header_text_outside_ascii_becomes_encoded_words() {
        assert_eq!(header_text("Plain subject"), "Plain subject");
        assert_eq!(header_text("Grüße"), "=?utf-8?b?R3LDvMOfZQ==?=");
        let long = header_text(&"ü".repeat(60));
        assert!(long.split("\r\n ").all(|w| w.len() <= 75), "{long}");
        assert_eq!(long.split("\r\n ").count(), 3);
    }

    #[test]
    fn mailboxes_quote_their_names() {
        assert_eq!(mailbox(None, "a@b.example"), "a@b.example");
        assert_eq!(
            mailbox(Some("Ann \"A\" Lee"), "a@b.example"),
            "\"Ann \\\"A\\\" Lee\" <a@b.example>"
        );
        assert_eq!(
            mailbox(Some("Zoë"), "z@b.example"),
            "=?utf-8?b?Wm/Dqw==?= <z@b.example>"
        );
    }

    #[test]
    fn base64_lines_are_76_characters() {
        let out = base64_lines(&[0u8; 100]);
        let lines: Vec<&str> = out.trim_end().split("\r\n").collect();
        assert_eq!(lines[0].len(), 76);
        assert_eq!(lines.len(), 2);
    }
}
