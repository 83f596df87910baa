//! One SMTP/LMTP command line (RFC 5321 4.1) and the MAIL/RCPT parameters of
//! SIZE (RFC 1870), BODY (RFC 6152, RFC 3030), SMTPUTF8 (RFC 6531) and DSN
//! (RFC 3461: RET, ENVID, NOTIFY, ORCPT).
//!
//! Parsing knows nothing of session state: whether a command is allowed now
//! is the server's business.

use crate::address::{AddressError, ForwardPath, Mailbox, parse_forward_path, parse_reverse_path};
use crate::reply::{EnhancedCode, Reply};

/// A command that did not parse; [`CommandError::reply`] is what the server
/// answers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The verb is not one we know (500 5.5.2).
    #[error("command not recognized")]
    Unknown,
    /// The line is not valid UTF-8 or has control characters (500 5.5.2).
    #[error("syntax error")]
    Syntax,
    /// The verb is known but its arguments are wrong (501 5.5.4).
    #[error("{0}")]
    BadArguments(&'static str),
    /// A path did not parse (501 5.1.3 / 5.1.7).
    #[error("bad address: {0}")]
    Address(#[from] AddressError),
    /// A MAIL/RCPT parameter we do not implement (555 5.5.4).
    #[error("unsupported parameter {0}")]
    UnknownParameter(String),
    /// A known parameter with a bad value (501 5.5.4).
    #[error("bad value for parameter {0}")]
    BadParameter(&'static str),
}

impl CommandError {
    /// The reply the server sends for this error.
    pub fn reply(&self) -> Reply {
        let (code, e) = match self {
            CommandError::Unknown | CommandError::Syntax => (500, EnhancedCode::new(5, 5, 2)),
            CommandError::BadArguments(_) | CommandError::BadParameter(_) => {
                (501, EnhancedCode::new(5, 5, 4))
            }
            CommandError::Address(_) => (501, EnhancedCode::new(5, 1, 3)),
            CommandError::UnknownParameter(_) => (555, EnhancedCode::new(5, 5, 4)),
        };
        Reply::new(code, e, self.to_string())
    }

    /// Always false: a malformed command stays malformed.
    pub fn is_transient(&self) -> bool {
        false
    }
}

/// The BODY parameter of MAIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyType {
    /// BODY=7BIT.
    SevenBit,
    /// BODY=8BITMIME (RFC 6152).
    EightBitMime,
    /// BODY=BINARYMIME (RFC 3030): only BDAT may carry it.
    BinaryMime,
}

/// RET= of MAIL (RFC 3461 4.3): what a DSN should return of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ret {
    /// The whole message.
    Full,
    /// The headers only.
    Headers,
}

/// NOTIFY= of RCPT (RFC 3461 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Notify {
    /// NOTIFY=NEVER (then the other flags are false).
    pub never: bool,
    /// SUCCESS was listed.
    pub success: bool,
    /// FAILURE was listed.
    pub failure: bool,
    /// DELAY was listed.
    pub delay: bool,
}

/// ORCPT= of RCPT (RFC 3461 4.2): the original recipient, xtext decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orcpt {
    /// The address type, e.g. `rfc822` or `utf-8`.
    pub addr_type: String,
    /// The decoded address.
    pub addr: String,
}

/// Parameters of MAIL FROM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MailParams {
    /// SIZE=n: the client's estimate of the message size.
    pub size: Option<u64>,
    /// BODY=...
    pub body: Option<BodyType>,
    /// SMTPUTF8 was given: UTF-8 addresses and headers allowed.
    pub smtputf8: bool,
    /// RET=FULL / HDRS.
    pub ret: Option<Ret>,
    /// ENVID=xtext, decoded.
    pub envid: Option<String>,
}

impl MailParams {
    /// True when any ESMTP parameter was given (not allowed after HELO).
    pub fn is_extended(&self) -> bool {
        *self != MailParams::default()
    }

    /// RET and ENVID in their SMTP form (`RET=HDRS ENVID=...`, "" when
    /// neither was given), as [`parse_mail_params`] reads them back.
    pub fn dsn_text(&self) -> String {
        let mut words = Vec::new();
        match self.ret {
            Some(Ret::Full) => words.push("RET=FULL".to_string()),
            Some(Ret::Headers) => words.push("RET=HDRS".to_string()),
            None => {}
        }
        if let Some(e) = &self.envid {
            words.push(format!("ENVID={}", xtext_encode(e)));
        }
        words.join(" ")
    }
}

