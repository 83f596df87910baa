//! The cluster's decisions, without I/O: how much budget to claim, what a
//! node falls back to when Redis is gone, what it says when that happens
//! and when Redis is back. Time comes in as `now`; the tests drive it on a
//! simulated clock.

use std::time::{Duration, Instant};

use super::share::Local;

/// A claim covers this many sync intervals of the node's own rate: enough
/// that a sync that comes a little late does not leave the node waiting,
/// few enough that budget claimed and unspent (a node that stops, or
/// crashes) stays small.
pub(crate) const CLAIM_INTERVALS: f64 = 2.0;
/// The largest single claim, whatever the rate says.
const MAX_CLAIM: f64 = 100_000.0;
/// Most sync intervals between two syncs of one destination: a slow one
/// is synced less often (its claim covers as long), so a node with many
/// small destinations does not send Redis a call per destination every
/// interval.
pub(crate) const MAX_PERIOD: u32 = 10;
/// A node that sent to a destination within this long counts as one of
/// the nodes sending to it (its part of the destination is kept for it).
pub(crate) const ACTIVE_WITHIN: Duration = Duration::from_secs(1);
/// A destination nothing was sent to for this long stops being synced:
/// its entries in Redis expire, its leases go.
pub(crate) const IDLE_AFTER: Duration = Duration::from_secs(10);

/// Budget to claim for the next intervals: what `CLAIM_INTERVALS` of the
/// node's `rate` need, less what is `in_hand`. At least one while the
/// destination has had no budget, so a rate near zero still moves.
pub(crate) fn claim(rate: f64, interval: Duration, in_hand: i64) -> u32 {
    let rate = if rate.is_finite() { rate.max(0.0) } else { 0.0 };
    let target = (rate * interval.as_secs_f64() * CLAIM_INTERVALS)
        .ceil()
        .clamp(1.0, MAX_CLAIM);
    let want = target - in_hand as f64;
    if want <= 0.0 { 0 } else { want as u32 }
}

/// How many sync intervals one sync of a destination at `rate` covers:
/// one for a destination that sends a message or more per interval, up
/// to [`MAX_PERIOD`] for slower ones, so each claim is worth about one
/// message at least.
pub(crate) fn period(rate: f64, interval: Duration) -> u32 {
    let per = rate * interval.as_secs_f64();
    if per.is_nan() || per <= 0.0 {
        return MAX_PERIOD;
    }
    (1.0 / per).ceil().clamp(1.0, f64::from(MAX_PERIOD)) as u32
}

/// A node's share of what the cluster learned, for when it paces alone:
/// `1 / nodes` of the shared ceiling (the sum of the nodes' ceilings, or
/// their rates where none was learned) and of the connection cap, with
/// `nodes` the nodes seen sending to the destination recently.
pub(crate) fn fallback(view: &View) -> (Option<f64>, Option<u32>) {
    let n = view.nodes.max(1);
    let rate = (view.ceiling > 0.0).then(|| view.ceiling / f64::from(n));
    let conns = view.conn_cap.map(|c| (c / n).max(1));
    (rate, conns)
}

/// What one sync told a node about a destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct View {
    /// Budget granted by this sync.
    pub(crate) granted: u32,
    /// Connections this node may hold.
    pub(crate) conns: u32,
    /// Nodes that sent to the destination in the last second (this one
    /// counted when it did).
    pub(crate) nodes: u32,
    /// The shared ceiling: the sum of the nodes' ceilings (their rates
    /// where none was learned).
    pub(crate) ceiling: f64,
    /// The connection cap the cluster learned, when it has.
    pub(crate) conn_cap: Option<u32>,
    /// How many cuts the nodes have made, and which node made the last.
    pub(crate) epoch: u64,
    /// Whether the last cut was this node's.
    pub(crate) mine: bool,
}

/// The cluster thread's memory of one destination between syncs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Track {
    /// The controller's cut count already told to the cluster.
    cuts_told: u64,
    /// The cluster's cut epoch already heard.
    epoch: Option<u64>,
    /// Use counts at the last sync, and when they last moved.
    used: (u64, u64),
    used_at: Option<Instant>,
    /// When the next sync is due.
    due: Option<Instant>,
    /// The last view, for the fallback share.
    pub(crate) last: Option<View>,
    /// The sending nodes as the last answer counted them, and as two
    /// answers in a row agreed (the count the node's part follows).
    nodes_raw: u32,
    nodes_settled: u32,
}

/// What to send Redis for one destination.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ask {
    pub(crate) local: Local,
    /// Budget wanted.
    pub(crate) want: u32,
    /// The controller cut its rate since the last sync.
    pub(crate) cut: bool,
    /// The destination refused a connection with this many open.
    pub(crate) refused_open: Option<u32>,
    /// This node sent to the destination within [`ACTIVE_WITHIN`].
    pub(crate) active: bool,
}

/// What a destination needs at one sync round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Next {
    /// Nothing was sent to it for [`IDLE_AFTER`]: it is no longer synced.
    Idle,
    /// Its last claim still covers it.
    Later,
    /// A sync now.
    Sync(Ask),
}

