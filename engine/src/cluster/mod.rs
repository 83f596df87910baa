//! One budget across a cluster of Volley hosts, kept in Redis.
//!
//! When one host is not enough, several run behind one Composer, and a
//! provider's limit is then per sending address range or per sender,
//! shared by all of them: hosts that each learn alone overrun it by the
//! number of hosts. With `[cluster] redis` set, each destination's pace
//! (a receiving site's, or a lone domain's) is shared through a stock
//! Redis, in the way KumoMTA shares its throttles (Lua scripts, no
//! module):
//!
//! - **The budget.** A GCRA in Redis paces the cluster's transactions to
//!   the destination at the sum of the nodes' controller rates. A node
//!   claims budget in batches (two sync periods of its own rate, see
//!   [`plan::claim`]; a slow destination's period is up to ten intervals,
//!   [`plan::period`]), so a message costs no round trip to Redis: a shard
//!   takes one unit from an atomic counter, and waits a moment when there
//!   is none. Budget is never banked beyond the burst, so nothing a node
//!   did not claim piles up while the cluster is idle.
//! - **The learned ceiling.** Each node's controller learns from its own
//!   replies and latencies, as a single host does. A throttle that cuts
//!   one node's rate bumps a cut epoch in Redis; the other nodes hear it
//!   at their next sync and cut as if the reply had come to them
//!   ([`RateController::on_peer_throttle`]): the receiver meters them as
//!   one sender, and without this each node would go on collecting
//!   refusals of its own until its own cut. The sum of the nodes'
//!   ceilings is the shared ceiling. Each node's part follows the number
//!   of nodes sending to the destination (those that sent in the last
//!   second): when it goes from N to M, a node's ceiling and connection
//!   cap scale by N / M ([`RateController::rescale`]), so the part of a
//!   node that ran out of work (or crashed) is taken up by the others in
//!   an interval or two, and given back when it sends again.
//! - **Connections** are leases in a sorted set scored by their expiry,
//!   renewed every sync, so the connections of a node that crashed are
//!   freed when its leases run out (three seconds). A refused connection
//!   teaches the cluster the destination's limit (the connections open
//!   across the nodes, less one, for a while); within it each node holds
//!   at most what the others leave, and at least its fair share. While
//!   joined, a refusal cuts no node's own connection cap (the leases hold
//!   the limit for all); alone, each node learns its own again.
//!
//! # Off the hot path
//!
//! Shards run on tokio-uring and must never wait for Redis. The Redis
//! I/O runs on one thread of its own (`volley-cluster`) with an ordinary
//! tokio runtime and redis-rs's `ConnectionManager` (which reconnects by
//! itself), as the admin server runs apart. It and the shards share, per
//! destination, a [`Share`] of atomics: the shard publishes what its
//! controller knows and spends budget; the thread claims budget, sets
//! the connection grant and passes on the other nodes' cuts. The map of
//! shares has a lock, taken when a pool first looks its share up and once
//! per sync, never per message. The decisions (how much to claim, when a
//! cut is news, what to fall back to) are in [`plan`], without I/O.
//!
//! # When Redis is unreachable
//!
//! A sync that fails (no answer within a few intervals) puts every
//! destination alone: the local controller paces it, capped at this
//! node's share of the last shared ceiling and connection cap (`1 / N`,
//! N the nodes seen sending to it), and the log says so once. When Redis
//! answers again, the log says so once more and the nodes rejoin without
//! a burst: claims start from each node's current (capped) rate, and the
//! GCRA's arrival time never lies in the past, so there is no backlog of
//! budget to spend. What Redis kept from before (or nothing, after a
//! restart with no persistence) is rebuilt within a sync.
//!
//! # Not shared
//!
//! Queues, retries and the journal stay on each node: a message belongs
//! to the node that accepted it. Operator rules, suspensions and holds
//! are each node's own.

mod plan;
mod share;

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

use crate::config::ClusterSettings;
use crate::rate::{Action, RateController};
use plan::{Ask, Change, Link, Next, Track, View};
pub(crate) use share::{Board, Local, Share, Standing};

