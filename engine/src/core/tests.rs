//! The core's policies on a simulated clock: every `now` below is made up,
//! so retries due in an hour are checked without waiting for one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use volley_smtp::{ClientError, EnhancedCode, Reply};

use super::*;
use crate::config::Config;
use crate::dlog::{Category, Status};
use crate::message::{Budget, Message, SafeReplies};

const SECOND: Duration = Duration::from_secs(1);

/// A static general queue (no rate controller) changed by `f`.
fn config(f: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.general_queue.adaptive = false;
    c.general_queue.retry_schedule = vec![60 * SECOND, 600 * SECOND];
    c.general_queue.max_attempts = 5;
    f(&mut c);
    c
}

fn message(received: Instant, rcpts: usize, safe: Option<SafeReplies>) -> Arc<Message> {
    let r: Vec<String> = (0..rcpts).map(|i| format!("u{i}@a.example")).collect();
    Arc::new(Message::new(
        1,
        received,
        "s@x.example",
        &r,
        Bytes::from_static(b"Subject: t\r\n\r\nhi\r\n"),
        safe,
        Arc::new(Budget::default()),
    ))
}

fn keys(n: usize) -> Vec<(u32, Box<str>)> {
    (0..n as u32).map(|i| (i, "a.example".into())).collect()
}

fn reply(code: u16, class: u8, subject: u16, detail: u16, text: &str) -> Reply {
    Reply::new(code, EnhancedCode::new(class, subject, detail), text)
}

/// A core holding `n` recipients of one message for a.example, with the
/// connection it asked for "open"; returns the core and the domain.
fn queued(c: Config, n: usize, t0: Instant, safe: Option<SafeReplies>) -> (Core, DomainId) {
    let mut core = Core::new(0, &c).expect("core");
    core.accept(&message(t0, n, safe), &keys(n), t0);
    let acts = core.take_actions();
    let [Action::Open(d)] = acts[..] else {
        panic!("expected one Open, got {acts:?}");
    };
    (core, d)
}

/// Takes one recipient and settles it with `r` at `now`.
fn attempt(core: &mut Core, d: DomainId, r: &Reply, now: Instant) -> Settled {
    let mut batch = core.take_batch(d, Instant::now()).1;
    assert_eq!(batch.len(), 1, "one recipient pending");
    core.settle(d, batch.remove(0), r, None, now)
}

#[test]
fn a_deferred_recipient_follows_the_retry_schedule_and_comes_back_when_due() {
    let t0 = Instant::now();
    let (mut core, d) = queued(config(|_| {}), 1, t0, None);
    let busy = reply(451, 4, 2, 1, "mailbox busy");

    let s = attempt(&mut core, d, &busy, t0);
    assert_eq!(s.status, Status::Deferred);
    assert_eq!(s.attempt, 1);
    assert_eq!(
        s.verdict,
        Verdict::Retry {
            due: t0 + 60 * SECOND
        }
    );
    assert_eq!(core.poll_timeout(), Some(t0 + 60 * SECOND));
    assert_eq!(core.queued(), 1, "still Volley's to deliver");

    core.handle_timeout(t0 + 59 * SECOND);
    assert!(!core.has_pending(d), "not due yet");
    core.handle_timeout(t0 + 60 * SECOND);
    assert!(core.has_pending(d), "due: back in its queue");
    assert_eq!(core.poll_timeout(), None);

    // The second attempt waits the schedule's second delay, the third
    // (past the end of the schedule) its last.
    let t1 = t0 + 61 * SECOND;
    let s = attempt(&mut core, d, &busy, t1);
    assert_eq!(s.attempt, 2);
    assert_eq!(
        s.verdict,
        Verdict::Retry {
            due: t1 + 600 * SECOND
        }
    );
    core.handle_timeout(t1 + 600 * SECOND);
    let t2 = t1 + 601 * SECOND;
    let s = attempt(&mut core, d, &busy, t2);
    assert_eq!(
        s.verdict,
        Verdict::Retry {
            due: t2 + 600 * SECOND
        }
    );
}

