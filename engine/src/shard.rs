//! A shard: one OS thread pinned to a core, running its own tokio-uring
//! runtime, owning a partition of the domain queues, their connections and
//! its own DNS cache. Per-domain state is touched by this thread only.
//!
//! The shard's decisions are its [`Core`]'s; this module is the driver that
//! runs it: the listeners' accept loops, the inbox of recipients other
//! shards hand over, one timer on the core's next deadline, the spawning of
//! the delivery connections the core asks for, and the periodic
//! housekeeping (DNS prefetch and refresh, the summary's busiest domains).

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use volley_dns::MxResolver;
use volley_smtp::{EnhancedCode, Reply};

use crate::config::ListenerConfig;
use crate::context::{ShardCtx, Shared};
use crate::control::{Answerer, Ask, Steer};
use crate::core::Core;
use crate::queues::{FoundMessage, Listed, Listing};
use crate::routing::Inbound;

/// How many of a shard's busiest domains it publishes for the summary.
const TOP_RATES: usize = 10;

/// How long a stopping shard waits for its sessions and connections to
/// finish what they have in flight.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why a shard could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Its resolver could not be built (no usable nameserver).
    #[error("cannot build the DNS resolver")]
    Resolver(#[from] volley_dns::ConfigError),
    /// The rate rules do not compile.
    #[error("invalid rate rules")]
    Rules(#[from] crate::rate::RuleError),
    /// The thread ended before it said it was ready.
    #[error("the shard thread ended before it was ready")]
    Ended,
}

/// The admin server's and the reload's asks, answered from the shard's
/// own core.
impl Answerer for Rc<ShardCtx> {
    fn views(&self, listing: &Listing, now: Instant) -> Listed {
        self.read_core(|c| c.views(listing, now))
    }

    fn message(&self, id: u64, now: Instant) -> Option<FoundMessage> {
        self.read_core(|c| c.find_message(id, now))
    }

    fn reconfigure(&self, config: &crate::config::Config) {
        ShardCtx::reconfigure(self, config);
    }

    fn listen(&self, socket: std::net::TcpListener, config: ListenerConfig) {
        // A drain closed the listeners for good.
        if self.is_draining() || *self.shared.drain.borrow() {
            return;
        }
        accept_on(self, socket, config);
    }

    fn unlisten(&self, address: std::net::SocketAddr) {
        let mut accepting = self.accepting.borrow_mut();
        accepting.retain(|a| {
            let keep = a.address != address;
            if !keep {
                a.listener.close();
                a.task.abort();
            }
            keep
        });
    }

    fn steer(&self, domain: &str, steer: Steer, now: Instant) -> usize {
        match steer {
            Steer::Suspend { duration, reason } => {
                self.with_core(|c| c.suspend(domain, duration, reason, now));
                1
            }
            Steer::Resume => usize::from(self.with_core(|c| c.resume(domain, now))),
            Steer::Flush => self.with_core(|c| c.flush(domain, now)),
            Steer::Bounce { reason } => {
                let reply = Reply::new(
                    550,
                    EnhancedCode::new(5, 0, 0),
                    format!("given up by the operator: {reason}"),
                );
                let settled = self.with_core(|c| c.bounce_queued(domain, &reply, now));
                let n = settled.len();
                for s in settled {
                    crate::outcome::report(self, s, &reply, None, None);
                }
                n
            }
        }
    }
}

/// Starts an accept loop on `socket` (this shard's one of a listener).
fn accept_on(ctx: &Rc<ShardCtx>, socket: std::net::TcpListener, lc: ListenerConfig) {
    let address = lc.address;
    let listener = Rc::new(crate::transport::Listener::from_std(socket));
    let task = tokio_uring::spawn(crate::ingest::accept_loop(
        ctx.clone(),
        listener.clone(),
        lc,
    ));
    ctx.accepting.borrow_mut().push(crate::context::Accepting {
        address,
        listener,
        task,
    });
}

/// Opens the connections the core asked for and runs the core's timer,
/// until the shard stops.
async fn drive(ctx: Rc<ShardCtx>) {
    loop {
        for d in ctx.take_opens() {
            let (id, conn) = ctx.register_conn();
            ctx.spawn_task(crate::delivery::run(ctx.clone(), d, id, conn));
        }
        let deadline = ctx.read_core(|c| c.poll_timeout());
        ctx.wait_for_work(deadline).await;
        if ctx.is_draining() {
            return;
        }
        ctx.with_core(|c| c.handle_timeout(Instant::now()));
    }
}

/// How often a shard looks for recipients waiting for a connection past
/// their `max_age` (and the core's grace): they expire at most this much
/// later. Each look scans every waiting recipient the shard holds, so it
/// is not made per event.
const EXPIRY_SCAN: Duration = Duration::from_secs(2);

/// A period, on the time passed in.
struct Every {
    period: Duration,
    next: Instant,
}

impl Every {
    fn new(period: Duration, now: Instant) -> Every {
        Every {
            period,
            next: now + period,
        }
    }

    /// Whether a period has passed since the last time it said so.
    fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next = now + self.period;
        true
    }
}

