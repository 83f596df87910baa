//! Starting, watching, reloading and stopping the shards.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};

use crate::admin::AdminServer;
use crate::config::AdminSettings;
use crate::config::{Config, ConfigError};
use crate::context::Shared;
use crate::dkim::DkimKeys;
use crate::dlog::{DeliveryLog, LogWriter};
use crate::dsn_writer::DsnWriter;
use crate::durable::{self, QuotaFlusher, WallClock};
use crate::journal::RecoveryReport;
use crate::listeners::BindError;
use crate::message::Budget;
use crate::metrics::{Counters, DomainRate, Latencies, RateBoard, Stats};
use crate::monitor::{LatencySummary, Monitor};
use crate::mta_sts::MtaSts;
use crate::reload::ReloadError;
use crate::routing::Router;
use crate::shard::{self, ShardError};
use crate::tls::{BrokenTls, TlsContext};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `[cluster]` is set and its thread could not be started.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The configuration has problems; each names its line when known.
    #[error("invalid configuration: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigError>),
    /// A listening address could not be bound, or someone else listens
    /// there already.
    #[error(transparent)]
    Listen(#[from] BindError),
    /// The delivery log could not be opened.
    #[error("cannot open the delivery log {path}: {source}")]
    DeliveryLog {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Durable mode could not open its journal or quota counter (a
    /// directory locked by another Volley, an I/O error, a damaged count).
    #[error("cannot open the journal {}: {source}", path.display())]
    Journal {
        /// The shard directory or file concerned.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: crate::journal::JournalError,
    },
    /// A DKIM key file could not be used.
    #[error("DKIM: {0}")]
    Dkim(#[from] crate::dkim::DkimError),
    /// A certificate, key or CA file could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A shard did not start (e.g. its resolver found no nameserver).
    #[error("shard {index} did not start")]
    Shard {
        /// The shard's number.
        index: usize,
        /// Why.
        #[source]
        source: ShardError,
    },
    /// `[admin] token_file` could not be read, or holds no token.
    #[error("admin token file {}: {why}", path.display())]
    AdminToken {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// A thread of the engine could not be started.
    #[error("cannot start the thread {name}")]
    Thread {
        /// The thread's name.
        name: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the admin address, reads the token and starts the server.
/// Applies suspensions restored from the journal's directory on every
/// shard.
fn restore_holds(shared: &Shared, saved: &[crate::admin::holds::SavedHold]) {
    if saved.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        tracing::warn!(target: "volley", "no runtime to restore the suspensions with");
        return;
    };
    let now = std::time::SystemTime::now();
    for h in saved {
        let Some(left) = h.left(now) else { continue };
        let steer = crate::control::Steer::Suspend {
            duration: left,
            reason: h.reason.clone(),
        };
        if rt
            .block_on(shared.shard_lines.steer(&h.domain, steer))
            .is_some()
        {
            tracing::info!(
                target: "volley",
                "{} suspended again for {} (kept across the restart): {}",
                h.domain,
                volley_units::format_duration(left),
                h.reason
            );
        }
    }
}

fn start_admin(
    settings: &AdminSettings,
    monitor: Monitor,
    holds: Option<crate::admin::HoldBook>,
) -> Result<AdminServer, EngineError> {
    let token = match &settings.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| EngineError::AdminToken {
                path: path.clone(),
                why: e.to_string(),
            })?;
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(EngineError::AdminToken {
                    path: path.clone(),
                    why: "the file is empty".into(),
                });
            }
            Some(token)
        }
        None => None,
    };
    let addr = settings.listen;
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| BindError::Listen { addr, source })?;
    let server = AdminServer::start(listener, monitor, token, holds).map_err(|source| {
        EngineError::Thread {
            name: "volley-admin".into(),
            source,
        }
    })?;
    tracing::info!(target: "volley", "admin API on http://{}", server.addr());
    Ok(server)
}

/// The MTA-STS thread, when `[mta_sts]` is on. Without the roots to check
/// policy hosts against (no system CA certificates and no `ca_file`), it
/// stays off, with a warning: delivery goes on as without policies.
fn start_mta_sts(config: &Config, tls: &TlsContext) -> Result<Option<MtaSts>, EngineError> {
    let settings = &config.mta_sts;
    if !settings.enabled {
        return Ok(None);
    }
    let tls = match tls.verifying(settings.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) if settings.ca_file.is_some() => return Err(e.into()),
        Err(e) => {
            tracing::warn!(target: "volley", "MTA-STS off: {e}");
            return Ok(None);
        }
    };
    let m =
        MtaSts::start(settings, &config.resolver, tls).map_err(|source| EngineError::Thread {
            name: "volley-mta-sts".into(),
            source,
        })?;
    Ok(Some(m))
}