impl Track {
    /// What destination needs at the round at `now`. `used` is the
    /// share's (spent, short) counts: a shard that waited for budget since
    /// the last sync, or a refused connection, brings the sync forward.
    pub(crate) fn next(
        &mut self,
        now: Instant,
        local: Local,
        refused_open: Option<u32>,
        used: (u64, u64),
        in_hand: i64,
        interval: Duration,
    ) -> Next {
        let waited = used.1 != self.used.1;
        if used != self.used || self.used_at.is_none() {
            self.used = used;
            self.used_at = Some(now);
        }
        let since = self.used_at.map_or(Duration::ZERO, |t| now - t);
        if since >= IDLE_AFTER && refused_open.is_none() {
            return Next::Idle;
        }
        let due = self.due.is_none_or(|d| now >= d);
        let cut = local.cuts > self.cuts_told;
        if !(due || waited || cut || refused_open.is_some()) {
            return Next::Later;
        }
        let p = period(local.rate, interval);
        self.due = Some(now + interval * p);
        Next::Sync(Ask {
            local,
            want: claim(local.rate, interval * p, in_hand),
            cut,
            refused_open,
            active: since < ACTIVE_WITHIN,
        })
    }

    /// Redis answered `view` to `ask`: whether another node cut since the
    /// last answer (the local controller should cut too). The first
    /// answer only learns the epoch: cuts before this node came are old.
    pub(crate) fn answered(&mut self, ask: &Ask, view: View) -> bool {
        self.cuts_told = self.cuts_told.max(ask.local.cuts);
        self.last = Some(view);
        // A count seen once may be a node's first sync after Redis
        // restarted empty (the others not yet back): the part follows a
        // count that two answers agree on. A count without this node (it
        // sent nothing for a while) sizes no part of its own.
        if ask.active {
            if view.nodes == self.nodes_raw && view.nodes > 0 {
                self.nodes_settled = view.nodes;
            }
            self.nodes_raw = view.nodes;
        }
        let heard = self
            .epoch
            .is_some_and(|seen| view.epoch > seen && !(view.mine && view.epoch == seen + 1));
        self.epoch = Some(view.epoch);
        heard
    }

    /// The nodes sending to the destination, as two answers in a row
    /// agreed; 0 before they have.
    pub(crate) fn nodes(&self) -> u32 {
        self.nodes_settled
    }
}

/// Whether Redis answers, and what to say when that changes: once when
/// it stops, once when it is back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Link {
    lost_since: Option<Instant>,
}

/// A change of the link worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Redis stopped answering: every destination paces alone at its
    /// share.
    Lost,
    /// Redis answers again after this long: the nodes rejoin.
    Back(Duration),
}

impl Link {
    /// A sync round at `now` ended; `ok`: Redis answered it.
    pub(crate) fn round(&mut self, now: Instant, ok: bool) -> Option<Change> {
        match (self.lost_since, ok) {
            (None, false) => {
                self.lost_since = Some(now);
                Some(Change::Lost)
            }
            (Some(since), true) => {
                self.lost_since = None;
                Some(Change::Back(now.saturating_duration_since(since)))
            }
            _ => None,
        }
    }

