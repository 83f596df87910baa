//! RFC 5321 mailboxes (4.1.2) with RFC 6531 (SMTPUTF8) local parts and IDN
//! domains, and the routing key the engine shards and names queues by.
//!
//! The parser is strict about structure (so that a path can never smuggle a
//! second address or a parameter) and lenient about length: RFC 5321 4.5.3.1
//! gives minimums a server must accept, only the DNS limit on a domain is
//! enforced here.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use volley_units::domain::DomainError;

/// Why an address did not parse. Every variant is a permanent syntax error:
/// the server answers 501 5.1.3 (or 553 5.1.3) with the text of the variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The path is not enclosed in `<` `>`.
    #[error("path must be enclosed in <>")]
    MissingBrackets,
    /// No `@` between local part and domain.
    #[error("mailbox has no domain")]
    MissingDomain,
    /// The local part is empty or not a dot-string / quoted-string.
    #[error("invalid local part")]
    InvalidLocalPart,
    /// The domain is not a valid host name.
    #[error("invalid domain")]
    InvalidDomain,
    /// An address literal that is neither IPv4 nor `IPv6:`.
    #[error("invalid address literal")]
    InvalidLiteral,
    /// A source route (`@a,@b:`) that does not parse.
    #[error("invalid source route")]
    InvalidRoute,
    /// The domain is longer than 255 octets.
    #[error("domain too long")]
    DomainTooLong,
}

impl AddressError {
    /// Always false: a malformed address stays malformed. Present so callers
    /// can branch on every error in the crate the same way.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// The part after `@`: a host name (possibly with U-labels) or an address
/// literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Domain {
    /// A host name as the client wrote it (case and U-labels kept, so that a
    /// reply or a log line shows what the client sent).
    Name(String),
    /// `[1.2.3.4]` or `[IPv6:...]`: deliver straight to this address.
    Literal(IpAddr),
}

impl Domain {
    /// Parses a domain or address literal as it appears after `@`.
    pub fn parse(s: &str) -> Result<Domain, AddressError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or(AddressError::InvalidLiteral)?;
            return parse_literal(inner).map(Domain::Literal);
        }
        check_domain_name(s)?;
        Ok(Domain::Name(s.to_owned()))
    }

    /// The key the engine hashes to pick a shard and names queues with: lower
    /// case, IDNA A-labels; `[1.2.3.4]` / `[ipv6:...]` for literals.
    pub fn routing_key(&self) -> Result<String, AddressError> {
        match self {
            Domain::Name(name) => routing_key(name),
            Domain::Literal(IpAddr::V4(ip)) => Ok(format!("[{ip}]")),
            Domain::Literal(IpAddr::V6(ip)) => Ok(format!("[ipv6:{ip}]")),
        }
    }

    /// True when the domain is all ASCII (needs no SMTPUTF8).
    pub fn is_ascii(&self) -> bool {
        match self {
            Domain::Name(n) => n.is_ascii(),
            Domain::Literal(_) => true,
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Domain::Name(n) => f.write_str(n),
            Domain::Literal(IpAddr::V4(ip)) => write!(f, "[{ip}]"),
            Domain::Literal(IpAddr::V6(ip)) => write!(f, "[IPv6:{ip}]"),
        }
    }
}

/// The normalized routing key of a host name: lower case, no trailing
/// dot, IDNA A-labels (the workspace's one rule, in `volley-units`).
pub fn routing_key(domain: &str) -> Result<String, AddressError> {
    volley_units::domain::routing_key(domain).map_err(|e| match e {
        DomainError::TooLong => AddressError::DomainTooLong,
        DomainError::Invalid => AddressError::InvalidDomain,
    })
}

fn check_ldh(domain: &str) -> Result<(), AddressError> {
    volley_units::domain::check_ldh(domain).map_err(|_| AddressError::InvalidDomain)
}

fn check_domain_name(s: &str) -> Result<(), AddressError> {
    if s.len() > 255 {
        return Err(AddressError::DomainTooLong);
    }
    if s.is_ascii() && !volley_units::domain::has_ace_label(s) {
        check_ldh(s)
    } else {
        // A U-label domain (SMTPUTF8) must map to a valid A-label form.
        routing_key(s).map(|_| ())
    }
}