/// What was left when the engine stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Recipients still queued (not delivered, bounced or expired).
    pub queued: usize,
    /// The final counters.
    pub stats: Stats,
}

/// Stops a running engine from another thread (a signal handler).
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<watch::Sender<bool>>,
}

impl StopHandle {
    /// Asks every shard to stop accepting and finish what is in flight.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// A running Volley: one shard per configured core, each accepting on every
/// listener and delivering the domains it owns.
pub struct Engine {
    shared: Arc<Shared>,
    stop: Arc<watch::Sender<bool>>,
    threads: Vec<JoinHandle<usize>>,
    writer: Option<LogWriter>,
    /// Stores the delivered count (durable mode); dropped after the shards.
    quota_flusher: Option<QuotaFlusher>,
    recovery: Vec<RecoveryReport>,
    /// Writes delivery status notifications; stopped after the shards.
    dsn_writer: Option<DsnWriter>,
    /// What the engine reports of itself.
    monitor: Monitor,
    /// The admin HTTP server, when `[admin]` is enabled; stopped first.
    admin: Option<AdminServer>,
    /// The cluster thread, when `[cluster]` is on; stopped after the
    /// shards (it gives up this node's connection leases).
    cluster: Option<crate::cluster::Cluster>,
}

impl Engine {
    /// Checks the configuration, binds the listeners (a port of 0 picks one
    /// free port shared by all shards), starts the shards and returns once
    /// every shard accepts.
    pub fn start(config: Config) -> Result<Engine, EngineError> {
        Engine::start_with_clock(config, Arc::new(std::time::SystemTime::now))
    }