impl RcptParams {
    /// NOTIFY and ORCPT in their SMTP form (`NOTIFY=FAILURE,DELAY
    /// ORCPT=rfc822;...`, "" when neither was given), as
    /// [`parse_rcpt_params`] reads them back.
    pub fn dsn_text(&self) -> String {
        let mut words = Vec::new();
        if let Some(n) = self.notify {
            let flags: Vec<&str> = [
                (n.never, "NEVER"),
                (n.success, "SUCCESS"),
                (n.failure, "FAILURE"),
                (n.delay, "DELAY"),
            ]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
            words.push(format!("NOTIFY={}", flags.join(",")));
        }
        if let Some(o) = &self.orcpt {
            words.push(format!("ORCPT={};{}", o.addr_type, xtext_encode(&o.addr)));
        }
        words.join(" ")
    }
}

/// Parameters of RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RcptParams {
    /// NOTIFY=...
    pub notify: Option<Notify>,
    /// ORCPT=type;xtext
    pub orcpt: Option<Orcpt>,
}

/// One parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO domain-or-literal.
    Ehlo(String),
    /// HELO domain.
    Helo(String),
    /// LHLO domain (LMTP).
    Lhlo(String),
    /// MAIL FROM:<reverse-path> [params]; `None` is the null path `<>`.
    Mail {
        /// The sender, or None for `<>` (bounces).
        reverse_path: Option<Mailbox>,
        /// The parameters.
        params: MailParams,
    },
    /// RCPT TO:<forward-path> [params].
    Rcpt {
        /// The recipient (or the domainless `<Postmaster>`).
        forward_path: ForwardPath,
        /// The parameters.
        params: RcptParams,
    },
    /// DATA.
    Data,
    /// BDAT size [LAST] (RFC 3030).
    Bdat {
        /// Octets of data following the command line.
        size: u64,
        /// LAST was given: this chunk ends the message.
        last: bool,
    },
    /// RSET.
    Rset,
    /// NOOP [string].
    Noop,
    /// QUIT.
    Quit,
    /// STARTTLS (RFC 3207).
    StartTls,
    /// AUTH mechanism [initial-response] (RFC 4954).
    Auth {
        /// The SASL mechanism, upper-cased (`PLAIN`, `LOGIN`).
        mechanism: String,
        /// The initial response (base64, or `=` for an empty one).
        initial: Option<String>,
    },
    /// VRFY string.
    Vrfy(String),
    /// HELP [string].
    Help,
}

/// Parses one command line, without its CRLF.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax)?;
    if line.chars().any(|c| c.is_ascii_control() && c != '\t') {
        return Err(CommandError::Syntax);
    }
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    if verb.eq_ignore_ascii_case("STARTTLS") {
        return no_args(rest, Command::StartTls);
    }
    if verb.len() > 4 {
        // Every other verb we know has four letters (MAIL FROM/RCPT TO
        // have their second word in `rest`).
        return Err(CommandError::Unknown);
    }
    let mut v = [0u8; 4];
    v[..verb.len()].copy_from_slice(verb.as_bytes());
    v.make_ascii_uppercase();
    match &v {
        b"EHLO" => Ok(Command::Ehlo(hello_arg(rest)?)),
        b"HELO" => Ok(Command::Helo(hello_arg(rest)?)),
        b"LHLO" => Ok(Command::Lhlo(hello_arg(rest)?)),
        b"MAIL" => parse_mail(rest),
        b"RCPT" => parse_rcpt(rest),
        b"DATA" => no_args(rest, Command::Data),
        b"BDAT" => parse_bdat(rest),
        b"AUTH" => parse_auth(rest),
        b"RSET" => no_args(rest, Command::Rset),
        b"QUIT" => no_args(rest, Command::Quit),
        b"NOOP" => Ok(Command::Noop),
        b"HELP" => Ok(Command::Help),
        b"VRFY" if !rest.trim().is_empty() => Ok(Command::Vrfy(rest.trim().to_owned())),
        b"VRFY" => Err(CommandError::BadArguments("VRFY needs an argument")),
        _ => Err(CommandError::Unknown),
    }
}

fn no_args(rest: &str, cmd: Command) -> Result<Command, CommandError> {
    if rest.trim().is_empty() {
        Ok(cmd)
    } else {
        Err(CommandError::BadArguments("no arguments allowed"))
    }
}