/// The Lua script of one sync (see the file for its keys and arguments).
const SYNC_SCRIPT: &str = include_str!("sync.lua");
/// A node not seen in Redis for this long no longer counts.
const NODE_TTL: Duration = Duration::from_secs(3);
/// A connection lease lasts this long unless renewed.
const LEASE_TTL: Duration = Duration::from_secs(3);
/// A connection cap learned from a refusal holds this long.
const CAP_TTL: Duration = Duration::from_secs(60);
/// A sync round longer than this many intervals (at least
/// [`MIN_ROUND_WAIT`]) counts as Redis not answering.
const ROUND_INTERVALS: u32 = 4;
const MIN_ROUND_WAIT: Duration = Duration::from_millis(250);
/// A shard without budget looks again after this long (a claim is under
/// way, or the cluster's pace does not allow more yet).
pub(crate) const BUDGET_WAIT: Duration = Duration::from_millis(5);
/// Alone, the cap on the local controller is renewed this often, and
/// held this long: once Redis is back it lapses within it.
const ALONE_RENEW: Duration = Duration::from_millis(500);
const ALONE_HOLD: Duration = Duration::from_secs(1);

/// The cluster could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `[cluster] redis` is no Redis address (the configuration check
    /// reports this first).
    #[error("cluster.redis {url:?}: {source}")]
    Address {
        /// The address as configured, its password left out.
        url: String,
        /// What redis-rs said of it.
        source: redis::RedisError,
    },
    /// The cluster thread could not be started.
    #[error("starting the cluster thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The running cluster thread and the board the shards share with it.
