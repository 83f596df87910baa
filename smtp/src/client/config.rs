//! What the engine tells a client session before it starts.

use crate::reply_parser::DEFAULT_MAX_REPLY_LINE;

/// Settings of one client session; `Default` gives a sensible SMTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The name sent in EHLO / HELO / LHLO: this host's public name, which
    /// receivers compare with its reverse DNS.
    pub helo_name: String,
    /// Speak LMTP (RFC 2033): LHLO, no HELO fallback, one reply per accepted
    /// recipient after the data.
    pub lmtp: bool,
    /// Pipeline MAIL, RCPT... and DATA in one flight when the server offers
    /// PIPELINING (RFC 2920). Off: one command per round trip.
    pub pipelining: bool,
    /// Send bodies with BDAT when the server offers CHUNKING (RFC 3030): no
    /// dot-stuffing, and with PIPELINING the whole transaction in one flight.
    pub chunking: bool,
    /// Longest reply line accepted from the server, CRLF included.
    pub max_reply_line: usize,
    /// Send STARTTLS when the server offers it (RFC 3207); the session
    /// then waits for the engine's TLS handshake
    /// ([`ClientEvent::StartTls`](crate::ClientEvent::StartTls)).
    pub starttls: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            helo_name: "localhost".to_owned(),
            lmtp: false,
            pipelining: true,
            chunking: true,
            max_reply_line: DEFAULT_MAX_REPLY_LINE,
            starttls: false,
        }
    }
}
