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
    /// No connections to the domain for a while (open ones finish their
    /// transaction); its recipients stay queued.
    Suspend {
        /// The domain.
        domain: String,
        /// How long, e.g. 30m, 1h, 2d.
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why, for the log and the listing.
        #[arg(long)]
        reason: Option<String>,
    },
    /// End a suspension.
    Resume {
        /// The domain.
        domain: String,
    },
    /// Retry the domain's deferred recipients now.
    Flush {
        /// The domain.
        domain: String,
    },
    /// Give up on what is queued for the domain: each recipient bounces
    /// (logged, and its sender gets a DSN).
    Bounce {
        /// The domain.
        domain: String,
        /// Why, for the log, the bounces and the DSNs.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum Sort {
    Depth,
    Age,
}

pub(crate) fn run(command: QueueCommand, admin: AdminArgs) -> anyhow::Result<()> {
    let steer = |domain: &str, what: &str, body: String| -> anyhow::Result<()> {
        let path = format!("/api/v1/queues/{}/{what}", percent_encode(domain));
        let answer = admin.post(&path, &body)?;
        if admin.json {
            println!("{answer}");
        } else {
            let v: serde_json::Value =
                serde_json::from_str(&answer).context("the answer is not JSON")?;
            println!("{}", said(what, &v));
        }
        Ok(())
    };
    let path = match &command {
        QueueCommand::Suspend {
            domain,
            duration,
            reason,
        } => {
            let body = serde_json::json!({ "for": duration, "reason": reason }).to_string();
            return steer(domain, "suspend", body);
        }
        QueueCommand::Resume { domain } => return steer(domain, "resume", "{}".into()),
        QueueCommand::Flush { domain } => return steer(domain, "flush", "{}".into()),
        QueueCommand::Bounce { domain, reason } => {
            let body = serde_json::json!({ "reason": reason }).to_string();
            return steer(domain, "bounce", body);
        }
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
        _ => print!("{}", one(&v)),
    }
    Ok(())
}

/// One line on what a suspend, resume or flush did.
fn said(what: &str, v: &serde_json::Value) -> String {
    let domain = v["domain"].as_str().unwrap_or("?");
    match what {
        "suspend" => format!(
            "{domain}: suspended for {:.0} s ({})",
            v["suspended_for_secs"].as_f64().unwrap_or(0.0),
            v["reason"].as_str().unwrap_or("")
        ),
        "resume" if v["was_suspended"] == true => format!("{domain}: resumed"),
        "resume" => format!("{domain}: was not suspended"),
        "bounce" => format!(
            "{domain}: {} queued recipients bounced ({})",
            v["bounced"].as_u64().unwrap_or(0),
            v["reason"].as_str().unwrap_or("")
        ),
        _ => format!(
            "{domain}: {} deferred recipients retried now",
            v["retried"].as_u64().unwrap_or(0)
        ),
    }
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
    let mut state = match q["suspended"]["reason"].as_str() {
        Some(reason) => format!("suspended: {reason}"),
        None => q["rate"]["state"].as_str().unwrap_or("-").to_string(),
    };
    if let Some(site) = q["site"].as_str() {
        state += &format!(" (site {site})");
    }
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
        let v = serde_json::json!({"total": 1, "queues": [
            {"domain": "ws1.test", "queue": "general", "site": "0 plain 127.0.0.9",
             "rate": {"state": "steady"}}
        ]});
        assert!(table(&v).contains("steady (site 0 plain 127.0.0.9)"));
    }
}