pub(crate) struct Cluster {
    board: Arc<Board>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Cluster {
    /// Starts the cluster thread for node `node` (the configuration's
    /// `[cluster]`, already checked). It syncs until `stop` turns true,
    /// then gives up this node's leases.
    pub(crate) fn start(
        settings: &ClusterSettings,
        url: &str,
        node: &str,
        stop: watch::Receiver<bool>,
    ) -> Result<Cluster, ClusterError> {
        let client = redis::Client::open(url).map_err(|source| ClusterError::Address {
            url: crate::config::redacted_url(url),
            source,
        })?;
        let board = Arc::new(Board::default());
        let driver = Driver {
            node: node.into(),
            interval: settings.sync_interval,
            board: board.clone(),
            script: redis::Script::new(SYNC_SCRIPT),
            tracks: Default::default(),
            link: Link::default(),
        };
        let thread = std::thread::Builder::new()
            .name("volley-cluster".into())
            .spawn(move || driver.run(client, stop))
            .map_err(ClusterError::Thread)?;
        tracing::info!(
            target: "volley",
            "cluster: node {node}, budget shared through {}",
            crate::config::redacted_url(url)
        );
        Ok(Cluster {
            board,
            thread: Some(thread),
        })
    }

    /// The board the shards look their shares up on.
    pub(crate) fn board(&self) -> Arc<Board> {
        self.board.clone()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The cluster thread's state.
struct Driver {
    node: Arc<str>,
    interval: Duration,
    board: Arc<Board>,
    script: redis::Script,
    tracks: std::collections::HashMap<Box<str>, Track>,
    link: Link,
}

impl Driver {
    fn run(mut self, client: redis::Client, mut stop: watch::Receiver<bool>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(target: "volley", "cluster: no runtime ({e}); pacing alone");
                self.go_alone();
                return;
            }
        };
        rt.block_on(async move {
            let wait = self.round_wait();
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(wait))
                .set_response_timeout(Some(wait))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            let manager = match ConnectionManager::new_lazy_with_config(client, config) {
                Ok(m) => m,
                Err(e) => {
                    tracing::error!(target: "volley", "cluster: {e}; pacing alone");
                    self.go_alone();
                    return;
                }
            };
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
                self.round(&manager).await;
            }
            self.leave(&manager).await;
        });
    }

    fn round_wait(&self) -> Duration {
        (self.interval * ROUND_INTERVALS).max(MIN_ROUND_WAIT)
    }

    /// One sync of every destination in use, all at once over the one
    /// multiplexed connection.
    async fn round(&mut self, manager: &ConnectionManager) {
        let now = Instant::now();
        let mut asks = Vec::new();
        for share in self.board.all() {
            let (local, refused) = share.local();
            let track = self.tracks.entry(share.key().into()).or_default();
            match track.next(
                now,
                local,
                refused,
                share.use_counts(),
                share.tokens(),
                self.interval,
            ) {
                Next::Sync(ask) => asks.push((share, ask)),
                Next::Later => {}
                Next::Idle => {
                    self.tracks.remove(share.key());
                    let key = share.key().to_string();
                    drop(share);
                    self.board.retire(&key);
                }
            }
        }
        if asks.is_empty() {
            return;
        }
        let wait = self.round_wait();
        let sha = self.script.get_hash().to_string();
        let mut set = tokio::task::JoinSet::new();
        for (i, (share, ask)) in asks.iter().enumerate() {
            let by_hash = sync_cmd("EVALSHA", &sha, &self.node, share.key(), ask, self.interval);
            let by_text = sync_cmd(
                "EVAL",
                SYNC_SCRIPT,
                &self.node,
                share.key(),
                ask,
                self.interval,
            );
            let mut con = manager.clone();
            set.spawn(async move {
                let call = async {
                    match by_hash.query_async::<Reply>(&mut con).await {
                        // Redis restarted, or never saw the script: EVAL
                        // sends it whole (and caches it for the next).
                        Err(e)
                            if e.kind()
                                == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                        {
                            by_text.query_async::<Reply>(&mut con).await
                        }
                        r => r,
                    }
                };
                (i, tokio::time::timeout(wait, call).await)
            });
        }
        let mut ok = true;
        let mut first_error = None;
        while let Some(joined) = set.join_next().await {
            let Ok((i, r)) = joined else {
                ok = false;
                continue;
            };
            let (share, ask) = &asks[i];
            let track = self.tracks.entry(share.key().into()).or_default();
            match r {
                Ok(Ok(reply)) => {
                    let view = reply.view();
                    share.add_tokens(view.granted);
                    share.set_conn_grant(Some(view.conns));
                    if track.answered(ask, view) {
                        share.heard_peer_cut();
                    }
                    share.set_nodes(track.nodes());
                }
                Ok(Err(e)) => {
                    ok = false;
                    first_error.get_or_insert_with(|| e.to_string());
                }
                Err(_) => {
                    ok = false;
                    first_error.get_or_insert_with(|| format!("no answer within {wait:?}"));
                }
            }
        }
        match self.link.round(Instant::now(), ok) {
            Some(Change::Lost) => {
                tracing::warn!(
                    target: "volley",
                    "cluster: Redis unreachable ({}); each destination paces alone at this node's share of the last shared ceiling",
                    first_error.unwrap_or_default()
                );
                self.go_alone();
            }
            Some(Change::Back(after)) => {
                tracing::warn!(
                    target: "volley",
                    "cluster: Redis answers again after {}; rejoined the shared budget",
                    volley_units::format_duration(after)
                );
                self.board.set_alone(false);
                for share in self.board.all() {
                    share.join();
                }
            }
            None if self.link.is_lost() => self.go_alone(),
            None => {}
        }
    }

    /// Every destination paces alone at its share of what was learned.
    fn go_alone(&self) {
        self.board.set_alone(true);
        for share in self.board.all() {
            let (rate, conns) = self
                .tracks
                .get(share.key())
                .and_then(|t| t.last.as_ref())
                .map_or((None, None), plan::fallback);
            share.go_alone(rate, conns);
        }
    }

    /// Stopping: this node's leases and entries go at once, so its
    /// connections count for no one (best effort: Redis may be gone).
    async fn leave(&self, manager: &ConnectionManager) {
        if self.link.is_lost() || self.tracks.is_empty() {
            return;
        }
        // One pipeline with one time limit, however many destinations:
        // shutting down never waits on Redis for long.
        let mut pipe = redis::pipe();
        for (key, track) in &self.tracks {
            let k = keys(key);
            let held = track.last.map_or(0, |v| v.conns);
            let members: Vec<String> = (0..held).map(|i| format!("{}#{i}", self.node)).collect();
            pipe.hdel(&k[0], &*self.node).ignore();
            if !members.is_empty() {
                pipe.zrem(&k[2], members).ignore();
            }
        }
        let mut con = manager.clone();
        let _ = tokio::time::timeout(self.round_wait(), pipe.query_async::<()>(&mut con)).await;
    }
}

/// The Redis keys of destination `key`: nodes, tat, leases, cap, cuts.
fn keys(key: &str) -> [String; 5] {
    ["nodes", "tat", "leases", "cap", "cuts"].map(|part| format!("volley:{{{key}}}:{part}"))
}

/// The sync script's call for one ask: `verb` is EVALSHA (with the
/// script's hash as `head`) or EVAL (with its text).
fn sync_cmd(
    verb: &str,
    head: &str,
    node: &str,
    key: &str,
    ask: &Ask,
    interval: Duration,
) -> redis::Cmd {
    let mut cmd = redis::cmd(verb);
    cmd.arg(head).arg(5);
    for k in keys(key) {
        cmd.arg(k);
    }
    let ms = |d: Duration| d.as_millis() as u64;
    let l = &ask.local;
    cmd.arg(node)
        .arg(finite(l.rate))
        .arg(l.ceiling.map_or(0.0, finite))
        .arg(ask.want)
        .arg(ms(interval.mul_f64(plan::CLAIM_INTERVALS)))
        .arg(ms(NODE_TTL))
        // A node not sending holds leases only for what it has open, so
        // the others may use the rest.
        .arg(if ask.active { l.conn_limit } else { l.open }.max(1))
        .arg(l.open)
        .arg(ask.refused_open.unwrap_or(0))
        .arg(ms(LEASE_TTL))
        .arg(ms(CAP_TTL))
        .arg(u8::from(ask.cut))
        .arg(u8::from(ask.active));
    cmd
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x.max(0.0) } else { 0.0 }
}

