//! Admission of a connection before its session starts: room under the
//! connection limits, and whether the client is trusted. The place taken
//! is given back when the connection ends.
//!
//! The total limit counts every connection: it protects the process (file
//! descriptors, buffers). The per-address limit counts only clients outside
//! the trusted networks: Volley answers them 554 and waits a while for
//! their QUIT, so without it one remote host could hold thousands of those
//! waits. A trusted Composer is one program that may well open thousands of
//! sessions from one address, as Postfix lets its trusted networks do.

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
        self.shared.ingest_total.fetch_sub(1, Ordering::Relaxed);
        self.shared.counters[self.shard]
            .ingest_sessions
            .fetch_sub(1, Ordering::Relaxed);
        if self.trusted {
            return;
        }
        let mut map = self.shared.ingest_per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
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
    if shared.ingest_total.load(Ordering::Relaxed) >= config.ingest.max_connections {
        return Err(Refusal::TooMany);
    }
    if !trusted {
        let n = map.entry(ip).or_insert(0);
        if *n >= config.ingest.max_connections_per_ip {
            return Err(Refusal::TooManyFromIp);
        }
        *n += 1;
    }
    shared.ingest_total.fetch_add(1, Ordering::Relaxed);
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