#[test]
fn a_recipient_expires_after_max_attempts() {
    let t0 = Instant::now();
    let (mut core, d) = queued(config(|c| c.general_queue.max_attempts = 2), 1, t0, None);
    let busy = reply(451, 4, 3, 0, "temporary failure");
    attempt(&mut core, d, &busy, t0);
    core.handle_timeout(t0 + 60 * SECOND);
    let s = attempt(&mut core, d, &busy, t0 + 61 * SECOND);
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.verdict, Verdict::Final);
    assert_eq!(s.category, Some(Category::Other));
    assert_eq!(core.queued(), 0);
    assert_eq!(core.poll_timeout(), None);
}

#[test]
fn a_recipient_expires_by_age_whatever_its_attempts() {
    let t0 = Instant::now();
    let (mut core, d) = queued(
        config(|c| c.general_queue.max_age = Duration::from_secs(3600)),
        1,
        t0,
        None,
    );
    let s = attempt(
        &mut core,
        d,
        &reply(451, 4, 4, 1, "no answer"),
        t0 + 3601 * SECOND,
    );
    assert_eq!(s.attempt, 1);
    assert_eq!(s.status, Status::Expired);
    assert_eq!(s.age, 3601 * SECOND);
}

#[test]
fn permanent_and_positive_replies_are_final_at_once() {
    let t0 = Instant::now();
    let (mut core, d) = queued(config(|_| {}), 2, t0, None);
    let mut batch = core.take_batch(d, Instant::now()).1;
    assert_eq!(batch.len(), 2);
    let unknown = reply(550, 5, 1, 1, "no such user");
    let s = core.settle(d, batch.remove(0), &unknown, None, t0);
    assert_eq!((s.status, s.verdict), (Status::Bounced, Verdict::Final));
    assert_eq!(s.category, Some(Category::BadMailbox));
    let ok = reply(250, 2, 0, 0, "ok");
    let s = core.settle(d, batch.remove(0), &ok, None, t0);
    assert_eq!((s.status, s.verdict), (Status::Delivered, Verdict::Final));
    assert_eq!(s.category, None);
    assert_eq!(s.rcpt, 1);
    assert_eq!(core.queued(), 0);
}

#[test]
fn a_recipient_given_up_on_goes_to_the_fallback_relay_with_fresh_attempts() {
    let t0 = Instant::now();
    let relay: std::net::SocketAddr = "127.0.0.9:2525".parse().unwrap();
    let c = config(|c| {
        c.general_queue.max_attempts = 1;
        c.general_queue.fallback_relay = Some(relay);
    });
    let (mut core, d) = queued(c, 1, t0, None);
    let s = attempt(&mut core, d, &reply(451, 4, 4, 1, "no answer"), t0);
    assert_eq!(s.status, Status::Deferred);
    assert_eq!(s.verdict, Verdict::Fallback);
    assert!(s.text.contains("fallback relay"), "{}", s.text);
    assert_eq!(core.queued(), 1, "still queued, in the fallback queue");

    let acts = core.take_actions();
    let [Action::Open(fd)] = acts[..] else {
        panic!("expected an Open for the fallback queue, got {acts:?}");
    };
    assert_ne!(fd, d);
    let route = core.route(fd);
    assert_eq!(&*route.name, "a.example");
    assert_eq!(&route.fixed[..], &[relay]);
    assert_eq!(
        route.settings.fallback_relay, None,
        "no fallback of the fallback"
    );
    let node = core.take_batch(fd, Instant::now()).1.remove(0);
    assert_eq!(node.attempts, 0);
}

#[test]
fn a_throttled_recipient_is_requeued_a_few_times_then_settled() {
    let t0 = Instant::now();
    let (mut core, d) = queued(config(|_| {}), 1, t0, None);
    for _ in 0..MAX_THROTTLE_REQUEUES {
        let node = core.take_batch(d, Instant::now()).1.remove(0);
        assert!(core.requeue_throttled(d, node, true).is_none());
        assert!(core.has_pending(d), "back at the head of its queue");
    }
    let node = core.take_batch(d, Instant::now()).1.remove(0);
    let node = core
        .requeue_throttled(d, node, true)
        .expect("settled as usual after the last requeue");
    assert_eq!(node.throttled, 0, "the count starts over");
    assert_eq!(node.attempts, 0, "requeues are not attempts");
    let s = core.settle(d, node, &reply(451, 4, 7, 1, "slow down"), None, t0);
    assert!(matches!(s.verdict, Verdict::Retry { .. }));
    // An unthrottled reply settles at once.
    core.handle_timeout(t0 + 60 * SECOND);
    let node = core.take_batch(d, Instant::now()).1.remove(0);
    assert!(core.requeue_throttled(d, node, false).is_some());
}

