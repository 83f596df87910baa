//! A shard's journal on its own thread: ingest hands a message over and
//! waits on a ticket that resolves once the message is durable (or
//! rejected), without blocking its own event loop on fsync.

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::commits::{CommitCounters, CommitStats};
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
    /// Messages to append, each with the sender of its ticket.
    Append(Vec<(NewMessage, oneshot::Sender<AppendResult>)>),
    /// The fact inbox was empty and is not any more: its commit is due one
    /// `finish_commit_interval` from now.
    FactsWaiting,
}

/// A message to append: envelope sender, recipients, body.
pub type NewMessage = (String, Vec<String>, Bytes);

/// "Recipient `index` of message `seq` finished" facts not yet taken by
/// the writer thread.
type FactInbox = Arc<Mutex<Vec<(u64, u32)>>>;

/// A running journal writer thread for one shard. Dropping it commits what
/// is pending and stops the thread.
#[derive(Debug)]
pub struct JournalWriter {
    tx: Option<mpsc::Sender<Command>>,
    /// Facts wait here, not in the channel: the thread takes them all at
    /// once when their commit is due, so a stream of finished recipients
    /// wakes it about twice per commit instead of once per batch.
    facts: FactInbox,
    thread: Option<JoinHandle<()>>,
    commits: Arc<CommitCounters>,
}

impl JournalWriter {
    /// Opens the journal in `dir` (recovering what is unfinished) and starts
    /// its writer thread.
    pub fn spawn(dir: &Path, config: JournalConfig) -> Result<(Self, Recovery), JournalError> {
        let (journal, recovery) = ShardJournal::open(dir, config)?;
        let (tx, rx) = mpsc::channel();
        let facts = FactInbox::default();
        let name = format!(
            "journal-{}",
            dir.file_name().map_or("".into(), |n| n.to_string_lossy())
        );
        let inbox = facts.clone();
        let commits = Arc::new(CommitCounters::default());
        let counted = commits.clone();
        let thread = thread::Builder::new()
            .name(name)
            .spawn(move || Writer::new(journal, inbox, counted).run(rx))
            .map_err(|e| JournalError::io("spawn writer thread", dir, e))?;
        Ok((
            JournalWriter {
                tx: Some(tx),
                facts,
                thread: Some(thread),
                commits,
            },
            recovery,
        ))
    }

    /// Hands a message to the writer; the ticket resolves once it is on
    /// disk (acknowledge it then) or rejected.
    pub fn append(&self, sender: String, recipients: Vec<String>, body: Bytes) -> AppendTicket {
        let mut tickets = self.append_many(vec![(sender, recipients, body)]);
        tickets.pop().expect("one ticket per message")
    }

