//! Controller unit tests on a simulated clock: latency curves and reply
//! sequences in, limits checked out.

use std::time::{Duration, Instant};

use volley_smtp::EnhancedCode;

use super::{Action, LatencyKind, RateController, RateSettings, RateState, ReplyKind};

const STEP: Duration = Duration::from_millis(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Drives one controller with saturated demand: every step it takes every
/// slot allowed, and each message is accepted at once with a given latency.
struct Drive {
    now: Instant,
    ctl: RateController,
    sent: u64,
}

impl Drive {
    fn new(settings: RateSettings) -> Self {
        let now = Instant::now();
        Self {
            now,
            ctl: RateController::new(&settings, now),
            sent: 0,
        }
    }

    fn busy(&mut self, d: Duration, latency: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += STEP;
            // The pool opens what the limit allows, and each one greets.
            self.ctl.on_connected(self.ctl.connection_limit());
            while self.ctl.try_acquire(self.now).is_ok() {
                self.sent += 1;
                self.ctl.on_reply(self.now, 250, None, "OK");
                self.ctl
                    .on_latency(self.now, LatencyKind::Transaction, latency);
            }
        }
    }

    /// Demand of one message per second: far below any limit.
    fn trickle(&mut self, d: Duration, latency: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += secs(1);
            if self.ctl.try_acquire(self.now).is_ok() {
                self.ctl.on_reply(self.now, 250, None, "OK");
                self.ctl
                    .on_latency(self.now, LatencyKind::Transaction, latency);
            }
        }
    }

    fn throttle(&mut self) -> ReplyKind {
        self.ctl.on_reply(
            self.now,
            451,
            Some(EnhancedCode::new(4, 7, 1)),
            "Rate limit exceeded",
        )
    }

    fn state(&self) -> RateState {
        self.ctl.snapshot(self.now).state
    }
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= b * tolerance
}

#[test]
fn slow_start_follows_the_receivers_round_trips_not_the_clock() {
    // 10 ms round trips, everything accepted: the rate doubles about once
    // per round trip (bounded by twice what was accepted over the last
    // 100-200 ms), so it is past 1,000/s within a quarter of a second,
    // where slow start on the interval's clock is still at 50.
    let mut d = Drive::new(RateSettings::default());
    d.busy(ms(250), ms(10));
    assert!(d.ctl.rate() >= 1000.0, "{}", d.ctl.rate());
    assert_eq!(d.state(), RateState::SlowStart);
    let mut by_clock = Drive::new(RateSettings {
        round_trip_growth: false,
        ..RateSettings::default()
    });
    by_clock.busy(ms(250), ms(10));
    assert_eq!(by_clock.ctl.rate(), 50.0);
    // It never runs ahead of what the destination takes: a destination
    // that accepts 1 message a second keeps the rate near where it began.
    let mut d = Drive::new(RateSettings::default());
    d.trickle(secs(5), ms(10));
    assert!(d.ctl.rate() <= 200.0, "{}", d.ctl.rate());
}

#[test]
fn rising_latency_stops_round_trip_growth_until_the_interval_judges() {
    // A destination that takes 500 a second and queues the rest: once its
    // latency climbs, accepted messages grow the rate no more, and the
    // rate stays nearer what it takes than the bound of twice that.
    let mut d = Drive::new(RateSettings::default());
    let mut queue = 0.0;
    queueing(&mut d, ms(600), 500.0, ms(10), &mut queue);
    // (Without the latency check: 1,100/s and 290 queued there.)
    assert!(d.ctl.rate() < 900.0, "{}", d.ctl.rate());
    assert!(queue < 200.0, "{queue}");
}

#[test]
fn slow_start_doubles_each_interval_up_to_max() {
    let mut d = Drive::new(RateSettings {
        // Slow start on the interval's clock: the stage this test sets.
        round_trip_growth: false,
        initial_rate: 10.0,
        max_rate: 200.0,
        ..RateSettings::default()
    });
    let mut seen = Vec::new();
    for _ in 0..7 {
        d.busy(secs(1), ms(100));
        seen.push(d.ctl.rate());
    }
    assert_eq!(seen, [20.0, 40.0, 80.0, 160.0, 200.0, 200.0, 200.0]);
    assert_eq!(d.state(), RateState::SlowStart);
}

