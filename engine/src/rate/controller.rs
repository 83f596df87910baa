//! One destination's rate controller: signals in, two limits out.

use std::time::{Duration, Instant};

use volley_smtp::EnhancedCode;

use super::counter::RateCounter;
use super::gcra::Gcra;
use super::latency::LatencyTracker;
use super::rules::Action;
use super::settings::RateSettings;
use super::signal::{ReplyKind, classify_reply};
use super::snapshot::{RateSnapshot, RateState};

/// Connections are sized for this much more than Little's law asks
/// (rate x latency), so the rate limit, not the pool, is what binds.
const CONNECTION_HEADROOM: f64 = 1.25;
/// Below this share of the allowed rate actually used in an interval, the
/// destination is idle or short of work: the limit is not the bottleneck,
/// so a good latency says nothing about room above it.
const BUSY_SHARE: f64 = 0.8;
/// A new ceiling is never set below this share of the allowed rate (see
/// `accepting_rate`); repeated signals still cut further, one at a time.
const MIN_REFERENCE_SHARE: f64 = 1.0 / 3.0;
/// Busy intervals in a row with latency above tolerance before easing off.
const SLOW_INTERVALS_TO_EASE: u32 = 2;
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
    /// Connection cap learned from connection throttling (fractional so
    /// that repeated cuts of a small cap still bite).
    conn_cap: f64,
    /// The connection limit handed out, recomputed on every change.
    conn_limit: u32,
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
    last_conn_cut: Option<Instant>,
    conn_guard_until: Option<Instant>,
    consecutive_connect_failures: u32,
    /// Operator rules in force.
    rule_suspend_until: Option<Instant>,
    rule_conn_cap: Option<(u32, Instant)>,
    rule_rate_cap: Option<(f64, Instant)>,
    throttles: u64,
    successes: u64,
    connect_failures: u64,
    /// Busy intervals in a row with latency above tolerance.
    slow_intervals: u32,
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
            conn_cap: f64::from(s.max_connections),
            conn_limit: s.initial_connections,
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
            last_conn_cut: None,
            conn_guard_until: None,
            consecutive_connect_failures: 0,
            rule_suspend_until: None,
            rule_conn_cap: None,
            rule_rate_cap: None,
            throttles: 0,
            successes: 0,
            connect_failures: 0,
            slow_intervals: 0,
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
        self.conn_cap = self.conn_cap.min(f64::from(self.s.max_connections));
        self.set_rate(self.rate);
        self.refresh_connection_limit();
    }

    /// How many connections the destination may have open now. Ask before
    /// opening one; at the limit, the work waits for a busy connection.
    pub fn connection_limit(&self) -> u32 {
        self.conn_limit
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
                self.delivered.record(now);
            }
            ReplyKind::RateThrottle => {
                self.throttles += 1;
                self.cut_rate(now);
            }
            ReplyKind::ConnectionThrottle => {
                self.throttles += 1;
                self.cut_connections(now);
            }
            ReplyKind::Intermediate | ReplyKind::Deferral | ReplyKind::Failure => {}
        }
        kind
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
        self.cut_connections(now);
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
            connection_limit: self.conn_limit,
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
        let t = self.s.latency_tolerance;
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

    /// Little's law: rate x latency connections are busy at once; add
    /// headroom and one spare, then bound by the learned cap and settings.
    fn refresh_connection_limit(&mut self) {
        let need = match self.transaction_latency.recent() {
            Some(l) => (self.rate * l.as_secs_f64() * CONNECTION_HEADROOM).ceil() + 1.0,
            None => f64::from(self.s.initial_connections),
        };
        let rule = self.rule_conn_cap.map_or(u32::MAX, |(c, _)| c);
        let max = self.s.max_connections.min(rule);
        let cap = (self.conn_cap.floor() as u32).min(max);
        let min = self.s.min_connections.min(max);
        let need = need.clamp(0.0, f64::from(u32::MAX)) as u32;
        self.conn_limit = need.clamp(min, cap.max(min));
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
    fn cut_rate(&mut self, now: Instant) {
        if self.cut_guard_until.is_some_and(|g| now < g) {
            return;
        }
        let mut reference = self.accepting_rate(now);
        if let (Phase::Steady, Some(c)) = (self.phase, self.ceiling) {
            // Throttled again under a learned ceiling: the ceiling was read
            // too high (a receiver's burst allowance inflates what it seems
            // to accept), so it comes down too.
            reference = reference.min(c * self.s.decrease_factor);
        }
        self.ceiling = Some(reference);
        self.set_rate(reference * self.s.decrease_factor);
        self.phase = Phase::Steady;
        self.plateau_since = None;
        self.start_backoff(now);
        self.refresh_connection_limit();
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

    /// Suspends new sends for the backoff, doubling it when the last cut
    /// was recent (the previous backoff plus a quiet period).
    fn start_backoff(&mut self, now: Instant) {
        let recent = self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < self.backoff + self.s.quiet_period);
        self.backoff = if recent {
            self.backoff.saturating_mul(2).min(self.s.backoff_max)
        } else {
            self.s.backoff_initial
        };
        let until = after(now, self.backoff);
        self.backoff_until = Some(until);
        self.last_cut = Some(now);
        self.cut_guard_until = Some(until.max(after(now, self.reply_horizon())));
        // The interval that held the suspension says nothing about demand.
        self.period_start = until;
        self.period_sent = 0;
        self.period_refused = false;
    }

    /// Connection throttling or failure: cut the connection cap.
    fn cut_connections(&mut self, now: Instant) {
        if self.conn_guard_until.is_some_and(|g| now < g) {
            return;
        }
        let base = self.conn_cap.min(f64::from(self.conn_limit));
        self.conn_cap = (base * self.s.decrease_factor).max(f64::from(self.s.min_connections));
        self.last_conn_cut = Some(now);
        self.conn_guard_until = Some(after(now, self.reply_horizon()));
        self.refresh_connection_limit();
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
        self.grow_connection_cap(now);
        self.refresh_connection_limit();
        self.period_start = now;
        self.period_sent = 0;
        self.period_refused = false;
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

    /// One quiet interval after a connection cut, the cap grows by one per
    /// interval until it no longer binds.
    fn grow_connection_cap(&mut self, now: Instant) {
        let max = f64::from(self.s.max_connections);
        if self.conn_cap >= max {
            return;
        }
        let quiet = self
            .last_conn_cut
            .is_none_or(|t| now.saturating_duration_since(t) >= self.s.quiet_period);
        if quiet {
            self.conn_cap = (self.conn_cap + 1.0).min(max);
        }
    }

    /// The heart: latency gradient first, then growth by phase.
    fn adjust(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.period_start)
            .as_secs_f64();
        let busy =
            self.period_refused || self.period_sent as f64 >= BUSY_SHARE * self.rate * elapsed;
        let gradient = self.gradient();
        if gradient < 1.0 {
            // Latency that rose while we did not use our allowance is not
            // ours to cure (the remote, or our own host, is busy): hold.
            // One slow interval may be a hiccup (our own host busy, a
            // connection being set up): hold, and ease off on the second.
            if busy {
                self.slow_intervals += 1;
                if self.slow_intervals >= SLOW_INTERVALS_TO_EASE {
                    self.ease_off(now, gradient);
                }
            }
            return;
        }
        self.slow_intervals = 0;
        if !busy {
            return;
        }
        let next = match self.phase {
            Phase::SlowStart => self.rate * self.s.slow_start_factor,
            Phase::Probing => self.rate * (1.0 + self.s.increase_ratio),
            Phase::Steady => match self.ceiling {
                None => self.rate * (1.0 + self.s.increase_ratio),
                Some(ceiling) => self.approach(now, ceiling),
            },
        };
        self.set_rate(next);
    }

    /// Latency is above tolerance: ease off in proportion to how far.
    ///
    /// Outside a steady plateau, what the destination accepts now becomes
    /// its ceiling. Easing stops at half the ceiling: latency that halving
    /// our load did not cure is not ours, so it becomes the new floor (the
    /// remote's baseline moved) instead of driving the rate to its minimum.
    fn ease_off(&mut self, now: Instant, gradient: f64) {
        let ceiling = match (self.phase, self.ceiling) {
            (Phase::Steady, Some(c)) => c,
            _ => {
                let c = self.accepting_rate(now);
                self.ceiling = Some(c);
                c
            }
        };
        let lowest = ceiling * 0.5;
        if self.rate <= lowest * (1.0 + SNAP) {
            // Already halved and still slow: the remote's baseline moved.
            self.command_latency.rebase();
            self.transaction_latency.rebase();
        } else {
            self.set_rate((self.rate * gradient).max(lowest));
        }
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
