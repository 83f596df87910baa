//! Admission of a Composer's connection before its session starts: a
//! trusted network, and room under the connection limits in total and per
//! client address. The place taken is given back when the session ends.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::context::Shared;

/// A session's place in the connection limits; released on drop.
pub(crate) struct Admission {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.shared.ingest_total.fetch_sub(1, Ordering::Relaxed);
        self.shared
            .counters
            .ingest_sessions
            .fetch_sub(1, Ordering::Relaxed);
        let mut map = self.shared.ingest_per_ip.lock();
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Why a connection is refused before its session starts.
pub(super) enum Refusal {
    Untrusted,
    TooMany,
    TooManyFromIp,
}

pub(super) fn admit(shared: &Arc<Shared>, ip: IpAddr) -> Result<Admission, Refusal> {
    let config = shared.config.load();
    if !config.ingest.is_trusted(ip) {
        return Err(Refusal::Untrusted);
    }
    let mut map = shared.ingest_per_ip.lock();
    if shared.ingest_total.load(Ordering::Relaxed) >= config.ingest.max_connections {
        return Err(Refusal::TooMany);
    }
    let n = map.entry(ip).or_insert(0);
    if *n >= config.ingest.max_connections_per_ip {
        return Err(Refusal::TooManyFromIp);
    }
    *n += 1;
    shared.ingest_total.fetch_add(1, Ordering::Relaxed);
    shared
        .counters
        .ingest_sessions
        .fetch_add(1, Ordering::Relaxed);
    Ok(Admission {
        shared: shared.clone(),
        ip,
    })
}
