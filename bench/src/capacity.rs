//! The hidden capacity of one simulated receiver (a domain of its own, or a
//! provider for all of its domains together), as a sans-IO model.
//!
//! The sink's socket code asks this model what to answer and how long to wait
//! before answering; the model never sleeps and never reads a clock: every
//! call takes `now`. That keeps the throttling rules testable with a
//! simulated clock, and the socket code free of policy.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use volley_smtp::{EnhancedCode, Reply};

use crate::counters::{Counts, DomainCounters};
use volley_units::serde::duration as serde_text;

/// What a simulated domain can take, unknown to the sender: the limits it
/// enforces, how slow it is, and how it misbehaves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Capacity {
    /// Concurrent connections across all of the receiver's MX hosts (a
    /// provider's: across all of its domains); one more gets `421 4.7.0`
    /// at connect. 0: unlimited.
    pub max_connections: u32,
    /// Recipients accepted per second (token bucket); above it RCPT gets
    /// `451 4.7.1`. 0: unlimited.
    pub max_rate: f64,
    /// Depth of the token bucket in recipients; 0 means one second of `max_rate`.
    pub burst: f64,
    /// Base delay of the reply to a message's final dot.
    #[serde(with = "serde_text")]
    pub latency: Duration,
    /// Uniform random extra delay, 0..jitter, on top of `latency`.
    #[serde(with = "serde_text")]
    pub jitter: Duration,
    /// Extra delay at full load (connections or rate at their limit), scaled
    /// by utilization: a sender that pushes harder sees latency climb.
    #[serde(with = "serde_text")]
    pub latency_growth: Duration,
    /// Share of mailboxes that do not exist (`550 5.1.1`), chosen by a hash
    /// of the address so every attempt at one address gets the same answer.
    pub unknown_share: f64,
    /// First attempt for each recipient gets `451 4.7.1` (greylisting).
    pub greylist: bool,
    /// Share of transactions where the server closes the connection after
    /// the body instead of replying (the message is not kept).
    pub drop_share: f64,
    /// Slow DATA: delay before the `354` reply.
    #[serde(with = "serde_text")]
    pub data_delay: Duration,
    /// The receiver's MX hosts are down: every connection is reset at
    /// once, before a greeting, as by a host that is off the network or
    /// has nothing listening on the SMTP port.
    pub down: bool,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_connections: 0,
            max_rate: 0.0,
            burst: 0.0,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            latency_growth: Duration::ZERO,
            unknown_share: 0.0,
            greylist: false,
            drop_share: 0.0,
            data_delay: Duration::ZERO,
            down: false,
        }
    }
}

impl Capacity {
    fn bucket_depth(&self) -> f64 {
        if self.burst > 0.0 {
            self.burst
        } else {
            self.max_rate.max(1.0)
        }
    }
}

/// True when `address` is one of the mailboxes that do not exist at a domain
/// with this `unknown_share`. Deterministic, so the ledger can tell an
/// expected bounce from a loss without asking the sink.
pub fn is_unknown_mailbox(address: &str, unknown_share: f64) -> bool {
    if unknown_share <= 0.0 {
        return false;
    }
    let h = fnv1a(address.to_ascii_lowercase().as_bytes());
    (h as f64 / u64::MAX as f64) < unknown_share
}

/// FNV-1a, 64 bits: a stable hash (std's hasher is not promised to be).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The answer to a new connection.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectVerdict {
    /// Greet and serve it.
    Accept,
    /// Send this reply and close (over the connection limit).
    Refuse(Reply),
}

/// The answer to one RCPT TO.
#[derive(Debug, Clone, PartialEq)]
pub enum RcptVerdict {
    /// `250`.
    Accept,
    /// A 4xx or 5xx reply for this recipient.
    Refuse(Reply),
}

/// What to do once a message's body is complete.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DataVerdict {
    /// Wait `delay`, keep the message, then reply `250`.
    Accept {
        /// How long to hold the reply (latency, jitter, growth with load).
        delay: Duration,
    },
    /// Wait `delay`, then close without a reply and without keeping it.
    Drop {
        /// How long to hold the connection before closing it.
        delay: Duration,
    },
}

/// One receiver's capacity in action: connection count, token bucket,
/// greylist memory and counters. One per receiver, shared by its MX hosts
/// and, for a provider, by all of its domains.
#[derive(Debug)]
pub struct DomainModel {
    capacity: Capacity,
    /// Capacity changes still to come, in time order.
    schedule: Vec<(Instant, Capacity)>,
    start: Instant,
    active: u32,
    tokens: f64,
    refilled: Instant,
    greylisted: HashSet<u64>,
    rng: SmallRng,
    counters: DomainCounters,
}

