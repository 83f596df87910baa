//! One destination's rate controller: signals in, two limits out.

use std::time::{Duration, Instant};

use volley_smtp::EnhancedCode;

use super::connections::ConnectionLimit;
use super::counter::RateCounter;
use super::gcra::Gcra;
use super::latency::LatencyTracker;
use super::rules::Action;
use super::settings::RateSettings;
use super::signal::{ReplyKind, classify_reply};
use super::snapshot::{RateSnapshot, RateState};

/// Below this share of the allowed rate actually used in an interval, the
/// destination is idle or short of work: the limit is not the bottleneck,
/// so a good latency says nothing about room above it.
const BUSY_SHARE: f64 = 0.8;
/// A new ceiling is never set below this share of the allowed rate (see
/// `accepting_rate`); repeated signals still cut further, one at a time.
const MIN_REFERENCE_SHARE: f64 = 1.0 / 3.0;
/// With latency above tolerance, a rise of the allowed rate is "absorbed"
/// when deliveries rose by at least this share of it (lag for the replies
/// still in flight allowed for): the latency is the price of throughput,
/// not a queue. Below it, the destination is at its knee.
const ABSORBED: f64 = 0.4;
/// Latency below this share of the last interval's is still falling: the
/// queue at the remote is draining.
const DRAINING: f64 = 0.95;
/// Intervals in a row that look like the knee before the controller acts.
const KNEE_INTERVALS: u32 = 2;
/// With latency above tolerance at a steady pace, deliveries below this
/// share of the sends say a queue is building at the destination.
const KEEP_UP: f64 = 0.9;
/// The shortest round trip slow start grows by (seconds): a reply faster
/// than this grows the rate no faster.
const MIN_ROUND_TRIP: f64 = 0.001;
/// When the approach toward the plateau is this close, it snaps to it.
const SNAP: f64 = 0.01;
/// Longest span any deadline is set ahead, so that absurd configured
/// durations cannot overflow an `Instant`.
const MAX_SPAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// `now + d`, saturating at [`MAX_SPAN`] instead of panicking.
fn after(now: Instant, d: Duration) -> Instant {
    now.checked_add(d.min(MAX_SPAN)).unwrap_or(now)
}

/// What kind of latency a sample measures. Each kind keeps its own floor:
/// a RCPT reply and a whole transaction are not comparable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LatencyKind {
    /// One envelope command's reply time (MAIL or RCPT): cheap commands of
    /// comparable cost. Leave the reply to the data out; its time depends on
    /// size and content scanning, and the transaction covers it.
    Command,
    /// One whole transaction, MAIL to the final reply; this one also sizes
    /// the connection count (Little's law).
    Transaction,
}

/// A run of throttling replies close together, for the second and later
/// cuts: what the destination accepted over it, while we were sending.
#[derive(Debug, Clone)]
struct Episode {
    start: Instant,
    /// The controller's `successes` when it began.
    successes: u64,
    /// How much of it was spent suspended (backoffs).
    suspended: Duration,
    /// Rate cuts made in it so far.
    cuts: u32,
}

/// Less time than this spent sending in an episode says too little to
/// estimate the acceptance from (seconds).
const MIN_EPISODE_SENDING: f64 = 0.25;

/// The phase the controller is in when it is not suspended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Multiplying the rate each interval until the first sign of limits.
    SlowStart,
    /// At (or climbing back to) a plateau under the learned ceiling.
    Steady,
    /// Growing above a forgotten ceiling to find new capacity.
    Probing,
}