#[test]
fn a_failed_host_is_left_alone_for_host_down_for() {
    let t0 = Instant::now();
    let c = config(|c| c.general_queue.host_down_for = 30 * SECOND);
    let (mut core, d) = queued(c, 1, t0, None);
    let mx1: std::net::SocketAddr = "127.0.0.2:25".parse().unwrap();
    let mx2: std::net::SocketAddr = "127.0.0.3:25".parse().unwrap();
    core.mark_host_down(d, mx1, t0);
    assert!(core.is_host_down(mx1, t0 + 29 * SECOND));
    assert!(!core.is_host_down(mx2, t0), "the next MX host is tried");
    assert!(!core.is_host_down(mx1, t0 + 30 * SECOND));
}

#[test]
fn a_failed_connection_reopens_unless_others_carry_the_work() {
    let t0 = Instant::now();
    let c = config(|c| {
        c.general_queue.initial_connections = 2;
        c.general_queue.max_connections_per_domain = 2;
    });
    let mut core = Core::new(0, &c).unwrap();
    core.accept(&message(t0, 4, None), &keys(4), t0);
    let acts = core.take_actions();
    assert_eq!(acts.len(), 2, "two connections: {acts:?}");
    let Action::Open(d) = acts[0] else {
        panic!("{acts:?}")
    };
    let unreachable = reply(451, 4, 4, 1, "no MX host answered");

    // One of two failed after trying a host: the other carries the work.
    let (reopen, settled) = core.open_failed(d, true, &unreachable, Category::Connection, t0);
    assert!(!reopen);
    assert!(settled.is_empty());
    core.conn_ended(d, false, t0);
    assert!(core.take_actions().is_empty(), "no replacement opened");

    // The last one failed: the pending recipients are deferred, and the
    // slot is not reopened for an empty queue.
    let (reopen, settled) = core.open_failed(d, true, &unreachable, Category::Connection, t0);
    assert!(reopen);
    assert_eq!(settled.len(), 4);
    assert!(
        settled
            .iter()
            .all(|s| s.category == Some(Category::Connection))
    );
    core.conn_ended(d, true, t0);
    assert!(core.take_actions().is_empty());

    // Due again: the queue opens its initial connections for them.
    core.handle_timeout(t0 + 60 * SECOND);
    assert_eq!(core.take_actions(), vec![Action::Open(d), Action::Open(d)]);
    // One ends (its task died, say) with the work untouched: reopened.
    core.conn_ended(d, true, t0 + 61 * SECOND);
    assert_eq!(core.take_actions(), vec![Action::Open(d)]);
}

#[test]
fn a_safe_mode_recipient_deferred_goes_back_to_its_composer() {
    let t0 = Instant::now();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut core, d) = queued(config(|_| {}), 1, t0, Some(tx));
    let s = attempt(&mut core, d, &reply(451, 4, 2, 1, "busy"), t0);
    assert_eq!(s.status, Status::Deferred);
    assert_eq!(s.verdict, Verdict::ReturnedToComposer);
    assert_eq!(core.queued(), 0, "the Composer keeps it");
    assert_eq!(core.poll_timeout(), None, "nobody here retries it");
}

#[test]
fn once_the_safe_mode_composer_was_answered_a_deferral_is_retried_here() {
    let t0 = Instant::now();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut core = Core::new(0, &config(|_| {})).expect("core");
    let msg = message(t0, 1, Some(tx));
    msg.composer_answered();
    core.accept(&msg, &keys(1), t0);
    let [Action::Open(d)] = core.take_actions()[..] else {
        panic!("expected one Open");
    };
    let s = attempt(&mut core, d, &reply(451, 4, 2, 1, "busy"), t0);
    assert_eq!(s.status, Status::Deferred);
    assert!(
        matches!(s.verdict, Verdict::Retry { .. }),
        "{:?}",
        s.verdict
    );
    assert_eq!(core.queued(), 1, "Volley keeps it");
}

