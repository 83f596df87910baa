//! Volley's engine: shards pinned to cores, ingest, queues, delivery over
//! io_uring, retries, the delivery log and metrics.

mod transport;
