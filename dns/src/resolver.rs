//! The per-shard MX resolver: cache, refresh ahead of expiry, in-flight
//! de-duplication and prefetch on top of [`Upstream`].
//!
//! Owned by one shard thread: `Rc`/`RefCell`, no locks. Lookups run as
//! `spawn_local` tasks, so the resolver must be used inside a tokio `LocalSet`
//! (a tokio-uring runtime is one).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::net::IpAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cache::{Answer, Due, TtlCache};
use crate::config::{ConfigError, ResolverConfig, StaticHost};
use crate::error::ResolveError;
use crate::inflight::InFlight;
use crate::route::{MxHost, Route, RouteKind, order_mx};
use crate::tlsa::{TlsaAnswer, Validation};
use crate::upstream::{Records, Upstream};

/// Counters of what the resolver did, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResolverStats {
    /// `resolve` calls answered from the cache (positive or negative).
    pub hits: u64,
    /// `resolve` calls that had to wait for a lookup.
    pub misses: u64,
    /// Of the misses, those that joined a lookup already running.
    pub joined: u64,
    /// Route lookups started (on demand, refresh or prefetch).
    pub fetches: u64,
    /// Of the fetches, those started by [`MxResolver::tick`] ahead of expiry.
    pub refreshes: u64,
    /// Of the fetches, those started by [`MxResolver::prefetch`].
    pub prefetches: u64,
}

/// Addresses of one host name (empty: the host has none), valid until `expires`.
#[derive(Clone, Debug)]
struct HostAddrs {
    addrs: Rc<[IpAddr]>,
    expires: Instant,
}

/// A route or the error, and how long to cache it.
struct Fetched<V> {
    answer: Answer<V>,
    ttl: Duration,
}

/// Resolves mail domains to ordered MX hosts with addresses, for one shard.
///
/// Cheap to clone (a handle to shared per-thread state); `!Send` by design.
#[derive(Clone)]
pub struct MxResolver {
    inner: Rc<Inner>,
}

struct Inner {
    config: ResolverConfig,
    upstream: Upstream,
    routes: RefCell<TtlCache<Rc<Route>>>,
    hosts: RefCell<TtlCache<HostAddrs>>,
    route_fetches: InFlight<Rc<Route>>,
    host_fetches: InFlight<HostAddrs>,
    stats: Cell<ResolverStats>,
}

impl MxResolver {
    /// Builds a resolver; reads `/etc/resolv.conf` when no nameserver is configured.
    pub fn new(config: ResolverConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let upstream = Upstream::new(&config)?;
        Ok(Self {
            inner: Rc::new(Inner {
                config,
                upstream,
                routes: RefCell::new(TtlCache::new()),
                hosts: RefCell::new(TtlCache::new()),
                route_fetches: InFlight::new(),
                host_fetches: InFlight::new(),
                stats: Cell::new(ResolverStats::default()),
            }),
        })
    }

    /// Whether any configured nameserver answers (the root's NS records
    /// are asked; any reply counts). A start-up check: without an answer
    /// every lookup will time out.
    pub async fn check_nameservers(&self) -> Result<(), ResolveError> {
        self.inner.upstream.answers().await
    }

    /// The nameservers this resolver asks, as `ADDR:PORT, ...`.
    pub fn nameservers(&self) -> &str {
        self.inner.upstream.nameservers()
    }

    /// The TLSA records of `host`'s SMTP service on `port`
    /// (`_25._tcp.HOST`, RFC 7672 2.2), asked each time (not cached here:
    /// with DNSSEC on, hickory's own cache keeps the answer and the keys
    /// that validate it). No records is an empty answer, not an error.
    pub async fn tlsa(&self, host: &str, port: u16) -> Result<TlsaAnswer, ResolveError> {
        let name = format!("_{port}._tcp.{}", host.trim_end_matches('.'));
        Ok(match self.inner.upstream.tlsa(&name).await? {
            Records::Found(records, _, validation) => TlsaAnswer {
                records,
                validation,
            },
            Records::NoData(_) | Records::NxDomain(_) => TlsaAnswer {
                records: Vec::new(),
                validation: Validation::Insecure,
            },
        })
    }

