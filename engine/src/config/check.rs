//! What types alone cannot say about a configuration: values that parse
//! but cannot work (a zero limit, a zero timeout, a relay pattern that
//! matches nothing, two listeners on one address).
//!
//! Each problem names the setting by its path in the file
//! (`queue[0].limits.connect_timeout`), so the caller can find its line,
//! and quotes the offending value.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use volley_units::domain::routing_key;

use super::{Config, Protocol, QueueSettings};
use crate::rate::RuleSet;

/// One setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// Where in the file: `ingest.max_recipients`, `listener[1].address`.
    pub(super) path: String,
    /// `path = value: why`.
    pub(super) message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, value: impl Display, why: impl Display) {
        let path = path.into();
        let message = format!("{path} = {value}: {why}");
        self.0.push(Problem { path, message });
    }

    /// A problem with a whole setting or table, not one value.
    fn fail(&mut self, path: impl Into<String>, why: impl Display) {
        let path = path.into();
        let message = format!("{path}: {why}");
        self.0.push(Problem { path, message });
    }

    fn at_least_one(&mut self, path: impl Into<String>, value: usize) {
        if value == 0 {
            self.add(path, value, "must be at least 1");
        }
    }

    fn not_zero(&mut self, path: impl Into<String>, value: Duration) {
        if value.is_zero() {
            self.add(path, "\"0s\"", "a zero timeout cannot be met");
        }
    }
}

/// Every problem of `config`, in file order as far as it is known.
pub(super) fn problems(config: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    if let Err(e) = routing_key(&config.hostname) {
        p.add("hostname", format!("{:?}", config.hostname), e);
    }
    if config.memory_budget == 0 {
        p.add("memory_budget", 0, "Volley could hold no message");
    }
    p.not_zero("summary_interval", config.summary_interval);
    listeners(config, &mut p);
    users(config, &mut p);
    if let Some(url) = &config.events.url
        && let Err(e) = super::Endpoint::parse(url)
    {
        p.add("events.url", format!("{url:?}"), e);
    }
    p.at_least_one("events.batch", config.events.batch);
    p.at_least_one("events.queue", config.events.queue);
    p.not_zero("events.timeout", config.events.timeout);
    if config.admin.enabled
        && !config.admin.listen.ip().is_loopback()
        && config.admin.token_file.is_none()
    {
        p.add(
            "admin.listen",
            format!("\"{}\"", config.admin.listen),
            "beyond loopback the admin API needs a token (set admin.token_file)",
        );
    }
    cluster(config, &mut p);
    if let Some(after) = config.dsn.delay_after {
        p.not_zero("dsn.delay_after", after);
    }
    if config.mta_sts.enabled {
        p.not_zero("mta_sts.fetch_timeout", config.mta_sts.fetch_timeout);
        if config.mta_sts.https_port == 0 {
            p.add(
                "mta_sts.https_port",
                0,
                "policy hosts listen on a real port (443)",
            );
        }
    }
    ingest(config, &mut p);
    queues(config, &mut p);
    if let Err(e) = RuleSet::new(&config.rules) {
        p.fail("rules", e);
    }
    if let Err(e) = config.resolver.validate() {
        p.fail("resolver", e);
    }
    let quota = config.quota.total.is_some() || config.quota.per_day.is_some();
    if quota && config.journal.dir.is_none() {
        p.fail(
            "quota",
            "needs [journal] dir, where the delivered count is kept",
        );
    }
    if config.journal.segment_size < 4096 {
        p.add(
            "journal.segment_size",
            config.journal.segment_size,
            "must be at least 4KiB",
        );
    }
    let share = config.scheduler.hint_share;
    if !(0.0..=1.0).contains(&share) {
        p.add("scheduler.hint_share", share, "must be between 0 and 1");
    }
    p.0
}