/// The script's answer.
struct Reply(u32, u32, u32, String, i64, u64, u8);

impl redis::FromRedisValue for Reply {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let (granted, conns, nodes, ceiling, cap, epoch, mine) =
            <(u32, u32, u32, String, i64, u64, u8)>::from_redis_value(v)?;
        Ok(Reply(granted, conns, nodes, ceiling, cap, epoch, mine))
    }
}

impl Reply {
    fn view(&self) -> View {
        View {
            granted: self.0,
            conns: self.1,
            nodes: self.2,
            ceiling: self.3.parse().unwrap_or(0.0),
            conn_cap: u32::try_from(self.4).ok(),
            epoch: self.5,
            mine: self.6 == 1,
        }
    }
}

/// A pool's place in the cluster: its share and what the pool has
/// heard from it. The queue map keeps one per pool of an adaptive queue
/// while `[cluster]` is on.
#[derive(Debug)]
pub(crate) struct Member {
    share: Arc<Share>,
    peer_cuts_seen: u64,
    /// The nodes sending to the destination that the controller's part
    /// was last sized for (0: none yet).
    nodes_seen: u32,
    /// Alone: the cap on the controller holds until then.
    alone_until: Option<Instant>,
}

impl Member {
    pub(crate) fn new(share: Arc<Share>) -> Member {
        let peer_cuts_seen = share.peer_cuts();
        Member {
            share,
            peer_cuts_seen,
            nodes_seen: 0,
            alone_until: None,
        }
    }

    /// The destination's key.
    pub(crate) fn key(&self) -> &str {
        self.share.key()
    }

    /// Asks to start one transaction at `now`, as
    /// [`RateController::try_acquire`] does, within the cluster's budget:
    /// a cut another node made is applied first; joined, the budget must
    /// have a unit to spend; alone, the controller is held at this node's
    /// share. `open` is the pool's connection count.
    pub(crate) fn try_acquire(
        &mut self,
        c: &mut RateController,
        open: u32,
        now: Instant,
    ) -> Result<(), Instant> {
        let heard = self.share.peer_cuts();
        if heard != self.peer_cuts_seen {
            self.peer_cuts_seen = heard;
            c.on_peer_throttle(now);
        }
        let nodes = self.share.nodes();
        if nodes > 0 && nodes != self.nodes_seen {
            if self.nodes_seen > 0 {
                // Fewer nodes sending: this one takes up part of what the
                // others left; more: it gives part of its own back.
                c.rescale(now, f64::from(self.nodes_seen) / f64::from(nodes));
            }
            self.nodes_seen = nodes;
        }
        self.publish(c, open);
        let standing = self.share.standing();
        c.share_connection_limit(matches!(standing, Standing::Joined { .. }));
        match standing {
            Standing::Joined { budget: false } => {
                Err(c.suspended_until(now).unwrap_or(now + BUDGET_WAIT))
            }
            Standing::Joined { budget: true } => {
                self.alone_until = None;
                c.try_acquire(now)?;
                self.share.spend();
                Ok(())
            }
            Standing::Alone { rate, connections } => {
                if (rate.is_some() || connections.is_some())
                    && self
                        .alone_until
                        .is_none_or(|u| u.saturating_duration_since(now) < ALONE_RENEW)
                {
                    c.apply(
                        now,
                        &Action::Limit {
                            connections,
                            rate,
                            duration: ALONE_HOLD,
                        },
                    );
                    self.alone_until = Some(now + ALONE_HOLD);
                }
                c.try_acquire(now)
            }
        }
    }

    /// Tells the cluster thread what the controller knows now.
    pub(crate) fn publish(&self, c: &RateController, open: u32) {
        self.share.publish(Local {
            rate: c.rate(),
            ceiling: c.ceiling(),
            conn_limit: c.connection_limit(),
            open,
            cuts: c.cuts(),
        });
    }

