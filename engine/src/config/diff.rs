//! What a reload changes: every difference between the running
//! configuration and a new one, each with whether a reload applies it or
//! only a restart does. The engine logs these lines at each reload, and
//! `volley check-config --diff` prints them before an operator sends the
//! signal.

use std::fmt;

use serde_json::Value;

use super::{Config, QueueSettings, SpecificQueue};

/// When a change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// At the reload: queues and their limits, the resolver, ingest,
    /// certificates, keys, rules.
    Now,
    /// Only after a restart: the reload leaves the running value in place.
    AtRestart,
}

/// One difference between two configurations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting, as the file names it: `queue "bulk"`, `[resolver]`.
    pub setting: String,
    /// What changed, in words: `added`, `max_connections 20 -> 2`.
    pub detail: String,
    /// Whether the reload applies it.
    pub applies: Applies,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.applies {
            Applies::Now => "applies now",
            Applies::AtRestart => "takes effect after a restart",
        };
        write!(f, "{}: {} ({when})", self.setting, self.detail)
    }
}

/// Every change from `old` to `new`, queues first. `running_shards` is
/// the shard count in force (with `shards = 0` the count follows the
/// cores, so a changed setting may change nothing).
pub fn changes(old: &Config, new: &Config, running_shards: usize) -> Vec<Change> {
    let mut out = Vec::new();
    queue_changes(old, new, &mut out);
    listener_changes(old, new, &mut out);
    let mut section = |setting: &str, differs: bool, applies: Applies| {
        if differs {
            out.push(Change {
                setting: setting.to_string(),
                detail: "changed".to_string(),
                applies,
            });
        }
    };
    use Applies::{AtRestart, Now};
    section("[resolver]", old.resolver != new.resolver, Now);
    section(
        "rules",
        old.rules != new.rules || old.default_rules != new.default_rules,
        Now,
    );
    section("[scheduler]", old.scheduler != new.scheduler, Now);
    section("[ingest]", old.ingest != new.ingest, Now);
    section("hostname", old.hostname != new.hostname, Now);
    section("memory_budget", old.memory_budget != new.memory_budget, Now);
    section("source_ips", old.source_ips != new.source_ips, Now);
    section("delivery_port", old.delivery_port != new.delivery_port, Now);
    section("[tls]", old.tls != new.tls, Now);
    section("[[dkim]]", old.dkim != new.dkim, Now);
    section("[dsn]", old.dsn != new.dsn, Now);
    section("[[user]]", old.users != new.users, Now);
    section(
        "shards",
        old.shards != new.shards && new.shard_count() != running_shards,
        AtRestart,
    );
    section("[journal]", old.journal != new.journal, AtRestart);
    section("[quota]", old.quota != new.quota, AtRestart);
    section("[mta_sts]", old.mta_sts != new.mta_sts, AtRestart);
    section("[events]", old.events != new.events, AtRestart);
    section("[admin]", old.admin != new.admin, AtRestart);
    section("[cluster]", old.cluster != new.cluster, AtRestart);
    section(
        "delivery_log",
        old.delivery_log != new.delivery_log,
        AtRestart,
    );
    section(
        "summary_interval",
        old.summary_interval != new.summary_interval,
        AtRestart,
    );
    out
}

/// The general queue's changed limits, then each specific queue (by name)
/// added, removed or changed.
fn queue_changes(old: &Config, new: &Config, out: &mut Vec<Change>) {
    let fields = settings_changes(&old.general_queue, &new.general_queue);
    if !fields.is_empty() {
        out.push(Change {
            setting: "[general_queue]".to_string(),
            detail: fields.join(", "),
            applies: Applies::Now,
        });
    }
    let named = |c: &Config, name: &str| c.queues.iter().find(|q| q.name == name).cloned();
    for q in &new.queues {
        let setting = format!("queue {:?}", q.name);
        let detail = match named(old, &q.name) {
            None => format!("added for {}", describe(q)),
            Some(was) => {
                let mut parts = Vec::new();
                if was.domains != q.domains {
                    parts.push(format!("domains {:?} -> {:?}", was.domains, q.domains));
                }
                if was.mx != q.mx {
                    parts.push(format!("mx {:?} -> {:?}", was.mx, q.mx));
                }
                parts.extend(settings_changes(&was.limits, &q.limits));
                if parts.is_empty() {
                    continue;
                }
                parts.join(", ")
            }
        };
        out.push(Change {
            setting,
            detail,
            applies: Applies::Now,
        });
    }
    for q in &old.queues {
        if named(new, &q.name).is_none() {
            out.push(Change {
                setting: format!("queue {:?}", q.name),
                detail: format!(
                    "removed: {} go back to the general queue",
                    q.domains.join(", ")
                ),
                applies: Applies::Now,
            });
        }
    }
}

