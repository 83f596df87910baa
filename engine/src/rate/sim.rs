//! The controller against simulated receivers with a hidden capacity, on a
//! virtual clock: discrete 5 ms steps, no sleeps, no randomness beyond a
//! fixed-seed jitter, so every run is the same.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use volley_smtp::EnhancedCode;

use super::{LatencyKind, RateController, RateSettings, RateState};

const STEP: Duration = Duration::from_millis(5);
const BASE_LATENCY: Duration = Duration::from_millis(150);
const REJECT_LATENCY: Duration = Duration::from_millis(40);

/// How the simulated receiver limits us.
#[derive(Clone, Copy)]
enum Model {
    /// A policy limit: at most `capacity` accepted per sliding second, the
    /// rest get `451 4.7.1`; latency grows mildly with load.
    Throttling,
    /// No policy: a server that processes `capacity` per second; beyond it
    /// a queue builds and latency grows without bound.
    Queueing,
}

struct Receiver {
    model: Model,
    capacity: f64,
    accepted: VecDeque<Instant>,
    backlog: f64,
    last: Option<Instant>,
    seed: u64,
}

enum Outcome {
    Accepted,
    Throttled,
}

impl Receiver {
    fn new(model: Model, capacity: f64) -> Self {
        Self {
            model,
            capacity,
            accepted: VecDeque::new(),
            backlog: 0.0,
            last: None,
            seed: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// A factor in [0.9, 1.1), from a fixed-seed xorshift.
    fn jitter(&mut self) -> f64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        0.9 + (self.seed % 2000) as f64 / 10_000.0
    }

    fn offer(&mut self, now: Instant) -> (Outcome, Duration) {
        while self
            .accepted
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.accepted.pop_front();
        }
        let jitter = self.jitter();
        match self.model {
            Model::Throttling => {
                let load = self.accepted.len() as f64 / self.capacity;
                if load >= 1.0 {
                    return (Outcome::Throttled, REJECT_LATENCY);
                }
                self.accepted.push_back(now);
                let factor = 1.0 + 0.2 * load * load;
                (Outcome::Accepted, BASE_LATENCY.mul_f64(factor * jitter))
            }
            Model::Queueing => {
                if let Some(last) = self.last {
                    let drained = now.duration_since(last).as_secs_f64() * self.capacity;
                    self.backlog = (self.backlog - drained).max(0.0);
                }
                self.last = Some(now);
                let wait = self.backlog / self.capacity;
                self.backlog += 1.0;
                self.accepted.push_back(now);
                let latency = BASE_LATENCY.mul_f64(jitter) + Duration::from_secs_f64(wait);
                (Outcome::Accepted, latency)
            }
        }
    }
}

/// One connection: idle, or busy until a reply arrives.
type Conn = Option<(Instant, Outcome, Duration)>;

struct Sim {
    start: Instant,
    now: Instant,
    ctl: RateController,
    rx: Receiver,
    conns: Vec<Conn>,
    /// Accepted and throttled replies per simulated second.
    accepted: Vec<u32>,
    throttled: Vec<u32>,
    /// The controller's rate and state at the end of each second.
    rates: Vec<f64>,
    states: Vec<RateState>,
    latencies: Vec<Option<Duration>>,
    max_conns_seen: u32,
}

impl Sim {
    fn new(model: Model, capacity: f64, settings: &RateSettings) -> Self {
        let start = Instant::now();
        Self {
            start,
            now: start,
            ctl: RateController::new(settings, start),
            rx: Receiver::new(model, capacity),
            conns: Vec::new(),
            accepted: Vec::new(),
            throttled: Vec::new(),
            rates: Vec::new(),
            states: Vec::new(),
            latencies: Vec::new(),
            max_conns_seen: 0,
        }
    }

    fn second(&self) -> usize {
        self.now.duration_since(self.start).as_secs() as usize
    }

    fn count(v: &mut Vec<u32>, i: usize) {
        if v.len() <= i {
            v.resize(i + 1, 0);
        }
        v[i] += 1;
    }

    /// Runs until `secs` simulated seconds have passed since the start.
    fn run_until(&mut self, secs: u64) {
        let end = self.start + Duration::from_secs(secs);
        while self.now < end {
            self.now += STEP;
            self.step();
            let s = self.second();
            if self.rates.len() < s {
                self.rates.push(self.ctl.rate());
                let snap = self.ctl.snapshot(self.now);
                self.states.push(snap.state);
                self.latencies.push(snap.latency_recent);
            }
        }
    }

