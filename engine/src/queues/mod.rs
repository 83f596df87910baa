//! A shard's queue map and connection bookkeeping, without any I/O.
//!
//! The map holds one [`Domain`] per destination domain: created on its first
//! recipient, removed when empty and idle. Each domain belongs to a queue
//! (a specific queue from the configuration, or the general queue) whose
//! settings bound its connections. This module decides; the shard acts: its
//! methods return [`Action`]s (wake an idle connection, open one, evict one)
//! and take the time as `now`, so the tests drive it on a simulated clock.
//!
//! Each domain's connections and pace live in its pool: its own, or its
//! receiving site's once its MX hosts are known (see [`sites`]). An
//! adaptive pool carries its [`RateController`]: its connection limit caps
//! the queue's `max_connections_per_domain`, and while it says the pool is
//! suspended no connection opens (a [`Action::ResumeAt`] asks the shard to
//! come back then). A controller outlives its pool for a while, so what
//! was learned survives a quiet spell.

mod reconfigure;
mod sites;

use sites::{Pool, PoolId};
pub(crate) use sites::{SiteHost, site_key};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Board, Member};
use crate::config::{Config, Policy, QueueSettings};
use crate::message::Node;
use crate::rate::{RateController, RateSnapshot};

/// How long a removed domain's controller is kept to be taken up again.
const LEARNED_FOR: Duration = Duration::from_secs(3600);

/// Index of a domain in the shard's map (reused after removal).
pub(crate) type DomainId = usize;
/// A connection's number within its shard.
pub(crate) type ConnId = u64;

/// What the shard must do after a change in the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Hand work to this idle connection.
    Wake(ConnId),
    /// Open a new connection for this domain (already counted).
    Open(DomainId),
    /// Ask this idle connection to quit: another domain needs its slot.
    Evict(ConnId),
    /// The domain's controller suspends it until then: dispatch it again at
    /// that time (no connection is opened meanwhile).
    ResumeAt(DomainId, Instant),
}

/// One queue's settings and connection count.
pub(crate) struct Queue {
    /// `general`, a specific queue's name, or `fallback`.
    pub(crate) name: Rc<str>,
    pub(crate) settings: Arc<QueueSettings>,
    /// Fixed MX hosts (no DNS) when configured.
    pub(crate) fixed_mx: Rc<[SocketAddr]>,
    /// Connections open or opening.
    open: usize,
    /// Recipients queued in this queue.
    queued: usize,
    /// Most connections of this queue open at once.
    pub(crate) peak_open: usize,
    /// For a fallback queue, the relay it sends to.
    relay: Option<SocketAddr>,
    /// Counts changes of its settings or hosts: a connection opened under
    /// another generation finishes its transaction and closes.
    pub(crate) generation: u64,
    /// A specific queue that a reload removed: it keeps its place (queue
    /// indices never change) but serves no domain.
    retired: bool,
}

impl Queue {
    fn new(name: &str, settings: QueueSettings, fixed_mx: Vec<SocketAddr>) -> Queue {
        Queue {
            name: name.into(),
            settings: Arc::new(settings),
            fixed_mx: fixed_mx.into(),
            open: 0,
            queued: 0,
            peak_open: 0,
            relay: None,
            generation: 0,
            retired: false,
        }
    }
}

/// One destination domain's queue.
pub(crate) struct Domain {
    pub(crate) name: Rc<str>,
    key: Rc<str>,
    pub(crate) queue: usize,
    pending: VecDeque<Node>,
    retrying: usize,
    in_flight: usize,
    /// Connections opened for this domain (they may carry other domains
    /// of its site); the domain stays in the map while it has any.
    conns: usize,
    waiting: bool,
    hinted: bool,
    /// Its pool: its own, or its site's (connections, pace).
    pool: PoolId,
}

impl Domain {
    /// Recipients held for it: waiting, retrying or in a transaction.
    fn depth(&self) -> usize {
        self.pending.len() + self.retrying + self.in_flight
    }

    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The queue map and everything that decides about connections.
pub(crate) struct Queues {
    domains: Vec<Option<Domain>>,
    free: Vec<DomainId>,
    by_name: HashMap<Rc<str>, DomainId>,
    specific: HashMap<String, usize>,
    queues: Vec<Queue>,
    policy: Policy,
    retry: BTreeMap<(Instant, u64), (DomainId, Node)>,
    seq: u64,
    waiting: HashSet<DomainId>,
    /// Idle connections of every domain: when they became idle, for LRU.
    idle: HashMap<ConnId, (DomainId, Instant)>,
    queued: usize,
    /// Controllers of removed domains, by key, with when they were set aside.
    /// (The time is set by the first [`prune_learned`](Self::prune_learned)
    /// that sees the entry.)
    learned: HashMap<Rc<str>, (RateController, Option<Instant>)>,
    /// Every domain's pool of connections and pace (see [`sites`]).
    pools: Vec<Option<Pool>>,
    free_pools: Vec<PoolId>,
    /// The pools of sites, by site key.
    sites: HashMap<Rc<str>, PoolId>,
    /// The site each domain (by key) was last seen to belong to, so that
    /// a domain queued again joins it at once.
    site_of: HashMap<Rc<str>, Rc<str>>,
    /// Domains an operator suspended, by name: until when, and why. Kept
    /// apart from the domains, so a suspension also holds a domain that
    /// has nothing queued yet.
    held: HashMap<Rc<str>, Hold>,
    /// The fallback queue of each queue, when its settings name a relay.
    fallback_of: Vec<Option<usize>>,
    /// The budgets shared with the other hosts, when `[cluster]` is on.
    cluster: Option<Arc<Board>>,
}

/// An operator's suspension of a domain.
#[derive(Debug, Clone)]
pub(crate) struct Hold {
    pub(crate) until: Instant,
    pub(crate) reason: String,
}

/// One domain queue as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct DomainView {
    pub(crate) domain: String,
    /// The queue it belongs to: `general`, a specific queue, `fallback`.
    pub(crate) queue: String,
    /// Recipients waiting for a connection.
    pub(crate) waiting: usize,
    /// Recipients waiting for their next attempt.
    pub(crate) retrying: usize,
    /// Recipients in a transaction now.
    pub(crate) in_flight: usize,
    /// Connections open or opening for it.
    pub(crate) connections: usize,
    /// The receiving site it shares connections and pace with, when its
    /// MX hosts made one (`queue dnssec-or-plain addresses-or-suffix`).
    pub(crate) site: Option<String>,
    /// Seconds the oldest waiting recipient has been in Volley.
    pub(crate) oldest_secs: Option<f64>,
    /// An operator's suspension, when one holds.
    pub(crate) suspended: Option<Suspension>,
    /// Its pace (its site's, when it has one), when its queue is adaptive
    /// (state, limits, suspension).
    pub(crate) rate: Option<crate::rate::RateSnapshot>,
}

/// A message's recipients queued on one shard.
pub(crate) struct FoundMessage {
    pub(crate) msg: Arc<crate::message::Message>,
    pub(crate) recipients: Vec<FoundRecipient>,
}

/// One queued recipient of a message, as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct FoundRecipient {
    /// Its place in the message's envelope.
    pub(crate) index: u32,
    pub(crate) recipient: String,
    pub(crate) domain: String,
    /// `waiting` (for a connection) or `retrying` (for its due time).
    pub(crate) state: &'static str,
    pub(crate) attempts: u16,
    /// For a retrying recipient: seconds until its next attempt.
    pub(crate) next_attempt_secs: Option<f64>,
}

/// An operator's suspension as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Suspension {
    /// Seconds left.
    pub(crate) for_secs: f64,
    pub(crate) reason: String,
}

impl DomainView {
    /// Recipients held for it in all.
    pub(crate) fn depth(&self) -> usize {
        self.waiting + self.retrying + self.in_flight
    }
}

/// Which domain queues a listing wants: those whose names contain
/// `filter` (all without one), the first `limit` of them by depth (most
/// recipients first) or by age (oldest waiting recipient first), ties by
/// name.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    pub(crate) filter: Option<String>,
    pub(crate) by_age: bool,
    pub(crate) limit: usize,
}