/// Learns one destination's pace: a connection limit and a message rate.
///
/// Sans-IO: every method takes `now`, nothing sleeps, nothing locks; the
/// owning shard calls it from one thread. See the module documentation for
/// how the engine wires it in.
#[derive(Debug, Clone)]
pub struct RateController {
    s: RateSettings,
    phase: Phase,
    /// Allowed messages per second.
    rate: f64,
    /// `1 / rate`, kept beside it so pacing does no float division.
    interval: Duration,
    /// The delivered rate at which the destination last pushed back.
    ceiling: Option<f64>,
    /// Since when the rate has sat at the plateau under the ceiling.
    plateau_since: Option<Instant>,
    connections: ConnectionLimit,
    pacer: Gcra,
    command_latency: LatencyTracker,
    transaction_latency: LatencyTracker,
    delivered: RateCounter,
    /// The interval being accumulated for the next adjustment.
    period_start: Instant,
    period_sent: u64,
    period_refused: bool,
    /// No new transactions before this (throttle backoff).
    backoff_until: Option<Instant>,
    /// The current (growing) backoff length.
    backoff: Duration,
    last_cut: Option<Instant>,
    /// Throttling replies before this come from sends made before the last
    /// cut: counted, but they do not cut again.
    cut_guard_until: Option<Instant>,
    consecutive_connect_failures: u32,
    /// Operator rules in force.
    rule_suspend_until: Option<Instant>,
    rule_conn_cap: Option<(u32, Instant)>,
    rule_rate_cap: Option<(f64, Instant)>,
    throttles: u64,
    /// A cluster's connection leases learn the destination's limit from
    /// its refusals, across the hosts that share it.
    connections_shared: bool,
    /// Rate cuts this destination's own throttling replies made so far
    /// (not those a cut guard held back, nor a peer's): what a cluster
    /// node tells the others.
    cuts: u64,
    successes: u64,
    connect_failures: u64,
    /// Messages accepted in the interval being accumulated.
    period_delivered: u64,
    /// The last interval's (sent, delivered) rates: the base the next one
    /// is compared with.
    prev_period: Option<(f64, f64)>,
    /// Intervals in a row that looked like the knee.
    knee_intervals: u32,
    /// Since a knee, while the queue there drains: the last interval's
    /// recent latency.
    draining: Option<Duration>,
    /// The throttle episode under way. A throttle that comes while one is
    /// recent belongs to it.
    episode: Option<Episode>,
    /// Growth per interval while probing; doubles each interval the probe
    /// goes unanswered, so a capacity that came back is found in seconds.
    probe_step: f64,
    /// The plateau a probe started from: accepted for `probe_after`.
    probe_base: f64,
}

impl RateController {
    /// A controller for a destination seen for the first time at `now`,
    /// starting at the configured initial rate and connections in slow start.
    ///
    /// Settings that fail [`RateSettings::validate`] are replaced by the
    /// defaults (the configuration loader is where the error is reported);
    /// the controller never panics on odd numbers.
    pub fn new(settings: &RateSettings, now: Instant) -> Self {
        let s = sanitized(settings);
        let rate = s.initial_rate.clamp(s.min_rate, s.max_rate.max(s.min_rate));
        let mut c = Self {
            phase: Phase::SlowStart,
            rate,
            interval: Duration::ZERO,
            ceiling: None,
            plateau_since: None,
            connections: ConnectionLimit::new(&s),
            pacer: Gcra::default(),
            command_latency: LatencyTracker::default(),
            transaction_latency: LatencyTracker::default(),
            delivered: RateCounter::new(now),
            period_start: now,
            period_sent: 0,
            period_refused: false,
            backoff_until: None,
            backoff: s.backoff_initial,
            last_cut: None,
            cut_guard_until: None,
            consecutive_connect_failures: 0,
            rule_suspend_until: None,
            rule_conn_cap: None,
            rule_rate_cap: None,
            throttles: 0,
            connections_shared: false,
            cuts: 0,
            successes: 0,
            connect_failures: 0,
            period_delivered: 0,
            prev_period: None,
            knee_intervals: 0,
            draining: None,
            episode: None,
            probe_step: s.increase_ratio,
            probe_base: 0.0,
            s,
        };
        c.set_rate(rate);
        c.refresh_connection_limit();
        c
    }

    /// Replaces the settings (configuration reload); what was learned stays,
    /// clamped into the new bounds.
    pub fn set_settings(&mut self, settings: &RateSettings) {
        self.s = sanitized(settings);
        self.connections.reconfigure(&self.s);
        self.set_rate(self.rate);
        self.refresh_connection_limit();
    }

