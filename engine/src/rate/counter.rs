//! A one-second sliding count of events, in ten fixed slots.
//!
//! Used for the rate the destination actually accepted just before it
//! throttled: the best estimate of its capacity there is.

use std::time::{Duration, Instant};

const SLOTS: usize = 10;
const SLOT: Duration = Duration::from_millis(100);
const SPAN: Duration = Duration::from_secs(1);

/// Events per second over the last second.
#[derive(Debug, Clone)]
pub(crate) struct RateCounter {
    /// Counts per 100 ms slot; `slot % SLOTS` indexes it.
    counts: [u32; SLOTS],
    /// The slot number (100 ms units since `origin`) last written.
    head: u64,
    origin: Instant,
}

impl RateCounter {
    pub(crate) fn new(origin: Instant) -> Self {
        Self {
            counts: [0; SLOTS],
            head: 0,
            origin,
        }
    }

    fn slot_of(&self, now: Instant) -> u64 {
        (now.saturating_duration_since(self.origin).as_millis() / SLOT.as_millis()) as u64
    }

    /// Moves the head to `now`, clearing the slots skipped over.
    fn advance(&mut self, now: Instant) {
        let slot = self.slot_of(now);
        if slot <= self.head {
            return;
        }
        let gap = (slot - self.head).min(SLOTS as u64);
        for i in 1..=gap {
            self.counts[((self.head + i) % SLOTS as u64) as usize] = 0;
        }
        self.head = slot;
    }

    /// Counts one event at `now`.
    pub(crate) fn record(&mut self, now: Instant) {
        self.advance(now);
        let i = (self.head % SLOTS as u64) as usize;
        self.counts[i] = self.counts[i].saturating_add(1);
    }

    /// Events per second over the last second: the nine full slots before
    /// the current one and the elapsed part of the current one (over less
    /// right after the counter was created, so a young counter does not read
    /// low).
    pub(crate) fn per_second(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let total: u64 = self.counts.iter().map(|&c| u64::from(c)).sum();
        let age = now.saturating_duration_since(self.origin);
        let into_slot = Duration::from_nanos((age.as_nanos() % SLOT.as_nanos()) as u64);
        let span = (SPAN - SLOT + into_slot).min(age).max(SLOT);
        total as f64 / span.as_secs_f64()
    }
}

impl RateCounter {
    /// Events per second over the current slot and the one before it
    /// (100 to 200 ms; less right after the counter was created): what the
    /// destination takes now, for growth that must follow it closely.
    pub(crate) fn recent_per_second(&mut self, now: Instant) -> f64 {
        self.advance(now);
        let cur = (self.head % SLOTS as u64) as usize;
        let prev = ((self.head + SLOTS as u64 - 1) % SLOTS as u64) as usize;
        let total = u64::from(self.counts[cur]) + u64::from(self.counts[prev]);
        let age = now.saturating_duration_since(self.origin);
        let into_slot = Duration::from_nanos((age.as_nanos() % SLOT.as_nanos()) as u64);
        let span = (SLOT + into_slot).min(age).max(MIN_RECENT_SPAN);
        total as f64 / span.as_secs_f64()
    }
}

/// The shortest span [`RateCounter::recent_per_second`] divides by, so the
/// first events of a young counter do not read as a huge rate.
const MIN_RECENT_SPAN: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_second_only() {
        let t0 = Instant::now();
        let mut c = RateCounter::new(t0);
        // 50 per second for 3 seconds.
        for i in 0..150u64 {
            c.record(t0 + Duration::from_millis(i * 20));
        }
        let r = c.per_second(t0 + Duration::from_millis(3000));
        assert!((45.0..=55.0).contains(&r), "{r}");
        // Two idle seconds later nothing is left.
        assert_eq!(c.per_second(t0 + Duration::from_secs(5)), 0.0);
        // After a long gap the ring starts clean.
        c.record(t0 + Duration::from_secs(100));
        let r = c.per_second(t0 + Duration::from_millis(100_999));
        assert!((r - 1.0).abs() < 0.01, "{r}");
    }

    #[test]
    fn young_counter_scales_to_its_age() {
        let t0 = Instant::now();
        let mut c = RateCounter::new(t0);
        for i in 0..10u64 {
            c.record(t0 + Duration::from_millis(i * 50));
        }
        let r = c.per_second(t0 + Duration::from_millis(500));
        assert!((19.0..=21.0).contains(&r), "{r}");
    }
}
