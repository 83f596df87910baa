//! The thread that writes delivery status notifications: it gathers the
//! notes shards hand it (see the `dsn` module for what they decide) by
//! message, and writes one notification per message and batch of
//! outcomes, once the message has no recipient left in the queues or, for
//! one still being tried, a few seconds after its first note. The
//! notification is queued through Volley's own queues, and journaled
//! first in durable mode.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;
use volley_smtp::{BodyType, Mailbox, Ret};

use crate::context::Shared;
use crate::dkim::{self, Signed};
use crate::dlog::{Category, unix_now};
use crate::dsn::{
    Action, Command, DsnInbox, Note, RecipientRequest, RecipientStatus, Report, Returned,
    SenderRequest,
};
use crate::message::Message;
use crate::metrics::bump;

/// How long the notes of a message that still has recipients queued are
/// gathered before its notification goes out anyway.
const GATHER: Duration = Duration::from_secs(5);

/// How often the gathered notes are looked at.
const TICK: Duration = Duration::from_millis(200);

/// How often the record of delay notices sent is cleared of messages
/// that are gone.
const PRUNE: Duration = Duration::from_secs(60);

/// Message ids of notifications: a shard number no shard has, then a
/// sequence.
const DSN_ID_BASE: u64 = 0xffff << 48;