fn cluster(config: &Config, p: &mut Problems) {
    let c = &config.cluster;
    if let Some(url) = &c.redis
        && let Some(why) = super::cluster::redis_url_problem(url)
    {
        let shown = super::cluster::redacted_url(url);
        p.add("cluster.redis", format!("{shown:?}"), why);
    }
    if let Some(why) = super::cluster::node_name_problem(&c.node) {
        p.add("cluster.node", format!("{:?}", c.node), why);
    }
    if c.redis.is_some() {
        p.not_zero("cluster.sync_interval", c.sync_interval);
        if c.sync_interval > std::time::Duration::from_secs(1) {
            p.add(
                "cluster.sync_interval",
                format!("{:?}", volley_units::format_duration(c.sync_interval)),
                "at most 1s: a node's claims cover a few intervals of sending",
            );
        }
    }
}

fn listeners(config: &Config, p: &mut Problems) {
    if config.listeners.is_empty() {
        p.fail("listener", "at least one [[listener]] is needed");
    }
    let mut seen = HashMap::new();
    let certificate = config.tls.cert.is_some() && config.tls.key.is_some();
    if config.tls.is_set() && !certificate {
        p.fail("tls", "needs both cert and key");
    }
    for (i, l) in config.listeners.iter().enumerate() {
        if l.protocol == Protocol::Smtps && !certificate {
            p.add(
                format!("listener[{i}].protocol"),
                "\"smtps\"",
                "needs a certificate: [tls] cert and key",
            );
        }
        if l.require_tls && !certificate {
            p.add(
                format!("listener[{i}].require_tls"),
                true,
                "needs a certificate: [tls] cert and key",
            );
        }
        if l.address.port() == 0 {
            continue; // each gets a port of its own
        }
        if let Some(first) = seen.insert(l.address, i) {
            p.add(
                format!("listener[{i}].address"),
                format!("\"{}\"", l.address),
                format!("listener {first} has the same address"),
            );
        }
    }
}

fn users(config: &Config, p: &mut Problems) {
    let mut seen = HashMap::new();
    for (i, u) in config.users.iter().enumerate() {
        if u.name.is_empty() {
            p.fail(format!("user[{i}].name"), "a user needs a name");
        }
        if let Some(first) = seen.insert(u.name.as_str(), i) {
            p.add(
                format!("user[{i}].name"),
                format!("{:?}", u.name),
                format!("user {first} has the same name"),
            );
        }
        if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
            p.fail(
                format!("user[{i}].password_hash"),
                format!("not a PHC password hash ({e}): make one with `volley hash-password`"),
            );
        }
    }
    let certificate = config.tls.cert.is_some() && config.tls.key.is_some();
    if !config.users.is_empty() && !certificate {
        p.fail(
            "user",
            "AUTH is offered only inside TLS: users need [tls] cert and key",
        );
    }
}

fn ingest(config: &Config, p: &mut Problems) {
    let c = &config.ingest;
    p.at_least_one("ingest.max_connections", c.max_connections);
    p.at_least_one("ingest.max_connections_per_ip", c.max_connections_per_ip);
    p.at_least_one("ingest.max_recipients", c.max_recipients);
    p.not_zero("ingest.idle_timeout", c.idle_timeout);
    p.not_zero("ingest.command_timeout", c.command_timeout);
    if c.max_message_size == 0 {
        p.add("ingest.max_message_size", 0, "no message would fit");
    }
    for pattern in &c.relay_domains {
        if let Err(why) = relay_pattern(pattern) {
            p.add("ingest.relay_domains", format!("{pattern:?}"), why);
        }
    }
}

/// A relay pattern is `*`, a domain, or `*.` and a domain.
fn relay_pattern(pattern: &str) -> Result<(), String> {
    let pattern = pattern.trim();
    if pattern == "*" {
        return Ok(());
    }
    let domain = pattern.strip_prefix("*.").unwrap_or(pattern);
    if domain.contains('*') {
        return Err("a pattern is \"*\", a domain, or \"*.\" followed by a domain".into());
    }
    routing_key(domain).map(|_| ()).map_err(|e| e.to_string())
}

