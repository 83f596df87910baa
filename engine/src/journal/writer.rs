//! A shard's journal on its own thread: ingest hands a message over and
//! waits on a ticket that resolves once the message is durable (or
//! rejected), without blocking its own event loop on fsync.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::config::JournalConfig;
use super::error::JournalError;
use super::store::{Recovery, ShardJournal};

/// The answer to an append: the message's sequence number once it is
/// durable, or the error that rejected it (answer 452 4.3.1).
pub type AppendResult = Result<u64, Arc<JournalError>>;

/// Resolves when the appended message is durable or rejected. Await it
/// (`.await`) on an async runtime, or `blocking_recv()` on a plain thread.
pub type AppendTicket = oneshot::Receiver<AppendResult>;

enum Command {
    Append {
        sender: String,
        recipients: Vec<String>,
        body: Bytes,
        reply: oneshot::Sender<AppendResult>,
    },
    Finish {
        seq: u64,
        index: u32,
    },
    FinishMany(Vec<(u64, u32)>),
    AppendMany(Vec<(NewMessage, oneshot::Sender<AppendResult>)>),
}

/// A message to append: envelope sender, recipients, body.
pub type NewMessage = (String, Vec<String>, Bytes);

/// A running journal writer thread for one shard. Dropping it commits what
/// is pending and stops the thread.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Option<mpsc::Sender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl JournalWriter {
    /// Opens the journal in `dir` (recovering what is unfinished) and starts
    /// its writer thread.
    pub fn spawn(dir: &Path, config: JournalConfig) -> Result<(Self, Recovery), JournalError> {
        let (journal, recovery) = ShardJournal::open(dir, config)?;
        let (tx, rx) = mpsc::channel();
        let name = format!(
            "journal-{}",
            dir.file_name().map_or("".into(), |n| n.to_string_lossy())
        );
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || run(journal, rx))
            .map_err(|e| JournalError::io("spawn writer thread", dir, e))?;
        Ok((
            JournalWriter {
                tx: Some(tx),
                thread: Some(thread),
            },
            recovery,
        ))
    }

    /// Hands a message to the writer; the ticket resolves once it is on
    /// disk (acknowledge it then) or rejected.
    pub fn append(&self, sender: String, recipients: Vec<String>, body: Bytes) -> AppendTicket {
        let (reply, ticket) = oneshot::channel();
        let cmd = Command::Append {
            sender,
            recipients,
            body,
            reply,
        };
        if let Err(mpsc::SendError(Command::Append { reply, .. })) = self.send(cmd) {
            let _ = reply.send(Err(Arc::new(gone())));
        }
        ticket
    }

    /// [`JournalWriter::append`] for several messages at once (one wake-up
    /// of the writer thread); one ticket each, in order.
    pub fn append_many(&self, messages: Vec<NewMessage>) -> Vec<AppendTicket> {
        let mut tickets = Vec::with_capacity(messages.len());
        let batch = messages
            .into_iter()
            .map(|m| {
                let (reply, ticket) = oneshot::channel();
                tickets.push(ticket);
                (m, reply)
            })
            .collect();
        if let Err(mpsc::SendError(Command::AppendMany(batch))) =
            self.send(Command::AppendMany(batch))
        {
            for (_, reply) in batch {
                let _ = reply.send(Err(Arc::new(gone())));
            }
        }
        tickets
    }

    /// Records that recipient `index` of message `seq` is finished. The
    /// fact is made durable with the next group commit.
    pub fn finish(&self, seq: u64, index: u32) {
        // A writer that is gone has nothing left to record into.
        let _ = self.send(Command::Finish { seq, index });
    }

    /// [`JournalWriter::finish`] for many recipients at once: one wake-up
    /// of the writer thread instead of one each.
    pub fn finish_many(&self, facts: Vec<(u64, u32)>) {
        if !facts.is_empty() {
            let _ = self.send(Command::FinishMany(facts));
        }
    }

    fn send(&self, cmd: Command) -> Result<(), mpsc::SendError<Command>> {
        match &self.tx {
            Some(tx) => tx.send(cmd),
            None => Err(mpsc::SendError(cmd)),
        }
    }
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.tx = None; // the thread sees the channel close, commits, ends
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn gone() -> JournalError {
    JournalError::io(
        "append",
        "",
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, "journal writer stopped"),
    )
}

/// How long the queue must stay empty before appends are committed early.
const GATHER: std::time::Duration = std::time::Duration::from_micros(200);

