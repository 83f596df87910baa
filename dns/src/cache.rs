//! A TTL cache driven by a clock passed in (`now: Instant`), for one shard.
//!
//! Sans-IO: it never looks at the time itself, so its tests run on a simulated
//! clock. Each entry has one pending deadline in a min-heap: for a positive
//! answer first its refresh point, then its expiry; for a negative one its
//! expiry. Stale heap items (the entry was replaced) are skipped when popped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::rc::Rc;
use std::time::Instant;

use crate::error::ResolveError;

/// A cached answer: a value or the error to repeat until it expires.
pub(crate) type Answer<V> = Result<V, ResolveError>;

struct Entry<V> {
    answer: Answer<V>,
    expires: Instant,
    /// When a positive entry should be refreshed if still wanted; `None` once
    /// that point has passed (or for negative entries).
    refresh_at: Option<Instant>,
}

impl<V> Entry<V> {
    fn deadline(&self) -> Instant {
        self.refresh_at.unwrap_or(self.expires)
    }
}

/// What [`TtlCache::due`] found for one key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    /// A positive entry reached its refresh point.
    Refresh(Rc<str>),
}

pub(crate) struct TtlCache<V> {
    map: HashMap<Rc<str>, Entry<V>>,
    deadlines: BinaryHeap<Reverse<(Instant, Rc<str>)>>,
}

impl<V: Clone> TtlCache<V> {
    pub(crate) fn new() -> Self {
        Self {
            map: HashMap::new(),
            deadlines: BinaryHeap::new(),
        }
    }

    /// The answer for `key` if it has not expired at `now`.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<&Answer<V>> {
        let e = self.map.get(key)?;
        (now < e.expires).then_some(&e.answer)
    }

    /// True when `key` is missing, expired, or past its refresh point at `now`.
    pub(crate) fn is_stale(&self, key: &str, now: Instant) -> bool {
        match self.map.get(key) {
            None => true,
            Some(e) => now >= e.expires || e.refresh_at.is_some_and(|r| now >= r),
        }
    }

    /// Stores an answer; a positive one with `refresh_at` gets refreshed then
    /// if the owner still wants it.
    pub(crate) fn insert(
        &mut self,
        key: Rc<str>,
        answer: Answer<V>,
        expires: Instant,
        refresh_at: Option<Instant>,
    ) {
        let refresh_at = refresh_at.filter(|r| *r < expires && answer.is_ok());
        let entry = Entry {
            answer,
            expires,
            refresh_at,
        };
        self.deadlines
            .push(Reverse((entry.deadline(), key.clone())));
        self.map.insert(key, entry);
    }

    /// Pops every deadline reached at `now`: expired entries are removed,
    /// positive entries at their refresh point are returned for the owner to
    /// refresh (or leave to expire).
    pub(crate) fn due(&mut self, now: Instant) -> Vec<Due> {
        let mut out = Vec::new();
        while let Some(Reverse((at, _))) = self.deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, key))) = self.deadlines.pop() else {
                break;
            };
            let Some(entry) = self.map.get_mut(&key) else {
                continue;
            };
            if entry.deadline() != at {
                continue; // replaced since this deadline was pushed
            }
            if now >= entry.expires {
                self.map.remove(&key);
            } else if entry.refresh_at.take().is_some() {
                self.deadlines.push(Reverse((entry.expires, key.clone())));
                out.push(Due::Refresh(key));
            }
        }
        out
    }

    /// Re-arms a refresh of a positive entry at `at` (a refresh failed
    /// transiently); nothing happens when the entry expires before then.
    pub(crate) fn retry_refresh(&mut self, key: &Rc<str>, at: Instant) {
        if let Some(e) = self.map.get_mut(&**key)
            && at < e.expires
            && e.answer.is_ok()
        {
            e.refresh_at = Some(at);
            self.deadlines.push(Reverse((at, key.clone())));
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn entries_expire_on_the_simulated_clock() {
        let t0 = Instant::now();
        let mut c = TtlCache::<u32>::new();
        c.insert("a".into(), Ok(1), t0 + s(10), Some(t0 + s(8)));
        assert_eq!(c.get("a", t0 + s(9)), Some(&Ok(1)));
        assert!(!c.is_stale("a", t0 + s(7)));
        assert!(c.is_stale("a", t0 + s(8)));
        assert_eq!(c.get("a", t0 + s(10)), None);
    }

    #[test]
    fn refresh_point_then_expiry_then_removal() {
        let t0 = Instant::now();
        let mut c = TtlCache::<u32>::new();
        c.insert("a".into(), Ok(1), t0 + s(10), Some(t0 + s(8)));
        let neg = ResolveError::NoSuchDomain { domain: "b".into() };
        c.insert("b".into(), Err(neg.clone()), t0 + s(5), Some(t0 + s(1)));
        assert!(c.due(t0 + s(4)).is_empty());
        // negative entries are never offered for refresh, only removed
        assert!(c.due(t0 + s(5)).is_empty());
        assert_eq!(c.len(), 1);
        assert_eq!(c.due(t0 + s(8)), vec![Due::Refresh("a".into())]);
        // offered once only
        assert!(c.due(t0 + s(9)).is_empty());
        assert_eq!(c.len(), 1);
        c.due(t0 + s(10));
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn replaced_entries_ignore_old_deadlines() {
        let t0 = Instant::now();
        let mut c = TtlCache::<u32>::new();
        c.insert("a".into(), Ok(1), t0 + s(10), Some(t0 + s(8)));
        c.insert("a".into(), Ok(2), t0 + s(30), Some(t0 + s(24)));
        assert!(c.due(t0 + s(20)).is_empty());
        assert_eq!(c.get("a", t0 + s(20)), Some(&Ok(2)));
        assert_eq!(c.due(t0 + s(24)), vec![Due::Refresh("a".into())]);
    }
}
