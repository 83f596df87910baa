//! One destination's connection limit: Little's law for what the pace
//! needs, capped by what the destination taught (refusals, failures) and
//! grown one past the connections it has proven to accept.

use std::time::{Duration, Instant};

use super::settings::RateSettings;

/// Connections are sized for this much more than Little's law asks
/// (rate x latency), so the rate limit, not the pool, is what binds.
const CONNECTION_HEADROOM: f64 = 1.25;

/// The connection half of a [`RateController`](super::RateController).
///
/// Sans-IO like its owner: time comes in as `now`. The owner calls
/// [`refresh`](Self::refresh) after anything that moves the rate, the
/// latency or an operator cap.
#[derive(Debug, Clone)]
pub(super) struct ConnectionLimit {
    /// Cap learned from connection throttling (fractional so that repeated
    /// cuts of a small cap still bite).
    cap: f64,
    /// The limit handed out, recomputed by every `refresh`.
    limit: u32,
    /// What Little's law asked for at the last `refresh` (before caps).
    need: f64,
    /// The most connections seen open and greeted at once (and not refused
    /// since).
    proven: u32,
    last_cut: Option<Instant>,
    /// Refusals before this answer opens made before the last cut: they do
    /// not cut again.
    guard_until: Option<Instant>,
}

impl ConnectionLimit {
    pub(super) fn new(s: &RateSettings) -> Self {
        Self {
            cap: f64::from(s.max_connections),
            limit: s.initial_connections,
            need: 0.0,
            proven: 0,
            last_cut: None,
            guard_until: None,
        }
    }

    /// How many connections the destination may have open now.
    pub(super) fn limit(&self) -> u32 {
        self.limit
    }

    /// New settings: what was learned is clamped into their bounds.
    pub(super) fn reconfigure(&mut self, s: &RateSettings) {
        self.cap = self.cap.min(f64::from(s.max_connections));
    }

    /// Little's law: `rate` x `latency` connections are busy at once; add
    /// headroom and one spare, then bound by the learned cap, one past the
    /// proven connections, the operator's `rule_cap` and the settings.
    pub(super) fn refresh(
        &mut self,
        s: &RateSettings,
        rate: f64,
        latency: Option<Duration>,
        rule_cap: Option<u32>,
    ) {
        let need = match latency {
            Some(l) => (rate * l.as_secs_f64() * CONNECTION_HEADROOM).ceil() + 1.0,
            None => f64::from(s.initial_connections),
        };
        self.need = need;
        let max = s.max_connections.min(rule_cap.unwrap_or(u32::MAX));
        // One past those proven at a time: a burst of opens past a
        // remote's connection limit would collect one refusal each.
        let proven = self.proven.saturating_add(1).max(s.initial_connections);
        let cap = (self.cap.floor() as u32).min(max).min(proven);
        let min = s.min_connections.min(max);
        let need = need.clamp(0.0, f64::from(u32::MAX)) as u32;
        self.limit = need.clamp(min, cap.max(min));
    }

    /// The destination's capacity for this host changed by `factor` (the
    /// hosts of a cluster sending to it became fewer or more): a cap
    /// learned from throttling is scaled with it. Refresh after.
    pub(super) fn rescale(&mut self, s: &RateSettings, factor: f64) {
        let max = f64::from(s.max_connections);
        if self.cap < max {
            self.cap = (self.cap * factor).clamp(f64::from(s.min_connections), max);
            self.proven = self.proven.min(self.cap.floor() as u32);
        }
    }

    /// A connection greeted while `open` were open (itself included): that
    /// many are proven. True when that raised what may be opened (refresh).
    pub(super) fn connected(&mut self, open: u32) -> bool {
        if open > self.proven {
            self.proven = open;
            true
        } else {
            false
        }
    }

    /// Connection throttling (`refused`: a "too many connections" reply)
    /// or a failed connection: cut the cap, unless the last cut's guard,
    /// `horizon` long, still holds. Refresh after.
    ///
    /// Connections grow one at a time past those proven, so a first
    /// refusal names the limit: the one being opened was one too many.
    /// Anything else (failures, refusals that go on) is read as load, and
    /// cut by `decrease_factor`.
    pub(super) fn cut(&mut self, now: Instant, s: &RateSettings, refused: bool, horizon: Duration) {
        if self.guard_until.is_some_and(|g| now < g) {
            return;
        }
        let base = self.cap.min(f64::from(self.limit));
        let recent = self
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < s.quiet_period);
        let cap = if refused && !recent {
            base - 1.0
        } else {
            base * s.decrease_factor
        };
        self.cap = cap.max(f64::from(s.min_connections));
        self.proven = self.proven.min(self.cap.floor() as u32);
        self.last_cut = Some(now);
        self.guard_until = now.checked_add(horizon);
    }

    /// A cap learned from throttling is the destination's policy, not a
    /// passing state: it holds for `probe_after` without a cut, then grows
    /// by one per call (one per interval), and only while it binds (Little's
    /// law asks for more), so a destination is not probed for connections
    /// it would not use.
    pub(super) fn grow(&mut self, now: Instant, s: &RateSettings) {
        let max = f64::from(s.max_connections);
        if self.cap >= max || self.need <= self.cap.floor() {
            return;
        }
        let quiet = self
            .last_cut
            .is_none_or(|t| now.saturating_duration_since(t) >= s.probe_after);
        if quiet {
            self.cap = (self.cap + 1.0).min(max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS_100: Duration = Duration::from_millis(100);

    #[test]
    fn the_limit_grows_one_past_what_greeted_and_a_first_refusal_names_it() {
        let s = RateSettings::default();
        let now = Instant::now();
        let mut c = ConnectionLimit::new(&s);
        // Little's law asks for 1000/s x 100 ms x 1.25 + 1 = 126.
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), s.initial_connections);
        for open in 2..=6 {
            assert!(c.connected(open));
            c.refresh(&s, 1000.0, Some(MS_100), None);
            assert_eq!(c.limit(), open + 1);
        }
        // The seventh was refused: six is the remote's limit.
        c.cut(now, &s, true, MS_100);
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), 6);
        // It holds for probe_after, then grows while it binds.
        c.grow(now + s.probe_after / 2, &s);
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), 6);
        c.grow(now + s.probe_after, &s);
        assert!(c.connected(7));
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), 7);
    }

    #[test]
    fn failures_and_repeated_refusals_cut_by_the_decrease_factor() {
        let s = RateSettings::default();
        let now = Instant::now();
        let mut c = ConnectionLimit::new(&s);
        c.connected(20);
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), 21);
        c.cut(now, &s, false, MS_100);
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), (21.0 * s.decrease_factor) as u32);
        // Inside the guard: no second cut.
        let after_first = c.limit();
        c.cut(now + MS_100 / 2, &s, true, MS_100);
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(c.limit(), after_first);
        // After it, within the quiet period: a refusal is load, not a limit.
        c.cut(now + MS_100 * 2, &s, true, MS_100);
        c.refresh(&s, 1000.0, Some(MS_100), None);
        assert_eq!(
            c.limit(),
            (f64::from(after_first) * s.decrease_factor) as u32
        );
        // An operator's cap and the settings' floor still bound it.
        c.refresh(&s, 1000.0, Some(MS_100), Some(3));
        assert_eq!(c.limit(), 3);
    }
}