#[test]
fn a_suspended_domain_opens_again_when_its_controller_allows() {
    let t0 = Instant::now();
    let c = config(|c| c.general_queue.adaptive = true);
    let (mut core, d) = queued(c, 3, t0, None);
    // The only connection was refused at the greeting with a throttling
    // reply: the domain pauses instead of deferring its recipients.
    let refused = ClientError::GreetingRejected {
        reply: reply(421, 4, 7, 0, "too many connections, slow down"),
    };
    assert!(core.session_failed(d, &refused, t0));
    core.open_throttled(d, t0);
    core.conn_ended(d, true, t0);
    assert!(core.take_actions().is_empty(), "suspended: nothing opens");
    let resume = core.poll_timeout().expect("a resume time");
    assert!(resume > t0);
    core.handle_timeout(resume - Duration::from_millis(1));
    assert!(core.take_actions().is_empty());
    core.handle_timeout(resume);
    assert_eq!(core.take_actions(), vec![Action::Open(d)]);
    assert_eq!(core.queued(), 3, "nobody was deferred");
}

#[test]
fn the_deadline_is_the_earliest_of_retries_and_resumes() {
    let t0 = Instant::now();
    let c = config(|c| c.general_queue.adaptive = true);
    let mut core = Core::new(0, &c).unwrap();
    core.accept(&message(t0, 1, None), &[(0, "a.example".into())], t0);
    core.accept(&message(t0, 1, None), &[(0, "b.example".into())], t0);
    let acts = core.take_actions();
    let [Action::Open(a), Action::Open(b)] = acts[..] else {
        panic!("{acts:?}")
    };
    let s = attempt(&mut core, a, &reply(451, 4, 2, 1, "busy"), t0);
    let Verdict::Retry { due } = s.verdict else {
        panic!("{:?}", s.verdict)
    };
    assert_eq!(core.poll_timeout(), Some(due));
    let refused = ClientError::GreetingRejected {
        reply: reply(421, 4, 7, 0, "too many connections"),
    };
    core.session_failed(b, &refused, t0);
    core.open_throttled(b, t0);
    core.conn_ended(b, true, t0);
    let resume = core.poll_timeout().unwrap();
    assert!(resume < due, "the suspension ends first");
}

#[test]
fn a_domain_whose_site_another_shard_holds_moves_there_with_its_attempts() {
    let t0 = Instant::now();
    let one_per_transaction = config(|c| c.general_queue.max_recipients_per_transaction = 1);
    let (mut core, d) = queued(one_per_transaction, 3, t0, None);
    let hosts = [SiteHost {
        name: "mx.provider.example",
        addr: "10.0.0.1".parse().unwrap(),
    }];
    let SiteVerdict::Claim(key) = core.find_site(d, false, &hosts) else {
        panic!("a new site is claimed");
    };
    // One recipient failed once and waits for its retry; one is in a
    // transaction (it finishes here); one waits for a connection.
    let first = core.take_batch(d, t0).1.pop().unwrap();
    let deferred = core.settle(d, first, &reply(451, 4, 3, 0, "later"), None, t0);
    assert!(matches!(deferred.verdict, Verdict::Retry { .. }));
    let node = core.take_batch(d, t0).1.pop().unwrap();
    assert_eq!(core.settle_site(d, key.clone(), 1), SiteVerdict::Stop);
    let moving = core.take_moving();
    assert_eq!(moving.len(), 1);
    let (shard, moved) = &moving[0];
    assert_eq!(
        (*shard, &*moved.key, moved.nodes.len()),
        (1, "a.example", 2)
    );
    let attempts: Vec<u16> = moved.nodes.iter().map(|n| n.attempts).collect();
    assert_eq!(attempts, [1, 0], "the retry first, with its attempt");
    assert_eq!(core.queued(), 1, "the one in flight stays");
    let settled = core.settle(d, node, &reply(250, 2, 0, 0, "ok"), None, t0);
    assert_eq!(settled.verdict, Verdict::Final);
    // What arrives later for the domain follows it.
    core.accept(&message(t0, 1, None), &keys(1), t0);
    assert_eq!(core.take_moving()[0].1.nodes.len(), 1);
    assert_eq!(core.queued(), 0);
    // The shard that holds the site queues them and sends them from there.
    let mut other = Core::new(1, &config(|_| {})).expect("core");
    let (_, moved) = moving.into_iter().next().unwrap();
    other.adopt(moved, t0);
    assert_eq!(other.queued(), 2);
    assert!(matches!(other.take_actions()[..], [Action::Open(_)]));
}

