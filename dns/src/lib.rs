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
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use volley_dns::{MxResolver, ResolverConfig};
//!
//! # async fn shard() -> Result<(), Box<dyn std::error::Error>> {
//! // Inside the shard's runtime (a LocalSet: tokio-uring is one).
//! let resolver = MxResolver::new(ResolverConfig::default())?;
//! // Refresh, ahead of expiry, the domains that still have mail queued.
//! let _refresher = resolver.spawn_refresher(Duration::from_secs(1), |_domain| true);
//! // While this queue sends, warm the ones next in line.
//! resolver.prefetch(["example.org", "example.net"]);
//! match resolver.resolve("example.com").await {
//!     Ok(route) => println!("{route}"),
//!     Err(e) if e.is_permanent() => println!("bounce: {e}"),
//!     Err(e) => println!("retry later: {e}"),
//! }
//! // The sending path can also look without waiting:
//! let _hit = resolver.cached("example.com", Instant::now());
//! # Ok(())
//! # }
//! ```

mod cache;
mod config;
mod error;
mod inflight;
mod lookups;
mod resolver;
mod route;
mod signed_zone;
mod testserver;
mod tlsa;
mod upstream;

pub use crate::config::{ConfigError, ResolverConfig};
pub use crate::error::ResolveError;
pub use crate::lookups::Lookups;
pub use crate::resolver::{MxResolver, ResolverStats};
pub use crate::route::{MxHost, Route, RouteKind};
pub use crate::signed_zone::SignedZone;
pub use crate::testserver::{Fault, TestDnsServer, TestZone};
pub use crate::tlsa::{TlsaAnswer, TlsaRecord, Validation};
