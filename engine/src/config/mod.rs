//! Volley's configuration: one TOML file, every setting optional.
//!
//! Defaults live in one place: each struct's `impl Default`, which serde's
//! `#[serde(default)]` calls for every missing field, so a file only names
//! what it changes and an empty file (or none) is a working single-host setup.

mod admin;
mod check;
mod cluster;
mod diff;
mod document;
mod dsn;
mod events;
mod journal;
mod tls;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::rate::{RateSettings, RuleConfig};
pub use admin::AdminSettings;
pub use cluster::ClusterSettings;
pub(crate) use cluster::redacted_url;
pub use diff::{Applies, Change, changes};
use document::Document;
pub use dsn::DsnSettings;
pub(crate) use events::Endpoint;
pub use events::EventsSettings;
pub use journal::JournalSettings;
pub use tls::{DkimAlgorithm, DkimConfig, MtaStsSettings, TlsFiles, TlsPolicy};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The name Volley gives in EHLO and in its greeting.
    pub hostname: String,
    /// Number of shards (threads pinned to cores); 0 means one per core.
    pub shards: usize,
    /// TCP port of the MX hosts Volley delivers to (25 on the internet; tests
    /// and the bench use an unprivileged port).
    pub delivery_port: u16,
    /// Local addresses to deliver from (round robin); empty: the kernel picks.
    pub source_ips: Vec<IpAddr>,
    /// Where the delivery log goes (one JSON line per recipient outcome);
    /// unset: no delivery log.
    pub delivery_log: Option<PathBuf>,
    /// How often `volley serve` prints its one-line summary.
    #[serde(with = "volley_units::serde::duration")]
    pub summary_interval: Duration,
    /// Bytes of messages Volley may hold; near it, ingest answers 452 4.3.1.
    #[serde(with = "volley_units::serde::size")]
    pub memory_budget: u64,
    /// The ports Composers connect to.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Who may connect, and the limits of each ingest session.
    pub ingest: IngestConfig,
    /// How MX hosts are found.
    pub resolver: volley_dns::ResolverConfig,
    /// How the next queue to serve is chosen.
    pub scheduler: SchedulerConfig,
    /// Settings of the general queue (every domain without a specific queue).
    pub general_queue: QueueSettings,
    /// Specific queues: domains with their own limits and optional fixed MX.
    #[serde(rename = "queue")]
    pub queues: Vec<SpecificQueue>,
    /// Durable mode: the journal's directory and how it writes.
    pub journal: JournalSettings,
    /// Limits on delivered messages (needs `journal.dir`: the count is
    /// kept there).
    pub quota: crate::journal::QuotaLimits,
    /// Operator rules matched against every 4yz/5yz reply of a destination
    /// (`[[rules]]`): a pattern that suspends the destination or caps it.
    pub rules: Vec<RuleConfig>,
    /// After the operator's rules, Volley's own for the big receivers'
    /// documented throttling replies (Yahoo's `[TSS04]` and `[TSS09]`
    /// suspend the destination); an operator rule for the same reply
    /// matches first.
    pub default_rules: bool,
    /// The certificate ingest presents (STARTTLS, `smtps` listeners).
    pub tls: TlsFiles,
    /// Receivers' MTA-STS policies, applied to delivery.
    pub mta_sts: MtaStsSettings,
    /// DKIM signing keys (`[[dkim]]`): every message is signed with the
    /// keys of its From domain.
    pub dkim: Vec<DkimConfig>,
    /// The event feed: each outcome POSTed to the Composer's endpoint.
    pub events: EventsSettings,
    /// Delivery status notifications back to the sender.
    pub dsn: DsnSettings,
    /// The admin HTTP server: metrics and status.
    pub admin: AdminSettings,
    /// Several hosts behind one Composer sharing each destination's pace
    /// and connections through Redis.
    pub cluster: ClusterSettings,
    /// SMTP AUTH users (`[[user]]`): offered inside TLS; an authenticated
    /// client may relay as a trusted network may.
    #[serde(rename = "user")]
    pub users: Vec<UserConfig>,
}