fn queues(config: &Config, p: &mut Problems) {
    queue_limits("general_queue", &config.general_queue, p);
    let mut names = HashMap::new();
    let mut owners: HashMap<String, usize> = HashMap::new();
    for (i, q) in config.queues.iter().enumerate() {
        let at = format!("queue[{i}]");
        if q.name.trim().is_empty() {
            p.add(
                format!("{at}.name"),
                "\"\"",
                "a queue needs a name for the logs",
            );
        } else if let Some(first) = names.insert(q.name.as_str(), i) {
            p.add(
                format!("{at}.name"),
                format!("{:?}", q.name),
                format!("queue {first} has the same name"),
            );
        }
        if q.domains.is_empty() {
            p.add(format!("{at}.domains"), "[]", "a queue needs domains");
        }
        for domain in &q.domains {
            match routing_key(domain) {
                Err(e) => p.add(format!("{at}.domains"), format!("{domain:?}"), e),
                Ok(key) => {
                    if let Some(first) = owners.insert(key, i) {
                        p.add(
                            format!("{at}.domains"),
                            format!("{domain:?}"),
                            format!("already in queue {first}: a domain has one queue"),
                        );
                    }
                }
            }
        }
        if let Err(e) = q.mx_addrs(config.delivery_port) {
            p.fail(format!("{at}.mx"), e);
        }
        queue_limits(&format!("{at}.limits"), &q.limits, p);
    }
}

fn queue_limits(at: &str, s: &QueueSettings, p: &mut Problems) {
    p.at_least_one(format!("{at}.max_connections"), s.max_connections);
    p.at_least_one(
        format!("{at}.max_connections_per_domain"),
        s.max_connections_per_domain,
    );
    if s.initial_connections > s.max_connections_per_domain {
        p.add(
            format!("{at}.initial_connections"),
            s.initial_connections,
            format!(
                "exceeds max_connections_per_domain ({})",
                s.max_connections_per_domain
            ),
        );
    }
    p.at_least_one(
        format!("{at}.max_messages_per_connection"),
        s.max_messages_per_connection,
    );
    p.at_least_one(
        format!("{at}.max_recipients_per_transaction"),
        s.max_recipients_per_transaction,
    );
    p.at_least_one(
        format!("{at}.queued_per_connection"),
        s.queued_per_connection,
    );
    p.at_least_one(format!("{at}.mx_limit"), s.mx_limit);
    for (name, value) in [
        ("connect_timeout", s.connect_timeout),
        ("greeting_timeout", s.greeting_timeout),
        ("command_timeout", s.command_timeout),
        ("data_timeout", s.data_timeout),
        ("session_timeout", s.session_timeout),
        ("delivery_timeout", s.delivery_timeout),
        ("idle_timeout", s.idle_timeout),
        ("max_age", s.max_age),
    ] {
        p.not_zero(format!("{at}.{name}"), value);
    }
    if s.max_message_size == 0 {
        p.add(format!("{at}.max_message_size"), 0, "no message would fit");
    }
    if s.retry_schedule.is_empty() {
        p.add(
            format!("{at}.retry_schedule"),
            "[]",
            "needs at least one delay",
        );
    }
    if s.max_attempts == 0 {
        p.add(format!("{at}.max_attempts"), 0, "must be at least 1");
    }
    for rule in &s.site_suffixes {
        let suffix = rule.trim_start_matches('*').trim_start_matches('.');
        if !suffix.contains('.') || suffix.contains(['*', ' ']) {
            p.add(
                format!("{at}.site_suffixes"),
                format!("{rule:?}"),
                "expects a host name suffix of two labels or more, as \"*.mail.example.net\"",
            );
        }
    }
    if let Err(e) = s.rate.validate() {
        p.0.push(Problem {
            path: format!("{at}.rate.{}", e.field),
            message: format!("{at}.rate: {e}"),
        });
    }
}