/// A core whose general queue gives up after `max_age` of 1 h.
fn aging() -> Config {
    config(|c| c.general_queue.max_age = 3600 * SECOND)
}

fn expired_statuses(core: &mut Core, now: Instant) -> Vec<Status> {
    core.expire(now).0.into_iter().map(|s| s.status).collect()
}

#[test]
fn a_recipient_waiting_for_a_connection_expires_at_its_max_age() {
    let t0 = Instant::now();
    let (mut core, _) = queued(aging(), 2, t0, None);
    let at = t0 + 3600 * SECOND + EXPIRY_GRACE;
    assert!(expired_statuses(&mut core, at - SECOND).is_empty());
    let expired = core.expire(at).0;
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|s| s.status == Status::Expired));
    assert_eq!(core.queued(), 0);
}

#[test]
fn a_deferred_recipients_last_attempt_comes_at_its_max_age_not_after() {
    let t0 = Instant::now();
    let c = config(|c| {
        c.general_queue.max_age = 3600 * SECOND;
        c.general_queue.retry_schedule = vec![3000 * SECOND];
    });
    let (mut core, d) = queued(c, 1, t0, None);
    let node = core.take_batch(d, t0).1.pop().unwrap();
    let at = t0 + 1000 * SECOND;
    let s = core.settle(d, node, &reply(451, 4, 3, 0, "later"), None, at);
    assert!(
        matches!(s.verdict, Verdict::Retry { due } if due == t0 + 3600 * SECOND),
        "due at its max age, not at 4000 s: {:?}",
        s.verdict
    );
    core.handle_timeout(t0 + 3600 * SECOND);
    let node = core.take_batch(d, t0 + 3600 * SECOND).1.pop().unwrap();
    let last = core.settle(
        d,
        node,
        &reply(451, 4, 3, 0, "still later"),
        None,
        t0 + 3600 * SECOND,
    );
    assert_eq!(last.status, Status::Expired);
    assert!(
        last.text.contains("still later"),
        "the receiver's reply: {}",
        last.text
    );
}

#[test]
fn recipients_of_a_suspended_domain_or_site_expire_on_time() {
    let t0 = Instant::now();
    let c = config(|c| {
        c.general_queue.max_age = 3600 * SECOND;
        c.general_queue.adaptive = true;
    });
    let at = t0 + 3600 * SECOND + EXPIRY_GRACE;
    // An operator's suspension for a day.
    let mut core = Core::new(0, &c).expect("core");
    core.suspend("a.example", 86400 * SECOND, "asked".into(), t0);
    core.accept(&message(t0, 1, None), &keys(1), t0);
    assert!(core.take_actions().is_empty(), "held: no connection");
    assert_eq!(expired_statuses(&mut core, at), [Status::Expired]);
    // The pace's suspension of a site after a refusal.
    let (mut core, d) = queued(c, 1, t0, None);
    let refused = ClientError::GreetingRejected {
        reply: reply(421, 4, 7, 0, "too many connections"),
    };
    assert!(core.session_failed(d, &refused, t0));
    core.open_throttled(d, t0);
    assert_eq!(expired_statuses(&mut core, at), [Status::Expired]);
}

#[test]
fn a_composer_waiting_in_safe_mode_is_answered_by_the_attempt_not_the_scan() {
    let t0 = Instant::now();
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut core, _) = queued(aging(), 1, t0, Some(tx));
    assert!(expired_statuses(&mut core, t0 + 7200 * SECOND).is_empty());
    assert_eq!(core.queued(), 1);
}