    /// How many connections the destination may have open now. Ask before
    /// opening one; at the limit, the work waits for a busy connection.
    pub fn connection_limit(&self) -> u32 {
        self.connections.limit()
    }

    /// The allowed message rate, messages per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Asks to start one transaction (one message) at `now`.
    ///
    /// `Err(at)` means "not before `at`": the destination is suspended or the
    /// pace does not allow another message yet. Cheap: a few comparisons,
    /// no allocation.
    pub fn try_acquire(&mut self, now: Instant) -> Result<(), Instant> {
        self.maybe_adjust(now);
        if let Some(until) = self.suspended_until(now) {
            return Err(until);
        }
        match self.pacer.try_acquire(now, self.interval, self.s.burst) {
            Ok(()) => {
                self.period_sent += 1;
                Ok(())
            }
            Err(at) => {
                self.period_refused = true;
                Err(at)
            }
        }
    }

    /// Feeds one reply from the destination and says how it was read.
    ///
    /// Feed the reply that ends each transaction (the reply to the data, or
    /// the failure that ended it early) and every 4yz reply (greeting, MAIL,
    /// RCPT): a 2yz counts as one message accepted, so do not feed the 250s
    /// to MAIL and RCPT. Operator rules are matched separately
    /// ([`RuleSet::match_reply`](super::RuleSet::match_reply)), their action
    /// applied with [`apply`](Self::apply).
    pub fn on_reply(
        &mut self,
        now: Instant,
        code: u16,
        enhanced: Option<EnhancedCode>,
        text: &str,
    ) -> ReplyKind {
        self.maybe_adjust(now);
        self.consecutive_connect_failures = 0;
        let kind = classify_reply(code, enhanced, text);
        match kind {
            ReplyKind::Success => {
                self.successes += 1;
                self.period_delivered += 1;
                self.delivered.record(now);
                self.grow_with_acceptance(now);
            }
            ReplyKind::RateThrottle => {
                self.throttles += 1;
                self.cut_rate(now);
            }
            ReplyKind::ConnectionThrottle => {
                self.throttles += 1;
                self.cut_connections(now, true);
            }
            ReplyKind::Intermediate | ReplyKind::Deferral | ReplyKind::Failure => {}
        }
        kind
    }

    /// Another host of the cluster was throttled by this destination: it
    /// meters all the hosts as one sender, so this controller cuts as if
    /// the reply had come to it (the same cut, ceiling and backoff),
    /// before its own sends collect replies of their own. A cut made just
    /// before (this host's own, or an earlier peer's) guards against it,
    /// as it guards against replies to work sent before it.
    pub fn on_peer_throttle(&mut self, now: Instant) {
        self.maybe_adjust(now);
        // Not counted as this destination's own cut: told back to the
        // cluster, every peer's cut would come back as another, in a
        // circle, until the rate reached its floor.
        let own = self.cuts;
        self.cut_rate(now);
        self.cuts = own;
    }

    /// Whether a refused connection ("too many connections") cuts this
    /// controller's connection cap. Off (`shared`) while a cluster's
    /// connection leases learn the limit from every host's refusals: one
    /// host's refusal says how many the hosts had open together, not how
    /// many this one may have, and each host cutting its own cap leaves
    /// the limit part unused once another host stops. Failed connections
    /// still cut.
    pub fn share_connection_limit(&mut self, shared: bool) {
        self.connections_shared = shared;
    }

    /// This host's part of the destination changed by `factor`: the hosts
    /// of a cluster sending to it went from N to M (factor N / M), so a
    /// host whose peers stopped sending takes up their part, and gives it
    /// back when they start again. A learned connection cap scales with
    /// it, and so does a learned ceiling: the rate climbs to the new
    /// plateau as after a cut, or comes down under it at once. Without a
    /// ceiling (slow start, a probe) the rate finds its way as it does
    /// alone.
    pub fn rescale(&mut self, now: Instant, factor: f64) {
        self.maybe_adjust(now);
        if !(factor.is_finite() && factor > 0.0) || factor == 1.0 {
            return;
        }
        // A connection cap learned from refusals is this host's part of
        // the destination's limit, in slow start too.
        self.connections.rescale(&self.s, factor);
        self.refresh_connection_limit();
        let Some(ceiling) = self.ceiling else {
            return;
        };
        let ceiling = (ceiling * factor).max(self.s.min_rate);
        self.ceiling = Some(ceiling);
        let plateau = ceiling * self.s.plateau;
        if self.rate > plateau {
            self.set_rate(plateau);
        }
        self.plateau_since = None;
        self.refresh_connection_limit();
    }