/// One SMTP AUTH user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UserConfig {
    /// The name the client gives.
    pub name: String,
    /// The password's hash as a PHC string (`volley hash-password` makes
    /// an argon2id one); never the password itself.
    pub password_hash: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "volley.localhost".into(),
            shards: 0,
            delivery_port: 25,
            source_ips: Vec::new(),
            delivery_log: None,
            summary_interval: Duration::from_secs(5),
            memory_budget: 2 << 30,
            listeners: vec![ListenerConfig::default()],
            ingest: IngestConfig::default(),
            resolver: volley_dns::ResolverConfig::default(),
            scheduler: SchedulerConfig::default(),
            general_queue: QueueSettings::default(),
            queues: Vec::new(),
            journal: JournalSettings::default(),
            quota: crate::journal::QuotaLimits::default(),
            rules: Vec::new(),
            default_rules: true,
            tls: TlsFiles::default(),
            mta_sts: MtaStsSettings::default(),
            dkim: Vec::new(),
            events: EventsSettings::default(),
            dsn: DsnSettings::default(),
            admin: AdminSettings::default(),
            cluster: ClusterSettings::default(),
            users: Vec::new(),
        }
    }
}

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// SMTP (RFC 5321): one reply per message.
    Smtp,
    /// LMTP (RFC 2033): one reply per recipient after the data.
    Lmtp,
    /// SMTP inside TLS from the first byte (RFC 8314 3.3, port 465
    /// style); needs `[tls]`.
    Smtps,
}

/// When the Composer gets its reply to a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// 250 once the message is held in memory (fast mode: a crash loses what is in memory).
    Fast,
    /// The reply waits for the remote outcome: the first attempt's result is
    /// relayed and Volley keeps nothing (a 4xx goes back to the Composer).
    Safe,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Smtp => "smtp",
            Protocol::Lmtp => "lmtp",
            Protocol::Smtps => "smtps",
        })
    }
}

impl std::fmt::Display for AckMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AckMode::Fast => "fast",
            AckMode::Safe => "safe",
        })
    }
}

/// One listening port.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port; every shard accepts on it (SO_REUSEPORT).
    pub address: SocketAddr,
    /// SMTP or LMTP.
    pub protocol: Protocol,
    /// Fast or safe acknowledgement.
    pub ack: AckMode,
    /// MAIL before STARTTLS gets `530 5.7.0 Must issue a STARTTLS command
    /// first`; needs `[tls]`.
    pub require_tls: bool,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            address: SocketAddr::from(([127, 0, 0, 1], 2525)),
            protocol: Protocol::Smtp,
            ack: AckMode::Fast,
            require_tls: false,
        }
    }
}

/// Who may hand mail to Volley, and the limits of each session.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Client networks allowed to connect; others get 554 5.7.1 at connect.
    pub trusted_networks: Vec<ipnet::IpNet>,
    /// Recipient domains Volley relays for: "*" (all), "example.com" (that
    /// domain) or "*.example.com" (its subdomains). Others get 550 5.7.1.
    pub relay_domains: Vec<String>,
    /// Ingest connections from the trusted networks in total (all
    /// shards); beyond: 421 4.7.0. Clients outside them share a quarter of
    /// this on top (they only get a 554 greeting, unless AUTH is offered),
    /// so they can never take the places a Composer needs.
    pub max_connections: usize,
    /// Ingest connections from one client address outside the trusted
    /// networks; beyond: 421 4.7.0.
    pub max_connections_per_ip: usize,
    /// A session with no complete command for this long is closed (421).
    #[serde(with = "volley_units::serde::duration")]
    pub idle_timeout: Duration,
    /// Time allowed for a command line or a data block to arrive once started.
    #[serde(with = "volley_units::serde::duration")]
    pub command_timeout: Duration,
    /// Largest message accepted (552 5.3.4 beyond).
    #[serde(with = "volley_units::serde::size")]
    pub max_message_size: u64,
    /// Recipients per message (452 4.5.3 beyond).
    pub max_recipients: usize,
    /// Where `RCPT TO:<Postmaster>` (no domain, RFC 5321 4.5.1) is relayed,
    /// e.g. "postmaster@example.com". Volley has no local mailboxes, so with
    /// none set such a recipient gets 550 5.7.1. Relay domains do not apply:
    /// the operator chose this address.
    #[serde(deserialize_with = "postmaster_address")]
    pub postmaster: Option<volley_smtp::Mailbox>,
}