fn parse_literal(inner: &str) -> Result<IpAddr, AddressError> {
    if let Some(v6) = inner
        .get(..5)
        .filter(|tag| tag.eq_ignore_ascii_case("IPv6:"))
        .and(inner.get(5..))
    {
        return v6
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| AddressError::InvalidLiteral);
    }
    inner
        .parse::<Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| AddressError::InvalidLiteral)
}

/// A mailbox `local-part@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part with quoting removed (`"a b"@x` has local part `a b`);
    /// [`Display`](fmt::Display) quotes it again where needed.
    pub local_part: String,
    /// The domain or address literal.
    pub domain: Domain,
}

impl Mailbox {
    /// Parses `local-part@domain` (no angle brackets). UTF-8 is accepted in
    /// both parts; the server checks it against the SMTPUTF8 parameter.
    pub fn parse(s: &str) -> Result<Mailbox, AddressError> {
        let (local_part, rest) = parse_local_part(s)?;
        let domain = rest.strip_prefix('@').ok_or(AddressError::MissingDomain)?;
        Ok(Mailbox {
            local_part,
            domain: Domain::parse(domain)?,
        })
    }

    /// True when neither part needs SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.is_ascii()
    }
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local_part) {
            f.write_str(&self.local_part)?;
        } else {
            f.write_str("\"")?;
            for c in self.local_part.chars() {
                if c == '"' || c == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{c}")?;
            }
            f.write_str("\"")?;
        }
        write!(f, "@{}", self.domain)
    }
}

/// RFC 5321 `atext` plus, for SMTPUTF8, any non-ASCII character (RFC 6531
/// `UTF8-non-ascii`).
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn is_dot_string(s: &str) -> bool {
    !s.is_empty()
        && s.split('.')
            .all(|a| !a.is_empty() && a.chars().all(is_atext))
}

/// Parses a dot-string or quoted-string at the start of `s`; returns the
/// unquoted local part and the rest (starting at `@` on success).
fn parse_local_part(s: &str) -> Result<(String, &str), AddressError> {
    if let Some(q) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    if out.is_empty() {
                        // `""@x` is legal syntax but has no mailbox to name.
                        return Err(AddressError::InvalidLocalPart);
                    }
                    return Ok((out, &q[i + 1..]));
                }
                '\\' => match chars.next() {
                    Some((_, e)) if (' '..='~').contains(&e) => out.push(e),
                    _ => return Err(AddressError::InvalidLocalPart),
                },
                // qtextSMTP: %d32-33 / %d35-91 / %d93-126, plus UTF-8.
                c if (' '..='~').contains(&c) || !c.is_ascii() => out.push(c),
                _ => return Err(AddressError::InvalidLocalPart),
            }
        }
        return Err(AddressError::InvalidLocalPart);
    }
    let end = s.find('@').ok_or(if s.is_empty() {
        AddressError::InvalidLocalPart
    } else {
        AddressError::MissingDomain
    })?;
    let local = &s[..end];
    if !is_dot_string(local) {
        return Err(AddressError::InvalidLocalPart);
    }
    Ok((local.to_owned(), &s[end..]))
}

/// Parses a reverse path `<mailbox>` or the null path `<>` (None).
pub fn parse_reverse_path(s: &str) -> Result<Option<Mailbox>, AddressError> {
    let inner = strip_brackets(s)?;
    if inner.is_empty() {
        return Ok(None);
    }
    Mailbox::parse(strip_route(inner)?).map(Some)
}

/// The recipient of `RCPT TO`: a mailbox, or the bare `<Postmaster>` that
/// RFC 5321 4.5.1 requires every server to accept without a domain.
///
/// A separate variant rather than a made-up domain, so that whoever decides
/// on recipients (the engine's relay policy) must say where postmaster mail
/// goes instead of routing it to a domain nobody chose.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ForwardPath {
    /// `<Postmaster>` (any case), no domain: this server's own postmaster.
    Postmaster,
    /// An ordinary mailbox, `Postmaster@domain` included.
    Mailbox(Mailbox),
}