#[test]
fn no_growth_while_demand_is_below_the_limit() {
    let mut d = Drive::new(RateSettings::default());
    let start = d.ctl.rate();
    d.trickle(secs(30), ms(100));
    assert_eq!(d.ctl.rate(), start);
}

#[test]
fn latency_within_tolerance_keeps_growing() {
    let s = RateSettings {
        initial_rate: 50.0,
        max_rate: 50.0,
        latency_tolerance: 1.5,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s);
    d.busy(secs(5), ms(100));
    assert_eq!(d.ctl.rate(), 50.0);
    // 140 ms is within 1.5 x the 100 ms floor: nothing changes.
    d.busy(secs(3), ms(140));
    assert_eq!(d.ctl.rate(), 50.0);
    assert_eq!(d.state(), RateState::SlowStart);
}

#[test]
fn latency_that_buys_deliveries_is_paid_and_growth_goes_on() {
    // Every message sent is accepted, however slowly: a receiver that
    // answers slower under load but takes all of it.
    let mut d = Drive::new(RateSettings {
        initial_rate: 20.0,
        max_rate: 1000.0,
        ..RateSettings::default()
    });
    d.busy(secs(2), ms(20));
    let mut latency = 20;
    for _ in 0..4 {
        latency *= 2;
        d.busy(secs(1), ms(latency));
    }
    assert_eq!(d.state(), RateState::SlowStart);
    assert!(d.ctl.rate() >= 640.0, "{}", d.ctl.rate());
    assert_eq!(d.ctl.snapshot(d.now).ceiling, None);
}

/// Drives a receiver that completes at most `capacity` messages per
/// second whatever is sent (a queue builds at the remote): sends follow
/// the pace, acceptances (and their latency, which grows with the queue)
/// follow the capacity.
fn queueing(d: &mut Drive, dur: Duration, capacity: f64, base: Duration, queue: &mut f64) {
    let end = d.now + dur;
    let mut credit = 0.0;
    while d.now < end {
        d.now += STEP;
        while d.ctl.try_acquire(d.now).is_ok() {
            *queue += 1.0;
        }
        credit += capacity * STEP.as_secs_f64();
        while credit >= 1.0 && *queue >= 1.0 {
            credit -= 1.0;
            *queue -= 1.0;
            let wait = Duration::from_secs_f64(*queue / capacity);
            d.ctl.on_reply(d.now, 250, None, "OK");
            d.ctl
                .on_latency(d.now, LatencyKind::Transaction, base + wait);
        }
        credit = credit.min(1.0);
    }
}

#[test]
fn a_rise_that_buys_no_deliveries_is_the_knee_and_the_rate_drops_under_it() {
    let mut d = Drive::new(RateSettings {
        // Slow start on the interval's clock: the stage this test sets.
        round_trip_growth: false,
        initial_rate: 25.0,
        max_rate: 1000.0,
        ..RateSettings::default()
    });
    let mut queue = 0.0;
    // 25, 50, 100 per second: all below the 150/s capacity.
    queueing(&mut d, secs(3), 150.0, ms(100), &mut queue);
    assert_eq!(d.state(), RateState::SlowStart);
    // 200 then 400 per second: deliveries rise to 150 and stay there while
    // the queue (and latency) grows: the rise that bought nothing is the
    // knee; on its second interval the rate drops under it.
    queueing(&mut d, ms(2100), 150.0, ms(100), &mut queue);
    assert_eq!(d.state(), RateState::SlowStart);
    queueing(&mut d, secs(1), 150.0, ms(100), &mut queue);
    let snap = d.ctl.snapshot(d.now);
    assert_eq!(snap.state, RateState::Steady);
    let ceiling = snap.ceiling.unwrap();
    assert!(close(ceiling, 150.0, 0.1), "{snap}");
    assert!(d.ctl.rate() < 150.0, "{snap}");
    // The rate stays low while latency shows the queue, so it drains and
    // latency comes back to its floor; then the rate climbs to the plateau.
    queueing(&mut d, secs(7), 150.0, ms(100), &mut queue);
    assert!(queue < 5.0, "{queue}");
    queueing(&mut d, secs(6), 150.0, ms(100), &mut queue);
    assert!(
        d.ctl.rate() > 140.0 && d.ctl.rate() < 150.0,
        "{}",
        d.ctl.rate()
    );
}