/// Reads `ingest.postmaster`: a mailbox whose domain can be routed.
fn postmaster_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<volley_smtp::Mailbox>, D::Error> {
    let text = String::deserialize(d)?;
    let invalid = |e| serde::de::Error::custom(format!("invalid postmaster {text:?}: {e}"));
    let mailbox = volley_smtp::Mailbox::parse(text.trim()).map_err(invalid)?;
    mailbox.domain.routing_key().map_err(invalid)?;
    Ok(Some(mailbox))
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            trusted_networks: vec![
                "127.0.0.0/8".parse().expect("literal network"),
                "::1/128".parse().expect("literal network"),
            ],
            relay_domains: vec!["*".into()],
            max_connections: 2000,
            max_connections_per_ip: 500,
            idle_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            max_message_size: 50 << 20,
            max_recipients: 1000,
            postmaster: None,
        }
    }
}

impl IngestConfig {
    /// Whether a client at `ip` may connect.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.trusted_networks.iter().any(|n| n.contains(&ip))
    }

    /// Whether Volley relays to recipient domain `domain` (a routing key:
    /// lower case, A-labels).
    pub fn may_relay_to(&self, domain: &str) -> bool {
        self.relay_domains.iter().any(|pat| {
            let pat = pat.trim();
            let key = |name: &str| volley_units::domain::routing_key(name).ok();
            if pat == "*" {
                true
            } else if let Some(suffix) = pat.strip_prefix("*.").and_then(key) {
                domain.len() > suffix.len()
                    && domain.ends_with(&suffix)
                    && domain.as_bytes()[domain.len() - suffix.len() - 1] == b'.'
            } else {
                key(pat).is_some_and(|k| k == domain)
            }
        })
    }
}

/// Which waiting queue gets the next free connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// The domain with the most recipients waiting.
    Largest,
    /// The domain whose oldest recipient has waited longest.
    Oldest,
}

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Largest or oldest first.
    pub policy: Policy,
    /// How many of the next queues' domains the resolver warms ahead.
    pub prefetch: usize,
    /// Share of the general queue's recipients (0..1) above which a domain
    /// earns a log hint to give it a specific queue.
    pub hint_share: f64,
    /// Fewest queued recipients in the general queue before hints are given.
    pub hint_min_queued: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Largest,
            prefetch: 16,
            hint_share: 0.3,
            hint_min_queued: 1000,
        }
    }
}

