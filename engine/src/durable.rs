//! Durable mode in the engine: the glue between the shards and the journal.
//!
//! - One [`JournalWriter`] per shard directory. A fast-mode message is
//!   appended by the shard whose ingest took it, and acknowledged once its
//!   ticket says it is on disk ([`Durable::append_many`], [`Durable::accepted`]);
//!   the session holds its 250 back meanwhile (`ingest::held`).
//! - The message carries its writer, sequence number and (after a restart)
//!   the original index of each recipient ([`Journaled`]); a final outcome
//!   sends `finish(seq, index)` to that writer, from whichever shard
//!   delivered it (the fact goes into the writer's inbox, which the writer
//!   takes whole at its next commit of facts).
//! - On start, each shard directory is recovered and only its unfinished
//!   recipients are queued again ([`requeue`]).
//! - The sending quota: a persisted count of delivered messages, flushed in
//!   batches by its own thread, checked at `MAIL FROM`.
//!
//! Safe-mode messages are not journaled: their Composer keeps the
//! responsibility until it has the final reply, so a crash loses nothing it
//! was told about.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use volley_smtp::{EnhancedCode, Mailbox, Reply};

use crate::address_line::address_of;
use crate::config::JournalSettings;
use crate::journal::{
    AppendTicket, JournalError, JournalWriter, NewMessage, QuotaExceeded, QuotaLimits, SendQuota,
    shard_dir,
};
use crate::message::{Budget, FinishRecord, Message};
use crate::routing::Router;
use crate::template::TemplateCache;

/// The wall clock the quota's days are counted by. [`Engine::start`]
/// uses the system clock; tests pass their own to move the date.
///
/// [`Engine::start`]: crate::Engine::start
pub type WallClock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// How often delivered messages are added to the persisted count. A crash
/// can lose at most this much of the count (it under-counts, never over).
const QUOTA_FLUSH: Duration = Duration::from_millis(100);

/// Journal message ids have this bit set, so they never collide with the
/// in-memory ids of safe-mode messages; they stay the same across restarts.
const JOURNAL_ID: u64 = 1 << 47;

/// Durable mode's engine-wide state: the writers and the quota.
pub(crate) struct Durable {
    writers: Vec<JournalWriter>,
    quota: Quota,
}

/// What opening the journal gave: the state, and each shard directory's
/// recovered messages.
pub(crate) struct Opened {
    pub(crate) durable: Arc<Durable>,
    pub(crate) recovered: Vec<crate::journal::Recovery>,
}

/// Opens every shard directory under `settings.dir` (at least `shards`,
/// more when an earlier run had more shards: their unfinished messages are
/// recovered too) and the quota counter.
pub(crate) fn open(
    settings: &JournalSettings,
    root: &Path,
    limits: QuotaLimits,
    shards: usize,
    clock: WallClock,
) -> Result<Opened, (PathBuf, JournalError)> {
    std::fs::create_dir_all(root).map_err(|e| {
        (
            root.to_path_buf(),
            JournalError::Io {
                op: "create",
                path: root.to_path_buf(),
                source: e,
            },
        )
    })?;
    let count = existing_shard_dirs(root).map_or(shards, |n| n.max(shards));
    let mut writers = Vec::with_capacity(count);
    let mut recovered = Vec::with_capacity(count);
    for i in 0..count {
        let dir = shard_dir(root, i);
        let (w, r) = JournalWriter::spawn(&dir, settings.storage()).map_err(|e| (dir, e))?;
        writers.push(w);
        recovered.push(r);
    }
    let path = root.join("quota");
    let state = SendQuota::open(&path, limits).map_err(|e| (path, e))?;
    let reserved: u64 = recovered.iter().map(|r| r.messages.len() as u64).sum();
    Ok(Opened {
        durable: Arc::new(Durable {
            writers,
            quota: Quota {
                state: Mutex::new(state),
                pending: AtomicU64::new(0),
                reserved: AtomicU64::new(reserved),
                refusing: AtomicBool::new(false),
                clock,
            },
        }),
        recovered,
    })
}

/// One past the highest `shard-N` directory under `root`, if any.
fn existing_shard_dirs(root: &Path) -> Option<usize> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_prefix("shard-")?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map(|n| n + 1)
}

impl Durable {
    /// Appends a burst of accepted messages to shard `shard`'s journal, one
    /// wake-up of the writer thread for all; each ticket resolves once its
    /// message is on disk (then [`Durable::accepted`]) or rejected (then
    /// [`Durable::refused`]). The messages count against the quota from
    /// now on.
    pub(crate) fn append_many(&self, shard: usize, batch: Vec<NewMessage>) -> Vec<AppendTicket> {
        self.quota
            .reserved
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.writers[shard].append_many(batch)
    }