/// The writer loop: take commands; commit the appended messages once none
/// is queued while one waits (or the oldest has waited `commit_interval`,
/// or enough bytes wait), and answer their tickets; commit the "finished"
/// facts once the oldest has waited `finish_commit_interval`.
///
/// Committing appends as soon as the queue is empty gives natural group
/// commit: under load, appends pile up while an fsync runs and the next
/// commit takes them all; when idle, a lone append is not held back. Facts
/// hold no Composer back, so they wait longer and share fewer fsyncs.
fn run(mut j: ShardJournal, rx: mpsc::Receiver<Command>) {
    let append_wait = j.config().commit_interval;
    let fact_wait = j.config().finish_commit_interval;
    let mut waiting: Vec<(u64, oneshot::Sender<AppendResult>)> = Vec::new();
    let mut oldest_append: Option<Instant> = None;
    let mut oldest_fact: Option<Instant> = None;
    let mut open = true;
    while open || !waiting.is_empty() || oldest_fact.is_some() {
        let mut idle = false;
        let deadline = [
            oldest_append.map(|t| t + append_wait),
            oldest_fact.map(|t| t + fact_wait),
        ]
        .into_iter()
        .flatten()
        .min();
        let cmd = if !open {
            None
        } else if !waiting.is_empty() {
            // A short pause before an idle commit lets the appends of
            // other sessions that are on their way join it.
            let pause = deadline.map_or(GATHER, |d| {
                d.saturating_duration_since(Instant::now()).min(GATHER)
            });
            match rx.recv_timeout(pause) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => {
                    idle = true;
                    None
                }
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else if let Some(at) = deadline {
            match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => {
                    open = false;
                    None
                }
            }
        };
        let now = Instant::now();
        match cmd {
            Some(Command::Append {
                sender,
                recipients,
                body,
                reply,
            }) => append(&mut j, now, (sender, recipients, body), reply, &mut waiting),
            Some(Command::AppendMany(batch)) => {
                for (m, reply) in batch {
                    append(&mut j, now, m, reply, &mut waiting);
                }
            }
            Some(Command::Finish { seq, index }) => {
                finish(&mut j, now, seq, index, &mut oldest_fact);
            }
            Some(Command::FinishMany(facts)) => {
                for (seq, index) in facts {
                    finish(&mut j, now, seq, index, &mut oldest_fact);
                }
            }
            None => {}
        }
        if !waiting.is_empty() {
            oldest_append.get_or_insert(now);
        }
        let appends_due = !waiting.is_empty()
            && (idle
                || !open
                || oldest_append.is_some_and(|t| now >= t + append_wait)
                || j.pending_bytes() >= j.config().commit_bytes);
        if appends_due {
            oldest_append = None;
            match j.commit_bodies(now) {
                Ok(upto) => {
                    for (seq, reply) in waiting.drain(..) {
                        debug_assert!(seq <= upto);
                        let _ = reply.send(Ok(seq));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "journal: commit failed; pending messages rejected");
                    let e = Arc::new(e);
                    for (_, reply) in waiting.drain(..) {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        let facts_due = oldest_fact.is_some_and(|t| !open || now >= t + fact_wait);
        if facts_due {
            match j.commit_progress(now) {
                Ok(()) => oldest_fact = None,
                Err(e) if !open => {
                    tracing::warn!(error = %e, "journal: last finished recipients not recorded");
                    oldest_fact = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "journal: finished recipients not recorded yet; retrying");
                    oldest_fact = Some(now);
                }
            }
        }
        if (appends_due || facts_due)
            && j.checkpoint_due()
            && let Err(e) = j.checkpoint()
        {
            tracing::warn!(error = %e, "journal: checkpoint failed; retrying later");
        }
    }
}

fn append(
    j: &mut ShardJournal,
    now: Instant,
    (sender, recipients, body): NewMessage,
    reply: oneshot::Sender<AppendResult>,
    waiting: &mut Vec<(u64, oneshot::Sender<AppendResult>)>,
) {
    match j.append(now, &sender, &recipients, &body) {
        Ok(seq) => waiting.push((seq, reply)),
        Err(e) => {
            let _ = reply.send(Err(Arc::new(e)));
        }
    }
}

fn finish(j: &mut ShardJournal, now: Instant, seq: u64, index: u32, oldest: &mut Option<Instant>) {
    match j.finish(now, seq, index) {
        Ok(()) => {
            oldest.get_or_insert(now);
        }
        Err(e) => tracing::warn!(error = %e, "journal: finish ignored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_resolve_once_durable_and_facts_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (w, r) = JournalWriter::spawn(dir.path(), JournalConfig::default()).unwrap();
        assert!(r.messages.is_empty());
        let tickets: Vec<AppendTicket> = (0..50)
            .map(|i| {
                w.append(
                    format!("s{i}@x"),
                    vec!["a@y".into(), "b@z".into()],
                    Bytes::from(format!("body {i}")),
                )
            })
            .collect();
        let seqs: Vec<u64> = tickets
            .into_iter()
            .map(|t| t.blocking_recv().unwrap().unwrap())
            .collect();
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        for seq in 1..=49 {
            w.finish(seq, 0);
            w.finish(seq, 1);
        }
        w.finish(50, 1);
        drop(w);

        let (_, r) = ShardJournal::open(dir.path(), JournalConfig::default()).unwrap();
        assert!(r.report.is_clean(), "{}", r.report);
        assert_eq!(r.messages.len(), 1);
        let m = &r.messages[0];
        assert_eq!(
            (m.seq, m.sender.as_str(), &m.body[..]),
            (50, "s49@x", &b"body 49"[..])
        );
        assert_eq!(m.recipients.len(), 1);
        assert_eq!(
            (m.recipients[0].index, m.recipients[0].address.as_str()),
            (0, "a@y")
        );
    }

    #[test]
    fn an_oversize_message_is_rejected_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (w, _) = JournalWriter::spawn(dir.path(), JournalConfig::default()).unwrap();
        let bad = w.append("x".repeat(70_000), vec!["a@b".into()], Bytes::new());
        let good = w.append("s@x".into(), vec!["a@b".into()], Bytes::from_static(b"hi"));
        let e = bad.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(*e, JournalError::TooLarge { .. }));
        assert_eq!(good.blocking_recv().unwrap().unwrap(), 1);
    }
}
