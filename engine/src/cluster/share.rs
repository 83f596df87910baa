//! What a shard and the cluster thread share for one destination: a few
//! atomics, written by one side and read by the other, never a lock on
//! the hot path.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

/// No connection grant from the cluster: the local limit alone applies.
const UNBOUNDED: u32 = u32::MAX;

/// One destination's (a site's, or a lone domain's) place in the cluster
/// on this node. The shards that pace the destination write what their
/// controller knows and spend the budget; the cluster thread claims the
/// budget from Redis, grants connections and passes on the other nodes'
/// cuts.
#[derive(Debug)]
pub(crate) struct Share {
    key: Box<str>,
    // Written by the shard, read by the cluster thread.
    rate: AtomicU64,
    ceiling: AtomicU64,
    conn_limit: AtomicU32,
    open: AtomicU32,
    /// Connections open when the destination refused one ("too many
    /// connections"); 0: none since the last sync.
    refused_open: AtomicU32,
    cuts: AtomicU64,
    /// Transactions started, and those that waited for budget: the
    /// cluster thread sees the destination is in use.
    spent: AtomicU64,
    short: AtomicU64,
    // Written by the cluster thread, read by the shard.
    /// Budget claimed and not yet spent (a little below zero when two
    /// shards take the last one at once).
    tokens: AtomicI64,
    conn_grant: AtomicU32,
    peer_cuts: AtomicU64,
    /// Nodes sending to the destination, as the cluster counts them (0:
    /// not known yet).
    nodes: AtomicU32,
    /// Redis is unreachable: the shard paces alone, capped at its share.
    alone: AtomicBool,
    alone_rate: AtomicU64,
    alone_conns: AtomicU32,
}

/// What the cluster allows a shard for a destination now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Standing {
    /// Joined: a transaction needs budget claimed from the cluster;
    /// whether there is some.
    Joined {
        /// Budget is in hand.
        budget: bool,
    },
    /// Redis is unreachable: pace alone, within this node's share of
    /// the last shared ceiling (none known: the local controller alone).
    Alone {
        rate: Option<f64>,
        connections: Option<u32>,
    },
}

/// What the shard's controller knows, for the cluster thread.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Local {
    /// The allowed rate, messages per second.
    pub(crate) rate: f64,
    /// The learned ceiling, if any.
    pub(crate) ceiling: Option<f64>,
    /// The controller's connection limit.
    pub(crate) conn_limit: u32,
    /// Connections open or opening now.
    pub(crate) open: u32,
    /// Rate cuts so far.
    pub(crate) cuts: u64,
}

impl Share {
    pub(crate) fn new(key: &str) -> Share {
        Share {
            key: key.into(),
            rate: AtomicU64::new(0f64.to_bits()),
            ceiling: AtomicU64::new(f64::NAN.to_bits()),
            conn_limit: AtomicU32::new(1),
            open: AtomicU32::new(0),
            refused_open: AtomicU32::new(0),
            cuts: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            short: AtomicU64::new(0),
            tokens: AtomicI64::new(0),
            conn_grant: AtomicU32::new(UNBOUNDED),
            peer_cuts: AtomicU64::new(0),
            nodes: AtomicU32::new(0),
            alone: AtomicBool::new(false),
            alone_rate: AtomicU64::new(f64::NAN.to_bits()),
            alone_conns: AtomicU32::new(UNBOUNDED),
        }
    }

    /// The destination's key: the site's, or the domain's.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    // ---- the shard's side ----

    /// What the cluster allows now. A `Joined` without budget counts as
    /// demand the next claim covers.
    pub(crate) fn standing(&self) -> Standing {
        if self.alone.load(Relaxed) {
            let rate = f64::from_bits(self.alone_rate.load(Relaxed));
            let conns = self.alone_conns.load(Relaxed);
            return Standing::Alone {
                rate: rate.is_finite().then_some(rate),
                connections: (conns != UNBOUNDED).then_some(conns),
            };
        }
        let budget = self.tokens.load(Relaxed) > 0;
        if !budget {
            self.short.fetch_add(1, Relaxed);
        }
        Standing::Joined { budget }
    }

    /// One transaction started on budget claimed from the cluster.
    pub(crate) fn spend(&self) {
        self.tokens.fetch_sub(1, Relaxed);
        self.spent.fetch_add(1, Relaxed);
    }

    /// The controller's state, for the next sync.
    pub(crate) fn publish(&self, l: Local) {
        self.rate.store(l.rate.to_bits(), Relaxed);
        let ceiling = l.ceiling.unwrap_or(f64::NAN);
        self.ceiling.store(ceiling.to_bits(), Relaxed);
        self.conn_limit.store(l.conn_limit, Relaxed);
        self.open.store(l.open, Relaxed);
        self.cuts.store(l.cuts, Relaxed);
    }

