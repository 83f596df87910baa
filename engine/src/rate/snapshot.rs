//! What one destination's controller shows: the periodic summary line
//! (`Display`) and the delivery log (`Serialize`).

use std::fmt;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Where the controller stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RateState {
    /// Multiplying the rate each interval; nothing has pushed back yet.
    SlowStart,
    /// At, or climbing back to, a plateau just under the learned ceiling.
    Steady,
    /// Growing above a ceiling that stayed quiet long enough to be doubted.
    Probing,
    /// Sending suspended after a throttling reply (or failed connections).
    Backoff,
    /// Sending suspended by an operator rule.
    Suspended,
}

impl RateState {
    /// The name used in logs: `slow_start`, `steady`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SlowStart => "slow_start",
            Self::Steady => "steady",
            Self::Probing => "probing",
            Self::Backoff => "backoff",
            Self::Suspended => "suspended",
        }
    }
}

impl fmt::Display for RateState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One destination's limits and latency at a moment.
///
/// Serialized durations are milliseconds (`latency_floor_ms`, ...), so a log
/// reader needs no duration parser.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateSnapshot {
    /// Phase, or why nothing is sent.
    pub state: RateState,
    /// Connections allowed now.
    pub connection_limit: u32,
    /// Messages per second allowed now.
    pub rate: f64,
    /// Delivered rate at which the destination last pushed back, if known.
    pub ceiling: Option<f64>,
    /// Lowest latency over the floor window.
    #[serde(rename = "latency_floor_ms", serialize_with = "opt_ms")]
    pub latency_floor: Option<Duration>,
    /// Smoothed recent latency.
    #[serde(rename = "latency_recent_ms", serialize_with = "opt_ms")]
    pub latency_recent: Option<Duration>,
    /// Time left in a suspension, if suspended.
    #[serde(rename = "suspended_ms", serialize_with = "opt_ms")]
    pub suspended_for: Option<Duration>,
    /// Throttling replies seen so far.
    pub throttles: u64,
    /// Accepted messages seen so far.
    pub successes: u64,
    /// Failed connections seen so far.
    pub connect_failures: u64,
}

fn opt_ms<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_secs_f64() * 1000.0)),
        None => s.serialize_none(),
    }
}

/// Milliseconds with one decimal, or `-` when unknown.
struct Ms(Option<Duration>);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, "{:.1}ms", d.as_secs_f64() * 1000.0),
            None => f.write_str("-"),
        }
    }
}

impl fmt::Display for RateSnapshot {
    /// `steady conns=12 rate=95.0/s ceiling=100.0/s floor=150.0ms recent=161.2ms throttles=3`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} conns={} rate={:.1}/s",
            self.state, self.connection_limit, self.rate
        )?;
        if let Some(c) = self.ceiling {
            write!(f, " ceiling={c:.1}/s")?;
        }
        write!(
            f,
            " floor={} recent={} throttles={}",
            Ms(self.latency_floor),
            Ms(self.latency_recent),
            self.throttles
        )?;
        if let Some(d) = self.suspended_for {
            write!(f, " suspended={}", Ms(Some(d)))?;
        }
        Ok(())
    }
}
