//! The `Received:` trace header ingest adds to every message (every relay
//! adds one; receivers score mail without it). Written once per message,
//! before the body, in the one buffer all its recipients' copies share.

use std::fmt::Write;
use std::net::IpAddr;

use crate::date::rfc5322_date;
use crate::transport::TlsSummary;

/// What the header says about one message's arrival.
pub(crate) struct Arrival<'a> {
    /// The name the client gave in EHLO, HELO or LHLO.
    pub(crate) helo: Option<&'a str>,
    /// The client's address.
    pub(crate) peer: IpAddr,
    /// Volley's host name.
    pub(crate) by: &'a str,
    /// The protocol keyword of RFC 3848, from [`with_keyword`].
    pub(crate) with: &'static str,
    /// How TLS went, when the session ran inside it.
    pub(crate) tls: Option<TlsSummary>,
    /// Volley's id for the message, when it is final at ingest.
    pub(crate) id: Option<u64>,
    /// The recipient, named only when the message has exactly one.
    pub(crate) only_recipient: Option<&'a str>,
    /// Seconds since the Unix epoch.
    pub(crate) unix_secs: u64,
}

/// The header, folded over three lines (four with TLS), CRLF-terminated.
pub(crate) fn received_header(a: &Arrival<'_>) -> String {
    let mut h = String::with_capacity(160);
    let helo = a.helo.map(printable).unwrap_or_else(|| "unknown".into());
    let peer = match a.peer {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[IPv6:{v6}]"),
    };
    let _ = write!(h, "Received: from {helo} ({peer})\r\n");
    if let Some(t) = a.tls {
        let _ = write!(h, "\t(using {} with cipher {})\r\n", t.version, t.cipher);
    }
    let _ = write!(h, "\tby {} (Volley) with {}", a.by, a.with);
    if let Some(id) = a.id {
        let _ = write!(h, " id {id:016x}");
    }
    // A non-ASCII address would make the header 8-bit: left out.
    if let Some(rcpt) = a.only_recipient.filter(|r| r.is_ascii()) {
        let _ = write!(h, "\r\n\tfor <{rcpt}>");
    }
    let _ = write!(h, ";\r\n\t{}\r\n", rfc5322_date(a.unix_secs));
    h
}

/// The `with` keyword of RFC 3848 for a session: LMTP or (E)SMTP, with
/// `S` for TLS and `A` for AUTH.
pub(super) fn with_keyword(lmtp: bool, extended: bool, tls: bool, auth: bool) -> &'static str {
    match (lmtp, extended, tls, auth) {
        (true, _, false, false) => "LMTP",
        (true, _, true, false) => "LMTPS",
        (true, _, false, true) => "LMTPA",
        (true, _, true, true) => "LMTPSA",
        (false, false, false, false) => "SMTP",
        (false, true, false, false) => "ESMTP",
        // STARTTLS and AUTH are ESMTP extensions; TLS from the start
        // counts as ESMTPS too.
        (false, _, true, false) => "ESMTPS",
        (false, _, false, true) => "ESMTPA",
        (false, _, true, true) => "ESMTPSA",
    }
}

/// The client's name as it may appear in a header: printable ASCII only.
fn printable(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(255)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_client_server_protocol_id_and_the_one_recipient() {
        let a = Arrival {
            helo: Some("composer.example\u{7}"),
            peer: "127.0.0.1".parse().unwrap(),
            by: "mx.volley.example",
            with: "ESMTP",
            tls: None,
            id: Some(7),
            only_recipient: Some("u@d.example"),
            unix_secs: 0,
        };
        assert_eq!(
            received_header(&a),
            "Received: from composer.example ([127.0.0.1])\r\n\
             \tby mx.volley.example (Volley) with ESMTP id 0000000000000007\r\n\
             \tfor <u@d.example>;\r\n\
             \tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        let b = Arrival {
            helo: None,
            peer: "::1".parse().unwrap(),
            id: None,
            only_recipient: None,
            with: "LMTP",
            ..a
        };
        assert_eq!(
            received_header(&b),
            "Received: from unknown ([IPv6:::1])\r\n\
             \tby mx.volley.example (Volley) with LMTP;\r\n\
             \tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
        let c = Arrival {
            with: with_keyword(false, true, true, false),
            tls: Some(TlsSummary {
                version: "TLSv1.3",
                cipher: "TLS13_AES_256_GCM_SHA384",
                resumed: false,
            }),
            ..b
        };
        assert_eq!(
            received_header(&c),
            "Received: from unknown ([IPv6:::1])\r\n\
             \t(using TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384)\r\n\
             \tby mx.volley.example (Volley) with ESMTPS;\r\n\
             \tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn the_with_keyword_follows_rfc_3848() {
        assert_eq!(with_keyword(false, false, false, false), "SMTP");
        assert_eq!(with_keyword(false, true, false, false), "ESMTP");
        assert_eq!(with_keyword(false, true, true, false), "ESMTPS");
        assert_eq!(with_keyword(false, true, true, true), "ESMTPSA");
        assert_eq!(with_keyword(true, true, false, false), "LMTP");
        assert_eq!(with_keyword(true, true, true, false), "LMTPS");
        assert_eq!(with_keyword(true, true, true, true), "LMTPSA");
    }
}
