//! What a shard's drivers (ingest sessions, delivery connections, the
//! shard's own task) share: the engine-wide [`Shared`] state, and the
//! shard's [`ShardCtx`], through which they reach the shard's [`Core`].
//!
//! A driver calls the core with [`ShardCtx::with_core`]; the actions the
//! core decided are carried out as the call returns: idle connections are
//! woken or evicted at once, new connections are left to the shard's task
//! (which spawns them), and that task is woken only when the core's next
//! deadline moved earlier than the one its timer waits for.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};
use volley_dns::MxResolver;

use crate::auth::AuthGuard;
use crate::config::Config;
use crate::control::ShardLines;
use crate::core::{Action, ConnId, Core, DomainId};
use crate::dkim::DkimKeys;
use crate::dlog::DeliveryLog;
use crate::dsn::DsnQueue;
use crate::durable::Durable;
use crate::events::EventFeed;
use crate::message::{Budget, Message};
use crate::metrics::{Counters, Latencies, RateBoard, bump};
use crate::mta_sts::MtaSts;
use crate::routing::{Handoff, Moved, Router, SiteOwners};
use crate::tls::{BrokenTls, TlsContext};

/// State shared by every shard: rarely written, or atomic.
pub(crate) struct Shared {
    /// The budgets shared with the other hosts, when `[cluster]` is on.
    pub(crate) cluster: Option<Arc<crate::cluster::Board>>,
    pub(crate) config: ArcSwap<Config>,
    /// Each shard's counters, then one set for the threads that are not
    /// shards (the DSN writer).
    pub(crate) counters: Vec<Counters>,
    pub(crate) budget: Arc<Budget>,
    pub(crate) router: Router,
    /// Which shard holds each receiving site.
    pub(crate) site_owners: SiteOwners,
    pub(crate) latencies: Vec<Arc<Latencies>>,
    /// Each shard's busiest adaptive domains, published every half second.
    pub(crate) rates: Vec<Arc<RateBoard>>,
    pub(crate) dlog: DeliveryLog,
    pub(crate) stop: watch::Receiver<bool>,
    /// Set by a drain: listeners close, delivery goes on until nothing is
    /// queued.
    pub(crate) drain: watch::Sender<bool>,
    /// Ingest connections from the trusted networks.
    pub(crate) ingest_total: AtomicUsize,
    /// Ingest connections from outside the trusted networks.
    pub(crate) ingest_untrusted: AtomicUsize,
    pub(crate) ingest_per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub(crate) next_source: AtomicU64,
    /// Durable mode's journal writers and quota; `None`: memory only.
    pub(crate) durable: Option<Arc<Durable>>,
    /// The rustls configurations in force (swapped on reload).
    pub(crate) tls: ArcSwap<TlsContext>,
    /// MX hosts whose TLS handshake failed recently.
    pub(crate) broken_tls: BrokenTls,
    /// Failed AUTH attempts per client address.
    pub(crate) auth_guard: AuthGuard,
    /// Receivers' MTA-STS policies; `None` when `[mta_sts]` is off.
    pub(crate) mta_sts: Option<MtaSts>,
    /// DKIM signing keys (swapped on reload).
    pub(crate) dkim: ArcSwap<DkimKeys>,
    /// The event feed, when `[events] url` is set.
    pub(crate) events: Option<EventFeed>,
    /// Where shards hand outcomes that call for a delivery status
    /// notification.
    pub(crate) dsn: DsnQueue,
    /// The admin server's channel to each shard.
    pub(crate) shard_lines: ShardLines,
    /// The listeners in force (a reload adds and removes them).
    pub(crate) listeners: Mutex<Vec<crate::listeners::Running>>,
    /// Where a reload asked through the admin API reads the configuration
    /// (`volley serve` reads its file, as on SIGHUP); `None`: nowhere.
    pub(crate) config_source: Mutex<Option<Arc<ConfigSource>>>,
    /// From domains already logged as having no DKIM key (once each).
    pub(crate) dkim_unsigned: Mutex<std::collections::HashSet<String>>,
    /// Templated mailings' contents, compiled once for all their messages.
    pub(crate) templates: crate::template::TemplateCache,
}