impl Listing {
    /// The listing's order between two views.
    pub(crate) fn order(&self, a: &DomainView, b: &DomainView) -> std::cmp::Ordering {
        let key = |v: &DomainView| match self.by_age {
            true => v.oldest_secs.unwrap_or(0.0),
            false => v.depth() as f64,
        };
        key(b)
            .total_cmp(&key(a))
            .then_with(|| a.domain.cmp(&b.domain))
    }
}

/// What one shard (or all of them) listed: the views asked for, and how
/// many domain queues matched in all.
#[derive(Debug, Default)]
pub(crate) struct Listed {
    pub(crate) views: Vec<DomainView>,
    pub(crate) matched: usize,
}

/// Seconds the oldest waiting recipient of `d` has been in Volley.
fn oldest_secs(d: &Domain, now: Instant) -> Option<f64> {
    d.pending
        .iter()
        .map(|n| now.saturating_duration_since(n.msg.received).as_secs_f64())
        .fold(None, |m: Option<f64>, a| Some(m.map_or(a, |m| m.max(a))))
}

/// Queue 0 is the general queue; specific queues follow in file order.
pub(crate) const GENERAL: usize = 0;

impl Queues {
    pub(crate) fn new(config: &Config) -> Queues {
        let mut queues = vec![Queue::new(
            "general",
            config.general_queue.clone(),
            Vec::new(),
        )];
        let mut specific = HashMap::new();
        for q in &config.queues {
            let idx = queues.len();
            for d in &q.domains {
                // The config loader refuses names that have no key.
                if let Ok(key) = volley_units::domain::routing_key(d.trim()) {
                    specific.insert(key, idx);
                }
            }
            queues.push(Queue::new(
                &q.name,
                q.limits.clone(),
                q.mx_addrs(config.delivery_port).unwrap_or_default(),
            ));
        }
        let mut made = Queues {
            domains: Vec::new(),
            free: Vec::new(),
            by_name: HashMap::new(),
            specific,
            queues,
            policy: config.scheduler.policy,
            retry: BTreeMap::new(),
            seq: 0,
            waiting: HashSet::new(),
            idle: HashMap::new(),
            queued: 0,
            learned: HashMap::new(),
            pools: Vec::new(),
            free_pools: Vec::new(),
            sites: HashMap::new(),
            site_of: HashMap::new(),
            held: HashMap::new(),
            fallback_of: Vec::new(),
            cluster: None,
        };
        made.link_fallbacks();
        made
    }

    /// Gives each queue whose settings name a fallback relay its fallback
    /// queue: one per relay, with the settings of the first queue that
    /// names it (less the relay).
    fn link_fallbacks(&mut self) {
        let mut linked: HashSet<SocketAddr> = HashSet::new();
        let mut fallback_of = vec![None; self.queues.len()];
        for (q, slot) in fallback_of.iter_mut().enumerate() {
            let queue = &self.queues[q];
            if queue.relay.is_some() || queue.retired {
                continue;
            }
            let settings = queue.settings.clone();
            let Some(relay) = settings.fallback_relay else {
                continue;
            };
            let found = self.queues.iter().position(|x| x.relay == Some(relay));
            let f = match found {
                Some(f) if linked.contains(&relay) => f,
                Some(f) => {
                    let mut s = (*settings).clone();
                    s.fallback_relay = None;
                    self.update(f, &s, vec![relay]);
                    f
                }
                None => self.add_fallback_queue(relay, &settings),
            };
            linked.insert(relay);
            *slot = Some(f);
        }
        fallback_of.resize(self.queues.len(), None);
        self.fallback_of = fallback_of;
    }

    /// The fallback queue of queue `q`, when it has one.
    pub(crate) fn fallback_of(&self, q: usize) -> Option<usize> {
        self.fallback_of.get(q).copied().flatten()
    }

    /// Adds a queue that takes what others give up on (the fallback relay);
    /// returns its index.
    fn add_fallback_queue(&mut self, relay: SocketAddr, settings: &QueueSettings) -> usize {
        let mut settings = settings.clone();
        settings.fallback_relay = None;
        let mut queue = Queue::new("fallback", settings, vec![relay]);
        queue.relay = Some(relay);
        self.queues.push(queue);
        self.queues.len() - 1
    }

    pub(crate) fn domain(&self, d: DomainId) -> &Domain {
        self.domains[d].as_ref().expect("live domain")
    }

    fn dom(&mut self, d: DomainId) -> &mut Domain {
        self.domains[d].as_mut().expect("live domain")
    }

    pub(crate) fn queue(&self, q: usize) -> &Queue {
        &self.queues[q]
    }

    /// Recipients queued in this shard (waiting, retrying or in flight).
    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// The domain's id, creating its queue on first use. `queue` forces a
    /// queue (the fallback); otherwise the specific queue for the name, or
    /// the general queue.
    pub(crate) fn domain_id(&mut self, name: &str, queue: Option<usize>) -> DomainId {
        let key = match queue {
            Some(q) if q != GENERAL && !self.specific.contains_key(name) => {
                format!("{name}\u{0}{q}")
            }
            _ => name.to_string(),
        };
        if let Some(&d) = self.by_name.get(key.as_str()) {
            return d;
        }
        let queue = queue.unwrap_or_else(|| self.specific.get(name).copied().unwrap_or(GENERAL));
        let rc: Rc<str> = key.into();
        let d = self.free.pop().unwrap_or_else(|| {
            self.domains.push(None);
            self.domains.len() - 1
        });
        let rate = self.learned.remove(&rc).map(|(c, _)| c);
        let pool = self.add_pool(Pool::alone(d, rate));
        self.domains[d] = Some(Domain {
            name: name.into(),
            key: rc.clone(),
            queue,
            pending: VecDeque::new(),
            retrying: 0,
            in_flight: 0,
            conns: 0,
            waiting: false,
            hinted: false,
            pool,
        });
        self.by_name.insert(rc.clone(), d);
        if let Some(site) = self.site_of.get(&rc).cloned() {
            self.join_site(d, site);
        }
        d
    }

    fn add_pool(&mut self, pool: Pool) -> PoolId {
        match self.free_pools.pop() {
            Some(p) => {
                self.pools[p] = Some(pool);
                p
            }
            None => {
                self.pools.push(Some(pool));
                self.pools.len() - 1
            }
        }
    }

    fn pool(&self, d: DomainId) -> &Pool {
        self.pools[self.domain(d).pool].as_ref().expect("live pool")
    }

    fn pool_mut(&mut self, d: DomainId) -> &mut Pool {
        let p = self.domain(d).pool;
        self.pools[p].as_mut().expect("live pool")
    }

    /// Domain `d`'s MX hosts make the site `key`: from now on it shares
    /// that site's connections and pace (see [`sites`]). A domain that
    /// belonged to another site leaves it first. The site's pace is the
    /// one learned for it before, or else what `d` learned alone.
    pub(crate) fn join_site(&mut self, d: DomainId, key: Rc<str>) {
        if self.pool(d).site.as_deref() == Some(&*key) {
            return;
        }
        if self.pool(d).site.is_some() {
            self.leave_site(d);
        }
        let own = self.domain(d).pool;
        let dom_key = self.domain(d).key.clone();
        self.site_of.insert(dom_key, key.clone());
        let Some(&site) = self.sites.get(&key) else {
            let learned = self.learned.remove(&key).map(|(c, _)| c);
            let pool = self.pools[own].as_mut().expect("live pool");
            if learned.is_some() {
                pool.rate = learned;
            }
            pool.site = Some(key.clone());
            self.sites.insert(key, own);
            return;
        };
        let alone = self.pools[own].take().expect("live pool");
        self.free_pools.push(own);
        let pool = self.pools[site].as_mut().expect("live pool");
        pool.members.push(d);
        pool.conns += alone.conns;
        pool.ready.extend(alone.ready);
        self.dom(d).pool = site;
    }

    /// The key of `d`'s site, when it is a member of one.
    pub(crate) fn site_of(&self, d: DomainId) -> Option<&str> {
        self.pool(d).site.as_deref()
    }