    /// The route to `domain`'s mail servers: from the cache when it holds a
    /// valid answer, otherwise after one lookup shared with every concurrent
    /// caller asking for the same domain.
    pub async fn resolve(&self, domain: &str) -> Result<Rc<Route>, ResolveError> {
        let key = normalize(domain);
        if let Some(answer) = self.inner.routes.borrow().get(&key, Instant::now()) {
            self.inner.count(|s| s.hits += 1);
            return answer.clone();
        }
        self.inner.count(|s| s.misses += 1);
        validate(&key)?;
        let key: Rc<str> = Rc::from(&*key);
        let (rx, start) = self.inner.route_fetches.wait(&key);
        if start {
            Inner::spawn_route_fetch(&self.inner, key.clone());
        } else {
            self.inner.count(|s| s.joined += 1);
        }
        rx.await.unwrap_or_else(|_| Err(dropped(&key)))
    }

    /// The cached answer for `domain` if still valid at `now`; never queries.
    pub fn cached(&self, domain: &str, now: Instant) -> Option<Result<Rc<Route>, ResolveError>> {
        let key = normalize(domain);
        self.inner.routes.borrow().get(&key, now).cloned()
    }

    /// Starts background lookups for `domains` (the queues next in line) that
    /// are not cached or are due for refresh, so that their `resolve` later is
    /// a cache hit. Returns how many lookups it started.
    pub fn prefetch<'a>(&self, domains: impl IntoIterator<Item = &'a str>) -> usize {
        let now = Instant::now();
        let mut started = 0;
        for domain in domains {
            let key = normalize(domain);
            if validate(&key).is_err() || !self.inner.routes.borrow().is_stale(&key, now) {
                continue;
            }
            let key: Rc<str> = Rc::from(&*key);
            if self.inner.route_fetches.begin(&key) {
                self.inner.count(|s| s.prefetches += 1);
                Inner::spawn_route_fetch(&self.inner, key);
                started += 1;
            }
        }
        started
    }

    /// Housekeeping at `now`: drops expired entries and refreshes, in the
    /// background, the routes past their refresh point for which `wanted`
    /// says mail is still queued. Returns how many refreshes it started.
    pub fn tick(&self, now: Instant, mut wanted: impl FnMut(&str) -> bool) -> usize {
        // Host entries are never refreshed on their own: a route refresh
        // re-asks for the hosts that are past their refresh point.
        let _ = self.inner.hosts.borrow_mut().due(now);
        let due = self.inner.routes.borrow_mut().due(now);
        let mut started = 0;
        for Due::Refresh(key) in due {
            if wanted(&key) && self.inner.route_fetches.begin(&key) {
                self.inner.count(|s| s.refreshes += 1);
                Inner::spawn_route_fetch(&self.inner, key);
                started += 1;
            }
        }
        started
    }

    /// Runs [`Self::tick`] every `period` on the current `LocalSet` until the
    /// returned task is aborted.
    pub fn spawn_refresher(
        &self,
        period: Duration,
        wanted: impl Fn(&str) -> bool + 'static,
    ) -> JoinHandle<()> {
        let this = self.clone();
        tokio::task::spawn_local(async move {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                this.tick(Instant::now(), &wanted);
            }
        })
    }

    /// What the resolver did so far.
    pub fn stats(&self) -> ResolverStats {
        self.inner.stats.get()
    }

    /// Number of domains in the route cache (valid or awaiting removal).
    pub fn cache_len(&self) -> usize {
        self.inner.routes.borrow().len()
    }

    /// Number of route lookups running now.
    pub fn in_flight(&self) -> usize {
        self.inner.route_fetches.len()
    }

    /// The configuration in use.
    pub fn config(&self) -> &ResolverConfig {
        &self.inner.config
    }
}

impl Inner {
    fn count(&self, f: impl FnOnce(&mut ResolverStats)) {
        let mut s = self.stats.get();
        f(&mut s);
        self.stats.set(s);
    }

    /// Looks `key` up in a task of its own (so a caller that gives up does not
    /// cancel it for the others), stores the answer and wakes the waiters.
    fn spawn_route_fetch(this: &Rc<Self>, key: Rc<str>) {
        this.count(|s| s.fetches += 1);
        let this = this.clone();
        tokio::task::spawn_local(async move {
            let fetched = this.fetch_route(&key).await;
            let answer = this.store_route(&key, fetched);
            this.route_fetches.finish(&key, &answer);
        });
    }

