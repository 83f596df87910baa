//! A shard: one OS thread pinned to a core, running its own tokio-uring
//! runtime, owning a partition of the domain queues, their connections and
//! its own DNS cache. Per-domain state is touched by this thread only.
//!
//! Recipients reach their owner shard (`hash(routing key) % shards`) over a
//! channel carrying the message by reference (`Arc`): the body is never
//! copied between shards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use volley_dns::MxResolver;

use crate::config::{Config, ListenerConfig};
use crate::dlog::DeliveryLog;
use crate::message::{Budget, Message, Node};
use crate::metrics::{Counters, Latencies, RateBoard, bump};
use crate::queues::{Action, ConnId, DomainId, Queues};
use crate::rate::RuleSet;

/// How many of a shard's busiest domains it publishes for the summary.
const TOP_RATES: usize = 10;

/// Recipients of one message handed to their owner shard.
pub(crate) struct Handoff {
    pub(crate) msg: Arc<Message>,
    /// (recipient index, routing key of its domain).
    pub(crate) rcpts: Vec<(u32, Box<str>)>,
}

/// State shared by every shard: rarely written, or atomic.
pub(crate) struct Shared {
    pub(crate) config: ArcSwap<Config>,
    pub(crate) counters: Counters,
    pub(crate) budget: Arc<Budget>,
    pub(crate) inboxes: Vec<mpsc::UnboundedSender<Handoff>>,
    pub(crate) latencies: Vec<Arc<Latencies>>,
    /// Each shard's busiest adaptive domains, published every half second.
    pub(crate) rates: Vec<Arc<RateBoard>>,
    pub(crate) dlog: DeliveryLog,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) ingest_total: AtomicUsize,
    pub(crate) ingest_per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) next_source: AtomicU64,
    /// Durable mode's journal writers and quota; `None`: memory only.
    pub(crate) durable: Option<Arc<crate::durable::Durable>>,
}

impl Shared {
    /// The shard that owns domain `key`.
    fn owner(&self, key: &str) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.inboxes.len() as u64) as usize
    }

    /// A message's recipients (index, routing key) grouped by owner shard:
    /// entry `n` holds what shard `n` owns, in recipient order.
    pub(crate) fn split_by_owner(&self, keys: Vec<Box<str>>) -> Vec<Vec<(u32, Box<str>)>> {
        let mut per_shard: Vec<Vec<(u32, Box<str>)>> = Vec::new();
        per_shard.resize_with(self.inboxes.len(), Vec::new);
        for (i, key) in keys.into_iter().enumerate() {
            per_shard[self.owner(&key)].push((i as u32, key));
        }
        per_shard
    }

    /// The next local address to deliver from, if any are configured.
    pub(crate) fn source_ip(&self, config: &Config) -> Option<IpAddr> {
        if config.source_ips.is_empty() {
            None
        } else {
            let i = self.next_source.fetch_add(1, Ordering::Relaxed) as usize;
            Some(config.source_ips[i % config.source_ips.len()])
        }
    }
}

/// What a connection task listens to: work, or a request to quit.
pub(crate) struct ConnCtl {
    pub(crate) notify: Notify,
    pub(crate) evicted: Cell<bool>,
}

/// One shard's state, shared by its tasks (single thread: `Rc`).
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    pub(crate) queues: RefCell<Queues>,
    pub(crate) resolver: MxResolver,
    pub(crate) latencies: Arc<Latencies>,
    /// Operator rules, compiled once at start (checked by the config loader).
    pub(crate) rules: RuleSet,
    conns: RefCell<HashMap<ConnId, Rc<ConnCtl>>>,
    next_conn: Cell<ConnId>,
    next_msg: Cell<u64>,
    host_down: RefCell<HashMap<SocketAddr, Instant>>,
    /// Index of the fallback queue for each queue, when configured.
    fallback_of: Vec<Option<usize>>,
    retry_changed: Notify,
    pub(crate) draining: Cell<bool>,
    tasks: Cell<usize>,
    tasks_done: Notify,
}

impl Shard {
    fn new(index: usize, shared: Arc<Shared>) -> Result<Rc<Shard>, String> {
        let config = shared.config.load_full();
        let resolver = MxResolver::new(config.resolver.clone()).map_err(|e| e.to_string())?;
        let rules = RuleSet::new(&config.rules).map_err(|e| e.to_string())?;
        let mut queues = Queues::new(&config);
        let mut fallback_of = Vec::new();
        let mut made: HashMap<SocketAddr, usize> = HashMap::new();
        for q in 0..queues.queue_count() {
            let settings = queues.queue(q).settings.clone();
            fallback_of.push(settings.fallback_relay.map(|relay| {
                *made
                    .entry(relay)
                    .or_insert_with(|| queues.add_fallback_queue(relay, &settings))
            }));
        }
        while fallback_of.len() < queues.queue_count() {
            fallback_of.push(None);
        }
        Ok(Rc::new(Shard {
            index,
            latencies: shared.latencies[index].clone(),
            rules,
            shared,
            queues: RefCell::new(queues),
            resolver,
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            next_msg: Cell::new(1),
            host_down: RefCell::new(HashMap::new()),
            fallback_of,
            retry_changed: Notify::new(),
            draining: Cell::new(false),
            tasks: Cell::new(0),
            tasks_done: Notify::new(),
        }))
    }

