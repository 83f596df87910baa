//! A new configuration applied to a shard's queue map while it runs.
//!
//! Queue indices never change: a specific queue that a reload adds is
//! appended, one it removes stays in place as retired (serving no domain),
//! and one that comes back takes its old place. Each domain then moves to
//! the queue its name now belongs to, with its recipients in their order
//! and its connections counted in the new queue. A queue whose settings
//! or hosts changed starts a new generation: its connections opened under
//! the old one finish their transaction and close (idle ones at once), and
//! the next ones open under the new settings. Limits that are read at each
//! decision (connections, recipients per transaction, retries) apply at the
//! next decision.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Action, DomainId, GENERAL, Queue, Queues};
use crate::config::{Config, QueueSettings};
use crate::rate::RateSettings;

impl Queues {
    /// Applies `config`'s queues: their settings, which domains each
    /// serves, their fallback relays; then moves the domains (see the
    /// module's documentation).
    pub(crate) fn reconfigure(&mut self, config: &Config, now: Instant, acts: &mut Vec<Action>) {
        let before: Vec<u64> = self.queues.iter().map(|q| q.generation).collect();
        self.set_queues(config);
        self.link_fallbacks();
        for d in 0..self.domains.len() {
            let Some(dom) = &self.domains[d] else {
                continue;
            };
            let from = dom.queue;
            // A domain held in a fallback queue has a key of its own and
            // stays there.
            if *dom.key == *dom.name {
                let wanted = self.specific.get(&*dom.name).copied().unwrap_or(GENERAL);
                if wanted != from {
                    self.move_domain(d, wanted);
                }
            }
            let q = self.domain(d).queue;
            let stale = q != from || before[q] != self.queues[q].generation;
            if stale && self.pool(d).site.is_some() {
                // What makes its site may have changed with the settings.
                self.leave_site(d);
            }
            self.fit_controller(d);
            self.send_away_idle(d, stale, acts);
            self.dispatch(d, now, acts);
        }
    }

    /// Takes the general queue's and the specific queues' settings and
    /// domains from `config`.
    fn set_queues(&mut self, config: &Config) {
        self.policy = config.scheduler.policy;
        self.update(GENERAL, &config.general_queue, Vec::new());
        let mut specific = HashMap::new();
        let mut serving = vec![false; self.queues.len()];
        for q in &config.queues {
            let found = self
                .queues
                .iter()
                .enumerate()
                .skip(1)
                .find(|(_, x)| x.relay.is_none() && *x.name == *q.name)
                .map(|(i, _)| i);
            let mx = q.mx_addrs(config.delivery_port).unwrap_or_default();
            let idx = match found {
                Some(i) => {
                    self.update(i, &q.limits, mx);
                    i
                }
                None => {
                    self.queues.push(Queue::new(&q.name, q.limits.clone(), mx));
                    serving.push(false);
                    self.queues.len() - 1
                }
            };
            serving[idx] = true;
            for d in &q.domains {
                // The config loader refuses names that have no key.
                if let Ok(key) = volley_units::domain::routing_key(d.trim()) {
                    specific.insert(key, idx);
                }
            }
        }
        for (i, q) in self.queues.iter_mut().enumerate().skip(1) {
            if q.relay.is_none() {
                q.retired = !serving[i];
            }
        }
        self.specific = specific;
    }

    /// New settings and hosts for queue `q`. A new generation when the
    /// hosts differ or a setting that a connection reads when it opens
    /// (timeouts, TLS, messages per connection); the limits the queue map
    /// reads at each decision apply without one.
    pub(super) fn update(&mut self, q: usize, settings: &QueueSettings, fixed_mx: Vec<SocketAddr>) {
        let queue = &mut self.queues[q];
        if *queue.settings == *settings && *queue.fixed_mx == *fixed_mx {
            return;
        }
        if *queue.fixed_mx != *fixed_mx || opened_with(&queue.settings) != opened_with(settings) {
            queue.generation += 1;
        }
        queue.settings = Arc::new(settings.clone());
        queue.fixed_mx = fixed_mx.into();
    }

    fn move_domain(&mut self, d: DomainId, to: usize) {
        // A site is of one queue: the domain leaves it, and joins the
        // new queue's site after its next lookup.
        if self.pool(d).site.is_some() {
            self.leave_site(d);
        }
        let dom = self.domains[d].as_mut().expect("live domain");
        let from = dom.queue;
        let recipients = dom.depth();
        let conns = dom.conns;
        dom.queue = to;
        dom.hinted = false;
        self.queues[from].queued -= recipients;
        self.queues[from].open -= conns;
        let queue = &mut self.queues[to];
        queue.queued += recipients;
        queue.open += conns;
        queue.peak_open = queue.peak_open.max(queue.open);
    }

    /// The domain's controller under its queue's rate settings; none when
    /// the queue is static.
    fn fit_controller(&mut self, d: DomainId) {
        let q = self.domain(d).queue;
        let settings = self.queues[q].settings.clone();
        let pool = self.pool_mut(d);
        match (&mut pool.rate, settings.adaptive) {
            (Some(c), true) => c.set_settings(&settings.rate),
            (Some(_), false) => pool.rate = None,
            (None, _) => {}
        }
    }

    /// Asks the idle connections of `d` to quit: all of them when `stale`
    /// (opened under other settings), else those over its limit.
    fn send_away_idle(&mut self, d: DomainId, stale: bool, acts: &mut Vec<Action>) {
        let limit = self.conn_limit(d);
        let idle: Vec<_> = self.pool(d).ready.iter().copied().collect();
        let mut conns = self.pool(d).conns;
        for c in idle {
            if stale || conns > limit {
                self.forget_idle(c);
                acts.push(Action::Evict(c));
                conns -= 1;
            }
        }
    }
}