impl Shared {
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

/// What a delivery connection listens to: work, or a request to quit.
pub(crate) struct ConnCtl {
    pub(crate) notify: Notify,
    pub(crate) evicted: Cell<bool>,
}

/// A token every task of the shard holds: the shard's wait for its tasks
/// ends when the last token is dropped, however the tasks ended.
pub(crate) type TaskToken = mpsc::Sender<()>;

/// One shard as its drivers see it (one thread: `Rc`, `RefCell`).
pub(crate) struct ShardCtx {
    pub(crate) index: usize,
    pub(crate) shared: Arc<Shared>,
    /// Replaced whole when a reload changes `[resolver]` (lookups under
    /// way finish on the old one).
    resolver: RefCell<MxResolver>,
    /// What resolvers this shard replaced had done, so the counters read
    /// from the resolver never go back.
    dns_before: Cell<volley_dns::ResolverStats>,
    pub(crate) latencies: Arc<Latencies>,
    core: RefCell<Core>,
    conns: RefCell<HashMap<ConnId, Rc<ConnCtl>>>,
    next_conn: Cell<ConnId>,
    next_msg: Cell<u64>,
    /// Connections the core asked for, for the shard's task to open.
    opens: RefCell<Vec<DomainId>>,
    /// Wakes the shard's task: connections to open, or an earlier deadline.
    wake_task: Notify,
    /// The deadline the shard task's timer waits for.
    armed: Cell<Option<Instant>>,
    draining: Cell<bool>,
    /// Cloned into every task; `None` once the shard waits for them.
    token: RefCell<Option<TaskToken>>,
    /// The shard's accept loops, one per listener.
    pub(crate) accepting: RefCell<Vec<Accepting>>,
}

/// Reads the configuration again, as SIGHUP would; the error says why not.
pub(crate) type ConfigSource = dyn Fn() -> Result<Config, String> + Send + Sync;

/// One listener's accept loop on a shard.
pub(crate) struct Accepting {
    /// The listener's address as configured (what a reload names).
    pub(crate) address: std::net::SocketAddr,
    pub(crate) listener: Rc<crate::transport::Listener>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl ShardCtx {
    pub(crate) fn new(
        index: usize,
        shared: Arc<Shared>,
        core: Core,
        resolver: MxResolver,
        token: TaskToken,
    ) -> ShardCtx {
        ShardCtx {
            index,
            latencies: shared.latencies[index].clone(),
            shared,
            resolver: RefCell::new(resolver),
            dns_before: Cell::new(Default::default()),
            core: RefCell::new(core),
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(1),
            next_msg: Cell::new(1),
            opens: RefCell::new(Vec::new()),
            wake_task: Notify::new(),
            armed: Cell::new(None),
            draining: Cell::new(false),
            token: RefCell::new(Some(token)),
            accepting: RefCell::new(Vec::new()),
        }
    }

    /// Calls the core, then carries out the actions it decided.
    pub(crate) fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let (r, actions, moving, deadline) = {
            let mut core = self.core.borrow_mut();
            let r = f(&mut core);
            (
                r,
                core.take_actions(),
                core.take_moving(),
                core.poll_timeout(),
            )
        };
        self.carry_out(actions);
        for (shard, moved) in moving {
            self.move_to(shard, moved);
        }
        if let Some(t) = deadline
            && self.armed.get().is_none_or(|armed| t < armed)
        {
            self.wake_task.notify_one();
        }
        r
    }

    /// Reads the core (no decision, so no actions).
    pub(crate) fn read_core<R>(&self, f: impl FnOnce(&Core) -> R) -> R {
        f(&self.core.borrow())
    }

