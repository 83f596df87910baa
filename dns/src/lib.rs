//! MX resolution for Volley.
//!
//! Each shard owns one [`MxResolver`]: it turns a mail domain into a
//! [`Route`] (MX hosts in preference order, equal preferences shuffled, with
//! their addresses; implicit MX; static routes), caches answers and failures
//! with clamped TTLs, refreshes the routes still in use before they expire,
//! shares one lookup among all concurrent callers, and prefetches the domains
//! of the queues next in line, so the sending path rarely waits on DNS.
//!
//! Queries go through hickory-resolver; [`TestDnsServer`] is a real
//! authoritative server (hickory-server) for tests and benchmarks.

mod cache;
mod config;
mod duration;
mod error;
mod inflight;
mod resolver;
mod route;
mod testserver;
mod upstream;

pub use crate::config::{ConfigError, ResolverConfig, parse_duration};
pub use crate::error::ResolveError;
pub use crate::resolver::{MxResolver, ResolverStats};
pub use crate::route::{MxHost, Route, RouteKind};
pub use crate::testserver::{Fault, TestDnsServer, TestZone};