impl DomainModel {
    /// A model that starts at `start` with `capacity`, then switches to each
    /// `(offset, capacity)` of `changes` once `offset` has passed.
    pub fn new(
        capacity: Capacity,
        changes: Vec<(Duration, Capacity)>,
        start: Instant,
        seed: u64,
    ) -> Self {
        let mut schedule: Vec<(Instant, Capacity)> =
            changes.into_iter().map(|(at, c)| (start + at, c)).collect();
        schedule.sort_by_key(|(at, _)| *at);
        schedule.reverse();
        let tokens = capacity.bucket_depth();
        Self {
            capacity,
            schedule,
            start,
            active: 0,
            tokens,
            refilled: start,
            greylisted: HashSet::new(),
            rng: SmallRng::seed_from_u64(seed),
            counters: DomainCounters::default(),
        }
    }

    /// The capacity in force now (after any change due by `now`).
    pub fn capacity(&mut self, now: Instant) -> &Capacity {
        self.advance(now);
        &self.capacity
    }

    /// Replaces the capacity from `now` on (changes still scheduled apply
    /// later as planned). Tokens earned so far accrue at the old rate.
    pub fn set_capacity(&mut self, now: Instant, capacity: Capacity) {
        self.advance(now);
        self.refill(now);
        self.capacity = capacity;
        self.tokens = self.tokens.min(self.capacity.bucket_depth());
    }

    /// Counters so far.
    pub fn counters(&self) -> &DomainCounters {
        &self.counters
    }

    /// Connections open now.
    pub fn active_connections(&self) -> u32 {
        self.active
    }

    /// Whether the receiver's hosts are down now; a connection made while
    /// they are is reset at once, and counted.
    pub fn is_down(&mut self, now: Instant) -> bool {
        self.advance(now);
        if self.capacity.down {
            self.count(now, |c| c.reset_connections += 1);
        }
        self.capacity.down
    }

    /// A sender connects. On `Accept` the caller must call
    /// [`disconnect`](Self::disconnect) when that connection ends.
    pub fn connect(&mut self, now: Instant) -> ConnectVerdict {
        self.advance(now);
        let limit = self.capacity.max_connections;
        if limit > 0 && self.active >= limit {
            self.count(now, |c| c.refused_connections += 1);
            return ConnectVerdict::Refuse(Reply::new(
                421,
                EnhancedCode::new(4, 7, 0),
                "Try again later: too many connections from your IP",
            ));
        }
        self.active += 1;
        self.counters.peak_connections = self.counters.peak_connections.max(self.active);
        self.count(now, |c| c.connections += 1);
        ConnectVerdict::Accept
    }

    /// An accepted connection ended.
    pub fn disconnect(&mut self) {
        self.active = self.active.saturating_sub(1);
    }

    /// A RCPT TO for `address`: unknown mailbox, greylisting, then rate.
    pub fn rcpt(&mut self, now: Instant, address: &str) -> RcptVerdict {
        self.advance(now);
        if is_unknown_mailbox(address, self.capacity.unknown_share) {
            self.count(now, |c| c.unknown += 1);
            return RcptVerdict::Refuse(Reply::new(
                550,
                EnhancedCode::new(5, 1, 1),
                "No such user here",
            ));
        }
        if self.capacity.greylist
            && self
                .greylisted
                .insert(fnv1a(address.to_ascii_lowercase().as_bytes()))
        {
            self.count(now, |c| c.greylisted += 1);
            return RcptVerdict::Refuse(Reply::new(
                451,
                EnhancedCode::new(4, 7, 1),
                "Greylisted, please try again later",
            ));
        }
        if self.capacity.max_rate > 0.0 {
            self.refill(now);
            if self.tokens < 1.0 {
                self.count(now, |c| c.rate_limited += 1);
                return RcptVerdict::Refuse(Reply::new(
                    451,
                    EnhancedCode::new(4, 7, 1),
                    "Rate limited, try again later",
                ));
            }
            self.tokens -= 1.0;
        }
        RcptVerdict::Accept
    }

    /// How long to hold the `354` reply to DATA (slow DATA).
    pub fn data_delay(&mut self, now: Instant) -> Duration {
        self.advance(now);
        self.capacity.data_delay
    }