/// Settings of one queue: its connection limits, timeouts and retries.
/// Connection counts are per shard.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Connections opened at once when a domain gets its first work
    /// (`q_initmta`).
    pub initial_connections: usize,
    /// Connections for the whole queue (`q_maxmta`); the general queue evicts
    /// its least recently used idle connection when it needs room.
    pub max_connections: usize,
    /// Connections to one domain.
    pub max_connections_per_domain: usize,
    /// Transactions on one connection before it says QUIT (`q_maxjobs`).
    pub max_messages_per_connection: usize,
    /// Recipients in one transaction (`q_batchsize`).
    pub max_recipients_per_transaction: usize,
    /// Queued recipients per open connection before another is opened
    /// (`q_maxqueue`).
    pub queued_per_connection: usize,
    /// MX hosts tried per domain (`q_mxlimit`).
    pub mx_limit: usize,
    /// TCP connect (`q_maxconntime`).
    #[serde(with = "volley_units::serde::duration")]
    pub connect_timeout: Duration,
    /// Waiting for the 220 greeting (RFC 5321 4.5.3.2: 5 minutes).
    #[serde(with = "volley_units::serde::duration")]
    pub greeting_timeout: Duration,
    /// Waiting for the reply to EHLO, MAIL, RCPT, DATA (RFC: 5 minutes).
    #[serde(with = "volley_units::serde::duration")]
    pub command_timeout: Duration,
    /// Sending the body and waiting for the final reply (`q_mtadatatimeout`;
    /// RFC: 10 minutes for the final reply).
    #[serde(with = "volley_units::serde::duration")]
    pub data_timeout: Duration,
    /// Longest life of one connection (`q_maxtranstime`).
    #[serde(with = "volley_units::serde::duration")]
    pub session_timeout: Duration,
    /// Longest time for one transaction from MAIL to the final reply
    /// (`q_maxdelivertime`).
    #[serde(with = "volley_units::serde::duration")]
    pub delivery_timeout: Duration,
    /// An idle connection says QUIT after this long.
    #[serde(with = "volley_units::serde::duration")]
    pub idle_timeout: Duration,
    /// Largest message this queue sends (`q_maxsize`); larger ones bounce.
    #[serde(with = "volley_units::serde::size")]
    pub max_message_size: u64,
    /// Waits before each retry; the last one repeats.
    #[serde(with = "volley_units::serde::durations")]
    pub retry_schedule: Vec<Duration>,
    /// Attempts before a recipient expires (10 by default).
    pub max_attempts: u32,
    /// Age after which a deferred recipient expires.
    #[serde(with = "volley_units::serde::duration")]
    pub max_age: Duration,
    /// A host that takes what this queue gives up on (a fallback relay),
    /// as "ip:port".
    pub fallback_relay: Option<SocketAddr>,
    /// How long an MX host that refused or timed out is skipped.
    #[serde(with = "volley_units::serde::duration")]
    pub host_down_for: Duration,
    /// Learn each domain's pace (connections and message rate) from its
    /// latency and replies, within `rate`'s bounds. Off: the static mode
    /// of classic MTAs, `max_connections_per_domain` connections and no
    /// rate limit.
    pub adaptive: bool,
    /// Bounds and gains of the per-domain rate controller (`[*.rate]`);
    /// the connection limit is also capped by `max_connections_per_domain`.
    pub rate: RateSettings,
    /// STARTTLS with the MX hosts: opportunistic (the default), required,
    /// verify or disabled.
    pub tls: TlsPolicy,
    /// The CA certificates (PEM) that `verify` trusts instead of the
    /// system's roots.
    pub tls_ca_file: Option<PathBuf>,
    /// How long an MX host whose TLS handshake failed gets clear text
    /// without trying STARTTLS again (opportunistic policy).
    #[serde(with = "volley_units::serde::duration")]
    pub tls_broken_for: Duration,
    /// Domains whose MX hosts resolve to the same addresses (or fall
    /// under one of `site_suffixes`) share one pool of connections and one
    /// pace, as a receiving site: big providers meter the sending address,
    /// not the domain. `max_connections_per_domain` and the pace then
    /// apply to the site. Off: each domain alone.
    pub mx_rollup: bool,
    /// Host name suffixes that make one site of every domain whose MX
    /// hosts all end in one of them, whatever addresses they resolve to
    /// (`"*.mail.protection.outlook.com"`).
    pub site_suffixes: Vec<String>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            initial_connections: 1,
            max_connections: 200,
            max_connections_per_domain: 8,
            max_messages_per_connection: 1000,
            max_recipients_per_transaction: 100,
            queued_per_connection: 20,
            mx_limit: 5,
            connect_timeout: Duration::from_secs(30),
            greeting_timeout: Duration::from_secs(300),
            command_timeout: Duration::from_secs(300),
            data_timeout: Duration::from_secs(600),
            session_timeout: Duration::from_secs(3600),
            delivery_timeout: Duration::from_secs(900),
            idle_timeout: Duration::from_secs(5),
            max_message_size: 50 << 20,
            retry_schedule: [60, 300, 900, 1800, 3600, 7200, 14400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            max_attempts: 10,
            max_age: Duration::from_secs(5 * 86400),
            fallback_relay: None,
            host_down_for: Duration::from_secs(60),
            adaptive: true,
            rate: RateSettings::default(),
            tls: TlsPolicy::Opportunistic,
            tls_ca_file: None,
            tls_broken_for: Duration::from_secs(3 * 86400),
            mx_rollup: true,
            site_suffixes: Vec::new(),
        }
    }
}

