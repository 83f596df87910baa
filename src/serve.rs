//! `volley serve`: run the relay until SIGTERM or Ctrl-C; SIGHUP reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tracing::{info, warn};
use volley_engine::{AckMode, Config, Engine, ListenerConfig, Protocol};

use crate::logging::{self, LogFormat};

/// Settings of `volley serve`; each flag overrides the file.
#[derive(Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Configuration file (TOML); without it, built-in defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// SMTP listener address (repeatable); replaces the file's listeners.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// LMTP listener address (repeatable); replaces the file's listeners.
    #[arg(long, value_name = "ADDR:PORT")]
    lmtp_listen: Vec<SocketAddr>,
    /// SMTP listener inside TLS from the first byte (RFC 8314, port 465
    /// style; repeatable); needs a certificate. Replaces the file's
    /// listeners.
    #[arg(long, value_name = "ADDR:PORT")]
    smtps_listen: Vec<SocketAddr>,
    /// Certificate chain (PEM) ingest presents on STARTTLS and smtps;
    /// read again on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Acknowledgement mode of the listeners given by flags.
    #[arg(long, value_enum, default_value_t = Ack::Fast)]
    ack: Ack,
    /// Number of shards (one per core when 0 or unset).
    #[arg(long)]
    shards: Option<usize>,
    /// TCP port of the MX hosts (25 on the internet).
    #[arg(long)]
    delivery_port: Option<u16>,
    /// Nameserver to ask, as ADDR:PORT (repeatable).
    #[arg(long = "nameserver", value_name = "ADDR:PORT")]
    nameservers: Vec<SocketAddr>,
    /// Delivery log file (one JSON line per recipient outcome).
    #[arg(long, value_name = "FILE")]
    delivery_log: Option<PathBuf>,
    /// Name used in EHLO and greetings.
    #[arg(long)]
    hostname: Option<String>,
    /// Memory budget, e.g. 2GiB; near it ingest answers 452 4.3.1.
    #[arg(long)]
    memory_budget: Option<String>,
    /// Durable mode: keep the journal (body log, recovery journal, quota
    /// count) in DIR; without it (and without [journal] dir in the file)
    /// a crash loses every message held in memory.
    #[arg(long, value_name = "DIR")]
    journal: Option<PathBuf>,
    /// Where the admin HTTP server (metrics, status) listens; default
    /// 127.0.0.1:8025, port 0 for any free one.
    #[arg(long, value_name = "ADDR:PORT")]
    admin_listen: Option<SocketAddr>,
    /// Run without the admin HTTP server.
    #[arg(long, conflicts_with = "admin_listen")]
    no_admin: bool,
    /// Seconds between summary lines (e.g. 5s).
    #[arg(long, value_parser = volley_units::parse_duration)]
    summary_interval: Option<Duration>,
    /// Log lines as text (timestamped; colour only on a terminal) or as
    /// one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Ack {
    Fast,
    Safe,
}