    /// The pool's connection limit within the cluster's grant.
    pub(crate) fn conn_limit(&self, local: usize) -> usize {
        match self.share.conn_grant() {
            Some(g) => local.min(g as usize),
            None => local,
        }
    }

    /// The destination refused a connection with `open` open.
    pub(crate) fn connection_refused(&self, open: u32) {
        self.share.connection_refused(open);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::RateSettings;

    fn controller(now: Instant) -> RateController {
        RateController::new(&RateSettings::default(), now)
    }

    #[test]
    fn joined_a_transaction_spends_budget_and_waits_without_it() {
        let now = Instant::now();
        let share = Arc::new(Share::new("site"));
        let mut m = Member::new(share.clone());
        let mut c = controller(now);
        assert_eq!(m.try_acquire(&mut c, 1, now), Err(now + BUDGET_WAIT));
        assert_eq!(share.use_counts(), (0, 1), "the wait is demand");
        share.add_tokens(2);
        assert_eq!(m.try_acquire(&mut c, 1, now), Ok(()));
        assert_eq!(share.tokens(), 1);
        assert_eq!(share.use_counts().0, 1);
        let (local, _) = share.local();
        assert_eq!(local.rate, c.rate(), "the controller's rate is published");
    }

    #[test]
    fn a_peers_cut_cuts_the_local_controller_once() {
        let now = Instant::now();
        let share = Arc::new(Share::new("site"));
        share.add_tokens(1000);
        let mut m = Member::new(share.clone());
        let mut c = controller(now);
        let later = now + Duration::from_secs(2);
        m.try_acquire(&mut c, 1, later).unwrap();
        share.heard_peer_cut();
        assert!(m.try_acquire(&mut c, 1, later).is_err(), "backs off");
        assert_eq!(c.cuts(), 0, "a peer's cut is not told back");
        assert!(c.ceiling().is_some());
        let after = later + Duration::from_secs(30);
        let rate = c.rate();
        assert!(m.try_acquire(&mut c, 1, after).is_ok(), "heard once");
        assert!(c.rate() >= rate);
    }

    #[test]
    fn alone_the_controller_is_held_at_its_share() {
        let now = Instant::now();
        let share = Arc::new(Share::new("site"));
        let mut m = Member::new(share.clone());
        let mut c = controller(now);
        share.go_alone(Some(5.0), Some(2));
        assert_eq!(m.try_acquire(&mut c, 1, now), Ok(()), "no budget needed");
        assert_eq!(c.rate(), 5.0);
        assert!(c.connection_limit() <= 2);
        share.join();
        assert_eq!(m.try_acquire(&mut c, 1, now), Err(now + BUDGET_WAIT));
        // Rejoined, the cap lapses within its hold; the rate does not
        // jump back to what it was: it grows from the share.
        let later = now + ALONE_HOLD + Duration::from_millis(1);
        share.add_tokens(100);
        let _ = m.try_acquire(&mut c, 1, later);
        assert!(c.rate() <= 5.0 * 2.0, "{}", c.rate());
    }

    #[test]
    fn fewer_nodes_sending_scale_this_nodes_part_up() {
        let now = Instant::now();
        let share = Arc::new(Share::new("site"));
        share.add_tokens(100_000);
        let mut m = Member::new(share.clone());
        let mut c = controller(now);
        let mut t = now;
        for _ in 0..300 {
            t += Duration::from_millis(10);
            if m.try_acquire(&mut c, 1, t).is_ok() {
                c.on_reply(t, 250, None, "OK");
            }
        }
        share.set_nodes(3);
        let _ = m.try_acquire(&mut c, 1, t);
        c.on_peer_throttle(t);
        let ceiling = c.ceiling().unwrap();
        share.set_nodes(2);
        let _ = m.try_acquire(&mut c, 1, t);
        let up = c.ceiling().unwrap();
        assert!((up - ceiling * 1.5).abs() < 1e-6, "{up} for {ceiling}");
        share.set_nodes(3);
        let _ = m.try_acquire(&mut c, 1, t);
        assert!((c.ceiling().unwrap() - ceiling).abs() < 1e-6);
    }

    #[test]
    fn the_grant_bounds_the_local_connection_limit() {
        let share = Arc::new(Share::new("site"));
        let m = Member::new(share.clone());
        assert_eq!(m.conn_limit(8), 8);
        share.set_conn_grant(Some(3));
        assert_eq!(m.conn_limit(8), 3);
        m.connection_refused(4);
        assert_eq!(share.local().1, Some(4));
        assert_eq!(share.local().1, None, "taken once");
    }
}
