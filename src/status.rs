//! `volley status`: a client of the admin API's `GET /api/v1/status`,
//! with a summary for people and `--json` for scripts.

use anyhow::Context;

use crate::admin_client::AdminArgs;

pub(crate) fn run(args: AdminArgs) -> anyhow::Result<()> {
    let body = args.get("/api/v1/status")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the status is not JSON")?;
    print!("{}", summary(&v));
    Ok(())
}

/// `volley drain`: asks for the drain and says how much is left.
pub(crate) fn drain(args: AdminArgs) -> anyhow::Result<()> {
    let body = args.post("/api/v1/drain", "{}")?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).context("the answer is not JSON")?;
    println!(
        "draining: listeners closed, {} recipients left to deliver; Volley stops when none is",
        v["queued"].as_u64().unwrap_or(0)
    );
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
        } else if v["draining"] == true {
            ", draining"
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

#[cfg(test)]
mod tests {
    use super::*;

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