impl ServeArgs {
    /// The file (or the defaults) with the flags applied.
    fn config(&self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::load(path).map_err(|errs| {
                let lines: Vec<String> = errs.iter().map(|e| format!("  {e}")).collect();
                anyhow::anyhow!("{}:\n{}", path.display(), lines.join("\n"))
            })?,
            None => Config::default(),
        };
        let ack = match self.ack {
            Ack::Fast => AckMode::Fast,
            Ack::Safe => AckMode::Safe,
        };
        if !self.listen.is_empty() || !self.lmtp_listen.is_empty() || !self.smtps_listen.is_empty()
        {
            c.listeners = self
                .listen
                .iter()
                .map(|a| (a, Protocol::Smtp))
                .chain(self.lmtp_listen.iter().map(|a| (a, Protocol::Lmtp)))
                .chain(self.smtps_listen.iter().map(|a| (a, Protocol::Smtps)))
                .map(|(address, protocol)| ListenerConfig {
                    address: *address,
                    protocol,
                    ack,
                    require_tls: false,
                })
                .collect();
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            c.tls.cert = Some(cert.clone());
            c.tls.key = Some(key.clone());
        }
        if let Some(n) = self.shards {
            c.shards = n;
        }
        if let Some(p) = self.delivery_port {
            c.delivery_port = p;
        }
        if !self.nameservers.is_empty() {
            c.resolver.nameservers = self.nameservers.clone();
        }
        if let Some(p) = &self.delivery_log {
            c.delivery_log = Some(p.clone());
        }
        if let Some(h) = &self.hostname {
            c.hostname = h.clone();
        }
        if let Some(m) = &self.memory_budget {
            c.memory_budget = volley_units::parse_size(m)?;
        }
        if let Some(d) = &self.journal {
            c.journal.dir = Some(d.clone());
        }
        if let Some(i) = self.summary_interval {
            c.summary_interval = i;
        }
        if let Some(a) = self.admin_listen {
            c.admin.listen = a;
            c.admin.enabled = true;
        }
        if self.no_admin {
            c.admin.enabled = false;
        }
        Ok(c)
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    logging::init(args.log_format);
    let config = args.config()?;
    raise_open_file_limit(config.ingest.max_connections);
    let interval = config.summary_interval.max(Duration::from_millis(100));
    let journal = config.journal.dir.clone();
    let listeners = config.listeners.clone();
    let resolver = config.resolver.clone();
    let engine = Engine::start(config).context("volley serve")?;
    match &journal {
        Some(dir) => {
            for (i, r) in engine.recovery().iter().enumerate() {
                info!(target: "volley", "journal {}/shard-{i}: {r}", dir.display());
            }
        }
        None => warn!(
            target: "volley",
            "no journal (--journal DIR): a crash loses the messages held in memory"
        ),
    }
    // Recovery read whole body-log segments and every finished fact of the
    // journal; those buffers are freed by now, but the allocator keeps
    // their pages (tens of MiB after a crash) until a trim.
    crate::memory_return::trim();
    warn_if_no_nameserver_answers(resolver);
    // POST /api/v1/reload reads the file as SIGHUP does.
    let from_file = args.clone();
    engine.set_config_source(move || from_file.config().map_err(|e| format!("{e:#}")));
    for (addr, l) in engine.listen_addrs().iter().zip(&listeners) {
        info!(target: "volley", "listening on {addr} ({}, {} ack)", l.protocol, l.ack);
    }
    // Under systemd (Type=notify): the unit is started once it listens.
    if let Err(e) = crate::sd_notify::notify("READY=1") {
        warn!(target: "volley", "cannot tell systemd Volley is ready: {e}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        // A drain (the admin API) ends the loop once nothing is queued.
        let mut drained = tokio::time::interval(Duration::from_millis(250));
        let mut memory = tokio::time::interval(Duration::from_secs(1));
        let mut trim = crate::memory_return::TrimPolicy::new(std::time::Instant::now());
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    let _ = crate::sd_notify::notify("RELOADING=1");
                    engine.reopen_delivery_log();
                    reload(&engine, &args);
                    let _ = crate::sd_notify::notify("READY=1");
                }
                _ = usr1.recv() => {
                    engine.reopen_delivery_log();
                    info!(target: "volley", "delivery log reopened");
                }
                _ = tick.tick() => {
                    for line in engine.summary().lines() {
                        info!(target: "volley", "{}", line.trim_start());
                    }
                }
                _ = memory.tick() => {
                    if trim.observe(engine.stats().held_bytes, std::time::Instant::now()) {
                        crate::memory_return::trim();
                    }
                }
                _ = drained.tick() => {
                    if engine.drained() {
                        info!(target: "volley", "drained: nothing left queued");
                        break;
                    }
                }
            }
        }
        anyhow::Ok(())
    })?;
    info!(target: "volley", "stopping: no new connections; finishing transactions in flight");
    let _ = crate::sd_notify::notify("STOPPING=1");
    let report = engine.shutdown();
    info!(
        target: "volley",
        "stopped; {} recipients still queued; delivered {} deferred {} bounced {} expired {}",
        report.queued,
        report.stats.delivered,
        report.stats.deferred,
        report.stats.bounced,
        report.stats.expired
    );
    Ok(())
}

/// SIGHUP: the file read again and applied, or refused whole.
fn reload(engine: &Engine, args: &ServeArgs) {
    match args.config() {
        Ok(c) => match engine.reload(c) {
            Ok(changes) => info!(
                target: "volley",
                "configuration reloaded ({} change(s)); delivery log reopened",
                changes.len()
            ),
            Err(e) => warn!(target: "volley", "reload refused: {e}"),
        },
        Err(e) => warn!(target: "volley", "reload refused: {e:#}"),
    }
}

/// Asks the configured nameservers once, on a thread of its own so that
/// start-up does not wait, and warns when none answers: every lookup would
/// then time out, and the first sign would otherwise be a queue of
/// deferrals.
fn warn_if_no_nameserver_answers(config: volley_dns::ResolverConfig) {
    let check = move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let resolver = volley_dns::MxResolver::new(config)?;
        if let Err(e) = runtime.block_on(resolver.check_nameservers()) {
            warn!(
                target: "volley",
                "no nameserver answers ({}): {e}; deliveries wait until one does",
                resolver.nameservers()
            );
        }
        Ok(())
    };
    let _ = std::thread::Builder::new()
        .name("volley-dns-check".into())
        .spawn(move || {
            if let Err(e) = check() {
                warn!(target: "volley", "cannot check the nameservers: {e}");
            }
        });
}

/// Raises the soft limit on open files to the hard one: every ingest
/// session and every delivery connection is a file, and the usual soft
/// limit (1,024) is below the default connection limit. Warns when even
/// the hard limit leaves too little room for `max_connections` sessions.
fn raise_open_file_limit(max_connections: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            limit.rlim_cur = before;
        }
    }
    // Delivery connections and the journal need files too.
    let wanted = max_connections as u64 + 1024;
    if limit.rlim_cur < wanted {
        warn!(
            target: "volley",
            "open files limit {} (hard limit {}) is below the {wanted} that ingest max_connections = {max_connections} needs; raise it (LimitNOFILE= in the unit)",
            limit.rlim_cur,
            limit.rlim_max
        );
    } else if limit.rlim_cur != before {
        info!(
            target: "volley",
            "open files limit raised from {before} to {}",
            limit.rlim_cur
        );
    }
}