#[test]
fn throttle_cuts_suspends_and_backoff_grows_then_resets_after_quiet() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    d.busy(secs(3), ms(100));
    assert_eq!(d.throttle(), ReplyKind::RateThrottle);
    let r = d.ctl.rate();
    assert!(close(r, 85.0, 0.03), "{r}");
    assert_eq!(d.state(), RateState::Backoff);
    assert_eq!(d.ctl.try_acquire(d.now), Err(d.now + s.backoff_initial));

    // More throttles from the same burst (within the guard) cut nothing.
    d.now += ms(100);
    d.throttle();
    assert_eq!(d.ctl.rate(), r);
    assert_eq!(d.ctl.snapshot(d.now).throttles, 2);

    // Throttled again after each suspension: the second cut of the episode
    // keeps the first backoff (it is measured over the episode, and
    // usually enough); from the third on the backoff doubles.
    let mut backoffs = Vec::new();
    for _ in 0..4 {
        let until = d.ctl.suspended_until(d.now).unwrap();
        d.now = until;
        d.busy(ms(200), ms(100));
        d.throttle();
        backoffs.push(d.ctl.suspended_until(d.now).unwrap() - d.now);
    }
    let b = s.backoff_initial;
    assert_eq!(backoffs, [b, b * 2, b * 4, b * 8]);

    // A quiet period after the last backoff: the next one starts over.
    d.now += secs(8) + s.quiet_period;
    d.busy(secs(2), ms(100));
    d.throttle();
    assert_eq!(
        d.ctl.suspended_until(d.now),
        Some(d.now + s.backoff_initial)
    );
}

#[test]
fn a_peers_throttle_cuts_as_ones_own_but_is_not_counted_as_ones_own() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    d.busy(secs(3), ms(100));
    d.ctl.on_peer_throttle(d.now);
    let r = d.ctl.rate();
    assert!(close(r, 85.0, 0.03), "the same cut as a reply's: {r}");
    assert!(d.ctl.ceiling().is_some());
    assert_eq!(d.state(), RateState::Backoff);
    let snap = d.ctl.snapshot(d.now);
    assert_eq!((snap.throttles, d.ctl.cuts()), (0, 0), "not its own");
    // A reply of its own just after is guarded as after any cut, and a
    // later one counts.
    d.now += ms(100);
    d.throttle();
    assert_eq!((d.ctl.rate(), d.ctl.cuts()), (r, 0));
    d.now = d.ctl.suspended_until(d.now).unwrap();
    d.busy(ms(500), ms(100));
    d.throttle();
    assert_eq!(d.ctl.cuts(), 1);
    // A peer's cut within that one's guard changes nothing.
    let r = d.ctl.rate();
    d.ctl.on_peer_throttle(d.now + ms(10));
    assert_eq!((d.ctl.rate(), d.ctl.cuts()), (r, 1));
}