fn hello_arg(rest: &str) -> Result<String, CommandError> {
    let arg = rest.trim();
    if arg.is_empty() || arg.contains(' ') {
        return Err(CommandError::BadArguments("expected one domain argument"));
    }
    Ok(arg.to_owned())
}

/// Splits `<path> params...` after `FROM:` / `TO:`; a space after the colon
/// is tolerated, as most servers do.
fn path_and_params<'a>(rest: &'a str, prefix: &str) -> Result<(&'a str, &'a str), CommandError> {
    let p = rest
        .get(..prefix.len())
        .filter(|p| p.eq_ignore_ascii_case(prefix));
    if p.is_none() {
        return Err(CommandError::BadArguments(if prefix == "FROM:" {
            "expected MAIL FROM:<address>"
        } else {
            "expected RCPT TO:<address>"
        }));
    }
    let rest = rest[prefix.len()..].trim_start_matches(' ');
    if !rest.starts_with('<') {
        return Err(AddressError::MissingBrackets.into());
    }
    // The path ends at the first `>` outside a quoted string.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let params = &rest[i + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return Err(CommandError::BadArguments("expected space after path"));
                }
                return Ok((&rest[..=i], params.trim_matches(' ')));
            }
            _ => {}
        }
    }
    Err(AddressError::MissingBrackets.into())
}

fn params(s: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    s.split(' ')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (p, None),
        })
}

fn parse_mail(rest: &str) -> Result<Command, CommandError> {
    let (path, ps) = path_and_params(rest, "FROM:")?;
    let reverse_path = parse_reverse_path(path)?;
    Ok(Command::Mail {
        reverse_path,
        params: parse_mail_params(ps)?,
    })
}

/// The ESMTP parameters of MAIL FROM (what follows the path), as
/// [`parse_command`] reads them.
pub fn parse_mail_params(ps: &str) -> Result<MailParams, CommandError> {
    let mut p = MailParams::default();
    for (k, v) in params(ps) {
        if k.eq_ignore_ascii_case("SIZE") {
            let n = v
                .filter(|v| !v.is_empty() && v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse().ok())
                .ok_or(CommandError::BadParameter("SIZE"))?;
            set_once(&mut p.size, n, "SIZE")?;
        } else if k.eq_ignore_ascii_case("BODY") {
            let b = keyword(
                v,
                "BODY",
                &[
                    ("7BIT", BodyType::SevenBit),
                    ("8BITMIME", BodyType::EightBitMime),
                    ("BINARYMIME", BodyType::BinaryMime),
                ],
            )?;
            set_once(&mut p.body, b, "BODY")?;
        } else if k.eq_ignore_ascii_case("SMTPUTF8") {
            if v.is_some() || p.smtputf8 {
                return Err(CommandError::BadParameter("SMTPUTF8"));
            }
            p.smtputf8 = true;
        } else if k.eq_ignore_ascii_case("RET") {
            let r = keyword(v, "RET", &[("FULL", Ret::Full), ("HDRS", Ret::Headers)])?;
            set_once(&mut p.ret, r, "RET")?;
        } else if k.eq_ignore_ascii_case("ENVID") {
            let v = v
                .and_then(xtext_decode)
                .filter(|v| !v.is_empty() && v.len() <= 100)
                .ok_or(CommandError::BadParameter("ENVID"))?;
            set_once(&mut p.envid, v, "ENVID")?;
        } else {
            return Err(CommandError::UnknownParameter(k.to_owned()));
        }
    }
    Ok(p)
}

fn parse_rcpt(rest: &str) -> Result<Command, CommandError> {
    let (path, ps) = path_and_params(rest, "TO:")?;
    let forward_path = parse_forward_path(path)?;
    Ok(Command::Rcpt {
        forward_path,
        params: parse_rcpt_params(ps)?,
    })
}

