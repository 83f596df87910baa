//! Volley's engine: shards pinned to cores, ingest, queues, delivery over
//! io_uring, retries, the delivery log and metrics.

mod transport;
mod config;

pub use config::{
    AckMode, Config, ConfigError, IngestConfig, ListenerConfig, Policy, Protocol, QueueSettings,
    ResolverSettings, SchedulerConfig, SpecificQueue, parse_duration,
};