/// `s` less what the queue map reads at each decision: what a connection
/// keeps from when it opened.
fn opened_with(s: &QueueSettings) -> QueueSettings {
    QueueSettings {
        initial_connections: 0,
        max_connections: 0,
        max_connections_per_domain: 0,
        max_recipients_per_transaction: 0,
        queued_per_connection: 0,
        retry_schedule: Vec::new(),
        max_attempts: 0,
        max_age: Duration::ZERO,
        fallback_relay: None,
        host_down_for: Duration::ZERO,
        adaptive: false,
        rate: RateSettings::default(),
        ..s.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SpecificQueue;
    use crate::message::Node;
    use crate::queues::tests::{config, msg, node};

    fn bulk(mx: &[&str]) -> SpecificQueue {
        let mut limits = QueueSettings {
            adaptive: false,
            ..QueueSettings::default()
        };
        limits.max_recipients_per_transaction = 1;
        SpecificQueue {
            name: "bulk".into(),
            domains: vec!["big.example".into()],
            mx: mx.iter().map(|s| s.to_string()).collect(),
            limits,
        }
    }

    #[test]
    fn a_new_specific_queue_takes_its_domains_recipients_in_order_and_gives_them_back() {
        let general = config(|_| {});
        let mut q = Queues::new(&general);
        let d = q.domain_id("big.example", None);
        let m = msg(3);
        for i in 0..3 {
            q.push(d, Node::new(m.clone(), i));
        }
        let t0 = Instant::now();
        let mut acts = Vec::new();
        q.dispatch(d, t0, &mut acts);
        assert_eq!(acts, vec![Action::Open(d)]);
        assert_eq!(q.queues[GENERAL].open, 1);

        let with_bulk = config(|c| c.queues.push(bulk(&["127.0.0.9:2525"])));
        acts.clear();
        q.reconfigure(&with_bulk, t0, &mut acts);
        let b = q.domain(d).queue;
        assert_ne!(b, GENERAL);
        assert_eq!(&*q.queue(b).name, "bulk");
        assert_eq!(&*q.queue(b).fixed_mx, &["127.0.0.9:2525".parse().unwrap()]);
        assert_eq!((q.queues[b].queued, q.queues[b].open), (3, 1));
        assert_eq!((q.queues[GENERAL].queued, q.queues[GENERAL].open), (0, 0));
        assert_eq!(q.queued(), 3, "nothing lost or added");
        // The new queue sends one recipient per transaction, in order.
        let taken: Vec<Node> = (0..3).flat_map(|_| q.take_batch_of(d)).collect();
        let order: Vec<&str> = taken.iter().map(|n| n.recipient()).collect();
        assert_eq!(order, ["u0@a.example", "u1@a.example", "u2@a.example"]);
        assert!(q.take_batch_of(d).is_empty());
        for n in taken.into_iter().rev() {
            q.requeue(d, n);
        }

        q.reconfigure(&general, t0, &mut acts);
        assert_eq!(q.domain(d).queue, GENERAL, "back when the queue is removed");
        assert!(q.queues[b].retired);
        assert_eq!((q.queues[GENERAL].queued, q.queues[GENERAL].open), (3, 1));
        assert_eq!(q.queues[b].queued, 0);
        q.reconfigure(&with_bulk, t0, &mut acts);
        assert_eq!(
            q.domain(d).queue,
            b,
            "a queue that comes back takes its old place"
        );
    }

    #[test]
    fn a_lowered_limit_sends_idle_connections_away_and_keeps_the_generation() {
        let five = config(|c| c.general_queue.max_connections_per_domain = 5);
        let mut q = Queues::new(&five);
        let d = q.domain_id("a.example", None);
        let t0 = Instant::now();
        for _ in 0..5 {
            q.push(d, node());
        }
        let mut acts = Vec::new();
        q.dom(d).conns = 5;
        q.pool_mut(d).conns = 5;
        q.queues[GENERAL].open = 5;
        for c in 1..=5 {
            q.conn_idle(d, c, t0);
        }
        let two = config(|c| c.general_queue.max_connections_per_domain = 2);
        q.reconfigure(&two, t0, &mut acts);
        let evicted = acts
            .iter()
            .filter(|a| matches!(a, Action::Evict(_)))
            .count();
        assert_eq!(evicted, 3);
        assert_eq!(
            q.queue(GENERAL).generation,
            0,
            "a limit is read at each decision"
        );
    }

    #[test]
    fn changed_timeouts_or_hosts_start_a_generation_and_send_idle_connections_away() {
        let mut q = Queues::new(&config(|c| c.queues.push(bulk(&["127.0.0.9"]))));
        let d = q.domain_id("big.example", None);
        let b = q.domain(d).queue;
        let t0 = Instant::now();
        q.push(d, node());
        let mut acts = Vec::new();
        q.dispatch(d, t0, &mut acts);
        let _ = q.take_batch_of(d);
        q.conn_idle(d, 7, t0);
        acts.clear();
        q.reconfigure(
            &config(|c| c.queues.push(bulk(&["127.0.0.10"]))),
            t0,
            &mut acts,
        );
        assert_eq!(q.queue(b).generation, 1);
        assert!(acts.contains(&Action::Evict(7)));
        let mut slower = bulk(&["127.0.0.10"]);
        slower.limits.command_timeout = Duration::from_secs(9);
        q.reconfigure(&config(|c| c.queues.push(slower)), t0, &mut acts);
        assert_eq!(q.queue(b).generation, 2);
    }
}