    fn store_route(&self, key: &Rc<str>, fetched: Fetched<Route>) -> Answer<Rc<Route>> {
        let now = Instant::now();
        let ttl = fetched.ttl;
        let mut routes = self.routes.borrow_mut();
        match fetched.answer {
            Ok(mut route) => {
                route.ttl = ttl;
                route.expires = now + ttl;
                let route = Rc::new(route);
                let refresh_at = now + ttl.mul_f64(self.config.refresh_ahead);
                routes.insert(key.clone(), Ok(route.clone()), now + ttl, Some(refresh_at));
                Ok(route)
            }
            Err(e) => {
                // A refresh that failed transiently keeps serving the answer
                // it had (still within its TTL) and tries again later.
                let keep = e.is_transient() && matches!(routes.get(key, now), Some(Ok(_)));
                if keep {
                    routes.retry_refresh(key, now + self.config.transient_ttl);
                } else {
                    routes.insert(key.clone(), Err(e.clone()), now + ttl, None);
                }
                Err(e)
            }
        }
    }

    async fn fetch_route(self: &Rc<Self>, domain: &str) -> Fetched<Route> {
        if let Some(hosts) = static_hosts(&self.config, domain) {
            return self.fetch_static(domain, hosts).await;
        }
        let cfg = &self.config;
        match self.upstream.mx(domain).await {
            Err(e) => self.transient(e),
            Ok(Records::NxDomain(neg)) => Fetched {
                answer: Err(ResolveError::NoSuchDomain {
                    domain: domain.to_string(),
                }),
                ttl: self.negative_ttl(neg),
            },
            Ok(Records::NoData(_)) => self.fetch_implicit(domain).await,
            Ok(Records::Found(mx, ttl, validation)) => {
                let real: Vec<(u16, String)> = mx
                    .into_iter()
                    .filter(|(_, name)| !name.is_empty())
                    .collect();
                if real.is_empty() {
                    return Fetched {
                        answer: Err(ResolveError::NullMx {
                            domain: domain.to_string(),
                        }),
                        ttl: self.negative_ttl(Some(ttl)),
                    };
                }
                let ordered = order_mx(real, cfg.max_mx_hosts);
                let hosts = ordered
                    .into_iter()
                    .map(|(pref, name)| (pref, name, None))
                    .collect();
                let secure = validation == Validation::Secure;
                self.collect_hosts(domain, RouteKind::Mx, hosts, self.positive_ttl(ttl), secure)
                    .await
            }
        }
    }

    async fn fetch_implicit(self: &Rc<Self>, domain: &str) -> Fetched<Route> {
        let hosts = vec![(0, domain.to_string(), None)];
        let mut fetched = self
            .collect_hosts(
                domain,
                RouteKind::ImplicitMx,
                hosts,
                self.config.max_ttl,
                false,
            )
            .await;
        if let Err(ResolveError::NoAddress { detail, .. }) = &mut fetched.answer {
            *detail = "no MX record and no A/AAAA record".into();
        }
        fetched
    }

