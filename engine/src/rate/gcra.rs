//! Message pacing with the generic cell rate algorithm (GCRA).
//!
//! One `Instant` of state (the theoretical arrival time), no allocation, and
//! a refusal says exactly when to come back, so the engine can arm one timer
//! instead of polling.

use std::time::{Duration, Instant};

/// Paces events to an emission interval with a burst tolerance.
#[derive(Debug, Clone, Default)]
pub(crate) struct Gcra {
    /// When the next event would be due if events came exactly on pace.
    tat: Option<Instant>,
}

impl Gcra {
    /// Takes one slot at `now`, or says when the next slot opens.
    ///
    /// `interval` is the time per event (1 / rate); `tolerance` lets events
    /// run that far ahead of the pace, i.e. a burst of `1 + tolerance /
    /// interval` events.
    pub(crate) fn try_acquire(
        &mut self,
        now: Instant,
        interval: Duration,
        tolerance: Duration,
    ) -> Result<(), Instant> {
        let tat = self.tat.map_or(now, |t| t.max(now));
        if tat > now + tolerance {
            return Err(tat - tolerance);
        }
        self.tat = Some(tat + interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_to_the_interval_after_the_burst() {
        let t0 = Instant::now();
        let mut g = Gcra::default();
        let iv = Duration::from_millis(100);
        let tol = Duration::from_millis(200);
        // A burst of 1 + 200/100 = 3 goes at once, the fourth must wait.
        for _ in 0..3 {
            g.try_acquire(t0, iv, tol).unwrap();
        }
        let retry = g.try_acquire(t0, iv, tol).unwrap_err();
        assert_eq!(retry, t0 + Duration::from_millis(100));
        // Just before the retry time: still refused; at it: allowed.
        assert!(
            g.try_acquire(retry - Duration::from_millis(1), iv, tol)
                .is_err()
        );
        g.try_acquire(retry, iv, tol).unwrap();
        // Over ten seconds the count matches the rate (plus the burst).
        let mut n = 0;
        let mut t = retry;
        while t < t0 + Duration::from_secs(10) {
            if g.try_acquire(t, iv, tol).is_ok() {
                n += 1;
            }
            t += Duration::from_millis(7);
        }
        assert!((97..=101).contains(&n), "{n}");
    }

    #[test]
    fn idle_time_does_not_bank_more_than_the_burst() {
        let t0 = Instant::now();
        let mut g = Gcra::default();
        let iv = Duration::from_millis(10);
        let tol = Duration::from_millis(50);
        g.try_acquire(t0, iv, tol).unwrap();
        let later = t0 + Duration::from_secs(60);
        let burst = (0..100)
            .take_while(|_| g.try_acquire(later, iv, tol).is_ok())
            .count();
        assert_eq!(burst, 6);
    }
}
