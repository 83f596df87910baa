//! MTA-STS (RFC 8461): receivers say, in a policy served over HTTPS, that
//! their mail must arrive over TLS with a valid certificate, to MX hosts
//! they name. Gmail, Yahoo and Microsoft publish policies in `enforce`
//! mode.
//!
//! Policies are fetched on a thread of its own (an ordinary tokio
//! runtime), never on a shard, and kept in one cache for every shard,
//! each for its `max_age`. A delivery connection asks the cache first; a
//! domain seen for the first time waits for its fetch (at most
//! `fetch_timeout`, then it goes on without a policy, as the RFC allows
//! when none can be had), and a cached policy is fetched again in the
//! background halfway through its life (a day at most), so that no
//! delivery waits for a refresh. A fetch that fails keeps the policy
//! cached before it, if any.

mod fetch;
mod policy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::config::MtaStsSettings;
pub(crate) use policy::{Mode, Policy};

/// How long a domain without a policy (or whose fetch failed) is not
/// asked again.
const RETRY_AFTER: Duration = Duration::from_secs(300);
/// A cached policy is fetched again at the latest this long after it was.
const REFRESH_AT_MOST: Duration = Duration::from_secs(86_400);
/// Domains remembered at most.
const MAX_DOMAINS: usize = 100_000;