    async fn fetch_static(self: &Rc<Self>, domain: &str, hosts: Vec<StaticHost>) -> Fetched<Route> {
        let hosts = hosts
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                let pref = u16::try_from(i).unwrap_or(u16::MAX);
                match h {
                    StaticHost::Addr(ip) => (pref, ip.to_string(), Some(ip)),
                    StaticHost::Name(name) => (pref, name, None),
                }
            })
            .collect();
        self.collect_hosts(domain, RouteKind::Static, hosts, self.config.max_ttl, false)
            .await
    }

    /// Looks up the addresses of `hosts` (concurrently, through the host
    /// cache) and builds the route; hosts without address are left out.
    async fn collect_hosts(
        self: &Rc<Self>,
        domain: &str,
        kind: RouteKind,
        hosts: Vec<(u16, String, Option<IpAddr>)>,
        mut ttl: Duration,
        mx_secure: bool,
    ) -> Fetched<Route> {
        // Start every lookup before waiting for any.
        let pending: Vec<_> = hosts
            .into_iter()
            .map(|(pref, name, fixed)| {
                let lookup = match fixed {
                    Some(_) => None,
                    None => Some(Self::host_addrs(self, &name)),
                };
                (pref, name, fixed, lookup)
            })
            .collect();
        let mut out = Vec::new();
        let mut transient = None;
        let mut negative = None::<Duration>;
        for (preference, name, fixed, lookup) in pending {
            let addrs: Vec<IpAddr> = match (fixed, lookup) {
                (Some(ip), _) => vec![ip],
                (None, Some(lookup)) => match lookup.get(&name).await {
                    Ok(h) => {
                        let left = whole_secs(h.expires.saturating_duration_since(Instant::now()));
                        if h.addrs.is_empty() {
                            negative = Some(negative.map_or(left, |n| n.min(left)));
                        } else {
                            ttl = ttl.min(left);
                        }
                        h.addrs.to_vec()
                    }
                    Err(e) => {
                        transient.get_or_insert(e);
                        Vec::new()
                    }
                },
                (None, None) => Vec::new(),
            };
            if !addrs.is_empty() {
                out.push(MxHost {
                    name,
                    preference,
                    addrs,
                });
            }
        }
        if out.is_empty() {
            return match transient {
                Some(e) => self.transient(e),
                None => Fetched {
                    answer: Err(ResolveError::NoAddress {
                        domain: domain.to_string(),
                        detail: "none of its MX hosts has an A/AAAA record".into(),
                    }),
                    ttl: negative.unwrap_or(self.config.negative_ttl),
                },
            };
        }
        if transient.is_some() {
            // Some hosts are missing for now: ask again soon.
            ttl = ttl.min(self.config.transient_ttl);
        }
        Fetched {
            answer: Ok(Route {
                domain: domain.to_string(),
                hosts: out,
                kind,
                mx_secure,
                ttl,
                expires: Instant::now() + ttl,
            }),
            ttl,
        }
    }

    /// The addresses of `host`: from the host cache when fresh, otherwise a
    /// de-duplicated lookup of its A and AAAA records.
    fn host_addrs(this: &Rc<Self>, host: &str) -> HostLookup {
        let now = Instant::now();
        {
            let hosts = this.hosts.borrow();
            if !hosts.is_stale(host, now)
                && let Some(answer) = hosts.get(host, now)
            {
                return HostLookup::Ready(answer.clone());
            }
        }
        let key: Rc<str> = Rc::from(host);
        let (rx, start) = this.host_fetches.wait(&key);
        if start {
            let this = this.clone();
            tokio::task::spawn_local(async move {
                let fetched = this.fetch_host(&key).await;
                let now = Instant::now();
                let answer = fetched.answer.map(|addrs| HostAddrs {
                    addrs,
                    expires: now + fetched.ttl,
                });
                let refresh_at = now + fetched.ttl.mul_f64(this.config.refresh_ahead);
                this.hosts.borrow_mut().insert(
                    key.clone(),
                    answer.clone(),
                    now + fetched.ttl,
                    Some(refresh_at),
                );
                this.host_fetches.finish(&key, &answer);
            });
        }
        HostLookup::Waiting(rx)
    }

    async fn fetch_host(&self, host: &str) -> Fetched<Rc<[IpAddr]>> {
        let (v4, v6) = tokio::join!(
            self.upstream.addrs(host, false),
            self.upstream.addrs(host, true)
        );
        let mut addrs = Vec::new();
        let mut ttl = None::<Duration>;
        let mut negative = None::<Duration>;
        let mut error = None;
        for result in [v4, v6] {
            match result {
                Ok(Records::Found(found, t, _)) => {
                    addrs.extend(found);
                    let t = self.positive_ttl(t);
                    ttl = Some(ttl.map_or(t, |old| old.min(t)));
                }
                Ok(Records::NoData(neg) | Records::NxDomain(neg)) => {
                    let t = self.negative_ttl(neg);
                    negative = Some(negative.map_or(t, |old| old.min(t)));
                }
                Err(e) => error = Some(e),
            }
        }
        match (addrs.is_empty(), error) {
            (true, Some(e)) => Fetched {
                answer: Err(e),
                ttl: self.config.transient_ttl,
            },
            (false, Some(_)) => Fetched {
                ttl: ttl.unwrap_or_default().min(self.config.transient_ttl),
                answer: Ok(addrs.into()),
            },
            (false, None) => Fetched {
                ttl: ttl.unwrap_or_default(),
                answer: Ok(addrs.into()),
            },
            (true, None) => Fetched {
                ttl: negative.unwrap_or(self.config.negative_ttl),
                answer: Ok(addrs.into()),
            },
        }
    }

    fn transient<V>(&self, e: ResolveError) -> Fetched<V> {
        Fetched {
            answer: Err(e),
            ttl: self.config.transient_ttl,
        }
    }

    fn positive_ttl(&self, secs: u32) -> Duration {
        Duration::from_secs(u64::from(secs)).clamp(self.config.min_ttl, self.config.max_ttl)
    }

    /// RFC 2308: the SOA's negative TTL, capped by the configured maximum.
    fn negative_ttl(&self, secs: Option<u32>) -> Duration {
        secs.map_or(self.config.negative_ttl, |s| {
            Duration::from_secs(u64::from(s)).min(self.config.negative_ttl)
        })
    }
}

