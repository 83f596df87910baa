//! A shard's core: every per-shard decision, with no I/O, no tasks and no
//! clock of its own.
//!
//! The core holds the shard's queue map, the pace of each domain, the host
//! marks (an MX address that failed is left alone for a while), fallback
//! routing and the retry and resume timers. Every call takes the time as
//! `now`. What the drivers must do in answer comes out as [`Action`]s
//! (open a connection, wake one, evict one) and, for a recipient's attempt,
//! as a [`Settled`] record (what to log, whom to tell, what the journal
//! learns). [`Core::poll_timeout`] says when the core next wants
//! [`Core::handle_timeout`]: the shard runs one timer on it.
//!
//! The drivers on top (ingest sessions, delivery connections, the shard's
//! own task) only move bytes and carry out these answers, so every policy
//! here is tested on a simulated clock.

mod pace;
mod settle;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use volley_smtp::Reply;

use crate::config::{Config, QueueSettings};
use crate::message::{Message, Node};
use crate::metrics::DomainRate;
use crate::queues::{self, Queues, SiteHost, site_key};
use crate::rate::{RuleError, RuleSet};
use crate::routing::Moved;

pub(crate) use crate::queues::{ConnId, DomainId};
pub(crate) use pace::Throttled;
pub(crate) use settle::{Settled, Verdict};

/// How long past its `max_age` a recipient waiting for a connection is
/// left before it is expired without an attempt: long enough for one whose
/// last retry just came due to be taken by its connection.
pub(crate) const EXPIRY_GRACE: Duration = Duration::from_secs(2);

/// How many times in a row a throttling reply may send a recipient back to
/// its queue before it is deferred to its retry schedule like any 4yz.
pub(crate) const MAX_THROTTLE_REQUEUES: u8 = 5;

/// What the shard's drivers must do after a call into the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Hand work to this idle connection.
    Wake(ConnId),
    /// Open a new connection for this domain (its slot is already counted).
    Open(DomainId),
    /// Ask this idle connection to quit: another domain needs its slot.
    Evict(ConnId),
}

/// Where a connection of a domain goes, read once when it opens.
pub(crate) struct Route {
    pub(crate) name: Rc<str>,
    pub(crate) settings: Arc<QueueSettings>,
    /// Fixed MX addresses (no DNS), when the queue has them.
    pub(crate) fixed: Rc<[SocketAddr]>,
    /// The queue and its generation when the route was read: once either
    /// changes (a reload), the connection closes after its transaction.
    queue: usize,
    generation: u64,
}

/// What the shard's periodic housekeeping learns from the core.
pub(crate) struct Housekeeping {
    /// Domains next in line for a connection, for the resolver to prefetch.
    pub(crate) next_in_line: Vec<Rc<str>>,
    /// Domains of the general queue worth a specific queue:
    /// (domain, its recipients, all the general queue's).
    pub(crate) hints: Vec<(Rc<str>, usize, usize)>,
    /// The busiest adaptive domains, for the summary.
    pub(crate) top_rates: Vec<DomainRate>,
}

/// One shard's decisions.
pub(crate) struct Core {
    index: usize,
    queues: Queues,
    /// Operator rules matched against replies before the controller reads
    /// them.
    rules: RuleSet,
    /// MX addresses that failed, with when they may be tried again.
    host_down: HashMap<SocketAddr, Instant>,
    /// Suspended domains and when their controller lets them go again.
    resumes: BTreeSet<(Instant, DomainId)>,
    /// What the drivers have yet to carry out, oldest first.
    actions: Vec<Action>,
    /// Scratch space for what the queue map decided.
    decided: Vec<queues::Action>,
    /// Domains (by routing key) that moved to the shard holding their
    /// site: what still arrives for them goes there.
    forward: HashMap<Rc<str>, usize>,
    /// Recipients for the drivers to send to other shards.
    moving: Vec<(usize, Moved)>,
}

/// Where a domain's connection goes on, once its MX hosts are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SiteVerdict {
    /// Deliver (the domain is alone, or joined its site here).
    Go,
    /// Its site has all the connections it may (they carry its work), or
    /// is on another shard (its recipients went there).
    Stop,
    /// Its site may be on another shard: ask the site owners which, with
    /// this key, then [`Core::settle_site`].
    Claim(Rc<str>),
}

impl Core {
    /// Shard `index`'s core for `config` (whose rules the config loader
    /// has already checked).
    pub(crate) fn new(index: usize, config: &Config) -> Result<Core, RuleError> {
        let rules = RuleSet::new(&config.rules_in_force())?;
        let queues = Queues::new(config);
        Ok(Core {
            index,
            queues,
            rules,
            host_down: HashMap::new(),
            resumes: BTreeSet::new(),
            actions: Vec::new(),
            decided: Vec::new(),
            forward: HashMap::new(),
            moving: Vec::new(),
        })
    }