impl QueueSettings {
    /// The wait before the retry that follows attempt number `attempts`.
    pub fn retry_delay(&self, attempts: u32) -> Duration {
        let i = (attempts.max(1) as usize - 1).min(self.retry_schedule.len().saturating_sub(1));
        self.retry_schedule
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(60))
    }
}

/// A queue for named domains, with its own limits and optional fixed MX hosts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecificQueue {
    /// Name used in logs.
    pub name: String,
    /// Domains this queue serves.
    pub domains: Vec<String>,
    /// Fixed MX hosts, "ip" or "ip:port", in preference order: no DNS.
    pub mx: Vec<String>,
    /// The queue's own limits.
    pub limits: QueueSettings,
}

impl Config {
    /// The rules in force: the operator's, then (with `default_rules`)
    /// Volley's own for the big receivers' throttling replies.
    pub fn rules_in_force(&self) -> Vec<RuleConfig> {
        let mut rules = self.rules.clone();
        if self.default_rules {
            rules.extend(crate::receivers::default_rules());
        }
        rules
    }
}

impl SpecificQueue {
    /// The fixed MX addresses, with `port` where none is given.
    pub fn mx_addrs(&self, port: u16) -> Result<Vec<SocketAddr>, String> {
        self.mx
            .iter()
            .map(|s| {
                s.parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, port)))
                    .map_err(|_| format!("mx {s:?} is not an IP address or IP:port"))
            })
            .collect()
    }
}

/// A configuration problem, with the line it is on when known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", match line { Some(l) => format!("line {l}: "), None => String::new() })]
pub struct ConfigError {
    /// 1-based line number in the file.
    pub line: Option<usize>,
    /// What is wrong and what is expected.
    pub message: String,
}