    /// How many times this destination's own throttling replies cut the
    /// rate so far (a peer's cut is not counted): a cluster node that sees
    /// the count move tells the other nodes.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// The delivered rate at which the destination last pushed back, if it
    /// has.
    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// Feeds one latency sample: how long the destination took to answer.
    /// Feed samples of accepted work only; a quick rejection is no measure
    /// of the destination's load.
    pub fn on_latency(&mut self, now: Instant, kind: LatencyKind, sample: Duration) {
        self.maybe_adjust(now);
        let tracker = match kind {
            LatencyKind::Command => &mut self.command_latency,
            LatencyKind::Transaction => &mut self.transaction_latency,
        };
        tracker.record(
            now,
            sample,
            self.s.latency_floor_window,
            self.s.latency_smoothing,
        );
    }

    /// Reports a connection that was refused, timed out, or dropped before
    /// its work was done. Cuts the connection cap; after
    /// `connect_failures_to_backoff` of them with no reply in between, also
    /// suspends sending as a throttle would.
    pub fn on_connect_failure(&mut self, now: Instant) {
        self.maybe_adjust(now);
        self.connect_failures += 1;
        self.consecutive_connect_failures += 1;
        self.cut_connections(now, false);
        if self.consecutive_connect_failures >= self.s.connect_failures_to_backoff.max(1) {
            self.consecutive_connect_failures = 0;
            self.start_backoff(now);
        }
    }

    /// Applies an operator rule's action (from
    /// [`RuleSet::match_reply`](super::RuleSet::match_reply)).
    pub fn apply(&mut self, now: Instant, action: &Action) {
        self.maybe_adjust(now);
        match *action {
            Action::Suspend(d) => {
                let until = after(now, d);
                self.rule_suspend_until =
                    Some(self.rule_suspend_until.map_or(until, |u| u.max(until)));
            }
            Action::Limit {
                connections,
                rate,
                duration,
            } => {
                let until = after(now, duration);
                if let Some(c) = connections {
                    self.rule_conn_cap = Some((c.max(1), until));
                }
                if let Some(r) = rate.filter(|r| r.is_finite() && *r > 0.0) {
                    self.rule_rate_cap = Some((r, until));
                }
                self.set_rate(self.rate);
                self.refresh_connection_limit();
            }
        }
    }

    /// When sending may resume, if it is suspended now (by a throttle
    /// backoff or an operator rule).
    pub fn suspended_until(&self, now: Instant) -> Option<Instant> {
        [self.backoff_until, self.rule_suspend_until]
            .into_iter()
            .flatten()
            .filter(|&u| u > now)
            .max()
    }

    /// What the controller knows now, for the periodic summary and the
    /// delivery log.
    pub fn snapshot(&self, now: Instant) -> RateSnapshot {
        let state = if self.rule_suspend_until.is_some_and(|u| u > now) {
            RateState::Suspended
        } else if self.backoff_until.is_some_and(|u| u > now) {
            RateState::Backoff
        } else {
            match self.phase {
                Phase::SlowStart => RateState::SlowStart,
                Phase::Steady => RateState::Steady,
                Phase::Probing => RateState::Probing,
            }
        };
        let primary = self.primary_latency();
        RateSnapshot {
            state,
            connection_limit: self.connections.limit(),
            rate: self.rate,
            ceiling: self.ceiling,
            latency_floor: primary.floor(),
            latency_recent: primary.recent(),
            suspended_for: self.suspended_until(now).map(|u| u - now),
            throttles: self.throttles,
            successes: self.successes,
            connect_failures: self.connect_failures,
        }
    }