/// A host lookup answered from the cache or still running.
enum HostLookup {
    Ready(Answer<HostAddrs>),
    Waiting(oneshot::Receiver<Answer<HostAddrs>>),
}

impl HostLookup {
    async fn get(self, host: &str) -> Answer<HostAddrs> {
        match self {
            Self::Ready(answer) => answer,
            Self::Waiting(rx) => rx.await.unwrap_or_else(|_| Err(dropped(host))),
        }
    }
}

/// DNS TTLs are whole seconds: a host cached a moment ago still counts its full TTL.
fn whole_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

fn dropped(name: &str) -> ResolveError {
    ResolveError::Lookup {
        domain: name.to_string(),
        message: "the lookup task was dropped (runtime shutting down)".into(),
    }
}

/// The static hosts for `domain`: from the configuration, or the address of
/// a domain literal such as `[192.0.2.1]` (RFC 5321 section 4.1.3).
fn static_hosts(config: &ResolverConfig, domain: &str) -> Option<Vec<StaticHost>> {
    if let Some(ip) = domain_literal(domain) {
        return Some(vec![StaticHost::Addr(ip)]);
    }
    config.static_route(domain)
}

fn domain_literal(domain: &str) -> Option<IpAddr> {
    let inner = domain.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.strip_prefix("ipv6:").unwrap_or(inner);
    inner.parse().ok()
}

/// Lower case, no surrounding space, no trailing dot, internationalized
/// names in A-label form (`bücher.example` -> `xn--bcher-kva.example`);
/// borrowed when already so (the cache-hit path allocates nothing).
fn normalize(domain: &str) -> Cow<'_, str> {
    let trimmed = domain.trim().trim_end_matches('.');
    if !trimmed.is_ascii() || volley_units::domain::has_ace_label(trimmed) {
        // The workspace's one rule; on failure keep the text: `validate`
        // rejects it with a reason.
        return Cow::Owned(
            volley_units::domain::routing_key(trimmed).unwrap_or_else(|_| trimmed.to_string()),
        );
    }
    if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(trimmed.to_ascii_lowercase())
    } else {
        Cow::Borrowed(trimmed)
    }
}

/// Rejects what cannot be a mail domain before any query is sent.
fn validate(domain: &str) -> Result<(), ResolveError> {
    let invalid = |reason: &str| {
        Err(ResolveError::InvalidDomain {
            domain: domain.to_string(),
            reason: reason.to_string(),
        })
    };
    if domain_literal(domain).is_some() {
        return Ok(());
    }
    if domain.is_empty() {
        return invalid("empty");
    }
    if domain.len() > 253 {
        return invalid("longer than 253 characters");
    }
    for label in domain.split('.') {
        if label.is_empty() || label.len() > 63 {
            return invalid("a label is empty or longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return invalid("only letters, digits, '-' and '_' are allowed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_without_allocating_when_possible() {
        assert!(matches!(
            normalize("example.test"),
            Cow::Borrowed("example.test")
        ));
        assert_eq!(normalize(" Example.TEST. "), "example.test");
        assert_eq!(normalize("Bücher.Example"), "xn--bcher-kva.example");
    }

    #[test]
    fn validates_domains() {
        assert!(validate("mx-1.example.test").is_ok());
        assert!(validate("[192.0.2.1]").is_ok());
        assert!(validate("").is_err());
        assert!(validate("a..b").is_err());
        assert!(validate("exa mple.test").is_err());
        assert!(validate("bücher.test").is_err(), "only after normalize");
        assert!(validate(&"a".repeat(64)).is_err());
    }

    #[test]
    fn domain_literals() {
        assert_eq!(
            domain_literal("[192.0.2.1]"),
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(
            domain_literal("[ipv6:2001:db8::1]"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(domain_literal("example.test"), None);
    }
}