    /// The body of a message for `recipients` accepted recipients is complete.
    pub fn data_end(&mut self, now: Instant, recipients: u32) -> DataVerdict {
        self.advance(now);
        let delay = self.reply_delay(now);
        if self.capacity.drop_share > 0.0 && self.rng.random::<f64>() < self.capacity.drop_share {
            self.count(now, |c| c.dropped += 1);
            return DataVerdict::Drop { delay };
        }
        self.count(now, |c| c.accepted += u64::from(recipients));
        DataVerdict::Accept { delay }
    }

    /// Latency now: base + jitter + growth scaled by the busier of the
    /// connection and rate utilizations.
    fn reply_delay(&mut self, now: Instant) -> Duration {
        let cap = &self.capacity;
        let mut delay = cap.latency;
        if !cap.jitter.is_zero() {
            delay += cap.jitter.mul_f64(self.rng.random::<f64>());
        }
        if !cap.latency_growth.is_zero() {
            let conn_util = if cap.max_connections > 0 {
                f64::from(self.active) / f64::from(cap.max_connections)
            } else {
                0.0
            };
            let rate_util = if cap.max_rate > 0.0 {
                self.refill(now);
                1.0 - self.tokens / self.capacity.bucket_depth()
            } else {
                0.0
            };
            delay += self
                .capacity
                .latency_growth
                .mul_f64(conn_util.max(rate_util).clamp(0.0, 1.0));
        }
        delay
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.refilled = self.refilled.max(now);
        let depth = self.capacity.bucket_depth();
        self.tokens = (self.tokens + elapsed * self.capacity.max_rate).min(depth);
    }

    fn advance(&mut self, now: Instant) {
        while self.schedule.last().is_some_and(|(at, _)| *at <= now) {
            let (at, next) = self.schedule.pop().expect("checked by is_some_and");
            // Tokens earned before the change accrue at the old rate.
            self.refill(at);
            self.capacity = next;
            self.tokens = self.tokens.min(self.capacity.bucket_depth());
        }
    }