/// Every half second: prefetch the next queues' domains, refresh routes
/// still wanted, log hints for the general queue; every few seconds,
/// expire what waited past its `max_age`.
async fn housekeeping(ctx: Rc<ShardCtx>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut expiry = Every::new(EXPIRY_SCAN, Instant::now());
    loop {
        tick.tick().await;
        if ctx.is_draining() {
            return;
        }
        let config = ctx.shared.config.load();
        let s = &config.scheduler;
        let h = ctx.with_core(|c| {
            c.housekeeping(
                s.prefetch,
                s.hint_share,
                s.hint_min_queued,
                TOP_RATES,
                Instant::now(),
            )
        });
        if expiry.due(Instant::now()) {
            let (expired, reply) = ctx.with_core(|c| c.expire(Instant::now()));
            for settled in expired {
                crate::outcome::report(&ctx, settled, &reply, None, None);
            }
        }
        ctx.shared.rates[ctx.index].publish(h.top_rates);
        ctx.publish_dns_stats();
        ctx.resolver().prefetch(h.next_in_line.iter().map(|d| &**d));
        ctx.resolver()
            .tick(Instant::now(), |d| ctx.read_core(|c| c.has_work(d)));
        for (domain, n, total) in h.hints {
            tracing::warn!(
                shard = ctx.index,
                "domain {domain} holds {n} of {total} recipients of the general queue: consider a specific queue for {domain}"
            );
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
    mut inbox: mpsc::UnboundedReceiver<Inbound>,
    mut asks: mpsc::UnboundedReceiver<Ask>,
    ready: std::sync::mpsc::Sender<Result<(), ShardError>>,
) -> usize {
    if let Some(core) = core {
        core_affinity::set_for_current(core);
    }
    tokio_uring::start(async move {
        let config = shared.config.load_full();
        let started = MxResolver::new(config.resolver.clone())
            .map_err(ShardError::from)
            .and_then(|r| Ok((r, Core::new(index, &config)?)))
            .map(|(r, mut core)| {
                core.set_cluster(shared.cluster.clone());
                (r, core)
            });
        let (resolver, core) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(e));
                return 0;
            }
        };
        let (token, mut tasks_done) = mpsc::channel::<()>(1);
        let ctx = Rc::new(ShardCtx::new(index, shared.clone(), core, resolver, token));
        for (l, lc) in listeners {
            accept_on(&ctx, l, lc);
        }
        // Stops accepting: on a drain, or at the stop.
        let close_listeners = {
            let ctx = ctx.clone();
            move || {
                for a in ctx.accepting.borrow_mut().drain(..) {
                    a.listener.close();
                    a.task.abort();
                }
            }
        };
        {
            let close = close_listeners.clone();
            let mut drain = shared.drain.subscribe();
            tokio_uring::spawn(async move {
                if drain.wait_for(|d| *d).await.is_ok() {
                    close();
                }
            });
        }
        let inbox_task = {
            let ctx = ctx.clone();
            tokio_uring::spawn(async move {
                while let Some(inbound) = inbox.recv().await {
                    match inbound {
                        Inbound::Handoff(h) => ctx.accept_handoff(h),
                        Inbound::Moved(m) => ctx.adopt(m),
                    }
                }
            })
        };
        let asks_task = {
            let ctx = ctx.clone();
            tokio_uring::spawn(async move {
                while let Some(ask) = asks.recv().await {
                    crate::control::answer(ask, &ctx);
                }
            })
        };
        tokio_uring::spawn(drive(ctx.clone()));
        tokio_uring::spawn(housekeeping(ctx.clone()));
        let _ = ready.send(Ok(()));

        // Run until asked to stop.
        let mut stop = shared.stop.clone();
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        // Stop accepting; sessions and connections finish what is in
        // flight. Each holds a token: the channel closes with the last.
        close_listeners();
        ctx.start_draining();
        ctx.drop_token();
        let _ = tokio::time::timeout(STOP_GRACE, tasks_done.recv()).await;
        // Let handoffs already sent arrive (they are counted as queued).
        tokio::task::yield_now().await;
        inbox_task.abort();
        asks_task.abort();
        ctx.read_core(|c| c.queued())
    })
}