struct Entry {
    policy: Option<Arc<Policy>>,
    id: Option<String>,
    /// The policy may be used until then.
    expires: Instant,
    /// A background fetch is due then.
    refresh_at: Instant,
    fetching: bool,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Entry {
    /// A domain not fetched yet: nothing to use, due for a fetch now.
    fn unknown(now: Instant) -> Entry {
        Entry {
            policy: None,
            id: None,
            expires: now,
            refresh_at: now,
            fetching: false,
            waiters: Vec::new(),
        }
    }
}

/// The policy cache, and the handle on the thread that fetches.
pub(crate) struct MtaSts {
    cache: Arc<Mutex<HashMap<String, Entry>>>,
    requests: mpsc::UnboundedSender<String>,
    fetch_timeout: Duration,
}

impl MtaSts {
    /// Starts the fetching thread, asking `resolver`'s nameservers and
    /// checking policy hosts' certificates with `tls`.
    pub(crate) fn start(
        settings: &MtaStsSettings,
        resolver: &volley_dns::ResolverConfig,
        tls: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<MtaSts> {
        let cache = Arc::new(Mutex::new(HashMap::new()));
        let (requests, inbox) = mpsc::unbounded_channel();
        let fetcher = Fetcher {
            cache: cache.clone(),
            tls,
            port: settings.https_port,
            timeout: settings.fetch_timeout,
        };
        let resolver = resolver.clone();
        std::thread::Builder::new()
            .name("volley-mta-sts".into())
            .spawn(move || fetcher.run(resolver, inbox))?;
        Ok(MtaSts {
            cache,
            requests,
            fetch_timeout: settings.fetch_timeout,
        })
    }

    /// The policy of `domain` to deliver by now, `None` when it has none
    /// (or none could be fetched in time).
    pub(crate) async fn policy(&self, domain: &str) -> Option<Arc<Policy>> {
        // The fetching thread could not start (it said why): no policies,
        // and no waiting for fetches that will never come.
        if self.requests.is_closed() {
            return None;
        }
        let now = Instant::now();
        let waiting = {
            let mut cache = self.cache.lock();
            if cache.len() >= MAX_DOMAINS && !cache.contains_key(domain) {
                cache.retain(|_, e| e.fetching || now < e.expires);
            }
            // A domain seen for the first time is known to have nothing
            // usable: it takes the path of an expired policy.
            let e = cache
                .entry(domain.to_string())
                .or_insert_with(|| Entry::unknown(now));
            let usable = now < e.expires;
            if (!usable || now >= e.refresh_at) && !e.fetching {
                e.fetching = true;
                let _ = self.requests.send(domain.to_string());
            }
            if usable {
                return e.policy.clone();
            }
            let (tx, rx) = oneshot::channel();
            e.waiters.push(tx);
            rx
        };
        let _ = tokio::time::timeout(self.fetch_timeout, waiting).await;
        let cache = self.cache.lock();
        cache
            .get(domain)
            .filter(|e| Instant::now() < e.expires)
            .and_then(|e| e.policy.clone())
    }
}

/// The fetching thread's state.
struct Fetcher {
    cache: Arc<Mutex<HashMap<String, Entry>>>,
    tls: Arc<rustls::ClientConfig>,
    port: u16,
    timeout: Duration,
}

impl Fetcher {
    fn run(self, resolver: volley_dns::ResolverConfig, mut inbox: mpsc::UnboundedReceiver<String>) {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            tracing::error!(target: "volley", "MTA-STS: no runtime; policies are not fetched");
            return;
        };
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let lookups = match volley_dns::Lookups::new(&resolver) {
                Ok(l) => Arc::new(l),
                Err(e) => {
                    tracing::error!(target: "volley", "MTA-STS: {e}; policies are not fetched");
                    return;
                }
            };
            let this = Arc::new(self);
            // Ends when the engine drops its handle.
            while let Some(domain) = inbox.recv().await {
                let (this, lookups) = (this.clone(), lookups.clone());
                tokio::task::spawn_local(async move {
                    let r =
                        fetch::fetch(&lookups, this.tls.clone(), &domain, this.port, this.timeout)
                            .await;
                    this.settle(&domain, r);
                });
            }
        });
    }

    /// Records what a fetch found and wakes those who wait for it.
    fn settle(&self, domain: &str, fetched: Result<fetch::Fetched, String>) {
        let now = Instant::now();
        let mut cache = self.cache.lock();
        let Some(e) = cache.get_mut(domain) else {
            return;
        };
        e.fetching = false;
        match fetched {
            Ok(fetch::Fetched::Policy { id, policy }) => {
                if e.id.as_deref() != Some(id.as_str()) {
                    tracing::info!(
                        target: "volley",
                        "MTA-STS policy of {domain} (id {id}): mode {:?}, mx {:?}, max_age {}",
                        policy.mode,
                        policy.mx(),
                        volley_units::format_duration(policy.max_age)
                    );
                }
                e.expires = now + policy.max_age;
                e.refresh_at = now + (policy.max_age / 2).min(REFRESH_AT_MOST);
                e.id = Some(id);
                e.policy = Some(Arc::new(policy));
            }
            // A domain that drops its record keeps its cached policy
            // until it expires (RFC 8461 5.1).
            Ok(fetch::Fetched::NoRecord) if e.policy.is_some() => e.refresh_at = now + RETRY_AFTER,
            Ok(fetch::Fetched::NoRecord) => {
                e.expires = now + RETRY_AFTER;
                e.refresh_at = e.expires;
            }
            Err(why) => {
                tracing::warn!(target: "volley", "MTA-STS policy of {domain} not fetched: {why}");
                if e.policy.is_none() {
                    e.expires = now + RETRY_AFTER;
                }
                e.refresh_at = now + RETRY_AFTER;
            }
        }
        for w in e.waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher() -> Fetcher {
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        Fetcher {
            cache: Arc::new(Mutex::new(HashMap::new())),
            tls: Arc::new(tls),
            port: 443,
            timeout: Duration::from_secs(1),
        }
    }

    fn waiting(f: &Fetcher, domain: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut e = Entry::unknown(Instant::now());
        e.fetching = true;
        e.waiters.push(tx);
        f.cache.lock().insert(domain.into(), e);
        rx
    }

    fn policy(mode: &str) -> Policy {
        Policy::parse(&format!(
            "version: STSv1\nmode: {mode}\nmx: mx.d.test\nmax_age: 3600\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_fetched_policy_is_kept_for_its_max_age_and_refreshed_halfway() {
        let f = fetcher();
        let mut woken = waiting(&f, "d.test");
        let id = "1".to_string();
        f.settle(
            "d.test",
            Ok(fetch::Fetched::Policy {
                id,
                policy: policy("enforce"),
            }),
        );
        assert!(woken.try_recv().is_ok(), "the waiter is woken");
        let cache = f.cache.lock();
        let e = &cache["d.test"];
        assert_eq!(e.policy.as_ref().unwrap().mode, Mode::Enforce);
        let left = e.expires.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        let refresh = e.refresh_at.saturating_duration_since(Instant::now());
        assert!(refresh > Duration::from_secs(1790) && refresh <= Duration::from_secs(1800));
        assert!(!e.fetching);
    }

    #[test]
    fn a_failed_fetch_or_a_vanished_record_keeps_the_cached_policy() {
        let f = fetcher();
        let _woken = waiting(&f, "d.test");
        let id = "1".to_string();
        f.settle(
            "d.test",
            Ok(fetch::Fetched::Policy {
                id,
                policy: policy("enforce"),
            }),
        );
        let expires = f.cache.lock()["d.test"].expires;
        f.settle("d.test", Err("connection refused".into()));
        f.settle("d.test", Ok(fetch::Fetched::NoRecord));
        let cache = f.cache.lock();
        let e = &cache["d.test"];
        assert!(e.policy.is_some());
        assert_eq!(e.expires, expires, "still the policy's own expiry");
    }

    /// An `MtaSts` whose fetch requests land in the returned receiver.
    fn service(fetcher: &Fetcher) -> (MtaSts, mpsc::UnboundedReceiver<String>) {
        let (requests, inbox) = mpsc::unbounded_channel();
        let m = MtaSts {
            cache: fetcher.cache.clone(),
            requests,
            fetch_timeout: Duration::from_millis(50),
        };
        (m, inbox)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_policy_due_for_refresh_is_used_at_once_and_fetched_in_the_background() {
        let f = fetcher();
        let (m, mut inbox) = service(&f);
        let _woken = waiting(&f, "d.test");
        let id = "1".to_string();
        f.settle(
            "d.test",
            Ok(fetch::Fetched::Policy {
                id,
                policy: policy("enforce"),
            }),
        );
        // Not due yet: served from the cache, nothing fetched.
        assert!(block_on(m.policy("d.test")).is_some());
        assert!(inbox.try_recv().is_err());
        // Due: still served at once, and one fetch is asked for.
        f.cache.lock().get_mut("d.test").unwrap().refresh_at = Instant::now();
        assert!(block_on(m.policy("d.test")).is_some());
        assert!(block_on(m.policy("d.test")).is_some());
        assert_eq!(inbox.try_recv().as_deref(), Ok("d.test"));
        assert!(inbox.try_recv().is_err(), "one fetch, not one per delivery");
    }

    #[test]
    fn a_first_delivery_waits_for_the_fetch_at_most_the_timeout() {
        let f = fetcher();
        let (m, mut inbox) = service(&f);
        let started = Instant::now();
        // Nobody answers the request: the delivery goes on without a policy.
        assert!(block_on(m.policy("new.test")).is_none());
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(inbox.try_recv().as_deref(), Ok("new.test"));
    }

    #[test]
    fn a_domain_without_a_policy_is_asked_again_only_after_a_while() {
        let f = fetcher();
        let _woken = waiting(&f, "d.test");
        f.settle("d.test", Ok(fetch::Fetched::NoRecord));
        let cache = f.cache.lock();
        let e = &cache["d.test"];
        assert!(e.policy.is_none());
        assert!(e.expires > Instant::now() + RETRY_AFTER - Duration::from_secs(5));
    }
}
