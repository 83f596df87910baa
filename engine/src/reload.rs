//! A reload: a new configuration checked whole, then applied without
//! dropping a connection or a queued recipient (SIGHUP, or the admin
//! API's `POST /api/v1/reload`).
//!
//! Everything that can fail is done first: the checks, the rules, the
//! resolver's settings, the certificate and key files, and the sockets of
//! added listeners. Any failure changes nothing. Then the new
//! configuration is stored for the readers that look at it each time
//! (trusted networks at the next connection, relay domains at the next
//! RCPT, the memory budget at the next MAIL), and each shard gets it on
//! its own loop for its queues, rules and resolver, with the sockets of
//! added listeners and the addresses of removed ones (their accept loops
//! stop; their sessions finish).
//!
//! What only a restart applies keeps its running value in the stored
//! configuration, so nothing reads a value that is not in force.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::{Change, Config, ConfigError};
use crate::context::Shared;
use crate::dkim::DkimKeys;
use crate::listeners::{self, BindError, Bound};
use crate::tls::TlsContext;

/// Why a reload was refused (and nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The configuration has problems; each names its line when known.
    #[error("invalid configuration: {}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Config(Vec<ConfigError>),
    /// The rate rules do not compile.
    #[error("rules: {0}")]
    Rules(#[from] crate::rate::RuleError),
    /// The resolver's settings cannot work.
    #[error("resolver: {0}")]
    Resolver(#[from] volley_dns::ConfigError),
    /// A certificate, key or CA file could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A DKIM key file could not be used.
    #[error("DKIM: {0}")]
    Dkim(#[from] crate::dkim::DkimError),
    /// An added listener could not be bound.
    #[error("{0}")]
    Listen(#[from] BindError),
}

/// Checks `config` whole and applies it to the engine of `shared`, which
/// runs `shards` shards; returns every change (see
/// [`crate::config::changes`]).
pub(crate) fn apply(
    shared: &Arc<Shared>,
    shards: usize,
    mut config: Config,
) -> Result<Vec<Change>, ReloadError> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(ReloadError::Config(problems));
    }
    crate::rate::RuleSet::new(&config.rules_in_force())?;
    config.resolver.validate()?;
    let old = shared.config.load_full();
    // Certificate files are read again even when their paths did not
    // change: a renewed certificate applies now.
    let tls = TlsContext::load(&config, Some(&shared.tls.load_full()))?;
    let dkim = DkimKeys::load(&config.dkim)?;
    // Holding the list keeps two reloads from binding the same listener.
    let mut running = shared.listeners.lock();
    let (added, removed) = plan_listeners(&running, &config, shards)?;
    let changes = crate::config::changes(&old, &config, shards);
    for c in &changes {
        match c.applies {
            crate::config::Applies::Now => tracing::info!(target: "volley", "{c}"),
            crate::config::Applies::AtRestart => tracing::warn!(target: "volley", "{c}"),
        }
    }
    keep_what_needs_a_restart(&mut config, &old);
    let config = Arc::new(config);
    shared.tls.store(Arc::new(tls));
    shared.dkim.store(Arc::new(dkim));
    shared.dkim_unsigned.lock().clear();
    shared.config.store(config.clone());
    shared.shard_lines.reconfigure(&config);
    for address in removed {
        shared.shard_lines.unlisten(address);
        running.retain(|l| l.config.address != address);
    }
    for Bound {
        running: r,
        sockets,
    } in added
    {
        tracing::info!(
            target: "volley",
            "listening on {} ({}, {} ack)",
            r.addr,
            r.config.protocol,
            r.config.ack
        );
        shared.shard_lines.listen(sockets, &r.config);
        running.push(r);
    }
    Ok(changes)
}

/// The listeners `config` adds (bound for every shard) and the configured
/// addresses of those it removes. A listener whose settings change at the
/// same address is both: its new sockets open before the old ones close,
/// so the address never stops accepting.
fn plan_listeners(
    running: &[listeners::Running],
    config: &Config,
    shards: usize,
) -> Result<(Vec<Bound>, Vec<SocketAddr>), BindError> {
    let ours: Vec<SocketAddr> = running.iter().map(|l| l.addr).collect();
    let mut added = Vec::new();
    for lc in &config.listeners {
        if !running.iter().any(|l| l.config == *lc) {
            added.push(listeners::bind(lc, shards, &ours)?);
        }
    }
    let removed = running
        .iter()
        .filter(|l| !config.listeners.contains(&l.config))
        .map(|l| l.config.address)
        .collect();
    Ok((added, removed))
}

/// Puts back into a reloaded `config` the running values of what only a
/// restart applies.
fn keep_what_needs_a_restart(config: &mut Config, running: &Config) {
    config.shards = running.shards;
    config.journal = running.journal.clone();
    config.quota = running.quota;
    config.mta_sts = running.mta_sts.clone();
    config.events = running.events.clone();
    config.admin = running.admin.clone();
    config.delivery_log = running.delivery_log.clone();
    config.summary_interval = running.summary_interval;
}
