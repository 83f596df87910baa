//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms:
//! the challenges and the decoding of the client's base64 responses. The
//! server decides only what the client said; whether the password is
//! right is the engine's business.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::reply::{EnhancedCode, Reply};

/// What a client authenticating gave. Debug output leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The mechanism used: `PLAIN` or `LOGIN`.
    pub mechanism: &'static str,
    /// PLAIN's authorization identity (who to act as); usually empty.
    pub authzid: String,
    /// Who the client says it is.
    pub username: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("mechanism", &self.mechanism)
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The response the server waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// PLAIN without an initial response: the whole response.
    Plain,
    /// LOGIN: the user name.
    LoginUsername,
    /// LOGIN: the password of `username`.
    LoginPassword { username: String },
}

/// What comes after a command or a response line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Send `334 <challenge>` and wait for `step`.
    Challenge(&'static str, Step),
    /// Everything is in.
    Done(Credentials),
}

/// `Username:` and `Password:` in base64, as every LOGIN client expects.
const USERNAME: &str = "VXNlcm5hbWU6";
const PASSWORD: &str = "UGFzc3dvcmQ6";

fn refusal(code: u16, e: EnhancedCode, text: &str) -> Reply {
    Reply::new(code, e, text)
}

fn undecodable() -> Reply {
    refusal(
        501,
        EnhancedCode::new(5, 5, 2),
        "Cannot decode the response",
    )
}

/// The `AUTH` command: the first challenge, or the credentials when the
/// initial response holds them all.
pub(super) fn start(mechanism: &str, initial: Option<&str>) -> Result<Next, Reply> {
    match (mechanism, initial) {
        ("PLAIN", None) => Ok(Next::Challenge("", Step::Plain)),
        ("PLAIN", Some(r)) => plain(r).map(Next::Done),
        ("LOGIN", None) => Ok(Next::Challenge(USERNAME, Step::LoginUsername)),
        ("LOGIN", Some(r)) => step(Step::LoginUsername, r),
        _ => Err(refusal(
            504,
            EnhancedCode::new(5, 5, 4),
            "Unrecognized authentication type",
        )),
    }
}

/// One response line to a challenge. `*` cancels (RFC 4954 4).
pub(super) fn step(step: Step, line: &str) -> Result<Next, Reply> {
    if line == "*" {
        return Err(refusal(
            501,
            EnhancedCode::new(5, 0, 0),
            "Authentication cancelled",
        ));
    }
    match step {
        Step::Plain => plain(line).map(Next::Done),
        Step::LoginUsername => Ok(Next::Challenge(
            PASSWORD,
            Step::LoginPassword {
                username: text(line)?,
            },
        )),
        Step::LoginPassword { username } => Ok(Next::Done(Credentials {
            mechanism: "LOGIN",
            authzid: String::new(),
            username,
            password: text(line)?,
        })),
    }
}

/// Base64 to UTF-8 text; `=` is the empty response.
fn text(b64: &str) -> Result<String, Reply> {
    let bytes = decode(b64)?;
    String::from_utf8(bytes).map_err(|_| undecodable())
}

fn decode(b64: &str) -> Result<Vec<u8>, Reply> {
    if b64 == "=" {
        return Ok(Vec::new());
    }
    STANDARD.decode(b64.trim()).map_err(|_| undecodable())
}

/// PLAIN's `authzid NUL authcid NUL passwd` (RFC 4616 2).
fn plain(b64: &str) -> Result<Credentials, Reply> {
    let bytes = decode(b64)?;
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(undecodable());
    };
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| undecodable());
    Ok(Credentials {
        mechanism: "PLAIN",
        authzid: utf8(authzid)?,
        username: utf8(username)?,
        password: utf8(password)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &[u8]) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn plain_with_and_without_an_initial_response() {
        let r = b64(b"\0composer\0s3cret");
        let Ok(Next::Done(c)) = start("PLAIN", Some(&r)) else {
            panic!()
        };
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("composer", "s3cret")
        );
        assert_eq!(start("PLAIN", None), Ok(Next::Challenge("", Step::Plain)));
        assert!(matches!(step(Step::Plain, &r), Ok(Next::Done(_))));
        assert!(
            !format!("{c:?}").contains("s3cret"),
            "Debug hides the password"
        );
    }

    #[test]
    fn login_asks_for_the_name_then_the_password() {
        let Ok(Next::Challenge(USERNAME, s)) = start("LOGIN", None) else {
            panic!()
        };
        let Ok(Next::Challenge(PASSWORD, s)) = step(s, &b64(b"composer")) else {
            panic!()
        };
        let Ok(Next::Done(c)) = step(s, &b64(b"pw")) else {
            panic!()
        };
        assert_eq!(
            (c.mechanism, c.username.as_str(), c.password.as_str()),
            ("LOGIN", "composer", "pw")
        );
    }

    #[test]
    fn bad_responses_get_precise_replies() {
        assert_eq!(start("CRAM-MD5", None).unwrap_err().code, 504);
        assert_eq!(step(Step::Plain, "*").unwrap_err().code, 501);
        assert_eq!(step(Step::Plain, "not base64!").unwrap_err().code, 501);
        // Two fields instead of three.
        assert_eq!(start("PLAIN", Some(&b64(b"a\0b"))).unwrap_err().code, 501);
    }
}