    /// The transaction latency when there is any, else the command latency.
    fn primary_latency(&self) -> &LatencyTracker {
        if self.transaction_latency.floor().is_some() {
            &self.transaction_latency
        } else {
            &self.command_latency
        }
    }

    /// The lower of the two kinds' gradients: the more congested signal wins.
    fn gradient(&self) -> f64 {
        self.gradient_at(self.s.latency_tolerance)
    }

    /// [`gradient`](Self::gradient) against tolerance `t`.
    fn gradient_at(&self, t: f64) -> f64 {
        [
            self.command_latency.gradient(t),
            self.transaction_latency.gradient(t),
        ]
        .into_iter()
        .flatten()
        .fold(1.0, f64::min)
    }

    fn max_rate(&self) -> f64 {
        let cap = self.rule_rate_cap.map_or(f64::INFINITY, |(r, _)| r);
        self.s.max_rate.min(cap)
    }

    /// Clamps into the configured bounds; an operator's cap below
    /// `min_rate` wins, it is explicit.
    fn clamp_rate(&self, rate: f64) -> f64 {
        let max = self.max_rate();
        rate.clamp(self.s.min_rate.min(max), max)
    }

    /// Sets the rate, clamped, and the pacing interval with it.
    fn set_rate(&mut self, rate: f64) {
        self.rate = self.clamp_rate(rate);
        self.interval = Duration::try_from_secs_f64(1.0 / self.rate).unwrap_or(MAX_SPAN);
    }

    /// Recomputes the connection limit from the rate and latency now.
    fn refresh_connection_limit(&mut self) {
        self.connections.refresh(
            &self.s,
            self.rate,
            self.transaction_latency.recent(),
            self.rule_conn_cap.map(|(c, _)| c),
        );
    }

    /// How long replies to work already sent may still arrive.
    fn reply_horizon(&self) -> Duration {
        let latency = self
            .transaction_latency
            .recent()
            .or(self.command_latency.recent())
            .unwrap_or(self.s.adjust_interval);
        latency
            .saturating_mul(2)
            .clamp(Duration::from_millis(100), MAX_SPAN)
    }

    /// A throttling reply: cut the rate to a fraction of what the destination
    /// was accepting, remember that as the ceiling, and back off.
    ///
    /// The first throttle of an episode reads the acceptance of the last
    /// second. A receiver's burst allowance (a token bucket) inflates that
    /// reading, so each further throttle of the same episode reads the
    /// acceptance over the episode's sending time (backoffs left out) when
    /// that is lower. A throttle that answers a probe is handled apart
    /// ([`probe_refused`](Self::probe_refused)).
    fn cut_rate(&mut self, now: Instant) {
        if self.cut_guard_until.is_some_and(|g| now < g) {
            return;
        }
        self.cuts += 1;
        if self.phase == Phase::Probing && !self.throttled_recently(now) {
            self.probe_refused(now);
            return;
        }
        let mut reference = self.accepting_rate(now);
        if let (Phase::Steady, Some(c)) = (self.phase, self.ceiling) {
            // Throttled again under a learned ceiling: the ceiling was read
            // too high (a receiver's burst allowance inflates what it seems
            // to accept), so it comes down too.
            reference = reference.min(c * self.s.decrease_factor);
        }
        match &self.episode {
            Some(e) if self.throttled_recently(now) => {
                let sending = now
                    .saturating_duration_since(e.start)
                    .saturating_sub(e.suspended)
                    .as_secs_f64();
                if sending >= MIN_EPISODE_SENDING {
                    let sustained = (self.successes - e.successes) as f64 / sending;
                    reference = reference.min(sustained.max(self.rate * MIN_REFERENCE_SHARE));
                }
            }
            _ => {
                self.episode = Some(Episode {
                    start: now,
                    successes: self.successes,
                    suspended: Duration::ZERO,
                    cuts: 0,
                })
            }
        }
        if let Some(e) = &mut self.episode {
            e.cuts += 1;
        }
        self.ceiling = Some(reference);
        self.set_rate(reference * self.s.decrease_factor);
        self.phase = Phase::Steady;
        self.plateau_since = None;
        self.start_backoff(now);
        self.refresh_connection_limit();
    }

