//! What DKIM signing needs to know of a message's header block, read
//! without allocating a parsed message: the From domain (which keys sign)
//! and which of the header fields worth signing are present (a field the
//! message lacks is not listed in `h=`).

/// The fields signed when present (RFC 6376 5.4.1's list, the MIME
/// fields, and RFC 8058 3.1's List-Unsubscribe-Post).
const SIGNED: &[&str] = &[
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
];

/// The header fields of `message`, unfolded: (name, value) per field,
/// up to the blank line.
fn fields(message: &[u8]) -> impl Iterator<Item = (&[u8], Vec<u8>)> {
    let end = memchr::memmem::find(message, b"\r\n\r\n").map_or(message.len(), |i| i + 2);
    let block = &message[..end];
    let mut lines = block.split(|&b| b == b'\n').peekable();
    std::iter::from_fn(move || {
        loop {
            let line = lines.next()?;
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() || line[0] == b' ' || line[0] == b'\t' {
                continue;
            }
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, rest) = (&line[..colon], &line[colon + 1..]);
            let mut value = rest.to_vec();
            while let Some(next) = lines.peek() {
                if next.first().is_some_and(|&b| b == b' ' || b == b'\t') {
                    let next = lines.next().unwrap_or_default();
                    value.extend_from_slice(next.strip_suffix(b"\r").unwrap_or(next));
                } else {
                    break;
                }
            }
            return Some((name, value));
        }
    })
}

/// The domain of the first address in the From field, lower case.
pub(super) fn from_domain(message: &[u8]) -> Option<String> {
    let (_, value) = fields(message).find(|(n, _)| n.eq_ignore_ascii_case(b"From"))?;
    let value = String::from_utf8_lossy(&value).into_owned();
    // `Name <local@domain>` or a bare `local@domain`.
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => &value[a + 1..b],
        _ => value.trim(),
    };
    let domain = addr.rsplit_once('@')?.1.trim().trim_end_matches('.');
    (!domain.is_empty()).then(|| domain.to_ascii_lowercase())
}

/// Which fields of [`SIGNED`] the message has, as a bit set (bit `i`:
/// `SIGNED[i]`).
pub(super) fn present(message: &[u8]) -> u32 {
    let mut mask = 0;
    for (name, _) in fields(message) {
        if let Some(i) = SIGNED
            .iter()
            .position(|w| name.eq_ignore_ascii_case(w.as_bytes()))
        {
            mask |= 1 << i;
        }
    }
    mask
}

/// The field names of a [`present`] bit set, in the list's order.
pub(super) fn names(mask: u32) -> impl Iterator<Item = &'static str> {
    SIGNED
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, n)| *n)
}

/// The message without the empty lines, and lines of only spaces or
/// tabs, at the end of its body. Relaxed body canonicalisation makes such
/// lines empty and then drops them (RFC 6376 3.4.4), so the body hash of
/// the shorter message is the one of the whole; the DKIM crate in use
/// (0.13) gets whitespace-only lines there wrong, so it is handed the
/// shorter one. The header block and its blank line are never cut.
pub(super) fn without_blank_tail(message: &[u8]) -> &[u8] {
    let Some(separator) = memchr::memmem::find(message, b"\r\n\r\n") else {
        return message;
    };
    let body_start = separator + 4;
    let mut end = message.len();
    while end > body_start {
        let body = &message[body_start..end];
        let Some(without_crlf) = body.strip_suffix(b"\r\n") else {
            break;
        };
        let line_start = without_crlf
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(0, |i| i + 1);
        let line = &without_crlf[line_start..];
        if line.iter().all(|&c| c == b' ' || c == b'\t') {
            end = body_start + line_start;
        } else {
            break;
        }
    }
    &message[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nFrom: \"News, Inc\" <News@Mail.Example.COM>\r\nTo: u@d.test\r\nSubject: a long\r\n subject, folded\r\nList-Unsubscribe: <https://u.example/1>\r\n\r\nbody\r\nFrom: not a header\r\n";

    #[test]
    fn the_from_domain_and_the_fields_present() {
        assert_eq!(from_domain(MSG).as_deref(), Some("mail.example.com"));
        assert_eq!(
            from_domain(b"From: a@b.test\r\n\r\n").as_deref(),
            Some("b.test")
        );
        assert_eq!(from_domain(b"To: a@b.test\r\n\r\n"), None);
        let got: Vec<&str> = names(present(MSG)).collect();
        assert_eq!(got, ["From", "Subject", "To", "List-Unsubscribe"]);
    }

    #[test]
    fn only_a_blank_tail_is_cut_never_the_header_block() {
        let m = b"From: a@b\r\n\r\ntext\r\n \r\n\t \r\n\r\n";
        assert_eq!(without_blank_tail(m), b"From: a@b\r\n\r\ntext\r\n");
        let kept = b"From: a@b\r\n\r\ntext\r\nmore\r\n";
        assert_eq!(without_blank_tail(kept), kept);
        let all_blank = b"From: a@b\r\n\r\n \r\n\r\n";
        assert_eq!(without_blank_tail(all_blank), b"From: a@b\r\n\r\n");
        let no_body = b"From: a@b\r\n";
        assert_eq!(without_blank_tail(no_body), no_body);
    }
}