    fn count(&mut self, now: Instant, f: impl Fn(&mut Counts)) {
        let second = now.saturating_duration_since(self.start).as_secs() as usize;
        self.counters.record(second, f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(capacity: Capacity) -> (DomainModel, Instant) {
        let t0 = Instant::now();
        (DomainModel::new(capacity, Vec::new(), t0, 7), t0)
    }

    #[test]
    fn refuses_connections_over_the_limit_with_421_and_frees_slots() {
        let (mut m, t0) = model(Capacity {
            max_connections: 2,
            ..Capacity::default()
        });
        assert_eq!(m.connect(t0), ConnectVerdict::Accept);
        assert_eq!(m.connect(t0), ConnectVerdict::Accept);
        match m.connect(t0) {
            ConnectVerdict::Refuse(r) => {
                assert_eq!(r.code, 421);
                assert_eq!(r.enhanced, Some(EnhancedCode::new(4, 7, 0)));
            }
            other => panic!("third connection got {other:?}"),
        }
        m.disconnect();
        assert_eq!(m.connect(t0), ConnectVerdict::Accept);
        assert_eq!(m.counters().total.refused_connections, 1);
        assert_eq!(m.counters().peak_connections, 2);
    }

    #[test]
    fn rate_limit_refills_with_time() {
        let (mut m, t0) = model(Capacity {
            max_rate: 10.0,
            ..Capacity::default()
        });
        let accepted = (0..20)
            .filter(|i| m.rcpt(t0, &format!("u{i}@a.test")) == RcptVerdict::Accept)
            .count();
        assert_eq!(accepted, 10, "a full bucket holds one second of rate");
        match m.rcpt(t0, "late@a.test") {
            RcptVerdict::Refuse(r) => {
                assert_eq!(r.code, 451);
                assert_eq!(r.enhanced, Some(EnhancedCode::new(4, 7, 1)));
            }
            RcptVerdict::Accept => panic!("bucket should be empty"),
        }
        // 300 ms later three more tokens have arrived.
        let t1 = t0 + Duration::from_millis(300);
        let later = (0..10)
            .filter(|i| m.rcpt(t1, &format!("v{i}@a.test")) == RcptVerdict::Accept)
            .count();
        assert_eq!(later, 3);
        assert_eq!(m.counters().total.rate_limited, 1 + 10 + 7);
    }

    #[test]
    fn unknown_mailboxes_are_stable_and_near_their_share() {
        let share = 0.2;
        let unknown = (0..10_000)
            .filter(|i| is_unknown_mailbox(&format!("user{i}@x.test"), share))
            .count();
        assert!((1_700..2_300).contains(&unknown), "{unknown} of 10000");
        let (mut m, t0) = model(Capacity {
            unknown_share: share,
            ..Capacity::default()
        });
        let addr = (0..)
            .map(|i| format!("user{i}@x.test"))
            .find(|a| is_unknown_mailbox(a, share))
            .unwrap();
        for _ in 0..3 {
            match m.rcpt(t0, &addr) {
                RcptVerdict::Refuse(r) => assert_eq!(
                    (r.code, r.enhanced),
                    (550, Some(EnhancedCode::new(5, 1, 1)))
                ),
                RcptVerdict::Accept => panic!("unknown mailbox accepted"),
            }
        }
    }

    #[test]
    fn greylisting_refuses_only_the_first_attempt() {
        let (mut m, t0) = model(Capacity {
            greylist: true,
            ..Capacity::default()
        });
        assert!(matches!(m.rcpt(t0, "a@g.test"), RcptVerdict::Refuse(r) if r.code == 451));
        assert_eq!(m.rcpt(t0, "A@g.test"), RcptVerdict::Accept);
        assert!(matches!(m.rcpt(t0, "b@g.test"), RcptVerdict::Refuse(_)));
        assert_eq!(m.counters().total.greylisted, 2);
    }

    #[test]
    fn latency_grows_with_load() {
        let cap = Capacity {
            max_connections: 4,
            latency: Duration::from_millis(10),
            latency_growth: Duration::from_millis(100),
            ..Capacity::default()
        };
        let (mut m, t0) = model(cap);
        assert_eq!(m.connect(t0), ConnectVerdict::Accept);
        let idle = match m.data_end(t0, 1) {
            DataVerdict::Accept { delay } => delay,
            other => panic!("{other:?}"),
        };
        for _ in 0..3 {
            m.connect(t0);
        }
        let busy = match m.data_end(t0, 1) {
            DataVerdict::Accept { delay } => delay,
            other => panic!("{other:?}"),
        };
        assert_eq!(idle, Duration::from_millis(35));
        assert_eq!(busy, Duration::from_millis(110));
        assert_eq!(m.counters().total.accepted, 2);
    }

    #[test]
    fn drops_about_their_share_and_keep_nothing() {
        let (mut m, t0) = model(Capacity {
            drop_share: 0.5,
            ..Capacity::default()
        });
        let dropped = (0..1000)
            .filter(|_| matches!(m.data_end(t0, 1), DataVerdict::Drop { .. }))
            .count();
        assert!((400..600).contains(&dropped), "{dropped}");
        assert_eq!(m.counters().total.accepted as usize, 1000 - dropped);
    }

    #[test]
    fn capacity_changes_at_their_time() {
        let t0 = Instant::now();
        let before = Capacity {
            max_connections: 1,
            ..Capacity::default()
        };
        let after = Capacity {
            max_connections: 3,
            data_delay: Duration::from_secs(1),
            ..Capacity::default()
        };
        let mut m = DomainModel::new(before, vec![(Duration::from_secs(10), after)], t0, 1);
        assert_eq!(m.connect(t0), ConnectVerdict::Accept);
        assert!(matches!(m.connect(t0), ConnectVerdict::Refuse(_)));
        assert_eq!(m.data_delay(t0), Duration::ZERO);
        let t10 = t0 + Duration::from_secs(10);
        assert_eq!(m.connect(t10), ConnectVerdict::Accept);
        assert_eq!(m.connect(t10), ConnectVerdict::Accept);
        assert!(matches!(m.connect(t10), ConnectVerdict::Refuse(_)));
        assert_eq!(m.data_delay(t10), Duration::from_secs(1));
        let per_second = &m.counters().per_second;
        assert_eq!(per_second[0].refused_connections, 1);
        assert_eq!(per_second[10].refused_connections, 1);
        assert_eq!(per_second[10].connections, 2);
        // And by hand, at once.
        m.set_capacity(
            t10,
            Capacity {
                max_connections: 4,
                ..Capacity::default()
            },
        );
        assert_eq!(m.connect(t10), ConnectVerdict::Accept);
        assert!(matches!(m.connect(t10), ConnectVerdict::Refuse(_)));
    }
}
