//! The rate controller's knobs, with their defaults in one place.
//!
//! `#[serde(default)]` on the struct fills every missing field from
//! [`RateSettings::default`], so a config file and `Default` can never
//! disagree. Durations are written the human way ("1s", "250ms", "5m").

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bounds and gains of one destination's [`RateController`](super::RateController).
///
/// The controller learns a message rate and a connection count *inside* the
/// bounds set here; the gains say how fast it moves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateSettings {
    /// Fewest connections the controller will allow, however hard it backs off.
    pub min_connections: u32,
    /// Most connections it will ever allow (the operator's cap per queue).
    pub max_connections: u32,
    /// Connections allowed before any latency has been measured.
    pub initial_connections: u32,
    /// Lowest message rate (messages per second) outside a suspension.
    pub min_rate: f64,
    /// Highest message rate (messages per second).
    pub max_rate: f64,
    /// Message rate at creation, before anything is learned.
    pub initial_rate: f64,
    /// How often the controller re-evaluates its rate from what it saw.
    #[serde(with = "volley_units::serde::duration")]
    pub adjust_interval: Duration,
    /// Slow start multiplies the rate by this per interval until the first
    /// throttling reply or knee; it also bounds a probe's step.
    pub slow_start_factor: f64,
    /// In slow start, also let each accepted message grow the rate by one
    /// round trip's worth, so it doubles about once per round trip (bounded
    /// by `slow_start_factor` times what the destination accepted over the
    /// last 100-200 ms, and only while latency stays flat). Off: the rate
    /// grows once per interval only, as classic slow start by the clock.
    pub round_trip_growth: bool,
    /// Fraction by which the rate grows in the first interval of a probe
    /// above a learned ceiling (0.1 = +10%); the step doubles each interval
    /// while latency stays flat.
    pub increase_ratio: f64,
    /// A throttling reply cuts the rate to this fraction of the rate the
    /// destination was accepting (and connection throttling cuts the
    /// connection cap by the same fraction).
    pub decrease_factor: f64,
    /// After a cut, the rate settles at this fraction of the learned ceiling
    /// (the rate at which throttling began) and stays there until
    /// `probe_after` passes quietly.
    pub plateau: f64,
    /// Latency up to `floor * latency_tolerance` counts as "near the floor".
    /// Above it the controller asks whether more sending still bought more
    /// deliveries; where it did not, the destination is at its knee and
    /// the rate drops under it (see the module documentation). The floor
    /// is a minimum and the recent value an average, so with jitter the
    /// two differ even on an idle receiver.
    pub latency_tolerance: f64,
    /// Weight of each new sample in the recent-latency moving average (0..1].
    pub latency_smoothing: f64,
    /// The latency floor is the minimum over roughly this long a window, so
    /// it follows a remote whose baseline changes.
    #[serde(with = "volley_units::serde::duration")]
    pub latency_floor_window: Duration,
    /// Suspension after a throttling reply (and after the second of an
    /// episode). Short: the cut is the answer, the pause lets the remote's
    /// bucket refill a little; a long one only refills it more, so the
    /// next reading of its capacity is inflated.
    #[serde(with = "volley_units::serde::duration")]
    pub backoff_initial: Duration,
    /// Longest suspension; from the third throttling reply of an episode
    /// (each soon after the previous one) the suspension doubles up to this.
    #[serde(with = "volley_units::serde::duration")]
    pub backoff_max: Duration,
    /// Time without throttling after which a new throttle starts a new
    /// episode (backoff from `backoff_initial`). Short: a throttle that
    /// comes seconds after resuming says the plateau is a little high (the
    /// cut handles that), not that the remote wants silence.
    #[serde(with = "volley_units::serde::duration")]
    pub quiet_period: Duration,
    /// Time at the plateau without throttling before the controller forgets
    /// the ceiling and probes above it (capacity may have grown); also how
    /// long a connection cap learned from refusals holds before it grows.
    /// Each probe of a throttling remote costs about one throttling reply.
    #[serde(with = "volley_units::serde::duration")]
    pub probe_after: Duration,
    /// How far ahead of the steady pace a burst may run (GCRA tolerance):
    /// "100ms" lets `1 + rate * 0.1` messages go back to back.
    #[serde(with = "volley_units::serde::duration")]
    pub burst: Duration,
    /// Consecutive connection failures (refused, timed out, dropped) with no
    /// reply in between after which sending is suspended as for a throttle.
    pub connect_failures_to_backoff: u32,
}

