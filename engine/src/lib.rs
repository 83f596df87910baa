//! Volley's engine: shards pinned to cores, ingest, queues, delivery over
//! io_uring, retries, the delivery log and metrics.
//!
//! An [`Engine`] runs one shard per core: an OS thread pinned with
//! `core_affinity`, running its own tokio-uring runtime. Every shard accepts
//! Composer connections on the same ports (`SO_REUSEPORT`) and owns the
//! domains that hash to it: their queues, connection pools and DNS cache.
//! A message's recipients go to their owner shards by reference; the body is
//! never copied after ingest.
//!
//! Inside a shard every decision is the sans-IO `core`'s (queue map,
//! pace, outcome policy, host marks, retry and resume timers; time passed
//! in, actions out). Drivers on top only move bytes and carry out what it
//! decided, and each module uses only the ones listed after it:
//!
//! - `engine`: starts the shards, binds listeners, reloads, stops.
//! - `shard`: the shard thread's driver: accept loops, inbox, one timer on
//!   the core's next deadline, spawning the connections the core asks for.
//! - `ingest`: Composer sessions (admission, relay policy, held replies).
//! - `delivery`: one outbound SMTP connection; a guard gives its slot and
//!   unsettled recipients back however the task ends.
//! - `outcome`: logs and reports what the core settled.
//! - `context`: what the drivers share: engine-wide state and the shard's
//!   handle on its core.
//! - `durable`: the journal's glue (append, finish, recovery requeue).
//! - `routing`: which shard owns a domain, and the hand-off to it.
//! - `core` -> `queues`: decisions, no I/O.
//! - `message`, `address_line` (the layout of one line of address text:
//!   address, DSN parameters, a templated recipient's variables), `dlog`, `metrics`, `rate`, `journal`, `config`,
//!   `port_holder` (who holds a listening address, read from /proc),
//!   `transport` (the only module that touches sockets): leaves.
//!
//! ```no_run
//! use volley_engine::{Config, Engine};
//!
//! let mut config = Config::default(); // SMTP on 127.0.0.1:2525, MX port 25
//! config.delivery_port = 2526;
//! let engine = Engine::start(config)?;
//! println!("listening on {:?}", engine.listen_addrs());
//! println!("{}", engine.summary());
//! let report = engine.shutdown(); // stop accepting, finish what is in flight
//! println!("{} recipients still queued", report.queued);
//! # Ok::<(), volley_engine::EngineError>(())
//! ```

mod address_line;
mod admin;
mod auth;
mod cluster;
mod config;
mod context;
mod control;
mod core;
mod date;
mod delivery;
mod dkim;
mod dlog;
mod dsn;
mod dsn_writer;
mod durable;
mod engine;
mod events;
mod ingest;
pub mod journal;
mod listeners;
mod message;
mod metrics;
mod monitor;
mod mta_sts;
mod outcome;
mod port_holder;
mod queues;
pub mod rate;
mod receivers;
mod reload;
mod routing;
mod shard;
mod template;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;
mod tls;
mod transport;

pub use cluster::ClusterError;
pub use config::{
    AckMode, AdminSettings, Applies, Change, ClusterSettings, Config, ConfigError, DkimAlgorithm,
    DkimConfig, DsnSettings, EventsSettings, IngestConfig, JournalSettings, ListenerConfig,
    MtaStsSettings, Policy, Protocol, QueueSettings, SchedulerConfig, SpecificQueue, TlsFiles,
    TlsPolicy, UserConfig, changes as config_changes,
};
pub use dkim::{DkimError, check_keys as check_dkim_keys};
pub use durable::WallClock;
pub use engine::{Engine, EngineError, ShutdownReport, StopHandle};
pub use listeners::BindError;
pub use metrics::{DomainRate, Stats};
pub use monitor::LatencySummary;
pub use reload::ReloadError;
pub use shard::ShardError;
pub use template::render_request;
pub use tls::{TlsError, check_files as check_tls_files};
