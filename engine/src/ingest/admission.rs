//! Admission of a connection before its session starts: room under the
//! connection limits, and whether the client is trusted. The place taken
//! is given back when the connection ends.
//!
//! The total limit counts the trusted networks' connections: it protects
//! the process (file descriptors, buffers). Clients outside the trusted
//! networks get a quarter of it on top, for all of them together, and a
//! per-address limit within that: Volley answers them 554 and waits a
//! while for their QUIT, so without those limits one remote host could
//! hold thousands of those waits, and many could take every place a
//! Composer needs. A trusted Composer is one program that may well open
//! thousands of sessions from one address, as Postfix lets its trusted
//! networks do.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::context::Shared;

/// A session's place in the connection limits; released on drop.
pub(crate) struct Admission {
    shared: Arc<Shared>,
    /// The shard whose counters count the session.
    shard: usize,
    ip: IpAddr,
    /// False for a client outside the trusted networks: it gets only the
    /// 554 greeting and a wait for QUIT.
    pub(super) trusted: bool,
}

impl Admission {
    /// Whether the client is in the trusted networks.
    pub(super) fn trusted(&self) -> bool {
        self.trusted
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.counters[self.shard]
            .ingest_sessions
            .fetch_sub(1, Ordering::Relaxed);
        if self.trusted {
            self.shared.ingest_total.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let mut map = self.shared.ingest_per_ip.lock();
        self.shared.ingest_untrusted.fetch_sub(1, Ordering::Relaxed);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Connections from outside the trusted networks, all together, beside a
/// total limit of `max_connections` for the trusted ones.
fn untrusted_limit(max_connections: usize) -> usize {
    (max_connections / 4).max(1)
}

/// Why a connection is refused at once.
pub(super) enum Refusal {
    TooMany,
    TooManyFromIp,
}

/// Admits a session from `ip` on shard `shard` (whose counters count it).
pub(super) fn admit(shared: &Arc<Shared>, shard: usize, ip: IpAddr) -> Result<Admission, Refusal> {
    let config = shared.config.load();
    let trusted = config.ingest.is_trusted(ip);
    let mut map = shared.ingest_per_ip.lock();
    if trusted {
        if shared.ingest_total.load(Ordering::Relaxed) >= config.ingest.max_connections {
            return Err(Refusal::TooMany);
        }
        shared.ingest_total.fetch_add(1, Ordering::Relaxed);
    } else {
        let untrusted = shared.ingest_untrusted.load(Ordering::Relaxed);
        if untrusted >= untrusted_limit(config.ingest.max_connections) {
            return Err(Refusal::TooMany);
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= config.ingest.max_connections_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *n += 1;
        shared.ingest_untrusted.fetch_add(1, Ordering::Relaxed);
    }
    shared.counters[shard]
        .ingest_sessions
        .fetch_add(1, Ordering::Relaxed);
    Ok(Admission {
        shared: shared.clone(),
        shard,
        ip,
        trusted,
    })
}
