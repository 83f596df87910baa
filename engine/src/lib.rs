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
//! Inside a shard the path runs one way: `ingest` -> `shard` (routing) ->
//! `queues` (decisions, no I/O) -> `delivery` (SMTP client over `transport`)
//! -> `outcome` (log, counters, retries). `transport` is the only module that
//! touches sockets.
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

mod config;
mod delivery;
mod dlog;
mod durable;
mod engine;
mod ingest;
pub mod journal;
mod message;
mod metrics;
mod outcome;
mod pace;
mod queues;
pub mod rate;
mod shard;
mod transport;

pub use config::{
    AckMode, Config, ConfigError, IngestConfig, JournalSettings, ListenerConfig, Policy, Protocol,
    QueueSettings, SchedulerConfig, SpecificQueue,
};
pub use durable::WallClock;
pub use engine::{Engine, EngineError, LatencySummary, ShutdownReport, StopHandle};
pub use metrics::{DomainRate, Stats};
