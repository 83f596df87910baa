//! `volley queue`: the domain queues of a running Volley, from its admin
//! API, as a table for people or JSON for scripts (like `postqueue -p`
//! and KumoMTA's `kcli`).

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use crate::admin_client::AdminArgs;

#[derive(Subcommand, Debug)]
pub(crate) enum QueueCommand {
    /// The domain queues, busiest (or oldest) first.
    List {
        /// Sort by recipients held (depth) or by the oldest one (age).
        #[arg(long, value_enum, default_value_t = Sort::Depth)]
        sort: Sort,
        /// Only domains whose names contain this.
        #[arg(long, value_name = "PATTERN")]
        domain: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// One domain's queue.
    Show {
        /// The domain.
        domain: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Sort {
    Depth,
    Age,
}

pub(crate) fn run(command: QueueCommand, admin: AdminArgs) -> anyhow::Result<()> {
    let path = match &command {
        QueueCommand::List {
            sort,
            domain,
            limit,
        } => {
            let sort = match sort {
                Sort::Depth => "depth",
                Sort::Age => "age",
            };
            let mut path = format!("/api/v1/queues?sort={sort}&limit={limit}");
            if let Some(d) = domain {
                path.push_str("&domain=");
                path.push_str(&percent_encode(d));
            }
            path
        }
        QueueCommand::Show { domain } => format!("/api/v1/queues/{}", percent_encode(domain)),
    };
    let body = admin.get(&path)?;
    if admin.json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the answer is not JSON")?;
    match command {
        QueueCommand::List { .. } => print!("{}", table(&v)),
        QueueCommand::Show { .. } => print!("{}", one(&v)),
    }
    Ok(())
}

/// A query or path value with everything but unreserved characters
/// percent-encoded (RFC 3986 2.3).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn row(q: &serde_json::Value) -> String {
    let n = |k: &str| q[k].as_u64().unwrap_or(0);
    let oldest = q["oldest_secs"]
        .as_f64()
        .map_or("-".to_string(), |s| format!("{s:.0}s"));
    let state = q["rate"]["state"].as_str().unwrap_or("-");
    format!(
        "{:<32} {:<12} {:>8} {:>8} {:>8} {:>6} {:>8}  {}\n",
        q["domain"].as_str().unwrap_or("?"),
        q["queue"].as_str().unwrap_or("?"),
        n("waiting"),
        n("retrying"),
        n("in_flight"),
        n("connections"),
        oldest,
        state
    )
}

const HEADER: &str = "domain                           queue         waiting retrying inflight  conns   oldest  state\n";

fn table(v: &serde_json::Value) -> String {
    let queues = v["queues"].as_array().cloned().unwrap_or_default();
    let mut out = String::from(HEADER);
    for q in &queues {
        out += &row(q);
    }
    out += &format!(
        "{} of {} domain queues\n",
        queues.len(),
        v["total"].as_u64().unwrap_or(0)
    );
    out
}

fn one(q: &serde_json::Value) -> String {
    let mut out = String::from(HEADER);
    out += &row(q);
    if let Some(r) = q["rate"].as_object() {
        out += &format!(
            "pace: {} connections allowed, {:.1} msg/s, ceiling {}\n",
            r.get("connection_limit")
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            r.get("rate").and_then(|v| v.as_f64()).unwrap_or(0.0),
            r.get("ceiling")
                .and_then(|v| v.as_f64())
                .map_or("none".to_string(), |c| format!("{c:.1} msg/s"))
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_percent_encoded() {
        assert_eq!(percent_encode("d1.test"), "d1.test");
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    #[test]
    fn the_table_has_a_row_per_queue_and_a_count() {
        let v = serde_json::json!({"total": 3, "queues": [
            {"domain": "d0.test", "queue": "general", "waiting": 5, "retrying": 1,
             "in_flight": 2, "connections": 1, "oldest_secs": 12.4, "rate": null}
        ]});
        let t = table(&v);
        assert!(t.lines().nth(1).unwrap().starts_with("d0.test"), "{t}");
        assert!(t.contains("12s"));
        assert!(t.ends_with("1 of 3 domain queues\n"));
    }
}
