//! Adaptive rate control: each destination's pace learned from its latency
//! and its replies: the sending speed to a domain follows how fast that
//! domain processes mail.
//!
//! Sans-IO: time comes in as `now: Instant`, nothing here sleeps, locks or
//! touches a socket, so the tests drive it on a simulated clock.
//!
//! # One controller per receiving site
//!
//! A [`RateController`] is kept per *pool* of the shard's queue map: a
//! domain's own until its MX hosts are known, then its receiving site's,
//! shared by every domain of the shard whose MX hosts resolve to the same
//! addresses (big providers meter the sending address, not the domain;
//! the queue map's `sites` module says how sites are made and why each
//! shard keeps its own). The controller does not know its key: it only
//! sees the signals of what its pool sent.
//!
//! # What it steers, from what
//!
//! Two numbers: the message **rate**, enforced by GCRA pacing in
//! [`try_acquire`](RateController::try_acquire), and the **connection
//! limit**, sized by Little's law from the rate and the transaction latency
//! (with headroom) and capped by what connection throttling taught. The rate
//! is what receivers meter; connections are the means to carry it.
//!
//! - Slow start: while no throttling reply or knee says stop, each
//!   accepted message adds one round trip's worth to the rate (it doubles
//!   about once per round trip, as TCP's slow start follows its
//!   acknowledgements), bounded by twice what the destination accepted
//!   over the last 100-200 ms and only while latency stays flat; and while
//!   the rate is what limits sending, it also doubles each interval.
//! - Latency: the floor is a windowed minimum, the recent value a moving
//!   average. Latency above `floor * latency_tolerance` is a question, not
//!   a verdict: some receivers answer slower the more connections they
//!   carry and still take all the mail; others queue it. What tells them
//!   apart is what more sending bought. If the sends of the last interval
//!   rose and deliveries rose with them (allowing for the replies still in
//!   flight), latency is the price of throughput and growth goes on. If
//!   deliveries did not follow, or at a steady pace fall behind the sends,
//!   for two intervals in a row (one, in a probe: a short spell of our own
//!   host being busy looks the same), the destination is at its *knee*:
//!   the delivered rate becomes the ceiling and the rate drops under it,
//!   the further the higher latency climbed (down to half), and holds
//!   while latency falls, until the queue built there drains.
//! - A throttling reply (421 or 4.7.x; reply text alone is not enough)
//!   sets the *ceiling* to the rate the destination was accepting over the
//!   last second, cuts the rate to `decrease_factor` of it, and suspends
//!   sending for `backoff_initial`. Further throttles of the same episode
//!   read the acceptance over the whole episode while sending (a receiver's
//!   token bucket refills during a backoff and inflates the last second),
//!   and from the third cut on the backoff doubles. Replies to work sent
//!   before a cut do not cut again.
//! - After the backoff the rate climbs back halfway per interval to a
//!   plateau (`plateau` x ceiling) and sits there; after `probe_after`
//!   without throttling it forgets the ceiling and probes upward, by
//!   `increase_ratio` at first and twice the step each interval while
//!   latency stays flat, so capacity that came back is found in seconds. A
//!   throttle answers a probe: the rate goes back under what was accepted,
//!   without a suspension.
//! - Connections (`connections.rs`) grow one past those proven (seen open and greeted at
//!   once), so a burst of opens does not collect one refusal each. A first
//!   "too many connections" names the remote's limit: the cap becomes one
//!   fewer. Refusals that go on, and failed connections, cut the cap by
//!   `decrease_factor`. A learned cap holds for `probe_after` and then grows
//!   by one per interval, and only while Little's law asks for more.
//! - Everything stays within [`RateSettings`]; operator [`RuleSet`] actions
//!   suspend a destination or cap it for a while.
//!
//! # In a cluster
//!
//! With `[cluster]`, several hosts send to one destination and each keeps
//! a controller of its own, learning from its own replies; the engine's
//! `cluster` module tells it what the others learned: a throttle another
//! host got cuts this one too
//! ([`on_peer_throttle`](RateController::on_peer_throttle), not counted in
//! [`cuts`](RateController::cuts), which is what the host tells the
//! others), and a change in the number of hosts sending scales the learned
//! ceiling and connection cap ([`rescale`](RateController::rescale)).
//!
//! # Wiring (the engine's connection pool)
//!
//! ```text
//! before opening a connection:  open < ctl.connection_limit()
//! when one has greeted:         ctl.on_connected(open)
//! before each transaction:      ctl.try_acquire(now)  // Err(at): wake at `at`
//! after each final / 4yz reply: if let Some(a) = rules.match_reply(code, enh, text) {
//!                                   ctl.apply(now, &a) }
//!                               ctl.on_reply(now, code, enh, text)
//! after each accepted one:      ctl.on_latency(now, LatencyKind::Transaction, took)
//! on connect failure / drop:    ctl.on_connect_failure(now)
//! periodic summary / log:       ctl.snapshot(now)
//! ```

mod connections;
mod controller;
mod counter;
mod gcra;
mod latency;
mod rules;
mod settings;
mod signal;
mod snapshot;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod sim;

pub use controller::{LatencyKind, RateController};
pub use rules::{Action, RuleConfig, RuleError, RuleSet};
pub use settings::{RateSettings, SettingsError};
pub use signal::{ReplyKind, classify_reply};
pub use snapshot::{RateSnapshot, RateState};
