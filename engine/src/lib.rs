//! Volley's engine: shards pinned to cores, ingest, queues, delivery over
//! io_uring, retries, the delivery log and metrics.

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
mod queues;
pub mod rate;
mod shard;
#[cfg(test)]
mod testsink;
mod transport;

pub use config::{
    AckMode, Config, ConfigError, IngestConfig, JournalSettings, ListenerConfig, Policy, Protocol,
    QueueSettings, SchedulerConfig, SpecificQueue, parse_duration, parse_size,
};
pub use durable::WallClock;
pub use engine::{Engine, EngineError, LatencySummary, ShutdownReport, StopHandle};
pub use metrics::Stats;