/// The ESMTP parameters of RCPT TO (what follows the path), as
/// [`parse_command`] reads them.
pub fn parse_rcpt_params(ps: &str) -> Result<RcptParams, CommandError> {
    let mut p = RcptParams::default();
    for (k, v) in params(ps) {
        if k.eq_ignore_ascii_case("NOTIFY") {
            let v = v.ok_or(CommandError::BadParameter("NOTIFY"))?;
            let mut n = Notify::default();
            for item in v.split(',') {
                let flag = if item.eq_ignore_ascii_case("NEVER") {
                    &mut n.never
                } else if item.eq_ignore_ascii_case("SUCCESS") {
                    &mut n.success
                } else if item.eq_ignore_ascii_case("FAILURE") {
                    &mut n.failure
                } else if item.eq_ignore_ascii_case("DELAY") {
                    &mut n.delay
                } else {
                    return Err(CommandError::BadParameter("NOTIFY"));
                };
                if *flag {
                    return Err(CommandError::BadParameter("NOTIFY"));
                }
                *flag = true;
            }
            if n.never && (n.success || n.failure || n.delay) {
                return Err(CommandError::BadParameter("NOTIFY"));
            }
            set_once(&mut p.notify, n, "NOTIFY")?;
        } else if k.eq_ignore_ascii_case("ORCPT") {
            let o = v
                .and_then(|v| v.split_once(';'))
                .filter(|(t, _)| {
                    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .and_then(|(t, a)| {
                    xtext_decode(a).filter(|a| !a.is_empty()).map(|addr| Orcpt {
                        addr_type: t.to_owned(),
                        addr,
                    })
                })
                .ok_or(CommandError::BadParameter("ORCPT"))?;
            set_once(&mut p.orcpt, o, "ORCPT")?;
        } else {
            return Err(CommandError::UnknownParameter(k.to_owned()));
        }
    }
    Ok(p)
}

/// The value of parameter `name`, one of the keywords of `table` (any case).
fn keyword<T: Copy>(
    value: Option<&str>,
    name: &'static str,
    table: &[(&str, T)],
) -> Result<T, CommandError> {
    value
        .and_then(|v| {
            table
                .iter()
                .find(|(k, _)| v.eq_ignore_ascii_case(k))
                .map(|&(_, t)| t)
        })
        .ok_or(CommandError::BadParameter(name))
}

fn set_once<T>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), CommandError> {
    if slot.is_some() {
        return Err(CommandError::BadParameter(name));
    }
    *slot = Some(v);
    Ok(())
}

fn parse_auth(rest: &str) -> Result<Command, CommandError> {
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let mechanism = words
        .next()
        .ok_or(CommandError::BadArguments(
            "expected AUTH <mechanism> [initial-response]",
        ))?
        .to_ascii_uppercase();
    let initial = words.next().map(str::to_owned);
    if words.next().is_some() {
        return Err(CommandError::BadArguments(
            "expected AUTH <mechanism> [initial-response]",
        ));
    }
    Ok(Command::Auth { mechanism, initial })
}

fn parse_bdat(rest: &str) -> Result<Command, CommandError> {
    let mut words = rest.split(' ').filter(|w| !w.is_empty());
    let size = words
        .next()
        .filter(|w| w.len() <= 20 && w.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|w| w.parse().ok())
        .ok_or(CommandError::BadArguments("expected BDAT <size> [LAST]"))?;
    let last = match words.next() {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(CommandError::BadArguments("expected BDAT <size> [LAST]")),
    };
    if words.next().is_some() {
        return Err(CommandError::BadArguments("expected BDAT <size> [LAST]"));
    }
    Ok(Command::Bdat { size, last })
}

/// Encodes `s` as RFC 3461 xtext: printable ASCII but `+` and `=` as is,
/// every other octet as `+XX`.
pub fn xtext_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'+' | b'=' => out.push_str(&format!("+{b:02X}")),
            b'!'..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("+{b:02X}")),
        }
    }
    out
}