impl ForwardPath {
    /// The mailbox, or `None` for the domainless `<Postmaster>`.
    pub fn mailbox(&self) -> Option<&Mailbox> {
        match self {
            ForwardPath::Postmaster => None,
            ForwardPath::Mailbox(m) => Some(m),
        }
    }

    /// The local part as sent, unquoted ("Postmaster" for the bare form).
    pub fn local_part(&self) -> &str {
        match self {
            ForwardPath::Postmaster => "Postmaster",
            ForwardPath::Mailbox(m) => &m.local_part,
        }
    }

    /// True when the path needs no SMTPUTF8.
    pub fn is_ascii(&self) -> bool {
        self.mailbox().is_none_or(Mailbox::is_ascii)
    }
}

impl fmt::Display for ForwardPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("Postmaster"),
            ForwardPath::Mailbox(m) => m.fmt(f),
        }
    }
}

/// Parses a forward path `<mailbox>` or the bare `<Postmaster>` (RFC 5321
/// 4.5.1, case-insensitive). A source route (`<@a,@b:user@d>`) is accepted
/// and dropped, as RFC 5321 4.1.1.3 asks.
pub fn parse_forward_path(s: &str) -> Result<ForwardPath, AddressError> {
    let inner = strip_brackets(s)?;
    if inner.is_empty() {
        return Err(AddressError::InvalidLocalPart);
    }
    if inner.eq_ignore_ascii_case("postmaster") {
        return Ok(ForwardPath::Postmaster);
    }
    Mailbox::parse(strip_route(inner)?).map(ForwardPath::Mailbox)
}

fn strip_brackets(s: &str) -> Result<&str, AddressError> {
    s.strip_prefix('<')
        .and_then(|s| s.strip_suffix('>'))
        .ok_or(AddressError::MissingBrackets)
}

