//! The client side of the admin API for `volley status` and `volley
//! queue`: where the API is, the bearer token, and one GET.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

/// Where the admin API is and how to authenticate.
#[derive(Args, Debug)]
pub(crate) struct AdminArgs {
    /// The admin API, as http://HOST:PORT.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8025")]
    admin: String,
    /// A file holding the bearer token; or set VOLLEY_ADMIN_TOKEN.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON as it came.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl AdminArgs {
    /// The body of `GET path`, or why there is none.
    pub(crate) fn get(&self, path: &str) -> anyhow::Result<String> {
        self.request("GET", path, None)
    }

    /// The body of `POST path` with a JSON `body`.
    pub(crate) fn post(&self, path: &str, body: &str) -> anyhow::Result<String> {
        self.request("POST", path, Some(body))
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> anyhow::Result<String> {
        let token = match &self.token_file {
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .with_context(|| format!("token file {}", file.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("VOLLEY_ADMIN_TOKEN").ok(),
        };
        let timeout = Duration::from_secs(10);
        request(&self.admin, method, path, body, token.as_deref(), timeout)
    }
}

/// The body of `GET path` from an admin API at `addr` without a token,
/// each step within `timeout` (the soak polls its own server this way).
pub(crate) fn get_at(addr: SocketAddr, path: &str, timeout: Duration) -> anyhow::Result<String> {
    request(&format!("http://{addr}"), "GET", path, None, None, timeout)
}

/// `method path` (with a JSON `body`) to the admin API at `base`
/// (http://HOST:PORT), HTTP/1.1 with the connection closed after the
/// answer; the body of a 2xx answer, or the API's error message.
fn request(
    base: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let Some(authority) = base.strip_prefix("http://") else {
        bail!("--admin {base:?}: only http:// is spoken");
    };
    let authority = authority.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("--admin {base:?}"))?
        .next()
        .with_context(|| format!("--admin {base:?}: no address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the admin API at {base}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let content = body.map_or(String::new(), |b| {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        )
    });
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}{content}Connection: close\r\nAccept: application/json\r\n\r\n{}",
        body.unwrap_or("")
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("the admin API sent no complete answer")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("the admin API's answer has no status")?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    if !(200..300).contains(&status) {
        let why = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or(body);
        return Err(Refused { status, why }.into());
    }
    Ok(body)
}

/// An answer of the admin API outside 2xx: its status and its error.
#[derive(Debug, thiserror::Error)]
#[error("admin API answered {status}: {why}")]
pub(crate) struct Refused {
    pub(crate) status: u16,
    why: String,
}

/// The body of a chunked answer (RFC 9112 7.1), chunk extensions ignored.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or(&after[size..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk("4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n"), "{\"a\":1}");
        assert_eq!(dechunk("0\r\n\r\n"), "");
    }
}