    fn step(&mut self) {
        let now = self.now;
        let sec = self.second();
        for conn in &mut self.conns {
            let done = conn.as_ref().is_some_and(|(at, _, _)| *at <= now);
            if !done {
                continue;
            }
            if let Some((_, outcome, took)) = conn.take() {
                match outcome {
                    Outcome::Accepted => {
                        Self::count(&mut self.accepted, sec);
                        self.ctl.on_latency(now, LatencyKind::Transaction, took);
                        self.ctl
                            .on_reply(now, 250, Some(EnhancedCode::new(2, 0, 0)), "OK");
                    }
                    Outcome::Throttled => {
                        Self::count(&mut self.throttled, sec);
                        self.ctl.on_reply(
                            now,
                            451,
                            Some(EnhancedCode::new(4, 7, 1)),
                            "Rate limit exceeded, try again later",
                        );
                    }
                }
            }
        }
        // The pool follows the limit: open up to it, close idle ones above.
        let limit = self.ctl.connection_limit() as usize;
        self.max_conns_seen = self.max_conns_seen.max(limit as u32);
        while self.conns.len() < limit {
            self.conns.push(None);
            self.ctl.on_connected(self.conns.len() as u32);
        }
        let mut i = self.conns.len();
        while self.conns.len() > limit && i > 0 {
            i -= 1;
            if self.conns[i].is_none() {
                self.conns.swap_remove(i);
            }
        }
        for conn in &mut self.conns {
            if conn.is_some() {
                continue;
            }
            if self.ctl.try_acquire(now).is_err() {
                break;
            }
            let (outcome, took) = self.rx.offer(now);
            *conn = Some((now + took, outcome, took));
        }
    }

    fn sum(v: &[u32], from: usize, to: usize) -> u64 {
        v.iter()
            .skip(from)
            .take(to - from)
            .map(|&n| u64::from(n))
            .sum()
    }

    /// Accepted per second, and the throttled share, over seconds [from, to).
    fn window(&self, from: usize, to: usize) -> (f64, f64) {
        let ok = Self::sum(&self.accepted, from, to);
        let bad = Self::sum(&self.throttled, from, to);
        let rate = ok as f64 / (to - from) as f64;
        let share = bad as f64 / (ok + bad).max(1) as f64;
        (rate, share)
    }
}

fn settings() -> RateSettings {
    RateSettings {
        max_connections: 200,
        ..RateSettings::default()
    }
}

#[test]
fn converges_to_hidden_capacity_with_few_throttles() {
    for capacity in [20.0, 100.0, 400.0] {
        let mut sim = Sim::new(Model::Throttling, capacity, &settings());
        sim.run_until(600);
        let (rate, share) = sim.window(60, 600);
        assert!(
            rate >= 0.9 * capacity && rate <= capacity,
            "capacity {capacity}: {rate:.1}/s"
        );
        assert!(
            share < 0.01,
            "capacity {capacity}: {:.2}% throttled",
            share * 100.0
        );
        // Bounds hold throughout.
        let s = settings();
        assert!(
            sim.rates
                .iter()
                .all(|&r| r >= s.min_rate && r <= s.max_rate)
        );
        assert!(sim.max_conns_seen <= s.max_connections);
    }
}

#[test]
fn capacity_halving_settles_below_within_ten_seconds_and_doubling_climbs_back() {
    let capacity = 100.0;
    let mut sim = Sim::new(Model::Throttling, capacity, &settings());
    sim.run_until(200);
    let (before, _) = sim.window(100, 200);
    assert!(before >= 0.9 * capacity, "{before:.1}/s");

    sim.rx.capacity = capacity / 2.0;
    sim.run_until(235);
    // Within 10 s the allowed rate is under the new capacity and stays
    // there, except for the probes (every `probe_after`, 10 s), each of
    // which one throttling reply answers.
    for s in 210..235 {
        assert!(
            sim.rates[s] < capacity / 2.0 || sim.states[s] == RateState::Probing,
            "second {s}: {:.1}/s",
            sim.rates[s]
        );
    }
    let (after, share) = sim.window(210, 235);
    assert!(share < 0.01, "{:.2}%", share * 100.0);
    assert!(after >= 0.85 * capacity / 2.0, "{after:.1}/s");

    sim.rx.capacity = capacity;
    sim.run_until(300);
    // The next probe finds the doubled capacity, with steps that double
    // while latency stays flat: most of it within 15 s.
    let (back, _) = sim.window(250, 260);
    assert!(back >= 0.8 * capacity, "{back:.1}/s");
    let (back, share) = sim.window(260, 300);
    assert!(back >= 0.9 * capacity, "{back:.1}/s");
    assert!(share < 0.01, "{:.2}%", share * 100.0);
}

#[test]
fn queueing_receiver_is_kept_near_capacity_with_bounded_latency() {
    let capacity = 100.0;
    let mut sim = Sim::new(Model::Queueing, capacity, &settings());
    sim.run_until(300);
    let (rate, _) = sim.window(60, 300);
    assert!(rate >= 0.9 * capacity, "{rate:.1}/s");
    let worst = sim.latencies[60..300]
        .iter()
        .flatten()
        .max()
        .copied()
        .unwrap();
    // The queue never grows past a few multiples of the base latency.
    assert!(worst < BASE_LATENCY * 4, "{worst:?}");
}