    /// Every recipient waiting for a connection (whatever holds its
    /// domain: a suspension, its pace, a full queue) that has been in
    /// Volley for its queue's `max_age` and `grace` more by `now`, out of
    /// the queues as [`Queues::take_all`] takes them, with its domain.
    /// (Recipients waiting for a retry have theirs due by their `max_age`
    /// at the latest, so the last attempt reads the receiver's own reply;
    /// `grace` leaves such a recipient to its connection.) A Composer
    /// waiting in safe mode keeps its own: it is answered when the attempt
    /// ends. A scan of every waiting recipient: the shard runs it every
    /// few seconds, not per event.
    pub(crate) fn take_expired(&mut self, now: Instant, grace: Duration) -> Vec<(DomainId, Node)> {
        let max_age: Vec<Duration> = self
            .queues
            .iter()
            .map(|q| q.settings.max_age + grace)
            .collect();
        let too_old = |q: usize, n: &Node| {
            !n.msg.composer_waits() && now.saturating_duration_since(n.msg.received) >= max_age[q]
        };
        let mut out = Vec::new();
        for (d, slot) in self.domains.iter_mut().enumerate() {
            let Some(dom) = slot else { continue };
            let q = dom.queue;
            if !dom.pending.iter().any(|n| too_old(q, n)) {
                continue;
            }
            let (old, young): (VecDeque<Node>, VecDeque<Node>) =
                dom.pending.drain(..).partition(|n| too_old(q, n));
            dom.pending = young;
            dom.in_flight += old.len();
            out.extend(old.into_iter().map(|n| (d, n)));
        }
        out
    }

    /// Every recipient of `d` not in a transaction (waiting or retrying,
    /// the retrying ones first, to be tried again at once), out of this
    /// shard's queues: the domain moves to the shard that holds its site.
    /// Those in flight finish here.
    pub(crate) fn take_to_move(&mut self, d: DomainId) -> Vec<Node> {
        self.unretry(d);
        let q = self.domain(d).queue;
        let nodes: Vec<Node> = self.dom(d).pending.drain(..).collect();
        self.queues[q].queued -= nodes.len();
        self.queued -= nodes.len();
        self.maybe_remove(d);
        nodes
    }

    /// Domain `d` leaves its site for a pool of its own, with the
    /// connections opened for it (a reload moved it to another queue, or
    /// its MX hosts changed).
    fn leave_site(&mut self, d: DomainId) {
        let p = self.domain(d).pool;
        let own_conns = self.domain(d).conns;
        let key = self.domain(d).key.clone();
        self.site_of.remove(&key);
        let mine: Vec<ConnId> = self
            .idle
            .iter()
            .filter(|(_, (home, _))| *home == d)
            .map(|(c, _)| *c)
            .collect();
        let site = self.pools[p].as_mut().expect("live pool");
        site.members.retain(|m| *m != d);
        site.conns -= own_conns;
        site.ready.retain(|c| !mine.contains(c));
        let empty = site.members.is_empty();
        let mut alone = Pool::alone(d, None);
        alone.conns = own_conns;
        alone.ready = self.idle_in_order(&mine);
        let own = self.add_pool(alone);
        self.dom(d).pool = own;
        if empty {
            self.remove_pool(p);
        }
    }

