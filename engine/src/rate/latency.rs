//! Latency floor (windowed minimum) and recent latency (moving average).
//!
//! The floor is what the remote answers in when it is not loaded; the recent
//! value is what it answers in now. Their ratio is the congestion signal, as
//! in TCP Vegas and BBR.

use std::time::{Duration, Instant};

/// One stream of latency samples of the same kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatencyTracker {
    /// Minimum of the bucket being filled.
    cur_min: Option<Duration>,
    /// Minimum of the bucket before it.
    prev_min: Option<Duration>,
    /// When the bucket being filled began.
    bucket_start: Option<Instant>,
    /// Exponentially weighted moving average, in seconds.
    recent: Option<f64>,
}

impl LatencyTracker {
    /// Records one sample.
    ///
    /// The floor is kept in two buckets of half a window each, so it forgets
    /// a minimum between half a window and a window after it was seen: O(1)
    /// and no allocation, at the price of a coarse window edge.
    pub(crate) fn record(&mut self, now: Instant, sample: Duration, window: Duration, weight: f64) {
        let half = window / 2;
        match self.bucket_start {
            None => self.bucket_start = Some(now),
            Some(start) => {
                let age = now.saturating_duration_since(start);
                if age >= half {
                    self.prev_min = if age >= window { None } else { self.cur_min };
                    self.cur_min = None;
                    self.bucket_start = Some(now);
                }
            }
        }
        self.cur_min = Some(self.cur_min.map_or(sample, |m| m.min(sample)));
        let s = sample.as_secs_f64();
        self.recent = Some(match self.recent {
            None => s,
            Some(r) => r + weight * (s - r),
        });
    }

    /// The lowest latency seen over the last window.
    pub(crate) fn floor(&self) -> Option<Duration> {
        match (self.cur_min, self.prev_min) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The recent (smoothed) latency.
    pub(crate) fn recent(&self) -> Option<Duration> {
        self.recent
            .and_then(|r| Duration::try_from_secs_f64(r).ok())
    }

    /// `allowed / recent`, clamped to `[0.5, 1]`, where `allowed` is
    /// `floor * tolerance` but at least [`SLACK`] above the floor: 1 while
    /// latency stays within tolerance of its floor, lower in proportion
    /// beyond it. `None` before the first sample.
    pub(crate) fn gradient(&self, tolerance: f64) -> Option<f64> {
        let floor = self.floor()?.as_secs_f64();
        let recent = self.recent?;
        if recent <= 0.0 {
            return Some(1.0);
        }
        let allowed = (floor * tolerance).max(floor + SLACK.as_secs_f64());
        Some((allowed / recent).clamp(0.5, 1.0))
    }
}

/// Latency within this of the floor is always "near the floor": with a
/// floor of a few milliseconds, scheduling on either host moves the
/// average by as much, and that says nothing about the remote's load.
const SLACK: Duration = Duration::from_millis(10);

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn floor_is_the_window_minimum_and_forgets_old_minima() {
        let t0 = Instant::now();
        let mut l = LatencyTracker::default();
        l.record(t0, ms(100), W, 0.2);
        l.record(t0 + ms(1000), ms(300), W, 0.2);
        assert_eq!(l.floor(), Some(ms(100)));
        // 40 s later the 100 ms sample is in the previous bucket: still seen.
        l.record(t0 + Duration::from_secs(40), ms(300), W, 0.2);
        assert_eq!(l.floor(), Some(ms(100)));
        // 80 s later it has rotated out.
        l.record(t0 + Duration::from_secs(80), ms(300), W, 0.2);
        assert_eq!(l.floor(), Some(ms(300)));
    }

    #[test]
    fn recent_follows_a_step_and_gradient_falls_in_proportion() {
        let t0 = Instant::now();
        let mut l = LatencyTracker::default();
        for i in 0..50 {
            l.record(t0 + ms(i * 10), ms(100), W, 0.2);
        }
        assert_eq!(l.gradient(1.5), Some(1.0));
        for i in 50..100 {
            l.record(t0 + ms(i * 10), ms(300), W, 0.2);
        }
        let r = l.recent().unwrap().as_secs_f64();
        assert!((r - 0.3).abs() < 0.001, "{r}");
        // floor 100 ms * 1.5 / 300 ms = 0.5
        let g = l.gradient(1.5).unwrap();
        assert!((g - 0.5).abs() < 0.01, "{g}");
        for i in 100..150 {
            l.record(t0 + ms(i * 10), ms(200), W, 0.2);
        }
        let g = l.gradient(1.5).unwrap();
        assert!((g - 0.75).abs() < 0.01, "{g}");
    }
}