impl Default for RateSettings {
    fn default() -> Self {
        Self {
            min_connections: 1,
            max_connections: 50,
            initial_connections: 2,
            min_rate: 0.2,
            max_rate: 10_000.0,
            initial_rate: 50.0,
            adjust_interval: Duration::from_secs(1),
            slow_start_factor: 2.0,
            round_trip_growth: true,
            increase_ratio: 0.1,
            decrease_factor: 0.85,
            plateau: 0.97,
            latency_tolerance: 2.0,
            latency_smoothing: 0.2,
            latency_floor_window: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(300),
            quiet_period: Duration::from_secs(1),
            probe_after: Duration::from_secs(10),
            burst: Duration::from_millis(100),
            connect_failures_to_backoff: 3,
        }
    }
}

/// A [`RateSettings`] field that is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rate setting `{field}` {reason}")]
pub struct SettingsError {
    /// The field's name as written in the config file.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl RateSettings {
    /// Checks every bound and gain; call it when loading configuration so a
    /// typo is reported at start-up, not discovered as odd pacing later.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let err = |field, reason| Err(SettingsError { field, reason });
        if self.min_connections == 0 {
            return err("min_connections", "must be at least 1");
        }
        if self.max_connections < self.min_connections {
            return err("max_connections", "must be at least min_connections");
        }
        if !(self.min_rate.is_finite() && self.min_rate > 0.0) {
            return err("min_rate", "must be a positive number");
        }
        if !(self.max_rate.is_finite() && self.max_rate >= self.min_rate) {
            return err("max_rate", "must be a number at least min_rate");
        }
        if !(self.initial_rate.is_finite() && self.initial_rate > 0.0) {
            return err("initial_rate", "must be a positive number");
        }
        if self.adjust_interval.is_zero() {
            return err("adjust_interval", "must be longer than zero");
        }
        if !(self.slow_start_factor >= 1.0 && self.slow_start_factor <= 10.0) {
            return err("slow_start_factor", "must be between 1 and 10");
        }
        if !(self.increase_ratio > 0.0 && self.increase_ratio <= 1.0) {
            return err("increase_ratio", "must be above 0 and at most 1");
        }
        if !(self.decrease_factor > 0.0 && self.decrease_factor < 1.0) {
            return err("decrease_factor", "must be above 0 and below 1");
        }
        if !(self.plateau > 0.0 && self.plateau <= 1.0) {
            return err("plateau", "must be above 0 and at most 1");
        }
        if !(self.latency_tolerance >= 1.0 && self.latency_tolerance.is_finite()) {
            return err("latency_tolerance", "must be at least 1");
        }
        if !(self.latency_smoothing > 0.0 && self.latency_smoothing <= 1.0) {
            return err("latency_smoothing", "must be above 0 and at most 1");
        }
        if self.latency_floor_window.is_zero() {
            return err("latency_floor_window", "must be longer than zero");
        }
        if self.backoff_max < self.backoff_initial {
            return err("backoff_max", "must be at least backoff_initial");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_equals_default_and_is_valid() {
        let parsed: RateSettings = toml::from_str("").unwrap();
        assert_eq!(parsed, RateSettings::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn durations_are_human_and_missing_fields_keep_defaults() {
        let parsed: RateSettings = toml::from_str(
            "max_connections = 8\nbackoff_initial = \"250ms\"\nquiet_period = \"2m\"\n",
        )
        .unwrap();
        assert_eq!(parsed.max_connections, 8);
        assert_eq!(parsed.backoff_initial, Duration::from_millis(250));
        assert_eq!(parsed.quiet_period, Duration::from_secs(120));
        assert_eq!(parsed.max_rate, RateSettings::default().max_rate);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        assert!(toml::from_str::<RateSettings>("max_conections = 8").is_err());
    }

    #[test]
    fn validate_names_the_bad_field() {
        let s = RateSettings {
            min_connections: 5,
            max_connections: 2,
            ..RateSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "max_connections");
        let s = RateSettings {
            decrease_factor: 1.0,
            ..RateSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "decrease_factor");
        let s = RateSettings {
            max_rate: f64::NAN,
            ..RateSettings::default()
        };
        assert_eq!(s.validate().unwrap_err().field, "max_rate");
    }
}