    /// The destination refused a connection with `open` open (this one
    /// counted): the cluster learns its limit.
    pub(crate) fn connection_refused(&self, open: u32) {
        self.refused_open.fetch_max(open.max(1), Relaxed);
    }

    /// Connections this node may hold for the destination, when the
    /// cluster bounds them.
    pub(crate) fn conn_grant(&self) -> Option<u32> {
        let g = self.conn_grant.load(Relaxed);
        (g != UNBOUNDED).then_some(g)
    }

    /// How many cuts other nodes made that this node heard of.
    pub(crate) fn peer_cuts(&self) -> u64 {
        self.peer_cuts.load(Relaxed)
    }

    /// Nodes sending to the destination (this one counted); 0 before
    /// the cluster has counted them.
    pub(crate) fn nodes(&self) -> u32 {
        self.nodes.load(Relaxed)
    }

    // ---- the cluster thread's side ----

    /// The controller's state as last published, and the refused
    /// connection count since the last call (taken).
    pub(crate) fn local(&self) -> (Local, Option<u32>) {
        let ceiling = f64::from_bits(self.ceiling.load(Relaxed));
        let local = Local {
            rate: f64::from_bits(self.rate.load(Relaxed)),
            ceiling: ceiling.is_finite().then_some(ceiling),
            conn_limit: self.conn_limit.load(Relaxed),
            open: self.open.load(Relaxed),
            cuts: self.cuts.load(Relaxed),
        };
        let refused = self.refused_open.swap(0, Relaxed);
        (local, (refused > 0).then_some(refused))
    }

    /// Transactions started and those that waited for budget, so far.
    pub(crate) fn use_counts(&self) -> (u64, u64) {
        (self.spent.load(Relaxed), self.short.load(Relaxed))
    }

    /// Budget in hand.
    pub(crate) fn tokens(&self) -> i64 {
        self.tokens.load(Relaxed)
    }

    /// A claim was granted.
    pub(crate) fn add_tokens(&self, n: u32) {
        self.tokens.fetch_add(i64::from(n), Relaxed);
    }

    /// The cluster's connection grant.
    pub(crate) fn set_conn_grant(&self, n: Option<u32>) {
        self.conn_grant.store(n.unwrap_or(UNBOUNDED), Relaxed);
    }

    /// The nodes sending to the destination, as counted.
    pub(crate) fn set_nodes(&self, n: u32) {
        self.nodes.store(n, Relaxed);
    }

    /// Another node cut its rate.
    pub(crate) fn heard_peer_cut(&self) {
        self.peer_cuts.fetch_add(1, Relaxed);
    }

    /// Redis answered again: budget from the cluster again.
    pub(crate) fn join(&self) {
        self.alone.store(false, Relaxed);
    }

    /// Redis is unreachable: pace alone within `rate` and `connections`.
    pub(crate) fn go_alone(&self, rate: Option<f64>, connections: Option<u32>) {
        self.alone_rate
            .store(rate.unwrap_or(f64::NAN).to_bits(), Relaxed);
        self.alone_conns
            .store(connections.unwrap_or(UNBOUNDED), Relaxed);
        self.set_conn_grant(None);
        self.alone.store(true, Relaxed);
    }
}

/// Every destination this node paces in the cluster, by key. The lock is
/// taken when a pool first looks its share up and once per sync by the
/// cluster thread, never per message.
#[derive(Debug, Default)]
pub(crate) struct Board {
    shares: Mutex<HashMap<Box<str>, Arc<Share>>>,
    /// Redis is unreachable (so a share made now starts alone).
    alone: AtomicBool,
}

impl Board {
    /// The share of destination `key`, made on first use.
    pub(crate) fn share(&self, key: &str) -> Arc<Share> {
        let mut map = self.shares.lock();
        if let Some(s) = map.get(key) {
            return s.clone();
        }
        let s = Arc::new(Share::new(key));
        if self.alone.load(Relaxed) {
            s.go_alone(None, None);
        }
        map.insert(key.into(), s.clone());
        s
    }

    /// Every share, for one sync.
    pub(crate) fn all(&self) -> Vec<Arc<Share>> {
        self.shares.lock().values().cloned().collect()
    }

    /// Forgets `key` when no pool holds it any more.
    pub(crate) fn retire(&self, key: &str) {
        let mut map = self.shares.lock();
        if map.get(key).is_some_and(|s| Arc::strong_count(s) == 1) {
            map.remove(key);
        }
    }

    /// Whether shares made from now on start alone.
    pub(crate) fn set_alone(&self, alone: bool) {
        self.alone.store(alone, Relaxed);
    }
}