#[test]
fn a_rescaled_part_moves_the_ceiling_and_the_rate_follows() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100_000.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    d.busy(ms(400), ms(100));
    d.throttle();
    let ceiling = d.ctl.ceiling().unwrap();
    d.now = d.ctl.suspended_until(d.now).unwrap();
    d.busy(secs(2), ms(100));
    // Two hosts of three stopped sending: this one takes up their part.
    d.ctl.rescale(d.now, 1.5);
    assert!(close(d.ctl.ceiling().unwrap(), ceiling * 1.5, 0.01));
    d.busy(secs(2), ms(100));
    let up = d.ctl.rate();
    assert!(up > ceiling * 1.3, "climbed: {up} for {ceiling}");
    // They came back: it gives their part back at once.
    d.ctl.rescale(d.now, 2.0 / 3.0);
    assert!(
        d.ctl.rate() <= ceiling * s.plateau * 1.01,
        "{}",
        d.ctl.rate()
    );
    // Without a ceiling the rate is left alone, but a connection cap
    // learned from a refusal scales.
    let mut fresh = Drive::new(s);
    fresh.busy(secs(1), ms(100));
    let open = fresh.ctl.connection_limit();
    fresh.ctl.on_reply(
        fresh.now,
        421,
        Some(EnhancedCode::new(4, 7, 0)),
        "Too many connections",
    );
    let capped = fresh.ctl.connection_limit();
    assert!(capped < open, "{capped} < {open}");
    let r = fresh.ctl.rate();
    fresh.ctl.rescale(fresh.now, 3.0);
    assert_eq!((fresh.ctl.rate(), fresh.ctl.ceiling()), (r, None));
    for n in (capped + 1)..(capped * 3) {
        fresh.ctl.on_connected(n);
    }
    assert!(
        fresh.ctl.connection_limit() > capped,
        "{}",
        fresh.ctl.connection_limit()
    );
}

#[test]
fn with_a_shared_connection_limit_a_refusal_leaves_the_cap_to_the_cluster() {
    let mut d = Drive::new(RateSettings::default());
    d.busy(secs(1), ms(100));
    let open = d.ctl.connection_limit();
    d.ctl.share_connection_limit(true);
    let refused = |d: &mut Drive| {
        d.ctl.on_reply(
            d.now,
            421,
            Some(EnhancedCode::new(4, 7, 0)),
            "Too many connections",
        )
    };
    assert_eq!(refused(&mut d), ReplyKind::ConnectionThrottle);
    assert_eq!(d.ctl.connection_limit(), open, "the leases bound it");
    assert_eq!(d.ctl.snapshot(d.now).throttles, 1, "still counted");
    d.ctl.share_connection_limit(false);
    d.now += secs(1);
    refused(&mut d);
    assert!(d.ctl.connection_limit() < open, "alone it learns itself");
}

#[test]
fn backoff_never_exceeds_its_maximum() {
    let s = RateSettings {
        backoff_max: secs(5),
        ..RateSettings::default()
    };
    let mut d = Drive::new(s);
    for _ in 0..10 {
        d.busy(ms(50), ms(100));
        d.throttle();
        let until = d.ctl.suspended_until(d.now).unwrap();
        assert!(until - d.now <= secs(5));
        d.now = until;
    }
    assert_eq!(d.ctl.snapshot(d.now).throttles, 10);
}

#[test]
fn after_a_cut_it_climbs_to_the_plateau_then_probes_above_the_ceiling() {
    let s = RateSettings {
        // Slow start on the interval's clock: the stage this test sets.
        round_trip_growth: false,
        initial_rate: 200.0,
        max_rate: 1000.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    // The remote throttles at 200 before slow start doubles it.
    d.busy(ms(900), ms(100));
    assert_eq!(d.ctl.rate(), 200.0);
    d.throttle();
    let ceiling = d.ctl.snapshot(d.now).ceiling.unwrap();
    assert!(close(ceiling, 200.0, 0.05), "{ceiling}");
    // Back to the plateau within a few intervals, and it holds there until
    // probe_after has passed there quietly.
    d.busy(secs(6), ms(100));
    let plateau = ceiling * s.plateau;
    assert!(close(d.ctl.rate(), plateau, 0.011), "{}", d.ctl.rate());
    assert_eq!(d.state(), RateState::Steady);
    d.busy(s.probe_after - secs(4), ms(100));
    assert!(close(d.ctl.rate(), plateau, 0.011));
    // Then it forgets the ceiling and grows past it, each step twice the
    // last while latency stays flat.
    d.busy(secs(4), ms(100));
    assert_eq!(d.state(), RateState::Probing);
    d.busy(secs(4), ms(100));
    assert!(d.ctl.rate() > ceiling * 1.5, "{}", d.ctl.rate());
    assert_eq!(d.ctl.snapshot(d.now).ceiling, None);
    // A throttle answers the probe: back under what was accepted, not
    // below where the probe began, and no suspension.
    let probing = d.ctl.rate();
    assert_eq!(d.throttle(), ReplyKind::RateThrottle);
    let r = d.ctl.rate();
    assert!(r >= plateau * 0.999 && r < probing, "{r} vs {probing}");
    assert!(d.ctl.snapshot(d.now).ceiling.is_some_and(|c| c < probing));
    assert_eq!(d.ctl.suspended_until(d.now), None);
    assert_eq!(d.state(), RateState::Steady);
}

#[test]
fn connection_limit_follows_littles_law_within_bounds() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100.0,
        max_connections: 20,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s);
    assert_eq!(d.ctl.connection_limit(), 2);
    // 100/s x 100 ms x 1.25 = 12.5 -> 13, plus one spare.
    d.busy(secs(2), ms(100));
    assert_eq!(d.ctl.connection_limit(), 14);
    // 100/s x 1 s would need 126: capped at max_connections.
    d.ctl.on_latency(d.now, LatencyKind::Transaction, secs(1));
    d.ctl.set_settings(&RateSettings {
        max_connections: 20,
        latency_smoothing: 1.0,
        ..RateSettings::default()
    });
    d.ctl.on_latency(d.now, LatencyKind::Transaction, secs(1));
    d.busy(ms(1000), secs(1));
    assert_eq!(d.ctl.connection_limit(), 20);
}