    /// [`JournalWriter::append`] for several messages at once (one wake-up
    /// of the writer thread at most); one ticket each, in order.
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
        if let Err(mpsc::SendError(Command::Append(batch))) = self.send(Command::Append(batch)) {
            for (_, reply) in batch {
                let _ = reply.send(Err(Arc::new(gone())));
            }
        }
        tickets
    }

    /// Records that recipient `index` of message `seq` is finished. The
    /// fact is made durable with the next group commit of facts.
    pub fn finish(&self, seq: u64, index: u32) {
        let first = {
            let mut inbox = self.facts.lock();
            inbox.push((seq, index));
            inbox.len() == 1
        };
        if first {
            // A writer that is gone has nothing left to record into.
            let _ = self.send(Command::FactsWaiting);
        }
    }

    /// What this writer's group commits have cost so far.
    pub fn commit_stats(&self) -> CommitStats {
        self.commits.read()
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

/// The pause before an append is committed: if nothing else came during
/// it, the commit starts; if more came, the writer pauses again, up to
/// `commit_interval` after the oldest.
const GATHER: Duration = Duration::from_micros(200);

/// The writer thread's state.
///
/// Appends are committed once a [`GATHER`] pause passes with nothing new,
/// once the oldest has waited `commit_interval`, or once enough bytes wait,
/// and their tickets are then answered; facts once the oldest has waited
/// `finish_commit_interval`. Under load, appends pile up while an fsync
/// runs and the next commit takes them all (group commit); when idle, a
/// lone append is held back one pause.
///
/// The thread sleeps out a pause instead of waiting on the channel, and
/// drains the channel whole on each wake-up: appends arriving meanwhile
/// cost it no wake-up each, so a commit costs at most
/// `commit_interval / GATHER` wake-ups however many sessions send to it.
/// Wake-ups, more than writing, are what a durable run spends its extra
/// CPU on.
struct Writer {
    j: ShardJournal,
    inbox: FactInbox,
    gather: Duration,
    append_wait: Duration,
    fact_wait: Duration,
    waiting: Vec<(u64, oneshot::Sender<AppendResult>)>,
    oldest_append: Option<Instant>,
    oldest_fact: Option<Instant>,
    open: bool,
    commits: Arc<CommitCounters>,
}

impl Writer {
    fn new(j: ShardJournal, inbox: FactInbox, commits: Arc<CommitCounters>) -> Self {
        Writer {
            gather: GATHER.min(j.config().commit_interval),
            append_wait: j.config().commit_interval,
            fact_wait: j.config().finish_commit_interval,
            j,
            inbox,
            waiting: Vec::new(),
            oldest_append: None,
            oldest_fact: None,
            open: true,
            commits,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while self.open || !self.waiting.is_empty() || self.oldest_fact.is_some() {
            let mut quiet = false;
            if self.open {
                let paused = self.wait(&rx);
                let appends = self.drain(&rx);
                quiet = paused && appends == 0;
            }
            let now = Instant::now();
            let appends_due = self.oldest_append.is_some_and(|t| {
                !self.open
                    || quiet
                    || now >= t + self.append_wait
                    || self.j.pending_bytes() >= self.j.config().commit_bytes
            });
            if appends_due {
                self.commit_appends(now);
            }
            let facts_due = self
                .oldest_fact
                .is_some_and(|t| !self.open || now >= t + self.fact_wait);
            if facts_due {
                self.commit_facts(now);
            }
            if (appends_due || facts_due)
                && self.j.checkpoint_due()
                && let Err(e) = self.j.checkpoint()
            {
                tracing::warn!(error = %e, "journal: checkpoint failed; retrying later");
            }
        }
    }

    /// Waits until a command comes or a commit may be due; true when it
    /// slept out a whole gathering pause (appends were waiting).
    fn wait(&mut self, rx: &mpsc::Receiver<Command>) -> bool {
        let now = Instant::now();
        let fact_at = self.oldest_fact.map(|t| t + self.fact_wait);
        if let Some(oldest) = self.oldest_append {
            let append_at = (now + self.gather).min(oldest + self.append_wait);
            let at = fact_at.map_or(append_at, |f| f.min(append_at));
            let pause = at.saturating_duration_since(now);
            if !pause.is_zero() {
                thread::sleep(pause);
            }
            // Cut short for the facts: not a whole pause.
            return at == append_at;
        }
        let got = match fact_at {
            // Only facts wait: an append must still wake the thread.
            Some(at) => match rx.recv_timeout(at.saturating_duration_since(now)) {
                Ok(c) => Some(c),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.open = false;
                    None
                }
            },
            None => match rx.recv() {
                Ok(c) => Some(c),
                Err(_) => {
                    self.open = false;
                    None
                }
            },
        };
        if let Some(c) = got {
            self.take(c);
        }
        false
    }

    /// Takes every command already queued; returns how many were appends.
    fn drain(&mut self, rx: &mpsc::Receiver<Command>) -> usize {
        let mut appends = 0;
        loop {
            match rx.try_recv() {
                Ok(c) => {
                    appends += usize::from(matches!(c, Command::Append(_)));
                    self.take(c);
                }
                Err(TryRecvError::Empty) => return appends,
                Err(TryRecvError::Disconnected) => {
                    self.open = false;
                    return appends;
                }
            }
        }
    }

    fn take(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Append(batch) => {
                for ((sender, recipients, body), reply) in batch {
                    match self.j.append(now, &sender, &recipients, &body) {
                        Ok(seq) => self.waiting.push((seq, reply)),
                        Err(e) => {
                            let _ = reply.send(Err(Arc::new(e)));
                        }
                    }
                }
                if !self.waiting.is_empty() {
                    self.oldest_append.get_or_insert(now);
                }
            }
            Command::FactsWaiting => {
                self.oldest_fact.get_or_insert(now);
            }
        }
    }

    fn commit_appends(&mut self, now: Instant) {
        self.oldest_append = None;
        let started = Instant::now();
        let committed = self.j.commit_bodies(now);
        self.commits.record(started.elapsed(), committed.is_ok());
        match committed {
            Ok(upto) => {
                for (seq, reply) in self.waiting.drain(..) {
                    debug_assert!(seq <= upto);
                    let _ = reply.send(Ok(seq));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "journal: commit failed; pending messages rejected");
                let e = Arc::new(e);
                for (_, reply) in self.waiting.drain(..) {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn commit_facts(&mut self, now: Instant) {
        let facts = std::mem::take(&mut *self.inbox.lock());
        for (seq, index) in facts {
            if let Err(e) = self.j.finish(now, seq, index) {
                tracing::warn!(error = %e, "journal: finish ignored");
            }
        }
        let started = Instant::now();
        let committed = self.j.commit_progress(now);
        self.commits.record(started.elapsed(), committed.is_ok());
        match committed {
            Ok(()) => self.oldest_fact = None,
            Err(e) if !self.open => {
                tracing::warn!(error = %e, "journal: last finished recipients not recorded");
                self.oldest_fact = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "journal: finished recipients not recorded yet; retrying");
                self.oldest_fact = Some(now);
            }
        }
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