    /// A message id unique in this run: shard number, then a sequence.
    pub(crate) fn next_message_id(&self) -> u64 {
        let n = self.next_msg.get();
        self.next_msg.set(n + 1);
        ((self.index as u64) << 48) | n
    }

    /// Hands a message's recipients to their owner shards: the local ones go
    /// straight into this shard's queues, the others over the channels.
    pub(crate) fn route_message(self: &Rc<Self>, msg: Arc<Message>, keys: Vec<Box<str>>) {
        let n = keys.len() as u64;
        bump(&self.shared.counters.received);
        self.shared
            .counters
            .recipients_received
            .fetch_add(n, Ordering::Relaxed);
        for (shard, rcpts) in self.shared.split_by_owner(keys).into_iter().enumerate() {
            if rcpts.is_empty() {
                continue;
            }
            let handoff = Handoff {
                msg: msg.clone(),
                rcpts,
            };
            if shard == self.index {
                self.accept_handoff(handoff);
            } else if let Err(e) = self.shared.inboxes[shard].send(handoff) {
                // The owner shard is gone (shutting down): keep the work here.
                self.accept_handoff(e.0);
            }
        }
    }

    /// Queues recipients this shard owns.
    pub(crate) fn accept_handoff(self: &Rc<Self>, h: Handoff) {
        self.shared.counters.queued_add(h.rcpts.len() as u64);
        let mut acts = Vec::new();
        {
            let mut q = self.queues.borrow_mut();
            let mut last: Option<(DomainId, &str)> = None;
            let mut touched = Vec::new();
            for (rcpt, key) in &h.rcpts {
                let d = match last {
                    Some((d, k)) if k == &**key => d,
                    _ => q.domain_id(key, None),
                };
                last = Some((d, key));
                q.push(d, Node::new(h.msg.clone(), *rcpt));
                if !touched.contains(&d) {
                    touched.push(d);
                }
            }
            let now = Instant::now();
            for d in touched {
                q.dispatch(d, now, &mut acts);
            }
        }
        self.act(acts);
    }

