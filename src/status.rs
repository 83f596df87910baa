//! `volley status`: a client of the admin API's `GET /api/v1/status`,
//! with a summary for people and `--json` for scripts.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

/// Where the admin API is and how to authenticate.
#[derive(Args, Debug)]
pub(crate) struct StatusArgs {
    /// The admin API, as http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:8025")]
    admin: String,
    /// A file holding the bearer token; or set VOLLEY_ADMIN_TOKEN.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Print the API's JSON as it came.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: StatusArgs) -> anyhow::Result<()> {
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("VOLLEY_ADMIN_TOKEN").ok(),
    };
    let body = get(&args.admin, "/api/v1/status", token.as_deref())?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the status is not JSON")?;
    print!("{}", summary(&v));
    Ok(())
}

/// The status for people: one line per subject, then the busiest domains.
fn summary(v: &serde_json::Value) -> String {
    let t = &v["totals"];
    let n = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
    let mut out = format!(
        "volley {}, up {:.0} s, {} shards{}{}\n",
        v["version"].as_str().unwrap_or("?"),
        v["uptime_seconds"].as_f64().unwrap_or(0.0),
        n(&v["shards"]),
        if v["durable"] == true {
            ", durable"
        } else {
            ""
        },
        if v["stopping"] == true {
            ", stopping"
        } else {
            ""
        },
    );
    out += &format!(
        "received   {} messages, {} recipients\n",
        n(&t["received"]),
        n(&t["recipients_received"])
    );
    out += &format!(
        "outcomes   delivered {}  deferred {}  bounced {}  expired {}  dsn {}\n",
        n(&t["delivered"]),
        n(&t["deferred"]),
        n(&t["bounced"]),
        n(&t["expired"]),
        n(&t["dsn_sent"])
    );
    out += &format!(
        "queued     {} recipients (peak {})\n",
        n(&t["queued"]),
        n(&t["peak_queued"])
    );
    out += &format!(
        "conns      {} open (peak {}), {} ingest sessions\n",
        n(&t["connections_open"]),
        n(&t["peak_connections"]),
        n(&t["ingest_sessions"])
    );
    out += &format!(
        "memory     {} of {} bytes\n",
        n(&v["memory"]["held_bytes"]),
        n(&v["memory"]["budget_bytes"])
    );
    if let Some(domains) = v["busiest_domains"].as_array().filter(|d| !d.is_empty()) {
        out += &format!(
            "{:<32} {:>8} {:>6} {:>10}  state\n",
            "domain", "queued", "conns", "rate/s"
        );
        for d in domains {
            out += &format!(
                "{:<32} {:>8} {:>6} {:>10.1}  {}\n",
                d["domain"].as_str().unwrap_or("?"),
                n(&d["queued"]),
                n(&d["connections"]),
                d["rate"]["rate"].as_f64().unwrap_or(0.0),
                d["rate"]["state"].as_str().unwrap_or("?"),
            );
        }
    }
    out
}

/// GET `path` from the admin API at `base` (http://HOST:PORT), HTTP/1.1
/// with the connection closed after the answer; the body of a 2xx
/// answer, or the API's error message.
fn get(base: &str, path: &str, token: Option<&str>) -> anyhow::Result<String> {
    let Some(authority) = base.strip_prefix("http://") else {
        bail!("--admin {base:?}: only http:// is spoken");
    };
    let authority = authority.trim_end_matches('/');
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("--admin {base:?}"))?
        .next()
        .with_context(|| format!("--admin {base:?}: no address"))?;
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot reach the admin API at {base}"))?;
    stream.set_read_timeout(Some(timeout))?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\nAccept: application/json\r\n\r\n"
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
        bail!("admin API answered {status}: {why}");
    }
    Ok(body)
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

    #[test]
    fn the_summary_names_the_counters_and_the_busiest_domains() {
        let v = serde_json::json!({
            "version": "0.1.0", "uptime_seconds": 12.0, "shards": 2, "durable": false,
            "stopping": false, "memory": {"held_bytes": 10, "budget_bytes": 100},
            "totals": {"received": 3, "recipients_received": 4, "delivered": 2, "deferred": 1,
                       "bounced": 1, "expired": 0, "dsn_sent": 1, "queued": 1, "peak_queued": 4,
                       "connections_open": 1, "peak_connections": 2, "ingest_sessions": 0},
            "busiest_domains": [{"domain": "d0.test", "queued": 1, "connections": 1,
                                 "rate": {"rate": 50.0, "state": "slow_start"}}]
        });
        let s = summary(&v);
        assert!(s.starts_with("volley 0.1.0, up 12 s, 2 shards\n"), "{s}");
        assert!(s.contains("delivered 2  deferred 1  bounced 1  expired 0  dsn 1"));
        assert!(s.contains("d0.test"));
        assert!(s.contains("slow_start"));
    }
}