    /// Whether Redis is unreachable now.
    pub(crate) fn is_lost(&self) -> bool {
        self.lost_since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(rate: f64, cuts: u64) -> Local {
        Local {
            rate,
            ceiling: None,
            conn_limit: 4,
            open: 2,
            cuts,
        }
    }

    fn view(epoch: u64, mine: bool) -> View {
        View {
            granted: 10,
            conns: 4,
            nodes: 3,
            ceiling: 300.0,
            conn_cap: Some(10),
            epoch,
            mine,
        }
    }

    #[test]
    fn a_claim_covers_two_intervals_less_what_is_in_hand() {
        let iv = Duration::from_millis(50);
        assert_eq!(claim(200.0, iv, 0), 20);
        assert_eq!(claim(200.0, iv, 15), 5);
        assert_eq!(claim(200.0, iv, 25), 0, "enough in hand");
        assert_eq!(claim(0.5, iv, 0), 1, "a slow rate still gets one");
        assert_eq!(claim(f64::NAN, iv, 0), 1, "nonsense asks for little");
        assert_eq!(claim(1e12, iv, 0), 100_000, "bounded");
    }

    #[test]
    fn alone_a_node_takes_its_share_of_the_shared_ceiling_and_connections() {
        assert_eq!(fallback(&view(0, false)), (Some(100.0), Some(3)));
        let one = View {
            nodes: 0,
            conn_cap: None,
            ..view(0, false)
        };
        assert_eq!(fallback(&one), (Some(300.0), None), "no nodes counts one");
        let tiny = View {
            conn_cap: Some(2),
            ceiling: 0.0,
            ..view(0, false)
        };
        assert_eq!(fallback(&tiny), (None, Some(1)), "never no connection");
    }

    fn sync(n: Next) -> Ask {
        match n {
            Next::Sync(a) => a,
            other => panic!("no sync: {other:?}"),
        }
    }

    #[test]
    fn a_slow_destination_is_synced_less_often_with_claims_to_match() {
        let iv = Duration::from_millis(50);
        assert_eq!(period(200.0, iv), 1);
        assert_eq!(period(5.0, iv), 4);
        assert_eq!(period(0.1, iv), MAX_PERIOD);
        assert_eq!(period(f64::NAN, iv), MAX_PERIOD);
        let t0 = Instant::now();
        let mut t = Track::default();
        let a = sync(t.next(t0, local(5.0, 0), None, (1, 0), 0, iv));
        assert_eq!(a.want, 2, "two periods of 200 ms at 5/s");
        let soon = t0 + iv;
        assert_eq!(
            t.next(soon, local(5.0, 0), None, (2, 0), 1, iv),
            Next::Later
        );
        // A shard that waited for budget, or a refusal, brings it forward.
        assert!(matches!(
            t.next(soon, local(5.0, 0), None, (2, 1), 0, iv),
            Next::Sync(_)
        ));
        assert!(matches!(
            t.next(soon, local(5.0, 0), Some(3), (2, 1), 1, iv),
            Next::Sync(_)
        ));
        let due = soon + iv * 4;
        assert!(matches!(
            t.next(due, local(5.0, 0), None, (2, 1), 1, iv),
            Next::Sync(_)
        ));
    }

    #[test]
    fn a_cut_is_told_once_and_other_nodes_cuts_are_heard_once() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(50);
        let mut t = Track::default();
        let a = sync(t.next(t0, local(100.0, 0), None, (1, 0), 0, iv));
        assert!(!a.cut);
        assert!(!t.answered(&a, view(7, false)), "earlier cuts are old news");
        // The local controller cut: told once.
        let a = sync(t.next(t0, local(70.0, 1), None, (2, 0), 0, iv));
        assert!(a.cut, "a cut is synced at once");
        assert!(
            !t.answered(&a, view(8, true)),
            "its own cut is not a peer's"
        );
        let a = sync(t.next(t0 + iv, local(70.0, 1), None, (3, 0), 0, iv));
        assert!(!a.cut, "told already");
        assert!(t.answered(&a, view(9, false)), "a peer cut");
        assert!(!t.answered(&a, view(9, false)), "heard once");
        // Two cuts at once, the last ours: the other one is heard.
        assert!(t.answered(&a, view(11, true)));
    }

    #[test]
    fn the_node_count_settles_on_two_answers_that_agree() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(50);
        let mut t = Track::default();
        let a = sync(t.next(t0, local(100.0, 0), None, (1, 0), 0, iv));
        assert!(a.active);
        let with = |n| View {
            nodes: n,
            ..view(0, false)
        };
        t.answered(&a, with(3));
        assert_eq!(t.nodes(), 0);
        t.answered(&a, with(3));
        assert_eq!(t.nodes(), 3);
        t.answered(&a, with(1));
        assert_eq!(t.nodes(), 3, "a restarted Redis answers 1 once");
        t.answered(&a, with(3));
        t.answered(&a, with(2));
        t.answered(&a, with(2));
        assert_eq!(t.nodes(), 2, "one left");
        let quiet = t0 + ACTIVE_WITHIN;
        let a = sync(t.next(
            quiet + iv * MAX_PERIOD,
            local(100.0, 0),
            Some(1),
            (1, 0),
            0,
            iv,
        ));
        assert!(!a.active, "nothing sent for a second");
    }

    #[test]
    fn an_idle_destination_stops_being_synced_unless_it_refused() {
        let t0 = Instant::now();
        let iv = Duration::from_millis(50);
        let mut t = Track::default();
        assert!(matches!(
            t.next(t0, local(10.0, 0), None, (5, 0), 0, iv),
            Next::Sync(_)
        ));
        let later = t0 + IDLE_AFTER;
        assert_eq!(
            t.next(later, local(10.0, 0), None, (5, 0), 0, iv),
            Next::Idle
        );
        assert!(matches!(
            t.next(later, local(10.0, 0), Some(3), (5, 0), 0, iv),
            Next::Sync(_)
        ));
        let again = later + iv * MAX_PERIOD;
        assert!(
            matches!(
                t.next(again, local(10.0, 0), None, (6, 0), 0, iv),
                Next::Sync(_)
            ),
            "in use again"
        );
    }

    #[test]
    fn losing_and_finding_redis_is_said_once_each() {
        let t0 = Instant::now();
        let mut l = Link::default();
        assert_eq!(l.round(t0, true), None);
        assert_eq!(l.round(t0, false), Some(Change::Lost));
        assert!(l.is_lost());
        assert_eq!(l.round(t0 + Duration::from_secs(1), false), None);
        assert_eq!(
            l.round(t0 + Duration::from_secs(3), true),
            Some(Change::Back(Duration::from_secs(3)))
        );
        assert_eq!(l.round(t0 + Duration::from_secs(4), true), None);
    }
}