    /// The idle connections `conns`, oldest idle first.
    fn idle_in_order(&self, conns: &[ConnId]) -> VecDeque<ConnId> {
        let mut v: Vec<(Instant, ConnId)> = conns
            .iter()
            .filter_map(|c| self.idle.get(c).map(|(_, since)| (*since, *c)))
            .collect();
        v.sort();
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// Drops a pool that serves no domain; its pace is kept to be taken up
    /// again, under its site's key or its domain's.
    fn remove_pool(&mut self, p: PoolId) {
        let pool = self.pools[p].take().expect("live pool");
        self.free_pools.push(p);
        if let Some(site) = &pool.site
            && self.sites.get(site) == Some(&p)
        {
            self.sites.remove(site);
        }
        if let (Some(c), Some(site)) = (pool.rate, pool.site) {
            self.learned.insert(site, (c, None));
        }
    }

    /// A new recipient for domain `d`.
    pub(crate) fn push(&mut self, d: DomainId, node: Node) {
        self.queued += 1;
        let q = self.domain(d).queue;
        self.queues[q].queued += 1;
        self.dom(d).pending.push_back(node);
    }

    /// The domain's controller, created from its queue's settings on first
    /// use; `None` when the queue is static.
    pub(crate) fn rate_mut(&mut self, d: DomainId, now: Instant) -> Option<&mut RateController> {
        let dom = self.domains[d].as_ref().expect("live domain");
        let s = &self.queues[dom.queue].settings;
        if !s.adaptive {
            return None;
        }
        let settings = &s.rate;
        let pool = self.pools[dom.pool].as_mut().expect("live pool");
        Some(
            pool.rate
                .get_or_insert_with(|| RateController::new(settings, now)),
        )
    }

    /// The shared budgets of a cluster: adaptive pools pace within them
    /// from now on.
    pub(crate) fn set_cluster(&mut self, board: Option<Arc<Board>>) {
        self.cluster = board;
    }

    /// The domain's controller, as [`rate_mut`](Self::rate_mut), with its
    /// pool's place in the cluster when `[cluster]` is on (looked up by
    /// the site's key, or the domain's, the first time and after the
    /// domain joined or left a site), and the pool's connections.
    pub(crate) fn pace_mut(
        &mut self,
        d: DomainId,
        now: Instant,
    ) -> Option<(&mut RateController, Option<&mut Member>, u32)> {
        self.rate_mut(d, now)?;
        let dom = self.domains[d].as_ref().expect("live domain");
        let pool = self.pools[dom.pool].as_mut().expect("live pool");
        let open = u32::try_from(pool.conns).unwrap_or(u32::MAX);
        if let Some(board) = &self.cluster {
            let key = pool.site.as_deref().unwrap_or(&dom.key);
            if pool.member.as_ref().is_none_or(|m| m.key() != key) {
                pool.member = Some(Member::new(board.share(key)));
            }
        }
        let c = pool.rate.as_mut().expect("made above");
        Some((c, pool.member.as_mut(), open))
    }

    /// After a signal: the pool's place in the cluster learns what its
    /// controller knows now.
    pub(crate) fn publish_pace(&self, d: DomainId) {
        let pool = self.pool(d);
        if let (Some(m), Some(c)) = (&pool.member, &pool.rate) {
            m.publish(c, u32::try_from(pool.conns).unwrap_or(u32::MAX));
        }
    }

    /// The destination of `d` refused a connection ("too many"): the
    /// cluster learns its limit from the connections open across nodes.
    pub(crate) fn connection_refused(&self, d: DomainId) {
        let pool = self.pool(d);
        if let Some(m) = &pool.member {
            m.connection_refused(u32::try_from(pool.conns).unwrap_or(u32::MAX));
        }
    }

    /// The pace of `d` (its site's, when it has one) as logs show it.
    pub(crate) fn rate_snapshot(&self, d: DomainId, now: Instant) -> Option<RateSnapshot> {
        self.pool(d).rate.as_ref().map(|c| c.snapshot(now))
    }

    /// Connections domain `d`'s pool may have now: the queue's per-domain
    /// maximum (per site, for a site), capped by the controller's limit
    /// when adaptive.
    pub(crate) fn conn_limit(&self, d: DomainId) -> usize {
        let dom = self.domain(d);
        let max = self.queues[dom.queue].settings.max_connections_per_domain;
        let pool = self.pool(d);
        let local = match &pool.rate {
            Some(c) => max.min(c.connection_limit() as usize),
            None => max,
        };
        match &pool.member {
            Some(m) => m.conn_limit(local),
            None => local,
        }
    }

    /// Whether the queue of `d` has more connections open than it may
    /// (a reload lowered its limit).
    pub(crate) fn queue_over_limit(&self, d: DomainId) -> bool {
        let q = &self.queues[self.domain(d).queue];
        q.open > q.settings.max_connections
    }

    /// A connection of `d` was refused or failed at `now`: while others are
    /// open, open no more for one adjust interval (they carry the work; new
    /// ones would be refused in a loop, as fast as the others finish
    /// transactions).
    pub(crate) fn hold_growth(&mut self, d: DomainId, now: Instant) {
        let q = self.domain(d).queue;
        let pause = self.queues[q].settings.rate.adjust_interval;
        self.pool_mut(d).hold_until = Some(now + pause);
    }

    /// Whether domain `d` has recipients waiting for a connection.
    pub(crate) fn has_pending(&self, d: DomainId) -> bool {
        !self.domain(d).pending.is_empty()
    }

    /// Whether a connection of `d` has work: recipients of `d` or of
    /// another domain of its site waiting for a connection.
    pub(crate) fn pool_has_pending(&self, d: DomainId) -> bool {
        self.member_with_pending(d).is_some()
    }

    /// `d` when it has recipients waiting, else a domain of its site that
    /// has.
    pub(crate) fn member_with_pending(&self, d: DomainId) -> Option<DomainId> {
        if self.has_pending(d) {
            return Some(d);
        }
        self.pool(d)
            .members
            .iter()
            .copied()
            .find(|m| self.has_pending(*m))
    }

    /// Whether `d` names a live domain (a resume timer may outlive it).
    pub(crate) fn is_live(&self, d: DomainId) -> bool {
        self.domains.get(d).is_some_and(|x| x.is_some())
    }

    /// A resume time came: dispatch the domain again.
    pub(crate) fn resume(&mut self, d: DomainId, now: Instant, acts: &mut Vec<Action>) {
        if !self.is_live(d) {
            return;
        }
        if self.pool(d).resume_at.is_some_and(|t| t <= now) {
            self.pool_mut(d).resume_at = None;
        }
        self.dispatch(d, now, acts);
    }

    /// Decides how the domain's pending work gets connections.
    pub(crate) fn dispatch(&mut self, d: DomainId, now: Instant, acts: &mut Vec<Action>) {
        let q = self.domain(d).queue;
        let s = self.queues[q].settings.clone();
        let batch = s.max_recipients_per_transaction.max(1);
        if self.domain(d).pending.is_empty() {
            return;
        }
        let held = self.held_until(d, now);
        let paced = self.rate_mut(d, now).and_then(|c| c.suspended_until(now));
        if let Some(until) = held.max(paced) {
            let pool = self.pool_mut(d);
            if pool.resume_at.is_none_or(|t| t < until) {
                pool.resume_at = Some(until);
                acts.push(Action::ResumeAt(d, until));
            }
            return;
        }
        let mut limit = self.conn_limit(d);
        let pending = self.domain(d).pending.len();
        let pool = self.pool_mut(d);
        if pool.conns > 0 && pool.hold_until.is_some_and(|t| now < t) {
            limit = limit.min(pool.conns);
        }
        let mut need = pending;
        let mut woken = Vec::new();
        while need > 0 {
            let Some(c) = pool.ready.pop_front() else {
                break;
            };
            woken.push(c);
            need = need.saturating_sub(batch);
        }
        let conns = pool.conns;
        for c in woken {
            self.idle.remove(&c);
            acts.push(Action::Wake(c));
        }
        if need == 0 {
            return;
        }
        let per_conn = s.queued_per_connection.max(1);
        let wanted = s
            .initial_connections
            .max(pending.div_ceil(per_conn))
            .max(1)
            .min(limit);
        let mut to_open = wanted.saturating_sub(conns);
        if conns == 0 {
            to_open = to_open.max(1);
        }
        while to_open > 0 {
            let queue = &mut self.queues[q];
            if queue.open < s.max_connections {
                queue.open += 1;
                queue.peak_open = queue.peak_open.max(queue.open);
                self.dom(d).conns += 1;
                self.pool_mut(d).conns += 1;
                acts.push(Action::Open(d));
                to_open -= 1;
            } else {
                // At the limit the work waits; a domain with no connection at
                // all may take the least recently used idle one's slot.
                if conns == 0
                    && let Some(c) = self.lru_idle(q, d)
                {
                    self.forget_idle(c);
                    acts.push(Action::Evict(c));
                }
                self.dom(d).waiting = true;
                self.waiting.insert(d);
                break;
            }
        }
    }

    fn lru_idle(&self, q: usize, except: DomainId) -> Option<ConnId> {
        let own = self.domain(except).pool;
        self.idle
            .iter()
            .filter(|(_, (d, _))| self.domain(*d).pool != own && self.domain(*d).queue == q)
            .min_by_key(|(c, (_, since))| (*since, **c))
            .map(|(c, _)| *c)
    }

    fn forget_idle(&mut self, c: ConnId) {
        if let Some((d, _)) = self.idle.remove(&c) {
            self.pool_mut(d).ready.retain(|x| *x != c);
        }
    }

    /// Takes the next batch for a connection opened for domain `home`:
    /// from `home`, or else from the next domain of its site with work
    /// that no operator holds. A batch is the first pending recipient and
    /// the ones after it that share its message, up to the queue's
    /// recipients per transaction. Returns the batch's domain with it.
    pub(crate) fn take_batch(&mut self, home: DomainId, now: Instant) -> (DomainId, Vec<Node>) {
        let d = self.next_with_work(home, now).unwrap_or(home);
        (d, self.take_batch_of(d))
    }

    /// The domain a connection of `home` serves next: `home` when it has
    /// work, else its site's members in turn.
    fn next_with_work(&mut self, home: DomainId, now: Instant) -> Option<DomainId> {
        let ready = |q: &Queues, m: DomainId| {
            !q.domain(m).pending.is_empty() && q.held_until(m, now).is_none()
        };
        if ready(self, home) {
            return Some(home);
        }
        let pool = self.pool(home);
        let n = pool.members.len();
        let start = pool.cursor;
        let found = (0..n)
            .map(|i| (start + i) % n)
            .find(|&i| ready(self, self.pool(home).members[i]))?;
        let pool = self.pool_mut(home);
        pool.cursor = (found + 1) % n;
        Some(pool.members[found])
    }

    fn take_batch_of(&mut self, d: DomainId) -> Vec<Node> {
        let q = self.domain(d).queue;
        let max = self.queues[q]
            .settings
            .max_recipients_per_transaction
            .max(1);
        let dom = self.dom(d);
        let mut batch: Vec<Node> = Vec::new();
        while batch.len() < max {
            let same = match (batch.first(), dom.pending.front()) {
                (None, Some(_)) => true,
                // A templated message's recipients each get their own.
                (Some(first), Some(next)) => {
                    !first.msg.is_templated() && Arc::ptr_eq(&first.msg, &next.msg)
                }
                _ => false,
            };
            if !same {
                break;
            }
            batch.push(dom.pending.pop_front().expect("front exists"));
        }
        dom.in_flight += batch.len();
        batch
    }

    /// Connections of `d`'s pool (its site's, or its own) open or opening.
    pub(crate) fn conns_of(&self, d: DomainId) -> usize {
        self.pool(d).conns
    }

    /// Every pending recipient of `d` (when its route fails as a whole).
    pub(crate) fn take_all(&mut self, d: DomainId) -> Vec<Node> {
        let dom = self.dom(d);
        let all: Vec<Node> = dom.pending.drain(..).collect();
        dom.in_flight += all.len();
        all
    }

    /// A recipient taken by `take_batch`/`take_all` finished for good.
    pub(crate) fn finished(&mut self, d: DomainId) {
        let q = self.domain(d).queue;
        self.queues[q].queued -= 1;
        self.queued -= 1;
        self.dom(d).in_flight -= 1;
    }

    /// A recipient taken by `take_batch`/`take_all` waits until `due`.
    pub(crate) fn defer(&mut self, d: DomainId, node: Node, due: Instant) {
        let dom = self.dom(d);
        dom.in_flight -= 1;
        dom.retrying += 1;
        self.seq += 1;
        self.retry.insert((due, self.seq), (d, node));
    }

    /// A recipient taken by `take_batch` goes back to the head of its queue
    /// untouched (its connection ended before trying it).
    pub(crate) fn requeue(&mut self, d: DomainId, node: Node) {
        let dom = self.dom(d);
        dom.in_flight -= 1;
        dom.pending.push_front(node);
    }

    /// A recipient leaves domain `d` for another queue (the fallback).
    pub(crate) fn moved_out(&mut self, d: DomainId) {
        self.finished(d);
    }

    /// The earliest retry due time.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.retry.keys().next().map(|(t, _)| *t)
    }