/// Each listener added, removed or changed, by its address.
fn listener_changes(old: &Config, new: &Config, out: &mut Vec<Change>) {
    let at = |c: &Config, a| c.listeners.iter().find(|l| l.address == a).cloned();
    let mut push = |address, detail: String| {
        out.push(Change {
            setting: format!("listener {address}"),
            detail,
            applies: Applies::Now,
        })
    };
    for l in &new.listeners {
        match at(old, l.address) {
            None => push(l.address, format!("added ({}, {} ack)", l.protocol, l.ack)),
            Some(was) if was != *l => push(
                l.address,
                format!("changed to {}, {} ack (opened again)", l.protocol, l.ack),
            ),
            Some(_) => {}
        }
    }
    for l in &old.listeners {
        if at(new, l.address).is_none() {
            push(l.address, "removed: its sessions finish".to_string());
        }
    }
}

fn describe(q: &SpecificQueue) -> String {
    let mut s = q.domains.join(", ");
    if !q.mx.is_empty() {
        s.push_str(&format!(", fixed MX {}", q.mx.join(", ")));
    }
    s
}

/// `name old -> new` for each limit that differs (nested tables as
/// `rate.max_rate`).
fn settings_changes(old: &QueueSettings, new: &QueueSettings) -> Vec<String> {
    let (Ok(a), Ok(b)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    leaf_changes("", &a, &b, &mut out);
    out
}

fn leaf_changes(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let vb = y.get(k).unwrap_or(&Value::Null);
                let p = match path {
                    "" => k.clone(),
                    _ => format!("{path}.{k}"),
                };
                leaf_changes(&p, va, vb, out);
            }
        }
        _ if a != b => out.push(format!("{path} {a} -> {b}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).expect("valid config")
    }

    #[test]
    fn queue_limits_and_added_and_removed_queues_are_named() {
        let old = config(
            r#"
            [general_queue]
            max_connections_per_domain = 20
            [[queue]]
            name = "gone"
            domains = ["old.example"]
            "#,
        );
        let new = config(
            r#"
            [general_queue]
            max_connections_per_domain = 2
            [general_queue.rate]
            max_rate = 50.0
            [[queue]]
            name = "bulk"
            domains = ["big.example"]
            mx = ["127.0.0.9:2525"]
            "#,
        );
        let lines: Vec<String> = changes(&old, &new, 1)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "[general_queue]: max_connections_per_domain 20 -> 2, rate.max_rate 10000.0 -> 50.0 (applies now)",
                "queue \"bulk\": added for big.example, fixed MX 127.0.0.9:2525 (applies now)",
                "queue \"gone\": removed: old.example go back to the general queue (applies now)",
            ]
        );
    }

    #[test]
    fn what_needs_a_restart_says_so_and_the_same_file_changes_nothing() {
        let old = config("[[listener]]\naddress = \"127.0.0.1:2525\"\n");
        let new = config(
            "[[listener]]\naddress = \"127.0.0.1:2526\"\n\
             [resolver]\nnameservers = [\"127.0.0.1:5353\"]\n[journal]\ndir = \"/tmp/j\"\n",
        );
        let lines: Vec<String> = changes(&old, &new, 1)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "listener 127.0.0.1:2526: added (smtp, fast ack) (applies now)",
                "listener 127.0.0.1:2525: removed: its sessions finish (applies now)",
                "[resolver]: changed (applies now)",
                "[journal]: changed (takes effect after a restart)",
            ]
        );
        assert!(changes(&new, &new.clone(), 1).is_empty());
    }

    #[test]
    fn a_changed_shard_setting_that_keeps_the_count_is_no_change() {
        let old = config("shards = 2\n");
        let new = config("shards = 0\n");
        assert!(changes(&old, &new, new.shard_count()).is_empty());
        let c = changes(&old, &config("shards = 3\n"), 2);
        assert_eq!(
            c[0].to_string(),
            "shards: changed (takes effect after a restart)"
        );
    }
}
