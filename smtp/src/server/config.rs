//! Server limits and advertised extensions, with defaults in one place.

/// Which ESMTP extensions the server advertises in its EHLO/LHLO reply (and
/// so accepts parameters for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920). The server always accepts pipelined input;
    /// this only says whether it is advertised.
    pub pipelining: bool,
    /// 8BITMIME (RFC 6152): BODY=8BITMIME.
    pub eight_bit_mime: bool,
    /// SIZE (RFC 1870), advertised with [`ServerConfig::max_message_size`].
    pub size: bool,
    /// ENHANCEDSTATUSCODES (RFC 2034). When off, replies carry no enhanced
    /// codes.
    pub enhanced_status_codes: bool,
    /// SMTPUTF8 (RFC 6531): UTF-8 addresses.
    pub smtputf8: bool,
    /// CHUNKING (RFC 3030): BDAT.
    pub chunking: bool,
    /// BINARYMIME (RFC 3030): BODY=BINARYMIME; needs `chunking`.
    pub binarymime: bool,
    /// DSN (RFC 3461). Off by default: advertising it promises delivery
    /// status notifications. RET/ENVID/NOTIFY/ORCPT are parsed and passed
    /// on either way.
    pub dsn: bool,
    /// STARTTLS (RFC 3207), advertised until TLS is active. Off by
    /// default: the engine turns it on when it holds a certificate.
    pub starttls: bool,
    /// AUTH PLAIN LOGIN (RFC 4954), advertised and accepted only inside
    /// TLS: a password never crosses the network in clear text.
    pub auth: bool,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            pipelining: true,
            eight_bit_mime: true,
            size: true,
            enhanced_status_codes: true,
            smtputf8: true,
            chunking: true,
            binarymime: true,
            dsn: false,
            starttls: false,
            auth: false,
        }
    }
}

/// Limits and identity of one server session. Every limit has its own
/// precise reply (see the field docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Speak LMTP (RFC 2033): LHLO instead of EHLO/HELO, one reply per
    /// accepted recipient after the data.
    pub lmtp: bool,
    /// Longest command line, CRLF included (RFC 5321 4.5.3.1.4: 512).
    /// Longer lines get `500 5.5.2 Line too long`.
    pub max_command_line: usize,
    /// Longest text line in DATA, CRLF included (RFC 5321 4.5.3.1.6: 1000).
    /// A longer line fails the message with `500 5.5.2` after the data.
    /// Not applied to BDAT, which may carry binary data.
    pub max_text_line: usize,
    /// Largest message in octets (after dot-unstuffing); advertised in SIZE.
    /// Larger messages get `552 5.3.4` and are drained, never buffered.
    pub max_message_size: u64,
    /// Most accepted recipients per transaction; one more gets
    /// `452 4.5.3 Too many recipients` (RFC 5321 4.5.3.1.10).
    pub max_recipients: usize,
    /// Protocol errors (500/501/503/555) tolerated in one session; the next
    /// one gets `421 4.7.0` and the session closes.
    pub max_errors: u32,
    /// Most unprocessed input octets held; [`Server::receive`](crate::Server::receive)
    /// takes no more (back-pressure onto the socket while a verdict is
    /// pending). Raised to at least twice `max_command_line`.
    pub max_input_buffer: usize,
    /// Unsent reply octets at which the server stops processing input until
    /// the caller sends some.
    pub max_output_buffer: usize,
    /// The extensions to advertise.
    pub extensions: Extensions,
    /// MAIL before TLS is active gets `530 5.7.0 Must issue a STARTTLS
    /// command first` (RFC 3207 4).
    pub require_tls: bool,
    /// The session runs inside TLS from its first octet (RFC 8314's
    /// implicit TLS, port 465 style): STARTTLS is not offered, and
    /// `require_tls` is met.
    pub implicit_tls: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            lmtp: false,
            max_command_line: 512,
            max_text_line: 1000,
            max_message_size: 50 * 1024 * 1024,
            max_recipients: 1000,
            max_errors: 10,
            max_input_buffer: 256 * 1024,
            max_output_buffer: 64 * 1024,
            extensions: Extensions::default(),
            require_tls: false,
            implicit_tls: false,
        }
    }
}