#[test]
fn connection_throttling_cuts_connections_not_rate_and_recovers_after_quiet() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    d.busy(secs(2), ms(100));
    let conns = d.ctl.connection_limit();
    let rate = d.ctl.rate();
    let kind = d
        .ctl
        .on_reply(d.now, 421, None, "Too many connections from your IP");
    assert_eq!(kind, ReplyKind::ConnectionThrottle);
    // The first refusal names the limit: one fewer than were being opened.
    let cut = d.ctl.connection_limit();
    assert_eq!(cut, conns - 1);
    assert_eq!(d.ctl.rate(), rate);
    assert_eq!(d.ctl.try_acquire(d.now + secs(1)), Ok(()));
    // The learned cap is the remote's policy: held for probe_after, then
    // one more per interval while Little's law asks for more.
    d.busy(s.probe_after - secs(1), ms(100));
    assert_eq!(d.ctl.connection_limit(), cut);
    d.busy(secs(3), ms(100));
    assert!(d.ctl.connection_limit() > cut);
    d.busy(secs(20), ms(100));
    assert_eq!(d.ctl.connection_limit(), conns);
}

#[test]
fn refusals_that_go_on_cut_connections_multiplicatively() {
    let s = RateSettings {
        initial_rate: 200.0,
        max_rate: 200.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    d.busy(secs(2), ms(100));
    let conns = d.ctl.connection_limit();
    d.ctl.on_reply(d.now, 421, None, "Too many connections");
    assert_eq!(d.ctl.connection_limit(), conns - 1);
    // Refused again once replies to the first cut are in: load, not a
    // limit named by one refusal.
    d.busy(ms(500), ms(100));
    d.ctl.on_reply(d.now, 421, None, "Too many connections");
    let expected = (f64::from(conns - 1) * s.decrease_factor).floor() as u32;
    assert_eq!(d.ctl.connection_limit(), expected);
}

#[test]
fn a_connection_cap_that_does_not_bind_does_not_grow() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    d.busy(secs(2), ms(100));
    let conns = d.ctl.connection_limit();
    d.ctl
        .on_reply(d.now, 421, None, "Too many connections from your IP");
    let cut = d.ctl.connection_limit();
    assert!(cut < conns);
    // The remote got faster: Little's law now asks for fewer connections
    // than the cut cap, so the cap is never probed upward.
    d.busy(s.probe_after * 3, ms(10));
    assert!(
        d.ctl.connection_limit() <= cut,
        "{}",
        d.ctl.connection_limit()
    );
    d.busy(secs(1), ms(100));
    assert_eq!(d.ctl.connection_limit(), cut);
}