/// Decodes RFC 3461 xtext: `+XX` is a hex-escaped octet; `+` and `=` must be
/// escaped, and only printable ASCII may appear. None when malformed.
pub(crate) fn xtext_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = b.get(i + 1..i + 3)?;
                let h = std::str::from_utf8(hex).ok()?;
                if !h
                    .bytes()
                    .all(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(&c))
                {
                    return None;
                }
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'=' => return None,
            c @ b'!'..=b'~' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_line_parses_or_fails_cleanly(s in "\\PC{0,60}", verb in "(MAIL FROM:|RCPT TO:|BDAT |EHLO )") {
            let _ = parse_command(s.as_bytes());
            let _ = parse_command(format!("{verb}{s}").as_bytes());
            let _ = parse_command(format!("{verb}<{s}> {s}").as_bytes());
        }
    }
    use crate::address::Domain;

    fn p(s: &str) -> Result<Command, CommandError> {
        parse_command(s.as_bytes())
    }

    #[test]
    fn simple_verbs_any_case() {
        assert_eq!(
            p("ehlo client.example"),
            Ok(Command::Ehlo("client.example".into()))
        );
        assert_eq!(
            p("HELO [192.0.2.1]"),
            Ok(Command::Helo("[192.0.2.1]".into()))
        );
        assert_eq!(p("LHLO c"), Ok(Command::Lhlo("c".into())));
        assert_eq!(p("DATA"), Ok(Command::Data));
        assert_eq!(p("rset"), Ok(Command::Rset));
        assert_eq!(p("NOOP anything"), Ok(Command::Noop));
        assert_eq!(p("QUIT"), Ok(Command::Quit));
        assert_eq!(p("HELP MAIL"), Ok(Command::Help));
        assert_eq!(p("VRFY bob"), Ok(Command::Vrfy("bob".into())));
        assert_eq!(
            p("BDAT 100"),
            Ok(Command::Bdat {
                size: 100,
                last: false
            })
        );
        assert_eq!(
            p("BDAT 0 last"),
            Ok(Command::Bdat {
                size: 0,
                last: true
            })
        );
    }

    #[test]
    fn bad_verbs_and_arguments() {
        assert_eq!(p("FOO"), Err(CommandError::Unknown));
        assert_eq!(p("STARTTLS"), Ok(Command::StartTls));
        assert_eq!(p("starttls"), Ok(Command::StartTls));
        assert_eq!(
            p("auth plain AGEAYg=="),
            Ok(Command::Auth {
                mechanism: "PLAIN".into(),
                initial: Some("AGEAYg==".into())
            })
        );
        assert!(matches!(p("AUTH"), Err(CommandError::BadArguments(_))));
        assert!(matches!(
            p("AUTH PLAIN a b"),
            Err(CommandError::BadArguments(_))
        ));
        assert!(matches!(
            p("STARTTLS now"),
            Err(CommandError::BadArguments(_))
        ));
        assert_eq!(p(""), Err(CommandError::Unknown));
        assert!(matches!(p("EHLO"), Err(CommandError::BadArguments(_))));
        assert!(matches!(p("DATA x"), Err(CommandError::BadArguments(_))));
        assert!(matches!(p("QUIT now"), Err(CommandError::BadArguments(_))));
        assert!(matches!(p("VRFY"), Err(CommandError::BadArguments(_))));
        for b in ["BDAT", "BDAT x", "BDAT -1", "BDAT 1 FIRST", "BDAT 1 LAST x"] {
            assert!(matches!(p(b), Err(CommandError::BadArguments(_))), "{b}");
        }
        assert_eq!(parse_command(b"NOOP \xff"), Err(CommandError::Syntax));
        assert_eq!(parse_command(b"NOOP \x00"), Err(CommandError::Syntax));
        assert_eq!(p("FOO").unwrap_err().reply().code, 500);
    }

    #[test]
    fn mail_with_every_parameter() {
        let c = p("MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x+2By")
            .unwrap();
        let Command::Mail {
            reverse_path,
            params,
        } = c
        else {
            panic!()
        };
        assert_eq!(
            reverse_path.unwrap().domain,
            Domain::Name("b.example".into())
        );
        assert_eq!(
            params,
            MailParams {
                size: Some(1000),
                body: Some(BodyType::EightBitMime),
                smtputf8: true,
                ret: Some(Ret::Headers),
                envid: Some("x+y".into()),
            }
        );
        assert!(params.is_extended());
        let c = p("mail from: <> body=binarymime").unwrap();
        assert_eq!(
            c,
            Command::Mail {
                reverse_path: None,
                params: MailParams {
                    body: Some(BodyType::BinaryMime),
                    ..Default::default()
                }
            }
        );
    }

    #[test]
    fn mail_errors_map_to_replies() {
        let e = p("MAIL FROM:<a@b.example> FOO=1").unwrap_err();
        assert_eq!(e, CommandError::UnknownParameter("FOO".into()));
        assert_eq!(e.reply().code, 555);
        assert_eq!(e.reply().enhanced, Some(EnhancedCode::new(5, 5, 4)));
        for bad in [
            "MAIL FROM:<a@b.example> SIZE=x",
            "MAIL FROM:<a@b.example> SIZE=1 SIZE=2",
            "MAIL FROM:<a@b.example> BODY=9BIT",
            "MAIL FROM:<a@b.example> RET=ALL",
            "MAIL FROM:<a@b.example> ENVID=a=b",
            "MAIL FROM:<a@b.example> SMTPUTF8=yes",
        ] {
            let e = p(bad).unwrap_err();
            assert!(matches!(e, CommandError::BadParameter(_)), "{bad}");
            assert_eq!(e.reply().code, 501);
        }
        assert!(matches!(
            p("MAIL TO:<a@b.c>"),
            Err(CommandError::BadArguments(_))
        ));
        assert!(matches!(
            p("MAIL FROM:a@b.c"),
            Err(CommandError::Address(_))
        ));
        assert!(matches!(
            p("MAIL FROM:<a@b.c>SIZE=1"),
            Err(CommandError::BadArguments(_))
        ));
        assert_eq!(p("MAIL FROM:<a@@b.c>").unwrap_err().reply().code, 501);
    }

    #[test]
    fn rcpt_to_bare_postmaster_parses() {
        for line in [
            "RCPT TO:<Postmaster>",
            "rcpt to:<postmaster>",
            "RCPT TO:<POSTMASTER> NOTIFY=NEVER",
        ] {
            let Ok(Command::Rcpt { forward_path, .. }) = p(line) else {
                panic!("{line} refused")
            };
            assert_eq!(forward_path, ForwardPath::Postmaster, "{line}");
        }
        assert_eq!(p("RCPT TO:<Postmaster").unwrap_err().reply().code, 501);
        assert_eq!(p("RCPT TO:<nobody>").unwrap_err().reply().code, 501);
    }

    #[test]
    fn quoted_path_with_bracket_inside() {
        let c = p(r#"RCPT TO:<"a>b"@x.example> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a+2Bb@x.example"#)
            .unwrap();
        let Command::Rcpt {
            forward_path,
            params,
        } = c
        else {
            panic!()
        };
        assert_eq!(forward_path.local_part(), "a>b");
        assert_eq!(
            params.notify,
            Some(Notify {
                success: true,
                delay: true,
                ..Default::default()
            })
        );
        assert_eq!(
            params.orcpt,
            Some(Orcpt {
                addr_type: "rfc822".into(),
                addr: "a+b@x.example".into()
            })
        );
    }

    #[test]
    fn rcpt_parameter_errors() {
        for bad in [
            "RCPT TO:<a@b.c> NOTIFY=NEVER,SUCCESS",
            "RCPT TO:<a@b.c> NOTIFY=SOMETIMES",
            "RCPT TO:<a@b.c> NOTIFY=DELAY,DELAY",
            "RCPT TO:<a@b.c> ORCPT=rfc822",
            "RCPT TO:<a@b.c> ORCPT=rfc822;a+zz",
        ] {
            assert!(
                matches!(p(bad), Err(CommandError::BadParameter(_))),
                "{bad}"
            );
        }
        assert_eq!(
            p("RCPT TO:<a@b.c> SIZE=1"),
            Err(CommandError::UnknownParameter("SIZE".into()))
        );
        assert!(matches!(p("RCPT TO:<>"), Err(CommandError::Address(_))));
    }

    #[test]
    fn dsn_parameters_read_back_from_their_smtp_form() {
        let mail = MailParams {
            ret: Some(Ret::Headers),
            envid: Some("QQ+314 =x".into()),
            ..MailParams::default()
        };
        assert_eq!(mail.dsn_text(), "RET=HDRS ENVID=QQ+2B314+20+3Dx");
        assert_eq!(parse_mail_params(&mail.dsn_text()).unwrap(), mail);
        assert_eq!(MailParams::default().dsn_text(), "");
        let rcpt = RcptParams {
            notify: Some(Notify {
                failure: true,
                delay: true,
                ..Notify::default()
            }),
            orcpt: Some(Orcpt {
                addr_type: "rfc822".into(),
                addr: "Old+Box@example.org".into(),
            }),
        };
        assert_eq!(
            rcpt.dsn_text(),
            "NOTIFY=FAILURE,DELAY ORCPT=rfc822;Old+2BBox@example.org"
        );
        assert_eq!(parse_rcpt_params(&rcpt.dsn_text()).unwrap(), rcpt);
        assert_eq!(RcptParams::default().dsn_text(), "");
    }

    #[test]
    fn xtext() {
        assert_eq!(xtext_decode("abc+2B+3D").as_deref(), Some("abc+="));
        assert_eq!(xtext_decode("a+2"), None);
        assert_eq!(xtext_decode("a+2b"), None);
        assert_eq!(xtext_decode("a b"), None);
    }
}