    /// Paces adaptive destinations within the budgets shared with the
    /// other hosts of a cluster (`[cluster]`), from now on.
    pub(crate) fn set_cluster(&mut self, board: Option<Arc<crate::cluster::Board>>) {
        self.queues.set_cluster(board);
    }

    /// Queues recipients of `msg` that this shard owns: (recipient index,
    /// routing key of its domain).
    pub(crate) fn accept(&mut self, msg: &Arc<Message>, rcpts: &[(u32, Box<str>)], now: Instant) {
        let mut last: Option<(DomainId, &str)> = None;
        let mut touched = Vec::new();
        for (rcpt, key) in rcpts {
            if let Some(&shard) = self.forward.get(&**key) {
                self.send_away(shard, key, vec![Node::new(msg.clone(), *rcpt)]);
                continue;
            }
            let d = match last {
                Some((d, k)) if k == &**key => d,
                _ => self.queues.domain_id(key, None),
            };
            last = Some((d, key));
            self.queues.push(d, Node::new(msg.clone(), *rcpt));
            if !touched.contains(&d) {
                touched.push(d);
            }
        }
        for d in touched {
            self.dispatch(d, now);
        }
    }

    /// The actions decided since the last call, oldest first.
    pub(crate) fn take_actions(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.actions)
    }

    /// Recipients to send to other shards (shard, domain and recipients)
    /// since the last call; they have left this shard's queues.
    pub(crate) fn take_moving(&mut self) -> Vec<(usize, Moved)> {
        std::mem::take(&mut self.moving)
    }

    fn send_away(&mut self, shard: usize, key: &str, nodes: Vec<Node>) {
        match self.moving.last_mut() {
            Some((s, m)) if *s == shard && *m.key == *key => m.nodes.extend(nodes),
            _ => self.moving.push((
                shard,
                Moved {
                    key: key.into(),
                    nodes,
                },
            )),
        }
    }

    /// Recipients of domain `key` that another shard sent here, where the
    /// domain's site is: queued with their attempts, and what arrives for
    /// the domain is no longer forwarded.
    pub(crate) fn adopt(&mut self, moved: Moved, now: Instant) {
        self.forward.remove(&*moved.key);
        let d = self.queues.domain_id(&moved.key, None);
        for node in moved.nodes {
            self.queues.push(d, node);
        }
        self.dispatch(d, now);
    }

    /// When the core next wants [`Core::handle_timeout`]: the earliest
    /// retry due or suspension end.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let retry = self.queues.next_due();
        let resume = self.resumes.first().map(|(t, _)| *t);
        match (retry, resume) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves the retries due at `now` back into their queues and lets
    /// suspended domains whose time has come open connections again.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, d)) = self.resumes.first() {
            if at > now {
                break;
            }
            self.resumes.pop_first();
            let mut decided = std::mem::take(&mut self.decided);
            self.queues.resume(d, now, &mut decided);
            self.absorb(decided);
        }
        for d in self.queues.release_due(now) {
            self.dispatch(d, now);
        }
    }

    /// Recipients queued in this shard (waiting, retrying or in flight).
    /// An operator suspends domain `name` for `duration`.
    pub(crate) fn suspend(&mut self, name: &str, duration: Duration, reason: String, now: Instant) {
        self.queues.hold(name, now + duration, reason, now);
    }

    /// An operator ends the suspension of `name`; whether one held.
    pub(crate) fn resume(&mut self, name: &str, now: Instant) -> bool {
        let mut decided = std::mem::take(&mut self.decided);
        let was = self.queues.release(name, now, &mut decided);
        self.absorb(decided);
        was
    }

    /// An operator asks for a retry now of `name`'s deferred recipients;
    /// how many there were.
    pub(crate) fn flush(&mut self, name: &str, now: Instant) -> usize {
        let mut decided = std::mem::take(&mut self.decided);
        let n = self.queues.flush(name, now, &mut decided);
        self.absorb(decided);
        n
    }

    /// An operator gives up on `name`: every recipient not in a
    /// transaction is settled with `reply` (a 5yz), as a bounce.
    pub(crate) fn bounce_queued(
        &mut self,
        name: &str,
        reply: &Reply,
        now: Instant,
    ) -> Vec<Settled> {
        let Some((d, nodes)) = self.queues.take_queued(name) else {
            return Vec::new();
        };
        let settled = nodes
            .into_iter()
            .map(|n| self.settle(d, n, reply, Some(crate::dlog::Category::Policy), now))
            .collect();
        self.queues.maybe_remove(d);
        settled
    }

    /// Message `id`'s recipients queued on this shard.
    pub(crate) fn find_message(
        &self,
        id: u64,
        now: Instant,
    ) -> Option<crate::queues::FoundMessage> {
        self.queues.find_message(id, now)
    }

    /// The domain queues as the admin API lists them.
    pub(crate) fn views(
        &self,
        listing: &crate::queues::Listing,
        now: Instant,
    ) -> crate::queues::Listed {
        self.queues.views(listing, now)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queues.queued()
    }

    /// Where connections of `d` go.
    pub(crate) fn route(&self, d: DomainId) -> Route {
        let dom = self.queues.domain(d);
        let queue = self.queues.queue(dom.queue);
        Route {
            name: dom.name.clone(),
            settings: queue.settings.clone(),
            fixed: queue.fixed_mx.clone(),
            queue: dom.queue,
            generation: queue.generation,
        }
    }

    /// Whether a connection of `d` opened on `route` still has the
    /// domain's queue and settings (a reload may have changed either).
    pub(crate) fn route_is_current(&self, d: DomainId, route: &Route) -> bool {
        let q = self.queues.domain(d).queue;
        q == route.queue && self.queues.queue(q).generation == route.generation
    }

    /// Applies a reloaded configuration: the operator's rules, then the
    /// queues (see [`Queues::reconfigure`]). Rules that do not compile
    /// change nothing.
    pub(crate) fn reconfigure(&mut self, config: &Config, now: Instant) -> Result<(), RuleError> {
        self.rules = RuleSet::new(&config.rules_in_force())?;
        let mut decided = std::mem::take(&mut self.decided);
        self.queues.reconfigure(config, now, &mut decided);
        self.absorb(decided);
        Ok(())
    }

    /// Whether MX address `addr` failed recently and is still left alone.
    pub(crate) fn is_host_down(&mut self, addr: SocketAddr, now: Instant) -> bool {
        match self.host_down.get(&addr) {
            Some(until) if *until > now => true,
            Some(_) => {
                self.host_down.remove(&addr);
                false
            }
            None => false,
        }
    }

    /// MX address `addr` failed at `now`: leave it alone for the queue's
    /// `host_down_for`.
    pub(crate) fn mark_host_down(&mut self, d: DomainId, addr: SocketAddr, now: Instant) {
        let q = self.queues.domain(d).queue;
        let for_ = self.queues.queue(q).settings.host_down_for;
        self.host_down.insert(addr, now + for_);
    }

    /// Whether domain `d` has recipients waiting for a connection.
    #[cfg(test)]
    pub(crate) fn has_pending(&self, d: DomainId) -> bool {
        self.queues.has_pending(d)
    }

    /// The next batch for a connection opened for `d`: recipients of one
    /// message, of `d` or of another domain of its site, up to the queue's
    /// recipients per transaction (empty: nothing to do), with their
    /// domain.
    pub(crate) fn take_batch(&mut self, d: DomainId, now: Instant) -> (DomainId, Vec<Node>) {
        self.queues.take_batch(d, now)
    }

    /// Whether a connection of `d` has work: recipients of `d`, or of
    /// another domain of its site, waiting.
    pub(crate) fn pool_has_pending(&self, d: DomainId) -> bool {
        self.queues.pool_has_pending(d)
    }

    /// A connection of `d` found its MX hosts, `hosts` (DNSSEC proved the
    /// records when `mx_secure`): unless its queue keeps domains alone,
    /// `d` belongs to the site those hosts make. When `d` is already a
    /// member, the verdict says whether this connection fits the site's
    /// limit; otherwise the drivers must ask which shard holds the site.
    pub(crate) fn find_site(
        &mut self,
        d: DomainId,
        mx_secure: bool,
        hosts: &[SiteHost<'_>],
    ) -> SiteVerdict {
        let dom = self.queues.domain(d);
        let settings = &self.queues.queue(dom.queue).settings;
        if !settings.mx_rollup {
            return SiteVerdict::Go;
        }
        let Some(key) = site_key(dom.queue, mx_secure, hosts, &settings.site_suffixes) else {
            return SiteVerdict::Go;
        };
        if self.queues.site_of(d) == Some(&*key) {
            return self.site_verdict(d);
        }
        SiteVerdict::Claim(key)
    }

    /// Site `key` of `d` is held by shard `owner`: here, `d` joins it; on
    /// another shard, `d`'s queued recipients (waiting or retrying) go
    /// there, and what arrives for it later follows them. What `d` has in
    /// flight here finishes here.
    pub(crate) fn settle_site(&mut self, d: DomainId, key: Rc<str>, owner: usize) -> SiteVerdict {
        if owner == self.index {
            self.queues.join_site(d, key);
            return self.site_verdict(d);
        }
        let name = self.queues.domain(d).name.clone();
        let nodes = self.queues.take_to_move(d);
        self.forward.insert(name.clone(), owner);
        if !nodes.is_empty() {
            self.send_away(owner, &name, nodes);
        }
        SiteVerdict::Stop
    }

    fn site_verdict(&self, d: DomainId) -> SiteVerdict {
        match self.queues.conns_of(d) <= self.queues.conn_limit(d) {
            true => SiteVerdict::Go,
            false => SiteVerdict::Stop,
        }
    }

    /// Connection `c` of `d` waits for work.
    pub(crate) fn conn_idle(&mut self, d: DomainId, c: ConnId, now: Instant) {
        self.queues.conn_idle(d, c, now);
    }

    /// Connection `c` stopped waiting (woken, or by its idle timeout).
    pub(crate) fn conn_busy(&mut self, c: ConnId) {
        self.queues.conn_busy(c);
    }

    /// A recipient taken for a connection goes back to the head of its
    /// queue untouched (the connection ended before trying it).
    pub(crate) fn requeue(&mut self, d: DomainId, node: Node) {
        self.queues.requeue(d, node);
    }

    /// A connection of `d` ended. `reopen` false: it failed while others
    /// of the domain are open, which carry its work.
    pub(crate) fn conn_ended(&mut self, d: DomainId, reopen: bool, now: Instant) {
        let mut decided = std::mem::take(&mut self.decided);
        self.queues.conn_closed(d, reopen, now, &mut decided);
        self.absorb(decided);
    }

    /// No MX host of `d` greeted. Returns whether the slot should be
    /// opened again; when not, other connections of the domain carry its
    /// work. Otherwise every pending recipient of `d` is settled with
    /// `reply` (deferred for a transient one).
    pub(crate) fn open_failed(
        &mut self,
        d: DomainId,
        tried_a_host: bool,
        reply: &Reply,
        category: crate::dlog::Category,
        now: Instant,
    ) -> (bool, Vec<Settled>) {
        if tried_a_host && self.queues.conns_of(d) > 1 {
            return (false, Vec::new());
        }
        let nodes = self.queues.take_all(d);
        let settled = nodes
            .into_iter()
            .map(|n| self.settle(d, n, reply, Some(category), now))
            .collect();
        (true, settled)
    }

    /// What the periodic housekeeping needs, after forgetting what was
    /// learned of domains gone for long.
    pub(crate) fn housekeeping(
        &mut self,
        prefetch: usize,
        hint_share: f64,
        hint_min_queued: usize,
        top: usize,
        now: Instant,
    ) -> Housekeeping {
        self.queues.prune_learned(now);
        Housekeeping {
            next_in_line: self.queues.next_in_line(prefetch),
            hints: self.queues.hints(hint_share, hint_min_queued),
            top_rates: self.queues.top_rates(top, now),
        }
    }

    /// Settles as expired (or hands to the fallback relay, as after a
    /// last failed attempt) every recipient waiting for a connection
    /// longer than its queue's `max_age` and [`EXPIRY_GRACE`]: its domain
    /// or site suspended, its pace slow, its queue full, it expires on
    /// time all the same. (One waiting for a retry gets its last attempt
    /// by its `max_age`: see [`Core::settle`].) Returns them with the
    /// reply they are reported with.
    pub(crate) fn expire(&mut self, now: Instant) -> (Vec<Settled>, Reply) {
        let reply = Reply::new(
            451,
            volley_smtp::EnhancedCode::new(4, 4, 7),
            "delivery time expired: waited longer than its queue's max_age",
        );
        let expired = self.queues.take_expired(now, EXPIRY_GRACE);
        let settled = expired
            .into_iter()
            .map(|(d, node)| self.settle(d, node, &reply, Some(crate::dlog::Category::Other), now))
            .collect();
        (settled, reply)
    }

    /// Whether domain `name` still has recipients here (DNS refresh asks).
    pub(crate) fn has_work(&self, name: &str) -> bool {
        self.queues.has_work(name)
    }

    /// Lets the queue map decide how `d`'s pending work gets connections.
    fn dispatch(&mut self, d: DomainId, now: Instant) {
        let mut decided = std::mem::take(&mut self.decided);
        self.queues.dispatch(d, now, &mut decided);
        self.absorb(decided);
    }

    /// Takes what the queue map decided: connection work for the drivers,
    /// suspensions for the timer.
    fn absorb(&mut self, mut decided: Vec<queues::Action>) {
        for a in decided.drain(..) {
            match a {
                queues::Action::Open(d) => self.actions.push(Action::Open(d)),
                queues::Action::Wake(c) => self.actions.push(Action::Wake(c)),
                queues::Action::Evict(c) => self.actions.push(Action::Evict(c)),
                queues::Action::ResumeAt(d, at) => {
                    self.resumes.insert((at, d));
                }
            }
        }
        self.decided = decided;
    }
}
