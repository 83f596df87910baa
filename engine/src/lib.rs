//! Volley's engine: shards pinned to cores, ingest, queues, delivery over
//! io_uring, retries, the delivery log and metrics.

mod config;
mod delivery;
mod dlog;
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
#[cfg(test)]
mod testsink;
mod transport;

pub use config::{
    AckMode, Config, ConfigError, IngestConfig, ListenerConfig, Policy, Protocol, QueueSettings,
    SchedulerConfig, SpecificQueue, parse_duration, parse_size,
};
pub use engine::{Engine, EngineError, LatencySummary, ShutdownReport, StopHandle};
pub use metrics::{DomainRate, Stats};