    /// A probe above a rate the destination took for `probe_after` without
    /// complaint was refused: that answers the probe. The ceiling is what
    /// it accepted, the rate goes back under it (not below where the probe
    /// began), and sending goes on without a suspension; a second
    /// throttle soon after is an episode of its own, cut and backed off.
    fn probe_refused(&mut self, now: Instant) {
        let ceiling = self
            .accepting_rate(now)
            .max(self.probe_base / self.s.plateau);
        self.ceiling = Some(ceiling);
        self.set_rate(
            (ceiling * self.s.decrease_factor)
                .max(self.probe_base)
                .min(ceiling * self.s.plateau),
        );
        self.phase = Phase::Steady;
        self.plateau_since = Some(now);
        self.last_cut = Some(now);
        self.backoff = self.s.backoff_initial;
        self.cut_guard_until = Some(after(now, self.reply_horizon()));
        self.episode = None;
        self.refresh_connection_limit();
    }

    /// Whether the last cut is recent: within its backoff and a quiet
    /// period after it. A throttle then belongs to the same episode, and
    /// doubles the backoff.
    fn throttled_recently(&self, now: Instant) -> bool {
        self.last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < self.backoff + self.s.quiet_period)
    }

    /// The rate the destination was accepting just now, as a reference for
    /// a new ceiling: what it accepted over the last second, but at least
    /// [`MIN_REFERENCE_SHARE`] of the allowed rate. Right after an idle
    /// spell (no work, or every recipient deferred at once) the last
    /// second's deliveries say little of the capacity, and one signal must
    /// not cut the rate to the floor.
    fn accepting_rate(&mut self, now: Instant) -> f64 {
        let delivered = self.delivered.per_second(now).max(self.s.min_rate);
        self.rate
            .min(delivered.max(self.rate * MIN_REFERENCE_SHARE))
    }

    /// Suspends new sends for the backoff: `backoff_initial` for a new
    /// episode and its second cut, doubling from the third.
    fn start_backoff(&mut self, now: Instant) {
        // The second cut of an episode is measured over the episode and
        // usually lands under the capacity: it keeps the first backoff.
        // From the third on, the remote means it: the backoff doubles.
        let measured = self.episode.as_ref().is_some_and(|e| e.cuts <= 2);
        self.backoff = if !self.throttled_recently(now) {
            self.s.backoff_initial
        } else if measured {
            self.backoff
        } else {
            self.backoff.saturating_mul(2).min(self.s.backoff_max)
        };
        let until = after(now, self.backoff);
        self.backoff_until = Some(until);
        if let Some(e) = &mut self.episode {
            e.suspended += self.backoff;
        }
        self.last_cut = Some(now);
        self.cut_guard_until = Some(until.max(after(now, self.reply_horizon())));
        // The interval that held the suspension says nothing about demand.
        self.period_start = until;
        self.reset_period();
    }

    /// Slow start on the receiver's clock, as TCP's follows its
    /// acknowledgements: each accepted message adds one round trip's worth
    /// (1 / the transaction latency floor) to the rate, so the rate doubles
    /// about once per round trip while nothing says stop; never above
    /// `slow_start_factor` times what the destination accepted over the
    /// last 100-200 ms, so it cannot run ahead of what the receiver has
    /// shown it takes, and only while latency stays within half the
    /// tolerance. A throttling reply or a knee ends slow start as before; the interval's own doubling stays for destinations that
    /// answer slower than an interval.
    fn grow_with_acceptance(&mut self, now: Instant) {
        if !self.s.round_trip_growth
            || self.phase != Phase::SlowStart
            || self.suspended_until(now).is_some()
        {
            return;
        }
        // Latency that rises says a queue may be building there: growth
        // waits for the interval's judgement (the knee test).
        let half = 1.0 + (self.s.latency_tolerance - 1.0) / 2.0;
        if self.gradient_at(half) < 1.0 {
            return;
        }
        let Some(round_trip) = self.transaction_latency.floor() else {
            return;
        };
        let round_trip = round_trip.as_secs_f64().max(MIN_ROUND_TRIP);
        let shown = self.s.slow_start_factor * self.delivered.recent_per_second(now);
        let next = (self.rate + 1.0 / round_trip).min(shown);
        if next > self.rate {
            self.set_rate(next);
            self.refresh_connection_limit();
        }
    }

    /// Starts accumulating a new interval.
    fn reset_period(&mut self) {
        self.period_sent = 0;
        self.period_delivered = 0;
        self.period_refused = false;
    }

    /// Connection throttling (`refused`) or failure: cut the connection cap.
    fn cut_connections(&mut self, now: Instant, refused: bool) {
        if refused && self.connections_shared {
            return;
        }
        let horizon = self.reply_horizon();
        self.connections.cut(now, &self.s, refused, horizon);
        self.refresh_connection_limit();
    }

    /// A connection of the destination greeted while `open` were open
    /// (this one included): that many are proven to be accepted, and the
    /// limit may go one past them.
    pub fn on_connected(&mut self, open: u32) {
        if self.connections.connected(open) {
            self.refresh_connection_limit();
        }
    }

    /// Runs the periodic adjustment once an interval has passed.
    fn maybe_adjust(&mut self, now: Instant) {
        if now.saturating_duration_since(self.period_start) < self.s.adjust_interval {
            return;
        }
        self.expire_rules(now);
        if self.suspended_until(now).is_none() {
            self.adjust(now);
        }
        self.connections.grow(now, &self.s);
        self.refresh_connection_limit();
        self.period_start = now;
        self.reset_period();
    }

    fn expire_rules(&mut self, now: Instant) {
        if self.rule_suspend_until.is_some_and(|u| u <= now) {
            self.rule_suspend_until = None;
        }
        if self.rule_conn_cap.is_some_and(|(_, u)| u <= now) {
            self.rule_conn_cap = None;
        }
        if self.rule_rate_cap.is_some_and(|(_, u)| u <= now) {
            self.rule_rate_cap = None;
        }
    }

    /// The heart: the latency gate first, then growth by phase.
    ///
    /// Latency above tolerance is a question, not a verdict: some receivers
    /// answer slower the more connections they carry and still take all the
    /// mail, others queue it. What tells them apart is what more sending
    /// bought: if the sends rose and deliveries rose with them, the latency
    /// is the price of throughput and growth goes on; if deliveries did not
    /// follow (or, at a steady pace, fall behind the sends), the destination
    /// is at its knee and a queue is building there.
    fn adjust(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.period_start)
            .as_secs_f64();
        let busy =
            self.period_refused || self.period_sent as f64 >= BUSY_SHARE * self.rate * elapsed;
        let delivered = self.period_delivered as f64 / elapsed;
        let sent = self.period_sent as f64 / elapsed;
        let before = self.prev_period.replace((sent, delivered));
        let slow = self.gradient() < 1.0;
        // One knee-like interval may be our own host being busy (its latency
        // and its deliveries both suffer): the controller acts on the second
        // in a row. A slow interval whose sends the pace did not bind (the
        // connections are all waiting on the remote) confirms the first.
        let knee = slow
            && (self.at_knee(before, sent, delivered, elapsed)
                || (self.knee_intervals > 0 && !busy));
        self.knee_intervals = if knee { self.knee_intervals + 1 } else { 0 };
        if knee {
            // A probe is deliberate: the knee it finds is acted on at once.
            if self.knee_intervals >= KNEE_INTERVALS || self.phase == Phase::Probing {
                self.knee_intervals = 0;
                self.settle_at_knee(delivered.max(before.map_or(0.0, |(_, d)| d)));
            }
            return;
        }
        if self.still_draining() {
            return;
        }
        if !busy {
            // Latency that rose while we did not use our allowance, and that
            // is no knee, is not ours to cure (the remote, or our own host,
            // is busy): hold.
            return;
        }
        let next = match self.phase {
            Phase::SlowStart => self.rate * self.s.slow_start_factor,
            Phase::Probing => {
                let next = self.rate * (1.0 + self.probe_step);
                // The step grows only while latency stays within half the
                // tolerance: a queue that starts to build is not raced.
                let half = 1.0 + (self.s.latency_tolerance - 1.0) / 2.0;
                if self.gradient_at(half) >= 1.0 {
                    self.probe_step = (self.probe_step * 2.0).min(self.s.slow_start_factor - 1.0);
                }
                next
            }
            Phase::Steady => match self.ceiling {
                None => self.rate * (1.0 + self.s.increase_ratio),
                Some(ceiling) => self.approach(now, ceiling),
            },
        };
        self.set_rate(next);
    }

    /// After a knee the rate holds while the queue built at the remote
    /// drains: while latency is above tolerance and still falling. Latency
    /// that stops falling above tolerance is the remote's own (it answers
    /// slower under any load): the climb to the plateau goes on.
    fn still_draining(&mut self) -> bool {
        let Some(last) = self.draining else {
            return false;
        };
        let recent = self.primary_latency().recent();
        match recent {
            Some(r) if self.gradient() < 1.0 && r < last.mul_f64(DRAINING) => {
                self.draining = Some(r);
                true
            }
            _ => {
                self.draining = None;
                false
            }
        }
    }

    /// With latency above tolerance: whether the destination stopped
    /// turning more sending into more deliveries. `before` is the last
    /// interval's (sent, delivered) rates. What counts is what was sent,
    /// not what was allowed: a rise of the allowance that connections kept
    /// from being sent says nothing either way.
    fn at_knee(&self, before: Option<(f64, f64)>, sent: f64, delivered: f64, elapsed: f64) -> bool {
        match before {
            // A small rise (the approach to a plateau) is lost in the noise
            // of one interval's count: judge it by the steady-pace test.
            Some((sent_before, delivered_before))
                if sent >= sent_before * (1.0 + self.s.increase_ratio / 2.0) =>
            {
                // Replies to what was sent in the last round trip of the
                // interval are still out: that share of the rise cannot
                // show. The floor is the round trip: the recent latency
                // holds the very queue this looks for.
                let latency = self
                    .transaction_latency
                    .floor()
                    .map_or(0.0, |l| l.as_secs_f64());
                let visible = (1.0 - latency / elapsed).max(0.0);
                let expected = (sent - sent_before) * visible;
                expected > 0.0 && delivered - delivered_before < ABSORBED * expected
            }
            _ => delivered < KEEP_UP * sent,
        }
    }

    /// The destination's knee is at `delivered`: that is its ceiling. The
    /// rate drops below it, the further the higher latency climbed (down to
    /// half), so that the queue built there drains; then it climbs back to
    /// the plateau.
    fn settle_at_knee(&mut self, delivered: f64) {
        let ceiling = delivered.max(self.s.min_rate);
        self.ceiling = Some(ceiling);
        self.set_rate(ceiling * self.s.decrease_factor * self.gradient());
        self.draining = self.primary_latency().recent();
        self.phase = Phase::Steady;
        self.plateau_since = None;
    }

    /// Steady: climb halfway to the plateau each interval; once there and
    /// quiet for `probe_after`, forget the ceiling and probe above it.
    fn approach(&mut self, now: Instant, ceiling: f64) -> f64 {
        let target = ceiling * self.s.plateau;
        if self.rate < target * (1.0 - SNAP) {
            self.plateau_since = None;
            return self.rate + (target - self.rate) / 2.0;
        }
        let since = *self.plateau_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= self.s.probe_after {
            self.phase = Phase::Probing;
            self.ceiling = None;
            self.plateau_since = None;
            self.probe_step = self.s.increase_ratio;
            self.probe_base = target;
            return target * (1.0 + self.s.increase_ratio);
        }
        target
    }
}

/// The settings if they validate, else the defaults, with a warning.
fn sanitized(settings: &RateSettings) -> RateSettings {
    match settings.validate() {
        Ok(()) => settings.clone(),
        Err(e) => {
            tracing::warn!("{e}; using the default rate settings");
            RateSettings::default()
        }
    }
}