    /// What every writer's group commits have cost so far.
    pub(crate) fn commit_stats(&self) -> crate::journal::CommitStats {
        let mut all = crate::journal::CommitStats::default();
        for w in &self.writers {
            all.add(&w.commit_stats());
        }
        all
    }

    /// How many journal writers there are (one per shard directory).
    pub(crate) fn writer_count(&self) -> usize {
        self.writers.len()
    }

    /// Message `msg`, appended by shard `shard`, is on disk as `seq`: it
    /// takes its journal id and its place, for the finish records.
    pub(crate) fn accepted(self: &Arc<Self>, shard: usize, msg: &mut Message, seq: u64) {
        msg.id = journal_id(shard, seq);
        msg.journal = Some(Journaled::boxed(self, shard, seq, None));
    }

    /// Whether the quota allows another message; if not, the reply for
    /// `MAIL FROM` (452 4.7.0).
    pub(crate) fn check_quota(&self) -> Result<(), Reply> {
        self.quota.check().map_err(|e| {
            let when = if e.is_transient() {
                "try again after midnight UTC"
            } else {
                "raise the limit to send more"
            };
            Reply::new(452, EnhancedCode::new(4, 7, 0), format!("{e}; {when}"))
        })
    }

    /// Adds the delivered messages counted since the last flush to the
    /// persisted count.
    pub(crate) fn flush_quota(&self) {
        self.quota.flush();
    }

    /// The journal could not write a message: the reply for it (452
    /// 4.3.1), and the log says why. It was not acknowledged and is not
    /// delivered.
    pub(crate) fn refused(&self, shard: usize, e: &JournalError) -> Reply {
        self.quota.reserved.fetch_sub(1, Ordering::Relaxed);
        refusal(shard, e)
    }
}

fn refusal(shard: usize, e: &JournalError) -> Reply {
    let text = if e.is_storage_full() {
        "journal disk full: message not accepted, try again later"
    } else {
        "journal write failed: message not accepted, try again later"
    };
    tracing::error!(shard, error = %e, "ingest answers 452 4.3.1: {text}");
    Reply::new(452, EnhancedCode::new(4, 3, 1), text)
}

fn journal_id(shard: usize, seq: u64) -> u64 {
    JOURNAL_ID | ((shard as u64) << 48) | (seq & (JOURNAL_ID - 1))
}

/// A message's place in the journal: who wrote it, its number, and for a
/// recovered message the original index of each recipient it holds.
pub(crate) struct Journaled {
    durable: Arc<Durable>,
    writer: u32,
    seq: u64,
    /// `None`: recipient `i` of the message is recipient `i` of the record.
    indexes: Option<Box<[u32]>>,
    /// Whether the message was counted against the quota yet.
    counted: AtomicBool,
}

impl Journaled {
    /// Message `seq` of writer `writer`'s journal; `indexes` maps a
    /// recovered message's recipients to those of its record.
    fn boxed(
        durable: &Arc<Durable>,
        writer: usize,
        seq: u64,
        indexes: Option<Box<[u32]>>,
    ) -> Box<dyn FinishRecord> {
        Box::new(Journaled {
            durable: durable.clone(),
            writer: writer as u32,
            seq,
            indexes,
            counted: AtomicBool::new(false),
        })
    }
}