    fn carry_out(&self, actions: Vec<Action>) {
        for a in actions {
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
                    self.opens.borrow_mut().push(d);
                    self.wake_task.notify_one();
                }
            }
        }
    }

    /// The connections to open that the core asked for since the last call.
    pub(crate) fn take_opens(&self) -> Vec<DomainId> {
        std::mem::take(&mut self.opens.borrow_mut())
    }

    /// Waits until there are connections to open, the core's deadline may
    /// have moved earlier, or `deadline` (the core's next one) came.
    pub(crate) async fn wait_for_work(&self, deadline: Option<Instant>) {
        self.armed.set(deadline);
        match deadline {
            Some(t) => {
                let _ = tokio::time::timeout_at(t.into(), self.wake_task.notified()).await;
            }
            None => self.wake_task.notified().await,
        }
        // `armed` keeps the deadline until the next wait: the timeout
        // handling that follows moves the deadline later, which needs no
        // wake-up (one here would make the task spin without yielding).
    }

    /// Registers a new delivery connection.
    pub(crate) fn register_conn(&self) -> (ConnId, Rc<ConnCtl>) {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        let ctl = Rc::new(ConnCtl {
            notify: Notify::new(),
            evicted: Cell::new(false),
        });
        self.conns.borrow_mut().insert(id, ctl.clone());
        (id, ctl)
    }

    /// A delivery connection ended.
    pub(crate) fn forget_conn(&self, id: ConnId) {
        self.conns.borrow_mut().remove(&id);
    }

    /// Tells every connection to look up: the shard is stopping.
    pub(crate) fn start_draining(&self) {
        self.draining.set(true);
        let conns: Vec<Rc<ConnCtl>> = self.conns.borrow().values().cloned().collect();
        for c in conns {
            c.notify.notify_one();
        }
        self.wake_task.notify_one();
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.get()
    }

    /// Spawns a task the shard waits for when it stops.
    pub(crate) fn spawn_task(&self, fut: impl Future<Output = ()> + 'static) {
        let token = self.token.borrow().clone();
        tokio_uring::spawn(async move {
            let _token = token;
            fut.await;
        });
    }

    /// Gives up the shard's own token: from now on the task channel closes
    /// when the last task ends.
    pub(crate) fn drop_token(&self) {
        self.token.borrow_mut().take();
    }

    /// The shard's resolver (a cheap handle to its cache).
    pub(crate) fn resolver(&self) -> MxResolver {
        self.resolver.borrow().clone()
    }

    /// Applies a reloaded configuration to this shard: its queues and
    /// rules, and a new resolver when `[resolver]` changed (its cache
    /// starts empty). The engine checked both before sending it.
    pub(crate) fn reconfigure(&self, config: &crate::config::Config) {
        if self.resolver.borrow().config() != &config.resolver {
            match MxResolver::new(config.resolver.clone()) {
                Ok(r) => {
                    self.dns_before.set(self.dns_stats());
                    *self.resolver.borrow_mut() = r;
                }
                Err(e) => tracing::warn!(shard = self.index, "resolver kept: {e}"),
            }
        }
        if let Err(e) = self.with_core(|c| c.reconfigure(config, Instant::now())) {
            tracing::warn!(shard = self.index, "rules kept: {e}");
        }
    }

    /// What this shard's resolvers did so far.
    fn dns_stats(&self) -> volley_dns::ResolverStats {
        let (a, b) = (self.dns_before.get(), self.resolver.borrow().stats());
        volley_dns::ResolverStats {
            hits: a.hits + b.hits,
            misses: a.misses + b.misses,
            joined: a.joined + b.joined,
            fetches: a.fetches + b.fetches,
            refreshes: a.refreshes + b.refreshes,
            prefetches: a.prefetches + b.prefetches,
        }
    }

    /// Copies the resolver's counters into the shard's (the housekeeping
    /// does, twice a second).
    pub(crate) fn publish_dns_stats(&self) {
        let d = self.dns_stats();
        let c = self.counters();
        c.dns_cache_hits.store(d.hits, Ordering::Relaxed);
        c.dns_cache_misses.store(d.misses, Ordering::Relaxed);
        c.dns_lookups.store(d.fetches, Ordering::Relaxed);
    }

    /// This shard's own counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.shared.counters[self.index]
    }

    /// A message id unique in this run: shard number, then a sequence.
    pub(crate) fn next_message_id(&self) -> u64 {
        let n = self.next_msg.get();
        self.next_msg.set(n + 1);
        ((self.index as u64) << 48) | n
    }

    /// Hands a message's recipients to their owner shards: the local ones
    /// go straight into this shard's queues, the others over the channels.
    pub(crate) fn route_message(&self, msg: Arc<Message>, keys: Vec<Box<str>>) {
        bump(&self.counters().received);
        self.counters()
            .recipients_received
            .fetch_add(keys.len() as u64, Ordering::Relaxed);
        let kept = self
            .shared
            .router
            .hand_off(&msg, (0u32..).zip(keys), Some(self.index));
        for h in kept {
            self.accept_handoff(h);
        }
    }

    /// Queues again recipients of a message ingest accepted before (a
    /// safe-mode message whose deferred recipients Volley keeps), each
    /// with its routing key; their attempts count from zero.
    pub(crate) fn requeue_recipients(&self, msg: &Arc<Message>, rcpts: Vec<(u32, Box<str>)>) {
        let kept = self.shared.router.hand_off(msg, rcpts, Some(self.index));
        for h in kept {
            self.accept_handoff(h);
        }
    }

    /// Sends a domain's recipients to the shard that holds its site; they
    /// stay here when that shard is stopping.
    fn move_to(&self, shard: usize, moved: Moved) {
        let n = moved.nodes.len() as u64;
        match self.shared.router.move_to(shard, moved) {
            Ok(()) => self.counters().queued_sub(n),
            Err(kept) => self.with_core(|c| c.adopt(kept, Instant::now())),
        }
    }

    /// Queues recipients of a domain whose site this shard holds, sent by
    /// the shard the domain left.
    pub(crate) fn adopt(&self, moved: Moved) {
        self.counters().queued_add(moved.nodes.len() as u64);
        self.with_core(|c| c.adopt(moved, Instant::now()));
    }

    /// Queues recipients this shard owns.
    pub(crate) fn accept_handoff(&self, h: Handoff) {
        self.counters().queued_add(h.rcpts.len() as u64);
        self.with_core(|c| c.accept(&h.msg, &h.rcpts, Instant::now()));
    }
}