    /// [`Engine::start`] with the wall clock the sending quota counts its
    /// days by (tests move the date with it).
    ///
    /// With `journal.dir` set, each shard directory is recovered first (its
    /// report is logged and kept, see [`Engine::recovery`]) and only the
    /// unfinished recipients are queued again.
    pub fn start_with_clock(config: Config, clock: WallClock) -> Result<Engine, EngineError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(EngineError::Config(problems));
        }
        let n = config.shard_count();
        let tls = TlsContext::load(&config, None)?;
        let dkim = DkimKeys::load(&config.dkim)?;
        let mta_sts = start_mta_sts(&config, &tls)?;
        let events = match &config.events.url {
            Some(url) => Some(
                crate::events::EventFeed::start(&config.events, url, &tls).map_err(|source| {
                    EngineError::Thread {
                        name: "volley-events".into(),
                        source,
                    }
                })?,
            ),
            None => None,
        };
        let (dlog, writer) = match &config.delivery_log {
            Some(path) => {
                let (log, writer) =
                    DeliveryLog::open(path).map_err(|source| EngineError::DeliveryLog {
                        path: path.display().to_string(),
                        source,
                    })?;
                (log, Some(writer))
            }
            None => (DeliveryLog::off(), None),
        };
        // Bind every listener once per shard on one port (SO_REUSEPORT).
        let mut per_shard: Vec<Vec<_>> = (0..n).map(|_| Vec::new()).collect();
        let mut running = Vec::new();
        for lc in &config.listeners {
            let bound = crate::listeners::bind(lc, n, &[])?;
            for (list, socket) in per_shard.iter_mut().zip(bound.sockets) {
                list.push((socket, lc.clone()));
            }
            running.push(bound.running);
        }
        let opened = match &config.journal.dir {
            Some(root) => Some(
                durable::open(&config.journal, root, config.quota, n, clock)
                    .map_err(|(path, source)| EngineError::Journal { path, source })?,
            ),
            None => None,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut inboxes = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = mpsc::unbounded_channel();
            inboxes.push(tx);
            receivers.push(rx);
        }
        let (dsn, dsn_inbox) = crate::dsn::queue();
        let (shard_lines, shard_ends) = crate::control::lines(n);
        // The cluster thread starts before the shards, so that their pools
        // find the board from the first message on.
        let cluster = match &config.cluster.redis {
            Some(url) => Some(crate::cluster::Cluster::start(
                &config.cluster,
                url,
                config.cluster.node_name(&config.hostname),
                stop_rx.clone(),
            )?),
            None => None,
        };
        let shared = Arc::new(Shared {
            cluster: cluster.as_ref().map(crate::cluster::Cluster::board),
            config: ArcSwap::from_pointee(config),
            counters: (0..=n).map(|_| Counters::default()).collect(),
            budget: Arc::new(Budget::default()),
            router: Router::new(inboxes),
            site_owners: Default::default(),
            latencies: (0..n).map(|_| Arc::new(Latencies::default())).collect(),
            rates: (0..n).map(|_| Arc::new(RateBoard::default())).collect(),
            dlog,
            stop: stop_rx,
            drain: watch::Sender::new(false),
            ingest_total: AtomicUsize::new(0),
            ingest_untrusted: AtomicUsize::new(0),
            ingest_per_ip: Mutex::new(Default::default()),
            next_source: AtomicU64::new(0),
            durable: opened.as_ref().map(|o| o.durable.clone()),
            tls: ArcSwap::from_pointee(tls),
            broken_tls: BrokenTls::default(),
            auth_guard: Default::default(),
            mta_sts,
            dkim: ArcSwap::from_pointee(dkim),
            events,
            dsn,
            shard_lines,
            listeners: Mutex::new(running),
            config_source: Mutex::new(None),
            dkim_unsigned: Mutex::new(Default::default()),
            templates: Default::default(),
        });
        let dsn_writer =
            DsnWriter::start(Arc::downgrade(&shared), dsn_inbox).map_err(|source| {
                EngineError::Thread {
                    name: "volley-dsn".into(),
                    source,
                }
            })?;
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        let ends = receivers.into_iter().zip(shard_ends);
        for (index, (listeners, (inbox, asks))) in per_shard.into_iter().zip(ends).enumerate() {
            let core = if cores.is_empty() {
                None
            } else {
                Some(cores[index % cores.len()])
            };
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let name = format!("volley-shard-{index}");
            let t = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || shard::run(index, core, shared, listeners, inbox, asks, ready))
                .map_err(|source| EngineError::Thread { name, source })?;
            threads.push(t);
        }
        drop(ready_tx);
        let stop = Arc::new(stop_tx);
        let shared_for_monitor = shared.clone();
        let mut engine = Engine {
            shared,
            stop,
            threads,
            writer,
            quota_flusher: None,
            recovery: Vec::new(),
            dsn_writer: Some(dsn_writer),
            monitor: Monitor::new(shared_for_monitor, n),
            admin: None,
            cluster,
        };
        for index in 0..n {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    engine.stop_and_join();
                    return Err(EngineError::Shard { index, source });
                }
                Err(_) => {
                    engine.stop_and_join();
                    return Err(EngineError::Shard {
                        index,
                        source: ShardError::Ended,
                    });
                }
            }
        }
        if let Some(o) = opened {
            engine.recovery = o.recovered.iter().map(|r| r.report.clone()).collect();
            let shared = &engine.shared;
            let queued = durable::requeue(
                &shared.router,
                &shared.budget,
                &shared.templates,
                &o.durable,
                o.recovered,
            );
            if queued > 0 {
                tracing::info!("journal: {queued} unfinished recipients queued again");
            }
            engine.quota_flusher =
                Some(
                    QuotaFlusher::spawn(o.durable).map_err(|source| EngineError::Thread {
                        name: "volley-durable".into(),
                        source,
                    })?,
                );
        }
        let config = engine.shared.config.load_full();
        // Durable mode keeps the operators' suspensions across restarts.
        let holds = config.journal.dir.as_ref().map(|dir| {
            let file = crate::admin::holds::path(dir);
            let saved = crate::admin::holds::load(&file, std::time::SystemTime::now());
            restore_holds(&engine.shared, &saved);
            crate::admin::HoldBook::new(file, saved)
        });
        if config.admin.enabled {
            engine.admin = Some(start_admin(&config.admin, engine.monitor.clone(), holds)?);
        }
        Ok(engine)
    }

    /// Where the admin HTTP server listens, when it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// What recovering each shard directory found (durable mode; empty
    /// without a journal), by shard directory number.
    pub fn recovery(&self) -> &[RecoveryReport] {
        &self.recovery
    }

    /// The bound address of each listener, in configuration order (a
    /// listener a reload added comes last).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .listeners
            .lock()
            .iter()
            .map(|l| l.addr)
            .collect()
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.monitor.stats()
    }

    /// Delivery latency of every domain, merged over the shards.
    pub fn latency(&self) -> LatencySummary {
        self.monitor.latency()
    }

    /// The adaptive domains with the most recipients held, busiest first,
    /// with their connections, limits, rate and latencies: each shard
    /// publishes its own ten every half second.
    pub fn rates(&self) -> Vec<DomainRate> {
        self.monitor.rates()
    }

    /// The summary `volley serve` prints: one line of counters, then one
    /// indented line per busiest domain (at most five) with its pace.
    pub fn summary(&self) -> String {
        let mut out = self.counters_line();
        for r in self.rates().into_iter().filter(|r| r.queued > 0).take(5) {
            out.push_str("\n  ");
            out.push_str(&r.to_string());
        }
        out
    }

    fn counters_line(&self) -> String {
        let s = self.stats();
        let l = self.latency();
        let mut line = format!(
            "received {} msgs / {} rcpts | delivered {} deferred {} bounced {} expired {} | queued {} (peak {}) | conns {} (peak {}) | sessions {} | held {} KiB | latency p50 {:.1} ms p99 {:.1} ms",
            s.received,
            s.recipients_received,
            s.delivered,
            s.deferred,
            s.bounced,
            s.expired,
            s.queued,
            s.peak_queued,
            s.connections_open,
            s.peak_connections,
            s.ingest_sessions,
            s.held_bytes / 1024,
            l.p50_us as f64 / 1000.0,
            l.p99_us as f64 / 1000.0,
        );
        if s.tls_full_handshakes + s.tls_resumed + s.tls_failed + s.ingest_tls > 0 {
            line.push_str(&format!(
                " | tls out {} full {} resumed {} failed, in {}",
                s.tls_full_handshakes, s.tls_resumed, s.tls_failed, s.ingest_tls
            ));
        }
        line
    }

    /// Applies a new configuration without dropping a connection or a
    /// queued recipient, and returns every change it found; a
    /// configuration with any error changes nothing. What applies when is
    /// [`crate::reload::apply`]'s to say.
    pub fn reload(&self, config: Config) -> Result<Vec<crate::config::Change>, ReloadError> {
        crate::reload::apply(&self.shared, self.threads.len(), config)
    }

    /// Where `POST /api/v1/reload` reads the configuration: `volley
    /// serve` gives the reading of its file that SIGHUP does. Without one
    /// the API answers that there is nothing to read again.
    pub fn set_config_source(
        &self,
        source: impl Fn() -> Result<Config, String> + Send + Sync + 'static,
    ) {
        *self.shared.config_source.lock() = Some(Arc::new(source));
    }

    /// Closes the delivery log and opens its path again, after the lines
    /// written so far: what logrotate's postrotate step asks for (SIGHUP),
    /// so the log can be rotated by renaming it.
    pub fn reopen_delivery_log(&self) {
        self.shared.dlog.reopen();
    }

    /// A handle that stops the engine from elsewhere (signal handling).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: self.stop.clone(),
        }
    }

    /// Stops accepting (every listener closes; sessions in progress go
    /// on) and lets delivery go on: what `POST /api/v1/drain` asks.
    /// `volley serve` stops once [`Engine::drained`] says so.
    pub fn drain(&self) {
        self.monitor.request_drain();
    }

    /// Whether a drain was asked for.
    pub fn is_draining(&self) -> bool {
        self.monitor.draining()
    }

    /// A drain was asked for and nothing is queued any more.
    pub fn drained(&self) -> bool {
        self.is_draining() && self.stats().queued == 0 && self.stats().ingest_sessions == 0
    }

    /// Whether a stop was asked for (by [`StopHandle::stop`]).
    pub fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn stop_and_join(&mut self) -> usize {
        // Nothing answers for the engine once it stops.
        self.admin = None;
        let _ = self.stop.send(true);
        let mut queued = 0;
        for t in self.threads.drain(..) {
            queued += t.join().unwrap_or(0);
        }
        self.cluster = None;
        // The shards are gone, so no outcome comes after: the
        // notifications gathered so far are written (and journaled).
        if let Some(mut w) = self.dsn_writer.take() {
            w.stop();
        }
        queued
    }

    /// Stops accepting, lets transactions in flight finish (30 s at most),
    /// flushes the delivery log and reports what is still queued.
    pub fn shutdown(mut self) -> ShutdownReport {
        let queued = self.stop_and_join();
        let stats = self.stats();
        ShutdownReport { queued, stats }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_and_join();
        // The last delivered count, now that nothing delivers any more.
        self.quota_flusher = None;
        self.shared.dlog.close();
        if let Some(w) = self.writer.take() {
            w.join();
        }
    }
}