    /// Moves the recipients due at `now` back into their domains; returns
    /// the domains that got work.
    pub(crate) fn release_due(&mut self, now: Instant) -> Vec<DomainId> {
        let later = self.retry.split_off(&(now, u64::MAX));
        let due = std::mem::replace(&mut self.retry, later);
        let mut touched = Vec::new();
        for (_, (d, node)) in due {
            let dom = self.dom(d);
            dom.retrying -= 1;
            dom.pending.push_back(node);
            if !touched.contains(&d) {
                touched.push(d);
            }
        }
        touched
    }

    /// Connection `c` of domain `d` has nothing to do.
    pub(crate) fn conn_idle(&mut self, d: DomainId, c: ConnId, now: Instant) {
        self.pool_mut(d).ready.push_back(c);
        self.idle.insert(c, (d, now));
    }

    /// Connection `c` stopped waiting by itself (idle timeout).
    pub(crate) fn conn_busy(&mut self, c: ConnId) {
        self.forget_idle(c);
    }

    /// A connection opened for domain `d` closed: its slot goes to the
    /// domain's pool if one of its domains still has work, else to the
    /// waiting domain the policy picks.
    /// `reopen` false: the connection failed while others of the domain
    /// are open; they carry its work, and no replacement is opened.
    pub(crate) fn conn_closed(
        &mut self,
        d: DomainId,
        reopen: bool,
        now: Instant,
        acts: &mut Vec<Action>,
    ) {
        let q = self.domain(d).queue;
        self.queues[q].open -= 1;
        self.dom(d).conns -= 1;
        self.pool_mut(d).conns -= 1;
        if reopen && let Some(m) = self.member_with_pending(d) {
            self.dispatch(m, now, acts);
        }
        while self.queues[q].open < self.queues[q].settings.max_connections {
            let Some(next) = self.pick_waiting(q) else {
                break;
            };
            if !reopen && next == d {
                break;
            }
            self.waiting.remove(&next);
            self.dom(next).waiting = false;
            self.dispatch(next, now, acts);
        }
        self.maybe_remove(d);
    }

    fn pick_waiting(&self, q: usize) -> Option<DomainId> {
        let cands = self
            .waiting
            .iter()
            .copied()
            .filter(|d| self.domain(*d).queue == q && !self.domain(*d).pending.is_empty());
        match self.policy {
            Policy::Largest => {
                cands.max_by_key(|d| (self.domain(*d).pending.len(), usize::MAX - d))
            }
            Policy::Oldest => {
                cands.min_by_key(|d| (self.domain(*d).pending.front().map(|n| n.msg.received), *d))
            }
        }
    }

    /// Domains next in line (waiting for a connection, by policy), for the
    /// resolver to prefetch.
    pub(crate) fn next_in_line(&self, n: usize) -> Vec<Rc<str>> {
        let mut v: Vec<DomainId> = self
            .waiting
            .iter()
            .copied()
            .filter(|d| !self.domain(*d).pending.is_empty())
            .collect();
        match self.policy {
            Policy::Largest => v.sort_by_key(|d| std::cmp::Reverse(self.domain(*d).pending.len())),
            Policy::Oldest => {
                v.sort_by_key(|d| self.domain(*d).pending.front().map(|n| n.msg.received))
            }
        }
        v.truncate(n);
        v.into_iter().map(|d| self.domain(d).name.clone()).collect()
    }

    /// Whether `name` still has recipients queued here (DNS refresh asks).
    pub(crate) fn has_work(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .map(|d| {
                let dom = self.domain(*d);
                dom.depth() > 0
            })
            .unwrap_or(false)
    }

    /// Domains of the general queue holding at least `share` of its queued
    /// recipients (and at least `min` in all), each named once.
    pub(crate) fn hints(&mut self, share: f64, min: usize) -> Vec<(Rc<str>, usize, usize)> {
        let total = self.queues[GENERAL].queued;
        if total < min.max(1) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for dom in self.domains.iter_mut().flatten() {
            let n = dom.depth();
            if dom.queue == GENERAL && !dom.hinted && n as f64 >= share * total as f64 {
                dom.hinted = true;
                out.push((dom.name.clone(), n, total));
            }
        }
        out
    }

    /// Forgets controllers of domains gone for longer than an hour.
    pub(crate) fn prune_learned(&mut self, now: Instant) {
        self.learned.retain(|_, (_, since)| {
            let since = *since.get_or_insert(now);
            now.saturating_duration_since(since) < LEARNED_FOR
        });
        let (sites, learned) = (&self.sites, &self.learned);
        self.site_of
            .retain(|_, site| sites.contains_key(site) || learned.contains_key(site));
    }

    /// The `n` adaptive domains with the most recipients queued (pending,
    /// retrying or in flight), each with its connections and controller
    /// snapshot, for the periodic summary.
    pub(crate) fn top_rates(&self, n: usize, now: Instant) -> Vec<crate::metrics::DomainRate> {
        let mut v: Vec<&Domain> = self
            .domains
            .iter()
            .flatten()
            .filter(|d| self.pool_of(d).rate.is_some())
            .collect();
        v.sort_by_key(|d| std::cmp::Reverse(d.depth()));
        v.truncate(n);
        v.into_iter()
            .filter_map(|d| {
                Some(crate::metrics::DomainRate {
                    domain: d.name.to_string(),
                    queued: d.depth(),
                    connections: d.conns,
                    rate: self.pool_of(d).rate.as_ref()?.snapshot(now),
                })
            })
            .collect()
    }

    /// The domain queues `listing` asks for: of those whose names match,
    /// the first `limit` in its order, with how many matched. Only those
    /// are made into views, so a listing of a few costs the shard little
    /// even with a million domains. Oldest ages are those of the waiting
    /// recipients (the retrying ones wait in the retry timers).
    pub(crate) fn views(&self, listing: &Listing, now: Instant) -> Listed {
        let mut keyed: Vec<(f64, &Domain)> = self
            .domains
            .iter()
            .flatten()
            .filter(|d| listing.filter.as_deref().is_none_or(|f| d.name.contains(f)))
            .map(|d| {
                let key = match listing.by_age {
                    true => oldest_secs(d, now).unwrap_or(0.0),
                    false => d.depth() as f64,
                };
                (key, d)
            })
            .collect();
        let matched = keyed.len();
        let order = |a: &(f64, &Domain), b: &(f64, &Domain)| {
            b.0.total_cmp(&a.0).then_with(|| a.1.name.cmp(&b.1.name))
        };
        if keyed.len() > listing.limit {
            keyed.select_nth_unstable_by(listing.limit, order);
            keyed.truncate(listing.limit);
        }
        keyed.sort_by(order);
        let views = keyed
            .into_iter()
            .map(|(_, d)| DomainView {
                domain: d.name.to_string(),
                queue: self.queues[d.queue].name.to_string(),
                waiting: d.pending.len(),
                retrying: d.retrying,
                in_flight: d.in_flight,
                connections: d.conns,
                site: self.pool_of(d).site.as_deref().map(str::to_string),
                oldest_secs: oldest_secs(d, now),
                suspended: self.hold_of(&d.name, now).map(|h| Suspension {
                    for_secs: h.until.saturating_duration_since(now).as_secs_f64(),
                    reason: h.reason.clone(),
                }),
                rate: self.pool_of(d).rate.as_ref().map(|r| r.snapshot(now)),
            })
            .collect();
        Listed { views, matched }
    }