    /// Carries out what the queues decided.
    pub(crate) fn act(self: &Rc<Self>, acts: Vec<Action>) {
        for a in acts {
            match a {
                Action::Wake(c) => {
                    if let Some(ctl) = self.conns.borrow().get(&c) {
                        ctl.notify.notify_one();
                    }
                }
                Action::Evict(c) => {
                    if let Some(ctl) = self.conns.borrow().get(&c) {
                        ctl.evicted.set(true);
                        ctl.notify.notify_one();
                    }
                }
                // No new connections while stopping; the work stays queued
                // and is reported.
                Action::Open(_) if self.draining.get() => {}
                Action::Open(d) => {
                    let (id, ctl) = self.register_conn();
                    self.spawn_task(crate::delivery::run(self.clone(), d, id, ctl));
                }
                // Not a tracked task: a suspension may outlast the shutdown
                // grace, and the runtime drops the timer when it ends.
                Action::ResumeAt(d, at) => {
                    let this = self.clone();
                    tokio_uring::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        if this.draining.get() {
                            return;
                        }
                        let mut acts = Vec::new();
                        this.queues
                            .borrow_mut()
                            .resume(d, Instant::now(), &mut acts);
                        this.act(acts);
                    });
                }
            }
        }
    }

    fn register_conn(&self) -> (ConnId, Rc<ConnCtl>) {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let ctl = Rc::new(ConnCtl {
            notify: Notify::new(),
            evicted: Cell::new(false),
        });
        self.conns.borrow_mut().insert(id, ctl.clone());
        (id, ctl)
    }

    /// A connection task ended.
    pub(crate) fn conn_ended(self: &Rc<Self>, d: DomainId, id: ConnId, reopen: bool) {
        self.conns.borrow_mut().remove(&id);
        let mut acts = Vec::new();
        self.queues
            .borrow_mut()
            .conn_closed(d, reopen, Instant::now(), &mut acts);
        self.act(acts);
    }

    /// Spawns a task the shard waits for when it stops.
    pub(crate) fn spawn_task(self: &Rc<Self>, fut: impl Future<Output = ()> + 'static) {
        self.tasks.set(self.tasks.get() + 1);
        let this = self.clone();
        tokio_uring::spawn(async move {
            fut.await;
            this.tasks.set(this.tasks.get() - 1);
            if this.tasks.get() == 0 {
                this.tasks_done.notify_waiters();
            }
        });
    }

    pub(crate) fn is_host_down(&self, addr: SocketAddr, now: Instant) -> bool {
        let mut map = self.host_down.borrow_mut();
        match map.get(&addr) {
            Some(until) if *until > now => true,
            Some(_) => {
                map.remove(&addr);
                false
            }
            None => false,
        }
    }

    pub(crate) fn mark_host_down(&self, addr: SocketAddr, for_: Duration) {
        self.host_down
            .borrow_mut()
            .insert(addr, Instant::now() + for_);
    }

    /// The fallback queue that takes what queue `q` gives up on.
    pub(crate) fn fallback_of(&self, q: usize) -> Option<usize> {
        self.fallback_of.get(q).copied().flatten()
    }

    /// A deferred recipient was scheduled: the timer may need to wake sooner.
    pub(crate) fn retry_scheduled(&self) {
        self.retry_changed.notify_one();
    }

    /// Moves due retries back into their queues, sleeping until the next one.
    async fn retry_timer(self: Rc<Self>) {
        loop {
            let next = self.queues.borrow().next_due();
            let wait = match next {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if !wait.is_zero() {
                let _ = tokio::time::timeout(wait, self.retry_changed.notified()).await;
            }
            if self.draining.get() {
                return;
            }
            let mut acts = Vec::new();
            {
                let mut q = self.queues.borrow_mut();
                let now = Instant::now();
                for d in q.release_due(now) {
                    q.dispatch(d, now, &mut acts);
                }
            }
            self.act(acts);
        }
    }

    /// Every half second: prefetch the next queues' domains, refresh routes
    /// still wanted, and log hints for the general queue.
    async fn housekeeping(self: Rc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.draining.get() {
                return;
            }
            let config = self.shared.config.load();
            let now = Instant::now();
            let (next, hints) = {
                let mut q = self.queues.borrow_mut();
                q.prune_learned(now);
                self.shared.rates[self.index].publish(q.top_rates(TOP_RATES, now));
                (
                    q.next_in_line(config.scheduler.prefetch),
                    q.hints(
                        config.scheduler.hint_share,
                        config.scheduler.hint_min_queued,
                    ),
                )
            };
            self.resolver.prefetch(next.iter().map(|d| &**d));
            let this = self.clone();
            self.resolver
                .tick(Instant::now(), |d| this.queues.borrow().has_work(d));
            for (domain, n, total) in hints {
                tracing::warn!(
                    shard = self.index,
                    "domain {domain} holds {n} of {total} recipients of the general queue: consider a specific queue for {domain}"
                );
            }
        }
    }
}

/// Runs a shard on the current thread until the engine stops; returns how
/// many recipients were still queued.
pub(crate) fn run(
    index: usize,
    core: Option<core_affinity::CoreId>,
    shared: Arc<Shared>,
    listeners: Vec<(std::net::TcpListener, ListenerConfig)>,
    mut inbox: mpsc::UnboundedReceiver<Handoff>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) -> usize {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    tokio_uring::start(async move {
        let shard = match Shard::new(index, shared.clone()) {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return 0;
            }
        };
        let mut accepters = Vec::new();
        for (l, lc) in listeners {
            let listener = Rc::new(crate::transport::Listener::from_std(l));
            let task = tokio_uring::spawn(crate::ingest::accept_loop(
                shard.clone(),
                listener.clone(),
                lc,
            ));
            accepters.push((listener, task));
        }
        let inbox_task = {
            let this = shard.clone();
            tokio_uring::spawn(async move {
                while let Some(h) = inbox.recv().await {
                    this.accept_handoff(h);
                }
            })
        };
        tokio_uring::spawn(shard.clone().retry_timer());
        tokio_uring::spawn(shard.clone().housekeeping());
        let _ = ready.send(Ok(()));

        // Run until asked to stop.
        let mut stop = shared.stop.clone();
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // Stop accepting; sessions and connections finish what is in flight.
        for (l, task) in accepters {
            l.close();
            task.abort();
        }
        shard.draining.set(true);
        shard.retry_changed.notify_one();
        {
            let conns: Vec<Rc<ConnCtl>> = shard.conns.borrow().values().cloned().collect();
            for c in conns {
                c.notify.notify_one();
            }
        }
        let grace = Duration::from_secs(30);
        let deadline = Instant::now() + grace;
        while shard.tasks.get() > 0 && Instant::now() < deadline {
            let _ =
                tokio::time::timeout(Duration::from_millis(100), shard.tasks_done.notified()).await;
        }
        // Let handoffs already sent arrive (they are counted as queued).
        tokio::task::yield_now().await;
        inbox_task.abort();
        shard.queues.borrow().queued()
    })
}