#[test]
fn repeated_connect_failures_back_off_and_a_reply_resets_the_count() {
    let s = RateSettings::default();
    let mut d = Drive::new(s.clone());
    d.ctl.on_connect_failure(d.now);
    d.ctl.on_connect_failure(d.now);
    d.ctl.on_reply(d.now, 220, None, "ready");
    d.ctl.on_connect_failure(d.now);
    d.ctl.on_connect_failure(d.now);
    assert_eq!(d.ctl.suspended_until(d.now), None);
    d.ctl.on_connect_failure(d.now);
    assert_eq!(
        d.ctl.suspended_until(d.now),
        Some(d.now + s.backoff_initial)
    );
    assert_eq!(d.ctl.connection_limit(), s.min_connections);
    assert_eq!(d.ctl.snapshot(d.now).connect_failures, 5);
}

#[test]
fn operator_rules_suspend_and_cap_for_their_duration() {
    let s = RateSettings {
        initial_rate: 100.0,
        max_rate: 100.0,
        ..RateSettings::default()
    };
    let mut d = Drive::new(s);
    d.busy(secs(2), ms(100));
    d.ctl.apply(d.now, &Action::Suspend(secs(600)));
    assert_eq!(d.ctl.try_acquire(d.now), Err(d.now + secs(600)));
    assert_eq!(d.state(), RateState::Suspended);
    d.now += secs(600);
    assert_eq!(d.ctl.try_acquire(d.now), Ok(()));

    d.ctl.apply(
        d.now,
        &Action::Limit {
            connections: Some(3),
            rate: Some(5.0),
            duration: secs(60),
        },
    );
    assert!(d.ctl.connection_limit() <= 3);
    assert_eq!(d.ctl.rate(), 5.0);
    d.busy(secs(30), ms(100));
    assert!(d.ctl.rate() <= 5.0);
    assert!(d.ctl.connection_limit() <= 3);
    // The cap lapses; the controller climbs again.
    d.busy(secs(40), ms(100));
    assert!(d.ctl.rate() > 5.0, "{}", d.ctl.rate());
    assert!(d.ctl.connection_limit() > 3);
}

#[test]
fn limits_stay_within_bounds_under_any_signal_sequence() {
    let s = RateSettings {
        min_connections: 2,
        max_connections: 9,
        min_rate: 1.0,
        max_rate: 300.0,
        backoff_max: secs(4),
        ..RateSettings::default()
    };
    let mut d = Drive::new(s.clone());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        d.now += ms(x % 50);
        match x % 23 {
            0 => {
                d.throttle();
            }
            1 => d.ctl.on_connect_failure(d.now),
            2 => {
                d.ctl.on_reply(d.now, 421, None, "too many connections");
            }
            3..=12 => {
                let _ = d.ctl.try_acquire(d.now);
            }
            13..=16 => d.busy(ms(100), ms(x % 2000)),
            _ => {
                let kind = if x.is_multiple_of(2) {
                    LatencyKind::Command
                } else {
                    LatencyKind::Transaction
                };
                d.ctl.on_latency(d.now, kind, ms(x % 3000));
            }
        }
        let r = d.ctl.rate();
        assert!((s.min_rate..=s.max_rate).contains(&r), "{r}");
        let c = d.ctl.connection_limit();
        assert!((s.min_connections..=s.max_connections).contains(&c), "{c}");
        if let Some(u) = d.ctl.suspended_until(d.now) {
            assert!(u - d.now <= s.backoff_max);
        }
    }
}

#[test]
fn snapshot_shows_in_the_summary_and_serializes_for_the_log() {
    let mut d = Drive::new(RateSettings::default());
    let fresh = d.ctl.snapshot(d.now);
    assert_eq!(
        fresh.to_string(),
        "slow_start conns=2 rate=50.0/s floor=- recent=- throttles=0"
    );
    d.busy(secs(2), ms(150));
    d.throttle();
    let snap = d.ctl.snapshot(d.now);
    let line = snap.to_string();
    assert!(line.starts_with("backoff conns="), "{line}");
    assert!(
        line.contains(" floor=150.0ms recent=150.0ms throttles=1"),
        "{line}"
    );
    assert!(line.ends_with(" suspended=250.0ms"), "{line}");
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["state"], "backoff");
    assert_eq!(json["latency_floor_ms"], 150.0);
    assert_eq!(json["suspended_ms"], 250.0);
    assert_eq!(json["throttles"], 1);
    assert!(json["rate"].as_f64().unwrap() > 0.0);
}

