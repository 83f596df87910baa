//! Adaptive rate control: each destination's pace learned from its latency
//! and its replies (issue 6; the patent text's claims 14, 15 and 33: adjust
//! the sending speed to a domain from how fast that domain processes mail).
//!
//! Sans-IO: time comes in as `now: Instant`, nothing here sleeps, locks or
//! touches a socket, so the tests drive it on a simulated clock.
//!
//! # One controller per destination domain
//!
//! A [`RateController`] is kept per *domain queue*, beside the queue, by
//! the shard that owns the domain. The alternative was one per MX host
//! group: big providers meter per sending IP and per MX group, and many
//! domains share one provider's MX hosts, so one learned limit could cover
//! all of them. We key by domain because:
//!
//! - the owner shard is `hash(domain) % shards`, so a per-domain controller
//!   is touched by one thread only; a per-MX-group controller would be
//!   shared by every shard holding one of the group's domains, and need a
//!   lock or cross-shard messages on every send;
//! - the domain is known when a message is queued, the MX group only after
//!   DNS, and it changes when records change; the queues, their configured
//!   bounds and the connection pools are per domain too;
//! - the large providers' own domains (gmail.com, outlook.com, yahoo.com)
//!   are each a destination of their own, which is where most bulk volume
//!   and most throttling is.
//!
//! What is lost: many small domains hosted by one provider each learn on
//! their own, and together may exceed a per-IP limit they never see alone.
//! The controller does not know its key, so the engine can later key a
//! shard-local map by MX group (shard, group) without changing this module;
//! operator rules cover the known cases meanwhile.
//!
//! # What it steers, from what
//!
//! Two numbers: the message **rate**, enforced by GCRA pacing in
//! [`try_acquire`](RateController::try_acquire), and the **connection
//! limit**, sized by Little's law from the rate and the transaction latency
//! (with headroom) and capped by what connection throttling taught. The rate
//! is what receivers meter; connections are the means to carry it.
//!
//! - Slow start: while latency stays near its floor and the rate is what
//!   limits sending, the rate doubles each interval.
//! - Latency: the floor is a windowed minimum, the recent value a moving
//!   average. Above `floor * latency_tolerance` the rate is multiplied by
//!   `floor * tolerance / recent` (at least 0.5), a Vegas-like gradient.
//! - A throttling reply (421, 4.7.x, "rate limit", "try again later", ...)
//!   sets the *ceiling* to the rate the destination was accepting over the
//!   last second, cuts the rate to `decrease_factor` of it, and suspends
//!   sending for a backoff that doubles while throttling keeps coming.
//!   Replies to work sent before the cut do not cut again.
//! - After the backoff the rate climbs back halfway per interval to a
//!   plateau (`plateau` x ceiling) and sits there; after `probe_after`
//!   without throttling it forgets the ceiling and probes upward by
//!   `increase_ratio` per interval, so grown capacity is found again.
//! - "Too many connections" replies and failed connections cut the
//!   connection cap; it grows back by one per interval after a quiet period.
//! - Everything stays within [`RateSettings`]; operator [`RuleSet`] actions
//!   suspend a destination or cap it for a while.
//!
//! # Wiring (the engine's connection pool)
//!
//! ```text
//! before opening a connection:  open < ctl.connection_limit()
//! before each transaction:      ctl.try_acquire(now)  // Err(at): wake at `at`
//! after each final / 4yz reply: if let Some(a) = rules.match_reply(code, enh, text) {
//!                                   ctl.apply(now, &a) }
//!                               ctl.on_reply(now, code, enh, text)
//! after each accepted one:      ctl.on_latency(now, LatencyKind::Transaction, took)
//! on connect failure / drop:    ctl.on_connect_failure(now)
//! periodic summary / log:       ctl.snapshot(now)
//! ```

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