/// The thread that writes notifications.
pub(crate) struct DsnWriter {
    shared: Weak<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl DsnWriter {
    /// Starts the writing thread. It holds the shared state weakly: the
    /// state holds the queue that feeds it.
    pub(crate) fn start(shared: Weak<Shared>, inbox: DsnInbox) -> std::io::Result<DsnWriter> {
        let weak = shared.clone();
        let thread = std::thread::Builder::new()
            .name("volley-dsn".into())
            .spawn(move || Gatherer::new(weak).run(inbox.0))?;
        Ok(DsnWriter {
            shared,
            thread: Some(thread),
        })
    }

    /// Writes what is gathered and waits for the thread to end. Called
    /// once the shards have stopped, so no note comes after.
    pub(crate) fn stop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.dsn.stop_writer();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DsnWriter {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The notes of one message not yet reported.
struct Batch {
    msg: Arc<Message>,
    first: Instant,
    notes: Vec<Note>,
}

struct Gatherer {
    shared: Weak<Shared>,
    batches: HashMap<u64, Batch>,
    /// Recipients already sent a delay notice, per message (one each).
    delay_noticed: HashMap<u64, (Weak<Message>, Vec<u32>)>,
    last_prune: Instant,
    next_id: u64,
}

impl Gatherer {
    fn new(shared: Weak<Shared>) -> Gatherer {
        Gatherer {
            shared,
            batches: HashMap::new(),
            delay_noticed: HashMap::new(),
            last_prune: Instant::now(),
            next_id: 1,
        }
    }

    fn run(mut self, rx: Receiver<Command>) {
        // The batches are looked at once per tick, not once per note: a
        // burst of bounces costs one pass over them per tick.
        let mut last_look = Instant::now();
        loop {
            let got = if self.batches.is_empty() {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(TICK.saturating_sub(last_look.elapsed()))
            };
            match got {
                Ok(Command::Note(n)) => self.add(n),
                Ok(Command::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_look.elapsed() >= TICK {
                self.write_ready(false);
                last_look = Instant::now();
            }
        }
        self.write_ready(true);
    }

    fn add(&mut self, n: Note) {
        let id = n.msg.id;
        if n.action == Action::Delayed {
            let (_, noticed) = self
                .delay_noticed
                .entry(id)
                .or_insert_with(|| (Arc::downgrade(&n.msg), Vec::new()));
            if noticed.contains(&n.rcpt) {
                return;
            }
            noticed.push(n.rcpt);
        }
        let notes = &mut self
            .batches
            .entry(id)
            .or_insert_with(|| Batch {
                msg: n.msg.clone(),
                first: Instant::now(),
                notes: Vec::new(),
            })
            .notes;
        // A recipient delayed, then failed within one batch is reported
        // once, by its last outcome.
        match notes.iter_mut().find(|m| m.rcpt == n.rcpt) {
            Some(earlier) => *earlier = n,
            None => notes.push(n),
        }
    }

    /// Writes the notification of each message whose batch is complete:
    /// no recipient of it is left anywhere but here (only this batch
    /// holds the message), or it waited [`GATHER`]; with `all`, every one.
    fn write_ready(&mut self, all: bool) {
        let now = Instant::now();
        let ready: Vec<u64> = self
            .batches
            .iter()
            .filter(|(_, b)| {
                all || Arc::strong_count(&b.msg) == 1 || now.duration_since(b.first) >= GATHER
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(b) = self.batches.remove(&id) {
                self.write(b);
            }
        }
        if now.duration_since(self.last_prune) >= PRUNE {
            self.delay_noticed.retain(|_, (m, _)| m.strong_count() > 0);
            self.last_prune = now;
        }
    }

    /// Writes, queues and logs one notification.
    fn write(&mut self, b: Batch) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let id = DSN_ID_BASE | self.next_id;
        self.next_id += 1;
        match queue_notification(&shared, id, &b) {
            Ok(()) => {
                if let Some(own) = shared.counters.last() {
                    bump(&own.dsn_sent);
                }
                for n in &b.notes {
                    if n.holds_finish() {
                        b.msg.finished(n.rcpt, false);
                    }
                    log_sent(&shared, id, n);
                }
            }
            Err(why) => {
                let finish_later = shared.durable.is_some();
                tracing::error!(
                    target: "volley",
                    "DSN for message {:016x} to <{}> not queued: {why}{}",
                    b.msg.id,
                    b.msg.sender(),
                    if finish_later {
                        "; its failed recipients stay in the journal and are tried again after a restart"
                    } else {
                        ""
                    }
                );
                if !finish_later {
                    for n in b.notes.iter().filter(|n| n.holds_finish()) {
                        b.msg.finished(n.rcpt, false);
                    }
                }
            }
        }
    }
}

/// Builds the notification for batch `b`, signs it, journals it in
/// durable mode, and hands it to the shard that owns the sender's domain.
fn queue_notification(shared: &Shared, id: u64, b: &Batch) -> Result<(), String> {
    let msg = &b.msg;
    let to = msg.sender();
    let key = Mailbox::parse(to)
        .and_then(|m| m.domain.routing_key())
        .map_err(|e| format!("the sender cannot be routed ({e})"))?;
    let config = shared.config.load();
    let host = config.hostname.as_str();
    let request = SenderRequest::parse(msg.sender_params());
    let now = SystemTime::now();
    let now_unix = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let arrival_unix = now_unix.saturating_sub(msg.received.elapsed().as_secs());
    let recipients: Vec<RecipientStatus> = b
        .notes
        .iter()
        .map(|n| RecipientStatus {
            recipient: msg.recipient(n.rcpt).to_string(),
            original: RecipientRequest::parse(msg.recipient_params(n.rcpt)).orcpt,
            action: n.action,
            status: n.status,
            remote_mta: n.remote_mta.clone(),
            diagnostic: n.reply.clone(),
            last_attempt_unix: n.at_unix,
            retry_until_unix: n.retry_until_unix,
        })
        .collect();
    // A message sent as BINARYMIME cannot travel inside a text report:
    // its header section goes back instead.
    let returned = match request.ret {
        Some(Ret::Full) if msg.body_type() != Some(BodyType::BinaryMime) => Returned::Full,
        _ => Returned::Headers,
    };
    // A templated message's recipient was sent its own message: that one
    // goes back (rendered again: it is the same).
    let original = match b.notes.first() {
        Some(n) if msg.is_templated() => msg
            .content_for(n.rcpt, config.ingest.max_message_size)
            .unwrap_or_default(),
        _ => msg.body.clone(),
    };
    let message_id = format!("<{id:016x}.dsn@{host}>");
    let boundary = format!("{id:016x}/{host}");
    let (mut body, eight_bit) = Report {
        reporting_mta: host,
        to,
        envid: request.envid.as_deref(),
        arrival_unix,
        now_unix,
        message_id: &message_id,
        boundary: &boundary,
        recipients: &recipients,
        original: &original,
        returned,
    }
    .render();
    let keys = shared.dkim.load_full();
    if !keys.is_empty()
        && let Ok(Signed::Headers(mut signatures)) = dkim::sign(&keys, &body)
    {
        signatures.extend_from_slice(&body);
        body = signatures;
    }
    let body = Bytes::from(body);
    let body_type = eight_bit.then_some(BodyType::EightBitMime);
    let mut dsn = Message::new(
        id,
        Instant::now(),
        "",
        &[to.to_string()],
        body.clone(),
        None,
        shared.budget.clone(),
    )
    .declaring(body_type);
    if let Some(durable) = &shared.durable {
        let writer = (id as usize) % durable.writer_count();
        let ticket = durable
            .append_many(
                writer,
                vec![(dsn.journal_sender().to_string(), vec![to.to_string()], body)],
            )
            .pop()
            .ok_or("the journal took no message")?;
        match ticket.blocking_recv() {
            Ok(Ok(seq)) => durable.accepted(writer, &mut dsn, seq),
            Ok(Err(e)) => {
                durable.refused(writer, &e);
                return Err(format!("journal: {e}"));
            }
            Err(_) => return Err("the journal writer stopped".into()),
        }
    }
    let dsn = Arc::new(dsn);
    let kept = shared
        .router
        .hand_off(&dsn, [(0u32, key.into_boxed_str())], None);
    if !kept.is_empty() && shared.durable.is_none() {
        return Err("Volley is stopping".into());
    }
    Ok(())
}

/// The delivery log's (and the event feed's) line for a recipient a
/// notification reported.
#[derive(Serialize)]
struct SentRecord<'a> {
    time: f64,
    message_id: String,
    message_id_header: Option<&'a str>,
    sender: &'a str,
    recipient: &'a str,
    status: &'static str,
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    category: Option<Category>,
    /// Volley's id of the notification message.
    dsn_id: String,
}

fn log_sent(shared: &Shared, dsn_id: u64, n: &Note) {
    let events = shared.events.as_ref();
    if events.is_none() && !shared.dlog.is_on() {
        return;
    }
    let record = SentRecord {
        time: unix_now(),
        message_id: format!("{:016x}", n.msg.id),
        message_id_header: n.msg.header_message_id(),
        sender: n.msg.sender(),
        recipient: n.msg.recipient(n.rcpt),
        status: "dsn_sent",
        action: n.action.as_str(),
        category: n.category,
        dsn_id: format!("{dsn_id:016x}"),
    };
    if let Ok(line) = serde_json::to_string(&record) {
        if let Some(feed) = events {
            feed.offer(line.clone());
        }
        shared.dlog.write_line(line);
    }
}