#[test]
fn reload_clamps_what_was_learned_into_new_bounds() {
    let mut d = Drive::new(RateSettings {
        max_rate: 500.0,
        ..RateSettings::default()
    });
    d.busy(secs(6), ms(50));
    assert!(d.ctl.rate() > 100.0);
    d.ctl.set_settings(&RateSettings {
        max_rate: 50.0,
        max_connections: 3,
        ..RateSettings::default()
    });
    assert_eq!(d.ctl.rate(), 50.0);
    assert!(d.ctl.connection_limit() <= 3);
}

#[test]
fn odd_settings_and_inputs_never_panic() {
    // Invalid settings fall back to the defaults.
    let mut d = Drive::new(RateSettings {
        min_rate: 0.0,
        max_rate: f64::NAN,
        ..RateSettings::default()
    });
    d.busy(secs(2), ms(100));
    // The defaults' slow start, on the round trips of a destination that
    // takes everything, is at their highest rate within 2 s.
    assert_eq!(d.ctl.rate(), RateSettings::default().max_rate);

    // Valid but absurd durations and samples saturate.
    let mut d = Drive::new(RateSettings {
        backoff_initial: Duration::MAX,
        backoff_max: Duration::MAX,
        ..RateSettings::default()
    });
    d.ctl
        .on_latency(d.now, LatencyKind::Transaction, Duration::MAX);
    d.busy(secs(1), Duration::MAX);
    d.throttle();
    let until = d.ctl.suspended_until(d.now).unwrap();
    assert!(until - d.now <= Duration::from_secs(366 * 24 * 3600));
    d.ctl.apply(d.now, &Action::Suspend(Duration::MAX));
    let _ = d.ctl.snapshot(d.now).to_string();
    assert!(d.ctl.try_acquire(d.now).is_err());
}

#[test]
fn latency_that_rises_while_demand_is_low_does_not_cut_the_rate() {
    let mut d = Drive::new(RateSettings::default());
    d.busy(secs(3), ms(20));
    let rate = d.ctl.rate();
    // A trickle far under the allowance, answered slowly: not our doing.
    d.trickle(secs(10), ms(200));
    assert!(d.ctl.rate() >= rate, "{} < {rate}", d.ctl.rate());
    assert_eq!(d.ctl.snapshot(d.now).ceiling, None);
}

#[test]
fn a_throttle_after_an_idle_spell_cuts_to_a_third_at_most() {
    let mut d = Drive::new(RateSettings {
        // Slow start on the interval's clock: the stage this test sets.
        round_trip_growth: false,
        ..RateSettings::default()
    });
    d.busy(secs(4), ms(20));
    let rate = d.ctl.rate();
    // Nothing delivered for two seconds, then a throttling reply.
    d.now += secs(2);
    d.throttle();
    // (Without the floor the last second's zero deliveries would set the
    // ceiling to min_rate.)
    let ceiling = d.ctl.snapshot(d.now).ceiling.unwrap();
    assert!(ceiling >= rate / 3.0, "{ceiling} vs {rate}");
}

#[test]
fn a_throttle_under_a_learned_ceiling_lowers_the_ceiling() {
    let s = RateSettings::default();
    let mut d = Drive::new(s.clone());
    d.busy(secs(5), ms(20));
    d.throttle();
    let first = d.ctl.snapshot(d.now).ceiling.unwrap();
    // Back at the plateau, the receiver (whose burst allowance made it look
    // faster than it is) throttles again.
    d.busy(secs(6), ms(20));
    assert_eq!(d.state(), RateState::Steady);
    d.throttle();
    let second = d.ctl.snapshot(d.now).ceiling.unwrap();
    assert!(
        second <= first * s.decrease_factor * 1.001,
        "{second} vs {first}"
    );
}
