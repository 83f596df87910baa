//! End-to-end tests of the `volley` binary over real sockets on loopback.

mod admin;
mod backlog;
mod bench;
mod cluster;
mod dane;
mod dkim;
mod dsn;
mod durable;
mod events;
mod hostile;
mod ingest;
mod inject;
mod interop;
mod layering;
mod outcomes;
mod rate;
mod relay;
mod reload;
mod resolve;
mod sites;
mod support;
mod tls;