impl FinishRecord for Journaled {
    /// Recipient `rcpt` of the message reached a final outcome: record it
    /// in the writer's journal (from any shard), and count a first delivery
    /// against the quota.
    fn finish(&self, rcpt: u32, delivered: bool) {
        let index = match &self.indexes {
            Some(map) => map.get(rcpt as usize).copied().unwrap_or(rcpt),
            None => rcpt,
        };
        self.durable.writers[self.writer as usize].finish(self.seq, index);
        if delivered && !self.counted.swap(true, Ordering::Relaxed) {
            let q = &self.durable.quota;
            q.pending.fetch_add(1, Ordering::Relaxed);
            q.reserved.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Journaled {
    fn drop(&mut self) {
        if !*self.counted.get_mut() {
            self.durable.quota.reserved.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The sending quota as the engine uses it. Messages accepted and not yet
/// delivered are reserved against the limit, so Volley never accepts more
/// than the limit allows even while the first ones are still on their way.
struct Quota {
    state: Mutex<SendQuota>,
    /// Delivered messages not yet in the persisted count.
    pending: AtomicU64,
    /// Messages accepted (or recovered) and not yet delivered.
    reserved: AtomicU64,
    /// Whether the last check refused (to log once per change).
    refusing: AtomicBool,
    clock: WallClock,
}

impl Quota {
    fn check(&self) -> Result<(), QuotaExceeded> {
        let now = (self.clock)();
        let (counts, limits) = {
            let s = self.state.lock();
            (s.counts(now), s.limits())
        };
        let extra = self.pending.load(Ordering::Relaxed) + self.reserved.load(Ordering::Relaxed);
        let total = counts.total + extra;
        let today = counts.today + extra;
        let verdict = if let Some(limit) = limits.total.filter(|&l| total >= l) {
            Err(QuotaExceeded::Total { limit, sent: total })
        } else if let Some(limit) = limits.per_day.filter(|&l| today >= l) {
            Err(QuotaExceeded::Daily { limit, sent: today })
        } else {
            Ok(())
        };
        let refusing = verdict.is_err();
        if self.refusing.swap(refusing, Ordering::Relaxed) != refusing {
            match &verdict {
                Err(e) => tracing::warn!(
                    "{e} (delivered and accepted messages): ingest answers 452 4.7.0"
                ),
                Ok(()) => tracing::info!("sending quota allows messages again"),
            }
        }
        verdict
    }

    fn flush(&self) {
        let n = self.pending.swap(0, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        let now = (self.clock)();
        if let Err(e) = self.state.lock().record(now, n) {
            self.pending.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(error = %e, "quota: delivered count not stored yet; retrying");
        }
    }
}

/// The thread that stores the delivered count every [`QUOTA_FLUSH`]; on
/// drop it stores what is left and ends.
pub(crate) struct QuotaFlusher {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl QuotaFlusher {
    pub(crate) fn spawn(durable: Arc<Durable>) -> std::io::Result<QuotaFlusher> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("volley-durable".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    rx.recv_timeout(QUOTA_FLUSH)
                {
                    durable.flush_quota();
                }
                durable.flush_quota();
            })?;
        Ok(QuotaFlusher {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for QuotaFlusher {
    fn drop(&mut self) {
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Queues the recovered messages' unfinished recipients on their owner
/// shards; returns how many recipients were queued.
pub(crate) fn requeue(
    router: &Router,
    budget: &Arc<Budget>,
    templates: &TemplateCache,
    durable: &Arc<Durable>,
    recovered: Vec<crate::journal::Recovery>,
) -> u64 {
    let mut queued = 0;
    for (writer, rec) in recovered.into_iter().enumerate() {
        for m in rec.messages {
            let mut addrs = Vec::with_capacity(m.recipients.len());
            let mut keys = Vec::with_capacity(m.recipients.len());
            let mut indexes = Vec::with_capacity(m.recipients.len());
            for r in m.recipients {
                match Mailbox::parse(address_of(&r.address)).and_then(|mb| mb.domain.routing_key())
                {
                    Ok(key) => {
                        keys.push(key.into_boxed_str());
                        indexes.push(r.index);
                        addrs.push(r.address);
                    }
                    Err(e) => {
                        // Ingest accepted it, so this is a damaged record
                        // that passed its checksum: say so, never retry it.
                        tracing::error!(
                            seq = m.seq,
                            "journal: recovered recipient {:?} cannot be routed ({e}); dropped",
                            r.address
                        );
                        durable.writers[writer].finish(m.seq, r.index);
                    }
                }
            }
            if addrs.is_empty() {
                durable.quota.reserved.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            let identity = indexes.iter().zip(0u32..).all(|(a, b)| *a == b);
            let templated = crate::message::is_mailing_sender(&m.sender);
            let mailing = if templated {
                match crate::template::Personal::from_body(&m.body, templates) {
                    Ok(p) => Some(p),
                    Err(why) => {
                        // It compiled when it was accepted: the record is
                        // damaged. Kept in the journal for a later version.
                        tracing::error!(
                            seq = m.seq,
                            "journal: a recovered mailing: {why}; not queued"
                        );
                        continue;
                    }
                }
            } else {
                None
            };
            let mut msg = Message::new(
                journal_id(writer, m.seq),
                Instant::now(),
                &m.sender,
                &addrs,
                m.body,
                None,
                budget.clone(),
            );
            if let Some(p) = mailing {
                msg = msg.personalized(p);
            }
            let indexes = (!identity).then(|| indexes.into_boxed_slice());
            msg.journal = Some(Journaled::boxed(durable, writer, m.seq, indexes));
            let msg = Arc::new(msg);
            queued += keys.len() as u64;
            // Every shard runs already, so no group is kept here; a group
            // whose shard is gone (stopping) is not delivered this run and
            // stays in the journal for the next.
            let kept = router.hand_off(&msg, (0u32..).zip(keys), None);
            queued -= kept.iter().map(|h| h.rcpts.len() as u64).sum::<u64>();
        }
    }
    queued
}
