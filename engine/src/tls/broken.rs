//! MX hosts whose TLS handshake failed, remembered for a while so that
//! the next connection goes straight to clear text instead of paying the
//! failed handshake again (opportunistic policy only). Shared by every
//! shard: it is read once per connection opened, never per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Hosts remembered at most; past it, expired entries are dropped, then
/// the soonest to expire.
const MAX_HOSTS: usize = 100_000;

/// Host address -> when STARTTLS may be tried again.
#[derive(Default)]
pub(crate) struct BrokenTls {
    until: Mutex<HashMap<SocketAddr, Instant>>,
}

impl BrokenTls {
    /// The handshake with `host` failed at `now`.
    pub(crate) fn mark(&self, host: SocketAddr, now: Instant, for_: Duration) {
        let mut until = self.until.lock();
        if until.len() >= MAX_HOSTS {
            until.retain(|_, t| *t > now);
            if until.len() >= MAX_HOSTS
                && let Some(soonest) = until.iter().min_by_key(|(_, t)| **t).map(|(h, _)| *h)
            {
                until.remove(&soonest);
            }
        }
        until.insert(host, now + for_);
    }

    /// Whether `host` is remembered as broken at `now`.
    pub(crate) fn is_broken(&self, host: SocketAddr, now: Instant) -> bool {
        let mut until = self.until.lock();
        match until.get(&host) {
            Some(t) if *t > now => true,
            Some(_) => {
                until.remove(&host);
                false
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_host_is_remembered_until_its_time_runs_out() {
        let b = BrokenTls::default();
        let host: SocketAddr = "192.0.2.1:25".parse().unwrap();
        let other: SocketAddr = "192.0.2.2:25".parse().unwrap();
        let t0 = Instant::now();
        b.mark(host, t0, Duration::from_secs(60));
        assert!(b.is_broken(host, t0 + Duration::from_secs(59)));
        assert!(!b.is_broken(other, t0));
        assert!(!b.is_broken(host, t0 + Duration::from_secs(60)));
        assert!(!b.is_broken(host, t0), "an expired entry is forgotten");
    }
}
