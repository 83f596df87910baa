//! `volley serve`: run the relay until SIGTERM or Ctrl-C; SIGHUP reloads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use volley_engine::{AckMode, Config, Engine, ListenerConfig, Protocol};

/// Settings of `volley serve`; each flag overrides the file.
#[derive(Args, Debug)]
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
    /// Seconds between summary lines (e.g. 5s).
    #[arg(long, value_parser = volley_units::parse_duration)]
    summary_interval: Option<Duration>,
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
        if !self.listen.is_empty() || !self.lmtp_listen.is_empty() {
            c.listeners = self
                .listen
                .iter()
                .map(|a| (a, Protocol::Smtp))
                .chain(self.lmtp_listen.iter().map(|a| (a, Protocol::Lmtp)))
                .map(|(address, protocol)| ListenerConfig {
                    address: *address,
                    protocol,
                    ack,
                })
                .collect();
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
        Ok(c)
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let config = args.config()?;
    let interval = config.summary_interval.max(Duration::from_millis(100));
    let journal = config.journal.dir.clone();
    let engine = Engine::start(config).context("volley serve")?;
    match &journal {
        Some(dir) => {
            for (i, r) in engine.recovery().iter().enumerate() {
                eprintln!("volley: journal {}/shard-{i}: {r}", dir.display());
            }
        }
        None => eprintln!(
            "volley: no journal (--journal DIR): a crash loses the messages held in memory"
        ),
    }
    for (addr, l) in engine.listen_addrs().iter().zip(&args.config()?.listeners) {
        eprintln!(
            "volley: listening on {addr} ({:?}, {:?} ack)",
            l.protocol, l.ack
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut tick = tokio::time::interval(interval);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => match args.config() {
                    Ok(c) => match engine.reload(c) {
                        Ok(notes) => {
                            eprintln!("volley: configuration reloaded");
                            for n in notes {
                                eprintln!("volley: {n}");
                            }
                        }
                        Err(e) => eprintln!("volley: reload refused: {e}"),
                    },
                    Err(e) => eprintln!("volley: reload refused: {e:#}"),
                },
                _ = tick.tick() => println!("{}", engine.summary()),
            }
        }
        anyhow::Ok(())
    })?;
    eprintln!("volley: stopping: no new connections; finishing transactions in flight");
    let report = engine.shutdown();
    println!(
        "volley: stopped; {} recipients still queued; delivered {} deferred {} bounced {} expired {}",
        report.queued,
        report.stats.delivered,
        report.stats.deferred,
        report.stats.bounced,
        report.stats.expired
    );
    Ok(())
}