    /// The recipients of message `id` queued here (waiting or retrying),
    /// with the message; `None` when none is.
    pub(crate) fn find_message(&self, id: u64, now: Instant) -> Option<FoundMessage> {
        let mut found: Option<FoundMessage> = None;
        let mut add = |node: &Node, domain: &Domain, state: &'static str, due: Option<Instant>| {
            let entry = found.get_or_insert_with(|| FoundMessage {
                msg: node.msg.clone(),
                recipients: Vec::new(),
            });
            entry.recipients.push(FoundRecipient {
                index: node.rcpt,
                recipient: node.recipient().to_string(),
                domain: domain.name.to_string(),
                state,
                attempts: node.attempts,
                next_attempt_secs: due.map(|t| t.saturating_duration_since(now).as_secs_f64()),
            });
        };
        for dom in self.domains.iter().flatten() {
            for node in dom.pending.iter().filter(|n| n.msg.id == id) {
                add(node, dom, "waiting", None);
            }
        }
        for ((due, _), (d, node)) in &self.retry {
            if node.msg.id == id {
                add(node, self.domain(*d), "retrying", Some(*due));
            }
        }
        found
    }

    /// Until when an operator's suspension holds domain `d`, if it does.
    pub(crate) fn held_until(&self, d: DomainId, now: Instant) -> Option<Instant> {
        let hold = self.held.get(&self.domain(d).name)?;
        (hold.until > now).then_some(hold.until)
    }

    /// Suspends domain `name` until `until`: no connection opens for it and
    /// open ones take no more work (they finish their transaction).
    pub(crate) fn hold(&mut self, name: &str, until: Instant, reason: String, now: Instant) {
        self.held.retain(|_, h| h.until > now);
        self.held.insert(name.into(), Hold { until, reason });
    }

    /// Ends the suspension of `name` (whether it was suspended is
    /// returned), and gives its waiting recipients connections again.
    pub(crate) fn release(&mut self, name: &str, now: Instant, acts: &mut Vec<Action>) -> bool {
        let was = self.held.remove(name).is_some_and(|h| h.until > now);
        if let Some(&d) = self.by_name.get(name) {
            self.pool_mut(d).resume_at = None;
            self.dispatch(d, now, acts);
        }
        was
    }

    /// The operator's suspension of `name`, if one holds.
    pub(crate) fn hold_of(&self, name: &str, now: Instant) -> Option<&Hold> {
        self.held.get(name).filter(|h| h.until > now)
    }

    /// Moves every recipient of `name` that waits for its next attempt to
    /// the front of its queue, in their order, and dispatches it: a retry
    /// now. Returns how many moved.
    pub(crate) fn flush(&mut self, name: &str, now: Instant, acts: &mut Vec<Action>) -> usize {
        let Some(&d) = self.by_name.get(name) else {
            return 0;
        };
        let n = self.unretry(d);
        self.dispatch(d, now, acts);
        n
    }

    /// Every recipient of `name` not in a transaction now (waiting or
    /// retrying), taken as [`Queues::take_all`] takes them, for an
    /// operator who gives up on the domain.
    pub(crate) fn take_queued(&mut self, name: &str) -> Option<(DomainId, Vec<Node>)> {
        let &d = self.by_name.get(name)?;
        self.unretry(d);
        Some((d, self.take_all(d)))
    }

    /// Moves `d`'s recipients out of the retry timers to the front of its
    /// queue, in their order; how many.
    fn unretry(&mut self, d: DomainId) -> usize {
        let keys: Vec<(Instant, u64)> = self
            .retry
            .iter()
            .filter(|(_, (rd, _))| *rd == d)
            .map(|(k, _)| *k)
            .collect();
        let mut moved = Vec::with_capacity(keys.len());
        for k in &keys {
            if let Some((_, node)) = self.retry.remove(k) {
                moved.push(node);
            }
        }
        let n = moved.len();
        let dom = self.dom(d);
        dom.retrying -= n;
        for node in moved.into_iter().rev() {
            dom.pending.push_front(node);
        }
        n
    }

    /// Removes domain `d` when it is empty and idle.
    pub(crate) fn maybe_remove(&mut self, d: DomainId) {
        let Some(dom) = self.domains[d].as_ref() else {
            return;
        };
        if dom.pending.is_empty() && dom.retrying == 0 && dom.in_flight == 0 && dom.conns == 0 {
            let dom = self.domains[d].take().expect("checked");
            self.by_name.remove(&dom.key);
            let pool = self.pools[dom.pool].as_mut().expect("live pool");
            pool.members.retain(|m| *m != d);
            if pool.members.is_empty() {
                if pool.site.is_none()
                    && let Some(c) = pool.rate.take()
                {
                    self.learned.insert(dom.key.clone(), (c, None));
                }
                self.remove_pool(dom.pool);
            } else if pool.cursor >= pool.members.len() {
                pool.cursor = 0;
            }
            self.waiting.remove(&d);
            self.free.push(d);
        }
    }

    fn pool_of(&self, d: &Domain) -> &Pool {
        self.pools[d.pool].as_ref().expect("live pool")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Budget, Message};
    use bytes::Bytes;
    use std::time::Duration;

    pub(super) fn msg(rcpts: usize) -> Arc<Message> {
        let r: Vec<String> = (0..rcpts).map(|i| format!("u{i}@a.example")).collect();
        Arc::new(Message::new(
            1,
            Instant::now(),
            "s@x.example",
            &r,
            Bytes::from_static(b"x\r\n"),
            None,
            Arc::new(Budget::default()),
        ))
    }

    /// A static configuration (no rate controller) changed by `f`: these
    /// tests are about the queues' own rules.
    pub(super) fn config(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        c.general_queue.adaptive = false;
        f(&mut c);
        c
    }

    #[test]
    fn first_recipient_opens_a_connection_and_batches_share_a_message() {
        let mut q = Queues::new(&config(|c| {
            c.general_queue.max_recipients_per_transaction = 2
        }));
        let d = q.domain_id("a.example", None);
        let m = msg(3);
        for i in 0..3 {
            q.push(d, Node::new(m.clone(), i));
        }
        q.push(d, node());
        let mut acts = Vec::new();
        q.dispatch(d, Instant::now(), &mut acts);
        assert_eq!(acts, vec![Action::Open(d)]);
        assert_eq!(q.take_batch_of(d).len(), 2);
        assert_eq!(
            q.take_batch_of(d).len(),
            1,
            "the third recipient of the same message"
        );
        assert_eq!(q.take_batch_of(d).len(), 1, "another message");
        assert!(q.take_batch_of(d).is_empty());
        assert_eq!(q.queued(), 4);
        for _ in 0..4 {
            q.finished(d);
        }
        assert_eq!(q.queued(), 0);
        let mut acts = Vec::new();
        q.conn_closed(d, true, Instant::now(), &mut acts);
        assert!(acts.is_empty());
        assert!(!q.has_work("a.example"));
        assert_eq!(
            q.domain_id("a.example", None),
            d,
            "removed, and its slot reused"
        );
    }

    #[test]
    fn an_operators_hold_stops_connections_until_it_ends_and_a_flush_retries_now() {
        let mut q = Queues::new(&config(|_| {}));
        let t0 = Instant::now();
        // Held before anything is queued for it.
        q.hold(
            "a.example",
            t0 + Duration::from_secs(60),
            "asked".into(),
            t0,
        );
        let d = q.domain_id("a.example", None);
        q.push(d, node());
        let mut acts = Vec::new();
        q.dispatch(d, t0, &mut acts);
        assert_eq!(
            acts,
            vec![Action::ResumeAt(d, t0 + Duration::from_secs(60))]
        );
        assert_eq!(q.held_until(d, t0), Some(t0 + Duration::from_secs(60)));
        let all = Listing {
            filter: None,
            by_age: false,
            limit: 10,
        };
        let view = &q.views(&all, t0).views[0];
        assert_eq!(view.suspended.as_ref().unwrap().reason, "asked");
        acts.clear();
        assert!(q.release("a.example", t0, &mut acts));
        assert_eq!(acts, vec![Action::Open(d)], "released: a connection opens");
        assert!(
            !q.release("a.example", t0, &mut acts),
            "nothing holds any more"
        );
        // A hold that ran out holds nothing.
        q.hold("a.example", t0 + Duration::from_secs(1), "brief".into(), t0);
        assert_eq!(q.held_until(d, t0 + Duration::from_secs(2)), None);
        // A deferred recipient waits for its due time, unless flushed.
        let batch = q.take_batch_of(d);
        q.defer(
            d,
            batch.into_iter().next().unwrap(),
            t0 + Duration::from_secs(600),
        );
        assert!(!q.has_pending(d));
        acts.clear();
        assert_eq!(
            q.flush("a.example", t0 + Duration::from_secs(2), &mut acts),
            1
        );
        assert!(q.has_pending(d));
        assert_eq!(q.next_due(), None, "taken out of the retry timers");
        assert_eq!(q.flush("other.example", t0, &mut acts), 0);
    }

    #[test]
    fn idle_connections_are_woken_before_new_ones_open() {
        let mut q = Queues::new(&config(|_| {}));
        let d = q.domain_id("a.example", None);
        let mut acts = Vec::new();
        q.push(d, node());
        q.dispatch(d, Instant::now(), &mut acts);
        let _ = q.take_batch_of(d);
        q.finished(d);
        q.conn_idle(d, 7, Instant::now());
        acts.clear();
        q.push(d, node());
        q.dispatch(d, Instant::now(), &mut acts);
        assert_eq!(acts, vec![Action::Wake(7)]);
    }

    #[test]
    fn more_connections_open_as_the_queue_grows_up_to_the_domain_limit() {
        let mut q = Queues::new(&config(|c| {
            c.general_queue.queued_per_connection = 10;
            c.general_queue.max_connections_per_domain = 3;
        }));
        let d = q.domain_id("a.example", None);
        let mut acts = Vec::new();
        for _ in 0..100 {
            q.push(d, node());
            q.dispatch(d, Instant::now(), &mut acts);
        }
        assert_eq!(
            acts.iter().filter(|a| matches!(a, Action::Open(_))).count(),
            3
        );
    }

    #[test]
    fn at_the_queue_limit_a_new_domain_evicts_the_lru_idle_connection_and_waits() {
        let mut q = Queues::new(&config(|c| c.general_queue.max_connections = 2));
        let t0 = Instant::now();
        let mut acts = Vec::new();
        let (a, b, c) = (
            q.domain_id("a.example", None),
            q.domain_id("b.example", None),
            q.domain_id("c.example", None),
        );
        for (d, conn, t) in [(a, 1, 1), (b, 2, 2)] {
            q.push(d, node());
            q.dispatch(d, Instant::now(), &mut acts);
            let _ = q.take_batch_of(d);
            q.finished(d);
            q.conn_idle(d, conn, t0 + Duration::from_secs(t));
        }
        acts.clear();
        q.push(c, node());
        q.dispatch(c, Instant::now(), &mut acts);
        assert_eq!(
            acts,
            vec![Action::Evict(1)],
            "a's connection was idle longest"
        );
        acts.clear();
        q.conn_closed(a, true, Instant::now(), &mut acts);
        assert_eq!(acts, vec![Action::Open(c)]);
    }

    #[test]
    fn a_failed_connection_with_siblings_open_is_not_replaced_at_once() {
        let mut q = Queues::new(&config(|c| c.general_queue.queued_per_connection = 1));
        let d = q.domain_id("a.example", None);
        let mut acts = Vec::new();
        for _ in 0..2 {
            q.push(d, node());
            q.dispatch(d, Instant::now(), &mut acts);
        }
        assert_eq!(acts.len(), 2, "two connections opening");
        acts.clear();
        q.conn_closed(d, false, Instant::now(), &mut acts);
        assert!(acts.is_empty(), "the sibling carries the work");
        q.conn_closed(d, true, Instant::now(), &mut acts);
        assert!(!acts.is_empty(), "the last one is replaced");
        assert!(acts.iter().all(|a| *a == Action::Open(d)));
    }

    #[test]
    fn deferred_recipients_wait_outside_the_domain_queue_until_due() {
        let mut q = Queues::new(&config(|_| {}));
        let d = q.domain_id("a.example", None);
        let now = Instant::now();
        q.push(d, node());
        q.push(d, node());
        let first = q.take_batch_of(d).pop().unwrap();
        q.defer(d, first, now + Duration::from_secs(60));
        assert_eq!(
            q.domain(d).pending(),
            1,
            "ready work is not behind the retry"
        );
        assert!(q.release_due(now + Duration::from_secs(59)).is_empty());
        assert_eq!(q.release_due(now + Duration::from_secs(60)), vec![d]);
        assert_eq!(q.domain(d).pending(), 2);
        assert_eq!(q.queued(), 2);
    }

    #[test]
    fn the_policy_picks_which_waiting_domain_gets_a_freed_slot() {
        let mut q = Queues::new(&config(|c| c.general_queue.max_connections = 1));
        let mut acts = Vec::new();
        let a = q.domain_id("a.example", None);
        q.push(a, node());
        q.dispatch(a, Instant::now(), &mut acts);
        let small = q.domain_id("small.example", None);
        let big = q.domain_id("big.example", None);
        q.push(small, node());
        q.dispatch(small, Instant::now(), &mut acts);
        for _ in 0..5 {
            q.push(big, node());
            q.dispatch(big, Instant::now(), &mut acts);
        }
        assert_eq!(
            &q.next_in_line(2)[..],
            &["big.example".into(), "small.example".into()] as &[Rc<str>]
        );
        let _ = q.take_batch_of(a);
        q.finished(a);
        acts.clear();
        q.conn_closed(a, true, Instant::now(), &mut acts);
        assert_eq!(acts, vec![Action::Open(big)], "largest first");
    }

    #[test]
    fn a_domain_with_a_large_share_of_the_general_queue_earns_one_hint() {
        let mut q = Queues::new(&config(|_| {}));
        let big = q.domain_id("big.example", None);
        let other = q.domain_id("other.example", None);
        for _ in 0..8 {
            q.push(big, node());
        }
        q.push(other, node());
        let h = q.hints(0.5, 5);
        assert_eq!(h.len(), 1);
        assert_eq!(&*h[0].0, "big.example");
        assert!(q.hints(0.5, 5).is_empty(), "once per domain");
    }

    #[test]
    fn a_listing_makes_views_of_the_first_few_only_and_counts_the_rest() {
        let mut q = Queues::new(&config(|_| {}));
        let t0 = Instant::now();
        for (i, n) in [3, 1, 5, 2].into_iter().enumerate() {
            let d = q.domain_id(&format!("d{i}.example"), None);
            for _ in 0..n {
                q.push(d, node());
            }
        }
        let listing = |filter: Option<&str>, limit| Listing {
            filter: filter.map(str::to_string),
            by_age: false,
            limit,
        };
        let listed = q.views(&listing(None, 2), t0);
        assert_eq!(listed.matched, 4);
        let names: Vec<&str> = listed.views.iter().map(|v| v.domain.as_str()).collect();
        assert_eq!(names, ["d2.example", "d0.example"], "deepest first");
        let listed = q.views(&listing(Some("d3"), 10), t0);
        assert_eq!((listed.matched, listed.views[0].depth()), (1, 2));
    }

    pub(super) fn node() -> Node {
        Node::new(msg(1), 0)
    }

    fn opens(acts: &[Action]) -> usize {
        acts.iter().filter(|a| matches!(a, Action::Open(_))).count()
    }

    #[test]
    fn the_controller_caps_the_connections_of_an_adaptive_domain() {
        let mut q = Queues::new(&config(|c| {
            c.general_queue.adaptive = true;
            c.general_queue.queued_per_connection = 1;
            c.general_queue.max_connections_per_domain = 8;
            c.general_queue.rate.initial_connections = 3;
        }));
        let d = q.domain_id("a.example", None);
        let mut acts = Vec::new();
        for _ in 0..20 {
            q.push(d, node());
        }
        q.dispatch(d, Instant::now(), &mut acts);
        assert_eq!(opens(&acts), 3, "min(8 per domain, controller's 3)");
        assert_eq!(q.conn_limit(d), 3);
    }

    #[test]
    fn a_suspended_domain_opens_nothing_and_asks_to_resume_once() {
        let mut q = Queues::new(&config(|c| c.general_queue.adaptive = true));
        let d = q.domain_id("a.example", None);
        let t0 = Instant::now();
        q.push(d, node());
        let until = t0 + Duration::from_secs(60);
        q.rate_mut(d, t0)
            .unwrap()
            .apply(t0, &crate::rate::Action::Suspend(Duration::from_secs(60)));
        let mut acts = Vec::new();
        q.dispatch(d, t0, &mut acts);
        q.push(d, node());
        q.dispatch(d, t0 + Duration::from_secs(1), &mut acts);
        assert_eq!(acts, vec![Action::ResumeAt(d, until)]);
        acts.clear();
        q.resume(d, until, &mut acts);
        assert_eq!(acts, vec![Action::Open(d)], "the suspension is over");
    }

    #[test]
    fn a_static_queue_has_no_controller() {
        let mut q = Queues::new(&config(|c| c.general_queue.max_connections_per_domain = 20));
        let d = q.domain_id("a.example", None);
        assert!(q.rate_mut(d, Instant::now()).is_none());
        assert_eq!(q.conn_limit(d), 20);
    }

    #[test]
    fn what_a_domain_learned_survives_its_queue_for_a_while() {
        let mut q = Queues::new(&config(|c| c.general_queue.adaptive = true));
        let t0 = Instant::now();
        let d = q.domain_id("a.example", None);
        q.rate_mut(d, t0)
            .unwrap()
            .on_reply(t0, 421, None, "slow down");
        q.maybe_remove(d);
        assert!(!q.is_live(d));
        let d = q.domain_id("a.example", None);
        assert_eq!(q.rate_mut(d, t0).unwrap().snapshot(t0).throttles, 1);
        q.maybe_remove(d);
        q.prune_learned(t0);
        q.prune_learned(t0 + LEARNED_FOR);
        let d = q.domain_id("a.example", None);
        assert_eq!(
            q.rate_mut(d, t0).unwrap().snapshot(t0).throttles,
            0,
            "forgotten after an hour"
        );
    }

    #[test]
    fn a_specific_queue_written_in_unicode_takes_its_a_label_recipients() {
        let mut c = config(|_| {});
        c.queues.push(crate::config::SpecificQueue {
            name: "books".into(),
            domains: vec!["Bücher.Example.".into()],
            ..Default::default()
        });
        let mut q = Queues::new(&c);
        let d = q.domain_id("xn--bcher-kva.example", None);
        assert_eq!(q.domain(d).queue, 1, "the specific queue");
        let other = q.domain_id("other.example", None);
        assert_eq!(q.domain(other).queue, GENERAL);
    }

    fn site(q: &mut Queues, d: DomainId, addr: &str) {
        let hosts = [SiteHost {
            name: "mx.provider.example",
            addr: addr.parse().unwrap(),
        }];
        let key = site_key(q.domain(d).queue, false, &hosts, &[]).unwrap();
        q.join_site(d, key);
    }

    #[test]
    fn domains_of_one_site_share_its_pace_connections_and_idle_pool() {
        let mut q = Queues::new(&config(|c| {
            c.general_queue.adaptive = true;
            c.general_queue.queued_per_connection = 1;
            c.general_queue.max_connections_per_domain = 3;
            c.general_queue.rate.initial_connections = 3;
        }));
        let t0 = Instant::now();
        let (a, b) = (
            q.domain_id("a.example", None),
            q.domain_id("b.example", None),
        );
        let mut acts = Vec::new();
        for _ in 0..5 {
            q.push(a, node());
        }
        q.dispatch(a, t0, &mut acts);
        assert_eq!(opens(&acts), 3);
        site(&mut q, a, "10.0.0.1");
        site(&mut q, b, "10.0.0.1");
        for _ in 0..5 {
            q.push(b, node());
        }
        acts.clear();
        q.dispatch(b, t0, &mut acts);
        assert_eq!(
            opens(&acts),
            0,
            "a's three connections fill the site's limit"
        );
        assert_eq!((q.conns_of(b), q.conn_limit(b)), (3, 3));
        // A connection opened for a carries b's recipients once a has none.
        for _ in 0..5 {
            let (from, batch) = q.take_batch(a, t0);
            assert_eq!((from, batch.len()), (a, 1));
            q.finished(a);
        }
        let (from, batch) = q.take_batch(a, t0);
        assert_eq!((from, batch.len()), (b, 1));
        q.finished(b);
        // An idle connection of a is woken for b's work.
        q.conn_idle(a, 7, t0);
        acts.clear();
        q.dispatch(b, t0, &mut acts);
        assert_eq!(acts, vec![Action::Wake(7)]);
        let all = Listing {
            filter: Some("b.example".into()),
            by_age: false,
            limit: 1,
        };
        assert_eq!(
            q.views(&all, t0).views[0].site.as_deref(),
            Some("0 plain 10.0.0.1")
        );
        q.rate_mut(a, t0)
            .unwrap()
            .on_reply(t0, 421, None, "slow down");
        assert_eq!(
            q.rate_mut(b, t0).unwrap().snapshot(t0).throttles,
            1,
            "one controller for both"
        );
    }

    #[test]
    fn a_domain_queued_again_rejoins_its_site_and_a_site_keeps_what_it_learned() {
        let mut q = Queues::new(&config(|c| c.general_queue.adaptive = true));
        let t0 = Instant::now();
        let (a, b) = (
            q.domain_id("a.example", None),
            q.domain_id("b.example", None),
        );
        site(&mut q, a, "10.0.0.1");
        site(&mut q, b, "10.0.0.1");
        q.rate_mut(a, t0)
            .unwrap()
            .on_reply(t0, 421, None, "slow down");
        q.maybe_remove(b);
        let b = q.domain_id("b.example", None);
        assert_eq!(
            q.rate_mut(b, t0).unwrap().snapshot(t0).throttles,
            1,
            "rejoined"
        );
        q.maybe_remove(a);
        q.maybe_remove(b);
        let c = q.domain_id("c.example", None);
        site(&mut q, c, "10.0.0.1");
        assert_eq!(
            q.rate_mut(c, t0).unwrap().snapshot(t0).throttles,
            1,
            "a new member takes up what the site learned"
        );
    }

    #[test]
    fn a_domain_whose_hosts_change_leaves_its_site_with_its_own_connections() {
        let mut q = Queues::new(&config(|c| c.general_queue.queued_per_connection = 1));
        let t0 = Instant::now();
        let (a, b) = (
            q.domain_id("a.example", None),
            q.domain_id("b.example", None),
        );
        let mut acts = Vec::new();
        for d in [a, b] {
            q.push(d, node());
            q.push(d, node());
            q.dispatch(d, t0, &mut acts);
        }
        site(&mut q, a, "10.0.0.1");
        site(&mut q, b, "10.0.0.1");
        assert_eq!(q.conns_of(a), 4);
        q.conn_idle(b, 9, t0);
        site(&mut q, b, "10.0.0.2");
        assert_eq!((q.conns_of(a), q.conns_of(b)), (2, 2));
        acts.clear();
        q.dispatch(a, t0, &mut acts);
        assert!(
            !acts.contains(&Action::Wake(9)),
            "b's idle connection left with it"
        );
        let mut acts = Vec::new();
        q.dispatch(b, t0, &mut acts);
        assert_eq!(acts, vec![Action::Wake(9)]);
    }

    #[test]
    fn after_a_refused_connection_no_more_open_for_an_interval() {
        let mut q = Queues::new(&config(|c| {
            c.general_queue.adaptive = true;
            c.general_queue.queued_per_connection = 1;
            c.general_queue.rate.initial_connections = 4;
        }));
        let d = q.domain_id("a.example", None);
        let t0 = Instant::now();
        let mut acts = Vec::new();
        for _ in 0..2 {
            q.push(d, node());
        }
        q.dispatch(d, t0, &mut acts);
        assert_eq!(opens(&acts), 2);
        q.hold_growth(d, t0);
        for _ in 0..10 {
            q.push(d, node());
        }
        acts.clear();
        q.dispatch(d, t0 + Duration::from_millis(10), &mut acts);
        assert_eq!(opens(&acts), 0, "held: the two open carry the work");
        q.dispatch(d, t0 + Duration::from_secs(1), &mut acts);
        assert_eq!(opens(&acts), 2, "up to the limit of 4 again");
    }
}