impl Config {
    /// Reads and checks a file; every problem found is returned.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ConfigError {
                line: None,
                message: format!("cannot read {}: {e}", path.display()),
            }]
        })?;
        Config::from_toml(&text)
    }

    /// Parses and checks TOML text: every problem is returned, each with
    /// its line where the file sets it.
    pub fn from_toml(text: &str) -> Result<Config, Vec<ConfigError>> {
        let document = Document::parse(text)?;
        let (config, mut errors) = document.config();
        errors.extend(check::problems(&config).into_iter().map(|p| ConfigError {
            line: document.line_of(&p.path),
            message: p.message,
        }));
        if errors.is_empty() {
            Ok(config)
        } else {
            errors.sort_by_key(|e| e.line.unwrap_or(usize::MAX));
            Err(errors)
        }
    }

    /// Checks what types alone cannot (values that parse but cannot work);
    /// without the file there are no lines.
    pub fn problems(&self) -> Vec<ConfigError> {
        check::problems(self)
            .into_iter()
            .map(|p| ConfigError {
                line: None,
                message: p.message,
            })
            .collect()
    }

    /// The number of shards to run: the setting, or one per core.
    pub fn shard_count(&self) -> usize {
        if self.shards > 0 {
            self.shards
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_domains_match_routing_keys_whatever_their_spelling() {
        let c = IngestConfig {
            relay_domains: vec!["Bücher.Example.".into(), "*.Straße.example".into()],
            ..Default::default()
        };
        assert!(c.may_relay_to("xn--bcher-kva.example"));
        assert!(c.may_relay_to("mail.xn--strae-oqa.example"));
        assert!(
            !c.may_relay_to("xn--strae-oqa.example"),
            "a suffix needs a label"
        );
        assert!(!c.may_relay_to("other.example"));
    }

    #[test]
    fn an_empty_file_is_the_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn a_full_file_parses() {
        let text = r#"
hostname = "relay.example"
shards = 2
delivery_port = 2526
delivery_log = "/tmp/d.log"
memory_budget = "512MiB"

[[listener]]
address = "127.0.0.1:2600"
protocol = "lmtp"
ack = "safe"

[ingest]
trusted_networks = ["10.0.0.0/8"]
relay_domains = ["*.example.com", "example.org"]
idle_timeout = "30s"

[resolver]
nameservers = ["127.0.0.1:5353"]

[scheduler]
policy = "oldest"

[general_queue]
retry_schedule = ["100ms", "1s"]
max_attempts = 3

[[queue]]
name = "big"
domains = ["big.example"]
mx = ["127.0.0.9", "127.0.0.10:2527"]
[queue.limits]
max_connections = 50
"#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.memory_budget, 512 << 20);
        assert_eq!(c.listeners[0].protocol, Protocol::Lmtp);
        assert_eq!(c.listeners[0].ack, AckMode::Safe);
        assert_eq!(c.scheduler.policy, Policy::Oldest);
        assert_eq!(c.general_queue.retry_delay(1), Duration::from_millis(100));
        assert_eq!(c.general_queue.retry_delay(7), Duration::from_secs(1));
        assert_eq!(c.queues[0].limits.max_connections, 50);
        assert_eq!(
            c.queues[0].mx_addrs(25).unwrap(),
            vec![
                "127.0.0.9:25".parse().unwrap(),
                "127.0.0.10:2527".parse().unwrap()
            ]
        );
        assert!(c.ingest.is_trusted("10.1.2.3".parse().unwrap()));
        assert!(!c.ingest.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.ingest.may_relay_to("a.example.com"));
        assert!(!c.ingest.may_relay_to("example.com"));
        assert!(!c.ingest.may_relay_to("badexample.com"));
        assert!(c.ingest.may_relay_to("example.org"));
    }

    #[test]
    fn tls_settings_parse_and_a_tls_listener_needs_a_certificate() {
        let text = r#"
[tls]
cert = "/etc/volley/cert.pem"
key = "/etc/volley/key.pem"

[[listener]]
address = "127.0.0.1:4650"
protocol = "smtps"
[[listener]]
address = "127.0.0.1:2587"
require_tls = true

[general_queue]
tls = "verify"
tls_ca_file = "/etc/volley/ca.pem"
tls_broken_for = "1d"
"#;
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.listeners[0].protocol, Protocol::Smtps);
        assert!(c.listeners[1].require_tls);
        assert_eq!(c.general_queue.tls, TlsPolicy::Verify);
        assert_eq!(c.general_queue.tls_broken_for, Duration::from_secs(86400));
        assert_eq!(QueueSettings::default().tls, TlsPolicy::Opportunistic);

        let without = text.replace("[tls]\ncert = \"/etc/volley/cert.pem\"\n", "[tls]\n");
        let errors = Config::from_toml(&without).unwrap_err();
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        for needle in ["tls: needs both cert and key", "smtps", "require_tls"] {
            assert!(
                messages.iter().any(|m| m.contains(needle)),
                "{needle:?} not in {messages:#?}"
            );
        }
    }

    #[test]
    fn users_need_a_phc_hash_and_a_certificate() {
        let text = "[[user]]\nname = \"composer\"\npassword_hash = \"hunter2\"\n";
        let errors = Config::from_toml(text).unwrap_err();
        let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(
            messages.iter().any(|m| m.starts_with("line 3: ")
                && m.contains("user[0].password_hash: not a PHC password hash")),
            "{messages:#?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("users need [tls] cert and key")),
            "{messages:#?}"
        );
    }

    #[test]
    fn errors_name_their_line() {
        let text = "shards = 2\n\n[general_queue]\nidle_timeout = \"5 fortnights\"\n";
        let e = Config::from_toml(text).unwrap_err();
        assert_eq!(e[0].line, Some(4), "{e:?}");
        assert!(e[0].message.contains("unknown time unit"), "{e:?}");

        let e = Config::from_toml("shards = 2\nshardz = 3\n").unwrap_err();
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].message.contains("shardz"), "{e:?}");

        let text = "[general_queue]\ninitial_connections = 9\nmax_connections_per_domain = 2\n";
        let e = Config::from_toml(text).unwrap_err();
        assert_eq!(e[0].line, Some(2));
        assert!(e[0].to_string().starts_with("line 2: "));
    }

    #[test]
    fn every_problem_is_reported_with_its_line_and_value() {
        let text = r#"shards = "two"

[[listener]]
address = "127.0.0.1:2600"
[[listener]]
address = "127.0.0.1:2600"

[ingest]
trusted_networks = ["127.0.0.1/33"]
relay_domains = ["*foo", "a..b"]
max_recipients = 0

[general_queue]
connect_timeout = "0s"
idle_timeout = "5 fortnights"
"#;
        let errors = Config::from_toml(text).unwrap_err();
        let found: Vec<(Option<usize>, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        let expect = |line: usize, needle: &str| {
            assert!(
                found
                    .iter()
                    .any(|(l, m)| *l == Some(line) && m.contains(needle)),
                "no problem on line {line} with {needle:?} in {found:#?}"
            )
        };
        expect(1, "shards: \"two\"");
        expect(
            6,
            "listener[1].address = \"127.0.0.1:2600\": listener 0 has the same address",
        );
        expect(9, "trusted_networks: \"127.0.0.1/33\"");
        expect(10, "\"*foo\"");
        expect(10, "\"a..b\"");
        expect(11, "ingest.max_recipients = 0");
        expect(14, "general_queue.connect_timeout = \"0s\"");
        expect(15, "\"5 fortnights\"");
        assert_eq!(errors.len(), 8, "{found:#?}");
    }

    #[test]
    fn site_suffixes_must_name_a_host_suffix() {
        let ok = "[general_queue]\nsite_suffixes = [\"*.mail.protection.outlook.com\", \"mx.example.net\"]\n";
        let c = Config::from_toml(ok).unwrap();
        assert!(c.general_queue.mx_rollup, "rolled up by default");
        let e = Config::from_toml("[general_queue]\nsite_suffixes = [\"*.com\"]\n").unwrap_err();
        assert!(e[0].message.contains("site_suffixes"), "{e:?}");
        assert_eq!(e[0].line, Some(2));
    }

    #[test]
    fn a_cluster_needs_a_redis_address_and_a_plain_node_name() {
        let ok = "hostname = \"mx1.example\"\n[cluster]\nredis = \"redis://10.0.0.5:6379\"\n";
        let c = Config::from_toml(ok).unwrap();
        assert_eq!(c.cluster.node_name(&c.hostname), "mx1.example");
        assert_eq!(c.cluster.sync_interval, Duration::from_millis(50));
        let text =
            "[cluster]\nredis = \"http://10.0.0.5\"\nnode = \"a b\"\nsync_interval = \"5s\"\n";
        let errors = Config::from_toml(text).unwrap_err();
        let found: Vec<(Option<usize>, &str)> = errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(errors.len(), 3, "{found:#?}");
        assert_eq!(errors[0].line, Some(2));
        assert!(
            errors[0]
                .message
                .starts_with("cluster.redis = \"http://10.0.0.5\": must start with redis://"),
            "{found:#?}"
        );
        assert_eq!(errors[1].line, Some(3));
        assert!(
            errors[1].message.contains("' ' is not allowed"),
            "{found:#?}"
        );
        assert_eq!(errors[2].line, Some(4));
        assert!(errors[2].message.contains("at most 1s"), "{found:#?}");
        let bad_port = "[cluster]\nredis = \"redis://10.0.0.5:notaport\"\n";
        let errors = Config::from_toml(bad_port).unwrap_err();
        assert!(
            errors[0].message.starts_with("cluster.redis = "),
            "{errors:?}"
        );
    }

    #[test]
    fn every_syntax_error_is_reported() {
        let errors = Config::from_toml("shards = \nhostname = \"x\n").unwrap_err();
        assert!(errors.len() >= 2, "{errors:?}");
        assert_eq!(errors[0].line, Some(1));
    }

    #[test]
    fn a_problem_names_the_line_of_its_own_queue() {
        let text = "[[queue]]\nname = \"a\"\ndomains = [\"a.example\"]\n\n[[queue]]\nname = \"b\"\ndomains = [\"b.example\"]\n[queue.limits]\nmax_connections = 0\n";
        let errors = Config::from_toml(text).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].line, Some(9));
        assert!(
            errors[0]
                .message
                .starts_with("queue[1].limits.max_connections = 0")
        );
    }

    #[test]
    fn loopback_is_trusted_by_default_and_others_are_not() {
        let c = IngestConfig::default();
        assert!(c.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(c.is_trusted("::1".parse().unwrap()));
        assert!(c.is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.is_trusted("192.0.2.1".parse().unwrap()));
        assert!(c.may_relay_to("anything.example"));
    }
}
