//! Volley's engine: shards pinned to cores, ingest, queues, delivery over
//! io_uring, retries, the delivery log and metrics.

mod config;
mod dlog;
mod message;
mod metrics;
mod queues;
pub mod rate;
mod transport;

pub use metrics::Stats;
pub use config::{
    AckMode, Config, ConfigError, IngestConfig, ListenerConfig, Policy, Protocol, QueueSettings,
    SchedulerConfig, SpecificQueue, parse_duration,
};