fn strip_route(inner: &str) -> Result<&str, AddressError> {
    if !inner.starts_with('@') {
        return Ok(inner);
    }
    let colon = inner.find(':').ok_or(AddressError::InvalidRoute)?;
    for hop in inner[..colon].split(',') {
        let d = hop.strip_prefix('@').ok_or(AddressError::InvalidRoute)?;
        Domain::parse(d).map_err(|_| AddressError::InvalidRoute)?;
    }
    Ok(&inner[colon + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_parses_or_fails_cleanly(s in "\\PC{0,40}", t in "[a-zé\\[\\]:.@\"\\\\-]{0,30}") {
            let _ = Mailbox::parse(&s);
            let _ = Mailbox::parse(&t);
            let _ = parse_forward_path(&format!("<{t}>"));
            let _ = routing_key(&s);
            if let Ok(m) = Mailbox::parse(&t) {
                // What Display prints parses back to the same mailbox.
                prop_assert_eq!(Mailbox::parse(&m.to_string()), Ok(m));
            }
        }
    }

    #[test]
    fn plain_mailbox() {
        let m = Mailbox::parse("John.Doe@Example.COM").unwrap();
        assert_eq!(m.local_part, "John.Doe");
        assert_eq!(m.domain, Domain::Name("Example.COM".into()));
        assert_eq!(m.domain.routing_key().unwrap(), "example.com");
        assert_eq!(m.to_string(), "John.Doe@Example.COM");
        assert!(m.is_ascii());
    }

    #[test]
    fn quoted_local_part_round_trips() {
        let m = Mailbox::parse(r#""a b\"c@d"@x.org"#).unwrap();
        assert_eq!(m.local_part, "a b\"c@d");
        assert_eq!(m.to_string(), r#""a b\"c@d"@x.org"#);
        assert_eq!(Mailbox::parse(&m.to_string()).unwrap(), m);
        // A quoted dot-string prints unquoted: it names the same mailbox.
        assert_eq!(
            Mailbox::parse(r#""abc"@x.org"#).unwrap().to_string(),
            "abc@x.org"
        );
    }

    #[test]
    fn bad_local_parts() {
        for s in [
            "a..b@x.org",
            ".a@x.org",
            "a.@x.org",
            "a b@x.org",
            "\"unterminated@x.org",
            "\"\"@x.org",
            "a<b@x.org",
        ] {
            assert!(Mailbox::parse(s).is_err(), "{s}");
        }
        assert_eq!(Mailbox::parse("abc"), Err(AddressError::MissingDomain));
        assert_eq!(Mailbox::parse("\"abc\""), Err(AddressError::MissingDomain));
    }

    #[test]
    fn bad_domains() {
        for s in [
            "a@",
            "a@-x.org",
            "a@x-.org",
            "a@x..org",
            "a@x_y.org",
            "a@.x",
            "a@x y",
        ] {
            assert!(Mailbox::parse(s).is_err(), "{s}");
        }
        let long = format!("a@{}.org", "a".repeat(64));
        assert_eq!(Mailbox::parse(&long), Err(AddressError::InvalidDomain));
        let too_long = format!("a@{}org", "abcdefgh.".repeat(30));
        assert_eq!(Mailbox::parse(&too_long), Err(AddressError::DomainTooLong));
    }

    #[test]
    fn address_literals() {
        let m = Mailbox::parse("a@[192.0.2.1]").unwrap();
        assert_eq!(m.domain, Domain::Literal("192.0.2.1".parse().unwrap()));
        assert_eq!(m.domain.routing_key().unwrap(), "[192.0.2.1]");
        let m = Mailbox::parse("a@[ipv6:2001:DB8::1]").unwrap();
        assert_eq!(m.domain.routing_key().unwrap(), "[ipv6:2001:db8::1]");
        assert_eq!(m.to_string(), "a@[IPv6:2001:db8::1]");
        for s in [
            "a@[1.2.3]",
            "a@[IPv6:1.2.3.4]",
            "a@[x:y]",
            "a@[1.2.3.4",
            "a@[ééé:1]",
            "a@[é]",
        ] {
            assert!(Mailbox::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn utf8_mailboxes_and_idn_keys() {
        let m = Mailbox::parse("josé@Bücher.example").unwrap();
        assert!(!m.is_ascii());
        assert_eq!(m.local_part, "josé");
        assert_eq!(m.domain.routing_key().unwrap(), "xn--bcher-kva.example");
        assert_eq!(
            routing_key("XN--BCHER-KVA.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            routing_key("BÜCHER.EXAMPLE").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(routing_key("Example.COM.").unwrap(), "example.com");
        assert!(routing_key("xn--zz.example").is_err());
        assert!(routing_key("é").is_ok());
        assert!(routing_key("xé.é").is_ok());
        assert!(routing_key("").is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(parse_reverse_path("<>").unwrap(), None);
        let m = parse_reverse_path("<a@b.c>").unwrap().unwrap();
        assert_eq!(m.to_string(), "a@b.c");
        let m = parse_forward_path("<@r1.example,@r2.example:u@d.example>").unwrap();
        assert_eq!(m.to_string(), "u@d.example");
        assert_eq!(
            parse_forward_path("<>"),
            Err(AddressError::InvalidLocalPart)
        );
        assert_eq!(
            parse_forward_path("a@b.c"),
            Err(AddressError::MissingBrackets)
        );
        assert_eq!(
            parse_forward_path("<@bad_route:u@d.example>"),
            Err(AddressError::InvalidRoute)
        );
        assert!(!AddressError::InvalidRoute.is_transient());
    }

    #[test]
    fn bare_postmaster_is_its_own_path() {
        for s in ["<Postmaster>", "<postmaster>", "<POSTMASTER>"] {
            let p = parse_forward_path(s).unwrap();
            assert_eq!(p, ForwardPath::Postmaster, "{s}");
            assert_eq!((p.mailbox(), p.is_ascii()), (None, true));
            assert_eq!(p.to_string(), "Postmaster");
        }
        // With a domain it is an ordinary mailbox, routed like any other.
        let p = parse_forward_path("<Postmaster@d.example>").unwrap();
        assert_eq!(
            p.mailbox().unwrap().domain.routing_key().unwrap(),
            "d.example"
        );
        assert_eq!(p.local_part(), "Postmaster");
        // Only the exact form: no route, no spaces, no look-alikes.
        assert_eq!(
            parse_forward_path("<@r.example:Postmaster>"),
            Err(AddressError::MissingDomain)
        );
        for s in [
            "<Postmaster >",
            "<Postmasters>",
            "<\"Postmaster\">",
            "Postmaster",
        ] {
            assert!(parse_forward_path(s).is_err(), "{s}");
        }
    }
}
